/*
 * zerogpu._native — the CPython binding of libzerogpu (include/zerogpu.h).
 *
 * Two types, Client and Lease, and one exception hierarchy. Every call that
 * talks to zerogpud drops the GIL, so a Gradio server's other threads run
 * while one call waits in the queue. The module uses multi-phase
 * initialisation and keeps its types in module state (PEP 489, PEP 573), so it
 * is safe to import in sub-interpreters and to reload.
 *
 * Errors: every failure raises zerogpu.ZeroGPUError or a subclass, with
 * `code` (the library's negative zgpu_error) and `name` ("ENOGPU") set on the
 * instance and the daemon's own message as the text.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <limits.h>
#include <math.h>

#include "zerogpu.h"

/* ------------------------------------------------------------------------
 * Module state.
 * ------------------------------------------------------------------------ */

/* Exceptions with a class of their own; every other code raises the base class. */
#define ZGPU_PY_ERRORS(XX)                                                                         \
	XX(QuotaExceeded, ZGPU_EQUOTA, "The visitor's GPU quota does not cover the request.")      \
	XX(NoGPUAvailable, ZGPU_ENOGPU, "No GPU was granted before the queue gave up.")            \
	XX(TaskAborted, ZGPU_EEXPIRED, "The GPU task was stopped: it ran past its duration.")      \
	XX(DaemonUnavailable, ZGPU_ECONNECT, "zerogpud cannot be reached on its socket.")          \
	XX(RequestRefused, ZGPU_EBADREQ, "zerogpud refused the request as malformed.")

enum {
#define XX(name, code, doc) ERR_##name,
	ZGPU_PY_ERRORS(XX)
#undef XX
		ERR__COUNT
};

struct module_state {
	PyObject *error; /* ZeroGPUError */
	PyObject *errors[ERR__COUNT];
	PyTypeObject *client_type;
	PyTypeObject *lease_type;
};

static struct module_state *state_of_module(PyObject *module)
{
	return (struct module_state *) PyModule_GetState(module);
}

/* The class that code maps to. */
static PyObject *error_class(struct module_state *st, int code)
{
	static const int codes[ERR__COUNT] = {
#define XX(name, code, doc) code,
		ZGPU_PY_ERRORS(XX)
#undef XX
	};
	for (int i = 0; i < ERR__COUNT; i++)
		if (codes[i] == code)
			return st->errors[i];
	if (code == ZGPU_EIO)
		return st->errors[ERR_DaemonUnavailable];
	return st->error;
}

/* Raises the error class of code with message; returns NULL for the caller to return. */
static PyObject *raise_code(struct module_state *st, int code, const char *message)
{
	PyObject *exc = PyObject_CallFunction(error_class(st, code), "s", message);
	if (!exc)
		return NULL;
	PyObject *pycode = PyLong_FromLong(code);
	int r = pycode ? PyObject_SetAttrString(exc, "code", pycode) : -1;
	Py_XDECREF(pycode);
	PyObject *name = r == 0 ? PyUnicode_FromString(zgpu_err_name(code)) : NULL;
	r = name ? PyObject_SetAttrString(exc, "name", name) : -1;
	Py_XDECREF(name);
	if (r == 0)
		PyErr_SetObject((PyObject *) Py_TYPE(exc), exc);
	Py_DECREF(exc);
	return NULL;
}

/* ------------------------------------------------------------------------
 * Lease.
 * ------------------------------------------------------------------------ */

typedef struct {
	PyObject_HEAD
	zgpu_lease *lease; /* NULL once released or closed */
	PyObject *devices; /* tuple of (index, uuid, memory_bytes) */
	bool busy;	   /* a call on it is running without the GIL */
	PyObject *weakrefs;
} LeaseObject;

static struct module_state *state_of_type(PyTypeObject *type)
{
	return (struct module_state *) PyType_GetModuleState(type);
}

/* The lease of self, or NULL with ValueError set when it is closed or in use. */
static zgpu_lease *lease_take(LeaseObject *self)
{
	if (!self->lease) {
		PyErr_SetString(PyExc_ValueError, "the lease is closed");
		return NULL;
	}
	if (self->busy) {
		PyErr_SetString(PyExc_RuntimeError,
				"the lease is in use by another thread (a lease belongs to one "
				"thread at a time)");
		return NULL;
	}
	self->busy = true;
	return self->lease;
}

