/*
 * peer — which local user is at the other end of a loopback TCP connection.
 * The kernel lists every TCP socket with its owner's uid in /proc/net/tcp and
 * /proc/net/tcp6; the client's socket is the one whose local address is our
 * peer and whose remote address is us (what identd does). This lets the
 * daemon hold TCP callers on this machine to the same rules as Unix-socket
 * callers when they name a process it would kill.
 */
#ifndef ZGPU_DAEMON_PEER_H
#define ZGPU_DAEMON_PEER_H

#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Finds the socket at `client` connected to `server` in a /proc/net/tcp{,6} table.
 * Returns 0 with *uid, or -ENOENT. */
int peer_uid_in_table(FILE *table, const struct sockaddr_storage *client,
		      const struct sockaddr_storage *server, uid_t *uid);

/* The uid behind the TCP connection fd when it comes from this machine's loopback.
 * Returns 0, -EREMOTE for a peer on another address, or -ENOENT when not found. */
int peer_tcp_uid(int fd, uid_t *uid);

#endif
