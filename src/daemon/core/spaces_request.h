/*
 * spaces_request — validates the query parameters of the hosted ZeroGPU
 * device API (`POST /schedule`, `/allow`, `/release`), which the `spaces`
 * package sends in the URL, not in a body. Pure. Unknown parameters are
 * ignored, as the hosted API does, so newer `spaces` releases keep working;
 * a known parameter given twice or with a bad value is refused with one
 * sentence for the person who sent it.
 */
#ifndef ZGPU_DAEMON_CORE_SPACES_REQUEST_H
#define ZGPU_DAEMON_CORE_SPACES_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/core/engine.h"
#include "daemon/core/lease.h"

#define SPACES_TOKEN_LEN  32 /* allowToken: hex digits, 128 random bits */
#define SPACES_CGROUP_MAX 1024

/* One decoded `key=value` of the query string. */
struct query_param {
	const char *key, *value;
};

struct spaces_schedule {
	int64_t duration_ms;	       /* durationSeconds; the engine's default when absent */
	enum lease_size size;	       /* gpuSize */
	char task[LEASE_TEXT_MAX + 1]; /* taskId, as given */
	bool enable_queue;	       /* enableQueue; true when absent */
	const char *token;	       /* the visitor's token, or NULL; points into the params */
	char cgroup[SPACES_CGROUP_MAX + 1]; /* cgroupPath, "" when absent */
	int token_version;		    /* tokenVersion: 1 or 2 */
};

/*
 * Parses the parameters of POST /schedule. Returns 0; -EINVAL with a message
 * (a 400); or -ERANGE when only the duration is above cfg's maximum, which the
 * hosted API answers with a quota reply whose `wait` is negative.
 */
int spaces_parse_schedule(const struct query_param *p, size_t n, const struct engine_config *cfg,
			  struct spaces_schedule *out, char *err, size_t errlen);

/* POST /allow: allowToken and pid (> 1: the package refuses pid 1 too). */
int spaces_parse_allow(const struct query_param *p, size_t n, char token[SPACES_TOKEN_LEN + 1],
		       pid_t *pid, char *err, size_t errlen);

/* POST /release: allowToken and fail (true/false/1/0; false when absent). */
int spaces_parse_release(const struct query_param *p, size_t n, char token[SPACES_TOKEN_LEN + 1],
			 bool *fail, char *err, size_t errlen);

#endif
