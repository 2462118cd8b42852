#include "daemon/settings.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/sys/inventory.h"
#include "zerogpu.h"

typedef int (*apply_fn)(struct settings *s, const char *value, char *err, size_t errlen);

struct setting {
	const char *section, *key; /* in the config file */
	const char *option;	   /* on the command line, without "--" */
	apply_fn apply;
};

/* ------------------------------------------------------------------------
 * One checker per kind of value. Each error is the end of a sentence that
 * starts with the setting's name.
 * ------------------------------------------------------------------------ */

static int bad(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int seconds(const char *v, int64_t *ms, bool zero_ok, char *err, size_t errlen)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (end == v || *end || errno || !isfinite(x) || x < 0 || (!zero_ok && x == 0) || x > 1e7)
		return bad(err, errlen, "takes seconds %s, not '%s'", zero_ok ? ">= 0" : "> 0", v);
	*ms = (int64_t) llround(x * 1000.0);
	return 0;
}

static int copy(char *dst, size_t size, const char *v, char *err, size_t errlen)
{
	if (strlen(v) >= size)
		return bad(err, errlen, "is too long (%zu characters, at most %zu)", strlen(v),
			   size - 1);
	strcpy(dst, v);
	return 0;
}

#define STRING_SETTER(name, field)                                                                 \
	static int name(struct settings *s, const char *v, char *err, size_t errlen)               \
	{                                                                                          \
		return copy(s->field, sizeof(s->field), v, err, errlen);                           \
	}
STRING_SETTER(set_state_dir, state_dir)
STRING_SETTER(set_listen, listen)
STRING_SETTER(set_simulate, simulate)
STRING_SETTER(set_nvml, nvml_library)

static int set_socket(struct settings *s, const char *v, char *err, size_t errlen)
{
	if (strlen(v) >= sizeof(s->socket_path))
		return bad(err, errlen, "path '%s' is too long for a Unix socket", v);
	return copy(s->socket_path, sizeof(s->socket_path), v, err, errlen);
}

/* A secret (token, key) of 32 to 255 characters, into a 256-byte buffer: HS256 wants a key
 * of at least its hash's 32 bytes, and a bearer token no less. */
#define SECRET_MIN 32
static int secret(char out[256], const char *v, char *err, size_t errlen)
{
	if (strlen(v) < SECRET_MIN || strlen(v) > 255)
		return bad(err, errlen, "must be %d to 255 characters (got %zu)", SECRET_MIN,
			   strlen(v));
	strcpy(out, v);
	return 0;
}

/* The same, from the first line of a file: keeps secrets out of `ps` and of the config. */
static int secret_from_file(char out[256], const char *path, char *err, size_t errlen)
{
	char line[258];
	FILE *f = fopen(path, "r");
	bool ok = f && fgets(line, sizeof(line), f);
	if (f)
		fclose(f);
	if (!ok)
		return bad(err, errlen, "cannot read a secret from '%s'", path);
	line[strcspn(line, "\r\n")] = '\0';
	if (secret(out, line, err, errlen) < 0)
		return bad(err, errlen, "needs the first line of '%s' to be %d to 255 characters",
			   path, SECRET_MIN);
	return 0;
}

static int set_token(struct settings *s, const char *v, char *err, size_t errlen)
{
	return secret(s->token, v, err, errlen);
}

static int set_token_file(struct settings *s, const char *v, char *err, size_t errlen)
{
	return secret_from_file(s->token, v, err, errlen);
}

static int set_log_level(struct settings *s, const char *v, char *err, size_t errlen)
{
	if ((s->log_level = log_level_parse(v)) < 0)
		return bad(err, errlen, "takes debug, info, warn or error, not '%s'", v);
	return 0;
}

static int set_split(struct settings *s, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "1") && strcmp(v, "2"))
		return bad(err, errlen, "takes 1 or 2, not '%s'", v);
	s->cfg.split = atoi(v);
	return 0;
}

#define SECONDS_SETTER(name, field, zero_ok)                                                       \
	static int name(struct settings *s, const char *v, char *err, size_t errlen)               \
	{                                                                                          \
		return seconds(v, &s->field, zero_ok, err, errlen);                                \
	}
