/*
 * zerogpu run: borrow devices, run a command on them, give them back.
 * Exit statuses follow timeout(1): the command's own, 124 when the lease
 * expired, 125 when zerogpu itself failed, 126/127 when the command could not
 * be run.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "zerogpu.h"

#define EXIT_EXPIRED	 124
#define EXIT_ZEROGPU	 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND	 127

static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
	int saved = errno;
	unsigned char b = (unsigned char) sig;
	(void) !write(signal_pipe[1], &b, 1);
	errno = saved;
}

static void progress(const zgpu_event *ev, void *userdata)
{
	int *last = userdata;
	if (ev->kind != ZGPU_EVENT_QUEUED || ev->position == *last)
		return;
	*last = ev->position;
	fprintf(stderr, "zerogpu: waiting for a GPU (position %d in the queue)\n", ev->position);
}

static int parse_positive(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !isfinite(v) || v < 0)
		return -1;
	*out = v;
	return 0;
}

/* Sets CUDA_VISIBLE_DEVICES to the granted UUIDs, comma-separated. */
static int export_devices(const zgpu_lease *l)
{
	size_t n = zgpu_lease_device_count(l), len = 0;
	char buf[8192] = "";
	for (size_t i = 0; i < n; i++) {
		int w = snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "",
				 zgpu_lease_device(l, i)->uuid);
		if (w < 0 || (size_t) w >= sizeof(buf) - len)
			return -1;
		len += (size_t) w;
	}
	if (setenv("CUDA_VISIBLE_DEVICES", buf, 1) < 0 ||
	    setenv("ZEROGPU_LEASE", zgpu_lease_id(l), 1) < 0)
		return -1;
	return 0;
}

/* The child's gate: zerogpud moves it into its app's gated cgroup before it execs. */
struct join {
	zgpu_client *client;
	const char *app;
};

/* Reaps a child that must not run after all. */
static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

/*
 * Forks CMD in a process group of its own, in its app's gated cgroup when
 * zerogpud gates devices (the child waits on a pipe until it is there).
 * Returns its pid, or -1 with *exit_status set when it could not be started
 * (the child reports a failed exec through a close-on-exec pipe).
 */
static pid_t spawn(char **cmd, const struct join *join, int *exit_status)
{
	int report[2], go[2];
	if (pipe2(report, O_CLOEXEC) < 0) {
		fprintf(stderr, "zerogpu: pipe: %s\n", strerror(errno));
		*exit_status = EXIT_ZEROGPU;
		return -1;
	}
	if (pipe2(go, O_CLOEXEC) < 0) {
		fprintf(stderr, "zerogpu: pipe: %s\n", strerror(errno));
		close(report[0]);
		close(report[1]);
		*exit_status = EXIT_ZEROGPU;
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "zerogpu: fork: %s\n", strerror(errno));
		close(report[0]);
		close(report[1]);
		close(go[0]);
		close(go[1]);
		*exit_status = EXIT_ZEROGPU;
		return -1;
	}
	if (pid == 0) {
		setpgid(0, 0);
		close(go[1]);
		char b;
		while (read(go[0], &b, 1) < 0 && errno == EINTR)
			;
		/* EOF: the parent is done with the gate (or gone). */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		execvp(cmd[0], cmd);
		int err = errno;
		(void) !write(report[1], &err, sizeof(err));
		_exit(EXIT_NOT_FOUND);
	}
	setpgid(pid, pid); /* also here, so the group exists before we attach it */
	close(report[1]);
	close(go[0]);
	int joined = zgpu_join_app(join->client, join->app, pid);
	if (joined < 0 && joined != ZGPU_ENOGATE) {
		/* Outside its app's cgroup the command would not be gated as the app's. */
		fprintf(stderr, "zerogpu: cannot put the command into its app's gated cgroup: %s\n",
			zgpu_last_error());
		close(go[1]);
		close(report[0]);
		reap(pid);
		*exit_status = EXIT_ZEROGPU;
		return -1;
	}
	close(go[1]);
	int err = 0;
	ssize_t n;
	while ((n = read(report[0], &err, sizeof(err))) < 0 && errno == EINTR)
		;
	close(report[0]);
	if (n == (ssize_t) sizeof(err)) {
		fprintf(stderr, "zerogpu: cannot run '%s': %s\n", cmd[0], strerror(err));
		reap(pid);
		*exit_status = err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC;
		return -1;
	}
	return pid;
}

static int install_signals(void)
{
	if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
	sigemptyset(&sa.sa_mask);
	int sigs[] = {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], &sa, NULL) < 0)
			return -1;
	return 0;
}

struct run_state {
	zgpu_client *client;
	zgpu_lease *lease;
	pid_t child;
	bool expired; /* the daemon said the deadline passed */
	bool ended;   /* the daemon ended the lease: nothing left to release */
	int events;   /* events read since the grant */
	double duration_s;
};

