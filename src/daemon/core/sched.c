#include "daemon/core/sched.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Heap keys pack the place in line (ms) above the arrival counter, so requests
 * with the same key in the same millisecond keep their arrival order.
 */
#define SEQ_BITS 20

struct sched_app {
	char name[LEASE_APP_MAX + 1];
	struct heap waiting;	  /* this app's requests, by key */
	int running;		  /* its leases holding devices */
	struct heap_node node;	  /* in sched.apps while it has a request it may be served */
	struct strmap_node hnode; /* in sched.apps_by_name */
};

void sched_params_priority(struct sched_params *p, int64_t max_duration_ms)
{
	/* Shares of the aging bound. The tier bands do not overlap: pro in [0, 0.3],
	 * free in [0.35, 0.65], anonymous in [0.7, 1] once duration and quota are added. */
	*p = (struct sched_params){
		.name = "priority",
		.aging_bound_ms = 30000,
		.tier_weight = {[LEASE_TIER_ENTERPRISE] = 0,
				[LEASE_TIER_PRO] = 0,
				[LEASE_TIER_FREE] = 0.35,
				[LEASE_TIER_ANONYMOUS] = 0.7},
		.duration_weight = 0.2,
		.quota_weight = 0.1,
		.max_duration_ms = max_duration_ms,
		.app_limit = 0,
		.backfill_ms = 5000,
	};
}

void sched_params_fifo(struct sched_params *p)
{
	*p = (struct sched_params){.name = "fifo"}; /* all weights 0: the key is the arrival */
}

static double clamp01(double x)
{
	return x < 0 ? 0 : x > 1 ? 1 : x;
}

int64_t sched_key(const struct sched_params *p, const struct lease_request *req, int64_t now)
{
	double w = p->tier_weight[(unsigned) req->tier < LEASE__TIER_COUNT ? req->tier
									   : LEASE_TIER_ANONYMOUS];
	w += p->duration_weight * clamp01((double) req->duration_ms /
					  (double) (p->max_duration_ms ? p->max_duration_ms : 1));
	w += p->quota_weight * (1 - clamp01(req->quota_left));
	return now + llround(clamp01(w) * (double) p->aging_bound_ms);
}

/* ------------------------------------------------------------------------
 * Apps: name -> sched_app.
 * ------------------------------------------------------------------------ */

static struct sched_app *app_find(const struct sched *s, const char *name)
{
	struct strmap_node *n = strmap_find(&s->apps_by_name, name);
	return n ? strmap_item(n, struct sched_app, hnode) : NULL;
}

static struct sched_app *app_get(struct sched *s, const char *name)
{
	struct sched_app *a = app_find(s, name);
	if (a)
		return a;
	/* Room in the apps heap for every app, so refreshing one cannot fail. */
	if (strmap_reserve(&s->apps_by_name) < 0 ||
	    heap_reserve(&s->apps, s->apps_by_name.len + 1) < 0 || !(a = calloc(1, sizeof(*a))))
		return NULL;
	snprintf(a->name, sizeof(a->name), "%s", name);
	heap_init(&a->waiting);
	a->hnode.key = a->name;
	(void) strmap_insert(&s->apps_by_name, &a->hnode); /* reserved above */
	return a;
}

/* Forgets an app with nothing waiting and nothing running: names come from
 * clients, and the table must not grow with every name ever seen. */
static void app_drop_if_idle(struct sched *s, struct sched_app *a)
{
	if (a->waiting.len || a->running)
		return;
	strmap_remove(&s->apps_by_name, &a->hnode);
	heap_remove(&s->apps, &a->node);
	heap_release(&a->waiting);
	free(a);
}

/* Puts the app in the global heap at its best request's key, if it may be served. */
static void app_refresh(struct sched *s, struct sched_app *a)
{
	heap_remove(&s->apps, &a->node);
	bool under_limit = s->p.app_limit == 0 || a->running < s->p.app_limit;
	if (a->waiting.len && under_limit) {
		int r = heap_push(&s->apps, &a->node, heap_top(&a->waiting)->key);
		(void) r; /* reserved in app_get */
	}
}

static struct lease *lease_of_qnode(struct heap_node *n)
{
	return (struct lease *) ((char *) n - offsetof(struct lease, qnode));
}

/* ------------------------------------------------------------------------
 * The policy.
 * ------------------------------------------------------------------------ */

int sched_init(struct sched *s, const struct sched_params *p)
{
	memset(s, 0, sizeof(*s));
	s->p = *p;
	heap_init(&s->apps);
	return strmap_init(&s->apps_by_name);
}

static void free_app(struct strmap_node *n, void *arg)
{
	(void) arg;
	struct sched_app *a = strmap_item(n, struct sched_app, hnode);
	heap_release(&a->waiting);
	free(a);
}

void sched_destroy(struct sched *s)
{
	strmap_foreach(&s->apps_by_name, free_app, NULL);
	strmap_release(&s->apps_by_name);
	heap_release(&s->apps);
	s->len = 0;
}

