#include "daemon/core/engine.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * The lease table: id -> lease.
 * ------------------------------------------------------------------------ */

struct lease *engine_find(const struct engine *e, const char *id)
{
	struct strmap_node *n = strmap_find(&e->leases, id);
	return n ? strmap_item(n, struct lease, hnode) : NULL;
}

struct foreach_call {
	void (*fn)(struct lease *l, void *arg);
	void *arg;
};

static void foreach_one(struct strmap_node *n, void *arg)
{
	struct foreach_call *fc = arg;
	fc->fn(strmap_item(n, struct lease, hnode), fc->arg);
}

void engine_foreach(const struct engine *e, void (*fn)(struct lease *l, void *arg), void *arg)
{
	struct foreach_call fc = {fn, arg};
	strmap_foreach(&e->leases, foreach_one, &fc);
}

/* ------------------------------------------------------------------------
 * The pool: GPUs made of slots.
 * ------------------------------------------------------------------------ */

void engine_config_default(struct engine_config *cfg)
{
	*cfg = (struct engine_config){
		.max_duration_ms = 300000,
		.default_duration_ms = 60000,
		.default_max_wait_ms = 60000,
		.max_wait_limit_ms = 3600000,
		.grace_ms = 2000,
		.split = 1,
		.positions = true,
		.residency = ENGINE_RESIDENCY_LRU,
		.affinity = true,
	};
	sched_params_priority(&cfg->sched, cfg->max_duration_ms);
}

/* Groups the inventory into GPUs: MIG instances of one GPU become its slots. */
static void pool_build(struct engine *e)
{
	const struct inventory *inv = e->inv;
	for (size_t i = 0; i < inv->count; i++) {
		const struct device *d = &inv->devices[i];
		struct engine_gpu *g = NULL;
		if (d->mig_index >= 0) {
			for (size_t k = 0; k < e->ngpus && !g; k++) {
				struct engine_gpu *c = &e->gpus[k];
				const struct device *first = &inv->devices[c->slot_device[0]];
				if (first->mig_index >= 0 && first->gpu_index == d->gpu_index &&
				    c->nslots < ENGINE_MAX_SLOTS)
					g = c;
			}
		}
		if (!g)
			g = &e->gpus[e->ngpus++];
		int halves = d->mig_index >= 0 ? 1 : e->cfg.split;
		for (int h = 0; h < halves; h++) {
			g->slot_device[g->nslots] = (int) i;
			g->slot_memory[g->nslots] = d->memory_bytes / (uint64_t) halves;
			g->nslots++;
			e->slots_total++;
		}
	}
}

static unsigned all_slots(const struct engine_gpu *g)
{
	return (1u << g->nslots) - 1;
}

static bool gpu_is_mig(const struct engine *e, const struct engine_gpu *g)
{
	return e->inv->devices[g->slot_device[0]].mig_index >= 0;
}

/* CUDA lets one process use one MIG instance only: a lease that would hold several
 * devices (xlarge takes all of a GPU's slots; gpus > 1 takes several GPUs) is placed on
 * GPUs that are not in MIG mode. */
static bool needs_whole_gpus(const struct lease_request *req)
{
	return req->size == LEASE_SIZE_XLARGE || req->gpus > 1;
}

/* Whether g could take one more lease of this size now. */
static bool gpu_can_take(const struct engine_gpu *g, enum lease_size size)
{
	return size == LEASE_SIZE_XLARGE ? g->used == 0 : g->used < g->nslots;
}

/*
 * How good a home g is for l, 0 best; -1 when it cannot take l now. A large
 * request goes first to a GPU already partly in use, then to a free GPU that
 * has halves, and only then takes a whole single-slot GPU: whole GPUs stay
 * whole for xlarge requests for as long as possible.
 */
static int placement_rank(const struct engine_gpu *g, enum lease_size size)
{
	if (!gpu_can_take(g, size))
		return -1;
	if (size == LEASE_SIZE_XLARGE)
		return 0;
	return g->used > 0 ? 0 : g->nslots > 1 ? 1 : 2;
}

