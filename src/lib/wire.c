#include "lib/wire.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "zerogpu.h"

#define WIRE_MAX_HEAD (64 * 1024)
#define WIRE_MAX_BODY (64 * 1024 * 1024)

static int buf_reserve(struct wire_buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + extra + 1)
		cap *= 2;
	char *data = realloc(b->data, cap);
	if (!data)
		return ZGPU_ENOMEM;
	b->data = data;
	b->cap = cap;
	return 0;
}

static int buf_append(struct wire_buf *b, const char *p, size_t n)
{
	if (buf_reserve(b, n) < 0)
		return ZGPU_ENOMEM;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

static void buf_consume(struct wire_buf *b, size_t n)
{
	if (n == 0)
		return;
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	if (b->data)
		b->data[b->len] = '\0';
}

bool wire_connect_retries(int err)
{
	/* Missing (between a daemon's exit and its successor's bind) or refusing (a socket
	 * file nobody listens on yet): worth another try; the rest are not. */
	return err == ENOENT || err == ECONNREFUSED || err == EAGAIN;
}

int wire_connect(struct wire_conn **out, const char *path, int64_t deadline)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(addr.sun_path))
		return ZGPU_EINVAL;
	strcpy(addr.sun_path, path);
	struct wire_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return ZGPU_ENOMEM;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int64_t until = clock_mono_ms() + WIRE_RESTART_MS;
	if (deadline >= 0 && deadline < until) /* -1: the call has no limit of its own */
		until = deadline;
	while (c->fd >= 0 && connect(c->fd, (struct sockaddr *) &addr, sizeof(addr)) < 0) {
		int e = errno;
		if (!wire_connect_retries(e) || clock_mono_ms() + WIRE_RETRY_MS > until) {
			wire_close(c);
			errno = e;
			return ZGPU_ECONNECT;
		}
		struct timespec pause = {.tv_nsec = WIRE_RETRY_MS * 1000000L};
		nanosleep(&pause, NULL);
	}
	if (c->fd < 0) {
		wire_close(c);
		return ZGPU_ECONNECT;
	}
	*out = c;
	return 0;
}

struct wire_conn *wire_close(struct wire_conn *c)
{
	if (!c)
		return NULL;
	if (c->fd >= 0)
		close(c->fd);
	free(c->raw.data);
	free(c->body.data);
	free(c);
	return NULL;
}

/* Waits until fd is ready for events or the deadline passes. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int timeout = -1;
		if (deadline >= 0) {
			int64_t left = deadline - clock_mono_ms();
			if (left <= 0)
				return ZGPU_ETIMEDOUT;
			timeout = left > 1000000 ? 1000000 : (int) left;
		}
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, timeout);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return ZGPU_EIO;
	}
}

int wire_send(struct wire_conn *c, const char *method, const char *path, const char *body,
	      size_t len, int64_t deadline)
{
	char head[1024];
	int n = snprintf(head, sizeof(head),
			 "%s %s HTTP/1.1\r\nHost: zerogpud\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n\r\n",
			 method, path, body ? len : 0);
	if (n < 0 || (size_t) n >= sizeof(head))
		return ZGPU_EINVAL;
	struct iovec iov[2] = {{head, (size_t) n}, {(void *) body, body ? len : 0}};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
	size_t total = (size_t) n + (body ? len : 0);
	c->got_bytes = false;
	while (total > 0) {
		/* One sendmsg carries head and body together in the common case. */
		ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int r = wait_fd(c->fd, POLLOUT, deadline);
			if (r < 0)
				return r;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return ZGPU_EIO;
		total -= (size_t) w;
		while (w > 0 && msg.msg_iovlen) {
			size_t take = (size_t) w < msg.msg_iov->iov_len ? (size_t) w
									: msg.msg_iov->iov_len;
			msg.msg_iov->iov_base = (char *) msg.msg_iov->iov_base + take;
			msg.msg_iov->iov_len -= take;
			w -= (ssize_t) take;
			if (msg.msg_iov->iov_len == 0) {
				msg.msg_iov++;
				msg.msg_iovlen--;
			}
		}
	}
	return 0;
}

/* Reads more raw bytes; ZGPU_ECLOSED at end of stream. */
static int read_more(struct wire_conn *c, int64_t deadline)
{
	if (buf_reserve(&c->raw, 16384) < 0)
		return ZGPU_ENOMEM;
	for (;;) {
		ssize_t n = recv(c->fd, c->raw.data + c->raw.len, c->raw.cap - c->raw.len - 1,
				 MSG_DONTWAIT);
		if (n > 0) {
			c->raw.len += (size_t) n;
			c->raw.data[c->raw.len] = '\0';
			c->got_bytes = true;
			return 0;
		}
		if (n == 0)
			return ZGPU_ECLOSED;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return errno == ECONNRESET ? ZGPU_ECLOSED : ZGPU_EIO;
		int r = wait_fd(c->fd, POLLIN, deadline);
		if (r < 0)
			return r;
	}
}

static const char *header_value(const char *head, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
		if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
			const char *v = p + 3 + n;
			while (*v == ' ' || *v == '\t')
				v++;
			return v;
		}
	}
	return NULL;
}

