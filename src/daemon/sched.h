/*
 * sched — the queue policy: which waiting request is served next.
 *
 * Pure: no I/O and no clock of its own (now is passed in). The engine asks the
 * policy for the request to serve next and grants it when its devices are
 * free; if they are not, nothing behind it is served either, so a request
 * needing many devices is never overtaken forever. Policies are swappable
 * (the simulator compares them); FIFO is the first.
 */
#ifndef ZGPU_DAEMON_SCHED_H
#define ZGPU_DAEMON_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/lease.h"

struct sched;

typedef void (*sched_walk_fn)(struct lease *l, int position, void *arg);

struct sched_ops {
	const char *name;
	/* Adds a waiting lease. Returns 0 or -ENOMEM. */
	int (*push)(struct sched *s, struct lease *l, int64_t now);
	/* Removes a lease that push added. */
	void (*remove)(struct sched *s, struct lease *l);
	/* The lease to serve next, or NULL when none waits. */
	struct lease *(*peek)(struct sched *s, int64_t now);
	/* Calls fn on every waiting lease in service order, with its 1-based position. */
	void (*walk)(struct sched *s, int64_t now, sched_walk_fn fn, void *arg);
	void (*destroy)(struct sched *s);
};

struct sched {
	const struct sched_ops *ops;
	size_t len;
	struct lease *first, *last; /* FIFO's list; other policies may keep their own */
};

/* Sets s up with the FIFO policy: first come, first served. */
void sched_fifo_init(struct sched *s);

#endif
