#include "daemon/gate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/sys/devbpf.h"
#include "daemon/sys/proc.h"

#define PARKED_CGROUP "parked" /* under a managed app's cgroup */
#define PARKED_CONFIGURED                                                                          \
	"parked-"      /* + NAME, under the root: an operator's cgroup is the                      \
			* runtime's to remove, so nothing of ours goes inside it */
#define SCAN_MAX  4096 /* processes of one app looked at per revoke */
#define RECHECK_S 1

/* A process parked because it holds a node its app no longer holds. */
struct parked {
	struct lease_process proc; /* held by its pidfd: a reused pid is never let go */
	char origin[PATH_MAX];	   /* the freezing hierarchy's cgroup it came from */
	bool stopped;		   /* by SIGSTOP rather than in the frozen cgroup */
};

struct gate_app {
	char name[LEASE_APP_MAX + 1];
	bool configured;	    /* [apps] NAME cgroup: the operator's, not ours */
	char rel[PATH_MAX];	    /* its cgroup as /proc/PID/cgroup shows it */
	char path[PATH_MAX];	    /* ... in the gating hierarchy */
	char freeze_path[PATH_MAX]; /* ... in the freezing hierarchy ("" when configured) */
	char parked_path[PATH_MAX]; /* the frozen cgroup its parked go to, or "" (SIGSTOP) */
	uint64_t id;		    /* the gating cgroup's inode: a remade one differs */
	uint64_t v2_ids[2];	    /* its cgroup2 directories (TCP peers are known by these) */
	bool ready;		    /* gated now (a configured cgroup may not exist yet) */
	int cgroup_fd, allowed_map, prog_fd; /* v2 */
	unsigned holds[DEVNODES_MAX];	     /* leases of the app holding each node */
	struct parked *parked;
	int nparked, capparked;
};

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

/* snprintf that says whether it all fit: a path that does not fit is refused, never cut. */
static int fmt(char *out, size_t size, const char *f, ...) __attribute__((format(printf, 3, 4)));
static int fmt(char *out, size_t size, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(out, size, f, ap);
	va_end(ap);
	return n >= 0 && (size_t) n < size ? 0 : -ENAMETOOLONG;
}

const char *gate_mode_name(const struct gate *g)
{
	switch (g->mode) {
	case GATE_CGROUP_V2:
		return "cgroup-v2";
	case GATE_CGROUP_V1:
		return "cgroup-v1";
	default:
		return "off";
	}
}

/* a is b, or inside it. */
static bool path_within(const char *a, const char *b)
{
	size_t n = strlen(b);
	if (n == 1 && b[0] == '/')
		return true;
	return strncmp(a, b, n) == 0 && (a[n] == '\0' || a[n] == '/');
}

/* ------------------------------------------------------------------------
 * Allowing and denying one node to one app.
 * ------------------------------------------------------------------------ */

static int set_node(struct gate *g, struct gate_app *a, int node, bool allow)
{
	dev_t dev = g->nodes.dev[node];
	if (g->mode == GATE_CGROUP_V2)
		return devbpf_map_set(a->allowed_map, major(dev), minor(dev), allow);
	/* Ours have no children in the devices hierarchy; an operator's may. */
	if (!a->configured)
		return cgroup_v1_device(a->path, allow, major(dev), minor(dev));
	return cgroup_v1_device_tree(a->path, allow, major(dev), minor(dev));
}