SECONDS_SETTER(set_max_duration, cfg.max_duration_ms, false)
SECONDS_SETTER(set_drain, drain_ms, true)

static int set_default_duration(struct settings *s, const char *v, char *err, size_t errlen)
{
	s->default_duration_set = true;
	return seconds(v, &s->cfg.default_duration_ms, false, err, errlen);
}
SECONDS_SETTER(set_default_max_wait, cfg.default_max_wait_ms, true)
SECONDS_SETTER(set_grace, cfg.grace_ms, true)
SECONDS_SETTER(set_aging, aging_bound_ms, false)
SECONDS_SETTER(set_backfill, backfill_ms, true)

static int set_residency(struct settings *s, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "lru") && strcmp(v, "off"))
		return bad(err, errlen, "takes lru or off, not '%s'", v);
	s->cfg.residency = strcmp(v, "lru") ? ENGINE_RESIDENCY_OFF : ENGINE_RESIDENCY_LRU;
	return 0;
}

static int set_policy(struct settings *s, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "priority") && strcmp(v, "fifo"))
		return bad(err, errlen, "takes priority or fifo, not '%s'", v);
	strcpy(s->policy, v);
	return 0;
}

/* A count from lo to hi into *out. */
static int count(const char *v, long lo, long hi, int *out, const char *what, char *err,
		 size_t errlen)
{
	char *end;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (*end || end == v || errno || n < lo || n > hi)
		return bad(err, errlen, "takes a number of %s from %ld to %ld, not '%s'", what, lo,
			   hi, v);
	*out = (int) n;
	return 0;
}

static int set_max_connections(struct settings *s, const char *v, char *err, size_t errlen)
{
	return count(v, 0, 1000000, &s->max_connections,
		     "connections (0: from the descriptor limit)", err, errlen);
}

static int set_max_per_client(struct settings *s, const char *v, char *err, size_t errlen)
{
	return count(v, 0, 1000000, &s->max_connections_per_client,
		     "connections (0: an eighth of max_connections)", err, errlen);
}

static int set_request_timeout(struct settings *s, const char *v, char *err, size_t errlen)
{
	return seconds(v, &s->request_timeout_ms, false, err, errlen);
}

static int set_app_limit(struct settings *s, const char *v, char *err, size_t errlen)
{
	char *end;
	long n = strtol(v, &end, 10);
	if (*end || end == v || n < 0 || n > 100000)
		return bad(err, errlen, "takes a number of leases >= 0, not '%s'", v);
	s->app_limit = (int) n;
	return 0;
}

#define QUOTA_SETTER(name, tier)                                                                   \
	static int name(struct settings *s, const char *v, char *err, size_t errlen)               \
	{                                                                                          \
		return seconds(v, &s->quota.daily_ms[tier], true, err, errlen);                    \
	}
QUOTA_SETTER(set_quota_anonymous, LEASE_TIER_ANONYMOUS)
QUOTA_SETTER(set_quota_free, LEASE_TIER_FREE)
QUOTA_SETTER(set_quota_pro, LEASE_TIER_PRO)
QUOTA_SETTER(set_quota_enterprise, LEASE_TIER_ENTERPRISE)
SECONDS_SETTER(set_quota_window, quota.window_ms, false)

#define OVERAGE_SETTER(name, tier)                                                                 \
	static int name(struct settings *s, const char *v, char *err, size_t errlen)               \
	{                                                                                          \
		if (strcmp(v, "allow") && strcmp(v, "deny"))                                       \
			return bad(err, errlen, "takes allow or deny, not '%s'", v);               \
		s->quota.overage[tier] = strcmp(v, "allow") == 0;                                  \
		return 0;                                                                          \
	}
OVERAGE_SETTER(set_overage_anonymous, LEASE_TIER_ANONYMOUS)
OVERAGE_SETTER(set_overage_free, LEASE_TIER_FREE)
OVERAGE_SETTER(set_overage_pro, LEASE_TIER_PRO)
OVERAGE_SETTER(set_overage_enterprise, LEASE_TIER_ENTERPRISE)

