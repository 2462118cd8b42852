/*
 * sched — what one scheduling decision costs with 1k, 10k and 100k requests
 * waiting, through the real policy and engine code the daemon runs.
 *
 *	build/bench/sched [--ops N]
 *
 * For each queue size it reports, in ns per operation: enqueueing a request;
 * picking the next one (peek + take) and enqueueing a replacement, so the queue
 * stays at that size; a whole engine decision (a lease ends, the engine grants
 * the best waiting request on the freed GPU); and one walk of the queue in
 * order (what position announcements cost, at most every 100 ms). Not a test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/core/engine.h"
#include "daemon/core/sched.h"
#include "daemon/sys/inventory.h"

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A mixed request: 50 apps, all tiers, both sizes, 1-300 s, some quota used. */
static void random_request(struct lease_request *r, int gpus_max)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->app, sizeof(r->app), "app%d", rand() % 50);
	r->tier = (enum lease_tier)(rand() % LEASE__TIER_COUNT);
	r->size = rand() % 5 ? LEASE_SIZE_LARGE : LEASE_SIZE_XLARGE;
	r->gpus = rand() % 20 ? 1 : 1 + rand() % gpus_max;
	r->duration_ms = 1000 + rand() % 299000;
	r->max_wait_ms = 3600000;
	r->quota_left = (rand() % 101) / 100.0;
}

static void noop_walk(struct lease *l, int position, void *arg)
{
	(void) l;
	(void) position;
	(void) arg;
}

struct bench_row {
	size_t queued;
	double push_ns, pick_ns, decision_ns, walk_ms;
};

static void bench_policy(size_t n, int ops, struct bench_row *row)
{
	struct sched s;
	struct sched_params p;
	sched_params_priority(&p, 300000);
	sched_init(&s, &p);
	struct lease *pool = calloc(n + (size_t) ops, sizeof(*pool));
	int64_t t = 0;

	for (size_t i = 0; i < n + (size_t) ops; i++)
		random_request(&pool[i].req, 2); /* made beforehand: not part of the timing */

	int64_t t0 = now_ns();
	for (size_t i = 0; i < n; i++)
		sched_push(&s, &pool[i], t++);
	row->push_ns = (double) (now_ns() - t0) / (double) n;

	t0 = now_ns();
	for (int i = 0; i < ops; i++) {
		struct lease *l = sched_peek(&s);
		sched_take(&s, l);
		sched_on_end(&s, l);
		sched_push(&s, &pool[n + (size_t) i], t++);
	}
	row->pick_ns = (double) (now_ns() - t0) / ops;

	t0 = now_ns();
	sched_walk(&s, noop_walk, NULL);
	row->walk_ms = (double) (now_ns() - t0) / 1e6;
	sched_destroy(&s);
	free(pool);
}

static int next_id;

static void make_id(void *ctx, char *out)
{
	(void) ctx;
	snprintf(out, LEASE_ID_LEN + 1, "%032d", ++next_id);
}

static void bench_engine(size_t n, int ops, struct bench_row *row)
{
	struct inventory inv;
	char err[128];
	inventory_simulate(&inv, "8x80G", "bench", err, sizeof(err));
	struct engine_config cfg;
	engine_config_default(&cfg);
	cfg.split = 2;
	struct engine_hooks hooks = {.make_id = make_id};
	struct engine e;
	engine_init(&e, &inv, &cfg, &hooks);
	struct lease_owner owner = {0};
	int64_t t = 0;
	/* Fill every GPU with long whole-GPU leases, then queue n more. */
	for (size_t i = 0; i < n + 8; i++) {
		struct lease_request r;
		random_request(&r, 2);
		if (i < 8) {
			r.size = LEASE_SIZE_XLARGE;
			r.gpus = 1;
		}
		engine_submit(&e, &r, &owner, NULL, t);
	}
	/* Each op: a lease ends, the engine picks who gets the freed GPU(s), and a
	 * new request arrives, keeping the queue at n. */
	char ids[8][LEASE_ID_LEN + 1];
	int64_t total = 0;
	for (int i = 0; i < ops; i++) {
		int held = 0;
		for (size_t k = 0; k < e.ngpus && held < 8; k++)
			for (int slot = 0; slot < e.gpus[k].nslots; slot++)
				if (e.gpus[k].holder[slot] && held < 8)
					memcpy(ids[held++], e.gpus[k].holder[slot]->id,
					       LEASE_ID_LEN + 1);
		struct lease *victim = engine_find(&e, ids[rand() % held]);
		int64_t t0 = now_ns();
		engine_end(&e, victim, false, ++t, NULL);
		total += now_ns() - t0;
		struct lease_request r;
		random_request(&r, 2);
		engine_submit(&e, &r, &owner, NULL, t);
	}
	row->decision_ns = (double) total / ops;
	engine_shutdown(&e, t);
}

int main(int argc, char **argv)
{
	int ops = 200000;
	size_t max_queued = 100000;
	for (int i = 1; i < argc; i++) {
		if (i + 1 < argc && strcmp(argv[i], "--ops") == 0) {
			ops = atoi(argv[++i]);
		} else if (i + 1 < argc && strcmp(argv[i], "--max-queued") == 0) {
			max_queued = (size_t) atol(argv[++i]);
		} else {
			printf("Usage: sched [--ops N] [--max-queued N]\nTimes the queue policy "
			       "and "
			       "the engine with 1k, 10k and 100k requests waiting.\n");
			return strcmp(argv[i], "--help") == 0 ? 0 : 2;
		}
	}
	if (ops < 1) {
		fprintf(stderr, "sched: --ops must be at least 1\n");
		return 2;
	}
	srand(42);
	printf("sched: priority policy, 50 apps, mixed tiers/sizes/durations; %d ops per size\n"
	       "struct lease is %zu bytes; the queue adds one heap slot (8 bytes, capacity "
	       "doubling) per waiting request\n\n",
	       ops, sizeof(struct lease));
	printf("%10s %12s %16s %20s %14s\n", "queued", "enqueue ns", "pick+enqueue ns",
	       "engine decision ns", "walk ms");
	const size_t sizes[] = {1000, 10000, 100000};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && sizes[i] <= max_queued; i++) {
		struct bench_row row = {.queued = sizes[i]};
		bench_policy(sizes[i], ops, &row);
		bench_engine(sizes[i], ops / 10, &row);
		printf("%10zu %12.0f %16.0f %20.0f %14.2f\n", row.queued, row.push_ns, row.pick_ns,
		       row.decision_ns, row.walk_ms);
	}
	return 0;
}
