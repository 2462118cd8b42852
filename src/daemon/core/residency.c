#include "daemon/core/residency.h"

#include <stddef.h>
#include <string.h>

void residency_init(struct residency *t)
{
	t->n = 0;
	t->last_id = 0;
}

struct resident *residency_add(struct residency *t, const struct resident *r)
{
	if (t->n == RESIDENTS_MAX)
		return NULL;
	struct resident *e = &t->r[t->n++];
	*e = *r;
	e->id = ++t->last_id;
	return e;
}

void residency_remove(struct residency *t, const struct resident *r)
{
	t->r[r - t->r] = t->r[--t->n];
}

struct resident *residency_find(struct residency *t, uint64_t id)
{
	for (int i = 0; i < t->n; i++)
		if (t->r[i].id == id)
			return &t->r[i];
	return NULL;
}

struct resident *residency_oldest(struct residency *t)
{
	struct resident *best = NULL;
	for (int i = 0; i < t->n; i++)
		if (!best || t->r[i].last_used_ms < best->last_used_ms)
			best = &t->r[i];
	return best;
}

uint64_t residency_bytes_on(const struct residency *t, int device)
{
	uint64_t sum = 0;
	for (int i = 0; i < t->n; i++)
		if (t->r[i].devices & (UINT64_C(1) << device))
			sum += t->r[i].bytes;
	return sum;
}

const struct resident *residency_warm(const struct residency *t, uint64_t devices,
				      const struct lease_request *rq,
				      const struct lease_owner *owner)
{
	const struct resident *best = NULL;
	bool best_same = false;
	for (int i = 0; i < t->n; i++) {
		const struct resident *r = &t->r[i];
		bool same = strcmp(r->task, rq->task) == 0;
		if ((r->devices & ~devices) || strcmp(r->app, rq->app) ||
		    (rq->task_bound && !same) || !lease_owner_same(&r->proc.attached_by, owner))
			continue;
		if (!best || (same && !best_same) ||
		    (same == best_same && r->last_used_ms > best->last_used_ms)) {
			best = r;
			best_same = same;
		}
	}
	return best;
}

/* Whether a comes before b as a victim for app: other apps first, then LRU. */
static bool evict_before(const struct resident *a, const struct resident *b, const char *app)
{
	bool a_other = strcmp(a->app, app) != 0, b_other = strcmp(b->app, app) != 0;
	if (a_other != b_other)
		return a_other;
	if (a->last_used_ms != b->last_used_ms)
		return a->last_used_ms < b->last_used_ms;
	return a->id < b->id;
}

int residency_victims(const struct residency *t, int device, const char *app, uint64_t need,
		      const struct resident *spare, const struct resident **out, int max,
		      uint64_t *freed)
{
	int n = 0;
	*freed = 0;
	while (*freed < need && n < max) {
		const struct resident *next = NULL;
		for (int i = 0; i < t->n; i++) {
			const struct resident *r = &t->r[i];
			if (r == spare || !(r->devices & (UINT64_C(1) << device)))
				continue;
			bool taken = false;
			for (int k = 0; k < n && !taken; k++)
				taken = out[k] == r;
			if (!taken && (!next || evict_before(r, next, app)))
				next = r;
		}
		if (!next)
			break;
		out[n++] = next;
		*freed += next->bytes;
	}
	return n;
}
