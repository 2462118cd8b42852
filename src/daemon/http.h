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
	uid_t uid; /* Unix socket peer; valid when !via_tcp */
	pid_t pid;
	const char *path;
	struct evkeyvalq query;
	const char *arg; /* the path segment matched by '*' in the route, or NULL */
	int64_t t0_us;
	bool admin;		     /* root or the daemon's uid; or the admin token on TCP */
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

/* The local user making the call: its peer uid on the Unix socket; on TCP, the owner
 * of the client's socket when it connects over loopback. Returns 0, or -ENOENT when
 * the caller cannot be known (a remote TCP peer). */
int http_caller_uid(struct call *c, uid_t *uid);

/* Copies the request body into *body (NUL-terminated, caller frees); bodies over
 * ZGPUD_MAX_BODY never reach a route. -ENOMEM replies 500. */
int http_take_body(struct call *c, char **body, size_t *len);

#endif
