/* The SQLite ledger: one file in the state directory, WAL mode, short transactions. */
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "daemon/sys/ledger.h"

struct ledger_sqlite {
	struct ledger base;
	sqlite3 *db;
	sqlite3_stmt *insert, *attach, *end, *unsettled, *visitor_get, *visitor_put;
	sqlite3_stmt *app_by_token; /* on every request with an app token: prepared once */
	sqlite3_stmt *tier_get;	    /* on every visitor token the gateway mints */
	char dir[PATH_MAX];	    /* the directory it is in: its disk's free space */
};

/*
 * Migrations, applied in order inside one transaction each; PRAGMA user_version
 * says how many have run. Never edit one that has shipped: add the next.
 */
static const char *const migrations[] = {
	/* 1: leases */
	"CREATE TABLE leases ("
	"  id TEXT PRIMARY KEY,"
	"  app TEXT NOT NULL, task TEXT NOT NULL, visitor TEXT NOT NULL, tier TEXT NOT NULL,"
	"  size TEXT NOT NULL, gpus INTEGER NOT NULL, devices TEXT NOT NULL,"
	"  requested_ms INTEGER NOT NULL,"
	"  started_at INTEGER NOT NULL, ended_at INTEGER,"
	"  used_ms INTEGER, charged_ms INTEGER,"
	"  state TEXT NOT NULL, quota_key TEXT NOT NULL,"
	"  pid INTEGER, pgid INTEGER, pid_start INTEGER"
	") WITHOUT ROWID;"
	"CREATE TABLE visitors ("
	"  key TEXT PRIMARY KEY, tier TEXT NOT NULL,"
	"  window_start INTEGER NOT NULL, used_ms INTEGER NOT NULL"
	") WITHOUT ROWID;"
	/* Every commit is on the grant and release path: each index is pages written
	 * per lease. Only the open leases are indexed; usage queries bring theirs. */
	"CREATE INDEX leases_open ON leases(started_at) WHERE ended_at IS NULL;",
	/* 2: the registry of accounts and their apps */
	"CREATE TABLE accounts ("
	"  name TEXT PRIMARY KEY,"
	"  kind TEXT NOT NULL CHECK (kind IN ('free', 'pro', 'org')),"
	"  created_at INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE TABLE apps ("
	"  name TEXT PRIMARY KEY,"
	"  account TEXT NOT NULL REFERENCES accounts(name),"
	"  token_sha256 TEXT NOT NULL UNIQUE,"
	"  created_at INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE INDEX apps_account ON apps(account);",
	/* 3: the tiers the operator gave signed-in visitors (the visitor gateway) */
	"CREATE TABLE visitor_tiers ("
	"  key TEXT PRIMARY KEY,"
	"  tier TEXT NOT NULL CHECK (tier IN ('anonymous', 'free', 'pro', 'enterprise')),"
	"  set_at INTEGER NOT NULL"
	") WITHOUT ROWID;",
	/* 4: the node that granted each lease (as in a shared ledger), and the seconds a
	 * lease ran past its visitor's quota where their tier allows overage */
	("ALTER TABLE leases ADD COLUMN node TEXT NOT NULL DEFAULT '';"
	 "ALTER TABLE leases ADD COLUMN overage_ms INTEGER NOT NULL DEFAULT 0;"),
};

/* Below this much free space the ledger counts as full: a write that fits in the WAL's
 * room would pass a probe while the next grant's pages do not. */
#define DISK_FREE_MIN (1024 * 1024)

/* What the ledger's file system says: -EROFS read-only, -ENOSPC (nearly) full, with a
 * note for a person; 0 when neither (or it cannot tell). */
static int disk_state(const struct ledger_sqlite *s, char *note, size_t size)
{
	struct statvfs fs;
	if (statvfs(s->dir, &fs) < 0)
		return 0;
	if (fs.f_flag & ST_RDONLY) {
		snprintf(note, size, "%.200s is on a read-only file system", s->dir);
		return -EROFS;
	}
	uint64_t free_bytes = (uint64_t) fs.f_bavail * fs.f_frsize;
	if (free_bytes < DISK_FREE_MIN) {
		snprintf(note, size, "database or disk is full (%llu KiB free in %.160s)",
			 (unsigned long long) (free_bytes / 1024), s->dir);
		return -ENOSPC;
	}
	return 0;
}

