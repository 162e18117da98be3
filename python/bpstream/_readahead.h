/*
 * _readahead.h — the read-ahead's hot path, inline where items are delivered
 * (_readahead.c: next, get, get_nowait; _stream.c: get_many). The read-ahead itself,
 * its invariants and the rest of its code are in _readahead.c.
 */
#ifndef BPSTREAM_READAHEAD_H
#define BPSTREAM_READAHEAD_H

#include "_bpstream.h"

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

// Returns a new reference (the oldest item), or NULL with an exception: get() and
// get_nowait() for BoundedStream and Queue. The read-ahead is served inline (as the for
// loop's next does), the rest by take_next.
static inline PyObject *
do_get(StreamObject *self, int64_t timeout_ns)
{
    if (self->ahead_next < self->ahead_count) {   /* the hot path */
        return ahead_deliver(self);
    }
    bps_status status;
    PyObject *item = take_next(self, timeout_ns, &status);
    if (item == NULL && status != BPS_OK) {
        return stream_error(self, status);
    }
    return item;
}

#endif
