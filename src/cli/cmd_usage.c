#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "zerogpu.h"

/* Seconds at key of o, with decimals (used) or whole (charged, overage). */
static void seconds_text(char *out, size_t size, const json_t *o, const char *key, int decimals)
{
	snprintf(out, size, "%.*f s", decimals, json_number_value(json_object_get(o, key)));
}

/* Adds a row of figures f (a node's, or the total) under the names app and node. */
static void add_figures(struct table *t, const char *app, const char *node, const json_t *f)
{
	char leases[32], used[32], charged[32], over[32];
	snprintf(leases, sizeof(leases), "%lld",
		 (long long) json_integer_value(json_object_get(f, "leases")));
	seconds_text(used, sizeof(used), f, "used_s", 1);
	seconds_text(charged, sizeof(charged), f, "charged_s", 0);
	seconds_text(over, sizeof(over), f, "overage_s", 0);
	table_add(t, (const char *[]){app, node, leases, used, charged, over});
}

/* One row per app and node (a shared ledger's nodes), then the total. */
static void print_usage(const json_t *u)
{
	struct table t;
	table_init(&t, 6, (const char *[]){"APP", "NODE", "LEASES", "USED", "CHARGED", "OVERAGE"});
	const json_t *apps = json_object_get(u, "apps");
	for (size_t i = 0; i < json_array_size(apps); i++) {
		const json_t *a = json_array_get(apps, i), *nodes = json_object_get(a, "nodes");
		for (size_t j = 0; j < json_array_size(nodes); j++) {
			const json_t *n = json_array_get(nodes, j);
			const char *node = json_string_value(json_object_get(n, "node"));
			add_figures(&t, json_string_value(json_object_get(a, "app")),
				    node && *node ? node : "-", n);
		}
	}
	add_figures(&t, "(all)", "", json_object_get(u, "total"));
	table_print_free(&t);
}

/* Seconds past the quota, by visitor and app: what an operator charges back. */
static void print_overage(const json_t *u)
{
	struct table t;
	table_init(&t, 4, (const char *[]){"VISITOR", "APP", "LEASES", "OVERAGE"});
	const json_t *rows = json_object_get(u, "overage");
	for (size_t i = 0; i < json_array_size(rows); i++) {
		const json_t *o = json_array_get(rows, i);
		char leases[32], over[32];
		snprintf(leases, sizeof(leases), "%lld",
			 (long long) json_integer_value(json_object_get(o, "leases")));
		seconds_text(over, sizeof(over), o, "overage_s", 0);
		table_add(&t, (const char *[]){json_string_value(json_object_get(o, "visitor")),
					       json_string_value(json_object_get(o, "app")), leases,
					       over});
	}
	table_print_free(&t);
}

/* GPU time by app and node over a period, from the daemon's ledger. */
static int usage_exec(const struct cli_globals *g, int argc, char **argv)
{
	if (cli_wants_help(&cmd_usage, argc, argv))
		return 0;
	const char *app = NULL, *since = NULL;
	bool as_json = false, overage = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--app") && i + 1 < argc)
			app = argv[++i];
		else if (!strcmp(argv[i], "--since") && i + 1 < argc)
			since = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			as_json = true;
		else if (!strcmp(argv[i], "--overage"))
			overage = true;
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
	if (!as_json) {
		if (overage)
			print_overage(u);
		else
			print_usage(u);
	}
	json_decref(u);
	return 0;
}

const struct cli_command cmd_usage = {
	.name = "usage",
	.summary = "show GPU time by app and node, and overage",
	.usage = "Usage: zerogpu [--socket PATH] usage [--app NAME] [--since WHEN] [--overage]\n"
		 "                                     [--json]\n"
		 "Show the leases, seconds used, charged and past the quota (overage) per app\n"
		 "and node since WHEN: Unix seconds, or a time ago like 90m, 24h (the default)\n"
		 "or 7d. With a shared ledger (docs/cluster.md) every node's leases count.\n"
		 "  --overage   instead, the seconds past the quota by visitor and app, for\n"
		 "              tiers whose calls may go past it ([overage] in zerogpud.conf)\n",
	.exec = usage_exec,
};
