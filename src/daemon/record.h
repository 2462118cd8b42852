/*
 * record — what the daemon writes into the ledger: leases (each write before
 * the client hears of the change it records), the settling of leases a
 * previous run left open, and the registry of accounts, apps and their
 * tokens. Every ledger write goes through here; readers use the ledger's
 * listings directly.
 */
#ifndef ZGPU_DAEMON_RECORD_H
#define ZGPU_DAEMON_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/core/lease.h"
#include "daemon/core/quota.h"
#include "daemon/sys/ledger.h"

struct zgpud;

/* A write the disk refuses (full, read-only, I/O error) puts the daemon in a fault
 * (record_fault.h): grants wait for the ledger, ends are kept until it takes writes. */

/* Records l's grant. 0; 1 when a shared ledger answers later, through
 * leases_grant_written(); -EAGAIN in a fault (the grant must not be given); -errno. */
int record_grant(struct zgpud *d, const struct lease *l);
int record_attach(struct zgpud *d, const struct lease *l);
/* Records l's end; with a (the visitor charged, already settled), their new total too.
 * 0; -EAGAIN when it is kept to be written once the ledger takes writes again; -errno. */
int record_end(struct zgpud *d, const struct lease *l, int64_t now, const struct quota_account *a);

/* The quota account for key: from memory, else from the ledger, else a new one
 * at tier. NULL when out of memory or the ledger cannot be read. */
struct quota_account *record_visitor(struct zgpud *d, const char *key, enum lease_tier tier);

/* Which app token belongs to: 1 with its name in app, 0 when none, -errno on failure. */
int record_app_for_token(struct zgpud *d, const char *token, char *app, size_t size);

#define RECORD_APP_TOKEN_MAX 64 /* "zgpa_" and 48 hex digits (192 random bits), and a NUL */

/*
 * The registry's changes. Each ends with done(arg, r): at once with SQLite, from the
 * loop with a shared ledger; r < 0 with d->ledger->error saying why.
 */
typedef void (*record_done_fn)(void *arg, int r);

/* Adds an account of kind (free, pro, org). r: 0, -EEXIST, or -errno. */
void record_account_add(struct zgpud *d, const char *name, const char *kind, record_done_fn done,
			void *arg);
/*
 * Adds app to account with a fresh token, written into token before this returns
 * (shown once: the ledger keeps its SHA-256). r: 0; -EEXIST; -ENOENT no such
 * account; -EDQUOT past the account's hosting limit; -errno.
 */
void record_app_add(struct zgpud *d, const char *name, const char *account,
		    char token[RECORD_APP_TOKEN_MAX], record_done_fn done, void *arg);
/* Removes app (its token stops working). r: 0, -ENOENT, or -errno. */
void record_app_remove(struct zgpud *d, const char *name, record_done_fn done, void *arg);
/* Starts key's quota window over, in the ledger and in memory (what is reserved stays
 * reserved). r: 1 when the visitor was known, 0 when not, -errno. */
void record_visitor_reset(struct zgpud *d, const char *key, record_done_fn done, void *arg);
/* The tier the operator gave signed-in visitor key ("user:NAME"): set (r: 0 or -errno);
 * and read, as LEASE_TIER_FREE when none was given (0 or -errno). */
void record_visitor_tier_set(struct zgpud *d, const char *key, enum lease_tier tier,
			     record_done_fn done, void *arg);
int record_visitor_tier(struct zgpud *d, const char *key, enum lease_tier *tier);

/* Usage since (Unix ms) by app and node, then overage by visitor and app, through the
 * two functions; then done(arg, r). */
void record_usage(struct zgpud *d, const char *app, int64_t since,
		  void (*usage_fn)(const struct ledger_usage *u, void *arg),
		  void (*overage_fn)(const struct ledger_overage *o, void *arg), void *fn_arg,
		  record_done_fn done, void *arg);

/* Hands the ledger to the event loop (a shared ledger's queries run on it from now on). */
int record_serve(struct zgpud *d);
/* Waits (running the loop) up to timeout_ms for a shared ledger's queued writes. */
void record_flush(struct zgpud *d, int64_t timeout_ms);

/* Settles every lease the ledger holds as open (a previous run died): kills
 * its process if that very process still runs, and records it as expired.
 * Returns how many were settled, or a negative errno. */
int record_recover(struct zgpud *d, int64_t grace_ms);

#endif
