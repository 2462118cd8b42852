#include "daemon/metrics.h"

#include <errno.h>

#include "daemon/core/engine.h"

/* Upper bounds in seconds: fine below a millisecond (idle grants), coarse above (queueing). */
static const double bucket_le[METRICS_BUCKETS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120};

void metrics_observe_grant(struct metrics *m, double seconds)
{
	for (int i = 0; i < METRICS_BUCKETS; i++) {
		if (seconds <= bucket_le[i]) {
			m->grant_buckets[i]++;
			break;
		}
	}
	m->grant_count++;
	m->grant_sum_s += seconds;
}

void metrics_count_http(struct metrics *m, int status)
{
	int c = status / 100;
	if (c >= 1 && c <= 5)
		m->http_by_class[c]++;
}

int metrics_render(const struct metrics *m, const struct engine *e, struct evbuffer *out)
{
	int r = 0;
#define P(...) (r |= evbuffer_add_printf(out, __VA_ARGS__) < 0)
	P("# HELP zerogpu_devices_total Devices this daemon lends.\n"
	  "# TYPE zerogpu_devices_total gauge\nzerogpu_devices_total %zu\n",
	  e->inv->count);
	size_t busy = 0;
	for (size_t i = 0; i < e->inv->count; i++) {
		int slots, held;
		const struct lease *holder;
		engine_device_usage(e, (int) i, &slots, &held, &holder, 1);
		busy += held > 0;
	}
	P("# HELP zerogpu_devices_busy Devices held in whole or in part by a lease now.\n"
	  "# TYPE zerogpu_devices_busy gauge\nzerogpu_devices_busy %zu\n",
	  busy);
	P("# HELP zerogpu_slots_total Lendable slots (halves or whole GPUs).\n"
	  "# TYPE zerogpu_slots_total gauge\nzerogpu_slots_total %zu\n",
	  e->slots_total);
	P("# HELP zerogpu_slots_busy Slots held by a lease now.\n"
	  "# TYPE zerogpu_slots_busy gauge\nzerogpu_slots_busy %zu\n",
	  e->slots_busy);
	P("# HELP zerogpu_queue_length Requests waiting for devices.\n"
	  "# TYPE zerogpu_queue_length gauge\nzerogpu_queue_length %zu\n",
	  e->sched.len);
	P("# HELP zerogpu_leases_submitted_total Lease requests accepted.\n"
	  "# TYPE zerogpu_leases_submitted_total counter\nzerogpu_leases_submitted_total %llu\n",
	  (unsigned long long) e->stats.submitted);
	P("# HELP zerogpu_grants_total Leases granted.\n"
	  "# TYPE zerogpu_grants_total counter\nzerogpu_grants_total %llu\n",
	  (unsigned long long) e->stats.granted);
	P("# HELP zerogpu_expiries_total Leases that ran past their deadline and grace.\n"
	  "# TYPE zerogpu_expiries_total counter\nzerogpu_expiries_total %llu\n",
	  (unsigned long long) e->stats.expired);
	P("# HELP zerogpu_leases_ended_total Leases ended, by final state.\n"
	  "# TYPE zerogpu_leases_ended_total counter\n");
	P("zerogpu_leases_ended_total{state=\"released\"} %llu\n",
	  (unsigned long long) e->stats.released);
	P("zerogpu_leases_ended_total{state=\"expired\"} %llu\n",
	  (unsigned long long) e->stats.expired);
	P("zerogpu_leases_ended_total{state=\"failed\"} %llu\n",
	  (unsigned long long) e->stats.failed);
	P("zerogpu_leases_ended_total{state=\"cancelled\"} %llu\n",
	  (unsigned long long) e->stats.cancelled);
	P("# HELP zerogpu_process_kills_total Attached process groups killed.\n"
	  "# TYPE zerogpu_process_kills_total counter\nzerogpu_process_kills_total %llu\n",
	  (unsigned long long) e->stats.killed);

	P("# HELP zerogpu_grant_starts_total Grants by how the call starts: warm (its app's "
	  "resident worker taken over) or cold.\n"
	  "# TYPE zerogpu_grant_starts_total counter\n"
	  "zerogpu_grant_starts_total{start=\"warm\"} %llu\n"
	  "zerogpu_grant_starts_total{start=\"cold\"} %llu\n",
	  (unsigned long long) m->warm_grants, (unsigned long long) m->cold_grants);
	P("# HELP zerogpu_evictions_total Resident workers killed to make room on a device.\n"
	  "# TYPE zerogpu_evictions_total counter\nzerogpu_evictions_total %llu\n",
	  (unsigned long long) m->evictions);
	P("# HELP zerogpu_residents Workers resident on devices without a lease now.\n"
	  "# TYPE zerogpu_residents gauge\nzerogpu_residents %d\n",
	  e->residency.n);

	P("# HELP zerogpu_grant_latency_seconds From a lease request to its grant.\n"
	  "# TYPE zerogpu_grant_latency_seconds histogram\n");
	uint64_t cumulative = 0;
	for (int i = 0; i < METRICS_BUCKETS; i++) {
		cumulative += m->grant_buckets[i];
		P("zerogpu_grant_latency_seconds_bucket{le=\"%g\"} %llu\n", bucket_le[i],
		  (unsigned long long) cumulative);
	}
	P("zerogpu_grant_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
	  (unsigned long long) m->grant_count);
	P("zerogpu_grant_latency_seconds_sum %.6f\n", m->grant_sum_s);
	P("zerogpu_grant_latency_seconds_count %llu\n", (unsigned long long) m->grant_count);

	P("# HELP zerogpu_http_responses_total HTTP responses, by status class.\n"
	  "# TYPE zerogpu_http_responses_total counter\n");
	for (int c = 1; c <= 5; c++)
		P("zerogpu_http_responses_total{class=\"%dxx\"} %llu\n", c,
		  (unsigned long long) m->http_by_class[c]);
	P("# HELP zerogpu_connections_open Connections open now.\n"
	  "# TYPE zerogpu_connections_open gauge\nzerogpu_connections_open %llu\n",
	  (unsigned long long) m->connections_open);
	P("# HELP zerogpu_connections_refused_total Connections refused because their client "
	  "held its limit.\n"
	  "# TYPE zerogpu_connections_refused_total counter\n"
	  "zerogpu_connections_refused_total %llu\n",
	  (unsigned long long) m->connections_refused);
	P("# HELP zerogpu_request_timeouts_total Connections closed because a request did not "
	  "arrive in time.\n"
	  "# TYPE zerogpu_request_timeouts_total counter\nzerogpu_request_timeouts_total %llu\n",
	  (unsigned long long) m->request_timeouts);
	P("# HELP zerogpu_accept_pauses_total Pauses of accept() for lack of descriptors.\n"
	  "# TYPE zerogpu_accept_pauses_total counter\nzerogpu_accept_pauses_total %llu\n",
	  (unsigned long long) m->accept_pauses);
#undef P
	return r ? -ENOMEM : 0;
}
