#include "daemon/engine.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * The lease table: id -> lease, chained buckets, grown at load factor 1.
 * ------------------------------------------------------------------------ */

static size_t id_hash(const char *id, size_t cap)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *id; id++)
		h = (h ^ (unsigned char) *id) * 0x100000001b3ULL;
	return (size_t) h & (cap - 1);
}

static int table_grow(struct engine *e)
{
	size_t cap = e->table_cap ? e->table_cap * 2 : 64;
	struct lease **table = calloc(cap, sizeof(*table));
	if (!table)
		return -ENOMEM;
	for (size_t i = 0; i < e->table_cap; i++) {
		for (struct lease *l = e->table[i], *next; l; l = next) {
			next = l->hash_next;
			size_t b = id_hash(l->id, cap);
			l->hash_next = table[b];
			table[b] = l;
		}
	}
	free(e->table);
	e->table = table;
	e->table_cap = cap;
	return 0;
}

static void table_insert(struct engine *e, struct lease *l)
{
	size_t b = id_hash(l->id, e->table_cap);
	l->hash_next = e->table[b];
	e->table[b] = l;
	e->nleases++;
}

static void table_remove(struct engine *e, struct lease *l)
{
	struct lease **p = &e->table[id_hash(l->id, e->table_cap)];
	while (*p && *p != l)
		p = &(*p)->hash_next;
	if (*p) {
		*p = l->hash_next;
		e->nleases--;
	}
}

struct lease *engine_find(const struct engine *e, const char *id)
{
	if (!e->table_cap)
		return NULL;
	for (struct lease *l = e->table[id_hash(id, e->table_cap)]; l; l = l->hash_next)
		if (strcmp(l->id, id) == 0)
			return l;
	return NULL;
}

void engine_foreach(const struct engine *e, void (*fn)(struct lease *l, void *arg), void *arg)
{
	for (size_t i = 0; i < e->table_cap; i++)
		for (struct lease *l = e->table[i], *next; l; l = next) {
			next = l->hash_next;
			fn(l, arg);
		}
}

/* ------------------------------------------------------------------------
 * Devices, timers, events.
 * ------------------------------------------------------------------------ */

static size_t free_devices(const struct engine *e)
{
	return e->inv->count - e->busy;
}

/* Takes the lowest-numbered free devices for l. The caller checked they suffice. */
static void devices_take(struct engine *e, struct lease *l)
{
	l->ndevices = 0;
	for (size_t d = 0; d < e->inv->count && l->ndevices < l->req.gpus; d++) {
		if (e->holder[d])
			continue;
		e->holder[d] = l;
		l->devices[l->ndevices++] = (int) d;
	}
	assert(l->ndevices == l->req.gpus);
	e->busy += (size_t) l->ndevices;
}

