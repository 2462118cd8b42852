/*
 * peer — which local user is at the other end of a loopback TCP connection.
 * The kernel knows each socket's owner; one sock_diag (netlink) request for
 * the client's exact socket (its address is our peer, its peer is us) asks
 * it, as ss(8) does, without walking every socket as /proc/net/tcp would.
 * This lets the daemon hold TCP callers on this machine to the same rules as
 * Unix-socket callers when they name a process it would kill.
 */
#ifndef ZGPU_DAEMON_SYS_PEER_H
#define ZGPU_DAEMON_SYS_PEER_H

#include <stdint.h>
#include <sys/types.h>

/*
 * The uid behind the TCP connection fd when it comes from this machine's
 * loopback, and the cgroup2 id of the client's socket (cgroup_id may be NULL;
 * 0 when the kernel does not say): the cgroup its creator ran in. Only a live answer counts: the
 * client's socket must still be established and open in some process. Returns 0; -EREMOTE for a
 * peer on another address; -ENOTCONN when the client already closed its end (its orphaned socket
 * says nothing about who sent the data); another -errno when the kernel cannot say. On any error
 * the uid is unknown, never "root".
 */
int peer_tcp_uid(int fd, uid_t *uid, uint64_t *cgroup_id);

#endif
