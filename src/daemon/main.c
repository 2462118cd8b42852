/* zerogpud — lends this machine's GPUs, one lease at a time. main.c wires the modules. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/http.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/random_hex.h"
#include "daemon/proc.h"
#include "daemon/record.h"
#include "daemon/settings.h"
#include "daemon/zgpud.h"
#include "zerogpu.h"

static const char usage_text[] =
	"Usage: zerogpud [OPTION]...\n"
	"Lend this machine's GPUs to local apps, one lease at a time.\n"
	"\n"
	"Where:\n"
	"  --socket PATH          Unix socket to serve (default: $ZEROGPU_SOCKET, else\n"
	"                         /run/zerogpu/zerogpud.sock for root, else\n"
	"                         $XDG_RUNTIME_DIR/zerogpu.sock)\n"
	"  --state-dir DIR        where the daemon keeps its state and lock (default:\n"
	"                         /var/lib/zerogpu for root, else ~/.local/state/zerogpu)\n"
	"  --listen ADDR:PORT     also serve HTTP on TCP (e.g. 127.0.0.1:8470); needs a token\n"
	"  --token TOKEN          bearer token TCP clients must send\n"
	"  --token-file FILE      read the bearer token from FILE (first line)\n"
	"\n"
	"Devices:\n"
	"  --simulate SPEC        lend simulated devices instead of real ones, e.g. 4x80G or\n"
	"                         2x141G,1x80G (used automatically when NVML finds no GPU)\n"
	"  --nvml-library PATH    load NVML from PATH (default: libnvidia-ml.so.1)\n"
	"  --split N              1: lend whole GPUs only; 2: lend each whole GPU as two\n"
	"                         halves for 'large' requests (default 1; MIG instances\n"
	"                         are always lent one by one)\n"
	"\n"
	"Scheduling (docs/scheduling.md):\n"
	"  --policy NAME          priority (default) or fifo\n"
	"  --aging-bound S        no request waits longer than this behind later\n"
	"                         arrivals (default 30)\n"
	"  --backfill S           a request whose devices are busy lets smaller ones pass\n"
	"                         for this long, then devices are held for it (default 5)\n"
	"  --app-limit N          leases one app may hold at once (default 0: no limit)\n"
	"\n"
	"Leases:\n"
	"  --max-duration S       longest lease a request may ask for (default 300)\n"
	"  --default-duration S   lease length when a request names none (default 60)\n"
	"  --default-max-wait S   how long a request may queue by default (default 60)\n"
	"  --grace S              after a deadline, before attached processes are\n"
	"                         killed (default 2)\n"
	"\n"
	"Visitors, quotas and apps (docs/daemon.md):\n"
	"  --visitor-secret S     key that visitor tokens (HS256 JWT) are signed with\n"
	"  --visitor-secret-file F  read that key from F\n"
	"  --quota-anonymous S    daily GPU seconds for anonymous visitors (default 120)\n"
	"  --quota-free S         ... free tier (default 300)\n"
	"  --quota-pro S          ... pro tier (default 2400)\n"
	"  --quota-enterprise S   ... enterprise tier (default 3600)\n"
	"  --quota-window S       how long a quota window lasts (default 86400)\n"
	"  --apps-free N          apps a free account may host (default 2; --apps-pro 10,\n"
	"                         --apps-org 50)\n"
	"\n"
	"Hugging Face `spaces` compatibility (docs/spaces-compat.md):\n"
	"  --spaces-app NAME      the app of /schedule calls that carry no app token\n"
	"  --spaces-ping-interval S  keep-alive interval of queued /schedule replies\n"
	"                         (default 5)\n"
	"\n"
	"  --config FILE          read settings from FILE (default: /etc/zerogpu/zerogpud.conf\n"
	"                         when it exists); options given here override it\n"
	"  --log-level LEVEL      debug, info, warn or error (default info)\n"
	"  -h, --help             show this help and exit\n"
	"  -V, --version          show the version and exit\n"
	"\n"
	"The API is documented in docs/openapi.yaml; try\n"
	"  curl --unix-socket SOCKET http://x/v1/status\n";

static struct zgpud daemon_ctx;

/* ------------------------------------------------------------------------
 * Hooks the engine calls.
 * ------------------------------------------------------------------------ */

