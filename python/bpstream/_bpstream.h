/*
 * _bpstream.h — what the extension's C files share (internal: not installed).
 *
 * The CPython binding of bpstream (bpstream._bpstream): Python objects in, C ABI
 * (bpstream.h) calls, Python objects or exceptions out. Modelled on CPython's
 * Modules/_queuemodule.c: multi-phase init, a module state holding the types and
 * exceptions, heap types with GC and weakref support. One job per file:
 *
 *   _module.c     the module (state, init, exceptions, Policy) and the process (GIL, exit, fork)
 *   _errors.c     the one place a bps_status becomes a Python exception
 *   _args.c       Python arguments to C values: timeouts, policies, keyword parsing
 *   _stream.c     the BoundedStream type (and its Stats)
 *   _queue.c      the Queue type: queue.Queue's faces over the same stream
 *   _readahead.c  iteration, and the read-ahead behind every consumer call (_readahead.h:
 *                 its inline hot path)
 *   _aio.c        asyncio: awaitables, event-loop wake-ups (eventfd), readiness watches
 *   _capi.c       the C API for other extensions (bpstream_capi.h), as a capsule
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
 *    Python object, and what it drops is left to the exiting process (see "The process",
 *    _module.c).
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
#ifndef BPSTREAM_EXTENSION_H
#define BPSTREAM_EXTENSION_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stdint.h>

#include "bpstream.h"

#define N_POLICIES 6
#define NS_PER_SEC 1000000000LL
/* Signals are checked this often while the main thread waits (Ctrl-C within 100 ms). */
#define MAIN_THREAD_POLL_NS ((int64_t)50 * 1000 * 1000)

typedef struct {
    PyTypeObject *stream_type;     /* bpstream.BoundedStream */
    PyTypeObject *queue_type;      /* bpstream.Queue */
    PyTypeObject *stats_type;      /* bpstream.Stats (structseq) */
    PyObject *Full;
    PyObject *Empty;
    PyObject *Closed;
    PyObject *ProducerError;       /* a producer ended the stream with a non-OS error */
    PyTypeObject *iterator_type;   /* bpstream._bpstream.StreamIterator */
    PyObject *policy_enum;         /* bpstream.Policy (an enum.StrEnum) */
    PyObject *policy_members[N_POLICIES];  /* indexed by bps_policy */
    /* asyncio (_aio.c) */
    PyTypeObject *ready_type;      /* an awaitable already done (the fast path) */
    PyTypeObject *waker_type;      /* _Waker: an event loop's eventfd */
    PyTypeObject *watch_type;      /* _Watch: one stream's readiness watch for one loop */
    PyObject *aio;                 /* bpstream._aio (the waiting half), imported on first use */
    PyObject *ready_cache;         /* one Ready reused while nobody else holds it (_aio.c) */
    /* rate controllers and the limiter (_rate.c, _limiter.c) */
    PyTypeObject *manual_clock_type;   /* bpstream.ManualClock */
    PyTypeObject *rate_base_type;      /* bpstream._bpstream._RateController */
    PyTypeObject *token_bucket_type;   /* bpstream.TokenBucket */
    PyTypeObject *sliding_window_type; /* bpstream.SlidingWindow */
    PyTypeObject *aimd_type;           /* bpstream.AIMD */
    PyTypeObject *ticket_type;         /* _Ticket: one async waiter's place in a queue */
    PyTypeObject *limiter_type;        /* bpstream.Limiter */
    PyTypeObject *token_type;          /* bpstream.Token */
    PyObject *control;             /* bpstream._control (async waiting), imported on first use */
} module_state;