static PyObject *lease_new_from(struct module_state *st, zgpu_lease *l)
{
	size_t n = zgpu_lease_device_count(l);
	PyObject *devices = PyTuple_New((Py_ssize_t) n);
	if (!devices)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		const zgpu_device *d = zgpu_lease_device(l, i);
		PyObject *t = Py_BuildValue("(isK)", d->index, d->uuid,
					    (unsigned long long) d->memory_bytes);
		if (!t)
			goto fail;
		PyTuple_SET_ITEM(devices, (Py_ssize_t) i, t);
	}
	LeaseObject *self = PyObject_GC_New(LeaseObject, st->lease_type);
	if (!self)
		goto fail;
	self->lease = l;
	self->devices = devices;
	self->busy = false;
	self->weakrefs = NULL;
	PyObject_GC_Track(self);
	return (PyObject *) self;
fail:
	Py_XDECREF(devices);
	zgpu_lease_free(l);
	return NULL;
}

static int lease_traverse(LeaseObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->devices);
	return 0;
}

static int lease_clear(LeaseObject *self)
{
	Py_CLEAR(self->devices);
	return 0;
}

static void lease_dealloc(LeaseObject *self)
{
	PyTypeObject *type = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	if (self->weakrefs)
		PyObject_ClearWeakRefs((PyObject *) self);
	/* Freeing an unreleased lease closes its stream: the daemon ends it. */
	self->lease = zgpu_lease_free(self->lease);
	lease_clear(self);
	type->tp_free(self);
	Py_DECREF(type);
}

static PyObject *lease_get_id(LeaseObject *self, void *closure)
{
	if (!self->lease)
		return PyErr_Format(PyExc_ValueError, "the lease is closed");
	return PyUnicode_FromString(zgpu_lease_id(self->lease));
}

static PyObject *lease_get_devices(LeaseObject *self, void *closure)
{
	return Py_NewRef(self->devices);
}

static PyObject *lease_get_number(LeaseObject *self, double (*get)(const zgpu_lease *))
{
	if (!self->lease)
		return PyErr_Format(PyExc_ValueError, "the lease is closed");
	return PyFloat_FromDouble(get(self->lease));
}

static double deadline_s(const zgpu_lease *l)
{
	return (double) zgpu_lease_deadline_ms(l) / 1000.0;
}

static PyObject *lease_get_deadline(LeaseObject *self, void *closure)
{
	return lease_get_number(self, deadline_s);
}

static PyObject *lease_get_duration(LeaseObject *self, void *closure)
{
	return lease_get_number(self, zgpu_lease_duration_s);
}

static PyObject *lease_get_grace(LeaseObject *self, void *closure)
{
	return lease_get_number(self, zgpu_lease_grace_s);
}

static PyObject *lease_get_memory_limits(LeaseObject *self, void *closure)
{
	if (!self->lease)
		return PyErr_Format(PyExc_ValueError, "the lease is closed");
	size_t n = zgpu_lease_device_count(self->lease);
	PyObject *limits = PyTuple_New((Py_ssize_t) n);
	for (size_t i = 0; limits && i < n; i++) {
		PyObject *v = PyLong_FromUnsignedLongLong(
			(unsigned long long) zgpu_lease_device(self->lease, i)->memory_limit_bytes);
		if (!v) {
			Py_CLEAR(limits);
			break;
		}
		PyTuple_SET_ITEM(limits, (Py_ssize_t) i, v);
	}
	return limits;
}

static PyObject *lease_get_warm_pid(LeaseObject *self, void *closure)
{
	if (!self->lease)
		return PyErr_Format(PyExc_ValueError, "the lease is closed");
	return PyLong_FromLong((long) zgpu_lease_warm_pid(self->lease));
}

static PyObject *lease_get_closed(LeaseObject *self, void *closure)
{
	return PyBool_FromLong(self->lease == NULL);
}

static PyObject *lease_fileno(LeaseObject *self, PyObject *unused)
{
	if (!self->lease)
		return PyErr_Format(PyExc_ValueError, "the lease is closed");
	return PyLong_FromLong(zgpu_lease_fd(self->lease));
}

/* Seconds as a Python float (None or negative: forever) to the library's milliseconds. */
static int timeout_ms_of(PyObject *timeout, int *out)
{
	if (timeout == Py_None) {
		*out = -1;
		return 0;
	}
	double s = PyFloat_AsDouble(timeout);
	if (s == -1.0 && PyErr_Occurred())
		return -1;
	if (isnan(s)) {
		PyErr_SetString(PyExc_ValueError, "timeout must be a number of seconds, not NaN");
		return -1;
	}
	*out = s < 0 ? -1 : s * 1000.0 >= (double) INT_MAX ? INT_MAX : (int) ceil(s * 1000.0);
	return 0;
}

