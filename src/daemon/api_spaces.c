/*
 * api_spaces — the device API of the hosted ZeroGPU, which the `spaces`
 * package calls (docs/spaces-compat.md): /schedule, /allow, /release,
 * /startup-report and /queue-size. A protocol adapter: requests go through the
 * same lease service (and so the same engine, queue, quota and ledger) as the
 * native API. A lease made here is bound to its allowToken, not to a
 * connection: the /schedule reply ends at the grant, and the worker process
 * later allows and releases with the token.
 *
 * The package reads each chunk of a queued /schedule reply as exactly one
 * server-sent event, so every event goes out as one chunk.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/random_hex.h"
#include "daemon/api.h"
#include "daemon/core/spaces_request.h"
#include "daemon/leases.h"
#include "daemon/settings.h"

#define SPACES_MAX_PARAMS 32

/* One lease made through /schedule. */
struct spaces_lease {
	struct lease_client client; /* first: l->stream points here */
	struct zgpud *d;
	struct lease *lease; /* set by its first event; the context dies with it */
	char token[SPACES_TOKEN_LEN + 1];
	struct strmap_node tnode;   /* in d->spaces_tokens */
	struct evhttp_request *req; /* the /schedule reply still owed, or NULL */
	struct evhttp_connection *conn;
	struct event *ping; /* keep-alives while that reply is an event stream */
	bool streaming, closing;
	bool worker_reused;	   /* bound at the grant to the app's idle worker */
	struct lease_owner caller; /* who called /schedule */
	int64_t t0_us;
	char cgroup[SPACES_CGROUP_MAX + 1];
};

static struct spaces_lease *find_token(struct zgpud *d, const char *token)
{
	struct strmap_node *n = strmap_find(&d->spaces_tokens, token);
	return n ? strmap_item(n, struct spaces_lease, tnode) : NULL;
}

/* ------------------------------------------------------------------------
 * The /schedule reply: JSON at once, or an event stream while queued.
 * ------------------------------------------------------------------------ */

/* The grant as the package reads it. */
static json_t *grant_json(const struct spaces_lease *sl, const struct lease *l, bool idle)
{
	const struct zgpud *d = sl->d;
	struct engine_device held[INV_MAX_DEVICES];
	int n = engine_lease_devices(&d->engine, l, held, INV_MAX_DEVICES);
	const struct device *dev = &d->inv.devices[n > 0 ? held[0].device : 0];
	return json_pack("{s:b, s:i, s:s, s:s}", "idle", idle, "nvidiaIndex", dev->index,
			 "nvidiaUUID", dev->uuid, "allowToken", sl->token);
}

static void send_event(struct spaces_lease *sl, const char *name, json_t *data)
{
	if (sl->closing)
		return;
	struct evbuffer *buf = evbuffer_new();
	char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
	if (buf && (!data || text)) {
		evbuffer_add_printf(buf, "event: %s\n", name);
		if (text)
			evbuffer_add_printf(buf, "data: %s\n", text);
		evbuffer_add(buf, "\n", 1);
		evhttp_send_reply_chunk(sl->req, buf);
	}
	free(text);
	json_decref(data);
	if (buf)
		evbuffer_free(buf);
}

static void on_ping(evutil_socket_t fd, short what, void *arg)
{
	(void) fd;
	(void) what;
	send_event(arg, "ping", NULL);
}

static void stream_closed(struct evhttp_connection *conn, void *arg)
{
	struct spaces_lease *sl = arg;
	(void) conn;
	sl->closing = true;
	if (sl->lease && sl->lease->state == LEASE_QUEUED)
		leases_abandon(sl->d, sl->lease); /* frees sl with the lease */
}

