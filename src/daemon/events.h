/*
 * events — the live event stream, GET /v1/events (docs/openapi.yaml): server-sent
 * events for the dashboard and any client. The lease service publishes every lease
 * state change, queue move, kill, quota settlement, resident and gate change here;
 * each event is rendered once and written to every subscriber that may see it.
 *
 * A subscriber's unsent bytes are bounded (EVENTS_BUFFER_MAX): one that reads too
 * slowly is dropped, its connection closed, so it never slows the loop or grows
 * the daemon's memory. The last hour's ended leases are kept (at most
 * EVENTS_HISTORY_MAX) for a new subscriber's timeline.
 */
#ifndef ZGPU_DAEMON_EVENTS_H
#define ZGPU_DAEMON_EVENTS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "daemon/core/lease.h"
#include "daemon/leases.h"

#define EVENTS_BUFFER_MAX  (256 * 1024) /* unsent bytes a subscriber may have */
#define EVENTS_HISTORY_MAX 2048		/* ended leases kept for the timeline */
#define EVENTS_HISTORY_MS  (3600 * 1000)
#define EVENTS_PING_S	   15 /* a comment line keeps proxies from closing a quiet stream */

struct zgpud;
struct quota_account;

struct subscriber;
TAILQ_HEAD(subscribers, subscriber);

struct events {
	struct subscribers subs;
	int nsubs;
	uint64_t seq; /* the last event's id */
	struct event *ping, *reap;
	/* Ended leases, oldest first in a ring of EVENTS_HISTORY_MAX (events.c): copied as
	 * plain records, rendered only for a snapshot, so a lease's end costs a copy. */
	struct ended_lease *history;
	int history_start, history_len;
};

int events_init(struct zgpud *d);
/* Ends every stream (the daemon is stopping) and frees what the module holds. */
void events_close_all(struct zgpud *d);
void events_free(struct zgpud *d);

/*
 * Makes req a subscriber: starts the stream, sends snapshot (stolen) as its first
 * event, then every event who may see. Returns 0, or -ENOMEM (the caller replies).
 */
int events_subscribe(struct zgpud *d, struct evhttp_request *req, const struct caller *who,
		     json_t *snapshot);

/* The ended leases of the last hour that who may see, oldest first. */
json_t *events_history(const struct zgpud *d, const struct caller *who, int64_t now_wall_ms);

/* What happened to a lease: queued (or moved in the queue), granted, expired, killed
 * (its process), ended. Ended leases enter the history. */
void events_lease(struct zgpud *d, const struct lease *l, const char *kind);
/* A visitor's quota moved: kind "reserved" (a call's cost held while it waits and
 * runs) or "settled" (at a lease's end, lease_id NULL if it never was one: charged_ms
 * of a's window taken, the rest of the hold let go). */
void events_quota(struct zgpud *d, const char *kind, const char *app, const char *lease_id,
		  const struct quota_account *a, int64_t charged_ms);
/* A resident worker: kept (at a release), taken (by a warm grant), evicted, gone. */
void events_resident(struct zgpud *d, const char *kind, const char *app, pid_t pid,
		     uint64_t devices, uint64_t bytes);
/* The gate opened a lease's devices to its app, or closed them. */
void events_gate(struct zgpud *d, const char *kind, const struct lease *l);

#endif