typedef struct StreamObject {
    PyObject_HEAD
    bps_stream *stream;            /* NULL until __init__; then ours until dealloc */
    module_state *state;           /* borrowed: our type keeps the module alive */
    PyObject *weakreflist;
    Py_ssize_t getters_waiting;    /* getters waiting without the GIL (see above) */
    bps_policy policy;
    bps_reader *reader;            /* a native reader feeding this stream, or NULL; ours */
    long long unbounded_maxsize;   /* Queue: the maxsize <= 0 given, read back as given */
    /* Read-ahead (see "Read-ahead", _readahead.c): items reserved from the core in one call.
     * ahead[ahead_next..ahead_count) are ours and not yet delivered. */
    void **ahead;                  /* NULL until the first batched refill; PyMem_Malloc */
    intptr_t *delivered;           /* the core's delivery counter (ahead_deliver adds to it) */
    Py_ssize_t ahead_next;
    Py_ssize_t ahead_count;
    Py_ssize_t ahead_batch;        /* items per refill; 1: no read-ahead */
    Py_ssize_t live_iterators;     /* iterators alive: the last one hands back leftovers */
    int handed_to_native;          /* the C API gave native code a handle (a native producer) */
    /* Every initialised StreamObject of the process, for the fork child (GIL held). */
    struct StreamObject *prev_stream, *next_stream;
    PyObject *async_waiters;       /* bpstream._aio's per-loop waiters, or NULL (_aio.py) */
    PyObject *flow_listeners;      /* list of capsules, one per on_flow_change registration
                                      (each owns a bps_flow_listener), or NULL (_stream.c) */
    PyObject *failure;             /* (exception, traceback) a Python producer closed the
                                    * stream with (_close_with_error), or NULL */
    /* Flow control for asyncio puts (_aio.c/_aio.py pass the gate and take permits
     * themselves): ASYNC_FLOW_* bits, 0 for a plain stream (aput's fast path); pacing is
     * the rate controller pacing puts (rate=, or the adaptive policy's default AIMD), a
     * strong reference shared with the core, or NULL. */
    int async_flow;
    PyObject *pacing;
} StreamObject;

#define ASYNC_FLOW_GATED 1      /* flow=: puts that may wait pass the flow gate */
#define ASYNC_FLOW_PACED 2      /* rate= or adaptive: puts that may wait take a permit */
#define ASYNC_FLOW_ADAPTIVE 4   /* policy adaptive: puts feed the rate back */


/* A METH_FASTCALL|METH_KEYWORDS signature: names[0, posonly) are positional-only,
 * names[posonly, kwonly) positional-or-keyword, names[kwonly, n) keyword-only; the
 * first `required` must be given. Only used off the fast paths. */
typedef struct {
    const char *fname;
    const char *const *names;
    int n, posonly, kwonly, required;
} arg_spec;

#define CHECK_INIT(self)                      \
    do {                                      \
        if ((self)->stream == NULL) {         \
            return not_initialized(self);     \
        }                                     \
    } while (0)

/* The module's definition (_module.c): types find their module state through it. */
extern struct PyModuleDef bpstream_module;

static inline module_state *
get_module_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* ------------------------------------------------------------------------- */
/* Items released by the stream                                              */
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

/* ------------------------------------------------------------------------- */
/* Blocking without the GIL (_module.c owns the hook and the main thread)    */
/* ------------------------------------------------------------------------- */

/* The thread that runs signal handlers (_module.c, "The process"). GIL held. */
extern unsigned long main_thread_ident;

/* One blocking call's waiter, on the caller's C stack. */
typedef struct {
    bps_waiter waiter;
    PyThreadState *tstate;         /* saved while the GIL is released */
    Py_ssize_t *getters_waiting;   /* NULL for calls that never remove items */
} gil_waiter;

// The waiter hook: releases the GIL while a call waits (see GIL RULES).
int gil_wait_hook(void *context, bps_wait_event event);

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

/* ------------------------------------------------------------------------- */
/* The exception being raised (3.11 backport); truth values                  */
/* ------------------------------------------------------------------------- */

