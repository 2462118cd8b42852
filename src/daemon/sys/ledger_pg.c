/*
 * The PostgreSQL ledger: shared by the daemons of several machines, each
 * writing and settling its own node's leases, all drawing on the same quotas.
 *
 * Start-up (ledger_open_pg, then record_recover) uses a blocking connection:
 * the loop does not run yet, and a daemon that cannot reach its database at
 * start has nothing to serve. From serve() on, every query goes through
 * pg_conn on the loop. Writes are kept in order: an attach or an end that the
 * connection lost is queued again (each is written once, whatever the number
 * of tries: the end settles only a lease not settled yet), and a grant that it
 * lost is reported to the daemon, which does not give it.
 */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "daemon/sys/ledger.h"
#include "daemon/sys/ledger_pg_schema.h"
#include "daemon/sys/pg_conn.h"

struct ledger_pg {
	struct ledger base;
	char *conninfo;
	PGconn *sync;	    /* start-up only */
	struct pg_conn *pg; /* from serve() on */
	struct event_base *loop;
	struct ledger_hooks hooks;
};

/* ------------------------------------------------------------------------
 * Statements, with their text parameters.
 * ------------------------------------------------------------------------ */

static const char SQL_GRANT[] =
	"SELECT o_granted, o_window_start, o_used_ms, o_reserved_ms FROM zerogpu_grant($1, $2, "
	"$3, $4, $5, $6, $7, $8::integer, $9, $10::bigint, $11::bigint, $12, $13::bigint, "
	"$14::bigint, $15::bigint, $16::boolean)";
static const char SQL_ATTACH[] =
	"UPDATE leases SET pid = $1::integer, pgid = $2::integer, pid_start = $3::bigint, "
	"state = 'attached' WHERE id = $4 AND node = $5 AND ended_at IS NULL";
static const char SQL_END[] =
	"SELECT o_settled, o_quota_key, o_window_start, o_used_ms FROM zerogpu_end($1, $2, $3, "
	"$4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::boolean)";
static const char SQL_UNSETTLED[] =
	"SELECT id, app, visitor, devices, requested_ms, started_at, state, coalesce(pid, 0), "
	"coalesce(pgid, 0), coalesce(pid_start, 0), size, quota_key FROM leases WHERE node = $1 "
	"AND ended_at IS NULL ORDER BY started_at";

/* A statement's parameters, as text, held by value: a write kept for a retry keeps its own. */
#define PARAMS_STORE (LEDGER_DEVICES_MAX + 1024)

struct params {
	int n;
	int off[PG_CONN_PARAMS_MAX];
	size_t used;
	bool overflow;
	char store[PARAMS_STORE];
};

static void p_text(struct params *p, const char *s)
{
	size_t len = strlen(s ? s : "") + 1;
	if (p->n == PG_CONN_PARAMS_MAX || p->used + len > sizeof(p->store)) {
		p->overflow = true;
		return;
	}
	memcpy(p->store + p->used, s ? s : "", len);
	p->off[p->n++] = (int) p->used;
	p->used += len;
}

static void p_int(struct params *p, int64_t x)
{
	char num[24];
	snprintf(num, sizeof(num), "%" PRId64, x);
	p_text(p, num);
}

static void p_bool(struct params *p, bool b)
{
	p_text(p, b ? "t" : "f");
}

/* The values to send, pointing into p. */
static void p_values(const struct params *p, const char *v[PG_CONN_PARAMS_MAX])
{
	for (int i = 0; i < p->n; i++)
		v[i] = p->store + p->off[i];
}

static void grant_params(const struct ledger_pg *s, const struct ledger_lease *r,
			 const struct ledger_grant_quota *q, struct params *p)
{
	p_text(p, r->id);
	p_text(p, s->base.node);
	p_text(p, r->app);
	p_text(p, r->task);
	p_text(p, r->visitor);
	p_text(p, r->tier);
	p_text(p, r->size);
	p_int(p, r->gpus);
	p_text(p, r->devices);
	p_int(p, r->requested_ms);
	p_int(p, r->started_at);
	p_text(p, q->key);
	p_int(p, q->cost_ms);
	p_int(p, q->limit_ms);
	p_int(p, q->window_ms);
	p_bool(p, q->overage);
}

