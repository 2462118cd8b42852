#include "daemon/api.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/auth.h"
#include "daemon/proc.h"
#include "daemon/record.h"

bool api_uid_may_act_as(const struct settings *s, uid_t uid, const char *app)
{
	if (s->napp_users == 0)
		return true;
	for (int i = 0; i < s->napp_users; i++) {
		if (strcmp(s->app_users[i].app, app) != 0)
			continue;
		for (int k = 0; k < s->app_users[i].nuids; k++)
			if (s->app_users[i].uids[k] == uid)
				return true;
	}
	return false;
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
 * The daemon kills what is attached when the deadline passes, so a caller may
 * only attach what it could kill itself: its own processes (root: any), and
 * never zerogpud itself. On TCP the caller's uid is known for loopback
 * connections; one that cannot be known (a remote peer) may not attach root's
 * processes. The admin token is trusted like root.
 */
static int check_pid_owner(struct call *c, pid_t pid)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/%d", (int) pid);
	if (stat(path, &st) < 0) {
		http_reply_error(c, 400, "no_such_process", "process %d does not exist", (int) pid);
		return -ESRCH;
	}
	if (pid == getpid() || pid == getpgrp()) {
		http_reply_error(c, 403, "forbidden",
				 "process %d is zerogpud itself (or its group); attach the worker "
				 "that uses the GPU",
				 (int) pid);
		return -EPERM;
	}
	if (c->via_tcp && c->admin)
		return 0;
	uid_t caller;
	if (http_caller_uid(c, &caller) < 0) {
		if (st.st_uid != 0)
			return 0;
		http_reply_error(c, 403, "forbidden",
				 "process %d belongs to root, and a remote caller may not have it "
				 "killed",
				 (int) pid);
		return -EPERM;
	}
	if (caller != 0 && st.st_uid != caller) {
		http_reply_error(c, 403, "forbidden",
				 "process %d belongs to uid %u, not to the caller (uid %u)",
				 (int) pid, (unsigned) st.st_uid, (unsigned) caller);
		return -EPERM;
	}
	return 0;
}

int api_attach(struct call *c, struct lease *l, pid_t pid, bool rebind)
{
	int r = check_pid_owner(c, pid);
	if (r < 0)
		return r;
	pid_t pgid = getpgid(pid);
	uint64_t pid_start = 0;
	(void) proc_start_time(pid, &pid_start);
	if (rebind && l->state == LEASE_ATTACHED && l->pid != pid) {
		log_info("lease %s: pid %d replaces pid %d", l->id, (int) pid, (int) l->pid);
		l->pid = pid;
		l->pgid = pgid > 0 ? pgid : pid;
	} else {
		r = engine_attach(&c->d->engine, l, pid, pgid > 0 ? pgid : pid, clock_mono_ms());
		if (r < 0)
			return r;
	}
	l->pid_start = pid_start;
	if (record_attach(c->d, l, pid_start) < 0) {
		log_error("lease %s: cannot record the attach: %s", l->id, c->d->ledger->error);
		http_reply_error(c, 500, "ledger", "zerogpud could not record the attach: %s",
				 c->d->ledger->error);
		return -EIO;
	}
	log_info("lease %s: attached pid %d (process group %d)", l->id, (int) pid, (int) l->pgid);
	return 0;
}
