#include "daemon/api.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/core/auth.h"
#include "daemon/sys/proc.h"
#include "daemon/record.h"

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

bool api_uid_may_act_as(const struct settings *s, uid_t uid, const char *app)
{
	return s->napp_users == 0 || app_lists_uid(s, app, uid);
}

int api_identify_visitor(struct call *c, const char *token, const char *ip,
			 struct lease_request *rq)
{
	struct zgpud *d = c->d;
	if (token && token[0]) {
		struct visitor_identity id;
		char err[256];
		if (!d->visitor_secret[0]) {
			http_reply_error(c, 401, "unauthorized",
					 "this zerogpud verifies no visitor tokens: set [auth] "
					 "visitor_secret (or --visitor-secret-file)");
			return -EACCES;
		}
		if (auth_verify_visitor(token, (const unsigned char *) d->visitor_secret,
					strlen(d->visitor_secret), clock_wall_ms() / 1000, &id, err,
					sizeof(err)) < 0) {
			http_reply_error(c, 401, "unauthorized", "%s", err);
			return -EACCES;
		}
		snprintf(rq->quota_key, sizeof(rq->quota_key), "user:%s", id.sub);
		if (!rq->visitor[0])
			snprintf(rq->visitor, sizeof(rq->visitor), "%s", id.sub);
		rq->tier = id.tier;
	} else if (ip && ip[0]) {
		snprintf(rq->quota_key, sizeof(rq->quota_key), "ip:%s", ip);
		rq->tier = LEASE_TIER_ANONYMOUS;
	}
	return 0;
}

int api_reserve_quota(struct call *c, struct lease_request *rq, struct quota_refusal *no)
{
	struct zgpud *d = c->d;
	if (!rq->quota_key[0])
		return 0;
	struct quota_account *a = record_visitor(d, rq->quota_key, rq->tier);
	if (!a) {
		http_reply_error(c, 500, "internal", "cannot read the visitor's quota: %s",
				 d->ledger->error);
		return -EIO;
	}
	a->tier = rq->tier; /* a token may have moved them to another tier */
	no->tier = a->tier;
	no->cost_ms = quota_cost_ms(&d->quota.cfg, rq);
	if (quota_reserve(&d->quota.cfg, a, no->cost_ms, clock_wall_ms(), &no->left_ms,
			  &no->wait_ms) < 0)
		return -EDQUOT;
	rq->reserved_ms = no->cost_ms;
	rq->quota_left = quota_left_share(&d->quota.cfg, a);
	return 0;
}

void api_unreserve(struct zgpud *d, const struct lease_request *rq)
{
	struct quota_account *a = rq->quota_key[0] ? quota_find(&d->quota, rq->quota_key) : NULL;
	if (a)
		quota_settle(a, rq->reserved_ms, 0);
}

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
static int check_may_attach(struct call *c, const struct lease_process *p)
{
	if (p->pid == getpid() || p->pid == getpgrp()) {
		http_reply_error(c, 403, "forbidden",
				 "process %d is zerogpud itself (or its group); attach the worker "
				 "that uses the GPU",
				 (int) p->pid);
		return -EPERM;
	}
	if (c->via_tcp && c->admin)
		return 0;
	uid_t owner;
	bool single_owner = proc_owner(p->pid, &owner) == 0;
	if (c->uid_known && (c->uid == 0 || (single_owner && owner == c->uid)))
		return 0;
	if (c->via_tcp && c->app[0] && single_owner && app_lists_uid(c->d->settings, c->app, owner))
		return 0;
	if (!single_owner) {
		http_reply_error(c, 403, "forbidden",
				 "process %d runs with mixed user ids (a set-uid program); only "
				 "root may attach it",
				 (int) p->pid);
	} else if (c->uid_known) {
		http_reply_error(c, 403, "forbidden",
				 "process %d belongs to uid %u, not to the caller (uid %u)",
				 (int) p->pid, (unsigned) owner, (unsigned) c->uid);
	} else if (c->app[0]) {
		http_reply_error(
			c, 403, "forbidden",
			"process %d belongs to uid %u, and app '%s' may not act for that "
			"user: [apps] %s users in zerogpud's config says who it may act for",
			(int) p->pid, (unsigned) owner, c->app, c->app);
	} else {
		http_reply_error(
			c, 403, "forbidden",
			"zerogpud cannot tell which local user is calling (a TCP client "
			"from another address, or one that closed its end), so it attaches "
			"no process for it: call over the Unix socket or loopback, or send "
			"an app token");
	}
	return -EPERM;
}

int api_attach(struct call *c, struct lease *l, pid_t pid, bool rebind)
{
	struct lease_process p;
	int r = proc_hold(pid, &p);
	if (r < 0) {
		http_reply_error(c, 400, "no_such_process", "process %d does not exist", (int) pid);
		return -ESRCH;
	}
	r = check_may_attach(c, &p);
	/* What was read about pid is about the held process only if it still runs. */
	if (r == 0 && !proc_alive(&p)) {
		http_reply_error(c, 400, "no_such_process", "process %d exited", (int) pid);
		r = -ESRCH;
	}
	if (r < 0) {
		proc_drop(&p);
		return r;
	}
	p.attached_by = http_caller(c);
	bool already = l->state == LEASE_ATTACHED && l->proc.pid == pid && l->proc.start == p.start;
	struct lease_process old = LEASE_PROCESS_NONE;
	if (already)
		r = 0;
	else if (rebind)
		r = engine_rebind(&c->d->engine, l, &p, clock_mono_ms(), &old);
	else
		r = engine_attach(&c->d->engine, l, &p, clock_mono_ms());
	if (r < 0 || already) {
		proc_drop(&p);
		return r;
	}
	if (old.pid > 0) {
		log_info("lease %s: pid %d replaces pid %d", l->id, (int) pid, (int) old.pid);
		proc_drop(&old);
	}
	if (record_attach(c->d, l) < 0) {
		log_error("lease %s: cannot record the attach: %s", l->id, c->d->ledger->error);
		http_reply_error(c, 500, "ledger", "zerogpud could not record the attach: %s",
				 c->d->ledger->error);
		return -EIO;
	}
	log_info("lease %s: attached pid %d (process group %d)", l->id, (int) pid,
		 (int) l->proc.pgid);
	return 0;
}
