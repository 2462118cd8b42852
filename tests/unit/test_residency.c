/* Residency in the lease engine: residents kept, warm placement by affinity, eviction
 * least recently used first, the hosted way (off), and a random run that never
 * over-commits a device. Hand-computed cases on simulated 80 GiB GPUs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>

#include "daemon/core/engine.h"
#include "daemon/sys/inventory.h"

#define GiB (UINT64_C(1) << 30)

static struct inventory inv;
static struct engine eng;
static int next_id;
static bool task_bound; /* submit() makes task-bound requests (as the `spaces` API does) */

/* Evictions in order: the app and pid of each evicted resident. */
static char evicted_app[64][LEASE_APP_MAX + 1];
static pid_t evicted_pid[64];
static int nevicted;

static void on_event(void *ctx, struct lease *l, enum engine_event ev)
{
}

static void on_evict(void *ctx, const struct resident *r, const char *why)
{
	assert_non_null(strstr(why, "to make room for lease"));
	int i = nevicted++ % 64;
	snprintf(evicted_app[i], sizeof(evicted_app[0]), "%s", r->app);
	evicted_pid[i] = r->proc.pid;
}

static void make_id(void *ctx, char *out)
{
	snprintf(out, LEASE_ID_LEN + 1, "%032d", ++next_id);
}

static void setup_with(int ndevices, int split, enum engine_residency residency, bool affinity)
{
	char err[128], spec[16];
	snprintf(spec, sizeof(spec), "%dx80G", ndevices);
	assert_int_equal(inventory_simulate(&inv, spec, "test", err, sizeof(err)), 0);
	struct engine_config cfg;
	engine_config_default(&cfg);
	cfg.split = split;
	cfg.residency = residency;
	cfg.affinity = affinity;
	struct engine_hooks hooks = {.event = on_event, .make_id = make_id, .evict = on_evict};
	assert_int_equal(engine_init(&eng, &inv, &cfg, &hooks), 0);
	next_id = nevicted = 0;
	task_bound = true;
}

static int teardown(void **state)
{
	engine_shutdown(&eng, 0);
	return 0;
}

/* Submits a request of app/task needing gib GiB (0: all it gets); returns the lease. */
static struct lease *submit(const char *app, const char *task, enum lease_size size, uint64_t gib,
			    int64_t now)
{
	struct lease_request req = {.gpus = 1,
				    .size = size,
				    .duration_ms = 60000,
				    .max_wait_ms = 60000,
				    .memory_bytes = gib * GiB,
				    .task_bound = task_bound};
	snprintf(req.app, sizeof(req.app), "%s", app);
	snprintf(req.task, sizeof(req.task), "%s", task);
	struct lease_owner owner = {.uid = 1000, .uid_known = true};
	assert_int_equal(engine_submit(&eng, &req, &owner, NULL, now), 0);
	char id[LEASE_ID_LEN + 1];
	snprintf(id, sizeof(id), "%032d", next_id);
	return engine_find(&eng, id);
}

static int device_of(const struct lease *l)
{
	struct engine_device held[INV_MAX_DEVICES];
	assert_int_equal(engine_lease_devices(&eng, l, held, INV_MAX_DEVICES), 1);
	return held[0].device;
}

/* A lease of app on its device, attached to pid, released keeping pid resident. */
static int keep_resident(const char *app, const char *task, uint64_t gib, pid_t pid, int64_t now)
{
	struct lease *l = submit(app, task, LEASE_SIZE_XLARGE, gib, now);
	assert_int_equal(l->state, LEASE_GRANTED);
	int device = device_of(l);
	struct lease_process p = {.pid = pid, .pgid = pid, .pidfd = -1, .attached_by = l->owner};
	assert_int_equal(engine_attach(&eng, l, &p, now), 0);
	assert_int_equal(engine_release_keep(&eng, l, 0, now + 1, NULL), LEASE_RELEASED);
	return device;
}

static const struct resident *resident_of(pid_t pid)
{
	for (int i = 0; i < eng.residency.n; i++)
		if (eng.residency.r[i].proc.pid == pid)
			return &eng.residency.r[i];
	return NULL;
}

static void a_kept_process_stays_resident_with_the_leases_memory(void **state)
{
	setup_with(2, 1, ENGINE_RESIDENCY_LRU, true);
	assert_int_equal(keep_resident("a", "f", 30, 101, 0), 0);
	const struct resident *r = resident_of(101);
	assert_non_null(r);
	assert_int_equal(r->bytes, 30 * GiB);
	assert_int_equal(r->devices, 1);
	assert_string_equal(r->app, "a");
	assert_int_equal(r->last_used_ms, 1);
	assert_int_equal(engine_memory_free(&eng, 0), 50 * GiB);
	assert_int_equal(engine_memory_free(&eng, 1), 80 * GiB);
	/* A lease that asks for no size counts all it gets. */
	assert_int_equal(keep_resident("b", "f", 0, 102, 2), 1);
	assert_int_equal(resident_of(102)->bytes, 80 * GiB);
	assert_int_equal(engine_memory_free(&eng, 1), 0);
	/* Gone from outside: forgotten, and its memory is free again. */
	assert_true(engine_resident_gone(&eng, resident_of(102)->id));
	assert_false(engine_resident_gone(&eng, 9999));
	assert_int_equal(engine_memory_free(&eng, 1), 80 * GiB);
}

