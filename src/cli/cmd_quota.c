#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "zerogpu.h"

static void print_time(const char *label, json_t *ms)
{
	if (!json_is_integer(ms)) {
		printf("%-10s -\n", label);
		return;
	}
	time_t t = (time_t) (json_integer_value(ms) / 1000);
	struct tm tm;
	char buf[64];
	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("%-10s %s\n", label, buf);
}

/* Shows a visitor's daily GPU time: tier, used, left, and when the window resets. */
static int quota_exec(const struct cli_globals *g, int argc, char **argv)
{
	if (cli_wants_help(&cmd_quota, argc, argv))
		return 0;
	if (argc == 3 && strcmp(argv[1], "reset") == 0) {
		char path[512];
		json_t *reply;
		snprintf(path, sizeof(path), "/v1/quota/%s/reset", argv[2]);
		if (cli_request(g, "POST", path, NULL, false, &reply))
			return 1;
		json_decref(reply);
		printf("quota of %s reset\n", argv[2]);
		return 0;
	}
	bool as_json = argc == 3 && strcmp(argv[2], "--json") == 0;
	if (argc != 2 && !as_json) {
		fprintf(stderr, "zerogpu quota: name one visitor\n%s", cmd_quota.usage);
		return 2;
	}
	const char *visitor = argv[1];
	if (strchr(visitor, '/') || strchr(visitor, '?') || strchr(visitor, ' ')) {
		fprintf(stderr,
			"zerogpu quota: '%s' is not a visitor ('ip:ADDRESS' or "
			"'user:NAME')\n",
			visitor);
		return 2;
	}
	char path[512];
	snprintf(path, sizeof(path), "/v1/quota/%s", visitor);
	json_t *q;
	if (cli_request(g, "GET", path, NULL, as_json, &q))
		return 1;
	if (as_json) {
		json_decref(q);
		return 0;
	}
	printf("%-10s %s\n", "visitor", json_string_value(json_object_get(q, "visitor")));
	printf("%-10s %s\n", "tier", json_string_value(json_object_get(q, "tier")));
	printf("%-10s %.0f s of %.0f s\n", "used", json_number_value(json_object_get(q, "used_s")),
	       json_number_value(json_object_get(q, "limit_s")));
	printf("%-10s %.0f s\n", "reserved", json_number_value(json_object_get(q, "reserved_s")));
	printf("%-10s %.0f s\n", "left", json_number_value(json_object_get(q, "left_s")));
	print_time("resets", json_object_get(q, "resets_ms"));
	json_decref(q);
	return 0;
}

const struct cli_command cmd_quota = {
	.name = "quota",
	.summary = "show a visitor's daily GPU time",
	.usage = "Usage: zerogpu [--socket PATH] quota VISITOR [--json]\n"
		 "       zerogpu [--socket PATH] quota reset VISITOR\n"
		 "Show a visitor's tier, the GPU time used and left in their daily window, and\n"
		 "when it resets. VISITOR is 'ip:ADDRESS' for anonymous visitors and\n"
		 "'user:NAME' for those with a token. 'reset' starts the visitor's window over\n"
		 "(root, zerogpud's user or the admin token only).\n",
	.exec = quota_exec,
};
