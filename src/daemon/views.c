#include "daemon/views.h"

#include <stdlib.h>
#include <string.h>

#include "daemon/core/sched.h"

/* The workers resident on inventory device d that the caller may see (as leases). */
static json_t *view_residents(const struct view *v, int device)
{
	const struct residency *t = &v->d->engine.residency;
	json_t *a = json_array();
	for (int i = 0; i < t->n; i++) {
		const struct resident *r = &t->r[i];
		if (!(r->devices & (UINT64_C(1) << device)) ||
		    (caller_app_scoped(v->who) && strcmp(r->app, v->who->app)))
			continue;
		json_array_append_new(
			a, json_pack("{s:s, s:s, s:i, s:I, s:I, s:I}", "app", r->app, "task",
				     r->task, "pid", (int) r->proc.pid, "bytes",
				     (json_int_t) r->bytes, "since_ms",
				     (json_int_t) zgpud_wall_ms(v->d, r->since_ms), "last_used_ms",
				     (json_int_t) zgpud_wall_ms(v->d, r->last_used_ms)));
	}
	return a;
}

static json_t *view_device(const struct view *v, const struct device *dev)
{
	const struct zgpud *d = v->d;
	const struct lease *holders[ENGINE_MAX_SLOTS];
	int slots, held;
	int n = engine_device_usage(&d->engine, dev->index, &slots, &held, holders,
				    ENGINE_MAX_SLOTS);
	json_t *ids = json_array();
	for (int i = 0; i < n; i++)
		if (leases_may_see(v->who, holders[i]))
			json_array_append_new(ids, json_string(holders[i]->id));
	const char *state = held == 0 ? "free" : held < slots ? "partial" : "busy";
	json_t *o = json_pack("{s:i, s:s, s:s, s:I, s:i, s:b, s:s, s:i, s:i, s:o}", "index",
			      dev->index, "uuid", dev->uuid, "name", dev->name, "memory_bytes",
			      (json_int_t) dev->memory_bytes, "gpu_index", dev->gpu_index,
			      "simulated", dev->simulated, "state", state, "slots", slots,
			      "slots_busy", held, "leases", ids);
	json_object_set_new(o, "memory_free_bytes",
			    json_integer((json_int_t) engine_memory_free(&d->engine, dev->index)));
	json_object_set_new(o, "residents", view_residents(v, dev->index));
	if (dev->mig_index >= 0)
		json_object_set_new(o, "mig_index", json_integer(dev->mig_index));
	if (dev->compute_capability[0])
		json_object_set_new(o, "compute_capability", json_string(dev->compute_capability));
	return o;
}

json_t *view_devices(const struct view *v)
{
	json_t *a = json_array();
	for (size_t i = 0; i < v->d->inv.count; i++)
		json_array_append_new(a, view_device(v, &v->d->inv.devices[i]));
	return a;
}

json_t *view_lease_devices(const struct zgpud *d, const struct lease *l)
{
	struct engine_device held[INV_MAX_DEVICES];
	int n = engine_lease_devices(&d->engine, l, held, INV_MAX_DEVICES);
	json_t *a = json_array();
	for (int i = 0; i < n; i++) {
		const struct device *dev = &d->inv.devices[held[i].device];
		json_array_append_new(
			a, json_pack("{s:i, s:s, s:I, s:I}", "index", dev->index, "uuid", dev->uuid,
				     "memory_bytes", (json_int_t) dev->memory_bytes,
				     "memory_limit_bytes", (json_int_t) held[i].memory_limit));
	}
	return a;
}

void view_add_slots(json_t *pairs, int gpu, unsigned slots)
{
	for (int s = 0; s < ENGINE_MAX_SLOTS; s++)
		if (slots & (1u << s))
			json_array_append_new(pairs, json_pack("[i, i]", gpu, s));
}

json_t *view_lease_slots(const struct lease *l)
{
	json_t *a = json_array();
	for (int i = 0; i < l->ngrants; i++)
		view_add_slots(a, l->grants[i].gpu, l->grants[i].slots);
	return a;
}