/* sqlite (the default), postgresql (libpq's PG* environment says where), or a
 * postgresql:// or postgres:// URL; libpq checks the rest when it connects. */
static int set_ledger(struct settings *s, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "sqlite") == 0) {
		s->ledger[0] = '\0';
		return 0;
	}
	if (strcmp(v, "postgresql") == 0)
		return copy(s->ledger, sizeof(s->ledger), "postgresql://", err, errlen);
	if (strncmp(v, "postgresql://", 13) && strncmp(v, "postgres://", 11))
		return bad(err, errlen,
			   "takes sqlite, postgresql (from libpq's PG* environment) or a "
			   "postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DB URL, not '%.64s'",
			   v);
	return copy(s->ledger, sizeof(s->ledger), v, err, errlen);
}

static int set_node(struct settings *s, const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v);
	bool ok = n > 0 && n < sizeof(s->node) && (isalnum((unsigned char) v[0]));
	for (size_t i = 0; ok && i < n; i++)
		ok = isalnum((unsigned char) v[i]) || strchr("._-", v[i]);
	if (!ok)
		return bad(err, errlen,
			   "takes a node name of 1 to %zu letters, digits, '.', '_' or '-' "
			   "(starting with a letter or digit), not '%.80s'",
			   sizeof(s->node) - 1, v);
	strcpy(s->node, v);
	return 0;
}

static int set_visitor_secret(struct settings *s, const char *v, char *err, size_t errlen)
{
	return secret(s->visitor_secret, v, err, errlen);
}

static int set_visitor_secret_file(struct settings *s, const char *v, char *err, size_t errlen)
{
	return secret_from_file(s->visitor_secret, v, err, errlen);
}

#define HOSTING_SETTER(name, kind)                                                                 \
	static int name(struct settings *s, const char *v, char *err, size_t errlen)               \
	{                                                                                          \
		char *end;                                                                         \
		long n = strtol(v, &end, 10);                                                      \
		if (*end || end == v || n < 0 || n > 1000000)                                      \
			return bad(err, errlen, "takes a number of apps >= 0, not '%s'", v);       \
		s->hosting_limit[kind] = (int) n;                                                  \
		return 0;                                                                          \
	}
HOSTING_SETTER(set_hosting_free, 0)
HOSTING_SETTER(set_hosting_pro, 1)
HOSTING_SETTER(set_hosting_org, 2)

SECONDS_SETTER(set_spaces_ping, spaces_ping_ms, false)

static bool valid_app_name(const char *v, size_t n)
{
	bool ok = n > 0 && n <= LEASE_APP_MAX;
	for (size_t i = 0; ok && i < n; i++)
		ok = isalnum((unsigned char) v[i]) || strchr("._-", v[i]);
	return ok;
}

static int set_spaces_app(struct settings *s, const char *v, char *err, size_t errlen)
{
	if (!valid_app_name(v, strlen(v)))
		return bad(err, errlen,
			   "takes an app name of 1 to %d letters, digits, '.', '_' or '-', not "
			   "'%s'",
			   LEASE_APP_MAX, v);
	strcpy(s->spaces_app, v);
	return 0;
}

static int set_require_visitor(struct settings *s, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "true") && strcmp(v, "false"))
		return bad(err, errlen, "takes true or false, not '%s'", v);
	s->spaces_require_visitor = strcmp(v, "true") == 0;
	return 0;
}

static int set_gateway_token(struct settings *s, const char *v, char *err, size_t errlen)
{
	return secret(s->gateway_token, v, err, errlen);
}

static int set_gateway_token_file(struct settings *s, const char *v, char *err, size_t errlen)
{
	return secret_from_file(s->gateway_token, v, err, errlen);
}

/* An HTTP header name: 1 to 63 of RFC 9110's token characters. */
static int set_gateway_user_header(struct settings *s, const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v);
	bool ok = n > 0 && n < sizeof(s->gateway_user_header);
	for (size_t i = 0; ok && i < n; i++)
		ok = isalnum((unsigned char) v[i]) || strchr("!#$%&'*+-.^_`|~", v[i]);
	if (!ok)
		return bad(err, errlen, "takes an HTTP header name (1 to 63 characters), not '%s'",
			   v);
	strcpy(s->gateway_user_header, v);
	return 0;
}

