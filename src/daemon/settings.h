/*
 * settings — zerogpud's configuration: defaults, then the config file
 * (/etc/zerogpu/zerogpud.conf or --config FILE, INI), then command-line
 * options. File keys and options are one table, so each setting is checked
 * by one function whichever way it comes; docs/configuration.md lists them.
 */
#ifndef ZGPU_DAEMON_SETTINGS_H
#define ZGPU_DAEMON_SETTINGS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/un.h>

#include "daemon/core/engine.h"
#include "daemon/core/quota.h"
#include "daemon/gate.h"

#define SETTINGS_DEFAULT_CONFIG "/etc/zerogpu/zerogpud.conf"

struct settings {
	char socket_path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
	char state_dir[PATH_MAX];
	/* [ledger]: "" for SQLite in the state directory, else a PostgreSQL conninfo (a
	 * postgresql:// URL, or "postgresql" alone for libpq's PG* environment). */
	char ledger[1024];
	char node[64];			/* this machine's name in a shared ledger: the hostname */
	char listen[128];		/* ADDR:PORT, or empty for no TCP listener */
	int max_connections;		/* open connections in all; 0: from RLIMIT_NOFILE */
	int max_connections_per_client; /* per uid or address; 0: an eighth of the total */
	int64_t request_timeout_ms;	/* for a request's head and body to arrive */
	int64_t drain_ms;	     /* at SIGTERM, how long held leases may run on before ending */
	char token[256];	     /* bearer token for TCP */
	char simulate[256];	     /* simulated devices spec, or empty for NVML */
	char nvml_library[PATH_MAX]; /* empty: libnvidia-ml.so.1 */
	char config_path[PATH_MAX];  /* the file read, or empty */
	int log_level;
	struct engine_config cfg;
	/* Scheduler inputs, turned into cfg.sched by settings_finish(). */
	char policy[16];
	int64_t aging_bound_ms, backfill_ms;
	int app_limit;
	bool default_duration_set; /* given, rather than the built-in 60 s */
	struct quota_config quota;
	char visitor_secret[256]; /* verifies visitor tokens; "" accepts none */
	int hosting_limit[3];	  /* apps a free, pro and org account may host: 2, 10, 50 */
	char spaces_app[LEASE_APP_MAX + 1]; /* [spaces] app: calls without an app token */
	int64_t spaces_ping_ms;		    /* [spaces] ping_interval: 5 s */
	bool spaces_require_visitor; /* [spaces] require_visitor: refuse calls without a token */
	/* [gateway]: the visitor gateway (api_gateway.c, docs/gateway.md). */
	char gateway_token[256];      /* the proxy's bearer token for GET /v1/visitor-token */
	char gateway_user_header[64]; /* the signed-in user's header: X-Auth-Request-User */
	int64_t gateway_token_ttl_ms; /* how long a minted visitor token lives: 300 s */
	/* [apps] NAME users: which local users may act as which apps (none listed: anyone
	 * as any), and whose processes an app's token may attach over TCP. */
	struct app_users {
		char app[LEASE_APP_MAX + 1];
		uid_t uids[16];
		int nuids;
	} app_users[256];
	int napp_users;
	/* [isolation]: device gating (gate.h). */
	enum gate_want gate;
	char device_dir[PATH_MAX];	/* /dev */
	char cgroup_root[NAME_MAX + 1]; /* zerogpu */
	char mig_minors[PATH_MAX];	/* /proc/driver/nvidia-caps/mig-minors */
	/* [apps] NAME cgroup: apps whose cgroup the operator names. */
	struct gate_cgroup_setting app_cgroups[64];
	int napp_cgroups;
	/* [apps] NAME memory: what a `spaces` call of the app needs on its GPU. */
	struct app_memory {
		char app[LEASE_APP_MAX + 1];
		uint64_t bytes;
	} app_memory[256];
	int napp_memory;
};

/* The [apps] NAME memory of app, or 0 when the settings name none. */
uint64_t settings_app_memory(const struct settings *s, const char *app);

/*
 * Fills s from defaults, the config file and argv, in that order. Returns 0 to
 * run, 1 when --help or --version was answered (exit 0), or 2 after printing
 * what is wrong to stderr (exit 2).
 */
int settings_load(struct settings *s, int argc, char **argv, const char *usage_text);

#endif
