/* serve — zerogpud from its settings to its exit (serve.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/mkdir_p.h"
#include "daemon/api.h"
#include "daemon/conn.h"
#include "daemon/http.h"
#include "daemon/leases.h"
#include "daemon/notify.h"
#include "daemon/record.h"
#include "daemon/serve.h"
#include "daemon/sys/gpu_memory.h"
#include "daemon/sys/inventory.h"
#include "zerogpu.h"

/* ------------------------------------------------------------------------
 * Start-up.
 * ------------------------------------------------------------------------ */

/* Takes the state directory's lock so two daemons never share one state. Returns the fd. */
static int lock_state_dir(const char *dir)
{
	char path[PATH_MAX + 32];
	int r = mkdir_p(dir, 0700);
	if (r < 0) {
		log_error("cannot create state directory %s: %s", dir, strerror(-r));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/zerogpud.lock", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_error("cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		char other[32] = "";
		ssize_t n = pread(fd, other, sizeof(other) - 1, 0);
		other[n > 0 ? n : 0] = '\0';
		other[strcspn(other, "\n")] = '\0';
		log_error("another zerogpud (pid %s) is using state directory %s; stop it or pass "
			  "another --state-dir",
			  other[0] ? other : "unknown", dir);
		close(fd);
		return -1;
	}
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%d\n", (int) getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t) n, 0) != n)
		log_warn("cannot write pid into %s: %s", path, strerror(errno));
	return fd;
}

/*
 * A ledger made by an older zerogpud (or with a looser umask) may be readable
 * by all: it holds app token hashes and every visitor's use. It and SQLite's
 * side files become 0600.
 */
static void make_private(const char *ledger_path)
{
	static const char *const sides[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < sizeof(sides) / sizeof(sides[0]); i++) {
		char path[PATH_MAX + 48];
		struct stat st;
		snprintf(path, sizeof(path), "%s%s", ledger_path, sides[i]);
		if (stat(path, &st) < 0 || (st.st_mode & 077) == 0)
			continue;
		if (chmod(path, st.st_mode & 0700) == 0)
			log_info("made %s private (mode %03o was %03o)", path,
				 (unsigned) (st.st_mode & 0700), (unsigned) (st.st_mode & 0777));
		else
			log_warn("cannot make %s private: %s", path, strerror(errno));
	}
}

/* Binds the Unix socket, replacing a stale one but never a live daemon's. */
static int listen_unix(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);

	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		int r = mkdir_p(dir, 0755);
		if (r < 0) {
			log_error("cannot create socket directory %s: %s", dir, strerror(-r));
			return -1;
		}
	}

	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *) &addr, sizeof(addr)) == 0) {
		log_error("another zerogpud is already serving %s; stop it or pass another "
			  "--socket",
			  path);
		close(probe);
		return -1;
	}
	if (probe >= 0)
		close(probe);
	/* A stale socket (nobody answers on it) goes; anything else at the path stays: the
	 * daemon runs as root, and --socket /dev/null must not delete /dev/null. */
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_error(
				"--socket %s: something other than a socket is there; remove it or "
				"pass another path",
				path);
			return -1;
		}
		(void) unlink(path);
	}

	/* The longest backlog the kernel grants (it caps the number at net.core.somaxconn):
	 * a burst of connections waits in the kernel while the loop is busy, rather than
	 * being refused before the per-client limits can even look at it. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		log_error("cannot listen on %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	/* Any local user may ask; each is known by its uid (SO_PEERCRED). */
	(void) chmod(path, 0666);
	return fd;
}

static struct evhttp_bound_socket *listen_tcp(struct evhttp *http, const char *spec)
{
	char host[64];
	const char *colon = strrchr(spec, ':');
	char *end;
	long port = colon ? strtol(colon + 1, &end, 10) : -1;
	if (!colon || (size_t) (colon - spec) >= sizeof(host) || *end || port < 1 || port > 65535) {
		log_error("--listen takes ADDR:PORT like 127.0.0.1:8470, not '%s'", spec);
		return NULL;
	}
	memcpy(host, spec, (size_t) (colon - spec));
	host[colon - spec] = '\0';
	struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(http, host,
									   (ev_uint16_t) port);
	if (!bound)
		log_error("cannot listen on %s: %s", spec, strerror(errno));
	return bound;
}