static int set_gateway_token_ttl(struct settings *s, const char *v, char *err, size_t errlen)
{
	int r = seconds(v, &s->gateway_token_ttl_ms, false, err, errlen);
	if (r == 0 && (s->gateway_token_ttl_ms < 10000 || s->gateway_token_ttl_ms > 3600000))
		return bad(err, errlen, "takes 10 to 3600 seconds, not '%s'", v);
	return r;
}

static int set_gate(struct settings *s, const char *v, char *err, size_t errlen)
{
	static const struct {
		const char *name;
		enum gate_want want;
	} modes[] = {{"auto", GATE_WANT_AUTO},
		     {"cgroup", GATE_WANT_CGROUP},
		     {"cgroup-v1", GATE_WANT_V1},
		     {"cgroup-v2", GATE_WANT_V2},
		     {"off", GATE_WANT_OFF}};
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (strcmp(v, modes[i].name) == 0) {
			s->gate = modes[i].want;
			return 0;
		}
	}
	return bad(err, errlen, "takes auto, cgroup, cgroup-v1, cgroup-v2 or off, not '%s'", v);
}

/* An absolute path without "." or ".." components or empty ones ("//"): what it names is
 * plain to see. */
static bool plain_absolute_path(const char *v)
{
	if (v[0] != '/' || strstr(v, "//"))
		return false;
	for (const char *p = v + 1; *p;) {
		size_t n = strcspn(p, "/");
		if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p += n + (p[n] == '/');
	}
	return true;
}

/* A file or directory, made absolute (the daemon may change directory; its log should
 * name what it used). One that does not exist yet must be given absolute. */
static int absolute_path(char out[PATH_MAX], const char *v, char *err, size_t errlen)
{
	char resolved[PATH_MAX];
	if (realpath(v, resolved))
		return copy(out, PATH_MAX, resolved, err, errlen);
	if (v[0] != '/')
		return bad(err, errlen, "names '%s', which does not exist", v);
	return copy(out, PATH_MAX, v, err, errlen);
}

static int set_device_dir(struct settings *s, const char *v, char *err, size_t errlen)
{
	return absolute_path(s->device_dir, v, err, errlen);
}

static int set_mig_minors(struct settings *s, const char *v, char *err, size_t errlen)
{
	return absolute_path(s->mig_minors, v, err, errlen);
}

static int set_cgroup_root(struct settings *s, const char *v, char *err, size_t errlen)
{
	if (!valid_app_name(v, strlen(v)) || v[0] == '.')
		return bad(err, errlen,
			   "takes one cgroup name of letters, digits, '.', '_' or '-' (not "
			   "starting with '.'), not '%s'",
			   v);
	return copy(s->cgroup_root, sizeof(s->cgroup_root), v, err, errlen);
}

