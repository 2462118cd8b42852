/* pg_conn — one PostgreSQL connection on the event loop (pg_conn.h). */
#include "daemon/sys/pg_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/util.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define PG_CONN_ADDRS_MAX 8

struct pg_query {
	struct pg_query *next;
	const char *sql; /* static: the callers' statements are string constants */
	int nparams;
	char *params[PG_CONN_PARAMS_MAX];
	pg_conn_done_fn done;
	void *arg;
};

enum pg_state {
	PG_DOWN,       /* waiting for the retry timer */
	PG_RESOLVING,  /* the host's name being looked up (evdns) */
	PG_CONNECTING, /* PQconnectPoll in progress */
	PG_LISTENING,  /* LISTEN sent, its result awaited */
	PG_IDLE,       /* up, nothing in flight */
	PG_BUSY,       /* up, the head query in flight */
};

struct pg_conn {
	struct event_base *base;
	char *conninfo;
	char where[256];
	const char *const *listen;
	struct pg_conn_hooks hooks;
	PGconn *pg;
	enum pg_state state;
	struct event *io;    /* the connection's socket */
	int io_fd;	     /* the socket io watches: libpq may change it while connecting */
	short io_what;	     /* what io waits for */
	struct event *retry; /* reconnects */
	struct event *kick;  /* sends the next query from the loop, never from a caller */
	struct pg_query *head, **tail;
	PGresult *last; /* the head query's latest result, until its results end */
	int pending;
	bool down_told; /* the hooks heard of this outage already */
	bool closing;	/* being freed: the queue's callbacks queue nothing new */
	/* libpq looks host names up with a blocking getaddrinfo(): a name is looked up
	 * here instead, on the loop (evdns), and handed to libpq as hostaddr. */
	char *resolve; /* the host's name, or NULL: an address, a socket, several hosts */
	struct evdns_base *dns;
	struct evdns_getaddrinfo_request *lookup;
	/* The name's addresses, and the name once per address: libpq tries each in turn
	 * (host and hostaddr as parallel lists), naming the host for TLS and .pgpass. */
	char hostaddr[PG_CONN_ADDRS_MAX * (INET6_ADDRSTRLEN + 1)];
	char hosts[1024];
	char why[256]; /* a lookup's failure, for lose() */
};

static void on_io(evutil_socket_t fd, short what, void *arg);
static void start_connect(struct pg_conn *c);

static void free_query(struct pg_query *q)
{
	for (int i = 0; i < q->nparams; i++)
		free(q->params[i]);
	free(q);
}

/* Watches the connection's socket for what (EV_READ, EV_WRITE, or both). */
static void watch(struct pg_conn *c, short what)
{
	int fd = c->pg ? PQsocket(c->pg) : -1;
	if (c->io && (c->io_fd != fd || c->io_what != what)) {
		event_free(c->io);
		c->io = NULL;
	}
	if (!c->io && fd >= 0) {
		c->io = event_new(c->base, fd, what | EV_PERSIST, on_io, c);
		c->io_fd = fd;
		c->io_what = what;
		if (c->io)
			event_add(c->io, NULL);
	}
}

static void unwatch(struct pg_conn *c)
{
	if (c->io)
		event_free(c->io);
	c->io = NULL;
	c->io_fd = -1;
}

static void arm_retry(struct pg_conn *c)
{
	struct timeval tv = {.tv_sec = PG_CONN_RETRY_MS / 1000,
			     .tv_usec = (PG_CONN_RETRY_MS % 1000) * 1000};
	evtimer_add(c->retry, &tv);
}

