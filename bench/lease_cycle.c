/*
 * lease_cycle — what a full acquire -> grant -> release cycle costs through
 * libzerogpu over the Unix socket, against the raw floor of a plain Unix-socket
 * round trip between two processes on the same machine.
 *
 * It starts its own zerogpud on simulated devices, so it needs no setup:
 *	build/bench/lease_cycle [--daemon PATH] [--cycles N] [--clients N] [--seconds S]
 * Not a test: it prints what it measured.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

static pid_t daemon_pid;
static char socket_path[108];

static void start_daemon(const char *path)
{
	char dir[] = "/tmp/zerogpu-bench-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(socket_path, sizeof(socket_path), "%s/zerogpud.sock", dir);
	char state[128];
	snprintf(state, sizeof(state), "%s/state", dir);
	daemon_pid = fork();
	if (daemon_pid == 0) {
		execl(path, path, "--simulate", "4x80G", "--socket", socket_path, "--state-dir",
		      state, "--log-level", "warn", "--max-duration", "300", (char *) NULL);
		fprintf(stderr, "lease_cycle: cannot run %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {
		struct stat st;
		if (stat(socket_path, &st) == 0)
			return;
		usleep(10000);
	}
	fprintf(stderr, "lease_cycle: zerogpud did not start\n");
	exit(1);
}

/* ---- cycles ------------------------------------------------------------ */

/* Which client holds each device, as seen by clients: a second holder is a double grant. */
static atomic_int holder[NDEVICES];
static atomic_long double_grants;

struct worker {
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
	if (zgpu_client_open(&c, socket_path) < 0) {
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

static void run_clients(int nclients, int cycles_each, double seconds, struct result *r)
{
	struct worker *ws = calloc((size_t) nclients, sizeof(*ws));
	pthread_t *th = calloc((size_t) nclients, sizeof(*th));
	int64_t start = clock_mono_us();
	for (int i = 0; i < nclients; i++) {
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

int main(int argc, char **argv)
{
	const char *daemon = NULL;
	int cycles = 20000, clients = 64;
	double seconds = 5;
	static const struct option opts[] = {
		{"daemon", required_argument, NULL, 'd'},
		{"cycles", required_argument, NULL, 'c'},
		{"clients", required_argument, NULL, 'n'},
		{"seconds", required_argument, NULL, 's'},
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
		default:
			printf("Usage: lease_cycle [--daemon PATH] [--cycles N] [--clients N] "
			       "[--seconds S]\n"
			       "Times acquire/grant/release cycles against a zerogpud it starts "
			       "on 4 simulated devices,\nand the raw Unix-socket round trip as "
			       "the floor. Defaults: 20000 cycles, 64 clients for 5 s.\n");
			return o == 'h' ? 0 : 2;
		}
	}
	if (cycles < 1 || clients < 1 || seconds <= 0) {
		fprintf(stderr, "lease_cycle: --cycles, --clients and --seconds must be > 0\n");
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

	struct samples raw = {0};
	raw_round_trips(cycles, &raw);
	double raw50 = quantile(&raw, 0.5), raw99 = quantile(&raw, 0.99),
	       rawmax = quantile(&raw, 1.0);

	start_daemon(daemon);
	struct result warm, one, many;
	run_clients(1, 500, 0, &warm); /* warm caches and allocators */
	run_clients(1, cycles, 0, &one);
	run_clients(clients, 0, seconds, &many);
	kill(daemon_pid, SIGTERM);
	int status;
	waitpid(daemon_pid, &status, 0);

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
	       one.errors + many.errors, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return one.errors || many.errors || atomic_load(&double_grants) ? 1 : 0;
}
