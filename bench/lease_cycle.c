/*
 * lease_cycle — what a full acquire -> grant -> release cycle costs through
 * libzerogpu over the Unix socket, against the raw floor of a plain Unix-socket
 * round trip between two processes on the same machine.
 *
 * It starts its own zerogpud on simulated devices, so it needs no setup:
 *	build/bench/lease_cycle [--daemon PATH] [--cycles N] [--clients N] [--seconds S]
 *	build/bench/lease_cycle --gate[=cgroup-v1|cgroup-v2]   (as root)
 *	build/bench/lease_cycle --ledger postgresql://USER@HOST:PORT/DB
 *	build/bench/lease_cycle --events N
 * With --gate it runs a gated zerogpud (fake device nodes, the benchmark itself
 * in the app's gated cgroup) beside an ungated one, taking turns, and prints
 * what gating adds; with --events, a zerogpud that N clients of GET /v1/events
 * follow beside one nobody follows. Not a test: it prints what it measured.
 */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "zerogpu.h"

#define NDEVICES 4

struct samples {
	int64_t *us;
	size_t n, cap;
};

static void sample_add(struct samples *s, int64_t us)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 4096;
		s->us = realloc(s->us, s->cap * sizeof(*s->us));
		if (!s->us) {
			perror("realloc");
			exit(1);
		}
	}
	s->us[s->n++] = us;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
	return (x > y) - (x < y);
}

/* Sorts s and returns the q-quantile (0..1). */
static double quantile(struct samples *s, double q)
{
	if (!s->n)
		return 0;
	qsort(s->us, s->n, sizeof(*s->us), cmp_i64);
	size_t i = (size_t) (q * (double) (s->n - 1) + 0.5);
	return (double) s->us[i];
}

/* ---- the raw floor: a 64-byte ping-pong between two processes ---------- */

static void raw_round_trips(int count, struct samples *out)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		perror("socketpair");
		exit(1);
	}
	pid_t echo = fork();
	if (echo == 0) {
		char buf[64];
		close(sv[0]);
		for (;;) {
			ssize_t n = read(sv[1], buf, sizeof(buf));
			if (n <= 0 || write(sv[1], buf, (size_t) n) != n)
				_exit(0);
		}
	}
	close(sv[1]);
	char msg[64] = "ping";
	for (int i = 0; i < count; i++) {
		int64_t t0 = clock_mono_us();
		if (write(sv[0], msg, sizeof(msg)) != (ssize_t) sizeof(msg))
			exit(1);
		size_t got = 0;
		while (got < sizeof(msg)) {
			ssize_t n = read(sv[0], msg + got, sizeof(msg) - got);
			if (n <= 0)
				exit(1);
			got += (size_t) n;
		}
		sample_add(out, clock_mono_us() - t0);
	}
	close(sv[0]);
	waitpid(echo, NULL, 0);
}

/* ---- zerogpud under test ----------------------------------------------- */

struct daemon {
	pid_t pid;
	char dir[64];
	char socket_path[108];
};

/* Starts zerogpud on NDEVICES simulated devices in a directory of its own, with the
 * extra arguments (NULL-terminated, may be NULL). */
