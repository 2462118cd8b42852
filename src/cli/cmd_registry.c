/* zerogpu account and zerogpu app: the registry of accounts and the apps they host. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "zerogpu.h"

static int account_exec(const struct cli_globals *g, int argc, char **argv)
{
	if (cli_wants_help(&cmd_account, argc, argv))
		return 0;
	json_t *reply;
	if (argc == 5 && !strcmp(argv[1], "add") && !strcmp(argv[3], "--kind")) {
		if (cli_request(g, "POST", "/v1/accounts",
				json_pack("{s:s, s:s}", "name", argv[2], "kind", argv[4]), false,
				&reply))
			return 1;
		printf("account %s (%s) added\n", argv[2], argv[4]);
	} else if (argc == 2 && !strcmp(argv[1], "list")) {
		if (cli_request(g, "GET", "/v1/accounts", NULL, false, &reply))
			return 1;
		struct table t;
		table_init(&t, 3, (const char *[]){"ACCOUNT", "KIND", "APPS"});
		size_t i;
		json_t *a;
		json_array_foreach(json_object_get(reply, "accounts"), i, a)
		{
			char apps[16];
			snprintf(apps, sizeof(apps), "%lld",
				 (long long) json_integer_value(json_object_get(a, "apps")));
			table_add(&t, (const char *[]){
					      json_string_value(json_object_get(a, "name")),
					      json_string_value(json_object_get(a, "kind")), apps});
		}
		table_print_free(&t);
	} else {
		fputs(cmd_account.usage, stderr);
		return 2;
	}
	json_decref(reply);
	return 0;
}

static int app_exec(const struct cli_globals *g, int argc, char **argv)
{
	if (cli_wants_help(&cmd_app, argc, argv))
		return 0;
	json_t *reply;
	if (argc == 5 && !strcmp(argv[1], "add") && !strcmp(argv[3], "--account")) {
		if (cli_request(g, "POST", "/v1/apps",
				json_pack("{s:s, s:s}", "name", argv[2], "account", argv[4]), false,
				&reply))
			return 1;
		printf("app %s added to account %s\ntoken: %s\n(keep it: it is not shown again)\n",
		       argv[2], argv[4], json_string_value(json_object_get(reply, "token")));
	} else if (argc == 2 && !strcmp(argv[1], "list")) {
		if (cli_request(g, "GET", "/v1/apps", NULL, false, &reply))
			return 1;
		struct table t;
		table_init(&t, 2, (const char *[]){"APP", "ACCOUNT"});
		size_t i;
		json_t *a;
		json_array_foreach(json_object_get(reply, "apps"), i, a) table_add(
			&t, (const char *[]){json_string_value(json_object_get(a, "name")),
					     json_string_value(json_object_get(a, "account"))});
		table_print_free(&t);
	} else if (argc == 3 && !strcmp(argv[1], "rm")) {
		char path[256];
		if (strchr(argv[2], '/') || strlen(argv[2]) > 64) {
			fprintf(stderr, "zerogpu app rm: '%s' is not an app name\n", argv[2]);
			return 2;
		}
		snprintf(path, sizeof(path), "/v1/apps/%s", argv[2]);
		if (cli_request(g, "DELETE", path, NULL, false, &reply))
			return 1;
		printf("app %s removed\n", argv[2]);
	} else {
		fputs(cmd_app.usage, stderr);
		return 2;
	}
	json_decref(reply);
	return 0;
}

const struct cli_command cmd_account = {
	.name = "account",
	.summary = "add or list the accounts that own apps",
	.usage = "Usage: zerogpu [--socket PATH] account add NAME --kind free|pro|org\n"
		 "       zerogpu [--socket PATH] account list\n"
		 "An account owns apps: a free account may host 2, pro 10, org 50 (configurable\n"
		 "in [accounts]). Adding needs root, zerogpud's user or the admin token.\n",
	.exec = account_exec,
};

const struct cli_command cmd_app = {
	.name = "app",
	.summary = "register apps and get their tokens",
	.usage = "Usage: zerogpu [--socket PATH] app add NAME --account ACCOUNT\n"
		 "       zerogpu [--socket PATH] app list\n"
		 "       zerogpu [--socket PATH] app rm NAME\n"
		 "Adding an app prints its token, once: the app sends it as 'Authorization:\n"
		 "Bearer TOKEN' and its leases are then its own. Changes need root, zerogpud's\n"
		 "user or the admin token.\n",
	.exec = app_exec,
};