static int fail_db(struct ledger_sqlite *s, int rc, const char *what)
{
	/* rc may be a generic SQLITE_ERROR (from sqlite3_exec): the connection knows more. */
	int code = (s->db ? sqlite3_errcode(s->db) : rc) & 0xff;
	bool disk = code == SQLITE_FULL || code == SQLITE_IOERR || code == SQLITE_READONLY ||
		    code == SQLITE_CANTOPEN;
	/* SQLite says "disk I/O error"; the system's errno says which (read-only...). */
	int sys = disk && s->db ? sqlite3_system_errno(s->db) : 0;
	snprintf(s->base.error, sizeof(s->base.error), "%s: %s%s%s%s", what,
		 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc), sys ? " (" : "",
		 sys ? strerror(sys) : "", sys ? ")" : "");
	/* SQLite cannot always tell why a write failed (errno is gone by then): the file
	 * system can, when it went read-only or ran out of space. */
	char note[256];
	int fs = disk && !sys ? disk_state(s, note, sizeof(note)) : 0;
	if (fs < 0) {
		size_t n = strlen(s->base.error);
		snprintf(s->base.error + n, sizeof(s->base.error) - n, " (%s)", note);
		return fs;
	}
	if (code == SQLITE_READONLY || sys == EROFS)
		return -EROFS;
	if (code == SQLITE_FULL || sys == ENOSPC || sys == EDQUOT)
		return -ENOSPC;
	/* -EIO: the disk failed (the daemon's fault state); -EPROTO: the ledger refused. */
	return disk ? -EIO : -EPROTO;
}

/* Runs a prepared statement that returns no rows, then resets it. */
static int step_done(struct ledger_sqlite *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? 0 : fail_db(s, rc, what);
}

static int sq_granted(struct ledger *lg, const struct ledger_lease *r)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st = s->insert;
	sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->app, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, r->task, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, r->visitor, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, r->tier, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, r->size, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 7, r->gpus);
	sqlite3_bind_text(st, 8, r->devices, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, r->requested_ms);
	sqlite3_bind_int64(st, 10, r->started_at);
	sqlite3_bind_text(st, 11, r->state, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 12, r->quota_key ? r->quota_key : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 13, s->base.node, -1, SQLITE_STATIC);
	return step_done(s, st, "recording a grant");
}

static int sq_attached(struct ledger *lg, const char *id, pid_t pid, pid_t pgid, uint64_t pid_start)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st = s->attach;
	sqlite3_bind_int(st, 1, pid);
	sqlite3_bind_int(st, 2, pgid);
	sqlite3_bind_int64(st, 3, (sqlite3_int64) pid_start);
	sqlite3_bind_text(st, 4, id, -1, SQLITE_STATIC);
	return step_done(s, st, "recording an attach");
}

static const char *col_text(sqlite3_stmt *st, int i)
{
	const char *t = (const char *) sqlite3_column_text(st, i);
	return t ? t : "";
}

static int put_visitor(struct ledger_sqlite *s, const struct ledger_visitor *v)
{
	sqlite3_stmt *st = s->visitor_put;
	sqlite3_bind_text(st, 1, v->key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, v->tier, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, v->window_start);
	sqlite3_bind_int64(st, 4, v->used_ms);
	return step_done(s, st, "recording a visitor's quota");
}

static int sq_ended(struct ledger *lg, const char *id, const char *state, int64_t ended_at,
		    int64_t used_ms, int64_t charged_ms, const struct ledger_visitor *v)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	/* The lease's end and the visitor's total change together or not at all. */
	if (v && sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return fail_db(s, SQLITE_ERROR, "starting a settlement");
	sqlite3_stmt *st = s->end;
	/* v's total includes this charge: what of it lies past the quota is overage. */
	int64_t past = v && v->overage ? v->used_ms - v->limit_ms : 0;
	int64_t overage = past <= 0 ? 0 : past < charged_ms ? past : charged_ms;
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, ended_at);
	sqlite3_bind_int64(st, 3, used_ms);
	sqlite3_bind_int64(st, 4, charged_ms);
	sqlite3_bind_text(st, 5, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, overage);
	int r = step_done(s, st, "recording a lease's end");
	if (v) {
		if (r == 0)
			r = put_visitor(s, v);
		if (r == 0 && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
			r = fail_db(s, SQLITE_ERROR, "committing a settlement");
		if (r < 0)
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	}
	return r;
}