static int load_devices(struct zgpud *d, const struct settings *o)
{
	char err[256], host[128] = "zerogpu";
	(void) gethostname(host, sizeof(host) - 1);
	if (!o->simulate[0]) {
		const char *lib = o->nvml_library[0] ? o->nvml_library : NULL;
		int r = inventory_from_nvml(&d->inv, lib, err, sizeof(err));
		if (r == 0) {
			/* A kept worker's size is what NVML says it holds (docs/residency.md). */
			d->gpu_memory = gpu_memory_open(lib, err, sizeof(err));
			if (!d->gpu_memory)
				log_warn("%s: a kept worker counts its lease's memory", err);
			return 0;
		}
		log_warn("no GPUs from NVML (%s); lending one simulated 80 GiB device instead — "
			 "pass --simulate SPEC to choose",
			 err);
	}
	if (inventory_simulate(&d->inv, o->simulate[0] ? o->simulate : "1x80G", host, err,
			       sizeof(err)) < 0) {
		log_error("%s", err);
		return -1;
	}
	return 0;
}

static void log_devices(const struct inventory *inv)
{
	log_info("%zu %s device%s:", inv->count, inv->source, inv->count == 1 ? "" : "s");
	for (size_t i = 0; i < inv->count; i++) {
		const struct device *dv = &inv->devices[i];
		log_info("  device %d: %s, %.1f GiB, %s%s", dv->index, dv->name,
			 (double) dv->memory_bytes / (double) (1ULL << 30), dv->uuid,
			 dv->mig_index >= 0 ? " (MIG instance)" : "");
	}
}

/* ------------------------------------------------------------------------
 * Descriptors and connection limits.
 * ------------------------------------------------------------------------ */

/* Descriptors kept back from connections: the ledger, pidfds of attached and idle
 * workers (one per device at most), netlink queries, the log. */
#define FD_RESERVE (64 + 2 * INV_MAX_DEVICES)

/*
 * Raises the soft descriptor limit to the hard one (the default soft limit of
 * 1024 is a select(2)-era relic; this loop uses epoll) and derives the
 * connection limits from it, unless the settings name them.
 */
static void connection_limits(const struct settings *o, struct conn_limits *lim)
{
	struct rlimit rl;
	rlim_t have = 1024;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		if (rl.rlim_cur < rl.rlim_max) {
			rlim_t was = rl.rlim_cur;
			rl.rlim_cur = rl.rlim_max;
			if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
				rl.rlim_cur = was;
		}
		have = rl.rlim_cur;
	}
	long usable = have > (rlim_t) INT32_MAX ? INT32_MAX : (long) have - FD_RESERVE;
	if (usable < 16)
		usable = 16;
	lim->max_total = o->max_connections ? o->max_connections : (int) usable;
	if (lim->max_total > usable) {
		log_warn("max_connections %d is above what %llu descriptors allow; using %ld",
			 lim->max_total, (unsigned long long) have, usable);
		lim->max_total = (int) usable;
	}
	lim->max_per_client = o->max_connections_per_client;
	if (!lim->max_per_client) {
		lim->max_per_client = lim->max_total / 8 < 1024 ? lim->max_total / 8 : 1024;
		if (lim->max_per_client < 4)
			lim->max_per_client = 4;
	}
	lim->request_timeout_ms = o->request_timeout_ms;
	log_info("descriptors: %llu; connections: at most %d, %d per client; requests must "
		 "arrive within %g s",
		 (unsigned long long) have, lim->max_total, lim->max_per_client,
		 (double) lim->request_timeout_ms / 1000.0);
}

/* Gates the devices as the settings say; the log says how, or why not. */
static int open_gate(struct zgpud *d, const struct settings *o)
{
	struct gate_config cfg = {.want = o->gate,
				  .device_dir = o->device_dir,
				  .cgroup_root = o->cgroup_root,
				  .mig_minors = o->mig_minors,
				  .cgroups = o->app_cgroups,
				  .ncgroups = o->napp_cgroups};
	char err[1024];
	if (gate_open(&d->gate, &cfg, &d->inv, d->base, err, sizeof(err)) < 0) {
		log_error("%s (gate = cgroup: zerogpud does not start ungated; see "
			  "docs/security.md)",
			  err);
		return -1;
	}
	if (d->gate.mode == GATE_OFF)
		log_warn("devices are not gated: %s; any process may open any GPU",
			 d->gate.why_off);
	else
		log_info("gating %d device node(s) with %s under %s", d->gate.nodes.count,
			 gate_mode_name(&d->gate), d->gate.root);
	return 0;
}

/* ------------------------------------------------------------------------
 * Shutting down: in an order that holds under load.
 * ------------------------------------------------------------------------ */

/*
 * 1. Accept nothing more, and answer any request still arriving with a 503
 *    (d->stopping), so nothing reaches the engine again.
 * 2. End every lease (queued: cancelled; held: failed, attached processes
 *    killed): the ledger records each end, the clients hear why.
 * 3. End the event streams, give those last lines a moment to leave, then close
 *    every connection.
 * 4. Only then close the ledger (a shared one first writes what it has queued,
 *    for up to LEDGER_FLUSH_MS) and free what the engine and the APIs hold.
 */
