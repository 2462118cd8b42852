#include "daemon/events.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/core/quota.h"
#include "daemon/core/engine.h"
#include "daemon/core/sched.h"
#include "daemon/http.h"
#include "daemon/leases.h"
#include "daemon/views.h"
#include "daemon/zgpud.h"

/* What the timeline needs of an ended lease. */
struct ended_lease {
	char id[LEASE_ID_LEN + 1];
	char app[LEASE_APP_MAX + 1];
	char visitor[LEASE_TEXT_MAX + 1];
	enum lease_tier tier;
	enum lease_state state;
	enum lease_size size;
	int gpus, ngrants;
	struct {
		uint8_t gpu, slots; /* slots: bit s for slot s (ENGINE_MAX_SLOTS is 8) */
	} grants[INV_MAX_DEVICES];
	int64_t granted_wall_ms, ended_wall_ms;
};

struct subscriber {
	TAILQ_ENTRY(subscriber) link;
	struct zgpud *d;
	struct evhttp_request *req;
	struct evhttp_connection *conn;
	struct caller who;
	bool dropping; /* too slow: closed from the reap event, never written again */
};

/* ------------------------------------------------------------------------
 * Subscribers.
 * ------------------------------------------------------------------------ */

static void forget(struct events *ev, struct subscriber *s)
{
	TAILQ_REMOVE(&ev->subs, s, link);
	ev->nsubs--;
	s->d->metrics.event_streams = (uint64_t) ev->nsubs;
	free(s);
	if (ev->nsubs == 0)
		event_del(ev->ping);
}

/* The client went away, or the reap event freed the connection. */
static void subscriber_closed(struct evhttp_connection *conn, void *arg)
{
	struct subscriber *s = arg;
	(void) conn;
	http_free_if_orphaned(s->req);
	forget(&s->d->events, s);
}

static size_t unsent_bytes(const struct subscriber *s)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(s->conn);
	return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

/*
 * Writes frame to s unless that would leave more than EVENTS_BUFFER_MAX unsent: a
 * reader that slow is dropped (closed from the reap event, not here: this may run
 * inside another connection's callback, or the engine's hook).
 */
static void write_frame(struct subscriber *s, struct evbuffer *scratch, const char *frame,
			size_t len)
{
	struct events *ev = &s->d->events;
	if (s->dropping)
		return;
	if (unsent_bytes(s) + len > EVENTS_BUFFER_MAX) {
		s->dropping = true;
		s->d->metrics.event_streams_dropped++;
		log_warn(
			"event stream: a subscriber reads too slowly (%zu bytes unsent, at most %d "
			"kept): its connection is closed; reconnecting gives it a fresh snapshot",
			unsent_bytes(s), EVENTS_BUFFER_MAX);
		event_active(ev->reap, 0, 0);
		return;
	}
	if (evbuffer_add(scratch, frame, len) == 0)
		evhttp_send_reply_chunk(s->req, scratch); /* moves the bytes out of scratch */
}

static void reap(evutil_socket_t fd, short what, void *arg)
{
	struct events *ev = arg;
	(void) fd;
	(void) what;
	/* Freeing a connection runs its close callback, which forgets the subscriber:
	 * look for the next one from the start each time. */
	for (;;) {
		struct subscriber *s;
		TAILQ_FOREACH(s, &ev->subs, link)
		if (s->dropping)
			break;
		if (!s)
			return;
		struct evhttp_connection *conn = s->conn;
		evhttp_connection_free(conn);
	}
}

static void ping(evutil_socket_t fd, short what, void *arg)
{
	struct events *ev = arg;
	static const char frame[] = ": ping\n\n";
	struct evbuffer *scratch = evbuffer_new();
	(void) fd;
	(void) what;
	if (!scratch)
		return;
	struct subscriber *s;
	TAILQ_FOREACH(s, &ev->subs, link)
	write_frame(s, scratch, frame, sizeof(frame) - 1);
	evbuffer_free(scratch);
}

int events_init(struct zgpud *d)
{
	struct events *ev = &d->events;
	TAILQ_INIT(&ev->subs);
	ev->ping = event_new(d->base, -1, EV_PERSIST, ping, ev);
	ev->reap = event_new(d->base, -1, 0, reap, ev);
	ev->history = calloc(EVENTS_HISTORY_MAX, sizeof(*ev->history));
	return ev->ping && ev->reap && ev->history ? 0 : -ENOMEM;
}

void events_close_all(struct zgpud *d)
{
	struct events *ev = &d->events;
	struct subscriber *s;
	while ((s = TAILQ_FIRST(&ev->subs))) {
		http_on_close(d, s->conn, NULL, NULL);
		if (!s->dropping)
			evhttp_send_reply_end(s->req); /* a client reconnects to the next run */
		forget(ev, s);
	}
}

