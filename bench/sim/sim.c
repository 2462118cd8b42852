#include "sim.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/core/engine.h"
#include "daemon/sys/inventory.h"
#include "daemon/core/quota.h"

/* Quota windows use Unix milliseconds, where 0 means "no window": the virtual
 * clock starts at this (arbitrary) date instead. */
#define EPOCH_MS INT64_C(1767225600000) /* 2026-01-01 */

/* One pool of GPUs with its own engine: the whole machine, or a static share. */
struct partition {
	struct inventory inv;
	struct engine engine;
	double load; /* slot-seconds of work assigned (static placement) */
};

struct sim {
	const struct sim_config *cfg;
	struct trace *t;
	struct partition *parts;
	int nparts, ninit; /* partitions, and how many have an engine */
	int *app_part;	   /* partition of each app */
	struct quota_book quota;
	struct quota_account **accounts; /* per visitor, created on first use */
	struct heap done;		 /* completions of running calls */
	size_t current;			 /* the call being submitted, for make_id */
	/* Integrals over virtual time, in slot-milliseconds. */
	int64_t last_ms;
	double busy_slot_ms, idle_waiting_slot_ms;
	size_t slots_total;
	size_t ends[CALL__OUTCOMES];
	size_t warm, cold; /* grants */
	double cold_ms_total;
	int64_t first_ms, last_end_ms;
};

void sim_config_default(struct sim_config *c)
{
	*c = (struct sim_config){
		.policy = SIM_ZEROGPU,
		.gpus = 4,
		.split = 2,
		.max_wait_ms = 60000,
		.max_duration_ms = 300000,
		.quota = true,
		.residency = ENGINE_RESIDENCY_LRU,
		.affinity = true,
		.load_gbps = 55,
		.context_s = 1.0,
	};
}

const char *sim_policy_name(enum sim_policy p)
{
	return p == SIM_ZEROGPU ? "zerogpu" : p == SIM_FIFO ? "fifo" : "static";
}

/* ------------------------------------------------------------------------
 * The engine's hooks.
 * ------------------------------------------------------------------------ */

static int64_t now_ms; /* the virtual clock (the hooks have no other way to it) */

/* The engine's clock runs ahead of the trace's: to it, time 0 means "never". */
#define ENGINE_EPOCH_MS INT64_C(3600000)
#define ENGINE_NOW	(now_ms + ENGINE_EPOCH_MS)

static void settle(struct sim *s, struct call *c, const struct lease *l)
{
	struct quota_account *a = s->accounts ? s->accounts[c->visitor] : NULL;
	if (!a || !l->req.quota_key[0])
		return;
	quota_settle(a, l->req.reserved_ms,
		     l->granted_ms ? quota_charge_ms(&s->quota.cfg, l, ENGINE_NOW - l->granted_ms)
				   : 0);
}

/* A cold start: the weights over the host-to-device link, and the context. */
static int64_t cold_start_ms(const struct sim_config *cfg, const struct call *c)
{
	if (!c->model_bytes)
		return 0;
	return (int64_t) ((double) c->model_bytes / (cfg->load_gbps * 1e9) * 1000.0 +
			  cfg->context_s * 1000.0);
}

