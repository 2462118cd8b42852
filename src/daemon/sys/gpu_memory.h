/*
 * gpu_memory — how much device memory a process holds, as NVML sees it: the size of
 * a worker kept resident on a real GPU (docs/residency.md). NVML is loaded once and
 * stays loaded while the daemon runs; simulated devices never ask.
 */
#ifndef ZGPU_DAEMON_SYS_GPU_MEMORY_H
#define ZGPU_DAEMON_SYS_GPU_MEMORY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct gpu_memory;

/* Loads NVML from libpath (NULL: libnvidia-ml.so.1) and initialises it. NULL with a
 * sentence in err when it cannot. */
struct gpu_memory *gpu_memory_open(const char *libpath, char *err, size_t errlen);

/*
 * The device memory process pid uses on the device (GPU or MIG instance) with this
 * UUID, from NVML's running compute processes: *bytes (0 when pid is not among
 * them). Returns 0, -ENODEV for a UUID NVML does not know, -EIO when NVML fails.
 */
int gpu_memory_of_process(struct gpu_memory *g, const char *uuid, pid_t pid, uint64_t *bytes);

void gpu_memory_close(struct gpu_memory *g);

#endif
