/* The zerogpu CLI: one file per command, registered in main.c's table. */
#ifndef ZGPU_CLI_H
#define ZGPU_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Options shared by every command, taken before the command name. */
struct cli_globals {
	const char *socket_path; /* NULL: the library's default */
};

struct cli_command {
	const char *name;
	const char *summary;
	const char *usage; /* full --help text */
	/* argv[0] is the command name. Returns the process exit status. */
	int (*exec)(const struct cli_globals *g, int argc, char **argv);
};

extern const struct cli_command cmd_status;
extern const struct cli_command cmd_run;
extern const struct cli_command cmd_launch;
extern const struct cli_command cmd_version;
extern const struct cli_command cmd_quota;
extern const struct cli_command cmd_visitor;
extern const struct cli_command cmd_account;
extern const struct cli_command cmd_app;
extern const struct cli_command cmd_usage;

/* An aligned text table. */
struct table {
	size_t ncols, nrows;
	char **cells; /* nrows * ncols, owned */
};

void table_init(struct table *t, size_t ncols, const char *const *header);
void table_add(struct table *t, const char *const *row);
/* Prints the table with columns padded to their widest cell, and frees it. */
void table_print_free(struct table *t);

/*
 * Sends METHOD path with body (stolen, may be NULL). On success returns 0 with
 * the parsed reply in *reply (the caller json_decref()s it), and the reply's
 * text on stdout too when print_raw (for --json). On failure prints the
 * daemon's message to stderr and returns 1, the commands' exit status.
 */
int cli_request(const struct cli_globals *g, const char *method, const char *path, json_t *body,
		bool print_raw, json_t **reply);

/* True when argv[1] is -h or --help: prints the command's usage. */
int cli_wants_help(const struct cli_command *cmd, int argc, char **argv);

#endif
