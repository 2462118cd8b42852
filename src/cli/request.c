/* One request to the daemon, as every command but `run` makes it. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "zerogpu.h"

int cli_request(const struct cli_globals *g, const char *method, const char *path, json_t *body,
		bool print_raw, json_t **reply)
{
	zgpu_client *c = NULL;
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL, *out = NULL;
	json_decref(body);
	int r = zgpu_client_open(&c, g->socket_path);
	if (r == 0)
		r = zgpu_call(c, method, path, text, &out);
	free(text);
	zgpu_client_free(c);
	if (r < 0) {
		fprintf(stderr, "zerogpu: %s\n", zgpu_last_error());
		return 1;
	}
	if (print_raw)
		fputs(out, stdout);
	*reply = json_loads(out, 0, NULL);
	free(out);
	if (!*reply) {
		fprintf(stderr, "zerogpu: zerogpud's reply to %s %s is not JSON\n", method, path);
		return 1;
	}
	return 0;
}
