#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/core/lease.h"

/* The only legal moves; everything else must be refused. */
static bool expected(enum lease_state from, enum lease_state to)
{
	switch (from) {
	case LEASE_QUEUED:
		return to == LEASE_GRANTED || to == LEASE_FAILED || to == LEASE_CANCELLED;
	case LEASE_GRANTED:
		return to == LEASE_ATTACHED || to == LEASE_RELEASED || to == LEASE_EXPIRED ||
		       to == LEASE_FAILED;
	case LEASE_ATTACHED:
		return to == LEASE_RELEASED || to == LEASE_EXPIRED || to == LEASE_FAILED;
	default:
		return false;
	}
}

static void every_transition_is_checked(void **state)
{
	int legal = 0;
	for (int from = 0; from < LEASE__STATE_COUNT; from++) {
		for (int to = 0; to < LEASE__STATE_COUNT; to++) {
			struct lease l = {.state = (enum lease_state) from};
			int r = lease_transition(&l, (enum lease_state) to);
			if (expected((enum lease_state) from, (enum lease_state) to)) {
				assert_int_equal(r, 0);
				assert_int_equal(l.state, to);
				legal++;
			} else {
				assert_int_equal(r, -22 /* EINVAL */);
				assert_int_equal(l.state, from); /* refused moves change nothing */
			}
		}
	}
	assert_int_equal(legal, 10);
}

static void terminal_states(void **state)
{
	assert_false(lease_state_terminal(LEASE_QUEUED));
	assert_false(lease_state_terminal(LEASE_GRANTED));
	assert_false(lease_state_terminal(LEASE_ATTACHED));
	assert_true(lease_state_terminal(LEASE_RELEASED));
	assert_true(lease_state_terminal(LEASE_EXPIRED));
	assert_true(lease_state_terminal(LEASE_FAILED));
	assert_true(lease_state_terminal(LEASE_CANCELLED));
	assert_false(lease_transition_allowed((enum lease_state) 99, LEASE_GRANTED));
	assert_string_equal(lease_state_name(LEASE_ATTACHED), "attached");
	assert_string_equal(lease_state_name((enum lease_state) 99), "invalid");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_transition_is_checked),
		cmocka_unit_test(terminal_states),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