static void end_params(const struct ledger_pg *s, const char *id, const char *state,
		       int64_t ended_at, int64_t used_ms, int64_t charged_ms,
		       const struct ledger_visitor *v, struct params *p)
{
	p_text(p, id);
	p_text(p, s->base.node);
	p_text(p, state);
	p_int(p, ended_at);
	p_int(p, used_ms);
	p_int(p, charged_ms);
	p_int(p, v ? v->limit_ms : 0);
	p_bool(p, v && v->overage);
}

static int64_t col_int(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static bool col_bool(const PGresult *res, int row, int col)
{
	return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

/* The server's message on one line, into the ledger's error. */
static int fail(struct ledger_pg *s, const char *what, const char *why)
{
	snprintf(s->base.error, sizeof(s->base.error), "%s: %s", what,
		 why && *why ? why : "no answer");
	char *nl = strchr(s->base.error, '\n');
	if (nl)
		*nl = '\0';
	return -EIO;
}

/* Runs sql on the start-up connection; res (may be NULL) gets a successful result. */
static int run_sync(struct ledger_pg *s, const char *what, const char *sql, const struct params *p,
		    PGresult **res)
{
	const char *v[PG_CONN_PARAMS_MAX];
	if (p)
		p_values(p, v);
	/* Without parameters, the simple protocol: a migration is several statements. */
	PGresult *r = p ? PQexecParams(s->sync, sql, p->n, NULL, v, NULL, NULL, 0)
			: PQexec(s->sync, sql);
	ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		int e = fail(s, what, r ? PQresultErrorMessage(r) : PQerrorMessage(s->sync));
		PQclear(r);
		return e;
	}
	if (res)
		*res = r;
	else
		PQclear(r);
	return 0;
}

/* ------------------------------------------------------------------------
 * Writes on the loop.
 * ------------------------------------------------------------------------ */

/* An attach or an end, kept until written. */
struct pg_write {
	struct ledger_pg *s;
	const char *sql, *what;
	struct params p;
};

static void tell_visitor(struct ledger_pg *s, const char *key, int64_t window_start,
			 int64_t used_ms)
{
	if (s->hooks.visitor_seen && key && *key)
		s->hooks.visitor_seen(s->hooks.arg, key, window_start, used_ms);
}

static void on_written(void *arg, const PGresult *res, const char *why);

static void queue_write(struct pg_write *w)
{
	const char *v[PG_CONN_PARAMS_MAX];
	p_values(&w->p, v);
	if (pg_conn_query(w->s->pg, w->sql, w->p.n, v, on_written, w) < 0) {
		fail(w->s, w->what, "out of memory");
		free(w);
	}
}

static void on_written(void *arg, const PGresult *res, const char *why)
{
	struct pg_write *w = arg;
	if (!res) { /* the connection was lost: again, in order, once it is back */
		queue_write(w);
		return;
	}
	if (*why) { /* the server refused it: trying again would not help */
		fail(w->s, w->what, why);
		free(w);
		return;
	}
	if (w->sql == SQL_END && PQntuples(res) == 1 && col_bool(res, 0, 0))
		tell_visitor(w->s, PQgetvalue(res, 0, 1), col_int(res, 0, 2), col_int(res, 0, 3));
	free(w);
}

/* Queues a write of sql with p (copied), kept until written. */
static int write_async(struct ledger_pg *s, const char *what, const char *sql,
		       const struct params *p)
{
	struct pg_write *w = malloc(sizeof(*w));
	if (!w)
		return fail(s, what, "out of memory");
	w->s = s;
	w->sql = sql;
	w->what = what;
	w->p = *p;
	queue_write(w);
	return 0;
}

struct pg_grant {
	struct ledger_pg *s;
	ledger_granted_fn done;
	void *arg;
	char key[256];
};

static void on_granted(void *arg, const PGresult *res, const char *why)
{
	struct pg_grant *g = arg;
	struct ledger_visitor v = {.key = g->key};
	int r = 0;
	if (!res || *why || PQntuples(res) != 1) {
		fail(g->s, "recording a grant", why);
		r = -EIO;
	} else {
		v.window_start = col_int(res, 0, 1);
		v.used_ms = col_int(res, 0, 2);
		v.reserved_ms = col_int(res, 0, 3);
		r = col_bool(res, 0, 0) ? 0 : -EDQUOT;
		tell_visitor(g->s, g->key, v.window_start, v.used_ms);
	}
	g->done(g->arg, r, g->key[0] ? &v : NULL, g->s->base.error);
	free(g);
}

static int pg_grant_async(struct ledger *lg, const struct ledger_lease *row,
			  const struct ledger_grant_quota *q, ledger_granted_fn done, void *arg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	if (!s->pg || !pg_conn_up(s->pg))
		return fail(s, "recording a grant", "not connected to PostgreSQL");
	struct pg_grant *g = calloc(1, sizeof(*g));
	if (!g)
		return fail(s, "recording a grant", "out of memory");
	struct params p = {.n = 0};
	grant_params(s, row, q, &p);
	const char *v[PG_CONN_PARAMS_MAX];
	p_values(&p, v);
	g->s = s;
	g->done = done;
	g->arg = arg;
	snprintf(g->key, sizeof(g->key), "%s", q->key ? q->key : "");
	if (p.overflow || pg_conn_query(s->pg, SQL_GRANT, p.n, v, on_granted, g) < 0) {
		free(g);
		return fail(s, "recording a grant", "out of memory");
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * The ops: synchronous before serve(), queued after.
 * ------------------------------------------------------------------------ */

static int pg_granted(struct ledger *lg, const struct ledger_lease *r)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	struct ledger_grant_quota q = {.key = "", .overage = true};
	struct params p = {.n = 0};
	grant_params(s, r, &q, &p);
	if (!s->sync)
		return fail(s, "recording a grant", "grants go through grant_async");
	return run_sync(s, "recording a grant", SQL_GRANT, &p, NULL);
}

static int pg_attached(struct ledger *lg, const char *id, pid_t pid, pid_t pgid, uint64_t pid_start)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	struct params p = {.n = 0};
	p_int(&p, pid);
	p_int(&p, pgid);
	p_int(&p, (int64_t) pid_start);
	p_text(&p, id);
	p_text(&p, s->base.node);
	return s->sync ? run_sync(s, "recording an attach", SQL_ATTACH, &p, NULL)
		       : write_async(s, "recording an attach", SQL_ATTACH, &p);
}

static int pg_ended(struct ledger *lg, const char *id, const char *state, int64_t ended_at,
		    int64_t used_ms, int64_t charged_ms, const struct ledger_visitor *v)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	struct params p = {.n = 0};
	end_params(s, id, state, ended_at, used_ms, charged_ms, v, &p);
	if (!s->sync)
		return write_async(s, "recording a lease's end", SQL_END, &p);
	PGresult *res = NULL;
	int r = run_sync(s, "recording a lease's end", SQL_END, &p, &res);
	if (r == 0 && PQntuples(res) == 1 && col_bool(res, 0, 0))
		tell_visitor(s, PQgetvalue(res, 0, 1), col_int(res, 0, 2), col_int(res, 0, 3));
	PQclear(res);
	return r;
}

