/*
 * cgroup — the few things the daemon does with cgroups, on either version:
 * find the hierarchies, make and remove cgroups, move a process in, list who
 * is inside, freeze and thaw, and the v1 devices controller's allow/deny
 * files. Plain file I/O on cgroupfs (the kernel answers at once).
 */
#ifndef ZGPU_DAEMON_SYS_CGROUP_H
#define ZGPU_DAEMON_SYS_CGROUP_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct cgroup_mounts {
	char v2[PATH_MAX];	/* the cgroup2 mount ("" when none), e.g. /sys/fs/cgroup/unified */
	char devices[PATH_MAX]; /* the v1 devices controller's mount, or "" */
	char freezer[PATH_MAX]; /* the v1 freezer controller's mount, or "" */
};

/* Reads the mounts from /proc/self/mountinfo. Returns 0, or -errno. */
int cgroup_find_mounts(struct cgroup_mounts *m);

/* Makes the cgroup at path and its missing parents. 0 or -errno. */
int cgroup_make(const char *path);

/* Moves pid into the cgroup at path. 0 or -errno (-ESRCH: no such process). */
int cgroup_join(const char *path, pid_t pid);

/*
 * The processes in the cgroup at path and, with recursive, in its descendants:
 * up to max into out. Returns how many there are (which may exceed max), or
 * -errno.
 */
int cgroup_procs(const char *path, bool recursive, pid_t *out, int max);

/* Freezes or thaws the cgroup at path: v2 (cgroup.freeze) or v1 (freezer.state). */
int cgroup_freeze(const char *path, bool v2, bool frozen);

/* Removes the cgroup at path and its descendants, deepest first; each must be
 * empty of processes. 0 (also when it was not there) or -errno. */
int cgroup_remove(const char *path);

/* v1 devices controller: allows or denies a character device to the cgroup at path. */
int cgroup_v1_device(const char *path, bool allow, unsigned major, unsigned minor);

/* The same for path and, for a grant, each of its descendants (v1 grants are not
 * inherited; denies are). */
int cgroup_v1_device_tree(const char *path, bool allow, unsigned major, unsigned minor);

/* A cgroup2 directory's id (its inode number: what the kernel reports as a socket's
 * cgroup), or 0 when path is not a directory. */
uint64_t cgroup_id(const char *path);

/*
 * Where pid is in the hierarchy: its v2 path (hierarchy "") or the path of the
 * v1 controller named, relative to the hierarchy's root ("/" at the top), as
 * /proc/PID/cgroup says. 0 or -errno.
 */
int cgroup_of_pid(pid_t pid, const char *controller, char *out, size_t size);

#endif