#define BIT(d) (UINT64_C(1) << (d))

/* The slot a lease of this size would take on g: the first free one (all for xlarge). */
static int first_free_slot(const struct engine_gpu *g)
{
	for (int s = 0; s < g->nslots; s++)
		if (!g->holder[s])
			return s;
	return 0;
}

/* The most memory a call of this size can get on g: its largest slot, or all of it. */
static uint64_t gpu_room(const struct engine_gpu *g, enum lease_size size)
{
	uint64_t room = 0;
	for (int s = 0; s < g->nslots; s++)
		if (size == LEASE_SIZE_XLARGE)
			room += g->slot_memory[s];
		else if (g->slot_memory[s] > room)
			room = g->slot_memory[s];
	return room;
}

/* The device memory a request needs on one GPU: what it asks for, or all that its
 * slot (large) or the whole GPU (xlarge) has. */
static uint64_t memory_need(const struct engine_gpu *g, const struct lease_request *req, int slot)
{
	if (req->memory_bytes)
		return req->memory_bytes;
	return req->size == LEASE_SIZE_LARGE ? g->slot_memory[slot] : gpu_room(g, req->size);
}

/* The memory the leases holding inventory device d count there. */
static uint64_t memory_committed(const struct engine *e, int device)
{
	uint64_t sum = 0;
	for (size_t k = 0; k < e->ngpus; k++) {
		const struct engine_gpu *g = &e->gpus[k];
		for (int s = 0; s < g->nslots; s++) {
			const struct lease *h = g->holder[s];
			if (!h || g->slot_device[s] != device)
				continue;
			/* A lease holding both halves is counted once, by its grant. */
			bool seen = false;
			for (int t = 0; t < s && !seen; t++)
				seen = g->holder[t] == h && g->slot_device[t] == device;
			for (int i = 0; i < h->ngrants && !seen; i++)
				if (h->grants[i].gpu == (int) k)
					sum += h->grants[i].memory;
		}
	}
	return sum;
}

uint64_t engine_memory_free(const struct engine *e, int device)
{
	uint64_t total = e->inv->devices[device].memory_bytes;
	uint64_t used = memory_committed(e, device) + residency_bytes_on(&e->residency, device);
	return used < total ? total - used : 0;
}

/* One GPU as a home for a lease: what taking it would mean. */
struct candidate {
	int gpu, device, rank;
	bool warm;	      /* a resident of the lease's app and task is there */
	bool fits;	      /* without evicting anybody */
	uint64_t evict_bytes; /* what must be evicted otherwise */
};

/* Whether GPU k can take l now, and at what cost (c). */
static bool evaluate(const struct engine *e, const struct lease *l, int k, struct candidate *c)
{
	const struct engine_gpu *g = &e->gpus[k];
	int rank = placement_rank(g, l->req.size);
	if (rank < 0 || (needs_whole_gpus(&l->req) && gpu_is_mig(e, g)))
		return false;
	int slot = first_free_slot(g);
	*c = (struct candidate){.gpu = k, .device = g->slot_device[slot], .rank = rank};
	const struct resident *spare = residency_warm(&e->residency, BIT(c->device), &l->req,
						      &l->owner);
	c->warm = spare != NULL;
	c->fits = true;
	if (e->cfg.residency == ENGINE_RESIDENCY_OFF)
		return true; /* whatever is there goes */
	/* The resident taken over holds part of what the call needs already. */
	uint64_t need = memory_need(g, &l->req, slot);
	uint64_t have = engine_memory_free(e, c->device) + (spare ? spare->bytes : 0);
	if (have >= need)
		return true;
	const struct resident *victims[RESIDENTS_MAX];
	uint64_t freed;
	residency_victims(&e->residency, c->device, l->req.app, need - have, spare, victims,
			  RESIDENTS_MAX, &freed);
	c->fits = false;
	c->evict_bytes = freed;
	return freed >= need - have; /* else live leases leave too little room for now */
}

