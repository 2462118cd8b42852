#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "zerogpu.h"

/* zerogpu visitor tier user:NAME [TIER]: the tier the visitor gateway gives a
 * signed-in visitor (docs/gateway.md). */
static int visitor_exec(const struct cli_globals *g, int argc, char **argv)
{
	if (cli_wants_help(&cmd_visitor, argc, argv))
		return 0;
	if ((argc != 3 && argc != 4) || strcmp(argv[1], "tier") != 0) {
		fprintf(stderr, "zerogpu visitor: expected 'tier VISITOR [TIER]'\n%s",
			cmd_visitor.usage);
		return 2;
	}
	const char *visitor = argv[2];
	if (strncmp(visitor, "user:", 5) != 0 || strpbrk(visitor, "/? ")) {
		fprintf(stderr,
			"zerogpu visitor: '%s' is not a signed-in visitor ('user:NAME'); "
			"anonymous visitors are always anonymous\n",
			visitor);
		return 2;
	}
	char path[512];
	snprintf(path, sizeof(path), "/v1/visitors/%s/tier", visitor);
	json_t *reply;
	json_t *body = argc == 4 ? json_pack("{s:s}", "tier", argv[3]) : NULL;
	if (cli_request(g, body ? "PUT" : "GET", path, body, false, &reply))
		return 1;
	printf("%s %s\n", json_string_value(json_object_get(reply, "visitor")),
	       json_string_value(json_object_get(reply, "tier")));
	json_decref(reply);
	return 0;
}

const struct cli_command cmd_visitor = {
	.name = "visitor",
	.summary = "give a signed-in visitor a tier",
	.usage = "Usage: zerogpu [--socket PATH] visitor tier user:NAME [free|pro|enterprise]\n"
		 "Show, or set, the tier the visitor gateway gives signed-in visitor NAME in the\n"
		 "visitor tokens it mints (docs/gateway.md); a visitor never given one is free.\n"
		 "Setting it needs root, zerogpud's own user or the admin token.\n",
	.exec = visitor_exec,
};