static void start_stream(struct spaces_lease *sl, const struct lease *l)
{
	struct zgpud *d = sl->d;
	struct evkeyvalq *h = evhttp_request_get_output_headers(sl->req);
	evhttp_add_header(h, "X-Queuing-Reason", sched_reason(&d->engine.sched, l));
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply_start(sl->req, 200, "OK");
	metrics_count_http(&d->metrics, 200);
	sl->streaming = true;
	bufferevent_set_timeouts(evhttp_connection_get_bufferevent(sl->conn), NULL, NULL);
	http_on_close(d, sl->conn, stream_closed, sl);
	struct timeval every = {.tv_sec = d->spaces_ping_ms / 1000,
				.tv_usec = (d->spaces_ping_ms % 1000) * 1000};
	sl->ping = event_new(d->base, -1, EV_PERSIST, on_ping, sl);
	if (sl->ping)
		event_add(sl->ping, &every);
}

static void end_stream(struct spaces_lease *sl)
{
	if (sl->ping) {
		event_free(sl->ping);
		sl->ping = NULL;
	}
	if (!sl->closing) {
		/* An ordinary kept-alive connection again, with the usual idle limit. */
		http_on_close(sl->d, sl->conn, NULL, NULL);
		evhttp_connection_set_timeout(sl->conn, ZGPUD_IDLE_TIMEOUT_S);
	}
	evhttp_send_reply_end(sl->req);
	sl->req = NULL;
	sl->streaming = false;
}

/* Replies to /schedule with the grant, in whichever form the reply has taken; `idle`
 * when the app's resident worker on the device took the lease (leases.c). */
static void answer_granted(struct spaces_lease *sl, struct lease *l)
{
	struct zgpud *d = sl->d;
	metrics_observe_grant(&d->metrics, l->req.tier,
			      (double) (clock_mono_us() - sl->t0_us) / 1e6);
	sl->worker_reused = l->warm && l->state == LEASE_ATTACHED; /* leases.c took it over */
	json_t *grant = grant_json(sl, l, sl->worker_reused);
	if (sl->streaming) {
		send_event(sl, "succeeded", grant);
		end_stream(sl);
		return;
	}
	struct call c = {.d = d, .req = sl->req};
	http_reply_json(&c, 200, grant);
	sl->req = NULL;
}

static void reply_refusal(struct call *c, const struct refusal *no);

/* Replies to /schedule that no GPU came: `failed` in the stream, or a 503; a 429 when a
 * shared ledger found the visitor's quota spent on other machines at the grant. */
static void answer_no_gpu(struct spaces_lease *sl, const struct lease *l)
{
	if (sl->streaming) {
		send_event(sl, "failed", NULL);
		end_stream(sl);
		return;
	}
	struct call c = {.d = sl->d, .req = sl->req};
	if (l->over_quota.refused) {
		struct refusal no = {.status = 429,
				     .code = "quota",
				     .tier = l->req.tier,
				     .cost_ms = quota_cost_ms(&sl->d->quota.cfg, &l->req),
				     .left_ms = l->over_quota.left_ms,
				     .wait_ms = l->over_quota.wait_ms};
		snprintf(no.message, sizeof(no.message), "%s", l->message);
		reply_refusal(&c, &no);
		sl->req = NULL;
		return;
	}
	/* The engine's reasons for a timeout already start with the hosted words. */
	static const char words[] = "No GPU was available";
	if (strncmp(l->message, words, sizeof(words) - 1) == 0)
		http_reply_error(&c, 503, "no_gpu", "%s", l->message);
	else
		http_reply_error(&c, 503, "no_gpu", "%s%s%s", words, l->message[0] ? ": " : "",
				 l->message);
	sl->req = NULL;
}

static void spaces_on_event(struct lease_client *cl, struct lease *l, enum engine_event ev,
			    int64_t now)
{
	struct spaces_lease *sl = (struct spaces_lease *) cl;
	(void) now;
	sl->lease = l;
	switch (ev) {
	case ENGINE_EV_QUEUED:
		if (sl->req && !sl->streaming)
			start_stream(sl, l);
		break;
	case ENGINE_EV_GRANTED:
		if (sl->req)
			answer_granted(sl, l);
		break;
	case ENGINE_EV_EXPIRED:
		break;
	case ENGINE_EV_ENDED:
		if (sl->req)
			answer_no_gpu(sl, l);
		l->stream = NULL;
		strmap_remove(&sl->d->spaces_tokens, &sl->tnode);
		free(sl);
		break;
	}
}