static void on_event(void *ctx, struct lease *l, enum engine_event ev)
{
	struct sim *s = ctx;
	struct call *c = l->stream;
	switch (ev) {
	case ENGINE_EV_QUEUED:
	case ENGINE_EV_EXPIRED:
		break;
	case ENGINE_EV_GRANTED:
		c->granted_ms = now_ms;
		c->lease = l;
		/* The call's worker: the one taken over when warm, else a new one. */
		if (!l->warm)
			l->warm_proc = (struct lease_process){.pid = (pid_t) (c - s->t->calls) + 1,
							      .pidfd = -1,
							      .attached_by = l->owner};
		(void) engine_attach(&s->parts[s->app_part[c->app]].engine, l, &l->warm_proc,
				     ENGINE_NOW);
		/* A cold call first loads its weights and starts its context; the lease's
		 * clock runs meanwhile, as on a real GPU. */
		c->cold_ms = l->warm ? 0 : cold_start_ms(s->cfg, c);
		s->warm += l->warm;
		s->cold += !l->warm;
		s->cold_ms_total += (double) c->cold_ms;
		/* Reserved for every call up front: cannot fail. */
		(void) heap_push(&s->done, &c->done_node, now_ms + c->cold_ms + c->actual_ms);
		break;
	case ENGINE_EV_ENDED:
		if (c->outcome != CALL_PENDING) {
			fprintf(stderr, "sim: call %td ended twice\n", c - s->t->calls);
			abort();
		}
		c->ended_ms = now_ms;
		c->outcome = l->state == LEASE_RELEASED	 ? CALL_DONE
			     : l->state == LEASE_EXPIRED ? CALL_EXPIRED
							 : CALL_TIMED_OUT;
		c->lease = NULL;
		heap_remove(&s->done, &c->done_node);
		settle(s, c, l);
		s->ends[c->outcome]++;
		if (now_ms > s->last_end_ms)
			s->last_end_ms = now_ms;
		break;
	}
}

static void kill_group(void *ctx, const struct lease *l)
{
	(void) ctx;
	(void) l; /* the call's process "dies": its lease ends with it */
}

static void make_id(void *ctx, char *out)
{
	struct sim *s = ctx;
	snprintf(out, LEASE_ID_LEN + 1, "%032zx", s->current);
}

/* ------------------------------------------------------------------------
 * Set-up: the pool, or the static shares.
 * ------------------------------------------------------------------------ */

static int slots_of(const struct sim *s, const struct call *c)
{
	return c->size == LEASE_SIZE_LARGE ? c->gpus : c->gpus * s->cfg->split;
}

/*
 * Static allocation: with no more apps than GPUs, each app owns an equal
 * number of whole GPUs (the heaviest get the remainder); with more, each GPU
 * is one share, and apps are placed heaviest first onto the least loaded (the
 * operator knows the loads). A call needing more GPUs than its app's share can
 * never run (counted as unservable).
 */
static int place_static(struct sim *s, const bool *include, int *sizes)
{
	int napps = 0;
	double *load = calloc(s->t->napps, sizeof(*load));
	int *order = calloc(s->t->napps, sizeof(*order));
	if (!load || !order) {
		free(load), free(order);
		return -ENOMEM;
	}
	for (size_t i = 0; i < s->t->ncalls; i++) {
		const struct call *c = &s->t->calls[i];
		if (include && !include[c->app])
			continue;
		load[c->app] += (double) c->actual_ms * slots_of(s, c);
	}
	for (size_t a = 0; a < s->t->napps; a++)
		if (!include || include[a])
			order[napps++] = (int) a;
	/* Heaviest first (insertion sort: a few hundred apps at most). */
	for (int i = 1; i < napps; i++)
		for (int k = i; k > 0 && load[order[k]] > load[order[k - 1]]; k--) {
			int x = order[k];
			order[k] = order[k - 1];
			order[k - 1] = x;
		}
	int gpus = s->cfg->gpus;
	if (napps <= gpus) {
		/* One share per app: an equal number of GPUs, the rest to the heaviest. */
		s->nparts = napps;
		for (int i = 0; i < napps; i++)
			sizes[i] = gpus / napps + (i < gpus % napps);
	} else {
		s->nparts = gpus;
		for (int i = 0; i < gpus; i++)
			sizes[i] = 1;
	}
	for (int i = 0; i < napps; i++) {
		int a = order[i], best = i;
		if (napps > gpus)
			for (int p = best = 0; p < s->nparts; p++)
				if (s->parts[p].load < s->parts[best].load)
					best = p;
		s->app_part[a] = best;
		s->parts[best].load += load[a];
	}
	free(load), free(order);
	return 0;
}