/* PyErr_Fetch is deprecated from 3.12 on; these are the 3.12 API, backported. */
#if PY_VERSION_HEX >= 0x030C0000
#  define get_raised_exception PyErr_GetRaisedException
#  define set_raised_exception PyErr_SetRaisedException
#else
// Returns a new reference (or NULL if no exception is set); clears the indicator.
static inline PyObject *
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
static inline void
set_raised_exception(PyObject *exc)
{
    if (exc == NULL) {
        return;
    }
    PyErr_Restore(Py_NewRef(Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}
#endif

/* Borrows obj (may be NULL: default). Returns 1, 0, or -1 with an exception. */
static inline int
truth(PyObject *obj, int default_value)
{
    return obj == NULL ? default_value : PyObject_IsTrue(obj);
}

/* ------------------------------------------------------------------------- */
/* Shared functions, by the file that defines them                           */
/* ------------------------------------------------------------------------- */

/* _module.c */
// The policies' values ('block', ...), indexed by bps_policy; static strings.
extern const char *const policy_names[N_POLICIES];

/* From a thread that may not hold the GIL (a flow callback): takes it, unless the
 * interpreter is exiting (returns 0: skip the Python work). A 1 is paired with
 * native_gil_leave. Counted in the atexit handshake like native releases (_module.c). */
int native_gil_enter(PyGILState_STATE *gil);
void native_gil_leave(PyGILState_STATE gil);
// The release callback of every stream (steals item); any thread, GIL or not.
void release_item(void *item, void *context);
// Adds self to / removes it from the process's list of live streams. GIL held.
void all_streams_add(StreamObject *self);
void all_streams_remove(StreamObject *self);

/* _errors.c */
// Sets the exception for a failed call; returns NULL.
PyObject *set_error(module_state *st, bps_status status);
// set_error for a call on a stream (BPS_FAILED: the producer's error); returns NULL.
PyObject *stream_error(StreamObject *self, bps_status status);
// RuntimeError for a stream whose __init__ did not run; returns NULL.
PyObject *not_initialized(StreamObject *self);

/* _args.c */
// Borrows obj. Seconds (None, int, float) -> nanoseconds (-1: no limit). 0 or -1.
int timeout_to_ns(PyObject *obj, int64_t *out);
// Borrows obj. Any str (a Policy member is one) -> bps_policy. 0 or -1.
int policy_from_object(PyObject *obj, bps_policy *out);
// out[i] gets a borrowed reference, or NULL when omitted. Returns 0 or -1.
int parse_args(const arg_spec *spec, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames, PyObject **out);

/* _stream.c (the BoundedStream type; Queue reuses its slots and methods) */
extern PyType_Spec stream_spec;
extern PyStructSequence_Desc stats_desc;
// Borrows item. The status; on anything but BPS_OK the stream took nothing.
bps_status do_put(StreamObject *self, PyObject *item, int64_t timeout_ns);
// Creates self's stream once (__init__). Returns 0 or -1 with an exception.
int stream_setup(StreamObject *self, int64_t capacity, bps_policy policy);
// Stops and joins self's native reader, if any. GIL held (released while joining).
void stop_reader(StreamObject *self);
int stream_traverse(StreamObject *self, visitproc visit, void *arg);
int stream_clear(StreamObject *self);
void stream_dealloc(StreamObject *self);
// len(): the depth, or -1 with an exception.
Py_ssize_t stream_len(StreamObject *self);
// Methods and properties Queue shares. Return a new reference, or NULL.
PyObject *stream_get_nowait(StreamObject *self, PyObject *Py_UNUSED(ignored));
PyObject *stream_close(StreamObject *self, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames);
PyObject *stream_get_closed(StreamObject *self, void *Py_UNUSED(closure));
// __exit__: closes (draining) and stops a reader. Returns None or NULL.
PyObject *stream_exit(StreamObject *self, PyObject *const *args, Py_ssize_t nargs);

/* _readahead.c */
extern PyType_Spec iterator_spec;
// The read-ahead batch for this policy and capacity (1: none).
Py_ssize_t stream_ahead_batch(bps_policy policy, int64_t capacity);
// Settles the read-ahead with the core (undelivered items go back). GIL held; never waits.
void ahead_settle(StreamObject *self);
// The next item for any consumer call (read-ahead first); a new reference, or NULL with
// *status the core's failure (no exception set), or NULL with an exception (*status BPS_OK).
PyObject *take_next(StreamObject *self, int64_t timeout_ns, bps_status *status);
// iter(stream): returns a new reference to a new iterator, or NULL.
PyObject *stream_iter(StreamObject *self);

/* _queue.c */
extern PyType_Spec queue_spec;

/* _clock.c */
// Creates ManualClock into st. 0, or -1 with an exception.
int clock_init_types(PyObject *module, module_state *st);
// Borrows obj. The native clock of a bpstream.ManualClock (borrowed: valid while obj
// lives), or NULL with TypeError set.
bps_clock *bpstream_clock_handle(PyObject *obj);
// Borrows obj: None (NULL clock: CLOCK_MONOTONIC) or a ManualClock. 0, or -1 + TypeError.
int clock_from_object(module_state *st, PyObject *obj, bps_clock **out);
// Borrows clock_obj: a ManualClock, or NULL (the monotonic clock). Its time in seconds
// (a new reference), or NULL.
PyObject *clock_now_seconds(PyObject *clock_obj);

/* _admission.c (what _rate.c and _limiter.c share) */
// Borrows obj. A real number (int, float, anything with __float__; not str, not bool).
// 0, or -1 with TypeError.
int real_number(PyObject *obj, const char *what, double *out);
// Seconds as a finite number > 0 (what), or -1 with ValueError/TypeError.
int positive_seconds(PyObject *obj, const char *what, double *out);
// A permit count: an int 1 ... 2^31 (what), or -1 with ValueError/TypeError.
int permit_count(PyObject *obj, const char *what, int64_t *out);
// Borrows obj (NULL: 1). The n of a call: an int >= 1 (beyond 2^31: INT64_MAX, which the
// core reports as never grantable). 0, or -1 with ValueError/TypeError.
int parse_n(PyObject *obj, int64_t *out);
// Seconds -> nanoseconds for a window or cooldown already checked finite and >= 0.
int64_t seconds_to_ns(double seconds);
// Nanoseconds -> seconds: a new float, or NULL.
PyObject *ns_to_seconds(int64_t ns);
// The (n=1, timeout=None) of acquire/aacquire; n NULL: (timeout=None) alone (a Limiter).
// *timeout_obj: borrowed, NULL when omitted. 0, or -1 with an exception.
int parse_acquire_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames, int64_t *n, int64_t *timeout_ns,
                       PyObject **timeout_obj);
// dict[key] = value (stolen; NULL: an exception is set). 0 or -1.
int dict_set_new(PyObject *dict, const char *key, PyObject *value);

/* A line of waiters of the C ABI (a bps_rate or a bps_limiter: a limiter's n is always 1)
 * seen through the calls its acquires share. line is borrowed. */
typedef struct {
    void *line;
    bps_status (*try_before_wait)(void *line, int64_t n);
    bps_status (*acquire)(void *line, int64_t n, int64_t timeout_ns, const bps_waiter *waiter,
                          int64_t *out_waited_ns);
    bps_status (*enqueue)(void *line, int64_t n, bps_notify_fn notify,
                          bps_context_release_fn release_context, void *context,
                          bps_ticket **out_ticket);
} admission_line;

// The blocking acquire of n (GIL held; released while waiting, Ctrl-C polled; timeout_ns:
// < 0 no limit, 0 never waits). Once tasks have waited in this process, a call that must
// wait first clears tickets a closed loop left in line. 0 with *status (BPS_OK: taken,
// *waited_ns the wait), or -1 with an exception (nothing taken).
int admission_acquire(module_state *st, const admission_line *line, int64_t n,
                      int64_t timeout_ns, bps_status *status, int64_t *waited_ns);
// The first look of an async acquire: timeout 0 is a counted acquire that never waits,
// any other a look whose refusal (BPS_FULL: go on to wait) is not counted.
bps_status admission_first_look(const admission_line *line, int64_t n, int64_t timeout_ns);
// Borrows owner and waker. A new _Ticket for n in line, notified through waker; NULL
// with an exception, or NULL with *status != BPS_OK and none (the core refused: the
// caller raises).
PyObject *admission_enqueue(module_state *st, PyObject *owner, const admission_line *line,
                            int64_t n, PyObject *waker, bps_status *status);
// A new _Ticket owning `ticket` (and, through it, the notify context): NULL + exception
// (then the ticket was released). owner: the controller or limiter (kept alive).
PyObject *ticket_new(module_state *st, PyObject *owner, bps_ticket *ticket, void *context);
// bpstream._control.<name>(*args): the waiting half. Returns a new reference (a coroutine).
PyObject *call_control(module_state *st, const char *name, PyObject *const *args, size_t nargs);
// Before a thread waits in a line that async tickets may share: releases the tickets of
// event loops closed while their tasks waited. 0, or -1 with an exception.
int forget_closed_loops(module_state *st);
// Creates _Ticket into st. 0, or -1 with an exception.
int admission_init_types(PyObject *module, module_state *st);

/* _rate.c */
// Creates the rate controllers into st. 0, or -1 with an exception.
int rate_init_types(PyObject *module, module_state *st);
// Borrows obj. The native controller of a TokenBucket, SlidingWindow or AIMD (borrowed:
// valid while obj lives), or NULL with TypeError (or RuntimeError: __init__ not run) set.
bps_rate *bpstream_rate_handle(PyObject *obj);

/* _limiter.c */
// Creates Limiter and Token into st. 0, or -1 with an exception.
int limiter_init_types(PyObject *module, module_state *st);
// Borrows obj. A new reference to the native limiter of a bpstream.Limiter, or NULL with
// TypeError set (the capsule's limiter_handle).
bps_limiter *bpstream_limiter_handle(PyObject *obj);

/* _capi.c */
// Returns a new reference: the capsule holding the table, or NULL with an exception.
PyObject *capi_capsule(void);

/* _aio.c */
// Creates the asyncio types into st. Returns 0, or -1 with an exception.
int aio_init_types(PyObject *module, module_state *st);
// The async face of a stream: awaitables that are done at once when an item or room is
// there (the fast path), else bpstream._aio's waiting coroutine. Methods of BoundedStream:
PyObject *stream_aget(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *stream_aput(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *stream_try_put(StreamObject *self, PyObject *item);
// _flow_gate() -> (state, delay_ns): bps_stream_flow_gate; _flow_gave_up(): one rejected put.
PyObject *stream_flow_gate(StreamObject *self, PyObject *Py_UNUSED(ignored));
PyObject *stream_flow_gave_up(StreamObject *self, PyObject *Py_UNUSED(ignored));
// Queue._aqput(item): asyncio.Queue.put's awaitable (result None). A method of Queue.
PyObject *queue_aqput(StreamObject *self, PyObject *item);
PyObject *stream_account(StreamObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *stream_watch(StreamObject *self, PyObject *waker);
PyObject *stream_aenter(StreamObject *self, PyObject *Py_UNUSED(ignored));
PyObject *stream_aexit(StreamObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *stream_aget_many(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *stream_aput_many(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
extern const char stream_aget_doc[], stream_aput_doc[], stream_aget_many_doc[], stream_aput_many_doc[];
// The iterator's __anext__ for `async for`: the next item of self's stream.
PyObject *aio_anext(StreamObject *self);
// Steals value: an awaitable already done with it (NULL value: NULL). A new reference.
PyObject *ready_new(module_state *st, PyObject *value);
// The exception being raised, deferred to the await. A new reference, or NULL.
PyObject *ready_from_error(module_state *st);
// A notify context on a loop's _Waker for a core wait registration (a ticket): pass
// aio_notify / aio_notify_context_release / it to the core. NULL + exception.
void *aio_notify_context_new(module_state *st, PyObject *waker);
void aio_notify(void *context, uint32_t events);
void aio_notify_context_release(void *context);
// The events notified since the last call (and clear). Context must be alive.
uint32_t aio_notify_take_pending(void *context);

#endif