/*
 * Whether a is a better home than b: packing halves first (placement_rank: whole GPUs
 * stay whole for xlarge and 2-GPU calls, which otherwise wait longer, and everybody
 * behind them), then warm (with affinity), then room without evicting, then the least
 * evicted, then the lowest index. Measured both ways (BENCHMARKS.md, "Residency"):
 * warm first won more warm grants but lengthened the p95 wait of short calls.
 */
static bool better(const struct engine *e, const struct candidate *a, const struct candidate *b)
{
	if (a->rank != b->rank)
		return a->rank < b->rank;
	if (e->cfg.affinity && a->warm != b->warm)
		return a->warm;
	if (a->fits != b->fits)
		return a->fits;
	if (a->evict_bytes != b->evict_bytes)
		return a->evict_bytes < b->evict_bytes;
	return a->gpu < b->gpu;
}

/* Chooses GPUs for l, the best home first (better()). Fills chosen[] and returns true
 * when all l->req.gpus fit now. Only GPUs that can take l now are looked at, so the
 * choice never makes a lease wait, nor changes who is served first. */
static bool pool_choose(const struct engine *e, const struct lease *l, int *chosen)
{
	for (int n = 0; n < l->req.gpus; n++) {
		struct candidate best = {0}, c;
		bool found = false;
		for (size_t k = 0; k < e->ngpus; k++) {
			bool taken = false;
			for (int i = 0; i < n && !taken; i++)
				taken = chosen[i] == (int) k;
			if (!taken && evaluate(e, l, (int) k, &c) &&
			    (!found || better(e, &c, &best))) {
				best = c;
				found = true;
			}
		}
		if (!found)
			return false;
		chosen[n] = best.gpu;
	}
	return true;
}

int engine_infeasible(const struct engine *e, const struct lease_request *req, char *why,
		      size_t size)
{
	size_t usable = 0, mig = 0;
	for (size_t k = 0; k < e->ngpus; k++) {
		if (gpu_is_mig(e, &e->gpus[k]))
			mig++;
		if (!(needs_whole_gpus(req) && gpu_is_mig(e, &e->gpus[k])))
			usable++;
	}
	uint64_t room = 0; /* the most one GPU can give a call of this size */
	for (size_t k = 0; k < e->ngpus; k++)
		if (!(needs_whole_gpus(req) && gpu_is_mig(e, &e->gpus[k])) &&
		    gpu_room(&e->gpus[k], req->size) > room)
			room = gpu_room(&e->gpus[k], req->size);
	if (req->gpus >= 1 && (size_t) req->gpus <= usable && req->memory_bytes > room) {
		snprintf(why, size,
			 "the call needs %.1f GiB of GPU memory, but a%s %s call gets at most "
			 "%.1f GiB here%s",
			 (double) req->memory_bytes / (1 << 30),
			 req->size == LEASE_SIZE_XLARGE ? "n" : "", lease_size_name(req->size),
			 (double) room / (1 << 30),
			 req->size == LEASE_SIZE_LARGE ? " (ask for xlarge: a whole GPU)" : "");
		return -E2BIG;
	}
	if (req->gpus >= 1 && (size_t) req->gpus <= usable)
		return 0;
	if (needs_whole_gpus(req) && mig)
		snprintf(
			why, size,
			"%s needs GPUs that are not in MIG mode (CUDA lets one process use one MIG "
			"instance only), and this machine has %zu",
			req->size == LEASE_SIZE_XLARGE && req->gpus == 1
				? "an xlarge request"
				: "a request for several devices",
			usable);
	else
		snprintf(why, size, "a request for %d GPUs cannot be met by this machine's %zu",
			 req->gpus, e->ngpus);
	return -EINVAL;
}

