#include "daemon/core/request.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		return "null";
	}
	return "a value";
}

/* Loads body as one JSON object; an empty body is an empty object. */
static json_t *load_object(const char *body, size_t len, char *err, size_t errlen)
{
	if (len == 0)
		return json_object();
	json_error_t je;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		snprintf(err, errlen, "request body is not valid JSON: %s (line %d, column %d)",
			 je.text, je.line, je.column);
		return NULL;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "request body must be a JSON object, not %s",
			 json_type_name(root));
		json_decref(root);
		return NULL;
	}
	return root;
}

/* Refuses any key of obj that is not in the NULL-terminated list known. */
static int check_known_fields(json_t *obj, const char *const *known, const char *known_text,
			      char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v)
	{
		bool ok = false;
		for (const char *const *k = known; *k && !ok; k++)
			ok = strcmp(key, *k) == 0;
		if (!ok) {
			snprintf(err, errlen, "unknown field '%.64s'; known fields: %s", key,
				 known_text);
			return -EINVAL;
		}
	}
	return 0;
}

/* Reads an optional number field in seconds as milliseconds; absent leaves *ms alone. */
static int get_seconds(json_t *obj, const char *name, int64_t *ms, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, name);
	if (!v)
		return 0;
	if (!json_is_number(v)) {
		snprintf(err, errlen, "field '%s' must be a number of seconds, not %s", name,
			 json_type_name(v));
		return -EINVAL;
	}
	double s = json_number_value(v);
	if (!isfinite(s) || fabs(s) > 1e9) {
		snprintf(err, errlen, "field '%s' is out of range (%g)", name, s);
		return -EINVAL;
	}
	*ms = (int64_t) llround(s * 1000.0);
	if (s > 0 && *ms == 0) { /* as fuzz_spaces_request found for its twin */
		snprintf(err, errlen, "field '%s' must be at least 0.001 s (a millisecond), not %g",
			 name, s);
		return -EINVAL;
	}
	return 0;
}

bool request_app_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > LEASE_APP_MAX)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char) *s) && !strchr("._-", *s))
			return false;
	return true;
}

/* Copies an optional text field; refuses control characters and overlong text. */
static int get_text(json_t *obj, const char *name, char *out, size_t size, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, name);
	if (!v)
		return 0;
	if (!json_is_string(v)) {
		snprintf(err, errlen, "field '%s' must be a string, not %s", name,
			 json_type_name(v));
		return -EINVAL;
	}
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (n >= size) {
		snprintf(err, errlen, "field '%s' is too long (%zu bytes, at most %zu)", name, n,
			 size - 1);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) {
			snprintf(err, errlen, "field '%s' contains a control character", name);
			return -EINVAL;
		}
	}
	memcpy(out, s, n + 1);
	return 0;
}

bool request_user_name_valid(const char *s)
{
	size_t n = strlen(s);
	bool ok = n > 0 && n <= 64;
	for (size_t i = 0; ok && i < n; i++)
		ok = isalnum((unsigned char) s[i]) || strchr("._-@+", s[i]);
	return ok;
}

