/*
 * _bpstream.c — the CPython binding of bpstream (bpstream._bpstream).
 *
 * Python objects in, C ABI (bpstream.h) calls, Python objects or exceptions out.
 * Modelled on CPython's Modules/_queuemodule.c: multi-phase init, a module state
 * holding the types and exceptions, heap types with GC and weakref support.
 *
 * ===========================================================================
 * OWNERSHIP (items are PyObject * put from Python, or byte frames put by native
 * producers: tagged pointers, bpstream.h; the stream stores both as void *)
 * ===========================================================================
 *  - The stream owns exactly one strong reference to every object it buffers.
 *  - put: we Py_INCREF the item, then bps_stream_put(). BPS_OK moves that reference
 *    into the stream; every other status (BPS_SHED included) leaves it with us and
 *    we Py_DECREF it at once (the caller's own reference keeps the item alive).
 *  - get: BPS_OK moves the stream's reference to us; an object is returned as is (a
 *    new reference, no refcount traffic); a frame becomes bytes and is freed
 *    (item_to_object). Read-ahead items are ours in the same way until delivered;
 *    a small delivered frame is freed with the rest of its batch (ahead_settle).
 *  - Items the stream drops on its own (evicted, cleared, discarded by an immediate
 *    close, left over when the stream is freed) come back through release_item(),
 *    which Py_DECREFs objects (frames: frees them) exactly once.
 *
 * GIL RULES
 *  - Every bps_ call is made WITH the GIL held. A call that must wait tells us
 *    through its bps_waiter hook: BEGIN releases the GIL, END takes it back, and
 *    POLL (main thread only, every 50 ms) takes it briefly to run signal handlers:
 *    a KeyboardInterrupt cancels the call (BPS_CANCELLED) and nothing moves.
 *  - THE RULE: a Python object is touched (Py_DECREF included) only by a thread that
 *    holds the GIL. The one place a thread without it may meet one is release_item(),
 *    which runs on the thread whose call dropped the item (bpstream.h): a native producer
 *    evicting or clearing objects, a native close or last release. There it takes the
 *    GIL with PyGILState_Ensure() (holds_gil() tells whether this thread already holds
 *    it), unless the interpreter is exiting: from then on no native thread touches a
 *    Python object, and what it drops is left to the exiting process (see "The process").
 *    Frames are freed without the GIL.
 *  - The read-ahead fields change only with the GIL held (refills never wait);
 *    ahead_deliver's atomic add on the core's delivery counter needs no lock.
 *    The core never calls it with its lock held, so taking the GIL there cannot
 *    deadlock against a thread that holds the GIL and waits for the stream's lock.
 *  - tp_traverse runs bps_stream_visit(), whose callback runs under the stream's
 *    lock; Py_VISIT never calls back into the stream, so that is safe.
 *
 * GC AND GIL-FREE GETTERS (why StreamObject.getters_waiting exists)
 *  A getter waiting with the GIL released takes its item out of the buffer before
 *  its END hook takes the GIL back. If the collector traversed the stream once with
 *  the item inside and once without it, it would see one reference vanish between
 *  its passes and could clear a live item. So while any getter of this stream waits
 *  without the GIL, tp_traverse reports no items: an unvisited reference only makes
 *  an item look reachable, which is always safe. The counter changes only with the
 *  GIL held, so it cannot change during a collection. Putters need no such care: an
 *  item appearing between passes is just an extra, unaccounted (external) reference.
 * ===========================================================================
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#if PY_VERSION_HEX < 0x030C0000
#  include <structmember.h>   /* T_PYSSIZET, READONLY */
#  define Py_T_PYSSIZET T_PYSSIZET
#  define Py_READONLY READONLY
#  define Py_T_OBJECT T_OBJECT
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bpstream.h"
#include "bpstream_capi.h"
#include "_bpstream.h"

/* Signals are checked this often while the main thread waits (Ctrl-C within 100 ms). */
#define MAIN_THREAD_POLL_NS ((int64_t)50 * 1000 * 1000)
/* Items moved per core call by get_many/put_many, in a buffer on the C stack. */
#define BATCH 256
#define NS_PER_SEC 1000000000LL

static const char *const policy_names[N_POLICIES] = {
    [BPS_POLICY_BLOCK] = "block",
    [BPS_POLICY_DROP_OLDEST] = "drop_oldest",
    [BPS_POLICY_DROP_NEWEST] = "drop_newest",
    [BPS_POLICY_REJECT] = "reject",
    [BPS_POLICY_DROP_ALL] = "drop_all",
};
static const char *const policy_member_names[N_POLICIES] = {
    [BPS_POLICY_BLOCK] = "BLOCK",
    [BPS_POLICY_DROP_OLDEST] = "DROP_OLDEST",
    [BPS_POLICY_DROP_NEWEST] = "DROP_NEWEST",
    [BPS_POLICY_REJECT] = "REJECT",
    [BPS_POLICY_DROP_ALL] = "DROP_ALL",
};

/* ------------------------------------------------------------------------- */
/* Module state and objects                                                  */
/* ------------------------------------------------------------------------- */

static struct PyModuleDef bpstream_module;

static inline module_state *
get_module_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* ------------------------------------------------------------------------- */
/* Errors: the one place a bps_status becomes a Python exception             */
/* ------------------------------------------------------------------------- */

/* Sets the exception for a failed call and returns NULL. For BPS_CANCELLED the
 * exception (usually KeyboardInterrupt) was already set by a signal handler. */
PyObject *
set_error(module_state *st, bps_status status)
{
    switch (status) {
    case BPS_FULL:
        PyErr_SetNone(st->Full);
        break;
    case BPS_EMPTY:
        PyErr_SetNone(st->Empty);
        break;
    case BPS_CLOSED:
        PyErr_SetNone(st->Closed);
        break;
    case BPS_CANCELLED:
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_SystemError,
                            "bpstream: wait cancelled without an exception set");
        }
        break;
    case BPS_TIMED_OUT:
        PyErr_SetNone(PyExc_TimeoutError);
        break;
    case BPS_INVALID_ARGUMENT:
        PyErr_SetString(PyExc_ValueError, "invalid argument");
        break;
    case BPS_INVALID_STATE:
        /* The core's only INVALID_STATE: task_done() beyond the unfinished count. */
        PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
        break;
    case BPS_NO_MEMORY:
        PyErr_NoMemory();
        break;
    case BPS_OS_ERROR:
        PyErr_SetFromErrno(PyExc_OSError);
        break;
    default:
        PyErr_Format(PyExc_SystemError, "bpstream: unexpected status %d (%s)",
                     (int)status, bps_status_string(status));
        break;
    }
    return NULL;
}

/* A Python producer's exception (_close_with_error): raised itself, with the traceback it
 * had when the producer failed (not one that grows with every get). Returns NULL. */
static PyObject *
raise_failure(StreamObject *self)
{
    PyObject *exc = PyTuple_GET_ITEM(self->failure, 0);
    PyObject *tb = PyTuple_GET_ITEM(self->failure, 1);
    (void)PyException_SetTraceback(exc, tb);
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    return NULL;
}

/* set_error for calls on a stream: BPS_FAILED becomes the producer's error, as
 * OSError(code, message) (the errno's subclass) or bpstream.ProducerError(message). */
PyObject *
stream_error(StreamObject *self, bps_status status)
{
    if (status != BPS_FAILED) {
        return set_error(self->state, status);
    }
    if (self->failure != NULL) {
        return raise_failure(self);
    }
    int32_t code = 0;
    char message[1024];
    size_t length = 0;
    if (bps_stream_failure(self->stream, &code, message, sizeof(message), &length) != BPS_OK) {
        PyErr_SetString(self->state->ProducerError, "the producer failed");
        return NULL;
    }
    if (length >= sizeof(message)) {
        length = sizeof(message) - 1;
    }
    PyObject *text = PyUnicode_DecodeUTF8(message, (Py_ssize_t)length, "replace");
    if (text == NULL) {
        return NULL;
    }
    if (code == ENOMEM) {   /* a native producer ran out of memory: what Python raises */
        PyErr_SetObject(PyExc_MemoryError, text);
        Py_DECREF(text);
    }
    else if (code != 0) {
        PyObject *args = Py_BuildValue("(iN)", (int)code, text);  /* steals text */
        if (args != NULL) {
            PyErr_SetObject(PyExc_OSError, args);   /* OSError picks the errno's subclass */
            Py_DECREF(args);
        }
    }
    else {
        PyErr_SetObject(self->state->ProducerError, text);
        Py_DECREF(text);
    }
    return NULL;
}