static void pool_take(struct engine *e, struct lease *l, const int *chosen)
{
	l->ngrants = 0;
	for (int i = 0; i < l->req.gpus; i++) {
		struct engine_gpu *g = &e->gpus[chosen[i]];
		unsigned want = 0;
		for (int s = 0; s < g->nslots; s++) {
			if (g->holder[s])
				continue;
			want |= 1u << s;
			if (l->req.size == LEASE_SIZE_LARGE)
				break;
		}
		for (int s = 0; s < g->nslots; s++) {
			if (!(want & (1u << s)))
				continue;
			/* A slot is never held by two leases: catch any slip here. */
			assert(g->holder[s] == NULL);
			g->holder[s] = l;
			g->used++;
			e->slots_busy++;
		}
		assert(l->req.size == LEASE_SIZE_LARGE || want == all_slots(g));
		l->grants[l->ngrants++] = (struct lease_grant){
			chosen[i], want, memory_need(g, &l->req, __builtin_ctz(want))};
	}
}

static void pool_give_back(struct engine *e, struct lease *l)
{
	for (int i = 0; i < l->ngrants; i++) {
		struct engine_gpu *g = &e->gpus[l->grants[i].gpu];
		for (int s = 0; s < g->nslots; s++) {
			if (!(l->grants[i].slots & (1u << s)))
				continue;
			assert(g->holder[s] == l);
			g->holder[s] = NULL;
			g->used--;
			e->slots_busy--;
		}
	}
}

int engine_lease_devices(const struct engine *e, const struct lease *l, struct engine_device *out,
			 int max)
{
	int n = 0;
	for (int i = 0; i < l->ngrants; i++) {
		const struct engine_gpu *g = &e->gpus[l->grants[i].gpu];
		for (int s = 0; s < g->nslots; s++) {
			if (!(l->grants[i].slots & (1u << s)))
				continue;
			/* Halves of one device are one device with more memory. */
			if (n && out[n - 1].device == g->slot_device[s]) {
				out[n - 1].memory_limit += g->slot_memory[s];
			} else if (n < max) {
				out[n++] = (struct engine_device){g->slot_device[s],
								  g->slot_memory[s]};
			}
		}
	}
	return n;
}

int engine_device_usage(const struct engine *e, int device, int *slots, int *held,
			const struct lease **out, int max)
{
	int n = 0;
	*slots = *held = 0;
	for (size_t k = 0; k < e->ngpus; k++) {
		const struct engine_gpu *g = &e->gpus[k];
		for (int s = 0; s < g->nslots; s++) {
			if (g->slot_device[s] != device)
				continue;
			(*slots)++;
			if (!g->holder[s])
				continue;
			(*held)++;
			bool seen = false;
			for (int j = 0; j < n; j++)
				seen |= out[j] == g->holder[s];
			if (!seen && n < max)
				out[n++] = g->holder[s];
		}
	}
	return n;
}

static void timer_set(struct engine *e, struct lease *l, int64_t at)
{
	heap_remove(&e->timers, &l->timer);
	/* Room for every lease's one timer was reserved at submit: this cannot fail. */
	int r = heap_push(&e->timers, &l->timer, at);
	assert(r == 0);
	(void) r;
}

static void emit(struct engine *e, struct lease *l, enum engine_event ev)
{
	if (e->hooks.event)
		e->hooks.event(e->hooks.ctx, l, ev);
}

static void kill_attached(struct engine *e, struct lease *l)
{
	if (l->proc.pid <= 0)
		return;
	e->stats.killed++;
	if (e->hooks.kill_group)
		e->hooks.kill_group(e->hooks.ctx, l);
}

static void count_outcome(struct engine *e, enum lease_state s)
{
	switch (s) {
	case LEASE_RELEASED:
		e->stats.released++;
		break;
	case LEASE_EXPIRED:
		e->stats.expired++;
		break;
	case LEASE_FAILED:
		e->stats.failed++;
		break;
	case LEASE_CANCELLED:
		e->stats.cancelled++;
		break;
	default:
		break;
	}
}

static void dispatch(struct engine *e, int64_t now, bool queue_shrank);

/* Moves l to a terminal state, frees what it holds, tells the client, frees l; serves
 * nobody new (finish() does). Returns l's state before. */
