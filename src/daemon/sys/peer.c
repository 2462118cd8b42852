#include "daemon/sys/peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static bool loopback(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *) a)->sin_addr.s_addr) >> 24) == 127;
	if (a->ss_family != AF_INET6)
		return false;
	const struct in6_addr *x = &((const struct sockaddr_in6 *) a)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(x) || (IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127);
}

/* An IPv4 address that reached an IPv6 socket (::ffff:a.b.c.d) back to IPv4: the
 * client's own socket is an IPv4 one, and sock_diag looks sockets up by family. */
static void unmap_v4(struct sockaddr_storage *a)
{
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) a;
	if (a->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
		return;
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = in6->sin6_port};
	memcpy(&in.sin_addr, &in6->sin6_addr.s6_addr[12], 4);
	memset(a, 0, sizeof(*a));
	memcpy(a, &in, sizeof(in));
}

/* Port (network order) and address of a, into the request's socket id. */
static void id_part(const struct sockaddr_storage *a, __be16 *port, __be32 addr[4])
{
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *) a;
		*port = in->sin_port;
		memcpy(addr, &in->sin_addr, 4);
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) a;
		*port = in6->sin6_port;
		memcpy(addr, &in6->sin6_addr, 16);
	}
}

/*
 * The kernel's answer counts only for the client's live socket. A client that
 * closed its end leaves an orphan (FIN-WAIT, no inode, reported as uid 0) in
 * the same four-tuple: taking that uid would make any caller root. So the
 * socket must be established, have an inode (an open file of some process),
 * and be the very socket asked about.
 */
/* The socket's cgroup2 id (the cgroup its creator ran in), from the reply's attributes;
 * 0 when the kernel does not say (before Linux 5.7). */
static uint64_t socket_cgroup(const struct nlmsghdr *nh)
{
	const struct inet_diag_msg *m = NLMSG_DATA(nh);
	int len = (int) nh->nlmsg_len - (int) NLMSG_LENGTH(sizeof(*m));
	for (const struct rtattr *a = (const struct rtattr *) (m + 1); RTA_OK(a, len);
	     a = RTA_NEXT(a, len)) {
		if (a->rta_type == INET_DIAG_CGROUP_ID && RTA_PAYLOAD(a) >= sizeof(uint64_t)) {
			uint64_t id;
			memcpy(&id, RTA_DATA(a), sizeof(id));
			return id;
		}
	}
	return 0;
}

static int vouched_uid(const struct inet_diag_msg *m, const struct inet_diag_sockid *asked,
		       uid_t *uid)
{
	if (m->idiag_state != TCP_ESTABLISHED || m->idiag_inode == 0)
		return -ENOTCONN;
	if (m->id.idiag_sport != asked->idiag_sport || m->id.idiag_dport != asked->idiag_dport ||
	    memcmp(m->id.idiag_src, asked->idiag_src, sizeof(asked->idiag_src)) != 0 ||
	    memcmp(m->id.idiag_dst, asked->idiag_dst, sizeof(asked->idiag_dst)) != 0)
		return -ENOENT;
	*uid = (uid_t) m->idiag_uid;
	return 0;
}

int peer_tcp_uid(int fd, uid_t *uid, uint64_t *cgroup_id)
{
	struct sockaddr_storage client, server;
	socklen_t clen = sizeof(client), slen = sizeof(server);
	if (getpeername(fd, (struct sockaddr *) &client, &clen) < 0 ||
	    getsockname(fd, (struct sockaddr *) &server, &slen) < 0)
		return -errno;
	if (!loopback(&client))
		return -EREMOTE;
	unmap_v4(&client);
	unmap_v4(&server);

	struct {
		struct nlmsghdr nh;
		struct inet_diag_req_v2 req;
	} msg = {
		.nh = {.nlmsg_len = sizeof(msg),
		       .nlmsg_type = SOCK_DIAG_BY_FAMILY,
		       .nlmsg_flags = NLM_F_REQUEST},
		.req = {.sdiag_family = client.ss_family,
			.sdiag_protocol = IPPROTO_TCP,
			.idiag_states = ~0u},
	};
	/* The client's socket: its source is our peer, its destination is us. */
	id_part(&client, &msg.req.id.idiag_sport, msg.req.id.idiag_src);
	id_part(&server, &msg.req.id.idiag_dport, msg.req.id.idiag_dst);
	msg.req.id.idiag_cookie[0] = msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;

	int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nl < 0)
		return -errno;
	int r = -ENOENT;
	union {
		struct nlmsghdr nh;
		char bytes[8192];
	} reply;
	struct pollfd p = {.fd = nl, .events = POLLIN};
	/* The kernel answers at once; the timeout only guards the loop against surprises. */
	if (send(nl, &msg, sizeof(msg), 0) == (ssize_t) sizeof(msg) && poll(&p, 1, 100) == 1) {
		ssize_t n = recv(nl, &reply, sizeof(reply), MSG_DONTWAIT);
		if (n >= (ssize_t) NLMSG_LENGTH(sizeof(struct inet_diag_msg)) &&
		    NLMSG_OK(&reply.nh, (size_t) n) && reply.nh.nlmsg_type == SOCK_DIAG_BY_FAMILY)
			r = vouched_uid(NLMSG_DATA(&reply.nh), &msg.req.id, uid);
		if (r == 0 && cgroup_id)
			*cgroup_id = socket_cgroup(&reply.nh);
	}
	close(nl);
	return r;
}
