#include "daemon/record.h"

#include <errno.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/sys/ledger.h"
#include "daemon/sys/proc.h"
#include "daemon/leases.h"
#include "daemon/zgpud.h"

static void devices_text(const struct zgpud *d, const struct lease *l, char *out, size_t size)
{
	struct engine_device held[INV_MAX_DEVICES];
	int n = engine_lease_devices(&d->engine, l, held, INV_MAX_DEVICES);
	size_t len = 0;
	out[0] = '\0';
	for (int i = 0; i < n && len < size; i++) {
		int w = snprintf(out + len, size - len, "%s%s", i ? "," : "",
				 d->inv.devices[held[i].device].uuid);
		if (w < 0)
			break;
		len += (size_t) w;
	}
}

/* A write's result; a failure of the disk (full, read-only, I/O) is a fault
 * (record_fault.h). A refusal by the ledger's rules (a name taken) is not. */
static int written(struct zgpud *d, int r)
{
	if (r == -ENOSPC || r == -EROFS || r == -EIO)
		record_fault_enter(d);
	return r;
}

/* A grant on its way to a shared ledger: the lease by its id, as it may end first. */
struct grant_call {
	struct zgpud *d;
	char id[LEASE_ID_LEN + 1];
};

/* A shared ledger's answer to a grant: the lease service gives it or fails it. */
static void on_grant_written(void *arg, int r, const struct ledger_visitor *v, const char *why)
{
	struct grant_call *k = arg;
	if (r == -EIO && k->d->ledger->ops->probe(k->d->ledger) < 0)
		record_fault_enter(k->d);
	leases_grant_written(k->d, k->id, r, v, why);
	free(k);
}

int record_grant(struct zgpud *d, const struct lease *l)
{
	if (record_fault_active(&d->fault))
		return -EAGAIN; /* leases_submit refuses first; a queued request meets this */
	char devices[LEDGER_DEVICES_MAX];
	devices_text(d, l, devices, sizeof(devices));
	struct ledger_lease row = {
		.id = l->id,
		.app = l->req.app,
		.task = l->req.task,
		.visitor = l->req.visitor,
		.tier = lease_tier_name(l->req.tier),
		.size = lease_size_name(l->req.size),
		.state = "granted",
		.devices = devices,
		.quota_key = l->req.quota_key,
		.gpus = l->req.gpus,
		.requested_ms = l->req.duration_ms,
		.started_at = zgpud_wall_ms(d, l->granted_ms),
	};
	if (!ledger_shared(d->ledger))
		return written(d, d->ledger->ops->lease_granted(d->ledger, &row));
	const struct quota_config *qc = &d->quota.cfg;
	struct ledger_grant_quota q = {
		.key = l->req.quota_key,
		.cost_ms = l->req.reserved_ms,
		.limit_ms = qc->daily_ms[l->req.tier],
		.window_ms = qc->window_ms,
		.overage = qc->overage[l->req.tier],
	};
	struct grant_call *ctx = malloc(sizeof(*ctx));
	if (!ctx) {
		snprintf(d->ledger->error, sizeof(d->ledger->error), "out of memory");
		return -ENOMEM;
	}
	ctx->d = d;
	memcpy(ctx->id, l->id, sizeof(ctx->id));
	int r = d->ledger->ops->grant_async(d->ledger, &row, &q, on_grant_written, ctx);
	if (r < 0) {
		free(ctx);
		if (d->ledger->ops->probe(d->ledger) < 0)
			record_fault_enter(d);
		return r;
	}
	return 1;
}

int record_attach(struct zgpud *d, const struct lease *l)
{
	return written(d, d->ledger->ops->lease_attached(d->ledger, l->id, l->proc.pid,
							 l->proc.pgid, l->proc.start));
}

static void visitor_row(const struct quota_config *qc, struct ledger_visitor *v,
			const struct quota_account *a)
{
	v->key = a->key;
	v->tier = lease_tier_name(a->tier);
	v->window_start = a->window_start;
	v->used_ms = a->used_ms;
	v->limit_ms = qc->daily_ms[a->tier];
	v->overage = qc->overage[a->tier];
}

