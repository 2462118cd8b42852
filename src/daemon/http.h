/*
 * http — the plumbing under the API adapters: routing, bearer tokens, who the
 * caller is (from conn.c's peer and the token), JSON replies and errors.
 * The route tables come in at construction (api.h), so this module knows no
 * API.
 */
#ifndef ZGPU_DAEMON_HTTP_H
#define ZGPU_DAEMON_HTTP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "daemon/leases.h"
#include "daemon/zgpud.h"

/* One HTTP request being served. Lives for the duration of the route's handler. */
struct call {
	struct zgpud *d;
	struct evhttp_request *req;
	struct caller who;
	const char *path;
	struct evkeyvalq query;
	const char *arg; /* the path segment matched by '*' in the route, or NULL */
	int64_t t0_us;
};

struct route {
	enum evhttp_cmd_type method;
	const char *pattern; /* exact path; one '*' matches one segment */
	void (*handler)(struct call *c);
	bool open;    /* served without a bearer token on TCP */
	bool admin;   /* changes the registry or quotas: admins only */
	bool gateway; /* the visitor gateway's: its token, or root / zerogpud's user on Unix */
};

/*
 * An evhttp for d that serves tables (NULL-terminated list of route tables,
 * each ending with a NULL pattern; borrowed for the server's life). tcp
 * selects bearer-token auth. NULL when out of memory.
 */
struct evhttp *http_server_new(struct zgpud *d, bool tcp, const struct route *const *tables);

/* Appends v as compact JSON and a newline to out; jansson writes straight into it. */
int http_append_json(struct evbuffer *out, const json_t *v);

/* Replies with status and body (stolen, may be NULL for an empty object). */
void http_reply_json(struct call *c, int status, json_t *body);
/* Replies {"error": {"code": code, "message": ...}} with status. */
void http_reply_error(struct call *c, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Replies with the service's refusal, in the native error form. */
void http_reply_refusal(struct call *c, const struct refusal *no);
/* Replies with text/plain (metrics). */
void http_reply_text(struct call *c, int status, const char *content_type, struct evbuffer *body);

/*
 * From a close callback (http_on_close): frees req if evhttp let go of it. A client that
 * hangs up while its reply is unfinished makes evhttp hand the request back, without a
 * connection, for its owner to free; when the daemon frees the connection itself, the
 * request goes with it.
 */
void http_free_if_orphaned(struct evhttp_request *req);

/* Calls fn(conn, arg) when conn closes (fn NULL: no longer). A connection has one such
 * callback; it is the lease stream's that lives on it. */
void http_on_close(struct zgpud *d, struct evhttp_connection *conn,
		   void (*fn)(struct evhttp_connection *conn, void *arg), void *arg);

/* Whether the client at the other end of conn has closed it, though evhttp has not read
 * that far yet (a peek at the socket: EOF and nothing left to read). */
bool http_peer_gone(struct evhttp_connection *conn);

/*
 * A call whose reply comes later, from the loop (a shared ledger answers a query):
 * a copy of c that outlives the handler, with its path argument (not its query).
 * Reply to it as to any call, then http_deferred_done(); if the client hung up
 * meanwhile (http_deferred_gone), only the latter. NULL when out of memory: a 500
 * was sent.
 */
struct call *http_defer(struct call *c);
bool http_deferred_gone(const struct call *c);
void http_deferred_done(struct call *c);

/* Whether given is the admin token (compared in constant time); never with no token set. */
bool http_is_admin_token(const struct zgpud *d, const char *given);

/* Copies the request body into *body (NUL-terminated, caller frees); bodies over
 * ZGPUD_MAX_BODY never reach a route. -ENOMEM replies 500. */
int http_take_body(struct call *c, char **body, size_t *len);

#endif