#define LEDGER_FLUSH_MS 5000
static void shut_down(struct zgpud *d)
{
	notify_stopping(d);
	d->stopping = true;
	conns_stop_accepting(&d->conns);
	leases_end_all(d);
	events_close_all(d); /* after the last ends: subscribers see them */

	struct timeval flush = {.tv_sec = 0, .tv_usec = 50 * 1000};
	event_base_loopexit(d->base, &flush);
	event_base_dispatch(d->base);
	evhttp_free(d->http_unix);
	if (d->http_tcp)
		evhttp_free(d->http_tcp);
	/* The connections' bufferevents are finalised by the loop: let it run them. */
	for (int i = 0; i < 100 && d->conns.open > 0; i++)
		event_base_loop(d->base, EVLOOP_NONBLOCK);
	if (d->conns.open > 0)
		log_warn("%d connection(s) not yet finalised at exit", d->conns.open);

	leases_free(d);
	events_free(d);
	gpu_memory_close(d->gpu_memory);
	gate_close(&d->gate);
	record_flush(d, LEDGER_FLUSH_MS); /* a shared ledger's queued ends */
	record_fault_release(d);
	ledger_close(d->ledger);
	d->ledger = NULL;
	quota_release(&d->quota);
	strmap_release(&d->spaces_tokens); /* its items went with their leases */
	conns_release(&d->conns);
}

/* ------------------------------------------------------------------------
 * Serving.
 * ------------------------------------------------------------------------ */

/* The ledger the settings name: SQLite in the state directory, or a shared PostgreSQL. */
static int open_ledger(struct zgpud *d, const struct settings *o)
{
	char err[512];
	if (o->ledger[0]) {
		if (ledger_open_pg(&d->ledger, o->ledger, o->node, err, sizeof(err)) < 0) {
			log_error("%s", err);
			return -1;
		}
		log_info("ledger: PostgreSQL, as node %s", o->node);
		return 0;
	}
	char ledger_path[PATH_MAX + 32];
	snprintf(ledger_path, sizeof(ledger_path), "%s/ledger.db", o->state_dir);
	if (ledger_open_sqlite(&d->ledger, ledger_path, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return -1;
	}
	snprintf(d->ledger->node, sizeof(d->ledger->node), "%s", o->node);
	make_private(ledger_path);
	return 0;
}

int serve_open(struct zgpud *d, const struct settings *o)
{
	snprintf(d->token, sizeof(d->token), "%s", o->token);
	snprintf(d->visitor_secret, sizeof(d->visitor_secret), "%s", o->visitor_secret);
	memcpy(d->hosting_limit, o->hosting_limit, sizeof(d->hosting_limit));
	memcpy(d->spaces_app, o->spaces_app, sizeof(d->spaces_app));
	d->spaces_ping_ms = o->spaces_ping_ms;
	d->settings = o;
	if (quota_init(&d->quota, &o->quota) < 0 || strmap_init(&d->spaces_tokens) < 0) {
		log_error("out of memory at start-up");
		return -1;
	}
	d->own_uid = geteuid();
	d->started_mono_ms = clock_mono_ms();
	d->started_wall_ms = clock_wall_ms();

	d->lock_fd = lock_state_dir(o->state_dir);
	if (d->lock_fd < 0)
		return -1;
	if (load_devices(d, o) < 0)
		return -1;
	log_devices(&d->inv);

	/* One thread: no locks. The changelist folds the many read/write interest
	 * flips of a request into one epoll_ctl each per loop turn. */
	struct event_config *ecfg = event_config_new();
	if (ecfg) {
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_NOLOCK);
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
		d->base = event_base_new_with_config(ecfg);
		event_config_free(ecfg);
	}
	if (!d->base) {
		log_error("out of memory at start-up");
		return -1;
	}
	/* The gates close before anything a previous run left is settled: nothing is
	 * allowed that no live lease holds, and no lease outlives a restart. */
	if (open_gate(d, o) < 0)
		return -1;

	if (open_ledger(d, o) < 0)
		return -1;
	if (record_fault_init(d) < 0) {
		log_error("out of memory at start-up");
		return -1;
	}
	int settled = record_recover(d, o->cfg.grace_ms);
	if (settled < 0) {
		log_error("cannot settle the leases a previous run left open: %s",
			  d->ledger->error);
		return -1;
	}
	if (settled)
		log_info("settled %d lease(s) left open by the previous run", settled);

	struct engine_hooks hooks = leases_engine_hooks(d);
	if (engine_init(&d->engine, &d->inv, &o->cfg, &hooks) < 0 || leases_init(d) < 0 ||
	    events_init(d) < 0 || record_serve(d) < 0) {
		log_error("out of memory at start-up");
		return -1;
	}
	struct conn_limits lim;
	connection_limits(o, &lim);
	if (conns_init(&d->conns, d->base, &lim, &d->metrics) < 0) {
		log_error("out of memory at start-up");
		return -1;
	}
	/* Which app a caller is, by its cgroup: learnt once per connection. */
	conns_set_identify(&d->conns, gate_identify_peer, &d->gate);
	/* A socket the service manager passes (socket activation) outlives restarts: a call
	 * made while the daemon restarts waits in its backlog instead of failing. */
	int ufd = notify_inherited_unix(o->socket_path);
	d->socket_inherited = ufd >= 0;
	if (ufd >= 0) {
		(void) evutil_make_socket_nonblocking(ufd);
		log_info("the service manager passed the socket %s: it stays across restarts",
			 o->socket_path);
	} else {
		ufd = listen_unix(o->socket_path);
	}
	static const struct route *const routes[] = {api_v1_routes,
						     api_registry_routes,
						     api_spaces_routes,
						     api_gateway_routes,
						     api_events_routes,
						     api_ui_routes,
						     NULL};
	d->http_unix = http_server_new(d, false, routes);
	struct evhttp_bound_socket *bound = NULL;
	if (ufd < 0 || !d->http_unix ||
	    !(bound = evhttp_accept_socket_with_handle(d->http_unix, ufd)) ||
	    conns_serve(&d->conns, d->http_unix, evhttp_bound_socket_get_listener(bound), false) <
		    0)
		return -1;
	if (o->listen[0]) {
		d->http_tcp = http_server_new(d, true, routes);
		int tfd = notify_inherited_tcp();
		if (tfd >= 0)
			(void) evutil_make_socket_nonblocking(tfd);
		if (!d->http_tcp ||
		    !(bound = tfd >= 0 ? evhttp_accept_socket_with_handle(d->http_tcp, tfd)
				       : listen_tcp(d->http_tcp, o->listen)) ||
		    conns_serve(&d->conns, d->http_tcp, evhttp_bound_socket_get_listener(bound),
				true) < 0)
			return -1;
	}
	log_info("zerogpud %s serving %s%s%s (state %s, max duration %g s, grace %g s, %s "
		 "policy, %zu GPUs in %zu slots)",
		 ZGPU_VERSION, o->socket_path, o->listen[0] ? " and http://" : "", o->listen,
		 o->state_dir, (double) o->cfg.max_duration_ms / 1000.0,
		 (double) o->cfg.grace_ms / 1000.0, o->cfg.sched.name, d->engine.ngpus,
		 d->engine.slots_total);
	char status[256];
	snprintf(status, sizeof(status), "serving %s%s: %zu GPUs in %zu slots", o->socket_path,
		 d->socket_inherited ? " (passed by the service manager)" : "", d->engine.ngpus,
		 d->engine.slots_total);
	if (notify_ready(d, status) < 0) {
		log_error("out of memory at start-up");
		return -1;
	}
	return 0;
}

