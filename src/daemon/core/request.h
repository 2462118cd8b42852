/*
 * request — turns the JSON bodies of the native API into validated requests.
 * Pure. Each refusal comes with one sentence for the person who sent it.
 */
#ifndef ZGPU_DAEMON_CORE_REQUEST_H
#define ZGPU_DAEMON_CORE_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/core/engine.h"
#include "daemon/core/lease.h"

/* The most device memory a request may say it needs: 1 PiB. */
#define REQUEST_MEMORY_MAX (INT64_C(1) << 50)

/* Who a request is for, as the app says: a signed token, or the visitor's address. */
struct request_visitor {
	char token[4097]; /* "" when none */
	char ip[64];	  /* "" when none; a valid IPv4 or IPv6 address otherwise */
};

/*
 * Parses the body of POST /v1/leases into *out and *who, filling defaults
 * from cfg. An empty body means "all defaults". gpu_count (physical GPUs)
 * bounds `gpus`. Returns 0, or -EINVAL with a message in err.
 */
int request_parse_lease(const char *body, size_t len, const struct engine_config *cfg,
			size_t gpu_count, struct lease_request *out, struct request_visitor *who,
			char *err, size_t errlen);

/* Whether s is an app name: 1 to LEASE_APP_MAX letters, digits, '.', '_' or '-'. */
bool request_app_name_valid(const char *s);

/* Whether s is a signed-in visitor's name (the gateway's user header, "user:NAME"
 * keys): 1 to 64 letters, digits, '.', '_', '-', '@' or '+'. */
bool request_user_name_valid(const char *s);

/* Parses {"pid": N} (N > 0). Returns 0, or -EINVAL with a message in err. */
int request_parse_attach(const char *body, size_t len, pid_t *pid, char *err, size_t errlen);

#endif
