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

/* ------------------------------------------------------------------------
 * Rendering.
 * ------------------------------------------------------------------------ */

/* What one caller may see of the daemon: an app token over TCP sees its app's leases only. */
struct view {
	struct zgpud *d;
	const struct caller *who;
	int64_t now;
};

/* The workers resident on inventory device d that the caller may see (as leases). */
static json_t *residents_json(const struct view *v, int device)
{
	const struct residency *t = &v->d->engine.residency;
	json_t *a = json_array();
	for (int i = 0; i < t->n; i++) {
		const struct resident *r = &t->r[i];
		if (!(r->devices & (UINT64_C(1) << device)) ||
		    (caller_app_scoped(v->who) && strcmp(r->app, v->who->app)))
			continue;
		json_array_append_new(
			a, json_pack("{s:s, s:s, s:i, s:I, s:I, s:I}", "app", r->app, "task",
				     r->task, "pid", (int) r->proc.pid, "bytes",
				     (json_int_t) r->bytes, "since_ms",
				     (json_int_t) zgpud_wall_ms(v->d, r->since_ms), "last_used_ms",
				     (json_int_t) zgpud_wall_ms(v->d, r->last_used_ms)));
	}
	return a;
}

static json_t *device_json(const struct view *v, const struct device *dev)
{
	const struct zgpud *d = v->d;
	const struct lease *holders[ENGINE_MAX_SLOTS];
	int slots, held;
	int n = engine_device_usage(&d->engine, dev->index, &slots, &held, holders,
				    ENGINE_MAX_SLOTS);
	json_t *ids = json_array();
	for (int i = 0; i < n; i++)
		if (leases_may_see(v->who, holders[i]))
			json_array_append_new(ids, json_string(holders[i]->id));
	const char *state = held == 0 ? "free" : held < slots ? "partial" : "busy";
	json_t *o = json_pack("{s:i, s:s, s:s, s:I, s:i, s:b, s:s, s:i, s:i, s:o}", "index",
			      dev->index, "uuid", dev->uuid, "name", dev->name, "memory_bytes",
			      (json_int_t) dev->memory_bytes, "gpu_index", dev->gpu_index,
			      "simulated", dev->simulated, "state", state, "slots", slots,
			      "slots_busy", held, "leases", ids);
	json_object_set_new(o, "memory_free_bytes",
			    json_integer((json_int_t) engine_memory_free(&d->engine, dev->index)));
	json_object_set_new(o, "residents", residents_json(v, dev->index));
	if (dev->mig_index >= 0)
		json_object_set_new(o, "mig_index", json_integer(dev->mig_index));
	if (dev->compute_capability[0])
		json_object_set_new(o, "compute_capability", json_string(dev->compute_capability));
	return o;
}

static json_t *devices_json(const struct view *v)
{
	json_t *a = json_array();
	for (size_t i = 0; i < v->d->inv.count; i++)
		json_array_append_new(a, device_json(v, &v->d->inv.devices[i]));
	return a;
}

static json_t *lease_devices_json(const struct zgpud *d, const struct lease *l)
{
	struct engine_device held[INV_MAX_DEVICES];
	int n = engine_lease_devices(&d->engine, l, held, INV_MAX_DEVICES);
	json_t *a = json_array();
	for (int i = 0; i < n; i++) {
		const struct device *dev = &d->inv.devices[held[i].device];
		json_array_append_new(
			a, json_pack("{s:i, s:s, s:I, s:I}", "index", dev->index, "uuid", dev->uuid,
				     "memory_bytes", (json_int_t) dev->memory_bytes,
				     "memory_limit_bytes", (json_int_t) held[i].memory_limit));
	}
	return a;
}