static void a_call_goes_where_its_app_is_resident_and_takes_it_over(void **state)
{
	setup_with(4, 1, ENGINE_RESIDENCY_LRU, true);
	/* a's worker ends up on GPU 2: GPUs 0 and 1 are busy when it is granted. */
	struct lease *x = submit("x", "f", LEASE_SIZE_LARGE, 10, 0);
	struct lease *y = submit("y", "f", LEASE_SIZE_LARGE, 10, 0);
	assert_int_equal(keep_resident("a", "f", 20, 201, 1), 2);
	engine_end(&eng, x, false, 2, NULL);
	engine_end(&eng, y, false, 2, NULL);

	struct lease *l = submit("a", "f", LEASE_SIZE_LARGE, 20, 10);
	assert_int_equal(l->state, LEASE_GRANTED);
	assert_int_equal(device_of(l), 2); /* warm, though GPU 0 is free */
	assert_true(l->warm);
	assert_int_equal(l->warm_proc.pid, 201);
	assert_null(resident_of(201)); /* taken over: no longer resident */
	assert_int_equal(eng.stats.warm_grants, 1);
	/* Another task of the same app is not warm there: it takes the lowest index. */
	struct lease *other = submit("a", "g", LEASE_SIZE_LARGE, 20, 11);
	assert_int_equal(device_of(other), 0);
	assert_false(other->warm);
}

static void another_principals_worker_is_never_taken_over(void **state)
{
	setup_with(2, 1, ENGINE_RESIDENCY_LRU, true);
	assert_int_equal(keep_resident("a", "f", 20, 251, 0), 0);
	struct lease_request req = {.app = "a",
				    .task = "f",
				    .gpus = 1,
				    .duration_ms = 60000,
				    .max_wait_ms = 60000,
				    .memory_bytes = 20 * GiB};
	struct lease_owner stranger = {.uid = 1001, .uid_known = true};
	assert_int_equal(engine_submit(&eng, &req, &stranger, NULL, 5), 0);
	char id[LEASE_ID_LEN + 1];
	snprintf(id, sizeof(id), "%032d", next_id);
	struct lease *l = engine_find(&eng, id);
	assert_int_equal(device_of(l), 0); /* room there: no affinity to somebody else's */
	assert_false(l->warm);
	assert_int_equal(l->warm_proc.pid, 0);
	assert_non_null(resident_of(251));
}

static void unbound_requests_take_any_worker_of_their_app_the_same_task_first(void **state)
{
	setup_with(1, 1, ENGINE_RESIDENCY_LRU, true);
	keep_resident("a", "f", 10, 261, 0);
	keep_resident("a", "g", 10, 262, 1);
	keep_resident("a", "h", 10, 263, 2);
	task_bound = false; /* the Python package's requests */
	struct lease *l = submit("a", "f", LEASE_SIZE_LARGE, 10, 5);
	assert_int_equal(l->warm_proc.pid, 261); /* its own task's, though not the newest */
	engine_end(&eng, l, false, 6, NULL);
	l = submit("a", "z", LEASE_SIZE_LARGE, 10, 7);
	assert_int_equal(l->warm_proc.pid, 263); /* no task of its own: the newest */
	assert_int_equal(nevicted, 0);
}

static void without_affinity_the_lowest_index_is_taken(void **state)
{
	setup_with(4, 1, ENGINE_RESIDENCY_LRU, false);
	struct lease *x = submit("x", "f", LEASE_SIZE_LARGE, 10, 0);
	assert_int_equal(keep_resident("a", "f", 20, 301, 1), 1);
	engine_end(&eng, x, false, 2, NULL);
	struct lease *l = submit("a", "f", LEASE_SIZE_LARGE, 20, 10);
	assert_int_equal(device_of(l), 0);
	assert_false(l->warm);
	assert_non_null(resident_of(301)); /* still there, untouched */
}

static void a_device_with_room_is_preferred_to_evicting(void **state)
{
	setup_with(2, 1, ENGINE_RESIDENCY_LRU, true);
	assert_int_equal(keep_resident("b", "f", 70, 401, 0), 0);
	struct lease *l = submit("a", "f", LEASE_SIZE_LARGE, 30, 5);
	assert_int_equal(device_of(l), 1);
	assert_int_equal(nevicted, 0);
	assert_non_null(resident_of(401));
}

