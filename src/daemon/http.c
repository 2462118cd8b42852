#include "daemon/http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/evp.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/conn.h"
#include "daemon/record.h"
#include "daemon/settings.h"
#include "daemon/ui_session.h"

static int append_to_evbuffer(const char *buffer, size_t size, void *data)
{
	return evbuffer_add(data, buffer, size);
}

int http_append_json(struct evbuffer *out, const json_t *v)
{
	if (!v ||
	    json_dump_callback(v, append_to_evbuffer, out, JSON_COMPACT | JSON_ENCODE_ANY) < 0)
		return -ENOMEM;
	return evbuffer_add(out, "\n", 1) < 0 ? -ENOMEM : 0;
}

void http_reply_json(struct call *c, int status, json_t *body)
{
	struct evbuffer *buf = evbuffer_new();
	if (!body)
		body = json_object();
	int r = buf ? http_append_json(buf, body) : -ENOMEM;
	json_decref(body);
	if (r < 0) {
		if (buf)
			evbuffer_free(buf);
		evhttp_send_error(c->req, 500, "out of memory");
		metrics_count_http(&c->d->metrics, 500);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Content-Type",
			  "application/json");
	evhttp_send_reply(c->req, status, NULL, buf);
	evbuffer_free(buf);
	metrics_count_http(&c->d->metrics, status);
}

/* The length of the well-formed UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
	static const struct {
		unsigned char mask, lead;
		size_t len;
		uint32_t min;
	} forms[] = {{0x80, 0x00, 1, 0},
		     {0xE0, 0xC0, 2, 0x80},
		     {0xF0, 0xE0, 3, 0x800},
		     {0xF8, 0xF0, 4, 0x10000}};
	for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
		if ((s[0] & forms[f].mask) != forms[f].lead)
			continue;
		size_t len = forms[f].len;
		if (len > n)
			return 0;
		uint32_t cp = s[0] & (unsigned char) ~forms[f].mask;
		for (size_t i = 1; i < len; i++) {
			if ((s[i] & 0xC0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i] & 0x3F);
		}
		bool ok = cp >= forms[f].min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
		return ok ? len : 0;
	}
	return 0;
}

/* Replaces each byte that is not part of well-formed UTF-8 with '?': a message
 * quotes what the client sent (and may be cut mid-character), and JSON holds
 * only UTF-8 (jansson refuses the rest). */
static void utf8_scrub(char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		size_t len = utf8_sequence((const unsigned char *) s + i, n - i);
		if (len == 0) {
			s[i] = '?';
			len = 1;
		}
		i += len;
	}
}

void http_reply_error(struct call *c, int status, const char *code, const char *fmt, ...)
{
	char message[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	utf8_scrub(message);
	http_reply_json(c, status,
			json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message));
}

void http_reply_refusal(struct call *c, const struct refusal *no)
{
	http_reply_error(c, no->status, no->code, "%s", no->message);
}

void http_reply_text(struct call *c, int status, const char *content_type, struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Content-Type", content_type);
	evhttp_send_reply(c->req, status, NULL, body);
	metrics_count_http(&c->d->metrics, status);
}

int http_take_body(struct call *c, char **body, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
	size_t n = evbuffer_get_length(in); /* at most ZGPUD_MAX_BODY: evhttp checked */
	char *b = malloc(n + 1);
	if (!b) {
		http_reply_error(c, 500, "internal", "out of memory reading the request body");
		return -ENOMEM;
	}
	evbuffer_copyout(in, b, n);
	b[n] = '\0';
	*body = b;
	*len = n;
	return 0;
}

