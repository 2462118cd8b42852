/*
 * pg_conn — one PostgreSQL connection driven by the daemon's event loop through
 * libpq's asynchronous API: the connection is made with PQconnectStart/Poll,
 * queries are sent with PQsendQueryParams and read as the socket becomes
 * readable, and LISTEN notifications arrive the same way. Nothing here waits
 * on the network.
 *
 * Queries run one after another in the order they were queued (one
 * connection, one statement at a time: each is its own transaction). When the
 * connection is lost, every query queued or in flight gets its callback with
 * a NULL result, in order: the caller decides what to try again. The
 * connection is then made again every PG_CONN_RETRY_MS until it holds.
 */
#ifndef ZGPU_DAEMON_SYS_PG_CONN_H
#define ZGPU_DAEMON_SYS_PG_CONN_H

#include <stdbool.h>

#include <event2/event.h>
#include <libpq-fe.h>

#define PG_CONN_RETRY_MS   1000
#define PG_CONN_PARAMS_MAX 24

struct pg_conn;

/* A query's end: res is its result (borrowed: freed after the call), or NULL when
 * the connection was lost before one came; error says why when res is NULL or
 * not a success. */
typedef void (*pg_conn_done_fn)(void *arg, const PGresult *res, const char *error);

struct pg_conn_hooks {
	/* The connection came up (after the first connect, and each reconnect). */
	void (*up)(void *arg);
	/* It went down (or could not be made): why, as libpq says. */
	void (*down)(void *arg, const char *why);
	/* A NOTIFY on a channel this connection LISTENs to, sent by another session (this
	 * connection's own are not passed on: it knows what it changed). */
	void (*notify)(void *arg, const char *channel, const char *payload);
	void *arg;
};

/*
 * Starts connecting to conninfo (a postgresql:// URL or key=value words; libpq's
 * environment fills what they leave out). listen: channels to LISTEN on at each
 * connect (NULL-terminated, may be NULL). NULL when out of memory.
 */
struct pg_conn *pg_conn_new(struct event_base *base, const char *conninfo,
			    const char *const *listen, const struct pg_conn_hooks *hooks);
/* Frees c: queries still queued get their callbacks (NULL result) and may queue nothing
 * more (pg_conn_query says -ESHUTDOWN). */
void pg_conn_free(struct pg_conn *c);

/* Whether the connection is up now. */
bool pg_conn_up(const struct pg_conn *c);
/* Whether it is down: lost (or never made) and not yet made again. While it is first
 * being made it is neither up nor down: queries wait for it. */
bool pg_conn_down(const struct pg_conn *c);
/* How many queries are queued or in flight. */
int pg_conn_pending(const struct pg_conn *c);

/*
 * Queues sql with its text parameters (copied; NULL is SQL NULL). done is
 * called once, from the loop, never from within this call. 0, -ENOMEM, or -ESHUTDOWN
 * (c is being freed).
 * While the connection is down the query waits for it.
 */
int pg_conn_query(struct pg_conn *c, const char *sql, int nparams, const char *const *params,
		  pg_conn_done_fn done, void *arg);

/* Where the connection goes, for messages: "host:port/db" (never the password). */
const char *pg_conn_where(const struct pg_conn *c);

#endif
