/*
 * bpstream_capi.h — the C API bpstream exports to other CPython extensions.
 *
 * Lets a C, C++, Rust or Swift extension feed a bpstream.BoundedStream from its own
 * native threads, WITHOUT linking against libbpstream: the functions come through a
 * capsule, the way the datetime module exports PyDateTime_CAPI.
 *
 *     #include <bpstream_capi.h>     // cc ... -I$(python -c 'import bpstream; print(bpstream.get_include())')
 *
 *     const BPStream_CAPI *api = BPStream_ImportCAPI();          // with the GIL; NULL + ImportError
 *     bps_stream *s = api->stream_handle(obj);                   // with the GIL; a new reference
 *     // ... hand `s` to a native thread, which needs no GIL:
 *     bps_status st = api->put_frame(s, data, length, timeout_ns, NULL);
 *     if (st == BPS_CLOSED) { ... the consumer is gone: stop producing ... }
 *     api->close(s, 0);                  // end of stream, or:
 *     api->close_with_error(s, errno, "read failed");
 *     api->release(s);                   // drop the thread's reference (any thread)
 *
 * CONTRACT
 *  - Frames: put_frame COPIES data[0..length); the caller's buffer is always the caller's.
 *    The Python consumer receives each frame as one `bytes` object, in order. A stream may
 *    carry frames and Python objects put from Python at once.
 *  - Threads: every function but stream_handle may be called from any thread, concurrently,
 *    with or without the GIL. None needs the GIL for frames; but when a call makes the stream
 *    let go of a Python object put from Python (put_frame(s) evicting one under drop_oldest
 *    or drop_all, close with BPS_CLOSE_IMMEDIATE, the last release), it takes the GIL for
 *    that release. So do not make those calls while holding a lock that a thread holding
 *    the GIL may wait for; a stream that only carries frames never takes it. Blocking calls wait (up to their
 *    timeout: < 0 no limit, 0 never) as the stream's policy says, so a slow consumer holds
 *    the producer back; or they shed/evict/reject by the policy.
 *  - Statuses (bpstream.h): BPS_OK stored; BPS_SHED counted and shed (drop_newest);
 *    BPS_FULL no room (reject, or the timeout passed); BPS_CLOSED the stream was closed —
 *    by the consumer (close(), leaving its loop and dropping the stream, garbage
 *    collection) or by a producer: stop producing. BPS_INVALID_ARGUMENT: a NULL handle,
 *    or NULL data with a nonzero length.
 *  - Lifetime: stream_handle returns a NEW reference to the native stream; it stays valid
 *    after the Python object is gone (then closed), until you release it. Release every
 *    reference you take, exactly once.
 *  - Errors: close_with_error(code, message) ends the stream after the frames already put;
 *    the Python consumer then gets OSError(code, message) when code != 0 (the matching
 *    subclass: FileNotFoundError for ENOENT, ...; MemoryError(message) for ENOMEM), else
 *    bpstream.ProducerError(message).
 */
#ifndef BPSTREAM_CAPI_H
#define BPSTREAM_CAPI_H

#include <Python.h>
#include "bpstream.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BPSTREAM_CAPI_NAME "bpstream._bpstream._C_API"
#define BPSTREAM_CAPI_VERSION 2  /* 2: the limiter functions */

typedef struct BPStream_CAPI {
    size_t size;            /* sizeof(BPStream_CAPI) of the exporter; fields only ever added */
    uint32_t version;       /* BPSTREAM_CAPI_VERSION of the exporter */

    /* With the GIL. The native stream behind a bpstream.BoundedStream (or Queue) object:
     * a new reference; NULL with TypeError set (not a stream) or RuntimeError set (a
     * subclass whose __init__ never ran). */
    bps_stream *(*stream_handle)(PyObject *obj);

    /* No GIL needed. Puts a copy of data[0..length) as one frame (see the contract). */
    bps_status (*put_frame)(bps_stream *stream, const void *data, size_t length,
                            int64_t timeout_ns, const bps_waiter *waiter);

    /* No GIL needed. Puts copies of frames[0..count) in order under one stream lock (the
     * fast way to stream many small results). *out_taken (if non-NULL): how many went in. */
    bps_status (*put_frames)(bps_stream *stream, const bps_bytes *frames, size_t count,
                             int64_t timeout_ns, const bps_waiter *waiter, size_t *out_taken);

    /* No GIL needed. Ends the stream: flags 0 lets the consumer drain what is buffered;
     * BPS_CLOSE_IMMEDIATE discards it. */
    bps_status (*close)(bps_stream *stream, uint32_t flags);

    /* No GIL needed. Ends the stream with an error, after what is buffered. */
    bps_status (*close_with_error)(bps_stream *stream, int32_t code, const char *message);

    /* No GIL needed. 1 once the stream is closed (by anyone), else 0; -1 for NULL. */
    int (*is_closed)(bps_stream *stream);

    /* No GIL needed. Reference counting of the native stream. */
    bps_status (*retain)(bps_stream *stream);
    bps_status (*release)(bps_stream *stream);

    /* No GIL needed. A static name for a status; never NULL. */
    const char *(*status_string)(bps_status status);

    /* ---- version 2: admission by a bpstream.Limiter from native threads ----
     *     bps_limiter *lim = api->limiter_handle(obj);     // with the GIL; a new reference
     *     // on a native thread, no GIL:
     *     if (api->limiter_acquire(lim, timeout_ns, NULL, NULL) == BPS_OK) {
     *         ... the unit of work ...
     *         api->limiter_release_slot(lim);             // exactly once per admission
     *     }
     *     api->limiter_release(lim);                       // drop the reference (any thread)
     * Admissions taken here and Tokens taken from Python share the same slots, rate and
     * FIFO line. limiter_acquire waits without any runtime lock (pass a bps_waiter to be
     * told; BPS_TIMED_OUT: nothing taken); limiter_try_acquire never waits (BPS_FULL:
     * nothing taken). */

    /* With the GIL. The native limiter behind a bpstream.Limiter: a new reference; NULL
     * with TypeError set (not a Limiter) or RuntimeError (its __init__ never ran). */
    bps_limiter *(*limiter_handle)(PyObject *obj);
    /* No GIL needed. bps_limiter_acquire / try_acquire / release_slot (bpstream.h). */
    bps_status (*limiter_acquire)(bps_limiter *limiter, int64_t timeout_ns,
                                  const bps_waiter *waiter, int64_t *out_waited_ns);
    bps_status (*limiter_try_acquire)(bps_limiter *limiter);
    bps_status (*limiter_release_slot)(bps_limiter *limiter);
    /* No GIL needed. Drops a reference taken by limiter_handle. */
    bps_status (*limiter_release)(bps_limiter *limiter);
} BPStream_CAPI;

/* With the GIL: imports bpstream and returns its C API (borrowed, lives as long as the
 * process), or NULL with ImportError set. */
static inline const BPStream_CAPI *
BPStream_ImportCAPI(void)
{
    const BPStream_CAPI *api = (const BPStream_CAPI *)PyCapsule_Import(BPSTREAM_CAPI_NAME, 0);
    if (api != NULL && (api->size < sizeof(BPStream_CAPI) || api->version < BPSTREAM_CAPI_VERSION)) {
        PyErr_SetString(PyExc_ImportError, "bpstream: the installed bpstream's C API is too old");
        return NULL;
    }
    return api;
}

#ifdef __cplusplus
}
#endif

#endif /* BPSTREAM_CAPI_H */