static int sq_visitor_load(struct ledger *lg, const char *key, struct ledger_visitor *v)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st = s->visitor_get;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st), found = 0;
	if (rc == SQLITE_ROW) {
		snprintf(v->tier_buf, sizeof(v->tier_buf), "%s", col_text(st, 0));
		v->tier = v->tier_buf;
		v->window_start = sqlite3_column_int64(st, 1);
		v->used_ms = sqlite3_column_int64(st, 2);
		found = 1;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return fail_db(s, rc, "reading a visitor's quota");
	return found;
}

static int sq_unsettled(struct ledger *lg, void (*fn)(const struct ledger_lease *row, void *arg),
			void *arg)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st = s->unsettled;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct ledger_lease r = {
			.id = col_text(st, 0),
			.app = col_text(st, 1),
			.visitor = col_text(st, 2),
			.devices = col_text(st, 3),
			.requested_ms = sqlite3_column_int64(st, 4),
			.started_at = sqlite3_column_int64(st, 5),
			.state = col_text(st, 6),
			.pid = sqlite3_column_int(st, 7),
			.pgid = sqlite3_column_int(st, 8),
			.pid_start = (uint64_t) sqlite3_column_int64(st, 9),
			.size = col_text(st, 10),
			.quota_key = col_text(st, 11),
		};
		fn(&r, arg);
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : fail_db(s, rc, "reading unsettled leases");
}

static void sq_close(struct ledger *lg)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_finalize(s->insert);
	sqlite3_finalize(s->attach);
	sqlite3_finalize(s->end);
	sqlite3_finalize(s->unsettled);
	sqlite3_finalize(s->visitor_get);
	sqlite3_finalize(s->visitor_put);
	sqlite3_finalize(s->app_by_token);
	sqlite3_finalize(s->tier_get);
	sqlite3_close(s->db);
	free(s);
}

int ledger_kind_index(const char *kind)
{
	static const char *const kinds[] = {"free", "pro", "org"};
	for (int i = 0; i < 3; i++)
		if (strcmp(kind, kinds[i]) == 0)
			return i;
	return -1;
}

/* The registry is off the hot path: statements are prepared per call. */
static int prepare(struct ledger_sqlite *s, const char *sql, sqlite3_stmt **st)
{
	return sqlite3_prepare_v2(s->db, sql, -1, st, NULL) == SQLITE_OK
		       ? 0
		       : fail_db(s, SQLITE_ERROR, "preparing a registry query");
}

/* Runs a one-row statement; returns 1 for a row, 0 for none, or -errno. */
static int step_once(struct ledger_sqlite *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	if (rc == SQLITE_CONSTRAINT) {
		snprintf(s->base.error, sizeof(s->base.error), "%s: the name is taken", what);
		return -EEXIST;
	}
	return fail_db(s, rc, what);
}

static int sq_account_add(struct ledger *lg, const char *name, const char *kind, int64_t now)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st;
	int r = prepare(s, "INSERT INTO accounts (name, kind, created_at) VALUES (?, ?, ?)", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now);
	r = step_once(s, st, "adding an account");
	sqlite3_finalize(st);
	if (r == -EEXIST)
		snprintf(lg->error, sizeof(lg->error), "account '%s' already exists", name);
	return r < 0 ? r : 0;
}

static int sq_account_list(struct ledger *lg, void (*fn)(const struct ledger_account *a, void *arg),
			   void *arg)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st;
	int r = prepare(s,
			"SELECT a.name, a.kind, a.created_at, (SELECT count(*) FROM apps p WHERE "
			"p.account = a.name) FROM accounts a ORDER BY a.name",
			&st);
	while (r == 0 && (r = step_once(s, st, "listing accounts")) == 1) {
		struct ledger_account a = {col_text(st, 0), col_text(st, 1),
					   sqlite3_column_int(st, 3), sqlite3_column_int64(st, 2)};
		fn(&a, arg);
		r = 0;
	}
	sqlite3_finalize(st);
	return r < 0 ? r : 0;
}