static void eviction_takes_the_least_recently_used_until_the_call_fits(void **state)
{
	setup_with(1, 1, ENGINE_RESIDENCY_LRU, true);
	keep_resident("b", "f", 30, 501, 10);
	keep_resident("c", "f", 30, 502, 20);
	keep_resident("d", "f", 10, 503, 30);
	assert_int_equal(engine_memory_free(&eng, 0), 10 * GiB);
	/* 50 GiB needs 40 more: b (oldest, 30) and then c (30); d stays. */
	struct lease *l = submit("a", "f", LEASE_SIZE_LARGE, 50, 40);
	assert_int_equal(l->state, LEASE_GRANTED);
	assert_int_equal(nevicted, 2);
	assert_int_equal(evicted_pid[0], 501);
	assert_int_equal(evicted_pid[1], 502);
	assert_non_null(resident_of(503));
	assert_int_equal(eng.stats.evictions, 2);
	assert_int_equal(engine_memory_free(&eng, 0), 20 * GiB);
}

static void the_apps_own_residents_go_last(void **state)
{
	setup_with(1, 1, ENGINE_RESIDENCY_LRU, true);
	keep_resident("a", "old", 30, 601, 10); /* a's own, and the oldest */
	keep_resident("b", "f", 30, 602, 20);
	/* a needs 40 GiB, 20 are free: b goes, though a's other worker is older. */
	submit("a", "new", LEASE_SIZE_LARGE, 40, 30);
	assert_int_equal(nevicted, 1);
	assert_int_equal(evicted_pid[0], 602);
	assert_non_null(resident_of(601));
}

static void a_warm_resident_counts_toward_its_own_call(void **state)
{
	setup_with(1, 1, ENGINE_RESIDENCY_LRU, true);
	keep_resident("a", "f", 60, 701, 10);
	keep_resident("b", "f", 20, 702, 20);
	/* a's next call needs 60 GiB: its resident has them, so b stays. */
	struct lease *l = submit("a", "f", LEASE_SIZE_LARGE, 60, 30);
	assert_true(l->warm);
	assert_int_equal(nevicted, 0);
	assert_non_null(resident_of(702));
}

static void halves_count_the_other_halfs_lease(void **state)
{
	setup_with(1, 2, ENGINE_RESIDENCY_LRU, true);
	keep_resident("b", "f", 30, 801, 0);
	/* Half 1 goes to a 40 GiB lease: 10 of b's 30 must go, so b is evicted. */
	struct lease *x = submit("x", "f", LEASE_SIZE_LARGE, 0, 5);
	assert_int_equal(x->state, LEASE_GRANTED);
	assert_int_equal(x->grants[0].memory, 40 * GiB);
	assert_int_equal(engine_memory_free(&eng, 0), 10 * GiB);
	assert_int_equal(nevicted, 0); /* 30 + 40 fit in 80 */
	struct lease *y = submit("y", "f", LEASE_SIZE_LARGE, 20, 6);
	assert_int_equal(y->state, LEASE_GRANTED);
	assert_int_equal(nevicted, 1);
	assert_int_equal(evicted_pid[0], 801);
	assert_int_equal(engine_memory_free(&eng, 0), 20 * GiB);
}

static void residency_off_evicts_other_apps_whatever_the_room(void **state)
{
	setup_with(1, 1, ENGINE_RESIDENCY_OFF, false);
	keep_resident("a", "f", 5, 901, 0);
	keep_resident("a", "g", 5, 902, 1); /* the same app: both stay */
	assert_int_equal(nevicted, 0);
	struct lease *l = submit("b", "f", LEASE_SIZE_LARGE, 5, 2);
	assert_int_equal(l->state, LEASE_GRANTED);
	assert_int_equal(nevicted, 2); /* 70 GiB were free: the hosted way evicts anyway */
	assert_string_equal(evicted_app[0], "a");
	assert_string_equal(evicted_app[1], "a");
	assert_int_equal(eng.residency.n, 0);
}

static void a_call_larger_than_its_share_is_refused_with_the_reason(void **state)
{
	setup_with(2, 2, ENGINE_RESIDENCY_LRU, true);
	struct lease_request req = {
		.app = "a", .gpus = 1, .size = LEASE_SIZE_LARGE, .memory_bytes = 50 * GiB};
	char why[LEASE_MESSAGE_MAX];
	assert_int_equal(engine_infeasible(&eng, &req, why, sizeof(why)), -E2BIG);
	assert_non_null(strstr(why, "needs 50.0 GiB"));
	assert_non_null(strstr(why, "at most 40.0 GiB"));
	assert_non_null(strstr(why, "ask for xlarge"));
	req.size = LEASE_SIZE_XLARGE;
	assert_int_equal(engine_infeasible(&eng, &req, why, sizeof(why)), 0);
	req.memory_bytes = 81 * GiB;
	assert_int_equal(engine_infeasible(&eng, &req, why, sizeof(why)), -E2BIG);
}