/* ------------------------------------------------------------------------
 * Routes.
 * ------------------------------------------------------------------------ */

/* The query as key/value pairs; replies 400 and returns -1 when there are too many. */
static int query_params(struct call *c, struct query_param *out, size_t *n)
{
	struct evkeyval *kv;
	*n = 0;
	TAILQ_FOREACH(kv, &c->query, next)
	{
		if (*n == SPACES_MAX_PARAMS) {
			http_reply_error(c, 400, "bad_request", "more than %d query parameters",
					 SPACES_MAX_PARAMS);
			return -1;
		}
		out[(*n)++] = (struct query_param){kv->key, kv->value};
	}
	return 0;
}

/*
 * The app this call is for: the app token's, else that of the app cgroup the
 * caller runs in, else the configured default, if the caller may act as it.
 * Replies 401/403 and returns NULL when there is none the caller may use.
 */
static const char *caller_app(struct call *c)
{
	struct zgpud *d = c->d;
	const char *app = c->who.app[0]		 ? c->who.app
			  : c->who.cgroup_app[0] ? c->who.cgroup_app
						 : d->spaces_app;
	if (!app[0] && !c->who.token_bad) {
		http_reply_error(c, 401, "unauthorized",
				 "which app is this? Send an app token (Authorization: Bearer, or "
				 "http://app:TOKEN@host:port as SPACES_ZERO_DEVICE_API_URL), or "
				 "set [spaces] app in zerogpud's config");
		return NULL;
	}
	struct lease_request rq = {0};
	struct visitor_claim none = {NULL, NULL};
	struct refusal no;
	snprintf(rq.app, sizeof(rq.app), "%s", app);
	if (leases_admit(d, &c->who, &rq, &none, &no) < 0) {
		http_reply_refusal(c, &no);
		return NULL;
	}
	return app;
}

/* The `spaces` package's words for a visitor's tier; none for anonymous visitors. */
static void add_auth_header(struct call *c, const struct lease_request *rq)
{
	if (!rq->quota_key[0] || rq->tier == LEASE_TIER_ANONYMOUS)
		return;
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "X-Authenticated",
			  rq->tier == LEASE_TIER_FREE ? "regular" : "pro");
}

/*
 * The service's refusal as the package reads it. A quota refusal is 429
 * {left, wait} in seconds: a negative wait means no wait helps (more than the
 * tier's whole daily quota), and 0 would read as "runs limit", so a refusal
 * that only in-flight reservations cause says 1 s.
 */
static void reply_refusal(struct call *c, const struct refusal *no)
{
	if (no->status != 429) {
		http_reply_refusal(c, no);
		return;
	}
	int64_t daily = c->d->quota.cfg.daily_ms[no->tier];
	json_int_t wait = no->cost_ms > daily ? -1 : (json_int_t) ((no->wait_ms + 999) / 1000);
	if (wait == 0)
		wait = 1;
	http_reply_json(c, 429,
			json_pack("{s:I, s:I, s:{s:s, s:s}}", "left",
				  (json_int_t) (no->left_ms / 1000), "wait", wait, "error", "code",
				  no->code, "message", no->message));
}

/* A queued /schedule caller that hung up is not granted a device it will never hear of. */
static bool schedule_caller_gone(struct lease_client *cl)
{
	struct spaces_lease *sl = (struct spaces_lease *) cl;
	return sl->req && (sl->closing || http_peer_gone(sl->conn));
}

