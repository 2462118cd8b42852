/* zerogpu — the command line client of zerogpud. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"

static const struct cli_command *const commands[] = {
	&cmd_status, &cmd_run, &cmd_launch,  &cmd_quota,   &cmd_visitor,
	&cmd_usage,  &cmd_app, &cmd_account, &cmd_version,
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
	fputs("Usage: zerogpu [--socket PATH] COMMAND [ARGS]...\n"
	      "Borrow GPUs from zerogpud, the GPU lending daemon.\n"
	      "\n"
	      "Commands:\n",
	      f);
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
	fputs("\n"
	      "Options:\n"
	      "  --socket PATH  zerogpud's Unix socket (default: $ZEROGPU_SOCKET, else\n"
	      "                 /run/zerogpu/zerogpud.sock for root, else\n"
	      "                 $XDG_RUNTIME_DIR/zerogpu.sock)\n"
	      "  -h, --help     show this help; 'zerogpu COMMAND --help' for a command's\n"
	      "\n"
	      "Example:\n"
	      "  zerogpu run -d 30 -- python train.py   # run with a GPU for at most 30 s\n",
	      f);
}

int cli_wants_help(const struct cli_command *cmd, int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(cmd->usage, stdout);
			return 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct cli_globals g = {0};
	log_setup("zerogpu", LOG_INFO);
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
			g.socket_path = argv[++i];
		} else if (!strncmp(argv[i], "--socket=", 9)) {
			g.socket_path = argv[i] + 9;
		} else if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
			return cmd_version.exec(&g, 1, (char *[]){"version", NULL});
		} else {
			fprintf(stderr, "zerogpu: unknown option '%s'\nTry 'zerogpu --help'.\n",
				argv[i]);
			return 2;
		}
	}
	if (i == argc) {
		usage(stderr);
		return 2;
	}
	for (size_t c = 0; c < NCOMMANDS; c++) {
		if (strcmp(argv[i], commands[c]->name) == 0) {
			optind = 1; /* each command parses its own options from its argv */
			return commands[c]->exec(&g, argc - i, argv + i);
		}
	}
	fprintf(stderr, "zerogpu: unknown command '%s'\nTry 'zerogpu --help'.\n", argv[i]);
	return 2;
}
