/* libzerogpu: the client of zerogpud's native API (docs/openapi.yaml). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <jansson.h>

#include "common/clock.h"
#include "lib/wire.h"
#include "zerogpu.h"

#define ZGPU_HTTP_TIMEOUT_MS 30000 /* for plain requests; lease streams wait longer */

/* ------------------------------------------------------------------------
 * Errors: the code goes back as the result, the sentence into a per-thread slot.
 * ------------------------------------------------------------------------ */

static _Thread_local char last_error[512];

const char *zgpu_last_error(void)
{
	return last_error[0] ? last_error : "no error";
}

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(last_error, sizeof(last_error), fmt, ap);
		va_end(ap);
	} else {
		snprintf(last_error, sizeof(last_error), "%s", zgpu_strerror(code));
	}
	return code;
}

/* Maps an HTTP error status, one boundary for all of them. */
static int code_for_status(int status)
{
	switch (status) {
	case 400:
		return ZGPU_EBADREQ;
	case 401:
	case 403:
		return ZGPU_EDENIED;
	case 404:
		return ZGPU_ENOTFOUND;
	case 409:
		return ZGPU_ECONFLICT;
	case 413:
		return ZGPU_ETOOLARGE;
	case 429:
		return ZGPU_EQUOTA;
	case 503:
		return ZGPU_EUNAVAIL;
	default:
		return status >= 500 ? ZGPU_ESERVER : ZGPU_EPROTO;
	}
}

/* Turns an error reply {"error": {"message": ...}} into a code and a sentence. */
static int fail_from_reply(int status, const char *body)
{
	json_t *root = json_loads(body, 0, NULL);
	const char *msg = NULL, *word = NULL;
	json_unpack(root, "{s:{s:s}}", "error", "message", &msg);
	json_unpack(root, "{s:{s:s}}", "error", "code", &word);
	int code = code_for_status(status);
	if (status == 409 && word && strcmp(word, "gate_off") == 0)
		code = ZGPU_ENOGATE;
	if (msg)
		fail(code, "%s", msg);
	else
		fail(code, "zerogpud answered HTTP %d: %s", status, zgpu_strerror(code));
	json_decref(root);
	return code;
}

/* wire_connect() failed after trying since t0 (monotonic ms): why, how long it kept
 * trying when it did, and what to do next. */
static int fail_connect(const zgpu_client *c, int64_t t0)
{
	int e = errno;
	const char *path = zgpu_client_socket_path(c);
	if (e == EACCES || e == EPERM)
		return fail(ZGPU_ECONNECT,
			    "cannot connect to zerogpud at %s: %s (this user may not use the "
			    "socket: the operator can give access through its group, e.g. "
			    "SocketGroup=zerogpu in zerogpud.socket)",
			    path, strerror(e));
	char tried[48] = "";
	int64_t ms = clock_mono_ms() - t0;
	if (wire_connect_retries(e))
		snprintf(tried, sizeof(tried), ms < 1000 ? ", for %.0f ms" : ", for %.0f s",
			 ms < 1000 ? (double) ms : (double) ms / 1000.0);
	return fail(ZGPU_ECONNECT,
		    "cannot connect to zerogpud at %s: %s%s (is the daemon running? start it with "
		    "'zerogpud --socket %s', or set ZEROGPU_SOCKET)",
		    path, strerror(e), tried, path);
}

/* ------------------------------------------------------------------------
 * The client: a socket path and one kept-alive control connection.
 * ------------------------------------------------------------------------ */

#define ZGPU_IDLE_STREAMS 4 /* finished lease connections kept for the next acquire */

struct zgpu_client {
	char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
	pthread_mutex_t lock; /* guards ctl and idle */
	struct wire_conn *ctl;
	/* Connections whose lease stream ended cleanly: reusing one saves a connect,
	 * an accept and a close per lease. */
	struct wire_conn *idle[ZGPU_IDLE_STREAMS];
	int nidle;
};