static const struct setting table[] = {
	{"server", "socket", "socket", set_socket},
	{"server", "state_dir", "state-dir", set_state_dir},
	{"server", "node", "node", set_node},
	{"server", "listen", "listen", set_listen},
	{"server", "token", "token", set_token},
	{"server", "token_file", "token-file", set_token_file},
	{"server", "log_level", "log-level", set_log_level},
	{"server", "max_connections", "max-connections", set_max_connections},
	{"server", "max_connections_per_client", "max-connections-per-client", set_max_per_client},
	{"server", "request_timeout", "request-timeout", set_request_timeout},
	{"server", "drain", "drain", set_drain},
	{"ledger", "url", "ledger", set_ledger},
	{"devices", "simulate", "simulate", set_simulate},
	{"devices", "nvml_library", "nvml-library", set_nvml},
	{"devices", "split", "split", set_split},
	{"leases", "max_duration", "max-duration", set_max_duration},
	{"leases", "default_duration", "default-duration", set_default_duration},
	{"leases", "default_max_wait", "default-max-wait", set_default_max_wait},
	{"leases", "grace", "grace", set_grace},
	{"scheduler", "policy", "policy", set_policy},
	{"scheduler", "aging_bound", "aging-bound", set_aging},
	{"scheduler", "backfill", "backfill", set_backfill},
	{"scheduler", "app_limit", "app-limit", set_app_limit},
	{"scheduler", "residency", "residency", set_residency},
	{"quota", "anonymous", "quota-anonymous", set_quota_anonymous},
	{"quota", "free", "quota-free", set_quota_free},
	{"quota", "pro", "quota-pro", set_quota_pro},
	{"quota", "enterprise", "quota-enterprise", set_quota_enterprise},
	{"quota", "window", "quota-window", set_quota_window},
	{"overage", "anonymous", "overage-anonymous", set_overage_anonymous},
	{"overage", "free", "overage-free", set_overage_free},
	{"overage", "pro", "overage-pro", set_overage_pro},
	{"overage", "enterprise", "overage-enterprise", set_overage_enterprise},
	{"accounts", "free", "apps-free", set_hosting_free},
	{"accounts", "pro", "apps-pro", set_hosting_pro},
	{"accounts", "org", "apps-org", set_hosting_org},
	{"auth", "visitor_secret", "visitor-secret", set_visitor_secret},
	{"auth", "visitor_secret_file", "visitor-secret-file", set_visitor_secret_file},
	{"spaces", "app", "spaces-app", set_spaces_app},
	{"spaces", "ping_interval", "spaces-ping-interval", set_spaces_ping},
	{"spaces", "require_visitor", "spaces-require-visitor", set_require_visitor},
	{"gateway", "token", "gateway-token", set_gateway_token},
	{"gateway", "token_file", "gateway-token-file", set_gateway_token_file},
	{"gateway", "user_header", "gateway-user-header", set_gateway_user_header},
	{"gateway", "token_ttl", "gateway-token-ttl", set_gateway_token_ttl},
	{"isolation", "gate", "gate", set_gate},
	{"isolation", "device_dir", "device-dir", set_device_dir},
	{"isolation", "cgroup_root", "cgroup-root", set_cgroup_root},
	{"isolation", "mig_minors", "mig-minors", set_mig_minors},
};
#define NSETTINGS (sizeof(table) / sizeof(table[0]))

/* ------------------------------------------------------------------------
 * Defaults, the file, the command line.
 * ------------------------------------------------------------------------ */

/* The hostname, up to its first dot; "localhost" when there is none. */
static void default_node(char *out, size_t size)
{
	char host[256] = "";
	if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
		strcpy(host, "localhost");
	host[strcspn(host, ".")] = '\0';
	snprintf(out, size, "%s", host);
}

static void defaults(struct settings *s)
{
	memset(s, 0, sizeof(*s));
	engine_config_default(&s->cfg);
	quota_config_default(&s->quota);
	s->hosting_limit[0] = 2;
	s->hosting_limit[1] = 10;
	s->hosting_limit[2] = 50;
	s->log_level = LOG_INFO;
	s->spaces_ping_ms = 5000;
	strcpy(s->gateway_user_header, "X-Auth-Request-User");
	s->gateway_token_ttl_ms = 300000;
	s->gate = GATE_WANT_AUTO;
	strcpy(s->device_dir, "/dev");
	strcpy(s->cgroup_root, "zerogpu");
	strcpy(s->mig_minors, "/proc/driver/nvidia-caps/mig-minors");
	s->request_timeout_ms = 10000;
	strcpy(s->policy, "priority");
	s->aging_bound_ms = s->cfg.sched.aging_bound_ms;
	s->backfill_ms = s->cfg.sched.backfill_ms;
	(void) zgpu_default_socket_path(s->socket_path, sizeof(s->socket_path));
	default_node(s->node, sizeof(s->node));
	const char *home = getenv("HOME"), *xdg = getenv("XDG_STATE_HOME");
	if (geteuid() == 0)
		snprintf(s->state_dir, sizeof(s->state_dir), "/var/lib/zerogpu");
	else if (xdg && *xdg)
		snprintf(s->state_dir, sizeof(s->state_dir), "%s/zerogpu", xdg);
	else
		snprintf(s->state_dir, sizeof(s->state_dir), "%s/.local/state/zerogpu",
			 home ? home : "/tmp");
}

