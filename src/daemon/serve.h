/*
 * serve — zerogpud's life between its settings and its exit: start-up in an
 * order that fails closed (the state lock, the devices, the gate, the ledger
 * and what a previous run left open, the engine, the listeners), and
 * shutdown in an order that holds under load. main.c runs it with signals
 * around it; the HTTP fuzz target (tests/fuzz/) runs the same daemon
 * in-process.
 */
#ifndef ZGPU_DAEMON_SERVE_H
#define ZGPU_DAEMON_SERVE_H

#include "daemon/settings.h"
#include "daemon/zgpud.h"

/*
 * Makes *d serve as o says (o is borrowed for d's life): d->base is ready to
 * dispatch. Returns 0, or -1 after logging why (d is then left for the
 * process's exit to reclaim).
 */
int serve_open(struct zgpud *d, const struct settings *o);

/* Ends every lease, lets the last replies leave, closes every connection, then
 * the ledger, and frees what serve_open() made but d->base, which the caller
 * frees after the events it added there. */
void serve_close(struct zgpud *d);
/*
 * Before serve_close, at a SIGTERM: accepts nothing more (a socket made by hand is
 * removed, so new callers retry until the next daemon binds it; a passed one holds
 * them in its backlog), and runs the loop until no lease is held or queued, or for
 * ms at most, or until another signal. The connections open are served meanwhile.
 */
void serve_drain(struct zgpud *d, int64_t ms);

#endif
