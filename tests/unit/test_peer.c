/* Finding a loopback TCP client's uid in the kernel's socket tables. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/peer.h"

static struct sockaddr_storage v4(const char *ip, unsigned port)
{
	struct sockaddr_storage s = {0};
	struct sockaddr_in *in = (struct sockaddr_in *) &s;
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t) port);
	inet_pton(AF_INET, ip, &in->sin_addr);
	return s;
}

static struct sockaddr_storage v6(const char *ip, unsigned port)
{
	struct sockaddr_storage s = {0};
	struct sockaddr_in6 *in = (struct sockaddr_in6 *) &s;
	in->sin6_family = AF_INET6;
	in->sin6_port = htons((uint16_t) port);
	inet_pton(AF_INET6, ip, &in->sin6_addr);
	return s;
}

/* As the kernel prints them (x86-64, little-endian words). */
static const char tcp4[] =
	"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
	"timeout inode\n"
	"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        "
	"0 1001 1 0000000000000000 100 0 0 10 0\n"
	"   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        "
	"0 1002 1 0000000000000000 20 4 30 10 -1\n"
	"   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        "
	"0 1003 1 0000000000000000 20 4 30 10 -1\n";

static const char tcp6[] =
	"  sl  local_address                         remote_address                        st "
	"tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	"   0: 00000000000000000000000001000000:D431 00000000000000000000000001000000:1F90 01 "
	"00000000:00000000 00:00000000 00000000    65534        0 2001 1 0 20 4 30 10 -1\n";

static int lookup(const char *table, struct sockaddr_storage client, struct sockaddr_storage server,
		  uid_t *uid)
{
	FILE *f = fmemopen((void *) table, strlen(table), "r");
	assert_non_null(f);
	int r = peer_uid_in_table(f, &client, &server, uid);
	fclose(f);
	return r;
}

static void finds_the_client_socket_not_the_server_side(void **state)
{
	(void) state;
	uid_t uid = 12345;
	assert_int_equal(lookup(tcp4, v4("127.0.0.1", 50000), v4("127.0.0.1", 8080), &uid), 0);
	assert_int_equal(uid, 1000);
	assert_int_equal(lookup(tcp6, v6("::1", 54321), v6("::1", 8080), &uid), 0);
	assert_int_equal(uid, 65534);
}

static void unknown_connections_are_not_found(void **state)
{
	(void) state;
	uid_t uid;
	assert_int_equal(lookup(tcp4, v4("127.0.0.1", 50001), v4("127.0.0.1", 8080), &uid),
			 -ENOENT);
	assert_int_equal(lookup(tcp4, v4("127.0.0.2", 50000), v4("127.0.0.1", 8080), &uid),
			 -ENOENT);
	assert_int_equal(lookup(tcp4, v4("127.0.0.1", 50000), v6("::1", 8080), &uid), -ENOENT);
	assert_int_equal(lookup("", v4("127.0.0.1", 50000), v4("127.0.0.1", 8080), &uid), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(finds_the_client_socket_not_the_server_side),
		cmocka_unit_test(unknown_connections_are_not_found),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
