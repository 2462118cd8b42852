/*
 * fuzz_http — the daemon's front door as a whole: raw bytes into a real
 * zerogpud running in this process (serve.c, as main.c runs it: simulated
 * devices, a ledger in a temporary directory, no gate), through conn.c,
 * libevent's HTTP parser, http.c's routing and tokens, every API adapter, the
 * lease service and the engine. The first byte picks the door: even, the
 * Unix socket (the caller is this process's uid); odd, loopback TCP, where
 * the bearer token (in the dictionary) is the identity. The rest is sent as
 * is, the client's side is shut for writing, and the loop turns until the
 * daemon has answered and closed, or for a bounded number of turns (a lease
 * stream stays open; its lease is abandoned when the client goes).
 *
 * A crash, a sanitizer report or a leak is a finding; so is a daemon that
 * stops answering: every few thousand inputs a well-formed GET /v1/status
 * must still get its 200.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"
#include "daemon/serve.h"
#include "daemon/settings.h"
#include "daemon/zgpud.h"

#define TOKEN	    "fuzz-admin-token-0123456789abcdef0123"
#define MAX_TURNS   400
#define CHECK_EVERY 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct settings settings;
static struct zgpud daemon_ctx;
static struct sockaddr_un unix_addr = {.sun_family = AF_UNIX};
static struct sockaddr_in tcp_addr = {.sin_family = AF_INET};
static char state_dir[64];

static void remove_state(void)
{
	static const char *const files[] = {"ledger.db", "ledger.db-wal", "ledger.db-shm",
					    "zerogpud.lock", "zerogpud.sock"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "%s/%s", state_dir, files[i]);
		(void) unlink(path);
	}
	(void) rmdir(state_dir);
}

/* A loopback port nobody holds now (the daemon binds it right after). */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *) &a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *) &a, &len) < 0)
		abort();
	close(fd);
	return ntohs(a.sin_port);
}

static void start(void)
{
	snprintf(state_dir, sizeof(state_dir), "/tmp/zerogpu-fuzz-http-XXXXXX");
	if (!mkdtemp(state_dir))
		abort();
	atexit(remove_state);
	char sock[96], listen[32];
	snprintf(sock, sizeof(sock), "%s/zerogpud.sock", state_dir);
	int port = free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	char *argv[] = {"zerogpud",
			"--socket",
			sock,
			"--state-dir",
			state_dir,
			"--listen",
			listen,
			"--token",
			TOKEN,
			"--simulate",
			"2x80G",
			"--split",
			"2",
			"--gate",
			"off",
			"--visitor-secret",
			"fuzz-visitor-secret-0123456789abcdef",
			"--gateway-token",
			"fuzz-gateway-token-0123456789abcdef0",
			"--log-level",
			getenv("ZEROGPU_FUZZ_VERBOSE") ? "debug" : "error",
			NULL};
	if (settings_load(&settings, (int) (sizeof(argv) / sizeof(argv[0])) - 1, argv, "") != 0)
		abort();
	log_setup("zerogpud", (enum log_level) settings.log_level);
	signal(SIGPIPE, SIG_IGN);
	if (serve_open(&daemon_ctx, &settings) < 0)
		abort();
	snprintf(unix_addr.sun_path, sizeof(unix_addr.sun_path), "%s", sock);
	tcp_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	tcp_addr.sin_port = htons((uint16_t) port);
}

static void turn(void)
{
	(void) event_base_loop(daemon_ctx.base, EVLOOP_NONBLOCK);
}

/* Sends the bytes, shuts the sending side, and turns the loop until the daemon
 * closes or MAX_TURNS pass; what came back is in reply (NUL-terminated). */
static void exchange(bool tcp, const uint8_t *bytes, size_t len, char *reply, size_t cap)
{
	int fd = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		abort();
	int r = tcp ? connect(fd, (struct sockaddr *) &tcp_addr, sizeof(tcp_addr))
		    : connect(fd, (struct sockaddr *) &unix_addr, sizeof(unix_addr));
	if (r < 0 && errno != EINPROGRESS)
		abort();
	size_t sent = 0, got = 0;
	bool shut = false;
	for (int i = 0; i < MAX_TURNS; i++) {
		turn();
		if (sent < len) {
			ssize_t w = send(fd, bytes + sent, len - sent, MSG_NOSIGNAL);
			if (w > 0)
				sent += (size_t) w;
			else if (errno != EAGAIN && errno != EINPROGRESS && errno != ENOTCONN)
				break;
		}
		if (sent == len && !shut) {
			(void) shutdown(fd, SHUT_WR);
			shut = true;
		}
		char buf[4096];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			break;
		if (n > 0 && got + 1 < cap) {
			size_t take = (size_t) n < cap - 1 - got ? (size_t) n : cap - 1 - got;
			memcpy(reply + got, buf, take);
			got += take;
		}
	}
	if (cap)
		reply[got] = '\0';
	close(fd);
	/* Let the daemon see the close (abandoning a stream's lease). */
	for (int i = 0; i < 4; i++)
		turn();
}

static void check_alive(void)
{
	static const char req[] = "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n";
	char reply[256];
	exchange(false, (const uint8_t *) req, sizeof(req) - 1, reply, sizeof(reply));
	if (strncmp(reply, "HTTP/1.1 200", 12) != 0) {
		fprintf(stderr, "fuzz_http: the daemon no longer answers GET /v1/status: '%.80s'\n",
			reply);
		abort();
	}
}

/* An error the daemon answers in JSON says what went wrong: {"error": {...}}, never an
 * empty object (a message jansson could not encode once came out as {}). */
static void check_error_reply(const char *reply)
{
	int status = 0;
	if (sscanf(reply, "HTTP/1.%*d %d", &status) != 1 || status < 400)
		return;
	const char *body = strstr(reply, "\r\n\r\n");
	if (!body || !strstr(reply, "Content-Type: application/json"))
		return;
	body += 4;
	static const char start[] = "{\"error\":{\"code\":";
	if (*body && strncmp(body, start, sizeof(start) - 1) != 0) {
		fprintf(stderr, "fuzz_http: a %d without its error: '%.200s'\n", status, body);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned long runs;
	if (!daemon_ctx.base)
		start();
	if (size < 1)
		return 0;
	static char reply[16384];
	exchange(data[0] & 1, data + 1, size - 1, reply, sizeof(reply));
	check_error_reply(reply);
	if (++runs % CHECK_EVERY == 0)
		check_alive();
	return 0;
}
