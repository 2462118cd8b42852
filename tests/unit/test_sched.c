/* The queue policy: priority order, the aging bound, app limits, skipping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/core/sched.h"

static struct lease *mk(const char *app, enum lease_tier tier, int64_t duration_ms,
			double quota_left)
{
	struct lease *l = calloc(1, sizeof(*l));
	snprintf(l->req.app, sizeof(l->req.app), "%s", app);
	l->req.tier = tier;
	l->req.duration_ms = duration_ms;
	l->req.quota_left = quota_left;
	l->req.gpus = 1;
	return l;
}

static struct sched s;

static void setup_priority(void)
{
	struct sched_params p;
	sched_params_priority(&p, 300000);
	assert_int_equal(sched_init(&s, &p), 0);
}

static int teardown(void **state)
{
	sched_destroy(&s);
	return 0;
}

/* Pushes all at time now, then pops them all: the order served. */
static void serve_order(struct lease **ls, int n, int64_t now, struct lease **order)
{
	for (int i = 0; i < n; i++)
		assert_int_equal(sched_push(&s, ls[i], now), 0);
	for (int i = 0; i < n; i++) {
		order[i] = sched_peek(&s);
		assert_non_null(order[i]);
		sched_take(&s, order[i]);
		sched_on_end(&s, order[i]);
	}
	assert_null(sched_peek(&s));
}

static void tiers_come_in_order_at_equal_wait(void **state)
{
	setup_priority();
	/* Arrival order is the worst case: anonymous first, pro last. Durations are
	 * the worst case too: the better tier asks for the longest. */
	struct lease *anon = mk("a", LEASE_TIER_ANONYMOUS, 1000, 1.0);
	struct lease *free_ = mk("b", LEASE_TIER_FREE, 300000, 0.0);
	struct lease *pro = mk("c", LEASE_TIER_PRO, 300000, 0.0);
	struct lease *ent = mk("d", LEASE_TIER_ENTERPRISE, 300000, 0.0);
	struct lease *order[4];
	serve_order((struct lease *[]){anon, free_, pro, ent}, 4, 1000, order);
	/* enterprise = pro (same weight; the earlier arrival first), then free, then anonymous */
	assert_ptr_equal(order[0], pro);
	assert_ptr_equal(order[1], ent);
	assert_ptr_equal(order[2], free_);
	assert_ptr_equal(order[3], anon);
	for (int i = 0; i < 4; i++)
		free(order[i]);
}

static void shorter_first_within_a_tier_and_less_quota_later(void **state)
{
	setup_priority();
	struct lease *long_ = mk("a", LEASE_TIER_FREE, 120000, 1.0);
	struct lease *short_ = mk("b", LEASE_TIER_FREE, 5000, 1.0);
	struct lease *mid = mk("c", LEASE_TIER_FREE, 60000, 1.0);
	struct lease *order[3];
	serve_order((struct lease *[]){long_, short_, mid}, 3, 0, order);
	assert_ptr_equal(order[0], short_);
	assert_ptr_equal(order[1], mid);
	assert_ptr_equal(order[2], long_);
	for (int i = 0; i < 3; i++)
		free(order[i]);

	struct lease *spent = mk("a", LEASE_TIER_FREE, 60000, 0.1);
	struct lease *fresh = mk("b", LEASE_TIER_FREE, 60000, 1.0);
	serve_order((struct lease *[]){spent, fresh}, 2, 0, order);
	assert_ptr_equal(order[0], fresh);
	assert_ptr_equal(order[1], spent);
	free(spent);
	free(fresh);
}

static void equal_requests_keep_arrival_order(void **state)
{
	setup_priority();
	struct lease *ls[50], *order[50];
	for (int i = 0; i < 50; i++)
		ls[i] = mk("a", LEASE_TIER_FREE, 60000, 1.0);
	serve_order(ls, 50, 7, order);
	for (int i = 0; i < 50; i++) {
		assert_ptr_equal(order[i], ls[i]);
		free(ls[i]);
	}
}

static void fifo_ignores_tiers(void **state)
{
	struct sched_params p;
	sched_params_fifo(&p);
	assert_int_equal(sched_init(&s, &p), 0);
	struct lease *anon = mk("a", LEASE_TIER_ANONYMOUS, 300000, 0.0);
	struct lease *pro = mk("b", LEASE_TIER_PRO, 1000, 1.0);
	struct lease *order[2];
	serve_order((struct lease *[]){anon, pro}, 2, 0, order);
	assert_ptr_equal(order[0], anon);
	free(anon);
	free(pro);
}

/*
 * 10,000 random requests arrive over time and are served one at a time at
 * random moments. No request may be served after one that arrived more than
 * the aging bound after it.
 */
