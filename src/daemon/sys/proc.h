/*
 * proc — the processes attached to leases: who owns them, identity across
 * restarts, and killing exactly them.
 *
 * A pid names a process only until it dies and the number is reused; the
 * daemon kills what is attached minutes later. So a process is held by a
 * pidfd (pidfd_open): a signal sent through it reaches that process or
 * nothing. Where the kernel gives no pidfd (before Linux 5.3), the start time
 * read at attach is checked again right before the signal.
 */
#ifndef ZGPU_DAEMON_SYS_PROC_H
#define ZGPU_DAEMON_SYS_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/core/lease.h" /* struct lease_process: one process the daemon may signal */

/*
 * The start time of pid (field 22 of /proc/PID/stat, clock ticks since boot):
 * with the pid, it names one process even after the pid is reused.
 * Returns 0, or -ESRCH when no such process exists.
 */
int proc_start_time(pid_t pid, uint64_t *out);

/*
 * The one user pid runs as: its real, effective and saved uids when all three
 * agree. Returns 0; -EPERM when they differ (a set-uid program: it belongs to
 * no single user, and only root may have it killed); -ESRCH when it is gone.
 */
int proc_owner(pid_t pid, uid_t *uid);

/*
 * Takes hold of pid: a pidfd (close-on-exec), its process group and start
 * time. Returns 0, -ESRCH when there is no such process, or -errno. The
 * caller closes it with proc_drop(). Anything learnt about the pid from
 * /proc after this call is about the held process if proc_alive() still
 * says so afterwards.
 */
int proc_hold(pid_t pid, struct lease_process *out);

/* Whether the held process still runs (not reaped, and not a newcomer). */
bool proc_alive(const struct lease_process *p);

/*
 * SIGKILLs the held process, and its whole process group when it leads one
 * (pgid == pid), never the caller's own group. Returns 1 when the group was
 * signalled, 0 for the process alone, -ESRCH when it is gone (its pid may
 * belong to another process by now: nothing is signalled), or -errno.
 */
int proc_kill(const struct lease_process *p);

/*
 * Which of the character devices devs[0..n) pid has open (a descriptor in
 * /proc/PID/fd): held[i] says for devs[i]. Returns how many, or -errno
 * (-ESRCH: gone).
 */
int proc_devices_held(pid_t pid, const dev_t *devs, int n, bool *held);

/* Whether pid is exiting or already a zombie, or has a SIGKILL on its way (or is gone). */
bool proc_dying(pid_t pid);

/* Sends sig to the held process alone (through its pidfd). 0, -ESRCH when gone, or -errno. */
int proc_signal(const struct lease_process *p, int sig);

/* Closes the pidfd, if any; p becomes LEASE_PROCESS_NONE. Accepts an empty ref. */
void proc_drop(struct lease_process *p);

/*
 * SIGKILLs pid (and its group when it leads one) if the process with that pid
 * still has start time `start` — for processes a previous run attached, whose
 * pidfds died with it. Returns as proc_kill().
 */
int proc_kill_started(pid_t pid, pid_t pgid, uint64_t start);

#endif