static const char *event_kind_name(zgpu_event_kind kind)
{
	switch (kind) {
	case ZGPU_EVENT_QUEUED:
		return "queued";
	case ZGPU_EVENT_GRANTED:
		return "granted";
	case ZGPU_EVENT_EXPIRED:
		return "expired";
	case ZGPU_EVENT_RELEASED:
		return "released";
	case ZGPU_EVENT_FAILED:
		return "failed";
	}
	return "unknown";
}

static PyObject *event_dict(const zgpu_event *ev)
{
	return Py_BuildValue("{s:s, s:i, s:z, s:z, s:z, s:d}", "kind", event_kind_name(ev->kind),
			     "position", ev->position, "reason", ev->reason, "state", ev->state,
			     "message", ev->message, "grace", ev->grace_s);
}

static PyObject *lease_next_event(LeaseObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"timeout", NULL};
	PyObject *timeout = Py_None;
	int timeout_ms;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:next_event", kwlist, &timeout) ||
	    timeout_ms_of(timeout, &timeout_ms) < 0)
		return NULL;
	zgpu_lease *l = lease_take(self);
	if (!l)
		return NULL;
	zgpu_event ev;
	int r;
	Py_BEGIN_ALLOW_THREADS
	r = zgpu_lease_next_event(l, timeout_ms, &ev);
	Py_END_ALLOW_THREADS
	self->busy = false;
	if (r == ZGPU_ETIMEDOUT)
		Py_RETURN_NONE;
	if (r < 0)
		return raise_code(state_of_type(Py_TYPE(self)), r, zgpu_last_error());
	return event_dict(&ev);
}

static PyObject *lease_close(LeaseObject *self, PyObject *unused)
{
	if (self->busy) {
		PyErr_SetString(PyExc_RuntimeError, "the lease is in use by another thread");
		return NULL;
	}
	self->lease = zgpu_lease_free(self->lease);
	Py_RETURN_NONE;
}

static PyObject *lease_repr(LeaseObject *self)
{
	if (!self->lease)
		return PyUnicode_FromString("<zerogpu Lease (closed)>");
	return PyUnicode_FromFormat("<zerogpu Lease %s on %R>", zgpu_lease_id(self->lease),
				    self->devices);
}

static PyMethodDef lease_methods[] = {
	{"fileno", (PyCFunction) lease_fileno, METH_NOARGS,
	 "fileno() -> int: readable when zerogpud sends an event on this lease."},
	{"next_event", (PyCFunction) (void (*)(void)) lease_next_event,
	 METH_VARARGS | METH_KEYWORDS,
	 "next_event(timeout=None) -> dict | None: the next event (expiry, end), or None "
	 "when none came within timeout seconds."},
	{"close", (PyCFunction) lease_close, METH_NOARGS,
	 "close(): drop the lease without releasing it; zerogpud ends it and kills its "
	 "attached processes."},
	{NULL, NULL, 0, NULL},
};

