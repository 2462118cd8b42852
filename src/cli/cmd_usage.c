#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "zerogpu.h"

/* GPU time by app over a period, from the daemon's ledger. */
static int usage_exec(const struct cli_globals *g, int argc, char **argv)
{
	if (cli_wants_help(&cmd_usage, argc, argv))
		return 0;
	const char *app = NULL, *since = NULL;
	bool as_json = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--app") && i + 1 < argc)
			app = argv[++i];
		else if (!strcmp(argv[i], "--since") && i + 1 < argc)
			since = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			as_json = true;
		else {
			fprintf(stderr, "zerogpu usage: unknown argument '%s'\n%s", argv[i],
				cmd_usage.usage);
			return 2;
		}
	}
	for (const char *s = app ? app : ""; *s; s++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
			    *s)) {
			fprintf(stderr, "zerogpu usage: '%s' is not an app name\n", app);
			return 2;
		}
	for (const char *s = since ? since : ""; *s; s++)
		if (!strchr("0123456789.smhd", *s)) {
			fprintf(stderr,
				"zerogpu usage: --since takes Unix seconds or 90m, 24h, 7d\n");
			return 2;
		}
	char path[256];
	snprintf(path, sizeof(path), "/v1/usage?since=%s%s%s", since ? since : "24h",
		 app ? "&app=" : "", app ? app : "");
	json_t *u;
	if (cli_request(g, "GET", path, NULL, as_json, &u))
		return 1;
	if (as_json) {
		json_decref(u);
		return 0;
	}
	struct table t;
	table_init(&t, 4, (const char *[]){"APP", "LEASES", "USED", "CHARGED"});
	size_t i;
	json_t *a;
	json_t *rows = json_object_get(u, "apps");
	json_t *total = json_object_get(u, "total");
	for (i = 0; i <= json_array_size(rows); i++) {
		a = i < json_array_size(rows) ? json_array_get(rows, i) : total;
		char leases[32], used[32], charged[32];
		snprintf(leases, sizeof(leases), "%lld",
			 (long long) json_integer_value(json_object_get(a, "leases")));
		snprintf(used, sizeof(used), "%.1f s",
			 json_number_value(json_object_get(a, "used_s")));
		snprintf(charged, sizeof(charged), "%.0f s",
			 json_number_value(json_object_get(a, "charged_s")));
		const char *name = a == total ? "(all)"
					      : json_string_value(json_object_get(a, "app"));
		table_add(&t, (const char *[]){name, leases, used, charged});
	}
	table_print_free(&t);
	json_decref(u);
	return 0;
}

const struct cli_command cmd_usage = {
	.name = "usage",
	.summary = "show GPU time by app",
	.usage = "Usage: zerogpu [--socket PATH] usage [--app NAME] [--since WHEN] [--json]\n"
		 "Show the leases, seconds used and seconds charged per app since WHEN: Unix\n"
		 "seconds, or a time ago like 90m, 24h (the default) or 7d.\n",
	.exec = usage_exec,
};
