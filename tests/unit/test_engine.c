/* The lease engine, driven with a hand-held clock: FIFO order, gangs, deadlines, invariants. */
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

static struct inventory inv;
static struct engine eng;

struct event_rec {
	char id[LEASE_ID_LEN + 1];
	enum engine_event ev;
	enum lease_state state;
	int position;
	int ndevices;
	int devices[INV_MAX_DEVICES];
	uint64_t memory_limit[INV_MAX_DEVICES];
	char message[LEASE_MESSAGE_MAX];
};

static struct event_rec events[4096];
static int nevents, nkills, next_id;
static pid_t last_killed;

static void on_event(void *ctx, struct lease *l, enum engine_event ev)
{
	struct event_rec *r = &events[nevents++ % 4096];
	memcpy(r->id, l->id, sizeof(r->id));
	r->ev = ev;
	r->state = l->state;
	r->position = l->position_sent;
	struct engine_device held[INV_MAX_DEVICES];
	r->ndevices = engine_lease_devices(&eng, l, held, INV_MAX_DEVICES);
	for (int i = 0; i < r->ndevices; i++) {
		r->devices[i] = held[i].device;
		r->memory_limit[i] = held[i].memory_limit;
	}
	memcpy(r->message, l->message, sizeof(r->message));
}

static void on_kill(void *ctx, const struct lease *l)
{
	nkills++;
	last_killed = l->proc.pgid;
}

/* Ids of leases whose clients are gone (engine_hooks.waiter_gone). */
static int gone_ids[16], ngone;

static bool waiter_gone(void *ctx, struct lease *l)
{
	for (int i = 0; i < ngone; i++) {
		char id[LEASE_ID_LEN + 1];
		snprintf(id, sizeof(id), "%032d", gone_ids[i]);
		if (strcmp(id, l->id) == 0)
			return true;
	}
	return false;
}

static void make_id(void *ctx, char *out)
{
	snprintf(out, LEASE_ID_LEN + 1, "%032d", ++next_id);
}

/* Starts an engine on ndevices simulated 80 GiB GPUs with the given policy and split. */
static void setup_with(size_t ndevices, bool priority, int split)
{
	char err[128];
	char spec[16];
	snprintf(spec, sizeof(spec), "%zux80G", ndevices);
	assert_int_equal(inventory_simulate(&inv, spec, "test", err, sizeof(err)), 0);
	struct engine_config cfg;
	engine_config_default(&cfg);
	cfg.split = split;
	if (!priority)
		sched_params_fifo(&cfg.sched);
	struct engine_hooks hooks = {.event = on_event,
				     .kill_group = on_kill,
				     .make_id = make_id,
				     .waiter_gone = waiter_gone};
	assert_int_equal(engine_init(&eng, &inv, &cfg, &hooks), 0);
	nevents = nkills = next_id = ngone = 0;
	last_killed = 0;
}

/* The engine's own order tests run under FIFO, which they describe. */
static void setup_engine(size_t ndevices)
{
	setup_with(ndevices, false, 1);
}

static int teardown(void **state)
{
	engine_shutdown(&eng, 0);
	return 0;
}

/* Submits a request; returns the new lease's id number. */
static int submit(int gpus, int64_t duration_ms, int64_t max_wait_ms, int64_t now)
{
	struct lease_request req = {
		.app = "app", .gpus = gpus, .duration_ms = duration_ms, .max_wait_ms = max_wait_ms};
	struct lease_owner owner = {.uid = 1000};
	assert_int_equal(engine_submit(&eng, &req, &owner, NULL, now), 0);
	return next_id;
}

static struct lease *lease_of(int n)
{
	char id[LEASE_ID_LEN + 1];
	snprintf(id, sizeof(id), "%032d", n);
	return engine_find(&eng, id);
}

/* Attaches pid as the leader of its own group, as `zerogpu run` arranges. */
static int attach(struct lease *l, pid_t pid, int64_t now)
{
	struct lease_process p = {.pid = pid, .pgid = pid, .start = 0, .pidfd = -1};
	return engine_attach(&eng, l, &p, now);
}

static const struct event_rec *last_event_of(int n)
{
	char id[LEASE_ID_LEN + 1];
	snprintf(id, sizeof(id), "%032d", n);
	for (int i = nevents - 1; i >= 0; i--)
		if (strcmp(events[i].id, id) == 0)
			return &events[i];
	return NULL;
}

