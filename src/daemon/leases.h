/*
 * leases — the lease service: the one path between the APIs and the engine.
 *
 * A protocol adapter (api_v1.c, api_spaces.c) parses a request and calls the
 * service, which does every step in one order whatever the protocol: admit
 * (authorise the caller for the app, identify the visitor), submit (reserve
 * quota, hand the request to the engine, undo the reservation if the engine
 * refuses), and after each engine call record (the ledger hears of a grant
 * before the client does; an end settles the visitor's quota in the same
 * transaction), notify (the lease's client), attach and rebind processes,
 * release and abandon. It says no with a struct refusal that the adapter
 * renders in its protocol's words; it never writes to a connection.
 *
 * The service owns the engine's hooks, the deadline timer (armed after every
 * engine call), the grants the ledger could not record (failed right after
 * the engine call that made them), and what each device last held (the
 * `spaces` idle worker).
 */
#ifndef ZGPU_DAEMON_LEASES_H
#define ZGPU_DAEMON_LEASES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/core/engine.h"
#include "daemon/core/lease.h"
#include "daemon/core/quota.h"
#include "daemon/sys/ledger.h"

struct zgpud;

/* Who is calling: http.c fills it from the connection and the bearer token. */
struct caller {
	bool via_tcp;
	bool uid_known; /* the Unix socket's peer, or a loopback TCP client the kernel
			 * vouched for when it connected (conn.h) */
	uid_t uid;	/* valid when uid_known */
	pid_t pid;	/* the Unix socket peer's pid, else 0 */
	bool admin;	/* root or zerogpud's uid on the Unix socket; the admin token on TCP */
	char app[LEASE_APP_MAX + 1]; /* the app whose token came with the call, or "" */
	bool token_bad;		     /* a token came that is neither an app's nor the admin's */
	bool gateway;		     /* the visitor gateway's token came ([gateway] token) */
	/* The app whose gated cgroup the calling process runs in (gate.h), or "": it may
	 * act as that app only. */
	char cgroup_app[LEASE_APP_MAX + 1];
};

/* An app token over TCP, whose view is its own app only. */
static inline bool caller_app_scoped(const struct caller *who)
{
	return who->via_tcp && !who->admin;
}

/* Why the service said no: what an adapter renders. */
struct refusal {
	int status;	  /* the HTTP status */
	const char *code; /* the machine's word: "forbidden", "quota", ... (static) */
	char message[512];
	/* With code "quota" (429), the numbers each protocol words its own way. */
	enum lease_tier tier;
	int64_t cost_ms, left_ms, wait_ms;
};

/*
 * What the engine's events reach: an adapter's per-lease context starts with
 * this (l->stream points at it). Events come after the ledger and the quota
 * are up to date; ENDED is the last, and the client frees its context there.
 */
struct lease_client {
	void (*on_event)(struct lease_client *cl, struct lease *l, enum engine_event ev,
			 int64_t now);
	/* Optional: whether the client is gone (its connection closed unnoticed). */
	bool (*gone)(struct lease_client *cl);
	const char *cgroup; /* the client's cgroup (the `spaces` API sends it), or NULL */
};

/* The visitor a request names: a signed token, else an address; both may be NULL or "". */
struct visitor_claim {
	const char *token;
	const char *ip;
};

/* The engine's hooks, for engine_init (ctx: the struct zgpud). */
struct engine_hooks leases_engine_hooks(struct zgpud *d);

/* Sets up the deadline timer on d->base. 0 or -ENOMEM. */
int leases_init(struct zgpud *d);

/* Shutdown, first step: ends every lease (each end recorded and told to its client). */
void leases_end_all(struct zgpud *d);
/* Shutdown, last step: lets go of idle workers, frees the engine and the timer. */
void leases_free(struct zgpud *d);

/*
 * Admits a request for rq->app (an app token, or the app cgroup the caller
 * runs in, names it instead; "default" stands for "the token's" or "the
 * cgroup's"): the caller must be allowed to act as that app, and the visitor
 * claim must hold. Fills rq's visitor fields (quota_key,
 * tier; visitor when empty) even when refusing for quota later. Returns 0, or
 * -1 with *no (401 bad token, 403 app, 401 visitor token).
 */