/* Denies every lent node the app holds no lease on: how each app cgroup starts. */
static int close_all(struct gate *g, struct gate_app *a)
{
	for (int i = 0; i < g->nodes.count; i++) {
		if (a->holds[i])
			continue;
		int r = set_node(g, a, i, false);
		if (r < 0 && r != -ENOENT) /* v2: not in the map is denied already */
			return r;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * An app's cgroups: made (managed) or found (configured), then gated closed.
 * ------------------------------------------------------------------------ */

static void app_unhook(struct gate_app *a)
{
	if (a->prog_fd >= 0)
		close(a->prog_fd);
	if (a->allowed_map >= 0)
		close(a->allowed_map);
	if (a->cgroup_fd >= 0)
		close(a->cgroup_fd);
	a->prog_fd = a->allowed_map = a->cgroup_fd = -1;
	a->ready = false;
}

/* v2: attaches a fresh program over a fresh map, then takes off any program a previous
 * run (or an earlier life of this cgroup) left: gated with nothing allowed throughout. */
static int attach_program(struct gate *g, struct gate_app *a, char *err, size_t errlen)
{
	a->cgroup_fd = open(a->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (a->cgroup_fd < 0)
		return fail(err, errlen, -errno, "%s: %s", a->path, strerror(errno));
	a->allowed_map = devbpf_map_create(DEVNODES_MAX);
	if (a->allowed_map < 0)
		return fail(err, errlen, a->allowed_map, "cannot make a BPF map: %s",
			    strerror(-a->allowed_map));
	a->prog_fd = devbpf_prog_load(g->gated_map, a->allowed_map, err, errlen);
	if (a->prog_fd < 0)
		return a->prog_fd;
	int r = devbpf_attach(a->cgroup_fd, a->prog_fd);
	if (r < 0)
		return fail(err, errlen, r, "cannot attach the gating program to %s: %s", a->path,
			    strerror(-r));
	r = devbpf_detach_stale(a->cgroup_fd, a->prog_fd);
	if (r > 0)
		log_info("app %s: replaced %d gating program(s) a previous zerogpud left on %s",
			 a->name, r, a->path);
	return 0;
}

/* The frozen cgroup that parked processes go into, made if need be. */
static void make_parked(struct gate *g, struct gate_app *a)
{
	if (!a->parked_path[0])
		return;
	int r = cgroup_make(a->parked_path);
	if (r == 0)
		r = cgroup_freeze(a->parked_path, g->freeze_v2, true);
	if (r < 0) {
		log_warn("app %s: cannot make the frozen cgroup %s (%s); parking stops processes "
			 "with SIGSTOP instead",
			 a->name, a->parked_path, strerror(-r));
		a->parked_path[0] = '\0';
	}
}

/* Where a parked process goes back to when the cgroup it came from is unknown or gone. */
static const char *home_of(const struct gate *g, const struct gate_app *a)
{
	if (!a->configured)
		return a->freeze_path;
	if (g->mode == GATE_CGROUP_V2)
		return a->path;
	return g->freeze_v2 ? g->mounts.v2 : g->mounts.freezer;
}

/* Processes a previous run parked are still frozen there: they are this run's now. */
static void adopt_parked(struct gate *g, struct gate_app *a)
{
	pid_t pids[256];
	int n = a->parked_path[0] ? cgroup_procs(a->parked_path, false, pids, 256) : 0;
	for (int i = 0; i < n && i < 256; i++) {
		struct lease_process p;
		if (proc_hold(pids[i], &p) < 0)
			continue;
		if (a->nparked == a->capparked) {
			int cap = a->capparked ? 2 * a->capparked : 8;
			struct parked *more = realloc(a->parked, (size_t) cap * sizeof(*more));
			if (!more) {
				proc_drop(&p);
				return;
			}
			a->parked = more;
			a->capparked = cap;
		}
		struct parked *e = &a->parked[a->nparked++];
		*e = (struct parked){.proc = p};
		snprintf(e->origin, sizeof(e->origin), "%s", home_of(g, a));
	}
	if (n > 0)
		log_info("app %s: %d process(es) left parked by a previous zerogpud", a->name, n);
}

/* Gates the app's cgroup with nothing allowed. 0, or -errno with err. */
static int app_hook(struct gate *g, struct gate_app *a, char *err, size_t errlen)
{
	struct stat st;
	if (stat(a->path, &st) < 0 || !S_ISDIR(st.st_mode)) {
		if (a->configured)
			return fail(err, errlen, -ENOENT,
				    "app %s's cgroup %s does not exist (yet): it is gated once it "
				    "does",
				    a->name, a->path);
		int r = cgroup_make(a->path);
		if (r < 0)
			return fail(err, errlen, r, "cannot make cgroup %s: %s", a->path,
				    strerror(-r));
	}
	if (!a->configured && a->freeze_path[0] && strcmp(a->freeze_path, a->path) != 0)
		(void) cgroup_make(a->freeze_path);
	int r = g->mode == GATE_CGROUP_V2 ? attach_program(g, a, err, errlen) : 0;
	if (r == 0 && (r = close_all(g, a)) < 0)
		fail(err, errlen, r, "cannot deny the GPUs to %s: %s", a->path, strerror(-r));
	if (r < 0) {
		app_unhook(a);
		return r;
	}
	make_parked(g, a);
	a->id = cgroup_id(a->path);
	/* Its cgroup2 directories, by which a TCP caller's socket is known. */
	const char *v2dir = g->mode == GATE_CGROUP_V2	     ? a->path
			    : g->freeze_v2 && !a->configured ? a->freeze_path
							     : "";
	a->v2_ids[0] = v2dir[0] ? cgroup_id(v2dir) : 0;
	a->v2_ids[1] = a->parked_path[0] && g->freeze_v2 ? cgroup_id(a->parked_path) : 0;
	a->ready = true;
	return 0;
}

static const char *gating_mount(const struct gate *g)
{
	return g->mode == GATE_CGROUP_V2 ? g->mounts.v2 : g->mounts.devices;
}

static struct gate_app *app_new(struct gate *g, const char *name, const char *configured_path)
{
	if (g->napps == g->capapps) {
		int cap = g->capapps ? 2 * g->capapps : 16;
		struct gate_app **more = realloc(g->apps, (size_t) cap * sizeof(*more));
		if (!more)
			return NULL;
		g->apps = more;
		g->capapps = cap;
	}
	struct gate_app *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->cgroup_fd = a->allowed_map = a->prog_fd = -1;
	snprintf(a->name, sizeof(a->name), "%s", name);
	a->configured = configured_path != NULL;
	int r = a->configured ? fmt(a->rel, sizeof(a->rel), "%s", configured_path)
			      : fmt(a->rel, sizeof(a->rel), "/%s/app-%s", g->cgroup_root, name);
	if (r == 0)
		r = fmt(a->path, sizeof(a->path), "%s%s", gating_mount(g), a->rel);
	if (r == 0 && !a->configured) {
		if (g->mode == GATE_CGROUP_V2)
			r = fmt(a->freeze_path, sizeof(a->freeze_path), "%s", a->path);
		else if (g->freeze_root[0])
			r = fmt(a->freeze_path, sizeof(a->freeze_path), "%s/app-%s", g->freeze_root,
				name);
		if (r == 0 && a->freeze_path[0])
			r = fmt(a->parked_path, sizeof(a->parked_path), "%s/%s", a->freeze_path,
				PARKED_CGROUP);
	} else if (r == 0 && g->freeze_root[0]) {
		r = fmt(a->parked_path, sizeof(a->parked_path), "%s/%s%s", g->freeze_root,
			PARKED_CONFIGURED, name);
	}
	if (r < 0) {
		log_error("app %s: its cgroup's path is too long", name);
		free(a);
		return NULL;
	}
	g->apps[g->napps++] = a;
	return a;
}

static struct gate_app *app_find(struct gate *g, const char *name)
{
	for (int i = 0; i < g->napps; i++)
		if (strcmp(g->apps[i]->name, name) == 0)
			return g->apps[i];
	return NULL;
}

/* A configured cgroup the runtime removed and made again is a new, ungated cgroup. */
static void rehook_if_remade(struct gate *g, struct gate_app *a)
{
	if (!a->configured)
		return;
	uint64_t id = cgroup_id(a->path);
	if (a->ready && id == a->id)
		return;
	char err[512];
	app_unhook(a);
	if (id && app_hook(g, a, err, sizeof(err)) == 0) {
		/* Its leases hold what they held: allowed again in the new cgroup. */
		for (int i = 0; i < g->nodes.count; i++)
			if (a->holds[i] && set_node(g, a, i, true) < 0)
				log_error("app %s: cannot allow %s again", a->name,
					  g->nodes.path[i]);
		log_info("app %s: gating its cgroup %s", a->name, a->path);
	}
}

/*
 * The app's gated cgroup, made and hooked if need be. An operator's cgroup that
 * does not exist yet is returned unhooked: it has no process to gate, and it
 * is gated with its app's holds once it appears. NULL with err when a cgroup
 * of ours cannot be made.
 */
static struct gate_app *app_get(struct gate *g, const char *name, char *err, size_t errlen)
{
	struct gate_app *a = app_find(g, name);
	if (a) {
		rehook_if_remade(g, a);
		if (!a->ready && !a->configured && app_hook(g, a, err, errlen) < 0)
			return NULL;
		return a;
	}
	if (!(a = app_new(g, name, NULL))) {
		fail(err, errlen, -ENOMEM, "out of memory");
		return NULL;
	}
	if (app_hook(g, a, err, errlen) < 0)
		return NULL;
	log_info("app %s: gated cgroup %s", name, a->path);
	return a;
}

static void on_recheck(evutil_socket_t fd, short what, void *arg)
{
	struct gate *g = arg;
	(void) fd;
	(void) what;
	for (int i = 0; i < g->napps; i++)
		rehook_if_remade(g, g->apps[i]);
}

/* ------------------------------------------------------------------------
 * Opening: which mode, which nodes, which apps.
 * ------------------------------------------------------------------------ */

/* v2 works here when a program over a map loads (and the root cgroup can be made). */
static int try_v2(struct gate *g, char *why, size_t len)
{
	if (!g->mounts.v2[0])
		return fail(why, len, -ENOENT, "no cgroup2 hierarchy is mounted");
	int r = fmt(g->root, sizeof(g->root), "%s/%s", g->mounts.v2, g->cgroup_root);
	if (r == 0)
		r = cgroup_make(g->root);
	if (r < 0)
		return fail(why, len, r, "cannot make %s: %s", g->root, strerror(-r));
	g->gated_map = devbpf_map_create(DEVNODES_MAX);
	if (g->gated_map < 0)
		return fail(why, len, g->gated_map, "the kernel refused a BPF map: %s",
			    strerror(-g->gated_map));
	for (int i = 0; i < g->nodes.count; i++)
		if ((r = devbpf_map_set(g->gated_map, major(g->nodes.dev[i]),
					minor(g->nodes.dev[i]), true)) < 0)
			return fail(why, len, r, "cannot fill the BPF map: %s", strerror(-r));
	int probe = devbpf_prog_load(g->gated_map, g->gated_map, why, len);
	if (probe < 0)
		return probe;
	close(probe);
	g->mode = GATE_CGROUP_V2;
	g->freeze_v2 = true;
	snprintf(g->freeze_root, sizeof(g->freeze_root), "%s", g->root);
	return 0;
}

static int try_v1(struct gate *g, char *why, size_t len)
{
	if (!g->mounts.devices[0])
		return fail(why, len, -ENOENT, "no cgroup v1 devices hierarchy is mounted");
	int r = fmt(g->root, sizeof(g->root), "%s/%s", g->mounts.devices, g->cgroup_root);
	if (r == 0)
		r = cgroup_make(g->root);
	if (r < 0)
		return fail(why, len, r, "cannot make %s: %s", g->root, strerror(-r));
	g->mode = GATE_CGROUP_V1;
	/* Parking: cgroup2's freeze needs no controller and is the better freezer (a
	 * killed frozen process dies at once); else v1's freezer; else SIGSTOP. */
	const char *freezer = g->mounts.v2[0] ? g->mounts.v2 : g->mounts.freezer;
	g->freeze_v2 = g->mounts.v2[0] != '\0';
	if (freezer[0]) {
		if (fmt(g->freeze_root, sizeof(g->freeze_root), "%s/%s", freezer, g->cgroup_root) <
			    0 ||
		    cgroup_make(g->freeze_root) < 0)
			g->freeze_root[0] = '\0';
	}
	return 0;
}

static int choose_mode(struct gate *g, enum gate_want want, char *why, size_t len)
{
	char v2why[512] = "", v1why[512] = "";
	if (want != GATE_WANT_V1 && try_v2(g, v2why, sizeof(v2why)) == 0)
		return 0;
	if (g->gated_map >= 0)
		close(g->gated_map);
	g->gated_map = -1;
	if (want != GATE_WANT_V2 && try_v1(g, v1why, sizeof(v1why)) == 0) {
		if (want != GATE_WANT_V1)
			log_info("gate: cgroup v2 cannot gate here (%s); using cgroup v1", v2why);
		return 0;
	}
	if (want == GATE_WANT_V1)
		return fail(why, len, -1, "cgroup v1 cannot gate devices here: %s", v1why);
	if (want == GATE_WANT_V2)
		return fail(why, len, -1, "cgroup v2 cannot gate devices here: %s", v2why);
	return fail(why, len, -1, "no cgroup can gate devices here: v2: %s; v1: %s", v2why, v1why);
}

/* The managed app cgroups a previous run made: gated closed again. */
static void adopt_managed(struct gate *g)
{
	DIR *dir = opendir(g->root);
	if (!dir)
		return;
	struct dirent *e;
	while ((e = readdir(dir))) {
		const char *name = e->d_name + 4;
		if (e->d_type != DT_DIR || strncmp(e->d_name, "app-", 4) != 0 || !name[0] ||
		    strlen(name) > LEASE_APP_MAX || app_find(g, name))
			continue;
		char err[512];
		struct gate_app *a = app_new(g, name, NULL);
		if (!a)
			break;
		if (app_hook(g, a, err, sizeof(err)) < 0)
			log_error("app %s: %s", name, err);
		else
			adopt_parked(g, a);
	}
	closedir(dir);
}

static int refuse_or_off(struct gate *g, enum gate_want want, char *err, size_t errlen,
			 const char *why)
{
	if (want != GATE_WANT_AUTO)
		return fail(err, errlen, -1, "cannot gate devices: %s", why);
	g->mode = GATE_OFF;
	(void) fmt(g->why_off, sizeof(g->why_off), "%s", why);
	return 0;
}

int gate_open(struct gate *g, const struct gate_config *cfg, const struct inventory *inv,
	      struct event_base *base, char *err, size_t errlen)
{
	memset(g, 0, sizeof(*g));
	g->gated_map = -1;
	snprintf(g->cgroup_root, sizeof(g->cgroup_root), "%s", cfg->cgroup_root);
	char why[1024];
	if (cfg->want == GATE_WANT_OFF) {
		snprintf(g->why_off, sizeof(g->why_off), "the settings turn it off (gate = off)");
		return 0;
	}
	if (geteuid() != 0)
		return refuse_or_off(g, cfg->want, err, errlen,
				     "zerogpud does not run as root, and only root can gate "
				     "devices");
	if (inv->count == 0)
		return refuse_or_off(g, cfg->want, err, errlen, "there are no devices to gate");
	if (devnodes_find(&g->nodes, inv, cfg->device_dir, cfg->mig_minors, why, sizeof(why)) < 0)
		return refuse_or_off(g, cfg->want, err, errlen, why);
	if (cgroup_find_mounts(&g->mounts) < 0)
		return refuse_or_off(g, cfg->want, err, errlen,
				     "cannot read /proc/self/mountinfo to find the cgroups");
	if (choose_mode(g, cfg->want, why, sizeof(why)) < 0)
		return refuse_or_off(g, cfg->want, err, errlen, why);

	for (int i = 0; i < cfg->ncgroups; i++) {
		struct gate_app *a = app_new(g, cfg->cgroups[i].app, cfg->cgroups[i].path);
		if (!a)
			return fail(err, errlen, -1, "out of memory");
		char why_app[512];
		if (app_hook(g, a, why_app, sizeof(why_app)) < 0)
			log_warn("%s", why_app);
		else
			adopt_parked(g, a);
	}
	adopt_managed(g);
	if (cfg->ncgroups > 0) {
		g->recheck = event_new(base, -1, EV_PERSIST, on_recheck, g);
		struct timeval tv = {.tv_sec = RECHECK_S};
		if (!g->recheck || event_add(g->recheck, &tv) < 0)
			return fail(err, errlen, -1, "out of memory");
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Parking and letting go.
 * ------------------------------------------------------------------------ */

static struct parked *find_parked(struct gate_app *a, pid_t pid)
{
	for (int i = 0; i < a->nparked; i++)
		if (a->parked[i].proc.pid == pid && proc_alive(&a->parked[i].proc))
			return &a->parked[i];
	return NULL;
}

static void park(struct gate *g, struct gate_app *a, pid_t pid, const char *node)
{
	struct lease_process p;
	if (a->nparked == a->capparked) {
		int cap = a->capparked ? 2 * a->capparked : 8;
		struct parked *more = realloc(a->parked, (size_t) cap * sizeof(*more));
		if (!more) {
			log_error("app %s: out of memory parking process %d", a->name, (int) pid);
			return;
		}
		a->parked = more;
		a->capparked = cap;
	}
	if (proc_hold(pid, &p) < 0)
		return;
	struct parked *e = &a->parked[a->nparked];
	*e = (struct parked){.proc = p};
	char rel[PATH_MAX];
	const char *mount = g->freeze_v2 ? g->mounts.v2 : g->mounts.freezer;
	if (a->parked_path[0] &&
	    cgroup_of_pid(pid, g->freeze_v2 ? "" : "freezer", rel, sizeof(rel)) == 0 &&
	    fmt(e->origin, sizeof(e->origin), "%s%s", mount, strcmp(rel, "/") ? rel : "") == 0 &&
	    cgroup_join(a->parked_path, pid) == 0) {
		/* frozen */
	} else if (proc_signal(&p, SIGSTOP) == 0) {
		e->stopped = true;
	} else {
		log_warn("app %s: cannot park process %d, which holds %s", a->name, (int) pid,
			 node);
		proc_drop(&p);
		return;
	}
	a->nparked++;
	g->parks++;
	log_info("app %s: parked process %d (%s), which holds %s after its lease ended", a->name,
		 (int) pid, e->stopped ? "SIGSTOP" : "frozen", node);
}

/* The first node in held[] that a does not hold, or -1. */
static int unheld_node(const struct gate *g, const struct gate_app *a, const bool *held)
{
	for (int i = 0; i < g->nodes.count; i++)
		if (held[i] && !a->holds[i])
			return i;
	return -1;
}

static void park_holders(struct gate *g, struct gate_app *a, const struct lease_process *worker)
{
	pid_t *pids = malloc(SCAN_MAX * sizeof(*pids));
	if (!pids) {
		log_error("app %s: out of memory looking for processes to park", a->name);
		return;
	}
	/* Ours hold processes only in the app's cgroup and its parked child (cgroupfs is
	 * root's), whose processes are parked already; an operator's may have a tree. */
	int n = cgroup_procs(a->path, a->configured, pids, SCAN_MAX - 1);
	if (n < 0)
		n = 0;
	if (n > SCAN_MAX - 1) {
		log_warn("app %s has %d processes; only %d are checked for devices still open",
			 a->name, n, SCAN_MAX - 1);
		n = SCAN_MAX - 1;
	}
	if (worker && worker->pid > 0 && proc_alive(worker))
		pids[n++] = worker->pid;
	bool held[DEVNODES_MAX];
	for (int i = 0; i < n; i++) {
		if (pids[i] == getpid() || find_parked(a, pids[i]))
			continue;
		if (proc_devices_held(pids[i], g->nodes.dev, g->nodes.count, held) <= 0)
			continue;
		int node = unheld_node(g, a, held);
		/* A process the lease service just killed is on its way out: frozen, it
		 * could not finish dying on v1's freezer. */
		if (node >= 0 && !proc_dying(pids[i]))
			park(g, a, pids[i], g->nodes.path[node]);
	}
	free(pids);
}

static void unpark_eligible(struct gate *g, struct gate_app *a)
{
	bool held[DEVNODES_MAX];
	for (int i = 0; i < a->nparked;) {
		struct parked *e = &a->parked[i];
		int h = proc_alive(&e->proc)
				? proc_devices_held(e->proc.pid, g->nodes.dev, g->nodes.count, held)
				: -ESRCH;
		if (h >= 0 && unheld_node(g, a, held) >= 0) {
			i++; /* still holds a node its app does not: stays parked */
			continue;
		}
		if (h >= 0) {
			int r = e->stopped ? proc_signal(&e->proc, SIGCONT)
					   : cgroup_join(e->origin, e->proc.pid);
			if (r < 0 && !e->stopped)
				r = cgroup_join(home_of(g, a), e->proc.pid);
			if (r < 0)
				log_warn("app %s: cannot let process %d go: %s", a->name,
					 (int) e->proc.pid, strerror(-r));
			else
				log_info("app %s: process %d runs again", a->name,
					 (int) e->proc.pid);
			g->unparks++;
		}
		proc_drop(&e->proc);
		a->parked[i] = a->parked[--a->nparked];
	}
}

/* ------------------------------------------------------------------------
 * Grants, revokes, joins.
 * ------------------------------------------------------------------------ */

/* The leases the gate has opened devices for: a revoke undoes exactly what its grant did. */
struct gate_lease {
	char id[LEASE_ID_LEN + 1];
	struct gate_app *app;
	int ndevices;
	int devices[INV_MAX_DEVICES];
};

static struct gate_lease *find_lease(struct gate *g, const char *id)
{
	for (int i = 0; i < g->nleases; i++)
		if (strcmp(g->leases[i].id, id) == 0)
			return &g->leases[i];
	return NULL;
}

/* Gives back one hold of each node of devices[0..n); returns whether a node became free
 * (and was denied). */
static bool release_nodes(struct gate *g, struct gate_app *a, const int *devices, int n)
{
	bool revoked = false;
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < DEVNODES_PER_DEVICE; k++) {
			int node = g->nodes.of_device[devices[i]][k];
			if (node < 0 || !a->holds[node] || --a->holds[node])
				continue;
			int r = a->ready ? set_node(g, a, node, false) : 0;
			if (r < 0 && r != -ENOENT)
				log_error("app %s: cannot deny %s: %s", a->name,
					  g->nodes.path[node], strerror(-r));
			revoked = true;
		}
	}
	return revoked;
}

/* Takes one hold of each node of devices[0..n) for a; the nodes that become held are
 * allowed. 0, or -errno with err (the holds taken are given back). */
static int hold_nodes(struct gate *g, struct gate_app *a, const int *devices, int n, char *err,
		      size_t errlen)
{
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < DEVNODES_PER_DEVICE; k++) {
			int node = g->nodes.of_device[devices[i]][k];
			if (node < 0)
				continue;
			if (a->holds[node]++ || !a->ready)
				continue;
			int r = set_node(g, a, node, true);
			if (r == 0)
				continue;
			fail(err, errlen, r, "cannot allow %s to app %s: %s", g->nodes.path[node],
			     a->name, strerror(-r));
			/* Give back what this call took: the devices before i, this one's
			 * nodes up to and including k. */
			release_nodes(g, a, devices, i);
			for (int kk = 0; kk <= k; kk++)
				if ((node = g->nodes.of_device[devices[i]][kk]) >= 0 &&
				    --a->holds[node] == 0 && kk < k)
					(void) set_node(g, a, node, false);
			return r;
		}
	}
	return 0;
}

int gate_grant(struct gate *g, const char *lease, const char *app, const int *devices, int n,
	       char *err, size_t errlen)
{
	if (g->mode == GATE_OFF)
		return 0;
	if (n > INV_MAX_DEVICES || find_lease(g, lease))
		return fail(err, errlen, -EINVAL, "lease %s is already granted", lease);
	struct gate_app *a = app_get(g, app, err, errlen);
	if (!a)
		return -1;
	if (g->nleases == g->capleases) {
		int cap = g->capleases ? 2 * g->capleases : 32;
		struct gate_lease *more = realloc(g->leases, (size_t) cap * sizeof(*more));
		if (!more)
			return fail(err, errlen, -ENOMEM, "out of memory");
		g->leases = more;
		g->capleases = cap;
	}
	if (hold_nodes(g, a, devices, n, err, errlen) < 0)
		return -1;
	struct gate_lease *gl = &g->leases[g->nleases++];
	snprintf(gl->id, sizeof(gl->id), "%s", lease);
	gl->app = a;
	gl->ndevices = n;
	memcpy(gl->devices, devices, (size_t) n * sizeof(*devices));
	if (a->nparked)
		unpark_eligible(g, a);
	return 0;
}

void gate_revoke(struct gate *g, const char *lease, const struct lease_process *worker)
{
	struct gate_lease *gl = find_lease(g, lease);
	if (!gl)
		return; /* not gating, or its grant failed: nothing was opened */
	struct gate_app *a = gl->app;
	bool revoked = release_nodes(g, a, gl->devices, gl->ndevices);
	*gl = g->leases[--g->nleases];
	if (revoked && a->ready)
		park_holders(g, a, worker);
}

int gate_join(struct gate *g, const char *app, pid_t pid, char *err, size_t errlen)
{
	if (g->mode == GATE_OFF)
		return fail(err, errlen, -EOPNOTSUPP, "zerogpud does not gate devices: %s",
			    g->why_off);
	struct gate_app *a = app_get(g, app, err, errlen);
	if (!a)
		return -EIO;
	if (!a->ready)
		return fail(err, errlen, -ENOENT, "app %s's cgroup %s does not exist", app,
			    a->path);
	/* Out of another app's cgroup, a process would take what it has open along;
	 * out of the frozen cgroup, it would run again. */
	const char *now_in = gate_app_of_pid(g, pid);
	if (now_in && strcmp(now_in, app) != 0)
		return fail(err, errlen, -EPERM,
			    "process %d runs in app %s's cgroup; it cannot move to another app",
			    (int) pid, now_in);
	for (int i = 0; i < g->napps; i++)
		if (find_parked(g->apps[i], pid))
			return fail(err, errlen, -EBUSY,
				    "process %d is parked: it holds a GPU its app no longer holds, "
				    "and runs again when app %s is granted that GPU",
				    (int) pid, g->apps[i]->name);
	int r = cgroup_join(a->path, pid);
	if (r == 0 && a->freeze_path[0] && strcmp(a->freeze_path, a->path) != 0)
		r = cgroup_join(a->freeze_path, pid);
	if (r < 0)
		return fail(err, errlen, r, "cannot move process %d into %s: %s", (int) pid,
			    a->path, strerror(-r));
	return 0;
}

/* ------------------------------------------------------------------------
 * Who is calling: an app's processes are known by their cgroup.
 * ------------------------------------------------------------------------ */

const char *gate_app_of_pid(struct gate *g, pid_t pid)
{
	char rel[PATH_MAX];
	if (g->mode == GATE_OFF || pid <= 0 ||
	    cgroup_of_pid(pid, g->mode == GATE_CGROUP_V2 ? "" : "devices", rel, sizeof(rel)) < 0)
		return NULL;
	for (int i = 0; i < g->napps; i++)
		if (path_within(rel, g->apps[i]->rel))
			return g->apps[i]->name;
	return NULL;
}

/* Whether the cgroup2 subtree at path holds a directory with inode id. */
static bool subtree_has(const char *path, uint64_t id, int depth)
{
	DIR *dir = depth > 0 ? opendir(path) : NULL;
	if (!dir)
		return false;
	struct dirent *e;
	bool found = false;
	while (!found && (e = readdir(dir))) {
		if (e->d_type != DT_DIR || e->d_name[0] == '.')
			continue;
		char child[PATH_MAX];
		if (snprintf(child, sizeof(child), "%s/%s", path, e->d_name) >= (int) sizeof(child))
			continue;
		found = e->d_ino == id || subtree_has(child, id, depth - 1);
	}
	closedir(dir);
	return found;
}

const char *gate_app_of_cgroup_id(struct gate *g, uint64_t id)
{
	if (g->mode == GATE_OFF || id == 0)
		return NULL;
	for (int i = 0; i < g->napps; i++)
		if (g->apps[i]->v2_ids[0] == id || g->apps[i]->v2_ids[1] == id)
			return g->apps[i]->name;
	/* An operator's cgroup may have children of its own (a container's). */
	for (int i = 0; i < g->napps; i++) {
		struct gate_app *a = g->apps[i];
		if (a->configured && g->mode == GATE_CGROUP_V2 && a->ready &&
		    subtree_has(a->path, id, 8))
			return a->name;
	}
	return NULL;
}

void gate_identify_peer(void *gate, struct conn_peer *peer)
{
	struct gate *g = gate;
	const char *app = peer->pid > 0	    ? gate_app_of_pid(g, peer->pid)
			  : peer->cgroup_id ? gate_app_of_cgroup_id(g, peer->cgroup_id)
					    : NULL;
	snprintf(peer->cgroup_app, sizeof(peer->cgroup_app), "%s", app ? app : "");
}

int gate_parked(const struct gate *g)
{
	int n = 0;
	for (int i = 0; i < g->napps; i++)
		n += g->apps[i]->nparked;
	return n;
}

void gate_let_go(struct gate *g, pid_t pid)
{
	for (int k = 0; k < g->napps; k++) {
		struct gate_app *a = g->apps[k];
		for (int i = 0; i < a->nparked; i++) {
			struct parked *e = &a->parked[i];
			if (e->proc.pid != pid)
				continue;
			/* SIGKILL wakes a stopped process by itself; a frozen one must thaw. */
			if (!e->stopped && cgroup_join(e->origin, pid) < 0)
				(void) cgroup_join(home_of(g, a), pid);
			proc_drop(&e->proc);
			a->parked[i] = a->parked[--a->nparked];
			return;
		}
	}
}

void gate_close(struct gate *g)
{
	if (g->recheck)
		event_free(g->recheck);
	g->recheck = NULL;
	for (int i = 0; i < g->napps; i++) {
		struct gate_app *a = g->apps[i];
		pid_t one;
		bool empty = cgroup_procs(a->path, true, &one, 1) == 0 &&
			     (!a->freeze_path[0] ||
			      cgroup_procs(a->freeze_path, true, &one, 1) == 0);
		app_unhook(a);
		if (!a->configured && empty) {
			(void) cgroup_remove(a->path);
			if (a->freeze_path[0] && strcmp(a->freeze_path, a->path) != 0)
				(void) cgroup_remove(a->freeze_path);
		} else if (a->configured && a->parked_path[0] &&
			   cgroup_procs(a->parked_path, false, &one, 1) == 0) {
			(void) cgroup_remove(a->parked_path);
		}
		for (int k = 0; k < a->nparked; k++)
			proc_drop(&a->parked[k].proc);
		free(a->parked);
		free(a);
	}
	free(g->apps);
	g->apps = NULL;
	free(g->leases);
	g->leases = NULL;
	g->nleases = g->capleases = 0;
	g->napps = g->capapps = 0;
	if (g->mode != GATE_OFF) {
		(void) rmdir(g->root);
		if (g->freeze_root[0] && strcmp(g->freeze_root, g->root) != 0)
			(void) rmdir(g->freeze_root);
	}
	if (g->gated_map >= 0)
		close(g->gated_map);
	g->gated_map = -1;
}
