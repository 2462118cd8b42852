#include "daemon/core/spaces_request.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The value of key, or NULL; -EINVAL when it is given more than once. */
static int find(const struct query_param *p, size_t n, const char *key, const char **value,
		char *err, size_t errlen)
{
	*value = NULL;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(p[i].key, key) != 0)
			continue;
		if (*value) {
			snprintf(err, errlen, "parameter %s is given more than once", key);
			return -EINVAL;
		}
		*value = p[i].value;
	}
	return 0;
}

static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static int parse_bool(const char *key, const char *v, bool *out, char *err, size_t errlen)
{
	if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "True")) {
		*out = true;
	} else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "False")) {
		*out = false;
	} else {
		snprintf(err, errlen, "parameter %s must be true or false, not '%.32s'", key, v);
		return -EINVAL;
	}
	return 0;
}

static bool is_integer(const char *s)
{
	if (*s == '-')
		s++;
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char) *s))
			return false;
	return true;
}

/* The allowToken every /allow and /release carries: exactly what /schedule handed out. */
static int parse_token(const struct query_param *p, size_t n, char out[SPACES_TOKEN_LEN + 1],
		       char *err, size_t errlen)
{
	const char *v;
	if (find(p, n, "allowToken", &v, err, errlen) < 0)
		return -EINVAL;
	if (!v || !*v) {
		snprintf(err, errlen, "parameter allowToken is required");
		return -EINVAL;
	}
	bool ok = strlen(v) == SPACES_TOKEN_LEN;
	for (const char *s = v; ok && *s; s++)
		ok = isdigit((unsigned char) *s) || (*s >= 'a' && *s <= 'f');
	if (!ok) {
		snprintf(err, errlen,
			 "allowToken '%.40s' is not one this server hands out (%d hex digits)", v,
			 SPACES_TOKEN_LEN);
		return -EINVAL;
	}
	memcpy(out, v, SPACES_TOKEN_LEN + 1);
	return 0;
}

static int parse_duration(const char *v, const struct engine_config *cfg, int64_t *ms, char *err,
			  size_t errlen)
{
	char *end;
	errno = 0;
	double s = strtod(v, &end);
	if (end == v || *end || errno || !isfinite(s) || s <= 0 || s > 1e9) {
		snprintf(err, errlen,
			 "durationSeconds must be a number of seconds greater than 0, not '%.32s'",
			 v);
		return -EINVAL;
	}
	*ms = (int64_t) llround(s * 1000.0);
	if (*ms < 1) { /* found by fuzz_spaces_request: 8e-9 s was a lease of 0 ms */
		snprintf(err, errlen,
			 "durationSeconds must be at least 0.001 (a millisecond), not '%.32s'", v);
		return -EINVAL;
	}
	if (*ms <= cfg->max_duration_ms)
		return 0;
	snprintf(err, errlen,
		 "The requested GPU duration (%gs) is larger than the maximum allowed (%gs)", s,
		 (double) cfg->max_duration_ms / 1000.0);
	return -ERANGE;
}

int spaces_parse_schedule(const struct query_param *p, size_t n, const struct engine_config *cfg,
			  struct spaces_schedule *out, char *err, size_t errlen)
{
	const char *duration, *size, *task, *queue, *token, *cgroup, *version;
	memset(out, 0, sizeof(*out));
	out->duration_ms = cfg->default_duration_ms;
	out->size = LEASE_SIZE_LARGE;
	out->enable_queue = true;
	out->token_version = 1;
	if (find(p, n, "durationSeconds", &duration, err, errlen) < 0 ||
	    find(p, n, "gpuSize", &size, err, errlen) < 0 ||
	    find(p, n, "taskId", &task, err, errlen) < 0 ||
	    find(p, n, "enableQueue", &queue, err, errlen) < 0 ||
	    find(p, n, "token", &token, err, errlen) < 0 ||
	    find(p, n, "cgroupPath", &cgroup, err, errlen) < 0 ||
	    find(p, n, "tokenVersion", &version, err, errlen) < 0)
		return -EINVAL;

	if (size && !strcmp(size, "xlarge")) {
		out->size = LEASE_SIZE_XLARGE;
	} else if (size && strcmp(size, "large")) {
		snprintf(err, errlen,
			 "gpuSize must be large (half a GPU) or xlarge (a whole GPU), not '%.32s'",
			 size);
		return -EINVAL;
	}
	if (task) {
		if (!is_integer(task) || strlen(task) > 40) {
			snprintf(err, errlen, "taskId must be an integer, not '%.48s'", task);
			return -EINVAL;
		}
		snprintf(out->task, sizeof(out->task), "%s", task);
	}
	if (queue && parse_bool("enableQueue", queue, &out->enable_queue, err, errlen) < 0)
		return -EINVAL;
	if (token) {
		if (!*token || strlen(token) > 4096 || !printable(token)) {
			snprintf(err, errlen,
				 "token must be the visitor's token (1 to 4096 printable "
				 "characters)");
			return -EINVAL;
		}
		out->token = token;
	}
	if (cgroup) {
		if (strlen(cgroup) > SPACES_CGROUP_MAX || !printable(cgroup)) {
			snprintf(err, errlen,
				 "cgroupPath must be a path of at most %d printable characters",
				 SPACES_CGROUP_MAX);
			return -EINVAL;
		}
		strcpy(out->cgroup, cgroup);
	}
	if (version) {
		if (strcmp(version, "1") && strcmp(version, "2")) {
			snprintf(err, errlen, "tokenVersion must be 1 or 2, not '%.32s'", version);
			return -EINVAL;
		}
		out->token_version = atoi(version);
	}
	/* Last: every other parameter is checked before a too-long duration becomes a 429. */
	return duration ? parse_duration(duration, cfg, &out->duration_ms, err, errlen) : 0;
}

int spaces_parse_allow(const struct query_param *p, size_t n, char token[SPACES_TOKEN_LEN + 1],
		       pid_t *pid, char *err, size_t errlen)
{
	const char *v;
	if (parse_token(p, n, token, err, errlen) < 0 || find(p, n, "pid", &v, err, errlen) < 0)
		return -EINVAL;
	if (!v) {
		snprintf(err, errlen, "parameter pid is required");
		return -EINVAL;
	}
	char *end;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (end == v || *end || errno || x < 2 || x > 0x3fffffff) {
		snprintf(err, errlen, "pid must be a process id greater than 1, not '%.32s'", v);
		return -EINVAL;
	}
	*pid = (pid_t) x;
	return 0;
}

int spaces_parse_release(const struct query_param *p, size_t n, char token[SPACES_TOKEN_LEN + 1],
			 bool *fail, char *err, size_t errlen)
{
	const char *v;
	*fail = false;
	if (parse_token(p, n, token, err, errlen) < 0 || find(p, n, "fail", &v, err, errlen) < 0)
		return -EINVAL;
	return v ? parse_bool("fail", v, fail, err, errlen) : 0;
}