struct file_state {
	struct settings *s;
	char error[512]; /* the first problem, without its line */
};

/* [apps] NAME users = USER[, USER...]: users by name or uid, checked now so that typos
 * fail at start. */
static int add_app_users(struct settings *s, const char *app, const char *value, char *err,
			 size_t errlen)
{
	if (s->napp_users == (int) (sizeof(s->app_users) / sizeof(s->app_users[0])))
		return bad(err, errlen, "lists more than %zu apps",
			   sizeof(s->app_users) / sizeof(s->app_users[0]));
	for (int i = 0; i < s->napp_users; i++)
		if (strcmp(s->app_users[i].app, app) == 0)
			return bad(err, errlen, "lists the users of app '%s' a second time", app);
	struct app_users *a = &s->app_users[s->napp_users];
	snprintf(a->app, sizeof(a->app), "%s", app);
	a->nuids = 0;
	char list[1024];
	snprintf(list, sizeof(list), "%s", value);
	char *save = NULL;
	for (char *u = strtok_r(list, ", ", &save); u; u = strtok_r(NULL, ", ", &save)) {
		char *end;
		long uid = strtol(u, &end, 10);
		if (*end) {
			struct passwd *pw = getpwnam(u);
			if (!pw)
				return bad(err, errlen, "names user '%s', who does not exist", u);
			uid = (long) pw->pw_uid;
		}
		if (uid < 0 || a->nuids == (int) (sizeof(a->uids) / sizeof(a->uids[0])))
			return bad(err, errlen, "lists a bad uid or more than 16 users");
		a->uids[a->nuids++] = (uid_t) uid;
	}
	if (a->nuids == 0)
		return bad(err, errlen, "lists no users");
	s->napp_users++;
	return 0;
}

/* [apps] NAME cgroup = PATH: the app's own cgroup (a container's), as /proc/PID/cgroup
 * shows it, which zerogpud gates instead of making one. */
static int add_app_cgroup(struct settings *s, const char *app, const char *value, char *err,
			  size_t errlen)
{
	if (s->napp_cgroups == (int) (sizeof(s->app_cgroups) / sizeof(s->app_cgroups[0])))
		return bad(err, errlen, "names more than %zu app cgroups",
			   sizeof(s->app_cgroups) / sizeof(s->app_cgroups[0]));
	if (!plain_absolute_path(value) || strcmp(value, "/") == 0)
		return bad(err, errlen,
			   "takes the app's cgroup as /proc/PID/cgroup shows it (an absolute path "
			   "below the root, without '.' or '..'), not '%s'",
			   value);
	for (int i = 0; i < s->napp_cgroups; i++) {
		const char *other = s->app_cgroups[i].path;
		size_t a = strlen(other), b = strlen(value), n = a < b ? a : b;
		if (strcmp(s->app_cgroups[i].app, app) == 0)
			return bad(err, errlen, "names app '%s''s cgroup a second time", app);
		/* One inside another would put one app's processes under two gates. */
		if (strncmp(other, value, n) == 0 && (other[n] == '/' || other[n] == '\0') &&
		    (value[n] == '/' || value[n] == '\0'))
			return bad(err, errlen, "overlaps app '%s''s cgroup %s",
				   s->app_cgroups[i].app, other);
	}
	struct gate_cgroup_setting *c = &s->app_cgroups[s->napp_cgroups];
	snprintf(c->app, sizeof(c->app), "%s", app);
	if (copy(c->path, sizeof(c->path), value, err, errlen) < 0)
		return -1;
	s->napp_cgroups++;
	return 0;
}

/* [apps] NAME memory = SIZE: the GPU memory the app's `spaces` calls need ("40G"). */
static int add_app_memory(struct settings *s, const char *app, const char *value, char *err,
			  size_t errlen)
{
	if (s->napp_memory == (int) (sizeof(s->app_memory) / sizeof(s->app_memory[0])))
		return bad(err, errlen, "names the memory of more than %zu apps",
			   sizeof(s->app_memory) / sizeof(s->app_memory[0]));
	if (settings_app_memory(s, app))
		return bad(err, errlen, "names app '%s''s memory a second time", app);
	struct app_memory *m = &s->app_memory[s->napp_memory];
	if (inventory_parse_memory(value, &m->bytes) < 0)
		return bad(err, errlen,
			   "takes a size such as 40G or 512M (binary units, at most 1 PiB), not "
			   "'%s'",
			   value);
	snprintf(m->app, sizeof(m->app), "%s", app);
	s->napp_memory++;
	return 0;
}

