/* Process identity: the start time must be the kernel's, and stable across exec. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/sys/proc.h"

/* Field 22 of /proc/PID/stat, read the plain way for comparison. */
static uint64_t start_time_by_hand(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')') + 2; /* field 3 */
	for (int field = 3; field < 22; field++)
		p = strchr(p, ' ') + 1;
	return strtoull(p, NULL, 10);
}

static void start_time_is_field_22_and_survives_exec(void **state)
{
	int ready[2];
	assert_int_equal(pipe(ready), 0);
	pid_t child = fork();
	if (child == 0) {
		close(ready[0]);
		/* Sleep a little before exec so the parent reads the times on both sides. */
		usleep(200000);
		execlp("sleep", "sleep", "5", (char *) NULL);
		_exit(127);
	}
	uint64_t before, after;
	assert_int_equal(proc_start_time(child, &before), 0);
	assert_int_equal(before, start_time_by_hand(child));
	usleep(400000); /* the child has exec'd sleep by now */
	assert_int_equal(proc_start_time(child, &after), 0);
	assert_int_equal(after, before);
	assert_int_equal(proc_kill_started(child, child + 1, before), 0); /* itself only */
	int status;
	waitpid(child, &status, 0);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(proc_start_time(child, &after), -3 /* ESRCH */);
}

static void a_name_with_parentheses_and_spaces(void **state)
{
	/* The kernel names a process after the file it executed: a link with an awkward name. */
	char dir[] = "/tmp/zerogpu-proc-XXXXXX", link[128], comm[64] = "";
	assert_non_null(mkdtemp(dir));
	snprintf(link, sizeof(link), "%s/) x (y", dir);
	assert_int_equal(symlink("/bin/sleep", link), 0);
	pid_t child = fork();
	if (child == 0) {
		execl(link, link, "5", (char *) NULL);
		_exit(127);
	}
	usleep(200000);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", (int) child);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(comm, sizeof(comm), f));
	fclose(f);
	assert_string_equal(comm, ") x (y\n"); /* the awkward name really is in use */
	uint64_t t;
	assert_int_equal(proc_start_time(child, &t), 0);
	assert_int_equal(t, start_time_by_hand(child));
	assert_int_equal(proc_kill_started(child, 0, t), 0);
	waitpid(child, NULL, 0);
	unlink(link);
	rmdir(dir);
}

static pid_t spawn_sleeper(void)
{
	pid_t child = fork();
	if (child == 0) {
		execlp("sleep", "sleep", "30", (char *) NULL);
		_exit(127);
	}
	assert_true(child > 0);
	return child;
}

static bool alive(pid_t pid)
{
	return kill(pid, 0) == 0;
}

static void a_held_process_is_killed_through_its_pidfd(void **state)
{
	(void) state;
	pid_t child = spawn_sleeper();
	struct lease_process p;
	assert_int_equal(proc_hold(child, &p), 0);
	assert_true(p.pidfd >= 0);
	assert_int_equal(p.pid, child);
	assert_true(proc_alive(&p));
	assert_int_equal(proc_kill(&p), 0); /* it shares our group: itself only */
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	assert_false(proc_alive(&p));
	assert_int_equal(proc_kill(&p), -ESRCH);
	proc_drop(&p);
	assert_int_equal(p.pidfd, -1);
	proc_drop(&p); /* an empty one is fine too */
	assert_int_equal(proc_hold(child, &p), -ESRCH);
}

/* Makes the next process this one forks get pid `want` (root only: ns_last_pid). */
static pid_t spawn_sleeper_as(pid_t want)
{
	for (int tries = 0; tries < 20; tries++) {
		FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "w");
		if (!f)
			return -1;
		fprintf(f, "%d", (int) want - 1);
		fclose(f);
		pid_t child = spawn_sleeper();
		if (child == want)
			return child;
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	return -1;
}

