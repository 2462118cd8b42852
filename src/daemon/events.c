/*
 * events — what happens on every engine event, whichever API the lease came
 * through: the ledger hears of a grant before the client does, a lease's end
 * settles the visitor's quota in the same transaction that records it, and
 * each device remembers who held it last. Then the lease's client is told.
 */
#include <fcntl.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/sys/proc.h"
#include "daemon/record.h"
#include "daemon/zgpud.h"

/* Returns false when the grant could not be recorded: it is then never acknowledged. */
static bool grant_recorded(struct zgpud *d, struct lease *l)
{
	if (record_grant(d, l) == 0) {
		log_info("lease %s: granted %d %s GPU(s) to app %s for %g s%s", l->id, l->ngrants,
			 lease_size_name(l->req.size), l->req.app,
			 (double) l->req.duration_ms / 1000.0,
			 l->granted_ms > l->created_ms ? " after queueing" : "");
		return true;
	}
	log_error("lease %s: cannot record the grant, so it is not given: %s", l->id,
		  d->ledger->error);
	/* The engine cannot be re-entered from its hook: zgpud_rearm() fails it. */
	if (d->nunrecorded < (int) (sizeof(d->unrecorded) / sizeof(d->unrecorded[0])))
		memcpy(d->unrecorded[d->nunrecorded++], l->id, LEASE_ID_LEN + 1);
	snprintf(l->message, sizeof(l->message),
		 "zerogpud could not record the grant in its ledger: %.140s", d->ledger->error);
	return false;
}

/* Settles the visitor's reservation to the charge (waiting costs nothing) and records the end. */
static void settle(struct zgpud *d, struct lease *l, int64_t now)
{
	struct quota_account *a = l->req.quota_key[0] ? quota_find(&d->quota, l->req.quota_key)
						      : NULL;
	if (a)
		quota_settle(a, l->req.reserved_ms,
			     l->granted_ms ? quota_charge_ms(&d->quota.cfg, l, now - l->granted_ms)
					   : 0);
	if (l->granted_ms && record_end(d, l, now, a) < 0)
		log_error("lease %s: cannot record its end (%s); it is settled at the next start",
			  l->id, d->ledger->error);
	/* Requests that never held a device (cancelled, timed out in the queue) say so at
	 * debug level: a flood of them must not flood the log; metrics count them. */
	log_msg(l->granted_ms ? LOG_INFO : LOG_DEBUG, "lease %s: %s%s%s", l->id,
		lease_state_name(l->state), l->message[0] ? ": " : "", l->message);
}

/* Each device l held remembers its app, task and worker; the lease's hold on
 * the worker (its pidfd) passes to the devices, a copy each after the first. */
static void remember_last_use(struct zgpud *d, struct lease *l)
{
	struct engine_device held[INV_MAX_DEVICES];
	int n = engine_lease_devices(&d->engine, l, held, INV_MAX_DEVICES);
	for (int i = 0; i < n; i++) {
		struct device_last_use *u = &d->last_use[held[i].device];
		proc_drop(&u->worker);
		memcpy(u->app, l->req.app, sizeof(u->app));
		memcpy(u->task, l->req.task, sizeof(u->task));
		u->worker = l->proc;
		if (i > 0 && l->proc.pidfd >= 0)
			u->worker.pidfd = fcntl(l->proc.pidfd, F_DUPFD_CLOEXEC, 0);
	}
	if (n == 0)
		proc_drop(&l->proc);
	l->proc.pidfd = -1; /* the devices hold it now */
}

void zgpud_on_lease_event(void *ctx, struct lease *l, enum engine_event ev)
{
	struct zgpud *d = ctx;
	int64_t now = clock_mono_ms();
	switch (ev) {
	case ENGINE_EV_QUEUED:
		log_debug("lease %s: queued at position %d", l->id, l->position_sent);
		break;
	case ENGINE_EV_GRANTED:
		if (!grant_recorded(d, l))
			return;
		break;
	case ENGINE_EV_EXPIRED:
		log_info("lease %s: deadline passed (%.0f s); grace %.1f s", l->id,
			 (double) l->req.duration_ms / 1000.0,
			 (double) d->engine.cfg.grace_ms / 1000.0);
		break;
	case ENGINE_EV_ENDED:
		/* The engine's end time, not a fresh clock read: the next grant on these
		 * devices is stamped with the same instant, and the ledger must never show
		 * a device's next lease starting before its last one ended. */
		settle(d, l, l->ended_ms);
		if (l->granted_ms)
			remember_last_use(d, l);
		else
			proc_drop(&l->proc);
		break;
	}
	struct lease_client *cl = l->stream;
	if (cl)
		cl->on_event(cl, l, ev, now);
}

bool zgpud_waiter_gone(void *ctx, struct lease *l)
{
	struct lease_client *cl = l->stream;
	(void) ctx;
	return cl && cl->gone && cl->gone(cl);
}
