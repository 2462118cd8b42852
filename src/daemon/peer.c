#include "daemon/peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* The address as /proc/net/tcp prints it: the 32-bit words of the address in host
 * order, then the port. Returns the number of words (1 or 4). */
static int words_of(const struct sockaddr_storage *a, uint32_t w[4], unsigned *port)
{
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *) a;
		memcpy(&w[0], &in->sin_addr, 4);
		*port = ntohs(in->sin_port);
		return 1;
	}
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) a;
	memcpy(w, &in6->sin6_addr, 16);
	*port = ntohs(in6->sin6_port);
	return 4;
}

/* Parses "0100007F:1F90" (or 32 hex digits and a port) against the expected words. */
static bool same_address(const char *text, const uint32_t w[4], int nwords, unsigned port)
{
	for (int i = 0; i < nwords; i++) {
		unsigned x;
		if (sscanf(text + 8 * i, "%8X", &x) != 1 || x != w[i])
			return false;
	}
	unsigned p;
	return text[8 * nwords] == ':' && sscanf(text + 8 * nwords + 1, "%4X", &p) == 1 &&
	       p == port;
}

int peer_uid_in_table(FILE *table, const struct sockaddr_storage *client,
		      const struct sockaddr_storage *server, uid_t *uid)
{
	uint32_t cw[4], sw[4];
	unsigned cport, sport;
	int n = words_of(client, cw, &cport);
	if (words_of(server, sw, &sport) != n)
		return -ENOENT;
	char line[512], local[64], remote[64];
	unsigned long owner;
	if (!fgets(line, sizeof(line), table)) /* the header */
		return -ENOENT;
	while (fgets(line, sizeof(line), table)) {
		/* sl local rem st tx:rx tr:when retrnsmt uid ... */
		if (sscanf(line, " %*s %63s %63s %*s %*s %*s %*s %lu", local, remote, &owner) != 3)
			continue;
		if (same_address(local, cw, n, cport) && same_address(remote, sw, n, sport)) {
			*uid = (uid_t) owner;
			return 0;
		}
	}
	return -ENOENT;
}

static bool loopback(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *) a)->sin_addr.s_addr) >> 24) == 127;
	if (a->ss_family != AF_INET6)
		return false;
	const struct in6_addr *x = &((const struct sockaddr_in6 *) a)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(x) || (IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127);
}

int peer_tcp_uid(int fd, uid_t *uid)
{
	struct sockaddr_storage client, server;
	socklen_t clen = sizeof(client), slen = sizeof(server);
	if (getpeername(fd, (struct sockaddr *) &client, &clen) < 0 ||
	    getsockname(fd, (struct sockaddr *) &server, &slen) < 0)
		return -ENOENT;
	if (!loopback(&client))
		return -EREMOTE;
	FILE *f = fopen(client.ss_family == AF_INET ? "/proc/net/tcp" : "/proc/net/tcp6", "re");
	if (!f)
		return -ENOENT;
	int r = peer_uid_in_table(f, &client, &server, uid);
	fclose(f);
	return r;
}