static void kill_group(void *ctx, const struct lease *l)
{
	(void) ctx;
	int r = proc_kill(l->pid, l->pgid);
	if (r >= 0)
		log_info("lease %s: killed %s %d", l->id, r == 1 ? "process group" : "process",
			 (int) (r == 1 ? l->pgid : l->pid));
	else if (r != -ESRCH)
		log_warn("lease %s: cannot kill process %d: %s", l->id, (int) l->pid, strerror(-r));
}

static void make_id(void *ctx, char *out)
{
	(void) ctx;
	random_hex(out, LEASE_ID_LEN / 2);
}

int64_t zgpud_wall_ms(int64_t mono_ms)
{
	return daemon_ctx.started_wall_ms + (mono_ms - daemon_ctx.started_mono_ms);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct zgpud *d = arg;
	(void) fd;
	(void) what;
	d->timer_at = INT64_MAX;
	engine_tick(&d->engine, clock_mono_ms());
	zgpud_rearm(d);
}

/* Fails the grants the ledger could not record (see zgpud.h). */
static void fail_unrecorded(struct zgpud *d)
{
	while (d->nunrecorded) {
		struct lease *l = engine_find(&d->engine, d->unrecorded[--d->nunrecorded]);
		if (l)
			engine_end(&d->engine, l, true, clock_mono_ms(), NULL);
	}
}

void zgpud_rearm(struct zgpud *d)
{
	fail_unrecorded(d);
	int64_t next = engine_next_deadline(&d->engine);
	if (next == d->timer_at)
		return;
	d->timer_at = next;
	if (next == INT64_MAX) {
		evtimer_del(d->timer);
		return;
	}
	int64_t delay = next - clock_mono_ms();
	if (delay < 0)
		delay = 0;
	struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};
	evtimer_add(d->timer, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct zgpud *d = arg;
	(void) what;
	log_info("received %s; shutting down", strsignal((int) sig));
	event_base_loopbreak(d->base);
}

