/* Directories made with their missing parents. */
#ifndef ZGPU_COMMON_MKDIR_P_H
#define ZGPU_COMMON_MKDIR_P_H

#include <sys/types.h>

/*
 * Makes path and its missing parents: parents 0755, path itself mode. Modes are
 * set explicitly, as the daemon's umask (077) would otherwise make every one
 * private. A directory that exists already is left as it is. Returns 0 or -errno.
 */
int mkdir_p(const char *path, mode_t mode);

#endif
