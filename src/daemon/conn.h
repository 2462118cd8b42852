/*
 * conn — every connection zerogpud accepts, from accept to close, underneath
 * the HTTP layer: who is at the other end, how many connections each client
 * holds, and how long a request may take to arrive.
 *
 * evhttp's bufferevent hook tells this module of each accepted connection;
 * right after accept (in the same loop turn, before a byte is read) it finds
 * evhttp's connection, takes its close callback (whoever else wants to hear
 * of the close registers through conns_on_close()) and watches its input
 * buffer to see requests begin. The peer is learnt then, once, while the
 * client's socket is certainly open: SO_PEERCRED on the Unix socket,
 * sock_diag for loopback TCP (peer.h).
 *
 * Limits (docs/security.md):
 * - all connections: at max_total the listeners pause until one closes; when
 *   accept() runs out of descriptors (EMFILE) they pause for a back-off;
 *   connections already open are served meanwhile. One log line per episode.
 * - per client (a uid; a TCP address whose uid is unknown): past
 *   max_per_client a new connection gets a 503 and is closed.
 * - a request's head and body must arrive within request_timeout_ms of
 *   accept (or of the request's first byte on a kept-alive connection), or
 *   the connection gets a 408 and is closed: one byte every few seconds keeps
 *   nothing open for long.
 */
#ifndef ZGPU_DAEMON_CONN_H
#define ZGPU_DAEMON_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "common/strmap.h"
#include "daemon/core/lease.h"
#include "daemon/metrics.h"

#define CONN_MAX_LISTENERS 2

struct conn_limits {
	int max_total;		    /* open connections in all */
	int max_per_client;	    /* open connections of one client */
	int64_t request_timeout_ms; /* for a request's head and body to arrive */
};

/* Who is at the other end of a connection, learnt once, right after accept. */
struct conn_peer {
	bool tcp;
	bool uid_known; /* Unix: SO_PEERCRED; TCP: a live loopback socket sock_diag vouched for */
	uid_t uid;
	pid_t pid;			    /* Unix socket only (SO_PEERCRED), else 0 */
	uint64_t cgroup_id;		    /* TCP: the client socket's cgroup2 id, or 0 */
	char cgroup_app[LEASE_APP_MAX + 1]; /* the app whose cgroup the peer is in (identify) */
	char addr[INET6_ADDRSTRLEN];	    /* TCP: the client's address */
};

struct conn;
struct conns;

/* Learns more of a peer, once, right after its uid (its app, from its cgroup). */
typedef void (*conn_identify_fn)(void *ctx, struct conn_peer *peer);

/* A listener whose connections are tracked. */
struct conn_listener {
	struct conns *cs;
	struct evconnlistener *listener;
	bool tcp;
};

/* The daemon's connections (one per process: the listeners' error hook finds it). */
struct conns {
	struct event_base *base;
	struct conn_limits lim;
	struct metrics *metrics;
	struct conn_listener listeners[CONN_MAX_LISTENERS];
	int nlisteners;
	const struct timeval *request_timeout_tv; /* libevent's common-timeout queue for it */
	bool paused_full;			  /* at max_total */
	bool paused_emfile;			  /* out of descriptors: backing off */
	int64_t backoff_ms;			  /* the next back-off */
	uint64_t emfile_pauses;			  /* in this episode */
	struct event *resume;			  /* ends a back-off */
	struct event *trim;	   /* gives memory back after a burst of connections */
	struct event *classify;	   /* learns the peers of new connections */
	struct conn *unclassified; /* accepted, peer not known yet */
	struct conn **by_fd;	   /* the tracked connection on each descriptor */
	size_t nby_fd;
	struct strmap clients; /* client key -> struct conn_client */
	int open;
	int peak;		   /* the most open since memory was last given back */
	conn_identify_fn identify; /* or NULL */
	void *identify_ctx;
};

/* Sets up the module on base; metrics (borrowed) gets its counters. 0 or -ENOMEM. */
int conns_init(struct conns *cs, struct event_base *base, const struct conn_limits *lim,
	       struct metrics *metrics);

/* Has fn(ctx, peer) complete each new peer once its uid is known. */
void conns_set_identify(struct conns *cs, conn_identify_fn fn, void *ctx);

/* Tracks the connections of http, accepted by listener (paused and resumed
 * by this module). tcp says which kind of peers it has. 0 or -errno. */
int conns_serve(struct conns *cs, struct evhttp *http, struct evconnlistener *listener, bool tcp);

/* Stops accepting on every listener for good (shutdown). */
void conns_stop_accepting(struct conns *cs);

/* Frees the module. Call after event_base_free(): evhttp's connections are
 * finalised there, and each tells this module it is gone. */
void conns_release(struct conns *cs);

/*
 * The peer of the connection req came on, or NULL when it is not tracked (a
 * bufferevent this module did not make). Marks the request as fully arrived:
 * its deadline stops, and the next one starts when its reply is done.
 */
const struct conn_peer *conns_request_arrived(struct conns *cs, struct evhttp_request *req);

/*
 * fn(evcon, arg) is called when evcon closes, before this module forgets it:
 * the one close callback of a connection (evhttp has one; this module holds
 * it). fn NULL removes it. Returns 0, or -ENOENT for a connection this module
 * does not track (the caller then sets evhttp's own close callback).
 */
int conns_on_close(struct conns *cs, struct evhttp_connection *evcon,
		   void (*fn)(struct evhttp_connection *evcon, void *arg), void *arg);

#endif
