/*
 * _stream.c — the BoundedStream type.
 *
 * Owns: construction (new/init, one core stream per object), GC (traverse/clear, see
 * "GC AND GIL-FREE GETTERS" in _bpstream.h) and deallocation, the blocking and batch
 * methods (put/get, put_many/get_many, close), stats and its Stats type, len/repr, the
 * properties, and the native reader a stream may own. Queue (_queue.c) reuses most of it.
 */
#include "_readahead.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#if PY_VERSION_HEX < 0x030C0000
#  include <structmember.h>   /* T_PYSSIZET, READONLY */
#  define Py_T_PYSSIZET T_PYSSIZET
#  define Py_READONLY READONLY
#  define Py_T_OBJECT T_OBJECT
#  define Py_T_INT T_INT
#endif

/* Items moved per core call by get_many/put_many, in a buffer on the C stack. */
#define BATCH 256

/* ------------------------------------------------------------------------- */
/* Core operations shared by BoundedStream, Queue and asyncio                */
/* ------------------------------------------------------------------------- */

/* Borrows item. Returns the status; on anything but BPS_OK the stream took nothing
 * and the caller's reference is as it was. */
bps_status
do_put(StreamObject *self, PyObject *item, int64_t timeout_ns)
{
    gil_waiter w;
    Py_INCREF(item);  /* the stream's reference, if it takes the item */
    bps_status status = bps_stream_put(self->stream, item, timeout_ns,
                                       timeout_ns == 0 ? NULL : gil_waiter_init(&w, self, 0));
    if (status != BPS_OK) {
        Py_DECREF(item);
    }
    return status;
}

// BoundedStream.put's result: True stored, False shed. Returns a new reference.
static inline PyObject *
put_result(StreamObject *self, bps_status status)
{
    if (status == BPS_OK) {
        Py_RETURN_TRUE;
    }
    if (status == BPS_SHED) {
        Py_RETURN_FALSE;
    }
    return stream_error(self, status);
}

/* Sets `accepted` on the exception being raised (put_many's partial result). */
static void
attach_accepted(Py_ssize_t accepted)
{
    PyObject *exc = get_raised_exception();
    if (exc == NULL) {
        return;
    }
    PyObject *n = PyLong_FromSsize_t(accepted);
    if (n == NULL || PyObject_SetAttrString(exc, "accepted", n) < 0) {
        PyErr_Clear();  /* the original exception matters more */
    }
    Py_XDECREF(n);
    set_raised_exception(exc);
}

// Steals item: drops an item we own without turning it into an object. GIL held.
static inline void
item_discard(void *item)
{
    if (bps_item_is_frame(item)) {
        bps_frame_free(item);
    }
    else {
        Py_DECREF((PyObject *)item);
    }
}

static int64_t
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* ------------------------------------------------------------------------- */
/* Flow control: flow= parsing, flow listeners (on_flow_change)              */
/* ------------------------------------------------------------------------- */

/* One on_flow_change registration: a capsule in self->flow_listeners points to it.
 * ctx is owned by the core listener (released through flow_context_release once the
 * listener is removed and no callback runs); NULL here once removed. */
typedef struct {
    PyObject *callback;        /* a strong reference, dropped by flow_context_release */
} flow_context;

typedef struct {
    bps_flow_listener *listener;   /* NULL once removed */
    flow_context *ctx;             /* borrowed while listener != NULL (for GC traversal) */
} flow_registration;

#define FLOW_CAPSULE "bpstream.flow_listener"

// Returns a new reference to bpstream._flow, or NULL with an exception.
static PyObject *
flow_module(void)
{
    return PyImport_ImportModule("bpstream._flow");
}

/* The core's flow callback: runs without the stream's lock, on any thread, with or
 * without the GIL. Takes the GIL (unless the interpreter is exiting), keeps whatever
 * exception the thread was raising, and reports the callback's own exception as
 * unraisable: it never reaches (or breaks) the put whose transition it reports. */
static void
flow_callback(void *context, bps_flow_state old_state, bps_flow_state new_state, double fill)
{
    flow_context *ctx = (flow_context *)context;
    PyGILState_STATE gil;
    if (!native_gil_enter(&gil)) {
        return;
    }
    PyObject *pending = get_raised_exception();
    PyObject *flow = flow_module();
    PyObject *result = NULL;
    if (flow != NULL) {
        result = PyObject_CallMethod(flow, "_deliver", "Oiid", ctx->callback, (int)old_state,
                                     (int)new_state, fill);
        Py_DECREF(flow);
    }
    if (result == NULL) {
        PyErr_WriteUnraisable(ctx->callback);
    }
    Py_XDECREF(result);
    set_raised_exception(pending);
    native_gil_leave(gil);
}

/* The core's release of a listener's context: once removed and no callback runs. */
static void
flow_context_release(void *context)
{
    flow_context *ctx = (flow_context *)context;
    PyGILState_STATE gil;   /* reentrant: also right on a thread that holds the GIL */
    if (native_gil_enter(&gil)) {
        Py_DECREF(ctx->callback);
        native_gil_leave(gil);
    }   /* exiting: the callback is left to the interpreter's teardown */
    PyMem_RawFree(ctx);
}

/* Removes a registration from the core (GIL held; the core never waits for the GIL
 * while holding its lock, so this cannot deadlock). Idempotent. */
static void
flow_registration_remove(flow_registration *reg)
{
    bps_flow_listener *listener = reg->listener;
    if (listener == NULL) {
        return;
    }
    reg->listener = NULL;
    reg->ctx = NULL;
    (void)bps_flow_listener_remove(listener);
}

static void
flow_capsule_destroy(PyObject *capsule)
{
    flow_registration *reg = PyCapsule_GetPointer(capsule, FLOW_CAPSULE);
    if (reg != NULL) {
        flow_registration_remove(reg);
        PyMem_Free(reg);
    }
}

/* Ends every registration (dealloc, tp_clear). */
static void
flow_listeners_clear(StreamObject *self)
{
    PyObject *list = self->flow_listeners;
    if (list == NULL) {
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        flow_registration *reg = PyCapsule_GetPointer(PyList_GET_ITEM(list, i), FLOW_CAPSULE);
        if (reg != NULL) {
            flow_registration_remove(reg);
        }
    }
    PyErr_Clear();
    Py_CLEAR(self->flow_listeners);
}

