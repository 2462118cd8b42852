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

struct registry;

struct ledger_pg {
	struct ledger base;
	char *conninfo;
	PGconn *sync;	    /* start-up only */
	struct pg_conn *pg; /* from serve() on */
	struct event_base *loop;
	struct ledger_hooks hooks;
	struct registry *registry; /* the registry's copy in memory */
	int limits[3];		   /* the hosting limits last given, for messages */
	bool closing;		   /* answers still queued are dropped, not given */
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

/* A NULL parameter. */
static void p_null(struct params *p)
{
	if (p->n == PG_CONN_PARAMS_MAX) {
		p->overflow = true;
		return;
	}
	p->off[p->n++] = -1;
}

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
		v[i] = p->off[i] < 0 ? NULL : p->store + p->off[i];
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
	if (g->s->closing) { /* the daemon is past its leases: nobody to tell */
		free(g);
		return;
	}
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
	/* Down: refused at once (the daemon is in a fault). While the connection is first
	 * being made, at start, the grant waits for it in the queue. */
	if (!s->pg || pg_conn_down(s->pg))
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

/* ------------------------------------------------------------------------
 * The registry: a copy in memory for the reads (app tokens on every request,
 * tiers on every visitor token minted), read again at each connect and when
 * any daemon changes it (NOTIFY zerogpu_registry); changes on the loop.
 * ------------------------------------------------------------------------ */

static const char SQL_REGISTRY[] =
	"SELECT 'a', name, kind, created_at, '' FROM accounts UNION ALL "
	"SELECT 'p', name, account, created_at, token_sha256 FROM apps UNION ALL "
	"SELECT 't', key, tier, set_at, '' FROM visitor_tiers";

/* Rows of the copy, by kind, each sorted (strcmp) by the column it is looked up by. */
struct registry_index {
	int *rows;
	int n;
	int col;
};

static const PGresult *sorting; /* qsort's context: one thread */

static int by_col(const void *a, const void *b, int col)
{
	return strcmp(PQgetvalue(sorting, *(const int *) a, col),
		      PQgetvalue(sorting, *(const int *) b, col));
}

static int by_name(const void *a, const void *b)
{
	return by_col(a, b, 1);
}

static int by_token(const void *a, const void *b)
{
	return by_col(a, b, 4);
}

static void index_build(struct registry_index *ix, const PGresult *res, char kind, int col)
{
	ix->n = 0;
	ix->col = col;
	for (int i = 0; i < PQntuples(res); i++)
		if (PQgetvalue(res, i, 0)[0] == kind)
			ix->rows[ix->n++] = i;
	sorting = res;
	qsort(ix->rows, (size_t) ix->n, sizeof(int), col == 4 ? by_token : by_name);
	sorting = NULL;
}

/* The row whose column is key, or -1. */
static int index_find(const struct registry_index *ix, const PGresult *res, const char *key)
{
	int lo = 0, hi = ix->n - 1;
	while (lo <= hi) {
		int mid = lo + (hi - lo) / 2;
		int c = strcmp(PQgetvalue(res, ix->rows[mid], ix->col), key);
		if (c == 0)
			return ix->rows[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

struct registry {
	PGresult *res; /* the copy: NULL until first read */
	int *storage;
	struct registry_index accounts, apps, tokens, tiers;
};

static void registry_free(struct registry *g)
{
	PQclear(g->res);
	free(g->storage);
	memset(g, 0, sizeof(*g));
}

static int registry_take(struct registry *g, const PGresult *res)
{
	PGresult *copy = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
	int n = PQntuples(res);
	int *storage = malloc(sizeof(int) * (size_t) (4 * n + 1));
	if (!copy || !storage) {
		PQclear(copy);
		free(storage);
		return -ENOMEM;
	}
	registry_free(g);
	g->res = copy;
	g->storage = storage;
	g->accounts.rows = storage;
	g->apps.rows = storage + n;
	g->tokens.rows = storage + 2 * n;
	g->tiers.rows = storage + 3 * n;
	index_build(&g->accounts, copy, 'a', 1);
	index_build(&g->apps, copy, 'p', 1);
	index_build(&g->tokens, copy, 'p', 4);
	index_build(&g->tiers, copy, 't', 1);
	return 0;
}

/* A registry change or a listing in flight. */
struct pg_call {
	struct ledger_pg *s;
	ledger_done_fn done;
	void *arg;
	const char *what;
	int r;
	/* Turns a successful result into the op's answer (>= 0), or a refusal. */
	int (*answer)(struct pg_call *k, const PGresult *res);
	char name[160]; /* the app, account or visitor, for messages */
	void (*usage_fn)(const struct ledger_usage *u, void *arg);
	void (*overage_fn)(const struct ledger_overage *o, void *arg);
	void *fn_arg;
};

static void on_registry_read(void *arg, const PGresult *res, const char *why);

/* Reads the registry again; k (NULL for a read nobody waits for) is answered once it
 * is in. */
static void registry_reload(struct ledger_pg *s, struct pg_call *k)
{
	if (!k && !(k = calloc(1, sizeof(*k))))
		return; /* the next change or reconnect reads it */
	k->s = s;
	if (pg_conn_query(s->pg, SQL_REGISTRY, 0, NULL, on_registry_read, k) < 0) {
		if (k->done)
			k->done(k->arg, k->r);
		free(k);
	}
}

static void on_registry_read(void *arg, const PGresult *res, const char *why)
{
	struct pg_call *k = arg;
	struct ledger_pg *s = k->s;
	if (res && !*why && registry_take(s->registry, res) < 0)
		fail(s, "reading the registry", "out of memory");
	if (k->done)
		k->done(k->arg, k->r);
	free(k);
}

static void on_call_result(void *arg, const PGresult *res, const char *why)
{
	struct pg_call *k = arg;
	struct ledger_pg *s = k->s;
	if (!res) {
		k->r = fail(s, k->what, why);
	} else if (*why) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (state && strcmp(state, "23505") == 0) { /* unique_violation */
			snprintf(s->base.error, sizeof(s->base.error),
				 "account '%s' already exists", k->name);
			k->r = -EEXIST; /* only adding an account can meet it: apps say 'exists' */
		} else {
			k->r = fail(s, k->what, why);
		}
	} else {
		k->r = k->answer(k, res);
	}
	/* A change is answered once this daemon's copy has it: its reads see its writes. */
	if (k->r >= 0 && k->answer != NULL && !k->usage_fn && !s->closing) {
		registry_reload(s, k);
		return;
	}
	k->done(k->arg, k->r);
	free(k);
}

static int call_async(struct ledger_pg *s, const char *what, const char *sql,
		      const struct params *p, int (*answer)(struct pg_call *, const PGresult *),
		      const char *name, ledger_done_fn done, void *arg, struct pg_call **out)
{
	struct pg_call *k = calloc(1, sizeof(*k));
	if (!k)
		return fail(s, what, "out of memory");
	k->s = s;
	k->done = done;
	k->arg = arg;
	k->what = what;
	k->answer = answer;
	snprintf(k->name, sizeof(k->name), "%s", name ? name : "");
	if (out)
		*out = k;
	const char *v[PG_CONN_PARAMS_MAX];
	p_values(p, v);
	/* Down: refused at once, rather than the caller waiting for the reconnection. */
	if (!s->pg || pg_conn_down(s->pg) ||
	    pg_conn_query(s->pg, sql, p->n, v, on_call_result, k) < 0) {
		free(k);
		return fail(s, what, "not connected to PostgreSQL");
	}
	return 0;
}

static int answer_done(struct pg_call *k, const PGresult *res)
{
	(void) k, (void) res;
	return 0;
}

static int pg_account_add_async(struct ledger *lg, const char *name, const char *kind, int64_t now,
				ledger_done_fn done, void *arg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	struct params p = {.n = 0};
	p_text(&p, name);
	p_text(&p, kind);
	p_int(&p, now);
	return call_async(
		s, "adding an account",
		"INSERT INTO accounts (name, kind, created_at) VALUES ($1, $2, $3::bigint)", &p,
		answer_done, name, done, arg, NULL);
}

static int answer_app_add(struct pg_call *k, const PGresult *res)
{
	struct ledger_pg *s = k->s;
	const char *code = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "";
	if (strcmp(code, "ok") == 0)
		return 0;
	if (strcmp(code, "exists") == 0) {
		snprintf(s->base.error, sizeof(s->base.error), "app '%s' already exists", k->name);
		return -EEXIST;
	}
	if (strcmp(code, "no_account") == 0) {
		snprintf(s->base.error, sizeof(s->base.error),
			 "no account '%s': add it first with 'zerogpu account add %s --kind "
			 "free|pro|org'",
			 k->name + strlen(k->name) + 1, k->name + strlen(k->name) + 1);
		return -ENOENT;
	}
	char kind[16] = "";
	int count = 0;
	if (sscanf(code, "limit %15s %d", kind, &count) == 2) {
		snprintf(s->base.error, sizeof(s->base.error),
			 "account '%s' already hosts %d app%s, the most a %s account may host "
			 "(across every node); remove one, or use a pro (%d) or org (%d) account",
			 k->name + strlen(k->name) + 1, count, count == 1 ? "" : "s", kind,
			 s->limits[1], s->limits[2]);
		return -EDQUOT;
	}
	return fail(s, "adding an app", code);
}

static int pg_app_add_async(struct ledger *lg, const char *name, const char *account,
			    const char *token_sha256, int limit_for_kind[3], int64_t now,
			    ledger_done_fn done, void *arg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	struct params p = {.n = 0};
	p_text(&p, name);
	p_text(&p, account);
	p_text(&p, token_sha256);
	for (int i = 0; i < 3; i++)
		p_int(&p, limit_for_kind[i]);
	p_int(&p, now);
	memcpy(s->limits, limit_for_kind, sizeof(s->limits));
	/* The name, a NUL, then the account: both for the messages. */
	char names[160];
	snprintf(names, sizeof(names), "%.70s%c%.70s", name, '\0', account);
	struct pg_call *k = NULL;
	int r = call_async(s, "adding an app",
			   "SELECT zerogpu_app_add($1, $2, $3, $4::integer, $5::integer, "
			   "$6::integer, $7::bigint)",
			   &p, answer_app_add, NULL, done, arg, &k);
	if (r == 0)
		memcpy(k->name, names, sizeof(names));
	return r;
}

static int answer_removed(struct pg_call *k, const PGresult *res)
{
	if (strcmp(PQcmdTuples((PGresult *) res), "0") != 0)
		return 0;
	snprintf(k->s->base.error, sizeof(k->s->base.error), "no app '%s'", k->name);
	return -ENOENT;
}

static int pg_app_remove_async(struct ledger *lg, const char *name, ledger_done_fn done, void *arg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	struct params p = {.n = 0};
	p_text(&p, name);
	return call_async(s, "removing an app", "DELETE FROM apps WHERE name = $1", &p,
			  answer_removed, name, done, arg, NULL);
}

/* 1 when the visitor had a window, 0 when not. */
static int answer_reset(struct pg_call *k, const PGresult *res)
{
	(void) k;
	return strcmp(PQcmdTuples((PGresult *) res), "0") != 0;
}

static int pg_visitor_reset_async(struct ledger *lg, const char *key, ledger_done_fn done,
				  void *arg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	struct params p = {.n = 0};
	p_text(&p, key);
	/* What is reserved stays reserved: those leases still run, and settle later. */
	return call_async(s, "resetting a visitor's quota",
			  "UPDATE visitors SET used_ms = 0, window_start = 0 WHERE key = $1", &p,
			  answer_reset, key, done, arg, NULL);
}

static int pg_tier_set_async(struct ledger *lg, const char *key, const char *tier, int64_t now,
			     ledger_done_fn done, void *arg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	struct params p = {.n = 0};
	p_text(&p, key);
	p_text(&p, tier);
	p_int(&p, now);
	return call_async(
		s, "recording a visitor's tier",
		"INSERT INTO visitor_tiers (key, tier, set_at) VALUES ($1, $2, $3::bigint) "
		"ON CONFLICT (key) DO UPDATE SET tier = excluded.tier, set_at = "
		"excluded.set_at",
		&p, answer_done, key, done, arg, NULL);
}

/* The usage rows (kind 'u') and then the overage rows ('o'), in one answer. */
static int answer_usage(struct pg_call *k, const PGresult *res)
{
	for (int i = 0; i < PQntuples(res); i++) {
		if (PQgetvalue(res, i, 0)[0] == 'u') {
			struct ledger_usage u = {PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
						 col_int(res, i, 3),	col_int(res, i, 4),
						 col_int(res, i, 5),	col_int(res, i, 6)};
			k->usage_fn(&u, k->fn_arg);
		} else {
			struct ledger_overage o = {PQgetvalue(res, i, 2), PQgetvalue(res, i, 1),
						   col_int(res, i, 3), col_int(res, i, 6)};
			k->overage_fn(&o, k->fn_arg);
		}
	}
	return 0;
}

static int pg_usage_async(struct ledger *lg, const char *app, int64_t since,
			  void (*usage_fn)(const struct ledger_usage *u, void *arg),
			  void (*overage_fn)(const struct ledger_overage *o, void *arg),
			  void *fn_arg, ledger_done_fn done, void *arg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	struct params p = {.n = 0};
	p_int(&p, since);
	if (app)
		p_text(&p, app);
	else
		p_null(&p); /* every app */
	struct pg_call *k = NULL;
	int r = call_async(
		s, "summing usage",
		"SELECT * FROM (SELECT 'u' AS k, app, node, count(*)::bigint, "
		"coalesce(sum(used_ms), 0)::bigint, coalesce(sum(charged_ms), 0)::bigint, "
		"coalesce(sum(overage_ms), 0)::bigint FROM leases WHERE started_at >= $1::bigint "
		"AND ($2::text IS NULL OR app = $2) GROUP BY app, node UNION ALL "
		"SELECT 'o', app, quota_key, count(*)::bigint, 0, 0, "
		"coalesce(sum(overage_ms), 0)::bigint FROM leases WHERE started_at >= $1::bigint "
		"AND ($2::text IS NULL OR app = $2) AND overage_ms > 0 GROUP BY app, quota_key) "
		"x ORDER BY k DESC, app COLLATE \"C\", node COLLATE \"C\"",
		&p, answer_usage, app, done, arg, &k);
	if (r == 0) {
		k->usage_fn = usage_fn;
		k->overage_fn = overage_fn;
		k->fn_arg = fn_arg;
	}
	return r;
}

/* The synchronous reads, from the copy. */

static int pg_account_list(struct ledger *lg, void (*fn)(const struct ledger_account *a, void *arg),
			   void *arg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	const struct registry *g = s->registry;
	for (int i = 0; i < g->accounts.n; i++) {
		int row = g->accounts.rows[i], apps = 0;
		const char *name = PQgetvalue(g->res, row, 1);
		for (int j = 0; j < g->apps.n; j++)
			apps += strcmp(PQgetvalue(g->res, g->apps.rows[j], 2), name) == 0;
		struct ledger_account a = {name, PQgetvalue(g->res, row, 2), apps,
					   col_int(g->res, row, 3)};
		fn(&a, arg);
	}
	return 0;
}

static int pg_app_list(struct ledger *lg, void (*fn)(const struct ledger_app *a, void *arg),
		       void *arg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	const struct registry *g = s->registry;
	for (int i = 0; i < g->apps.n; i++) {
		int row = g->apps.rows[i];
		struct ledger_app a = {PQgetvalue(g->res, row, 1), PQgetvalue(g->res, row, 2),
				       col_int(g->res, row, 3)};
		fn(&a, arg);
	}
	return 0;
}

/* Looks key up in the copy's index ix (of s->registry): 1 with column col of its row in
 * out, or 0. */
static int registry_lookup(const struct ledger_pg *s, const struct registry_index *ix,
			   const char *key, int col, char *out, size_t size)
{
	const PGresult *res = s->registry->res;
	int row = res ? index_find(ix, res, key) : -1;
	if (row < 0)
		return 0;
	snprintf(out, size, "%s", PQgetvalue(res, row, col));
	return 1;
}

static int pg_app_by_token(struct ledger *lg, const char *token_sha256, char *name, size_t size)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	return registry_lookup(s, &s->registry->tokens, token_sha256, 1, name, size);
}

static int pg_tier_get(struct ledger *lg, const char *key, char *tier, size_t size)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	return registry_lookup(s, &s->registry->tiers, key, 2, tier, size);
}

/* Whether the database takes writes: the connection is not known to be down. */
static int pg_probe(struct ledger *lg)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	if (s->pg && !pg_conn_down(s->pg))
		return 0;
	if (!lg->error[0])
		fail(s, "reaching PostgreSQL", "not connected");
	return -EIO;
}