bool http_peer_gone(struct evhttp_connection *conn)
{
	int fd = conn ? bufferevent_getfd(evhttp_connection_get_bufferevent(conn)) : -1;
	char byte;
	return fd >= 0 && recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

void http_on_close(struct zgpud *d, struct evhttp_connection *conn,
		   void (*fn)(struct evhttp_connection *conn, void *arg), void *arg)
{
	if (conns_on_close(&d->conns, conn, fn, arg) == -ENOENT)
		evhttp_connection_set_closecb(conn, fn, arg);
}

struct deferred_call {
	struct call c; /* first: a struct call * is one of these */
	char arg[128];
	struct evhttp_connection *conn;
	bool gone;
};

void http_free_if_orphaned(struct evhttp_request *req)
{
	if (req && !evhttp_request_get_connection(req))
		evhttp_request_free(req);
}

static void deferred_closed(struct evhttp_connection *conn, void *arg)
{
	struct deferred_call *df = arg;
	(void) conn;
	df->gone = true;
	http_free_if_orphaned(df->c.req);
	df->c.req = NULL;
}

struct call *http_defer(struct call *c)
{
	struct deferred_call *df = calloc(1, sizeof(*df));
	if (!df) {
		http_reply_error(c, 500, "internal", "out of memory");
		return NULL;
	}
	df->c = *c;
	TAILQ_INIT(&df->c.query);
	if (c->arg) {
		snprintf(df->arg, sizeof(df->arg), "%s", c->arg);
		df->c.arg = df->arg;
	}
	df->c.path = NULL;
	df->conn = evhttp_request_get_connection(c->req);
	if (df->conn)
		http_on_close(c->d, df->conn, deferred_closed, df);
	return &df->c;
}

bool http_deferred_gone(const struct call *c)
{
	return ((const struct deferred_call *) c)->gone;
}

void http_deferred_done(struct call *c)
{
	struct deferred_call *df = (struct deferred_call *) c;
	if (!df->gone && df->conn)
		http_on_close(c->d, df->conn, NULL, NULL);
	free(df);
}

/* ------------------------------------------------------------------------
 * Routing and authentication.
 * ------------------------------------------------------------------------ */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char) (c | 0x20);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * Copies the path segment s (n bytes) into out, %XX sequences decoded (a client
 * may spell user:alice as user%3Aalice). A '%' not followed by two hex digits,
 * and %00, stay as they are: no name has either, so the route refuses it by name.
 * A segment longer than out is cut short: no name is that long, and the route
 * refuses it by name too (rather than a 404 for a path that exists).
 */
static void segment_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 1 < cap; i++) {
		char c = s[i];
		int hi, lo;
		if (c == '%' && i + 2 < n && (hi = hex_value(s[i + 1])) >= 0 &&
		    (lo = hex_value(s[i + 2])) >= 0 && (hi | lo)) {
			c = (char) (hi << 4 | lo);
			i += 2;
		}
		out[o++] = c;
	}
	out[o] = '\0';
}

/* Matches path against pattern; a '*' segment matches one non-empty segment, stored
 * percent-decoded in *arg (argsize: longer than any name). */
static bool route_match(const char *pattern, const char *path, char *arg, size_t argsize)
{
	while (*pattern && *path) {
		if (*pattern == '*') {
			size_t n = strcspn(path, "/");
			if (n == 0)
				return false;
			segment_decode(path, n, arg, argsize);
			path += n;
			pattern++;
			continue;
		}
		if (*pattern++ != *path++)
			return false;
	}
	return *pattern == '\0' && *path == '\0';
}

/* Compares in time independent of where the strings differ. */
static bool same_secret(const char *a, const char *b)
{
	size_t n = strlen(a), m = strlen(b);
	unsigned char diff = (unsigned char) (n != m);
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char) (a[i] ^ (i < m ? b[i] : 0));
	return diff == 0;
}

bool http_is_admin_token(const struct zgpud *d, const char *given)
{
	return d->token[0] && same_secret(d->token, given);
}

/*
 * The password of `Authorization: Basic base64(user:password)` into out. HTTP
 * clients send this for a URL like http://app:TOKEN@host:port, which is how an
 * unmodified `spaces` package can carry an app token. Returns 0 or -1.
 */
static int basic_password(const char *b64, char *out, size_t size)
{
	unsigned char decoded[768];
	size_t n = strlen(b64);
	if (n == 0 || n % 4 || n / 4 * 3 >= sizeof(decoded))
		return -1;
	int len = EVP_DecodeBlock(decoded, (const unsigned char *) b64, (int) n);
	if (len < 0)
		return -1;
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	len -= (b64[n - 1] == '=') + (b64[n - 2] == '=');
	decoded[len] = '\0';
	if (strlen((char *) decoded) != (size_t) len)
		return -1;
	const char *colon = strchr((char *) decoded, ':');
	if (!colon || strlen(colon + 1) >= size)
		return -1;
	strcpy(out, colon + 1);
	return 0;
}

/*
 * The dashboard's sign-in cookie (ui_session.h) makes a call on TCP an admin's, for
 * reading only: a cookie rides along on any request to this origin, so a page
 * elsewhere must not be able to make it change anything (and SameSite=Strict keeps
 * other sites' requests from carrying it at all). Returns 0.
 */