static void start_daemon(struct daemon *d, const char *path, char *const *extra)
{
	snprintf(d->dir, sizeof(d->dir), "/tmp/zerogpu-bench-XXXXXX");
	if (!mkdtemp(d->dir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(d->socket_path, sizeof(d->socket_path), "%s/zerogpud.sock", d->dir);
	char state[128], simulate[16];
	snprintf(state, sizeof(state), "%s/state", d->dir);
	snprintf(simulate, sizeof(simulate), "%dx80G", NDEVICES);
	char *argv[32] = {(char *) path,  "--simulate",	    simulate, "--socket",
			  d->socket_path, "--state-dir",    state,    "--log-level",
			  "warn",	  "--max-duration", "300"};
	int n = 11;
	/* Without extra arguments, ungated even where real GPUs are (as the numbers
	 * in BENCHMARKS.md were taken). */
	char *const ungated[] = {"--gate", "off", NULL};
	for (char *const *a = extra ? extra : ungated; *a && n < 31; a++)
		argv[n++] = *a;
	argv[n] = NULL;
	d->pid = fork();
	if (d->pid == 0) {
		execv(path, argv);
		fprintf(stderr, "lease_cycle: cannot run %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {
		struct stat st;
		if (stat(d->socket_path, &st) == 0)
			return;
		usleep(10000);
	}
	fprintf(stderr, "lease_cycle: zerogpud did not start\n");
	exit(1);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void) st;
	(void) type;
	(void) ftw;
	return remove(path) < 0 ? -1 : 0;
}

/* Stops the daemon and removes its directory (its ledger, lock and socket). */
static int stop_daemon(struct daemon *d)
{
	int status;
	kill(d->pid, SIGTERM);
	waitpid(d->pid, &status, 0);
	if (nftw(d->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
		fprintf(stderr, "lease_cycle: cannot remove %s: %s\n", d->dir, strerror(errno));
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- the gate: fake nodes, and the benchmark inside the app's cgroup ----- */

/* Fake GPU nodes (195:k) in dir, as the gate tests make them. */
static void make_nodes(const char *dir)
{
	char path[128];
	for (int k = 0; k < NDEVICES; k++) {
		snprintf(path, sizeof(path), "%s/nvidia%d", dir, k);
		if (mknod(path, S_IFCHR | 0666, makedev(195, (unsigned) k)) < 0) {
			fprintf(stderr, "lease_cycle: mknod %s: %s (--gate needs root)\n", path,
				strerror(errno));
			exit(1);
		}
	}
}

/* Where this process is in cgroup2 and in v1's devices hierarchy, to come back to. */
static char home_v2[512], home_devices[512];

static void remember_home(void)
{
	FILE *f = fopen("/proc/self/cgroup", "r");
	char line[512];
	while (f && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "0::", 3) == 0)
			snprintf(home_v2, sizeof(home_v2), "%s", line + 3);
		else if (strstr(line, ":devices:"))
			snprintf(home_devices, sizeof(home_devices), "%s",
				 strstr(line, ":devices:") + 9);
	}
	if (f)
		fclose(f);
}

static void go_home(void)
{
	const char *mounts[2][2] = {{"/sys/fs/cgroup/unified", home_v2},
				    {"/sys/fs/cgroup/devices", home_devices}};
	for (int i = 0; i < 2; i++) {
		char path[1100];
		if (!mounts[i][1][0])
			continue;
		snprintf(path, sizeof(path), "%s%s/cgroup.procs", mounts[i][0], mounts[i][1]);
		FILE *f = fopen(path, "w");
		if (f) {
			fprintf(f, "%d\n", (int) getpid());
			fclose(f);
		}
	}
}

/* Joins the app "bench" of the daemon at socket: its requests are then known by their
 * cgroup, and each revoke looks at this process's descriptors, as for a real app. */
static void join_app(const char *socket)
{
	zgpu_client *c;
	if (zgpu_client_open(&c, socket) < 0 || zgpu_join_app(c, "bench", getpid()) < 0) {
		fprintf(stderr, "lease_cycle: cannot join the gated app: %s\n", zgpu_last_error());
		exit(1);
	}
	zgpu_client_free(c);
}

/* ---- cycles ------------------------------------------------------------ */

/* Which client holds each device, as seen by clients: a second holder is a double grant. */
static atomic_int holder[NDEVICES];
static atomic_long double_grants;

struct worker {
	const char *socket;
	int id;
	int64_t until_us;
	int max_cycles;
	struct samples cycle, grant;
	long cycles;
	int error;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	zgpu_client *c;
	if (zgpu_client_open(&c, w->socket) < 0) {
		w->error = 1;
		return NULL;
	}
	zgpu_request req = ZGPU_REQUEST_INIT;
	req.duration_s = 30;
	req.max_wait_s = 60;
	req.app = "bench";
	while ((w->max_cycles == 0 || w->cycles < w->max_cycles) &&
	       (w->until_us == 0 || clock_mono_us() < w->until_us)) {
		zgpu_lease *l;
		int64_t t0 = clock_mono_us();
		if (zgpu_acquire(&l, c, &req, 60000, NULL, NULL) < 0) {
			fprintf(stderr, "lease_cycle: acquire: %s\n", zgpu_last_error());
			w->error = 1;
			break;
		}
		int64_t t1 = clock_mono_us();
		int dev = zgpu_lease_device(l, 0)->index;
		int expected = 0;
		if (!atomic_compare_exchange_strong(&holder[dev], &expected, w->id + 1))
			atomic_fetch_add(&double_grants, 1);
		/* Stop using the device before giving it back, as a real client does. */
		atomic_store(&holder[dev], 0);
		if (zgpu_release(c, l, false, NULL) < 0) {
			fprintf(stderr, "lease_cycle: release: %s\n", zgpu_last_error());
			w->error = 1;
			break;
		}
		int64_t t2 = clock_mono_us();
		sample_add(&w->grant, t1 - t0);
		sample_add(&w->cycle, t2 - t0);
		w->cycles++;
	}
	zgpu_client_free(c);
	return NULL;
}

struct result {
	double seconds, cycles_per_s;
	long cycles;
	struct samples cycle, grant;
	int errors;
};

static void run_clients(const char *socket, int nclients, int cycles_each, double seconds,
			struct result *r)
{
	struct worker *ws = calloc((size_t) nclients, sizeof(*ws));
	pthread_t *th = calloc((size_t) nclients, sizeof(*th));
	int64_t start = clock_mono_us();
	for (int i = 0; i < nclients; i++) {
		ws[i].socket = socket;
		ws[i].id = i;
		ws[i].max_cycles = cycles_each;
		ws[i].until_us = seconds > 0 ? start + (int64_t) (seconds * 1e6) : 0;
		pthread_create(&th[i], NULL, worker_run, &ws[i]);
	}
	memset(r, 0, sizeof(*r));
	for (int i = 0; i < nclients; i++) {
		pthread_join(th[i], NULL);
		r->cycles += ws[i].cycles;
		r->errors += ws[i].error;
		for (size_t k = 0; k < ws[i].cycle.n; k++) {
			sample_add(&r->cycle, ws[i].cycle.us[k]);
			sample_add(&r->grant, ws[i].grant.us[k]);
		}
		free(ws[i].cycle.us);
		free(ws[i].grant.us);
	}
	r->seconds = (double) (clock_mono_us() - start) / 1e6;
	r->cycles_per_s = (double) r->cycles / r->seconds;
	free(ws);
	free(th);
}

static void cpu_model(char *out, size_t size)
{
	snprintf(out, size, "unknown CPU");
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[256];
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "model name", 10) == 0) {
			char *v = strchr(line, ':');
			if (v) {
				snprintf(out, size, "%s", v + 2);
				out[strcspn(out, "\n")] = '\0';
			}
			break;
		}
	}
	if (f)
		fclose(f);
}

