/*
 * devbpf — cgroup v2 device gating with one BPF program per gated cgroup.
 *
 * The program (BPF_PROG_TYPE_CGROUP_DEVICE, attached with BPF_F_ALLOW_MULTI so
 * that a container runtime's own program on a child cannot lift it) looks an
 * opened device's (major, minor) up in two hash maps: `gated`, the nodes the
 * daemon lends (one map for the whole daemon), and `allowed`, the nodes this
 * cgroup's app holds a lease on now. A gated node not allowed is refused
 * (EPERM); every other device is left alone. A grant or a revoke is one map
 * update: atomic, with no window in which the program is detached.
 *
 * Raw bpf() syscalls, as Slurm and crun do: the program is 14 instructions,
 * and no libbpf is needed.
 */
#ifndef ZGPU_DAEMON_SYS_DEVBPF_H
#define ZGPU_DAEMON_SYS_DEVBPF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define DEVBPF_PROG_NAME "zgpu_gate" /* how a restarted daemon finds its programs */

/* A map of device numbers (major, minor) -> present. Returns its fd, or -errno. */
int devbpf_map_create(size_t max_entries);
/* Adds (present) or removes a device in the map. 0 or -errno (-ENOENT removing one absent). */
int devbpf_map_set(int map_fd, unsigned major, unsigned minor, bool present);

/* Loads the gating program over the two maps. Returns its fd, or -errno with the
 * verifier's words in err. */
int devbpf_prog_load(int gated_map_fd, int allowed_map_fd, char *err, size_t errlen);

/* Attaches prog to the cgroup directory cgroup_fd (alongside others), or detaches it. */
int devbpf_attach(int cgroup_fd, int prog_fd);
int devbpf_detach(int cgroup_fd, int prog_fd);

/* Detaches every program named DEVBPF_PROG_NAME from the cgroup (a previous run's)
 * but keep_prog_fd's (-1: none kept). Returns how many, or -errno. */
int devbpf_detach_stale(int cgroup_fd, int keep_prog_fd);

#endif
