/* record_fault — the ledger in a fault: refuse grants, keep ends, probe (record_fault.h). */
#include "daemon/record_fault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/zgpud.h"

#define PROBE_INTERVAL_MS 1000

static void arm(struct record_fault *f)
{
	struct timeval tv = {.tv_sec = PROBE_INTERVAL_MS / 1000,
			     .tv_usec = (PROBE_INTERVAL_MS % 1000) * 1000};
	evtimer_add(f->probe, &tv);
}

/* Writes the kept ends in order; stops at the first that fails. 0 when all are written. */
static int write_kept(struct zgpud *d)
{
	struct record_fault *f = &d->fault;
	while (f->head) {
		struct record_pending_end *e = f->head;
		struct ledger_visitor v = {.key = e->key,
					   .tier = e->tier,
					   .window_start = e->window_start,
					   .used_ms = e->visitor_used_ms,
					   .limit_ms = e->limit_ms,
					   .overage = e->overage};
		int r = d->ledger->ops->lease_ended(d->ledger, e->id, e->state, e->ended_at,
						    e->used_ms, e->charged_ms,
						    e->has_visitor ? &v : NULL);
		if (r < 0)
			return r;
		f->head = e->next;
		if (!f->head)
			f->tail = &f->head;
		f->pending--;
		free(e);
	}
	return 0;
}

static void on_probe(evutil_socket_t fd, short what, void *arg)
{
	struct zgpud *d = arg;
	struct record_fault *f = &d->fault;
	(void) fd;
	(void) what;
	int kept = f->pending;
	/* The probe too when the kept ends went in: they may have fit in the WAL's slack
	 * while the disk is still full, and the next grant would fault again. */
	if (write_kept(d) < 0 || d->ledger->ops->probe(d->ledger) < 0) {
		snprintf(f->reason, sizeof(f->reason), "%s", d->ledger->error);
		arm(f);
		return;
	}
	log_info("the ledger takes writes again after %.1f s (%d lease end(s) that waited are "
		 "written): granting leases again",
		 (double) (clock_mono_ms() - f->since_ms) / 1000.0, kept);
	f->reason[0] = '\0';
}

int record_fault_init(struct zgpud *d)
{
	struct record_fault *f = &d->fault;
	f->reason[0] = '\0';
	f->head = NULL;
	f->tail = &f->head;
	f->pending = 0;
	f->probe = evtimer_new(d->base, on_probe, d);
	return f->probe ? 0 : -ENOMEM;
}

void record_fault_release(struct zgpud *d)
{
	struct record_fault *f = &d->fault;
	if (f->pending) {
		int n = f->pending;
		if (write_kept(d) == 0)
			log_info("wrote the %d lease end(s) that waited for the ledger", n);
		else
			log_error(
				"the ledger still cannot be written (%s): %d lease end(s) are not "
				"recorded; the next start settles them as expired",
				d->ledger->error, f->pending);
	}
	while (f->head) {
		struct record_pending_end *e = f->head;
		f->head = e->next;
		free(e);
	}
	f->tail = &f->head;
	f->pending = 0;
	if (f->probe)
		event_free(f->probe);
	f->probe = NULL;
}

void record_fault_enter(struct zgpud *d)
{
	struct record_fault *f = &d->fault;
	bool was = record_fault_active(f);
	snprintf(f->reason, sizeof(f->reason), "%s",
		 d->ledger->error[0] ? d->ledger->error : "a write failed");
	if (was)
		return;
	f->since_ms = clock_mono_ms();
	f->episodes++;
	log_error("the ledger cannot be written (%s): no lease is granted until it can; lease "
		  "ends are kept and written then (retrying every %d ms)",
		  f->reason, PROBE_INTERVAL_MS);
	arm(f);
}

int record_fault_keep_end(struct zgpud *d, const char *id, const char *state, int64_t ended_at,
			  int64_t used_ms, int64_t charged_ms, const struct ledger_visitor *v)
{
	struct record_fault *f = &d->fault;
	struct record_pending_end *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	snprintf(e->id, sizeof(e->id), "%s", id);
	snprintf(e->state, sizeof(e->state), "%s", state);
	e->ended_at = ended_at;
	e->used_ms = used_ms;
	e->charged_ms = charged_ms;
	if (v) {
		e->has_visitor = true;
		snprintf(e->key, sizeof(e->key), "%s", v->key);
		snprintf(e->tier, sizeof(e->tier), "%s", v->tier);
		e->window_start = v->window_start;
		e->visitor_used_ms = v->used_ms;
		e->limit_ms = v->limit_ms;
		e->overage = v->overage;
	}
	*f->tail = e;
	f->tail = &e->next;
	f->pending++;
	return 0;
}
