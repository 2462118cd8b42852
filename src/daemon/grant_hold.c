#include "daemon/grant_hold.h"

#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/leases.h"
#include "daemon/sys/gpu_memory.h"
#include "daemon/zgpud.h"

static void arm(struct zgpud *d)
{
	struct timeval tv = {.tv_sec = 0, .tv_usec = GRANT_HOLD_POLL_MS * 1000};
	evtimer_add(d->holds.timer, &tv);
}

/* Whether NVML no longer lists w among the processes of its device. A query that
 * fails cannot tell: the grant then waits no more for w. */
static bool freed(struct zgpud *d, const struct evicted_worker *w)
{
	uint64_t bytes;
	return gpu_memory_of_process(d->gpu_memory, w->uuid, w->pid, &bytes) < 0 || bytes == 0;
}

static void release(struct zgpud *d, int i, int64_t now, bool in_time)
{
	struct held_grant h = d->holds.held[i];
	d->holds.held[i] = d->holds.held[--d->holds.nheld];
	if (in_time)
		log_info("lease %s: the memory of %d evicted worker(s) was freed after %lld ms",
			 h.lease, h.nwait, (long long) (now - h.since_ms));
	else
		log_warn("lease %s: NVML still shows memory of evicted worker %d after %d ms; "
			 "granting anyway",
			 h.lease, (int) h.wait[0].pid, GRANT_HOLD_MAX_MS);
	struct lease *l = engine_find(&d->engine, h.lease);
	if (l && !l->unwritten && (l->state == LEASE_GRANTED || l->state == LEASE_ATTACHED))
		leases_tell_client(d, l, ENGINE_EV_GRANTED);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	struct zgpud *d = arg;
	(void) fd;
	(void) what;
	int64_t now = clock_mono_ms();
	for (int i = 0; i < d->holds.nheld;) {
		struct held_grant *h = &d->holds.held[i];
		while (h->nwait && freed(d, &h->wait[h->nwait - 1]))
			h->nwait--;
		bool in_time = h->nwait == 0;
		if (in_time || now - h->since_ms >= GRANT_HOLD_MAX_MS)
			release(d, i, now, in_time); /* the last entry moves into i */
		else
			i++;
	}
	if (d->holds.nheld)
		arm(d);
}

int grant_hold_init(struct zgpud *d)
{
	memset(&d->holds, 0, sizeof(d->holds));
	d->holds.timer = evtimer_new(d->base, on_poll, d);
	return d->holds.timer ? 0 : -1;
}

void grant_hold_free(struct zgpud *d)
{
	if (d->holds.timer)
		event_free(d->holds.timer);
	d->holds.timer = NULL;
	d->holds.nheld = 0;
}

void grant_hold_note(struct zgpud *d, const char *uuid, pid_t pid)
{
	struct grant_holds *g = &d->holds;
	if (g->nnoted == GRANT_HOLD_WORKERS)
		return; /* the grant waits for the first ones only */
	struct evicted_worker *w = &g->noted[g->nnoted++];
	snprintf(w->uuid, sizeof(w->uuid), "%s", uuid);
	w->pid = pid;
}

void grant_hold_clear_notes(struct zgpud *d)
{
	d->holds.nnoted = 0;
}

bool grant_hold(struct zgpud *d, const struct lease *l)
{
	struct grant_holds *g = &d->holds;
	if (g->nnoted == 0 || !d->gpu_memory)
		return false;
	if (g->nheld == GRANT_HOLD_MAX) {
		log_warn("lease %s: %d grants wait for evicted memory already; told now", l->id,
			 g->nheld);
		g->nnoted = 0;
		return false;
	}
	struct held_grant *h = &g->held[g->nheld++];
	memcpy(h->lease, l->id, sizeof(h->lease));
	h->since_ms = clock_mono_ms();
	memcpy(h->wait, g->noted, (size_t) g->nnoted * sizeof(g->noted[0]));
	h->nwait = g->nnoted;
	g->nnoted = 0;
	if (g->nheld == 1)
		arm(d);
	return true;
}

bool grant_held(const struct zgpud *d, const struct lease *l)
{
	for (int i = 0; i < d->holds.nheld; i++)
		if (strcmp(d->holds.held[i].lease, l->id) == 0)
			return true;
	return false;
}

void grant_hold_drop(struct zgpud *d, const struct lease *l)
{
	struct grant_holds *g = &d->holds;
	for (int i = 0; i < g->nheld; i++)
		if (strcmp(g->held[i].lease, l->id) == 0) {
			g->held[i] = g->held[--g->nheld];
			return;
		}
}