static int sq_app_add(struct ledger *lg, const char *name, const char *account,
		      const char *token_sha256, int limit_for_kind[3], int64_t now)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st = NULL;
	/* Counting and inserting in one transaction: two adds cannot both take the last place. */
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return fail_db(s, SQLITE_ERROR, "starting to add an app");
	int r = prepare(s,
			"SELECT kind, (SELECT count(*) FROM apps WHERE account = ?1) FROM accounts "
			"WHERE name = ?1",
			&st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
		r = step_once(s, st, "reading the account");
	}
	if (r == 0) {
		snprintf(lg->error, sizeof(lg->error),
			 "no account '%s': add it first with 'zerogpu account add %s --kind "
			 "free|pro|org'",
			 account, account);
		r = -ENOENT;
	} else if (r == 1) {
		char kind[16];
		snprintf(kind, sizeof(kind), "%s", col_text(st, 0));
		int count = sqlite3_column_int(st, 1), k = ledger_kind_index(kind);
		int limit = k >= 0 ? limit_for_kind[k] : 0;
		r = 0;
		if (count >= limit) {
			snprintf(lg->error, sizeof(lg->error),
				 "account '%s' already hosts %d app%s, the most a %s account may "
				 "host; remove one, or use a pro (%d) or org (%d) account",
				 account, count, count == 1 ? "" : "s", kind, limit_for_kind[1],
				 limit_for_kind[2]);
			r = -EDQUOT;
		}
	}
	sqlite3_finalize(st);
	st = NULL;
	if (r == 0)
		r = prepare(s,
			    "INSERT INTO apps (name, account, token_sha256, created_at) VALUES (?, "
			    "?, ?, ?)",
			    &st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, account, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, token_sha256, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, now);
		r = step_once(s, st, "adding an app");
		if (r == -EEXIST)
			snprintf(lg->error, sizeof(lg->error), "app '%s' already exists", name);
	}
	sqlite3_finalize(st);
	if (r >= 0 && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		r = fail_db(s, SQLITE_ERROR, "committing the new app");
	if (r < 0)
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return r < 0 ? r : 0;
}

static int sq_app_remove(struct ledger *lg, const char *name)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st;
	int r = prepare(s, "DELETE FROM apps WHERE name = ?", &st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		r = step_once(s, st, "removing an app");
	}
	sqlite3_finalize(st);
	if (r == 0 && sqlite3_changes(s->db) == 0) {
		snprintf(lg->error, sizeof(lg->error), "no app '%s'", name);
		return -ENOENT;
	}
	return r < 0 ? r : 0;
}

static int sq_app_list(struct ledger *lg, void (*fn)(const struct ledger_app *a, void *arg),
		       void *arg)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st;
	int r = prepare(s, "SELECT name, account, created_at FROM apps ORDER BY name", &st);
	while (r == 0 && (r = step_once(s, st, "listing apps")) == 1) {
		struct ledger_app a = {col_text(st, 0), col_text(st, 1),
				       sqlite3_column_int64(st, 2)};
		fn(&a, arg);
		r = 0;
	}
	sqlite3_finalize(st);
	return r < 0 ? r : 0;
}

/* Runs prepared one-column lookup st for key: 1 with the value in out, 0, or -errno. */
static int lookup_text(struct ledger_sqlite *s, sqlite3_stmt *st, const char *key, char *out,
		       size_t size, const char *what)
{
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int r = step_once(s, st, what);
	if (r == 1)
		snprintf(out, size, "%s", col_text(st, 0));
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

static int sq_app_by_token(struct ledger *lg, const char *token_sha256, char *name, size_t size)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	return lookup_text(s, s->app_by_token, token_sha256, name, size, "looking up an app token");
}

static int sq_usage(struct ledger *lg, const char *app, int64_t since,
		    void (*fn)(const struct ledger_usage *u, void *arg), void *arg)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st;
	int r = prepare(s,
			"SELECT app, node, count(*), total(used_ms), total(charged_ms), "
			"total(overage_ms) FROM leases WHERE started_at >= ?1 AND (?2 IS NULL OR "
			"app = ?2) GROUP BY app, node ORDER BY app, node",
			&st);
	if (r == 0) {
		sqlite3_bind_int64(st, 1, since);
		if (app)
			sqlite3_bind_text(st, 2, app, -1, SQLITE_STATIC);
	}
	while (r == 0 && (r = step_once(s, st, "summing usage")) == 1) {
		struct ledger_usage u = {col_text(st, 0),
					 col_text(st, 1),
					 sqlite3_column_int64(st, 2),
					 (int64_t) sqlite3_column_double(st, 3),
					 (int64_t) sqlite3_column_double(st, 4),
					 (int64_t) sqlite3_column_double(st, 5)};
		fn(&u, arg);
		r = 0;
	}
	sqlite3_finalize(st);
	return r < 0 ? r : 0;
}

