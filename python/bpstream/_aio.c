/*
 * _aio.c — asyncio on a BoundedStream: the half that must be C.
 *
 * A coroutine call (`await stream.aget()`) first tries the non-blocking call here, with
 * the GIL. When an item (or room) is there it returns a Ready awaitable that is already
 * done: the `await` completes without suspending, scheduling nothing on the loop, with no
 * Task, Future or system call. Only when the call would wait does it hand over to the
 * waiting half, bpstream/_aio.py (Futures, per-loop waiter lists, timeouts).
 *
 * WAKE-UPS (native threads included, no GIL)
 *  - Each event loop has one _Waker: an eventfd the loop watches (loop.add_reader).
 *  - Each (stream, loop) pair with waiting tasks has one _Watch: a core readiness watch
 *    (bpstream.h) whose notify() runs on whichever thread made an armed readiness true,
 *    possibly a native producer holding no GIL. notify() touches no Python object: it ORs
 *    the events into the watch's `pending` word and writes the eventfd, only if the waker
 *    is not already signalled (so a burst costs one write). The loop's reader callback
 *    (_aio.py) drains the eventfd, clears `signalled`, then takes each watch's pending
 *    events and wakes the waiting futures.
 *  - A watch is armed only while a task waits (one-shot, re-armed by _aio.py), so a busy
 *    stream whose consumer keeps up makes no system call at all.
 *  - Same-thread wake-ups: a notify that runs on the thread that created the waker (the
 *    loop's own thread: a task's put freeing a waiting getter) also sets a thread-local
 *    flag. bpstream.AsyncQueue's calls test it (_Waker.take_due) and, when set, dispatch
 *    the running loop's waiters at once, so a woken task runs in the same loop iteration
 *    as with asyncio.Queue (whose tests count iterations). The eventfd is written anyway:
 *    a caller that does not test the flag (stream.aput) wakes its waiters one iteration
 *    later, never not at all.
 *  - Ordering: notify does `pending |= events` THEN `exchange(signalled, 1)`; the loop does
 *    read(eventfd), `signalled = 0`, THEN `exchange(pending, 0)` (all sequentially
 *    consistent). A notify either sees `signalled` still set, and then its events are
 *    already in `pending` for the loop's exchange, or writes the eventfd again.
 *
 * OWNERSHIP
 *  - waker_core (the eventfd, the flag) is reference counted (atomically): one reference
 *    for the _Waker object, one per watch context. The last release closes the eventfd,
 *    so a notify in flight on a native thread never writes to a closed or reused fd.
 *  - watch_ctx belongs to the core watch: bps_stream_watch's release_context frees it
 *    once the watch is released AND no notify is running.
 */
#include "_bpstream.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ------------------------------------------------------------------------- */
/* Ready: an awaitable that is already done                                  */
/* ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *value;       /* the result (strong), or NULL when `error` is set */
    PyObject *error;       /* an exception instance to raise (strong), or NULL */
} ReadyObject;

// Steals value (a new reference; NULL: an exception is set, returned as NULL).
//
// The module keeps one Ready and hands it out again whenever the cache holds the only
// reference to it: a loop of `await s.aput(x)` or an `async for` then allocates nothing
// per item. Reusing it is safe because nobody else can reach it (a Ready another caller
// still holds is never reused: a fresh one is made). GIL held.
PyObject *
ready_new(module_state *st, PyObject *value)
{
    if (value == NULL) {
        return NULL;
    }
    ReadyObject *cached = (ReadyObject *)st->ready_cache;
    if (cached != NULL && Py_REFCNT(cached) == 1) {
        PyObject *old_value = cached->value, *old_error = cached->error;
        cached->value = value;
        cached->error = NULL;
        Py_XDECREF(old_value);   /* a Ready dropped unawaited: after the swap, as it may */
        Py_XDECREF(old_error);   /* run code that calls ready_new again */
        return Py_NewRef((PyObject *)cached);
    }
    ReadyObject *ready = PyObject_New(ReadyObject, st->ready_type);
    if (ready == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    ready->value = value;
    ready->error = NULL;
    if (cached == NULL) {
        st->ready_cache = Py_NewRef((PyObject *)ready);
    }
    return (PyObject *)ready;
}

// Takes the exception being raised into a Ready that raises it when awaited: coroutine
// calls raise at their await, not at the call. Returns a new reference, or NULL.
PyObject *
ready_from_error(module_state *st)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(traceback);
        PyErr_SetString(PyExc_SystemError, "bpstream: no exception to defer");
        return NULL;
    }
    if (traceback != NULL) {
        PyException_SetTraceback(value, traceback);
        Py_DECREF(traceback);
    }
    Py_DECREF(type);
    ReadyObject *ready = PyObject_New(ReadyObject, st->ready_type);
    if (ready == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    ready->value = NULL;
    ready->error = value;
    return (PyObject *)ready;
}