int zgpu_client_open(zgpu_client **out, const char *socket_path)
{
	zgpu_client *c = calloc(1, sizeof(*c));
	if (!c)
		return fail(ZGPU_ENOMEM, NULL);
	int r = 0;
	if (socket_path) {
		if (strlen(socket_path) >= sizeof(c->path))
			r = fail(ZGPU_EINVAL, "socket path '%s' is too long for a Unix socket",
				 socket_path);
		else
			strcpy(c->path, socket_path);
	} else if (zgpu_default_socket_path(c->path, sizeof(c->path)) < 0) {
		r = fail(ZGPU_EINVAL, "the socket path from ZEROGPU_SOCKET or XDG_RUNTIME_DIR is "
				      "too long for a Unix socket");
	}
	if (r < 0) {
		free(c);
		return r;
	}
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return 0;
}

zgpu_client *zgpu_client_free(zgpu_client *c)
{
	if (!c)
		return NULL;
	wire_close(c->ctl);
	while (c->nidle)
		wire_close(c->idle[--c->nidle]);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return NULL;
}

const char *zgpu_client_socket_path(const zgpu_client *c)
{
	return c->path;
}

/* One request and its whole reply on the control connection. Caller holds c->lock. */
static int ctl_exchange(zgpu_client *c, const char *method, const char *path, const char *body,
			int *status, char **reply)
{
	int64_t deadline = clock_mono_ms() + ZGPU_HTTP_TIMEOUT_MS;
	size_t len = body ? strlen(body) : 0, rlen;
	for (int attempt = 0;; attempt++) {
		bool reused = c->ctl != NULL;
		int64_t t0 = clock_mono_ms();
		if (!c->ctl && wire_connect(&c->ctl, c->path, deadline) < 0)
			return fail_connect(c, t0);
		int r = wire_send(c->ctl, method, path, body, len, deadline);
		if (r == 0)
			r = wire_read_head(c->ctl, status, deadline);
		if (r == 0)
			r = wire_read_body(c->ctl, reply, &rlen, deadline);
		if (r == 0) {
			if (!c->ctl->keep_alive)
				c->ctl = wire_close(c->ctl);
			return 0;
		}
		bool nothing_back = !c->ctl->got_bytes;
		c->ctl = wire_close(c->ctl);
		/* A kept-alive connection the daemon closed while idle: it read nothing of
		 * ours, so sending again on a fresh connection is safe. */
		if (reused && nothing_back && attempt == 0 && (r == ZGPU_ECLOSED || r == ZGPU_EIO))
			continue;
		if (r == ZGPU_ETIMEDOUT)
			return fail(r, "zerogpud did not answer %s %s within %d s", method, path,
				    ZGPU_HTTP_TIMEOUT_MS / 1000);
		return fail(r, "talking to zerogpud at %s: %s", c->path, zgpu_strerror(r));
	}
}

/* Sends a request expecting 200; *reply gets the body, which the caller frees. */
static int ctl_request(zgpu_client *c, const char *method, const char *path, const char *body,
		       char **reply)
{
	int status = 0;
	pthread_mutex_lock(&c->lock);
	int r = ctl_exchange(c, method, path, body, &status, reply);
	pthread_mutex_unlock(&c->lock);
	if (r == 0 && status != 200) {
		r = fail_from_reply(status, *reply);
		free(*reply);
		*reply = NULL;
	}
	return r;
}

/* Like ctl_request; *reply_out (may be NULL) gets the reply parsed as JSON. */
static int ctl_call(zgpu_client *c, const char *method, const char *path, const char *body,
		    json_t **reply_out)
{
	char *reply = NULL;
	int r = ctl_request(c, method, path, body, &reply);
	if (r == 0 && reply_out) {
		*reply_out = json_loads(reply, 0, NULL);
		if (!*reply_out)
			r = fail(ZGPU_EPROTO, "zerogpud sent a reply that is not JSON");
	}
	free(reply);
	return r;
}

int zgpu_call(zgpu_client *c, const char *method, const char *path, const char *body,
	      char **reply_out)
{
	if (!c || !method || !path || path[0] != '/')
		return fail(ZGPU_EINVAL, "zgpu_call needs a client, a method and a path starting "
					 "with '/'");
	char *reply = NULL;
	int r = ctl_request(c, method, path, body, &reply);
	if (r == 0 && reply_out)
		*reply_out = reply;
	else
		free(reply);
	return r;
}

