#include "daemon/core/quota.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void quota_config_default(struct quota_config *c)
{
	c->daily_ms[LEASE_TIER_ANONYMOUS] = 120 * 1000;
	c->daily_ms[LEASE_TIER_FREE] = 300 * 1000;
	c->daily_ms[LEASE_TIER_PRO] = 2400 * 1000;
	c->daily_ms[LEASE_TIER_ENTERPRISE] = 3600 * 1000;
	c->window_ms = 24 * 3600 * 1000;
	c->xlarge_factor = 2;
}

int quota_init(struct quota_book *b, const struct quota_config *cfg)
{
	b->cfg = *cfg;
	return strmap_init(&b->accounts);
}

static void free_account(struct strmap_node *n, void *arg)
{
	(void) arg;
	free(strmap_item(n, struct quota_account, hnode));
}

void quota_release(struct quota_book *b)
{
	strmap_foreach(&b->accounts, free_account, NULL);
	strmap_release(&b->accounts);
}

struct quota_account *quota_find(struct quota_book *b, const char *key)
{
	struct strmap_node *n = strmap_find(&b->accounts, key);
	return n ? strmap_item(n, struct quota_account, hnode) : NULL;
}

struct quota_account *quota_add(struct quota_book *b, const char *key, enum lease_tier tier,
				int64_t window_start, int64_t used_ms)
{
	struct quota_account *a;
	if (strlen(key) > QUOTA_KEY_MAX || strmap_reserve(&b->accounts) < 0 ||
	    !(a = calloc(1, sizeof(*a))))
		return NULL;
	strcpy(a->key, key);
	a->tier = tier;
	a->window_start = window_start;
	a->used_ms = used_ms;
	a->hnode.key = a->key;
	(void) strmap_insert(&b->accounts, &a->hnode); /* reserved above */
	return a;
}

int64_t quota_cost_ms(const struct quota_config *c, const struct lease_request *req)
{
	return req->duration_ms * (req->size == LEASE_SIZE_XLARGE ? c->xlarge_factor : 1);
}

int64_t quota_charge_ms(const struct quota_config *c, const struct lease *l, int64_t used_ms)
{
	if (l->state == LEASE_FAILED && l->proc.pid == 0)
		return 0;
	int64_t seconds = used_ms > 0 ? (used_ms + 999) / 1000 : 0;
	return seconds * 1000 * (l->req.size == LEASE_SIZE_XLARGE ? c->xlarge_factor : 1);
}

void quota_roll(const struct quota_config *c, struct quota_account *a, int64_t now)
{
	if (a->window_start && now >= a->window_start + c->window_ms) {
		a->window_start = 0;
		a->used_ms = 0;
	}
}

int64_t quota_left_ms(const struct quota_config *c, struct quota_account *a, int64_t now)
{
	quota_roll(c, a, now);
	int64_t left = c->daily_ms[a->tier] - a->used_ms - a->reserved_ms;
	return left > 0 ? left : 0;
}

int quota_reserve(const struct quota_config *c, struct quota_account *a, int64_t cost_ms,
		  int64_t now, int64_t *left_ms, int64_t *wait_ms)
{
	int64_t left = quota_left_ms(c, a, now);
	if (cost_ms > left && !c->overage[a->tier]) {
		*left_ms = left;
		/* A window opens at first use; with none open, what is held now frees first. */
		*wait_ms = a->window_start ? a->window_start + c->window_ms - now : 0;
		return -EDQUOT;
	}
	if (!a->window_start)
		a->window_start = now;
	a->reserved_ms += cost_ms;
	return 0;
}

void quota_reset(struct quota_account *a)
{
	a->window_start = 0;
	a->used_ms = 0;
}

void quota_settle(struct quota_account *a, int64_t reserved_ms, int64_t charged_ms)
{
	a->reserved_ms -= reserved_ms;
	if (a->reserved_ms < 0)
		a->reserved_ms = 0;
	a->used_ms += charged_ms;
}

double quota_left_share(const struct quota_config *c, const struct quota_account *a)
{
	int64_t daily = c->daily_ms[a->tier];
	if (daily <= 0)
		return 0;
	double left = (double) (daily - a->used_ms - a->reserved_ms) / (double) daily;
	return left < 0 ? 0 : left > 1 ? 1 : left;
}

void quota_message(char *out, size_t size, enum lease_tier tier, int64_t requested_ms,
		   int64_t left_ms, int64_t wait_ms)
{
	static const char *const names[LEASE__TIER_COUNT] = {
		[LEASE_TIER_ENTERPRISE] = "Enterprise GPU",
		[LEASE_TIER_PRO] = "Pro GPU",
		[LEASE_TIER_FREE] = "free GPU",
		[LEASE_TIER_ANONYMOUS] = "GPU",
	};
	int64_t wait_s = (wait_ms + 999) / 1000;
	snprintf(out, size,
		 "You have exceeded your %s quota (%llds requested vs. %llds left). Try again in "
		 "%lld:%02lld:%02lld.",
		 names[tier], (long long) ((requested_ms + 999) / 1000),
		 (long long) (left_ms / 1000), (long long) (wait_s / 3600),
		 (long long) (wait_s / 60 % 60), (long long) (wait_s % 60));
}
