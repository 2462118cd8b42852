/*
 * fuzz_spaces_request — the `spaces` device API's query strings
 * (spaces_request.c), decoded the way the daemon decodes them (libevent's
 * evhttp_parse_query_str, as http.c does) and handed to each of the three
 * parsers: /schedule, /allow and /release.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "daemon/core/spaces_request.h"

#define MAX_PARAMS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct engine_config cfg;
	static int ready;
	if (!ready) {
		engine_config_default(&cfg);
		ready = 1;
	}
	char *q = malloc(size + 1);
	if (!q)
		return 0;
	memcpy(q, data, size);
	q[size] = '\0';

	struct evkeyvalq query;
	TAILQ_INIT(&query);
	if (evhttp_parse_query_str(q, &query) == 0) {
		struct query_param p[MAX_PARAMS];
		size_t n = 0;
		struct evkeyval *kv;
		TAILQ_FOREACH(kv, &query, next)
		{
			if (n == MAX_PARAMS)
				break;
			p[n++] = (struct query_param){kv->key, kv->value};
		}
		char err[512], token[SPACES_TOKEN_LEN + 1];
		struct spaces_schedule s;
		int r = spaces_parse_schedule(p, n, &cfg, &s, err, sizeof(err));
		if (r == 0) {
			assert(s.duration_ms > 0 && s.duration_ms <= cfg.max_duration_ms);
			assert(s.token_version == 1 || s.token_version == 2);
			assert(strlen(s.cgroup) <= SPACES_CGROUP_MAX);
		} else {
			assert(err[0]);
		}
		pid_t pid;
		if (spaces_parse_allow(p, n, token, &pid, err, sizeof(err)) == 0)
			assert(pid > 1 && strlen(token) == SPACES_TOKEN_LEN);
		bool fail;
		if (spaces_parse_release(p, n, token, &fail, err, sizeof(err)) == 0)
			assert(strlen(token) == SPACES_TOKEN_LEN);
	}
	evhttp_clear_headers(&query);
	free(q);
	return 0;
}
