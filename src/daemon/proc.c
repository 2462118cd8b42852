#include "daemon/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int proc_start_time(pid_t pid, uint64_t *out)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -ESRCH;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
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

int proc_kill(pid_t pid, pid_t pgid)
{
	/* The whole group only when the process leads it (as `zerogpu run` arranges):
	 * a process sharing its parent's group would otherwise take its parent, the
	 * app itself, down with it. Never our own group. */
	if (pgid == pid && pgid > 1 && pgid != getpgrp() && kill(-pgid, SIGKILL) == 0)
		return 1;
	if (pid > 1 && kill(pid, SIGKILL) == 0)
		return 0;
	return -errno;
}