/* Fills config's rate and clock from rate= / clock= (NULL or None: none), through
 * bpstream_rate_handle / bpstream_clock_handle (_rate.c). Borrowed handles: the core
 * keeps the controller and the clock alive itself. 0 or -1. */
static int
rate_config_from_objects(PyObject *rate, PyObject *clock, bps_config *config)
{
    if (rate != NULL && rate != Py_None) {
        if ((config->rate = bpstream_rate_handle(rate)) == NULL) {
            return -1;
        }
    }
    if (clock != NULL && clock != Py_None) {
        if ((config->clock = bpstream_clock_handle(clock)) == NULL) {
            return -1;
        }
    }
    return 0;
}

/* Fills config's flow fields from a bpstream.FlowControl. Returns 0 or -1. */
static int
flow_config_from_object(PyObject *flow, bps_config *config)
{
    PyObject *module = flow_module();
    if (module == NULL) {
        return -1;
    }
    PyObject *type = PyObject_GetAttrString(module, "FlowControl");
    Py_DECREF(module);
    if (type == NULL) {
        return -1;
    }
    int ok = PyObject_IsInstance(flow, type);
    Py_DECREF(type);
    if (ok <= 0) {
        if (ok == 0) {
            PyErr_Format(PyExc_TypeError, "flow must be a bpstream.FlowControl or None, not %.100s",
                         Py_TYPE(flow)->tp_name);
        }
        return -1;
    }
    static const char *const names[] = {"throttle_at", "pause_at", "min_delay", "max_delay",
                                        "hysteresis"};
    double *fields[] = {&config->throttle_at, &config->pause_at, &config->min_delay,
                        &config->max_delay, &config->hysteresis};
    for (int i = 0; i < 5; i++) {
        PyObject *value = PyObject_GetAttrString(flow, names[i]);
        if (value == NULL) {
            return -1;
        }
        *fields[i] = PyFloat_AsDouble(value);
        Py_DECREF(value);
        if (*fields[i] == -1.0 && PyErr_Occurred()) {
            return -1;
        }
    }
    config->flow = 1;
    return 0;
}

/* ------------------------------------------------------------------------- */
/* BoundedStream: construction, GC, deallocation                             */
/* ------------------------------------------------------------------------- */

static PyObject *
stream_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    PyObject *module = PyType_GetModuleByDef(type, &bpstream_module);
    if (module == NULL) {
        return NULL;
    }
    StreamObject *self = (StreamObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->stream = NULL;
    self->state = get_module_state(module);
    self->weakreflist = NULL;
    self->getters_waiting = 0;
    self->policy = BPS_POLICY_BLOCK;
    self->reader = NULL;
    self->unbounded_maxsize = 0;
    self->ahead = NULL;
    self->delivered = NULL;
    self->ahead_next = self->ahead_count = 0;
    self->ahead_batch = 1;
    self->live_iterators = 0;
    self->handed_to_native = 0;
    self->prev_stream = self->next_stream = NULL;
    self->async_waiters = NULL;
    self->flow_listeners = NULL;
    self->async_flow = 0;
    self->pacing = NULL;
    return (PyObject *)self;
}

/* Creates self's stream once, with flow control when flow is a bpstream.FlowControl
 * (NULL or None: states reported only). Returns 0 or -1 with an exception. */
static int
stream_setup_flow(StreamObject *self, int64_t capacity, bps_policy policy, PyObject *flow,
                  PyObject *rate, PyObject *clock)
{
    if (self->stream != NULL) {
        PyErr_Format(PyExc_RuntimeError, "%.200s.__init__() called twice",
                     Py_TYPE(self)->tp_name);
        return -1;
    }
    bps_config config = {
        .size = sizeof(bps_config),
        .capacity = capacity,
        .policy = policy,
        .release = release_item,
        .release_context = NULL,
    };
    if (flow != NULL && flow != Py_None && flow_config_from_object(flow, &config) < 0) {
        return -1;
    }
    /* The pacing controller, held here too: asyncio puts take its permits themselves.
     * The adaptive policy's default is made here (the core's defaultAdaptiveRate:
     * AIMD(1000, increase=100, window=0.1), no clock) so Python holds it as well. */
    PyObject *pacing = NULL;
    if (rate != NULL && rate != Py_None) {
        pacing = Py_NewRef(rate);
    }
    else if (policy == BPS_POLICY_ADAPTIVE) {
        PyObject *kwargs = Py_BuildValue("{s:i,s:d}", "increase", 100, "window", 0.1);
        PyObject *initial = kwargs != NULL ? Py_BuildValue("(i)", 1000) : NULL;
        pacing = initial != NULL
            ? PyObject_Call((PyObject *)self->state->aimd_type, initial, kwargs) : NULL;
        Py_XDECREF(initial);
        Py_XDECREF(kwargs);
        if (pacing == NULL) {
            return -1;
        }
    }
    if (rate_config_from_objects(pacing, clock, &config) < 0) {
        Py_XDECREF(pacing);
        return -1;
    }
    bps_stream *stream;
    bps_status status = bps_stream_create(&config, &stream);
    if (status != BPS_OK) {
        Py_XDECREF(pacing);
        stream_error(self, status);
        return -1;
    }
    self->pacing = pacing;
    self->async_flow = (config.flow ? ASYNC_FLOW_GATED : 0)
                       | (pacing != NULL ? ASYNC_FLOW_PACED : 0)
                       | (policy == BPS_POLICY_ADAPTIVE ? ASYNC_FLOW_ADAPTIVE : 0);
    void *counter = NULL;
    status = bps_stream_delivery_counter(stream, &counter);
    if (status != BPS_OK) {
        (void)bps_stream_release(stream);
        set_error(self->state, status);
        return -1;
    }
    self->stream = stream;
    all_streams_add(self);
    self->delivered = (intptr_t *)counter;
    self->policy = policy;
    self->ahead_batch = stream_ahead_batch(policy, capacity);
    return 0;
}

/* Creates self's stream once (no flow control: states reported only). */
int
stream_setup(StreamObject *self, int64_t capacity, bps_policy policy)
{
    return stream_setup_flow(self, capacity, policy, NULL, NULL, NULL);
}

