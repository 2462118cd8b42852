/*
 * grant_hold — on a real GPU, a grant that evicted resident workers is told to its
 * client only once NVML shows their memory freed (the driver frees a killed process's
 * memory as it tears down), or after GRANT_HOLD_MAX_MS, logged. Part of the lease
 * service: leases.c notes the evictions and holds the grant; this file waits.
 */
#ifndef ZGPU_DAEMON_GRANT_HOLD_H
#define ZGPU_DAEMON_GRANT_HOLD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>

#include "daemon/core/devices.h"
#include "daemon/core/lease.h"

#define GRANT_HOLD_MAX_MS  2000 /* the longest a grant waits for evicted memory */
#define GRANT_HOLD_POLL_MS 10
#define GRANT_HOLD_MAX	   64 /* grants held at once; more are told at once */
#define GRANT_HOLD_WORKERS 8  /* evicted workers one grant waits for */

struct evicted_worker {
	char uuid[INV_UUID_MAX]; /* the device whose memory it held */
	pid_t pid;
};

struct held_grant {
	char lease[LEASE_ID_LEN + 1];
	int64_t since_ms;
	struct evicted_worker wait[GRANT_HOLD_WORKERS];
	int nwait;
};

struct grant_holds {
	/* Evictions since the last grant: the next GRANTED made room with them. */
	struct evicted_worker noted[GRANT_HOLD_WORKERS];
	int nnoted;
	struct held_grant held[GRANT_HOLD_MAX];
	int nheld;
	struct event *timer;
};

struct zgpud;

/* Sets up the poll timer on d->base. 0 or -ENOMEM. */
int grant_hold_init(struct zgpud *d);
void grant_hold_free(struct zgpud *d);

/* A resident process pid with memory on the real device uuid was just killed. */
void grant_hold_note(struct zgpud *d, const char *uuid, pid_t pid);
/* Forgets the evictions noted: no grant followed them (a full table of residents). */
void grant_hold_clear_notes(struct zgpud *d);
/* Holds l's GRANTED for its client when evictions were noted for it (then true);
 * leases_tell_client() gives it once they are freed. */
bool grant_hold(struct zgpud *d, const struct lease *l);
/* Whether l's grant is held (waiting for evicted memory). */
bool grant_held(const struct zgpud *d, const struct lease *l);
/* l ended: nothing more to tell of its grant. */
void grant_hold_drop(struct zgpud *d, const struct lease *l);

#endif
