/*
 * A stand-in for libnvidia-ml.so.1 so the NVML path of the inventory is tested
 * on machines without GPUs. FAKE_NVML_GPUS describes the GPUs: a comma list of
 * MEMORY_GIB[:migN], e.g. "80,141:mig2". FAKE_NVML_INIT_FAIL=1 makes init fail.
 * FAKE_NVML_PROCESSES names a file, read at each query, of the compute processes:
 * one "UUID PID MIB" a line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
typedef struct {
	unsigned long long total, free, used;
} nvmlMemory_t;

struct fake_dev {
	int gpu, mig; /* mig = -1 for a whole GPU */
	unsigned long long memory;
	int mig_count;
	struct fake_dev *migs;
};

typedef struct fake_dev *nvmlDevice_t;

static struct fake_dev gpus[16];
static unsigned ngpus;

/* Prototypes, as NVML's header would give them. */
nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlShutdown(void);
const char *nvmlErrorString(nvmlReturn_t r);
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *n);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned i, nvmlDevice_t *h);
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t h, char *buf, unsigned len);
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t h, char *buf, unsigned len);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t h, nvmlMemory_t *m);
nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t h, unsigned *cur, unsigned *pending);
nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t h, unsigned *n);
nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t h, unsigned i, nvmlDevice_t *out);
nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t h, int *major, int *minor);
nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t h, unsigned *minor);
nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t h, unsigned *id);
nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t h, unsigned *id);
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *h);
typedef struct {
	unsigned pid;
	unsigned long long used_gpu_memory;
	unsigned gpu_instance_id, compute_instance_id;
} nvmlProcessInfo_t;
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t h, unsigned *count,
						     nvmlProcessInfo_t *infos);

nvmlReturn_t nvmlInit_v2(void)
{
	const char *fail = getenv("FAKE_NVML_INIT_FAIL");
	if (fail && *fail == '1')
		return 9; /* NVML_ERROR_DRIVER_NOT_LOADED */
	const char *spec = getenv("FAKE_NVML_GPUS");
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", spec ? spec : "");
	ngpus = 0;
	char *save;
	for (char *t = strtok_r(buf, ",", &save); t && ngpus < 16; t = strtok_r(NULL, ",", &save)) {
		struct fake_dev *g = &gpus[ngpus];
		g->gpu = (int) ngpus;
		g->mig = -1;
		g->memory = strtoull(t, NULL, 10) << 30;
		char *m = strstr(t, ":mig");
		g->mig_count = m ? atoi(m + 4) : 0;
		g->migs = g->mig_count ? calloc((size_t) g->mig_count, sizeof(*g->migs)) : NULL;
		for (int i = 0; i < g->mig_count; i++)
			g->migs[i] = (struct fake_dev){
				(int) ngpus, i, g->memory / (unsigned) g->mig_count, 0, NULL};
		ngpus++;
	}
	return 0;
}

nvmlReturn_t nvmlShutdown(void)
{
	for (unsigned i = 0; i < ngpus; i++) {
		free(gpus[i].migs);
		gpus[i].migs = NULL;
	}
	return 0;
}

const char *nvmlErrorString(nvmlReturn_t r)
{
	return r == 9 ? "Driver Not Loaded" : "Unknown Error";
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *n)
{
	*n = ngpus;
	return 0;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned i, nvmlDevice_t *h)
{
	if (i >= ngpus)
		return 2; /* NVML_ERROR_INVALID_ARGUMENT */
	*h = &gpus[i];
	return 0;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t h, char *buf, unsigned len)
{
	if (h->mig >= 0)
		snprintf(buf, len, "MIG-fake-%d-%d", h->gpu, h->mig);
	else
		snprintf(buf, len, "GPU-fake-%d", h->gpu);
	return 0;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t h, char *buf, unsigned len)
{
	snprintf(buf, len, "Fake H%d", h->mig >= 0 ? 200 : 100);
	return 0;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t h, nvmlMemory_t *m)
{
	m->total = h->memory;
	m->free = h->memory;
	m->used = 0;
	return 0;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t h, unsigned *cur, unsigned *pending)
{
	if (!h->mig_count)
		return 3; /* NVML_ERROR_NOT_SUPPORTED, as on GPUs without MIG */
	*cur = *pending = 1;
	return 0;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t h, unsigned *n)
{
	*n = 7; /* slots beyond mig_count are empty, as on real GPUs */
	return 0;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t h, unsigned i, nvmlDevice_t *out)
{
	if ((int) i >= h->mig_count)
		return 6; /* NVML_ERROR_NOT_FOUND */
	*out = &h->migs[i];
	return 0;
}

/* Like the real one, whole GPUs only (MIG handles are refused): 9.0, a Hopper card. */
nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t h, int *major, int *minor)
{
	if (h->mig >= 0)
		return 3; /* NVML_ERROR_NOT_SUPPORTED */
	*major = 9;
	*minor = 0;
	return 0;
}

/* The GPU's node is /dev/nvidia<its index>; a MIG handle is refused, as on real drivers. */
nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t h, unsigned *minor)
{
	if (h->mig >= 0)
		return 3;
	*minor = (unsigned) h->gpu;
	return 0;
}

/* MIG instance i is GPU instance i + 1 with compute instance 0 (real ids start anywhere). */
nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t h, unsigned *id)
{
	if (h->mig < 0)
		return 3;
	*id = (unsigned) h->mig + 1;
	return 0;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t h, unsigned *id)
{
	if (h->mig < 0)
		return 3;
	*id = 0;
	return 0;
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *h)
{
	int gpu, mig;
	if (sscanf(uuid, "MIG-fake-%d-%d", &gpu, &mig) == 2 && gpu >= 0 && (unsigned) gpu < ngpus &&
	    mig >= 0 && mig < gpus[gpu].mig_count) {
		*h = &gpus[gpu].migs[mig];
		return 0;
	}
	if (sscanf(uuid, "GPU-fake-%d", &gpu) == 1 && gpu >= 0 && (unsigned) gpu < ngpus) {
		*h = &gpus[gpu];
		return 0;
	}
	return 6; /* NVML_ERROR_NOT_FOUND */
}

/* The lines of FAKE_NVML_PROCESSES for h; NVML_ERROR_INSUFFICIENT_SIZE (7) with the
 * count needed when infos has too little room, as the real one. */
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t h, unsigned *count,
						     nvmlProcessInfo_t *infos)
{
	char mine[64], uuid[64], line[256];
	nvmlDeviceGetUUID(h, mine, sizeof(mine));
	const char *path = getenv("FAKE_NVML_PROCESSES");
	FILE *f = path ? fopen(path, "r") : NULL;
	unsigned n = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned pid;
		unsigned long long mib;
		if (sscanf(line, "%63s %u %llu", uuid, &pid, &mib) != 3 || strcmp(uuid, mine))
			continue;
		if (n < *count)
			infos[n] = (nvmlProcessInfo_t){pid, mib << 20, 0, 0};
		n++;
	}
	if (f)
		fclose(f);
	nvmlReturn_t rc = n > *count ? 7 : 0;
	*count = n;
	return rc;
}