void events_free(struct zgpud *d)
{
	struct events *ev = &d->events;
	events_close_all(d);
	free(ev->history);
	ev->history = NULL;
	ev->history_len = 0;
	if (ev->ping)
		event_free(ev->ping);
	if (ev->reap)
		event_free(ev->reap);
	ev->ping = ev->reap = NULL;
}

/* ------------------------------------------------------------------------
 * Publishing.
 * ------------------------------------------------------------------------ */

/* Who may see an event about app: an app token sees its own app's only; app NULL:
 * an event about no app (or several), for callers that see every app. */
static bool may_see(const struct caller *who, const char *app)
{
	return !caller_app_scoped(who) || (app && strcmp(app, who->app) == 0);
}

/* One SSE frame: "id: N\nevent: TYPE\ndata: JSON\n\n" (compact JSON has no newline). */
static char *render_frame(uint64_t id, const char *type, const json_t *data, size_t *len)
{
	char *json = json_dumps(data, JSON_COMPACT);
	char *frame = NULL;
	if (json) {
		int n = asprintf(&frame, "id: %" PRIu64 "\nevent: %s\ndata: %s\n\n", id, type,
				 json);
		*len = n < 0 ? 0 : (size_t) n;
		if (n < 0)
			frame = NULL;
	}
	free(json);
	return frame;
}

/* Sends event type with data (stolen) to every subscriber that may see app. */
static void publish(struct zgpud *d, const char *type, const char *app, json_t *data)
{
	struct events *ev = &d->events;
	if (ev->nsubs == 0 || !data) {
		json_decref(data);
		return;
	}
	size_t len = 0;
	char *frame = render_frame(++ev->seq, type, data, &len);
	json_decref(data);
	struct evbuffer *scratch = frame ? evbuffer_new() : NULL;
	if (!scratch) {
		free(frame);
		log_error("event stream: out of memory rendering a %s event", type);
		return;
	}
	struct subscriber *s;
	TAILQ_FOREACH(s, &ev->subs, link)
	if (may_see(&s->who, app))
		write_frame(s, scratch, frame, len);
	evbuffer_free(scratch);
	free(frame);
}

int events_subscribe(struct zgpud *d, struct evhttp_request *req, const struct caller *who,
		     json_t *snapshot)
{
	struct events *ev = &d->events;
	struct subscriber *s = calloc(1, sizeof(*s));
	size_t len = 0;
	char *frame = snapshot ? render_frame(ev->seq, "snapshot", snapshot, &len) : NULL;
	struct evbuffer *scratch = frame ? evbuffer_new() : NULL;
	json_decref(snapshot);
	if (!s || !scratch) {
		free(s);
		free(frame);
		if (scratch)
			evbuffer_free(scratch);
		return -ENOMEM;
	}
	*s = (struct subscriber){
		.d = d, .req = req, .conn = evhttp_request_get_connection(req), .who = *who};
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Accel-Buffering", "no"); /* nginx: pass events on at once */
	evhttp_send_reply_start(req, 200, "OK");
	metrics_count_http(&d->metrics, 200);
	/* A stream stays quiet between events: no idle timeout; a client that goes
	 * away is noticed by the close callback. */
	bufferevent_set_timeouts(evhttp_connection_get_bufferevent(s->conn), NULL, NULL);
	http_on_close(d, s->conn, subscriber_closed, s);
	TAILQ_INSERT_TAIL(&ev->subs, s, link);
	d->metrics.event_streams = (uint64_t) ev->nsubs + 1;
	if (ev->nsubs++ == 0) {
		struct timeval every = {EVENTS_PING_S, 0};
		event_add(ev->ping, &every);
	}
	static const char retry[] = "retry: 2000\n\n"; /* EventSource's reconnect delay */
	write_frame(s, scratch, retry, sizeof(retry) - 1);
	write_frame(s, scratch, frame, len);
	evbuffer_free(scratch);
	free(frame);
	return 0;
}

/* ------------------------------------------------------------------------
 * History.
 * ------------------------------------------------------------------------ */

static void remember_ended(struct zgpud *d, const struct lease *l)
{
	struct events *ev = &d->events;
	_Static_assert(ENGINE_MAX_SLOTS <= 8, "a grant's slots fit in a byte");
	if (!ev->history)
		return;
	if (ev->history_len == EVENTS_HISTORY_MAX) {
		ev->history_start = (ev->history_start + 1) % EVENTS_HISTORY_MAX;
		ev->history_len--;
	}
	struct ended_lease
		*h = &ev->history[(ev->history_start + ev->history_len++) % EVENTS_HISTORY_MAX];
	memcpy(h->id, l->id, sizeof(h->id));
	memcpy(h->app, l->req.app, sizeof(h->app));
	memcpy(h->visitor, l->req.visitor, sizeof(h->visitor));
	h->tier = l->req.tier;
	h->state = l->state;
	h->size = l->req.size;
	h->gpus = l->req.gpus;
	h->ngrants = l->ngrants;
	for (int i = 0; i < l->ngrants; i++) {
		h->grants[i].gpu = (uint8_t) l->grants[i].gpu;
		h->grants[i].slots = (uint8_t) l->grants[i].slots;
	}
	h->granted_wall_ms = zgpud_wall_ms(d, l->granted_ms);
	h->ended_wall_ms = zgpud_wall_ms(d, l->ended_ms);
}

