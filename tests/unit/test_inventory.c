/* The --simulate spec, stable simulated UUIDs, and NVML through a fake library: the
 * devices, and the memory a process holds on one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/sys/gpu_memory.h"
#include "daemon/sys/inventory.h"

#define GIB (1ULL << 30)

static void simple_spec(void **state)
{
	struct inventory inv;
	char err[256];
	assert_int_equal(inventory_simulate(&inv, "4x80G", "host", err, sizeof(err)), 0);
	assert_int_equal(inv.count, 4);
	assert_string_equal(inv.source, "simulated");
	for (int i = 0; i < 4; i++) {
		assert_int_equal(inv.devices[i].index, i);
		assert_int_equal(inv.devices[i].memory_bytes, 80 * GIB);
		assert_int_equal(inv.devices[i].mig_index, -1);
		assert_true(inv.devices[i].simulated);
		assert_int_equal(strncmp(inv.devices[i].uuid, "GPU-", 4), 0);
		assert_int_equal(strlen(inv.devices[i].uuid), 40);
	}
}

static void mixed_spec_and_units(void **state)
{
	struct inventory inv;
	char err[256];
	assert_int_equal(inventory_simulate(&inv, "2x141G,1x80GB,1x512MiB", "h", err, sizeof(err)),
			 0);
	assert_int_equal(inv.count, 4);
	assert_int_equal(inv.devices[0].memory_bytes, 141 * GIB);
	assert_int_equal(inv.devices[1].memory_bytes, 141 * GIB);
	assert_int_equal(inv.devices[2].memory_bytes, 80 * GIB);
	assert_int_equal(inv.devices[3].memory_bytes, 512ULL << 20);
}

static void uuids_are_stable_and_unique(void **state)
{
	struct inventory a, b, c;
	char err[256];
	inventory_simulate(&a, "4x80G", "host-a", err, sizeof(err));
	inventory_simulate(&b, "4x80G", "host-a", err, sizeof(err));
	inventory_simulate(&c, "4x80G", "host-b", err, sizeof(err));
	for (int i = 0; i < 4; i++) {
		assert_string_equal(a.devices[i].uuid, b.devices[i].uuid);
		assert_string_not_equal(a.devices[i].uuid, c.devices[i].uuid);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(a.devices[i].uuid, a.devices[j].uuid);
	}
}

static void bad_specs_are_refused_with_a_reason(void **state)
{
	static const struct {
		const char *spec, *message;
	} cases[] = {
		{"", "empty --simulate spec"},
		{"4", "bad --simulate item '4': expected COUNTxMEMORY like 4x80G"},
		{"4x", "bad --simulate item '4x'"},
		{"x80G", "bad --simulate item 'x80G'"},
		{"4x80", "bad --simulate item '4x80'"},
		{"4x80T", "bad --simulate item '4x80T'"},
		{"4x-80G", "bad --simulate item '4x-80G'"},
		{"0x80G", "the device count must be 1 to 64 in all"},
		{"65x80G", "the device count must be 1 to 64 in all"},
		{"60x80G,5x80G", "bad --simulate item '5x80G': the device count must be 1 to 64"},
		{",", "names no devices"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct inventory inv;
		char err[256] = "";
		assert_int_equal(inventory_simulate(&inv, cases[i].spec, "h", err, sizeof(err)),
				 -22);
		if (!strstr(err, cases[i].message))
			fail_msg("spec '%s': message '%s' lacks '%s'", cases[i].spec, err,
				 cases[i].message);
	}
}

static void nvml_whole_gpus_and_mig_instances(void **state)
{
	const char *lib = getenv("FAKE_NVML_LIBRARY");
	assert_non_null(lib);
	setenv("FAKE_NVML_GPUS", "80,141:mig2", 1);
	unsetenv("FAKE_NVML_INIT_FAIL");
	struct inventory inv;
	char err[256];
	assert_int_equal(inventory_from_nvml(&inv, lib, err, sizeof(err)), 0);
	assert_string_equal(inv.source, "nvml");
	assert_int_equal(inv.count, 3);
	assert_string_equal(inv.devices[0].uuid, "GPU-fake-0");
	assert_int_equal(inv.devices[0].memory_bytes, 80 * GIB);
	assert_int_equal(inv.devices[0].mig_index, -1);
	/* GPU 1 is in MIG mode: its two instances are lent, not the GPU. */
	assert_string_equal(inv.devices[1].uuid, "MIG-fake-1-0");
	assert_string_equal(inv.devices[2].uuid, "MIG-fake-1-1");
	assert_int_equal(inv.devices[1].gpu_index, 1);
	assert_int_equal(inv.devices[2].mig_index, 1);
	assert_int_equal(inv.devices[1].memory_bytes, 141 * GIB / 2);
	assert_int_equal(inv.devices[2].index, 2);
	assert_false(inv.devices[2].simulated);
}