/* ------------------------------------------------------------------------
 * Start-up.
 * ------------------------------------------------------------------------ */

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

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
	(void) unlink(path); /* stale: nobody answers on it */

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0 ||
	    listen(fd, 512) < 0) {
		log_error("cannot listen on %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	/* Any local user may ask; each is known by its uid (SO_PEERCRED). */
	(void) chmod(path, 0666);
	return fd;
}

static int listen_tcp(struct evhttp *http, const char *spec)
{
	char host[64];
	const char *colon = strrchr(spec, ':');
	char *end;
	long port = colon ? strtol(colon + 1, &end, 10) : -1;
	if (!colon || (size_t) (colon - spec) >= sizeof(host) || *end || port < 1 || port > 65535) {
		log_error("--listen takes ADDR:PORT like 127.0.0.1:8470, not '%s'", spec);
		return -1;
	}
	memcpy(host, spec, (size_t) (colon - spec));
	host[colon - spec] = '\0';
	if (!evhttp_bind_socket_with_handle(http, host, (ev_uint16_t) port)) {
		log_error("cannot listen on %s: %s", spec, strerror(errno));
		return -1;
	}
	return 0;
}

static int load_devices(struct zgpud *d, const struct settings *o)
{
	char err[256], host[128] = "zerogpu";
	(void) gethostname(host, sizeof(host) - 1);
	if (!o->simulate[0]) {
		int r = inventory_from_nvml(&d->inv, o->nvml_library[0] ? o->nvml_library : NULL,
					    err, sizeof(err));
		if (r == 0)
			return 0;
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

int main(int argc, char **argv)
{
	static struct settings o;
	int r = settings_load(&o, argc, argv, usage_text);
	if (r)
		return r == 1 ? 0 : r;
	log_setup("zerogpud", (enum log_level) o.log_level);
	if (o.config_path[0])
		log_info("read settings from %s", o.config_path);
	signal(SIGPIPE, SIG_IGN);

	struct zgpud *d = &daemon_ctx;
	snprintf(d->token, sizeof(d->token), "%s", o.token);
	snprintf(d->visitor_secret, sizeof(d->visitor_secret), "%s", o.visitor_secret);
	memcpy(d->hosting_limit, o.hosting_limit, sizeof(d->hosting_limit));
	memcpy(d->spaces_app, o.spaces_app, sizeof(d->spaces_app));
	d->spaces_ping_ms = o.spaces_ping_ms;
	d->settings = &o;
	if (quota_init(&d->quota, &o.quota) < 0 || strmap_init(&d->spaces_tokens) < 0) {
		log_error("out of memory at start-up");
		return 1;
	}
	d->own_uid = geteuid();
	d->started_mono_ms = clock_mono_ms();
	d->started_wall_ms = clock_wall_ms();
	d->timer_at = INT64_MAX;

	int lock_fd = lock_state_dir(o.state_dir);
	if (lock_fd < 0)
		return 1;
	if (load_devices(d, &o) < 0)
		return 1;
	log_devices(&d->inv);

	char ledger_path[PATH_MAX + 32], err[512];
	snprintf(ledger_path, sizeof(ledger_path), "%s/ledger.db", o.state_dir);
	if (ledger_open_sqlite(&d->ledger, ledger_path, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	int settled = record_recover(d, o.cfg.grace_ms);
	if (settled < 0) {
		log_error("cannot settle the leases a previous run left open: %s",
			  d->ledger->error);
		return 1;
	}
	if (settled)
		log_info("settled %d lease(s) left open by the previous run", settled);

	struct engine_hooks hooks = {.ctx = d,
				     .event = zgpud_on_lease_event,
				     .kill_group = kill_group,
				     .make_id = make_id};
	/* One thread: no locks. The changelist folds the many read/write interest
	 * flips of a request into one epoll_ctl each per loop turn. */
	struct event_config *ecfg = event_config_new();
	if (ecfg) {
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_NOLOCK);
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
		d->base = event_base_new_with_config(ecfg);
		event_config_free(ecfg);
	}
	if (!d->base || engine_init(&d->engine, &d->inv, &o.cfg, &hooks) < 0) {
		log_error("out of memory at start-up");
		return 1;
	}
	d->timer = evtimer_new(d->base, on_timer, d);
	struct event *sigint = evsignal_new(d->base, SIGINT, on_signal, d);
	struct event *sigterm = evsignal_new(d->base, SIGTERM, on_signal, d);
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);

	int ufd = listen_unix(o.socket_path);
	d->http_unix = http_server_new(d, false);
	if (ufd < 0 || !d->http_unix || evhttp_accept_socket(d->http_unix, ufd) < 0)
		return 1;
	if (o.listen[0]) {
		d->http_tcp = http_server_new(d, true);
		if (!d->http_tcp || listen_tcp(d->http_tcp, o.listen) < 0)
			return 1;
	}
	log_info("zerogpud %s serving %s%s%s (state %s, max duration %g s, grace %g s, %s "
		 "policy, %zu GPUs in %zu slots)",
		 ZGPU_VERSION, o.socket_path, o.listen[0] ? " and http://" : "", o.listen,
		 o.state_dir, (double) o.cfg.max_duration_ms / 1000.0,
		 (double) o.cfg.grace_ms / 1000.0, o.cfg.sched.name, d->engine.ngpus,
		 d->engine.slots_total);

	event_base_dispatch(d->base);

	/* End leases while their connections still exist, so clients hear why. */
	engine_shutdown(&d->engine, clock_mono_ms());
	ledger_close(d->ledger);
	quota_release(&d->quota);
	strmap_release(&d->spaces_tokens);	   /* its items went with their leases */
	event_base_loop(d->base, EVLOOP_NONBLOCK); /* flush those last events */
	evhttp_free(d->http_unix);
	if (d->http_tcp)
		evhttp_free(d->http_tcp);
	(void) unlink(o.socket_path);
	event_free(sigint);
	event_free(sigterm);
	event_free(d->timer);
	event_base_free(d->base);
	libevent_global_shutdown();
	close(lock_fd);
	log_info("stopped");
	return 0;
}
