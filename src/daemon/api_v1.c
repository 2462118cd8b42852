/*
 * api_v1 — the native HTTP API (docs/openapi.yaml), a protocol adapter: parse,
 * call the lease service, render. A lease request's reply is an NDJSON stream
 * that lives as long as the lease: each engine event becomes one line, and the
 * connection's close abandons the lease.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <jansson.h>

#include "common/clock.h"
#include "daemon/api.h"
#include "daemon/core/request.h"
#include "daemon/leases.h"
#include "daemon/record.h"
#include "daemon/views.h"

/* ------------------------------------------------------------------------
 * Lease streams.
 * ------------------------------------------------------------------------ */

struct stream {
	struct lease_client client; /* first: l->stream points here */
	struct zgpud *d;
	struct evhttp_request *req;
	struct evhttp_connection *conn;
	struct lease *lease; /* NULL once the lease ended */
	int64_t t0_us;	     /* when the request arrived, for the grant latency */
	bool started;	     /* the reply's head is out */
	bool closing;	     /* the connection is going away: no more writes */
	bool granted_sent;   /* the client heard `granted` */
};

static void stream_closed(struct evhttp_connection *conn, void *arg)
{
	struct stream *s = arg;
	(void) conn;
	s->closing = true;
	if (s->lease)
		leases_abandon(s->d, s->lease);
}

/* The reply's head, before its first event: the stream may stay quiet for the
 * whole lease, so it has no idle timeout; a client that goes away is noticed
 * by the close callback. */
static void stream_start(struct stream *s)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(s->req);
	evhttp_add_header(h, "Content-Type", "application/x-ndjson");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply_start(s->req, 200, "OK");
	metrics_count_http(&s->d->metrics, 200);
	bufferevent_set_timeouts(evhttp_connection_get_bufferevent(s->conn), NULL, NULL);
	http_on_close(s->d, s->conn, stream_closed, s);
	s->started = true;
}

static void stream_send(struct stream *s, json_t *event)
{
	if (!s->started)
		stream_start(s);
	struct evbuffer *buf = evbuffer_new();
	/* One event, one line, one chunk: a reader never sees half an event. */
	if (buf && http_append_json(buf, event) == 0)
		evhttp_send_reply_chunk(s->req, buf);
	json_decref(event);
	if (buf)
		evbuffer_free(buf);
}

/* The lease ended: send the last event, finish the reply, forget the connection. */
static void stream_end(struct stream *s, const struct lease *l, int64_t now)
{
	if (!s->granted_sent) {
		/* A grant that was not given: the ledger could not record it, or the gate
		 * could not open its devices. */
		const char *code = l->state == LEASE_CANCELLED	       ? "cancelled"
				   : !l->granted_ms		       ? "no_gpu"
				   : l->over_quota.refused	       ? "quota"
				   : record_fault_active(&s->d->fault) ? "ledger_unavailable"
								       : "internal";
		stream_send(s, json_pack("{s:s, s:s, s:{s:s, s:s}}", "event", "failed", "lease",
					 l->id, "error", "code", code, "message", l->message));
	} else {
		json_t *ev = json_pack("{s:s, s:s, s:s, s:f}", "event", "released", "lease", l->id,
				       "state", lease_state_name(l->state), "used_s",
				       (double) (now - l->granted_ms) / 1000.0);
		if (l->message[0])
			json_object_set_new(ev, "message", json_string(l->message));
		stream_send(s, ev);
	}
	if (!s->closing) {
		/* The client may send its next lease request on this connection: it is an
		 * ordinary kept-alive connection again, with the usual idle limit. */
		http_on_close(s->d, s->conn, NULL, NULL);
		evhttp_connection_set_timeout(s->conn, ZGPUD_IDLE_TIMEOUT_S);
	}
	evhttp_send_reply_end(s->req);
	free(s);
}

static bool stream_gone(struct lease_client *cl)
{
	struct stream *s = (struct stream *) cl;
	return s->closing || http_peer_gone(s->conn);
}