/* Reads a lease event if one comes within timeout_ms; returns false once the lease is gone. */
static bool handle_lease_event(struct run_state *st, int timeout_ms)
{
	zgpu_event ev;
	int r = zgpu_lease_next_event(st->lease, timeout_ms, &ev);
	if (r == ZGPU_ETIMEDOUT)
		return true;
	st->events++;
	if (r < 0) {
		/* Without the lease the devices may go to someone else: stop using them. */
		fprintf(stderr, "zerogpu: lost the lease (%s); stopping the command\n",
			zgpu_last_error());
		kill(-st->child, SIGKILL);
		st->ended = true;
		return false;
	}
	if (ev.kind == ZGPU_EVENT_EXPIRED) {
		st->expired = true;
		fprintf(stderr,
			"zerogpu: the lease's %g s ran out; the command is killed in %g s unless "
			"it exits\n",
			st->duration_s, ev.grace_s);
	} else if (ev.kind == ZGPU_EVENT_RELEASED) {
		st->ended = true;
		if (ev.state && strcmp(ev.state, "expired") == 0)
			st->expired = true;
		else if (ev.message)
			fprintf(stderr, "zerogpu: zerogpud ended the lease: %s\n", ev.message);
		/* The daemon ended the lease: the group is dead or dying; wait for it. */
		return false;
	}
	return true;
}

static int child_status(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return EXIT_ZEROGPU;
}

