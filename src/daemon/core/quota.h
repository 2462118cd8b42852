/*
 * quota — daily GPU time per visitor. Pure: the time (Unix ms) is passed in.
 *
 * A visitor's window opens at their first use and closes `window` later (24 h);
 * then it starts again from nothing. A request reserves its requested time
 * (twice for xlarge) at once, so parallel requests of one visitor can never
 * spend more than the quota together; the lease's end settles the reservation
 * to what was charged. Waiting costs nothing.
 */
#ifndef ZGPU_DAEMON_CORE_QUOTA_H
#define ZGPU_DAEMON_CORE_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/strmap.h"
#include "daemon/core/lease.h"

#define QUOTA_KEY_MAX (LEASE_TEXT_MAX + 8)

struct quota_config {
	int64_t daily_ms[LEASE__TIER_COUNT]; /* anonymous 120 s, free 300, pro 2400, enterprise 3600
					      */
	int64_t window_ms;		     /* 24 h */
	int xlarge_factor;		     /* 2 */
	/* Tiers whose calls past the quota are granted, their seconds recorded as overage
	 * (for the operator to charge back) rather than refused. None by default. */
	bool overage[LEASE__TIER_COUNT];
};

void quota_config_default(struct quota_config *c);

struct quota_account {
	char key[QUOTA_KEY_MAX + 1]; /* "ip:10.0.0.1", "user:alice", ... */
	enum lease_tier tier;
	int64_t window_start; /* Unix ms; 0: no window open */
	int64_t used_ms;      /* charged in this window */
	int64_t reserved_ms;  /* held by requests not yet settled */
	struct strmap_node hnode;
};

struct quota_book {
	struct quota_config cfg;
	struct strmap accounts; /* key -> quota_account */
};

int quota_init(struct quota_book *b, const struct quota_config *cfg);
void quota_release(struct quota_book *b);

/* The account for key, or NULL when the book has not seen it. */
struct quota_account *quota_find(struct quota_book *b, const char *key);
/* Adds key with what the ledger knows of it (window_start 0 and used 0 for a newcomer). */
struct quota_account *quota_add(struct quota_book *b, const char *key, enum lease_tier tier,
				int64_t window_start, int64_t used_ms);

/* What a request costs: its duration, times the xlarge factor. */
int64_t quota_cost_ms(const struct quota_config *c, const struct lease_request *req);

/* Closes a window that has run out. */
void quota_roll(const struct quota_config *c, struct quota_account *a, int64_t now);
/* What a has left to reserve at now (>= 0), after closing a window that ran out. */
int64_t quota_left_ms(const struct quota_config *c, struct quota_account *a, int64_t now);

/*
 * Reserves cost_ms for a. Returns 0, or -EDQUOT when it does not fit (and a's
 * tier allows no overage); then *left_ms is what is left and *wait_ms how long
 * until the window resets.
 */
int quota_reserve(const struct quota_config *c, struct quota_account *a, int64_t cost_ms,
		  int64_t now, int64_t *left_ms, int64_t *wait_ms);
/*
 * What a lease costs: the time it held its devices, rounded up to whole
 * seconds, times the xlarge factor; nothing when it failed before any process
 * was attached (the work never started).
 */
int64_t quota_charge_ms(const struct quota_config *c, const struct lease *l, int64_t used_ms);

/* Starts a's window over (an admin's reset): nothing used, no window open. What is
 * reserved stays reserved: those requests still run or wait, and settle later. */
void quota_reset(struct quota_account *a);

/* Turns a reservation into its charge (0 <= charged; charged may exceed reserved). */
void quota_settle(struct quota_account *a, int64_t reserved_ms, int64_t charged_ms);
/* The share of the daily quota left, 0..1, for the scheduler. */
double quota_left_share(const struct quota_config *c, const struct quota_account *a);

/*
 * The hosted wording: "You have exceeded your free GPU quota (60s requested vs.
 * 20s left). Try again in 13:59:12."
 */
void quota_message(char *out, size_t size, enum lease_tier tier, int64_t requested_ms,
		   int64_t left_ms, int64_t wait_ms);

#endif
