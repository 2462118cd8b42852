/* metrics — counters and the grant-latency histogram, rendered as Prometheus text. */
#ifndef ZGPU_DAEMON_METRICS_H
#define ZGPU_DAEMON_METRICS_H

#include <stdint.h>

#include <event2/buffer.h>

struct engine;

#define METRICS_BUCKETS 14

struct metrics {
	uint64_t grant_buckets[METRICS_BUCKETS]; /* cumulative at render time, not here */
	uint64_t grant_count;
	double grant_sum_s;
	uint64_t http_by_class[6]; /* index = status / 100 */
	/* Connections (conn.c). */
	uint64_t connections_open;
	uint64_t connections_refused; /* over the per-client limit */
	uint64_t request_timeouts;    /* a request did not arrive in time */
	uint64_t accept_pauses;	      /* accept() out of descriptors: backed off */
	/* Residency (leases.c). */
	uint64_t warm_grants, cold_grants; /* a resident of the app taken over, or not */
	uint64_t evictions;		   /* residents killed to make room */
};

/* Records one request-to-grant latency. */
void metrics_observe_grant(struct metrics *m, double seconds);
void metrics_count_http(struct metrics *m, int status);
/* Appends the exposition text for m and e to out. Returns 0 or -ENOMEM. */
int metrics_render(const struct metrics *m, const struct engine *e, struct evbuffer *out);

#endif