int leases_admit(struct zgpud *d, const struct caller *who, struct lease_request *rq,
		 const struct visitor_claim *claim, struct refusal *no);

/*
 * Reserves the admitted request's quota and submits it; the engine's first
 * event reaches client before this returns. Returns 0; or -1 with *no (429
 * quota, with its numbers; 503 when no device here can ever serve it; 500),
 * having reserved nothing.
 */
int leases_submit(struct zgpud *d, const struct caller *who, struct lease_request *rq,
		  struct lease_client *client, struct refusal *no);

/* What rq's visitor has left now, in ms (loading them from the ledger); 0 when unmetered. */
int64_t leases_quota_left_ms(struct zgpud *d, const struct lease_request *rq);

/* Who the caller is as a lease's owner, or a process's voucher. */
struct lease_owner leases_owner_of(const struct caller *who);

/*
 * Whether who may see l: anyone on the Unix socket; on TCP the admin token, or
 * the token of l's app. May act on it (release, attach): its owner's uid or
 * root on the Unix socket; the admin token or its app's token on TCP.
 */
bool leases_may_see(const struct caller *who, const struct lease *l);
bool leases_may_act(const struct caller *who, const struct lease *l);

/* The lease id names, if who may see it (else 404) and, with act, act on it (else 403).
 * NULL with *no when not. */
struct lease *leases_find(struct zgpud *d, const struct caller *who, const char *id, bool act,
			  struct refusal *no);

/*
 * Binds pid to l after checking the caller may have it killed
 * (docs/security.md); the lease holds it by a pidfd from then on. With rebind,
 * a process already attached is replaced. Returns 0, or -1 with *no (400 no
 * such process, 403 not the caller's, 409 queued/another attached/expired,
 * 500 ledger).
 */
int leases_attach(struct zgpud *d, const struct caller *who, struct lease *l, pid_t pid,
		  bool rebind, struct refusal *no);

/*
 * Moves pid into app's gated cgroup (`zerogpu launch`, `zerogpu run`): the
 * caller must be allowed to act as app and to attach pid (as leases_attach),
 * and pid must be neither another app's process nor parked. Returns 0, or -1
 * with *no (400 bad app or no such process, 403, 409 gate off or parked, 500).
 */
int leases_join(struct zgpud *d, const struct caller *who, const char *app, pid_t pid,
		struct refusal *no);

/* The client ends l (queued: cancelled; held: released, or failed). *used_ms
 * (may be NULL) gets how long it held its devices. l is freed. Returns its final state. */
enum lease_state leases_end(struct zgpud *d, struct lease *l, bool failed, int64_t *used_ms);

/*
 * The client releases l and keeps its attached process resident on l's devices
 * (residency.h): its app's next lease there takes it over, warm, unless its memory
 * is needed first. Without a live attached process, the same as leases_end().
 * *kept (may be NULL) says whether a worker stays.
 */
enum lease_state leases_release_keep(struct zgpud *d, struct lease *l, int64_t *used_ms,
				     bool *kept);

/* Forgets the residents whose processes have exited (killed from outside, crashed). */
void leases_forget_dead_residents(struct zgpud *d);

/* A shared ledger's answer to lease id's grant (record_grant): r 0 gives it to its client;
 * -EDQUOT (the visitor's quota was spent elsewhere: v has their figures there) or another
 * error fails it. */
void leases_grant_written(struct zgpud *d, const char *id, int r, const struct ledger_visitor *v,
			  const char *why);

/* Tells l's client of ev (what the engine's hook does after its own work; a grant that
 * waited for evicted memory is told later, grant_hold.h). */
void leases_tell_client(struct zgpud *d, struct lease *l, enum engine_event ev);

/* l's client went away without a word: cancelled, or released with its process killed. */
void leases_abandon(struct zgpud *d, struct lease *l);

#endif