uint64_t settings_app_memory(const struct settings *s, const char *app)
{
	for (int i = 0; i < s->napp_memory; i++)
		if (strcmp(s->app_memory[i].app, app) == 0)
			return s->app_memory[i].bytes;
	return 0;
}

/* [apps] NAME users = ..., NAME cgroup = ..., NAME memory = ..., or the older
 * NAME = USER, ... */
static int add_app_entry(struct settings *s, const char *key, const char *value, char *err,
			 size_t errlen)
{
	size_t n = strcspn(key, " \t");
	const char *attr = key + n + strspn(key + n, " \t");
	if (!valid_app_name(key, n))
		return bad(err, errlen,
			   "does not name an app: app names are 1 to %d letters, digits, '.', "
			   "'_' or '-'",
			   LEASE_APP_MAX);
	char app[LEASE_APP_MAX + 1];
	memcpy(app, key, n);
	app[n] = '\0';
	if (!*attr || strcmp(attr, "users") == 0)
		return add_app_users(s, app, value, err, errlen);
	if (strcmp(attr, "cgroup") == 0)
		return add_app_cgroup(s, app, value, err, errlen);
	if (strcmp(attr, "memory") == 0)
		return add_app_memory(s, app, value, err, errlen);
	return bad(err, errlen,
		   "is not a setting of an app: use '%s users = USER, ...', '%s cgroup = PATH' "
		   "or '%s memory = SIZE'",
		   app, app, app);
}

static int on_ini_entry(void *user, const char *section, const char *key, const char *value)
{
	struct file_state *f = user;
	if (f->error[0])
		return 0;
	if (strcmp(section, "apps") == 0) {
		char err[256];
		if (add_app_entry(f->s, key, value, err, sizeof(err)) < 0) {
			snprintf(f->error, sizeof(f->error), "[apps] %.64s %s", key, err);
			return 0;
		}
		return 1;
	}
	bool section_known = false;
	for (size_t i = 0; i < NSETTINGS; i++) {
		if (strcmp(table[i].section, section) != 0)
			continue;
		section_known = true;
		if (strcmp(table[i].key, key) != 0)
			continue;
		char err[384];
		if (table[i].apply(f->s, value, err, sizeof(err)) < 0) {
			snprintf(f->error, sizeof(f->error), "[%s] %s %s", section, key, err);
			return 0;
		}
		return 1;
	}
	if (!section_known) {
		/* The known sections come from the table, so the list cannot drift from it. */
		size_t n = (size_t) snprintf(f->error, sizeof(f->error),
					     "unknown section [%.64s]; known:", section);
		for (size_t i = 0; i < NSETTINGS && n < sizeof(f->error); i++)
			if (i == 0 || strcmp(table[i].section, table[i - 1].section) != 0)
				n += (size_t) snprintf(f->error + n, sizeof(f->error) - n,
						       "%s [%s]", i ? "," : "", table[i].section);
		if (n < sizeof(f->error))
			snprintf(f->error + n, sizeof(f->error) - n, ", [apps]");
	} else {
		size_t n = (size_t) snprintf(f->error, sizeof(f->error),
					     "unknown setting '%.64s' in [%s]; known:", key,
					     section);
		for (size_t i = 0; i < NSETTINGS && n < sizeof(f->error); i++)
			if (strcmp(table[i].section, section) == 0)
				n += (size_t) snprintf(f->error + n, sizeof(f->error) - n, " %s",
						       table[i].key);
	}
	return 0;
}

