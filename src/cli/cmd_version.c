#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "zerogpu.h"

/* Prints our version, and the daemon's when one answers. */
static int version_exec(const struct cli_globals *g, int argc, char **argv)
{
	if (cli_wants_help(&cmd_version, argc, argv))
		return 0;
	printf("zerogpu %s (protocol %d)\n", ZGPU_VERSION, ZGPU_PROTOCOL_VERSION);
	zgpu_client *c;
	char *body = NULL;
	if (zgpu_client_open(&c, g->socket_path) < 0)
		return 0;
	if (zgpu_get(c, "/v1/status", &body) == 0) {
		json_t *st = json_loads(body, 0, NULL);
		const char *v = json_string_value(json_object_get(st, "version"));
		printf("zerogpud %s at %s\n", v ? v : "(unknown)", zgpu_client_socket_path(c));
		json_decref(st);
	} else {
		printf("zerogpud: not reachable at %s\n", zgpu_client_socket_path(c));
	}
	free(body);
	zgpu_client_free(c);
	return 0;
}

const struct cli_command cmd_version = {
	.name = "version",
	.summary = "show the versions of zerogpu and of the daemon",
	.usage = "Usage: zerogpu [--socket PATH] version\n"
		 "Show zerogpu's version, and zerogpud's when it is reachable.\n",
	.exec = version_exec,
};