static int sq_overage(struct ledger *lg, const char *app, int64_t since,
		      void (*fn)(const struct ledger_overage *o, void *arg), void *arg)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st;
	int r = prepare(s,
			"SELECT quota_key, app, count(*), total(overage_ms) FROM leases WHERE "
			"started_at >= ?1 AND (?2 IS NULL OR app = ?2) AND overage_ms > 0 GROUP BY "
			"quota_key, app ORDER BY quota_key, app",
			&st);
	if (r == 0) {
		sqlite3_bind_int64(st, 1, since);
		if (app)
			sqlite3_bind_text(st, 2, app, -1, SQLITE_STATIC);
	}
	while (r == 0 && (r = step_once(s, st, "summing overage")) == 1) {
		struct ledger_overage o = {col_text(st, 0), col_text(st, 1),
					   sqlite3_column_int64(st, 2),
					   (int64_t) sqlite3_column_double(st, 3)};
		fn(&o, arg);
		r = 0;
	}
	sqlite3_finalize(st);
	return r < 0 ? r : 0;
}

static int sq_visitor_reset(struct ledger *lg, const char *key)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st;
	int r = prepare(s, "DELETE FROM visitors WHERE key = ?", &st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		r = step_once(s, st, "resetting a visitor's quota");
	}
	sqlite3_finalize(st);
	return r < 0 ? r : sqlite3_changes(s->db) > 0;
}

static int sq_tier_set(struct ledger *lg, const char *key, const char *tier, int64_t now)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	sqlite3_stmt *st;
	int r = prepare(
		s,
		"INSERT INTO visitor_tiers (key, tier, set_at) VALUES (?, ?, ?) "
		"ON CONFLICT (key) DO UPDATE SET tier = excluded.tier, set_at = excluded.set_at",
		&st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, tier, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, now);
		r = step_once(s, st, "recording a visitor's tier");
	}
	sqlite3_finalize(st);
	return r < 0 ? r : 0;
}

static int sq_tier_get(struct ledger *lg, const char *key, char *tier, size_t size)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	return lookup_text(s, s->tier_get, key, tier, size, "looking up a visitor's tier");
}

