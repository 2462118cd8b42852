/*
 * record — what the daemon writes into the ledger about leases, and the
 * settling of leases a previous run left open. Each write happens before the
 * client hears of the change it records.
 */
#ifndef ZGPU_DAEMON_RECORD_H
#define ZGPU_DAEMON_RECORD_H

#include <stdint.h>

#include "daemon/core/lease.h"
#include "daemon/core/quota.h"

struct zgpud;

int record_grant(struct zgpud *d, const struct lease *l);
int record_attach(struct zgpud *d, const struct lease *l);
/* Records l's end; with a (the visitor charged, already settled), their new total too. */
int record_end(struct zgpud *d, const struct lease *l, int64_t now, const struct quota_account *a);

/* The quota account for key: from memory, else from the ledger, else a new one
 * at tier. NULL when out of memory or the ledger cannot be read. */
struct quota_account *record_visitor(struct zgpud *d, const char *key, enum lease_tier tier);

/* Settles every lease the ledger holds as open (a previous run died): kills
 * its process if that very process still runs, and records it as expired.
 * Returns how many were settled, or a negative errno. */
int record_recover(struct zgpud *d, int64_t grace_ms);

#endif
