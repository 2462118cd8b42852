/*
 * lease — one request for devices and its life:
 *
 *	queued -> granted -> attached -> released | expired | failed
 *	queued -> failed (no GPU in time) | cancelled (client gone)
 *	granted -> released | expired | failed
 *
 * This file holds the data and the transition rules; engine.c drives them.
 */
#ifndef ZGPU_DAEMON_CORE_LEASE_H
#define ZGPU_DAEMON_CORE_LEASE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/heap.h"
#include "common/strmap.h"
#include "daemon/core/devices.h"

enum lease_state {
	LEASE_QUEUED,
	LEASE_GRANTED,
	LEASE_ATTACHED,
	LEASE_RELEASED,
	LEASE_EXPIRED,
	LEASE_FAILED,
	LEASE_CANCELLED,
	LEASE__STATE_COUNT
};

enum lease_size { LEASE_SIZE_LARGE, LEASE_SIZE_XLARGE };

/* Visitor tiers, best served first. */
enum lease_tier {
	LEASE_TIER_ENTERPRISE,
	LEASE_TIER_PRO,
	LEASE_TIER_FREE,
	LEASE_TIER_ANONYMOUS,
	LEASE__TIER_COUNT
};

#define LEASE_APP_MAX	  64
#define LEASE_TEXT_MAX	  256
#define LEASE_ID_LEN	  32 /* hex digits: 128 random bits */
#define LEASE_MESSAGE_MAX 200

/* What a client asked for, validated (request.c). */
struct lease_request {
	char app[LEASE_APP_MAX + 1];
	char task[LEASE_TEXT_MAX + 1];
	char visitor[LEASE_TEXT_MAX + 1];
	enum lease_size size;
	int gpus;
	int64_t duration_ms;
	int64_t max_wait_ms;
	enum lease_tier tier;		    /* from the visitor's identity; anonymous without one */
	double quota_left;		    /* share of the visitor's daily quota left, 0..1 */
	char quota_key[LEASE_TEXT_MAX + 9]; /* the visitor charged; "" when not metered */
	int64_t reserved_ms;		    /* quota held for this request until it settles */
	uint64_t memory_bytes; /* device memory the call needs on each GPU; 0: all it gets */
	/* Only a resident of the same task serves it warm (the `spaces` client keeps one
	 * worker per function); else any of its app's (the Python package keeps one per
	 * device, whatever the function). */
	bool task_bound;
};

/*
 * Who made a lease, or vouched for a process attached to one: a local user
 * (the Unix socket's SO_PEERCRED, or a loopback TCP client the kernel vouched
 * for), the holder of an app's token, or the admin token (TCP).
 */
struct lease_owner {
	bool via_token;		     /* TCP: the call came with a token */
	bool admin;		     /* ... the admin token */
	char app[LEASE_APP_MAX + 1]; /* ... an app token: its app */
	bool uid_known;		     /* the local user is known */
	uid_t uid;
};

/*
 * The process attached to a lease (or an idle worker): its pid, its process
 * group, its start time and a pidfd that names exactly it (proc.h), and who
 * attached it. The engine only stores it; the daemon opens, signals and
 * closes the pidfd.
 */
struct lease_process {
	pid_t pid, pgid;		/* 0 when none */
	uint64_t start;			/* start time (clock ticks after boot), 0 unknown */
	int pidfd;			/* -1 when none */
	struct lease_owner attached_by; /* who vouched for it */
};

#define LEASE_PROCESS_NONE ((struct lease_process){.pidfd = -1})

struct lease {
	char id[LEASE_ID_LEN + 1];
	struct lease_request req;
	struct lease_owner owner;
	enum lease_state state;

	/* Monotonic milliseconds. */
	int64_t created_ms, granted_ms, deadline_ms, ended_ms;
	bool expiry_signalled; /* the deadline passed and the client was told */

	struct lease_process proc; /* the attached process; pid 0 when none */
	struct lease_grant {
		int gpu;	 /* index into the engine's GPUs */
		unsigned slots;	 /* bit i: slot i of that GPU */
		uint64_t memory; /* the device memory counted for it there */
	} grants[INV_MAX_DEVICES];
	int ngrants;	   /* = req.gpus once granted */
	int position_sent; /* the queue position the client last heard, 0 = none */
	/* Granted where a resident of its app and task was (residency.h): warm, and the
	 * resident's process handed over for the lease service to attach or let go. */
	bool warm;
	struct lease_process warm_proc;
	bool kept; /* released with its process kept resident, which now owns l->proc */
	/* Granted, but its row is not committed yet (a shared ledger answers later,
	 * record.c): its client hears of the grant once it is. */
	bool unwritten;
	/* The shared ledger refused the grant: the visitor's quota was spent on other
	 * machines meanwhile (what they had left, and until when, as it said). */
	struct lease_quota_refusal {
		bool refused;
		int64_t left_ms, wait_ms;
	} over_quota;
	char message[LEASE_MESSAGE_MAX]; /* why it failed or expired, for the client */

	struct heap_node timer;	  /* the one pending deadline of this lease */
	struct heap_node qnode;	  /* in its app's queue (sched.c) */
	int64_t sched_key;	  /* its place in line, fixed on arrival; 0 = not yet */
	struct strmap_node hnode; /* in the engine's lease table, keyed by id */
	void *stream;		  /* the API's per-lease context, or NULL */
};

const char *lease_state_name(enum lease_state s);
const char *lease_size_name(enum lease_size s);
const char *lease_tier_name(enum lease_tier t);
bool lease_state_terminal(enum lease_state s);
bool lease_transition_allowed(enum lease_state from, enum lease_state to);
/*
 * Whether a and b are the same principal: the same local user when both are
 * known by uid, else the same app token (or both the admin token). Nobody is
 * the same as a caller of unknown uid without a token.
 */
bool lease_owner_same(const struct lease_owner *a, const struct lease_owner *b);
/* Moves l to state to; returns 0, or -EINVAL (and changes nothing) when illegal. */
int lease_transition(struct lease *l, enum lease_state to);

#endif
