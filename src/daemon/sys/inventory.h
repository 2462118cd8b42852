/*
 * inventory — the devices this daemon lends: real GPUs (and MIG instances)
 * found through NVML, or simulated ones for machines without GPUs.
 */
#ifndef ZGPU_DAEMON_SYS_INVENTORY_H
#define ZGPU_DAEMON_SYS_INVENTORY_H

#include <stddef.h>

#include "daemon/core/devices.h"

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

/* Parses a memory size: "80G", "141GB", "512MiB" (G/GB/GiB and M/MB/MiB are binary
 * units), more than 0 and at most 1 PiB, into bytes. Returns 0 or -EINVAL. */
int inventory_parse_memory(const char *s, uint64_t *out);

#endif
