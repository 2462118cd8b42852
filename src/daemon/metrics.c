#include "daemon/metrics.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon/core/engine.h"

/* Upper bounds in seconds: fine below a millisecond (idle grants), coarse above (queueing). */
static const double bucket_le[METRICS_BUCKETS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120};

static void observe(struct metrics_histogram *h, double seconds)
{
	for (int i = 0; i < METRICS_BUCKETS; i++) {
		if (seconds <= bucket_le[i]) {
			h->buckets[i]++;
			break;
		}
	}
	h->count++;
	h->sum_s += seconds;
}

void metrics_observe_grant(struct metrics *m, enum lease_tier tier, double seconds)
{
	observe(&m->grant[tier], seconds);
}

void metrics_observe_wait(struct metrics *m, enum lease_tier tier, double seconds)
{
	observe(&m->wait[tier], seconds);
}

void metrics_count_app(struct metrics *m, const char *app, uint64_t grants, double gpu_seconds)
{
	struct metrics_app *a = NULL;
	for (int i = 0; i < m->napps && !a; i++)
		if (strcmp(m->apps[i].name, app) == 0)
			a = &m->apps[i];
	if (!a && m->napps < METRICS_APPS_MAX) {
		a = &m->apps[m->napps++];
		snprintf(a->name, sizeof(a->name), "%s", app);
	}
	if (!a)
		a = &m->apps[METRICS_APPS_MAX]; /* "_other" */
	a->grants += grants;
	a->gpu_seconds += gpu_seconds;
}

void metrics_count_http(struct metrics *m, int status)
{
	int c = status / 100;
	if (c >= 1 && c <= 5)
		m->http_by_class[c]++;
}

/* A histogram with one series per tier. */
static void render_histogram(struct evbuffer *out, int *r, const char *name, const char *help,
			     const struct metrics_histogram h[LEASE__TIER_COUNT])
{
	*r |= evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name) < 0;
	for (int t = 0; t < LEASE__TIER_COUNT; t++) {
		const char *tier = lease_tier_name((enum lease_tier) t);
		uint64_t cumulative = 0;
		for (int i = 0; i < METRICS_BUCKETS; i++) {
			cumulative += h[t].buckets[i];
			*r |= evbuffer_add_printf(out, "%s_bucket{tier=\"%s\",le=\"%g\"} %llu\n",
						  name, tier, bucket_le[i],
						  (unsigned long long) cumulative) < 0;
		}
		*r |= evbuffer_add_printf(out,
					  "%s_bucket{tier=\"%s\",le=\"+Inf\"} %llu\n"
					  "%s_sum{tier=\"%s\"} %.6f\n%s_count{tier=\"%s\"} %llu\n",
					  name, tier, (unsigned long long) h[t].count, name, tier,
					  h[t].sum_s, name, tier,
					  (unsigned long long) h[t].count) < 0;
	}
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
	P("# HELP zerogpu_leases_live Leases holding devices now.\n"
	  "# TYPE zerogpu_leases_live gauge\nzerogpu_leases_live %zu\n",
	  e->leases.len - e->sched.len);
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

	render_histogram(out, &r, "zerogpu_grant_latency_seconds",
			 "From a lease request to its grant (told to its client), by the visitor's "
			 "tier.",
			 m->grant);
	render_histogram(out, &r, "zerogpu_queue_wait_seconds",
			 "Time a granted request spent queued, by the visitor's tier.", m->wait);

	P("# HELP zerogpu_app_grants_total Leases granted, by app (the first %d apps seen; "
	  "the rest as _other).\n"
	  "# TYPE zerogpu_app_grants_total counter\n",
	  METRICS_APPS_MAX);
	for (int i = 0; i <= METRICS_APPS_MAX; i++)
		if (i < m->napps || (i == METRICS_APPS_MAX && m->apps[i].grants))
			P("zerogpu_app_grants_total{app=\"%s\"} %llu\n",
			  i < METRICS_APPS_MAX ? m->apps[i].name : "_other",
			  (unsigned long long) m->apps[i].grants);
	P("# HELP zerogpu_app_gpu_seconds_total GPU time held by ended leases (seconds times "
	  "GPUs), by app.\n"
	  "# TYPE zerogpu_app_gpu_seconds_total counter\n");
	for (int i = 0; i <= METRICS_APPS_MAX; i++)
		if (i < m->napps || (i == METRICS_APPS_MAX && m->apps[i].grants))
			P("zerogpu_app_gpu_seconds_total{app=\"%s\"} %.3f\n",
			  i < METRICS_APPS_MAX ? m->apps[i].name : "_other",
			  m->apps[i].gpu_seconds);

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
	P("# HELP zerogpu_event_streams Clients reading GET /v1/events now.\n"
	  "# TYPE zerogpu_event_streams gauge\nzerogpu_event_streams %llu\n",
	  (unsigned long long) m->event_streams);
	P("# HELP zerogpu_event_streams_dropped_total Event stream clients dropped for reading "
	  "too slowly.\n"
	  "# TYPE zerogpu_event_streams_dropped_total counter\n"
	  "zerogpu_event_streams_dropped_total %llu\n",
	  (unsigned long long) m->event_streams_dropped);
#undef P
	return r ? -ENOMEM : 0;
}
