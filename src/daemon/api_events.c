/*
 * api_events — GET /v1/events, an adapter: the live event stream (events.c)
 * begins with a snapshot of what the caller may see, so a client needs no other
 * call to draw the whole picture: the GPU slots (the timeline's lanes), devices,
 * held leases, the queue, the last hour's ended leases, the counters, and (for a
 * caller who sees every app) the visitors closest to their quota.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/clock.h"
#include "daemon/api.h"
#include "daemon/events.h"
#include "daemon/views.h"

#define NEAR_QUOTA_MAX 10 /* visitors listed as closest to their quota */

/* Each GPU's slots: a whole GPU split in halves has two, a MIG instance one. */
static json_t *lanes_json(const struct zgpud *d)
{
	json_t *a = json_array();
	for (size_t g = 0; g < d->engine.ngpus; g++) {
		const struct engine_gpu *gpu = &d->engine.gpus[g];
		for (int s = 0; s < gpu->nslots; s++) {
			const struct device *dev = &d->inv.devices[gpu->slot_device[s]];
			json_array_append_new(a, json_pack("{s:i, s:i, s:i, s:i, s:s, s:I}", "gpu",
							   (int) g, "slot", s, "slots", gpu->nslots,
							   "device", dev->index, "name", dev->name,
							   "memory_bytes",
							   (json_int_t) gpu->slot_memory[s]));
		}
	}
	return a;
}

static json_t *counters_json(const struct zgpud *d)
{
	const struct engine_stats *st = &d->engine.stats;
	const struct metrics *m = &d->metrics;
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "submitted",
			 (json_int_t) st->submitted, "granted", (json_int_t) st->granted,
			 "released", (json_int_t) st->released, "expired", (json_int_t) st->expired,
			 "failed", (json_int_t) st->failed, "cancelled", (json_int_t) st->cancelled,
			 "killed", (json_int_t) st->killed, "warm", (json_int_t) m->warm_grants,
			 "cold", (json_int_t) m->cold_grants, "evictions",
			 (json_int_t) m->evictions);
}

struct near_quota {
	const struct quota_config *cfg;
	int64_t now_wall;
	const struct quota_account *top[NEAR_QUOTA_MAX];
	double share[NEAR_QUOTA_MAX];
	int n;
};

/* Keeps the NEAR_QUOTA_MAX accounts with the largest share of their quota spent. */
static void consider_account(struct strmap_node *node, void *arg)
{
	struct near_quota *nq = arg;
	const struct quota_account *a = strmap_item(node, struct quota_account, hnode);
	int64_t daily = nq->cfg->daily_ms[a->tier];
	bool window_open = a->window_start && a->window_start + nq->cfg->window_ms > nq->now_wall;
	if ((!window_open && a->reserved_ms == 0) || daily <= 0)
		return; /* nothing spent, nothing held */
	double share = (double) (a->used_ms + a->reserved_ms) / (double) daily;
	int i = nq->n < NEAR_QUOTA_MAX ? nq->n++ : NEAR_QUOTA_MAX;
	if (i == NEAR_QUOTA_MAX && share <= nq->share[NEAR_QUOTA_MAX - 1])
		return;
	if (i == NEAR_QUOTA_MAX)
		i--; /* the smallest gives way */
	for (; i > 0 && nq->share[i - 1] < share; i--) {
		nq->top[i] = nq->top[i - 1];
		nq->share[i] = nq->share[i - 1];
	}
	nq->top[i] = a;
	nq->share[i] = share;
}

/* Visitors seen since the daemon started who have spent or hold quota, most first. */
static json_t *near_quota_json(struct zgpud *d)
{
	struct near_quota nq = {.cfg = &d->quota.cfg, .now_wall = clock_wall_ms()};
	strmap_foreach(&d->quota.accounts, consider_account, &nq);
	json_t *a = json_array();
	for (int i = 0; i < nq.n; i++) {
		const struct quota_account *q = nq.top[i];
		json_array_append_new(a,
				      json_pack("{s:s, s:s, s:f, s:f, s:f, s:I}", "visitor", q->key,
						"tier", lease_tier_name(q->tier), "used_s",
						(double) q->used_ms / 1000.0, "reserved_s",
						(double) q->reserved_ms / 1000.0, "daily_s",
						(double) nq.cfg->daily_ms[q->tier] / 1000.0,
						"window_start_ms", (json_int_t) q->window_start));
	}
	return a;
}

static json_t *snapshot_json(struct call *c)
{
	struct zgpud *d = c->d;
	leases_forget_dead_residents(d); /* list only the living */
	int64_t now = clock_mono_ms();
	struct view v = {d, &c->who, now};
	json_t *o = json_pack(
		"{s:I, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o}", "now_ms",
		(json_int_t) zgpud_wall_ms(d, now), "node", d->ledger->node, "version",
		ZGPU_VERSION, "lanes", lanes_json(d), "devices", view_devices(&v), "leases",
		view_held_leases(&v), "queue", view_queue(&v), "history",
		events_history(d, &c->who, zgpud_wall_ms(d, now)), "counters", counters_json(d));
	if (o && !caller_app_scoped(&c->who))
		json_object_set_new(o, "visitors", near_quota_json(d));
	return o;
}

static void get_events(struct call *c)
{
	json_t *snapshot = snapshot_json(c);
	if (!snapshot || events_subscribe(c->d, c->req, &c->who, snapshot) < 0)
		http_reply_error(c, 500, "internal", "out of memory starting the event stream");
}

const struct route api_events_routes[] = {
	{.method = EVHTTP_REQ_GET, .pattern = "/v1/events", .handler = get_events},
	{0},
};