int record_end(struct zgpud *d, const struct lease *l, int64_t now, const struct quota_account *a)
{
	int64_t used = now - l->granted_ms, charged = quota_charge_ms(&d->quota.cfg, l, used);
	const char *state = lease_state_name(l->state);
	struct ledger_visitor v;
	if (a)
		visitor_row(&d->quota.cfg, &v, a);
	/* In a fault, ends wait in order behind those already waiting; a shared ledger
	 * keeps its own in order, and writes them once it is reachable again. */
	bool queues = ledger_shared(d->ledger);
	if ((queues || !record_fault_active(&d->fault)) &&
	    written(d, d->ledger->ops->lease_ended(d->ledger, l->id, state, zgpud_wall_ms(d, now),
						   used, charged, a ? &v : NULL)) == 0)
		return 0;
	if (!record_fault_active(&d->fault))
		return -EIO; /* refused by the ledger's rules: nothing to wait for */
	int r = record_fault_keep_end(d, l->id, state, zgpud_wall_ms(d, now), used, charged,
				      a ? &v : NULL);
	return r < 0 ? r : -EAGAIN;
}

static enum lease_tier tier_named(const char *name)
{
	for (int t = 0; t < LEASE__TIER_COUNT; t++)
		if (strcmp(name, lease_tier_name((enum lease_tier) t)) == 0)
			return (enum lease_tier) t;
	return LEASE_TIER_ANONYMOUS;
}

struct quota_account *record_visitor(struct zgpud *d, const char *key, enum lease_tier tier)
{
	struct quota_account *a = quota_find(&d->quota, key);
	if (a)
		return a;
	struct ledger_visitor v = {0};
	int found = d->ledger->ops->visitor_load(d->ledger, key, &v);
	if (found < 0)
		return NULL;
	return found ? quota_add(&d->quota, key, tier_named(v.tier), v.window_start, v.used_ms)
		     : quota_add(&d->quota, key, tier, 0, 0);
}

/* An open lease from the previous run, copied out of the ledger's cursor. */
struct open_lease {
	char id[LEASE_ID_LEN + 1], app[LEASE_APP_MAX + 1], quota_key[LEASE_TEXT_MAX + 9];
	bool xlarge;
	pid_t pid, pgid;
	uint64_t pid_start;
	int64_t started_at, requested_ms;
};

struct open_list {
	struct open_lease *items;
	size_t n, cap;
	bool oom;
};

static void collect_open(const struct ledger_lease *row, void *arg)
{
	struct open_list *list = arg;
	if (list->n == list->cap) {
		size_t cap = list->cap ? list->cap * 2 : 16;
		struct open_lease *items = realloc(list->items, cap * sizeof(*items));
		if (!items) {
			list->oom = true;
			return;
		}
		list->items = items;
		list->cap = cap;
	}
	struct open_lease *o = &list->items[list->n++];
	snprintf(o->id, sizeof(o->id), "%s", row->id);
	snprintf(o->app, sizeof(o->app), "%s", row->app);
	snprintf(o->quota_key, sizeof(o->quota_key), "%s", row->quota_key ? row->quota_key : "");
	o->xlarge = strcmp(row->size, "xlarge") == 0;
	o->pid = row->pid;
	o->pgid = row->pgid;
	o->pid_start = row->pid_start;
	o->started_at = row->started_at;
	o->requested_ms = row->requested_ms;
}

/* Kills what the previous run left attached and records the lease as expired. */
static int settle(struct zgpud *d, const struct open_lease *o, int64_t now_wall, int64_t grace_ms)
{
	/* Kill only the very process that was attached, not a newcomer with its pid. */
	int k = o->pid > 0 ? proc_kill_started(o->pid, o->pgid, o->pid_start) : -ESRCH;
	if (k >= 0)
		log_info("lease %s: killed %s %d, left running by the previous zerogpud", o->id,
			 k == 1 ? "process group" : "process", (int) o->pid);
	/* It ran until its deadline and grace at most; the charge follows the usual rule. */
	int64_t used = now_wall - o->started_at;
	if (used > o->requested_ms + grace_ms)
		used = o->requested_ms + grace_ms;
	if (used < 0)
		used = 0;
	struct lease l = {.state = LEASE_EXPIRED, .proc = {.pid = o->pid}};
	l.req.size = o->xlarge ? LEASE_SIZE_XLARGE : LEASE_SIZE_LARGE;
	int64_t charged = quota_charge_ms(&d->quota.cfg, &l, used);
	/* The visitor pays for it as for any lease: the quota stays spent. */
	struct quota_account *a = o->quota_key[0]
					  ? record_visitor(d, o->quota_key, LEASE_TIER_ANONYMOUS)
					  : NULL;
	struct ledger_visitor v;
	if (a) {
		quota_roll(&d->quota.cfg, a, now_wall);
		if (!a->window_start)
			a->window_start = now_wall;
		quota_settle(a, 0, charged);
		visitor_row(&d->quota.cfg, &v, a);
	}
	if (d->ledger->ops->lease_ended(d->ledger, o->id, "expired", now_wall, used, charged,
					a ? &v : NULL) < 0) {
		log_error("lease %s: cannot settle it: %s", o->id, d->ledger->error);
		return -EIO;
	}
	log_info("lease %s: settled as expired after a restart (app %s, used %.1f s)", o->id,
		 o->app, (double) used / 1000.0);
	return 0;
}

