/*
 * zerogpu.h — the public C API of libzerogpu, the client library of zerogpud.
 *
 * A client borrows GPUs from the daemon one lease at a time:
 *
 *	zgpu_client *c;
 *	zgpu_lease *l;
 *	zgpu_request req = ZGPU_REQUEST_INIT;
 *	req.duration_s = 30;
 *	if (zgpu_client_open(&c, NULL) < 0) ...
 *	if (zgpu_acquire(&l, c, &req, -1, NULL, NULL) < 0) ...
 *	... run work on zgpu_lease_device(l, 0)->uuid ...
 *	zgpu_release(c, l, false, &used_s);   // frees l
 *	zgpu_client_free(c);
 *
 * Conventions: functions return 0 on success or a negative zgpu_error. Objects
 * returned through an `out` parameter belong to the caller, who frees them with
 * the matching *_free function; *_free accepts NULL and returns NULL. The
 * library never logs and never exits. After a failed call, zgpu_last_error()
 * returns a message for a person (the daemon's own message where it sent one).
 *
 * Thread safety: a zgpu_client may be used from several threads at once; a
 * zgpu_lease belongs to one thread at a time.
 */
#ifndef ZEROGPU_H
#define ZEROGPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZGPU_PROTOCOL_VERSION 1

/* Error codes: XX(number, NAME, message). The numbers are part of the ABI. */
#define ZGPU_ERRNO_MAP(XX)                                                                         \
	XX(1, EINVAL, "invalid argument")                                                          \
	XX(2, ENOMEM, "out of memory")                                                             \
	XX(3, ECONNECT, "cannot connect to zerogpud")                                              \
	XX(4, EIO, "input/output error talking to zerogpud")                                       \
	XX(5, EPROTO, "malformed reply from zerogpud")                                             \
	XX(6, ETIMEDOUT, "timed out")                                                              \
	XX(7, EBADREQ, "request refused as malformed or out of range")                             \
	XX(8, EDENIED, "not allowed")                                                              \
	XX(9, ENOTFOUND, "no such lease or resource")                                              \
	XX(10, ECONFLICT, "the lease is not in a state that allows this")                          \
	XX(11, ETOOLARGE, "request body too large")                                                \
	XX(12, EQUOTA, "quota exceeded")                                                           \
	XX(13, ENOGPU, "no GPU was available in time")                                             \
	XX(14, EUNAVAIL, "zerogpud cannot serve this request")                                     \
	XX(15, ESERVER, "internal error in zerogpud")                                              \
	XX(16, EEXPIRED, "the lease expired")                                                      \
	XX(17, ECLOSED, "zerogpud closed the lease")                                               \
	XX(18, ENOGATE, "zerogpud does not gate devices")

typedef enum {
	ZGPU_OK = 0,
#define ZGPU__ERRNO_ENUM(num, name, msg) ZGPU_##name = -(num),
	ZGPU_ERRNO_MAP(ZGPU__ERRNO_ENUM)
#undef ZGPU__ERRNO_ENUM
} zgpu_error;

/* A static string describing err (any int; unknown codes get a generic text). */
const char *zgpu_strerror(int err);

/* The symbolic name of err, e.g. "ENOGPU"; "UNKNOWN" when not in the table. */
const char *zgpu_err_name(int err);

/*
 * The message of the last call in this thread that failed: the daemon's own
 * message when it sent one, else zgpu_strerror(). Valid until the next
 * library call in this thread. Never NULL.
 */
const char *zgpu_last_error(void);

/* ---- client ------------------------------------------------------------ */

typedef struct zgpu_client zgpu_client;

/*
 * The socket path used when none is given: $ZEROGPU_SOCKET, else
 * /run/zerogpu/zerogpud.sock for root, else $XDG_RUNTIME_DIR/zerogpu.sock
 * (falling back to /run/zerogpu/zerogpud.sock when XDG_RUNTIME_DIR is unset).
 * Writes at most size bytes, NUL included; returns 0, or ZGPU_EINVAL when
 * it does not fit.
 */
int zgpu_default_socket_path(char *buf, size_t size);