/* What the leases holding device d and its residents count there. */
static uint64_t counted_on(int d)
{
	uint64_t sum = residency_bytes_on(&eng.residency, d);
	for (size_t k = 0; k < eng.ngpus; k++) {
		const struct engine_gpu *g = &eng.gpus[k];
		const struct lease *seen[ENGINE_MAX_SLOTS];
		int nseen = 0;
		for (int s = 0; s < g->nslots; s++) {
			const struct lease *h = g->holder[s];
			bool dup = false;
			for (int i = 0; i < nseen; i++)
				dup |= seen[i] == h;
			if (!h || dup || g->slot_device[s] != d)
				continue;
			seen[nseen++] = h;
			for (int i = 0; i < h->ngrants; i++)
				if (h->grants[i].gpu == (int) k)
					sum += h->grants[i].memory;
		}
	}
	return sum;
}

static struct lease *live[4096];
static int nlive;

static void collect(struct lease *l, void *arg)
{
	if (l->state != LEASE_QUEUED)
		live[nlive++] = l;
}

static void random_run_never_over_commits_a_device(void **state)
{
	static const char *const apps[] = {"a", "b", "c", "d", "e", "f", "g"};
	for (int mode = 0; mode < 2; mode++) {
		setup_with(3, 2, mode ? ENGINE_RESIDENCY_OFF : ENGINE_RESIDENCY_LRU, !mode);
		srand(42 + mode);
		pid_t pid = 1000;
		int64_t now = 0;
		for (int step = 0; step < 20000; step++) {
			now += rand() % 50;
			int op = rand() % 3;
			if (op == 0) {
				enum lease_size size = rand() % 4 ? LEASE_SIZE_LARGE
								  : LEASE_SIZE_XLARGE;
				uint64_t gib = (uint64_t) (rand() %
							   (size == LEASE_SIZE_LARGE ? 41 : 81));
				submit(apps[rand() % 7], rand() % 2 ? "f" : "g", size, gib, now);
			} else {
				nlive = 0;
				engine_foreach(&eng, collect, NULL);
				if (nlive == 0)
					continue;
				struct lease *l = live[rand() % nlive];
				if (op == 1) {
					struct lease_process p = {.pid = ++pid,
								  .pgid = pid,
								  .pidfd = -1,
								  .attached_by = l->owner};
					if (l->state == LEASE_GRANTED)
						engine_attach(&eng, l, &p, now);
					engine_release_keep(&eng, l, 0, now, NULL);
				} else {
					engine_end(&eng, l, false, now, NULL);
				}
			}
			engine_tick(&eng, now);
			for (int d = 0; d < 3; d++)
				assert_true(counted_on(d) <= 80 * GiB);
			assert_true(eng.residency.n <= RESIDENTS_MAX);
		}
		assert_true(eng.stats.evictions > 0);
		if (!mode)
			assert_true(eng.stats.warm_grants > 0);
		engine_shutdown(&eng, now);
	}
	setup_with(1, 1, ENGINE_RESIDENCY_LRU, true); /* for the teardown */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(a_kept_process_stays_resident_with_the_leases_memory,
					  teardown),
		cmocka_unit_test_teardown(a_call_goes_where_its_app_is_resident_and_takes_it_over,
					  teardown),
		cmocka_unit_test_teardown(another_principals_worker_is_never_taken_over, teardown),
		cmocka_unit_test_teardown(
			unbound_requests_take_any_worker_of_their_app_the_same_task_first,
			teardown),
		cmocka_unit_test_teardown(without_affinity_the_lowest_index_is_taken, teardown),
		cmocka_unit_test_teardown(a_device_with_room_is_preferred_to_evicting, teardown),
		cmocka_unit_test_teardown(
			eviction_takes_the_least_recently_used_until_the_call_fits, teardown),
		cmocka_unit_test_teardown(the_apps_own_residents_go_last, teardown),
		cmocka_unit_test_teardown(a_warm_resident_counts_toward_its_own_call, teardown),
		cmocka_unit_test_teardown(halves_count_the_other_halfs_lease, teardown),
		cmocka_unit_test_teardown(residency_off_evicts_other_apps_whatever_the_room,
					  teardown),
		cmocka_unit_test_teardown(a_call_larger_than_its_share_is_refused_with_the_reason,
					  teardown),
		cmocka_unit_test_teardown(random_run_never_over_commits_a_device, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
