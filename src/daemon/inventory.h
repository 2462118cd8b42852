/*
 * inventory — the devices this daemon lends: real GPUs (and MIG instances)
 * found through NVML, or simulated ones for machines without GPUs.
 */
#ifndef ZGPU_DAEMON_INVENTORY_H
#define ZGPU_DAEMON_INVENTORY_H

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
};

struct inventory {
	struct device devices[INV_MAX_DEVICES];
	size_t count;
	const char *source; /* "simulated" or "nvml"; static string */
};

/*
 * Fills inv with simulated devices from spec, a comma-separated list of
 * COUNTxMEMORY items ("4x80G", "2x141G,1x80G"; MEMORY takes G/GB/GiB or
 * M/MB/MiB, binary units). UUIDs are derived from seed (the host name), the
 * index and the memory, so they stay the same across restarts. On error
 * returns -EINVAL and writes a sentence into err.
 */
int inventory_simulate(struct inventory *inv, const char *spec, const char *seed, char *err,
		       size_t errlen);

/*
 * Fills inv from NVML, loaded with dlopen(libpath) (NULL: "libnvidia-ml.so.1").
 * A GPU in MIG mode contributes its MIG instances instead of itself. Returns
 * -ENOENT when the library cannot be loaded, -ENODEV when it reports no
 * devices, -EIO for other NVML failures; err says which.
 */
int inventory_from_nvml(struct inventory *inv, const char *libpath, char *err, size_t errlen);

#endif