static PyGetSetDef lease_getset[] = {
	{"id", (getter) lease_get_id, NULL, "The lease id.", NULL},
	{"devices", (getter) lease_get_devices, NULL,
	 "The granted devices: a tuple of (index, uuid, memory_bytes).", NULL},
	{"deadline", (getter) lease_get_deadline, NULL, "The deadline, Unix time in seconds.",
	 NULL},
	{"duration", (getter) lease_get_duration, NULL, "The granted duration in seconds.", NULL},
	{"grace", (getter) lease_get_grace, NULL,
	 "Seconds after the deadline before attached processes are killed.", NULL},
	{"closed", (getter) lease_get_closed, NULL, "True once released or closed.", NULL},
	{"memory_limits", (getter) lease_get_memory_limits, NULL,
	 "What the lease may use of each device, in bytes (half of it on a split GPU).", NULL},
	{"warm_pid", (getter) lease_get_warm_pid, NULL,
	 "The app's resident worker the grant handed over (attached already), or 0: cold.", NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef lease_members[] = {
	{"__weaklistoffset__", T_PYSSIZET, offsetof(LeaseObject, weakrefs), READONLY, NULL},
	{NULL, 0, 0, 0, NULL},
};

static PyType_Slot lease_slots[] = {
	{Py_tp_doc, "A granted lease of zerogpud devices (from Client.acquire)."},
	{Py_tp_dealloc, lease_dealloc},
	{Py_tp_traverse, lease_traverse},
	{Py_tp_clear, lease_clear},
	{Py_tp_repr, lease_repr},
	{Py_tp_methods, lease_methods},
	{Py_tp_getset, lease_getset},
	{Py_tp_members, lease_members},
	{0, NULL},
};

static PyType_Spec lease_spec = {
	.name = "zerogpu._native.Lease",
	.basicsize = sizeof(LeaseObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	.slots = lease_slots,
};

/* ------------------------------------------------------------------------
 * Client.
 * ------------------------------------------------------------------------ */

typedef struct {
	PyObject_HEAD
	zgpu_client *client;
} ClientObject;

static PyObject *client_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"socket_path", NULL};
	const char *path = NULL;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|z:Client", kwlist, &path))
		return NULL;
	ClientObject *self = (ClientObject *) type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	int r = zgpu_client_open(&self->client, path);
	if (r < 0) {
		Py_DECREF(self);
		return raise_code(state_of_type(type), r, zgpu_last_error());
	}
	return (PyObject *) self;
}

static int client_traverse(ClientObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	return 0;
}

static void client_dealloc(ClientObject *self)
{
	PyTypeObject *type = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	self->client = zgpu_client_free(self->client);
	type->tp_free(self);
	Py_DECREF(type);
}

static PyObject *client_socket_path(ClientObject *self, void *closure)
{
	return PyUnicode_DecodeFSDefault(zgpu_client_socket_path(self->client));
}

/* Runs in the acquiring thread, which holds no GIL while it waits. */
static void progress_trampoline(const zgpu_event *ev, void *userdata)
{
	PyGILState_STATE g = PyGILState_Ensure();
	PyObject *d = event_dict(ev);
	PyObject *r = d ? PyObject_CallOneArg((PyObject *) userdata, d) : NULL;
	if (!r)
		PyErr_WriteUnraisable((PyObject *) userdata);
	Py_XDECREF(r);
	Py_XDECREF(d);
	PyGILState_Release(g);
}

static PyObject *client_acquire(ClientObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"app",	       "task",	  "visitor",  "size",
				 "duration",   "gpus",	  "max_wait", "visitor_token",
				 "visitor_ip", "timeout", "progress", "memory_bytes",
				 NULL};
	zgpu_request req = ZGPU_REQUEST_INIT;
	PyObject *timeout = Py_None, *progress = Py_None;
	unsigned long long memory = 0;
	int timeout_ms;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$zzzzdidzzOOK:acquire", kwlist, &req.app,
					 &req.task, &req.visitor, &req.size, &req.duration_s,
					 &req.gpus, &req.max_wait_s, &req.visitor_token,
					 &req.visitor_ip, &timeout, &progress, &memory) ||
	    timeout_ms_of(timeout, &timeout_ms) < 0)
		return NULL;
	req.memory_bytes = (uint64_t) memory;
	if (progress != Py_None && !PyCallable_Check(progress)) {
		PyErr_SetString(PyExc_TypeError, "progress must be callable or None");
		return NULL;
	}
	struct module_state *st = state_of_type(Py_TYPE(self));
	zgpu_lease *l = NULL;
	int r;
	Py_BEGIN_ALLOW_THREADS
	r = zgpu_acquire(&l, self->client, &req, timeout_ms,
			 progress == Py_None ? NULL : progress_trampoline, progress);
	Py_END_ALLOW_THREADS
	if (r < 0)
		return raise_code(st, r, zgpu_last_error());
	return lease_new_from(st, l);
}

static LeaseObject *lease_arg(ClientObject *self, PyObject *obj)
{
	struct module_state *st = state_of_type(Py_TYPE(self));
	if (!PyObject_TypeCheck(obj, st->lease_type)) {
		PyErr_Format(PyExc_TypeError, "expected a zerogpu Lease, not %.100s",
			     Py_TYPE(obj)->tp_name);
		return NULL;
	}
	return (LeaseObject *) obj;
}