static void devices_give_back(struct engine *e, struct lease *l)
{
	for (int i = 0; i < l->ndevices; i++) {
		int d = l->devices[i];
		/* A device is never held by two leases: catch any slip here. */
		assert(e->holder[d] == l);
		e->holder[d] = NULL;
	}
	e->busy -= (size_t) l->ndevices;
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
	if (l->pid <= 0)
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

/* Moves l to a terminal state, frees what it holds, tells the client, frees l. */
static void finish(struct engine *e, struct lease *l, enum lease_state to, int64_t now)
{
	enum lease_state from = l->state;
	int r = lease_transition(l, to);
	assert(r == 0);
	(void) r;
	heap_remove(&e->timers, &l->timer);
	if (from == LEASE_QUEUED)
		e->sched.ops->remove(&e->sched, l);
	else
		devices_give_back(e, l);
	l->ended_ms = now;
	count_outcome(e, to);
	emit(e, l, ENGINE_EV_ENDED);
	table_remove(e, l);
	free(l);
	/* Freed devices or a shorter queue: serve who waits, tell who moved up. */
	dispatch(e, now, from == LEASE_QUEUED);
}

static void grant(struct engine *e, struct lease *l, int64_t now)
{
	int r = lease_transition(l, LEASE_GRANTED);
	assert(r == 0);
	(void) r;
	devices_take(e, l);
	l->granted_ms = now;
	l->deadline_ms = now + l->req.duration_ms;
	e->stats.granted++;
	e->stats.grant_wait_ms_total += (uint64_t) (now - l->created_ms);
	timer_set(e, l, l->deadline_ms);
	emit(e, l, ENGINE_EV_GRANTED);
}

struct position_walk {
	struct engine *e;
	struct lease *only; /* announce to this lease alone; NULL: to all who moved */
};

static void position_update(struct lease *l, int position, void *arg)
{
	struct position_walk *w = arg;
	if (l->position_sent == position || (w->only && l != w->only))
		return;
	l->position_sent = position;
	emit(w->e, l, ENGINE_EV_QUEUED);
}

static void announce_positions(struct engine *e, struct lease *only, int64_t now)
{
	struct position_walk w = {e, only};
	e->sched.ops->walk(&e->sched, now, position_update, &w);
}

/* Grants waiting requests in the policy's order for as long as they fit; when
 * the queue moved, schedules telling the waiters their new positions. */
static void dispatch(struct engine *e, int64_t now, bool queue_shrank)
{
	bool changed = queue_shrank;
	for (;;) {
		struct lease *l = e->sched.ops->peek(&e->sched, now);
		if (!l || (size_t) l->req.gpus > free_devices(e))
			break;
		e->sched.ops->remove(&e->sched, l);
		grant(e, l, now);
		changed = true;
	}
	if (changed && e->sched.len && !heap_node_queued(&e->positions_timer)) {
		/* Reserved at submit, like the leases' timers: cannot fail. */
		int r = heap_push(&e->timers, &e->positions_timer,
				  now + ENGINE_POSITION_INTERVAL_MS);
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
	sched_fifo_init(&e->sched);
	heap_init(&e->timers);
	return table_grow(e);
}

struct shutdown_walk {
	struct engine *e;
	int64_t now;
};

static void shutdown_one(struct lease *l, void *arg)
{
	struct shutdown_walk *w = arg;
	snprintf(l->message, sizeof(l->message), "zerogpud is shutting down");
	kill_attached(w->e, l);
	finish(w->e, l, LEASE_FAILED, w->now);
}

void engine_shutdown(struct engine *e, int64_t now)
{
	/* Empty the queue first so that ending a held lease grants nothing new. */
	while (e->sched.len) {
		struct lease *l = e->sched.ops->peek(&e->sched, now);
		snprintf(l->message, sizeof(l->message), "zerogpud is shutting down");
		finish(e, l, LEASE_CANCELLED, now);
	}
	struct shutdown_walk w = {e, now};
	engine_foreach(e, shutdown_one, &w);
	e->sched.ops->destroy(&e->sched);
	heap_release(&e->timers);
	free(e->table);
	e->table = NULL;
	e->table_cap = 0;
}

int engine_submit(struct engine *e, const struct lease_request *req,
		  const struct lease_owner *owner, void *stream, int64_t now)
{
	if (req->gpus < 1 || (size_t) req->gpus > e->inv->count)
		return -EINVAL;
	/* Room for every lease's timer and the positions timer, so pushes cannot fail. */
	if ((e->nleases + 1 > e->table_cap && table_grow(e) < 0) ||
	    heap_reserve(&e->timers, e->nleases + 2) < 0)
		return -ENOMEM;
	struct lease *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;

	e->hooks.make_id(e->hooks.ctx, l->id);
	l->req = *req;
	l->owner = *owner;
	l->state = LEASE_QUEUED;
	l->created_ms = now;
	l->stream = stream;
	if (e->sched.ops->push(&e->sched, l, now) < 0) {
		free(l);
		return -ENOMEM;
	}
	table_insert(e, l);
	e->stats.submitted++;

	dispatch(e, now, false);
	if (l->state != LEASE_QUEUED)
		return 0;
	if (req->max_wait_ms <= 0) {
		snprintf(l->message, sizeof(l->message),
			 "No GPU was available: all %zu devices are busy and max_wait_s is 0",
			 e->inv->count);
		finish(e, l, LEASE_FAILED, now);
		return 0;
	}
	timer_set(e, l, now + req->max_wait_ms);
	announce_positions(e, l, now);
	return 0;
}

int engine_attach(struct engine *e, struct lease *l, pid_t pid, pid_t pgid, int64_t now)
{
	(void) e;
	if (l->state == LEASE_QUEUED)
		return -EBUSY;
	if (l->state == LEASE_ATTACHED)
		return l->pid == pid ? 0 : -EALREADY;
	if (l->expiry_signalled || now >= l->deadline_ms)
		return -ETIME;
	if (lease_transition(l, LEASE_ATTACHED) < 0)
		return -EINVAL;
	l->pid = pid;
	l->pgid = pgid;
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
			announce_positions(e, NULL, now);
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
