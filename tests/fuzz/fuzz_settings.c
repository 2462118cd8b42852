/*
 * fuzz_settings — zerogpud's configuration (settings.c): the INI file and the
 * command line go through one table of checkers. The first byte picks what
 * the rest is:
 * - even: the config file's text (read through --config);
 * - odd: the command line, one argument a line (at most 64).
 * Either it loads (and the cross-checks hold) or it is refused with exit
 * code 2 and a message. The messages go to /dev/null unless
 * ZEROGPU_FUZZ_VERBOSE is set (to read them when replaying one input).
 */
#include <assert.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon/settings.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct settings s;
static char *argv_text, *argv[MAX_ARGS + 4];

static int load(int argc)
{
	static int quiet = -1;
	if (quiet < 0)
		quiet = getenv("ZEROGPU_FUZZ_VERBOSE") == NULL;
	int saved[2] = {-1, -1};
	if (quiet) {
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
		for (int fd = 1; fd <= 2; fd++) {
			fflush(fd == 1 ? stdout : stderr);
			saved[fd - 1] = dup(fd);
			dup2(null, fd);
		}
		close(null);
	}
	optind = 0; /* glibc: start getopt afresh */
	argv[argc] = NULL;
	int r = settings_load(&s, argc, argv, "usage\n");
	if (quiet) {
		for (int fd = 1; fd <= 2; fd++) {
			fflush(fd == 1 ? stdout : stderr);
			dup2(saved[fd - 1], fd);
			close(saved[fd - 1]);
		}
	}
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int argc = 0;
	char path[64];
	int memfd = -1;
	free(argv_text);
	argv_text = NULL;
	argv[argc++] = "zerogpud";
	if (data[0] & 1) {
		argv_text = malloc(size);
		if (!argv_text)
			return 0;
		memcpy(argv_text, data + 1, size - 1);
		argv_text[size - 1] = '\0';
		for (char *p = argv_text; p && argc < MAX_ARGS;) {
			argv[argc++] = p;
			p = strchr(p, '\n');
			if (p)
				*p++ = '\0';
		}
	} else {
		memfd = memfd_create("zerogpud.conf", MFD_CLOEXEC);
		if (memfd < 0)
			return 0;
		if (size > 1 && write(memfd, data + 1, size - 1) != (ssize_t) (size - 1)) {
			close(memfd);
			return 0;
		}
		snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
		argv[argc++] = "--config";
		argv[argc++] = path;
	}
	int r = load(argc);
	assert(r == 0 || r == 1 || r == 2);
	if (r == 0) {
		assert(s.cfg.default_duration_ms <= s.cfg.max_duration_ms);
		assert(!s.listen[0] || s.token[0]);
		assert(!s.spaces_require_visitor || s.visitor_secret[0]);
		assert(s.napp_users >= 0 && s.napp_users <= 256);
		assert(s.napp_cgroups >= 0 && s.napp_cgroups <= 64);
		assert(s.napp_memory >= 0 && s.napp_memory <= 256);
	}
	if (memfd >= 0)
		close(memfd);
	return 0;
}