static int setup(struct sim *s, const bool *include, char *err, size_t errlen)
{
	const struct sim_config *cfg = s->cfg;
	int sizes[INV_MAX_DEVICES];
	s->parts = calloc((size_t) cfg->gpus, sizeof(*s->parts));
	s->app_part = calloc(s->t->napps + 1, sizeof(*s->app_part));
	if (!s->parts || !s->app_part)
		return -ENOMEM;
	if (cfg->policy == SIM_STATIC) {
		if (place_static(s, include, sizes) < 0)
			return -ENOMEM;
	} else {
		s->nparts = 1;
		sizes[0] = cfg->gpus;
	}
	struct engine_config ec;
	engine_config_default(&ec);
	ec.split = cfg->split;
	ec.max_duration_ms = cfg->max_duration_ms;
	ec.default_max_wait_ms = cfg->max_wait_ms;
	ec.positions = false; /* nobody listens, and the walks cost */
	ec.residency = cfg->residency;
	ec.affinity = cfg->affinity;
	if (cfg->policy == SIM_ZEROGPU)
		sched_params_priority(&ec.sched, cfg->max_duration_ms);
	else
		sched_params_fifo(&ec.sched);
	struct engine_hooks hooks = {
		.ctx = s, .event = on_event, .kill_group = kill_group, .make_id = make_id};
	for (int p = 0; p < s->nparts; p++) {
		char spec[32];
		snprintf(spec, sizeof(spec), "%dx80G", sizes[p]);
		if (inventory_simulate(&s->parts[p].inv, spec, "sim", err, errlen) < 0)
			return -EINVAL;
		if (engine_init(&s->parts[p].engine, &s->parts[p].inv, &ec, &hooks) < 0)
			return -ENOMEM;
		s->ninit++;
		s->slots_total += s->parts[p].engine.slots_total;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * The event loop.
 * ------------------------------------------------------------------------ */

/* Accumulates the integrals up to t. */
static void advance(struct sim *s, int64_t t)
{
	int64_t dt = t - s->last_ms;
	if (dt <= 0)
		return;
	size_t busy = 0, waiting = 0;
	for (int p = 0; p < s->nparts; p++) {
		busy += s->parts[p].engine.slots_busy;
		waiting += s->parts[p].engine.sched.len;
	}
	s->busy_slot_ms += (double) busy * (double) dt;
	if (waiting)
		s->idle_waiting_slot_ms += (double) (s->slots_total - busy) * (double) dt;
	s->last_ms = t;
}

static void end_at_arrival(struct sim *s, struct call *c, enum call_outcome why)
{
	c->outcome = why;
	c->ended_ms = now_ms;
	s->ends[why]++;
}

/*
 * What a call needs on each GPU: its weights and a fifth more for activations and
 * the context, at most what its size gets (a half with split 2, else the GPU).
 */
static uint64_t memory_need(const struct sim_config *cfg, const struct call *c)
{
	uint64_t gpu = UINT64_C(80) << 30;
	uint64_t room = c->size == LEASE_SIZE_LARGE ? gpu / (uint64_t) cfg->split : gpu;
	uint64_t need = c->model_bytes + c->model_bytes / 5;
	return need < room ? need : room;
}

static void submit(struct sim *s, size_t i)
{
	struct call *c = &s->t->calls[i];
	struct partition *part = &s->parts[s->app_part[c->app]];
	struct lease_request rq = {
		.size = c->size,
		.gpus = c->gpus,
		.duration_ms = c->requested_ms,
		.max_wait_ms = s->cfg->max_wait_ms,
		.tier = c->tier,
		.quota_left = 1.0,
		.memory_bytes = memory_need(s->cfg, c),
	};
	if (c->requested_ms > s->cfg->max_duration_ms) {
		end_at_arrival(s, c, CALL_UNSERVABLE);
		return;
	}
	snprintf(rq.app, sizeof(rq.app), "%s", s->t->apps[c->app]);
	snprintf(rq.visitor, sizeof(rq.visitor), "%s", s->t->visitors[c->visitor]);
	struct quota_account *a = NULL;
	if (s->accounts) {
		a = s->accounts[c->visitor];
		if (!a)
			a = s->accounts[c->visitor] = quota_add(
				&s->quota, s->t->visitors[c->visitor], c->tier, 0, 0);
		if (!a) {
			fprintf(stderr, "sim: out of memory\n");
			exit(1);
		}
		int64_t cost = quota_cost_ms(&s->quota.cfg, &rq), left, wait;
		if (quota_reserve(&s->quota.cfg, a, cost, EPOCH_MS + now_ms, &left, &wait) < 0) {
			end_at_arrival(s, c, CALL_QUOTA_REFUSED);
			return;
		}
		rq.reserved_ms = cost;
		rq.quota_left = quota_left_share(&s->quota.cfg, a);
		snprintf(rq.quota_key, sizeof(rq.quota_key), "%s", a->key);
	}
	/* One principal (the app's own server) calls for every app. */
	struct lease_owner owner = {.uid_known = true, .uid = 1000};
	s->current = i;
	int r = engine_submit(&part->engine, &rq, &owner, c, ENGINE_NOW);
	if (r == -EINVAL || r == -E2BIG) {
		if (a)
			quota_settle(a, rq.reserved_ms, 0);
		end_at_arrival(s, c, CALL_UNSERVABLE);
	} else if (r < 0) {
		fprintf(stderr, "sim: out of memory\n");
		exit(1);
	}
}

static void loop(struct sim *s, const bool *include)
{
	struct trace *t = s->t;
	size_t next = 0;
	for (;;) {
		while (next < t->ncalls && include && !include[t->calls[next].app])
			next++;
		int64_t t_arrival = next < t->ncalls ? t->calls[next].arrival_ms : INT64_MAX;
		struct heap_node *d = heap_top(&s->done);
		int64_t t_done = d ? d->key : INT64_MAX, t_engine = INT64_MAX;
		for (int p = 0; p < s->nparts; p++) {
			int64_t x = engine_next_deadline(&s->parts[p].engine);
			if (x != INT64_MAX && x - ENGINE_EPOCH_MS < t_engine)
				t_engine = x - ENGINE_EPOCH_MS;
		}
		int64_t at = t_arrival < t_done ? t_arrival : t_done;
		at = t_engine < at ? t_engine : at;
		if (at == INT64_MAX)
			break;
		advance(s, at);
		now_ms = at;
		if (t_done == at) { /* the call's work finished: it releases */
			struct call *c = (struct call *) ((char *) d -
							  offsetof(struct call, done_node));
			heap_remove(&s->done, d);
			/* Its worker stays, weights and all, until evicted. */
			engine_release_keep(&s->parts[s->app_part[c->app]].engine, c->lease, 0,
					    ENGINE_NOW, NULL);
		} else if (t_engine == at) {
			for (int p = 0; p < s->nparts; p++)
				if (engine_next_deadline(&s->parts[p].engine) <= ENGINE_NOW)
					engine_tick(&s->parts[p].engine, ENGINE_NOW);
		} else {
			if (s->first_ms < 0)
				s->first_ms = at;
			submit(s, next++);
		}
	}
}

/* ------------------------------------------------------------------------
 * Results.
 * ------------------------------------------------------------------------ */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted x[0..n). */
static double pct(const int64_t *x, size_t n, double p)
{
	size_t k = (size_t) (p * (double) n + 0.999999);
	return n ? (double) x[(k ? k : 1) - 1] / 1000.0 : 0;
}

struct group {
	const char *name;
	int64_t *waits;
	size_t n;
};

static json_t *summary(struct group *g)
{
	qsort(g->waits, g->n, sizeof(*g->waits), cmp_i64);
	double sum = 0;
	for (size_t i = 0; i < g->n; i++)
		sum += (double) g->waits[i];
	return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f}", "n", (json_int_t) g->n, "mean",
			 g->n ? sum / (double) g->n / 1000.0 : 0.0, "p50", pct(g->waits, g->n, .50),
			 "p95", pct(g->waits, g->n, .95), "p99", pct(g->waits, g->n, .99), "max",
			 g->n ? (double) g->waits[g->n - 1] / 1000.0 : 0.0);
}