/* A quota window as the shared ledger has it, read at start-up (settling what a previous
 * run left). On the loop, the grant's answer brings the same figures. */
static int pg_visitor_load(struct ledger *lg, const char *key, struct ledger_visitor *v)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	if (!s->sync)
		return 0; /* the grant checks the quota in the database, and brings the figures */
	struct params p = {.n = 0};
	p_text(&p, key);
	PGresult *res = NULL;
	int r = run_sync(s, "reading a visitor's quota",
			 "SELECT tier, window_start, used_ms FROM visitors WHERE key = $1", &p,
			 &res);
	if (r < 0)
		return r;
	int found = PQntuples(res) == 1;
	if (found) {
		snprintf(v->tier_buf, sizeof(v->tier_buf), "%s", PQgetvalue(res, 0, 0));
		v->tier = v->tier_buf;
		v->window_start = col_int(res, 0, 1);
		v->used_ms = col_int(res, 0, 2);
	}
	PQclear(res);
	return found;
}

static int pg_unsettled(struct ledger *lg, void (*fn)(const struct ledger_lease *row, void *arg),
			void *arg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	if (!s->sync)
		return fail(s, "reading unsettled leases", "only at start-up");
	struct params p = {.n = 0};
	p_text(&p, s->base.node);
	PGresult *res = NULL;
	int r = run_sync(s, "reading unsettled leases", SQL_UNSETTLED, &p, &res);
	for (int i = 0; r == 0 && i < PQntuples(res); i++) {
		struct ledger_lease row = {
			.id = PQgetvalue(res, i, 0),
			.app = PQgetvalue(res, i, 1),
			.visitor = PQgetvalue(res, i, 2),
			.devices = PQgetvalue(res, i, 3),
			.requested_ms = col_int(res, i, 4),
			.started_at = col_int(res, i, 5),
			.state = PQgetvalue(res, i, 6),
			.pid = (pid_t) col_int(res, i, 7),
			.pgid = (pid_t) col_int(res, i, 8),
			.pid_start = (uint64_t) col_int(res, i, 9),
			.size = PQgetvalue(res, i, 10),
			.quota_key = PQgetvalue(res, i, 11),
		};
		fn(&row, arg);
	}
	PQclear(res);
	return r;
}