/* The engine's events for a lease of this API, after the service has recorded them. */
static void stream_on_event(struct lease_client *cl, struct lease *l, enum engine_event ev,
			    int64_t now)
{
	struct stream *s = (struct stream *) cl;
	struct zgpud *d = s->d;

	switch (ev) {
	case ENGINE_EV_QUEUED:
		stream_send(s, json_pack("{s:s, s:s, s:i, s:s}", "event", "queued", "lease", l->id,
					 "position", l->position_sent, "reason",
					 sched_reason(&d->engine.sched, l)));
		break;
	case ENGINE_EV_GRANTED:
		metrics_observe_grant(&d->metrics, l->req.tier,
				      (double) (clock_mono_us() - s->t0_us) / 1e6);
		s->granted_sent = true;
		/* warm: the app's resident worker there took the lease (pid: that worker). */
		json_t *ev_granted = json_pack(
			"{s:s, s:s, s:o, s:I, s:f, s:f, s:b}", "event", "granted", "lease", l->id,
			"devices", view_lease_devices(d, l), "deadline_ms",
			(json_int_t) zgpud_wall_ms(d, l->deadline_ms), "duration_s",
			(double) l->req.duration_ms / 1000.0, "grace_s",
			(double) d->engine.cfg.grace_ms / 1000.0, "warm", l->warm);
		if (l->warm)
			json_object_set_new(ev_granted, "pid", json_integer(l->proc.pid));
		stream_send(s, ev_granted);
		break;
	case ENGINE_EV_EXPIRED:
		stream_send(s, json_pack("{s:s, s:s, s:s, s:f}", "event", "expired", "lease", l->id,
					 "message", l->message, "grace_s",
					 (double) d->engine.cfg.grace_ms / 1000.0));
		break;
	case ENGINE_EV_ENDED:
		l->stream = NULL;
		s->lease = NULL;
		stream_end(s, l, now);
		return;
	}
	s->lease = l;
}

/* ------------------------------------------------------------------------
 * Routes.
 * ------------------------------------------------------------------------ */

static void get_healthz(struct call *c)
{
	http_reply_json(c, 200, json_pack("{s:b}", "ok", 1));
}

static void get_devices(struct call *c)
{
	leases_forget_dead_residents(c->d); /* list only the living */
	struct view v = {c->d, &c->who, clock_mono_ms()};
	http_reply_json(c, 200, json_pack("{s:o}", "devices", view_devices(&v)));
}

static void get_leases(struct call *c)
{
	struct view v = {c->d, &c->who, clock_mono_ms()};
	http_reply_json(c, 200, json_pack("{s:o}", "leases", view_held_leases(&v)));
}

static void get_queue(struct call *c)
{
	struct view v = {c->d, &c->who, clock_mono_ms()};
	http_reply_json(c, 200, json_pack("{s:o}", "queue", view_queue(&v)));
}

/* Which ledger, whether it takes writes; when not, why, since when, and what waits for it. */
static json_t *ledger_json(const struct zgpud *d, int64_t now)
{
	const struct record_fault *f = &d->fault;
	const char *backend = d->ledger->ops->name; /* sqlite, postgresql */
	if (!record_fault_active(f))
		return json_pack("{s:s, s:b}", "backend", backend, "writable", 1);
	return json_pack("{s:s, s:b, s:s, s:f, s:i}", "backend", backend, "writable", 0, "fault",
			 f->reason, "since_s", (double) (now - f->since_ms) / 1000.0,
			 "ends_waiting", f->pending);
}

static void get_status(struct call *c)
{
	struct zgpud *d = c->d;
	leases_forget_dead_residents(d);
	int64_t now = clock_mono_ms();
	struct view v = {d, &c->who, now};
	const struct engine_config *cfg = &d->engine.cfg;
	json_t *o = json_pack(
		"{s:s, s:i, s:f, s:s, s:s, s:{s:f, s:f, s:f, s:f}, s:s, s:i, s:o, s:o, s:o}",
		"version", ZGPU_VERSION, "protocol", 1, "uptime_s",
		(double) (now - d->started_mono_ms) / 1000.0, "device_source", d->inv.source,
		"policy", d->engine.sched.p.name, "limits", "max_duration_s",
		(double) cfg->max_duration_ms / 1000.0, "default_duration_s",
		(double) cfg->default_duration_ms / 1000.0, "default_max_wait_s",
		(double) cfg->default_max_wait_ms / 1000.0, "grace_s",
		(double) cfg->grace_ms / 1000.0, "gate", gate_mode_name(&d->gate), "parked",
		gate_parked(&d->gate), "devices", view_devices(&v), "leases", view_held_leases(&v),
		"queue", view_queue(&v));
	/* Why there is no gate, when there is none: the operator's next step. */
	if (o && d->gate.mode == GATE_OFF)
		json_object_set_new(o, "gate_reason", json_string(d->gate.why_off));
	if (o) {
		json_object_set_new(o, "node", json_string(d->ledger->node));
		json_object_set_new(o, "ledger", ledger_json(d, now));
	}
	http_reply_json(c, 200, o);
}

