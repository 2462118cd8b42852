/* The query parameters of the hosted ZeroGPU device API: defaults, and each refusal. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/core/spaces_request.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static struct engine_config cfg(void)
{
	struct engine_config c;
	engine_config_default(&c);
	return c;
}

static void schedule_defaults_and_full(void **state)
{
	(void) state;
	struct engine_config c = cfg();
	struct spaces_schedule s;
	char err[256];
	assert_int_equal(spaces_parse_schedule(NULL, 0, &c, &s, err, sizeof(err)), 0);
	assert_int_equal(s.duration_ms, 60000);
	assert_int_equal(s.size, LEASE_SIZE_LARGE);
	assert_true(s.enable_queue);
	assert_null(s.token);
	assert_string_equal(s.cgroup, "");
	assert_int_equal(s.token_version, 1);

	/* What spaces 0.51.3 sends, plus a parameter this server does not know. */
	const struct query_param p[] = {
		{"cgroupPath", "/system.slice/app"},
		{"taskId", "140234866151520"},
		{"enableQueue", "false"},
		{"tokenVersion", "2"},
		{"durationSeconds", "45"},
		{"gpuSize", "xlarge"},
		{"token", "a.b.c"},
		{"somethingNew", "1"},
	};
	assert_int_equal(spaces_parse_schedule(p, N(p), &c, &s, err, sizeof(err)), 0);
	assert_int_equal(s.duration_ms, 45000);
	assert_int_equal(s.size, LEASE_SIZE_XLARGE);
	assert_false(s.enable_queue);
	assert_string_equal(s.token, "a.b.c");
	assert_string_equal(s.task, "140234866151520");
	assert_string_equal(s.cgroup, "/system.slice/app");
	assert_int_equal(s.token_version, 2);
}

static void schedule_refusals(void **state)
{
	(void) state;
	struct engine_config c = cfg();
	struct spaces_schedule s;
	char err[256];
	static const struct {
		struct query_param p[2];
		size_t n;
		const char *message;
	} cases[] = {
		{{{"durationSeconds", "0"}},
		 1,
		 "durationSeconds must be a number of seconds greater than 0, not '0'"},
		{{{"durationSeconds", "nan"}},
		 1,
		 "durationSeconds must be a number of seconds greater than 0, not 'nan'"},
		/* Found by fuzz_spaces_request: above 0, but a lease of 0 ms. */
		{{{"durationSeconds", "8e-9"}},
		 1,
		 "durationSeconds must be at least 0.001 (a millisecond), not '8e-9'"},
		{{{"gpuSize", "huge"}},
		 1,
		 "gpuSize must be large (half a GPU) or xlarge (a whole GPU), not 'huge'"},
		{{{"taskId", "1e5"}}, 1, "taskId must be an integer, not '1e5'"},
		{{{"enableQueue", "yes"}},
		 1,
		 "parameter enableQueue must be true or false, not 'yes'"},
		{{{"tokenVersion", "3"}}, 1, "tokenVersion must be 1 or 2, not '3'"},
		{{{"token", ""}},
		 1,
		 "token must be the visitor's token (1 to 4096 printable characters)"},
		{{{"cgroupPath", "/a\nb"}},
		 1,
		 "cgroupPath must be a path of at most 1024 printable characters"},
		{{{"taskId", "1"}, {"taskId", "2"}}, 2, "parameter taskId is given more than once"},
	};
	for (size_t i = 0; i < N(cases); i++) {
		assert_int_equal(
			spaces_parse_schedule(cases[i].p, cases[i].n, &c, &s, err, sizeof(err)),
			-EINVAL);
		assert_string_equal(err, cases[i].message);
	}
}

static void schedule_duration_above_the_maximum_is_its_own_answer(void **state)
{
	(void) state;
	struct engine_config c = cfg();
	struct spaces_schedule s;
	char err[256];
	const struct query_param over[] = {{"durationSeconds", "301"}};
	assert_int_equal(spaces_parse_schedule(over, 1, &c, &s, err, sizeof(err)), -ERANGE);
	assert_string_equal(
		err, "The requested GPU duration (301s) is larger than the maximum allowed (300s)");
	/* Other mistakes still come first, as 400s. */
	const struct query_param both[] = {{"durationSeconds", "301"}, {"gpuSize", "x"}};
	assert_int_equal(spaces_parse_schedule(both, 2, &c, &s, err, sizeof(err)), -EINVAL);
	const struct query_param at[] = {{"durationSeconds", "300"}};
	assert_int_equal(spaces_parse_schedule(at, 1, &c, &s, err, sizeof(err)), 0);
}

static void allow_and_release(void **state)
{
	(void) state;
	char token[SPACES_TOKEN_LEN + 1], err[256];
	pid_t pid;
	bool fail;
	const char *good = "0123456789abcdef0123456789abcdef";
	const struct query_param allow[] = {{"allowToken", good}, {"pid", "4242"}};
	assert_int_equal(spaces_parse_allow(allow, 2, token, &pid, err, sizeof(err)), 0);
	assert_string_equal(token, good);
	assert_int_equal(pid, 4242);
	const struct query_param release[] = {{"allowToken", good}, {"fail", "true"}};
	assert_int_equal(spaces_parse_release(release, 2, token, &fail, err, sizeof(err)), 0);
	assert_true(fail);
	assert_int_equal(spaces_parse_release(release, 1, token, &fail, err, sizeof(err)), 0);
	assert_false(fail);

	const struct query_param pid1[] = {{"allowToken", good}, {"pid", "1"}};
	assert_int_equal(spaces_parse_allow(pid1, 2, token, &pid, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "pid must be a process id greater than 1, not '1'");
	const struct query_param upper[] = {{"allowToken", "0123456789ABCDEF0123456789ABCDEF"}};
	assert_int_equal(spaces_parse_release(upper, 1, token, &fail, err, sizeof(err)), -EINVAL);
	assert_int_equal(spaces_parse_release(NULL, 0, token, &fail, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "parameter allowToken is required");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(schedule_defaults_and_full),
		cmocka_unit_test(schedule_refusals),
		cmocka_unit_test(schedule_duration_above_the_maximum_is_its_own_answer),
		cmocka_unit_test(allow_and_release),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
