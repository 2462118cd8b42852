/*
 * wire — HTTP/1.1 client framing over a blocking Unix socket, internal to
 * libzerogpu. Just what zerogpud speaks: requests with a JSON body, replies
 * with Content-Length or chunked bodies, and NDJSON streams read line by line.
 *
 * Deadlines are absolute monotonic milliseconds; -1 means none. Functions
 * return 0 or a negative zgpu_error.
 */
#ifndef ZGPU_LIB_WIRE_H
#define ZGPU_LIB_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wire_buf {
	char *data;
	size_t len, cap;
};

enum wire_body { WIRE_BODY_LENGTH, WIRE_BODY_CHUNKED, WIRE_BODY_UNTIL_CLOSE };

struct wire_conn {
	int fd;
	struct wire_buf raw;  /* bytes read, not yet decoded */
	struct wire_buf body; /* decoded body bytes, not yet consumed */
	enum wire_body framing;
	int64_t remaining; /* LENGTH: bytes left; CHUNKED: of the current chunk, -1 = at size line
			    */
	bool body_done;	   /* the whole body has been decoded */
	bool keep_alive;   /* the server keeps the connection after this reply */
	bool got_bytes;	   /* anything came back for the current request */
	size_t line_len;   /* bytes of the line last handed out, dropped on the next read */
};

/*
 * Connects to the Unix socket at path. *out belongs to the caller: wire_close(). A
 * socket that is missing or refuses (a daemon restarting by hand) is tried again
 * every WIRE_RETRY_MS until deadline (monotonic ms; -1 for none), at most WIRE_RESTART_MS
 * from now; then ZGPU_ECONNECT with errno saying why.
 */
#define WIRE_RETRY_MS	50
#define WIRE_RESTART_MS 3000
int wire_connect(struct wire_conn **out, const char *path, int64_t deadline);
/* Whether wire_connect() tries again after a connect() that failed with err. */
bool wire_connect_retries(int err);
struct wire_conn *wire_close(struct wire_conn *c);

/* Sends one request. body may be NULL. */
int wire_send(struct wire_conn *c, const char *method, const char *path, const char *body,
	      size_t len, int64_t deadline);

/* Reads the status line and headers of the reply. */
int wire_read_head(struct wire_conn *c, int *status, int64_t deadline);

/* Reads the rest of the body; *out is NUL-terminated, the caller frees it. */
int wire_read_body(struct wire_conn *c, char **out, size_t *len, int64_t deadline);

/*
 * Reads one line of the body without its newline into *line (valid until the
 * next call on c). ZGPU_ECLOSED at the end of the body, ZGPU_ETIMEDOUT past
 * the deadline.
 */
int wire_read_line(struct wire_conn *c, const char **line, int64_t deadline);

/* True when a line is already buffered (so poll() on the fd would not tell). */
bool wire_line_buffered(const struct wire_conn *c);

/* True when the last reply was read to its end and the server keeps the
 * connection: another request may be sent on it. */
bool wire_reusable(const struct wire_conn *c);

#endif