static void a_reused_pid_is_never_signalled(void **state)
{
	(void) state;
	pid_t victim = spawn_sleeper();
	struct lease_process held;
	assert_int_equal(proc_hold(victim, &held), 0);
	/* The attached process dies; the kernel hands its pid to a newcomer. */
	kill(victim, SIGKILL);
	waitpid(victim, NULL, 0);
	usleep(30000); /* start times tick every 10 ms: a later process has a later one */
	pid_t newcomer = spawn_sleeper_as(victim);
	if (newcomer < 0) {
		proc_drop(&held);
		skip(); /* not root, or another process took the pid first */
	}
	assert_false(proc_alive(&held));
	assert_int_equal(proc_kill(&held), -ESRCH);
	/* Without a pidfd, the start time tells the newcomer apart just the same. */
	assert_int_equal(proc_kill_started(victim, victim, held.start), -ESRCH);
	usleep(100000);
	assert_true(alive(newcomer));
	kill(newcomer, SIGKILL);
	waitpid(newcomer, NULL, 0);
	proc_drop(&held);
}

static void the_owner_is_one_user_or_nobody(void **state)
{
	(void) state;
	uid_t uid;
	assert_int_equal(proc_owner(getpid(), &uid), 0);
	assert_int_equal(uid, geteuid());
	assert_int_equal(proc_owner(0, &uid), -ESRCH);
	if (geteuid() != 0)
		skip(); /* a process with mixed ids needs root to make */
	int ready[2];
	assert_int_equal(pipe(ready), 0);
	pid_t child = fork();
	if (child == 0) {
		/* Like a set-uid program: runs as nobody, may become root again. */
		if (setresuid(65534, 65534, 0) < 0)
			_exit(1);
		(void) write(ready[1], "x", 1);
		pause();
		_exit(0);
	}
	char x;
	assert_int_equal(read(ready[0], &x, 1), 1);
	assert_int_equal(proc_owner(child, &uid), -EPERM);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	close(ready[0]);
	close(ready[1]);
}

/* Which devices a process has open, read from its descriptors. */
static void the_devices_a_process_holds(void **state)
{
	(void) state;
	struct stat null_st, zero_st, full_st;
	assert_int_equal(stat("/dev/null", &null_st), 0);
	assert_int_equal(stat("/dev/zero", &zero_st), 0);
	assert_int_equal(stat("/dev/full", &full_st), 0);
	dev_t devs[3] = {null_st.st_rdev, zero_st.st_rdev, full_st.st_rdev};
	int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	bool held[3];
	int n = proc_devices_held(getpid(), devs, 3, held);
	/* The test runner may give us /dev/null as stdin; /dev/zero is ours for sure. */
	assert_true(n >= 1);
	assert_true(held[1]);
	assert_false(held[2]);
	close(fd);
	assert_int_equal(proc_devices_held(getpid(), devs + 1, 2, held), 0);
	assert_int_equal(proc_devices_held(999999999, devs, 3, held), -ESRCH);
}

/* A process with a SIGKILL on its way, or a zombie, is dying: it is never parked. */
static void a_killed_process_is_dying(void **state)
{
	(void) state;
	assert_false(proc_dying(getpid()));
	pid_t child = fork();
	if (child == 0) {
		pause();
		_exit(0);
	}
	assert_false(proc_dying(child));
	kill(child, SIGSTOP); /* a stopped process keeps its SIGKILL pending... */
	usleep(20000);
	kill(child, SIGKILL);
	assert_true(proc_dying(child)); /* ...or is a zombie by now */
	usleep(50000);
	assert_true(proc_dying(child)); /* a zombie */
	waitpid(child, NULL, 0);
	assert_true(proc_dying(child)); /* gone */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(start_time_is_field_22_and_survives_exec),
		cmocka_unit_test(a_name_with_parentheses_and_spaces),
		cmocka_unit_test(a_held_process_is_killed_through_its_pidfd),
		cmocka_unit_test(a_reused_pid_is_never_signalled),
		cmocka_unit_test(the_owner_is_one_user_or_nobody),
		cmocka_unit_test(the_devices_a_process_holds),
		cmocka_unit_test(a_killed_process_is_dying),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