static int not_yet(struct ledger *lg)
{
	snprintf(lg->error, sizeof(lg->error),
		 "the registry is not served with a PostgreSQL ledger yet");
	return -EOPNOTSUPP;
}

static int pg_account_add(struct ledger *lg, const char *name, const char *kind, int64_t now)
{
	(void) name, (void) kind, (void) now;
	return not_yet(lg);
}

static int pg_account_list(struct ledger *lg, void (*fn)(const struct ledger_account *a, void *arg),
			   void *arg)
{
	(void) fn, (void) arg;
	return not_yet(lg);
}

static int pg_app_add(struct ledger *lg, const char *name, const char *account,
		      const char *token_sha256, int limit_for_kind[3], int64_t now)
{
	(void) name, (void) account, (void) token_sha256, (void) limit_for_kind, (void) now;
	return not_yet(lg);
}

static int pg_app_remove(struct ledger *lg, const char *name)
{
	(void) name;
	return not_yet(lg);
}

static int pg_app_list(struct ledger *lg, void (*fn)(const struct ledger_app *a, void *arg),
		       void *arg)
{
	(void) fn, (void) arg;
	return not_yet(lg);
}

static int pg_app_by_token(struct ledger *lg, const char *token_sha256, char *name, size_t size)
{
	(void) lg, (void) token_sha256, (void) name, (void) size;
	return 0;
}

static int pg_usage(struct ledger *lg, const char *app, int64_t since,
		    void (*fn)(const struct ledger_usage *u, void *arg), void *arg)
{
	(void) app, (void) since, (void) fn, (void) arg;
	return not_yet(lg);
}

static int pg_visitor_reset(struct ledger *lg, const char *key)
{
	(void) key;
	return not_yet(lg);
}

static int pg_tier_set(struct ledger *lg, const char *key, const char *tier, int64_t now)
{
	(void) key, (void) tier, (void) now;
	return not_yet(lg);
}

static int pg_tier_get(struct ledger *lg, const char *key, char *tier, size_t size)
{
	(void) lg, (void) key, (void) tier, (void) size;
	return 0;
}

/* Whether the database takes writes: connected, with nothing kept waiting. */
static int pg_probe(struct ledger *lg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	if (s->pg && pg_conn_up(s->pg))
		return 0;
	if (!lg->error[0])
		fail(s, "reaching PostgreSQL", "not connected");
	return -EIO;
}

static void on_up(void *arg)
{
	struct ledger_pg *s = arg;
	if (s->hooks.up)
		s->hooks.up(s->hooks.arg);
}

static void on_down(void *arg, const char *why)
{
	struct ledger_pg *s = arg;
	snprintf(s->base.error, sizeof(s->base.error), "PostgreSQL at %s: %s",
		 pg_conn_where(s->pg), why);
	if (s->hooks.down)
		s->hooks.down(s->hooks.arg, s->base.error);
}

static int pg_serve(struct ledger *lg, struct event_base *base, const struct ledger_hooks *hooks)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	static const char *const channels[] = {"zerogpu_registry", NULL};
	struct pg_conn_hooks h = {.up = on_up, .down = on_down, .arg = s};
	s->hooks = *hooks;
	s->loop = base;
	/* Taken over by the loop: the start-up connection is done with. */
	PQfinish(s->sync);
	s->sync = NULL;
	s->pg = pg_conn_new(base, s->conninfo, channels, &h);
	return s->pg ? 0 : -ENOMEM;
}

static void on_flush_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void) fd, (void) what;
	*(bool *) arg = true;
}

static int pg_flush(struct ledger *lg, int64_t timeout_ms)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	if (!s->pg)
		return 0;
	bool expired = false;
	struct event *t = evtimer_new(s->loop, on_flush_timeout, &expired);
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	if (!t)
		return -ENOMEM;
	evtimer_add(t, &tv);
	while (pg_conn_pending(s->pg) && !expired)
		event_base_loop(s->loop, EVLOOP_ONCE);
	event_free(t);
	return pg_conn_pending(s->pg) ? -ETIMEDOUT : 0;
}

static void pg_close(struct ledger *lg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	pg_conn_free(s->pg);
	if (s->sync)
		PQfinish(s->sync);
	free(s->conninfo);
	free(s);
}

