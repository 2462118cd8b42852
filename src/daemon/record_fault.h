/*
 * record_fault — when the ledger cannot be written (its disk full, read-only,
 * failing). Part of record.c's job: a write that fails puts the daemon in a
 * fault, with the backend's reason. While it lasts:
 * - no lease is granted: requests are refused up front with a 503
 *   (`ledger_unavailable`, and the reason), so nothing is acknowledged that
 *   is not recorded;
 * - the ends of leases granted before are kept in memory, in order, and
 *   written when the ledger takes writes again (a lease end changes the
 *   visitor's total in the same transaction, so the order matters);
 * - a probe retries every second: the kept ends first, then a write that
 *   changes nothing. The first success ends the fault and service resumes.
 * A daemon stopped (or killed) in a fault loses the kept ends' figures only:
 * their leases are settled as expired at the next start, as any lease a dead
 * daemon left.
 */
#ifndef ZGPU_DAEMON_RECORD_FAULT_H
#define ZGPU_DAEMON_RECORD_FAULT_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "daemon/core/lease.h"
#include "daemon/sys/ledger.h"

/* A lease end waiting for the ledger, with the visitor's total it carries. */
struct record_pending_end {
	struct record_pending_end *next;
	char id[LEASE_ID_LEN + 1];
	char state[16];
	int64_t ended_at, used_ms, charged_ms;
	bool has_visitor;
	char key[LEASE_TEXT_MAX + 9], tier[16];
	int64_t window_start, visitor_used_ms, limit_ms;
	bool overage;
};

struct record_fault {
	char reason[256];    /* the write that failed, as the backend says; "" when none */
	int64_t since_ms;    /* monotonic: when the fault began */
	struct event *probe; /* retries once a second while in a fault */
	struct record_pending_end *head, **tail;
	int pending;	   /* ends waiting */
	uint64_t episodes; /* faults since start */
};

struct zgpud;

/* Sets the module up on d->base. 0 or -ENOMEM. */
int record_fault_init(struct zgpud *d);
/* One last try to write the kept ends (at shutdown), then frees the module. */
void record_fault_release(struct zgpud *d);

/* True while the ledger cannot be written. */
static inline bool record_fault_active(const struct record_fault *f)
{
	return f->reason[0] != '\0';
}

/* A write failed: enters the fault (or keeps it) with d->ledger->error as the reason. */
void record_fault_enter(struct zgpud *d);

/* Keeps an end for later, in order. 0, or -ENOMEM (the end is then lost until the next
 * start settles it). */
int record_fault_keep_end(struct zgpud *d, const char *id, const char *state, int64_t ended_at,
			  int64_t used_ms, int64_t charged_ms, const struct ledger_visitor *v);

#endif
