/*
 * api_ui — the dashboard's pages under /ui/ (docs/dashboard.md), an adapter:
 * the files built into the daemon (ui_assets.h), and on the TCP listener the
 * sign-in that turns the admin token into a cookie (ui_session.h). The page
 * itself reads GET /v1/events and GET /v1/usage like any client.
 *
 * On the Unix socket the pages are served to whoever may connect, as the
 * status routes are. On TCP only to an admin: the token page (POST /ui/login),
 * or a link with ?token= as Jupyter prints, sets an HttpOnly cookie; without
 * it the token page is all there is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/clock.h"
#include "daemon/api.h"
#include "daemon/ui_assets.h"
#include "daemon/ui_session.h"

/* The pages load nothing from elsewhere and may not be framed. */
static const char csp_dashboard[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
				    "connect-src 'self'; img-src 'self' data:; "
				    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
static const char csp_login[] = "default-src 'none'; style-src 'unsafe-inline'; "
				"form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

static const struct ui_asset *asset_named(const char *name)
{
	for (const struct ui_asset *a = ui_assets; a->name; a++)
		if (strcmp(a->name, name) == 0)
			return a;
	return NULL;
}

static void add_header(struct call *c, const char *name, const char *value)
{
	evhttp_add_header(evhttp_request_get_output_headers(c->req), name, value);
}

/* Replies with asset a; where a holds the comment `<!--wrong token-->`, insert goes in
 * its place (NULL: nothing). */
static void reply_asset(struct call *c, int status, const struct ui_asset *a, const char *csp,
			const char *insert)
{
	static const char marker[] = "<!--wrong token-->";
	const char *at = insert ? memmem(a->data, a->len, marker, sizeof(marker) - 1) : NULL;
	size_t head = at ? (size_t) (at - (const char *) a->data) : a->len;
	struct evbuffer *buf = evbuffer_new();
	if (!buf || evbuffer_add(buf, a->data, head) < 0 ||
	    (at && (evbuffer_add(buf, insert, strlen(insert)) < 0 ||
		    evbuffer_add(buf, at + sizeof(marker) - 1,
				 a->len - head - (sizeof(marker) - 1)) < 0))) {
		if (buf)
			evbuffer_free(buf);
		http_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	add_header(c, "Content-Security-Policy", csp);
	add_header(c, "X-Content-Type-Options", "nosniff");
	add_header(c, "Referrer-Policy", "no-referrer");
	add_header(c, "Cache-Control", "no-store");
	http_reply_text(c, status, a->content_type, buf);
	evbuffer_free(buf);
}

/* The token page: 401, so that a script probing /ui/ sees it is not signed in. */
static void reply_login(struct call *c, bool wrong_token)
{
	if (wrong_token)
		add_header(c, "X-Zerogpu-Login", "wrong token");
	reply_asset(c, 401, asset_named("login.html"), csp_login,
		    wrong_token ? "<p class=\"wrong\" id=\"wrong-token\">That is not the admin "
				  "token.</p>"
				: NULL);
}

static bool signed_in(const struct call *c)
{
	return !c->who.via_tcp || c->who.admin;
}

/* Sets the sign-in cookie and sends the browser to the dashboard, the token out of
 * its address bar and history. */
static void sign_in(struct call *c)
{
	char value[UI_SESSION_LEN], cookie[UI_SESSION_LEN + 128];
	ui_session_make(c->d->token, clock_wall_ms() / 1000, value);
	snprintf(cookie, sizeof(cookie),
		 UI_SESSION_COOKIE "=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Strict", value,
		 UI_SESSION_S);
	add_header(c, "Set-Cookie", cookie);
	add_header(c, "Location", "/ui/");
	add_header(c, "Cache-Control", "no-store");
	http_reply_json(c, 303, json_pack("{s:s}", "location", "/ui/"));
}

static void get_ui_root(struct call *c)
{
	add_header(c, "Location", "/ui/");
	http_reply_json(c, 308, json_pack("{s:s}", "location", "/ui/"));
}

static void get_ui(struct call *c)
{
	const char *token = evhttp_find_header(&c->query, "token");
	if (c->who.via_tcp && token) {
		if (http_is_admin_token(c->d, token))
			sign_in(c);
		else
			reply_login(c, true);
		return;
	}
	if (!signed_in(c))
		reply_login(c, false);
	else
		reply_asset(c, 200, asset_named("index.html"), csp_dashboard, NULL);
}

static void get_ui_file(struct call *c)
{
	const struct ui_asset *a = asset_named(c->arg);
	if (!signed_in(c)) {
		http_reply_error(c, 401, "unauthorized",
				 "sign in at /ui/ with the admin token first");
		return;
	}
	if (!a || strcmp(c->arg, "login.html") == 0) {
		http_reply_error(c, 404, "not_found", "the dashboard has no file '%.64s'", c->arg);
		return;
	}
	reply_asset(c, 200, a, csp_dashboard, NULL);
}

/* POST /ui/login with the token page's form: token=... */
static void post_login(struct call *c)
{
	char *body;
	size_t len;
	struct evkeyvalq form;
	if (!c->who.via_tcp) {
		http_reply_error(c, 404, "not_found",
				 "the Unix socket needs no sign-in: open /ui/ directly");
		return;
	}
	if (http_take_body(c, &body, &len) < 0)
		return;
	TAILQ_INIT(&form);
	const char *token = NULL;
	if (strlen(body) == len && evhttp_parse_query_str(body, &form) == 0)
		token = evhttp_find_header(&form, "token");
	if (token && http_is_admin_token(c->d, token))
		sign_in(c);
	else
		reply_login(c, true);
	evhttp_clear_headers(&form);
	free(body);
}

static void post_logout(struct call *c)
{
	add_header(c, "Set-Cookie",
		   UI_SESSION_COOKIE "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
	add_header(c, "Location", "/ui/");
	http_reply_json(c, 303, json_pack("{s:s}", "location", "/ui/"));
}

/* Open routes: each handler decides, so that the token page can be shown. */
const struct route api_ui_routes[] = {
	{.method = EVHTTP_REQ_GET, .pattern = "/ui", .handler = get_ui_root, .open = true},
	{.method = EVHTTP_REQ_GET, .pattern = "/ui/", .handler = get_ui, .open = true},
	{.method = EVHTTP_REQ_GET, .pattern = "/ui/*", .handler = get_ui_file, .open = true},
	{.method = EVHTTP_REQ_POST, .pattern = "/ui/login", .handler = post_login, .open = true},
	{.method = EVHTTP_REQ_POST, .pattern = "/ui/logout", .handler = post_logout, .open = true},
	{0},
};
