/*
 * fault_fs — makes a file system go read-only (or full) under a running
 * process, for the ledger fault tests (tests/e2e/test_disk_faults.py).
 * LD_PRELOAD it; while the file $ZEROGPU_FAULT_FLAG exists, every write,
 * truncation and sync of a file under $ZEROGPU_FAULT_DIR fails with the errno
 * the flag file names (EROFS, the default, or ENOSPC), as the kernel fails
 * them when ext4 remounts itself read-only after an error (errors=remount-ro).
 * A real remount cannot be made under a process that holds files open for
 * writing; this can, and can be undone.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* The errno to fail fd's writes with, or 0 to let them through. */
static int fault_for(int fd)
{
	const char *flag = getenv("ZEROGPU_FAULT_FLAG"), *dir = getenv("ZEROGPU_FAULT_DIR");
	if (!flag || !dir)
		return 0;
	int saved = errno;
	char buf[16] = "";
	int ffd = open(flag, O_RDONLY | O_CLOEXEC);
	if (ffd < 0) {
		errno = saved;
		return 0;
	}
	ssize_t n = read(ffd, buf, sizeof(buf) - 1);
	close(ffd);
	buf[n > 0 ? n : 0] = '\0';
	char link[64], path[4096];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t len = readlink(link, path, sizeof(path) - 1);
	errno = saved;
	if (len < 0)
		return 0;
	path[len] = '\0';
	if (strncmp(path, dir, strlen(dir)) != 0)
		return 0;
	return strncmp(buf, "ENOSPC", 6) == 0 ? ENOSPC : EROFS;
}

#define NEXT(name) ((__typeof__(&name)) dlsym(RTLD_NEXT, #name))
#define FAIL_IF_FAULT(fd, value)                                                                   \
	do {                                                                                       \
		int e_ = fault_for(fd);                                                            \
		if (e_) {                                                                          \
			errno = e_;                                                                \
			return (value);                                                            \
		}                                                                                  \
	} while (0)

ssize_t write(int fd, const void *buf, size_t count)
{
	FAIL_IF_FAULT(fd, -1);
	return NEXT(write)(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
	FAIL_IF_FAULT(fd, -1);
	return NEXT(pwrite)(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset)
{
	FAIL_IF_FAULT(fd, -1);
	return NEXT(pwrite64)(fd, buf, count, offset);
}

int fsync(int fd)
{
	FAIL_IF_FAULT(fd, -1);
	return NEXT(fsync)(fd);
}

int fdatasync(int fd)
{
	FAIL_IF_FAULT(fd, -1);
	return NEXT(fdatasync)(fd);
}

int ftruncate(int fd, off_t length)
{
	FAIL_IF_FAULT(fd, -1);
	return NEXT(ftruncate)(fd, length);
}

int ftruncate64(int fd, off64_t length)
{
	FAIL_IF_FAULT(fd, -1);
	return NEXT(ftruncate64)(fd, length);
}