static void grants_at_once_on_an_idle_pool(void **state)
{
	setup_engine(4);
	int a = submit(1, 5000, 60000, 100);
	const struct event_rec *ev = last_event_of(a);
	assert_int_equal(ev->ev, ENGINE_EV_GRANTED);
	assert_int_equal(ev->ndevices, 1);
	assert_int_equal(ev->devices[0], 0);
	assert_int_equal(eng.slots_busy, 1);
	assert_int_equal(lease_of(a)->deadline_ms, 5100);
	assert_int_equal(engine_next_deadline(&eng), 5100);
}

static void queues_when_busy_and_grants_in_order(void **state)
{
	setup_engine(1);
	int a = submit(1, 5000, 60000, 0);
	int b = submit(1, 5000, 60000, 1);
	int c = submit(1, 5000, 60000, 2);
	assert_int_equal(last_event_of(b)->ev, ENGINE_EV_QUEUED);
	assert_int_equal(last_event_of(b)->position, 1);
	assert_int_equal(last_event_of(c)->position, 2);

	int64_t used;
	assert_int_equal(engine_end(&eng, lease_of(a), false, 1000, &used), LEASE_RELEASED);
	assert_int_equal(used, 1000);
	assert_int_equal(last_event_of(a)->ev, ENGINE_EV_ENDED);
	assert_int_equal(last_event_of(b)->ev, ENGINE_EV_GRANTED);
	/* C moved up; it is told so once the announcement interval comes due. */
	assert_int_equal(last_event_of(c)->position, 2);
	assert_int_equal(engine_next_deadline(&eng), 1000 + ENGINE_POSITION_INTERVAL_MS);
	engine_tick(&eng, 1000 + ENGINE_POSITION_INTERVAL_MS);
	assert_int_equal(last_event_of(c)->ev, ENGINE_EV_QUEUED);
	assert_int_equal(last_event_of(c)->position, 1);

	engine_end(&eng, lease_of(b), false, 2000, NULL);
	assert_int_equal(last_event_of(c)->ev, ENGINE_EV_GRANTED);
	assert_int_equal(eng.sched.len, 0);
}

static void gang_takes_two_of_four(void **state)
{
	setup_engine(4);
	int a = submit(2, 5000, 60000, 0);
	const struct event_rec *ev = last_event_of(a);
	assert_int_equal(ev->ev, ENGINE_EV_GRANTED);
	assert_int_equal(ev->ndevices, 2);
	assert_int_equal(ev->devices[0], 0);
	assert_int_equal(ev->devices[1], 1);
	int b = submit(2, 5000, 60000, 0);
	assert_int_equal(last_event_of(b)->devices[0], 2);
	assert_int_equal(last_event_of(b)->devices[1], 3);
	assert_int_equal(eng.slots_busy, 4);
}

static void gang_is_all_or_nothing_and_not_overtaken(void **state)
{
	setup_engine(4);
	int a = submit(1, 5000, 60000, 0);
	int big = submit(4, 5000, 60000, 1);
	int small = submit(1, 5000, 60000, 2);
	/* Three devices are free, but the gang needs four: it waits, holding nothing. */
	assert_int_equal(last_event_of(big)->ev, ENGINE_EV_QUEUED);
	assert_int_equal(eng.slots_busy, 1);
	/* FIFO: the single request behind it does not jump ahead. */
	assert_int_equal(last_event_of(small)->ev, ENGINE_EV_QUEUED);
	assert_int_equal(last_event_of(small)->position, 2);

	engine_end(&eng, lease_of(a), false, 10, NULL);
	assert_int_equal(last_event_of(big)->ev, ENGINE_EV_GRANTED);
	assert_int_equal(last_event_of(big)->ndevices, 4);
	engine_tick(&eng, 10 + ENGINE_POSITION_INTERVAL_MS);
	assert_int_equal(last_event_of(small)->position, 1);
}

static void refuses_more_gpus_than_the_machine_has(void **state)
{
	setup_engine(2);
	struct lease_request req = {.app = "x", .gpus = 3, .duration_ms = 1000, .max_wait_ms = 1};
	struct lease_owner owner = {0};
	assert_int_equal(engine_submit(&eng, &req, &owner, NULL, 0), -22);
	assert_int_equal(eng.leases.len, 0);
}