static void on_up(void *arg)
{
	struct ledger_pg *s = arg;
	registry_reload(s, NULL); /* it may have changed while this daemon was away */
	if (s->hooks.up)
		s->hooks.up(s->hooks.arg);
}

static void on_down(void *arg, const char *why)
{
	struct ledger_pg *s = arg;
	snprintf(s->base.error, sizeof(s->base.error), "PostgreSQL at %s: %s", pg_conn_where(s->pg),
		 why);
	if (s->hooks.down)
		s->hooks.down(s->hooks.arg, s->base.error);
}

static void on_notify(void *arg, const char *channel, const char *payload)
{
	struct ledger_pg *s = arg;
	/* zerogpu_registry, and the table that changed: another daemon's change (this one
	 * reads the registry again after each of its own before answering it). */
	(void) channel, (void) payload;
	registry_reload(s, NULL);
}

static int pg_serve(struct ledger *lg, struct event_base *base, const struct ledger_hooks *hooks)
{
	struct ledger_pg *s = (struct ledger_pg *) lg;
	static const char *const channels[] = {"zerogpu_registry", NULL};
	struct pg_conn_hooks h = {.up = on_up, .down = on_down, .notify = on_notify, .arg = s};
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
	s->closing = true;
	pg_conn_free(s->pg);
	if (s->sync)
		PQfinish(s->sync);
	if (s->registry)
		registry_free(s->registry);
	free(s->registry);
	free(s->conninfo);
	free(s);
}

