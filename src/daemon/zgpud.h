/*
 * The daemon's shared context: what main.c wires together and the HTTP layer
 * reaches. One thread, one event loop.
 */
#ifndef ZGPU_DAEMON_ZGPUD_H
#define ZGPU_DAEMON_ZGPUD_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "common/strmap.h"
#include "daemon/conn.h"
#include "daemon/core/engine.h"
#include "daemon/sys/inventory.h"
#include "daemon/sys/ledger.h"
#include "daemon/metrics.h"
#include "daemon/core/quota.h"

#define ZGPUD_MAX_BODY	     (64 * 1024)
#define ZGPUD_IDLE_TIMEOUT_S 30 /* a kept-alive connection with no request is closed */

struct zgpud;

/*
 * What an API keeps per lease in l->stream starts with this: the engine's
 * events reach it through on_event, after the ledger and the quota have been
 * brought up to date (events.c). ENDED is the last call; the client frees its
 * context there.
 */
struct lease_client {
	void (*on_event)(struct lease_client *cl, struct lease *l, enum engine_event ev,
			 int64_t now);
	/* Optional: whether the client is gone (its connection closed unnoticed). */
	bool (*gone)(struct lease_client *cl);
	const char *cgroup; /* the client's cgroup (the `spaces` API sends it), or NULL */
};

/*
 * Who last held an inventory device, to tell a returning app its worker still
 * lives. The worker is held by its pidfd (proc.h) until it is reused, replaced
 * by the device's next worker, or the daemon stops.
 */
struct device_last_use {
	char app[LEASE_APP_MAX + 1];
	char task[LEASE_TEXT_MAX + 1];
	struct lease_process worker; /* pid 0 when none was attached (or it was reused) */
};

/* What a listener's requests carry: which daemon, and whether they came over TCP. */
struct zgpud_listener {
	struct zgpud *d;
	bool tcp;
};

struct zgpud {
	struct event_base *base;
	struct event *timer; /* fires at the engine's next deadline */
	int64_t timer_at;    /* when it is armed for; INT64_MAX when idle */
	struct evhttp *http_unix, *http_tcp;
	struct conns conns; /* every accepted connection: peers, limits, deadlines */
	bool stopping;	    /* shutting down: no request reaches the engine any more */
	struct zgpud_listener listeners[2]; /* [0] Unix socket, [1] TCP */
	struct inventory inv;
	struct engine engine;
	struct metrics metrics;
	struct ledger *ledger;
	struct quota_book quota;
	char visitor_secret[256];	 /* verifies visitor tokens; "" accepts none */
	int hosting_limit[3];		 /* apps a free, pro and org account may host */
	const struct settings *settings; /* for [apps]: which uids may act as which apps */
	/* Grants the ledger could not record: never acknowledged, failed right after
	 * the engine call that made them (the engine cannot be re-entered from a hook). */
	char unrecorded[16][LEASE_ID_LEN + 1];
	int nunrecorded;
	char token[256]; /* bearer token for TCP; empty: no TCP listener */
	struct device_last_use last_use[INV_MAX_DEVICES];
	/* The `spaces` device API (api_spaces.c). */
	struct strmap spaces_tokens;	    /* allowToken -> its lease's context */
	char spaces_app[LEASE_APP_MAX + 1]; /* the app of calls without an app token */
	int64_t spaces_ping_ms;		    /* keep-alive interval of queued /schedule streams */
	int64_t started_mono_ms, started_wall_ms;
	uid_t own_uid;
};

/* Re-arms the deadline timer after the engine's state changed. */
void zgpud_rearm(struct zgpud *d);

/* Converts a monotonic time to Unix wall-clock milliseconds for clients. */
int64_t zgpud_wall_ms(int64_t mono_ms);

/* http.c: sets up an evhttp with the routes. tcp selects bearer-token auth. */
struct evhttp *http_server_new(struct zgpud *d, bool tcp);

/* events.c: the engine's event hook (ctx is the struct zgpud). Records grants and
 * ends in the ledger, settles quota, then tells the lease's client. */
void zgpud_on_lease_event(void *ctx, struct lease *l, enum engine_event ev);
/* events.c: the engine's waiter_gone hook: asks the lease's client. */
bool zgpud_waiter_gone(void *ctx, struct lease *l);

/* api_v1.c: the rendering of a lease's devices, shared with the `spaces` API. */
json_t *api_lease_devices_json(const struct zgpud *d, const struct lease *l);

#endif
