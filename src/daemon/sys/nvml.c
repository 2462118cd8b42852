/*
 * NVML, loaded at run time. We declare the few types and functions we call so
 * that neither CUDA headers nor the driver are needed to build zerogpud.
 */
#include "daemon/sys/inventory.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct {
	unsigned long long total, free, used;
} nvmlMemory_t;

#define NVML_SUCCESS	       0
#define NVML_DEVICE_MIG_ENABLE 1

struct nvml_api {
	void *lib;
	nvmlReturn_t (*init)(void);
	nvmlReturn_t (*shutdown)(void);
	const char *(*error_string)(nvmlReturn_t);
	nvmlReturn_t (*device_count)(unsigned int *);
	nvmlReturn_t (*device_by_index)(unsigned int, nvmlDevice_t *);
	nvmlReturn_t (*device_uuid)(nvmlDevice_t, char *, unsigned int);
	nvmlReturn_t (*device_name)(nvmlDevice_t, char *, unsigned int);
	nvmlReturn_t (*device_memory)(nvmlDevice_t, nvmlMemory_t *);
	/* MIG functions are optional: old drivers lack them. */
	nvmlReturn_t (*mig_mode)(nvmlDevice_t, unsigned int *, unsigned int *);
	nvmlReturn_t (*mig_max_count)(nvmlDevice_t, unsigned int *);
	nvmlReturn_t (*mig_by_index)(nvmlDevice_t, unsigned int, nvmlDevice_t *);
	/* Optional too: the Python package reports it as torch's device capability. */
	nvmlReturn_t (*cuda_capability)(nvmlDevice_t, int *, int *);
	/* Optional: the device nodes, for gating (/dev/nvidiaN; MIG capability nodes). */
	nvmlReturn_t (*minor_number)(nvmlDevice_t, unsigned int *);
	nvmlReturn_t (*gpu_instance_id)(nvmlDevice_t, unsigned int *);
	nvmlReturn_t (*compute_instance_id)(nvmlDevice_t, unsigned int *);
};

static int nvml_load(struct nvml_api *api, const char *libpath, char *err, size_t errlen)
{
	memset(api, 0, sizeof(*api));
	api->lib = dlopen(libpath, RTLD_NOW | RTLD_LOCAL);
	if (!api->lib) {
		snprintf(err, errlen, "cannot load NVML (%s): %s", libpath, dlerror());
		return -ENOENT;
	}
#define NVML_SYM(field, name, required)                                                            \
	do {                                                                                       \
		*(void **) &api->field = dlsym(api->lib, name);                                    \
		if (required && !api->field) {                                                     \
			snprintf(err, errlen, "NVML library %s lacks %s", libpath, name);          \
			dlclose(api->lib);                                                         \
			return -ENOENT;                                                            \
		}                                                                                  \
	} while (0)
	NVML_SYM(init, "nvmlInit_v2", 1);
	NVML_SYM(shutdown, "nvmlShutdown", 1);
	NVML_SYM(error_string, "nvmlErrorString", 1);
	NVML_SYM(device_count, "nvmlDeviceGetCount_v2", 1);
	NVML_SYM(device_by_index, "nvmlDeviceGetHandleByIndex_v2", 1);
	NVML_SYM(device_uuid, "nvmlDeviceGetUUID", 1);
	NVML_SYM(device_name, "nvmlDeviceGetName", 1);
	NVML_SYM(device_memory, "nvmlDeviceGetMemoryInfo", 1);
	NVML_SYM(mig_mode, "nvmlDeviceGetMigMode", 0);
	NVML_SYM(mig_max_count, "nvmlDeviceGetMaxMigDeviceCount", 0);
	NVML_SYM(mig_by_index, "nvmlDeviceGetMigDeviceHandleByIndex", 0);
	NVML_SYM(cuda_capability, "nvmlDeviceGetCudaComputeCapability", 0);
	NVML_SYM(minor_number, "nvmlDeviceGetMinorNumber", 0);
	NVML_SYM(gpu_instance_id, "nvmlDeviceGetGpuInstanceId", 0);
	NVML_SYM(compute_instance_id, "nvmlDeviceGetComputeInstanceId", 0);
#undef NVML_SYM
	return 0;
}

/* Appends one device (a GPU or a MIG instance) read through handle h; gpu is the
 * physical GPU's handle (h itself for a whole GPU), which knows the capability. */
