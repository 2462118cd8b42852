/*
 * The PostgreSQL ledger's schema: migrations, applied in order, each once, in
 * its own transaction, under an advisory lock so that daemons starting
 * together take turns (ledger_pg.c). Never edit one that has shipped: add the
 * next. The lease's grant and end are functions: each is one statement, so one
 * round trip and one transaction, with the visitor's row locked while their
 * quota is checked and changed.
 */
#ifndef ZGPU_DAEMON_SYS_LEDGER_PG_SCHEMA_H
#define ZGPU_DAEMON_SYS_LEDGER_PG_SCHEMA_H

/* pg_advisory_lock's key while migrating: "zgpu" in ASCII. */
#define LEDGER_PG_MIGRATION_LOCK "2053599349"

static const char *const ledger_pg_migrations[] = {
	/* 1: leases, visitors' quota windows, the registry, and the grant and end */
	"CREATE TABLE leases ("
	"  id text PRIMARY KEY, node text NOT NULL,"
	"  app text NOT NULL, task text NOT NULL, visitor text NOT NULL, tier text NOT NULL,"
	"  size text NOT NULL, gpus integer NOT NULL, devices text NOT NULL,"
	"  requested_ms bigint NOT NULL, started_at bigint NOT NULL, ended_at bigint,"
	"  used_ms bigint, charged_ms bigint, overage_ms bigint NOT NULL DEFAULT 0,"
	"  reserved_ms bigint NOT NULL DEFAULT 0,"
	"  state text NOT NULL, quota_key text NOT NULL,"
	"  pid integer, pgid integer, pid_start bigint);"
	"CREATE INDEX leases_open ON leases (node) WHERE ended_at IS NULL;"
	"CREATE INDEX leases_started ON leases (started_at);"
	"CREATE TABLE visitors ("
	"  key text PRIMARY KEY, tier text NOT NULL,"
	"  window_start bigint NOT NULL, used_ms bigint NOT NULL,"
	"  reserved_ms bigint NOT NULL DEFAULT 0);"
	"CREATE TABLE accounts ("
	"  name text PRIMARY KEY,"
	"  kind text NOT NULL CHECK (kind IN ('free', 'pro', 'org')),"
	"  created_at bigint NOT NULL);"
	"CREATE TABLE apps ("
	"  name text PRIMARY KEY, account text NOT NULL REFERENCES accounts (name),"
	"  token_sha256 text NOT NULL UNIQUE, created_at bigint NOT NULL);"
	"CREATE INDEX apps_account ON apps (account);"
	"CREATE TABLE visitor_tiers ("
	"  key text PRIMARY KEY,"
	"  tier text NOT NULL CHECK (tier IN ('anonymous', 'free', 'pro', 'enterprise')),"
	"  set_at bigint NOT NULL);"
	/* The grant: the visitor's reservation is taken only if it fits in their quota
	 * (or their tier allows overage), with their row locked, and the lease's row is
	 * written in the same transaction; o_granted false and no row when it does not
	 * fit. The window opens at the first grant and closes window_ms later. */
	"CREATE FUNCTION zerogpu_grant(p_id text, p_node text, p_app text, p_task text,"
	"  p_visitor text, p_tier text, p_size text, p_gpus integer, p_devices text,"
	"  p_requested_ms bigint, p_started_at bigint, p_quota_key text, p_cost_ms bigint,"
	"  p_limit_ms bigint, p_window_ms bigint, p_overage boolean,"
	"  OUT o_granted boolean, OUT o_window_start bigint, OUT o_used_ms bigint,"
	"  OUT o_reserved_ms bigint)"
	" LANGUAGE plpgsql AS $$"
	" DECLARE v visitors%ROWTYPE;"
	" BEGIN"
	"  o_granted := true;"
	"  IF p_quota_key <> '' THEN"
	"    INSERT INTO visitors (key, tier, window_start, used_ms, reserved_ms)"
	"      VALUES (p_quota_key, p_tier, 0, 0, 0) ON CONFLICT (key) DO NOTHING;"
	"    SELECT * INTO v FROM visitors WHERE key = p_quota_key FOR UPDATE;"
	"    IF v.window_start <> 0 AND p_started_at >= v.window_start + p_window_ms THEN"
	"      v.window_start := 0; v.used_ms := 0;"
	"    END IF;"
	"    IF v.used_ms + v.reserved_ms + p_cost_ms > p_limit_ms AND NOT p_overage THEN"
	"      o_granted := false;"
	"    ELSE"
	"      IF v.window_start = 0 THEN v.window_start := p_started_at; END IF;"
	"      v.reserved_ms := v.reserved_ms + p_cost_ms;"
	"    END IF;"
	"    UPDATE visitors SET tier = p_tier, window_start = v.window_start,"
	"      used_ms = v.used_ms, reserved_ms = v.reserved_ms WHERE key = p_quota_key;"
	"    o_window_start := v.window_start; o_used_ms := v.used_ms;"
	"    o_reserved_ms := v.reserved_ms;"
	"  END IF;"
	"  IF o_granted THEN"
	"    INSERT INTO leases (id, node, app, task, visitor, tier, size, gpus, devices,"
	"      requested_ms, started_at, state, quota_key, reserved_ms)"
	"    VALUES (p_id, p_node, p_app, p_task, p_visitor, p_tier, p_size, p_gpus, p_devices,"
	"      p_requested_ms, p_started_at, 'granted', p_quota_key,"
	"      CASE WHEN p_quota_key <> '' THEN p_cost_ms ELSE 0 END);"
	"  END IF;"
	" END $$;"
	/* The end: settles the lease once (a second call for the same lease changes
	 * nothing: o_settled false), moves the visitor's reservation to what was charged,
	 * and, when their tier allows overage, records the seconds past their quota. */
	"CREATE FUNCTION zerogpu_end(p_id text, p_node text, p_state text, p_ended_at bigint,"
	"  p_used_ms bigint, p_charged_ms bigint, p_limit_ms bigint, p_overage boolean,"
	"  OUT o_settled boolean, OUT o_quota_key text, OUT o_window_start bigint,"
	"  OUT o_used_ms bigint, OUT o_overage_ms bigint)"
	" LANGUAGE plpgsql AS $$"
	" DECLARE l leases%ROWTYPE; v visitors%ROWTYPE;"
	" BEGIN"
	"  o_overage_ms := 0;"
	"  UPDATE leases SET state = p_state, ended_at = p_ended_at, used_ms = p_used_ms,"
	"    charged_ms = p_charged_ms WHERE id = p_id AND node = p_node AND ended_at IS NULL"
	"    RETURNING * INTO l;"
	"  o_settled := FOUND;"
	"  IF NOT o_settled OR l.quota_key = '' THEN RETURN; END IF;"
	"  o_quota_key := l.quota_key;"
	"  SELECT * INTO v FROM visitors WHERE key = l.quota_key FOR UPDATE;"
	"  IF NOT FOUND THEN RETURN; END IF;"
	"  IF p_overage THEN"
	"    o_overage_ms := GREATEST(0,"
	"      LEAST(p_charged_ms, v.used_ms + p_charged_ms - p_limit_ms));"
	"  END IF;"
	"  UPDATE visitors SET used_ms = v.used_ms + p_charged_ms,"
	"    reserved_ms = GREATEST(0, v.reserved_ms - l.reserved_ms) WHERE key = l.quota_key;"
	"  IF o_overage_ms > 0 THEN"
	"    UPDATE leases SET overage_ms = o_overage_ms WHERE id = p_id;"
	"  END IF;"
	"  o_window_start := v.window_start; o_used_ms := v.used_ms + p_charged_ms;"
	" END $$;"
	/* An app, within its account's hosting limit whichever daemon adds it: the
	 * account's row is locked while its apps are counted. Returns 'ok',
	 * 'no_account', 'limit <kind> <count>' or 'exists'. */
	"CREATE FUNCTION zerogpu_app_add(p_name text, p_account text, p_token text,"
	"  p_free integer, p_pro integer, p_org integer, p_now bigint) RETURNS text"
	" LANGUAGE plpgsql AS $$"
	" DECLARE k text; n integer; lim integer;"
	" BEGIN"
	"  SELECT kind INTO k FROM accounts WHERE name = p_account FOR UPDATE;"
	"  IF NOT FOUND THEN RETURN 'no_account'; END IF;"
	"  SELECT count(*) INTO n FROM apps WHERE account = p_account;"
	"  lim := CASE k WHEN 'free' THEN p_free WHEN 'pro' THEN p_pro ELSE p_org END;"
	"  IF n >= lim THEN RETURN 'limit ' || k || ' ' || n; END IF;"
	"  INSERT INTO apps (name, account, token_sha256, created_at)"
	"    VALUES (p_name, p_account, p_token, p_now);"
	"  RETURN 'ok';"
	" EXCEPTION WHEN unique_violation THEN RETURN 'exists';"
	" END $$;"
	/* Every daemon keeps the registry in memory (app tokens are checked on every
	 * request): a change anywhere tells them all to read it again. */
	"CREATE FUNCTION zerogpu_registry_changed() RETURNS trigger"
	" LANGUAGE plpgsql AS $$"
	" BEGIN PERFORM pg_notify('zerogpu_registry', TG_TABLE_NAME); RETURN NULL; END $$;"
	"CREATE TRIGGER accounts_changed AFTER INSERT OR UPDATE OR DELETE ON accounts"
	"  FOR EACH STATEMENT EXECUTE FUNCTION zerogpu_registry_changed();"
	"CREATE TRIGGER apps_changed AFTER INSERT OR UPDATE OR DELETE ON apps"
	"  FOR EACH STATEMENT EXECUTE FUNCTION zerogpu_registry_changed();"
	"CREATE TRIGGER visitor_tiers_changed AFTER INSERT OR UPDATE OR DELETE ON visitor_tiers"
	"  FOR EACH STATEMENT EXECUTE FUNCTION zerogpu_registry_changed();",
};

#endif