/* What a shared ledger says a visitor has used, after a grant or an end anywhere: the
 * book follows (its own reservations stay its own). */
static void on_visitor_seen(void *arg, const char *key, int64_t window_start, int64_t used_ms)
{
	struct zgpud *d = arg;
	struct quota_account *a = quota_find(&d->quota, key);
	if (!a)
		return;
	a->window_start = window_start;
	a->used_ms = used_ms;
}

static void on_ledger_down(void *arg, const char *why)
{
	struct zgpud *d = arg;
	(void) why; /* the ledger's error says it */
	record_fault_enter(d);
}

int record_serve(struct zgpud *d)
{
	struct ledger_hooks hooks = {
		.visitor_seen = on_visitor_seen,
		.down = on_ledger_down,
		.arg = d,
	};
	return ledger_shared(d->ledger) ? d->ledger->ops->serve(d->ledger, d->base, &hooks) : 0;
}

void record_flush(struct zgpud *d, int64_t timeout_ms)
{
	if (d->ledger && ledger_shared(d->ledger) &&
	    d->ledger->ops->flush(d->ledger, timeout_ms) < 0)
		log_error("the ledger could not take every lease end within %lld ms (%s): the next "
			  "start settles the rest as expired",
			  (long long) timeout_ms, d->ledger->error);
}

int record_recover(struct zgpud *d, int64_t grace_ms)
{
	struct open_list list = {0};
	int r = d->ledger->ops->unsettled(d->ledger, collect_open, &list);
	if (r == 0 && list.oom)
		r = -ENOMEM;
	int settled = 0;
	int64_t now_wall = clock_wall_ms();
	for (size_t i = 0; r == 0 && i < list.n; i++)
		if (settle(d, &list.items[i], now_wall, grace_ms) == 0)
			settled++;
	free(list.items);
	if (r < 0)
		return r;
	return settled == (int) list.n ? settled : -EIO;
}

/* ------------------------------------------------------------------------
 * The registry: accounts, apps and their tokens.
 * ------------------------------------------------------------------------ */

#define APP_TOKEN_PREFIX "zgpa_"

static void sha256_hex(const char *text, char out[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *) text, strlen(text), md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

int record_app_for_token(struct zgpud *d, const char *token, char *app, size_t size)
{
	if (strncmp(token, APP_TOKEN_PREFIX, strlen(APP_TOKEN_PREFIX)) != 0)
		return 0;
	char hash[65];
	sha256_hex(token, hash);
	return d->ledger->ops->app_by_token(d->ledger, hash, app, size);
}

/* A registry change on its way: the ledger's answer goes through written() (a shared
 * ledger out of reach is a fault, as a full disk is) to the caller. */
struct registry_call {
	struct zgpud *d;
	record_done_fn done;
	void *arg;
	char reset_key[QUOTA_KEY_MAX + 1]; /* a visitor whose window starts over, or "" */
};

static void registry_answered(void *arg, int r)
{
	struct registry_call *k = arg;
	r = written(k->d, r);
	if (r >= 0 && k->reset_key[0]) {
		struct quota_account *a = quota_find(&k->d->quota, k->reset_key);
		if (a) {
			quota_reset(a);
			r = 1;
		}
	}
	k->done(k->arg, r);
	free(k);
}

/* The call's context, or NULL having answered done with -ENOMEM. */
static struct registry_call *registry_call(struct zgpud *d, record_done_fn done, void *arg)
{
	struct registry_call *k = calloc(1, sizeof(*k));
	if (!k) {
		snprintf(d->ledger->error, sizeof(d->ledger->error), "out of memory");
		done(arg, -ENOMEM);
		return NULL;
	}
	k->d = d;
	k->done = done;
	k->arg = arg;
	return k;
}

/* How a change went: at once (a synchronous ledger, or a refusal before any query),
 * or later through registry_answered. */
static void registry_started(struct registry_call *k, int r, bool async)
{
	if (!async || r < 0)
		registry_answered(k, r);
}

void record_account_add(struct zgpud *d, const char *name, const char *kind, record_done_fn done,
			void *arg)
{
	struct registry_call *k = registry_call(d, done, arg);
	const struct ledger_ops *ops = d->ledger->ops;
	if (!k)
		return;
	int64_t now = clock_wall_ms();
	if (ledger_shared(d->ledger))
		registry_started(
			k, ops->account_add_async(d->ledger, name, kind, now, registry_answered, k),
			true);
	else
		registry_started(k, ops->account_add(d->ledger, name, kind, now), false);
}

void record_app_add(struct zgpud *d, const char *name, const char *account,
		    char token[RECORD_APP_TOKEN_MAX], record_done_fn done, void *arg)
{
	unsigned char raw[24];
	char hash[65];
	struct registry_call *k = registry_call(d, done, arg);
	const struct ledger_ops *ops = d->ledger->ops;
	if (!k)
		return;
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t) sizeof(raw)) {
		snprintf(d->ledger->error, sizeof(d->ledger->error),
			 "no randomness for the app token");
		registry_started(k, -EPROTO, false);
		return;
	}
	int n = sprintf(token, APP_TOKEN_PREFIX);
	for (size_t i = 0; i < sizeof(raw); i++)
		n += sprintf(token + n, "%02x", raw[i]);
	sha256_hex(token, hash);
	int64_t now = clock_wall_ms();
	if (ledger_shared(d->ledger))
		registry_started(k,
				 ops->app_add_async(d->ledger, name, account, hash,
						    d->hosting_limit, now, registry_answered, k),
				 true);
	else
		registry_started(
			k, ops->app_add(d->ledger, name, account, hash, d->hosting_limit, now),
			false);
}

