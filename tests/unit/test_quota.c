/* Daily quota: reserve, settle, windows across the reset, parallel requests, messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/core/quota.h"

#define S    1000
#define HOUR (3600 * S)

static struct quota_book book;
static struct quota_config cfg;

static int setup(void **state)
{
	quota_config_default(&cfg);
	return quota_init(&book, &cfg);
}

static int teardown(void **state)
{
	quota_release(&book);
	return 0;
}

static void reserve_then_settle_to_the_charge(void **state)
{
	struct quota_account *a = quota_add(&book, "ip:10.0.0.1", LEASE_TIER_ANONYMOUS, 0, 0);
	int64_t left, wait;
	assert_int_equal(quota_reserve(&cfg, a, 60 * S, 1000 * S, &left, &wait), 0);
	assert_int_equal(a->window_start, 1000 * S); /* the window opens at first use */
	assert_int_equal(a->reserved_ms, 60 * S);
	quota_settle(a, 60 * S, 3 * S); /* asked for 60 s, used (and charged) 3 s */
	assert_int_equal(a->reserved_ms, 0);
	assert_int_equal(a->used_ms, 3 * S);
	assert_ptr_equal(quota_find(&book, "ip:10.0.0.1"), a);
	assert_null(quota_find(&book, "ip:10.0.0.2"));
}

static void parallel_requests_cannot_overspend(void **state)
{
	struct quota_account *a = quota_add(&book, "user:x", LEASE_TIER_FREE, 0, 0);
	int64_t left, wait;
	/* 300 s a day: two 120 s requests fit, a third does not, whatever happens later. */
	assert_int_equal(quota_reserve(&cfg, a, 120 * S, HOUR, &left, &wait), 0);
	assert_int_equal(quota_reserve(&cfg, a, 120 * S, HOUR, &left, &wait), 0);
	assert_int_equal(quota_reserve(&cfg, a, 120 * S, HOUR, &left, &wait), -122 /* EDQUOT */);
	assert_int_equal(left, 60 * S);
	assert_int_equal(wait, 24 * HOUR);
}

static void a_tier_that_allows_overage_is_never_refused(void **state)
{
	struct quota_account *pro = quota_add(&book, "user:p", LEASE_TIER_PRO, 0, 0);
	struct quota_account *free_ = quota_add(&book, "user:f", LEASE_TIER_FREE, 0, 0);
	int64_t left, wait;
	cfg.overage[LEASE_TIER_PRO] = true;
	/* 2400 s a day for pro: a third 1000 s request goes past it, and is reserved. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(quota_reserve(&cfg, pro, 1000 * S, HOUR, &left, &wait), 0);
	assert_int_equal(pro->reserved_ms, 3000 * S);
	assert_int_equal(quota_left_ms(&cfg, pro, HOUR), 0);
	/* Other tiers keep their limit. */
	assert_int_equal(quota_reserve(&cfg, free_, 301 * S, HOUR, &left, &wait), -122);
	cfg.overage[LEASE_TIER_PRO] = false;
	assert_int_equal(quota_reserve(&cfg, pro, 1 * S, HOUR, &left, &wait), -122);
}

static void the_window_resets_24_hours_after_first_use(void **state)
{
	struct quota_account *a = quota_add(&book, "user:y", LEASE_TIER_ANONYMOUS, 0, 0);
	int64_t left, wait, t0 = 5 * HOUR;
	assert_int_equal(quota_reserve(&cfg, a, 100 * S, t0, &left, &wait), 0);
	quota_settle(a, 100 * S, 100 * S);
	/* 20 s left for the rest of the window. */
	assert_int_equal(quota_reserve(&cfg, a, 30 * S, t0 + 2 * HOUR, &left, &wait), -122);
	assert_int_equal(left, 20 * S);
	assert_int_equal(wait, 22 * HOUR);
	/* One millisecond before the reset: still refused. */
	assert_int_equal(quota_reserve(&cfg, a, 30 * S, t0 + 24 * HOUR - 1, &left, &wait), -122);
	assert_int_equal(wait, 1);
	/* At the reset the window starts over, opening at this use. */
	assert_int_equal(quota_reserve(&cfg, a, 30 * S, t0 + 24 * HOUR, &left, &wait), 0);
	assert_int_equal(a->used_ms, 0);
	assert_int_equal(a->window_start, t0 + 24 * HOUR);
}

