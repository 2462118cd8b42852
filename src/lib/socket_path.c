#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "zerogpu.h"

#define SYSTEM_SOCKET "/run/zerogpu/zerogpud.sock"

int zgpu_default_socket_path(char *buf, size_t size)
{
	const char *env = getenv("ZEROGPU_SOCKET");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;
	if (env && *env)
		n = snprintf(buf, size, "%s", env);
	else if (geteuid() != 0 && xdg && *xdg)
		n = snprintf(buf, size, "%s/zerogpu.sock", xdg);
	else
		n = snprintf(buf, size, "%s", SYSTEM_SOCKET);
	return n < 0 || (size_t) n >= size ? ZGPU_EINVAL : 0;
}
