#include "daemon/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "common/log.h"
#include "daemon/sys/peer.h"

/* After a burst of at least this many connections has mostly gone, the memory their
 * buffers took goes back to the system (glibc keeps freed memory for reuse). */
#define TRIM_AFTER_PEAK 64

/* How long accept() pauses when descriptors run out: doubling, up to a second. */
#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS	 1000

enum conn_state {
	CONN_HEAD, /* a request is arriving: its deadline runs */
	CONN_BUSY, /* a request arrived; its reply (maybe a long stream) is under way */
	CONN_IDLE, /* kept alive between requests: evhttp's idle timeout applies */
};

/* How many connections one client (a uid, or an address) holds. */
struct conn_client {
	struct strmap_node node;
	char key[64 + INET6_ADDRSTRLEN];
	int open;
	uint64_t refused; /* since its last refusal episode began */
};

struct conn {
	struct conns *cs;
	struct bufferevent *bev;	 /* the socket's, which evhttp reads and writes */
	struct evhttp_connection *evcon; /* evhttp's connection, once classified */
	struct evbuffer_cb_entry *input_cb;
	void (*on_close)(struct evhttp_connection *evcon, void *arg); /* e.g. a lease stream */
	void *on_close_arg;
	bool tcp;
	int fd; /* -1 until the peer is learnt */
	struct conn_peer peer;
	struct conn_client *client; /* counted here once the peer is known */
	enum conn_state state;
	bool refused; /* answered 503/408 by this module */
	struct event *deadline;
	struct conn *next_unclassified;
};

/*
 * The listeners' accept-error callback gets the argument evhttp gave the
 * listener (the evhttp itself), not ours: the daemon's one connection table is
 * found here instead.
 */
static struct conns *the_conns;

/* ------------------------------------------------------------------------
 * Pausing and resuming the listeners.
 * ------------------------------------------------------------------------ */

static void listeners_set(struct conns *cs)
{
	bool accept = !cs->paused_full && !cs->paused_emfile;
	for (int i = 0; i < cs->nlisteners; i++) {
		if (accept)
			evconnlistener_enable(cs->listeners[i].listener);
		else
			evconnlistener_disable(cs->listeners[i].listener);
	}
}

static void on_trim(evutil_socket_t fd, short what, void *arg)
{
	struct conns *cs = arg;
	(void) fd;
	(void) what;
	cs->peak = cs->open;
	(void) malloc_trim(0); /* a few ms after a flood of thousands */
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct conns *cs = arg;
	(void) fd;
	(void) what;
	cs->paused_emfile = false;
	listeners_set(cs);
}

/*
 * accept() failed. Out of descriptors (or kernel memory), the listening socket
 * stays readable and a plain retry would spin the loop at 100% CPU and log a
 * line per try: pause instead, and say so once per episode.
 */
static void on_accept_error(struct evconnlistener *lst, void *arg)
{
	struct conns *cs = the_conns;
	int err = EVUTIL_SOCKET_ERROR();
	(void) lst;
	(void) arg;
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_warn("accept() failed: %s", strerror(err));
		return;
	}
	if (cs->emfile_pauses++ == 0) {
		log_warn("cannot accept connections: %s (%d open); pausing accept() for up to %d "
			 "ms at a time until descriptors free up; open connections are still "
			 "served",
			 strerror(err), cs->open, BACKOFF_MAX_MS);
		cs->backoff_ms = BACKOFF_FIRST_MS;
	}
	cs->metrics->accept_pauses++;
	cs->paused_emfile = true;
	listeners_set(cs);
	struct timeval tv = {.tv_sec = cs->backoff_ms / 1000,
			     .tv_usec = (cs->backoff_ms % 1000) * 1000};
	event_add(cs->resume, &tv);
	if (cs->backoff_ms < BACKOFF_MAX_MS)
		cs->backoff_ms *= 2;
}