static const struct ledger_ops pg_ops = {
	.name = "postgresql",
	.lease_attached = pg_attached,
	.lease_ended = pg_ended,
	.unsettled = pg_unsettled,
	.visitor_load = pg_visitor_load,
	.account_list = pg_account_list,
	.app_list = pg_app_list,
	.app_by_token = pg_app_by_token,
	.visitor_tier_get = pg_tier_get,
	.probe = pg_probe,
	.serve = pg_serve,
	.grant_async = pg_grant_async,
	.flush = pg_flush,
	.account_add_async = pg_account_add_async,
	.app_add_async = pg_app_add_async,
	.app_remove_async = pg_app_remove_async,
	.visitor_reset_async = pg_visitor_reset_async,
	.visitor_tier_set_async = pg_tier_set_async,
	.usage_async = pg_usage_async,
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
			     "SELECT coalesce(max(version), 0) FROM zerogpu_migrations", NULL,
			     &res);
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
	s->registry = calloc(1, sizeof(*s->registry));
	s->sync = PQconnectdb(conninfo);
	int r = s->registry ? 0 : fail(s, "opening the ledger", "out of memory");
	if (!s->sync || PQstatus(s->sync) != CONNECTION_OK)
		r = fail(s, "connecting to PostgreSQL",
			 s->sync ? PQerrorMessage(s->sync) : "out of memory");
	if (r == 0)
		r = run_sync(s, "setting up the session", "SET client_min_messages = warning", NULL,
			     NULL);
	if (r == 0)
		r = migrate(s);
	PGresult *res = NULL;
	if (r == 0)
		r = run_sync(s, "reading the registry", SQL_REGISTRY, NULL, &res);
	if (r == 0 && registry_take(s->registry, res) < 0)
		r = fail(s, "reading the registry", "out of memory");
	PQclear(res);
	if (r < 0) {
		snprintf(err, errlen, "the PostgreSQL ledger: %s", s->base.error);
		pg_close(&s->base);
		return r;
	}
	*out = &s->base;
	return 0;
}