int sched_push(struct sched *s, struct lease *l, int64_t now)
{
	struct sched_app *a = app_get(s, l->req.app);
	if (!a)
		return -ENOMEM;
	if (l->sched_key == 0) {
		int64_t place = sched_key(&s->p, &l->req, now);
		l->sched_key = (place << SEQ_BITS) | (int64_t) (s->seq++ & ((1u << SEQ_BITS) - 1));
	}
	if (heap_push(&a->waiting, &l->qnode, l->sched_key) < 0) {
		app_drop_if_idle(s, a);
		return -ENOMEM;
	}
	s->len++;
	app_refresh(s, a);
	return 0;
}

static struct sched_app *unqueue(struct sched *s, struct lease *l)
{
	struct sched_app *a = app_find(s, l->req.app);
	if (!a || !heap_node_queued(&l->qnode))
		return NULL;
	heap_remove(&a->waiting, &l->qnode);
	s->len--;
	return a;
}

void sched_remove(struct sched *s, struct lease *l)
{
	struct sched_app *a = unqueue(s, l);
	if (!a)
		return;
	app_refresh(s, a);
	app_drop_if_idle(s, a);
}

void sched_take(struct sched *s, struct lease *l)
{
	struct sched_app *a = unqueue(s, l);
	if (!a)
		return;
	a->running++;
	app_refresh(s, a);
}

void sched_skip(struct sched *s, struct lease *l)
{
	struct sched_app *a = s->nskipped < SCHED_MAX_SKIP ? unqueue(s, l) : NULL;
	if (!a)
		return;
	s->skipped[s->nskipped++] = l;
	app_refresh(s, a);
}

void sched_unskip_all(struct sched *s)
{
	while (s->nskipped) {
		struct lease *l = s->skipped[--s->nskipped];
		struct sched_app *a = app_find(s, l->req.app);
		/* The heap had room for it a moment ago, and its app cannot have been
		 * dropped: only sched_take() ran since, and it drops nothing. */
		int r = heap_push(&a->waiting, &l->qnode, l->sched_key);
		(void) r;
		s->len++;
		app_refresh(s, a);
	}
}

void sched_on_end(struct sched *s, const struct lease *l)
{
	struct sched_app *a = app_find(s, l->req.app);
	if (!a || a->running == 0)
		return;
	a->running--;
	app_refresh(s, a);
	app_drop_if_idle(s, a);
}

struct lease *sched_peek(struct sched *s)
{
	struct heap_node *an = heap_top(&s->apps);
	if (!an)
		return NULL;
	struct sched_app *a = (struct sched_app *) ((char *) an - offsetof(struct sched_app, node));
	return lease_of_qnode(heap_top(&a->waiting));
}

const char *sched_reason(const struct sched *s, const struct lease *l)
{
	const struct sched_app *a = app_find(s, l->req.app);
	if (a && s->p.app_limit && a->running >= s->p.app_limit)
		return "concurrency";
	return "node";
}

struct count_ahead {
	int64_t key;
	int ahead;
};

static void count_app(struct strmap_node *n, void *arg)
{
	struct count_ahead *c = arg;
	struct sched_app *a = strmap_item(n, struct sched_app, hnode);
	for (size_t k = 0; k < a->waiting.len; k++)
		c->ahead += a->waiting.items[k]->key < c->key;
}

int sched_position(const struct sched *s, const struct lease *l)
{
	struct count_ahead c = {l->sched_key, 0};
	strmap_foreach(&s->apps_by_name, count_app, &c);
	for (int i = 0; i < s->nskipped; i++)
		c.ahead += s->skipped[i]->sched_key < l->sched_key;
	return c.ahead + 1;
}

static int cmp_key(const void *x, const void *y)
{
	int64_t a = (*(struct lease *const *) x)->sched_key;
	int64_t b = (*(struct lease *const *) y)->sched_key;
	return (a > b) - (a < b);
}

struct gather {
	struct lease **all;
	size_t n;
};

static void gather_app(struct strmap_node *n, void *arg)
{
	struct gather *g = arg;
	struct sched_app *a = strmap_item(n, struct sched_app, hnode);
	for (size_t k = 0; k < a->waiting.len; k++)
		g->all[g->n++] = lease_of_qnode(a->waiting.items[k]);
}

int sched_walk(struct sched *s, sched_walk_fn fn, void *arg)
{
	if (!s->len)
		return 0;
	struct lease **all = malloc(s->len * sizeof(*all));
	if (!all)
		return -ENOMEM;
	struct gather g = {all, 0};
	strmap_foreach(&s->apps_by_name, gather_app, &g);
	size_t n = g.n;
	qsort(all, n, sizeof(*all), cmp_key);
	for (size_t i = 0; i < n; i++)
		fn(all[i], (int) i + 1, arg);
	free(all);
	return 0;
}