static struct spaces_lease *new_spaces_lease(struct call *c, const char *cgroup)
{
	struct zgpud *d = c->d;
	struct spaces_lease *sl = calloc(1, sizeof(*sl));
	if (!sl || strmap_reserve(&d->spaces_tokens) < 0) {
		free(sl);
		return NULL;
	}
	sl->client.on_event = spaces_on_event;
	sl->client.gone = schedule_caller_gone;
	sl->d = d;
	sl->req = c->req;
	sl->conn = evhttp_request_get_connection(c->req);
	sl->t0_us = c->t0_us;
	sl->caller = leases_owner_of(&c->who);
	if (cgroup[0]) {
		strcpy(sl->cgroup, cgroup);
		sl->client.cgroup = sl->cgroup;
	}
	do
		random_hex(sl->token, SPACES_TOKEN_LEN / 2);
	while (find_token(d, sl->token));
	sl->tnode.key = sl->token;
	(void) strmap_insert(&d->spaces_tokens, &sl->tnode); /* room reserved above */
	return sl;
}

static void post_schedule(struct call *c)
{
	struct zgpud *d = c->d;
	struct query_param params[SPACES_MAX_PARAMS];
	struct spaces_schedule s;
	size_t n;
	char err[256];
	const char *app = caller_app(c);
	if (!app || query_params(c, params, &n) < 0)
		return;
	int parsed = spaces_parse_schedule(params, n, &d->engine.cfg, &s, err, sizeof(err));
	if (parsed == -EINVAL) {
		http_reply_error(c, 400, "bad_request", "%s", err);
		return;
	}

	struct lease_request rq = {
		.size = s.size,
		.gpus = 1,
		.duration_ms = s.duration_ms,
		.max_wait_ms = s.enable_queue ? d->engine.cfg.default_max_wait_ms : 0,
		.tier = LEASE_TIER_ANONYMOUS,
		.quota_left = 1.0,
	};
	snprintf(rq.app, sizeof(rq.app), "%s", app);
	snprintf(rq.task, sizeof(rq.task), "%s", s.task);
	/* The `spaces` client does not say how much memory it needs: the operator may
	 * ([apps] NAME memory); else the call counts all the memory its size gets. */
	rq.memory_bytes = settings_app_memory(d->settings, app);
	rq.task_bound = true; /* its client keeps a worker per function: `idle` means that one */
	struct visitor_claim claim = {s.token, NULL};
	struct refusal no;
	if (d->settings->spaces_require_visitor && !(s.token && s.token[0])) {
		/* Straight to the app, past the gateway: nobody to charge. */
		http_reply_error(
			c, 401, "no_visitor",
			"this GPU call names no visitor, and zerogpud requires one ([spaces] "
			"require_visitor): the app must be reached through the visitor "
			"gateway, which gives every visitor a token (docs/gateway.md)");
		return;
	}
	if (leases_admit(d, &c->who, &rq, &claim, &no) < 0) {
		reply_refusal(c, &no);
		return;
	}
	add_auth_header(c, &rq);
	if (parsed == -ERANGE) {
		/* The package words a negative wait as "larger than the maximum allowed". */
		http_reply_json(c, 429,
				json_pack("{s:I, s:i, s:{s:s, s:s}}", "left",
					  (json_int_t) (leases_quota_left_ms(d, &rq) / 1000),
					  "wait", -1, "error", "code", "duration", "message", err));
		return;
	}
	struct spaces_lease *sl = new_spaces_lease(c, s.cgroup);
	if (!sl) {
		http_reply_error(c, 500, "internal", "out of memory queueing the request");
		return;
	}
	if (leases_submit(d, &c->who, &rq, &sl->client, &no) < 0) {
		strmap_remove(&d->spaces_tokens, &sl->tnode);
		free(sl);
		reply_refusal(c, &no);
	}
	/* Else the engine's first event has answered, or will. */
}

/* The lease an allowToken stands for; replies 400/404 and returns NULL when none. */
static struct spaces_lease *token_lease(struct call *c, int r, const char *token, const char *err)
{
	if (r < 0) {
		http_reply_error(c, 400, "bad_request", "%s", err);
		return NULL;
	}
	struct spaces_lease *sl = find_token(c->d, token);
	if (!sl || !sl->lease) {
		http_reply_error(c, 404, "no_such_token",
				 "allowToken %s is not open: it was released, its lease ended, or "
				 "it was never handed out",
				 token);
		return NULL;
	}
	return sl;
}

