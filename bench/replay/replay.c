/*
 * bench/replay: replays a call trace, time-scaled, against a running zerogpud
 * through libzerogpu — one thread per call, which arrives, waits in the real
 * queue, holds its lease for the call's (scaled) actual time, and releases it.
 * Writes each call's fate in the simulator's --calls-out format (in trace
 * seconds), so the two can be compared (bench/report compares them).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/core/auth.h"
#include "trace.h"
#include "zerogpu.h"

static const char usage[] =
	"Usage: replay [OPTION]... TRACE.csv\n"
	"Replay a call trace against a running zerogpud (on simulated devices), time-scaled,\n"
	"one thread per call; write each call's fate as CSV (bench/sim --calls-out format).\n"
	"\n"
	"  --socket PATH      zerogpud's socket (default: as `zerogpu` finds it)\n"
	"  --speed X          run X times faster than the trace (default 60)\n"
	"  --visitor-secret S sign each call's visitor token (its tier) with S, the\n"
	"                     daemon's --visitor-secret; without it calls are unmetered\n"
	"  --max-wait S       each call's max wait, in trace seconds (default 60)\n"
	"  --calls-out FILE   where to write the calls (default: stdout)\n"
	"  -h, --help         show this help\n"
	"\n"
	"Start zerogpud with its times scaled like the trace's, so that it decides as the\n"
	"simulator does: --grace 2/X --aging-bound 30/X --backfill 5/X --max-duration 300/X\n"
	"(the defaults over X), and generous quotas when comparing with `sim --no-quota`.\n";

static struct trace trace;
static const char *socket_path;
static const char *secret;
static double speed = 60, max_wait_s = 60;
static struct timespec start;
static double t0; /* the first arrival, trace seconds: the replay's time 0 */
static atomic_int running;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static double *grant_latency_us; /* for calls granted without queueing */
static size_t ngrant_latency;

static double since_start_s(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double) (now.tv_sec - start.tv_sec) + (double) (now.tv_nsec - start.tv_nsec) / 1e9;
}

/* A time of the replay (seconds since it started) as trace milliseconds. */
static int64_t trace_ms(double replay_s)
{
	return (int64_t) llround((t0 + replay_s * speed) * 1000.0);
}