static PyObject *client_attach(ClientObject *self, PyObject *args)
{
	PyObject *obj;
	int pid;
	if (!PyArg_ParseTuple(args, "Oi:attach", &obj, &pid))
		return NULL;
	LeaseObject *lo = lease_arg(self, obj);
	zgpu_lease *l = lo ? lease_take(lo) : NULL;
	if (!l)
		return NULL;
	int r;
	Py_BEGIN_ALLOW_THREADS
	r = zgpu_attach(self->client, l, (pid_t) pid);
	Py_END_ALLOW_THREADS
	lo->busy = false;
	if (r < 0)
		return raise_code(state_of_type(Py_TYPE(self)), r, zgpu_last_error());
	Py_RETURN_NONE;
}

static PyObject *client_release(ClientObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"lease", "failed", "keep", NULL};
	PyObject *obj;
	int failed = 0, keep = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|pp:release", kwlist, &obj, &failed,
					 &keep))
		return NULL;
	if (failed && keep) {
		PyErr_SetString(PyExc_ValueError, "a failed call's worker is not kept");
		return NULL;
	}
	LeaseObject *lo = lease_arg(self, obj);
	zgpu_lease *l = lo ? lease_take(lo) : NULL;
	if (!l)
		return NULL;
	double used = 0;
	int r;
	/* zgpu_release frees l whatever it returns. */
	Py_BEGIN_ALLOW_THREADS
	r = keep ? zgpu_release_keep(self->client, l, &used, NULL)
		 : zgpu_release(self->client, l, failed, &used);
	Py_END_ALLOW_THREADS
	lo->lease = NULL;
	lo->busy = false;
	if (r < 0)
		return raise_code(state_of_type(Py_TYPE(self)), r, zgpu_last_error());
	return PyFloat_FromDouble(used);
}

static PyObject *client_get(ClientObject *self, PyObject *args)
{
	const char *path;
	if (!PyArg_ParseTuple(args, "s:get", &path))
		return NULL;
	char *body = NULL;
	int r;
	Py_BEGIN_ALLOW_THREADS
	r = zgpu_get(self->client, path, &body);
	Py_END_ALLOW_THREADS
	if (r < 0)
		return raise_code(state_of_type(Py_TYPE(self)), r, zgpu_last_error());
	PyObject *s = PyUnicode_FromString(body);
	free(body);
	return s;
}

static PyMethodDef client_methods[] = {
	{"acquire", (PyCFunction) (void (*)(void)) client_acquire, METH_VARARGS | METH_KEYWORDS,
	 "acquire(*, app=None, task=None, visitor=None, size=None, duration=0, gpus=0, "
	 "max_wait=-1, visitor_token=None, visitor_ip=None, timeout=None, progress=None) -> "
	 "Lease\n\nBlocks (without the GIL) until zerogpud grants a lease or refuses. progress, "
	 "when given, is called with each queue event as a dict."},
	{"attach", (PyCFunction) client_attach, METH_VARARGS,
	 "attach(lease, pid): zerogpud kills pid (and its process group, when it leads one) "
	 "if the lease outlives its deadline."},
	{"release", (PyCFunction) (void (*)(void)) client_release, METH_VARARGS | METH_KEYWORDS,
	 "release(lease, failed=False, keep=False) -> float: end the lease; returns the seconds "
	 "held. keep=True leaves the attached worker resident on the devices for the app's next "
	 "call (warm)."},
	{"get", (PyCFunction) client_get, METH_VARARGS,
	 "get(path) -> str: GET a route of the native API (e.g. '/v1/devices'); the JSON text."},
	{NULL, NULL, 0, NULL},
};