void record_app_remove(struct zgpud *d, const char *name, record_done_fn done, void *arg)
{
	struct registry_call *k = registry_call(d, done, arg);
	const struct ledger_ops *ops = d->ledger->ops;
	if (!k)
		return;
	if (ledger_shared(d->ledger))
		registry_started(k, ops->app_remove_async(d->ledger, name, registry_answered, k),
				 true);
	else
		registry_started(k, ops->app_remove(d->ledger, name), false);
}

void record_visitor_tier_set(struct zgpud *d, const char *key, enum lease_tier tier,
			     record_done_fn done, void *arg)
{
	struct registry_call *k = registry_call(d, done, arg);
	const struct ledger_ops *ops = d->ledger->ops;
	if (!k)
		return;
	const char *name = lease_tier_name(tier);
	int64_t now = clock_wall_ms();
	if (ledger_shared(d->ledger))
		registry_started(k,
				 ops->visitor_tier_set_async(d->ledger, key, name, now,
							     registry_answered, k),
				 true);
	else
		registry_started(k, ops->visitor_tier_set(d->ledger, key, name, now), false);
}

int record_visitor_tier(struct zgpud *d, const char *key, enum lease_tier *tier)
{
	char name[16];
	int r = d->ledger->ops->visitor_tier_get(d->ledger, key, name, sizeof(name));
	*tier = LEASE_TIER_FREE;
	if (r == 1)
		for (int t = 0; t < LEASE__TIER_COUNT; t++)
			if (strcmp(name, lease_tier_name((enum lease_tier) t)) == 0)
				*tier = (enum lease_tier) t;
	return r < 0 ? r : 0;
}

void record_visitor_reset(struct zgpud *d, const char *key, record_done_fn done, void *arg)
{
	struct registry_call *k = registry_call(d, done, arg);
	const struct ledger_ops *ops = d->ledger->ops;
	if (!k)
		return;
	snprintf(k->reset_key, sizeof(k->reset_key), "%s", key);
	if (ledger_shared(d->ledger))
		registry_started(k, ops->visitor_reset_async(d->ledger, key, registry_answered, k),
				 true);
	else
		registry_started(k, ops->visitor_reset(d->ledger, key), false);
}

void record_usage(struct zgpud *d, const char *app, int64_t since,
		  void (*usage_fn)(const struct ledger_usage *u, void *arg),
		  void (*overage_fn)(const struct ledger_overage *o, void *arg), void *fn_arg,
		  record_done_fn done, void *arg)
{
	struct ledger *lg = d->ledger;
	if (ledger_shared(lg)) {
		int r = lg->ops->usage_async(lg, app, since, usage_fn, overage_fn, fn_arg, done,
					     arg);
		if (r < 0)
			done(arg, r);
		return;
	}
	int r = lg->ops->usage(lg, app, since, usage_fn, fn_arg);
	if (r == 0)
		r = lg->ops->overage(lg, app, since, overage_fn, fn_arg);
	done(arg, r);
}
