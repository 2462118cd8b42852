/*
 * api_registry — the registry's routes, a protocol adapter like the others:
 * accounts, the apps they host and their tokens, usage, and quota resets.
 * Changes are for admins only (the route table says so) and go through
 * record.c; over TCP an app token sees its own app, and the account hosting
 * it, only.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/api.h"
#include "daemon/core/request.h"
#include "daemon/record.h"
#include "daemon/sys/ledger.h"

static bool valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char) *s) && !strchr("._-", *s))
			return false;
	return true;
}

/* Reads a JSON object body with exactly the string fields named; NULL after a reply. */
static json_t *object_body(struct call *c, const char *const *fields, size_t nfields)
{
	char *body;
	size_t len;
	if (http_take_body(c, &body, &len) < 0)
		return NULL;
	json_error_t je;
	json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	free(body);
	if (!json_is_object(o)) {
		http_reply_error(c, 400, "bad_request", "request body must be a JSON object%s%s",
				 o ? "" : ": ", o ? "" : je.text);
		json_decref(o);
		return NULL;
	}
	const char *key;
	json_t *v;
	json_object_foreach(o, key, v)
	{
		bool known = false;
		for (size_t i = 0; i < nfields; i++)
			known |= strcmp(key, fields[i]) == 0;
		if (!known || !json_is_string(v)) {
			http_reply_error(c, 400, "bad_request",
					 known ? "field '%s' must be a string"
					       : "unknown field '%.64s'",
					 key);
			json_decref(o);
			return NULL;
		}
	}
	for (size_t i = 0; i < nfields; i++) {
		if (!json_object_get(o, fields[i])) {
			http_reply_error(c, 400, "bad_request", "field '%s' is required",
					 fields[i]);
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

/* The ledger's refusals, and its disk's (full, read-only: record_fault.h): 503. */
static bool disk_fault(int r)
{
	return r == -ENOSPC || r == -EROFS || r == -EIO;
}

static int status_for(int r)
{
	return r == -EEXIST    ? 409
	       : r == -ENOENT  ? 404
	       : r == -EDQUOT  ? 403
	       : disk_fault(r) ? 503
			       : 500;
}

/* The code of an error status_for() did not name more precisely. */
static const char *ledger_code(int r)
{
	return disk_fault(r) ? "ledger_unavailable" : "ledger";
}

/*
 * A change's reply waits for the ledger's answer (a shared ledger answers from the
 * loop): the call is deferred, and its reply made by the change's `done`.
 */
struct pending {
	struct call *c; /* deferred (http_defer) */
	char name[65], other[65];
	char token[RECORD_APP_TOKEN_MAX];
	int tier;
	struct usage_sum *sum;
};

static struct pending *pending_new(struct call *c)
{
	struct pending *p = calloc(1, sizeof(*p));
	if (!p) {
		http_reply_error(c, 500, "internal", "out of memory");
		return NULL;
	}
	if (!(p->c = http_defer(c))) {
		free(p);
		return NULL;
	}
	return p;
}

/* Whether the reply can still be sent; frees p when not (the client hung up). */
static bool pending_live(struct pending *p)
{
	if (!http_deferred_gone(p->c))
		return true;
	http_deferred_done(p->c);
	free(p);
	return false;
}

static void pending_free(struct pending *p)
{
	http_deferred_done(p->c);
	free(p);
}

static void account_added(void *arg, int r)
{
	struct pending *p = arg;
	if (r >= 0)
		log_info("account %s (%s) added", p->name, p->other);
	if (!pending_live(p))
		return;
	if (r < 0)
		http_reply_error(p->c, status_for(r), r == -EEXIST ? "exists" : ledger_code(r),
				 "%s", p->c->d->ledger->error);
	else
		http_reply_json(p->c, 200,
				json_pack("{s:s, s:s}", "name", p->name, "kind", p->other));
	pending_free(p);
}

static void post_account(struct call *c)
{
	static const char *const fields[] = {"name", "kind"};
	json_t *o = object_body(c, fields, 2);
	if (!o)
		return;
	const char *name = json_string_value(json_object_get(o, "name"));
	const char *kind = json_string_value(json_object_get(o, "kind"));
	if (!valid_name(name)) {
		http_reply_error(
			c, 400, "bad_request",
			"account name '%.64s' is not valid: use 1 to 64 letters, digits, '.', "
			"'_' or '-'",
			name);
	} else if (ledger_kind_index(kind) < 0) {
		http_reply_error(c, 400, "bad_request",
				 "unknown account kind '%.32s': use " LEDGER_KINDS, kind);
	} else {
		struct pending *p = pending_new(c);
		if (p) {
			snprintf(p->name, sizeof(p->name), "%s", name);
			snprintf(p->other, sizeof(p->other), "%s", kind);
			record_account_add(c->d, name, kind, account_added, p);
		}
	}
	json_decref(o);
}

/*
 * A listing as one caller may see it: everything, or (an app token over TCP)
 * only its own app and the account that hosts it.
 */
struct listing {
	json_t *items;
	const char *app;  /* only this app, or NULL for all */
	char account[65]; /* only this account ("" for all), found from app */
};

static void account_item(const struct ledger_account *a, void *arg)
{
	struct listing *li = arg;
	if (li->app && strcmp(a->name, li->account) != 0)
		return;
	json_array_append_new(li->items,
			      json_pack("{s:s, s:s, s:i, s:I}", "name", a->name, "kind", a->kind,
					"apps", a->apps, "created_ms", (json_int_t) a->created_at));
}

static void app_item(const struct ledger_app *a, void *arg)
{
	struct listing *li = arg;
	if (li->app && strcmp(a->name, li->app) != 0)
		return;
	snprintf(li->account, sizeof(li->account), "%s", a->account);
	json_array_append_new(li->items,
			      json_pack("{s:s, s:s, s:I}", "name", a->name, "account", a->account,
					"created_ms", (json_int_t) a->created_at));
}

/* Lists the apps (or, with accounts, the accounts) the caller may see. */
static void reply_listing(struct call *c, bool accounts)
{
	struct ledger *lg = c->d->ledger;
	struct listing li = {.items = json_array(),
			     .app = caller_app_scoped(&c->who) ? c->who.app : NULL};
	int r = lg->ops->app_list(lg, app_item, &li);
	if (r == 0 && accounts) {
		json_decref(li.items);
		li.items = json_array();
		r = lg->ops->account_list(lg, account_item, &li);
	}
	if (r < 0) {
		json_decref(li.items);
		http_reply_error(c, 500, "ledger", "%s", lg->error);
		return;
	}
	http_reply_json(c, 200, json_pack("{s:o}", accounts ? "accounts" : "apps", li.items));
}

static void get_accounts(struct call *c)
{
	reply_listing(c, true);
}

static void app_added(void *arg, int r)
{
	struct pending *p = arg;
	if (r >= 0)
		log_info("app %s added to account %s", p->name, p->other);
	if (!pending_live(p))
		return;
	if (r < 0)
		http_reply_error(p->c, status_for(r),
				 r == -EDQUOT	? "hosting_limit"
				 : r == -EEXIST ? "exists"
				 : r == -ENOENT ? "no_such_account"
						: ledger_code(r),
				 "%s", p->c->d->ledger->error);
	else
		http_reply_json(p->c, 200,
				json_pack("{s:s, s:s, s:s}", "name", p->name, "account", p->other,
					  "token", p->token));
	pending_free(p);
}

static void post_app(struct call *c)
{
	static const char *const fields[] = {"name", "account"};
	json_t *o = object_body(c, fields, 2);
	if (!o)
		return;
	const char *name = json_string_value(json_object_get(o, "name"));
	const char *account = json_string_value(json_object_get(o, "account"));
	if (!valid_name(name)) {
		http_reply_error(c, 400, "bad_request",
				 "app name '%.64s' is not valid: use 1 to 64 letters, digits, '.', "
				 "'_' or '-'",
				 name);
	} else {
		struct pending *p = pending_new(c);
		if (p) {
			snprintf(p->name, sizeof(p->name), "%s", name);
			snprintf(p->other, sizeof(p->other), "%.64s", account);
			record_app_add(c->d, name, account, p->token, app_added, p);
		}
	}
	json_decref(o);
}

static void get_apps(struct call *c)
{
	reply_listing(c, false);
}

static void app_removed(void *arg, int r)
{
	struct pending *p = arg;
	if (r >= 0)
		log_info("app %s removed", p->name);
	if (!pending_live(p))
		return;
	if (r < 0)
		http_reply_error(p->c, status_for(r), r == -ENOENT ? "no_such_app" : ledger_code(r),
				 "%s", p->c->d->ledger->error);
	else
		http_reply_json(p->c, 200, json_pack("{s:s}", "removed", p->name));
	pending_free(p);
}

static void delete_app(struct call *c)
{
	struct pending *p = pending_new(c);
	if (!p)
		return;
	snprintf(p->name, sizeof(p->name), "%s", c->arg);
	record_app_remove(c->d, c->arg, app_removed, p);
}

static void quota_was_reset(void *arg, int r)
{
	struct pending *p = arg;
	struct call *c = p->c;
	if (r > 0)
		log_info("quota of %s reset", c->arg);
	if (!pending_live(p))
		return;
	if (r < 0)
		http_reply_error(c, status_for(r), ledger_code(r), "%s", c->d->ledger->error);
	else if (r == 0)
		http_reply_error(c, 404, "no_such_visitor", "no GPU use is recorded for '%.200s'",
				 c->arg);
	else
		http_reply_json(c, 200, json_pack("{s:s}", "reset", c->arg));
	pending_free(p);
}

static void post_quota_reset(struct call *c)
{
	/* The path is /v1/quota/VISITOR/reset: arg is the visitor. */
	struct pending *p = pending_new(c);
	if (p)
		record_visitor_reset(c->d, p->c->arg, quota_was_reset, p);
}

/* "since" as Unix seconds, or how long ago: 90m, 24h, 7d. */
static int parse_since(const char *v, int64_t now, int64_t *out)
{
	char *end;
	double n = strtod(v, &end);
	if (end == v || n < 0)
		return -1;
	if (*end == '\0') {
		*out = (int64_t) (n * 1000);
		return 0;
	}
	double unit = !strcmp(end, "s")	  ? 1
		      : !strcmp(end, "m") ? 60
		      : !strcmp(end, "h") ? 3600
		      : !strcmp(end, "d") ? 86400
					  : -1;
	if (unit < 0)
		return -1;
	*out = now - (int64_t) (n * unit * 1000);
	return 0;
}

struct usage_sum {
	int64_t since;
	json_t *apps, *overage;
	json_t *app; /* the item of the app the rows are at (they come ordered by app) */
	int64_t leases, used_ms, charged_ms, overage_ms;
};

static json_t *usage_json(int64_t leases, int64_t used_ms, int64_t charged_ms, int64_t overage_ms)
{
	return json_pack("{s:I, s:f, s:f, s:f}", "leases", (json_int_t) leases, "used_s",
			 (double) used_ms / 1000.0, "charged_s", (double) charged_ms / 1000.0,
			 "overage_s", (double) overage_ms / 1000.0);
}

/* Adds n to the number at key of o. */
static void add_to(json_t *o, const char *key, double n)
{
	json_t *v = json_object_get(o, key);
	if (json_is_integer(v))
		json_integer_set(v, json_integer_value(v) + (json_int_t) n);
	else
		json_real_set(v, json_number_value(v) + n);
}

/* One row per app and node: the app's item sums its nodes, which it lists. */
static void usage_item(const struct ledger_usage *u, void *arg)
{
	struct usage_sum *sum = arg;
	const char *at = sum->app ? json_string_value(json_object_get(sum->app, "app")) : NULL;
	if (!at || strcmp(at, u->app) != 0) {
		sum->app = usage_json(0, 0, 0, 0);
		json_object_set_new(sum->app, "app", json_string(u->app));
		json_object_set_new(sum->app, "nodes", json_array());
		json_array_append_new(sum->apps, sum->app);
	}
	json_t *node = usage_json(u->leases, u->used_ms, u->charged_ms, u->overage_ms);
	json_object_set_new(node, "node", json_string(u->node));
	json_array_append_new(json_object_get(sum->app, "nodes"), node);
	add_to(sum->app, "leases", (double) u->leases);
	add_to(sum->app, "used_s", (double) u->used_ms / 1000.0);
	add_to(sum->app, "charged_s", (double) u->charged_ms / 1000.0);
	add_to(sum->app, "overage_s", (double) u->overage_ms / 1000.0);
	sum->leases += u->leases;
	sum->used_ms += u->used_ms;
	sum->charged_ms += u->charged_ms;
	sum->overage_ms += u->overage_ms;
}

static void overage_item(const struct ledger_overage *o, void *arg)
{
	struct usage_sum *sum = arg;
	json_array_append_new(sum->overage,
			      json_pack("{s:s, s:s, s:I, s:f}", "visitor", o->visitor, "app",
					o->app, "leases", (json_int_t) o->leases, "overage_s",
					(double) o->overage_ms / 1000.0));
}

static void usage_summed(void *arg, int r)
{
	struct pending *p = arg;
	struct usage_sum *sum = p->sum;
	struct ledger *lg = p->c->d->ledger;
	if (http_deferred_gone(p->c)) {
		json_decref(sum->apps);
		json_decref(sum->overage);
	} else if (r < 0) {
		json_decref(sum->apps);
		json_decref(sum->overage);
		http_reply_error(p->c, status_for(r), ledger_code(r), "%s", lg->error);
	} else {
		http_reply_json(p->c, 200,
				json_pack("{s:I, s:s, s:o, s:o, s:o}", "since_ms",
					  (json_int_t) sum->since, "node", lg->node, "apps",
					  sum->apps, "overage", sum->overage, "total",
					  usage_json(sum->leases, sum->used_ms, sum->charged_ms,
						     sum->overage_ms)));
	}
	free(sum);
	pending_free(p);
}

static void get_usage(struct call *c)
{
	const char *app = evhttp_find_header(&c->query, "app");
	const char *since_text = evhttp_find_header(&c->query, "since");
	if (caller_app_scoped(&c->who)) {
		if (app && strcmp(app, c->who.app) != 0) {
			http_reply_error(
				c, 403, "forbidden",
				"this app token is for app '%s': it may read that app's usage "
				"only, not '%.64s'",
				c->who.app, app);
			return;
		}
		app = c->who.app;
	}
	int64_t now = clock_wall_ms(), since = now - 24 * 3600 * 1000;
	if (since_text && parse_since(since_text, now, &since) < 0) {
		http_reply_error(
			c, 400, "bad_request",
			"since must be Unix seconds or a time ago like 90m, 24h or 7d (got "
			"'%.32s')",
			since_text);
		return;
	}
	struct pending *p = pending_new(c);
	struct usage_sum *sum = p ? calloc(1, sizeof(*sum)) : NULL;
	if (!sum) {
		if (p) {
			http_reply_error(p->c, 500, "internal", "out of memory");
			pending_free(p);
		}
		return;
	}
	sum->apps = json_array();
	sum->overage = json_array();
	sum->since = since;
	p->sum = sum;
	record_usage(c->d, app, since, usage_item, overage_item, sum, usage_summed, p);
}

/* A signed-in visitor's key, "user:NAME"; replies 400 and returns false otherwise. */
static bool user_key(struct call *c)
{
	if (strncmp(c->arg, "user:", 5) == 0 && request_user_name_valid(c->arg + 5))
		return true;
	http_reply_error(c, 400, "bad_request",
			 "'%.80s' is not a signed-in visitor: use user:NAME (NAME: 1 to 64 "
			 "letters, digits, '.', '_', '-', '@' or '+'); anonymous visitors are "
			 "always anonymous",
			 c->arg);
	return false;
}

static void tier_was_set(void *arg, int r)
{
	struct pending *p = arg;
	struct call *c = p->c;
	const char *tier = lease_tier_name((enum lease_tier) p->tier);
	if (r >= 0)
		log_info("visitor %s: tier %s", c->arg, tier);
	if (!pending_live(p))
		return;
	if (r < 0)
		http_reply_error(c, status_for(r), ledger_code(r), "%s", c->d->ledger->error);
	else
		http_reply_json(c, 200, json_pack("{s:s, s:s}", "visitor", c->arg, "tier", tier));
	pending_free(p);
}

static void put_visitor_tier(struct call *c)
{
	static const char *const fields[] = {"tier"};
	if (!user_key(c))
		return;
	json_t *o = object_body(c, fields, 1);
	if (!o)
		return;
	const char *name = json_string_value(json_object_get(o, "tier"));
	int tier = -1;
	for (int t = 0; t < LEASE__TIER_COUNT; t++)
		if (t != LEASE_TIER_ANONYMOUS &&
		    strcmp(name, lease_tier_name((enum lease_tier) t)) == 0)
			tier = t;
	if (tier < 0) {
		http_reply_error(c, 400, "bad_request",
				 "tier must be free, pro or enterprise, not '%.32s'", name);
		json_decref(o);
		return;
	}
	json_decref(o);
	struct pending *p = pending_new(c);
	if (!p)
		return;
	p->tier = tier;
	record_visitor_tier_set(c->d, p->c->arg, (enum lease_tier) tier, tier_was_set, p);
}

static void get_visitor_tier(struct call *c)
{
	enum lease_tier tier;
	if (!user_key(c))
		return;
	if (record_visitor_tier(c->d, c->arg, &tier) < 0) {
		http_reply_error(c, 500, "ledger", "%s", c->d->ledger->error);
		return;
	}
	http_reply_json(c, 200,
			json_pack("{s:s, s:s}", "visitor", c->arg, "tier", lease_tier_name(tier)));
}

const struct route api_registry_routes[] = {
	{.method = EVHTTP_REQ_GET, .pattern = "/v1/usage", .handler = get_usage},
	{.method = EVHTTP_REQ_GET, .pattern = "/v1/accounts", .handler = get_accounts},
	{.method = EVHTTP_REQ_POST,
	 .pattern = "/v1/accounts",
	 .handler = post_account,
	 .admin = true},
	{.method = EVHTTP_REQ_GET, .pattern = "/v1/apps", .handler = get_apps},
	{.method = EVHTTP_REQ_POST, .pattern = "/v1/apps", .handler = post_app, .admin = true},
	{.method = EVHTTP_REQ_DELETE,
	 .pattern = "/v1/apps/*",
	 .handler = delete_app,
	 .admin = true},
	{.method = EVHTTP_REQ_POST,
	 .pattern = "/v1/quota/*/reset",
	 .handler = post_quota_reset,
	 .admin = true},
	{.method = EVHTTP_REQ_PUT,
	 .pattern = "/v1/visitors/*/tier",
	 .handler = put_visitor_tier,
	 .admin = true},
	{.method = EVHTTP_REQ_GET,
	 .pattern = "/v1/visitors/*/tier",
	 .handler = get_visitor_tier,
	 .admin = true},
	{.pattern = NULL},
};
