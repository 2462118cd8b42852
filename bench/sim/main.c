/*
 * bench/sim: replays a call trace through zerogpud's engine under a virtual
 * clock and prints what happened as JSON (docs/evaluation.md explains the
 * fields). See --help.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"

static const char usage[] =
	"Usage: sim [OPTION]... TRACE.csv\n"
	"Replay a call trace (bench/workload/README.md) through zerogpud's own lease\n"
	"engine, scheduler and quota code with a virtual clock; print the results as JSON.\n"
	"\n"
	"  --policy P        zerogpu (default), fifo, static, or all (an array of the three)\n"
	"  --gpus N          whole GPUs in the machine (default 4)\n"
	"  --split N         1: `large` takes a whole GPU; 2 (default): half of one\n"
	"  --max-wait S      a call waits at most this long, then fails (default 60)\n"
	"  --no-quota        do not apply the daily visitor quotas\n"
	"  --residency M     lru (default): a finished call's worker stays on its device\n"
	"                    until memory is needed; off: lent to another app, a device\n"
	"                    loses it (the hosted way)\n"
	"  --affinity on|off place a call where its app's worker is (default on)\n"
	"  --load-gbps G     a cold start moves the weights (model_gib) at G GB/s (55)\n"
	"  --context-s S     plus S seconds to start the process and its context (1)\n"
	"  --capacity S      also find how many of the trace's apps (taken in name order)\n"
	"                    the machine serves with an overall p95 wait <= S seconds\n"
	"  --calls-out FILE  write each call's fate as CSV (with --policy all: FILE.POLICY)\n"
	"  -h, --help        show this help\n";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "sim: ");
	vfprintf(stderr, fmt, ap);
	fputs("\nTry 'sim --help'.\n", stderr);
	va_end(ap);
	return 2;
}

static int number(const char *text, double lo, double hi, double *out)
{
	char *end;
	double x = strtod(text, &end);
	if (end == text || *end || !isfinite(x) || x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

static int write_calls(const char *path, const struct trace *t)
{
	static const char *const outcome[CALL__OUTCOMES] = {
		"pending", "done", "expired", "timed_out", "quota_refused", "unservable"};
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	fputs("index,app,visitor,tier,size,gpus,requested_s,arrival_s,granted_s,ended_s,outcome\n",
	      f);
	for (size_t i = 0; i < t->ncalls; i++) {
		const struct call *c = &t->calls[i];
		if (c->outcome == CALL_PENDING)
			continue; /* not part of this run (--capacity subsets) */
		fprintf(f, "%zu,%s,%s,%s,%s,%d,%.3f,%.3f,", i, t->apps[c->app],
			t->visitors[c->visitor], lease_tier_name(c->tier), lease_size_name(c->size),
			c->gpus, (double) c->requested_ms / 1000.0,
			(double) c->arrival_ms / 1000.0);
		if (c->granted_ms >= 0)
			fprintf(f, "%.3f", (double) c->granted_ms / 1000.0);
		fprintf(f, ",%.3f,%s\n", (double) c->ended_ms / 1000.0, outcome[c->outcome]);
	}
	return fclose(f) == 0 ? 0 : -errno;
}

/* The p95 wait with the first k apps (in name order). */
static double p95_with(const struct sim_config *cfg, struct trace *t, const size_t *by_name,
		       size_t k, bool *include)
{
	memset(include, 0, t->napps * sizeof(*include));
	for (size_t i = 0; i < k; i++)
		include[by_name[i]] = true;
	char err[256];
	json_t *r = sim_run(cfg, t, include, err, sizeof(err));
	if (!r) {
		fprintf(stderr, "sim: %s\n", err);
		exit(1);
	}
	double p95 = json_real_value(json_object_get(json_object_get(r, "wait_s"), "p95"));
	json_decref(r);
	return p95;
}

static const struct trace *sort_trace;
static int by_app_name(const void *a, const void *b)
{
	return strcmp(sort_trace->apps[*(const size_t *) a], sort_trace->apps[*(const size_t *) b]);
}

/* The most apps with p95 <= target, by bisection (p95 grows with load). */
static json_t *capacity(const struct sim_config *cfg, struct trace *t, double target)
{
	size_t *by_name = calloc(t->napps + 1, sizeof(*by_name));
	bool *include = calloc(t->napps + 1, sizeof(*include));
	if (!by_name || !include)
		exit(1);
	for (size_t i = 0; i < t->napps; i++)
		by_name[i] = i;
	sort_trace = t;
	qsort(by_name, t->napps, sizeof(*by_name), by_app_name);
	size_t lo = 0, hi = t->napps; /* lo meets the target (0 trivially); is hi? */
	if (p95_with(cfg, t, by_name, hi, include) <= target) {
		lo = hi;
	} else {
		while (hi - lo > 1) {
			size_t mid = lo + (hi - lo) / 2;
			if (p95_with(cfg, t, by_name, mid, include) <= target)
				lo = mid;
			else
				hi = mid;
		}
	}
	free(by_name);
	free(include);
	return json_pack("{s:f, s:I, s:I, s:f, s:b}", "target_p95_s", target, "apps",
			 (json_int_t) lo, "apps_in_trace", (json_int_t) t->napps, "apps_per_gpu",
			 (double) lo / cfg->gpus, "limited_by_trace", lo == t->napps);
}