struct drain {
	struct zgpud *d;
	int64_t until;
	struct event *check;
};

#define DRAIN_CHECK_MS 10

static void on_drain_check(evutil_socket_t fd, short what, void *arg)
{
	struct drain *dr = arg;
	(void) fd, (void) what;
	if (dr->d->engine.leases.len == 0 || clock_mono_ms() >= dr->until)
		event_base_loopbreak(dr->d->base);
}

void serve_drain(struct zgpud *d, int64_t ms)
{
	int64_t t0 = clock_mono_ms();
	conns_stop_accepting(&d->conns);
	if (!d->socket_inherited) {
		(void) unlink(d->settings->socket_path);
		d->socket_removed = true;
	}
	size_t held = d->engine.leases.len;
	if (!held)
		return;
	log_info("draining: %zu lease(s) held or queued may end on their own for %.1f s; "
		 "accepting nothing more",
		 held, (double) ms / 1000.0);
	struct drain dr = {.d = d, .until = t0 + ms};
	struct timeval every = {.tv_sec = 0, .tv_usec = DRAIN_CHECK_MS * 1000};
	dr.check = event_new(d->base, -1, EV_PERSIST, on_drain_check, &dr);
	if (!dr.check)
		return;
	event_add(dr.check, &every);
	event_base_dispatch(d->base);
	event_free(dr.check);
	if (d->engine.leases.len)
		log_info("drain over after %.1f s: %zu lease(s) still held or queued end now",
			 (double) (clock_mono_ms() - t0) / 1000.0, d->engine.leases.len);
	else
		log_info("drained in %.3f s", (double) (clock_mono_ms() - t0) / 1000.0);
}

void serve_close(struct zgpud *d)
{
	shut_down(d);
	/* The service manager's socket stays: it holds the next start's callers. */
	if (!d->socket_inherited && !d->socket_removed)
		(void) unlink(d->settings->socket_path);
	close(d->lock_fd);
	d->lock_fd = -1;
}