/* libpq's message, on one line: its line breaks and indents become one space. */
static void error_text(const struct pg_conn *c, char *out, size_t size)
{
	const char *m = c->why[0] ? c->why : c->pg ? PQerrorMessage(c->pg) : "out of memory";
	if (!m || !*m)
		m = "the connection was lost";
	size_t n = 0;
	for (bool space = false; *m && n + 1 < size; m++) {
		bool blank = *m == '\n' || *m == '\t' || *m == ' ';
		if (blank && !space && n)
			out[n++] = ' ';
		else if (!blank)
			out[n++] = *m;
		space = blank;
	}
	while (n && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
}

/* The connection is gone: every query fails, in order; a new one is tried later. */
static void lose(struct pg_conn *c)
{
	char why[512];
	error_text(c, why, sizeof(why));
	unwatch(c);
	PQclear(c->last);
	c->last = NULL;
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
	c->state = PG_DOWN;
	c->why[0] = '\0';
	struct pg_query *q = c->head;
	c->head = NULL;
	c->tail = &c->head;
	c->pending = 0;
	while (q) {
		struct pg_query *next = q->next;
		q->done(q->arg, NULL, why);
		free_query(q);
		q = next;
	}
	if (!c->down_told) {
		c->down_told = true;
		log_warn("PostgreSQL at %s: %s", c->where, why);
		if (c->hooks.down)
			c->hooks.down(c->hooks.arg, why);
	}
	arm_retry(c);
}

/* Sends the head query, if any and the connection is idle. */
static void send_next(struct pg_conn *c)
{
	if (c->state != PG_IDLE || !c->head)
		return;
	struct pg_query *q = c->head;
	if (!PQsendQueryParams(c->pg, q->sql, q->nparams, NULL, (const char *const *) q->params,
			       NULL, NULL, 0)) {
		lose(c);
		return;
	}
	c->state = PG_BUSY;
	int f = PQflush(c->pg);
	if (f < 0)
		lose(c);
	else
		watch(c, f ? EV_READ | EV_WRITE : EV_READ);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	(void) fd;
	(void) what;
	send_next(arg);
}

static void kick(struct pg_conn *c)
{
	if (c->state == PG_IDLE && c->head)
		event_active(c->kick, EV_TIMEOUT, 0);
}

static void take_notifies(struct pg_conn *c)
{
	PGnotify *n;
	while ((n = PQnotifies(c->pg))) {
		if (c->hooks.notify && n->be_pid != PQbackendPID(c->pg))
			c->hooks.notify(c->hooks.arg, n->relname, n->extra);
		PQfreemem(n);
	}
}

/* The up hook after LISTEN has taken: notifications from now on are seen. */
static void came_up(struct pg_conn *c)
{
	c->state = PG_IDLE;
	watch(c, EV_READ);
	if (c->down_told)
		log_info("PostgreSQL at %s: connected again", c->where);
	c->down_told = false;
	if (c->hooks.up)
		c->hooks.up(c->hooks.arg);
	send_next(c);
}

/* Sends LISTEN for every channel (one statement each, in one simple query). */
static void send_listen(struct pg_conn *c)
{
	char sql[512] = "";
	size_t len = 0;
	for (int i = 0; c->listen && c->listen[i]; i++)
		len += (size_t) snprintf(sql + len, sizeof(sql) - len, "LISTEN %s;", c->listen[i]);
	if (!len) {
		came_up(c);
		return;
	}
	if (!PQsendQuery(c->pg, sql)) {
		lose(c);
		return;
	}
	c->state = PG_LISTENING;
	watch(c, EV_READ);
}

/* The head query's results are all in (last: the final one, or NULL): its callback. */
static void finish_query(struct pg_conn *c, PGresult *last)
{
	struct pg_query *q = c->head;
	c->head = q->next;
	if (!c->head)
		c->tail = &c->head;
	c->pending--;
	c->state = PG_IDLE;
	char why[512] = "";
	ExecStatusType st = last ? PQresultStatus(last) : PGRES_FATAL_ERROR;
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		const char *m = last ? PQresultErrorMessage(last) : NULL;
		snprintf(why, sizeof(why), "%s", m && *m ? m : "no result");
		why[strcspn(why, "\n")] = '\0';
	}
	q->done(q->arg, last, why);
	free_query(q);
}

/* Reads what came; finishes the query in flight when its results are all in. A
 * query's results end with a NULL one; the last real one is what is reported. */
static void read_results(struct pg_conn *c)
{
	if (!PQconsumeInput(c->pg)) {
		lose(c);
		return;
	}
	take_notifies(c);
	while ((c->state == PG_BUSY || c->state == PG_LISTENING) && !PQisBusy(c->pg)) {
		PGresult *res = PQgetResult(c->pg);
		if (res) {
			PQclear(c->last);
			c->last = res;
			continue;
		}
		PGresult *last = c->last;
		c->last = NULL;
		if (c->state == PG_LISTENING) {
			bool ok = last && PQresultStatus(last) == PGRES_COMMAND_OK;
			PQclear(last);
			if (!ok) {
				lose(c);
				return;
			}
			came_up(c);
			continue;
		}
		finish_query(c, last);
		PQclear(last);
		if (PQstatus(c->pg) == CONNECTION_BAD) {
			lose(c);
			return;
		}
		send_next(c);
		take_notifies(c);
	}
}

