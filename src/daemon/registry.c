/* The registry's routes: accounts, apps, and quota resets; changes are for admins only. */
#include "daemon/registry.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/http.h"
#include "daemon/sys/ledger.h"
#include "daemon/core/quota.h"

#define APP_TOKEN_PREFIX "zgpa_"

static void sha256_hex(const char *text, char out[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *) text, strlen(text), md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

int registry_app_for_token(struct zgpud *d, const char *token, char *app, size_t size)
{
	if (strncmp(token, APP_TOKEN_PREFIX, strlen(APP_TOKEN_PREFIX)) != 0)
		return 0;
	char hash[65];
	sha256_hex(token, hash);
	return d->ledger->ops->app_by_token(d->ledger, hash, app, size);
}

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

static int status_for(int r)
{
	return r == -EEXIST ? 409 : r == -ENOENT ? 404 : r == -EDQUOT ? 403 : 500;
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
		int r = c->d->ledger->ops->account_add(c->d->ledger, name, kind, clock_wall_ms());
		if (r < 0) {
			http_reply_error(c, status_for(r), r == -EEXIST ? "exists" : "ledger", "%s",
					 c->d->ledger->error);
		} else {
			log_info("account %s (%s) added", name, kind);
			http_reply_json(c, 200,
					json_pack("{s:s, s:s}", "name", name, "kind", kind));
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
	struct listing li = {.items = json_array(), .app = http_app_scoped(c) ? c->app : NULL};
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

static void post_app(struct call *c)
{
	static const char *const fields[] = {"name", "account"};
	json_t *o = object_body(c, fields, 2);
	if (!o)
		return;
	const char *name = json_string_value(json_object_get(o, "name"));
	const char *account = json_string_value(json_object_get(o, "account"));
	unsigned char raw[24];
	char token[sizeof(APP_TOKEN_PREFIX) + 2 * sizeof(raw)], hash[65];
	if (!valid_name(name)) {
		http_reply_error(c, 400, "bad_request",
				 "app name '%.64s' is not valid: use 1 to 64 letters, digits, '.', "
				 "'_' or '-'",
				 name);
	} else if (getrandom(raw, sizeof(raw), 0) != (ssize_t) sizeof(raw)) {
		http_reply_error(c, 500, "internal", "no randomness for the app token");
	} else {
		int n = sprintf(token, APP_TOKEN_PREFIX);
		for (size_t i = 0; i < sizeof(raw); i++)
			n += sprintf(token + n, "%02x", raw[i]);
		sha256_hex(token, hash);
		int r = c->d->ledger->ops->app_add(c->d->ledger, name, account, hash,
						   c->d->hosting_limit, clock_wall_ms());
		if (r < 0) {
			http_reply_error(c, status_for(r),
					 r == -EDQUOT	? "hosting_limit"
					 : r == -EEXIST ? "exists"
							: "no_such_account",
					 "%s", c->d->ledger->error);
		} else {
			log_info("app %s added to account %s", name, account);
			http_reply_json(c, 200,
					json_pack("{s:s, s:s, s:s}", "name", name, "account",
						  account, "token", token));
		}
	}
	json_decref(o);
}

static void get_apps(struct call *c)
{
	reply_listing(c, false);
}

static void delete_app(struct call *c)
{
	int r = c->d->ledger->ops->app_remove(c->d->ledger, c->arg);
	if (r < 0) {
		http_reply_error(c, status_for(r), r == -ENOENT ? "no_such_app" : "ledger", "%s",
				 c->d->ledger->error);
		return;
	}
	log_info("app %s removed", c->arg);
	http_reply_json(c, 200, json_pack("{s:s}", "removed", c->arg));
}

static void post_quota_reset(struct call *c)
{
	/* The path is /v1/quota/VISITOR/reset: arg is the visitor. */
	struct quota_account *a = quota_find(&c->d->quota, c->arg);
	int r = c->d->ledger->ops->visitor_reset(c->d->ledger, c->arg);
	if (r < 0) {
		http_reply_error(c, 500, "ledger", "%s", c->d->ledger->error);
		return;
	}
	if (a) {
		/* What is reserved stays reserved: those requests still run or wait. */
		a->window_start = 0;
		a->used_ms = 0;
	}
	if (!a && r == 0) {
		http_reply_error(c, 404, "no_such_visitor", "no GPU use is recorded for '%.200s'",
				 c->arg);
		return;
	}
	log_info("quota of %s reset", c->arg);
	http_reply_json(c, 200, json_pack("{s:s}", "reset", c->arg));
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
	json_t *apps;
	int64_t leases, used_ms, charged_ms;
};

static void usage_item(const struct ledger_usage *u, void *arg)
{
	struct usage_sum *sum = arg;
	json_array_append_new(sum->apps, json_pack("{s:s, s:I, s:f, s:f}", "app", u->app, "leases",
						   (json_int_t) u->leases, "used_s",
						   (double) u->used_ms / 1000.0, "charged_s",
						   (double) u->charged_ms / 1000.0));
	sum->leases += u->leases;
	sum->used_ms += u->used_ms;
	sum->charged_ms += u->charged_ms;
}

static void get_usage(struct call *c)
{
	const char *app = evhttp_find_header(&c->query, "app");
	const char *since_text = evhttp_find_header(&c->query, "since");
	if (http_app_scoped(c)) {
		if (app && strcmp(app, c->app) != 0) {
			http_reply_error(
				c, 403, "forbidden",
				"this app token is for app '%s': it may read that app's usage "
				"only, not '%.64s'",
				c->app, app);
			return;
		}
		app = c->app;
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
	struct usage_sum sum = {.apps = json_array()};
	if (c->d->ledger->ops->usage(c->d->ledger, app, since, usage_item, &sum) < 0) {
		json_decref(sum.apps);
		http_reply_error(c, 500, "ledger", "%s", c->d->ledger->error);
		return;
	}
	http_reply_json(c, 200,
			json_pack("{s:I, s:o, s:{s:I, s:f, s:f}}", "since_ms", (json_int_t) since,
				  "apps", sum.apps, "total", "leases", (json_int_t) sum.leases,
				  "used_s", (double) sum.used_ms / 1000.0, "charged_s",
				  (double) sum.charged_ms / 1000.0));
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
	{.pattern = NULL},
};
