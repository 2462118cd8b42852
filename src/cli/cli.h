/* The zerogpu CLI: one file per command, registered in main.c's table. */
#ifndef ZGPU_CLI_H
#define ZGPU_CLI_H

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
extern const struct cli_command cmd_version;
extern const struct cli_command cmd_quota;
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

/* True when argv[1] is -h or --help: prints the command's usage. */
int cli_wants_help(const struct cli_command *cmd, int argc, char **argv);

#endif