static void get_metrics(struct call *c)
{
	leases_forget_dead_residents(c->d);
	struct evbuffer *buf = evbuffer_new();
	if (!buf || metrics_render(&c->d->metrics, &c->d->engine, buf) < 0) {
		http_reply_error(c, 500, "internal", "out of memory rendering metrics");
	} else {
		http_reply_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", buf);
	}
	if (buf)
		evbuffer_free(buf);
}

/* A quota refusal as the native API words it: the hosted message, and the numbers. */
static void reply_refusal(struct call *c, const struct refusal *no)
{
	if (no->status != 429) {
		http_reply_refusal(c, no);
		return;
	}
	http_reply_json(c, 429,
			json_pack("{s:{s:s, s:s}, s:I, s:I}", "error", "code", no->code, "message",
				  no->message, "left_s", (json_int_t) (no->left_ms / 1000),
				  "wait_s", (json_int_t) ((no->wait_ms + 999) / 1000)));
}

static void post_lease(struct call *c)
{
	struct zgpud *d = c->d;
	char *body, err[512];
	size_t len;
	struct lease_request rq;
	static struct request_visitor visitor; /* large (a token); the loop is single-threaded */
	if (http_take_body(c, &body, &len) < 0)
		return;
	int r = request_parse_lease(body, len, &d->engine.cfg, d->engine.ngpus, &rq, &visitor, err,
				    sizeof(err));
	free(body);
	if (r < 0) {
		http_reply_error(c, 400, "bad_request", "%s", err);
		return;
	}
	struct stream *s = calloc(1, sizeof(*s));
	if (!s) {
		http_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	*s = (struct stream){.client = {.on_event = stream_on_event, .gone = stream_gone},
			     .d = d,
			     .req = c->req,
			     .conn = evhttp_request_get_connection(c->req),
			     .t0_us = c->t0_us};
	struct visitor_claim claim = {visitor.token, visitor.ip};
	struct refusal no;
	if (leases_admit(d, &c->who, &rq, &claim, &no) < 0 ||
	    leases_submit(d, &c->who, &rq, &s->client, &no) < 0) {
		free(s);
		reply_refusal(c, &no);
	}
	/* Else the engine's first event has started the stream. */
}

static void reply_attached(struct call *c, const struct lease *l)
{
	http_reply_json(c, 200,
			json_pack("{s:s, s:i, s:i}", "lease", l->id, "pid", (int) l->proc.pid,
				  "pgid", (int) l->proc.pgid));
}

static void get_lease(struct call *c)
{
	struct refusal no;
	struct lease *l = leases_find(c->d, &c->who, c->arg, false, &no);
	if (l)
		http_reply_json(c, 200, view_lease(c->d, l, clock_mono_ms()));
	else
		http_reply_refusal(c, &no);
}

static void post_attach(struct call *c)
{
	char *body, err[256];
	size_t len;
	pid_t pid;
	struct refusal no;
	struct lease *l = leases_find(c->d, &c->who, c->arg, true, &no);
	if (!l) {
		http_reply_refusal(c, &no);
		return;
	}
	if (http_take_body(c, &body, &len) < 0)
		return;
	int r = request_parse_attach(body, len, &pid, err, sizeof(err));
	free(body);
	if (r < 0)
		http_reply_error(c, 400, "bad_request", "%s", err);
	else if (leases_attach(c->d, &c->who, l, pid, false, &no) < 0)
		http_reply_refusal(c, &no);
	else
		reply_attached(c, l);
}

/* POST /v1/apps/NAME/join {"pid": N}: pid into the app's gated cgroup. */
static void post_join(struct call *c)
{
	char *body, err[256];
	size_t len;
	pid_t pid;
	struct refusal no;
	if (http_take_body(c, &body, &len) < 0)
		return;
	int r = request_parse_attach(body, len, &pid, err, sizeof(err));
	free(body);
	if (r < 0) {
		http_reply_error(c, 400, "bad_request", "%s", err);
		return;
	}
	if (leases_join(c->d, &c->who, c->arg, pid, &no) < 0) {
		http_reply_refusal(c, &no);
		return;
	}
	const char *app = c->who.cgroup_app[0]				? c->who.cgroup_app
			  : c->who.app[0] && !strcmp(c->arg, "default") ? c->who.app
									: c->arg;
	http_reply_json(c, 200,
			json_pack("{s:s, s:i, s:s}", "app", app, "pid", (int) pid, "gate",
				  gate_mode_name(&c->d->gate)));
}

/* A boolean query parameter (1, 0, true, false; absent: false). Replies 400 and returns
 * -1 when it is something else. */
static int query_flag(struct call *c, const char *name, bool *out)
{
	const char *v = evhttp_find_header(&c->query, name);
	*out = v && (!strcmp(v, "1") || !strcmp(v, "true"));
	if (v && !*out && strcmp(v, "0") && strcmp(v, "false")) {
		http_reply_error(c, 400, "bad_request",
				 "query parameter %s must be 1, 0, true or false (got '%.32s')",
				 name, v);
		return -1;
	}
	return 0;
}

static void delete_lease(struct call *c)
{
	struct refusal no;
	struct lease *l = leases_find(c->d, &c->who, c->arg, true, &no);
	if (!l) {
		http_reply_refusal(c, &no);
		return;
	}
	bool failed, keep;
	if (query_flag(c, "fail", &failed) < 0 || query_flag(c, "keep", &keep) < 0)
		return;
	if (failed && keep) {
		http_reply_error(c, 400, "bad_request",
				 "fail and keep exclude each other: a failed call's worker is not "
				 "kept");
		return;
	}
	char id[LEASE_ID_LEN + 1];
	memcpy(id, l->id, sizeof(id));
	int64_t used_ms = 0;
	bool kept = false;
	enum lease_state final = keep ? leases_release_keep(c->d, l, &used_ms, &kept)
				      : leases_end(c->d, l, failed, &used_ms);
	http_reply_json(c, 200,
			json_pack("{s:s, s:s, s:f, s:b}", "lease", id, "state",
				  lease_state_name(final), "used_s", (double) used_ms / 1000.0,
				  "kept", kept));
}

static void get_quota(struct call *c)
{
	struct zgpud *d = c->d;
	if (caller_app_scoped(&c->who)) {
		http_reply_error(c, 403, "forbidden",
				 "a visitor's quota spans every app: over TCP only the admin token "
				 "may read it");
		return;
	}
	struct quota_account *a = quota_find(&d->quota, c->arg);
	struct ledger_visitor v = {0};
	if (!a) {
		int found = d->ledger->ops->visitor_load(d->ledger, c->arg, &v);
		if (found <= 0) {
			http_reply_error(c, found < 0 ? 500 : 404, "no_such_visitor",
					 "no GPU use is recorded for '%.200s' (visitors are "
					 "'ip:ADDRESS' or 'user:NAME')",
					 c->arg);
			return;
		}
		a = record_visitor(d, c->arg, LEASE_TIER_ANONYMOUS);
		if (!a) {
			http_reply_error(c, 500, "internal", "out of memory");
			return;
		}
	}
	int64_t left = quota_left_ms(&d->quota.cfg, a, clock_wall_ms());
	int64_t limit = d->quota.cfg.daily_ms[a->tier];
	json_t *o = json_pack("{s:s, s:s, s:f, s:f, s:f, s:f}", "visitor", a->key, "tier",
			      lease_tier_name(a->tier), "limit_s", (double) limit / 1000.0,
			      "used_s", (double) a->used_ms / 1000.0, "reserved_s",
			      (double) a->reserved_ms / 1000.0, "left_s", (double) left / 1000.0);
	json_object_set_new(o, "window_start_ms",
			    a->window_start ? json_integer(a->window_start) : json_null());
	json_object_set_new(o, "resets_ms",
			    a->window_start ? json_integer(a->window_start + d->quota.cfg.window_ms)
					    : json_null());
	http_reply_json(c, 200, o);
}

const struct route api_v1_routes[] = {
	{.method = EVHTTP_REQ_GET, .pattern = "/v1/quota/*", .handler = get_quota},
	{.method = EVHTTP_REQ_GET, .pattern = "/healthz", .handler = get_healthz, .open = true},
	{.method = EVHTTP_REQ_GET, .pattern = "/metrics", .handler = get_metrics},
	{.method = EVHTTP_REQ_GET, .pattern = "/v1/status", .handler = get_status},
	{.method = EVHTTP_REQ_GET, .pattern = "/v1/devices", .handler = get_devices},
	{.method = EVHTTP_REQ_GET, .pattern = "/v1/queue", .handler = get_queue},
	{.method = EVHTTP_REQ_GET, .pattern = "/v1/leases", .handler = get_leases},
	{.method = EVHTTP_REQ_POST, .pattern = "/v1/leases", .handler = post_lease},
	{.method = EVHTTP_REQ_GET, .pattern = "/v1/leases/*", .handler = get_lease},
	{.method = EVHTTP_REQ_DELETE, .pattern = "/v1/leases/*", .handler = delete_lease},
	{.method = EVHTTP_REQ_POST, .pattern = "/v1/leases/*/attach", .handler = post_attach},
	{.method = EVHTTP_REQ_POST, .pattern = "/v1/apps/*/join", .handler = post_join},
	{.pattern = NULL},
};