int zgpu_get(zgpu_client *c, const char *path, char **body_out)
{
	if (!c || !path || path[0] != '/' || !body_out)
		return fail(ZGPU_EINVAL, "zgpu_get needs a client, a path starting with '/' and "
					 "an output pointer");
	return ctl_request(c, "GET", path, NULL, body_out);
}

/* ------------------------------------------------------------------------
 * Leases: each lives on its own connection, whose reply streams its events.
 * ------------------------------------------------------------------------ */

struct zgpu_lease {
	struct wire_conn *conn;
	char id[64];
	zgpu_device *devices;
	size_t ndevices;
	int64_t deadline_ms;
	double duration_s, grace_s;
	pid_t warm_pid; /* the resident worker the grant handed over; 0: cold */
	json_t *event;	/* the last event read, which zgpu_event's strings point into */
};

const char *zgpu_lease_id(const zgpu_lease *l)
{
	return l->id;
}

size_t zgpu_lease_device_count(const zgpu_lease *l)
{
	return l->ndevices;
}

const zgpu_device *zgpu_lease_device(const zgpu_lease *l, size_t i)
{
	return i < l->ndevices ? &l->devices[i] : NULL;
}

int64_t zgpu_lease_deadline_ms(const zgpu_lease *l)
{
	return l->deadline_ms;
}

double zgpu_lease_duration_s(const zgpu_lease *l)
{
	return l->duration_s;
}

double zgpu_lease_grace_s(const zgpu_lease *l)
{
	return l->grace_s;
}

pid_t zgpu_lease_warm_pid(const zgpu_lease *l)
{
	return l->warm_pid;
}

int zgpu_lease_fd(const zgpu_lease *l)
{
	return l->conn->fd;
}

zgpu_lease *zgpu_lease_free(zgpu_lease *l)
{
	if (!l)
		return NULL;
	wire_close(l->conn);
	for (size_t i = 0; i < l->ndevices; i++)
		free((char *) l->devices[i].uuid);
	free(l->devices);
	json_decref(l->event);
	free(l);
	return NULL;
}

static int kind_from_name(const char *name)
{
	static const struct {
		const char *name;
		zgpu_event_kind kind;
	} kinds[] = {
		{"queued", ZGPU_EVENT_QUEUED},	 {"granted", ZGPU_EVENT_GRANTED},
		{"expired", ZGPU_EVENT_EXPIRED}, {"released", ZGPU_EVENT_RELEASED},
		{"failed", ZGPU_EVENT_FAILED},
	};
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(name, kinds[i].name) == 0)
			return (int) kinds[i].kind;
	return 0;
}

/* Reads the next event line into l->event and ev. */
static int read_event(zgpu_lease *l, int64_t deadline, zgpu_event *ev)
{
	const char *line;
	int r;
	do {
		r = wire_read_line(l->conn, &line, deadline);
		if (r < 0)
			return r;
	} while (line[0] == '\0');

	json_decref(l->event);
	l->event = json_loads(line, 0, NULL);
	const char *name = NULL;
	if (!l->event || json_unpack(l->event, "{s:s}", "event", &name) < 0 ||
	    !kind_from_name(name))
		return fail(ZGPU_EPROTO, "zerogpud sent an event this client cannot read: %.200s",
			    line);

	memset(ev, 0, sizeof(*ev));
	ev->kind = (zgpu_event_kind) kind_from_name(name);
	json_t *pos = json_object_get(l->event, "position");
	ev->position = json_is_integer(pos) ? (int) json_integer_value(pos) : 0;
	ev->reason = json_string_value(json_object_get(l->event, "reason"));
	ev->state = json_string_value(json_object_get(l->event, "state"));
	ev->message = json_string_value(json_object_get(l->event, "message"));
	json_t *err_msg = json_object_get(json_object_get(l->event, "error"), "message");
	if (err_msg)
		ev->message = json_string_value(err_msg);
	ev->grace_s = json_number_value(json_object_get(l->event, "grace_s"));
	return 0;
}