static int nvml_add(struct inventory *inv, struct nvml_api *api, nvmlDevice_t h, nvmlDevice_t gpu,
		    int gpu_index, int mig_index, char *err, size_t errlen)
{
	if (inv->count >= INV_MAX_DEVICES) {
		snprintf(err, errlen, "more than %d devices; zerogpud lends at most %d",
			 INV_MAX_DEVICES, INV_MAX_DEVICES);
		return -EIO;
	}
	struct device *d = &inv->devices[inv->count];
	nvmlMemory_t mem;
	nvmlReturn_t rc;
	if ((rc = api->device_uuid(h, d->uuid, sizeof(d->uuid))) != NVML_SUCCESS ||
	    (rc = api->device_name(h, d->name, sizeof(d->name))) != NVML_SUCCESS ||
	    (rc = api->device_memory(h, &mem)) != NVML_SUCCESS) {
		snprintf(err, errlen, "NVML could not describe GPU %d%s: %s", gpu_index,
			 mig_index >= 0 ? " (a MIG instance)" : "", api->error_string(rc));
		return -EIO;
	}
	d->index = (int) inv->count;
	d->gpu_index = gpu_index;
	d->mig_index = mig_index;
	d->memory_bytes = mem.total;
	d->simulated = false;
	unsigned node = 0, gi = 0, ci = 0;
	d->node_minor = api->minor_number && api->minor_number(gpu, &node) == NVML_SUCCESS
				? (int) node
				: -1;
	d->gi_id = d->ci_id = -1;
	if (mig_index >= 0 && api->gpu_instance_id && api->compute_instance_id &&
	    api->gpu_instance_id(h, &gi) == NVML_SUCCESS &&
	    api->compute_instance_id(h, &ci) == NVML_SUCCESS) {
		d->gi_id = (int) gi;
		d->ci_id = (int) ci;
	}
	int major, minor;
	if (api->cuda_capability && api->cuda_capability(gpu, &major, &minor) == NVML_SUCCESS &&
	    major > 0 && major < 100 && minor >= 0 && minor < 100)
		snprintf(d->compute_capability, sizeof(d->compute_capability), "%d.%d", major,
			 minor);
	inv->count++;
	return 0;
}

static int nvml_add_gpu(struct inventory *inv, struct nvml_api *api, unsigned gpu, char *err,
			size_t errlen)
{
	nvmlDevice_t h;
	nvmlReturn_t rc = api->device_by_index(gpu, &h);
	if (rc != NVML_SUCCESS) {
		snprintf(err, errlen, "NVML could not open GPU %u: %s", gpu, api->error_string(rc));
		return -EIO;
	}

	unsigned current = 0, pending = 0, max_mig = 0;
	bool mig = api->mig_mode && api->mig_max_count && api->mig_by_index &&
		   api->mig_mode(h, &current, &pending) == NVML_SUCCESS &&
		   current == NVML_DEVICE_MIG_ENABLE &&
		   api->mig_max_count(h, &max_mig) == NVML_SUCCESS;
	if (!mig)
		return nvml_add(inv, api, h, h, (int) gpu, -1, err, errlen);

	/* MIG on: lend the instances that exist; empty slots report an error. */
	int found = 0;
	for (unsigned i = 0; i < max_mig; i++) {
		nvmlDevice_t mh;
		if (api->mig_by_index(h, i, &mh) != NVML_SUCCESS)
			continue;
		int r = nvml_add(inv, api, mh, h, (int) gpu, (int) i, err, errlen);
		if (r < 0)
			return r;
		found++;
	}
	/* MIG on with no instance made: the GPU cannot run work, so lend nothing of it. */
	(void) found;
	return 0;
}

int inventory_from_nvml(struct inventory *inv, const char *libpath, char *err, size_t errlen)
{
	memset(inv, 0, sizeof(*inv));
	inv->source = "nvml";
	struct nvml_api api;
	int r = nvml_load(&api, libpath ? libpath : "libnvidia-ml.so.1", err, errlen);
	if (r < 0)
		return r;

	nvmlReturn_t rc = api.init();
	if (rc != NVML_SUCCESS) {
		snprintf(err, errlen, "NVML failed to initialise: %s", api.error_string(rc));
		dlclose(api.lib);
		return -EIO;
	}
	unsigned n = 0;
	rc = api.device_count(&n);
	if (rc != NVML_SUCCESS) {
		snprintf(err, errlen, "NVML could not count GPUs: %s", api.error_string(rc));
		r = -EIO;
	}
	for (unsigned i = 0; r == 0 && i < n; i++)
		r = nvml_add_gpu(inv, &api, i, err, errlen);
	if (r == 0 && inv->count == 0) {
		snprintf(err, errlen, "NVML found no usable GPU (%u GPUs, none lendable)", n);
		r = -ENODEV;
	}
	api.shutdown();
	dlclose(api.lib);
	if (r < 0)
		inv->count = 0;
	return r;
}
