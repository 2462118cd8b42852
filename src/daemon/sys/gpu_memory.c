#include "daemon/sys/gpu_memory.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;

/* nvmlProcessInfo_t of the _v2 and _v3 calls (NVML 11.4 and later). */
typedef struct {
	unsigned int pid;
	unsigned long long used_gpu_memory;
	unsigned int gpu_instance_id, compute_instance_id;
} nvml_process_info;

#define NVML_SUCCESS		     0
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_VALUE_NOT_AVAILABLE     (~0ULL)
/* Processes asked about at once; more are asked again with room for all. */
#define FIRST_GUESS 64

struct gpu_memory {
	void *lib;
	nvmlReturn_t (*shutdown)(void);
	nvmlReturn_t (*by_uuid)(const char *, nvmlDevice_t *);
	nvmlReturn_t (*processes)(nvmlDevice_t, unsigned int *, nvml_process_info *);
};

struct gpu_memory *gpu_memory_open(const char *libpath, char *err, size_t errlen)
{
	const char *path = libpath && *libpath ? libpath : "libnvidia-ml.so.1";
	struct gpu_memory *g = calloc(1, sizeof(*g));
	if (!g) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	g->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!g->lib) {
		snprintf(err, errlen, "cannot load NVML (%s): %s", path, dlerror());
		free(g);
		return NULL;
	}
	nvmlReturn_t (*init)(void);
	*(void **) &init = dlsym(g->lib, "nvmlInit_v2");
	*(void **) &g->shutdown = dlsym(g->lib, "nvmlShutdown");
	*(void **) &g->by_uuid = dlsym(g->lib, "nvmlDeviceGetHandleByUUID");
	*(void **) &g->processes = dlsym(g->lib, "nvmlDeviceGetComputeRunningProcesses_v3");
	if (!g->processes)
		*(void **) &g->processes = dlsym(g->lib, "nvmlDeviceGetComputeRunningProcesses_v2");
	if (!init || !g->shutdown || !g->by_uuid || !g->processes) {
		snprintf(err, errlen,
			 "NVML library %s lacks the per-process memory query "
			 "(nvmlDeviceGetComputeRunningProcesses_v2 or _v3)",
			 path);
		dlclose(g->lib);
		free(g);
		return NULL;
	}
	if (init() != NVML_SUCCESS) {
		snprintf(err, errlen, "NVML (%s) failed to initialise", path);
		dlclose(g->lib);
		free(g);
		return NULL;
	}
	return g;
}

int gpu_memory_of_process(struct gpu_memory *g, const char *uuid, pid_t pid, uint64_t *bytes)
{
	*bytes = 0;
	nvmlDevice_t h;
	if (g->by_uuid(uuid, &h) != NVML_SUCCESS)
		return -ENODEV;
	unsigned int n = FIRST_GUESS;
	nvml_process_info *info = NULL;
	nvmlReturn_t rc;
	do {
		free(info);
		info = calloc(n ? n : 1, sizeof(*info));
		if (!info)
			return -ENOMEM;
		rc = g->processes(h, &n, info);
	} while (rc == NVML_ERROR_INSUFFICIENT_SIZE);
	if (rc == NVML_SUCCESS)
		for (unsigned int i = 0; i < n; i++)
			if (info[i].pid == (unsigned int) pid &&
			    info[i].used_gpu_memory != NVML_VALUE_NOT_AVAILABLE)
				*bytes += info[i].used_gpu_memory;
	free(info);
	return rc == NVML_SUCCESS ? 0 : -EIO;
}

void gpu_memory_close(struct gpu_memory *g)
{
	if (!g)
		return;
	g->shutdown();
	dlclose(g->lib);
	free(g);
}