static void max_wait_fails_a_queued_request(void **state)
{
	setup_engine(1);
	submit(1, 60000, 60000, 0);
	int b = submit(1, 5000, 2000, 0);
	engine_tick(&eng, 1999);
	assert_int_equal(last_event_of(b)->ev, ENGINE_EV_QUEUED);
	engine_tick(&eng, 2000);
	const struct event_rec *ev = last_event_of(b);
	assert_int_equal(ev->ev, ENGINE_EV_ENDED);
	assert_int_equal(ev->state, LEASE_FAILED);
	assert_string_equal(ev->message, "No GPU was available after 2 s in the queue");
	assert_null(lease_of(b));
}

static void max_wait_zero_fails_at_once_when_busy(void **state)
{
	setup_engine(1);
	submit(1, 60000, 60000, 0);
	int b = submit(1, 5000, 0, 0);
	assert_int_equal(last_event_of(b)->ev, ENGINE_EV_ENDED);
	assert_int_equal(last_event_of(b)->state, LEASE_FAILED);
	assert_int_equal(eng.sched.len, 0);
}

static void expiry_signals_then_kills_after_grace(void **state)
{
	setup_engine(1);
	int a = submit(1, 1000, 60000, 0);
	int b = submit(1, 1000, 60000, 0);
	assert_int_equal(attach(lease_of(a), 4242, 10), 0);
	engine_tick(&eng, 999);
	assert_int_equal(last_event_of(a)->ev, ENGINE_EV_GRANTED);
	engine_tick(&eng, 1000);
	assert_int_equal(last_event_of(a)->ev, ENGINE_EV_EXPIRED);
	assert_int_equal(nkills, 0);
	/* Past the deadline the device is still held until the grace ends. */
	assert_int_equal(last_event_of(b)->ev, ENGINE_EV_QUEUED);
	engine_tick(&eng, 2999);
	assert_int_equal(nkills, 0);
	engine_tick(&eng, 3000);
	assert_int_equal(nkills, 1);
	assert_int_equal(last_killed, 4242);
	assert_int_equal(last_event_of(a)->state, LEASE_EXPIRED);
	assert_string_equal(last_event_of(a)->message,
			    "GPU task aborted: exceeded its 1 s duration");
	assert_int_equal(last_event_of(b)->ev, ENGINE_EV_GRANTED);
	assert_int_equal(eng.stats.expired, 1);
}

static void attach_rules(void **state)
{
	setup_engine(1);
	int a = submit(1, 1000, 60000, 0);
	int b = submit(1, 1000, 60000, 0);
	assert_int_equal(attach(lease_of(b), 1, 0), -16 /* EBUSY: queued */);
	assert_int_equal(attach(lease_of(a), 100, 0), 0);
	assert_int_equal(attach(lease_of(a), 100, 0), 0); /* idempotent */
	assert_int_equal(attach(lease_of(a), 101, 0), -114 /* EALREADY */);
	assert_int_equal(lease_of(a)->state, LEASE_ATTACHED);

	engine_end(&eng, lease_of(a), false, 5, NULL);
	engine_tick(&eng, 1005); /* b's deadline */
	assert_int_equal(attach(lease_of(b), 7, 1005), -62 /* ETIME */);
}

static void abandoning_cancels_or_releases_and_kills(void **state)
{
	setup_engine(1);
	int a = submit(1, 10000, 60000, 0);
	int b = submit(1, 10000, 60000, 0);
	attach(lease_of(a), 55, 0);
	engine_abandon(&eng, lease_of(b), 1);
	assert_int_equal(last_event_of(b)->state, LEASE_CANCELLED);
	assert_int_equal(nkills, 0);
	engine_abandon(&eng, lease_of(a), 2);
	assert_int_equal(last_event_of(a)->state, LEASE_RELEASED);
	assert_int_equal(nkills, 1);
	assert_int_equal(eng.slots_busy, 0);
	assert_int_equal(eng.leases.len, 0);
}

static void cancelling_a_waiter_moves_the_rest_up(void **state)
{
	setup_engine(1);
	submit(1, 10000, 60000, 0);
	int b = submit(1, 10000, 60000, 0);
	int c = submit(1, 10000, 60000, 0);
	assert_int_equal(last_event_of(c)->position, 2);
	engine_abandon(&eng, lease_of(b), 1);
	engine_tick(&eng, 1 + ENGINE_POSITION_INTERVAL_MS);
	assert_int_equal(last_event_of(c)->ev, ENGINE_EV_QUEUED);
	assert_int_equal(last_event_of(c)->position, 1);
}