/* Takes the lease id, devices and deadline out of a granted event. */
static int take_grant(zgpu_lease *l)
{
	const char *id;
	json_t *devices;
	json_int_t deadline;
	if (json_unpack(l->event, "{s:s, s:o, s:I, s:F, s?F}", "lease", &id, "devices", &devices,
			"deadline_ms", &deadline, "duration_s", &l->duration_s, "grace_s",
			&l->grace_s) < 0 ||
	    !json_is_array(devices) || strlen(id) >= sizeof(l->id))
		return fail(ZGPU_EPROTO, "zerogpud sent a granted event without its lease");
	strcpy(l->id, id);
	l->deadline_ms = deadline;
	if (json_is_true(json_object_get(l->event, "warm")))
		l->warm_pid = (pid_t) json_integer_value(json_object_get(l->event, "pid"));
	l->ndevices = json_array_size(devices);
	l->devices = calloc(l->ndevices ? l->ndevices : 1, sizeof(*l->devices));
	if (!l->devices)
		return fail(ZGPU_ENOMEM, NULL);
	for (size_t i = 0; i < l->ndevices; i++) {
		const char *uuid;
		int index;
		json_int_t memory = 0, limit = -1;
		if (json_unpack(json_array_get(devices, i), "{s:i, s:s, s?I, s?I}", "index", &index,
				"uuid", &uuid, "memory_bytes", &memory, "memory_limit_bytes",
				&limit) < 0)
			return fail(ZGPU_EPROTO, "zerogpud sent a device without index or uuid");
		l->devices[i].index = index;
		l->devices[i].memory_bytes = (uint64_t) memory;
		l->devices[i].memory_limit_bytes = (uint64_t) (limit >= 0 ? limit : memory);
		if (!(l->devices[i].uuid = strdup(uuid)))
			return fail(ZGPU_ENOMEM, NULL);
	}
	return 0;
}

static json_t *request_json(const zgpu_request *req)
{
	json_t *o = json_object();
	if (req->app)
		json_object_set_new(o, "app", json_string(req->app));
	if (req->task)
		json_object_set_new(o, "task", json_string(req->task));
	if (req->visitor)
		json_object_set_new(o, "visitor", json_string(req->visitor));
	if (req->size)
		json_object_set_new(o, "size", json_string(req->size));
	if (req->duration_s > 0)
		json_object_set_new(o, "duration_s", json_real(req->duration_s));
	if (req->gpus > 0)
		json_object_set_new(o, "gpus", json_integer(req->gpus));
	if (req->max_wait_s >= 0)
		json_object_set_new(o, "max_wait_s", json_real(req->max_wait_s));
	if (req->visitor_token)
		json_object_set_new(o, "visitor_token", json_string(req->visitor_token));
	if (req->visitor_ip)
		json_object_set_new(o, "visitor_ip", json_string(req->visitor_ip));
	if (req->memory_bytes)
		json_object_set_new(o, "memory_bytes",
				    json_integer((json_int_t) req->memory_bytes));
	return o;
}

/* Waits on a lease stream for its grant, passing queue events to progress. */
static int await_grant(zgpu_lease *l, int64_t deadline, zgpu_progress_fn progress, void *userdata)
{
	for (;;) {
		zgpu_event ev;
		int r = read_event(l, deadline, &ev);
		if (r == ZGPU_ETIMEDOUT)
			return fail(r, "no GPU was granted within the client's timeout");
		if (r == ZGPU_ECLOSED)
			return fail(r, "zerogpud closed the request before granting it");
		if (r < 0)
			return r;
		switch (ev.kind) {
		case ZGPU_EVENT_GRANTED:
			return take_grant(l);
		case ZGPU_EVENT_QUEUED:
			if (progress)
				progress(&ev, userdata);
			break;
		case ZGPU_EVENT_FAILED: {
			const char *code = json_string_value(
				json_object_get(json_object_get(l->event, "error"), "code"));
			return fail(code && !strcmp(code, "no_gpu") ? ZGPU_ENOGPU : ZGPU_ECLOSED,
				    "%s", ev.message ? ev.message : "the request failed");
		}
		default:
			return fail(ZGPU_EPROTO, "zerogpud sent an unexpected event before the "
						 "grant");
		}
	}
}