static int
stream_init(StreamObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", "policy", "flow", "rate", "clock", NULL};
    PyObject *capacity_obj, *policy_obj = NULL, *flow_obj = NULL, *rate_obj = NULL;
    PyObject *clock_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$OOO:BoundedStream", kwlist,
                                     &capacity_obj, &policy_obj, &flow_obj, &rate_obj,
                                     &clock_obj)) {
        return -1;
    }
    if (!PyIndex_Check(capacity_obj)) {
        PyErr_Format(PyExc_TypeError, "capacity must be an int, not %.100s",
                     Py_TYPE(capacity_obj)->tp_name);
        return -1;
    }
    PyObject *index = PyNumber_Index(capacity_obj);
    if (index == NULL) {
        return -1;
    }
    int overflow;
    long long capacity = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (capacity == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || capacity < 1 || capacity > BPS_CAPACITY_MAX) {
        PyErr_Format(PyExc_ValueError, "capacity must be between 1 and %lld, got %R",
                     (long long)BPS_CAPACITY_MAX, capacity_obj);
        return -1;
    }
    bps_policy policy = BPS_POLICY_BLOCK;
    if (policy_obj != NULL && policy_from_object(policy_obj, &policy) < 0) {
        return -1;
    }
    return stream_setup_flow(self, capacity, policy, flow_obj, rate_obj, clock_obj);
}

/* Borrows item; runs under the stream's lock (GIL RULES, _bpstream.h). */
typedef struct {
    visitproc visit;
    void *arg;
} visit_context;

static int
visit_item(void *item, void *context)
{
    visitproc visit = ((visit_context *)context)->visit;
    void *arg = ((visit_context *)context)->arg;
    if (!bps_item_is_frame(item)) {
        Py_VISIT((PyObject *)item);
    }
    return 0;
}

int
stream_traverse(StreamObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->async_waiters);
    Py_VISIT(self->failure);
    Py_VISIT(self->pacing);
    Py_VISIT(self->flow_listeners);
    if (self->flow_listeners != NULL) {
        /* Each live registration's context holds its callback for this stream. */
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(self->flow_listeners); i++) {
            flow_registration *reg = PyCapsule_GetPointer(
                PyList_GET_ITEM(self->flow_listeners, i), FLOW_CAPSULE);
            if (reg != NULL && reg->ctx != NULL) {
                Py_VISIT(reg->ctx->callback);
            }
        }
    }
    for (Py_ssize_t i = self->ahead_next; i < self->ahead_count; i++) {
        if (!bps_item_is_frame(self->ahead[i])) {
            Py_VISIT((PyObject *)self->ahead[i]);
        }
    }
    if (self->stream != NULL && self->getters_waiting == 0) {
        visit_context context = {visit, arg};
        int result = 0;
        bps_stream_visit(self->stream, visit_item, &context, &result);
        return result;
    }
    return 0;
}

/* Breaks reference cycles through items: close immediately, which releases them.
 * The handle stays valid (freed in dealloc), so no method ever sees it vanish. */
int
stream_clear(StreamObject *self)
{
    Py_CLEAR(self->async_waiters);
    Py_CLEAR(self->failure);
    Py_CLEAR(self->pacing);
    flow_listeners_clear(self);
    if (self->stream != NULL) {
        ahead_settle(self);
        (void)bps_stream_close(self->stream, BPS_CLOSE_IMMEDIATE);
    }
    return 0;
}

/* Stops and joins self's native reader, if any (the stream is closed first, so a
 * reader blocked in a put wakes; a silent pipe is woken by the reader's own pipe).
 * The GIL is released while joining: the reader may be releasing an evicted Python
 * object, which takes the GIL. */
void
stop_reader(StreamObject *self)
{
    bps_reader *reader = self->reader;
    if (reader == NULL) {
        return;
    }
    self->reader = NULL;   /* before releasing the GIL: no second caller stops it */
    Py_BEGIN_ALLOW_THREADS
    (void)bps_reader_stop(reader);
    Py_END_ALLOW_THREADS
}

void
stream_dealloc(StreamObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    if (self->stream != NULL) {
        ahead_settle(self);   /* the read-ahead goes back: the close below releases it */
        all_streams_remove(self);
    }
    bps_stream *stream = self->stream;
    self->stream = NULL;
    if (stream != NULL) {
        /* Native producers may hold their own references: closing tells them the
         * consumer is gone (their puts return BPS_CLOSED) and releases the backlog. */
        (void)bps_stream_close(stream, BPS_CLOSE_IMMEDIATE);
        stop_reader(self);
        (void)bps_stream_release(stream);
    }
    Py_CLEAR(self->async_waiters);
    Py_CLEAR(self->failure);
    Py_CLEAR(self->pacing);
    flow_listeners_clear(self);
    PyMem_Free(self->ahead);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------------------- */
/* BoundedStream methods                                                     */
/* ------------------------------------------------------------------------- */

PyDoc_STRVAR(stream_put_doc,
"put($self, item, /, timeout=None)\n"
"--\n"
"\n"
"Put item into the stream; return True if it was stored.\n"
"\n"
"A full stream applies its policy: 'block' waits for room (up to timeout\n"
"seconds; None waits without limit, 0 does not wait) and raises Full when the\n"
"timeout passes; 'reject' raises Full at once; 'drop_oldest' and 'drop_all'\n"
"make room by releasing buffered items; 'drop_newest' sheds this item and\n"
"returns False. Raises Closed after close(). While waiting the GIL is\n"
"released; Ctrl-C interrupts the wait and leaves the item with the caller.");

static PyObject *
stream_put(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    CHECK_INIT(self);
    if (nargs == 1 && kwnames == NULL) {   /* fast path: put(item) */
        return put_result(self, do_put(self, args[0], -1));
    }
    static const char *const names[] = {"item", "timeout"};
    static const arg_spec spec = {"put", names, 2, 1, 2, 1};
    PyObject *argv[2];
    int64_t timeout_ns;
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0
        || timeout_to_ns(argv[1], &timeout_ns) < 0) {
        return NULL;
    }
    return put_result(self, do_put(self, argv[0], timeout_ns));
}

PyDoc_STRVAR(stream_put_nowait_doc,
"put_nowait($self, item, /)\n"
"--\n"
"\n"
"Put item without waiting; the same as put(item, timeout=0).");

static PyObject *
stream_put_nowait(StreamObject *self, PyObject *item)
{
    CHECK_INIT(self);
    return put_result(self, do_put(self, item, 0));
}

PyDoc_STRVAR(stream_get_doc,
"get($self, /, timeout=None)\n"
"--\n"
"\n"
"Remove and return the oldest item.\n"
"\n"
"Waits up to timeout seconds for one (None waits without limit, 0 does not\n"
"wait) and raises Empty when the timeout passes. Once the stream is closed,\n"
"the buffered items are still returned; then get raises Closed. While waiting\n"
"the GIL is released; Ctrl-C interrupts the wait and takes nothing.");