static PyGetSetDef client_getset[] = {
	{"socket_path", (getter) client_socket_path, NULL, "The daemon's Unix socket.", NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot client_slots[] = {
	{Py_tp_doc, "Client(socket_path=None): a client of zerogpud on its Unix socket "
		    "(default: $ZEROGPU_SOCKET, else the daemon's standard path). Thread-safe."},
	{Py_tp_new, client_new},
	{Py_tp_dealloc, client_dealloc},
	{Py_tp_traverse, client_traverse},
	{Py_tp_methods, client_methods},
	{Py_tp_getset, client_getset},
	{0, NULL},
};

static PyType_Spec client_spec = {
	.name = "zerogpu._native.Client",
	.basicsize = sizeof(ClientObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.slots = client_slots,
};

/* ------------------------------------------------------------------------
 * Module.
 * ------------------------------------------------------------------------ */

static PyObject *default_socket_path(PyObject *module, PyObject *unused)
{
	char path[4096];
	int r = zgpu_default_socket_path(path, sizeof(path));
	if (r < 0)
		return raise_code(state_of_module(module), r, zgpu_last_error());
	return PyUnicode_DecodeFSDefault(path);
}

static PyObject *error_name(PyObject *module, PyObject *arg)
{
	long code = PyLong_AsLong(arg);
	if (code == -1 && PyErr_Occurred())
		return NULL;
	return PyUnicode_FromString(zgpu_err_name((int) code));
}

static PyMethodDef module_methods[] = {
	{"default_socket_path", default_socket_path, METH_NOARGS,
	 "default_socket_path() -> str: the socket a Client() with no path talks to."},
	{"error_name", error_name, METH_O, "error_name(code) -> str: e.g. 'ENOGPU' for -13."},
	{NULL, NULL, 0, NULL},
};

static int add_error_classes(PyObject *module, struct module_state *st)
{
	st->error = PyErr_NewExceptionWithDoc(
		"zerogpu.ZeroGPUError",
		"Base class of zerogpu's errors. `code` is the library's negative error code "
		"(None when raised by Python code) and `name` its symbol, e.g. 'ENOGPU'.",
		NULL, NULL);
	if (!st->error || PyObject_SetAttrString(st->error, "code", Py_None) < 0 ||
	    PyObject_SetAttrString(st->error, "name", Py_None) < 0 ||
	    PyModule_AddObjectRef(module, "ZeroGPUError", st->error) < 0)
		return -1;
	static const struct {
		const char *name, *doc;
		int code;
	} table[ERR__COUNT] = {
#define XX(name, code, doc) {"zerogpu." #name, doc, code},
		ZGPU_PY_ERRORS(XX)
#undef XX
	};
	for (int i = 0; i < ERR__COUNT; i++) {
		PyObject *cls = PyErr_NewExceptionWithDoc(table[i].name, table[i].doc, st->error,
							  NULL);
		st->errors[i] = cls;
		PyObject *code = cls ? PyLong_FromLong(table[i].code) : NULL;
		int r = code ? PyObject_SetAttrString(cls, "code", code) : -1;
		Py_XDECREF(code);
		PyObject *sym = r == 0 ? PyUnicode_FromString(zgpu_err_name(table[i].code)) : NULL;
		r = sym ? PyObject_SetAttrString(cls, "name", sym) : -1;
		Py_XDECREF(sym);
		if (r < 0 || PyModule_AddObjectRef(module, strchr(table[i].name, '.') + 1, cls) < 0)
			return -1;
	}
	return 0;
}

static int module_exec(PyObject *module)
{
	struct module_state *st = state_of_module(module);
	if (add_error_classes(module, st) < 0)
		return -1;
	st->client_type = (PyTypeObject *) PyType_FromModuleAndSpec(module, &client_spec, NULL);
	st->lease_type = (PyTypeObject *) PyType_FromModuleAndSpec(module, &lease_spec, NULL);
	if (!st->client_type || !st->lease_type || PyModule_AddType(module, st->client_type) < 0 ||
	    PyModule_AddType(module, st->lease_type) < 0)
		return -1;
	return PyModule_AddIntConstant(module, "PROTOCOL_VERSION", ZGPU_PROTOCOL_VERSION);
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
	struct module_state *st = state_of_module(module);
	Py_VISIT(st->error);
	for (int i = 0; i < ERR__COUNT; i++)
		Py_VISIT(st->errors[i]);
	Py_VISIT(st->client_type);
	Py_VISIT(st->lease_type);
	return 0;
}

static int module_clear(PyObject *module)
{
	struct module_state *st = state_of_module(module);
	Py_CLEAR(st->error);
	for (int i = 0; i < ERR__COUNT; i++)
		Py_CLEAR(st->errors[i]);
	Py_CLEAR(st->client_type);
	Py_CLEAR(st->lease_type);
	return 0;
}

static void module_free(void *module)
{
	module_clear((PyObject *) module);
}

static PyModuleDef_Slot module_slots[] = {
	{Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
	{Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
	{0, NULL},
};

static struct PyModuleDef module_def = {
	PyModuleDef_HEAD_INIT,
	.m_name = "zerogpu._native",
	.m_doc = "The C binding of libzerogpu, zerogpud's client library.",
	.m_size = sizeof(struct module_state),
	.m_methods = module_methods,
	.m_slots = module_slots,
	.m_traverse = module_traverse,
	.m_clear = module_clear,
	.m_free = module_free,
};

PyMODINIT_FUNC PyInit__native(void); /* the one symbol the module exports */
PyMODINIT_FUNC PyInit__native(void)
{
	return PyModuleDef_Init(&module_def);
}
