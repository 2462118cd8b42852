/*
 * zerogpu launch: start a long-running app inside its gated cgroup. zerogpu
 * asks zerogpud to move this very process into the app's cgroup, then execs
 * COMMAND in its place: COMMAND and everything it forks are gated from their
 * first instruction, and COMMAND keeps zerogpu's pid, so a supervisor that
 * started zerogpu sees the app itself.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "zerogpu.h"

#define EXIT_ZEROGPU	 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND	 127

static int launch_exec(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"app", required_argument, NULL, 'a'},
		{"require-gate", no_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *app = NULL;
	bool require_gate = false;
	int c;
	while ((c = getopt_long(argc, argv, "+a:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'a':
			app = optarg;
			break;
		case 'r':
			require_gate = true;
			break;
		case 'h':
			fputs(cmd_launch.usage, stdout);
			return 0;
		default:
			fputs(cmd_launch.usage, stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "zerogpu launch: no command given\n%s", cmd_launch.usage);
		return 2;
	}
	char **cmd = argv + optind;

	zgpu_client *client = NULL;
	int r = zgpu_client_open(&client, g->socket_path);
	if (r == 0)
		r = zgpu_join_app(client, app, getpid());
	zgpu_client_free(client);
	if (r == ZGPU_ENOGATE && !require_gate) {
		fprintf(stderr, "zerogpu: warning: %s; running '%s' ungated\n", zgpu_last_error(),
			cmd[0]);
	} else if (r < 0) {
		fprintf(stderr, "zerogpu: %s\n", zgpu_last_error());
		return EXIT_ZEROGPU;
	}
	/* The Python package's leases then name the app the process is gated as. */
	if (app && setenv("ZEROGPU_APP", app, 1) < 0) {
		fprintf(stderr, "zerogpu: cannot set ZEROGPU_APP: %s\n", strerror(errno));
		return EXIT_ZEROGPU;
	}
	execvp(cmd[0], cmd);
	fprintf(stderr, "zerogpu: cannot run '%s': %s\n", cmd[0], strerror(errno));
	return errno == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC;
}

const struct cli_command cmd_launch = {
	.name = "launch",
	.summary = "start an app inside its gated cgroup",
	.usage = "Usage: zerogpu [--socket PATH] launch [--app NAME] [--require-gate] -- COMMAND "
		 "[ARG]...\n"
		 "Start COMMAND (a Gradio server, a `spaces` app, any long-running app) inside\n"
		 "app NAME's gated cgroup: COMMAND and everything it forks can open only the\n"
		 "GPUs that NAME's leases hold, from its first instruction. COMMAND takes\n"
		 "zerogpu's place (same pid); its calls to zerogpud count for NAME.\n"
		 "\n"
		 "When zerogpud does not gate devices, COMMAND runs ungated after a warning.\n"
		 "\n"
		 "  --app NAME       the app (default: 'default', or the app whose cgroup zerogpu\n"
		 "                   already runs in); also exported as ZEROGPU_APP\n"
		 "  --require-gate   refuse to run COMMAND ungated (exit 125)\n"
		 "  -h, --help       show this help\n"
		 "\n"
		 "Exit status: COMMAND's own; 125 when zerogpu failed, 126 when COMMAND could\n"
		 "not run, 127 when it was not found.\n",
	.exec = launch_exec,
};