static int dashboard_cookie(struct call *c)
{
	enum evhttp_cmd_type m = evhttp_request_get_command(c->req);
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Cookie");
	char value[UI_SESSION_LEN + 1];
	if (c->who.via_tcp && h && (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD) &&
	    ui_session_from_header(h, value, sizeof(value)) &&
	    ui_session_valid(c->d->token, value, clock_wall_ms() / 1000))
		c->who.admin = true;
	return 0;
}

/*
 * Reads the token, if any (Bearer, or the password of Basic): the admin token
 * makes the call an admin's, an app token names the app. Returns 0, or -1 when
 * a token was sent that is neither (the caller replies 401).
 */
static int bearer(struct call *c)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(c->req),
					   "Authorization");
	char password[512];
	if (!h)
		return dashboard_cookie(c);
	const char *given = h + 7;
	if (strncmp(h, "Basic ", 6) == 0) {
		if (basic_password(h + 6, password, sizeof(password)) < 0)
			return -1;
		given = password;
	} else if (strncmp(h, "Bearer ", 7) != 0) {
		return -1;
	}
	if (http_is_admin_token(c->d, given)) {
		c->who.admin = true;
		return 0;
	}
	const char *gateway = c->d->settings->gateway_token;
	if (gateway[0] && same_secret(gateway, given)) {
		c->who.gateway = true;
		return 0;
	}
	return record_app_for_token(c->d, given, c->who.app, sizeof(c->who.app)) == 1 ? 0 : -1;
}

/* A connection the connection table does not track (it was out of memory): only
 * the Unix socket's SO_PEERCRED can be had; a TCP peer stays unknown. */
static void untracked_peer(struct call *c, struct conn_peer *p)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(c->req);
	int fd = conn ? bufferevent_getfd(evhttp_connection_get_bufferevent(conn)) : -1;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	*p = (struct conn_peer){.tcp = c->who.via_tcp};
	if (!c->who.via_tcp && fd >= 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		p->uid_known = true;
		p->uid = cred.uid;
		p->pid = cred.pid;
	}
	gate_identify_peer(&c->d->gate, p);
}

/* The gateway's token opens the gateway's routes only, and only it (or root and
 * zerogpud's user on the Unix socket) opens them. Replies and returns true when the
 * caller may not take route r. */
static bool refuse_for_gateway(struct call *c, const struct route *r, bool token_bad)
{
	bool local_admin = !c->who.via_tcp && c->who.admin;
	bool no_token = c->who.via_tcp && !c->who.gateway && !c->who.admin && !c->who.app[0];
	if (r->gateway && (token_bad || no_token)) {
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "WWW-Authenticate",
				  "Bearer");
		http_reply_error(c, 401, "unauthorized",
				 "the token sent is not the gateway's ([gateway] token)");
		return true;
	}
	if (r->gateway && !c->who.gateway && !local_admin) {
		http_reply_error(c, 403, "forbidden",
				 "only the visitor gateway (with the [gateway] token), root or "
				 "zerogpud's own user may mint visitor tokens");
		return true;
	}
	if (!r->gateway && c->who.gateway && !r->open) {
		http_reply_error(c, 403, "forbidden",
				 "the gateway token mints visitor tokens only "
				 "(GET /v1/visitor-token)");
		return true;
	}
	return false;
}

static void refuse_shutting_down(struct call *c)
{
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Connection", "close");
	http_reply_error(c, 503, "shutting_down",
			 "zerogpud is shutting down; try again when it is back");
}

/* What a server's requests carry: the daemon, the kind of listener, the routes. */
struct server {
	struct zgpud *d;
	bool tcp;
	const struct route *const *tables;
};

static bool route_serves(const struct route *const *tables, enum evhttp_cmd_type method,
			 const char *path)
{
	char seg[128];
	for (const struct route *const *t = tables; *t; t++)
		for (const struct route *r = *t; r->pattern; r++)
			if (r->method == method && route_match(r->pattern, path, seg, sizeof(seg)))
				return true;
	return false;
}

/* The methods the routes serve at path, for a 405's Allow header: "GET, POST". */
static void allowed_methods(const struct route *const *tables, const char *path, char *out,
			    size_t cap)
{
	static const struct {
		enum evhttp_cmd_type method;
		const char *name;
	} names[] = {{EVHTTP_REQ_GET, "GET"},
		     {EVHTTP_REQ_POST, "POST"},
		     {EVHTTP_REQ_PUT, "PUT"},
		     {EVHTTP_REQ_DELETE, "DELETE"},
		     {EVHTTP_REQ_PATCH, "PATCH"}};
	size_t n = 0;
	out[0] = '\0';
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (route_serves(tables, names[i].method, path) && n < cap)
			n += (size_t) snprintf(out + n, cap - n, "%s%s", n ? ", " : "",
					       names[i].name);
}