static int sq_probe(struct ledger *lg)
{
	struct ledger_sqlite *s = (struct ledger_sqlite *) lg;
	int r = disk_state(s, lg->error, sizeof(lg->error));
	if (r < 0)
		return r;
	/* Pages are written to the WAL at the commit even though the rows come and go. */
	int rc = sqlite3_exec(
		s->db,
		"BEGIN IMMEDIATE;"
		"INSERT OR REPLACE INTO visitors VALUES ('zerogpud:probe', 'free', 0, 0);"
		"DELETE FROM visitors WHERE key = 'zerogpud:probe';"
		"COMMIT;",
		NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		return 0;
	r = fail_db(s, rc, "writing to the ledger");
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return r;
}

static const struct ledger_ops sqlite_ops = {
	.name = "sqlite",
	.lease_granted = sq_granted,
	.lease_attached = sq_attached,
	.lease_ended = sq_ended,
	.unsettled = sq_unsettled,
	.visitor_load = sq_visitor_load,
	.account_add = sq_account_add,
	.account_list = sq_account_list,
	.app_add = sq_app_add,
	.app_remove = sq_app_remove,
	.app_list = sq_app_list,
	.app_by_token = sq_app_by_token,
	.visitor_reset = sq_visitor_reset,
	.visitor_tier_set = sq_tier_set,
	.visitor_tier_get = sq_tier_get,
	.usage = sq_usage,
	.overage = sq_overage,
	.probe = sq_probe,
	.close = sq_close,
};

static int migrate(struct ledger_sqlite *s)
{
	sqlite3_stmt *st;
	int version = 0;
	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return fail_db(s, SQLITE_ERROR, "reading the schema version");
	if (sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);

	int known = (int) (sizeof(migrations) / sizeof(migrations[0]));
	if (version > known) {
		snprintf(s->base.error, sizeof(s->base.error),
			 "the ledger has schema version %d, newer than this zerogpud knows (%d): "
			 "upgrade zerogpud",
			 version, known);
		return -EPROTO;
	}
	for (; version < known; version++) {
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
		char *msg = NULL;
		if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(s->db, migrations[version], NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(s->db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
			snprintf(s->base.error, sizeof(s->base.error),
				 "migrating the ledger to version %d: %s", version + 1,
				 msg ? msg : "unknown error");
			sqlite3_free(msg);
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			return -EIO;
		}
	}
	return 0;
}

int ledger_open_sqlite(struct ledger **out, const char *path, char *err, size_t errlen)
{
	struct ledger_sqlite *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory opening the ledger");
		return -ENOMEM;
	}
	s->base.ops = &sqlite_ops;
	snprintf(s->dir, sizeof(s->dir), "%s", path);
	char *slash = strrchr(s->dir, '/');
	if (slash)
		*(slash == s->dir ? slash + 1 : slash) = '\0';
	else
		snprintf(s->dir, sizeof(s->dir), ".");
	int r = 0;
	int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	/* WAL: readers never block the writer; NORMAL sync: a commit survives the
	 * daemon's own crash (kill -9); FULL would also survive power loss. */
	if (rc != SQLITE_OK)
		r = fail_db(s, rc, "opening the ledger");
	/* The busy timeout first: a reader of the ledger (an operator's sqlite3, a backup)
	 * may hold a lock just as the WAL is set up or recovered after a crash. */
	else if (sqlite3_busy_timeout(s->db, 5000) != SQLITE_OK ||
		 sqlite3_exec(s->db,
			      "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
			      "PRAGMA foreign_keys = ON;",
			      NULL, NULL, NULL) != SQLITE_OK)
		r = fail_db(s, SQLITE_ERROR, "setting up the ledger");
	if (r == 0)
		r = migrate(s);
	if (r == 0 &&
	    (sqlite3_prepare_v2(s->db,
				"INSERT INTO leases (id, app, task, visitor, tier, size, gpus, "
				"devices, requested_ms, started_at, state, quota_key, node) VALUES "
				"(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
				-1, &s->insert, NULL) != SQLITE_OK ||
	     sqlite3_prepare_v2(s->db,
				"UPDATE leases SET pid = ?, pgid = ?, pid_start = ?, state = "
				"'attached' WHERE id = ?",
				-1, &s->attach, NULL) != SQLITE_OK ||
	     sqlite3_prepare_v2(s->db,
				"UPDATE leases SET state = ?1, ended_at = ?2, used_ms = ?3, "
				"charged_ms = ?4, overage_ms = ?6 WHERE id = ?5",
				-1, &s->end, NULL) != SQLITE_OK ||
	     sqlite3_prepare_v2(s->db,
				"SELECT id, app, visitor, devices, requested_ms, started_at, "
				"state, pid, pgid, pid_start, size, quota_key FROM leases WHERE "
				"ended_at IS NULL",
				-1, &s->unsettled, NULL) != SQLITE_OK ||
	     sqlite3_prepare_v2(s->db,
				"SELECT tier, window_start, used_ms FROM visitors WHERE key = ?",
				-1, &s->visitor_get, NULL) != SQLITE_OK ||
	     sqlite3_prepare_v2(
		     s->db,
		     "INSERT OR REPLACE INTO visitors (key, tier, window_start, used_ms) "
		     "VALUES (?, ?, ?, ?)",
		     -1, &s->visitor_put, NULL) != SQLITE_OK ||
	     sqlite3_prepare_v2(s->db, "SELECT name FROM apps WHERE token_sha256 = ?", -1,
				&s->app_by_token, NULL) != SQLITE_OK ||
	     sqlite3_prepare_v2(s->db, "SELECT tier FROM visitor_tiers WHERE key = ?", -1,
				&s->tier_get, NULL) != SQLITE_OK))
		r = fail_db(s, SQLITE_ERROR, "preparing the ledger's statements");
	if (r < 0) {
		snprintf(err, errlen, "ledger %s: %s", path, s->base.error);
		sq_close(&s->base);
		return r;
	}
	*out = &s->base;
	return 0;
}