/* A connection was accepted: an episode of running out of descriptors is over. */
static void accepted(struct conns *cs)
{
	if (cs->emfile_pauses) {
		log_info("accepting connections again (paused %llu time(s) for lack of "
			 "descriptors)",
			 (unsigned long long) cs->emfile_pauses);
		cs->emfile_pauses = 0;
	}
}

/* ------------------------------------------------------------------------
 * Refusing: a canned reply written straight to the socket.
 * ------------------------------------------------------------------------ */

/*
 * Answers with status and a JSON error straight on the socket (evhttp has
 * nothing of its own to write: no request of this connection is being
 * served), then has evhttp free the connection, which lands in
 * conn_closed(). Called from this module's own events only, never from
 * inside evhttp.
 */
static void refuse(struct conn *c, int status, const char *reason, const char *code,
		   const char *message)
{
	char body[512], reply[1024], drain[4096];
	int blen = snprintf(body, sizeof(body),
			    "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n", code, message);
	int n = snprintf(reply, sizeof(reply),
			 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: "
			 "%d\r\nConnection: close\r\n%s\r\n%s",
			 status, reason, blen, status == 503 ? "Retry-After: 1\r\n" : "", body);
	c->refused = true;
	if (c->deadline)
		event_del(c->deadline);
	(void) send(c->fd, reply, (size_t) n, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void) shutdown(c->fd, SHUT_WR);
	/* What the client already sent is read and dropped, so that closing does not
	 * reset the connection under the reply (TCP). */
	for (int i = 0; i < 16 && recv(c->fd, drain, sizeof(drain), MSG_DONTWAIT) > 0; i++)
		;
	evhttp_connection_free(c->evcon);
}

/* ------------------------------------------------------------------------
 * Clients and their counts.
 * ------------------------------------------------------------------------ */

static void client_key(const struct conn_peer *p, char *out, size_t size)
{
	if (p->uid_known)
		snprintf(out, size, "uid %u", (unsigned) p->uid);
	else
		snprintf(out, size, "address %s", p->addr[0] ? p->addr : "unknown");
}

static struct conn_client *client_get(struct conns *cs, const char *key)
{
	struct strmap_node *n = strmap_find(&cs->clients, key);
	if (n)
		return strmap_item(n, struct conn_client, node);
	struct conn_client *cl = calloc(1, sizeof(*cl));
	if (!cl || strmap_reserve(&cs->clients) < 0) {
		free(cl);
		return NULL;
	}
	snprintf(cl->key, sizeof(cl->key), "%s", key);
	cl->node.key = cl->key;
	(void) strmap_insert(&cs->clients, &cl->node); /* room reserved */
	return cl;
}

static void client_put(struct conns *cs, struct conn_client *cl)
{
	if (--cl->open > 0)
		return;
	if (cl->refused)
		log_info("%s has no connections open any more; %llu were refused over the limit "
			 "of %d",
			 cl->key, (unsigned long long) cl->refused, cs->lim.max_per_client);
	strmap_remove(&cs->clients, &cl->node);
	free(cl);
}

/* ------------------------------------------------------------------------
 * One connection's life.
 * ------------------------------------------------------------------------ */

static void arm_deadline(struct conn *c)
{
	c->state = CONN_HEAD;
	if (c->deadline && !c->refused)
		event_add(c->deadline, c->cs->request_timeout_tv);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void) fd;
	(void) what;
	if (c->state != CONN_HEAD || c->refused)
		return;
	char msg[200];
	snprintf(msg, sizeof(msg),
		 "the request did not arrive within %g s; zerogpud closes connections that send "
		 "their request too slowly",
		 (double) c->cs->lim.request_timeout_ms / 1000.0);
	c->cs->metrics->request_timeouts++;
	refuse(c, 408, "Request Timeout", "request_timeout", msg);
}

/* Bytes came from the client: on a kept-alive connection, a request begins. */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;
	(void) buf;
	if (info->n_added && c->state == CONN_IDLE)
		arm_deadline(c);
}