static PyObject *
stream_get(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    CHECK_INIT(self);
    if (nargs == 0 && kwnames == NULL) {   /* fast path: get() */
        return do_get(self, -1);
    }
    static const char *const names[] = {"timeout"};
    static const arg_spec spec = {"get", names, 1, 0, 1, 0};
    PyObject *argv[1];
    int64_t timeout_ns;
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0
        || timeout_to_ns(argv[0], &timeout_ns) < 0) {
        return NULL;
    }
    return do_get(self, timeout_ns);
}

PyDoc_STRVAR(stream_get_nowait_doc,
"get_nowait($self, /)\n"
"--\n"
"\n"
"Remove and return the oldest item without waiting; the same as\n"
"get(timeout=0). Raises Empty if there is none, Closed if closed and drained.");

PyObject *
stream_get_nowait(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_INIT(self);
    return do_get(self, 0);
}

PyDoc_STRVAR(stream_put_many_doc,
"put_many($self, iterable, timeout=None)\n"
"--\n"
"\n"
"Put every item of iterable, in order; return how many were stored.\n"
"\n"
"Items shed by the 'drop_newest' policy are not counted. One timeout covers\n"
"the whole call. If the call fails partway (Full, Closed, an error raised by\n"
"the iterable, KeyboardInterrupt) the exception has an attribute `accepted`:\n"
"the number of items stored before the failure.");

static PyObject *
stream_put_many(StreamObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"iterable", "timeout"};
    static const arg_spec spec = {"put_many", names, 2, 0, 2, 1};
    PyObject *argv[2];
    int64_t timeout_ns, deadline = 0;
    CHECK_INIT(self);
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0
        || timeout_to_ns(argv[1], &timeout_ns) < 0) {
        return NULL;
    }
    if (timeout_ns > 0) {
        int64_t now = monotonic_ns();
        if (timeout_ns > INT64_MAX - now) {
            timeout_ns = -1;
        }
        else {
            deadline = now + timeout_ns;
        }
    }
    PyObject *it = PyObject_GetIter(argv[0]);
    if (it == NULL) {
        return NULL;
    }

    void *items[BATCH];           /* each holds a reference we own until taken */
    Py_ssize_t accepted = 0;
    PyObject *iter_error = NULL;  /* an exception the iterable raised, re-raised last */
    for (;;) {
        size_t count = 0;
        while (count < BATCH) {
            PyObject *item = PyIter_Next(it);
            if (item == NULL) {
                /* Items pulled before an iterator error are still put, as a loop
                 * of put() calls would have; then the error is raised. */
                iter_error = get_raised_exception();
                break;
            }
            items[count++] = item;
        }
        if (count == 0) {
            break;
        }
        int64_t wait_ns = timeout_ns;
        if (timeout_ns > 0) {
            wait_ns = deadline - monotonic_ns();
            if (wait_ns < 0) {
                wait_ns = 0;
            }
        }
        gil_waiter w;
        size_t taken = 0;
        bps_status status = bps_stream_put_many(
            self->stream, items, count, wait_ns,
            wait_ns == 0 ? NULL : gil_waiter_init(&w, self, 0), &taken);
        if (taken > count) {   /* never, per the ABI; keep the refcounts sane anyway */
            taken = count;
        }
        accepted += (Py_ssize_t)taken;
        for (size_t i = taken; i < count; i++) {
            Py_DECREF((PyObject *)items[i]);   /* shed or not put: ours again */
        }
        if (status != BPS_OK && status != BPS_SHED) {
            /* Put failed first, so, sequentially, the iterable never got to raise. */
            Py_XDECREF(iter_error);
            Py_DECREF(it);
            stream_error(self, status);
            attach_accepted(accepted);
            return NULL;
        }
        if (count < BATCH) {
            break;   /* the iterator is exhausted (or failed) */
        }
    }
    Py_DECREF(it);
    if (iter_error != NULL) {
        set_raised_exception(iter_error);
        attach_accepted(accepted);
        return NULL;
    }
    return PyLong_FromSsize_t(accepted);
}

PyDoc_STRVAR(stream_get_many_doc,
"get_many($self, max_items, timeout=None)\n"
"--\n"
"\n"
"Remove and return a list of up to max_items of the oldest items, in order.\n"
"\n"
"Waits (up to timeout seconds) for at least one item, then takes what is\n"
"there without waiting further. Raises Empty and Closed like get().");