static void poll_connect(struct pg_conn *c)
{
	switch (PQconnectPoll(c->pg)) {
	case PGRES_POLLING_READING:
		watch(c, EV_READ);
		break;
	case PGRES_POLLING_WRITING:
		watch(c, EV_WRITE);
		break;
	case PGRES_POLLING_OK:
		if (PQsetnonblocking(c->pg, 1) < 0) {
			lose(c);
			return;
		}
		send_listen(c);
		break;
	default:
		lose(c);
		break;
	}
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct pg_conn *c = arg;
	(void) fd;
	if (c->state == PG_CONNECTING) {
		poll_connect(c);
		return;
	}
	if (what & EV_WRITE) {
		int f = PQflush(c->pg);
		if (f < 0) {
			lose(c);
			return;
		}
		if (f == 0)
			watch(c, EV_READ);
	}
	if (what & EV_READ)
		read_results(c);
}

/* Starts libpq's connection, to the addresses looked up when there are some. */
static void connect_to(struct pg_conn *c, const char *hostaddr)
{
	char *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(c->conninfo, &err);
	const char *keys[64], *values[64];
	int n = 0;
	for (PQconninfoOption *o = opts; o && o->keyword && n < 61; o++)
		if (o->val && !(hostaddr && (strcmp(o->keyword, "hostaddr") == 0 ||
					     strcmp(o->keyword, "host") == 0))) {
			keys[n] = o->keyword;
			values[n++] = o->val;
		}
	if (hostaddr) {
		keys[n] = "host";
		values[n++] = c->hosts;
		keys[n] = "hostaddr";
		values[n++] = hostaddr;
	}
	keys[n] = values[n] = NULL;
	c->pg = opts ? PQconnectStartParams(keys, values, 0) : NULL;
	PQconninfoFree(opts);
	PQfreemem(err);
	if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
		lose(c);
		return;
	}
	c->state = PG_CONNECTING;
	/* libpq says to poll once the socket is writable. */
	watch(c, EV_WRITE);
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
	struct pg_conn *c = arg;
	c->lookup = NULL;
	if (result == EVUTIL_EAI_CANCEL)
		return; /* being freed */
	size_t na = 0, nh = 0;
	int count = 0;
	for (struct evutil_addrinfo *a = result == 0 ? res : NULL; a && count < PG_CONN_ADDRS_MAX;
	     a = a->ai_next) {
		char text[INET6_ADDRSTRLEN];
		const void *addr =
			a->ai_family == AF_INET
				? (const void *) &((struct sockaddr_in *) a->ai_addr)->sin_addr
			: a->ai_family == AF_INET6
				? (const void *) &((struct sockaddr_in6 *) a->ai_addr)->sin6_addr
				: NULL;
		if (!addr || !inet_ntop(a->ai_family, addr, text, sizeof(text)) ||
		    nh + strlen(c->resolve) + 2 > sizeof(c->hosts))
			continue;
		na += (size_t) snprintf(c->hostaddr + na, sizeof(c->hostaddr) - na, "%s%s",
					count ? "," : "", text);
		nh += (size_t) snprintf(c->hosts + nh, sizeof(c->hosts) - nh, "%s%s",
					count ? "," : "", c->resolve);
		count++;
	}
	if (res)
		evutil_freeaddrinfo(res);
	if (!count) {
		snprintf(c->why, sizeof(c->why), "cannot look up host \"%s\": %s", c->resolve,
			 result ? evutil_gai_strerror(result) : "no address");
		lose(c);
		return;
	}
	log_debug("PostgreSQL at %s: %s is %s", c->where, c->resolve, c->hostaddr);
	connect_to(c, c->hostaddr);
}

static void start_connect(struct pg_conn *c)
{
	if (!c->resolve) {
		connect_to(c, NULL);
		return;
	}
	struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	c->state = PG_RESOLVING;
	/* The answer may come at once (an /etc/hosts name): then on_resolved ran already. */
	c->lookup = evdns_getaddrinfo(c->dns, c->resolve, NULL, &hints, on_resolved, c);
}