static json_t *ended_lease_json(const struct ended_lease *h)
{
	json_t *slots = json_array();
	for (int i = 0; i < h->ngrants; i++)
		view_add_slots(slots, h->grants[i].gpu, h->grants[i].slots);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:o, s:I, s:I}", "id", h->id, "app",
			 h->app, "visitor", h->visitor, "tier", lease_tier_name(h->tier), "state",
			 lease_state_name(h->state), "size", lease_size_name(h->size), "gpus",
			 h->gpus, "slots", slots, "granted_ms", (json_int_t) h->granted_wall_ms,
			 "ended_ms", (json_int_t) h->ended_wall_ms);
}

json_t *events_history(const struct zgpud *d, const struct caller *who, int64_t now_wall_ms)
{
	const struct events *ev = &d->events;
	json_t *a = json_array();
	for (int i = 0; a && i < ev->history_len; i++) {
		const struct ended_lease
			*h = &ev->history[(ev->history_start + i) % EVENTS_HISTORY_MAX];
		if (h->ended_wall_ms >= now_wall_ms - EVENTS_HISTORY_MS && may_see(who, h->app))
			json_array_append_new(a, ended_lease_json(h));
	}
	return a;
}

/* ------------------------------------------------------------------------
 * The events.
 * ------------------------------------------------------------------------ */

void events_lease(struct zgpud *d, const struct lease *l, const char *kind)
{
	struct events *ev = &d->events;
	bool ended = strcmp(kind, "ended") == 0;
	if (ended && l->granted_ms)
		remember_ended(d, l);
	if (ev->nsubs == 0)
		return;
	int64_t now = clock_mono_ms();
	json_t *lease = view_lease(d, l, now);
	if (!lease)
		return;
	if (l->state == LEASE_QUEUED) {
		json_object_set_new(lease, "position", json_integer(l->position_sent));
		json_object_set_new(lease, "reason",
				    json_string(sched_reason(&d->engine.sched, l)));
	}
	if (ended) {
		json_object_set_new(lease, "ended_ms", json_integer(zgpud_wall_ms(d, l->ended_ms)));
		if (l->message[0])
			json_object_set_new(lease, "message", json_string(l->message));
	}
	publish(d, "lease", l->req.app, json_pack("{s:s, s:o}", "kind", kind, "lease", lease));
}

void events_quota(struct zgpud *d, const char *kind, const char *app, const char *lease_id,
		  const struct quota_account *a, int64_t charged_ms)
{
	if (d->events.nsubs == 0)
		return;
	const struct quota_config *qc = &d->quota.cfg;
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:I}", "kind", kind,
			      "visitor", a->key, "tier", lease_tier_name(a->tier), "app", app,
			      "charged_s", (double) charged_ms / 1000.0, "used_s",
			      (double) a->used_ms / 1000.0, "reserved_s",
			      (double) a->reserved_ms / 1000.0, "daily_s",
			      (double) qc->daily_ms[a->tier] / 1000.0, "window_start_ms",
			      (json_int_t) a->window_start);
	if (o && lease_id)
		json_object_set_new(o, "lease", json_string(lease_id));
	publish(d, "quota", app, o);
}

/* The inventory indexes of a device bitmask, as a JSON array. */
static json_t *device_indexes(const struct zgpud *d, uint64_t devices)
{
	json_t *a = json_array();
	for (size_t i = 0; i < d->inv.count && i < 64; i++)
		if (devices & (UINT64_C(1) << i))
			json_array_append_new(a, json_integer((json_int_t) i));
	return a;
}

void events_resident(struct zgpud *d, const char *kind, const char *app, pid_t pid,
		     uint64_t devices, uint64_t bytes)
{
	if (d->events.nsubs == 0)
		return;
	publish(d, "resident", app,
		json_pack("{s:s, s:s, s:i, s:o, s:I}", "kind", kind, "app", app, "pid", (int) pid,
			  "devices", device_indexes(d, devices), "bytes", (json_int_t) bytes));
}

void events_gate(struct zgpud *d, const char *kind, const struct lease *l)
{
	if (d->events.nsubs == 0 || d->gate.mode == GATE_OFF)
		return;
	publish(d, "gate", l->req.app,
		json_pack("{s:s, s:s, s:s, s:o}", "kind", kind, "app", l->req.app, "lease", l->id,
			  "devices", view_lease_devices(d, l)));
}