/*
 * Opens a client of the daemon listening on the Unix socket socket_path
 * (NULL: zgpu_default_socket_path()). Nothing is sent until the first call
 * that needs the daemon. *out belongs to the caller: zgpu_client_free().
 */
int zgpu_client_open(zgpu_client **out, const char *socket_path);

/* Closes the client's connection and frees it. Leases are not freed. */
zgpu_client *zgpu_client_free(zgpu_client *c);

/* The socket path this client talks to; valid while c lives. */
const char *zgpu_client_socket_path(const zgpu_client *c);

/*
 * Sends GET path (e.g. "/v1/status") and returns the reply body (JSON)
 * through *body_out, NUL-terminated, which the caller free()s.
 */
int zgpu_get(zgpu_client *c, const char *path, char **body_out);

/*
 * Sends METHOD path with a JSON body (may be NULL) and returns the reply body
 * through *reply_out (may be NULL), NUL-terminated, which the caller free()s.
 * For the API's administrative routes; a non-200 reply is an error.
 */
int zgpu_call(zgpu_client *c, const char *method, const char *path, const char *body,
	      char **reply_out);

/* ---- leases ------------------------------------------------------------ */

typedef struct {
	const char *app;     /* NULL: the daemon's default app */
	const char *task;    /* free text naming the call, may be NULL */
	const char *visitor; /* whom the call is for, may be NULL (anonymous) */
	const char *size;    /* "large" | "xlarge"; NULL: "large" */
	double duration_s;   /* <= 0: the daemon's default (60 s) */
	int gpus;	     /* <= 0: 1 */
	double max_wait_s;   /* < 0: the daemon's default (60 s); 0: fail unless free now */
	/* Who pays, for metered calls (neither: the app's own call, not metered). */
	const char *visitor_token; /* a signed visitor token (JWT) the app received */
	const char *visitor_ip;	   /* else the visitor's address: an anonymous visitor */
	/* Device memory the call needs on each GPU; 0: all its size gets. Workers of other
	 * apps kept resident there are evicted until it fits (docs/residency.md). */
	uint64_t memory_bytes;
} zgpu_request;

/* clang-format off */
#define ZGPU_REQUEST_INIT {NULL, NULL, NULL, NULL, 0, 0, -1, NULL, NULL, 0}
/* clang-format on */

typedef enum {
	ZGPU_EVENT_QUEUED = 1, /* still waiting; position and reason are set */
	ZGPU_EVENT_GRANTED,    /* the devices are the caller's until the deadline */
	ZGPU_EVENT_EXPIRED,    /* the deadline passed; attached processes die after the grace */
	ZGPU_EVENT_RELEASED,   /* the lease ended (released, or killed after its grace) */
	ZGPU_EVENT_FAILED,     /* no grant: message says why */
} zgpu_event_kind;

typedef struct {
	zgpu_event_kind kind;
	int position;	     /* QUEUED: 1 = next in line */
	const char *reason;  /* QUEUED: why it waits ("node"); may be NULL */
	const char *state;   /* RELEASED: the lease's final state ("released", "expired", ...) */
	const char *message; /* FAILED/EXPIRED: a sentence for a person; may be NULL */
	double grace_s;	     /* EXPIRED: seconds until attached processes are killed */
} zgpu_event;

/* Called from zgpu_acquire for each event before the grant. Pointers in ev
 * are valid only during the call. */
typedef void (*zgpu_progress_fn)(const zgpu_event *ev, void *userdata);

typedef struct {
	int index;	  /* the daemon's device index */
	const char *uuid; /* for CUDA_VISIBLE_DEVICES */
	uint64_t memory_bytes;
	uint64_t memory_limit_bytes; /* what the lease may use of it (half on a split GPU) */
} zgpu_device;

typedef struct zgpu_lease zgpu_lease;