static void aging_bound_holds_in_a_random_run(void **state)
{
	setup_priority();
	const int n = 10000;
	const int64_t bound = s.p.aging_bound_ms;
	struct lease **ls = calloc((size_t) n, sizeof(*ls));
	int64_t *arrived = calloc((size_t) n, sizeof(*arrived));
	srand(2026);
	int64_t now = 0;
	int pushed = 0, served = 0;
	int64_t latest_arrival_served = -1, worst_overtake = 0;
	while (served < n) {
		now += rand() % 20;
		if (pushed < n && (rand() % 3 != 0 || s.len == 0)) {
			char app[8];
			snprintf(app, sizeof(app), "app%d", rand() % 7);
			ls[pushed] = mk(app, (enum lease_tier)(rand() % LEASE__TIER_COUNT),
					1000 + rand() % 299000, (rand() % 101) / 100.0);
			arrived[pushed] = now;
			ls[pushed]->created_ms = now;
			assert_int_equal(sched_push(&s, ls[pushed], now), 0);
			pushed++;
		} else if (s.len) {
			struct lease *l = sched_peek(&s);
			sched_take(&s, l);
			sched_on_end(&s, l);
			/* Later arrivals already served before this one, by how much later. */
			if (latest_arrival_served > l->created_ms)
				worst_overtake = latest_arrival_served - l->created_ms >
								 worst_overtake
							 ? latest_arrival_served - l->created_ms
							 : worst_overtake;
			if (l->created_ms > latest_arrival_served)
				latest_arrival_served = l->created_ms;
			served++;
		}
	}
	assert_true(worst_overtake > 0);      /* priorities did reorder the queue */
	assert_true(worst_overtake <= bound); /* but never past the bound */
	for (int i = 0; i < n; i++)
		free(ls[i]);
	free(ls);
	free(arrived);
}

static void app_limit_parks_an_app_without_blocking_others(void **state)
{
	struct sched_params p;
	sched_params_priority(&p, 300000);
	p.app_limit = 1;
	assert_int_equal(sched_init(&s, &p), 0);
	struct lease *a1 = mk("hot", LEASE_TIER_PRO, 1000, 1.0);
	struct lease *a2 = mk("hot", LEASE_TIER_PRO, 1000, 1.0);
	struct lease *b1 = mk("cold", LEASE_TIER_ANONYMOUS, 300000, 0.0);
	sched_push(&s, a1, 0);
	sched_push(&s, a2, 0);
	sched_push(&s, b1, 0);
	assert_ptr_equal(sched_peek(&s), a1);
	sched_take(&s, a1);
	/* "hot" holds its one lease: its next request waits, "cold" goes ahead. */
	assert_string_equal(sched_reason(&s, a2), "concurrency");
	assert_string_equal(sched_reason(&s, b1), "node");
	assert_ptr_equal(sched_peek(&s), b1);
	sched_take(&s, b1);
	assert_null(sched_peek(&s));
	sched_on_end(&s, a1);
	assert_ptr_equal(sched_peek(&s), a2);
	sched_take(&s, a2);
	sched_on_end(&s, a2);
	sched_on_end(&s, b1);
	assert_int_equal(s.apps_by_name.len, 0); /* idle apps are forgotten */
	free(a1);
	free(a2);
	free(b1);
}

struct walk_rec {
	struct lease *seen[8];
	int positions[8];
	int n;
};

static void record(struct lease *l, int position, void *arg)
{
	struct walk_rec *w = arg;
	w->seen[w->n] = l;
	w->positions[w->n++] = position;
}

static void skip_and_walk(void **state)
{
	setup_priority();
	struct lease *x = mk("a", LEASE_TIER_PRO, 1000, 1.0);
	struct lease *y = mk("b", LEASE_TIER_FREE, 1000, 1.0);
	struct lease *z = mk("c", LEASE_TIER_ANONYMOUS, 1000, 1.0);
	sched_push(&s, z, 0);
	sched_push(&s, y, 0);
	sched_push(&s, x, 0);
	assert_ptr_equal(sched_peek(&s), x);
	sched_skip(&s, x);
	assert_ptr_equal(sched_peek(&s), y);
	sched_skip(&s, y);
	assert_ptr_equal(sched_peek(&s), z);
	sched_take(&s, z);
	sched_unskip_all(&s);
	assert_int_equal(s.len, 2);
	assert_ptr_equal(sched_peek(&s), x); /* back in its place */

	struct walk_rec w = {0};
	assert_int_equal(sched_walk(&s, record, &w), 0);
	assert_int_equal(w.n, 2);
	assert_ptr_equal(w.seen[0], x);
	assert_ptr_equal(w.seen[1], y);
	assert_int_equal(w.positions[1], 2);
	sched_remove(&s, x);
	sched_remove(&s, y);
	sched_on_end(&s, z);
	assert_int_equal(s.len, 0);
	free(x);
	free(y);
	free(z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(tiers_come_in_order_at_equal_wait, teardown),
		cmocka_unit_test_teardown(shorter_first_within_a_tier_and_less_quota_later,
					  teardown),
		cmocka_unit_test_teardown(equal_requests_keep_arrival_order, teardown),
		cmocka_unit_test_teardown(fifo_ignores_tiers, teardown),
		cmocka_unit_test_teardown(aging_bound_holds_in_a_random_run, teardown),
		cmocka_unit_test_teardown(app_limit_parks_an_app_without_blocking_others, teardown),
		cmocka_unit_test_teardown(skip_and_walk, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
