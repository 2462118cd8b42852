#include "daemon/sys/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/mkdir_p.h"

int cgroup_find_mounts(struct cgroup_mounts *m)
{
	memset(m, 0, sizeof(*m));
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	char line[4096];
	while (fgets(line, sizeof(line), f)) {
		/* id parent major:minor root mountpoint options... - fstype source superopts */
		char root[PATH_MAX], point[PATH_MAX], fstype[64], super[1024];
		const char *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %*s %4095s %4095s", root, point) != 2 ||
		    sscanf(dash + 3, "%63s %*s %1023s", fstype, super) != 2)
			continue;
		if (strcmp(root, "/") != 0) /* a bind mount of a sub-cgroup: not the hierarchy */
			continue;
		if (strcmp(fstype, "cgroup2") == 0 && !m->v2[0]) {
			snprintf(m->v2, sizeof(m->v2), "%s", point);
		} else if (strcmp(fstype, "cgroup") == 0) {
			char opts[1100];
			snprintf(opts, sizeof(opts), ",%s,", super);
			if (strstr(opts, ",devices,") && !m->devices[0])
				snprintf(m->devices, sizeof(m->devices), "%s", point);
			if (strstr(opts, ",freezer,") && !m->freezer[0])
				snprintf(m->freezer, sizeof(m->freezer), "%s", point);
		}
	}
	fclose(f);
	return 0;
}

int cgroup_make(const char *path)
{
	return mkdir_p(path, 0755);
}

static int write_file(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, text, strlen(text));
	int r = n == (ssize_t) strlen(text) ? 0 : n < 0 ? -errno : -EIO;
	close(fd);
	return r;
}

int cgroup_join(const char *path, pid_t pid)
{
	char text[32];
	snprintf(text, sizeof(text), "%d\n", (int) pid);
	return write_file(path, "cgroup.procs", text);
}

static int add_procs(const char *path, pid_t *out, int max, int n)
{
	char file[PATH_MAX + 32];
	snprintf(file, sizeof(file), "%s/cgroup.procs", path);
	FILE *f = fopen(file, "re");
	if (!f)
		return -errno;
	long pid;
	while (fscanf(f, "%ld", &pid) == 1) {
		if (n < max)
			out[n] = (pid_t) pid;
		n++;
	}
	fclose(f);
	return n;
}

static int walk_procs(const char *path, bool recursive, pid_t *out, int max, int n)
{
	n = add_procs(path, out, max, n);
	if (n < 0 || !recursive)
		return n;
	DIR *dir = opendir(path);
	if (!dir)
		return -errno;
	struct dirent *e;
	while (n >= 0 && (e = readdir(dir))) {
		if (e->d_type != DT_DIR || e->d_name[0] == '.')
			continue;
		char child[PATH_MAX];
		if (snprintf(child, sizeof(child), "%s/%s", path, e->d_name) >= (int) sizeof(child))
			continue;
		n = walk_procs(child, true, out, max, n);
	}
	closedir(dir);
	return n;
}

int cgroup_procs(const char *path, bool recursive, pid_t *out, int max)
{
	return walk_procs(path, recursive, out, max, 0);
}

int cgroup_freeze(const char *path, bool v2, bool frozen)
{
	if (v2)
		return write_file(path, "cgroup.freeze", frozen ? "1\n" : "0\n");
	return write_file(path, "freezer.state", frozen ? "FROZEN\n" : "THAWED\n");
}

int cgroup_remove(const char *path)
{
	DIR *dir = opendir(path);
	if (!dir)
		return errno == ENOENT ? 0 : -errno;
	struct dirent *e;
	int r = 0;
	while ((e = readdir(dir))) {
		if (e->d_type != DT_DIR || e->d_name[0] == '.')
			continue;
		char child[PATH_MAX];
		if (snprintf(child, sizeof(child), "%s/%s", path, e->d_name) >= (int) sizeof(child))
			continue;
		int c = cgroup_remove(child);
		if (c < 0 && r == 0)
			r = c;
	}
	closedir(dir);
	if (rmdir(path) < 0 && errno != ENOENT && r == 0)
		r = -errno;
	return r;
}

int cgroup_v1_device(const char *path, bool allow, unsigned major, unsigned minor)
{
	char rule[64];
	snprintf(rule, sizeof(rule), "c %u:%u rwm\n", major, minor);
	return write_file(path, allow ? "devices.allow" : "devices.deny", rule);
}

int cgroup_v1_device_tree(const char *path, bool allow, unsigned major, unsigned minor)
{
	int r = cgroup_v1_device(path, allow, major, minor);
	/* A deny on a cgroup reaches its children; a grant must be repeated on each,
	 * parents first (a child cannot be granted what its parent denies). */
	if (r < 0 || !allow)
		return r;
	DIR *dir = opendir(path);
	if (!dir)
		return -errno;
	struct dirent *e;
	while (r == 0 && (e = readdir(dir))) {
		if (e->d_type != DT_DIR || e->d_name[0] == '.')
			continue;
		char child[PATH_MAX];
		if (snprintf(child, sizeof(child), "%s/%s", path, e->d_name) >= (int) sizeof(child))
			continue;
		r = cgroup_v1_device_tree(child, true, major, minor);
	}
	closedir(dir);
	return r;
}

uint64_t cgroup_id(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? (uint64_t) st.st_ino : 0;
}

int cgroup_of_pid(pid_t pid, const char *controller, char *out, size_t size)
{
	char file[64], line[4096];
	snprintf(file, sizeof(file), "/proc/%d/cgroup", (int) pid);
	FILE *f = fopen(file, "re");
	if (!f)
		return -ESRCH;
	int r = -ENOENT;
	while (r != 0 && fgets(line, sizeof(line), f)) {
		/* hierarchy-id:controllers:path */
		char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
		if (!b)
			continue;
		*a = *b = '\0';
		const char *controllers = a + 1, *path = b + 1;
		bool match = controller[0] ? false : strcmp(line, "0") == 0 && !controllers[0];
		if (controller[0]) {
			char list[1024], want[128];
			snprintf(list, sizeof(list), ",%s,", controllers);
			snprintf(want, sizeof(want), ",%s,", controller);
			match = strstr(list, want) != NULL;
		}
		if (!match)
			continue;
		snprintf(out, size, "%.*s", (int) strcspn(path, "\n"), path);
		r = 0;
	}
	fclose(f);
	return r;
}
