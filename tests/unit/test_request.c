/* Request validation: defaults, and one precise refusal per kind of bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/core/request.h"

static int parse(const char *body, struct lease_request *out, char *err)
{
	struct engine_config cfg;
	engine_config_default(&cfg);
	static struct request_visitor who;
	return request_parse_lease(body, strlen(body), &cfg, 4, out, &who, err, 512);
}

static void visitor_fields(void **state)
{
	struct engine_config cfg;
	engine_config_default(&cfg);
	struct lease_request r;
	static struct request_visitor who;
	char err[512];
	const char *ok = "{\"visitor_ip\":\"2001:db8::1\",\"visitor_token\":\"a.b.c\"}";
	assert_int_equal(request_parse_lease(ok, strlen(ok), &cfg, 4, &r, &who, err, 512), 0);
	assert_string_equal(who.ip, "2001:db8::1");
	assert_string_equal(who.token, "a.b.c");
	const char *bad = "{\"visitor_ip\":\"10.0.0.300\"}";
	assert_int_equal(request_parse_lease(bad, strlen(bad), &cfg, 4, &r, &who, err, 512), -22);
	assert_string_equal(err, "visitor_ip '10.0.0.300' is not an IPv4 or IPv6 address");
}

static void empty_body_means_defaults(void **state)
{
	struct lease_request r;
	char err[512];
	assert_int_equal(parse("", &r, err), 0);
	assert_string_equal(r.app, "default");
	assert_int_equal(r.gpus, 1);
	assert_int_equal(r.size, LEASE_SIZE_LARGE);
	assert_int_equal(r.duration_ms, 60000);
	assert_int_equal(r.max_wait_ms, 60000);
	assert_int_equal(r.tier, LEASE_TIER_ANONYMOUS);
}

static void full_request(void **state)
{
	struct lease_request r;
	char err[512];
	assert_int_equal(parse("{\"app\":\"sdxl-demo\",\"task\":\"gen\",\"visitor\":\"v1\","
			       "\"size\":\"xlarge\",\"gpus\":2,\"duration_s\":12.5,"
			       "\"max_wait_s\":0}",
			       &r, err),
			 0);
	assert_string_equal(r.app, "sdxl-demo");
	assert_string_equal(r.task, "gen");
	assert_string_equal(r.visitor, "v1");
	assert_int_equal(r.size, LEASE_SIZE_XLARGE);
	assert_int_equal(r.gpus, 2);
	assert_int_equal(r.duration_ms, 12500);
	assert_int_equal(r.max_wait_ms, 0);
}

struct bad_case {
	const char *body;
	const char *message;
};

static void refusals_say_what_is_wrong(void **state)
{
	static const struct bad_case cases[] = {
		{"{", "request body is not valid JSON"},
		{"[1]", "request body must be a JSON object, not an array"},
		{"{\"duration\":5}", "unknown field 'duration'; known fields: app, task"},
		{"{\"gpus\":\"2\"}", "field 'gpus' must be an integer, not a string"},
		{"{\"gpus\":1.5}", "field 'gpus' must be an integer, not a number"},
		{"{\"gpus\":0}", "gpus must be at least 1 (got 0)"},
		{"{\"gpus\":8}", "gpus 8 is more than the 4 GPUs this machine has"},
		{"{\"duration_s\":0}", "duration_s must be greater than 0 (got 0)"},
		{"{\"duration_s\":-5}", "duration_s must be greater than 0 (got -5)"},
		{"{\"duration_s\":900}", "duration 900 s is above this server's maximum of 300 s"},
		{"{\"duration_s\":\"60\"}",
		 "field 'duration_s' must be a number of seconds, not a string"},
		{"{\"size\":\"huge\"}",
		 "unknown size 'huge': use 'large' (half a GPU) or 'xlarge'"},
		{"{\"size\":2}", "field 'size' must be a string, not an integer"},
		{"{\"app\":\"a b\"}", "app name 'a b' is not valid"},
		{"{\"app\":\"\"}", "app name '' is not valid"},
		{"{\"visitor\":\"a\\u0001\"}", "field 'visitor' contains a control character"},
		{"{\"max_wait_s\":-1}", "max_wait_s must be between 0 and 3600 s (got -1)"},
		{"{\"app\":\"x\",\"app\":\"y\"}",
		 "request body is not valid JSON: duplicate object key"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct lease_request r;
		char err[512] = "";
		assert_int_equal(parse(cases[i].body, &r, err), -22);
		if (strstr(err, cases[i].message) == NULL)
			fail_msg("body %s: message '%s' lacks '%s'", cases[i].body, err,
				 cases[i].message);
	}
}

static void overlong_text_is_refused(void **state)
{
	char body[600];
	memset(body, 0, sizeof(body));
	strcpy(body, "{\"task\":\"");
	memset(body + strlen(body), 'x', 300);
	strcat(body, "\"}");
	struct lease_request r;
	char err[512];
	assert_int_equal(parse(body, &r, err), -22);
	assert_non_null(strstr(err, "field 'task' is too long (300 bytes, at most 256)"));
}

static void attach_body(void **state)
{
	pid_t pid = 0;
	char err[256];
	assert_int_equal(request_parse_attach("{\"pid\":123}", 11, &pid, err, sizeof(err)), 0);
	assert_int_equal(pid, 123);
	assert_int_equal(request_parse_attach("{}", 2, &pid, err, sizeof(err)), -22);
	assert_string_equal(err, "field 'pid' is required");
	assert_int_equal(request_parse_attach("{\"pid\":-4}", 10, &pid, err, sizeof(err)), -22);
	assert_string_equal(err, "pid must be a positive process id (got -4)");
	assert_int_equal(request_parse_attach("{\"pid\":\"1\"}", 11, &pid, err, sizeof(err)), -22);
	assert_string_equal(err, "field 'pid' must be an integer, not a string");
	assert_int_equal(request_parse_attach("{\"pid\":1,\"x\":1}", 15, &pid, err, sizeof(err)),
			 -22);
	assert_string_equal(err, "unknown field 'x'; known fields: pid");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty_body_means_defaults),
		cmocka_unit_test(full_request),
		cmocka_unit_test(refusals_say_what_is_wrong),
		cmocka_unit_test(overlong_text_is_refused),
		cmocka_unit_test(attach_body),
		cmocka_unit_test(visitor_fields),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
