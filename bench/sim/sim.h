/*
 * sim — a discrete-event simulator that drives zerogpud's own lease engine,
 * scheduler and quota code (linked, not copied) with a virtual clock, over a
 * call trace. Policies: zerogpu's priority scheduler on a shared pool, FIFO on
 * the same pool, and static allocation (each app owns a fixed share of GPUs).
 */
#ifndef ZGPU_BENCH_SIM_H
#define ZGPU_BENCH_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "daemon/core/engine.h"
#include "trace.h"

enum sim_policy { SIM_ZEROGPU, SIM_FIFO, SIM_STATIC };

struct sim_config {
	enum sim_policy policy;
	int gpus;		 /* whole GPUs, 80 GiB each */
	int split;		 /* halves per GPU: `large` takes one, `xlarge` both */
	int64_t max_wait_ms;	 /* a call waits this long at most (60 s) */
	int64_t max_duration_ms; /* longest requested duration accepted (300 s) */
	bool quota;		 /* apply the daily quotas (zerogpud's defaults) */
	/* Residency (with a trace's model_gib): what stays on a device between calls. */
	enum engine_residency residency;
	bool affinity;
	double load_gbps; /* host-to-device bandwidth of a cold start, GB/s */
	double context_s; /* a cold start's fixed part: the process and its CUDA context */
};

void sim_config_default(struct sim_config *c);
const char *sim_policy_name(enum sim_policy p);

/*
 * Runs the calls of t whose app is in `include` (NULL: all) and fills their
 * results in t->calls. Returns the metrics as a JSON object (NULL when out of
 * memory or the configuration cannot run).
 */
json_t *sim_run(const struct sim_config *cfg, struct trace *t, const bool *include, char *err,
		size_t errlen);

#endif
