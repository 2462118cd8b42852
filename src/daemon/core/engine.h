/*
 * engine — the lease engine: requests in, grants out, deadlines enforced.
 *
 * Pure: it never reads a clock, touches a socket or sends a signal. Time comes
 * in as `now` (monotonic ms); what the outside must do comes out through hooks
 * (tell a client about an event, kill a process group, make an id). The daemon
 * calls engine_tick() when engine_next_deadline() comes due.
 *
 * Ownership: the engine allocates and frees leases. A lease pointer stays valid
 * until the hook sees ENGINE_EV_ENDED for it; after that hook returns the lease
 * is freed.
 */
#ifndef ZGPU_DAEMON_CORE_ENGINE_H
#define ZGPU_DAEMON_CORE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/heap.h"
#include "common/strmap.h"
#include "daemon/core/devices.h"
#include "daemon/core/lease.h"
#include "daemon/core/residency.h"
#include "daemon/core/sched.h"

/* What happens to other apps' residents when a device is lent (docs/scheduling.md). */
enum engine_residency {
	ENGINE_RESIDENCY_LRU, /* kept while memory allows; the least recently used evicted */
	ENGINE_RESIDENCY_OFF, /* the hosted way: lent to another app, a device loses them */
};

struct engine_config {
	int64_t max_duration_ms;     /* longest lease a request may ask for */
	int64_t default_duration_ms; /* used when a request names none */
	int64_t default_max_wait_ms; /* how long a request may queue by default */
	int64_t max_wait_limit_ms;   /* longest max_wait a request may ask for */
	int64_t grace_ms;	     /* after the deadline, before the attached group is killed */
	int split;		     /* halves per whole (non-MIG) GPU: 1 or 2 */
	bool positions;		     /* tell waiters their queue position (the simulator: not) */
	struct sched_params sched;   /* the queue policy */
	enum engine_residency residency;
	bool affinity; /* place a lease where its app has a resident, when one can take it */
};

/* The defaults: 300 s max, 60 s default, 60 s wait, 2 s grace, no split, priority policy,
 * LRU residency with affinity. */
void engine_config_default(struct engine_config *cfg);

enum engine_event {
	ENGINE_EV_QUEUED,  /* waiting; l->position_sent is the new position (see below) */
	ENGINE_EV_GRANTED, /* l->grants are the client's until l->deadline_ms */
	ENGINE_EV_EXPIRED, /* the deadline passed; the grace runs */
	ENGINE_EV_ENDED,   /* l->state is terminal; l is freed after the hook */
};

struct engine_hooks {
	void *ctx;
	void (*event)(void *ctx, struct lease *l, enum engine_event ev);
	/* Kill the process attached to l (l->proc), and its group when it leads one. */
	void (*kill_group)(void *ctx, const struct lease *l);
	/* Write a fresh, unique lease id of LEASE_ID_LEN characters and a NUL. */
	void (*make_id)(void *ctx, char *out);
	/* Optional: whether the client of a lease that has queued is gone already. Asked
	 * right before the lease would be granted; a gone one is cancelled instead. */
	bool (*waiter_gone)(void *ctx, struct lease *l);
	/* Optional: kill resident r (r->proc), evicted to make room (why says for whom);
	 * it leaves the table when this returns. */
	void (*evict)(void *ctx, const struct resident *r, const char *why);
};

struct engine_stats {
	uint64_t submitted, granted, released, expired, failed, cancelled, killed;
	uint64_t grant_wait_ms_total;
	uint64_t warm_grants, cold_grants, evictions;
};

/*
 * Waiters hear their position when they arrive; later moves are re-announced at
 * most this often (less often past 20,000 waiting: every len/200 ms), so one
 * grant does not cost a write to every waiter.
 */
#define ENGINE_POSITION_INTERVAL_MS 100

#define ENGINE_MAX_SLOTS 8

/*
 * A physical GPU as the engine lends it: slots that `large` requests take one
 * at a time and `xlarge` requests take all together. A whole GPU has `split`
 * slots on the same device; a GPU in MIG mode has one slot per MIG instance.
 */
struct engine_gpu {
	int nslots, used;
	int slot_device[ENGINE_MAX_SLOTS];	/* inventory index of each slot's device */
	uint64_t slot_memory[ENGINE_MAX_SLOTS]; /* each slot's share of memory */
	struct lease *holder[ENGINE_MAX_SLOTS]; /* who holds each slot */
};

struct engine {
	struct engine_config cfg;
	struct engine_hooks hooks;
	const struct inventory *inv;
	struct engine_gpu gpus[INV_MAX_DEVICES];
	size_t ngpus;
	size_t slots_total, slots_busy;
	struct sched sched;
	struct heap timers;
	struct heap_node positions_timer; /* in timers while positions need re-announcing */
	struct strmap leases;		  /* id -> lease; .len is how many are open */
	struct residency residency;	  /* processes that keep memory between leases */
	struct engine_stats stats;
};

