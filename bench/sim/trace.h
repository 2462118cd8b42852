/*
 * trace — the call traces of bench/workload (format: bench/workload/README.md),
 * read into memory with apps and visitors interned.
 */
#ifndef ZGPU_BENCH_TRACE_H
#define ZGPU_BENCH_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/heap.h"
#include "daemon/core/lease.h"

struct quota_account;

enum call_outcome {
	CALL_PENDING,	    /* not yet ended */
	CALL_DONE,	    /* ran and released */
	CALL_EXPIRED,	    /* overran its requested duration and was killed */
	CALL_TIMED_OUT,	    /* waited max_wait and got nothing */
	CALL_QUOTA_REFUSED, /* refused at arrival: over the visitor's quota */
	CALL_UNSERVABLE,    /* no GPU of its partition could ever serve it */
	CALL__OUTCOMES
};

struct call {
	int64_t arrival_ms, requested_ms, actual_ms;
	int app;     /* index into trace.apps */
	int visitor; /* index into trace.visitors */
	enum lease_tier tier;
	enum lease_size size;
	int gpus;
	uint64_t model_bytes; /* the app's weights (model_gib); 0 when the trace has none */
	/* Filled by the simulator. */
	int64_t granted_ms, ended_ms; /* -1 when it never was */
	int64_t cold_ms;	      /* the cold start it paid at its grant; 0 when warm */
	enum call_outcome outcome;
	struct lease *lease;	    /* while the engine holds it */
	struct heap_node done_node; /* its completion event, while running */
};

struct trace {
	struct call *calls;
	size_t ncalls;
	char (*apps)[LEASE_APP_MAX + 1];
	size_t napps;
	char (*visitors)[48];
	size_t nvisitors;
	bool has_models; /* the model_gib column is there */
};

/* Reads path ("-": stdin). Returns 0, or -1 with a message ("FILE:LINE: ...") in err. */
int trace_read(struct trace *t, const char *path, char *err, size_t errlen);
void trace_free(struct trace *t);

#endif