static void nvml_failures_are_explained(void **state)
{
	struct inventory inv;
	char err[256];
	assert_int_equal(
		inventory_from_nvml(&inv, "/nonexistent/libnvidia-ml.so.1", err, sizeof(err)),
		-2 /* ENOENT */);
	assert_non_null(strstr(err, "cannot load NVML"));

	const char *lib = getenv("FAKE_NVML_LIBRARY");
	setenv("FAKE_NVML_INIT_FAIL", "1", 1);
	assert_int_equal(inventory_from_nvml(&inv, lib, err, sizeof(err)), -5 /* EIO */);
	assert_string_equal(err, "NVML failed to initialise: Driver Not Loaded");
	unsetenv("FAKE_NVML_INIT_FAIL");

	setenv("FAKE_NVML_GPUS", "", 1);
	assert_int_equal(inventory_from_nvml(&inv, lib, err, sizeof(err)), -19 /* ENODEV */);
	assert_non_null(strstr(err, "NVML found no usable GPU"));
}

static void nvml_reports_a_processs_memory_per_device(void **state)
{
	const char *lib = getenv("FAKE_NVML_LIBRARY");
	setenv("FAKE_NVML_GPUS", "80,141:mig2", 1);
	char path[] = "/tmp/zgpu-fake-procs-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	/* 100 processes on GPU 0 (more than one query's first guess), pid 4242 twice (two
	 * contexts), and pid 4242 on a MIG instance too. */
	for (int pid = 1000; pid < 1100; pid++)
		fprintf(f, "GPU-fake-0 %d 1\n", pid);
	fprintf(f, "GPU-fake-0 4242 30720\nGPU-fake-0 4242 1024\nMIG-fake-1-1 4242 512\n");
	fclose(f);
	setenv("FAKE_NVML_PROCESSES", path, 1);
	char err[256];
	struct gpu_memory *g = gpu_memory_open(lib, err, sizeof(err));
	assert_non_null(g);
	uint64_t bytes;
	assert_int_equal(gpu_memory_of_process(g, "GPU-fake-0", 4242, &bytes), 0);
	assert_int_equal(bytes, 31744ULL << 20);
	assert_int_equal(gpu_memory_of_process(g, "GPU-fake-0", 1099, &bytes), 0);
	assert_int_equal(bytes, 1ULL << 20);
	assert_int_equal(gpu_memory_of_process(g, "MIG-fake-1-1", 4242, &bytes), 0);
	assert_int_equal(bytes, 512ULL << 20);
	assert_int_equal(gpu_memory_of_process(g, "MIG-fake-1-0", 4242, &bytes), 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(gpu_memory_of_process(g, "GPU-fake-0", 77, &bytes), 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(gpu_memory_of_process(g, "GPU-nope", 4242, &bytes), -19 /* ENODEV */);
	gpu_memory_close(g);
	unlink(path);
	unsetenv("FAKE_NVML_PROCESSES");

	assert_null(gpu_memory_open("/nonexistent/libnvidia-ml.so.1", err, sizeof(err)));
	assert_non_null(strstr(err, "cannot load NVML"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(simple_spec),
		cmocka_unit_test(mixed_spec_and_units),
		cmocka_unit_test(uuids_are_stable_and_unique),
		cmocka_unit_test(bad_specs_are_refused_with_a_reason),
		cmocka_unit_test(nvml_whole_gpus_and_mig_instances),
		cmocka_unit_test(nvml_failures_are_explained),
		cmocka_unit_test(nvml_reports_a_processs_memory_per_device),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