/* Runs until the child exits; returns zerogpu run's exit status. */
static int supervise(struct run_state *st)
{
	bool lease_open = true;
	for (;;) {
		struct pollfd fds[2] = {
			{.fd = signal_pipe[0], .events = POLLIN},
			{.fd = lease_open ? zgpu_lease_fd(st->lease) : -1, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			return EXIT_ZEROGPU;
		if (fds[1].revents)
			lease_open = handle_lease_event(st, 0);

		unsigned char sig;
		while (read(signal_pipe[0], &sig, 1) == 1) {
			if (sig != SIGCHLD)
				kill(-st->child, sig); /* pass on what the user sent */
		}
		int wstatus;
		pid_t w = waitpid(st->child, &wstatus, WNOHANG);
		if (w == st->child) {
			/* Hear what the daemon said (an expiry, the lease's end) before
			 * deciding how we ended and whether to release. A SIGKILL most
			 * likely came from the daemon, whose word may still be on its way. */
			bool daemon_killed = WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL;
			for (int seen = -1; lease_open && seen != st->events;) {
				seen = st->events;
				lease_open = handle_lease_event(st, daemon_killed ? 500 : 0);
			}
			if (st->expired && WIFSIGNALED(wstatus)) {
				fprintf(stderr,
					"zerogpu: the lease expired after %g s and the command was "
					"killed\n",
					st->duration_s);
				return EXIT_EXPIRED;
			}
			return child_status(wstatus);
		}
	}
}

static int run_exec(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"duration", required_argument, NULL, 'd'},
		{"size", required_argument, NULL, 's'},
		{"gpus", required_argument, NULL, 'n'},
		{"app", required_argument, NULL, 'a'},
		{"visitor", required_argument, NULL, 'v'},
		{"task", required_argument, NULL, 't'},
		{"max-wait", required_argument, NULL, 'w'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{"visitor-ip", required_argument, NULL, 'i'},
		{"visitor-token", required_argument, NULL, 'k'},
		{NULL, 0, NULL, 0},
	};
	zgpu_request req = ZGPU_REQUEST_INIT;
	bool quiet = false;
	int c;
	while ((c = getopt_long(argc, argv, "+d:s:n:qh", longopts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 'd':
			if (parse_positive(optarg, &req.duration_s) < 0 || req.duration_s == 0) {
				fprintf(stderr, "zerogpu run: -d takes seconds > 0, not '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 's':
			if (strcmp(optarg, "large") && strcmp(optarg, "xlarge")) {
				fprintf(stderr,
					"zerogpu run: -s takes 'large' (half a GPU) or 'xlarge' (a "
					"whole GPU), not '%s'\n",
					optarg);
				return 2;
			}
			req.size = optarg;
			break;
		case 'n': {
			long n = strtol(optarg, &end, 10);
			req.gpus = n >= 1 && n <= 1024 ? (int) n : 0;
			if (*end || end == optarg || req.gpus < 1) {
				fprintf(stderr,
					"zerogpu run: -n takes a number of GPUs >= 1, not '%s'\n",
					optarg);
				return 2;
			}
			break;
		}
		case 'a':
			req.app = optarg;
			break;
		case 'v':
			req.visitor = optarg;
			break;
		case 't':
			req.task = optarg;
			break;
		case 'w':
			if (parse_positive(optarg, &req.max_wait_s) < 0) {
				fprintf(stderr,
					"zerogpu run: --max-wait takes seconds >= 0, not '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'i':
			req.visitor_ip = optarg;
			break;
		case 'k':
			req.visitor_token = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			fputs(cmd_run.usage, stdout);
			return 0;
		default:
			fputs(cmd_run.usage, stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "zerogpu run: no command given\n%s", cmd_run.usage);
		return 2;
	}
	char **cmd = argv + optind;
	/* A token on the command line shows in `ps`: the environment keeps it private. */
	if (!req.visitor_token && getenv("ZEROGPU_VISITOR_TOKEN"))
		req.visitor_token = getenv("ZEROGPU_VISITOR_TOKEN");

	/* While waiting, Ctrl-C simply ends zerogpu: the closed stream withdraws the request. */
	struct run_state st = {0};
	int last_position = 0;
	if (zgpu_client_open(&st.client, g->socket_path) < 0 ||
	    zgpu_acquire(&st.lease, st.client, &req, -1, quiet ? NULL : progress, &last_position) <
		    0) {
		fprintf(stderr, "zerogpu: %s\n", zgpu_last_error());
		zgpu_client_free(st.client);
		return EXIT_ZEROGPU;
	}
	st.duration_s = zgpu_lease_duration_s(st.lease);
	/* From here on signals go to the pipe, so none is lost between fork and poll. */
	if (install_signals() < 0) {
		fprintf(stderr, "zerogpu: cannot set up signal handling: %s\n", strerror(errno));
		zgpu_release(st.client, st.lease, true, NULL);
		zgpu_client_free(st.client);
		return EXIT_ZEROGPU;
	}
	if (last_position && !quiet)
		fprintf(stderr, "zerogpu: granted lease %.8s\n", zgpu_lease_id(st.lease));
	if (export_devices(st.lease) < 0) {
		fprintf(stderr, "zerogpu: cannot set CUDA_VISIBLE_DEVICES\n");
		zgpu_release(st.client, st.lease, true, NULL);
		zgpu_client_free(st.client);
		return EXIT_ZEROGPU;
	}

	int status = EXIT_ZEROGPU;
	struct join join = {st.client, req.app};
	st.child = spawn(cmd, &join, &status);
	if (st.child < 0) {
		zgpu_release(st.client, st.lease, true, NULL);
		zgpu_client_free(st.client);
		return status;
	}
	if (zgpu_attach(st.client, st.lease, st.child) < 0)
		fprintf(stderr, "zerogpu: warning: cannot attach the command to the lease: %s\n",
			zgpu_last_error());

	status = supervise(&st);
	if (st.ended || status == EXIT_EXPIRED)
		zgpu_lease_free(st.lease);
	else if (zgpu_release(st.client, st.lease, false, NULL) < 0)
		fprintf(stderr, "zerogpu: warning: releasing the lease: %s\n", zgpu_last_error());
	zgpu_client_free(st.client);
	return status;
}

const struct cli_command cmd_run = {
	.name = "run",
	.summary = "run a command with a GPU lease",
	.usage = "Usage: zerogpu [--socket PATH] run [OPTION]... -- COMMAND [ARG]...\n"
		 "Borrow GPUs from zerogpud, run COMMAND on them, and give them back.\n"
		 "\n"
		 "COMMAND runs in a process group of its own with CUDA_VISIBLE_DEVICES set to\n"
		 "the granted devices' UUIDs and ZEROGPU_LEASE to the lease id, inside its app's\n"
		 "gated cgroup when zerogpud gates devices (it can open the granted GPUs only).\n"
		 "When the lease's duration runs out, the daemon kills COMMAND after a grace\n"
		 "period.\n"
		 "\n"
		 "  -d, --duration SECONDS  how long the lease may last (default: the daemon's, "
		 "60)\n"
		 "  -s, --size SIZE         large (half a GPU, the default) or xlarge (a whole "
		 "GPU)\n"
		 "  -n, --gpus N            how many devices, all granted together (default 1)\n"
		 "      --app NAME          the app the call is for (default: 'default')\n"
		 "      --visitor ID        the visitor the call is for (a label)\n"
		 "      --visitor-token T   charge the visitor this signed token names (also\n"
		 "                          $ZEROGPU_VISITOR_TOKEN)\n"
		 "      --visitor-ip ADDR   else charge this address as an anonymous visitor\n"
		 "      --task TEXT         a note naming the call, shown in status\n"
		 "      --max-wait SECONDS  give up after waiting this long in the queue\n"
		 "                          (default: the daemon's, 60; 0: only if free now)\n"
		 "  -q, --quiet             do not print queue progress\n"
		 "  -h, --help              show this help\n"
		 "\n"
		 "Exit status: COMMAND's own (128+N if killed by signal N); 124 when the lease\n"
		 "expired and COMMAND was killed; 125 when zerogpu failed (no GPU in time, bad\n"
		 "request, quota exceeded, daemon unreachable); 126 if COMMAND cannot run;\n"
		 "127 if not found.\n",
	.exec = run_exec,
};
