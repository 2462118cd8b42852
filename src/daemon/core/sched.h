/*
 * sched — the queue policy: which waiting request is served next.
 *
 * Pure: no I/O and no clock of its own (now is passed in). Each waiting
 * request gets one key when it arrives,
 *
 *	key = arrival + B * w,	w in [0, 1],
 *
 * and the lowest key is served first. B is the aging bound; w grows with a
 * lower tier, a longer requested duration and less quota left (see
 * docs/scheduling.md). Every request's priority thus rises with its wait at
 * the same rate, so the order never needs recomputing, and a later arrival can
 * overtake a request only if it came less than B after it: nobody waits more
 * than B behind later arrivals. FIFO is the same with w = 0.
 *
 * Requests are kept per app, one heap each; a global heap holds each app's
 * best request. An app at its concurrency limit leaves the global heap until
 * one of its leases ends, so its requests wait (reason "concurrency") without
 * blocking other apps. Picking the next request and updating are O(log n).
 */
#ifndef ZGPU_DAEMON_CORE_SCHED_H
#define ZGPU_DAEMON_CORE_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/heap.h"
#include "common/strmap.h"
#include "daemon/core/lease.h"

struct sched_params {
	const char *name;		       /* "priority" or "fifo" (static string) */
	int64_t aging_bound_ms;		       /* B */
	double tier_weight[LEASE__TIER_COUNT]; /* share of B by tier */
	double duration_weight;		       /* share of B for the longest duration allowed */
	double quota_weight;		       /* share of B for an exhausted quota */
	int64_t max_duration_ms;	       /* scales durations into [0, 1] */
	int app_limit;			       /* leases one app may hold at once; 0 = no limit */
	/* A request that waits at the head because its devices are not free lets
	 * others that fit go first, but only until it has waited this long; then
	 * devices are held back for it. 0: never (strict order). */
	int64_t backfill_ms;
};

/* zerogpu's policy: tiers, durations, quota, aging within 30 s, backfill for 5 s. */
void sched_params_priority(struct sched_params *p, int64_t max_duration_ms);
/* First come, first served, no backfill: the baseline. */
void sched_params_fifo(struct sched_params *p);

struct sched_app;

/* How many blocked requests one dispatch may look past. */
#define SCHED_MAX_SKIP 8

struct sched {
	struct sched_params p;
	size_t len;		    /* waiting requests */
	uint64_t seq;		    /* arrival counter: ties keep arrival order */
	struct heap apps;	    /* each eligible app's best request */
	struct strmap apps_by_name; /* app name -> sched_app; .len is how many */
	struct lease *skipped[SCHED_MAX_SKIP];
	int nskipped;
};

int sched_init(struct sched *s, const struct sched_params *p);
void sched_destroy(struct sched *s);

/* The key a request gets on arrival at now (exposed for tests and docs). */
int64_t sched_key(const struct sched_params *p, const struct lease_request *req, int64_t now);

/* Adds a waiting lease, keyed on its first arrival. 0 or -ENOMEM. */
int sched_push(struct sched *s, struct lease *l, int64_t now);
/* Withdraws a waiting lease (cancelled, failed). */
void sched_remove(struct sched *s, struct lease *l);
/* The request to serve next, or NULL when none waits or all wait on app limits. */
struct lease *sched_peek(struct sched *s);
/* Takes l, just granted, out of the queue and counts it as running for its app. */
void sched_take(struct sched *s, struct lease *l);
/* A lease that sched_take() counted stopped holding devices. */
void sched_on_end(struct sched *s, const struct lease *l);

/*
 * Sets a waiting lease aside so that sched_peek() shows who comes after it (to
 * let smaller requests use devices a blocked one cannot); sched_unskip_all()
 * puts every skipped lease back in its place. Neither can fail, and nothing
 * else may change the queue in between but sched_take().
 */
void sched_skip(struct sched *s, struct lease *l);
void sched_unskip_all(struct sched *s);
/* Why l waits: "concurrency" when its app is at its limit, else "node". */
const char *sched_reason(const struct sched *s, const struct lease *l);

/* The 1-based position of waiting lease l: O(n), one comparison per waiting request. */
int sched_position(const struct sched *s, const struct lease *l);

typedef void (*sched_walk_fn)(struct lease *l, int position, void *arg);
/* Calls fn on every waiting lease in service order, with its 1-based position.
 * O(n log n): for listings and position announcements, not the hot path. */
int sched_walk(struct sched *s, sched_walk_fn fn, void *arg);

#endif
