/* Device gating machinery on this kernel: the v2 BPF program and the v1 devices files,
 * against fake device nodes (mknod). Needs root; prints why it skips otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/sys/cgroup.h"
#include "daemon/sys/devbpf.h"

static char nodes[64];
static struct cgroup_mounts mounts;

/* What open() says of a node: 0 (opened), or the errno. No driver: allowed = ENXIO. */
static int open_errno(const char *name)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", nodes, name);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		return 0;
	}
	return errno;
}

static int setup(void **state)
{
	(void) state;
	if (geteuid() != 0) {
		fprintf(stderr, "skipping: device gating needs root\n");
		return -1;
	}
	snprintf(nodes, sizeof(nodes), "/tmp/zgpu-devbpf-XXXXXX");
	assert_non_null(mkdtemp(nodes));
	char path[128];
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/nvidia%d", nodes, i);
		assert_int_equal(mknod(path, S_IFCHR | 0666, makedev(195, (unsigned) i)), 0);
	}
	snprintf(path, sizeof(path), "%s/nvidiactl", nodes);
	assert_int_equal(mknod(path, S_IFCHR | 0666, makedev(195, 255)), 0);
	assert_int_equal(cgroup_find_mounts(&mounts), 0);
	return 0;
}

static int teardown(void **state)
{
	(void) state;
	const char *names[] = {"nvidia0", "nvidia1", "nvidiactl"};
	char path[128];
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", nodes, names[i]);
		unlink(path);
	}
	rmdir(nodes);
	return 0;
}

static void a_bpf_program_gates_by_map(void **state)
{
	(void) state;
	if (!mounts.v2[0])
		skip(); /* no cgroup2 mount here */
	char cg[PATH_MAX + 64];
	snprintf(cg, sizeof(cg), "%s/zgpu-test-%d", mounts.v2, (int) getpid());
	assert_int_equal(cgroup_make(cg), 0);
	int cgfd = open(cg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(cgfd >= 0);
	int gated = devbpf_map_create(16), allowed = devbpf_map_create(16);
	assert_true(gated >= 0 && allowed >= 0);
	assert_int_equal(devbpf_map_set(gated, 195, 0, true), 0);
	assert_int_equal(devbpf_map_set(gated, 195, 1, true), 0);
	char err[300];
	int prog = devbpf_prog_load(gated, allowed, err, sizeof(err));
	if (prog < 0)
		fail_msg("%s", err);
	assert_int_equal(devbpf_attach(cgfd, prog), 0);
	assert_int_equal(cgroup_join(cg, getpid()), 0);

	assert_int_equal(open_errno("nvidia0"), EPERM); /* gated, no lease */
	assert_int_equal(open_errno("nvidia1"), EPERM);
	assert_int_equal(open_errno("nvidiactl"), ENXIO); /* not gated: allowed, no driver */
	assert_int_equal(devbpf_map_set(allowed, 195, 0, true), 0);
	assert_int_equal(open_errno("nvidia0"), ENXIO); /* granted */
	assert_int_equal(open_errno("nvidia1"), EPERM);
	assert_int_equal(devbpf_map_set(allowed, 195, 0, false), 0);
	assert_int_equal(open_errno("nvidia0"), EPERM); /* revoked */

	/* A restarted daemon attaches its own program first, then finds the old one by
	 * name and takes it off, keeping its own: gated throughout. */
	int fresh_allowed = devbpf_map_create(16);
	int fresh = devbpf_prog_load(gated, fresh_allowed, err, sizeof(err));
	assert_true(fresh >= 0);
	assert_int_equal(devbpf_attach(cgfd, fresh), 0);
	assert_int_equal(devbpf_map_set(allowed, 195, 1, true), 0); /* the old run's grant */
	assert_int_equal(open_errno("nvidia1"), EPERM);		    /* the new program says no */
	assert_int_equal(devbpf_detach_stale(cgfd, fresh), 1);
	assert_int_equal(open_errno("nvidia1"), EPERM);
	assert_int_equal(devbpf_detach_stale(cgfd, fresh), 0);
	assert_int_equal(devbpf_detach_stale(cgfd, -1), 1);
	assert_int_equal(open_errno("nvidia0"), ENXIO); /* nothing attached: all allowed */
	close(fresh);
	close(fresh_allowed);

	char root[PATH_MAX];
	snprintf(root, sizeof(root), "%s", mounts.v2);
	assert_int_equal(cgroup_join(root, getpid()), 0);
	close(prog);
	close(gated);
	close(allowed);
	close(cgfd);
	assert_int_equal(cgroup_remove(cg), 0);
}

static void v1_devices_files_gate_too(void **state)
{
	(void) state;
	if (!mounts.devices[0])
		skip(); /* no v1 devices controller here */
	char cg[PATH_MAX + 64];
	snprintf(cg, sizeof(cg), "%s/zgpu-test-%d", mounts.devices, (int) getpid());
	assert_int_equal(cgroup_make(cg), 0);
	assert_int_equal(cgroup_v1_device(cg, false, 195, 0), 0);
	assert_int_equal(cgroup_v1_device(cg, false, 195, 1), 0);
	assert_int_equal(cgroup_join(cg, getpid()), 0);
	char where[PATH_MAX];
	assert_int_equal(cgroup_of_pid(getpid(), "devices", where, sizeof(where)), 0);
	assert_non_null(strstr(where, "zgpu-test-"));
	assert_int_equal(open_errno("nvidia0"), EPERM);
	assert_int_equal(open_errno("nvidiactl"), ENXIO);
	assert_int_equal(cgroup_v1_device(cg, true, 195, 0), 0);
	assert_int_equal(open_errno("nvidia0"), ENXIO);
	assert_int_equal(open_errno("nvidia1"), EPERM);
	assert_int_equal(cgroup_v1_device(cg, false, 195, 0), 0);
	assert_int_equal(open_errno("nvidia0"), EPERM);
	pid_t procs[8];
	assert_int_equal(cgroup_procs(cg, true, procs, 8), 1);
	assert_int_equal(procs[0], getpid());
	assert_int_equal(cgroup_join(mounts.devices, getpid()), 0);
	assert_int_equal(cgroup_remove(cg), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_bpf_program_gates_by_map),
		cmocka_unit_test(v1_devices_files_gate_too),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