/* Takes c out of every count and table, and frees it. */
static void conn_forget(struct conn *c)
{
	struct conns *cs = c->cs;
	for (struct conn **p = &cs->unclassified; *p; p = &(*p)->next_unclassified) {
		if (*p == c) {
			*p = c->next_unclassified;
			break;
		}
	}
	if (c->fd >= 0 && (size_t) c->fd < cs->nby_fd && cs->by_fd[c->fd] == c)
		cs->by_fd[c->fd] = NULL;
	if (c->client)
		client_put(cs, c->client);
	if (c->deadline)
		event_free(c->deadline);
	cs->open--;
	cs->metrics->connections_open = (uint64_t) cs->open;
	if (cs->peak >= TRIM_AFTER_PEAK && cs->open <= cs->peak / 2 &&
	    !evtimer_pending(cs->trim, NULL)) {
		/* A flood (or a busy hour) is ending: without this the daemon would stay
		 * as large as its worst moment. Once the rest of it has closed too. */
		struct timeval soon = {.tv_sec = 0, .tv_usec = 200 * 1000};
		evtimer_add(cs->trim, &soon);
	}
	if (cs->paused_full && cs->open < cs->lim.max_total) {
		cs->paused_full = false;
		listeners_set(cs);
	}
	free(c);
}

/* evhttp is freeing the connection (its close callback, which it always runs for a
 * connection it accepted): tell whoever listens, then forget it. */
static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct conn *c = arg;
	if (c->on_close)
		c->on_close(evcon, c->on_close_arg);
	evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
	conn_forget(c);
}

static void remember_fd(struct conns *cs, struct conn *c)
{
	if ((size_t) c->fd >= cs->nby_fd) {
		size_t n = (size_t) c->fd + 1 > 2 * cs->nby_fd ? (size_t) c->fd + 1
							       : 2 * cs->nby_fd;
		struct conn **grown = realloc(cs->by_fd, n * sizeof(*grown));
		if (!grown)
			return;
		memset(grown + cs->nby_fd, 0, (n - cs->nby_fd) * sizeof(*grown));
		cs->by_fd = grown;
		cs->nby_fd = n;
	}
	cs->by_fd[c->fd] = c;
}

static void learn_unix_peer(struct conn *c, struct conn_peer *p)
{
	p->tcp = false;
	p->uid = (uid_t) -1; /* unknown: never 0, which would read as root */
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		p->uid_known = true;
		p->uid = cred.uid;
		p->pid = cred.pid;
	}
}

static void learn_tcp_peer(struct conn *c, struct conn_peer *p)
{
	p->tcp = true;
	p->uid = (uid_t) -1; /* unknown: never 0, which would read as root */
	struct sockaddr_storage a;
	socklen_t len = sizeof(a);
	if (getpeername(c->fd, (struct sockaddr *) &a, &len) == 0) {
		const void *ip = a.ss_family == AF_INET6
					 ? (const void *) &((struct sockaddr_in6 *) &a)->sin6_addr
					 : (const void *) &((struct sockaddr_in *) &a)->sin_addr;
		(void) inet_ntop(a.ss_family, ip, p->addr, sizeof(p->addr));
	}
	uid_t uid;
	uint64_t cgroup_id = 0;
	if (peer_tcp_uid(c->fd, &uid, &cgroup_id) == 0) {
		p->uid_known = true;
		p->uid = uid;
		p->cgroup_id = cgroup_id;
	}
}

static void learn_peer(struct conn *c)
{
	struct conn_peer *p = &c->peer;
	if (c->tcp)
		learn_tcp_peer(c, p);
	else
		learn_unix_peer(c, p);
	/* Once, like the uid: a process moved to another cgroup later keeps what its
	 * connection was opened as. */
	if (c->cs->identify)
		c->cs->identify(c->cs->identify_ctx, p);
}

