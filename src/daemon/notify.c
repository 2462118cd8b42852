/* notify — readiness, watchdog and inherited sockets under a service manager (notify.h). */
#include "daemon/notify.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include "common/log.h"
#include "daemon/zgpud.h"

/* The sockets passed, counted once: sd_listen_fds() unsets its variables as it reads
 * them (1), so nothing the daemon starts inherits them. */
static int passed = -1;

static int passed_fds(void)
{
	if (passed < 0) {
		int n = sd_listen_fds(1);
		passed = n > 0 ? n : 0;
		if (n < 0)
			log_warn("the sockets passed by the service manager cannot be used: %s",
				 strerror(-n));
	}
	return passed;
}

int notify_inherited_unix(const char *path)
{
	for (int i = 0; i < passed_fds(); i++)
		if (sd_is_socket_unix(SD_LISTEN_FDS_START + i, SOCK_STREAM, 1, path, 0) > 0)
			return SD_LISTEN_FDS_START + i;
	return -1;
}

int notify_inherited_tcp(void)
{
	for (int i = 0; i < passed_fds(); i++)
		if (sd_is_socket_inet(SD_LISTEN_FDS_START + i, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0)
			return SD_LISTEN_FDS_START + i;
	return -1;
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
	(void) fd, (void) what, (void) arg;
	/* From the loop: a loop that stops turning stops the pings, and the manager
	 * restarts the daemon. */
	(void) sd_notify(0, "WATCHDOG=1");
}

int notify_ready(struct zgpud *d, const char *status)
{
	(void) sd_notifyf(0, "READY=1\nSTATUS=%s", status);
	uint64_t usec = 0;
	if (sd_watchdog_enabled(1, &usec) <= 0 || usec == 0)
		return 0;
	/* Twice per period, as systemd advises. */
	uint64_t every = usec / 2;
	struct timeval tv = {.tv_sec = (time_t) (every / 1000000),
			     .tv_usec = (suseconds_t) (every % 1000000)};
	d->heartbeat = event_new(d->base, -1, EV_PERSIST, on_heartbeat, d);
	if (!d->heartbeat)
		return -ENOMEM;
	event_add(d->heartbeat, &tv);
	(void) sd_notify(0, "WATCHDOG=1");
	log_info("watchdog: a heartbeat every %.3f s", (double) every / 1e6);
	return 0;
}

void notify_stopping(struct zgpud *d)
{
	(void) sd_notify(0, "STOPPING=1");
	if (d->heartbeat)
		event_free(d->heartbeat);
	d->heartbeat = NULL;
}