static json_t *lease_json(const struct zgpud *d, const struct lease *l, int64_t now)
{
	json_t *o = json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:f, s:f, s:I, s:o}", "id", l->id, "state",
		lease_state_name(l->state), "app", l->req.app, "task", l->req.task, "visitor",
		l->req.visitor, "size", lease_size_name(l->req.size), "gpus", l->req.gpus,
		"duration_s", (double) l->req.duration_ms / 1000.0, "max_wait_s",
		(double) l->req.max_wait_ms / 1000.0, "created_ms",
		(json_int_t) zgpud_wall_ms(d, l->created_ms), "devices", lease_devices_json(d, l));
	if (l->state == LEASE_QUEUED) {
		json_object_set_new(o, "waited_s",
				    json_real((double) (now - l->created_ms) / 1000.0));
	} else {
		json_object_set_new(o, "granted_ms", json_integer(zgpud_wall_ms(d, l->granted_ms)));
		json_object_set_new(o, "deadline_ms",
				    json_integer(zgpud_wall_ms(d, l->deadline_ms)));
		json_object_set_new(o, "remaining_s",
				    json_real((double) (l->deadline_ms - now) / 1000.0));
	}
	if (l->proc.pid > 0)
		json_object_set_new(o, "pid", json_integer(l->proc.pid));
	if (l->req.memory_bytes)
		json_object_set_new(o, "memory_bytes",
				    json_integer((json_int_t) l->req.memory_bytes));
	if (l->state != LEASE_QUEUED)
		json_object_set_new(o, "warm", json_boolean(l->warm));
	const struct lease_client *cl = l->stream;
	if (cl && cl->cgroup)
		json_object_set_new(o, "cgroup", json_string(cl->cgroup));
	if (l->owner.via_token)
		json_object_set_new(o, "owner", json_string("token"));
	else if (l->owner.uid_known)
		json_object_set_new(o, "owner_uid", json_integer(l->owner.uid));
	return o;
}

static int lease_cmp_created(const void *a, const void *b)
{
	const struct lease *x = *(const struct lease *const *) a;
	const struct lease *y = *(const struct lease *const *) b;
	return (x->granted_ms > y->granted_ms) - (x->granted_ms < y->granted_ms);
}

struct collect {
	const struct view *v;
	const struct lease **items;
	size_t n;
};

static void collect_held(struct lease *l, void *arg)
{
	struct collect *c = arg;
	if (l->state != LEASE_QUEUED && leases_may_see(c->v->who, l))
		c->items[c->n++] = l;
}

/* Held leases the caller may see, oldest grant first. */
static json_t *leases_json(const struct view *v)
{
	json_t *a = json_array();
	struct collect c = {v, calloc(v->d->engine.leases.len + 1, sizeof(*c.items)), 0};
	if (!c.items)
		return a;
	engine_foreach(&v->d->engine, collect_held, &c);
	qsort(c.items, c.n, sizeof(*c.items), lease_cmp_created);
	for (size_t i = 0; i < c.n; i++)
		json_array_append_new(a, lease_json(v->d, c.items[i], v->now));
	free(c.items);
	return a;
}

struct queue_walk {
	const struct view *v;
	json_t *array;
};

static void queue_item(struct lease *l, int position, void *arg)
{
	struct queue_walk *w = arg;
	if (!leases_may_see(w->v->who, l))
		return;
	json_t *o = lease_json(w->v->d, l, w->v->now);
	json_object_set_new(o, "position", json_integer(position));
	json_object_set_new(o, "reason", json_string(sched_reason(&w->v->d->engine.sched, l)));
	json_array_append_new(w->array, o);
}

/* The queue in order; an app token sees its own requests, at their true positions. */
static json_t *queue_json(const struct view *v)
{
	struct queue_walk w = {v, json_array()};
	(void) sched_walk(&v->d->engine.sched, queue_item, &w);
	return w.array;
}

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
			"devices", lease_devices_json(d, l), "deadline_ms",
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
	http_reply_json(c, 200, json_pack("{s:o}", "devices", devices_json(&v)));
}

static void get_leases(struct call *c)
{
	struct view v = {c->d, &c->who, clock_mono_ms()};
	http_reply_json(c, 200, json_pack("{s:o}", "leases", leases_json(&v)));
}

static void get_queue(struct call *c)
{
	struct view v = {c->d, &c->who, clock_mono_ms()};
	http_reply_json(c, 200, json_pack("{s:o}", "queue", queue_json(&v)));
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
		gate_parked(&d->gate), "devices", devices_json(&v), "leases", leases_json(&v),
		"queue", queue_json(&v));
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
		http_reply_json(c, 200, lease_json(c->d, l, clock_mono_ms()));
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