static enum lease_state retire(struct engine *e, struct lease *l, enum lease_state to, int64_t now)
{
	enum lease_state from = l->state;
	int r = lease_transition(l, to);
	assert(r == 0);
	(void) r;
	heap_remove(&e->timers, &l->timer);
	if (from == LEASE_QUEUED) {
		sched_remove(&e->sched, l);
	} else {
		pool_give_back(e, l);
		sched_on_end(&e->sched, l);
	}
	l->ended_ms = now;
	count_outcome(e, to);
	emit(e, l, ENGINE_EV_ENDED);
	strmap_remove(&e->leases, &l->hnode);
	free(l);
	return from;
}

/* Moves l to a terminal state, frees what it holds, tells the client, frees l. */
static void finish(struct engine *e, struct lease *l, enum lease_state to, int64_t now)
{
	enum lease_state from = retire(e, l, to, now);
	/* Freed devices or a shorter queue: serve who waits, tell who moved up. */
	dispatch(e, now, from == LEASE_QUEUED);
}

/* Whether a request that has waited is still wanted: its client may have gone with
 * nobody noticing yet (a crashed app leaves its whole queue behind at once). */
static bool waiter_gone(struct engine *e, struct lease *l, int64_t now)
{
	return l->created_ms < now && e->hooks.waiter_gone && e->hooks.waiter_gone(e->hooks.ctx, l);
}

static void evict(struct engine *e, const struct resident *r, const char *why)
{
	e->stats.evictions++;
	if (e->hooks.evict)
		e->hooks.evict(e->hooks.ctx, r, why);
	residency_remove(&e->residency, r);
}

/* Inventory devices l holds, as bits. */
static uint64_t lease_device_bits(const struct engine *e, const struct lease *l)
{
	uint64_t bits = 0;
	for (int i = 0; i < l->ngrants; i++) {
		const struct engine_gpu *g = &e->gpus[l->grants[i].gpu];
		for (int s = 0; s < g->nslots; s++)
			if (l->grants[i].slots & (1u << s))
				bits |= BIT(g->slot_device[s]);
	}
	return bits;
}

/*
 * Makes room for l, just placed: takes over a resident of its app and task on its
 * devices (warm), then evicts from each device what no longer fits there — other
 * apps' residents, least recently used first (residency_victims). With residency off
 * every other app's resident there goes first, as on the hosted service. A call never
 * starts where it cannot fit.
 */
static void make_room(struct engine *e, struct lease *l)
{
	uint64_t devices = lease_device_bits(e, l);
	const struct resident *spare = residency_warm(&e->residency, devices, &l->req, &l->owner);
	l->warm = spare != NULL;
	if (spare) {
		l->warm_proc = spare->proc;
		residency_remove(&e->residency, spare);
		e->stats.warm_grants++;
	} else {
		e->stats.cold_grants++;
	}
	char why[LEASE_MESSAGE_MAX];
	snprintf(why, sizeof(why), "to make room for lease %s of app %s", l->id, l->req.app);
	for (int d = 0; d < INV_MAX_DEVICES; d++) {
		if (!(devices & BIT(d)))
			continue;
		if (e->cfg.residency == ENGINE_RESIDENCY_OFF) {
			for (int i = 0; i < e->residency.n;) {
				const struct resident *r = &e->residency.r[i];
				if ((r->devices & BIT(d)) && strcmp(r->app, l->req.app))
					evict(e, r, why); /* the last entry moves into i */
				else
					i++;
			}
		}
		uint64_t total = e->inv->devices[d].memory_bytes;
		uint64_t used = memory_committed(e, d) + residency_bytes_on(&e->residency, d);
		if (used <= total)
			continue;
		const struct resident *victims[RESIDENTS_MAX];
		uint64_t ids[RESIDENTS_MAX], freed;
		int n = residency_victims(&e->residency, d, l->req.app, used - total, NULL, victims,
					  RESIDENTS_MAX, &freed);
		for (int i = 0; i < n; i++)
			ids[i] = victims[i]->id; /* evicting moves entries: find each anew */
		for (int i = 0; i < n; i++)
			evict(e, residency_find(&e->residency, ids[i]), why);
	}
}