json_t *view_lease(const struct zgpud *d, const struct lease *l, int64_t now)
{
	json_t *o = json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:f, s:f, s:I, s:o}", "id", l->id, "state",
		lease_state_name(l->state), "app", l->req.app, "task", l->req.task, "visitor",
		l->req.visitor, "size", lease_size_name(l->req.size), "gpus", l->req.gpus,
		"duration_s", (double) l->req.duration_ms / 1000.0, "max_wait_s",
		(double) l->req.max_wait_ms / 1000.0, "created_ms",
		(json_int_t) zgpud_wall_ms(d, l->created_ms), "devices", view_lease_devices(d, l));
	if (l->state == LEASE_QUEUED) {
		json_object_set_new(o, "waited_s",
				    json_real((double) (now - l->created_ms) / 1000.0));
	} else {
		json_object_set_new(o, "granted_ms", json_integer(zgpud_wall_ms(d, l->granted_ms)));
		json_object_set_new(o, "deadline_ms",
				    json_integer(zgpud_wall_ms(d, l->deadline_ms)));
		json_object_set_new(o, "remaining_s",
				    json_real((double) (l->deadline_ms - now) / 1000.0));
	}
	json_object_set_new(o, "tier", json_string(lease_tier_name(l->req.tier)));
	json_object_set_new(o, "slots", view_lease_slots(l));
	if (l->proc.pid > 0)
		json_object_set_new(o, "pid", json_integer(l->proc.pid));
	if (l->req.memory_bytes)
		json_object_set_new(o, "memory_bytes",
				    json_integer((json_int_t) l->req.memory_bytes));
	if (l->state != LEASE_QUEUED)
		json_object_set_new(o, "warm", json_boolean(l->warm));
	const struct lease_client *cl = l->stream;
	if (cl && cl->cgroup)
		json_object_set_new(o, "cgroup", json_string(cl->cgroup));
	if (l->owner.via_token)
		json_object_set_new(o, "owner", json_string("token"));
	else if (l->owner.uid_known)
		json_object_set_new(o, "owner_uid", json_integer(l->owner.uid));
	return o;
}

static int lease_cmp_created(const void *a, const void *b)
{
	const struct lease *x = *(const struct lease *const *) a;
	const struct lease *y = *(const struct lease *const *) b;
	return (x->granted_ms > y->granted_ms) - (x->granted_ms < y->granted_ms);
}

struct collect {
	const struct view *v;
	const struct lease **items;
	size_t n;
};

static void collect_held(struct lease *l, void *arg)
{
	struct collect *c = arg;
	if (l->state != LEASE_QUEUED && leases_may_see(c->v->who, l))
		c->items[c->n++] = l;
}

/* Held leases the caller may see, oldest grant first. */
json_t *view_held_leases(const struct view *v)
{
	json_t *a = json_array();
	struct collect c = {v, calloc(v->d->engine.leases.len + 1, sizeof(*c.items)), 0};
	if (!c.items)
		return a;
	engine_foreach(&v->d->engine, collect_held, &c);
	qsort(c.items, c.n, sizeof(*c.items), lease_cmp_created);
	for (size_t i = 0; i < c.n; i++)
		json_array_append_new(a, view_lease(v->d, c.items[i], v->now));
	free(c.items);
	return a;
}

struct queue_walk {
	const struct view *v;
	json_t *array;
};

static void queue_item(struct lease *l, int position, void *arg)
{
	struct queue_walk *w = arg;
	if (!leases_may_see(w->v->who, l))
		return;
	json_t *o = view_lease(w->v->d, l, w->v->now);
	json_object_set_new(o, "position", json_integer(position));
	json_object_set_new(o, "reason", json_string(sched_reason(&w->v->d->engine.sched, l)));
	json_array_append_new(w->array, o);
}

/* The queue in order; an app token sees its own requests, at their true positions. */
json_t *view_queue(const struct view *v)
{
	struct queue_walk w = {v, json_array()};
	(void) sched_walk(&v->d->engine.sched, queue_item, &w);
	return w.array;
}