static PyObject *
stream_get_many(StreamObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"max_items", "timeout"};
    static const arg_spec spec = {"get_many", names, 2, 0, 2, 1};
    PyObject *argv[2];
    int64_t timeout_ns;
    CHECK_INIT(self);
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0) {
        return NULL;
    }
    /* NULL: out-of-range values clamp, so a huge max_items means "all there is". */
    Py_ssize_t max_items = PyNumber_AsSsize_t(argv[0], NULL);
    if (max_items == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (max_items < 1) {
        PyErr_SetString(PyExc_ValueError, "max_items must be at least 1");
        return NULL;
    }
    if (timeout_to_ns(argv[1], &timeout_ns) < 0) {
        return NULL;
    }

    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    /* The read-ahead first: it is older than anything in the core. */
    while (PyList_GET_SIZE(list) < max_items && self->ahead_next < self->ahead_count) {
        if (list_append_new(list, ahead_deliver(self)) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    /* Then the core, a batch per call: waiting (as timeout_ns says) only while we have
     * nothing; a full batch may mean more is there, so take that without waiting. */
    void *items[BATCH];
    int64_t wait_ns = PyList_GET_SIZE(list) == 0 ? timeout_ns : 0;
    while (PyList_GET_SIZE(list) < max_items) {
        Py_ssize_t left = max_items - PyList_GET_SIZE(list);
        size_t want = left < BATCH ? (size_t)left : BATCH, count = 0;
        gil_waiter w;
        ahead_settle(self);
        bps_status status = bps_stream_get_many(
            self->stream, items, want, wait_ns,
            wait_ns == 0 ? NULL : gil_waiter_init(&w, self, 1), &count);
        if (status != BPS_OK) {
            if (PyList_GET_SIZE(list) > 0) {
                break;   /* empty, or closed and drained: return what we have */
            }
            Py_DECREF(list);
            return stream_error(self, status);
        }
        for (size_t i = 0; i < count; i++) {
            if (list_append_new(list, item_to_object(items[i])) < 0) {
                for (size_t j = i + 1; j < count; j++) {
                    item_discard(items[j]);   /* out of memory: they are ours; drop them */
                }
                Py_DECREF(list);
                return NULL;
            }
        }
        if (count < want) {
            break;
        }
        wait_ns = 0;
    }
    return list;
}

PyDoc_STRVAR(stream_close_doc,
"close($self, /, immediate=False)\n"
"--\n"
"\n"
"Close the stream: later puts raise Closed and blocked putters wake with\n"
"Closed; getters still receive the buffered items, then Closed.\n"
"\n"
"With immediate=True the buffered items are discarded (released) as well and\n"
"every waiter wakes. Closing again is harmless.");

PyObject *
stream_close(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"immediate"};
    static const arg_spec spec = {"close", names, 1, 0, 1, 0};
    PyObject *argv[1];
    CHECK_INIT(self);
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0) {
        return NULL;
    }
    int immediate = truth(argv[0], 0);
    if (immediate < 0) {
        return NULL;
    }
    if (immediate) {
        ahead_settle(self);   /* the read-ahead is backlog too: discard it with the rest */
    }
    bps_status status = bps_stream_close(self->stream, immediate ? BPS_CLOSE_IMMEDIATE : 0);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    stop_reader(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stream_close_with_error_doc,
"_close_with_error($self, exc, /)\n"
"--\n"
"\n"
"End the stream with a Python producer's exception (bpstream's bridges): like\n"
"close(), consumers first get every item put before it, then every get raises\n"
"exc itself. Native consumers see code 0 and 'Type: message'. Ignored (returns\n"
"False) when the stream is already closed.");

// Borrows exc. Returns True (closed with exc), False (already closed), or NULL.
static PyObject *
stream_close_with_error(StreamObject *self, PyObject *exc)
{
    CHECK_INIT(self);
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_Format(PyExc_TypeError, "_close_with_error expected an exception, not %.100s",
                     Py_TYPE(exc)->tp_name);
        return NULL;
    }
    int closed = 0;
    bps_status status = bps_stream_is_closed(self->stream, &closed);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    if (closed) {   /* the core would ignore the error: so do we */
        Py_RETURN_FALSE;
    }
    PyObject *text = PyUnicode_FromFormat("%s: %S", Py_TYPE(exc)->tp_name, exc);
    if (text == NULL) {
        return NULL;
    }
    const char *message = PyUnicode_AsUTF8(text);
    if (message == NULL) {   /* lone surrogates: the type's name will do */
        PyErr_Clear();
        message = Py_TYPE(exc)->tp_name;
    }
    PyObject *tb = PyException_GetTraceback(exc);   /* a new reference, or NULL */
    PyObject *failure = PyTuple_Pack(2, exc, tb != NULL ? tb : Py_None);
    Py_XDECREF(tb);
    if (failure == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    /* With the GIL held throughout: no Python consumer sees BPS_FAILED before `failure`. */
    Py_XSETREF(self->failure, failure);
    status = bps_stream_close_with_error(self->stream, 0, message);
    Py_DECREF(text);
    if (status != BPS_OK) {
        Py_CLEAR(self->failure);
        return stream_error(self, status);
    }
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(stream_stats_doc,
"stats($self, /)\n"
"--\n"
"\n"
"Return a consistent snapshot of the stream's counters as a bpstream.Stats.\n"
"In every snapshot produced == consumed + dropped + depth.");

// Returns a new reference: bpstream.FlowState(value), or NULL with an exception set.
static PyObject *
flow_state_object(int value)
{
    PyObject *flow = flow_module();
    if (flow == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_CallMethod(flow, "FlowState", "i", value);
    Py_DECREF(flow);
    return result;
}

// Returns a new reference, or NULL with an exception set.
static PyObject *
u64(uint64_t v)
{
    return PyLong_FromUnsignedLongLong((unsigned long long)v);
}

static PyObject *
stream_stats(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_INIT(self);
    bps_stats s;
    memset(&s, 0, sizeof(s));
    s.size = sizeof(s);
    bps_status status = bps_stream_stats(self->stream, &s);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    PyObject *result = PyStructSequence_New(self->state->stats_type);
    if (result == NULL) {
        return NULL;
    }
    PyObject *fields[] = {
        u64(s.produced),
        u64(s.consumed),
        u64(s.dropped),
        u64(s.dropped_shed),
        u64(s.dropped_evicted),
        u64(s.dropped_cleared),
        u64(s.dropped_on_close),
        u64(s.rejected),
        u64(s.depth),
        u64(s.peak_depth),
        s.capacity < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(s.capacity),
        u64(s.backpressure_events),
        u64(s.producer_waits),
        u64(s.consumer_waits),
        PyFloat_FromDouble((double)s.producer_wait_ns / 1e9),
        PyFloat_FromDouble((double)s.consumer_wait_ns / 1e9),
        u64(s.unfinished_tasks),
        PyFloat_FromDouble(s.produced_per_second),
        PyFloat_FromDouble(s.consumed_per_second),
        PyFloat_FromDouble(s.window_seconds),
        PyBool_FromLong(s.closed),
        flow_state_object((int)s.flow_state),
        u64(s.throttle_events),
        u64(s.pause_events),
        PyFloat_FromDouble((double)s.time_paused_ns / 1e9),
        PyFloat_FromDouble(s.throttle_delay),
        s.rate_limit < 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble(s.rate_limit),
        PyFloat_FromDouble(s.recent_drop_rate),
    };
    int failed = 0;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)(sizeof(fields) / sizeof(fields[0])); i++) {
        if (fields[i] == NULL) {
            failed = 1;
            continue;
        }
        PyStructSequence_SetItem(result, i, fields[i]);   /* steals */
    }
    if (failed) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

PyDoc_STRVAR(stream_enter_doc,
"__enter__($self, /)\n"
"--\n"
"\n"
"Return self.");

static PyObject *
stream_enter(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self);
}

PyDoc_STRVAR(stream_exit_doc,
"__exit__($self, exc_type, exc_value, traceback, /)\n"
"--\n"
"\n"
"Close the stream (not immediately: getters can still drain it).");

PyObject *
stream_exit(StreamObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    CHECK_INIT(self);
    bps_status status = bps_stream_close(self->stream, 0);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    stop_reader(self);
    Py_RETURN_NONE;
}

Py_ssize_t
stream_len(StreamObject *self)
{
    if (self->stream == NULL) {
        not_initialized(self);
        return -1;
    }
    uint64_t depth = 0;
    bps_status status = bps_stream_depth(self->stream, &depth);
    if (status != BPS_OK) {
        stream_error(self, status);
        return -1;
    }
    return (Py_ssize_t)depth;
}

static PyObject *
stream_repr(StreamObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject *qualname = PyType_GetQualName(type);
    if (qualname == NULL) {
        return NULL;
    }
    PyObject *module = PyObject_GetAttrString((PyObject *)type, "__module__");
    if (module == NULL) {
        PyErr_Clear();
    }
    PyObject *name;
    if (module != NULL && PyUnicode_Check(module)
        && PyUnicode_CompareWithASCIIString(module, "builtins") != 0) {
        name = PyUnicode_FromFormat("%U.%U", module, qualname);
    }
    else {
        name = Py_NewRef(qualname);
    }
    Py_XDECREF(module);
    Py_DECREF(qualname);
    if (name == NULL) {
        return NULL;
    }
    PyObject *result;
    if (self->stream == NULL) {
        result = PyUnicode_FromFormat("<%U uninitialized>", name);
        Py_DECREF(name);
        return result;
    }
    int64_t capacity = 0;
    uint64_t depth = 0;
    int closed = 0;
    (void)bps_stream_capacity(self->stream, &capacity);
    (void)bps_stream_depth(self->stream, &depth);
    (void)bps_stream_is_closed(self->stream, &closed);
    PyObject *capacity_obj = capacity < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(capacity);
    if (capacity_obj == NULL) {
        Py_DECREF(name);
        return NULL;
    }
    result = PyUnicode_FromFormat("<%U capacity=%R policy='%s' depth=%llu closed=%s>",
                                  name, capacity_obj, policy_names[self->policy],
                                  (unsigned long long)depth, closed ? "True" : "False");
    Py_DECREF(capacity_obj);
    Py_DECREF(name);
    return result;
}

/* Properties */

PyObject *
stream_get_closed(StreamObject *self, void *Py_UNUSED(closure))
{
    CHECK_INIT(self);
    int closed = 0;
    bps_status status = bps_stream_is_closed(self->stream, &closed);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    return PyBool_FromLong(closed);
}

static PyObject *
stream_get_capacity(StreamObject *self, void *Py_UNUSED(closure))
{
    CHECK_INIT(self);
    int64_t capacity = 0;
    bps_status status = bps_stream_capacity(self->stream, &capacity);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    if (capacity < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(capacity);
}

static PyObject *
stream_get_policy(StreamObject *self, void *Py_UNUSED(closure))
{
    CHECK_INIT(self);
    return Py_NewRef(self->state->policy_members[self->policy]);
}

PyDoc_STRVAR(stream_start_reader_doc,
"_start_reader($self, fd, lines, size, max_line=0, /)\n"
"--\n"
"\n"
"Start a native reader thread that reads fd and puts frames (one per line when\n"
"lines is true, else one per read of at most size bytes) into this stream.\n"
"A line longer than max_line bytes (0: the library's default, 64 MiB) ends the\n"
"stream with OSError(EMSGSIZE). Takes ownership of fd (closed when the reader\n"
"ends, also on failure). Used by bpstream.read_lines and bpstream.read_chunks.\n"
"close() and garbage collection stop and join the reader.");

static PyObject *
stream_start_reader(StreamObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 4) {
        PyErr_Format(PyExc_TypeError, "_start_reader expected 3 or 4 arguments, got %zd", nargs);
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int lines = PyObject_IsTrue(args[1]);
    Py_ssize_t size = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    Py_ssize_t max_line = nargs == 4 ? PyNumber_AsSsize_t(args[3], PyExc_OverflowError) : 0;
    if (lines < 0 || (size == -1 && PyErr_Occurred()) || (max_line == -1 && PyErr_Occurred())) {
        if (fd >= 0 && fd <= INT32_MAX) {
            close((int)fd);   /* ours to close, whatever happens */
        }
        return NULL;
    }
    if (fd < 0 || fd > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "fd must be a non-negative int");
        return NULL;
    }
    if (self->stream == NULL || self->reader != NULL || size < 1 || max_line < 0
        || (uint64_t)max_line > (uint64_t)BPS_READER_MAX_LINE_MAX) {
        close((int)fd);   /* ours to close, whatever happens */
        if (self->stream == NULL) {
            return not_initialized(self);
        }
        if (size < 1) {
            PyErr_SetString(PyExc_ValueError, "size must be at least 1");
            return NULL;
        }
        if (self->reader == NULL) {
            PyErr_Format(PyExc_ValueError, "max_line must be between 1 and %llu (0: default)",
                         (unsigned long long)BPS_READER_MAX_LINE_MAX);
            return NULL;
        }
        PyErr_SetString(PyExc_RuntimeError, "a reader already feeds this stream");
        return NULL;
    }
    bps_reader_config config = {
        .size = sizeof(bps_reader_config),
        .framing = lines ? BPS_FRAMING_LINES : BPS_FRAMING_CHUNKS,
        .chunk_size = (size_t)size,
        .max_line = (size_t)max_line,
    };
    bps_reader *reader = NULL;
    bps_status status = bps_reader_start_ex(self->stream, (int)fd, &config, &reader);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    self->reader = reader;
    Py_RETURN_NONE;
}

static PyObject *
stream_get_flow_state(StreamObject *self, void *Py_UNUSED(closure))
{
    CHECK_INIT(self);
    bps_flow_state state;
    bps_status status = bps_stream_flow_state(self->stream, &state);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    return flow_state_object((int)state);
}

PyDoc_STRVAR(stream_on_flow_change_doc,
"on_flow_change($self, callback, /)\n"
"--\n"
"\n"
"Call callback(old, new, fill) once per flow transition (old and new are\n"
"bpstream.FlowState, fill is depth / capacity after it), in order, never while the\n"
"stream's lock is held: it may call back into the stream. It runs on the thread whose\n"
"call made the transition (a native producer's too, with the GIL taken for it). An\n"
"exception in it is reported (sys.unraisablehook) and never breaks the put.\n"
"Returns a handle whose remove() ends the registration; the stream keeps it until then.");

static PyObject *
stream_on_flow_change(StreamObject *self, PyObject *callback)
{
    CHECK_INIT(self);
    if (!PyCallable_Check(callback)) {
        PyErr_Format(PyExc_TypeError, "callback must be callable, not %.100s",
                     Py_TYPE(callback)->tp_name);
        return NULL;
    }
    if (self->flow_listeners == NULL && (self->flow_listeners = PyList_New(0)) == NULL) {
        return NULL;
    }
    PyObject *flow = flow_module();
    if (flow == NULL) {
        return NULL;
    }
    flow_registration *reg = PyMem_Malloc(sizeof(*reg));
    flow_context *ctx = PyMem_RawMalloc(sizeof(*ctx));
    if (reg == NULL || ctx == NULL) {
        PyMem_Free(reg);
        PyMem_RawFree(ctx);
        Py_DECREF(flow);
        return PyErr_NoMemory();
    }
    ctx->callback = Py_NewRef(callback);
    reg->ctx = ctx;
    reg->listener = NULL;
    bps_status status = bps_stream_on_flow_change(self->stream, flow_callback, flow_context_release,
                                                  ctx, &reg->listener);
    if (status != BPS_OK) {
        Py_DECREF(ctx->callback);
        PyMem_RawFree(ctx);
        PyMem_Free(reg);
        Py_DECREF(flow);
        return stream_error(self, status);
    }
    PyObject *capsule = PyCapsule_New(reg, FLOW_CAPSULE, flow_capsule_destroy);
    if (capsule == NULL) {
        flow_registration_remove(reg);
        PyMem_Free(reg);
        Py_DECREF(flow);
        return NULL;
    }
    PyObject *handle = NULL;
    if (PyList_Append(self->flow_listeners, capsule) == 0) {
        handle = PyObject_CallMethod(flow, "FlowListener", "OO", (PyObject *)self, capsule);
    }
    if (handle == NULL) {   /* ends the registration: the capsule's destructor removes it */
        flow_registration_remove(reg);
    }
    Py_DECREF(capsule);
    Py_DECREF(flow);
    return handle;
}

static PyObject *
stream_remove_flow_listener(StreamObject *self, PyObject *capsule)
{
    CHECK_INIT(self);
    flow_registration *reg = PyCapsule_GetPointer(capsule, FLOW_CAPSULE);
    if (reg == NULL) {
        return NULL;
    }
    flow_registration_remove(reg);
    if (self->flow_listeners != NULL) {
        Py_ssize_t i = PySequence_Index(self->flow_listeners, capsule);
        if (i >= 0) {
            if (PySequence_DelItem(self->flow_listeners, i) < 0) {
                return NULL;
            }
        }
        else {
            PyErr_Clear();   /* removed before */
        }
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stream_health_doc,
"health($self, /, warning=0.1, unhealthy=0.3)\n"
"--\n"
"\n"
"Return a bpstream.Health: status 'healthy' (drop rate below warning), 'warning'\n"
"(warning <= drop rate <= unhealthy) or 'unhealthy' (above), the drop rate\n"
"(dropped / produced, 0 when nothing was produced), the recent drop rate (over the\n"
"stats' recent window, about a second) and a Recommendation(action, reason, suggestion).");

static PyObject *
stream_health(StreamObject *self, PyObject *args, PyObject *kwds)
{
    CHECK_INIT(self);
    PyObject *flow = flow_module();
    if (flow == NULL) {
        return NULL;
    }
    PyObject *health = PyObject_GetAttrString(flow, "_health");
    Py_DECREF(flow);
    if (health == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *full = PyTuple_New(n + 1);
    if (full == NULL) {
        Py_DECREF(health);
        return NULL;
    }
    PyTuple_SET_ITEM(full, 0, Py_NewRef((PyObject *)self));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(full, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    }
    PyObject *result = PyObject_Call(health, full, kwds);
    Py_DECREF(full);
    Py_DECREF(health);
    return result;
}

static PyMethodDef stream_methods[] = {
    {"_start_reader", (PyCFunction)(void (*)(void))stream_start_reader, METH_FASTCALL,
     stream_start_reader_doc},
    {"put", (PyCFunction)(void (*)(void))stream_put, METH_FASTCALL | METH_KEYWORDS,
     stream_put_doc},
    {"put_nowait", (PyCFunction)stream_put_nowait, METH_O, stream_put_nowait_doc},
    {"get", (PyCFunction)(void (*)(void))stream_get, METH_FASTCALL | METH_KEYWORDS,
     stream_get_doc},
    {"get_nowait", (PyCFunction)stream_get_nowait, METH_NOARGS, stream_get_nowait_doc},
    {"put_many", (PyCFunction)(void (*)(void))stream_put_many,
     METH_FASTCALL | METH_KEYWORDS, stream_put_many_doc},
    {"get_many", (PyCFunction)(void (*)(void))stream_get_many,
     METH_FASTCALL | METH_KEYWORDS, stream_get_many_doc},
    {"close", (PyCFunction)(void (*)(void))stream_close, METH_FASTCALL | METH_KEYWORDS,
     stream_close_doc},
    {"stats", (PyCFunction)stream_stats, METH_NOARGS, stream_stats_doc},
    {"on_flow_change", (PyCFunction)stream_on_flow_change, METH_O, stream_on_flow_change_doc},
    {"_remove_flow_listener", (PyCFunction)stream_remove_flow_listener, METH_O, NULL},
    {"health", (PyCFunction)(void (*)(void))stream_health, METH_VARARGS | METH_KEYWORDS,
     stream_health_doc},
    {"__enter__", (PyCFunction)stream_enter, METH_NOARGS, stream_enter_doc},
    {"aget", (PyCFunction)(void (*)(void))stream_aget, METH_FASTCALL | METH_KEYWORDS,
     stream_aget_doc},
    {"aput", (PyCFunction)(void (*)(void))stream_aput, METH_FASTCALL | METH_KEYWORDS,
     stream_aput_doc},
    {"aget_many", (PyCFunction)(void (*)(void))stream_aget_many,
     METH_FASTCALL | METH_KEYWORDS, stream_aget_many_doc},
    {"aput_many", (PyCFunction)(void (*)(void))stream_aput_many,
     METH_FASTCALL | METH_KEYWORDS, stream_aput_many_doc},
    {"__aenter__", (PyCFunction)stream_aenter, METH_NOARGS,
     PyDoc_STR("Coroutine: returns the stream.")},
    {"__aexit__", (PyCFunction)(void (*)(void))stream_aexit, METH_FASTCALL,
     PyDoc_STR("Coroutine: closes the stream (draining), like __exit__.")},
    {"_try_put", (PyCFunction)stream_try_put, METH_O, NULL},
    {"_flow_gate", (PyCFunction)stream_flow_gate, METH_NOARGS, NULL},
    {"_flow_gave_up", (PyCFunction)stream_flow_gave_up, METH_NOARGS, NULL},
    {"_account", (PyCFunction)(void (*)(void))stream_account, METH_FASTCALL, NULL},
    {"_watch", (PyCFunction)stream_watch, METH_O, NULL},
    {"_close_with_error", (PyCFunction)stream_close_with_error, METH_O,
     stream_close_with_error_doc},
    {"__exit__", (PyCFunction)(void (*)(void))stream_exit, METH_FASTCALL, stream_exit_doc},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     PyDoc_STR("See PEP 585")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stream_getset[] = {
    {"flow_state", (getter)stream_get_flow_state, NULL,
     PyDoc_STR("The flow state now (a bpstream.FlowState)."), NULL},
    {"closed", (getter)stream_get_closed, NULL,
     PyDoc_STR("True once close() has been called."), NULL},
    {"capacity", (getter)stream_get_capacity, NULL,
     PyDoc_STR("The most items the stream buffers (None: unbounded). Read-only."), NULL},
    {"policy", (getter)stream_get_policy, NULL,
     PyDoc_STR("What a full stream does with the next put (a bpstream.Policy)."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef stream_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(StreamObject, weakreflist), Py_READONLY,
     NULL},
    {"_async_waiters", Py_T_OBJECT, offsetof(StreamObject, async_waiters), 0,
     "bpstream._aio's waiters of this stream, per event loop (internal)."},
    {"_async_flow", Py_T_INT, offsetof(StreamObject, async_flow), Py_READONLY,
     "ASYNC_FLOW_* bits: what an asyncio put passes itself (internal)."},
    {"_pacing", Py_T_OBJECT, offsetof(StreamObject, pacing), Py_READONLY,
     "The rate controller pacing puts, or None (internal)."},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(stream_doc,
"BoundedStream(capacity, policy='block', *, flow=None, rate=None, clock=None)\n"
"--\n"
"\n"
"A bounded, thread-safe FIFO stream with explicit backpressure.\n"
"\n"
"capacity is the most items it buffers (1 to 2**30). policy says what a put\n"
"into a full stream does: 'block' (wait for room), 'drop_oldest' (evict the\n"
"oldest item), 'drop_newest' (shed the new item), 'reject' (raise Full) or\n"
"'drop_all' (clear the backlog); a bpstream.Policy member works too.\n"
"flow, a bpstream.FlowControl, delays puts that may wait while the stream is\n"
"THROTTLED and holds them while PAUSED (see flow_state, on_flow_change, health).\n"
"rate (TokenBucket, SlidingWindow, AIMD) paces every put that may wait (one permit\n"
"per item; a put that may not wait takes one if it is there, else raises Full).\n"
"policy='adaptive' blocks and is paced by an AIMD the stream drives itself (rate, or\n"
"AIMD(1000, increase=100, window=0.1)). clock (a ManualClock) times time_paused.\n"
"\n"
"Iterating yields items like get() until the stream is closed and drained;\n"
"`with BoundedStream(n) as s:` closes it on exit. len() is the current depth.\n"
"Blocking calls release the GIL while they wait and stay responsive to Ctrl-C.");

static PyType_Slot stream_slots[] = {
    {Py_tp_doc, (void *)stream_doc},
    {Py_tp_new, stream_new},
    {Py_tp_init, stream_init},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_clear},
    {Py_tp_repr, stream_repr},
    {Py_tp_iter, stream_iter},
    {Py_am_aiter, stream_iter},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {Py_tp_members, stream_members},
    {Py_sq_length, stream_len},
    {0, NULL},
};

PyType_Spec stream_spec = {
    .name = "bpstream.BoundedStream",
    .basicsize = sizeof(StreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = stream_slots,
};

/* ------------------------------------------------------------------------- */
/* Stats                                                                     */
/* ------------------------------------------------------------------------- */

static PyStructSequence_Field stats_fields[] = {
    {"produced", "items handed over by a successful put, shed ones included"},
    {"consumed", "items taken out by get"},
    {"dropped", "dropped_shed + dropped_evicted + dropped_cleared + dropped_on_close"},
    {"dropped_shed", "items shed on arrival (drop_newest)"},
    {"dropped_evicted", "items evicted from the front (drop_oldest)"},
    {"dropped_cleared", "items cleared with the backlog (drop_all)"},
    {"dropped_on_close", "items discarded by an immediate close"},
    {"rejected", "puts that failed: reject policy, timeout, non-blocking put"},
    {"depth", "items buffered now"},
    {"peak_depth", "the most items ever buffered at once"},
    {"capacity", "current capacity, or None if unbounded"},
    {"backpressure_events", "puts that had to wait, or that shed/evicted/cleared"},
    {"producer_waits", "puts that had to wait"},
    {"consumer_waits", "gets that had to wait"},
    {"producer_wait_seconds", "total time producers spent waiting"},
    {"consumer_wait_seconds", "total time consumers spent waiting"},
    {"unfinished_tasks", "items put and not yet marked done (task_done)"},
    {"produced_per_second", "put rate over the recent window"},
    {"consumed_per_second", "get rate over the recent window"},
    {"window_seconds", "the span the two rates cover (about 1 s)"},
    {"closed", "True once closed"},
    {"flow_state", "the flow state now (a bpstream.FlowState)"},
    {"throttle_events", "transitions NORMAL -> THROTTLED"},
    {"pause_events", "transitions from NORMAL or THROTTLED to PAUSED or DROPPING"},
    {"time_paused", "seconds spent in PAUSED or DROPPING, the current spell included"},
    {"throttle_delay", "seconds a put that may wait is delayed now (0 outside THROTTLED)"},
    {"rate_limit", "the rate controller's limit in items per second, or None"},
    {"recent_drop_rate", "dropped / produced over the recent window"},
    {NULL, NULL},
};

PyDoc_STRVAR(stats_doc,
"A snapshot of a stream's counters (BoundedStream.stats()).\n"
"\n"
"Identities: produced == consumed + dropped + depth and\n"
"dropped == dropped_shed + dropped_evicted + dropped_cleared + dropped_on_close.");

PyStructSequence_Desc stats_desc = {
    "bpstream.Stats",
    stats_doc,
    stats_fields,
    (int)(sizeof(stats_fields) / sizeof(stats_fields[0])) - 1,
};