/* Adds b's samples to a. */
static void merge(struct result *a, const struct result *b)
{
	for (size_t k = 0; k < b->cycle.n; k++) {
		sample_add(&a->cycle, b->cycle.us[k]);
		sample_add(&a->grant, b->grant.us[k]);
	}
	a->cycles += b->cycles;
	a->seconds += b->seconds;
	a->errors += b->errors;
	a->cycles_per_s = (double) a->cycles / a->seconds;
}

static void result_free(struct result *r)
{
	free(r->cycle.us);
	free(r->grant.us);
}

/*
 * Single-client cycles against two daemons in rounds taking turns (the machine is
 * noisy), each one's figures, and what the second adds to the first's. Returns the
 * clients' errors.
 */
static int side_by_side(const char *const names[2], const char *const sockets[2], int cycles,
			const char *what)
{
	enum { ROUNDS = 20 };
	struct result sum[2] = {0}, r;
	struct samples grant_delta = {0}, cycle_delta = {0}; /* per round: second - first */
	for (int which = 0; which < 2; which++) {
		run_clients(sockets[which], 1, 500, 0, &r); /* warm caches and allocators */
		result_free(&r);
	}
	for (int round = 0; round < ROUNDS; round++) {
		double grant50[2], cycle50[2];
		for (int which = 0; which < 2; which++) {
			run_clients(sockets[which], 1, cycles / ROUNDS, 0, &r);
			grant50[which] = quantile(&r.grant, 0.5);
			cycle50[which] = quantile(&r.cycle, 0.5);
			merge(&sum[which], &r);
			result_free(&r);
		}
		sample_add(&grant_delta, (int64_t) (grant50[1] - grant50[0]));
		sample_add(&cycle_delta, (int64_t) (cycle50[1] - cycle50[0]));
	}
	printf("%d single-client cycles each, in %d rounds taking turns\n\n", cycles, ROUNDS);
	printf("%-36s %10s %9s %9s %9s\n", "", "per second", "p50 us", "p99 us", "max us");
	double grant50[2], cycle50[2];
	for (int i = 0; i < 2; i++) {
		char label[64];
		grant50[i] = quantile(&sum[i].grant, 0.5);
		cycle50[i] = quantile(&sum[i].cycle, 0.5);
		snprintf(label, sizeof(label), "%s: full cycle (acquire..release)", names[i]);
		printf("%-36s %10.0f %9.1f %9.1f %9.1f\n", label, sum[i].cycles_per_s, cycle50[i],
		       quantile(&sum[i].cycle, 0.99), quantile(&sum[i].cycle, 1.0));
		snprintf(label, sizeof(label), "%s: grant latency (acquire)", names[i]);
		printf("%-36s %10s %9.1f %9.1f %9.1f\n", label, "", grant50[i],
		       quantile(&sum[i].grant, 0.99), quantile(&sum[i].grant, 1.0));
	}
	/* The machine drifts between rounds: the median of the rounds' own differences is
	 * the steadier answer; the difference of the pooled medians is shown beside it. */
	printf("\n%s adds to the p50 grant latency: %.1f us (median of %d rounds' "
	       "differences; pooled: %.1f us)\n",
	       what, quantile(&grant_delta, 0.5), ROUNDS, grant50[1] - grant50[0]);
	printf("%s adds to the p50 full cycle:    %.1f us (median of %d rounds' differences; "
	       "pooled: %.1f us)\n",
	       what, quantile(&cycle_delta, 0.5), ROUNDS, cycle50[1] - cycle50[0]);
	free(grant_delta.us);
	free(cycle_delta.us);
	int errors = sum[0].errors + sum[1].errors;
	result_free(&sum[0]);
	result_free(&sum[1]);
	return errors;
}

