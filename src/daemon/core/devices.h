/*
 * devices — the devices this daemon lends, as data: what the engine places
 * leases on and the APIs describe. Finding them (NVML, simulation) is
 * sys/inventory.h's job.
 */
#ifndef ZGPU_DAEMON_CORE_DEVICES_H
#define ZGPU_DAEMON_CORE_DEVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INV_MAX_DEVICES 64
#define INV_UUID_MAX	96
#define INV_NAME_MAX	96

struct device {
	int index;     /* position in the inventory, 0..count-1: the API's index */
	int gpu_index; /* the physical GPU's NVML index (for a MIG instance, its parent's) */
	int mig_index; /* the MIG instance number on its GPU, or -1 for a whole GPU */
	char uuid[INV_UUID_MAX];
	char name[INV_NAME_MAX];
	uint64_t memory_bytes;
	char compute_capability[8]; /* CUDA's "9.0"; empty when NVML does not say */
	bool simulated;
	/* Which device nodes give access to it (gating): /dev/nvidia<node_minor> for a whole
	 * GPU; for a MIG instance, the capability nodes of its GPU instance and compute
	 * instance on GPU node_minor. -1 when unknown. */
	int node_minor;
	int gi_id, ci_id;
};

struct inventory {
	struct device devices[INV_MAX_DEVICES];
	size_t count;
	const char *source; /* "simulated" or "nvml"; static string */
};

#endif