static void dispatch_request(struct evhttp_request *req, void *arg)
{
	struct server *sv = arg;
	struct call c = {.d = sv->d, .req = req, .who.via_tcp = sv->tcp, .t0_us = clock_mono_us()};
	char seg[128];
	TAILQ_INIT(&c.query);

	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	c.path = path && *path ? path : "/";
	const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
	if (q && evhttp_parse_query_str(q, &c.query) < 0) {
		http_reply_error(&c, 400, "bad_query", "malformed query string '%.100s'", q);
		goto out;
	}
	struct conn_peer untracked;
	const struct conn_peer *peer = conns_request_arrived(&c.d->conns, req);
	if (!peer) {
		untracked_peer(&c, &untracked);
		peer = &untracked;
	}
	c.who.uid_known = peer->uid_known;
	c.who.uid = peer->uid_known ? peer->uid : (uid_t) -1;
	c.who.pid = peer->pid;
	if (c.d->stopping) {
		refuse_shutting_down(&c);
		goto out;
	}
	if (!c.who.via_tcp)
		c.who.admin = c.who.uid_known && (c.who.uid == 0 || c.who.uid == c.d->own_uid);
	memcpy(c.who.cgroup_app, peer->cgroup_app, sizeof(c.who.cgroup_app));
	bool token_bad = c.who.token_bad = bearer(&c) < 0;

	bool path_known = false;
	for (const struct route *const *t = sv->tables; *t; t++) {
		for (const struct route *r = *t; r->pattern; r++) {
			if (!route_match(r->pattern, c.path, seg, sizeof(seg)))
				continue;
			path_known = true;
			if (r->method != evhttp_request_get_command(req))
				continue;
			if (refuse_for_gateway(&c, r, token_bad))
				goto out;
			if (!r->open && !r->gateway &&
			    (token_bad || (c.who.via_tcp && !c.who.admin && !c.who.app[0]))) {
				evhttp_add_header(evhttp_request_get_output_headers(req),
						  "WWW-Authenticate", "Bearer");
				http_reply_error(&c, 401, "unauthorized",
						 "missing or wrong bearer token: send "
						 "'Authorization: Bearer <token>' with the admin "
						 "token or an app's token");
				goto out;
			}
			if (r->admin && !c.who.admin) {
				http_reply_error(
					&c, 403, "forbidden",
					"only root, zerogpud's own user or the admin token "
					"may change accounts, apps and quotas");
				goto out;
			}
			c.arg = strchr(r->pattern, '*') ? seg : NULL;
			r->handler(&c);
			goto out;
		}
	}
	if (path_known) {
		char allow[64];
		allowed_methods(sv->tables, c.path, allow, sizeof(allow));
		struct evkeyvalq *out = evhttp_request_get_output_headers(req);
		evhttp_add_header(out, "Allow", allow);
		/* evhttp reads no body after TRACE or HEAD: one sent anyway would be taken
		 * for the next request on a kept-alive connection. Close it instead. */
		evhttp_add_header(out, "Connection", "close");
		http_reply_error(&c, 405, "method_not_allowed",
				 "%s does not accept this method; it accepts %s", c.path, allow);
	} else
		http_reply_error(&c, 404, "not_found", "no such endpoint: %.200s", c.path);
out:
	evhttp_clear_headers(&c.query);
}

/* The servers' contexts live as long as the daemon: one per listener. */
static struct server servers[2];

struct evhttp *http_server_new(struct zgpud *d, bool tcp, const struct route *const *tables)
{
	struct evhttp *http = evhttp_new(d->base);
	if (!http)
		return NULL;
	struct server *sv = &servers[tcp ? 1 : 0];
	*sv = (struct server){.d = d, .tcp = tcp, .tables = tables};
	/* evhttp refuses longer bodies itself, with a plain 413, before reading them:
	 * a connection never buffers more than this. */
	evhttp_set_max_body_size(http, ZGPUD_MAX_BODY);
	evhttp_set_max_headers_size(http, 16 * 1024);
	evhttp_set_timeout(http, ZGPUD_IDLE_TIMEOUT_S);
	/* Every method evhttp knows reaches the router, so that one the route does not
	 * serve (TRACE, OPTIONS, ...) gets a JSON 405 with Allow, not evhttp's HTML 501. */
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE |
						 EVHTTP_REQ_PUT | EVHTTP_REQ_HEAD |
						 EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS |
						 EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
	evhttp_set_gencb(http, dispatch_request, sv);
	return http;
}
