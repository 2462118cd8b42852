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

#include "daemon/engine.h"
#include "daemon/inventory.h"
#include "daemon/ledger.h"
#include "daemon/metrics.h"
#include "daemon/quota.h"

#define ZGPUD_MAX_BODY	     (64 * 1024)
#define ZGPUD_IDLE_TIMEOUT_S 30 /* a kept-alive connection with no request is closed */

struct zgpud;

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
	int64_t started_mono_ms, started_wall_ms;
	uid_t own_uid;
};

/* Re-arms the deadline timer after the engine's state changed. */
void zgpud_rearm(struct zgpud *d);

/* Converts a monotonic time to Unix wall-clock milliseconds for clients. */
int64_t zgpud_wall_ms(int64_t mono_ms);

/* http.c: sets up an evhttp with the routes. tcp selects bearer-token auth. */
struct evhttp *http_server_new(struct zgpud *d, bool tcp);

/* api_v1.c: the engine's event hook (ctx is the struct zgpud), which talks to lease streams. */
void api_v1_on_event(void *ctx, struct lease *l, enum engine_event ev);

#endif