/* Which host name, if any, must be looked up before connecting: one name, not an
 * address, not a socket directory, and no hostaddr given. */
static char *name_to_resolve(const char *host, const char *hostaddr)
{
	unsigned char buf[sizeof(struct in6_addr)];
	if (!host || !*host || hostaddr || host[0] == '/' || host[0] == '@' || strchr(host, ',') ||
	    inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1)
		return NULL;
	return strdup(host);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void) fd;
	(void) what;
	start_connect(arg);
}

/* "host:port/db" for messages, from libpq's parse of conninfo (no password). */
static void describe(struct pg_conn *c)
{
	char *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(c->conninfo, &err);
	const char *host = NULL, *hostaddr = NULL, *port = NULL, *db = NULL;
	for (PQconninfoOption *o = opts; o && o->keyword; o++) {
		if (!o->val)
			continue;
		if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0)
			hostaddr = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "dbname") == 0)
			db = o->val;
	}
	if (!hostaddr)
		hostaddr = getenv("PGHOSTADDR");
	if (!host)
		host = getenv("PGHOST");
	c->resolve = name_to_resolve(host, hostaddr);
	if (!host)
		host = hostaddr;
	if (!port)
		port = getenv("PGPORT");
	if (!db)
		db = getenv("PGDATABASE");
	snprintf(c->where, sizeof(c->where), "%s:%s/%s", host ? host : "localhost",
		 port ? port : "5432", db ? db : "(the user's)");
	PQconninfoFree(opts);
	PQfreemem(err);
}

struct pg_conn *pg_conn_new(struct event_base *base, const char *conninfo,
			    const char *const *listen, const struct pg_conn_hooks *hooks)
{
	struct pg_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->base = base;
	c->listen = listen;
	c->hooks = *hooks;
	c->io_fd = -1;
	c->tail = &c->head;
	c->conninfo = strdup(conninfo);
	c->retry = evtimer_new(base, on_retry, c);
	c->kick = event_new(base, -1, 0, on_kick, c);
	if (!c->conninfo || !c->retry || !c->kick) {
		pg_conn_free(c);
		return NULL;
	}
	describe(c);
	if (c->resolve && !(c->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS))) {
		pg_conn_free(c);
		return NULL;
	}
	start_connect(c);
	return c;
}

void pg_conn_free(struct pg_conn *c)
{
	if (!c)
		return;
	c->closing = true;
	unwatch(c);
	PQclear(c->last);
	if (c->pg)
		PQfinish(c->pg);
	struct pg_query *q = c->head;
	c->head = NULL;
	while (q) {
		struct pg_query *next = q->next;
		q->done(q->arg, NULL, "zerogpud is stopping");
		free_query(q);
		q = next;
	}
	if (c->retry)
		event_free(c->retry);
	if (c->kick)
		event_free(c->kick);
	if (c->dns)
		evdns_base_free(c->dns, 1); /* a lookup under way is cancelled */
	free(c->resolve);
	free(c->conninfo);
	free(c);
}

bool pg_conn_up(const struct pg_conn *c)
{
	return c->state == PG_IDLE || c->state == PG_BUSY;
}

bool pg_conn_down(const struct pg_conn *c)
{
	return c->down_told;
}

int pg_conn_pending(const struct pg_conn *c)
{
	return c->pending;
}

const char *pg_conn_where(const struct pg_conn *c)
{
	return c->where;
}

int pg_conn_query(struct pg_conn *c, const char *sql, int nparams, const char *const *params,
		  pg_conn_done_fn done, void *arg)
{
	if (nparams > PG_CONN_PARAMS_MAX)
		return -EINVAL;
	if (c->closing)
		return -ESHUTDOWN;
	struct pg_query *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->sql = sql;
	q->done = done;
	q->arg = arg;
	for (int i = 0; i < nparams; i++, q->nparams++) {
		if (params[i] && !(q->params[i] = strdup(params[i]))) {
			free_query(q);
			return -ENOMEM;
		}
	}
	*c->tail = q;
	c->tail = &q->next;
	c->pending++;
	kick(c);
	return 0;
}