static const struct ledger_ops pg_ops = {
	.name = "postgresql",
	.lease_granted = pg_granted,
	.lease_attached = pg_attached,
	.lease_ended = pg_ended,
	.unsettled = pg_unsettled,
	.visitor_load = pg_visitor_load,
	.account_add = pg_account_add,
	.account_list = pg_account_list,
	.app_add = pg_app_add,
	.app_remove = pg_app_remove,
	.app_list = pg_app_list,
	.app_by_token = pg_app_by_token,
	.visitor_reset = pg_visitor_reset,
	.visitor_tier_set = pg_tier_set,
	.visitor_tier_get = pg_tier_get,
	.usage = pg_usage,
	.probe = pg_probe,
	.serve = pg_serve,
	.grant_async = pg_grant_async,
	.flush = pg_flush,
	.close = pg_close,
};

/* ------------------------------------------------------------------------
 * Start-up: connect, migrate.
 * ------------------------------------------------------------------------ */

/*
 * Applies the migrations this database lacks. Daemons starting together take
 * turns on an advisory lock (held by the session: released at the end, or if
 * this daemon dies); each migration commits with its version row.
 */
static int migrate(struct ledger_pg *s)
{
	int r = run_sync(s, "taking the migration lock",
			 "SELECT pg_advisory_lock(" LEDGER_PG_MIGRATION_LOCK ")", NULL, NULL);
	if (r < 0)
		return r;
	PGresult *res = NULL;
	r = run_sync(s, "reading the schema version",
		     "CREATE TABLE IF NOT EXISTS zerogpu_migrations (version integer PRIMARY KEY, "
		     "node text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
		     NULL, NULL);
	if (r == 0)
		r = run_sync(s, "reading the schema version",
			     "SELECT coalesce(max(version), 0) FROM zerogpu_migrations", NULL, &res);
	int version = r == 0 ? (int) col_int(res, 0, 0) : 0;
	PQclear(res);
	int known = (int) (sizeof(ledger_pg_migrations) / sizeof(ledger_pg_migrations[0]));
	if (r == 0 && version > known) {
		snprintf(s->base.error, sizeof(s->base.error),
			 "the ledger has schema version %d, newer than this zerogpud knows (%d): "
			 "upgrade zerogpud",
			 version, known);
		r = -EPROTO;
	}
	for (; r == 0 && version < known; version++) {
		struct params p = {.n = 0};
		p_int(&p, version + 1);
		p_text(&p, s->base.node);
		char what[64];
		snprintf(what, sizeof(what), "migrating the ledger to version %d", version + 1);
		r = run_sync(s, what, "BEGIN", NULL, NULL);
		if (r == 0)
			r = run_sync(s, what, ledger_pg_migrations[version], NULL, NULL);
		if (r == 0)
			r = run_sync(s, what,
				     "INSERT INTO zerogpu_migrations (version, node) VALUES "
				     "($1::integer, $2)",
				     &p, NULL);
		if (r == 0)
			r = run_sync(s, what, "COMMIT", NULL, NULL);
		if (r < 0)
			(void) PQclear(PQexec(s->sync, "ROLLBACK"));
	}
	(void) PQclear(PQexec(s->sync, "SELECT pg_advisory_unlock(" LEDGER_PG_MIGRATION_LOCK ")"));
	return r;
}

int ledger_open_pg(struct ledger **out, const char *conninfo, const char *node, char *err,
		   size_t errlen)
{
	struct ledger_pg *s = calloc(1, sizeof(*s));
	if (!s || !(s->conninfo = strdup(conninfo))) {
		free(s);
		snprintf(err, errlen, "out of memory opening the ledger");
		return -ENOMEM;
	}
	s->base.ops = &pg_ops;
	snprintf(s->base.node, sizeof(s->base.node), "%s", node);
	s->sync = PQconnectdb(conninfo);
	int r = 0;
	if (!s->sync || PQstatus(s->sync) != CONNECTION_OK)
		r = fail(s, "connecting to PostgreSQL",
			 s->sync ? PQerrorMessage(s->sync) : "out of memory");
	if (r == 0)
		r = run_sync(s, "setting up the session", "SET client_min_messages = warning", NULL,
			     NULL);
	if (r == 0)
		r = migrate(s);
	if (r < 0) {
		snprintf(err, errlen, "the PostgreSQL ledger: %s", s->base.error);
		pg_close(&s->base);
		return r;
	}
	*out = &s->base;
	return 0;
}