static void grant(struct engine *e, struct lease *l, const int *chosen, int64_t now)
{
	int r = lease_transition(l, LEASE_GRANTED);
	assert(r == 0);
	(void) r;
	sched_take(&e->sched, l);
	pool_take(e, l, chosen);
	make_room(e, l);
	l->granted_ms = now;
	l->deadline_ms = now + l->req.duration_ms;
	e->stats.granted++;
	e->stats.grant_wait_ms_total += (uint64_t) (now - l->created_ms);
	timer_set(e, l, l->deadline_ms);
	emit(e, l, ENGINE_EV_GRANTED);
}

struct position_walk {
	struct engine *e;
};

/*
 * Whether a waiter at position `now_at`, last told `told`, should hear again:
 * every move near the front, moves of a tenth or more further back. A waiter
 * thus hears O(log position) announcements over its wait, not one per grant.
 */
static bool position_worth_telling(int told, int now_at)
{
	int moved = told > now_at ? told - now_at : now_at - told;
	return moved > 0 && (now_at <= 10 || moved * 10 >= told);
}

static void position_update(struct lease *l, int position, void *arg)
{
	struct position_walk *w = arg;
	if (!position_worth_telling(l->position_sent, position))
		return;
	l->position_sent = position;
	emit(w->e, l, ENGINE_EV_QUEUED);
}

/* Announcements walk the whole queue in order (O(n log n)): on a long queue they
 * come less often, so that they never take more than a few percent of the loop. */
static int64_t positions_interval(const struct engine *e)
{
	int64_t scaled = (int64_t) (e->sched.len / 200);
	return scaled > ENGINE_POSITION_INTERVAL_MS ? scaled : ENGINE_POSITION_INTERVAL_MS;
}

static void announce_positions(struct engine *e)
{
	struct position_walk w = {e};
	/* Out of memory only delays the announcement to the next change. */
	(void) sched_walk(&e->sched, position_update, &w);
}

/*
 * Grants waiting requests in the policy's order while they fit. A request whose
 * devices are not free lets those behind it that fit go first — until it has
 * waited the policy's backfill time; from then on devices are held back for it,
 * so a gang is never starved by a stream of small requests. When the queue
 * moved, schedules telling the waiters their new positions.
 */
static void dispatch(struct engine *e, int64_t now, bool queue_shrank)
{
	bool changed = queue_shrank;
	int chosen[INV_MAX_DEVICES];
	struct lease *l;
	while ((l = sched_peek(&e->sched))) {
		if (pool_choose(e, l, chosen)) {
			if (waiter_gone(e, l, now)) {
				snprintf(l->message, sizeof(l->message),
					 "the client went away while queued");
				retire(e, l, LEASE_CANCELLED, now);
			} else {
				grant(e, l, chosen, now);
			}
			changed = true;
			continue;
		}
		if (e->slots_busy == e->slots_total)
			break; /* nothing behind it could fit either */
		bool head = e->sched.nskipped == 0;
		bool holds_back = e->sched.p.backfill_ms == 0 ||
				  now - l->created_ms >= e->sched.p.backfill_ms;
		if ((head && holds_back) || e->sched.nskipped == SCHED_MAX_SKIP)
			break;
		sched_skip(&e->sched, l);
	}
	sched_unskip_all(&e->sched);
	if (changed && e->cfg.positions && e->sched.len && !heap_node_queued(&e->positions_timer)) {
		/* Reserved at submit, like the leases' timers: cannot fail. */
		int r = heap_push(&e->timers, &e->positions_timer, now + positions_interval(e));
		assert(r == 0);
		(void) r;
	}
}

/* ------------------------------------------------------------------------
 * The API.
 * ------------------------------------------------------------------------ */

int engine_init(struct engine *e, const struct inventory *inv, const struct engine_config *cfg,
		const struct engine_hooks *hooks)
{
	memset(e, 0, sizeof(*e));
	e->cfg = *cfg;
	e->hooks = *hooks;
	e->inv = inv;
	pool_build(e);
	heap_init(&e->timers);
	residency_init(&e->residency);
	if (sched_init(&e->sched, &cfg->sched) < 0)
		return -ENOMEM;
	return strmap_init(&e->leases);
}

