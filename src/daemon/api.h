/*
 * api — what the native API (api_v1.c) and the `spaces` device API
 * (api_spaces.c) share: who the visitor is, their quota, which app a local
 * user may act as, and binding a process to a lease. Each API renders its own
 * replies; these helpers reply only where noted.
 */
#ifndef ZGPU_DAEMON_API_H
#define ZGPU_DAEMON_API_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/http.h"
#include "daemon/core/lease.h"
#include "daemon/settings.h"

/* [apps] in the config: with no entries anyone may act as any app; else only those listed. */
bool api_uid_may_act_as(const struct settings *s, uid_t uid, const char *app);

/*
 * Who pays: a visitor token (may be NULL or "") names them and their tier, and
 * becomes rq->visitor when that is empty; without one, the visitor's IP (may be
 * NULL or "") is an anonymous visitor; with neither, the call is the app's own
 * and is not metered. Replies 401 and returns -EACCES for a token that does
 * not hold.
 */
int api_identify_visitor(struct call *c, const char *token, const char *ip,
			 struct lease_request *rq);

/* Why a reservation was refused, for the API to word. */
struct quota_refusal {
	enum lease_tier tier;
	int64_t cost_ms, left_ms, wait_ms;
};

/*
 * Reserves the request's cost from its visitor. Returns 0; -EDQUOT (not
 * replied) with *no filled when it does not fit; or -EIO after replying 500.
 */
int api_reserve_quota(struct call *c, struct lease_request *rq, struct quota_refusal *no);

/* Gives back a reservation whose request never made it into the engine. */
void api_unreserve(struct zgpud *d, const struct lease_request *rq);

/*
 * Binds pid to l after checking it exists and the caller may have it killed
 * (docs/security.md: its own processes; an app token's listed users'; the
 * admin token's any; a caller of unknown uid none). The lease holds the
 * process by a pidfd from then on. With rebind, a process already attached is
 * replaced. Returns 0; -EBUSY, -EALREADY or -ETIME from the engine (not
 * replied); or another negative errno after replying.
 */
int api_attach(struct call *c, struct lease *l, pid_t pid, bool rebind);

#endif
