/*
 * The daemon's shared context: what main.c wires together and every edge
 * module reaches. One thread, one event loop.
 */
#ifndef ZGPU_DAEMON_ZGPUD_H
#define ZGPU_DAEMON_ZGPUD_H

#include <stdbool.h>
#include <stdint.h>

#include <sys/types.h>

#include <event2/event.h>
#include <event2/http.h>

#include "common/strmap.h"
#include "daemon/conn.h"
#include "daemon/core/devices.h"
#include "daemon/core/engine.h"
#include "daemon/core/quota.h"
#include "daemon/events.h"
#include "daemon/gate.h"
#include "daemon/grant_hold.h"
#include "daemon/metrics.h"
#include "daemon/record_fault.h"
#include "daemon/sys/ledger.h"

#define ZGPUD_MAX_BODY	     (64 * 1024)
#define ZGPUD_IDLE_TIMEOUT_S 30 /* a kept-alive connection with no request is closed */

/*
 * The daemon's state, wired by main.c. Each part is changed only by the module
 * named beside it; the others read it.
 */
struct zgpud {
	struct event_base *base;
	struct evhttp *http_unix, *http_tcp; /* main.c */
	struct conns conns;		     /* conn.c: every accepted connection */
	bool stopping;			     /* main.c: no request reaches the engine any more */
	struct inventory inv;		     /* main.c, at start */
	struct engine engine;		     /* leases.c, through the engine's functions */
	struct metrics metrics;		     /* metrics.c's counters, bumped by all */
	struct events events;		     /* events.c: GET /v1/events's subscribers */
	struct ledger *ledger;		     /* record.c writes it */
	struct record_fault fault;	     /* record_fault.c: the ledger cannot be written */
	struct quota_book quota;	 /* quota.c's functions, called by leases.c and record.c */
	struct gate gate;		 /* gate.c: opened by main.c, driven by leases.c */
	struct gpu_memory *gpu_memory;	 /* main.c, with NVML's devices: residents' sizes */
	const struct settings *settings; /* read only */
	char visitor_secret[256];	 /* verifies visitor tokens; "" accepts none */
	int hosting_limit[3];		 /* apps a free, pro and org account may host */
	char token[256];		 /* the admin bearer token for TCP; "" without TCP */
	/* The lease service (leases.c). */
	struct event *timer;	  /* fires at the engine's next deadline */
	struct grant_holds holds; /* grants waiting for evicted memory (grant_hold.c) */
	int64_t timer_at;	  /* when it is armed for; INT64_MAX when idle */
	/* Grants that could not be given (the ledger could not record them, the gate
	 * could not open their devices): never acknowledged, failed right after the
	 * engine call that made them (the engine cannot be re-entered from a hook). */
	char ungiven[2 * INV_MAX_DEVICES]
		    [LEASE_ID_LEN + 1]; /* one per slot: all one dispatch grants */
	int nungiven;
	/* The `spaces` device API (api_spaces.c). */
	struct strmap spaces_tokens;	    /* allowToken -> its lease's context */
	char spaces_app[LEASE_APP_MAX + 1]; /* the app of calls without an app token */
	int64_t spaces_ping_ms;		    /* keep-alive interval of queued /schedule streams */
	/* The clocks at start: monotonic times become wall-clock times for clients. */
	int64_t started_mono_ms, started_wall_ms;
	uid_t own_uid;
	int lock_fd;		 /* serve.c: the state directory's lock, held while serving */
	bool socket_inherited;	 /* serve.c: the service manager's; not removed at exit */
	bool socket_removed;	 /* serve.c: removed at the start of a drain */
	struct event *heartbeat; /* notify.c: the watchdog's, when the manager wants one */
};

/* A monotonic time as Unix wall-clock milliseconds, for clients and the ledger. */
static inline int64_t zgpud_wall_ms(const struct zgpud *d, int64_t mono_ms)
{
	return d->started_wall_ms + (mono_ms - d->started_mono_ms);
}

#endif
