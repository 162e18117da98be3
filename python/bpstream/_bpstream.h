/*
 * _bpstream.h — what the extension's C files share (internal: not installed).
 *
 *   _bpstream.c   the module, errors, the stream and queue types, iteration, the C API
 *   _aio.c        asyncio: awaitables, event-loop wake-ups (eventfd), readiness watches
 *
 * Ownership and GIL rules are stated once, at the top of _bpstream.c.
 */
#ifndef BPSTREAM_EXTENSION_H
#define BPSTREAM_EXTENSION_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "bpstream.h"

#define N_POLICIES 5

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
} module_state;

typedef struct StreamObject {
    PyObject_HEAD
    bps_stream *stream;            /* NULL until __init__; then ours until dealloc */
    module_state *state;           /* borrowed: our type keeps the module alive */
    PyObject *weakreflist;
    Py_ssize_t getters_waiting;    /* getters waiting without the GIL (see top) */
    bps_policy policy;
    bps_reader *reader;            /* a native reader feeding this stream, or NULL; ours */
    long long unbounded_maxsize;   /* Queue: the maxsize <= 0 given, read back as given */
    /* Read-ahead (see "Read-ahead" below): items reserved from the core in one call.
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
    PyObject *failure;             /* (exception, traceback) a Python producer closed the
                                    * stream with (_close_with_error), or NULL */
} StreamObject;


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

/* _bpstream.c */
// RuntimeError for a stream whose __init__ did not run; returns NULL.
PyObject *not_initialized(StreamObject *self);
// out[i] gets a borrowed reference, or NULL when omitted. Returns 0 or -1.
int parse_args(const arg_spec *spec, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames, PyObject **out);
// Borrows obj. Seconds (None, int, float) -> nanoseconds (-1: no limit). 0 or -1.
int timeout_to_ns(PyObject *obj, int64_t *out);
// Borrows item. The status; on anything but BPS_OK the stream took nothing.
bps_status do_put(StreamObject *self, PyObject *item, int64_t timeout_ns);
// __exit__: closes (draining) and stops a reader. Returns None or NULL.
PyObject *stream_exit(StreamObject *self, PyObject *const *args, Py_ssize_t nargs);
// Sets the exception for a failed call; returns NULL.
PyObject *set_error(module_state *st, bps_status status);
// set_error for a call on a stream (BPS_FAILED: the producer's error); returns NULL.
PyObject *stream_error(StreamObject *self, bps_status status);
// The next item for any consumer call (read-ahead first); a new reference, or NULL with
// *status the core's failure (no exception set), or NULL with an exception (*status BPS_OK).
PyObject *take_next(StreamObject *self, int64_t timeout_ns, bps_status *status);

/* _aio.c */
// Creates the asyncio types into st. Returns 0, or -1 with an exception.
int aio_init_types(PyObject *module, module_state *st);
// The async face of a stream: awaitables that are done at once when an item or room is
// there (the fast path), else bpstream._aio's waiting coroutine. Methods of BoundedStream:
PyObject *stream_aget(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *stream_aput(StreamObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *stream_try_put(StreamObject *self, PyObject *item);
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

#endif