/*
 * --ledger URL: a zerogpud on its SQLite ledger beside one on the PostgreSQL at URL,
 * side by side: what the shared ledger adds to a grant.
 */
static int ledger_comparison(const char *daemon, const char *url, int cycles)
{
	struct daemon sqlite, pg;
	char ledger[1024];
	snprintf(ledger, sizeof(ledger), "%s", url);
	char *with_pg[] = {"--gate", "off", "--ledger", ledger, NULL};
	start_daemon(&sqlite, daemon, NULL);
	start_daemon(&pg, daemon, with_pg);
	printf("ledger: SQLite (state directory) vs PostgreSQL (%s)\n", url);
	const char *const names[2] = {"sqlite", "postgresql"};
	const char *const sockets[2] = {sqlite.socket_path, pg.socket_path};
	int errors = side_by_side(names, sockets, cycles, "postgresql");
	int sqlite_exit = stop_daemon(&sqlite), pg_exit = stop_daemon(&pg);
	printf("client errors: %d; zerogpud exit status %d (sqlite), %d (postgresql)\n", errors,
	       sqlite_exit, pg_exit);
	return errors || sqlite_exit || pg_exit ? 1 : 0;
}

/*
 * --gate: an ungated and a gated zerogpud side by side, single-client cycles in
 * rounds taking turns (the machine is noisy), and what gating adds.
 */
static int gate_comparison(const char *daemon, const char *mode, int cycles)
{
	if (geteuid() != 0) {
		fprintf(stderr, "lease_cycle: --gate needs root (cgroups, BPF, mknod)\n");
		return 2;
	}
	struct daemon plain, gated;
	start_daemon(&plain, daemon, NULL);
	char nodes[64];
	snprintf(nodes, sizeof(nodes), "/tmp/zerogpu-bench-nodes-XXXXXX");
	if (!mkdtemp(nodes)) {
		perror("mkdtemp");
		return 1;
	}
	make_nodes(nodes);
	char root[64], gate_mode[32];
	snprintf(root, sizeof(root), "zerogpu-bench-%d", (int) getpid());
	snprintf(gate_mode, sizeof(gate_mode), "%s", mode);
	char *extra[] = {"--gate", gate_mode, "--device-dir", nodes, "--cgroup-root", root, NULL};
	start_daemon(&gated, daemon, extra);
	remember_home();
	join_app(gated.socket_path);

	printf("gate: %s\n", mode);
	const char *const names[2] = {"ungated", "gated"};
	const char *const sockets[2] = {plain.socket_path, gated.socket_path};
	int errors = side_by_side(names, sockets, cycles, "gating");
	go_home();
	int plain_exit = stop_daemon(&plain), gated_exit = stop_daemon(&gated);
	for (int k = 0; k < NDEVICES; k++) {
		char path[128];
		snprintf(path, sizeof(path), "%s/nvidia%d", nodes, k);
		unlink(path);
	}
	rmdir(nodes);
	printf("client errors: %d; zerogpud exit status %d (ungated), %d (gated)\n", errors,
	       plain_exit, gated_exit);
	return errors || plain_exit || gated_exit ? 1 : 0;
}

