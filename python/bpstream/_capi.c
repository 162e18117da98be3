/*
 * _capi.c — the C API for other extensions (bpstream_capi.h), exported as a capsule.
 *
 * Owns: the BPStream_CAPI table (native producers feed a BoundedStream through it without
 * linking libbpstream) and the capsule the module publishes as _C_API.
 */
#include "_bpstream.h"
#include "bpstream_capi.h"

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
    .limiter_handle = bpstream_limiter_handle,
    .limiter_acquire = bps_limiter_acquire,
    .limiter_try_acquire = bps_limiter_try_acquire,
    .limiter_release_slot = bps_limiter_release_slot,
    .limiter_release = bps_limiter_release,
};

// Returns a new reference: the capsule holding the table, or NULL with an exception.
PyObject *
capi_capsule(void)
{
    return PyCapsule_New((void *)&bpstream_capi, BPSTREAM_CAPI_NAME, NULL);
}
