/*
 * notify — zerogpud under a service manager (systemd, docs/daemon.md#systemd):
 * readiness (READY=1 once it serves), the watchdog (WATCHDOG=1 from the event loop,
 * so a stuck loop is noticed), STOPPING=1, and the listening sockets the manager
 * passes (socket activation: the socket outlives a restart, and a call made while
 * the daemon restarts waits in its backlog). Without a manager, all of it is a no-op
 * and the daemon makes its own sockets.
 */
#ifndef ZGPU_DAEMON_NOTIFY_H
#define ZGPU_DAEMON_NOTIFY_H

#include <stdbool.h>

struct zgpud;

/* The inherited listening Unix stream socket bound to path, or -1 when none was passed. */
int notify_inherited_unix(const char *path);
/* An inherited listening TCP socket, or -1. */
int notify_inherited_tcp(void);

/* Tells the manager the daemon serves, and starts the watchdog's heartbeat when the
 * manager asks for one (WatchdogSec=). 0, or -ENOMEM. */
int notify_ready(struct zgpud *d, const char *status);
/* Tells the manager the daemon is stopping, and stops the heartbeat. */
void notify_stopping(struct zgpud *d);

#endif