/*
 * Right after accept, and before evhttp reads a byte: finds evhttp's
 * connection and the socket, learns who is at the other end, counts the
 * connection for that client, and refuses it when the client already holds
 * its share.
 */
static void classify(struct conn *c)
{
	struct conns *cs = c->cs;
	void *evcon = NULL;
	c->fd = bufferevent_getfd(c->bev);
	/* evhttp runs a connection's bufferevent callbacks with the connection as argument. */
	bufferevent_getcb(c->bev, NULL, NULL, NULL, &evcon);
	if (c->fd < 0 || !evcon) {
		c->fd = -1;
		return; /* not set up by evhttp as expected: served, but not counted */
	}
	c->evcon = evcon;
	evhttp_connection_set_closecb(c->evcon, conn_closed, c);
	c->input_cb = evbuffer_add_cb(bufferevent_get_input(c->bev), on_input, c);
	remember_fd(cs, c);
	learn_peer(c);

	char key[sizeof(((struct conn_client *) 0)->key)];
	client_key(&c->peer, key, sizeof(key));
	c->client = client_get(cs, key);
	if (!c->client) {
		refuse(c, 503, "Service Unavailable", "internal", "zerogpud is out of memory");
		return;
	}
	c->client->open++;
	if (c->client->open > cs->lim.max_per_client) {
		char msg[300];
		if (c->client->refused++ == 0)
			log_warn("%s holds %d connections, the limit: refusing more until some "
				 "close",
				 key, cs->lim.max_per_client);
		cs->metrics->connections_refused++;
		snprintf(msg, sizeof(msg),
			 "%s already holds %d connections to zerogpud, the limit per client: close "
			 "some (or raise [server] max_connections_per_client)",
			 key, cs->lim.max_per_client);
		refuse(c, 503, "Service Unavailable", "too_many_connections", msg);
		return;
	}
	arm_deadline(c);
}

/* Runs right after the listener's callback, in the same loop turn: before any byte of
 * the new connections can be read. */
static void on_classify(evutil_socket_t fd, short what, void *arg)
{
	struct conns *cs = arg;
	(void) fd;
	(void) what;
	while (cs->unclassified) {
		struct conn *c = cs->unclassified;
		cs->unclassified = c->next_unclassified;
		c->next_unclassified = NULL;
		classify(c);
	}
}

/* evhttp's hook for each accepted connection's bufferevent; it sets the fd right after. */
static struct bufferevent *make_bufferevent(struct event_base *base, void *arg)
{
	struct conn_listener *lc = arg;
	struct conns *cs = lc->cs;
	struct conn *c = calloc(1, sizeof(*c));
	c->bev = c ? bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE) : NULL;
	c->deadline = c ? evtimer_new(base, on_deadline, c) : NULL;
	if (!c || !c->bev || !c->deadline) {
		if (c && c->bev)
			bufferevent_free(c->bev);
		free(c);
		return NULL; /* evhttp makes a plain one: served, but not counted */
	}
	c->cs = cs;
	c->tcp = lc->tcp;
	c->fd = -1;
	c->state = CONN_HEAD;
	c->next_unclassified = cs->unclassified;
	cs->unclassified = c;
	event_active(cs->classify, EV_TIMEOUT, 0);
	cs->open++;
	if (cs->open > cs->peak)
		cs->peak = cs->open;
	cs->metrics->connections_open = (uint64_t) cs->open;
	accepted(cs);
	if (cs->open >= cs->lim.max_total && !cs->paused_full) {
		/* Stops the listener's accept loop too: it checks after each callback. */
		cs->paused_full = true;
		listeners_set(cs);
	}
	return c->bev;
}

/* ------------------------------------------------------------------------
 * The module.
 * ------------------------------------------------------------------------ */

void conns_set_identify(struct conns *cs, conn_identify_fn fn, void *ctx)
{
	cs->identify = fn;
	cs->identify_ctx = ctx;
}

