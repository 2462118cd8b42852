/*
 * residency — what stays in a device's memory between leases.
 *
 * A resident is a process that keeps memory on devices without holding a lease:
 * a worker whose release kept it (its CUDA context and its app's weights stay,
 * so its app's next call there copies nothing). This file holds the table and
 * its pure questions: how much memory the residents of a device take, which
 * resident a new lease of its app can take over, and which residents to evict,
 * least recently used first, so that a lease fits. engine.c decides when.
 */
#ifndef ZGPU_DAEMON_CORE_RESIDENCY_H
#define ZGPU_DAEMON_CORE_RESIDENCY_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/core/lease.h"

/* Residents the daemon keeps at most; past it, the least recently used goes. */
#define RESIDENTS_MAX 256

struct resident {
	uint64_t id;	  /* unique for the engine's life, never 0 */
	uint64_t devices; /* bit d: it has memory on inventory device d */
	uint64_t bytes;	  /* on each of its devices */
	char app[LEASE_APP_MAX + 1];
	char task[LEASE_TEXT_MAX + 1];
	int64_t since_ms;	   /* resident since (monotonic ms) */
	int64_t last_used_ms;	   /* its last lease ended then */
	struct lease_process proc; /* the process; stored, never touched here */
};

struct residency {
	struct resident r[RESIDENTS_MAX];
	int n;
	uint64_t last_id;
};

void residency_init(struct residency *t);

/* Adds a resident (id filled in) and returns it, or NULL when the table is full. */
struct resident *residency_add(struct residency *t, const struct resident *r);
/* Removes r (a pointer into t); the table's last entry moves into its place. */
void residency_remove(struct residency *t, const struct resident *r);
struct resident *residency_find(struct residency *t, uint64_t id);
/* The least recently used resident, or NULL when there are none. */
struct resident *residency_oldest(struct residency *t);

/* Bytes the residents of inventory device d hold. */
uint64_t residency_bytes_on(const struct residency *t, int device);

/*
 * The resident that lease request rq on exactly `devices`, made by owner, can take
 * over (warm): one of the same app whose devices are all among the lease's, attached
 * on the word of the same principal (lease_owner_same: nobody gets somebody else's
 * process), of the same task when rq is task_bound; the same task first, then the
 * most recently used. NULL when none is.
 */
const struct resident *residency_warm(const struct residency *t, uint64_t devices,
				      const struct lease_request *rq,
				      const struct lease_owner *owner);

/*
 * Which residents on device d to evict so that `need` more bytes are free there:
 * other apps' first, then app's own, least recently used first within each; never
 * `spare` (the resident the lease takes over). Fills out (at most max) and
 * returns how many; *freed gets the bytes they free on d. When even all of them
 * would not free enough, returns them all and *freed says how much that is.
 */
int residency_victims(const struct residency *t, int device, const char *app, uint64_t need,
		      const struct resident *spare, const struct resident **out, int max,
		      uint64_t *freed);

#endif
