/* proc — the processes attached to leases: identity across restarts, and killing them. */
#ifndef ZGPU_DAEMON_PROC_H
#define ZGPU_DAEMON_PROC_H

#include <stdint.h>
#include <sys/types.h>

/*
 * The start time of pid (field 22 of /proc/PID/stat, clock ticks since boot):
 * with the pid, it names one process even after the pid is reused.
 * Returns 0, or -ESRCH when no such process exists.
 */
int proc_start_time(pid_t pid, uint64_t *out);

/*
 * SIGKILLs pid, and its whole process group when it leads one (pgid == pid),
 * never the caller's own group. Returns 1 when the group was signalled, 0 for
 * the process alone, -errno when neither could be (-ESRCH: already gone).
 */
int proc_kill(pid_t pid, pid_t pgid);

#endif
