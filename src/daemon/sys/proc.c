#include "daemon/sys/proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <unistd.h>

/* Reads /proc/PID/NAME into buf (NUL-terminated). Returns its length or -ESRCH. */
static ssize_t read_proc_file(pid_t pid, const char *name, char *buf, size_t size)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int) pid, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -ESRCH;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	return n;
}

int proc_start_time(pid_t pid, uint64_t *out)
{
	char buf[1024];
	if (pid <= 0 || read_proc_file(pid, "stat", buf, sizeof(buf)) < 0)
		return -ESRCH;
	/* The command name (field 2) may hold spaces and parentheses: the fields
	 * resume after the last ')'. p moves from the space before field 3 to the
	 * space before field 22, the start time. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -ESRCH;
	p++;
	for (int field = 3; field < 22 && p; field++)
		p = strchr(p + 1, ' ');
	if (!p)
		return -ESRCH;
	*out = strtoull(p + 1, NULL, 10);
	return 0;
}

int proc_owner(pid_t pid, uid_t *uid)
{
	char buf[4096];
	if (pid <= 0 || read_proc_file(pid, "status", buf, sizeof(buf)) < 0)
		return -ESRCH;
	const char *line = strstr(buf, "\nUid:");
	unsigned long real, effective, saved;
	if (!line || sscanf(line + 5, "%lu %lu %lu", &real, &effective, &saved) != 3)
		return -ESRCH;
	if (real != effective || real != saved)
		return -EPERM;
	*uid = (uid_t) real;
	return 0;
}

int proc_hold(pid_t pid, struct lease_process *out)
{
	*out = LEASE_PROCESS_NONE;
	if (pid <= 0)
		return -ESRCH;
	int fd = pidfd_open(pid, 0);
	if (fd < 0 && errno != ENOSYS)
		return -errno;
	uint64_t start;
	pid_t pgid = getpgid(pid);
	if (pgid < 0 || proc_start_time(pid, &start) < 0) {
		if (fd >= 0)
			close(fd);
		return -ESRCH;
	}
	*out = (struct lease_process){.pid = pid, .pgid = pgid, .start = start, .pidfd = fd};
	/* What was read after the pidfd is about its process only if it still runs. */
	if (!proc_alive(out)) {
		proc_drop(out);
		return -ESRCH;
	}
	return 0;
}

bool proc_alive(const struct lease_process *p)
{
	if (p->pid <= 0)
		return false;
	if (p->pidfd >= 0)
		return pidfd_send_signal(p->pidfd, 0, NULL, 0) == 0;
	uint64_t start;
	return proc_start_time(p->pid, &start) == 0 && start == p->start;
}

/* The group only when the process leads it (as `zerogpu run` arranges): a
 * process sharing its parent's group would otherwise take its parent, the app
 * itself, down with it. Never our own group. */
static bool kill_whole_group(pid_t pid, pid_t pgid)
{
	return pgid == pid && pgid > 1 && pgid != getpgrp();
}

int proc_kill(const struct lease_process *p)
{
	if (p->pid <= 1 || !proc_alive(p))
		return -ESRCH;
	/* The leader was alive just now, so its pid still names its group. */
	if (kill_whole_group(p->pid, p->pgid) && kill(-p->pgid, SIGKILL) == 0)
		return 1;
	if (p->pidfd >= 0)
		return pidfd_send_signal(p->pidfd, SIGKILL, NULL, 0) == 0 ? 0 : -errno;
	return kill(p->pid, SIGKILL) == 0 ? 0 : -errno;
}

int proc_devices_held(pid_t pid, const dev_t *devs, int n, bool *held)
{
	char dir[64];
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int) pid);
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? -ESRCH : -errno;
	for (int i = 0; i < n; i++)
		held[i] = false;
	int dfd = dirfd(d), found = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		struct stat st;
		/* stat follows the descriptor's link to what it opened: no open() needed. */
		if (e->d_name[0] == '.' || fstatat(dfd, e->d_name, &st, 0) < 0 ||
		    !S_ISCHR(st.st_mode))
			continue;
		for (int i = 0; i < n; i++) {
			if (st.st_rdev == devs[i] && !held[i]) {
				held[i] = true;
				found++;
			}
		}
	}
	closedir(d);
	return found;
}

bool proc_dying(pid_t pid)
{
	char buf[4096];
	if (read_proc_file(pid, "status", buf, sizeof(buf)) < 0)
		return true;
	const char *state = strstr(buf, "\nState:");
	char code;
	if (state && sscanf(state + 7, " %c", &code) == 1 && (code == 'Z' || code == 'X'))
		return true;
	/* SIGKILL pending, for the thread or for the whole process. */
	const unsigned long long kill_bit = 1ULL << (SIGKILL - 1);
	const char *names[] = {"\nSigPnd:", "\nShdPnd:"};
	for (int i = 0; i < 2; i++) {
		const char *line = strstr(buf, names[i]);
		if (line && (strtoull(line + strlen(names[i]), NULL, 16) & kill_bit))
			return true;
	}
	return false;
}

int proc_signal(const struct lease_process *p, int sig)
{
	if (p->pid <= 1 || !proc_alive(p))
		return -ESRCH;
	if (p->pidfd >= 0)
		return pidfd_send_signal(p->pidfd, sig, NULL, 0) == 0 ? 0 : -errno;
	return kill(p->pid, sig) == 0 ? 0 : -errno;
}

void proc_drop(struct lease_process *p)
{
	if (p->pidfd >= 0)
		close(p->pidfd);
	*p = LEASE_PROCESS_NONE;
}

int proc_kill_started(pid_t pid, pid_t pgid, uint64_t start)
{
	struct lease_process p = {.pid = pid, .pgid = pgid, .start = start, .pidfd = -1};
	return proc_kill(&p);
}
