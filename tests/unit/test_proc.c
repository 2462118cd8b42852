/* Process identity: the start time must be the kernel's, and stable across exec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/proc.h"

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
	assert_int_equal(proc_kill(child, child + 1), 0); /* not a leader: itself only */
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
	proc_kill(child, 0);
	waitpid(child, NULL, 0);
	unlink(link);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(start_time_is_field_22_and_survives_exec),
		cmocka_unit_test(a_name_with_parentheses_and_spaces),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