enum {
	G_ALL,
	G_ANON,
	G_FREE,
	G_PRO,
	G_ENTERPRISE,
	G_LARGE,
	G_XLARGE,
	G_GANG,
	G_SHORT,
	G_DEFAULT,
	G_LONG,
	G_COUNT
};
static const char *const group_names[G_COUNT] = {
	"all",	  "anonymous", "free",	"pro",	   "enterprise", "large",
	"xlarge", "2gpu",      "short", "default", "long",
};

static json_t *results(struct sim *s, const bool *include)
{
	/* g: waits by group; gc: wait plus cold start, overall (G_ALL) and by tier. */
	struct group g[G_COUNT], gc[G_ENTERPRISE + 1];
	for (int i = 0; i < G_COUNT; i++)
		g[i] = (struct group){group_names[i], malloc((s->t->ncalls + 1) * sizeof(int64_t)),
				      0};
	for (int i = 0; i <= G_ENTERPRISE; i++)
		gc[i] = (struct group){group_names[i], malloc((s->t->ncalls + 1) * sizeof(int64_t)),
				       0};
	size_t calls = 0;
	for (size_t i = 0; i < s->t->ncalls; i++) {
		const struct call *c = &s->t->calls[i];
		if (include && !include[c->app])
			continue;
		calls++;
		if (c->outcome != CALL_DONE && c->outcome != CALL_EXPIRED &&
		    c->outcome != CALL_TIMED_OUT)
			continue;
		/* A call that timed out waited max_wait and got nothing: that is its wait. */
		int64_t w = (c->granted_ms >= 0 ? c->granted_ms : c->ended_ms) - c->arrival_ms;
		int tier = c->tier == LEASE_TIER_ANONYMOUS ? G_ANON
			   : c->tier == LEASE_TIER_FREE	   ? G_FREE
			   : c->tier == LEASE_TIER_PRO	   ? G_PRO
							   : G_ENTERPRISE;
		int size = c->gpus > 1 ? G_GANG : c->size == LEASE_SIZE_XLARGE ? G_XLARGE : G_LARGE;
		int len = c->requested_ms < 60000    ? G_SHORT
			  : c->requested_ms == 60000 ? G_DEFAULT
						     : G_LONG;
		int into[] = {G_ALL, tier, size, len};
		for (int k = 0; k < 4; k++)
			g[into[k]].waits[g[into[k]].n++] = w;
		gc[G_ALL].waits[gc[G_ALL].n++] = w + c->cold_ms;
		gc[tier].waits[gc[tier].n++] = w + c->cold_ms;
	}
	uint64_t evictions = 0;
	for (int p = 0; p < s->nparts; p++)
		evictions += s->parts[p].engine.stats.evictions;
	json_t *cold_tiers = json_object();
	for (int i = G_ANON; i <= G_ENTERPRISE; i++)
		json_object_set_new(cold_tiers, gc[i].name, summary(&gc[i]));
	size_t grants = s->warm + s->cold;
	json_t *residency = json_pack(
		"{s:s, s:b, s:f, s:f, s:I, s:I, s:f, s:f, s:I, s:o, s:o}", "mode",
		s->cfg->residency == ENGINE_RESIDENCY_LRU ? "lru" : "off", "affinity",
		s->cfg->affinity, "load_gbps", s->cfg->load_gbps, "context_s", s->cfg->context_s,
		"warm_grants", (json_int_t) s->warm, "cold_grants", (json_int_t) s->cold,
		"warm_fraction", grants ? (double) s->warm / (double) grants : 0.0,
		"cold_start_s_total", s->cold_ms_total / 1000.0, "evictions",
		(json_int_t) evictions, "wait_plus_cold_s", summary(&gc[G_ALL]),
		"wait_plus_cold_s_by_tier", cold_tiers);
	double span = s->first_ms >= 0 && s->last_end_ms > s->first_ms
			      ? (double) (s->last_end_ms - s->first_ms)
			      : 1.0;
	double split = s->cfg->split;
	json_t *tiers = json_object(), *sizes = json_object(), *durations = json_object();
	for (int i = G_ANON; i <= G_ENTERPRISE; i++)
		json_object_set_new(tiers, g[i].name, summary(&g[i]));
	for (int i = G_LARGE; i <= G_GANG; i++)
		json_object_set_new(sizes, g[i].name, summary(&g[i]));
	for (int i = G_SHORT; i <= G_LONG; i++)
		json_object_set_new(durations, g[i].name, summary(&g[i]));
	size_t napps = 0;
	for (size_t a = 0; a < s->t->napps; a++)
		napps += !include || include[a];
	json_t *o = json_pack(
		"{s:s, s:i, s:i, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I}, s:f, s:f, s:f, s:f, "
		"s:o, s:o, s:o, s:o}",
		"policy", sim_policy_name(s->cfg->policy), "gpus", s->cfg->gpus, "split",
		s->cfg->split, "apps", (json_int_t) napps, "calls", (json_int_t) calls, "ended",
		"done", (json_int_t) s->ends[CALL_DONE], "expired",
		(json_int_t) s->ends[CALL_EXPIRED], "timed_out",
		(json_int_t) s->ends[CALL_TIMED_OUT], "quota_refused",
		(json_int_t) s->ends[CALL_QUOTA_REFUSED], "unservable",
		(json_int_t) s->ends[CALL_UNSERVABLE], "span_s", span / 1000.0, "busy_fraction",
		s->busy_slot_ms / ((double) s->slots_total * span), "idle_while_waiting_gpu_s",
		s->idle_waiting_slot_ms / split / 1000.0, "idle_while_waiting_fraction",
		s->idle_waiting_slot_ms / ((double) s->slots_total * span), "wait_s",
		summary(&g[G_ALL]), "wait_s_by_tier", tiers, "wait_s_by_size", sizes,
		"wait_s_by_requested", durations);
	json_object_set_new(o, "residency", residency);
	for (int i = 0; i < G_COUNT; i++)
		free(g[i].waits);
	for (int i = 0; i <= G_ENTERPRISE; i++)
		free(gc[i].waits);
	return o;
}

