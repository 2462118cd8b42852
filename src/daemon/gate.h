/*
 * gate — hard device gating: a process of app A can open GPU k's device
 * nodes only while a lease of A holds k (docs/security.md).
 *
 * The unit of isolation is the app, as on the hosted service. Each app has a
 * cgroup the daemon gates: one it makes, <hierarchy>/<cgroup_root>/app-NAME
 * (`zerogpu launch` and `zerogpu run` put processes there), or one the
 * operator names (`[apps] NAME cgroup = PATH`: a container's). On cgroup v2 a
 * BPF program on that cgroup checks every open of a lent node against the
 * app's map of allowed nodes (devbpf.h); on v1 the cgroup's devices.deny and
 * devices.allow files do. The lease service calls gate_grant() before a grant
 * reaches its client and gate_revoke() when a lease ends, which is before its
 * devices are lent again.
 *
 * Revoking does not close what is already open: a process of the app that
 * still holds a node its app no longer holds is parked — moved into the app's
 * frozen `parked` cgroup (SIGSTOP where no freezer can be had) — and let go
 * when its app holds every lent node it has open again (the idle worker of
 * the next call). Processes the lease service killed are not parked.
 *
 * A daemon that starts, after a crash too, gates every app cgroup it finds
 * with nothing allowed: no lease outlives a restart. Its programs stay
 * attached when it exits, so a stopped daemon leaves the gates closed.
 */
#ifndef ZGPU_DAEMON_GATE_H
#define ZGPU_DAEMON_GATE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>

#include "daemon/conn.h"
#include "daemon/core/devices.h"
#include "daemon/core/lease.h"
#include "daemon/sys/cgroup.h"
#include "daemon/sys/devnodes.h"

enum gate_mode { GATE_OFF, GATE_CGROUP_V1, GATE_CGROUP_V2 };

/* What the settings ask for: auto (gate when it can), cgroup (gate or refuse to
 * start), one cgroup version, or off. */
enum gate_want { GATE_WANT_AUTO, GATE_WANT_CGROUP, GATE_WANT_V1, GATE_WANT_V2, GATE_WANT_OFF };

/* [apps] NAME cgroup = PATH: an app's existing cgroup, as /proc/PID/cgroup shows it. */
struct gate_cgroup_setting {
	char app[LEASE_APP_MAX + 1];
	char path[PATH_MAX];
};

struct gate_config {
	enum gate_want want;
	const char *device_dir;	 /* where the device nodes are: /dev */
	const char *cgroup_root; /* the daemon's cgroup under each hierarchy's root: zerogpu */
	const char *mig_minors;	 /* /proc/driver/nvidia-caps/mig-minors */
	const struct gate_cgroup_setting *cgroups;
	int ncgroups;
};

struct gate_app;
struct gate_lease;

/* The gate's state; only gate.c changes it. */
struct gate {
	enum gate_mode mode;
	char why_off[512]; /* with GATE_OFF: why, for the log and the status */
	struct cgroup_mounts mounts;
	char root[PATH_MAX];	    /* managed apps' parent in the gating hierarchy */
	char freeze_root[PATH_MAX]; /* and in the freezing one; "" when parking is by SIGSTOP */
	bool freeze_v2;		    /* the freezing hierarchy is cgroup2 (else v1's freezer) */
	char cgroup_root[NAME_MAX + 1];
	int gated_map; /* v2: every lent node, shared by the apps' programs */
	struct devnodes nodes;
	struct gate_app **apps;
	int napps, capapps;
	struct gate_lease *leases; /* what each granted lease opened */
	int nleases, capleases;
	struct event *recheck;	 /* configured cgroups a container runtime may remake */
	uint64_t parks, unparks; /* processes parked and let go since the start */
};

/*
 * Decides the mode (cfg->want against this machine: root, the cgroup mounts,
 * the kernel's BPF, the device nodes) and gates every app cgroup found with
 * nothing allowed. Returns 0 (mode GATE_OFF with why_off when it will not
 * gate: cfg off, or auto and it cannot), or -1 with the reason in err when
 * gating was required and cannot work. base carries the re-check timer.
 */
int gate_open(struct gate *g, const struct gate_config *cfg, const struct inventory *inv,
	      struct event_base *base, char *err, size_t errlen);

/* "cgroup-v2", "cgroup-v1" or "off". */
const char *gate_mode_name(const struct gate *g);

/*
 * Opens the nodes of the inventory devices[0..n) to app's cgroup for lease,
 * and lets go of the app's parked processes that now hold only nodes their
 * app holds. Returns 0 (also when not gating), or -1 with the reason in err:
 * then nothing was opened, and revoking the lease does nothing.
 */
int gate_grant(struct gate *g, const char *lease, const char *app, const int *devices, int n,
	       char *err, size_t errlen);

/*
 * Undoes lease's grant: a node no lease of its app holds any more is denied,
 * and every process of the app still holding one is parked — the app's own
 * and worker (the lease's attached process, which may run outside the app's
 * cgroup; may be NULL). Never fails: what cannot be done is logged.
 */
void gate_revoke(struct gate *g, const char *lease, const struct lease_process *worker);

/* Moves pid into app's cgroup (made if need be). 0, or -errno with the reason in err
 * (-EOPNOTSUPP: not gating). */
int gate_join(struct gate *g, const char *app, pid_t pid, char *err, size_t errlen);

/* The app whose gated cgroup pid runs in, or NULL. Valid until the next gate call. */
const char *gate_app_of_pid(struct gate *g, pid_t pid);
/* The same for a cgroup2 id (a TCP peer's socket: peer.h). */
const char *gate_app_of_cgroup_id(struct gate *g, uint64_t id);

/* conn.h's identify hook (ctx: the gate): a new peer's app, from its process's cgroup
 * (the Unix socket) or its socket's (loopback TCP). */
void gate_identify_peer(void *gate, struct conn_peer *peer);

/* How many processes are parked now. */
int gate_parked(const struct gate *g);

/* The lease service has just killed pid (an evicted resident): if it is parked, it is
 * let out of the freezer, so that the kill takes effect (v1's freezer holds even a
 * killed process), and no longer counted as parked. */
void gate_let_go(struct gate *g, pid_t pid);

/* Shutdown: removes the managed cgroups no process is left in; the others stay
 * gated with nothing allowed. Frees what the gate holds. */
void gate_close(struct gate *g);

#endif
