/*
 * views — what the daemon's state looks like to one caller, as JSON: devices,
 * leases, the queue. The API adapters render with these (api_v1.c's replies,
 * the event stream's snapshot and events); they read state and change none.
 */
#ifndef ZGPU_DAEMON_VIEWS_H
#define ZGPU_DAEMON_VIEWS_H

#include <stdint.h>

#include <jansson.h>

#include "daemon/leases.h"
#include "daemon/zgpud.h"

/* What one caller may see of the daemon: an app token over TCP sees its app's leases only. */
struct view {
	struct zgpud *d;
	const struct caller *who;
	int64_t now;
};

/* Every device, with the leases and residents on it the caller may see. */
json_t *view_devices(const struct view *v);
/* The devices l holds: index, uuid, memory and l's share of it. */
json_t *view_lease_devices(const struct zgpud *d, const struct lease *l);
/* The GPU slots l holds, as [gpu, slot] pairs: a GPU split in halves has two slots,
 * each a lane of the dashboard's timeline. */
json_t *view_lease_slots(const struct lease *l);
/* Appends to pairs one [gpu, slot] pair for each bit of slots (one grant's). */
void view_add_slots(json_t *pairs, int gpu, unsigned slots);
/* One lease as GET /v1/leases/ID shows it (now: for its time waited or left). */
json_t *view_lease(const struct zgpud *d, const struct lease *l, int64_t now);
/* Held leases the caller may see, oldest grant first. */
json_t *view_held_leases(const struct view *v);
/* The queue in order with each request's position and why it waits; an app token sees
 * its own requests, at their true positions. */
json_t *view_queue(const struct view *v);

#endif
