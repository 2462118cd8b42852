/* zerogpud — lends this machine's GPUs, one lease at a time. main.c wires the modules. */
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "common/log.h"
#include "daemon/serve.h"
#include "daemon/settings.h"
#include "daemon/zgpud.h"

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
	"  --ledger URL           where leases, quotas and the registry are kept: sqlite\n"
	"                         (default: ledger.db in the state directory), or a\n"
	"                         PostgreSQL shared by several machines: postgresql://...,\n"
	"                         or postgresql for libpq's PG* environment (docs/cluster.md)\n"
	"  --node NAME            this machine's name in a shared ledger (default: the\n"
	"                         hostname)\n"
	"  --listen ADDR:PORT     also serve HTTP on TCP (e.g. 127.0.0.1:8470); needs a token\n"
	"  --token-file FILE      read the admin bearer token for TCP from FILE (first\n"
	"                         line, 32 to 255 characters)\n"
	"  --token TOKEN          the same on the command line, where every local user\n"
	"                         sees it in ps(1): prefer --token-file\n"
	"  --max-connections N    open connections in all (default 0: the descriptor\n"
	"                         limit, raised to its hard maximum, less a reserve)\n"
	"  --max-connections-per-client N  open connections of one uid (TCP: one\n"
	"                         address when its uid is unknown); more get a 503\n"
	"                         (default 0: an eighth of --max-connections, at most 1024)\n"
	"  --drain S              on SIGTERM, stop accepting and let the leases held end\n"
	"                         on their own for up to S before ending them (default 0;\n"
	"                         with a socket passed by systemd, a restart goes unseen)\n"
	"  --request-timeout S    a request's head and body must arrive within S of\n"
	"                         the connection (or of its first byte) (default 10)\n"
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
	"  --residency MODE       lru (default): a kept worker stays on its GPU until its\n"
	"                         memory is needed, least recently used evicted first;\n"
	"                         off: a GPU lent to another app loses it (docs/residency.md)\n"
	"\n"
	"Leases:\n"
	"  --max-duration S       longest lease a request may ask for (default 300)\n"
	"  --default-duration S   lease length when a request names none (default 60)\n"
	"  --default-max-wait S   how long a request may queue by default (default 60)\n"
	"  --grace S              after a deadline, before attached processes are\n"
	"                         killed (default 2)\n"
	"\n"
	"Visitors, quotas and apps (docs/daemon.md):\n"
	"  --visitor-secret-file F  read the key visitor tokens (HS256 JWT) are signed\n"
	"                         with from F (first line, 32 to 255 characters)\n"
	"  --visitor-secret S     the same on the command line, where every local user\n"
	"                         sees it in ps(1): prefer --visitor-secret-file\n"
	"  --quota-anonymous S    daily GPU seconds for anonymous visitors (default 120)\n"
	"  --quota-free S         ... free tier (default 300)\n"
	"  --quota-pro S          ... pro tier (default 2400)\n"
	"  --quota-enterprise S   ... enterprise tier (default 3600)\n"
	"  --quota-window S       how long a quota window lasts (default 86400)\n"
	"  --overage-pro allow|deny  grant pro visitors' calls past their quota and record\n"
	"                         the seconds as overage (default deny; also\n"
	"                         --overage-anonymous, --overage-free, --overage-enterprise)\n"
	"  --apps-free N          apps a free account may host (default 2; --apps-pro 10,\n"
	"                         --apps-org 50)\n"
	"\n"
	"Hugging Face `spaces` compatibility (docs/spaces-compat.md):\n"
	"  --spaces-app NAME      the app of /schedule calls that carry no app token\n"
	"  --spaces-ping-interval S  keep-alive interval of queued /schedule replies\n"
	"                         (default 5)\n"
	"  --spaces-require-visitor true|false  refuse /schedule calls that name no\n"
	"                         visitor (default false: they are the app's own)\n"
	"\n"
	"Visitor gateway (docs/gateway.md):\n"
	"  --gateway-token-file F  read the token of the proxy that mints visitor tokens\n"
	"                         (GET /v1/visitor-token) from F\n"
	"  --gateway-token T      the same on the command line (seen in ps(1))\n"
	"  --gateway-user-header H  the header naming a signed-in user (default\n"
	"                         X-Auth-Request-User)\n"
	"  --gateway-token-ttl S  seconds a visitor token lives (default 300)\n"
	"\n"
	"Device gating (docs/security.md):\n"
	"  --gate MODE            auto (default: gate when running as root with a usable\n"
	"                         devices cgroup, else run ungated and say why), cgroup\n"
	"                         (gate or refuse to start), cgroup-v1, cgroup-v2, or off\n"
	"  --device-dir DIR       where the GPU device nodes are (default /dev)\n"
	"  --cgroup-root NAME     zerogpud's cgroup under each hierarchy, holding one\n"
	"                         app-NAME cgroup per app (default zerogpu)\n"
	"  --mig-minors FILE      the driver's MIG capability minors (default\n"
	"                         /proc/driver/nvidia-caps/mig-minors)\n"
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
 * Signals.
 * ------------------------------------------------------------------------ */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct zgpud *d = arg;
	(void) what;
	log_info("received %s; shutting down", strsignal((int) sig));
	event_base_loopbreak(d->base);
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
	/* The ledger and anything else the daemon writes hold secrets (token hashes,
	 * visitors) and are for root's eyes: private whatever the caller's umask. */
	umask(077);

	struct zgpud *d = &daemon_ctx;
	if (serve_open(d, &o) < 0)
		return 1;
	struct event *sigint = evsignal_new(d->base, SIGINT, on_signal, d);
	struct event *sigterm = evsignal_new(d->base, SIGTERM, on_signal, d);
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);

	event_base_dispatch(d->base);
	if (o.drain_ms > 0)
		serve_drain(d, o.drain_ms);
	serve_close(d);
	event_free(sigint);
	event_free(sigterm);
	event_base_free(d->base);
	libevent_global_shutdown();
	log_info("stopped");
	return 0;
}