static struct wire_conn *idle_take(zgpu_client *c)
{
	pthread_mutex_lock(&c->lock);
	struct wire_conn *w = c->nidle ? c->idle[--c->nidle] : NULL;
	pthread_mutex_unlock(&c->lock);
	return w;
}

static void idle_put(zgpu_client *c, struct wire_conn *w)
{
	pthread_mutex_lock(&c->lock);
	if (c->nidle < ZGPU_IDLE_STREAMS) {
		c->idle[c->nidle++] = w;
		w = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	wire_close(w);
}

/* Sends the lease request and reads the reply's head, on a kept connection when
 * one is idle. A kept connection the daemon closed meanwhile (it drops idle ones)
 * has read nothing of ours: the request then goes again on a fresh connection. */
static int send_lease_request(zgpu_client *c, zgpu_lease *l, const char *body, int *status,
			      int64_t deadline)
{
	for (;;) {
		bool reused = (l->conn = idle_take(c)) != NULL;
		int64_t t0 = clock_mono_ms();
		if (!reused && wire_connect(&l->conn, c->path, deadline) < 0)
			return fail_connect(c, t0);
		int r = wire_send(l->conn, "POST", "/v1/leases", body, strlen(body), deadline);
		if (r == 0)
			r = wire_read_head(l->conn, status, deadline);
		if (r == 0)
			return 0;
		bool nothing_back = !l->conn->got_bytes;
		l->conn = wire_close(l->conn);
		if (reused && nothing_back && (r == ZGPU_ECLOSED || r == ZGPU_EIO))
			continue;
		return fail(r, "sending the lease request to zerogpud: %s", zgpu_strerror(r));
	}
}

/*
 * The calls that follow a grant (join, attach, release) go on the control connection;
 * it is made ready while the request waits, if it is not open yet. A daemon told to
 * stop right after the grant accepts no new connection while it lets held leases end
 * (--drain), but still serves those it has: without this the holder of a lease granted
 * then could not reach it to run its call. One short request (GET /healthz) makes it an
 * ordinary kept-alive connection, which the daemon keeps while it is used and closes
 * quietly after its idle time (a connection that never sent a request would be cut as
 * too slow). Best effort: on failure the connection is made when needed, as before.
 */
static void open_control(zgpu_client *c)
{
	pthread_mutex_lock(&c->lock);
	if (!c->ctl) {
		int status;
		char *reply = NULL;
		(void) ctl_exchange(c, "GET", "/healthz", NULL, &status, &reply);
		free(reply);
	}
	pthread_mutex_unlock(&c->lock);
}

int zgpu_acquire(zgpu_lease **out, zgpu_client *c, const zgpu_request *req, int timeout_ms,
		 zgpu_progress_fn progress, void *userdata)
{
	if (!out || !c || !req)
		return fail(ZGPU_EINVAL, "zgpu_acquire needs an output pointer, a client and a "
					 "request");
	int64_t deadline = timeout_ms < 0 ? -1 : clock_mono_ms() + timeout_ms;
	json_t *body_json = request_json(req);
	char *body = json_dumps(body_json, JSON_COMPACT);
	json_decref(body_json);
	zgpu_lease *l = calloc(1, sizeof(*l));
	int r = body && l ? 0 : fail(ZGPU_ENOMEM, NULL);
	int status = 0;
	if (r == 0)
		r = send_lease_request(c, l, body, &status, deadline);
	free(body);
	if (r == 0 && status != 200) {
		char *reply = NULL;
		size_t len;
		r = wire_read_body(l->conn, &reply, &len, deadline);
		r = r < 0 ? fail(r, "reading zerogpud's refusal: %s", zgpu_strerror(r))
			  : fail_from_reply(status, reply);
		free(reply);
	}
	if (r == 0) {
		open_control(c);
		r = await_grant(l, deadline, progress, userdata);
	}
	if (r < 0) {
		/* Closing the stream withdraws a request still in the queue. */
		zgpu_lease_free(l);
		return r;
	}
	*out = l;
	return 0;
}

int zgpu_lease_next_event(zgpu_lease *l, int timeout_ms, zgpu_event *ev)
{
	if (!l || !ev)
		return fail(ZGPU_EINVAL, "zgpu_lease_next_event needs a lease and an event");
	int64_t deadline = timeout_ms < 0 ? -1 : clock_mono_ms() + timeout_ms;
	int r = read_event(l, deadline, ev);
	if (r == ZGPU_ETIMEDOUT)
		return fail(r, "no event on lease %s yet", l->id);
	if (r == ZGPU_ECLOSED)
		return fail(r, "zerogpud closed lease %s", l->id);
	return r;
}

int zgpu_attach(zgpu_client *c, const zgpu_lease *l, pid_t pid)
{
	if (!c || !l || pid <= 0)
		return fail(ZGPU_EINVAL, "zgpu_attach needs a client, a lease and a pid > 0");
	char path[128], body[64];
	snprintf(path, sizeof(path), "/v1/leases/%s/attach", l->id);
	snprintf(body, sizeof(body), "{\"pid\":%d}", (int) pid);
	return ctl_call(c, "POST", path, body, NULL);
}

int zgpu_join_app(zgpu_client *c, const char *app, pid_t pid)
{
	if (!c || pid <= 0)
		return fail(ZGPU_EINVAL, "zgpu_join_app needs a client and a pid > 0");
	if (!app)
		app = "default";
	/* The daemon checks the name; only what would break the path is refused here. */
	if (!*app || strlen(app) > 64 || strchr(app, '/') || strchr(app, '?') || strchr(app, '%'))
		return fail(ZGPU_EINVAL, "'%.80s' is not an app name", app);
	char path[128], body[64];
	snprintf(path, sizeof(path), "/v1/apps/%s/join", app);
	snprintf(body, sizeof(body), "{\"pid\":%d}", (int) pid);
	return ctl_call(c, "POST", path, body, NULL);
}

/* DELETE with query ("" or "?fail=1" or "?keep=1"); see zgpu_release(). */
static int end_lease(zgpu_client *c, zgpu_lease *l, const char *query, double *used_s_out,
		     bool *kept_out)
{
	char path[128];
	snprintf(path, sizeof(path), "/v1/leases/%s%s", l->id, query);
	json_t *reply = NULL;
	int r = ctl_call(c, "DELETE", path, NULL, &reply);
	if (r == 0 && used_s_out)
		*used_s_out = json_number_value(json_object_get(reply, "used_s"));
	if (kept_out)
		*kept_out = r == 0 && json_is_true(json_object_get(reply, "kept"));
	json_decref(reply);
	if (r == 0) {
		/* The daemon ends the stream as it answers: its last event is already on
		 * the way. Read to the end so the connection can carry the next lease. */
		zgpu_event ev;
		int64_t deadline = clock_mono_ms() + 1000;
		while (read_event(l, deadline, &ev) == 0)
			;
		if (wire_reusable(l->conn)) {
			idle_put(c, l->conn);
			l->conn = NULL;
		}
	}
	zgpu_lease_free(l);
	return r;
}

int zgpu_release(zgpu_client *c, zgpu_lease *l, bool failed, double *used_s_out)
{
	if (!c || !l) {
		zgpu_lease_free(l);
		return fail(ZGPU_EINVAL, "zgpu_release needs a client and a lease");
	}
	return end_lease(c, l, failed ? "?fail=1" : "", used_s_out, NULL);
}

int zgpu_release_keep(zgpu_client *c, zgpu_lease *l, double *used_s_out, bool *kept_out)
{
	if (kept_out)
		*kept_out = false;
	if (!c || !l) {
		zgpu_lease_free(l);
		return fail(ZGPU_EINVAL, "zgpu_release_keep needs a client and a lease");
	}
	return end_lease(c, l, "?keep=1", used_s_out, kept_out);
}