struct shutdown_walk {
	struct engine *e;
	int64_t now;
};

static void shutdown_queued(struct lease *l, void *arg)
{
	struct shutdown_walk *w = arg;
	if (l->state != LEASE_QUEUED)
		return;
	snprintf(l->message, sizeof(l->message), "zerogpud is shutting down");
	finish(w->e, l, LEASE_CANCELLED, w->now);
}

static void shutdown_one(struct lease *l, void *arg)
{
	struct shutdown_walk *w = arg;
	snprintf(l->message, sizeof(l->message), "zerogpud is shutting down");
	kill_attached(w->e, l);
	finish(w->e, l, LEASE_FAILED, w->now);
}

void engine_end_all(struct engine *e, int64_t now)
{
	/* Empty the queue first so that ending a held lease grants nothing new. */
	struct shutdown_walk w = {e, now};
	engine_foreach(e, shutdown_queued, &w);
	engine_foreach(e, shutdown_one, &w);
}

void engine_shutdown(struct engine *e, int64_t now)
{
	engine_end_all(e, now);
	sched_destroy(&e->sched);
	heap_release(&e->timers);
	strmap_release(&e->leases);
}

int engine_submit(struct engine *e, const struct lease_request *req,
		  const struct lease_owner *owner, void *stream, int64_t now)
{
	char why[LEASE_MESSAGE_MAX];
	int infeasible = engine_infeasible(e, req, why, sizeof(why));
	if (infeasible < 0)
		return infeasible;
	/* Room for every lease's timer and the positions timer, so pushes cannot fail. */
	if (strmap_reserve(&e->leases) < 0 || heap_reserve(&e->timers, e->leases.len + 2) < 0)
		return -ENOMEM;
	struct lease *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;

	e->hooks.make_id(e->hooks.ctx, l->id);
	l->req = *req;
	l->owner = *owner;
	l->state = LEASE_QUEUED;
	l->proc = l->warm_proc = LEASE_PROCESS_NONE;
	l->created_ms = now;
	l->stream = stream;
	if (sched_push(&e->sched, l, now) < 0) {
		free(l);
		return -ENOMEM;
	}
	l->hnode.key = l->id;
	int inserted = strmap_insert(&e->leases, &l->hnode);
	assert(inserted == 0); /* reserved above */
	(void) inserted;
	e->stats.submitted++;

	dispatch(e, now, false);
	if (l->state != LEASE_QUEUED)
		return 0;
	if (req->max_wait_ms <= 0) {
		snprintf(l->message, sizeof(l->message),
			 "No GPU was available: none is free for this request now and max_wait_s "
			 "is 0");
		finish(e, l, LEASE_FAILED, now);
		return 0;
	}
	timer_set(e, l, now + req->max_wait_ms);
	/* The newcomer hears where it stands at once; O(n) counting, no sort. Those
	 * it overtook hear at the next announcement. */
	if (e->cfg.positions)
		l->position_sent = sched_position(&e->sched, l);
	emit(e, l, ENGINE_EV_QUEUED);
	if (e->cfg.positions && (size_t) l->position_sent < e->sched.len &&
	    !heap_node_queued(&e->positions_timer)) {
		int r = heap_push(&e->timers, &e->positions_timer, now + positions_interval(e));
		assert(r == 0); /* reserved above */
		(void) r;
	}
	return 0;
}

int engine_attach(struct engine *e, struct lease *l, const struct lease_process *p, int64_t now)
{
	(void) e;
	if (l->state == LEASE_QUEUED)
		return -EBUSY;
	if (l->state == LEASE_ATTACHED)
		return l->proc.pid == p->pid ? 0 : -EALREADY;
	if (l->expiry_signalled || now >= l->deadline_ms)
		return -ETIME;
	if (lease_transition(l, LEASE_ATTACHED) < 0)
		return -EINVAL;
	l->proc = *p;
	return 0;
}

