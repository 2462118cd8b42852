/* Asking the kernel who is at the other end of a loopback TCP connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/sys/cgroup.h"
#include "daemon/sys/peer.h"

/* A connected pair over loopback: *client and the server's accepted end *served. */
static bool connect_pair(int family, int *client, int *served)
{
	struct sockaddr_storage a = {0};
	socklen_t len;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *) &a;
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &a;
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_loopback;
		len = sizeof(*in6);
	}
	int lfd = socket(family, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *) &a, len) < 0) {
		if (lfd >= 0)
			close(lfd);
		return false; /* no such loopback here (IPv6 may be off) */
	}
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *) &a, &len), 0);
	*client = socket(family, SOCK_STREAM, 0);
	assert_int_equal(connect(*client, (struct sockaddr *) &a, len), 0);
	*served = accept(lfd, NULL, NULL);
	assert_true(*served >= 0);
	close(lfd);
	return true;
}

/* Our own cgroup2 directory's inode: the id the kernel gives our sockets. */
static uint64_t our_cgroup_id(void)
{
	struct cgroup_mounts m;
	char rel[PATH_MAX], path[2 * PATH_MAX];
	if (cgroup_find_mounts(&m) < 0 || !m.v2[0] ||
	    cgroup_of_pid(getpid(), "", rel, sizeof(rel)) < 0)
		return 0;
	snprintf(path, sizeof(path), "%s%s", m.v2, strcmp(rel, "/") ? rel : "");
	return cgroup_id(path);
}

static void finds_our_own_uid(void **state)
{
	(void) state;
	int families[] = {AF_INET, AF_INET6};
	for (size_t i = 0; i < 2; i++) {
		int client, served;
		if (!connect_pair(families[i], &client, &served)) {
			assert_int_equal(families[i], AF_INET6); /* IPv4 loopback is always there */
			continue;
		}
		uid_t uid = (uid_t) 12345;
		uint64_t cgroup = 0;
		assert_int_equal(peer_tcp_uid(served, &uid, &cgroup), 0);
		assert_int_equal(uid, geteuid());
		assert_int_equal(cgroup, our_cgroup_id());
		close(client);
		close(served);
	}
}

/*
 * The attack of a client that sends its request and closes at once: its socket
 * lingers as an orphan (FIN-WAIT, no inode) that the kernel reports as uid 0.
 * That must read as "unknown", never as root.
 */
static void a_closed_client_is_nobody_known(void **state)
{
	(void) state;
	int client, served;
	assert_true(connect_pair(AF_INET, &client, &served));
	assert_int_equal(write(client, "POST /allow", 11), 11);
	close(client);
	usleep(50000); /* the FIN has crossed */
	uid_t uid = (uid_t) 12345;
	int r = peer_tcp_uid(served, &uid, NULL);
	assert_true(r == -ENOTCONN || r == -ENOENT);
	assert_int_equal(uid, (uid_t) 12345); /* untouched */
	close(served);
}

static void not_a_socket(void **state)
{
	(void) state;
	uid_t uid;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(peer_tcp_uid(fds[0], &uid, NULL), -ENOTSOCK);
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(finds_our_own_uid),
		cmocka_unit_test(a_closed_client_is_nobody_known),
		cmocka_unit_test(not_a_socket),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