json_t *sim_run(const struct sim_config *cfg, struct trace *t, const bool *include, char *err,
		size_t errlen)
{
	struct sim s = {.cfg = cfg, .t = t, .first_ms = -1};
	json_t *out = NULL;
	for (size_t i = 0; i < t->ncalls; i++) {
		struct call *c = &t->calls[i];
		c->granted_ms = c->ended_ms = -1;
		c->cold_ms = 0;
		c->outcome = CALL_PENDING;
		c->lease = NULL;
		c->done_node.pos = 0;
	}
	struct quota_config qc;
	quota_config_default(&qc);
	heap_init(&s.done);
	now_ms = 0;
	if (quota_init(&s.quota, &qc) < 0 || heap_reserve(&s.done, t->ncalls + 1) < 0)
		goto out;
	if (cfg->quota && !(s.accounts = calloc(t->nvisitors + 1, sizeof(*s.accounts))))
		goto out;
	if (setup(&s, include, err, errlen) < 0)
		goto out;
	loop(&s, include);
	out = results(&s, include);
out:
	for (int p = 0; p < s.ninit; p++)
		engine_shutdown(&s.parts[p].engine, ENGINE_NOW);
	free(s.parts);
	free(s.app_part);
	free(s.accounts);
	quota_release(&s.quota);
	heap_release(&s.done);
	return out;
}
