/*
 * fuzz_request — the native API's JSON bodies (request.c): POST /v1/leases
 * and POST .../attach, and the name checks every route applies to a path.
 * Whatever the bytes, a parse either fills a request the engine can take or
 * refuses with a sentence; never a crash, a read past the input or a leak.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "daemon/core/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct engine_config cfg;
	static int ready;
	if (!ready) {
		engine_config_default(&cfg);
		ready = 1;
	}
	char err[512];
	struct lease_request req;
	struct request_visitor who;
	/* The body as it comes off the wire: not NUL-terminated. */
	if (request_parse_lease((const char *) data, size, &cfg, 4, &req, &who, err, sizeof(err)) ==
	    0) {
		assert(req.duration_ms > 0 && req.duration_ms <= cfg.max_duration_ms);
		assert(strlen(req.app) <= LEASE_APP_MAX);
		assert(req.gpus >= 1 && req.gpus <= 4);
		assert(req.memory_bytes <= (uint64_t) REQUEST_MEMORY_MAX);
		assert(!who.ip[0] || strlen(who.ip) < sizeof(who.ip));
	} else {
		assert(err[0]);
	}
	pid_t pid;
	if (request_parse_attach((const char *) data, size, &pid, err, sizeof(err)) == 0)
		assert(pid > 0);

	char name[128];
	size_t n = size < sizeof(name) - 1 ? size : sizeof(name) - 1;
	memcpy(name, data, n);
	name[n] = '\0';
	(void) request_app_name_valid(name);
	(void) request_user_name_valid(name);
	return 0;
}
