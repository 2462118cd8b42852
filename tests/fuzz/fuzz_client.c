/*
 * fuzz_client — libzerogpu's side of the wire (wire.c, client.c): whatever a
 * daemon (or whatever answers on its socket) sends back. A server thread here
 * answers every connection with the input's bytes and closes it; the first
 * byte picks the call that reads them:
 *   0: zgpu_acquire, then the lease's events and zgpu_release (the NDJSON
 *      lease stream, the grant's devices, the release's reply);
 *   1: zgpu_acquire, then zgpu_attach and zgpu_release_keep;
 *   2: zgpu_get (a JSON reply, Content-Length or chunked);
 *   3: zgpu_call with a body, then zgpu_join_app.
 * The library must return a code (never crash, hang or leak) and leave the
 * client usable.
 */
#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "zerogpu.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *reply;
static size_t reply_len;
static char sock_path[108];
static zgpu_client *client;

/* Answers each connection with the current reply, then closes it. */
static void *serve(void *arg)
{
	int lfd = (int) (intptr_t) arg;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&lock);
		size_t off = 0;
		while (off < reply_len) {
			ssize_t w = send(fd, reply + off, reply_len - off, MSG_NOSIGNAL);
			if (w <= 0)
				break;
			off += (size_t) w;
		}
		pthread_mutex_unlock(&lock);
		close(fd);
	}
	return NULL;
}

static char sock_dir[64];

static void remove_socket(void)
{
	(void) unlink(sock_path);
	(void) rmdir(sock_dir);
}

static void start(void)
{
	snprintf(sock_dir, sizeof(sock_dir), "/tmp/zerogpu-fuzz-client-XXXXXX");
	if (!mkdtemp(sock_dir))
		abort();
	snprintf(sock_path, sizeof(sock_path), "%s/sock", sock_dir);
	atexit(remove_socket);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock_path);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *) &a, sizeof(a)) < 0 || listen(lfd, 64) < 0)
		abort();
	pthread_t t;
	if (pthread_create(&t, NULL, serve, (void *) (intptr_t) lfd) != 0)
		abort();
	if (zgpu_client_open(&client, sock_path) < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!client)
		start();
	if (size < 1)
		return 0;
	pthread_mutex_lock(&lock);
	free(reply);
	reply_len = size - 1;
	reply = malloc(reply_len ? reply_len : 1);
	if (reply_len)
		memcpy(reply, data + 1, reply_len);
	pthread_mutex_unlock(&lock);

	zgpu_request req = ZGPU_REQUEST_INIT;
	req.app = "fuzz";
	req.duration_s = 5;
	zgpu_lease *l = NULL;
	char *body = NULL;
	double used;
	bool kept;
	int r;
	switch (data[0] & 3) {
	case 0:
	case 1:
		r = zgpu_acquire(&l, client, &req, 2000, NULL, NULL);
		assert(r <= 0);
		if (r < 0) {
			assert(!l);
			break;
		}
		assert(zgpu_lease_id(l) && zgpu_lease_device_count(l) > 0);
		for (size_t i = 0; i < zgpu_lease_device_count(l); i++)
			assert(zgpu_lease_device(l, i)->uuid);
		if (data[0] & 1) {
			(void) zgpu_attach(client, l, getpid());
			(void) zgpu_release_keep(client, l, &used, &kept);
		} else {
			zgpu_event ev;
			for (int i = 0; i < 64 && zgpu_lease_next_event(l, 0, &ev) == 0; i++)
				;
			(void) zgpu_release(client, l, false, &used);
		}
		break;
	case 2:
		if (zgpu_get(client, "/v1/status", &body) == 0)
			assert(body);
		free(body);
		break;
	case 3:
		if (zgpu_call(client, "POST", "/v1/apps/fuzz/tokens", "{}", &body) == 0)
			assert(body);
		free(body);
		(void) zgpu_join_app(client, "fuzz", getpid());
		break;
	}
	return 0;
}