/*
 * Asks for a lease and blocks until it is granted, refused, or timeout_ms
 * passes (-1: no client-side limit; the daemon's max_wait_s still applies).
 * progress, when not NULL, sees each queue event. On success *out holds the
 * granted lease, which the caller ends with zgpu_release() or zgpu_lease_free().
 * A refusal returns ZGPU_EBADREQ, ZGPU_ENOGPU, ZGPU_EUNAVAIL, ... with the
 * daemon's message in zgpu_last_error().
 */
int zgpu_acquire(zgpu_lease **out, zgpu_client *c, const zgpu_request *req, int timeout_ms,
		 zgpu_progress_fn progress, void *userdata);

const char *zgpu_lease_id(const zgpu_lease *l);
size_t zgpu_lease_device_count(const zgpu_lease *l);
/* The i-th granted device, or NULL when i is out of range; valid while l lives. */
const zgpu_device *zgpu_lease_device(const zgpu_lease *l, size_t i);
/* The deadline in Unix time, milliseconds. */
int64_t zgpu_lease_deadline_ms(const zgpu_lease *l);
/* The granted duration in seconds (the daemon's default when the request named none). */
double zgpu_lease_duration_s(const zgpu_lease *l);
/* Grace after the deadline before attached processes are killed, in seconds. */
double zgpu_lease_grace_s(const zgpu_lease *l);
/* The process the grant handed over, warm: the app's worker that a release with
 * zgpu_release_keep() left resident on these devices, now attached to l; 0 when the
 * grant is cold. */
pid_t zgpu_lease_warm_pid(const zgpu_lease *l);

/*
 * A file descriptor that becomes readable when the daemon sends an event on
 * this lease (expiry, end). Poll it; read with zgpu_lease_next_event().
 * Owned by the lease: do not close it.
 */
int zgpu_lease_fd(const zgpu_lease *l);

/*
 * Waits up to timeout_ms (-1: forever, 0: poll) for the next event on a
 * granted lease and stores it in *ev (pointers valid until the next call on
 * l). Returns ZGPU_ETIMEDOUT when none came, ZGPU_ECLOSED when the daemon
 * closed the stream.
 */
int zgpu_lease_next_event(zgpu_lease *l, int timeout_ms, zgpu_event *ev);

/*
 * Binds process pid to the lease: the daemon kills it when the lease expires
 * past its grace or is abandoned — with its whole process group when pid leads
 * one, so start work with setpgid(0, 0) to have all of it stopped.
 */
int zgpu_attach(zgpu_client *c, const zgpu_lease *l, pid_t pid);

/*
 * Moves process pid into app's gated cgroup, where it and everything it forks
 * can open only the GPUs the app's leases hold (`zerogpu launch`). app NULL
 * means "default": the app of the caller's own app cgroup, if it runs in one.
 * Only a process the caller could kill itself may be moved. Returns
 * ZGPU_ENOGATE when zerogpud does not gate devices (zgpu_last_error() says
 * why), ZGPU_EDENIED when the caller may not act as app or move pid,
 * ZGPU_ECONFLICT when pid is parked (docs/security.md).
 */
int zgpu_join_app(zgpu_client *c, const char *app, pid_t pid);

/*
 * Ends the lease and frees l, whatever the result. failed=true reports that
 * the work failed. *used_s_out (may be NULL) gets the seconds the devices
 * were held.
 */
int zgpu_release(zgpu_client *c, zgpu_lease *l, bool failed, double *used_s_out);

/*
 * Ends the lease like zgpu_release(c, l, false, used_s_out) but keeps the attached
 * process resident on the lease's devices, with its memory: the app's next lease
 * there (same app and task, same caller) is granted warm with it attached
 * (zgpu_lease_warm_pid()), unless its memory is needed first, when zerogpud kills
 * it. *kept_out (may be NULL) says whether it stays (there must be a live attached
 * process). Frees l, whatever the result.
 */
int zgpu_release_keep(zgpu_client *c, zgpu_lease *l, double *used_s_out, bool *kept_out);

/* Frees l without asking: closing its stream makes the daemon release the
 * lease at once and kill its attached processes. Returns NULL. */
zgpu_lease *zgpu_lease_free(zgpu_lease *l);

#ifdef __cplusplus
}
#endif
#endif /* ZEROGPU_H */