int engine_rebind(struct engine *e, struct lease *l, const struct lease_process *p, int64_t now,
		  struct lease_process *old)
{
	*old = LEASE_PROCESS_NONE;
	if (l->state != LEASE_ATTACHED)
		return engine_attach(e, l, p, now);
	if (l->expiry_signalled || now >= l->deadline_ms)
		return -ETIME;
	*old = l->proc;
	l->proc = *p;
	return 0;
}

enum lease_state engine_end(struct engine *e, struct lease *l, bool failed, int64_t now,
			    int64_t *used_ms)
{
	bool held = l->state != LEASE_QUEUED;
	enum lease_state to = !held ? LEASE_CANCELLED : failed ? LEASE_FAILED : LEASE_RELEASED;
	if (used_ms)
		*used_ms = held ? now - l->granted_ms : 0;
	if (!held)
		snprintf(l->message, sizeof(l->message), "the request was cancelled by its client");
	finish(e, l, to, now);
	return to;
}

enum lease_state engine_release_keep(struct engine *e, struct lease *l, uint64_t bytes, int64_t now,
				     int64_t *used_ms)
{
	if (l->state == LEASE_QUEUED)
		return engine_end(e, l, false, now, used_ms);
	struct resident r = {.devices = lease_device_bits(e, l),
			     .bytes = bytes,
			     .since_ms = now,
			     .last_used_ms = now,
			     .proc = l->proc};
	for (int i = 0; i < l->ngrants && !bytes; i++)
		if (l->grants[i].memory > r.bytes)
			r.bytes = l->grants[i].memory;
	memcpy(r.app, l->req.app, sizeof(r.app));
	memcpy(r.task, l->req.task, sizeof(r.task));
	if (e->residency.n == RESIDENTS_MAX)
		evict(e, residency_oldest(&e->residency), "the table of residents is full");
	residency_add(&e->residency, &r); /* room was made above */
	l->kept = true;
	return engine_end(e, l, false, now, used_ms);
}

bool engine_resident_gone(struct engine *e, uint64_t id)
{
	struct resident *r = residency_find(&e->residency, id);
	if (r)
		residency_remove(&e->residency, r);
	return r != NULL;
}

void engine_abandon(struct engine *e, struct lease *l, int64_t now)
{
	if (l->state == LEASE_QUEUED) {
		finish(e, l, LEASE_CANCELLED, now);
		return;
	}
	kill_attached(e, l);
	finish(e, l, LEASE_RELEASED, now);
}

void engine_tick(struct engine *e, int64_t now)
{
	struct heap_node *n;
	while ((n = heap_top(&e->timers)) && n->key <= now) {
		heap_remove(&e->timers, n);
		if (n == &e->positions_timer) {
			announce_positions(e);
			continue;
		}
		struct lease *l = (struct lease *) ((char *) n - offsetof(struct lease, timer));
		if (l->state == LEASE_QUEUED) {
			snprintf(l->message, sizeof(l->message),
				 "No GPU was available after %g s in the queue",
				 (double) l->req.max_wait_ms / 1000.0);
			finish(e, l, LEASE_FAILED, now);
		} else if (!l->expiry_signalled) {
			l->expiry_signalled = true;
			snprintf(l->message, sizeof(l->message),
				 "the lease passed its %g s duration; attached processes are "
				 "killed in %g s",
				 (double) l->req.duration_ms / 1000.0,
				 (double) e->cfg.grace_ms / 1000.0);
			timer_set(e, l, l->deadline_ms + e->cfg.grace_ms);
			emit(e, l, ENGINE_EV_EXPIRED);
		} else {
			snprintf(l->message, sizeof(l->message),
				 "GPU task aborted: exceeded its %g s duration",
				 (double) l->req.duration_ms / 1000.0);
			kill_attached(e, l);
			finish(e, l, LEASE_EXPIRED, now);
		}
	}
}

int64_t engine_next_deadline(const struct engine *e)
{
	struct heap_node *n = heap_top(&e->timers);
	return n ? n->key : INT64_MAX;
}
