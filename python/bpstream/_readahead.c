/*
 * _readahead.c — iteration and the read-ahead that serves every consumer call.
 *
 * Owns: the read-ahead (its batch size, refills, settling with the core), take_next (the
 * next item for get, get_nowait, next and the async calls), and the iterator type
 * (bpstream._bpstream.StreamIterator). The hot delivery, ahead_deliver, is inline in
 * _readahead.h.
 */
#include "_readahead.h"

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
Py_ssize_t
stream_ahead_batch(bps_policy policy, int64_t capacity)
{
    if (policy == BPS_POLICY_DROP_OLDEST || policy == BPS_POLICY_DROP_ALL) {
        return 1;
    }
    Py_ssize_t batch = capacity == BPS_CAPACITY_UNBOUNDED ? AHEAD_MAX
                       : (Py_ssize_t)(capacity / 4);
    return batch > AHEAD_MAX ? AHEAD_MAX : (batch < 1 ? 1 : batch);
}

/* Settles the read-ahead with the core: the delivered items count as consumed (their
 * frames are freed now); the undelivered ones go back to the front of the stream.
 * GIL held; never waits. */
void
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

PyObject *
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

PyType_Spec iterator_spec = {
    .name = "bpstream._bpstream.StreamIterator",
    .basicsize = sizeof(IteratorObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = iterator_slots,
};