/*
 * The parameters of /allow and /release, which act by allowToken alone; a
 * token in Authorization that is no app's is still refused (401). Replies and
 * returns -1 on either.
 */
static int token_call_params(struct call *c, struct query_param *params, size_t *n)
{
	if (c->who.token_bad) {
		http_reply_error(c, 401, "unauthorized",
				 "the token sent is neither an app's nor the admin token: send an "
				 "app's token (zerogpu app list names the apps), or none");
		return -1;
	}
	return query_params(c, params, n);
}

static void post_allow(struct call *c)
{
	struct query_param params[SPACES_MAX_PARAMS];
	char token[SPACES_TOKEN_LEN + 1] = "", err[256];
	size_t n;
	pid_t pid;
	if (token_call_params(c, params, &n) < 0)
		return;
	int r = spaces_parse_allow(params, n, token, &pid, err, sizeof(err));
	struct spaces_lease *sl = token_lease(c, r, token, err);
	if (!sl)
		return;
	struct lease *l = sl->lease;
	struct refusal no;
	if (leases_attach(c->d, &c->who, l, pid, sl->worker_reused, &no) < 0) {
		/* The package's word for attaching is allowing. */
		if (strcmp(no.code, "already_attached") == 0)
			no.code = "already_allowed";
		http_reply_refusal(c, &no);
		return;
	}
	http_reply_json(c, 200,
			json_pack("{s:s, s:i, s:I}", "lease", l->id, "pid", (int) pid,
				  "deadline_ms", (json_int_t) zgpud_wall_ms(c->d, l->deadline_ms)));
}

static void post_release(struct call *c)
{
	struct query_param params[SPACES_MAX_PARAMS];
	char token[SPACES_TOKEN_LEN + 1] = "", err[256];
	size_t n;
	bool fail;
	if (token_call_params(c, params, &n) < 0)
		return;
	int r = spaces_parse_release(params, n, token, &fail, err, sizeof(err));
	struct spaces_lease *sl = token_lease(c, r, token, err);
	if (!sl)
		return;
	struct lease *l = sl->lease;
	/* A lease no process was allowed on never used its device: nothing to charge. */
	bool unused = l->proc.pid == 0;
	int64_t used_ms = 0;
	/* The `spaces` client keeps its worker for the next call (`idle`): it stays
	 * resident, weights and all, unless the call failed. */
	enum lease_state final = fail || unused ? leases_end(c->d, l, true, &used_ms)
						: leases_release_keep(c->d, l, &used_ms, NULL);
	if (unused) {
		evhttp_send_reply(c->req, 204, "GPU device not used", NULL);
		metrics_count_http(&c->d->metrics, 204);
		return;
	}
	http_reply_json(c, 200,
			json_pack("{s:s, s:f}", "state", lease_state_name(final), "used_s",
				  (double) used_ms / 1000.0));
}

static void post_startup_report(struct call *c)
{
	const char *app = caller_app(c);
	if (!app)
		return;
	log_info("app %s: `spaces` start-up report", app);
	http_reply_json(c, 200, json_pack("{s:s}", "app", app));
}

static void get_queue_size(struct call *c)
{
	http_reply_json(c, 200, json_integer((json_int_t) c->d->engine.sched.len));
}

const struct route api_spaces_routes[] = {
	{.method = EVHTTP_REQ_POST, .pattern = "/schedule", .handler = post_schedule, .open = true},
	{.method = EVHTTP_REQ_POST, .pattern = "/allow", .handler = post_allow, .open = true},
	{.method = EVHTTP_REQ_POST, .pattern = "/release", .handler = post_release, .open = true},
	{.method = EVHTTP_REQ_POST,
	 .pattern = "/startup-report",
	 .handler = post_startup_report,
	 .open = true},
	{.method = EVHTTP_REQ_GET,
	 .pattern = "/queue-size",
	 .handler = get_queue_size,
	 .open = true},
	{.pattern = NULL},
};