static void
ready_dealloc(ReadyObject *ready)
{
    PyTypeObject *tp = Py_TYPE(ready);
    Py_XDECREF(ready->value);
    Py_XDECREF(ready->error);
    PyObject_Free(ready);
    Py_DECREF(tp);
}

/* The one step of this "coroutine": return the value (PYGEN_RETURN) or raise. Each Ready
 * is awaited once: a second await returns None. */
static PySendResult
ready_am_send(ReadyObject *ready, PyObject *arg, PyObject **result)
{
    (void)arg;
    if (ready->error != NULL) {
        PyObject *error = ready->error;
        ready->error = NULL;
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
        *result = NULL;
        return PYGEN_ERROR;
    }
    *result = ready->value != NULL ? ready->value : Py_NewRef(Py_None);
    ready->value = NULL;
    return PYGEN_RETURN;
}

// tp_iternext and send(): raise StopIteration(value) (a value that is itself a tuple or
// an exception is wrapped, as generators do). Returns NULL always.
static PyObject *
ready_next(ReadyObject *ready)
{
    PyObject *result;
    if (ready_am_send(ready, Py_None, &result) == PYGEN_ERROR) {
        return NULL;
    }
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
    Py_DECREF(result);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

static PyObject *
ready_send(ReadyObject *ready, PyObject *arg)
{
    (void)arg;
    return ready_next(ready);
}

static PyObject *
ready_throw(ReadyObject *ready, PyObject *const *args, Py_ssize_t nargs)
{
    (void)ready;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    PyObject *type = args[0], *value = nargs > 1 ? args[1] : Py_None;
    if (PyExceptionInstance_Check(type)) {
        PyErr_SetObject((PyObject *)Py_TYPE(type), type);
    }
    else {
        PyErr_SetObject(type, value);
    }
    return NULL;
}

static PyObject *
ready_close(ReadyObject *ready, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(ready->value);
    Py_CLEAR(ready->error);
    Py_RETURN_NONE;
}

static PyMethodDef ready_methods[] = {
    {"send", (PyCFunction)ready_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))ready_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)ready_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ready_slots[] = {
    {Py_tp_doc, (void *)"An awaitable whose result is already there (bpstream's fast path)."},
    {Py_tp_dealloc, ready_dealloc},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, ready_next},
    {Py_am_await, PyObject_SelfIter},
    {Py_am_send, ready_am_send},
    {Py_tp_methods, ready_methods},
    {0, NULL},
};

static PyType_Spec ready_spec = {
    .name = "bpstream._bpstream._Ready",
    .basicsize = sizeof(ReadyObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ready_slots,
};

/* ------------------------------------------------------------------------- */
/* _Waker: one event loop's eventfd                                          */
/* ------------------------------------------------------------------------- */

typedef struct {
    atomic_long refs;
    int fd;                /* eventfd, nonblocking, close-on-exec */
    atomic_int signalled;  /* 1 from a notify's write until the loop drains */
    pthread_t owner;       /* the thread that created it: the loop's (see Same-thread) */
} waker_core;

/* Set by a notify on a waker's owner thread; read and cleared by _Waker.take_due(). */
static _Thread_local int notified_here;

/* Wakes the loop: writes the eventfd unless already signalled (a burst costs one write).
 * Any thread, no GIL; see WAKE-UPS at the top for the ordering. */
static void
waker_core_signal(waker_core *core)
{
    if (!atomic_exchange(&core->signalled, 1)) {
        uint64_t one = 1;
        (void)!write(core->fd, &one, sizeof(one));
    }
}

static void
waker_core_release(waker_core *core)
{
    if (atomic_fetch_sub(&core->refs, 1) == 1) {
        close(core->fd);
        free(core);
    }
}

typedef struct {
    PyObject_HEAD
    waker_core *core;      /* one reference */
} WakerObject;

static PyObject *
waker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "_Waker() takes no arguments");
        return NULL;
    }
    waker_core *core = malloc(sizeof(waker_core));
    if (core == NULL) {
        return PyErr_NoMemory();
    }
    core->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (core->fd < 0) {
        free(core);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    atomic_init(&core->refs, 1);
    atomic_init(&core->signalled, 0);
    core->owner = pthread_self();
    WakerObject *self = (WakerObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        waker_core_release(core);
        return NULL;
    }
    self->core = core;
    return (PyObject *)self;
}