PyObject *
not_initialized(StreamObject *self)
{
    PyErr_Format(PyExc_RuntimeError, "%.200s.__init__() was not called",
                 Py_TYPE(self)->tp_name);
    return NULL;
}


/* PyErr_Fetch is deprecated from 3.12 on; these are the 3.12 API, backported. */
#if PY_VERSION_HEX >= 0x030C0000
#  define get_raised_exception PyErr_GetRaisedException
#  define set_raised_exception PyErr_SetRaisedException
#else
// Returns a new reference (or NULL if no exception is set); clears the indicator.
static PyObject *
get_raised_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
}

// Steals exc.
static void
set_raised_exception(PyObject *exc)
{
    if (exc == NULL) {
        return;
    }
    PyErr_Restore(Py_NewRef(Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}
#endif

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

/* ------------------------------------------------------------------------- */
/* Items released by the stream; blocking without the GIL                    */
/* ------------------------------------------------------------------------- */

/* Items are PyObject * (put from Python) or byte frames (put by native producers,
 * bpstream.h: a tagged pointer). A frame becomes a bytes object only when a Python
 * consumer takes it, so producers never need the GIL. */

// Borrows a frame item. Returns a new bytes object holding a copy of its bytes, or NULL
// with MemoryError.
static inline PyObject *
frame_to_bytes(const void *item)
{
    const bps_frame *frame = bps_item_frame(item);
    return PyBytes_FromStringAndSize((const char *)frame->data, (Py_ssize_t)frame->length);
}

// Steals item. Returns a new reference: the object itself, or a new bytes object made
// from the frame (which is freed either way); NULL with MemoryError.
static inline PyObject *
item_to_object(void *item)
{
    if (!bps_item_is_frame(item)) {
        return (PyObject *)item;
    }
    PyObject *bytes = frame_to_bytes(item);
    bps_frame_free(item);
    return bytes;
}

// Steals object (a new reference, or NULL with an exception set): appends it to list.
// Returns 0, or -1 with an exception.
static inline int
list_append_new(PyObject *list, PyObject *object)
{
    if (object == NULL) {
        return -1;
    }
    int result = PyList_Append(list, object);
    Py_DECREF(object);
    return result;
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

/* ------------------------------------------------------------------------- */
/* The process: who holds the GIL, interpreter exit, fork                    */
/* ------------------------------------------------------------------------- */

/* The thread that runs signal handlers (threading.main_thread()): set at import, and
 * again in a forked child, whose only thread is its main thread however it was forked.
 * Read and written with the GIL held. */
static unsigned long main_thread_ident;

/* Every initialised StreamObject (stream_setup adds, dealloc removes; GIL held), so a
 * forked child can put right what the fork left behind (after_fork_child). */
static StreamObject *all_streams;

/* 1 if THIS thread holds the GIL. On 3.12+ the thread state is thread-local and non-NULL
 * exactly while attached. On 3.11 _PyThreadState_UncheckedGet() names the thread that
 * holds the GIL, whichever it is, so it is compared with this thread's own state.
 * (Not PyGILState_Check(): it says 1 for everyone once a subinterpreter exists.) */
static inline int
holds_gil(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked() != NULL;
#elif PY_VERSION_HEX >= 0x030C0000
    return _PyThreadState_UncheckedGet() != NULL;
#else
    PyThreadState *mine = PyGILState_GetThisThreadState();
    return mine != NULL && mine == _PyThreadState_UncheckedGet();
#endif
}

/* Interpreter exit, a handshake between native threads that release Python objects and
 * the exiting interpreter (both sides sequentially consistent):
 *  - a native thread counts itself in native_releasers, THEN reads interpreter_exiting:
 *    set, it leaves the object alone and counts itself out; clear, it takes the GIL
 *    (PyGILState_Ensure), releases, gives the GIL back, and counts itself out;
 *  - at exit (an atexit callback: before finalization, while the GIL can still be taken)
 *    the interpreter sets interpreter_exiting, THEN waits, GIL released, until
 *    native_releasers is 0.
 * So either the native thread sees the flag, or the exit waits for it to be done: no
 * native thread ever takes the GIL of a finalizing interpreter (3.11 would end that thread
 * with pthread_exit inside our core, its locks held). */
static atomic_int interpreter_exiting;
static atomic_long native_releasers;
static atomic_long objects_left_at_exit;   /* dropped by native threads after exit began */

// Steals object. From a thread that does not hold the GIL.
static void
release_object_without_gil(PyObject *object)
{
    atomic_fetch_add(&native_releasers, 1);
    if (atomic_load(&interpreter_exiting)) {
        atomic_fetch_add(&objects_left_at_exit, 1);
    }
    else {
        PyGILState_STATE gil = PyGILState_Ensure();
        Py_DECREF(object);
        PyGILState_Release(gil);
    }
    atomic_fetch_sub(&native_releasers, 1);
}

/* The stream's release callback: drops the stream's reference to one item (steals it).
 * Runs on the thread whose call dropped it, with or without the GIL, never with the
 * stream's lock held (so taking the GIL here cannot deadlock against a GIL holder that
 * waits for that lock). */
static void
release_item(void *item, void *context)
{
    (void)context;
    if (bps_item_is_frame(item)) {
        bps_frame_free(item);
    }
    else if (holds_gil()) {
        Py_DECREF((PyObject *)item);
    }
    else {
        release_object_without_gil((PyObject *)item);
    }
}

PyDoc_STRVAR(at_exit_doc,
"_at_exit($module, /)\n--\n\n"
"Registered with atexit: from now on native threads leave Python objects alone;\n"
"returns once none is releasing one.");

static PyObject *
bpstream_at_exit(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    atomic_store(&interpreter_exiting, 1);
    if (atomic_load(&native_releasers) > 0) {
        Py_BEGIN_ALLOW_THREADS
        while (atomic_load(&native_releasers) > 0) {
            struct timespec pause = {0, 100 * 1000};
            nanosleep(&pause, NULL);
        }
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static void stop_reader(StreamObject *self);

PyDoc_STRVAR(after_fork_child_doc,
"_after_fork_child($module, /)\n--\n\n"
"Registered with os.register_at_fork(after_in_child=...): puts right what a fork\n"
"left behind in the child.");

/* In a forked child (GIL held, the only thread). The core already re-made every stream's
 * lock and conditions (bpstream.h, fork), so streams work; what is left is ours:
 *  - this thread is the main thread now, whichever thread forked;
 *  - no thread of the parent waits here, nor releases an object;
 *  - a stream fed by a native thread of the parent (a reader, or native code that took a
 *    handle through the C API) has no producer any more: it is closed, so its consumers
 *    drain what was buffered at the fork and stop instead of waiting forever. A reader's
 *    fds are closed with it (bps_reader_stop in a child joins nothing). */
static PyObject *
bpstream_after_fork_child(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    main_thread_ident = PyThread_get_thread_ident();
    atomic_store(&native_releasers, 0);
    for (StreamObject *self = all_streams; self != NULL; self = self->next_stream) {
        self->getters_waiting = 0;
        if (self->reader != NULL) {
            stop_reader(self);
        }
        else if (self->handed_to_native) {
            (void)bps_stream_close(self->stream, 0);   /* drain, then stop */
        }
    }
    Py_RETURN_NONE;
}

/* One blocking call's waiter, on the caller's C stack. */
typedef struct {
    bps_waiter waiter;
    PyThreadState *tstate;         /* saved while the GIL is released */
    Py_ssize_t *getters_waiting;   /* NULL for calls that never remove items */
} gil_waiter;

static int
gil_wait_hook(void *context, bps_wait_event event)
{
    gil_waiter *w = (gil_waiter *)context;
    switch (event) {
    case BPS_WAIT_BEGIN:
        if (w->getters_waiting != NULL) {
            ++*w->getters_waiting;   /* still under the GIL */
        }
        w->tstate = PyEval_SaveThread();
        return 0;
    case BPS_WAIT_POLL: {
        PyEval_RestoreThread(w->tstate);
        int r = PyErr_CheckSignals();   /* runs handlers; KeyboardInterrupt -> -1 */
        w->tstate = PyEval_SaveThread();
        return r != 0;
    }
    case BPS_WAIT_END:
        PyEval_RestoreThread(w->tstate);
        if (w->getters_waiting != NULL) {
            --*w->getters_waiting;
        }
        return 0;
    }
    return 0;
}

/* Fills *w for one call on self. removes_items: the call may take items while it waits.
 * Signal handlers only ever run in the main thread, so other threads never poll. */
static inline const bps_waiter *
gil_waiter_init(gil_waiter *w, StreamObject *self, int removes_items)
{
    w->waiter.size = sizeof(bps_waiter);
    w->waiter.poll_interval_ns =
        PyThread_get_thread_ident() == main_thread_ident ? MAIN_THREAD_POLL_NS : 0;
    w->waiter.hook = gil_wait_hook;
    w->waiter.context = w;
    w->tstate = NULL;
    w->getters_waiting = removes_items ? &self->getters_waiting : NULL;
    return &w->waiter;
}

static int64_t
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* ------------------------------------------------------------------------- */
/* Argument conversion                                                       */
/* ------------------------------------------------------------------------- */

/* Borrows obj. Seconds (None, int, float) -> the ABI's nanoseconds: None, inf and
 * anything beyond int64 nanoseconds (~292 years) mean -1, no limit; 0 means do not
 * wait; positive values round up so a tiny timeout still waits. Negative or NaN ->
 * ValueError. Returns 0, or -1 with an exception set. */
int
timeout_to_ns(PyObject *obj, int64_t *out)
{
    double seconds;
    if (obj == NULL || obj == Py_None) {
        *out = -1;
        return 0;
    }
    if (PyFloat_CheckExact(obj)) {
        seconds = PyFloat_AS_DOUBLE(obj);
    }
    else if (PyLong_Check(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow > 0) {
            *out = -1;
            return 0;
        }
        if (overflow < 0 || v < 0) {
            goto negative;
        }
        *out = v > INT64_MAX / NS_PER_SEC ? -1 : (int64_t)v * NS_PER_SEC;
        return 0;
    }
    else {
        seconds = PyFloat_AsDouble(obj);
        if (seconds == -1.0 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (isnan(seconds) || seconds < 0) {
        goto negative;
    }
    double ns = ceil(seconds * 1e9);
    *out = ns >= 9.2e18 ? -1 : (int64_t)ns;
    return 0;
negative:
    PyErr_SetString(PyExc_ValueError, "'timeout' must be a non-negative number");
    return -1;
}

/* Borrows obj. Any str (a Policy member is one) -> bps_policy. */
static int
policy_from_object(PyObject *obj, bps_policy *out)
{
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "policy must be a str or bpstream.Policy, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    for (int i = 0; i < N_POLICIES; i++) {
        if (PyUnicode_CompareWithASCIIString(obj, policy_names[i]) == 0) {
            *out = (bps_policy)i;
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "policy must be one of 'block', 'drop_oldest', 'drop_newest', "
                 "'reject', 'drop_all', not %R", obj);
    return -1;
}

/* out[i] gets a borrowed reference, or NULL when omitted. Returns 0 or -1. */
int
parse_args(const arg_spec *spec, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames, PyObject **out)
{
    if (nargs > spec->kwonly) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most %d positional argument%s (%zd given)",
                     spec->fname, spec->kwonly, spec->kwonly == 1 ? "" : "s", nargs);
        return -1;
    }
    for (int i = 0; i < spec->n; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int i;
        for (i = spec->posonly; i < spec->n; i++) {
            if (PyUnicode_CompareWithASCIIString(key, spec->names[i]) == 0) {
                break;
            }
        }
        if (i == spec->n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                         spec->fname, key);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                         spec->fname, spec->names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (int i = 0; i < spec->required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)",
                         spec->fname, spec->names[i], i + 1);
            return -1;
        }
    }
    return 0;
}

/* Borrows obj (may be NULL: default). Returns 1, 0, or -1 with an exception. */
static inline int
truth(PyObject *obj, int default_value)
{
    return obj == NULL ? default_value : PyObject_IsTrue(obj);
}

/* ------------------------------------------------------------------------- */
/* Core operations shared by BoundedStream and Queue                         */
/* ------------------------------------------------------------------------- */

/* ------------------------------------------------------------------------- */
/* Read-ahead                                                                */
/* ------------------------------------------------------------------------- */

/* Iteration takes items in batches (one core call per batch, not per item) into the
 * stream object's read-ahead, which every consumer call on this object (next, get,
 * get_nowait, get_many) serves first, so they all still see ONE FIFO.
 *
 * INVARIANTS
 *  - Read-ahead items are RESERVED in the core (bps_stream_reserve): they stay in its
 *    depth and hold their room until settled, so the stream never holds more than its
 *    capacity, read-ahead included.
 *  - Each item delivered to Python is marked delivered in the core at once, without its
 *    lock (bps_stream_mark_delivered: an atomic add): from then on it counts as consumed
 *    and its room is free for any put, Python or native, so len() and stats() are exact
 *    and a loop that holds an item never starves a blocked producer.
 *  - The rest is settled in one core call when the read-ahead runs dry (before the next
 *    core get), when the last iterator dies (the undelivered rest goes back to the FRONT
 *    of the stream: nothing is lost by a `break`), before an immediate close, and at
 *    deallocation. Delivered frames of at most BPS_FRAME_SHARED_MAX bytes are freed
 *    then too, all at once (their bytes were copied on delivery).
 *  - A batch is at most ahead_batch items (stream_ahead_batch): 256 and a quarter of the
 *    capacity for block, reject and drop_newest; drop_oldest and drop_all, and streams
 *    too small for a batch, are read item by item.
 *  - Refills never wait and never release the GIL: they take what is there (and only
 *    one item while other consumers are parked in the core, so those are never passed
 *    over). When there is nothing, the loop waits like get() for ONE item. So the
 *    read-ahead changes only with the GIL held, and no other thread sees it half made. */
#define AHEAD_MAX 256

/* The read-ahead batch for this policy and capacity (BPS_CAPACITY_UNBOUNDED: none).
 *
 * drop_oldest and drop_all never read ahead (batch 1: one core get per item): they drop
 * the oldest UNDELIVERED items, and a reserved item sits in this object, out of reach of
 * a producer (native ones hold no GIL), so a read-ahead would make them drop newer items
 * or shed instead. The other policies never take a buffered item back, and their puts
 * see a delivered item's room at once (the core absorbs deliveries before a put decides,
 * bpstream.h), so for them the read-ahead is invisible: which item a policy drops, every
 * stats field and whether a put waits are what one lock over one FIFO would give. */
static Py_ssize_t
stream_ahead_batch(bps_policy policy, int64_t capacity)
{
    if (policy == BPS_POLICY_DROP_OLDEST || policy == BPS_POLICY_DROP_ALL) {
        return 1;
    }
    Py_ssize_t batch = capacity == BPS_CAPACITY_UNBOUNDED ? AHEAD_MAX
                       : (Py_ssize_t)(capacity / 4);
    return batch > AHEAD_MAX ? AHEAD_MAX : (batch < 1 ? 1 : batch);
}

/* Delivered small frames (at most BPS_FRAME_SHARED_MAX bytes: those that share their
 * batch's allocation) stay allocated, in ahead[], bytes already copied, until the batch
 * is settled, and are then freed together (bps_frames_free: one atomic per allocation,
 * not one call and one atomic per frame); larger ones are freed at once. So delivered
 * frames hold at most the allocations of one read-ahead batch of small frames: about
 * AHEAD_MAX * (BPS_FRAME_SHARED_MAX + 16) bytes, plus one producer batch's share at each
 * end of it. (ahead_deliver, ahead_settle.) */

/* The frame AHEAD_PREFETCH items on is prefetched as each item is delivered: frames were
 * written on the producer's core, and the copy would otherwise wait for each one. */
#define AHEAD_PREFETCH 8

// Delivers the next read-ahead item; there must be one (ahead_next < ahead_count).
// Returns a new reference: the object itself, or a new bytes object copied from the
// frame; NULL with MemoryError (the item is lost, as an item a failed get took would be).
static inline PyObject *
ahead_deliver(StreamObject *self)
{
    Py_ssize_t i = self->ahead_next++;
    void *item = self->ahead[i];
    /* bps_stream_mark_delivered(stream, 1), inline: one atomic add, no call; and when an
     * async producer waits for room (the word after the counter), settle at once so the
     * room reaches it (bpstream.h, bps_stream_delivery_counter). */
    __atomic_fetch_add(self->delivered, 1, __ATOMIC_RELEASE);
    if (__builtin_expect(__atomic_load_n(self->delivered + 1, __ATOMIC_RELAXED) != 0, 0)) {
        (void)bps_stream_settle(self->stream, 0, NULL, 0);
    }
    if (i + AHEAD_PREFETCH < self->ahead_count) {
        __builtin_prefetch(bps_item_frame(self->ahead[i + AHEAD_PREFETCH]));
    }
    if (!bps_item_is_frame(item)) {
        return (PyObject *)item;
    }
    PyObject *bytes = frame_to_bytes(item);
    if (bps_item_frame(item)->length > BPS_FRAME_SHARED_MAX) {
        bps_frame_free(item);   /* it has its own allocation: nothing to batch */
        self->ahead[i] = NULL;
    }
    return bytes;
}

/* Settles the read-ahead with the core: the delivered items count as consumed (their
 * frames are freed now); the undelivered ones go back to the front of the stream.
 * GIL held; never waits. */
static void
ahead_settle(StreamObject *self)
{
    if (self->ahead_count == 0) {
        return;
    }
    Py_ssize_t first = self->ahead_next, rest = self->ahead_count - self->ahead_next;
    self->ahead_next = self->ahead_count = 0;
    /* ahead[0..first): delivered; objects among them are the caller's now (skipped). */
    bps_frames_free(self->ahead, (size_t)first);
    /* Delivered items were marked one by one; only the rest is reported (handed back). */
    (void)bps_stream_settle(self->stream, 0, rest > 0 ? &self->ahead[first] : NULL,
                            (size_t)rest);
}

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

// The next item for any consumer call on self (get, get_nowait, next): from the
// read-ahead, else a refill of it (which never waits), else one item from the core,
// waiting as timeout_ns says. Returns a new reference; or NULL with *status the core's
// failure (no exception set), or NULL with an exception (*status BPS_OK).
PyObject *
take_next(StreamObject *self, int64_t timeout_ns, bps_status *status)
{
    *status = BPS_OK;
    if (self->ahead_next < self->ahead_count) {   /* the hot path */
        return ahead_deliver(self);
    }
    ahead_settle(self);
    if (self->ahead_batch > 1) {   /* refill: take what is there, without waiting */
        if (self->ahead == NULL) {
            self->ahead = PyMem_Malloc(sizeof(void *) * AHEAD_MAX);
            if (self->ahead == NULL) {
                return PyErr_NoMemory();
            }
        }
        size_t count = 0;
        bps_status reserved = bps_stream_reserve(self->stream, self->ahead,
                                                 (size_t)self->ahead_batch, 0, NULL, &count);
        if (reserved == BPS_OK) {
            self->ahead_count = (Py_ssize_t)count;
            self->ahead_next = 0;
            return ahead_deliver(self);   /* count >= 1 */
        }
        if (reserved != BPS_EMPTY || timeout_ns == 0) {
            *status = reserved;
            return NULL;
        }
    }
    /* Nothing there: wait like get() for one item. */
    gil_waiter w;
    void *item;
    *status = bps_stream_get(self->stream, timeout_ns,
                             timeout_ns == 0 ? NULL : gil_waiter_init(&w, self, 1), &item);
    return *status == BPS_OK ? item_to_object(item) : NULL;
}

// Returns a new reference (the oldest item), or NULL with an exception.
static inline PyObject *
do_get(StreamObject *self, int64_t timeout_ns)
{
    bps_status status;
    PyObject *item = take_next(self, timeout_ns, &status);
    if (item == NULL && status != BPS_OK) {
        return stream_error(self, status);
    }
    return item;
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

// Queue.put's result: None whether stored or shed. Returns a new reference.
static inline PyObject *
queue_put_result(StreamObject *self, bps_status status)
{
    if (status == BPS_OK || status == BPS_SHED) {
        Py_RETURN_NONE;
    }
    return stream_error(self, status);
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
    return (PyObject *)self;
}

/* Creates self's stream once. Returns 0 or -1 with an exception. */
static int
stream_setup(StreamObject *self, int64_t capacity, bps_policy policy)
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
    bps_stream *stream;
    bps_status status = bps_stream_create(&config, &stream);
    if (status != BPS_OK) {
        stream_error(self, status);
        return -1;
    }
    void *counter = NULL;
    status = bps_stream_delivery_counter(stream, &counter);
    if (status != BPS_OK) {
        (void)bps_stream_release(stream);
        set_error(self->state, status);
        return -1;
    }
    self->stream = stream;
    self->next_stream = all_streams;
    if (all_streams != NULL) {
        all_streams->prev_stream = self;
    }
    all_streams = self;
    self->delivered = (intptr_t *)counter;
    self->policy = policy;
    self->ahead_batch = stream_ahead_batch(policy, capacity);
    return 0;
}

static int
stream_init(StreamObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", "policy", NULL};
    PyObject *capacity_obj, *policy_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:BoundedStream", kwlist,
                                     &capacity_obj, &policy_obj)) {
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
    return stream_setup(self, capacity, policy);
}

/* Borrows item; runs under the stream's lock (see the top comment). */
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

static int
stream_traverse(StreamObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->async_waiters);
    Py_VISIT(self->failure);
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
static int
stream_clear(StreamObject *self)
{
    Py_CLEAR(self->async_waiters);
    Py_CLEAR(self->failure);
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
static void
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

static void
stream_dealloc(StreamObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    if (self->stream != NULL) {
        ahead_settle(self);   /* the read-ahead goes back: the close below releases it */
        if (self->prev_stream != NULL) {
            self->prev_stream->next_stream = self->next_stream;
        }
        else {
            all_streams = self->next_stream;
        }
        if (self->next_stream != NULL) {
            self->next_stream->prev_stream = self->prev_stream;
        }
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

static PyObject *
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

static PyObject *
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

/* ------------------------------------------------------------------------- */
/* Iteration                                                                 */
/* ------------------------------------------------------------------------- */

/* `for item in stream` is get() until the stream is closed and drained, served from the
 * stream's read-ahead (see "Read-ahead" above). iter(stream) returns a small iterator
 * object so the stream knows when the last loop over it ends (then the undelivered
 * read-ahead goes back to the front of the stream). */
typedef struct {
    PyObject_HEAD
    StreamObject *stream;          /* strong */
} IteratorObject;

static PyObject *
stream_iter(StreamObject *self)
{
    CHECK_INIT(self);
    IteratorObject *it = PyObject_GC_New(IteratorObject, self->state->iterator_type);
    if (it == NULL) {
        return NULL;
    }
    it->stream = (StreamObject *)Py_NewRef(self);
    self->live_iterators++;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

// Returns a new reference: the next item; NULL without an exception at the end
// (closed and drained); NULL with an exception on error or Ctrl-C.
static PyObject *
iterator_next(IteratorObject *it)
{
    StreamObject *self = it->stream;
    if (self->ahead_next < self->ahead_count) {   /* the hot path, inline */
        return ahead_deliver(self);
    }
    bps_status status;
    PyObject *item = take_next(self, -1, &status);
    if (item != NULL || status == BPS_OK) {
        return item;
    }
    if (status == BPS_CLOSED) {
        return NULL;   /* StopIteration, without the cost of an exception */
    }
    return stream_error(self, status);
}

// `async for`: returns an awaitable for the next item (StopAsyncIteration at the end).
static PyObject *
iterator_anext(IteratorObject *it)
{
    return aio_anext(it->stream);
}

static int
iterator_traverse(IteratorObject *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(it));
    Py_VISIT(it->stream);
    return 0;
}

static int
iterator_clear(IteratorObject *it)
{
    StreamObject *self = it->stream;
    if (self != NULL) {
        it->stream = NULL;
        if (--self->live_iterators == 0 && self->stream != NULL) {
            ahead_settle(self);   /* the last loop ended: hand back what it did not take */
        }
        Py_DECREF(self);
    }
    return 0;
}

static void
iterator_dealloc(IteratorObject *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    PyObject_GC_UnTrack(it);
    (void)iterator_clear(it);
    PyObject_GC_Del(it);
    Py_DECREF(tp);
}

PyDoc_STRVAR(iterator_doc,
"Iterator over a BoundedStream: yields items like get() until the stream is\n"
"closed and drained, taking them from the stream in batches.");

static PyType_Slot iterator_slots[] = {
    {Py_tp_doc, (void *)iterator_doc},
    {Py_tp_dealloc, iterator_dealloc},
    {Py_tp_traverse, iterator_traverse},
    {Py_tp_clear, iterator_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, iterator_next},
    {Py_am_aiter, PyObject_SelfIter},
    {Py_am_anext, iterator_anext},
    {0, NULL},
};

static PyType_Spec iterator_spec = {
    .name = "bpstream._bpstream.StreamIterator",
    .basicsize = sizeof(IteratorObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = iterator_slots,
};

static Py_ssize_t
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

static PyObject *
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
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(stream_doc,
"BoundedStream(capacity, policy='block')\n"
"--\n"
"\n"
"A bounded, thread-safe FIFO stream with explicit backpressure.\n"
"\n"
"capacity is the most items it buffers (1 to 2**30). policy says what a put\n"
"into a full stream does: 'block' (wait for room), 'drop_oldest' (evict the\n"
"oldest item), 'drop_newest' (shed the new item), 'reject' (raise Full) or\n"
"'drop_all' (clear the backlog); a bpstream.Policy member works too.\n"
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

static PyType_Spec stream_spec = {
    .name = "bpstream.BoundedStream",
    .basicsize = sizeof(StreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = stream_slots,
};

/* ------------------------------------------------------------------------- */
/* Queue: queue.Queue's signatures over the same stream                      */
/* ------------------------------------------------------------------------- */

/* queue.Queue's argument rules, exactly (Lib/queue.py of 3.13, shutdown included):
 *  - put checks shutdown first, then reads the timeout only when maxsize > 0 and block
 *    is true: an unbounded queue stores the item whatever the timeout (even -1);
 *  - get checks "shut down and empty" first, then validates the timeout whenever block
 *    is true;
 *  - block=False ignores the timeout (no wait).
 * A valid timeout needs no shutdown check of ours: the core answers BPS_CLOSED for a
 * put after shutdown and for a get once shut down and drained. Only when the timeout is
 * invalid do we look, so that ShutDown wins over ValueError/TypeError as in 3.13. */

/* Whether self is closed and, if `drained`, holds nothing (its read-ahead included).
 * Returns 1, 0, or -1 with an exception. */
static int
queue_is_shut_down(StreamObject *self, int drained)
{
    int closed = 0;
    uint64_t depth = 0;
    bps_status status = bps_stream_is_closed(self->stream, &closed);
    if (status == BPS_OK && closed && drained) {
        status = bps_stream_depth(self->stream, &depth);
    }
    if (status != BPS_OK) {
        stream_error(self, status);
        return -1;
    }
    return closed && depth == 0;
}

/* Borrows block and timeout (either may be NULL). For put (is_put) or get; sets *out to
 * the ABI timeout. Returns 0, or -1 with an exception (ShutDown, ValueError, ...). */
static int
queue_timeout(StreamObject *self, PyObject *block_obj, PyObject *timeout_obj, int is_put,
              int64_t *out)
{
    int block = truth(block_obj, 1);
    if (block < 0) {
        return -1;
    }
    if (!block) {
        *out = 0;
        return 0;
    }
    if (is_put) {
        int64_t capacity = 0;
        bps_status status = bps_stream_capacity(self->stream, &capacity);
        if (status != BPS_OK) {
            stream_error(self, status);
            return -1;
        }
        if (capacity == BPS_CAPACITY_UNBOUNDED) {
            *out = -1;   /* never waits; queue.Queue does not look at the timeout */
            return 0;
        }
    }
    if (timeout_to_ns(timeout_obj, out) == 0) {
        return 0;
    }
    /* 3.13 checks shutdown before the timeout: put after any shutdown, get once drained. */
    PyObject *exc = get_raised_exception();
    int shut = queue_is_shut_down(self, !is_put);
    if (shut != 0) {
        Py_XDECREF(exc);
        if (shut > 0) {
            set_error(self->state, BPS_CLOSED);
        }
        return -1;
    }
    set_raised_exception(exc);
    return -1;
}

static int
queue_init(StreamObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"maxsize", "policy", NULL};
    PyObject *maxsize_obj = NULL, *policy_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$O:Queue", kwlist,
                                     &maxsize_obj, &policy_obj)) {
        return -1;
    }
    int64_t capacity = BPS_CAPACITY_UNBOUNDED;
    if (maxsize_obj != NULL) {
        int overflow;
        long long maxsize = PyLong_AsLongLongAndOverflow(maxsize_obj, &overflow);
        if (maxsize == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow > 0 || maxsize > BPS_CAPACITY_MAX) {
            PyErr_Format(PyExc_ValueError, "maxsize must be at most %lld, got %R",
                         (long long)BPS_CAPACITY_MAX, maxsize_obj);
            return -1;
        }
        if (overflow == 0 && maxsize > 0) {
            capacity = maxsize;
        }
        else {
            self->unbounded_maxsize = overflow < 0 ? LLONG_MIN : maxsize;
        }
    }
    bps_policy policy = BPS_POLICY_BLOCK;
    if (policy_obj != NULL && policy_from_object(policy_obj, &policy) < 0) {
        return -1;
    }
    return stream_setup(self, capacity, policy);
}

PyDoc_STRVAR(queue_put_doc,
"put($self, /, item, block=True, timeout=None)\n"
"--\n"
"\n"
"Put an item into the queue, as queue.Queue.put does.\n"
"\n"
"If block is true and timeout is None, wait until a slot is free; with a\n"
"non-negative timeout, wait at most that many seconds and raise Full if no\n"
"slot was free in time. If block is false, put the item if a slot is free at\n"
"once, else raise Full (timeout is ignored). As in queue.Queue, an unbounded\n"
"queue ignores the timeout too. A non-'block' policy decides instead what a\n"
"full queue does. Raises ShutDown after shutdown(), whatever the arguments.");

static PyObject *
queue_put(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    CHECK_INIT(self);
    if (nargs == 1 && kwnames == NULL) {   /* fast path: put(item) */
        return queue_put_result(self, do_put(self, args[0], -1));
    }
    static const char *const names[] = {"item", "block", "timeout"};
    static const arg_spec spec = {"put", names, 3, 0, 3, 1};
    PyObject *argv[3];
    int64_t timeout_ns;
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0
        || queue_timeout(self, argv[1], argv[2], 1, &timeout_ns) < 0) {
        return NULL;
    }
    return queue_put_result(self, do_put(self, argv[0], timeout_ns));
}

PyDoc_STRVAR(queue_put_nowait_doc,
"put_nowait($self, /, item)\n"
"--\n"
"\n"
"Put an item without blocking: the same as put(item, block=False).");

static PyObject *
queue_put_nowait(StreamObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    CHECK_INIT(self);
    if (nargs == 1 && kwnames == NULL) {
        return queue_put_result(self, do_put(self, args[0], 0));
    }
    static const char *const names[] = {"item"};
    static const arg_spec spec = {"put_nowait", names, 1, 0, 1, 1};
    PyObject *argv[1];
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0) {
        return NULL;
    }
    return queue_put_result(self, do_put(self, argv[0], 0));
}

PyDoc_STRVAR(queue_get_doc,
"get($self, /, block=True, timeout=None)\n"
"--\n"
"\n"
"Remove and return an item from the queue, as queue.Queue.get does.\n"
"\n"
"If block is true and timeout is None, wait until an item is available; with\n"
"a non-negative timeout, wait at most that many seconds and raise Empty if\n"
"none came. If block is false, return an item if one is there at once, else\n"
"raise Empty (timeout is ignored). Raises ShutDown once the queue is shut\n"
"down and drained (at once after shutdown(immediate=True)).");

static PyObject *
queue_get(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    CHECK_INIT(self);
    if (nargs == 0 && kwnames == NULL) {   /* fast path: get() */
        return do_get(self, -1);
    }
    static const char *const names[] = {"block", "timeout"};
    static const arg_spec spec = {"get", names, 2, 0, 2, 0};
    PyObject *argv[2];
    int64_t timeout_ns;
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0
        || queue_timeout(self, argv[0], argv[1], 0, &timeout_ns) < 0) {
        return NULL;
    }
    return do_get(self, timeout_ns);
}

PyDoc_STRVAR(queue_get_nowait_doc,
"get_nowait($self, /)\n"
"--\n"
"\n"
"Remove and return an item without blocking: the same as get(False).");

PyDoc_STRVAR(queue_qsize_doc,
"qsize($self, /)\n"
"--\n"
"\n"
"Return the number of items in the queue (a snapshot, as in queue.Queue).");

static PyObject *
queue_qsize(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t n = stream_len(self);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(queue_empty_doc,
"empty($self, /)\n"
"--\n"
"\n"
"Return True if the queue is empty (a snapshot, as in queue.Queue).");

static PyObject *
queue_empty(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t n = stream_len(self);
    return n < 0 ? NULL : PyBool_FromLong(n == 0);
}

PyDoc_STRVAR(queue_full_doc,
"full($self, /)\n"
"--\n"
"\n"
"Return True if the queue is bounded and full (a snapshot, as in\n"
"queue.Queue).");

static PyObject *
queue_full(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_INIT(self);
    int64_t capacity = 0;
    uint64_t depth = 0;
    bps_status status = bps_stream_capacity(self->stream, &capacity);
    if (status == BPS_OK) {
        status = bps_stream_depth(self->stream, &depth);
    }
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    return PyBool_FromLong(capacity > 0 && depth >= (uint64_t)capacity);
}

PyDoc_STRVAR(queue_task_done_doc,
"task_done($self, /)\n"
"--\n"
"\n"
"Indicate that a formerly enqueued task is complete, as in queue.Queue.\n"
"\n"
"Raises ValueError if called more times than there were items put.");

static PyObject *
queue_task_done(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_INIT(self);
    bps_status status = bps_stream_task_done(self->stream, 1);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(queue_join_doc,
"join($self, /)\n"
"--\n"
"\n"
"Block until every item put has been processed (task_done), evicted or\n"
"discarded. Releases the GIL while waiting; Ctrl-C interrupts it.");

static PyObject *
queue_join(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_INIT(self);
    gil_waiter w;
    bps_status status = bps_stream_join(self->stream, -1, gil_waiter_init(&w, self, 0));
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(queue_shutdown_doc,
"shutdown($self, /, immediate=False)\n"
"--\n"
"\n"
"Shut down the queue, as queue.Queue.shutdown does in Python 3.13: later\n"
"puts raise ShutDown, blocked putters wake with ShutDown, gets drain the queue\n"
"and then raise ShutDown. With immediate=True the queue is emptied at once\n"
"(each discarded item counts as done for join()) and every waiter wakes.");

PyDoc_STRVAR(queue_is_shutdown_doc,
"True once shutdown() (or close()) has been called.");

static PyObject *
queue_get_maxsize(StreamObject *self, void *Py_UNUSED(closure))
{
    CHECK_INIT(self);
    int64_t capacity = 0;
    bps_status status = bps_stream_capacity(self->stream, &capacity);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    return PyLong_FromLongLong(capacity < 0 ? self->unbounded_maxsize : capacity);
}

static int
queue_set_maxsize(StreamObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (self->stream == NULL) {
        not_initialized(self);
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete maxsize");
        return -1;
    }
    int overflow;
    long long maxsize = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (maxsize == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow > 0 || maxsize > BPS_CAPACITY_MAX) {
        PyErr_Format(PyExc_ValueError, "maxsize must be at most %lld, got %R",
                     (long long)BPS_CAPACITY_MAX, value);
        return -1;
    }
    int64_t capacity = (overflow < 0 || maxsize <= 0) ? BPS_CAPACITY_UNBOUNDED : maxsize;
    bps_status status = bps_stream_set_capacity(self->stream, capacity);
    if (status != BPS_OK) {
        stream_error(self, status);
        return -1;
    }
    self->unbounded_maxsize = overflow < 0 ? LLONG_MIN : (maxsize <= 0 ? maxsize : 0);
    self->ahead_batch = stream_ahead_batch(self->policy, capacity);
    return 0;
}

PyDoc_STRVAR(queue_unfinished_tasks_doc,
"Items put and not yet marked done with task_done(), as queue.Queue's attribute;\n"
"evicted, cleared and discarded items count as done. join() waits for 0.\n"
"Read-only: only queue.Queue's own methods write it (under its mutex, which\n"
"this queue does not have); task_done() is the way to lower it.");

static PyObject *
queue_get_unfinished_tasks(StreamObject *self, void *Py_UNUSED(closure))
{
    CHECK_INIT(self);
    bps_stats s;
    memset(&s, 0, sizeof(s));
    s.size = sizeof(s);
    bps_status status = bps_stream_stats(self->stream, &s);
    if (status != BPS_OK) {
        return stream_error(self, status);
    }
    return PyLong_FromUnsignedLongLong((unsigned long long)s.unfinished_tasks);
}

/* The faces of one queue (janus/culsans style): q.sync_q is q itself; q.async_q is an
 * asyncio.Queue-shaped bpstream.AsyncQueue over the same queue (bpstream/_asyncqueue.py:
 * one face per queue while it is referenced). */
static PyObject *
queue_get_sync_q(StreamObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef((PyObject *)self);
}

static PyObject *
queue_get_async_q(StreamObject *self, void *Py_UNUSED(closure))
{
    CHECK_INIT(self);
    PyObject *faces = PyImport_ImportModule("bpstream._asyncqueue");
    if (faces == NULL) {
        return NULL;
    }
    PyObject *face = PyObject_CallMethod(faces, "_async_face", "O", (PyObject *)self);
    Py_DECREF(faces);
    return face;
}

/* A Queue is always true, like queue.Queue (which has no __len__). */
static int
queue_bool(PyObject *Py_UNUSED(self))
{
    return 1;
}

static PyMethodDef queue_methods[] = {
    {"put", (PyCFunction)(void (*)(void))queue_put, METH_FASTCALL | METH_KEYWORDS,
     queue_put_doc},
    {"put_nowait", (PyCFunction)(void (*)(void))queue_put_nowait,
     METH_FASTCALL | METH_KEYWORDS, queue_put_nowait_doc},
    {"get", (PyCFunction)(void (*)(void))queue_get, METH_FASTCALL | METH_KEYWORDS,
     queue_get_doc},
    {"get_nowait", (PyCFunction)stream_get_nowait, METH_NOARGS, queue_get_nowait_doc},
    {"qsize", (PyCFunction)queue_qsize, METH_NOARGS, queue_qsize_doc},
    {"empty", (PyCFunction)queue_empty, METH_NOARGS, queue_empty_doc},
    {"full", (PyCFunction)queue_full, METH_NOARGS, queue_full_doc},
    {"task_done", (PyCFunction)queue_task_done, METH_NOARGS, queue_task_done_doc},
    {"join", (PyCFunction)queue_join, METH_NOARGS, queue_join_doc},
    {"shutdown", (PyCFunction)(void (*)(void))stream_close, METH_FASTCALL | METH_KEYWORDS,
     queue_shutdown_doc},
    {"_aqput", (PyCFunction)queue_aqput, METH_O,
     PyDoc_STR("asyncio.Queue.put's awaitable over this queue (AsyncQueue.put).")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef queue_getset[] = {
    {"maxsize", (getter)queue_get_maxsize, (setter)queue_set_maxsize,
     PyDoc_STR("The most items the queue holds; 0 means unbounded. Settable: "
               "growing wakes blocked putters, shrinking keeps buffered items."),
     NULL},
    {"is_shutdown", (getter)stream_get_closed, NULL, (char *)queue_is_shutdown_doc, NULL},
    {"unfinished_tasks", (getter)queue_get_unfinished_tasks, NULL,
     (char *)queue_unfinished_tasks_doc, NULL},
    {"sync_q", (getter)queue_get_sync_q, NULL,
     PyDoc_STR("The queue.Queue-shaped face: the queue itself (as janus's sync_q)."), NULL},
    {"async_q", (getter)queue_get_async_q, NULL,
     PyDoc_STR("The asyncio.Queue-shaped face of this same queue: a bpstream.AsyncQueue "
               "(as janus's async_q)."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(queue_doc,
"Queue(maxsize=0, *, policy='block')\n"
"--\n"
"\n"
"A drop-in replacement for queue.Queue, backed by a bpstream stream.\n"
"\n"
"maxsize <= 0 means unbounded. Methods and exceptions follow queue.Queue\n"
"(including task_done/join and Python 3.13's shutdown); bpstream.Full and\n"
"bpstream.Empty subclass queue.Full and queue.Empty. policy chooses what a\n"
"full queue does with a put (see BoundedStream); the default blocks as\n"
"queue.Queue does. Every BoundedStream method works too.");

static PyType_Slot queue_slots[] = {
    {Py_tp_doc, (void *)queue_doc},
    {Py_tp_init, queue_init},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_clear},
    {Py_tp_methods, queue_methods},
    {Py_tp_getset, queue_getset},
    {Py_nb_bool, queue_bool},
    {0, NULL},
};

static PyType_Spec queue_spec = {
    .name = "bpstream.Queue",
    .basicsize = sizeof(StreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = queue_slots,
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
    {NULL, NULL},
};

PyDoc_STRVAR(stats_doc,
"A snapshot of a stream's counters (BoundedStream.stats()).\n"
"\n"
"Identities: produced == consumed + dropped + depth and\n"
"dropped == dropped_shed + dropped_evicted + dropped_cleared + dropped_on_close.");

static PyStructSequence_Desc stats_desc = {
    "bpstream.Stats",
    stats_doc,
    stats_fields,
    (int)(sizeof(stats_fields) / sizeof(stats_fields[0])) - 1,
};

/* ------------------------------------------------------------------------- */
/* Module                                                                    */
/* ------------------------------------------------------------------------- */

PyDoc_STRVAR(abi_version_doc,
"abi_version($module, /)\n"
"--\n"
"\n"
"Return the ABI version of the libbpstream library actually loaded.");

static PyObject *
bpstream_abi_version(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(bps_abi_version());
}

/* ------------------------------------------------------------------------- */
/* The C API for other extensions (bpstream_capi.h), exported as a capsule   */
/* ------------------------------------------------------------------------- */

/* With the GIL. Returns a new reference to obj's native stream, or NULL with TypeError. */
static bps_stream *
capi_stream_handle(PyObject *obj)
{
    PyObject *module = PyType_GetModuleByDef(Py_TYPE(obj), &bpstream_module);
    if (module == NULL
        || !PyObject_TypeCheck(obj, get_module_state(module)->stream_type)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "expected a bpstream.BoundedStream, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    StreamObject *self = (StreamObject *)obj;
    if (self->stream == NULL) {
        not_initialized(self);
        return NULL;
    }
    (void)bps_stream_retain(self->stream);
    self->handed_to_native = 1;   /* a native producer: closed in a forked child */
    return self->stream;
}

static int
capi_is_closed(bps_stream *stream)
{
    int closed = 0;
    return bps_stream_is_closed(stream, &closed) == BPS_OK ? closed : -1;
}

/* Shared by every instance of the module: it holds no per-module state. */
static const BPStream_CAPI bpstream_capi = {
    .size = sizeof(BPStream_CAPI),
    .version = BPSTREAM_CAPI_VERSION,
    .stream_handle = capi_stream_handle,
    .put_frame = bps_stream_put_frame,
    .put_frames = bps_stream_put_frames,
    .close = bps_stream_close,
    .close_with_error = bps_stream_close_with_error,
    .is_closed = capi_is_closed,
    .retain = bps_stream_retain,
    .release = bps_stream_release,
    .status_string = bps_status_string,
};

static PyMethodDef module_methods[] = {
    {"abi_version", bpstream_abi_version, METH_NOARGS, abi_version_doc},
    {"_at_exit", bpstream_at_exit, METH_NOARGS, at_exit_doc},
    {"_after_fork_child", bpstream_after_fork_child, METH_NOARGS, after_fork_child_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(full_doc, "Raised when a put finds the stream full (subclass of queue.Full).");
PyDoc_STRVAR(empty_doc, "Raised when a get finds no item in time (subclass of queue.Empty).");
PyDoc_STRVAR(closed_doc,
"Raised by puts on a closed stream and by gets once it is closed and drained.\n"
"Subclass of queue.ShutDown where that exists (Python 3.13+); bpstream.ShutDown\n"
"is this class.");
PyDoc_STRVAR(producer_error_doc,
"Raised by a get (or a for loop) when a native producer ended the stream with an\n"
"error that is not an OS error; OS errors arrive as OSError with their errno.");
PyDoc_STRVAR(policy_doc,
"What a full stream does with the next put (a str enum: Policy.BLOCK == 'block').");

/* Registers _at_exit with atexit and _after_fork_child with os.register_at_fork (see
 * "The process"). Returns 0, or -1 with an exception. */
static int
register_process_hooks(PyObject *module)
{
    int rc = -1;
    PyObject *at_exit = NULL, *after_fork = NULL, *result = NULL, *kwargs = NULL;
    PyObject *atexit_module = NULL, *os_module = NULL, *register_at_fork = NULL;
    if ((at_exit = PyObject_GetAttrString(module, "_at_exit")) == NULL
        || (after_fork = PyObject_GetAttrString(module, "_after_fork_child")) == NULL
        || (atexit_module = PyImport_ImportModule("atexit")) == NULL
        || (os_module = PyImport_ImportModule("os")) == NULL) {
        goto done;
    }
    result = PyObject_CallMethod(atexit_module, "register", "O", at_exit);
    if (result == NULL) {
        goto done;
    }
    Py_CLEAR(result);
    register_at_fork = PyObject_GetAttrString(os_module, "register_at_fork");
    if (register_at_fork == NULL) {   /* no fork on this platform */
        PyErr_Clear();
        rc = 0;
        goto done;
    }
    kwargs = Py_BuildValue("{sO}", "after_in_child", after_fork);
    if (kwargs == NULL) {
        goto done;
    }
    PyObject *no_args = PyTuple_New(0);
    if (no_args == NULL) {
        goto done;
    }
    result = PyObject_Call(register_at_fork, no_args, kwargs);
    Py_DECREF(no_args);
    rc = result == NULL ? -1 : 0;
done:
    Py_XDECREF(result);
    Py_XDECREF(kwargs);
    Py_XDECREF(register_at_fork);
    Py_XDECREF(os_module);
    Py_XDECREF(atexit_module);
    Py_XDECREF(after_fork);
    Py_XDECREF(at_exit);
    return rc;
}

// Returns a new reference: the class bpstream.Policy, an enum.StrEnum.
static PyObject *
make_policy_enum(void)
{
    PyObject *enum_module = NULL, *str_enum = NULL, *members = NULL, *args = NULL,
             *kwargs = NULL, *result = NULL, *doc = NULL;
    enum_module = PyImport_ImportModule("enum");
    if (enum_module == NULL) {
        goto done;
    }
    str_enum = PyObject_GetAttrString(enum_module, "StrEnum");
    if (str_enum == NULL) {
        goto done;
    }
    members = PyList_New(N_POLICIES);
    if (members == NULL) {
        goto done;
    }
    for (int i = 0; i < N_POLICIES; i++) {
        PyObject *pair = Py_BuildValue("(ss)", policy_member_names[i], policy_names[i]);
        if (pair == NULL) {
            goto done;
        }
        PyList_SET_ITEM(members, i, pair);
    }
    args = Py_BuildValue("(sO)", "Policy", members);
    kwargs = Py_BuildValue("{ss}", "module", "bpstream");
    if (args == NULL || kwargs == NULL) {
        goto done;
    }
    result = PyObject_Call(str_enum, args, kwargs);
    if (result == NULL) {
        goto done;
    }
    doc = PyUnicode_FromString(policy_doc);
    if (doc == NULL || PyObject_SetAttrString(result, "__doc__", doc) < 0) {
        Py_CLEAR(result);
    }
done:
    Py_XDECREF(doc);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_XDECREF(members);
    Py_XDECREF(str_enum);
    Py_XDECREF(enum_module);
    return result;
}

static int
bpstream_exec(PyObject *module)
{
    module_state *st = get_module_state(module);
    PyObject *queue_module = NULL, *threading = NULL, *main_thread = NULL, *ident = NULL;
    PyObject *base;
    int rc = -1;

    if (bps_abi_version() != BPS_ABI_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "bpstream: libbpstream ABI version %u, but the extension was built "
                     "for version %d", (unsigned)bps_abi_version(), BPS_ABI_VERSION);
        return -1;
    }

    /* The main thread is the one that runs signal handlers, wherever we are imported. */
    threading = PyImport_ImportModule("threading");
    if (threading == NULL) {
        goto done;
    }
    main_thread = PyObject_CallMethod(threading, "main_thread", NULL);
    if (main_thread == NULL) {
        goto done;
    }
    ident = PyObject_GetAttrString(main_thread, "ident");
    if (ident == NULL) {
        goto done;
    }
    main_thread_ident = PyLong_AsUnsignedLong(ident);
    if (main_thread_ident == (unsigned long)-1 && PyErr_Occurred()) {
        goto done;
    }

    queue_module = PyImport_ImportModule("queue");
    if (queue_module == NULL) {
        goto done;
    }
    base = PyObject_GetAttrString(queue_module, "Full");
    if (base == NULL) {
        goto done;
    }
    st->Full = PyErr_NewExceptionWithDoc("bpstream.Full", full_doc, base, NULL);
    Py_DECREF(base);
    if (st->Full == NULL || PyModule_AddObjectRef(module, "Full", st->Full) < 0) {
        goto done;
    }
    base = PyObject_GetAttrString(queue_module, "Empty");
    if (base == NULL) {
        goto done;
    }
    st->Empty = PyErr_NewExceptionWithDoc("bpstream.Empty", empty_doc, base, NULL);
    Py_DECREF(base);
    if (st->Empty == NULL || PyModule_AddObjectRef(module, "Empty", st->Empty) < 0) {
        goto done;
    }
    base = PyObject_GetAttrString(queue_module, "ShutDown");   /* Python 3.13+ */
    if (base == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            goto done;
        }
        PyErr_Clear();
        base = Py_NewRef(PyExc_Exception);
    }
    st->Closed = PyErr_NewExceptionWithDoc("bpstream.Closed", closed_doc, base, NULL);
    Py_DECREF(base);
    if (st->Closed == NULL || PyModule_AddObjectRef(module, "Closed", st->Closed) < 0) {
        goto done;
    }

    st->ProducerError = PyErr_NewExceptionWithDoc("bpstream.ProducerError",
                                                  producer_error_doc, NULL, NULL);
    if (st->ProducerError == NULL
        || PyModule_AddObjectRef(module, "ProducerError", st->ProducerError) < 0) {
        goto done;
    }
    PyObject *capsule = PyCapsule_New((void *)&bpstream_capi, BPSTREAM_CAPI_NAME, NULL);
    int added = capsule == NULL ? -1 : PyModule_AddObjectRef(module, "_C_API", capsule);
    Py_XDECREF(capsule);
    if (added < 0) {
        goto done;
    }

    st->policy_enum = make_policy_enum();
    if (st->policy_enum == NULL
        || PyModule_AddObjectRef(module, "Policy", st->policy_enum) < 0) {
        goto done;
    }
    for (int i = 0; i < N_POLICIES; i++) {
        st->policy_members[i] = PyObject_GetAttrString(st->policy_enum,
                                                        policy_member_names[i]);
        if (st->policy_members[i] == NULL) {
            goto done;
        }
    }

    st->stats_type = PyStructSequence_NewType(&stats_desc);
    if (st->stats_type == NULL
        || PyModule_AddObjectRef(module, "Stats", (PyObject *)st->stats_type) < 0) {
        goto done;
    }

    st->stream_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &stream_spec, NULL);
    if (st->stream_type == NULL || PyModule_AddType(module, st->stream_type) < 0) {
        goto done;
    }
    st->queue_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &queue_spec, (PyObject *)st->stream_type);
    if (st->queue_type == NULL || PyModule_AddType(module, st->queue_type) < 0) {
        goto done;
    }
    st->iterator_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &iterator_spec, NULL);
    if (st->iterator_type == NULL) {
        goto done;
    }
    if (aio_init_types(module, st) < 0 || register_process_hooks(module) < 0) {
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(queue_module);
    Py_XDECREF(ident);
    Py_XDECREF(main_thread);
    Py_XDECREF(threading);
    return rc;
}

static int
bpstream_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = get_module_state(module);
    Py_VISIT(st->stream_type);
    Py_VISIT(st->queue_type);
    Py_VISIT(st->stats_type);
    Py_VISIT(st->Full);
    Py_VISIT(st->Empty);
    Py_VISIT(st->Closed);
    Py_VISIT(st->ProducerError);
    Py_VISIT(st->iterator_type);
    Py_VISIT(st->policy_enum);
    for (int i = 0; i < N_POLICIES; i++) {
        Py_VISIT(st->policy_members[i]);
    }
    Py_VISIT(st->ready_type);
    Py_VISIT(st->waker_type);
    Py_VISIT(st->watch_type);
    Py_VISIT(st->aio);
    Py_VISIT(st->ready_cache);
    return 0;
}

static int
bpstream_clear(PyObject *module)
{
    module_state *st = get_module_state(module);
    Py_CLEAR(st->stream_type);
    Py_CLEAR(st->queue_type);
    Py_CLEAR(st->stats_type);
    Py_CLEAR(st->Full);
    Py_CLEAR(st->Empty);
    Py_CLEAR(st->Closed);
    Py_CLEAR(st->ProducerError);
    Py_CLEAR(st->iterator_type);
    Py_CLEAR(st->policy_enum);
    for (int i = 0; i < N_POLICIES; i++) {
        Py_CLEAR(st->policy_members[i]);
    }
    Py_CLEAR(st->ready_type);
    Py_CLEAR(st->waker_type);
    Py_CLEAR(st->watch_type);
    Py_CLEAR(st->aio);
    Py_CLEAR(st->ready_cache);
    return 0;
}

static void
bpstream_free(void *module)
{
    (void)bpstream_clear((PyObject *)module);
}

static PyModuleDef_Slot bpstream_slots[] = {
    {Py_mod_exec, bpstream_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* Shared GIL only: release_item() relies on PyGILState, which knows one
     * interpreter per thread. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    /* getters_waiting and the waiter hooks rely on the GIL. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
"Native core of bpstream: BoundedStream and Queue over libbpstream's C ABI.\n"
"Import the public API from bpstream, not from here.");

static struct PyModuleDef bpstream_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "bpstream._bpstream",
    .m_doc = module_doc,
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = bpstream_slots,
    .m_traverse = bpstream_traverse,
    .m_clear = bpstream_clear,
    .m_free = bpstream_free,
};

PyMODINIT_FUNC
PyInit__bpstream(void)
{
    return PyModuleDef_Init(&bpstream_module);
}
