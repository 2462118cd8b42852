/* Which device nodes gate each device: found by stat() under --device-dir, MIG capability
 * minors from the driver's mig-minors file. Real character devices stand in for GPUs
 * through symlinks, so no root is needed. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/sys/devnodes.h"

static char dir[64];

static void link_node(const char *name, const char *target)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(symlink(target, path), 0);
}

static dev_t rdev(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_rdev;
}

static int setup(void **state)
{
	(void) state;
	snprintf(dir, sizeof(dir), "/tmp/zgpu-devnodes-XXXXXX");
	assert_non_null(mkdtemp(dir));
	return 0;
}

static int teardown(void **state)
{
	(void) state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static struct device whole(int index, int minor)
{
	struct device d = {.index = index,
			   .gpu_index = index,
			   .mig_index = -1,
			   .node_minor = minor,
			   .gi_id = -1,
			   .ci_id = -1};
	snprintf(d.uuid, sizeof(d.uuid), "GPU-%d", index);
	return d;
}

static void whole_gpus_by_their_minor(void **state)
{
	(void) state;
	link_node("nvidia0", "/dev/null");
	link_node("nvidia3", "/dev/zero");
	struct inventory inv = {.count = 2};
	inv.devices[0] = whole(0, 3); /* NVML's order need not be the minors' */
	inv.devices[1] = whole(1, 0);
	struct devnodes dn;
	char err[512];
	assert_int_equal(devnodes_find(&dn, &inv, dir, "/nonexistent", err, sizeof(err)), 0);
	assert_int_equal(dn.count, 2);
	assert_int_equal(dn.dev[dn.of_device[0][0]], rdev("/dev/zero"));
	assert_int_equal(dn.dev[dn.of_device[1][0]], rdev("/dev/null"));
	assert_int_equal(dn.of_device[0][1], -1);
	assert_int_equal(dn.of_device[2][0], -1);
}

static void a_missing_or_wrong_node_is_named(void **state)
{
	(void) state;
	struct inventory inv = {.count = 1};
	inv.devices[0] = whole(0, 5);
	struct devnodes dn;
	char err[512], want[256];
	assert_int_equal(devnodes_find(&dn, &inv, dir, "/nonexistent", err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "device 0 (GPU-0): %s/nvidia5: No such file or directory",
		 dir);
	assert_string_equal(err, want);

	char path[128];
	snprintf(path, sizeof(path), "%s/nvidia5", dir);
	FILE *f = fopen(path, "w");
	fclose(f);
	assert_int_equal(devnodes_find(&dn, &inv, dir, "/nonexistent", err, sizeof(err)), -ENODEV);
	assert_non_null(strstr(err, "nvidia5 is not a character device"));

	inv.devices[0].node_minor = -1;
	assert_true(devnodes_find(&dn, &inv, dir, "/nonexistent", err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "the driver did not say which node is GPU 0's"));
}

static void mig_instances_by_their_capability_nodes(void **state)
{
	(void) state;
	char caps[128], minors[128];
	snprintf(caps, sizeof(caps), "%s/nvidia-caps", dir);
	assert_int_equal(mkdir(caps, 0755), 0);
	link_node("nvidia-caps/nvidia-cap10", "/dev/null");
	link_node("nvidia-caps/nvidia-cap11", "/dev/zero");
	link_node("nvidia-caps/nvidia-cap12", "/dev/full");
	snprintf(minors, sizeof(minors), "%s/mig-minors", dir);
	FILE *f = fopen(minors, "w");
	fputs("config 1\nmonitor 2\ngpu2/gi1/access 10\ngpu2/gi1/ci0/access 11\n"
	      "gpu2/gi1/ci1/access 12\n",
	      f);
	fclose(f);
	/* Two compute instances of one GPU instance of GPU 2: they share its node. */
	struct inventory inv = {.count = 2};
	for (int i = 0; i < 2; i++) {
		inv.devices[i] = whole(i, 2);
		inv.devices[i].mig_index = i;
		inv.devices[i].gi_id = 1;
		inv.devices[i].ci_id = i;
	}
	struct devnodes dn;
	char err[512];
	assert_int_equal(devnodes_find(&dn, &inv, dir, minors, err, sizeof(err)), 0);
	assert_int_equal(dn.count, 3);
	assert_int_equal(dn.of_device[0][0], dn.of_device[1][0]);
	assert_int_equal(dn.dev[dn.of_device[0][0]], rdev("/dev/null"));
	assert_int_equal(dn.dev[dn.of_device[0][1]], rdev("/dev/zero"));
	assert_int_equal(dn.dev[dn.of_device[1][1]], rdev("/dev/full"));

	inv.devices[1].gi_id = 2; /* an instance the file does not list */
	assert_true(devnodes_find(&dn, &inv, dir, minors, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "does not list gpu2/gi2/access"));
	assert_true(devnodes_find(&dn, &inv, dir, "/nonexistent/mig", err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent/mig: No such file or directory"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(whole_gpus_by_their_minor, setup, teardown),
		cmocka_unit_test_setup_teardown(a_missing_or_wrong_node_is_named, setup, teardown),
		cmocka_unit_test_setup_teardown(mig_instances_by_their_capability_nodes, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
