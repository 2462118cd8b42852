/*
 * ledger — the durable record of leases, behind a small interface: SQLite in the
 * state directory (the default, one machine), or PostgreSQL shared by several
 * machines (ledger_pg.c; docs/cluster.md).
 *
 * Every grant, attach and end is committed before the client hears of it, so
 * a daemon killed with -9 loses nothing it acknowledged. On start-up the leases
 * it never settled are settled as expired (record_recover in record.c). The
 * daemon writes only through record.c.
 */
#ifndef ZGPU_DAEMON_SYS_LEDGER_H
#define ZGPU_DAEMON_SYS_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>

#define LEDGER_DEVICES_MAX 2048

/* One lease row. Strings are borrowed for the duration of a call. */
struct ledger_lease {
	const char *id, *app, *task, *visitor, *tier, *size, *state;
	const char *devices;   /* granted devices' UUIDs, comma-separated */
	const char *quota_key; /* the visitor charged, "" when the call is not metered */
	int gpus;
	int64_t requested_ms;	      /* the duration asked for */
	int64_t started_at, ended_at; /* Unix ms; ended_at 0 while held */
	int64_t used_ms, charged_ms;
	pid_t pid, pgid;    /* attached process, 0 if none */
	uint64_t pid_start; /* its start time (/proc/PID/stat field 22) */
};

/* A visitor's quota window. */
struct ledger_visitor {
	const char *key, *tier;
	char tier_buf[16]; /* where visitor_load puts the tier */
	int64_t window_start, used_ms;
	int64_t reserved_ms; /* a shared ledger's: held by granted leases on every node */
	/* For a backend shared by several daemons (PostgreSQL), which settles the end
	 * itself from the charge: the tier's daily quota, and whether it allows overage. */
	int64_t limit_ms;
	bool overage;
};

/* What a grant takes from its visitor's quota, for a backend shared by several daemons:
 * it reserves cost_ms only if that fits in limit_ms (or overage is allowed), atomically. */
struct ledger_grant_quota {
	const char *key; /* "" when the call is not metered */
	int64_t cost_ms, limit_ms, window_ms;
	bool overage;
};

/* A grant written (r 0), refused for the visitor's quota (-EDQUOT, v says what they have
 * used), or not written (-EIO, why says; the lease must not be given). */
typedef void (*ledger_granted_fn)(void *arg, int r, const struct ledger_visitor *v,
				  const char *why);

/* The end of an asynchronous registry change or listing: r as the synchronous op
 * returns it (its message in lg->error when negative). */
typedef void (*ledger_done_fn)(void *arg, int r);

/* What an asynchronous backend tells the daemon, from its loop. */
struct ledger_hooks {
	/* A visitor's figures as the shared ledger has them after a grant or an end. */
	void (*visitor_seen)(void *arg, const char *key, int64_t window_start, int64_t used_ms);
	/* The backend cannot be reached (why), or can again. */
	void (*down)(void *arg, const char *why);
	void (*up)(void *arg);
	void *arg;
};

/* An account (who owns apps) or an app, as listed. */
struct ledger_account {
	const char *name, *kind;
	int apps;
	int64_t created_at;
};

struct ledger_app {
	const char *name, *account;
	int64_t created_at;
};

/* GPU time by app and node since some moment. */
struct ledger_usage {
	const char *app, *node;
	int64_t leases, used_ms, charged_ms, overage_ms;
};

/* Seconds past the quota (tiers that allow overage), by visitor and app. */
struct ledger_overage {
	const char *visitor, *app;
	int64_t leases, overage_ms;
};

struct ledger;

