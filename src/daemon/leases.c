#include "daemon/leases.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/random_hex.h"
#include "daemon/core/auth.h"
#include "daemon/core/request.h"
#include "daemon/grant_hold.h"
#include "daemon/record.h"
#include "daemon/settings.h"
#include "daemon/sys/gpu_memory.h"
#include "daemon/sys/proc.h"
#include "daemon/zgpud.h"

static int refuse(struct refusal *no, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int refuse(struct refusal *no, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	no->status = status;
	no->code = code;
	va_start(ap, fmt);
	vsnprintf(no->message, sizeof(no->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* The ledger cannot be written (record_fault.h): nothing is granted that it cannot record. */
static int refuse_ledger_fault(const struct zgpud *d, struct refusal *no)
{
	if (ledger_shared(d->ledger)) /* the network, not a disk */
		return refuse(no, 503, "ledger_unavailable",
			      "zerogpud cannot reach its ledger (%s) for %.0f s, so it grants no "
			      "lease until it can; it tries again every second: check that "
			      "PostgreSQL runs and that this machine reaches it",
			      d->fault.reason,
			      (double) (clock_mono_ms() - d->fault.since_ms) / 1000.0);
	return refuse(no, 503, "ledger_unavailable",
		      "zerogpud cannot write its ledger (%s) for %.0f s, so it grants no lease "
		      "until it can: free space in, or make writable, its state directory %s",
		      d->fault.reason, (double) (clock_mono_ms() - d->fault.since_ms) / 1000.0,
		      d->settings->state_dir);
}

/* ------------------------------------------------------------------------
 * After every engine call: fail what the ledger could not record, and arm
 * the deadline timer at the engine's next deadline.
 * ------------------------------------------------------------------------ */

/* Fails the grants that could not be given (the ledger could not record them, or the
 * gate could not open the devices): never acknowledged. The engine cannot be
 * re-entered from its hook, so they are ended here, right after. */
static void fail_ungiven_grants(struct zgpud *d)
{
	while (d->nungiven) {
		struct lease *l = engine_find(&d->engine, d->ungiven[--d->nungiven]);
		if (l)
			engine_end(&d->engine, l, true, clock_mono_ms(), NULL);
	}
}

static void arm_deadline_timer(struct zgpud *d)
{
	int64_t next = engine_next_deadline(&d->engine);
	if (next == d->timer_at)
		return;
	d->timer_at = next;
	if (next == INT64_MAX) {
		evtimer_del(d->timer);
		return;
	}
	int64_t delay = next - clock_mono_ms();
	if (delay < 0)
		delay = 0;
	struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};
	evtimer_add(d->timer, &tv);
}

static void after_engine_call(struct zgpud *d)
{
	grant_hold_clear_notes(d); /* evictions no grant followed */
	fail_ungiven_grants(d);
	arm_deadline_timer(d);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct zgpud *d = arg;
	(void) fd;
	(void) what;
	d->timer_at = INT64_MAX;
	engine_tick(&d->engine, clock_mono_ms());
	after_engine_call(d);
}

/* ------------------------------------------------------------------------
 * The engine's hooks: record, settle, remember, then tell the client.
 * ------------------------------------------------------------------------ */

/* The grant is failed right after the engine call that made it. */
static void not_given(struct zgpud *d, const struct lease *l)
{
	if (d->nungiven < (int) (sizeof(d->ungiven) / sizeof(d->ungiven[0])))
		memcpy(d->ungiven[d->nungiven++], l->id, LEASE_ID_LEN + 1);
}

/* Returns false when the grant could not be recorded: it is then never acknowledged.
 * A shared ledger answers later (l->unwritten until then: leases_grant_written). */
static bool grant_recorded(struct zgpud *d, struct lease *l)
{
	int r = record_grant(d, l);
	l->unwritten = r == 1;
	if (r >= 0) {
		log_info("lease %s: granted %d %s GPU(s) to app %s for %g s%s", l->id, l->ngrants,
			 lease_size_name(l->req.size), l->req.app,
			 (double) l->req.duration_ms / 1000.0,
			 l->granted_ms > l->created_ms ? " after queueing" : "");
		return true;
	}
	const char *why = record_fault_active(&d->fault) ? d->fault.reason : d->ledger->error;
	log_error("lease %s: cannot record the grant, so it is not given: %s", l->id, why);
	snprintf(l->message, sizeof(l->message),
		 "zerogpud could not record the grant in its ledger: %.140s", why);
	not_given(d, l);
	return false;
}

/* Opens the lease's devices to its app's processes (gate.h). Returns false when the
 * gate could not: the grant is then never acknowledged. */
static bool grant_gated(struct zgpud *d, struct lease *l)
{
	struct engine_device held[INV_MAX_DEVICES];
	int devices[INV_MAX_DEVICES];
	int n = engine_lease_devices(&d->engine, l, held, INV_MAX_DEVICES);
	for (int i = 0; i < n; i++)
		devices[i] = held[i].device;
	char err[400];
	if (gate_grant(&d->gate, l->id, l->req.app, devices, n, err, sizeof(err)) == 0) {
		events_gate(d, "opened", l);
		return true;
	}
	log_error("lease %s: cannot open its devices to app %s, so it is not given: %s", l->id,
		  l->req.app, err);
	snprintf(l->message, sizeof(l->message), "zerogpud could not open the GPU to app %s: %.90s",
		 l->req.app, err);
	not_given(d, l);
	return false;
}

/* Settles the visitor's reservation to the charge (waiting costs nothing) and records the end. */
static void settle(struct zgpud *d, struct lease *l, int64_t now)
{
	struct quota_account *a = l->req.quota_key[0] ? quota_find(&d->quota, l->req.quota_key)
						      : NULL;
	int64_t charged = l->granted_ms ? quota_charge_ms(&d->quota.cfg, l, now - l->granted_ms)
					: 0;
	if (a) {
		quota_settle(a, l->req.reserved_ms, charged);
		events_quota(d, "settled", l->req.app, l->granted_ms ? l->id : NULL, a, charged);
	}
	int r = l->granted_ms ? record_end(d, l, now, a) : 0;
	if (r == -EAGAIN)
		log_warn("lease %s: its end waits for the ledger (%s)", l->id, d->fault.reason);
	else if (r < 0)
		log_error("lease %s: cannot record its end (%s); it is settled at the next start",
			  l->id, d->ledger->error);
	/* Requests that never held a device (cancelled, timed out in the queue) say so at
	 * debug level: a flood of them must not flood the log; metrics count them. */
	log_msg(l->granted_ms ? LOG_INFO : LOG_DEBUG, "lease %s: %s%s%s", l->id,
		lease_state_name(l->state), l->message[0] ? ": " : "", l->message);
}

/* The inventory devices l holds, bit i for device i. */
static uint64_t lease_device_mask(struct zgpud *d, const struct lease *l)
{
	struct engine_device held[INV_MAX_DEVICES];
	int n = engine_lease_devices(&d->engine, l, held, INV_MAX_DEVICES);
	uint64_t mask = 0;
	for (int i = 0; i < n; i++)
		mask |= UINT64_C(1) << held[i].device;
	return mask;
}

/*
 * A lease placed where its app's worker was resident (warm) gets that worker: it is
 * attached to the lease, thawed by the gate if it was parked, and the `spaces` API
 * tells its client `idle`. The engine hands over only a worker attached on the word
 * of the lease's own principal (the same local user, or the same app token), so
 * nobody gets somebody else's process attached (and later killed). One that has
 * exited since is let go; the call is cold.
 */
static void take_over_resident(struct zgpud *d, struct lease *l)
{
	struct lease_process w = l->warm_proc;
	l->warm_proc = LEASE_PROCESS_NONE;
	bool ok = w.pid > 0 && lease_owner_same(&w.attached_by, &l->owner) && proc_alive(&w) &&
		  engine_attach(&d->engine, l, &w, clock_mono_ms()) == 0;
	if (!ok) {
		if (w.pid > 0 && lease_owner_same(&w.attached_by, &l->owner))
			(void) proc_kill(&w); /* its memory is the lease's now */
		proc_drop(&w);
		l->warm = false;
		d->metrics.cold_grants++;
		return;
	}
	d->metrics.warm_grants++;
	events_resident(d, "taken", l->req.app, w.pid, lease_device_mask(d, l), 0);
	if (record_attach(d, l) < 0)
		log_error("lease %s: cannot record the attach: %s", l->id, d->ledger->error);
	log_info("lease %s: warm: given to app %s's resident worker, pid %d", l->id, l->req.app,
		 (int) l->proc.pid);
}

static void evict_resident(void *ctx, const struct resident *r, const char *why)
{
	struct zgpud *d = ctx;
	struct lease_process p = r->proc;
	int k = p.pid > 0 ? proc_kill(&p) : 0;
	if (p.pid > 0)
		gate_let_go(&d->gate, p.pid); /* a parked one must thaw to die */
	for (size_t i = 0; k >= 0 && p.pid > 0 && i < d->inv.count; i++)
		if ((r->devices & (UINT64_C(1) << i)) && !d->inv.devices[i].simulated)
			grant_hold_note(d, d->inv.devices[i].uuid, p.pid);
	log_info("app %s: resident worker %d (%.1f GiB) evicted %s%s", r->app, (int) p.pid,
		 (double) r->bytes / (1 << 30), why, k == -ESRCH ? " (it had exited)" : "");
	events_resident(d, "evicted", r->app, p.pid, r->devices, r->bytes);
	proc_drop(&p);
	d->metrics.evictions++;
}

static void on_lease_event(void *ctx, struct lease *l, enum engine_event ev)
{
	struct zgpud *d = ctx;
	switch (ev) {
	case ENGINE_EV_QUEUED:
		log_debug("lease %s: queued at position %d", l->id, l->position_sent);
		events_lease(d, l, "queued");
		break;
	case ENGINE_EV_GRANTED:
		if (!grant_recorded(d, l) || !grant_gated(d, l))
			return;
		events_lease(d, l, "granted");
		metrics_observe_wait(&d->metrics, l->req.tier,
				     (double) (l->granted_ms - l->created_ms) / 1000.0);
		metrics_count_app(&d->metrics, l->req.app, 1, 0);
		if (l->warm)
			take_over_resident(d, l);
		else
			d->metrics.cold_grants++;
		if (grant_hold(d, l) || l->unwritten)
			return; /* told once the evicted workers' memory is freed, and the
				 * shared ledger has the row */
		break;
	case ENGINE_EV_EXPIRED:
		log_info("lease %s: deadline passed (%.0f s); grace %.1f s", l->id,
			 (double) l->req.duration_ms / 1000.0,
			 (double) d->engine.cfg.grace_ms / 1000.0);
		events_lease(d, l, "expired");
		break;
	case ENGINE_EV_ENDED:
		/* Closed before the engine lends these devices again (it does so only after
		 * this event); what still holds them open is parked. */
		gate_revoke(&d->gate, l->id, &l->proc);
		if (l->granted_ms)
			events_gate(d, "closed", l);
		grant_hold_drop(d, l);
		/* The engine's end time, not a fresh clock read: the next grant on these
		 * devices is stamped with the same instant, and the ledger must never show
		 * a device's next lease starting before its last one ended. */
		settle(d, l, l->ended_ms);
		if (l->granted_ms)
			metrics_count_app(&d->metrics, l->req.app, 0,
					  (double) (l->ended_ms - l->granted_ms) / 1000.0 *
						  l->req.gpus);
		if (!l->kept)
			proc_drop(&l->proc); /* a kept one is its resident's now */
		if (l->warm_proc.pid > 0)    /* granted, but never given: nor is the resident */
			(void) proc_kill(&l->warm_proc);
		proc_drop(&l->warm_proc);
		events_lease(d, l, "ended");
		break;
	}
	leases_tell_client(d, l, ev);
}

void leases_grant_written(struct zgpud *d, const char *id, int r, const struct ledger_visitor *v,
			  const char *why)
{
	struct lease *l = engine_find(&d->engine, id);
	if (!l || !l->unwritten)
		return; /* ended before the ledger answered: its end follows the grant there */
	l->unwritten = false;
	if (r == 0) {
		if (!grant_held(d, l)) /* else told once the evicted memory is freed */
			leases_tell_client(d, l, ENGINE_EV_GRANTED);
		return;
	}
	if (r == -EDQUOT && v) {
		/* Other machines' grants spent the visitor's quota while this call waited:
		 * the hosted wording, with what the shared ledger says is left. */
		const struct quota_config *qc = &d->quota.cfg;
		int64_t now = clock_wall_ms();
		int64_t left = qc->daily_ms[l->req.tier] - v->used_ms - v->reserved_ms;
		l->over_quota.refused = true;
		l->over_quota.left_ms = left > 0 ? left : 0;
		l->over_quota.wait_ms = v->window_start ? v->window_start + qc->window_ms - now : 0;
		quota_message(l->message, sizeof(l->message), l->req.tier,
			      quota_cost_ms(qc, &l->req), l->over_quota.left_ms,
			      l->over_quota.wait_ms);
		log_info("lease %s: not given: the shared ledger says visitor %s is over quota",
			 l->id, l->req.quota_key);
	} else {
		snprintf(l->message, sizeof(l->message),
			 "zerogpud could not record the grant in its ledger: %.140s", why);
		log_error("lease %s: cannot record the grant, so it is not given: %s", l->id, why);
	}
	engine_end(&d->engine, l, true, clock_mono_ms(), NULL);
	after_engine_call(d);
}

void leases_tell_client(struct zgpud *d, struct lease *l, enum engine_event ev)
{
	struct lease_client *cl = l->stream;
	(void) d;
	if (cl)
		cl->on_event(cl, l, ev, clock_mono_ms());
}

static void kill_attached(void *ctx, const struct lease *l)
{
	struct zgpud *d = ctx;
	int r = proc_kill(&l->proc);
	events_lease(d, l, "killed");
	if (r >= 0)
		log_info("lease %s: killed %s %d", l->id, r == 1 ? "process group" : "process",
			 (int) (r == 1 ? l->proc.pgid : l->proc.pid));
	else if (r == -ESRCH)
		log_info("lease %s: process %d had already exited; nothing killed", l->id,
			 (int) l->proc.pid);
	else
		log_warn("lease %s: cannot kill process %d: %s", l->id, (int) l->proc.pid,
			 strerror(-r));
}

static void make_id(void *ctx, char *out)
{
	(void) ctx;
	random_hex(out, LEASE_ID_LEN / 2);
}

static bool waiter_gone(void *ctx, struct lease *l)
{
	struct lease_client *cl = l->stream;
	(void) ctx;
	return cl && cl->gone && cl->gone(cl);
}

struct engine_hooks leases_engine_hooks(struct zgpud *d)
{
	return (struct engine_hooks){.ctx = d,
				     .event = on_lease_event,
				     .kill_group = kill_attached,
				     .make_id = make_id,
				     .waiter_gone = waiter_gone,
				     .evict = evict_resident};
}

int leases_init(struct zgpud *d)
{
	d->timer_at = INT64_MAX;
	d->timer = evtimer_new(d->base, on_deadline, d);
	return d->timer && grant_hold_init(d) == 0 ? 0 : -ENOMEM;
}

void leases_end_all(struct zgpud *d)
{
	evtimer_del(d->timer);
	engine_end_all(&d->engine, clock_mono_ms());
	fail_ungiven_grants(d);
}

void leases_free(struct zgpud *d)
{
	/* Residents are let go, not killed: a restarted daemon does not know them, and
	 * they hold nothing the gate has not closed. */
	for (int i = 0; i < d->engine.residency.n; i++)
		proc_drop(&d->engine.residency.r[i].proc);
	engine_shutdown(&d->engine, clock_mono_ms());
	grant_hold_free(d);
	if (d->timer)
		event_free(d->timer);
	d->timer = NULL;
}

/* ------------------------------------------------------------------------
 * Who may do what.
 * ------------------------------------------------------------------------ */

struct lease_owner leases_owner_of(const struct caller *who)
{
	struct lease_owner o = {.via_token = who->via_tcp,
				.admin = who->via_tcp && who->admin,
				.uid_known = who->uid_known,
				.uid = who->uid};
	snprintf(o.app, sizeof(o.app), "%s", who->app);
	return o;
}

bool leases_may_see(const struct caller *who, const struct lease *l)
{
	return !caller_app_scoped(who) || strcmp(l->req.app, who->app) == 0;
}

bool leases_may_act(const struct caller *who, const struct lease *l)
{
	if (who->via_tcp)
		return who->admin || strcmp(l->req.app, who->app) == 0;
	if (who->uid_known && who->uid == 0)
		return true;
	return who->uid_known && !l->owner.via_token && l->owner.uid_known &&
	       l->owner.uid == who->uid;
}

/* Whether [apps] NAME users lists uid for app. */
static bool app_lists_uid(const struct settings *s, const char *app, uid_t uid)
{
	for (int i = 0; i < s->napp_users; i++) {
		if (strcmp(s->app_users[i].app, app) != 0)
			continue;
		for (int k = 0; k < s->app_users[i].nuids; k++)
			if (s->app_users[i].uids[k] == uid)
				return true;
	}
	return false;
}

/* On the Unix socket, [apps] says which local users may act as which apps (none listed:
 * anyone as any); root and zerogpud's own user act as any. */
static bool may_act_as(const struct zgpud *d, const struct caller *who, const char *app)
{
	if (who->via_tcp || who->admin)
		return true;
	return who->uid_known &&
	       (d->settings->napp_users == 0 || app_lists_uid(d->settings, app, who->uid));
}

struct lease *leases_find(struct zgpud *d, const struct caller *who, const char *id, bool act,
			  struct refusal *no)
{
	struct lease *l = engine_find(&d->engine, id);
	/* Another app's lease is "no such lease" to an app token: its existence is not
	 * theirs to know. */
	if (!l || !leases_may_see(who, l)) {
		refuse(no, 404, "no_such_lease",
		       "no lease '%.64s': it never existed or has already ended", id);
		return NULL;
	}
	if (act && !leases_may_act(who, l)) {
		refuse(no, 403, "forbidden",
		       "lease %s belongs to another client; only its owner (or root) may act on it",
		       l->id);
		return NULL;
	}
	return l;
}

/* ------------------------------------------------------------------------
 * Intake: admit, then submit.
 * ------------------------------------------------------------------------ */

/*
 * Who pays: a visitor token names them and their tier, and becomes
 * rq->visitor when that is empty; without one, the visitor's address is an
 * anonymous visitor; with neither, the call is the app's own and unmetered.
 */
static int identify_visitor(struct zgpud *d, const struct visitor_claim *claim,
			    struct lease_request *rq, struct refusal *no)
{
	if (claim->token && claim->token[0]) {
		struct visitor_identity id;
		char err[256];
		if (!d->visitor_secret[0])
			return refuse(no, 401, "unauthorized",
				      "this zerogpud verifies no visitor tokens: set [auth] "
				      "visitor_secret (or --visitor-secret-file)");
		if (auth_verify_visitor(claim->token, (const unsigned char *) d->visitor_secret,
					strlen(d->visitor_secret), clock_wall_ms() / 1000, &id, err,
					sizeof(err)) < 0)
			return refuse(no, 401, "unauthorized", "%s", err);
		/* The gateway names an anonymous visitor by address ("ip:ADDR"): charged as
		 * a visitor_ip would be. */
		if (strncmp(id.sub, "ip:", 3) == 0)
			snprintf(rq->quota_key, sizeof(rq->quota_key), "%s", id.sub);
		else
			snprintf(rq->quota_key, sizeof(rq->quota_key), "user:%s", id.sub);
		if (!rq->visitor[0])
			snprintf(rq->visitor, sizeof(rq->visitor), "%s", id.sub);
		rq->tier = id.tier;
	} else if (claim->ip && claim->ip[0]) {
		snprintf(rq->quota_key, sizeof(rq->quota_key), "ip:%s", claim->ip);
		rq->tier = LEASE_TIER_ANONYMOUS;
	}
	return 0;
}

int leases_admit(struct zgpud *d, const struct caller *who, struct lease_request *rq,
		 const struct visitor_claim *claim, struct refusal *no)
{
	if (who->token_bad)
		return refuse(
			no, 401, "unauthorized",
			"the token sent is neither an app's nor the admin token: send an app's "
			"token (zerogpu app list names the apps), or none");
	/* A process in an app's gated cgroup is that app: the operator put it there,
	 * and no token or name it sends changes that. */
	if (who->cgroup_app[0]) {
		const char *claimed = who->app[0] ? who->app : rq->app;
		if (strcmp(claimed, "default") != 0 && strcmp(claimed, who->cgroup_app) != 0)
			return refuse(
				no, 403, "forbidden",
				"the calling process runs in app '%s''s cgroup, so it may act "
				"as '%s' only, not as '%s'",
				who->cgroup_app, who->cgroup_app, claimed);
		snprintf(rq->app, sizeof(rq->app), "%s", who->cgroup_app);
		return identify_visitor(d, claim, rq, no);
	}
	/* An app token says which app this is; the request may only repeat it. */
	if (who->app[0]) {
		if (strcmp(rq->app, "default") != 0 && strcmp(rq->app, who->app) != 0)
			return refuse(no, 403, "forbidden",
				      "this app token is for app '%s', not '%s'", who->app,
				      rq->app);
		snprintf(rq->app, sizeof(rq->app), "%s", who->app);
	} else if (!may_act_as(d, who, rq->app)) {
		return refuse(no, 403, "forbidden",
			      "uid %u may not act as app '%s': [apps] in zerogpud's config says "
			      "who may, or send the app's token",
			      (unsigned) who->uid, rq->app);
	}
	return identify_visitor(d, claim, rq, no);
}

/* Reserves the request's cost from its visitor. */
static int reserve_quota(struct zgpud *d, struct lease_request *rq, struct refusal *no)
{
	if (!rq->quota_key[0])
		return 0;
	struct quota_account *a = record_visitor(d, rq->quota_key, rq->tier);
	if (!a)
		return refuse(no, 500, "internal", "cannot read the visitor's quota: %s",
			      d->ledger->error);
	a->tier = rq->tier; /* a token may have moved them to another tier */
	no->tier = a->tier;
	no->cost_ms = quota_cost_ms(&d->quota.cfg, rq);
	if (quota_reserve(&d->quota.cfg, a, no->cost_ms, clock_wall_ms(), &no->left_ms,
			  &no->wait_ms) < 0) {
		char msg[256];
		quota_message(msg, sizeof(msg), no->tier, no->cost_ms, no->left_ms, no->wait_ms);
		return refuse(no, 429, "quota", "%s", msg);
	}
	rq->reserved_ms = no->cost_ms;
	rq->quota_left = quota_left_share(&d->quota.cfg, a);
	events_quota(d, "reserved", rq->app, NULL, a, 0);
	return 0;
}

/* Gives back a reservation whose request never made it into the engine. */
static void unreserve(struct zgpud *d, const struct lease_request *rq)
{
	struct quota_account *a = rq->quota_key[0] ? quota_find(&d->quota, rq->quota_key) : NULL;
	if (a) {
		quota_settle(a, rq->reserved_ms, 0);
		events_quota(d, "settled", rq->app, NULL, a, 0);
	}
}

int leases_submit(struct zgpud *d, const struct caller *who, struct lease_request *rq,
		  struct lease_client *client, struct refusal *no)
{
	if (record_fault_active(&d->fault))
		return refuse_ledger_fault(d, no);
	if (reserve_quota(d, rq, no) < 0)
		return -1;
	struct lease_owner owner = leases_owner_of(who);
	leases_forget_dead_residents(d); /* what they held is free for this placement */
	int r = engine_submit(&d->engine, rq, &owner, client, clock_mono_ms());
	after_engine_call(d);
	if (r == 0)
		return 0;
	unreserve(d, rq);
	char why[LEASE_MESSAGE_MAX];
	if (r == -E2BIG && engine_infeasible(&d->engine, rq, why, sizeof(why)) < 0)
		return refuse(no, 400, "bad_request", "%s", why);
	if (r == -EINVAL && engine_infeasible(&d->engine, rq, why, sizeof(why)) < 0)
		return refuse(no, 503, "no_gpu", "No GPU was available: %s", why);
	return refuse(no, 500, "internal", "out of memory queueing the request");
}

int64_t leases_quota_left_ms(struct zgpud *d, const struct lease_request *rq)
{
	struct quota_account *a = rq->quota_key[0] ? record_visitor(d, rq->quota_key, rq->tier)
						   : NULL;
	return a ? quota_left_ms(&d->quota.cfg, a, clock_wall_ms()) : 0;
}

/* ------------------------------------------------------------------------
 * Attaching processes.
 * ------------------------------------------------------------------------ */

/*
 * The daemon kills what is attached when the lease ends, so a caller may
 * attach only a process it could have killed itself (docs/security.md):
 * - a caller whose uid is known (the Unix socket; a loopback TCP client the
 *   kernel vouched for when it connected): its own processes, root any;
 * - the admin token: any process;
 * - an app token: processes of the users its app may act for
 *   (`[apps] NAME users = ...`), root's only when listed;
 * and never zerogpud itself. A caller who is none of these (a TCP client of
 * unknown uid without such a token) attaches nothing. A process belongs to a
 * user when its real, effective and saved uids are all that user's.
 */
static int check_may_attach(struct zgpud *d, const struct caller *who,
			    const struct lease_process *p, struct refusal *no)
{
	if (p->pid == getpid() || p->pid == getpgrp())
		return refuse(
			no, 403, "forbidden",
			"process %d is zerogpud itself (or its group); attach the worker that "
			"uses the GPU",
			(int) p->pid);
	if (who->via_tcp && who->admin)
		return 0;
	uid_t owner;
	bool single_owner = proc_owner(p->pid, &owner) == 0;
	if (who->uid_known && (who->uid == 0 || (single_owner && owner == who->uid)))
		return 0;
	if (who->via_tcp && who->app[0] && single_owner &&
	    app_lists_uid(d->settings, who->app, owner))
		return 0;
	if (!single_owner)
		return refuse(no, 403, "forbidden",
			      "process %d runs with mixed user ids (a set-uid program); only root "
			      "may attach it",
			      (int) p->pid);
	if (who->uid_known)
		return refuse(no, 403, "forbidden",
			      "process %d belongs to uid %u, not to the caller (uid %u)",
			      (int) p->pid, (unsigned) owner, (unsigned) who->uid);
	if (who->app[0])
		return refuse(no, 403, "forbidden",
			      "process %d belongs to uid %u, and app '%s' may not act for that "
			      "user: [apps] %s users in zerogpud's config says who it may act for",
			      (int) p->pid, (unsigned) owner, who->app, who->app);
	return refuse(no, 403, "forbidden",
		      "zerogpud cannot tell which local user is calling (a TCP client from another "
		      "address, or one that closed its end), so it attaches no process for it: "
		      "call over the Unix socket or loopback, or send an app token");
}

/* The engine's reasons not to attach, in words. */
static int refuse_attach(struct refusal *no, int r, const struct lease *l)
{
	switch (r) {
	case -EBUSY:
		return refuse(no, 409, "not_granted",
			      "lease %s is still queued; attach once it is granted", l->id);
	case -EALREADY:
		return refuse(no, 409, "already_attached", "lease %s is already attached to pid %d",
			      l->id, (int) l->proc.pid);
	case -ETIME:
		return refuse(no, 409, "expired", "lease %s has passed its deadline", l->id);
	default:
		return refuse(no, 409, "conflict", "lease %s cannot take a process now", l->id);
	}
}

/* Holds pid (so that a reused pid is never mistaken for it) if the caller may act on
 * it; otherwise refuses, holding nothing. */
static int hold_callers_process(struct zgpud *d, const struct caller *who, pid_t pid,
				struct lease_process *p, struct refusal *no)
{
	if (proc_hold(pid, p) < 0)
		return refuse(no, 400, "no_such_process", "process %d does not exist", (int) pid);
	int r = check_may_attach(d, who, p, no);
	/* What was read about pid is about the held process only if it still runs. */
	if (r == 0 && !proc_alive(p))
		r = refuse(no, 400, "no_such_process", "process %d exited", (int) pid);
	if (r < 0)
		proc_drop(p);
	return r;
}

/* A resident worker attached to a lease (the Python package reuses its workers by
 * device, whatever the function) is the lease's from then on: its memory is counted
 * as the lease's, and it is never evicted under the lease. */
static void take_resident_into(struct zgpud *d, const struct lease *l)
{
	struct residency *t = &d->engine.residency;
	for (int i = 0; i < t->n; i++) {
		struct resident *r = &t->r[i];
		if (r->proc.pid != l->proc.pid || r->proc.start != l->proc.start)
			continue;
		log_info("lease %s: takes over app %s's resident worker %d", l->id, r->app,
			 (int) r->proc.pid);
		proc_drop(&r->proc);
		engine_resident_gone(&d->engine, r->id);
		return;
	}
}

int leases_attach(struct zgpud *d, const struct caller *who, struct lease *l, pid_t pid,
		  bool rebind, struct refusal *no)
{
	struct lease_process p;
	if (hold_callers_process(d, who, pid, &p, no) < 0)
		return -1;
	p.attached_by = leases_owner_of(who);
	bool already = l->state == LEASE_ATTACHED && l->proc.pid == pid && l->proc.start == p.start;
	/* The resident worker zerogpud attached at a warm grant gives way to the one the
	 * client attaches (a process of the app that has its own workers). */
	bool replaces_resident = l->warm && l->state == LEASE_ATTACHED && !already;
	struct lease_process old = LEASE_PROCESS_NONE;
	int r = 0;
	if (!already)
		r = rebind || replaces_resident
			    ? engine_rebind(&d->engine, l, &p, clock_mono_ms(), &old)
			    : engine_attach(&d->engine, l, &p, clock_mono_ms());
	if (r < 0 || already) {
		proc_drop(&p);
		return r < 0 ? refuse_attach(no, r, l) : 0;
	}
	if (old.pid > 0 && replaces_resident) {
		/* Its memory was counted as the lease's; it is the caller's own (the same
		 * principal kept it), so it goes. */
		log_info("lease %s: pid %d replaces the resident worker %d, which is killed", l->id,
			 (int) pid, (int) old.pid);
		(void) proc_kill(&old);
		proc_drop(&old);
		l->warm = false;
	} else if (old.pid > 0) {
		log_info("lease %s: pid %d replaces pid %d", l->id, (int) pid, (int) old.pid);
		proc_drop(&old);
	}
	take_resident_into(d, l);
	if (record_attach(d, l) < 0) {
		log_error("lease %s: cannot record the attach: %s", l->id, d->ledger->error);
		if (record_fault_active(&d->fault))
			return refuse_ledger_fault(d, no);
		return refuse(no, 500, "ledger", "zerogpud could not record the attach: %s",
			      d->ledger->error);
	}
	log_info("lease %s: attached pid %d (process group %d)", l->id, (int) pid,
		 (int) l->proc.pgid);
	return 0;
}

/* ------------------------------------------------------------------------
 * Joining an app's gated cgroup.
 * ------------------------------------------------------------------------ */

static int refuse_join(struct refusal *no, int r, const char *app, pid_t pid, const char *err)
{
	switch (r) {
	case -EOPNOTSUPP:
		return refuse(no, 409, "gate_off", "%s", err);
	case -EPERM:
		return refuse(no, 403, "forbidden", "%s", err);
	case -EBUSY:
		return refuse(no, 409, "parked", "%s", err);
	case -ESRCH:
		return refuse(no, 400, "no_such_process", "process %d exited", (int) pid);
	default:
		return refuse(no, 500, "internal",
			      "cannot move process %d into app %s's cgroup: %s", (int) pid, app,
			      err);
	}
}

int leases_join(struct zgpud *d, const struct caller *who, const char *app, pid_t pid,
		struct refusal *no)
{
	if (!request_app_name_valid(app))
		return refuse(no, 400, "bad_request",
			      "app name '%.80s' is not valid: use 1 to %d letters, digits, '.', "
			      "'_' or '-'",
			      app, LEASE_APP_MAX);
	/* Who may act as the app: the same rules as for a lease of it. */
	struct lease_request rq = {0};
	struct visitor_claim none = {NULL, NULL};
	snprintf(rq.app, sizeof(rq.app), "%s", app);
	if (leases_admit(d, who, &rq, &none, no) < 0)
		return -1;
	if (strcmp(rq.app, app) != 0) /* "default" as the token's or the cgroup's app */
		app = rq.app;
	if (pid == 1)
		return refuse(no, 403, "forbidden",
			      "process 1 is the machine's init: it never joins an app");
	/* The process will be gated as the app's: only one the caller could kill itself. */
	struct lease_process p;
	if (hold_callers_process(d, who, pid, &p, no) < 0)
		return -1;
	char err[600];
	int r = gate_join(&d->gate, app, pid, err, sizeof(err));
	if (r < 0)
		r = refuse_join(no, r, app, pid, err);
	else
		log_info("app %s: process %d joined its gated cgroup", app, (int) pid);
	proc_drop(&p);
	return r;
}

/* ------------------------------------------------------------------------
 * Ending.
 * ------------------------------------------------------------------------ */

enum lease_state leases_end(struct zgpud *d, struct lease *l, bool failed, int64_t *used_ms)
{
	leases_forget_dead_residents(d);
	enum lease_state final = engine_end(&d->engine, l, failed, clock_mono_ms(), used_ms);
	after_engine_call(d);
	return final;
}

/* What l's worker holds on its real GPUs, the most on any of them, as NVML says; 0 on
 * simulated devices, without NVML, or when NVML sees none (the lease's memory then). */
static uint64_t resident_size(struct zgpud *d, const struct lease *l)
{
	if (!d->gpu_memory)
		return 0;
	struct engine_device held[INV_MAX_DEVICES];
	int n = engine_lease_devices(&d->engine, l, held, INV_MAX_DEVICES);
	uint64_t most = 0;
	for (int i = 0; i < n; i++) {
		const struct device *dev = &d->inv.devices[held[i].device];
		uint64_t bytes;
		if (!dev->simulated &&
		    gpu_memory_of_process(d->gpu_memory, dev->uuid, l->proc.pid, &bytes) == 0 &&
		    bytes > most)
			most = bytes;
	}
	return most;
}

enum lease_state leases_release_keep(struct zgpud *d, struct lease *l, int64_t *used_ms, bool *kept)
{
	bool keep = l->state != LEASE_QUEUED && l->proc.pid > 0 && proc_alive(&l->proc);
	if (kept)
		*kept = keep;
	if (!keep)
		return leases_end(d, l, false, used_ms); /* nothing to keep */
	leases_forget_dead_residents(d);
	uint64_t bytes = resident_size(d, l);
	log_info("lease %s: app %s's worker %d stays resident (%s)", l->id, l->req.app,
		 (int) l->proc.pid, bytes ? "its memory as NVML says" : "the lease's memory");
	events_resident(d, "kept", l->req.app, l->proc.pid, lease_device_mask(d, l), bytes);
	enum lease_state final = engine_release_keep(&d->engine, l, bytes, clock_mono_ms(),
						     used_ms);
	after_engine_call(d);
	return final;
}

void leases_forget_dead_residents(struct zgpud *d)
{
	struct residency *t = &d->engine.residency;
	for (int i = 0; i < t->n;) {
		struct resident *r = &t->r[i];
		if (r->proc.pid > 0 && proc_alive(&r->proc)) {
			i++;
			continue;
		}
		log_info("app %s: resident worker %d has exited", r->app, (int) r->proc.pid);
		events_resident(d, "gone", r->app, r->proc.pid, r->devices, r->bytes);
		proc_drop(&r->proc);
		engine_resident_gone(&d->engine, r->id); /* the last entry moves into i */
	}
}

void leases_abandon(struct zgpud *d, struct lease *l)
{
	/* A request that never got a device is only noise in the log when many go at
	 * once; one that held devices is worth a line. */
	if (l->state == LEASE_QUEUED)
		log_debug("lease %s: client went away while queued; cancelling the request", l->id);
	else
		log_info("lease %s: client went away; releasing its devices", l->id);
	engine_abandon(&d->engine, l, clock_mono_ms());
	after_engine_call(d);
}