static void
waker_dealloc(WakerObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->core != NULL) {
        waker_core_release(self->core);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
waker_fileno(WakerObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(self->core->fd);
}

/* The loop's reader callback calls this first: empties the eventfd, then clears the flag
 * (see WAKE-UPS at the top for why in this order). */
static PyObject *
waker_drain(WakerObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t count;
    while (read(self->core->fd, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    atomic_store(&self->core->signalled, 0);
    Py_RETURN_NONE;
}

/* For tests and for a loop without add_reader: what a notify from another thread does. */
static PyObject *
waker_signal(WakerObject *self, PyObject *Py_UNUSED(ignored))
{
    waker_core_signal(self->core);
    Py_RETURN_NONE;
}

/* _Waker.take_due(): whether a notify ran on this thread for a waker it owns since the
 * last call (and clear). A thread-local int: no lock, no atomic. */
static PyObject *
waker_take_due(PyObject *Py_UNUSED(cls), PyObject *Py_UNUSED(ignored))
{
    if (notified_here) {
        notified_here = 0;
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyMethodDef waker_methods[] = {
    {"take_due", (PyCFunction)waker_take_due, METH_NOARGS | METH_STATIC,
     PyDoc_STR("take_due() -> whether a notify ran on this thread for a loop it runs "
               "(then clear).")},
    {"fileno", (PyCFunction)waker_fileno, METH_NOARGS, PyDoc_STR("The eventfd the loop watches.")},
    {"drain", (PyCFunction)waker_drain, METH_NOARGS,
     PyDoc_STR("Empty the eventfd and clear the signalled flag (the loop's callback).")},
    {"signal", (PyCFunction)waker_signal, METH_NOARGS,
     PyDoc_STR("Wake the loop (as a notify would): write the eventfd unless signalled.")},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot waker_slots[] = {
    {Py_tp_doc, (void *)"_Waker(): an event loop's eventfd, written by native threads."},
    {Py_tp_new, waker_new},
    {Py_tp_dealloc, waker_dealloc},
    {Py_tp_methods, waker_methods},
    {0, NULL},
};

static PyType_Spec waker_spec = {
    .name = "bpstream._bpstream._Waker",
    .basicsize = sizeof(WakerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = waker_slots,
};

/* ------------------------------------------------------------------------- */
/* _Watch: one stream's readiness watch for one loop                         */
/* ------------------------------------------------------------------------- */

typedef struct {
    waker_core *core;      /* one reference */
    atomic_uint pending;   /* events notified and not yet taken by the loop */
} watch_ctx;

/* bps_notify_fn for stream watches and rate/limiter tickets alike: any thread, no GIL,
 * never blocks, touches no Python object. */
void
aio_notify(void *context, uint32_t events)
{
    watch_ctx *ctx = (watch_ctx *)context;
    atomic_fetch_or(&ctx->pending, events);
    if (pthread_equal(pthread_self(), ctx->core->owner)) {
        notified_here = 1;
    }
    waker_core_signal(ctx->core);
}

/* bps_context_release_fn: once the watch (or ticket) is released and no notify runs. */
void
aio_notify_context_release(void *context)
{
    watch_ctx *ctx = (watch_ctx *)context;
    waker_core_release(ctx->core);
    free(ctx);
}

/* The same context for other core wait registrations (rate and limiter tickets, _rate.c):
 * notify = aio_notify, release_context = aio_notify_context_release. */
void *
aio_notify_context_new(module_state *st, PyObject *waker)
{
    if (!PyObject_TypeCheck(waker, st->waker_type)) {
        PyErr_Format(PyExc_TypeError, "expected a _Waker, not %.100s", Py_TYPE(waker)->tp_name);
        return NULL;
    }
    watch_ctx *ctx = malloc(sizeof(watch_ctx));
    if (ctx == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    ctx->core = ((WakerObject *)waker)->core;
    atomic_fetch_add(&ctx->core->refs, 1);
    atomic_init(&ctx->pending, 0);
    return ctx;
}

uint32_t
aio_notify_take_pending(void *context)
{
    return atomic_exchange(&((watch_ctx *)context)->pending, 0);
}

typedef struct {
    PyObject_HEAD
    bps_watch *watch;      /* ours until close(); NULL after */
    watch_ctx *ctx;        /* borrowed from the watch: valid while `watch` is */
} WatchObject;

PyObject *
stream_watch(StreamObject *self, PyObject *waker)
{
    CHECK_INIT(self);
    watch_ctx *ctx = aio_notify_context_new(self->state, waker);
    if (ctx == NULL) {
        return NULL;
    }
    WatchObject *watch = PyObject_New(WatchObject, self->state->watch_type);
    if (watch == NULL) {
        aio_notify_context_release(ctx);
        return NULL;
    }
    watch->ctx = ctx;
    bps_status status = bps_stream_watch(self->stream, aio_notify, aio_notify_context_release, ctx,
                                         &watch->watch);
    if (status != BPS_OK) {
        watch->watch = NULL;
        Py_DECREF(watch);
        aio_notify_context_release(ctx);
        return set_error(self->state, status);
    }
    return (PyObject *)watch;
}

static void
watch_close_now(WatchObject *watch)
{
    if (watch->watch != NULL) {
        (void)bps_watch_release(watch->watch);   /* frees ctx, now or after a notify */
        watch->watch = NULL;
        watch->ctx = NULL;
    }
}

static void
watch_dealloc(WatchObject *watch)
{
    PyTypeObject *tp = Py_TYPE(watch);
    watch_close_now(watch);
    PyObject_Free(watch);
    Py_DECREF(tp);
}

static PyObject *
watch_arm(WatchObject *watch, PyObject *arg)
{
    unsigned long events = PyLong_AsUnsignedLong(arg);
    if (events == (unsigned long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (watch->watch == NULL) {   /* closed: ready for everything, so waiters retry */
        return PyLong_FromUnsignedLong(events | BPS_WATCH_CLOSED);
    }
    uint32_t ready = 0;
    bps_status status = bps_watch_arm(watch->watch, (uint32_t)events, &ready);
    if (status != BPS_OK) {
        PyErr_Format(PyExc_ValueError, "bad events %lu", events);
        return NULL;
    }
    return PyLong_FromUnsignedLong(ready);
}

static PyObject *
watch_take_pending(WatchObject *watch, PyObject *Py_UNUSED(ignored))
{
    if (watch->ctx == NULL) {
        return PyLong_FromLong(0);
    }
    return PyLong_FromUnsignedLong(atomic_exchange(&watch->ctx->pending, 0));
}

static PyObject *
watch_close(WatchObject *watch, PyObject *Py_UNUSED(ignored))
{
    watch_close_now(watch);
    Py_RETURN_NONE;
}

static PyMethodDef watch_methods[] = {
    {"arm", (PyCFunction)watch_arm, METH_O,
     PyDoc_STR("arm(events) -> the events that hold now (nothing armed), or 0 once armed.")},
    {"take_pending", (PyCFunction)watch_take_pending, METH_NOARGS,
     PyDoc_STR("The events notified since the last call (and clear them).")},
    {"close", (PyCFunction)watch_close, METH_NOARGS, PyDoc_STR("Release the watch.")},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot watch_slots[] = {
    {Py_tp_doc, (void *)"A stream's readiness watch for one event loop (stream._watch(waker))."},
    {Py_tp_dealloc, watch_dealloc},
    {Py_tp_methods, watch_methods},
    {0, NULL},
};

static PyType_Spec watch_spec = {
    .name = "bpstream._bpstream._Watch",
    .basicsize = sizeof(WatchObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = watch_slots,
};

/* ------------------------------------------------------------------------- */
/* The stream's async methods                                                */
/* ------------------------------------------------------------------------- */

// bpstream._aio.<name>(*args): the waiting half. Returns a new reference (a coroutine).
static PyObject *
call_aio(module_state *st, const char *name, PyObject *const *args, size_t nargs)
{
    if (st->aio == NULL) {
        st->aio = PyImport_ImportModule("bpstream._aio");
        if (st->aio == NULL) {
            return NULL;
        }
    }
    PyObject *function = PyObject_GetAttrString(st->aio, name);
    if (function == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_Vectorcall(function, args, nargs, NULL);
    Py_DECREF(function);
    return result;
}

const char stream_aget_doc[] =
"aget($self, /, timeout=None)\n"
"--\n"
"\n"
"Coroutine: remove and return the oldest item, like get(), but waiting suspends\n"
"the task, not the thread. Raises Empty when the timeout passes, Closed once\n"
"closed and drained. Cancelled while waiting, it takes nothing.";

PyObject *
stream_aget(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    static const arg_spec spec = {"aget", names, 1, 0, 1, 0};
    PyObject *argv[1] = {NULL};
    int64_t timeout_ns = -1;
    CHECK_INIT(self);
    if ((nargs != 0 || kwnames != NULL)
        && (parse_args(&spec, args, nargs, kwnames, argv) < 0
            || timeout_to_ns(argv[0], &timeout_ns) < 0)) {
        return NULL;
    }
    bps_status status;
    PyObject *item = take_next(self, 0, &status);
    if (item != NULL) {
        return ready_new(self->state, item);   /* the fast path */
    }
    if (status == BPS_EMPTY && timeout_ns != 0) {
        PyObject *call[2] = {(PyObject *)self, argv[0] != NULL ? argv[0] : Py_None};
        return call_aio(self->state, "aget_wait", call, 2);
    }
    if (status != BPS_OK) {
        stream_error(self, status);
    }
    return ready_from_error(self->state);
}

/* Whether an aput that may wait on a flow-controlled or paced stream takes the slow path
 * (_aio.py's aput_flow, which waits for the permit and in the gate itself). Not when the
 * put passes both now: paced, a permit is there (taken: *permitted = 1; the rate's own
 * no-barging rule refuses while others wait), and gated, the gate answers NORMAL. Taken
 * permits go with the put to the slow path (*permitted) if the gate then holds it. An
 * error: the slow path reports it. */
static int
async_flow_slow(StreamObject *self, int *permitted)
{
    if (self->async_flow & ASYNC_FLOW_PACED) {
        bps_rate *rate = self->pacing != NULL ? bpstream_rate_handle(self->pacing) : NULL;
        if (rate == NULL) {
            PyErr_Clear();
            return 1;
        }
        if (bps_rate_try_acquire_before_wait(rate, 1) != BPS_OK) {
            return 1;   /* refused, uncounted: aput_flow waits for it */
        }
        *permitted = 1;
    }
    if (!(self->async_flow & ASYNC_FLOW_GATED)) {
        return 0;
    }
    bps_flow_state state;
    int64_t delay_ns;
    return bps_stream_flow_gate(self->stream, &state, &delay_ns) != BPS_OK
           || state != BPS_FLOW_NORMAL;
}

/* _flow_gate(): (state, delay_ns), what the flow gate does to a put arriving now
 * (bps_stream_flow_gate). */
PyObject *
stream_flow_gate(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_INIT(self);
    bps_flow_state state;
    int64_t delay_ns;
    bps_status status = bps_stream_flow_gate(self->stream, &state, &delay_ns);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    return Py_BuildValue("(iL)", (int)state, (long long)delay_ns);
}

/* _flow_gave_up(): an asyncio put gave up in the flow gate or on the rate (rejected). */
PyObject *
stream_flow_gave_up(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_INIT(self);
    bps_status status = bps_stream_flow_gave_up(self->stream);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    Py_RETURN_NONE;
}

const char stream_aput_doc[] =
"aput($self, item, /, timeout=None)\n"
"--\n"
"\n"
"Coroutine: put item like put(), but waiting for room suspends the task, not the\n"
"thread. Returns True if stored, False if shed (drop_newest); raises Full (reject,\n"
"or the timeout passed) and Closed. Cancelled while waiting, it stores nothing.\n"
"With flow= or a rate (or policy 'adaptive') it is delayed and paced like put(),\n"
"suspending the task; timeout 0 is never delayed.";

PyObject *
stream_aput(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"item", "timeout"};
    static const arg_spec spec = {"aput", names, 2, 1, 2, 1};
    PyObject *argv[2] = {NULL, NULL};
    int64_t timeout_ns = -1;
    CHECK_INIT(self);
    if (nargs == 1 && kwnames == NULL) {
        argv[0] = args[0];
    }
    else if (parse_args(&spec, args, nargs, kwnames, argv) < 0
             || timeout_to_ns(argv[1], &timeout_ns) < 0) {
        return NULL;
    }
    PyObject *item = argv[0];
    if (self->async_flow != 0 && timeout_ns != 0) {
        int permitted = 0;
        if (async_flow_slow(self, &permitted)) {
            PyObject *call[4] = {(PyObject *)self, item, argv[1] != NULL ? argv[1] : Py_None,
                                 permitted ? Py_True : Py_False};
            return call_aio(self->state, "aput_flow", call, 4);
        }
        /* Passed (a permit taken, if paced, and the gate NORMAL): the usual put. A full
         * block stream now hands over to aput_flow with the permit, for the wait for room
         * and an adaptive stream's feedback. */
        Py_INCREF(item);
        bps_status status = bps_stream_try_put(self->stream, item);
        if (status != BPS_OK) {
            Py_DECREF(item);
        }
        if (status == BPS_OK || status == BPS_SHED) {
            return ready_new(self->state, Py_NewRef(status == BPS_OK ? Py_True : Py_False));
        }
        if (status == BPS_FULL
            && (self->policy == BPS_POLICY_BLOCK || self->policy == BPS_POLICY_ADAPTIVE)) {
            PyObject *call[4] = {(PyObject *)self, item, argv[1] != NULL ? argv[1] : Py_None,
                                 permitted ? Py_True : Py_False};
            return call_aio(self->state, "aput_flow", call, 4);
        }
        stream_error(self, status);
        return ready_from_error(self->state);
    }
    bps_status status;
    if (timeout_ns == 0) {
        status = do_put(self, item, 0);   /* put_nowait: never delayed; a paced stream's
                                           * takes a permit only if one is there */
    }
    else {
        Py_INCREF(item);   /* the stream's reference, if it takes the item */
        status = bps_stream_try_put(self->stream, item);
        if (status != BPS_OK) {
            Py_DECREF(item);
        }
    }
    if (status == BPS_OK || status == BPS_SHED) {   /* the fast path */
        return ready_new(self->state, Py_NewRef(status == BPS_OK ? Py_True : Py_False));
    }
    if (status == BPS_FULL && timeout_ns != 0
        && (self->policy == BPS_POLICY_BLOCK || self->policy == BPS_POLICY_ADAPTIVE)) {
        PyObject *call[3] = {(PyObject *)self, item, argv[1] != NULL ? argv[1] : Py_None};
        return call_aio(self->state, "aput_wait", call, 3);
    }
    stream_error(self, status);
    return ready_from_error(self->state);
}

/* Queue._aqput(item): asyncio.Queue.put's awaitable: like aput(item) without a timeout,
 * but its result is None (stored or shed), as asyncio.Queue.put's. */
PyObject *
queue_aqput(StreamObject *self, PyObject *item)
{
    CHECK_INIT(self);
    Py_INCREF(item);   /* the stream's reference, if it takes the item */
    bps_status status = bps_stream_try_put(self->stream, item);
    if (status != BPS_OK) {
        Py_DECREF(item);
    }
    if (status == BPS_OK || status == BPS_SHED) {   /* the fast path */
        return ready_new(self->state, Py_NewRef(Py_None));
    }
    if (status == BPS_FULL
        && (self->policy == BPS_POLICY_BLOCK || self->policy == BPS_POLICY_ADAPTIVE)) {
        PyObject *call[2] = {(PyObject *)self, item};
        return call_aio(self->state, "aqput_wait", call, 2);
    }
    stream_error(self, status);
    return ready_from_error(self->state);
}

/* _try_put(item) for the waiting half's retries: True stored, False shed; raises Full
 * (a full block stream, NOT counted as rejected: the caller waits) or Closed. */
PyObject *
stream_try_put(StreamObject *self, PyObject *item)
{
    CHECK_INIT(self);
    Py_INCREF(item);
    bps_status status = bps_stream_try_put(self->stream, item);
    if (status != BPS_OK) {
        Py_DECREF(item);
    }
    if (status == BPS_OK || status == BPS_SHED) {
        return Py_NewRef(status == BPS_OK ? Py_True : Py_False);
    }
    return stream_error(self, status);
}

/* _account(what, waited_seconds): an async wait, for the stats (BPS_ASYNC_*). */
PyObject *
stream_account(StreamObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_INIT(self);
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_account(what, waited_seconds)");
        return NULL;
    }
    long what = PyLong_AsLong(args[0]);
    double seconds = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    bps_status status = bps_stream_account_async_wait(self->stream, (uint32_t)what,
                                                      (int64_t)(seconds * 1e9));
    if (status != BPS_OK) {
        return set_error(self->state, status);
    }
    Py_RETURN_NONE;
}

PyObject *
stream_aenter(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_INIT(self);
    return ready_new(self->state, Py_NewRef((PyObject *)self));
}

PyObject *
stream_aexit(StreamObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *result = stream_exit(self, args, nargs);
    return result != NULL ? ready_new(self->state, result) : ready_from_error(self->state);
}

/* `async for`: the iterator's __anext__. */
PyObject *
aio_anext(StreamObject *self)
{
    bps_status status;
    PyObject *item = take_next(self, 0, &status);
    if (item != NULL) {
        return ready_new(self->state, item);
    }
    if (status == BPS_EMPTY) {
        PyObject *call[1] = {(PyObject *)self};
        return call_aio(self->state, "anext_wait", call, 1);
    }
    if (status == BPS_CLOSED) {
        PyErr_SetNone(PyExc_StopAsyncIteration);
    }
    else if (status != BPS_OK) {
        stream_error(self, status);
    }
    return ready_from_error(self->state);
}

int
aio_init_types(PyObject *module, module_state *st)
{
    st->ready_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ready_spec, NULL);
    st->watch_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &watch_spec, NULL);
    st->waker_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &waker_spec, NULL);
    if (st->ready_type == NULL || st->watch_type == NULL || st->waker_type == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "_Waker", (PyObject *)st->waker_type) < 0) {
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Batches                                                                   */
/* ------------------------------------------------------------------------- */

const char stream_aget_many_doc[] =
"aget_many($self, /, max_items, timeout=None)\n"
"--\n"
"\n"
"Coroutine: like get_many(): wait (suspending the task) for at least one item,\n"
"then take up to max_items. Raises Empty when the timeout passes, Closed once\n"
"closed and drained. Cancelled while waiting, it takes nothing.";

PyObject *
stream_aget_many(StreamObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const names[] = {"max_items", "timeout"};
    static const arg_spec spec = {"aget_many", names, 2, 0, 2, 1};
    PyObject *argv[2] = {NULL, NULL};
    int64_t timeout_ns = -1;
    CHECK_INIT(self);
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0
        || timeout_to_ns(argv[1], &timeout_ns) < 0) {
        return NULL;
    }
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL) {
        return NULL;
    }
    PyObject *call_args[3] = {(PyObject *)self, argv[0], zero};
    PyObject *name = PyUnicode_FromString("get_many");
    PyObject *items = name == NULL ? NULL
        : PyObject_VectorcallMethod(name, call_args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_XDECREF(name);
    Py_DECREF(zero);
    if (items != NULL) {
        return ready_new(self->state, items);   /* the fast path */
    }
    if (timeout_ns != 0 && PyErr_ExceptionMatches(self->state->Empty)) {
        PyErr_Clear();
        PyObject *call[3] = {(PyObject *)self, argv[0], argv[1] != NULL ? argv[1] : Py_None};
        return call_aio(self->state, "aget_many_wait", call, 3);
    }
    if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_ValueError)) {
        return NULL;   /* a bad max_items: raised at the call, like a bad timeout */
    }
    return ready_from_error(self->state);
}

const char stream_aput_many_doc[] =
"aput_many($self, iterable, /, timeout=None)\n"
"--\n"
"\n"
"Coroutine: like put_many(): put every item in order, waiting for room by\n"
"suspending the task; return how many were stored. One timeout covers the whole\n"
"call; on failure the exception's `accepted` says how many were stored.";

PyObject *
stream_aput_many(StreamObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const names[] = {"iterable", "timeout"};
    static const arg_spec spec = {"aput_many", names, 2, 1, 2, 1};
    PyObject *argv[2] = {NULL, NULL};
    int64_t timeout_ns = -1;
    CHECK_INIT(self);
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0
        || timeout_to_ns(argv[1], &timeout_ns) < 0) {
        return NULL;
    }
    PyObject *call[3] = {(PyObject *)self, argv[0], argv[1] != NULL ? argv[1] : Py_None};
    return call_aio(self->state, "aput_many", call, 3);
}