static void sleep_until(double t_s)
{
	double left = t_s - since_start_s();
	if (left <= 0)
		return;
	struct timespec ts = {(time_t) left, (long) ((left - floor(left)) * 1e9)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

struct queued_seen {
	bool queued;
};

static void on_progress(const zgpu_event *ev, void *arg)
{
	if (ev->kind == ZGPU_EVENT_QUEUED)
		((struct queued_seen *) arg)->queued = true;
}

/* The call's visitor token, or NULL (unmetered). Caller frees. */
static char *token_for(const struct call *c)
{
	if (!secret)
		return NULL;
	struct visitor_identity id = {.tier = c->tier, .exp = time(NULL) + 86400};
	snprintf(id.sub, sizeof(id.sub), "%s", trace.visitors[c->visitor]);
	char *token = NULL;
	if (auth_sign_visitor(&id, (const unsigned char *) secret, strlen(secret), &token) < 0)
		return NULL;
	return token;
}

static void *run_call(void *arg)
{
	struct call *c = arg;
	zgpu_client *client = NULL;
	char *token = token_for(c);
	char *app = trace.apps[c->app];
	zgpu_request rq = ZGPU_REQUEST_INIT;
	rq.app = app;
	rq.visitor = trace.visitors[c->visitor];
	rq.size = lease_size_name(c->size);
	rq.gpus = c->gpus;
	rq.duration_s = (double) c->requested_ms / 1000.0 / speed;
	rq.max_wait_s = max_wait_s / speed;
	rq.visitor_token = token;
	struct queued_seen seen = {false};
	zgpu_lease *lease = NULL;
	double asked = since_start_s();
	int r = zgpu_client_open(&client, socket_path);
	if (r == 0)
		r = zgpu_acquire(&lease, client, &rq, -1, on_progress, &seen);
	double got = since_start_s();
	if (r != 0) {
		c->outcome = r == ZGPU_ENOGPU	? CALL_TIMED_OUT
			     : r == ZGPU_EQUOTA ? CALL_QUOTA_REFUSED
						: CALL_UNSERVABLE;
		c->ended_ms = trace_ms(got);
		if (c->outcome == CALL_UNSERVABLE)
			fprintf(stderr, "replay: call at %.3f s: %s\n",
				(double) c->arrival_ms / 1000, zgpu_last_error());
		goto out;
	}
	c->granted_ms = trace_ms(got);
	if (!seen.queued) {
		pthread_mutex_lock(&lock);
		grant_latency_us[ngrant_latency++] = (got - asked) * 1e6;
		pthread_mutex_unlock(&lock);
	}
	/* Work for the call's actual time, unless the daemon ends the lease first. */
	double done_at = got + (double) c->actual_ms / 1000.0 / speed;
	c->outcome = CALL_DONE;
	for (;;) {
		double left = done_at - since_start_s();
		zgpu_event ev;
		if (left <= 0 ||
		    zgpu_lease_next_event(lease, (int) ceil(left * 1000), &ev) == ZGPU_ETIMEDOUT)
			break;
		if (ev.kind == ZGPU_EVENT_RELEASED) { /* killed after its grace */
			c->outcome = CALL_EXPIRED;
			break;
		}
	}
	if (c->outcome == CALL_EXPIRED)
		zgpu_lease_free(lease);
	else if (zgpu_release(client, lease, false, NULL) != 0)
		c->outcome = CALL_EXPIRED; /* it ran out between our last look and now */
	c->ended_ms = trace_ms(since_start_s());
out:
	zgpu_client_free(client);
	free(token);
	atomic_fetch_sub(&running, 1);
	return NULL;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("replay: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\nTry 'replay --help'.\n", stderr);
	va_end(ap);
	return 2;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *) a, y = *(const double *) b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	enum { O_SOCKET = 1, O_SPEED, O_SECRET, O_WAIT, O_OUT };
	static const struct option opts[] = {
		{"socket", required_argument, NULL, O_SOCKET},
		{"speed", required_argument, NULL, O_SPEED},
		{"visitor-secret", required_argument, NULL, O_SECRET},
		{"max-wait", required_argument, NULL, O_WAIT},
		{"calls-out", required_argument, NULL, O_OUT},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *out_path = NULL;
	char *end;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_SOCKET:
			socket_path = optarg;
			break;
		case O_SPEED:
			speed = strtod(optarg, &end);
			if (end == optarg || *end || !(speed > 0 && speed <= 10000))
				return fail("--speed takes a factor from 0 to 10000, not '%s'",
					    optarg);
			break;
		case O_SECRET:
			secret = optarg;
			break;
		case O_WAIT:
			max_wait_s = strtod(optarg, &end);
			if (end == optarg || *end || !(max_wait_s >= 0 && max_wait_s <= 3600))
				return fail("--max-wait takes seconds from 0 to 3600, not '%s'",
					    optarg);
			break;
		case O_OUT:
			out_path = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			return fail("unknown option");
		}
	}
	if (optind != argc - 1)
		return fail("%s", optind < argc ? "give exactly one trace file" : "no trace file");
	char err[512];
	if (trace_read(&trace, argv[optind], err, sizeof(err)) < 0) {
		fprintf(stderr, "replay: %s\n", err);
		return 1;
	}
	grant_latency_us = calloc(trace.ncalls + 1, sizeof(*grant_latency_us));
	if (!grant_latency_us)
		return 1;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	clock_gettime(CLOCK_MONOTONIC, &start);
	t0 = trace.ncalls ? (double) trace.calls[0].arrival_ms / 1000.0 : 0;
	for (size_t i = 0; i < trace.ncalls; i++) {
		struct call *call = &trace.calls[i];
		call->granted_ms = call->ended_ms = -1;
		sleep_until(((double) call->arrival_ms / 1000.0 - t0) / speed);
		pthread_t th;
		atomic_fetch_add(&running, 1);
		if (pthread_create(&th, &attr, run_call, call) != 0) {
			fprintf(stderr, "replay: cannot start a thread for call %zu\n", i);
			return 1;
		}
	}
	while (atomic_load(&running) > 0)
		sleep_until(since_start_s() + 0.01);
	double wall = since_start_s();

	FILE *out = out_path ? fopen(out_path, "w") : stdout;
	if (!out) {
		fprintf(stderr, "replay: cannot write %s: %s\n", out_path, strerror(errno));
		return 1;
	}
	static const char *const outcome[CALL__OUTCOMES] = {
		"pending", "done", "expired", "timed_out", "quota_refused", "unservable"};
	fputs("index,app,visitor,tier,size,gpus,requested_s,arrival_s,granted_s,ended_s,outcome\n",
	      out);
	for (size_t i = 0; i < trace.ncalls; i++) {
		const struct call *k = &trace.calls[i];
		fprintf(out, "%zu,%s,%s,%s,%s,%d,%.3f,%.3f,", i, trace.apps[k->app],
			trace.visitors[k->visitor], lease_tier_name(k->tier),
			lease_size_name(k->size), k->gpus, (double) k->requested_ms / 1000.0,
			(double) k->arrival_ms / 1000.0);
		if (k->granted_ms >= 0)
			fprintf(out, "%.3f", (double) k->granted_ms / 1000.0);
		fprintf(out, ",%.3f,%s\n", (double) k->ended_ms / 1000.0, outcome[k->outcome]);
	}
	if (out != stdout)
		fclose(out);
	qsort(grant_latency_us, ngrant_latency, sizeof(double), cmp_double);
	fprintf(stderr,
		"replay: %zu calls in %.1f s (x%g); %zu granted at once: grant latency p50 %.0f "
		"us, "
		"p99 %.0f us\n",
		trace.ncalls, wall, speed, ngrant_latency,
		ngrant_latency ? grant_latency_us[ngrant_latency / 2] : 0.0,
		ngrant_latency ? grant_latency_us[(size_t) (0.99 * (double) ngrant_latency)] : 0.0);
	free(grant_latency_us);
	trace_free(&trace);
	return 0;
}
