/*
 * _queue.c — bpstream.Queue: queue.Queue's signatures over the same stream.
 *
 * Owns: the Queue type's own faces (put/get with block and timeout, qsize/empty/full,
 * task_done/join, shutdown, maxsize, unfinished_tasks, sync_q/async_q) and queue.Queue's
 * argument rules. Everything else (storage, GC, close, stats) is BoundedStream's
 * (_stream.c): a Queue is a BoundedStream subclass.
 */
#include "_bpstream.h"
#include "_readahead.h"

#include <limits.h>
#include <string.h>

// Queue.put's result: None whether stored or shed. Returns a new reference.
static inline PyObject *
queue_put_result(StreamObject *self, bps_status status)
{
    if (status == BPS_OK || status == BPS_SHED) {
        Py_RETURN_NONE;
    }
    return stream_error(self, status);
}

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

PyType_Spec queue_spec = {
    .name = "bpstream.Queue",
    .basicsize = sizeof(StreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = queue_slots,
};