static void xlarge_costs_twice_and_tiers_differ(void **state)
{
	struct lease_request big = {.duration_ms = 60 * S, .size = LEASE_SIZE_XLARGE};
	struct lease_request half = {.duration_ms = 60 * S, .size = LEASE_SIZE_LARGE};
	assert_int_equal(quota_cost_ms(&cfg, &big), 120 * S);
	assert_int_equal(quota_cost_ms(&cfg, &half), 60 * S);
	assert_int_equal(cfg.daily_ms[LEASE_TIER_PRO], 2400 * S);
	assert_int_equal(cfg.daily_ms[LEASE_TIER_ENTERPRISE], 3600 * S);
	struct quota_account *a = quota_add(&book, "user:z", LEASE_TIER_PRO, 0, 0);
	assert_true(quota_left_share(&cfg, a) == 1.0);
	int64_t left, wait;
	quota_reserve(&cfg, a, 600 * S, 0, &left, &wait);
	assert_true(quota_left_share(&cfg, a) == 0.75);
}

static void settlement_rounds_up_and_spares_early_failures(void **state)
{
	struct lease l = {.state = LEASE_RELEASED, .proc = {.pid = 42}};
	l.req.size = LEASE_SIZE_LARGE;
	assert_int_equal(quota_charge_ms(&cfg, &l, 1), 1 * S);	  /* 1 ms costs a second */
	assert_int_equal(quota_charge_ms(&cfg, &l, 1000), 1 * S); /* exactly 1 s: 1 s */
	assert_int_equal(quota_charge_ms(&cfg, &l, 1001), 2 * S); /* just over: 2 s */
	assert_int_equal(quota_charge_ms(&cfg, &l, 1500), 2 * S); /* sleep 1.5 under -d 2 */
	assert_int_equal(quota_charge_ms(&cfg, &l, 0), 0);	  /* nothing held, nothing due */
	l.req.size = LEASE_SIZE_XLARGE;
	assert_int_equal(quota_charge_ms(&cfg, &l, 1500), 4 * S); /* a whole GPU: twice */
	l.state = LEASE_FAILED;
	assert_int_equal(quota_charge_ms(&cfg, &l, 5000), 10 * S); /* failed after it ran */
	l.proc.pid = 0;
	assert_int_equal(quota_charge_ms(&cfg, &l, 5000), 0); /* failed before it ran */
	l.state = LEASE_EXPIRED;
	assert_int_equal(quota_charge_ms(&cfg, &l, 5000), 10 * S); /* expired: the time held */
}

static void the_hosted_message(void **state)
{
	char msg[200];
	quota_message(msg, sizeof(msg), LEASE_TIER_ANONYMOUS, 2 * S, 1 * S,
		      13 * HOUR + 59 * 60 * S + 12 * S);
	assert_string_equal(msg, "You have exceeded your GPU quota (2s requested vs. 1s left). Try "
				 "again in 13:59:12.");
	quota_message(msg, sizeof(msg), LEASE_TIER_FREE, 60 * S, 20 * S, 5 * S);
	assert_string_equal(msg, "You have exceeded your free GPU quota (60s requested vs. 20s "
				 "left). Try again in 0:00:05.");
	quota_message(msg, sizeof(msg), LEASE_TIER_PRO, 60 * S, 0, 0);
	assert_non_null(strstr(msg, "your Pro GPU quota"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(reserve_then_settle_to_the_charge, setup, teardown),
		cmocka_unit_test_setup_teardown(a_tier_that_allows_overage_is_never_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(parallel_requests_cannot_overspend, setup,
						teardown),
		cmocka_unit_test_setup_teardown(the_window_resets_24_hours_after_first_use, setup,
						teardown),
		cmocka_unit_test_setup_teardown(xlarge_costs_twice_and_tiers_differ, setup,
						teardown),
		cmocka_unit_test_setup_teardown(settlement_rounds_up_and_spares_early_failures,
						setup, teardown),
		cmocka_unit_test_setup_teardown(the_hosted_message, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