int conns_init(struct conns *cs, struct event_base *base, const struct conn_limits *lim,
	       struct metrics *metrics)
{
	memset(cs, 0, sizeof(*cs));
	cs->base = base;
	cs->lim = *lim;
	cs->metrics = metrics;
	struct timeval tv = {.tv_sec = lim->request_timeout_ms / 1000,
			     .tv_usec = (lim->request_timeout_ms % 1000) * 1000};
	cs->request_timeout_tv = event_base_init_common_timeout(base, &tv);
	cs->resume = evtimer_new(base, on_resume, cs);
	cs->trim = evtimer_new(base, on_trim, cs);
	cs->classify = event_new(base, -1, 0, on_classify, cs);
	if (!cs->request_timeout_tv || !cs->resume || !cs->trim || !cs->classify ||
	    strmap_init(&cs->clients) < 0)
		return -ENOMEM;
	the_conns = cs;
	return 0;
}

int conns_serve(struct conns *cs, struct evhttp *http, struct evconnlistener *listener, bool tcp)
{
	if (cs->nlisteners == CONN_MAX_LISTENERS)
		return -ENOSPC;
	struct conn_listener *lc = &cs->listeners[cs->nlisteners++];
	lc->cs = cs;
	lc->tcp = tcp;
	lc->listener = listener;
	evconnlistener_set_error_cb(listener, on_accept_error);
	evhttp_set_bevcb(http, make_bufferevent, lc);
	return 0;
}

void conns_stop_accepting(struct conns *cs)
{
	for (int i = 0; i < cs->nlisteners; i++)
		evconnlistener_disable(cs->listeners[i].listener);
	cs->nlisteners = 0;
	if (cs->resume)
		event_del(cs->resume);
	if (cs->trim)
		event_del(cs->trim);
}

static void free_client(struct strmap_node *n, void *arg)
{
	(void) arg;
	free(strmap_item(n, struct conn_client, node));
}

void conns_release(struct conns *cs)
{
	if (cs->resume)
		event_free(cs->resume);
	if (cs->trim)
		event_free(cs->trim);
	if (cs->classify)
		event_free(cs->classify);
	strmap_foreach(&cs->clients, free_client, NULL);
	strmap_release(&cs->clients);
	free(cs->by_fd);
	if (the_conns == cs)
		the_conns = NULL;
	memset(cs, 0, sizeof(*cs));
}

/* ------------------------------------------------------------------------
 * Requests.
 * ------------------------------------------------------------------------ */

/* The tracked connection evcon is, or NULL. */
static struct conn *conn_of(struct conns *cs, struct evhttp_connection *evcon)
{
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	int fd = bev ? bufferevent_getfd(bev) : -1;
	if (fd < 0 || (size_t) fd >= cs->nby_fd || !cs->by_fd[fd] || cs->by_fd[fd]->evcon != evcon)
		return NULL;
	return cs->by_fd[fd];
}

static void request_done(struct evhttp_request *req, void *arg)
{
	struct conn *c = arg;
	(void) req;
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) /* pipelined */
		arm_deadline(c);
	else
		c->state = CONN_IDLE;
}

const struct conn_peer *conns_request_arrived(struct conns *cs, struct evhttp_request *req)
{
	struct conn *c = conn_of(cs, evhttp_request_get_connection(req));
	if (!c)
		return NULL;
	c->state = CONN_BUSY;
	event_del(c->deadline);
	evhttp_request_set_on_complete_cb(req, request_done, c);
	return &c->peer;
}

int conns_on_close(struct conns *cs, struct evhttp_connection *evcon,
		   void (*fn)(struct evhttp_connection *evcon, void *arg), void *arg)
{
	struct conn *c = conn_of(cs, evcon);
	if (!c)
		return -ENOENT;
	c->on_close = fn;
	c->on_close_arg = arg;
	return 0;
}