int wire_read_head(struct wire_conn *c, int *status, int64_t deadline)
{
	char *end;
	while (!(end = c->raw.data ? strstr(c->raw.data, "\r\n\r\n") : NULL)) {
		if (c->raw.len > WIRE_MAX_HEAD)
			return ZGPU_EPROTO;
		int r = read_more(c, deadline);
		if (r < 0)
			return r;
	}
	*end = '\0';
	int major, minor, code;
	if (sscanf(c->raw.data, "HTTP/%d.%d %d", &major, &minor, &code) != 3 || code < 100 ||
	    code > 599)
		return ZGPU_EPROTO;
	*status = code;

	const char *te = header_value(c->raw.data, "Transfer-Encoding");
	const char *cl = header_value(c->raw.data, "Content-Length");
	const char *conn = header_value(c->raw.data, "Connection");
	c->keep_alive = !(conn && strncasecmp(conn, "close", 5) == 0) && minor >= 1;
	c->body_done = false;
	c->body.len = 0;
	c->line_len = 0;
	if (te && strncasecmp(te, "chunked", 7) == 0) {
		c->framing = WIRE_BODY_CHUNKED;
		c->remaining = -1;
	} else if (cl) {
		c->framing = WIRE_BODY_LENGTH;
		c->remaining = strtoll(cl, NULL, 10);
		if (c->remaining < 0 || c->remaining > WIRE_MAX_BODY)
			return ZGPU_EPROTO;
		c->body_done = c->remaining == 0;
	} else {
		c->framing = WIRE_BODY_UNTIL_CLOSE;
		c->keep_alive = false;
	}
	buf_consume(&c->raw, (size_t) (end - c->raw.data) + 4);
	return 0;
}

/* Moves what can be decoded from raw into body. Returns 0, or ZGPU_EPROTO. */
static int decode(struct wire_conn *c)
{
	while (!c->body_done && c->raw.len) {
		if (c->framing == WIRE_BODY_UNTIL_CLOSE) {
			if (buf_append(&c->body, c->raw.data, c->raw.len) < 0)
				return ZGPU_ENOMEM;
			c->raw.len = 0;
			return 0;
		}
		if (c->framing == WIRE_BODY_CHUNKED && c->remaining < 0) {
			char *eol = strstr(c->raw.data, "\r\n");
			if (!eol)
				return c->raw.len > 64 ? ZGPU_EPROTO : 0;
			char *end;
			long long size = strtoll(c->raw.data, &end, 16);
			if (end == c->raw.data || size < 0 || size > WIRE_MAX_BODY)
				return ZGPU_EPROTO;
			if (size == 0) {
				/* Last chunk; we send no trailers, so expect the final CRLF. */
				if (c->raw.len < (size_t) (eol - c->raw.data) + 4)
					return 0;
				buf_consume(&c->raw, (size_t) (eol - c->raw.data) + 4);
				c->body_done = true;
				return 0;
			}
			buf_consume(&c->raw, (size_t) (eol - c->raw.data) + 2);
			c->remaining = size;
			continue;
		}
		if (c->framing == WIRE_BODY_CHUNKED && c->remaining == 0) {
			if (c->raw.len < 2)
				return 0;
			if (memcmp(c->raw.data, "\r\n", 2) != 0)
				return ZGPU_EPROTO;
			buf_consume(&c->raw, 2);
			c->remaining = -1;
			continue;
		}
		size_t take = c->raw.len < (size_t) c->remaining ? c->raw.len
								 : (size_t) c->remaining;
		if (buf_append(&c->body, c->raw.data, take) < 0)
			return ZGPU_ENOMEM;
		buf_consume(&c->raw, take);
		c->remaining -= (int64_t) take;
		if (c->framing == WIRE_BODY_LENGTH && c->remaining == 0)
			c->body_done = true;
	}
	return 0;
}

int wire_read_body(struct wire_conn *c, char **out, size_t *len, int64_t deadline)
{
	int r;
	while ((r = decode(c)) == 0 && !c->body_done) {
		if (c->body.len > WIRE_MAX_BODY)
			return ZGPU_EPROTO;
		r = read_more(c, deadline);
		if (r == ZGPU_ECLOSED && c->framing == WIRE_BODY_UNTIL_CLOSE) {
			c->body_done = true;
			break;
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	char *b = malloc(c->body.len + 1);
	if (!b)
		return ZGPU_ENOMEM;
	if (c->body.len)
		memcpy(b, c->body.data, c->body.len);
	b[c->body.len] = '\0';
	*out = b;
	*len = c->body.len;
	c->body.len = 0;
	return 0;
}

bool wire_reusable(const struct wire_conn *c)
{
	return c->body_done && c->keep_alive && c->raw.len == 0 && c->body.len == c->line_len;
}

bool wire_line_buffered(const struct wire_conn *c)
{
	size_t skip = c->line_len;
	return c->body.len > skip && memchr(c->body.data + skip, '\n', c->body.len - skip);
}

int wire_read_line(struct wire_conn *c, const char **line, int64_t deadline)
{
	/* The line handed out last time stays in place until now: drop it. */
	buf_consume(&c->body, c->line_len);
	c->line_len = 0;
	for (;;) {
		char *nl = c->body.len ? memchr(c->body.data, '\n', c->body.len) : NULL;
		if (nl) {
			*nl = '\0';
			*line = c->body.data;
			c->line_len = (size_t) (nl - c->body.data) + 1;
			return 0;
		}
		if (c->body_done)
			return ZGPU_ECLOSED;
		int r = decode(c);
		if (r < 0)
			return r;
		if (c->body_done || (c->body.len && memchr(c->body.data, '\n', c->body.len)))
			continue;
		r = read_more(c, deadline);
		if (r < 0)
			return r;
	}
}