/* A client of GET /v1/events that reads everything until the stream ends. */
struct follower {
	pthread_t thread;
	int fd;
	long bytes;
};

static void *follow(void *arg)
{
	struct follower *f = arg;
	static const char get[] = "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n";
	char buf[65536];
	if (write(f->fd, get, sizeof(get) - 1) != (ssize_t) sizeof(get) - 1)
		return NULL;
	for (ssize_t n; (n = read(f->fd, buf, sizeof(buf))) > 0;)
		f->bytes += n;
	return NULL;
}

static void start_follower(struct follower *f, const char *socket_path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
	f->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->fd < 0 || connect(f->fd, (struct sockaddr *) &addr, sizeof(addr)) < 0 ||
	    pthread_create(&f->thread, NULL, follow, f) != 0) {
		perror("lease_cycle: event stream client");
		exit(1);
	}
}

/*
 * --events N: a zerogpud that N clients of the event stream follow beside one nobody
 * follows, side by side: what publishing every lease's events costs a grant.
 */
static int events_comparison(const char *daemon, int followers, int cycles)
{
	struct daemon quiet, followed;
	start_daemon(&quiet, daemon, NULL);
	start_daemon(&followed, daemon, NULL);
	struct follower *f = calloc((size_t) followers, sizeof(*f));
	if (!f)
		return 1;
	for (int i = 0; i < followers; i++)
		start_follower(&f[i], followed.socket_path);
	printf("event stream: no client vs %d clients of GET /v1/events\n", followers);
	const char *const names[2] = {"no stream", "followed"};
	const char *const sockets[2] = {quiet.socket_path, followed.socket_path};
	int errors = side_by_side(names, sockets, cycles, "the event stream");
	int quiet_exit = stop_daemon(&quiet), followed_exit = stop_daemon(&followed);
	long bytes = 0;
	for (int i = 0; i < followers; i++) { /* each stream ended with its daemon */
		pthread_join(f[i].thread, NULL);
		close(f[i].fd);
		bytes += f[i].bytes;
	}
	free(f);
	printf("event stream clients read %.1f MB in all; client errors: %d; zerogpud exit "
	       "status %d (no stream), %d (followed)\n",
	       (double) bytes / 1e6, errors, quiet_exit, followed_exit);
	return errors || quiet_exit || followed_exit ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *daemon = NULL, *gate = NULL, *ledger = NULL;
	int cycles = 20000, clients = 64, followers = 0;
	double seconds = 5;
	static const struct option opts[] = {
		{"daemon", required_argument, NULL, 'd'},
		{"cycles", required_argument, NULL, 'c'},
		{"clients", required_argument, NULL, 'n'},
		{"seconds", required_argument, NULL, 's'},
		{"gate", optional_argument, NULL, 'g'},
		{"ledger", required_argument, NULL, 'l'},
		{"events", required_argument, NULL, 'e'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'd':
			daemon = optarg;
			break;
		case 'c':
			cycles = atoi(optarg);
			break;
		case 'n':
			clients = atoi(optarg);
			break;
		case 's':
			seconds = atof(optarg);
			break;
		case 'g':
			gate = optarg ? optarg : "cgroup-v2";
			break;
		case 'l':
			ledger = optarg;
			break;
		case 'e':
			followers = atoi(optarg);
			if (followers < 1) {
				fprintf(stderr,
					"lease_cycle: --events takes a number of clients > 0\n");
				return 2;
			}
			break;
		default:
			printf("Usage: lease_cycle [--daemon PATH] [--cycles N] [--clients N] "
			       "[--seconds S]\n"
			       "       lease_cycle --gate[=cgroup-v1|cgroup-v2] [--cycles N]\n"
			       "Times acquire/grant/release cycles against a zerogpud it starts "
			       "on 4 simulated devices,\nand the raw Unix-socket round trip as "
			       "the floor. Defaults: 20000 cycles, 64 clients for 5 s.\n"
			       "--gate (as root): an ungated and a gated zerogpud side by side, "
			       "and what gating adds.\n"
			       "       lease_cycle --ledger postgresql://... [--cycles N]\n"
			       "--ledger: a zerogpud on SQLite and one on that PostgreSQL side by "
			       "side, and what the shared ledger adds.\n"
			       "       lease_cycle --events N [--cycles N]\n"
			       "--events: a zerogpud that N clients of GET /v1/events follow "
			       "beside one nobody follows.\n");
			return o == 'h' ? 0 : 2;
		}
	}
	if (cycles < 1 || clients < 1 || seconds <= 0) {
		fprintf(stderr, "lease_cycle: --cycles, --clients and --seconds must be > 0\n");
		return 2;
	}
	if (gate && strcmp(gate, "cgroup-v1") && strcmp(gate, "cgroup-v2")) {
		fprintf(stderr, "lease_cycle: --gate takes cgroup-v1 or cgroup-v2, not '%s'\n",
			gate);
		return 2;
	}
	char default_daemon[4096];
	if (!daemon) {
		/* Next to this binary: build/bench/lease_cycle -> build/src/daemon/zerogpud. */
		ssize_t n = readlink("/proc/self/exe", default_daemon, sizeof(default_daemon) - 64);
		default_daemon[n > 0 ? n : 0] = '\0';
		char *slash = strrchr(default_daemon, '/');
		strcpy(slash ? slash : default_daemon, "/../src/daemon/zerogpud");
		daemon = default_daemon;
	}

	char cpu[128];
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_model(cpu, sizeof(cpu));
	printf("lease_cycle: %s, %ld cores; zerogpud on %d simulated devices\n\n", cpu, ncpu,
	       NDEVICES);
	if (gate)
		return gate_comparison(daemon, gate, cycles);
	if (ledger)
		return ledger_comparison(daemon, ledger, cycles);
	if (followers)
		return events_comparison(daemon, followers, cycles);

	struct samples raw = {0};
	raw_round_trips(cycles, &raw);
	double raw50 = quantile(&raw, 0.5), raw99 = quantile(&raw, 0.99),
	       rawmax = quantile(&raw, 1.0);

	struct daemon d;
	start_daemon(&d, daemon, NULL);
	struct result warm, one, many;
	run_clients(d.socket_path, 1, 500, 0, &warm); /* warm caches and allocators */
	run_clients(d.socket_path, 1, cycles, 0, &one);
	run_clients(d.socket_path, clients, 0, seconds, &many);
	int exit_status = stop_daemon(&d);

	printf("%-44s %10s %9s %9s %9s\n", "", "per second", "p50 us", "p99 us", "max us");
	printf("%-44s %10.0f %9.1f %9.1f %9.1f\n", "raw Unix-socket round trip (64 B)", 1e6 / raw50,
	       raw50, raw99, rawmax);
	printf("%-44s %10.0f %9.1f %9.1f %9.1f\n", "1 client: full cycle (acquire..release)",
	       one.cycles_per_s, quantile(&one.cycle, 0.5), quantile(&one.cycle, 0.99),
	       quantile(&one.cycle, 1.0));
	printf("%-44s %10s %9.1f %9.1f %9.1f\n", "1 client: grant latency (acquire)", "",
	       quantile(&one.grant, 0.5), quantile(&one.grant, 0.99), quantile(&one.grant, 1.0));
	char label[64];
	snprintf(label, sizeof(label), "%d clients, %d devices: full cycle", clients, NDEVICES);
	printf("%-44s %10.0f %9.1f %9.1f %9.1f\n", label, many.cycles_per_s,
	       quantile(&many.cycle, 0.5), quantile(&many.cycle, 0.99), quantile(&many.cycle, 1.0));
	snprintf(label, sizeof(label), "%d clients: grant latency (incl. queueing)", clients);
	printf("%-44s %10s %9.1f %9.1f %9.1f\n", label, "", quantile(&many.grant, 0.5),
	       quantile(&many.grant, 0.99), quantile(&many.grant, 1.0));
	printf("\nratios to the raw round trip (p50 to p50, p99 to p99):\n");
	printf("  1 client full cycle   %.2fx p50, %.2fx p99\n", quantile(&one.cycle, 0.5) / raw50,
	       quantile(&one.cycle, 0.99) / raw99);
	printf("  1 client grant        %.2fx p50, %.2fx p99\n", quantile(&one.grant, 0.5) / raw50,
	       quantile(&one.grant, 0.99) / raw99);
	printf("\ncycles: %ld single-client, %ld contended in %.1f s; double grants seen: %ld; "
	       "client errors: %d; zerogpud exit status %d\n",
	       one.cycles, many.cycles, many.seconds, atomic_load(&double_grants),
	       one.errors + many.errors, exit_status);
	return one.errors || many.errors || atomic_load(&double_grants) ? 1 : 0;
}
