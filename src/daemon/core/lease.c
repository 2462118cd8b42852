#include "daemon/core/lease.h"

#include <errno.h>
#include <string.h>

static const char *const state_names[LEASE__STATE_COUNT] = {
	[LEASE_QUEUED] = "queued",	 [LEASE_GRANTED] = "granted", [LEASE_ATTACHED] = "attached",
	[LEASE_RELEASED] = "released",	 [LEASE_EXPIRED] = "expired", [LEASE_FAILED] = "failed",
	[LEASE_CANCELLED] = "cancelled",
};

/* allowed[from] is the set of states reachable from `from`, as bits. */
#define BIT(s) (1u << (s))
static const unsigned allowed[LEASE__STATE_COUNT] = {
	[LEASE_QUEUED] = BIT(LEASE_GRANTED) | BIT(LEASE_FAILED) | BIT(LEASE_CANCELLED),
	[LEASE_GRANTED] = BIT(LEASE_ATTACHED) | BIT(LEASE_RELEASED) | BIT(LEASE_EXPIRED) |
			  BIT(LEASE_FAILED),
	[LEASE_ATTACHED] = BIT(LEASE_RELEASED) | BIT(LEASE_EXPIRED) | BIT(LEASE_FAILED),
};

const char *lease_state_name(enum lease_state s)
{
	return (unsigned) s < LEASE__STATE_COUNT ? state_names[s] : "invalid";
}

const char *lease_size_name(enum lease_size s)
{
	return s == LEASE_SIZE_XLARGE ? "xlarge" : "large";
}

const char *lease_tier_name(enum lease_tier t)
{
	static const char *const names[LEASE__TIER_COUNT] = {
		[LEASE_TIER_ENTERPRISE] = "enterprise",
		[LEASE_TIER_PRO] = "pro",
		[LEASE_TIER_FREE] = "free",
		[LEASE_TIER_ANONYMOUS] = "anonymous",
	};
	return (unsigned) t < LEASE__TIER_COUNT ? names[t] : "invalid";
}

bool lease_state_terminal(enum lease_state s)
{
	return (unsigned) s < LEASE__STATE_COUNT && allowed[s] == 0;
}

bool lease_transition_allowed(enum lease_state from, enum lease_state to)
{
	if ((unsigned) from >= LEASE__STATE_COUNT || (unsigned) to >= LEASE__STATE_COUNT)
		return false;
	return (allowed[from] & BIT(to)) != 0;
}

int lease_transition(struct lease *l, enum lease_state to)
{
	if (!lease_transition_allowed(l->state, to))
		return -EINVAL;
	l->state = to;
	return 0;
}

bool lease_owner_same(const struct lease_owner *a, const struct lease_owner *b)
{
	if (a->uid_known && b->uid_known)
		return a->uid == b->uid;
	if (!a->via_token || !b->via_token)
		return false;
	if (a->admin || b->admin)
		return a->admin && b->admin;
	return a->app[0] && strcmp(a->app, b->app) == 0;
}
