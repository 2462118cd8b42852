/*
 * api_gateway — adapter: the visitor gateway's route. A trusted reverse proxy (nginx's
 * auth_request, Caddy's forward_auth; docs/gateway.md) asks, for every visitor's
 * request, GET /v1/visitor-token with the visitor's address as it set it, and the
 * signed-in user when its login proxy names one; zerogpud answers with a short-lived
 * visitor token in X-IP-Token, which the proxy hands the app as the hosted front proxy
 * does, and the app forwards with its GPU calls. Nothing is written per request.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/api.h"
#include "daemon/core/auth.h"
#include "daemon/core/request.h"
#include "daemon/record.h"
#include "daemon/settings.h"
#include "daemon/zgpud.h"

#define ADDRESS_MAX 45 /* the longest IPv6 text */

static const char *header(struct call *c, const char *name)
{
	return evhttp_find_header(evhttp_request_get_input_headers(c->req), name);
}

/*
 * The visitor's address as the proxy set it: X-Real-IP, else X-Forwarded-For naming
 * exactly one address (a list means the proxy passed a client's own header on: its
 * first entries are whatever the client said). 0, or -1 after a 400 reply.
 */
static int visitor_address(struct call *c, char out[ADDRESS_MAX + 1])
{
	const char *name = "X-Real-IP", *v = header(c, name);
	if (!v) {
		name = "X-Forwarded-For";
		v = header(c, name);
	}
	if (!v) {
		http_reply_error(c, 400, "bad_request",
				 "no visitor address: the proxy must send it in X-Real-IP (nginx: "
				 "proxy_set_header X-Real-IP $remote_addr)");
		return -1;
	}
	if (strchr(v, ',')) {
		http_reply_error(
			c, 400, "bad_request",
			"%s names several addresses: the proxy must send the visitor's own "
			"only (nginx: set_real_ip_from, then X-Real-IP $remote_addr)",
			name);
		return -1;
	}
	unsigned char bin[16];
	size_t n = strlen(v);
	if (n == 0 || n > ADDRESS_MAX ||
	    (inet_pton(AF_INET, v, bin) != 1 && inet_pton(AF_INET6, v, bin) != 1)) {
		http_reply_error(c, 400, "bad_request",
				 "%s '%.64s%s' is not an IPv4 or IPv6 address", name, v,
				 n > 64 ? "..." : "");
		return -1;
	}
	memcpy(out, v, n + 1);
	return 0;
}

static void get_visitor_token(struct call *c)
{
	struct zgpud *d = c->d;
	const struct settings *s = d->settings;
	if (!d->visitor_secret[0]) {
		http_reply_error(c, 409, "no_visitor_secret",
				 "this zerogpud has no visitor secret to sign with: set [auth] "
				 "visitor_secret (or --visitor-secret-file)");
		return;
	}
	struct visitor_identity id = {0};
	if (visitor_address(c, id.ip) < 0)
		return;
	const char *user = header(c, s->gateway_user_header);
	if (user && !request_user_name_valid(user)) {
		http_reply_error(c, 400, "bad_request",
				 "%s '%.64s' is not a user name: 1 to 64 letters, digits, '.', "
				 "'_', '-', '@' or '+'",
				 s->gateway_user_header, user);
		return;
	}
	if (user) {
		char key[80];
		snprintf(key, sizeof(key), "user:%s", user);
		if (record_visitor_tier(d, key, &id.tier) < 0) {
			http_reply_error(c, 500, "ledger", "%s", d->ledger->error);
			return;
		}
		snprintf(id.sub, sizeof(id.sub), "%s", user);
	} else {
		id.tier = LEASE_TIER_ANONYMOUS;
		snprintf(id.sub, sizeof(id.sub), "ip:%s", id.ip);
	}
	id.exp = clock_wall_ms() / 1000 + s->gateway_token_ttl_ms / 1000;
	char *token;
	if (auth_sign_visitor(&id, (const unsigned char *) d->visitor_secret,
			      strlen(d->visitor_secret), &token) < 0) {
		http_reply_error(c, 500, "internal", "out of memory minting a visitor token");
		return;
	}
	struct evkeyvalq *out = evhttp_request_get_output_headers(c->req);
	evhttp_add_header(out, "X-IP-Token", token);
	evhttp_add_header(out, "Cache-Control", "no-store");
	http_reply_json(c, 200,
			json_pack("{s:s, s:s, s:s, s:I}", "token", token, "sub", id.sub, "tier",
				  lease_tier_name(id.tier), "exp", (json_int_t) id.exp));
	free(token);
}

const struct route api_gateway_routes[] = {
	{.method = EVHTTP_REQ_GET,
	 .pattern = "/v1/visitor-token",
	 .handler = get_visitor_token,
	 .gateway = true},
	{.pattern = NULL},
};
