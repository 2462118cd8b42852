/* metrics — counters, gauges and histograms, rendered in the Prometheus text format. */
#ifndef ZGPU_DAEMON_METRICS_H
#define ZGPU_DAEMON_METRICS_H

#include <stdint.h>

#include <event2/buffer.h>

#include "daemon/core/lease.h"

struct engine;

#define METRICS_BUCKETS 14
/* Apps named in per-app series: the first this many seen; the rest count as "_other", so
 * a flood of app names cannot grow the exposition (or Prometheus's series) without bound. */
#define METRICS_APPS_MAX 64

struct metrics_histogram {
	uint64_t buckets[METRICS_BUCKETS]; /* cumulative at render time, not here */
	uint64_t count;
	double sum_s;
};

struct metrics_app {
	char name[LEASE_APP_MAX + 1];
	uint64_t grants;
	double gpu_seconds; /* held time times GPUs */
};

struct metrics {
	/* By the visitor's tier: from a request to its grant, and of that the time queued. */
	struct metrics_histogram grant[LEASE__TIER_COUNT], wait[LEASE__TIER_COUNT];
	uint64_t http_by_class[6]; /* index = status / 100 */
	/* Connections (conn.c). */
	uint64_t connections_open;
	uint64_t connections_refused; /* over the per-client limit */
	uint64_t request_timeouts;    /* a request did not arrive in time */
	uint64_t accept_pauses;	      /* accept() out of descriptors: backed off */
	/* The event stream (events.c). */
	uint64_t event_streams;		/* subscribers now */
	uint64_t event_streams_dropped; /* dropped for reading too slowly */
	/* Residency (leases.c). */
	uint64_t warm_grants, cold_grants; /* a resident of the app taken over, or not */
	uint64_t evictions;		   /* residents killed to make room */
	/* Per app (leases.c): METRICS_APPS_MAX named, then "_other". */
	struct metrics_app apps[METRICS_APPS_MAX + 1];
	int napps;
};

/* Records one request-to-grant latency, and one time spent in the queue, by tier. */
void metrics_observe_grant(struct metrics *m, enum lease_tier tier, double seconds);
void metrics_observe_wait(struct metrics *m, enum lease_tier tier, double seconds);
/* Adds to app's counters: grants, and GPU-seconds held. */
void metrics_count_app(struct metrics *m, const char *app, uint64_t grants, double gpu_seconds);
void metrics_count_http(struct metrics *m, int status);
/* Appends the exposition text for m and e to out. Returns 0 or -ENOMEM. */
int metrics_render(const struct metrics *m, const struct engine *e, struct evbuffer *out);

#endif
