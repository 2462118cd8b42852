/*
 * http — the plumbing under the API routes: listeners, routing, auth, peer
 * credentials, JSON replies and errors. Routes stay thin: parse, call the
 * engine, render.
 */
#ifndef ZGPU_DAEMON_HTTP_H
#define ZGPU_DAEMON_HTTP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "daemon/zgpud.h"

/* One HTTP request being served. Lives for the duration of the route's handler. */
struct call {
	struct zgpud *d;
	struct evhttp_request *req;
	bool via_tcp;
	bool uid_known; /* the local user is known: the Unix socket's peer, or a loopback
			 * TCP client the kernel vouched for when it connected (conn.h) */
	uid_t uid;	/* valid when uid_known */
	pid_t pid;	/* the Unix socket peer's pid, else 0 */
	const char *path;
	struct evkeyvalq query;
	const char *arg; /* the path segment matched by '*' in the route, or NULL */
	int64_t t0_us;
	bool admin;		     /* root or the daemon's uid on the Unix socket; the admin
				      * token on TCP */
	char app[LEASE_APP_MAX + 1]; /* the app whose token came with it, or "" */
	bool token_bad;		     /* a token came that is neither an app's nor the admin's */
};

struct route {
	enum evhttp_cmd_type method;
	const char *pattern; /* exact path; one '*' matches one segment */
	void (*handler)(struct call *c);
	bool open;  /* served without a bearer token on TCP */
	bool admin; /* changes the registry or quotas: admins only */
};

extern const struct route api_v1_routes[];
extern const struct route api_registry_routes[];
extern const struct route api_spaces_routes[];

/* Appends v as compact JSON and a newline to out; jansson writes straight into it. */
int http_append_json(struct evbuffer *out, const json_t *v);

/* Replies with status and body (stolen, may be NULL for an empty object). */
void http_reply_json(struct call *c, int status, json_t *body);
/* Replies {"error": {"code": code, "message": ...}} with status. */
void http_reply_error(struct call *c, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Replies with text/plain (metrics). */
void http_reply_text(struct call *c, int status, const char *content_type, struct evbuffer *body);

/* Who is calling, as a lease's owner or a process's voucher is recorded. */
struct lease_owner http_caller(const struct call *c);

/*
 * Whether the caller may see lease l: anyone on the Unix socket; on TCP the
 * admin token, or the token of l's app. May act on it (release, attach): its
 * owner's uid or root on the Unix socket; the admin token, or its app's token,
 * on TCP.
 */
bool http_may_see(const struct call *c, const struct lease *l);
bool http_may_act(const struct call *c, const struct lease *l);

/* Whether an app token is calling over TCP, whose view is its own app only. */
static inline bool http_app_scoped(const struct call *c)
{
	return c->via_tcp && !c->admin;
}

/* Calls fn(conn, arg) when conn closes (fn NULL: no longer). A connection has one such
 * callback; it is the lease stream's that lives on it. */
void http_on_close(struct zgpud *d, struct evhttp_connection *conn,
		   void (*fn)(struct evhttp_connection *conn, void *arg), void *arg);

/* Whether the client at the other end of conn has closed it, though evhttp has not read
 * that far yet (a peek at the socket: EOF and nothing left to read). */
bool http_peer_gone(struct evhttp_connection *conn);

/* Copies the request body into *body (NUL-terminated, caller frees); bodies over
 * ZGPUD_MAX_BODY never reach a route. -ENOMEM replies 500. */
int http_take_body(struct call *c, char **body, size_t *len);

#endif