static void one_announcement_covers_many_moves(void **state)
{
	setup_engine(1);
	int ids[10];
	for (int i = 0; i < 10; i++)
		ids[i] = submit(1, 10000, 60000, 0);
	int before = nevents;
	/* Three releases in quick succession: the waiters hear of it once. */
	for (int i = 0; i < 3; i++)
		engine_end(&eng, lease_of(ids[i]), false, 10 + i, NULL);
	int grants = nevents - before;
	engine_tick(&eng, 10 + ENGINE_POSITION_INTERVAL_MS);
	int announcements = nevents - before - grants;
	assert_int_equal(announcements, 6); /* ids[4..9], each once */
	assert_int_equal(last_event_of(ids[4])->position, 1);
	assert_int_equal(last_event_of(ids[9])->position, 6);
}

static void end_with_failure_and_cancel(void **state)
{
	setup_engine(1);
	int a = submit(1, 10000, 60000, 0);
	int b = submit(1, 10000, 60000, 0);
	assert_int_equal(engine_end(&eng, lease_of(b), false, 1, NULL), LEASE_CANCELLED);
	assert_int_equal(engine_end(&eng, lease_of(a), true, 2, NULL), LEASE_FAILED);
	assert_int_equal(eng.stats.failed, 1);
	assert_int_equal(eng.stats.cancelled, 1);
}

static int submit_sized(enum lease_size size, int gpus, int64_t duration_ms, int64_t now)
{
	struct lease_request req = {.app = "app",
				    .gpus = gpus,
				    .size = size,
				    .duration_ms = duration_ms,
				    .max_wait_ms = 600000};
	struct lease_owner owner = {.uid = 1000};
	assert_int_equal(engine_submit(&eng, &req, &owner, NULL, now), 0);
	return next_id;
}

static void halves_are_packed_before_whole_gpus_are_broken(void **state)
{
	setup_with(3, true, 2);
	assert_int_equal(eng.ngpus, 3);
	assert_int_equal(eng.slots_total, 6);
	int a = submit_sized(LEASE_SIZE_LARGE, 1, 10000, 0);
	int b = submit_sized(LEASE_SIZE_LARGE, 1, 10000, 0);
	/* Both halves of GPU 0, each with half its memory. */
	assert_int_equal(last_event_of(a)->devices[0], 0);
	assert_int_equal(last_event_of(b)->devices[0], 0);
	assert_int_equal(last_event_of(a)->memory_limit[0], 40ULL << 30);
	int c = submit_sized(LEASE_SIZE_LARGE, 1, 10000, 0);
	assert_int_equal(last_event_of(c)->devices[0], 1);
	engine_end(&eng, lease_of(b), false, 1, NULL);
	/* GPU 0 and GPU 1 are both half used: the next half goes to one of them
	 * (the lower), never to the whole GPU 2. */
	int d = submit_sized(LEASE_SIZE_LARGE, 1, 10000, 2);
	assert_int_equal(last_event_of(d)->devices[0], 0);
	int e = submit_sized(LEASE_SIZE_LARGE, 1, 10000, 2);
	assert_int_equal(last_event_of(e)->devices[0], 1);
	int x = submit_sized(LEASE_SIZE_XLARGE, 1, 10000, 3);
	assert_int_equal(last_event_of(x)->devices[0], 2);
	assert_int_equal(last_event_of(x)->memory_limit[0], 80ULL << 30);
	assert_int_equal(eng.slots_busy, 6);
}

static void xlarge_waits_for_a_whole_gpu(void **state)
{
	setup_with(2, true, 2);
	int a = submit_sized(LEASE_SIZE_LARGE, 1, 10000, 0);
	submit_sized(LEASE_SIZE_LARGE, 1, 10000, 0); /* packs onto GPU 0 */
	int c = submit_sized(LEASE_SIZE_LARGE, 1, 10000, 0);
	assert_int_equal(last_event_of(c)->devices[0], 1);
	/* One half free on GPU 1 and none whole: an xlarge request waits. */
	int x = submit_sized(LEASE_SIZE_XLARGE, 1, 10000, 0);
	assert_int_equal(last_event_of(x)->ev, ENGINE_EV_QUEUED);
	engine_end(&eng, lease_of(c), false, 1, NULL);
	assert_int_equal(last_event_of(x)->ev, ENGINE_EV_GRANTED);
	assert_int_equal(last_event_of(x)->devices[0], 1);
	(void) a;
}