static int validate_lease(json_t *o, const struct engine_config *cfg, size_t gpu_count,
			  struct lease_request *out, struct request_visitor *who, char *err,
			  size_t errlen)
{
	static const char *const known[] = {
		"app",	"task",	      "visitor",    "visitor_token", "visitor_ip", "size",
		"gpus", "duration_s", "max_wait_s", "memory_bytes",  NULL};
	int r;
	if ((r = check_known_fields(o, known,
				    "app, task, visitor, visitor_token, visitor_ip, size, gpus, "
				    "duration_s, max_wait_s, memory_bytes",
				    err, errlen)) < 0)
		return r;
	if ((r = get_text(o, "visitor_token", who->token, sizeof(who->token), err, errlen)) < 0 ||
	    (r = get_text(o, "visitor_ip", who->ip, sizeof(who->ip), err, errlen)) < 0)
		return r;
	unsigned char addr[16];
	if (who->ip[0] && inet_pton(AF_INET, who->ip, addr) != 1 &&
	    inet_pton(AF_INET6, who->ip, addr) != 1) {
		snprintf(err, errlen, "visitor_ip '%.64s' is not an IPv4 or IPv6 address", who->ip);
		return -EINVAL;
	}

	if ((r = get_text(o, "app", out->app, sizeof(out->app), err, errlen)) < 0 ||
	    (r = get_text(o, "task", out->task, sizeof(out->task), err, errlen)) < 0 ||
	    (r = get_text(o, "visitor", out->visitor, sizeof(out->visitor), err, errlen)) < 0)
		return r;
	if (!request_app_name_valid(out->app)) {
		snprintf(err, errlen,
			 "app name '%s' is not valid: use 1 to %d letters, digits, '.', '_' or "
			 "'-'",
			 out->app, LEASE_APP_MAX);
		return -EINVAL;
	}

	json_t *size = json_object_get(o, "size");
	if (size) {
		const char *s = json_is_string(size) ? json_string_value(size) : NULL;
		if (!s) {
			snprintf(err, errlen, "field 'size' must be a string, not %s",
				 json_type_name(size));
			return -EINVAL;
		}
		if (strcmp(s, "large") == 0) {
			out->size = LEASE_SIZE_LARGE;
		} else if (strcmp(s, "xlarge") == 0) {
			out->size = LEASE_SIZE_XLARGE;
		} else {
			snprintf(err, errlen,
				 "unknown size '%.32s': use 'large' (half a GPU) or 'xlarge' (a "
				 "whole GPU)",
				 s);
			return -EINVAL;
		}
	}

	json_t *gpus = json_object_get(o, "gpus");
	if (gpus) {
		if (!json_is_integer(gpus)) {
			snprintf(err, errlen, "field 'gpus' must be an integer, not %s",
				 json_type_name(gpus));
			return -EINVAL;
		}
		json_int_t n = json_integer_value(gpus);
		if (n < 1) {
			snprintf(err, errlen, "gpus must be at least 1 (got %lld)", (long long) n);
			return -EINVAL;
		}
		if ((size_t) n > gpu_count) {
			snprintf(err, errlen,
				 "gpus %lld is more than the %zu GPU%s this machine has",
				 (long long) n, gpu_count, gpu_count == 1 ? "" : "s");
			return -EINVAL;
		}
		out->gpus = (int) n;
	}

	json_t *memory = json_object_get(o, "memory_bytes");
	if (memory) {
		if (!json_is_integer(memory)) {
			snprintf(err, errlen, "field 'memory_bytes' must be an integer, not %s",
				 json_type_name(memory));
			return -EINVAL;
		}
		json_int_t n = json_integer_value(memory);
		if (n < 0 || n > REQUEST_MEMORY_MAX) {
			snprintf(
				err, errlen,
				"memory_bytes must be between 0 (all the GPU memory the size gets) "
				"and %lld (got %lld)",
				(long long) REQUEST_MEMORY_MAX, (long long) n);
			return -EINVAL;
		}
		out->memory_bytes = (uint64_t) n;
	}

	if ((r = get_seconds(o, "duration_s", &out->duration_ms, err, errlen)) < 0 ||
	    (r = get_seconds(o, "max_wait_s", &out->max_wait_ms, err, errlen)) < 0)
		return r;
	if (out->duration_ms <= 0) {
		snprintf(err, errlen, "duration_s must be greater than 0 (got %g)",
			 (double) out->duration_ms / 1000.0);
		return -EINVAL;
	}
	if (out->duration_ms > cfg->max_duration_ms) {
		snprintf(err, errlen, "duration %g s is above this server's maximum of %g s",
			 (double) out->duration_ms / 1000.0,
			 (double) cfg->max_duration_ms / 1000.0);
		return -EINVAL;
	}
	if (out->max_wait_ms < 0 || out->max_wait_ms > cfg->max_wait_limit_ms) {
		snprintf(err, errlen, "max_wait_s must be between 0 and %g s (got %g)",
			 (double) cfg->max_wait_limit_ms / 1000.0,
			 (double) out->max_wait_ms / 1000.0);
		return -EINVAL;
	}
	return 0;
}

int request_parse_lease(const char *body, size_t len, const struct engine_config *cfg,
			size_t gpu_count, struct lease_request *out, struct request_visitor *who,
			char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	memset(who, 0, sizeof(*who));
	strcpy(out->app, "default");
	out->size = LEASE_SIZE_LARGE;
	out->gpus = 1;
	out->duration_ms = cfg->default_duration_ms;
	out->max_wait_ms = cfg->default_max_wait_ms;
	out->tier = LEASE_TIER_ANONYMOUS;
	out->quota_left = 1.0;

	json_t *o = load_object(body, len, err, errlen);
	if (!o)
		return -EINVAL;
	int r = validate_lease(o, cfg, gpu_count, out, who, err, errlen);
	json_decref(o);
	return r;
}

int request_parse_attach(const char *body, size_t len, pid_t *pid, char *err, size_t errlen)
{
	json_t *o = load_object(body, len, err, errlen);
	if (!o)
		return -EINVAL;
	static const char *const known[] = {"pid", NULL};
	int r = check_known_fields(o, known, "pid", err, errlen);
	json_t *v = json_object_get(o, "pid");
	if (r == 0 && !v) {
		snprintf(err, errlen, "field 'pid' is required");
		r = -EINVAL;
	} else if (r == 0 && !json_is_integer(v)) {
		snprintf(err, errlen, "field 'pid' must be an integer, not %s", json_type_name(v));
		r = -EINVAL;
	} else if (r == 0 && (json_integer_value(v) < 1 || json_integer_value(v) > 0x3fffffff)) {
		snprintf(err, errlen, "pid must be a positive process id (got %lld)",
			 (long long) json_integer_value(v));
		r = -EINVAL;
	}
	if (r == 0)
		*pid = (pid_t) json_integer_value(v);
	json_decref(o);
	return r;
}