struct ledger_ops {
	const char *name;
	int (*lease_granted)(struct ledger *lg, const struct ledger_lease *row);
	int (*lease_attached)(struct ledger *lg, const char *id, pid_t pid, pid_t pgid,
			      uint64_t pid_start);
	/* Records the end; when v is not NULL, also the visitor's window, in one transaction. */
	int (*lease_ended)(struct ledger *lg, const char *id, const char *state, int64_t ended_at,
			   int64_t used_ms, int64_t charged_ms, const struct ledger_visitor *v);
	/* Fills *v for key; returns 1 when found, 0 when the ledger has never seen it. */
	int (*visitor_load)(struct ledger *lg, const char *key, struct ledger_visitor *v);
	/* Calls fn on every lease granted but never ended. */
	int (*unsettled)(struct ledger *lg, void (*fn)(const struct ledger_lease *row, void *arg),
			 void *arg);
	/* The registry. Adds return -EEXIST for a name taken, -ENOENT for an unknown
	 * account; app_add refuses with -EDQUOT when the account holds `limit` apps. */
	int (*account_add)(struct ledger *lg, const char *name, const char *kind, int64_t now);
	int (*account_list)(struct ledger *lg,
			    void (*fn)(const struct ledger_account *a, void *arg), void *arg);
	int (*app_add)(struct ledger *lg, const char *name, const char *account,
		       const char *token_sha256, int limit_for_kind[3], int64_t now);
	int (*app_remove)(struct ledger *lg, const char *name);
	int (*app_list)(struct ledger *lg, void (*fn)(const struct ledger_app *a, void *arg),
			void *arg);
	/* Which app a token (by its SHA-256, hex) belongs to: 1 and name filled, or 0. */
	int (*app_by_token)(struct ledger *lg, const char *token_sha256, char *name, size_t size);
	/* Leases started at or after since (Unix ms), summed by app and node (of every node
	 * sharing the ledger); app NULL for all. */
	int (*usage)(struct ledger *lg, const char *app, int64_t since,
		     void (*fn)(const struct ledger_usage *u, void *arg), void *arg);
	/* The same leases' overage, summed by visitor and app (only those with some). */
	int (*overage)(struct ledger *lg, const char *app, int64_t since,
		       void (*fn)(const struct ledger_overage *o, void *arg), void *arg);
	/* Forgets a visitor's window: their quota starts over. 1 when there was one. */
	int (*visitor_reset)(struct ledger *lg, const char *key);
	/* The tier the operator gave a signed-in visitor (key "user:NAME"): set, and read
	 * into tier (1 when there is one, 0 when not). */
	int (*visitor_tier_set)(struct ledger *lg, const char *key, const char *tier, int64_t now);
	int (*visitor_tier_get)(struct ledger *lg, const char *key, char *tier, size_t size);
	/* A write that changes nothing, committed: 0 when the ledger takes writes (after a
	 * fault: its disk full or read-only, record_fault.h). */
	int (*probe)(struct ledger *lg);
	/*
	 * Shared backends (PostgreSQL: ledger_shared()) only; NULL for SQLite, which in turn
	 * leaves NULL the synchronous registry changes, lease_granted, usage and overage,
	 * whose asynchronous forms below it has instead. serve: the loop runs
	 * from now on, and writes go through it: lease_attached and lease_ended are then
	 * queued in order and retried until written (they return 0), and grants go
	 * through grant_async, whose done is called from the loop. flush: waits (running
	 * the loop) up to timeout_ms for the queued writes; 0 when all are written.
	 */
	int (*serve)(struct ledger *lg, struct event_base *base, const struct ledger_hooks *hooks);
	int (*grant_async)(struct ledger *lg, const struct ledger_lease *row,
			   const struct ledger_grant_quota *q, ledger_granted_fn done, void *arg);
	int (*flush)(struct ledger *lg, int64_t timeout_ms);
	/* The registry's changes and the usage listing, answered from the loop (done is
	 * never called from within the call). The registry's reads (lists, app tokens,
	 * tiers) stay synchronous: the backend keeps a copy in memory, read again when
	 * any daemon changes it. */
	int (*account_add_async)(struct ledger *lg, const char *name, const char *kind, int64_t now,
				 ledger_done_fn done, void *arg);
	int (*app_add_async)(struct ledger *lg, const char *name, const char *account,
			     const char *token_sha256, int limit_for_kind[3], int64_t now,
			     ledger_done_fn done, void *arg);
	int (*app_remove_async)(struct ledger *lg, const char *name, ledger_done_fn done,
				void *arg);
	int (*visitor_reset_async)(struct ledger *lg, const char *key, ledger_done_fn done,
				   void *arg);
	int (*visitor_tier_set_async)(struct ledger *lg, const char *key, const char *tier,
				      int64_t now, ledger_done_fn done, void *arg);
	int (*usage_async)(struct ledger *lg, const char *app, int64_t since,
			   void (*usage_fn)(const struct ledger_usage *u, void *arg),
			   void (*overage_fn)(const struct ledger_overage *o, void *arg),
			   void *fn_arg, ledger_done_fn done, void *arg);
	void (*close)(struct ledger *lg);
};

/* Account kinds and their index in limit_for_kind[]. */
#define LEDGER_KINDS "free, pro, org"
int ledger_kind_index(const char *kind);

struct ledger {
	const struct ledger_ops *ops;
	char error[256]; /* the backend's message for the last failure */
	char node[64];	 /* the node whose leases this daemon writes and settles */
};

/*
 * Opens (creating and migrating as needed) the SQLite ledger at path. *out
 * belongs to the caller: ledger_close(). On failure returns a negative errno
 * and writes a sentence into err.
 */
int ledger_open_sqlite(struct ledger **out, const char *path, char *err, size_t errlen);

/*
 * Opens the PostgreSQL ledger at conninfo (a postgresql:// URL or key=value words,
 * libpq's PG* environment filling the rest) for node, migrating its schema once
 * whoever else starts at the same time. Start-up waits for the database (the loop
 * is not running yet); from serve() on, nothing does.
 */
int ledger_open_pg(struct ledger **out, const char *conninfo, const char *node, char *err,
		   size_t errlen);

/* Whether lg is shared by several daemons and answered on the loop (PostgreSQL): its writes
 * queue, its grants and registry changes are answered later. */
static inline bool ledger_shared(const struct ledger *lg)
{
	return lg->ops->serve != NULL;
}

static inline void ledger_close(struct ledger *lg)
{
	if (lg)
		lg->ops->close(lg);
}

#endif