int main(int argc, char **argv)
{
	enum {
		O_POLICY = 1,
		O_GPUS,
		O_SPLIT,
		O_WAIT,
		O_NOQUOTA,
		O_CAPACITY,
		O_CALLS,
		O_RESIDENCY,
		O_AFFINITY,
		O_LOAD,
		O_CONTEXT
	};
	static const struct option opts[] = {
		{"policy", required_argument, NULL, O_POLICY},
		{"gpus", required_argument, NULL, O_GPUS},
		{"split", required_argument, NULL, O_SPLIT},
		{"max-wait", required_argument, NULL, O_WAIT},
		{"no-quota", no_argument, NULL, O_NOQUOTA},
		{"capacity", required_argument, NULL, O_CAPACITY},
		{"calls-out", required_argument, NULL, O_CALLS},
		{"residency", required_argument, NULL, O_RESIDENCY},
		{"affinity", required_argument, NULL, O_AFFINITY},
		{"load-gbps", required_argument, NULL, O_LOAD},
		{"context-s", required_argument, NULL, O_CONTEXT},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct sim_config cfg;
	sim_config_default(&cfg);
	bool all = false;
	double x, target = -1;
	const char *calls_out = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_POLICY:
			if (!strcmp(optarg, "all"))
				all = true;
			else if (!strcmp(optarg, "zerogpu"))
				cfg.policy = SIM_ZEROGPU;
			else if (!strcmp(optarg, "fifo"))
				cfg.policy = SIM_FIFO;
			else if (!strcmp(optarg, "static"))
				cfg.policy = SIM_STATIC;
			else
				return fail("--policy takes zerogpu, fifo, static or all, not '%s'",
					    optarg);
			break;
		case O_GPUS:
			if (number(optarg, 1, 64, &x) < 0 || x != floor(x))
				return fail("--gpus takes 1 to 64, not '%s'", optarg);
			cfg.gpus = (int) x;
			break;
		case O_SPLIT:
			if (strcmp(optarg, "1") && strcmp(optarg, "2"))
				return fail("--split takes 1 or 2, not '%s'", optarg);
			cfg.split = atoi(optarg);
			break;
		case O_WAIT:
			if (number(optarg, 0, 3600, &x) < 0)
				return fail("--max-wait takes seconds from 0 to 3600, not '%s'",
					    optarg);
			cfg.max_wait_ms = (int64_t) llround(x * 1000);
			break;
		case O_NOQUOTA:
			cfg.quota = false;
			break;
		case O_CAPACITY:
			if (number(optarg, 0, 3600, &target) < 0)
				return fail("--capacity takes seconds from 0 to 3600, not '%s'",
					    optarg);
			break;
		case O_CALLS:
			calls_out = optarg;
			break;
		case O_RESIDENCY:
			if (strcmp(optarg, "lru") && strcmp(optarg, "off"))
				return fail("--residency takes lru or off, not '%s'", optarg);
			cfg.residency = strcmp(optarg, "lru") ? ENGINE_RESIDENCY_OFF
							      : ENGINE_RESIDENCY_LRU;
			break;
		case O_AFFINITY:
			if (strcmp(optarg, "on") && strcmp(optarg, "off"))
				return fail("--affinity takes on or off, not '%s'", optarg);
			cfg.affinity = strcmp(optarg, "on") == 0;
			break;
		case O_LOAD:
			if (number(optarg, 0.001, 10000, &cfg.load_gbps) < 0)
				return fail("--load-gbps takes GB/s from 0.001 to 10000, not '%s'",
					    optarg);
			break;
		case O_CONTEXT:
			if (number(optarg, 0, 600, &cfg.context_s) < 0)
				return fail("--context-s takes seconds from 0 to 600, not '%s'",
					    optarg);
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			return fail("%s", "unknown option");
		}
	}
	if (optind != argc - 1)
		return fail("%s", optind < argc ? "give exactly one trace file" : "no trace file");

	struct trace t;
	char err[512];
	if (trace_read(&t, argv[optind], err, sizeof(err)) < 0) {
		fprintf(stderr, "sim: %s\n", err);
		return 1;
	}
	static const enum sim_policy policies[] = {SIM_ZEROGPU, SIM_FIFO, SIM_STATIC};
	json_t *runs = json_array();
	for (int i = 0; i < (all ? 3 : 1); i++) {
		if (all)
			cfg.policy = policies[i];
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		json_t *r = sim_run(&cfg, &t, NULL, err, sizeof(err));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (!r) {
			fprintf(stderr, "sim: %s\n", err[0] ? err : "out of memory");
			return 1;
		}
		double secs = (double) (t1.tv_sec - t0.tv_sec) +
			      (double) (t1.tv_nsec - t0.tv_nsec) / 1e9;
		json_object_set_new(r, "run_s", json_real(secs));
		if (calls_out) {
			char path[4096];
			snprintf(path, sizeof(path), all ? "%s.%s" : "%s", calls_out,
				 sim_policy_name(cfg.policy));
			int w = write_calls(path, &t);
			if (w < 0) {
				fprintf(stderr, "sim: cannot write %s: %s\n", path, strerror(-w));
				return 1;
			}
		}
		if (target >= 0)
			json_object_set_new(r, "capacity", capacity(&cfg, &t, target));
		json_array_append_new(runs, r);
	}
	json_dumpf(all ? runs : json_array_get(runs, 0), stdout,
		   JSON_INDENT(2) | JSON_REAL_PRECISION(6));
	putchar('\n');
	json_decref(runs);
	trace_free(&t);
	return 0;
}