/* inv must outlive e. Returns 0 or -ENOMEM. */
int engine_init(struct engine *e, const struct inventory *inv, const struct engine_config *cfg,
		const struct engine_hooks *hooks);
/* Ends every lease (queued: cancelled; held: failed, attached processes killed), each
 * with its ENDED event; the engine stays usable (and empty). */
void engine_end_all(struct engine *e, int64_t now);
/* engine_end_all(), then frees the engine's own memory: e is unusable after. */
void engine_shutdown(struct engine *e, int64_t now);

/*
 * Takes a validated request. stream is stored in l->stream before the first
 * event, which comes before this returns: GRANTED when the devices are free
 * and nobody waits ahead, QUEUED otherwise, or ENDED (failed) when max_wait is
 * 0 and nothing is free. Returns 0, -EINVAL or -E2BIG when the request can never
 * fit this machine (engine_infeasible() says why), or -ENOMEM.
 */
int engine_submit(struct engine *e, const struct lease_request *req,
		  const struct lease_owner *owner, void *stream, int64_t now);

/*
 * Whether this machine could ever serve req: 0, or -EINVAL with a sentence in
 * why (more GPUs than there are; several devices or an xlarge one where only
 * MIG instances could serve, which CUDA would not let one process use), or
 * -E2BIG when it asks for more memory than a GPU of its size has.
 */
int engine_infeasible(const struct engine *e, const struct lease_request *req, char *why,
		      size_t size);

/* The lease with this id, or NULL. */
struct lease *engine_find(const struct engine *e, const char *id);

/*
 * Binds process p to a granted lease; the lease keeps p (its pidfd too) until
 * it ends. Returns 0 (also when p is already the one attached), or -EALREADY
 * when another process is attached, -ETIME when the deadline has passed,
 * -EBUSY when the lease is still queued. May be called from the GRANTED hook.
 */
int engine_attach(struct engine *e, struct lease *l, const struct lease_process *p, int64_t now);

/*
 * Like engine_attach(), but a process already attached is replaced by p and
 * handed back in *old (LEASE_PROCESS_NONE when there was none) for the caller
 * to let go of. Returns 0, -ETIME or -EBUSY as engine_attach().
 */
int engine_rebind(struct engine *e, struct lease *l, const struct lease_process *p, int64_t now,
		  struct lease_process *old);

/*
 * The client ends l: a queued lease is cancelled; a held one is released, or
 * failed when failed is true. *used_ms (may be NULL) gets how long the devices
 * were held. l is freed before this returns; the result is its final state.
 */
enum lease_state engine_end(struct engine *e, struct lease *l, bool failed, int64_t now,
			    int64_t *used_ms);

/*
 * The client is gone without a word: a queued lease is cancelled; a held one is
 * released at once and its attached process group killed, so that nothing keeps
 * using a device that may go to someone else. l is freed before this returns.
 */
void engine_abandon(struct engine *e, struct lease *l, int64_t now);

/*
 * Releases l like engine_end(e, l, false, ...) and keeps its process resident on the
 * devices it held (last used now), with `bytes` on each (0: the memory counted for the
 * lease). The resident owns l->proc from then on (l->kept says so to the ENDED hook). A
 * lease that holds no devices is only cancelled. When the table is full, the least recently used
 * resident is evicted first.
 */
enum lease_state engine_release_keep(struct engine *e, struct lease *l, uint64_t bytes, int64_t now,
				     int64_t *used_ms);

/* Resident id is gone (its process exited): forgets it. Returns whether it was there. */
bool engine_resident_gone(struct engine *e, uint64_t id);

/* Device memory of inventory device d no lease or resident counts (a simulated device's
 * own figure; on a real GPU the driver's may differ). */
uint64_t engine_memory_free(const struct engine *e, int device);

/* Acts on every deadline at or before now: queue timeouts, expiries, kills. */
void engine_tick(struct engine *e, int64_t now);

/* When engine_tick() next has work, in monotonic ms; INT64_MAX when never. */
int64_t engine_next_deadline(const struct engine *e);

/* One device a lease holds: which inventory device, and how much of its memory. */
struct engine_device {
	int device;
	uint64_t memory_limit;
};

/* The devices l holds, at most max of them, in grant order. Returns how many. */
int engine_lease_devices(const struct engine *e, const struct lease *l, struct engine_device *out,
			 int max);

/* How inventory device d is used: its slots, how many are held, and by which
 * leases (at most max, each once). Returns the number of leases. */
int engine_device_usage(const struct engine *e, int device, int *slots, int *held,
			const struct lease **out, int max);

/* Calls fn on each lease that holds devices or waits, in no set order. */
void engine_foreach(const struct engine *e, void (*fn)(struct lease *l, void *arg), void *arg);

#endif