static void mig_instances_are_the_halves_of_their_gpu(void **state)
{
	memset(&inv, 0, sizeof(inv));
	inv.source = "nvml";
	/* GPU 0 whole; GPU 1 in MIG mode with two instances. */
	const int gpu_of[3] = {0, 1, 1}, mig_of[3] = {-1, 0, 1};
	for (int i = 0; i < 3; i++) {
		inv.devices[i] = (struct device){.index = i,
						 .gpu_index = gpu_of[i],
						 .mig_index = mig_of[i],
						 .memory_bytes = i ? 70ULL << 30 : 141ULL << 30};
		snprintf(inv.devices[i].uuid, sizeof(inv.devices[i].uuid), "U%d", i);
	}
	inv.count = 3;
	struct engine_config cfg;
	engine_config_default(&cfg);
	cfg.split = 1;
	struct engine_hooks hooks = {.event = on_event,
				     .kill_group = on_kill,
				     .make_id = make_id,
				     .waiter_gone = waiter_gone};
	assert_int_equal(engine_init(&eng, &inv, &cfg, &hooks), 0);
	nevents = nkills = next_id = ngone = 0;
	assert_int_equal(eng.ngpus, 2);
	assert_int_equal(eng.slots_total, 3);
	/* CUDA lets a process use one MIG instance only: two whole GPUs cannot be had here
	 * (GPU 1 is two instances), and the refusal says why. */
	struct lease_request two = {.app = "app",
				    .gpus = 2,
				    .size = LEASE_SIZE_XLARGE,
				    .duration_ms = 10000,
				    .max_wait_ms = 600000};
	struct lease_owner owner = {.uid = 1000};
	char why[LEASE_MESSAGE_MAX];
	assert_int_equal(engine_submit(&eng, &two, &owner, NULL, 0), -EINVAL);
	assert_int_equal(engine_infeasible(&eng, &two, why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "a request for several devices needs GPUs that are not in MIG "
				 "mode (CUDA lets one process use one MIG instance only), and "
				 "this machine has 1");
	two.size = LEASE_SIZE_LARGE; /* two halves on two GPUs: one would be a MIG instance */
	assert_int_equal(engine_submit(&eng, &two, &owner, NULL, 0), -EINVAL);
	/* One xlarge GPU is GPU 0, whole, never GPU 1's instances. */
	int x = submit_sized(LEASE_SIZE_XLARGE, 1, 10000, 0);
	assert_int_equal(last_event_of(x)->ndevices, 1);
	assert_int_equal(last_event_of(x)->devices[0], 0);
	int y = submit_sized(LEASE_SIZE_XLARGE, 1, 10000, 0); /* waits for GPU 0 */
	assert_int_equal(lease_of(y)->state, LEASE_QUEUED);
	engine_end(&eng, lease_of(y), false, 1, NULL);
	engine_end(&eng, lease_of(x), false, 1, NULL);
	int a = submit_sized(LEASE_SIZE_LARGE, 1, 10000, 2);
	int b = submit_sized(LEASE_SIZE_LARGE, 1, 10000, 2);
	/* Halves go to the MIG instances first (packing), one each. */
	assert_int_equal(last_event_of(a)->ndevices, 1);
	assert_int_equal(last_event_of(a)->memory_limit[0], 70ULL << 30);
	assert_int_not_equal(last_event_of(a)->devices[0], last_event_of(b)->devices[0]);
}

static void backfill_then_hold_devices_for_a_gang(void **state)
{
	setup_with(2, true, 1); /* priority policy, backfill 5 s */
	int a = submit_sized(LEASE_SIZE_LARGE, 1, 60000, 0);
	int gang = submit_sized(LEASE_SIZE_LARGE, 2, 60000, 0);
	assert_int_equal(last_event_of(gang)->ev, ENGINE_EV_QUEUED);
	/* Within the backfill time, a small request uses the idle GPU. */
	int s1 = submit_sized(LEASE_SIZE_LARGE, 1, 1000, 1000);
	assert_int_equal(last_event_of(s1)->ev, ENGINE_EV_GRANTED);
	engine_end(&eng, lease_of(s1), false, 2000, NULL);
	int s2 = submit_sized(LEASE_SIZE_LARGE, 1, 1000, 3000);
	assert_int_equal(last_event_of(s2)->ev, ENGINE_EV_GRANTED);
	engine_end(&eng, lease_of(s2), false, 6000, NULL);
	/* The gang has waited 6 s: the free GPU is now held for it. */
	int s3 = submit_sized(LEASE_SIZE_LARGE, 1, 1000, 6500);
	assert_int_equal(last_event_of(s3)->ev, ENGINE_EV_QUEUED);
	engine_end(&eng, lease_of(a), false, 7000, NULL);
	assert_int_equal(last_event_of(gang)->ev, ENGINE_EV_GRANTED);
	assert_int_equal(last_event_of(gang)->ndevices, 2);
	engine_end(&eng, lease_of(gang), false, 8000, NULL);
	assert_int_equal(last_event_of(s3)->ev, ENGINE_EV_GRANTED);
}

static void gang_is_not_starved_by_a_stream_of_small_requests(void **state)
{
	setup_with(4, true, 1);
	/* Small requests keep all four GPUs busy, a new one arriving as each ends. */
	int64_t now = 0;
	int running[4];
	for (int i = 0; i < 4; i++)
		running[i] = submit_sized(LEASE_SIZE_LARGE, 1, 2000, now);
	int gang = submit_sized(LEASE_SIZE_XLARGE, 4, 60000, now);
	int64_t granted_at = -1;
	for (int step = 0; step < 400 && granted_at < 0; step++) {
		now += 250;
		int k = step % 4;
		struct lease *l = lease_of(running[k]);
		if (l && l->state != LEASE_QUEUED)
			engine_end(&eng, l, false, now, NULL);
		if (last_event_of(gang)->ev == ENGINE_EV_GRANTED)
			granted_at = now;
		running[k] = submit_sized(LEASE_SIZE_LARGE, 1, 2000, now);
	}
	assert_true(granted_at >= 0);
	/* Backfill (5 s) plus the time for the running small leases to finish. */
	assert_true(granted_at <= 5000 + 2000);
}

/* Random operations; after each, devices and leases must agree exactly. */
static void check_random_load(void);

static void invariants_hold_under_random_load(void **state)
{
	setup_engine(4);
	check_random_load();
}

static void random_load_with_halves_and_priorities(void **state)
{
	setup_with(4, true, 2);
	check_random_load();
}

static void check_random_load(void)
{
	srand(12345);
	int64_t now = 0;
	for (int step = 0; step < 20000; step++) {
		now += rand() % 50;
		int op = rand() % 6;
		int n = next_id ? 1 + rand() % next_id : 0;
		struct lease *l = n ? lease_of(n) : NULL;
		if (op <= 1 || !l) {
			struct lease_request req = {
				.app = "app",
				.gpus = 1 + rand() % 4,
				.size = rand() % 2 ? LEASE_SIZE_LARGE : LEASE_SIZE_XLARGE,
				.tier = (enum lease_tier)(rand() % LEASE__TIER_COUNT),
				.duration_ms = 100 + rand() % 2000,
				.max_wait_ms = rand() % 3000,
			};
			struct lease_owner owner = {.uid = 1};
			assert_int_equal(engine_submit(&eng, &req, &owner, NULL, now), 0);
			if (!lease_of(next_id))
				continue; /* failed at once: max_wait 0 */
		} else if (op == 2) {
			engine_end(&eng, l, rand() % 2, now, NULL);
		} else if (op == 3) {
			attach(l, 1000 + n, now);
		} else if (op == 4) {
			engine_abandon(&eng, l, now);
		} else {
			engine_tick(&eng, now);
		}

		size_t held = 0;
		for (size_t k = 0; k < eng.ngpus; k++) {
			struct engine_gpu *g = &eng.gpus[k];
			int used = 0;
			for (int s = 0; s < g->nslots; s++) {
				struct lease *h = g->holder[s];
				if (!h)
					continue;
				used++;
				assert_true(h->state == LEASE_GRANTED ||
					    h->state == LEASE_ATTACHED);
				bool listed = false;
				for (int i = 0; i < h->ngrants; i++)
					listed |= h->grants[i].gpu == (int) k &&
						  (h->grants[i].slots & (1u << s));
				assert_true(listed);
			}
			assert_int_equal(used, g->used);
			held += (size_t) used;
		}
		assert_int_equal(held, eng.slots_busy);
		/* No device idles while the request next in line would fit on it. */
		struct lease *head = sched_peek(&eng.sched);
		if (head) {
			int could = 0;
			for (size_t k = 0; k < eng.ngpus; k++)
				could += head->req.size == LEASE_SIZE_XLARGE
						 ? eng.gpus[k].used == 0
						 : eng.gpus[k].used < eng.gpus[k].nslots;
			assert_true(could < head->req.gpus);
		}
	}
	uint64_t ended = eng.stats.released + eng.stats.expired + eng.stats.failed +
			 eng.stats.cancelled;
	assert_int_equal(eng.stats.submitted, ended + eng.leases.len);
}

/* A crashed app leaves its queue behind: its waiters are not granted, the next live one is. */
static void gone_waiters_are_cancelled_not_granted(void **state)
{
	setup_engine(1);
	int a = submit(1, 60000, 60000, 0);
	int b = submit(1, 60000, 60000, 1);
	int c = submit(1, 60000, 60000, 2);
	int d = submit(1, 60000, 60000, 3);
	gone_ids[ngone++] = b;
	gone_ids[ngone++] = c;
	engine_end(&eng, lease_of(a), false, 10, NULL);
	assert_null(lease_of(b));
	assert_null(lease_of(c));
	assert_int_equal(lease_of(d)->state, LEASE_GRANTED);
	const struct event_rec *r = last_event_of(c);
	assert_int_equal(r->ev, ENGINE_EV_ENDED);
	assert_int_equal(r->state, LEASE_CANCELLED);
	assert_string_equal(r->message, "the client went away while queued");
	assert_int_equal(eng.stats.cancelled, 2);
	assert_int_equal(eng.stats.granted, 2);
	/* A request is never asked about in the millisecond it arrives. */
	gone_ids[ngone++] = d + 1;
	engine_end(&eng, lease_of(d), false, 20, NULL);
	int e = submit(1, 60000, 60000, 20);
	assert_int_equal(lease_of(e)->state, LEASE_GRANTED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(grants_at_once_on_an_idle_pool, teardown),
		cmocka_unit_test_teardown(queues_when_busy_and_grants_in_order, teardown),
		cmocka_unit_test_teardown(gang_takes_two_of_four, teardown),
		cmocka_unit_test_teardown(gang_is_all_or_nothing_and_not_overtaken, teardown),
		cmocka_unit_test_teardown(refuses_more_gpus_than_the_machine_has, teardown),
		cmocka_unit_test_teardown(max_wait_fails_a_queued_request, teardown),
		cmocka_unit_test_teardown(max_wait_zero_fails_at_once_when_busy, teardown),
		cmocka_unit_test_teardown(expiry_signals_then_kills_after_grace, teardown),
		cmocka_unit_test_teardown(attach_rules, teardown),
		cmocka_unit_test_teardown(gone_waiters_are_cancelled_not_granted, teardown),
		cmocka_unit_test_teardown(abandoning_cancels_or_releases_and_kills, teardown),
		cmocka_unit_test_teardown(cancelling_a_waiter_moves_the_rest_up, teardown),
		cmocka_unit_test_teardown(one_announcement_covers_many_moves, teardown),
		cmocka_unit_test_teardown(end_with_failure_and_cancel, teardown),
		cmocka_unit_test_teardown(invariants_hold_under_random_load, teardown),
		cmocka_unit_test_teardown(halves_are_packed_before_whole_gpus_are_broken, teardown),
		cmocka_unit_test_teardown(xlarge_waits_for_a_whole_gpu, teardown),
		cmocka_unit_test_teardown(mig_instances_are_the_halves_of_their_gpu, teardown),
		cmocka_unit_test_teardown(backfill_then_hold_devices_for_a_gang, teardown),
		cmocka_unit_test_teardown(gang_is_not_starved_by_a_stream_of_small_requests,
					  teardown),
		cmocka_unit_test_teardown(random_load_with_halves_and_priorities, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