static int load_file(struct settings *s, const char *path, bool must_exist)
{
	if (!must_exist && access(path, F_OK) != 0)
		return 0;
	struct file_state f = {.s = s};
	int line = ini_parse(path, on_ini_entry, &f);
	if (line == -1) {
		fprintf(stderr, "zerogpud: cannot read config file %s: %s\n", path,
			strerror(errno));
		return 2;
	}
	if (line != 0) {
		fprintf(stderr, "zerogpud: %s:%d: %s\n", path, line,
			f.error[0] ? f.error
				   : "not an INI line (expected [section] or key = value)");
		return 2;
	}
	snprintf(s->config_path, sizeof(s->config_path), "%s", path);
	return 0;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("zerogpud: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\nTry 'zerogpud --help'.\n", stderr);
	va_end(ap);
	return 2;
}

/* Cross-checks, and the scheduler parameters from their parts. */
static int finish(struct settings *s)
{
	/* The built-in default follows a lower maximum; a chosen one must fit under it. */
	if (s->cfg.default_duration_ms > s->cfg.max_duration_ms) {
		if (s->default_duration_set)
			return usage_error("--default-duration is above --max-duration");
		s->cfg.default_duration_ms = s->cfg.max_duration_ms;
	}
	if (s->cfg.default_max_wait_ms > s->cfg.max_wait_limit_ms)
		return usage_error("--default-max-wait is above the 3600 s limit");
	if (s->listen[0] && !s->token[0])
		return usage_error("--listen %s needs --token or --token-file: TCP clients have no "
				   "other identity",
				   s->listen);
	if (s->gateway_token[0] && !s->visitor_secret[0])
		return usage_error(
			"--gateway-token needs --visitor-secret (or "
			"--visitor-secret-file): the gateway's visitor tokens are signed "
			"with it");
	if (s->gateway_token[0] && s->token[0] && strcmp(s->gateway_token, s->token) == 0)
		return usage_error("--gateway-token must differ from --token: the gateway may "
				   "mint visitor tokens only, the admin token may do anything");
	if (s->spaces_require_visitor && !s->visitor_secret[0])
		return usage_error(
			"--spaces-require-visitor true needs --visitor-secret (or "
			"--visitor-secret-file): visitor tokens cannot be checked without it");
	if (strcmp(s->policy, "fifo") == 0) {
		sched_params_fifo(&s->cfg.sched);
	} else {
		sched_params_priority(&s->cfg.sched, s->cfg.max_duration_ms);
		s->cfg.sched.aging_bound_ms = s->aging_bound_ms;
		s->cfg.sched.backfill_ms = s->backfill_ms;
	}
	s->cfg.sched.app_limit = s->app_limit;
	return 0;
}

int settings_load(struct settings *s, int argc, char **argv, const char *usage_text)
{
	enum { OPT_CONFIG = 1000, OPT_TABLE = 1100 };
	struct option longopts[NSETTINGS + 4];
	for (size_t i = 0; i < NSETTINGS; i++)
		longopts[i] = (struct option){table[i].option, required_argument, NULL,
					      OPT_TABLE + (int) i};
	longopts[NSETTINGS] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
	longopts[NSETTINGS + 1] = (struct option){"help", no_argument, NULL, 'h'};
	longopts[NSETTINGS + 2] = (struct option){"version", no_argument, NULL, 'V'};
	longopts[NSETTINGS + 3] = (struct option){NULL, 0, NULL, 0};

	defaults(s);
	/* The file first, wherever --config stands, so that options override it. */
	const char *config = NULL;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1)
		if (c == OPT_CONFIG)
			config = optarg;
	int r = load_file(s, config ? config : SETTINGS_DEFAULT_CONFIG, config != NULL);
	if (r)
		return r;

	optind = 1;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
		if (c >= OPT_TABLE && c < OPT_TABLE + (int) NSETTINGS) {
			const struct setting *st = &table[c - OPT_TABLE];
			char err[384];
			if (st->apply(s, optarg, err, sizeof(err)) < 0)
				return usage_error("--%s %s", st->option, err);
		} else if (c == OPT_CONFIG) {
			continue;
		} else if (c == 'h') {
			fputs(usage_text, stdout);
			return 1;
		} else if (c == 'V') {
			printf("zerogpud %s (protocol %d)\n", ZGPU_VERSION, ZGPU_PROTOCOL_VERSION);
			return 1;
		} else {
			return usage_error("unknown option");
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	return finish(s);
}
