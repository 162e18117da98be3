/*
 * tokens.c — a native producer feeding a bpstream.BoundedStream from its own pthread.
 *
 * The template to copy when you stream results out of a native library into a Python
 * `for` loop: take the stream's native handle through bpstream's C API (no link against
 * libbpstream), hand it to a thread that never touches the GIL, put byte frames, and stop
 * as soon as a put says BPS_CLOSED (the consumer closed the stream, left its loop and
 * dropped it, or it was garbage-collected).
 *
 *   tokens.start(stream, count, rate=0.0, prefix="token", error_errno=0, error_message=None)
 *       -> Producer       # a thread putting `count` frames b"<prefix><i> ", `rate` per
 *                         # second (0: as fast as the stream takes them), then closing the
 *                         # stream, or closing it with an error when error_errno or
 *                         # error_message is given
 *   tokens.count(stream, count, batch=64) -> Producer
 *                         # as fast as possible: `count` 8-byte frames (i as a little-endian
 *                         # int64), `batch` frames per put_frames call (one stream lock each)
 *   Producer.join(timeout=None) -> bool   # True once the thread has ended (and is joined)
 *   Producer.done, Producer.produced, Producer.last_status
 *
 * Build: python examples/native_producer/build.py   (make examples does it)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bpstream_capi.h"

static const BPStream_CAPI *api;   /* set at import; valid for the life of the process */

/* What one producer thread needs. Owned by the thread while it runs, then by the
 * Producer object, which frees it after joining. */
typedef struct {
    bps_stream *stream;            /* the thread's own reference; released by the thread */
    long long count;
    double rate;
    char prefix[64];
    long long batch;               /* > 0: tokens.count's binary frames, this many per put */
    int error_errno;
    char error_message[256];       /* "" with error_errno 0: end normally */
    atomic_llong produced;         /* frames the stream took (BPS_OK) */
    atomic_int last_status;
    atomic_int done;               /* 1 once the thread has released everything */
} job_t;

static void
sleep_seconds(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* tokens.count: binary counter frames, put in batches (one stream lock per batch). */
static bps_status
produce_counter(job_t *job)
{
    enum { MAX_BATCH = 256 };
    int64_t values[MAX_BATCH];
    bps_bytes frames[MAX_BATCH];
    bps_status status = BPS_OK;
    long long batch = job->batch > MAX_BATCH ? MAX_BATCH : job->batch;
    for (long long i = 0; i < job->count && status != BPS_CLOSED;) {
        size_t n = 0;
        for (; n < (size_t)batch && i < job->count; n++, i++) {
            values[n] = (int64_t)i;   /* little-endian on the machines we build for */
            frames[n].data = &values[n];
            frames[n].length = sizeof(int64_t);
        }
        size_t taken = 0;
        status = api->put_frames(job->stream, frames, n, -1, NULL, &taken);
        atomic_fetch_add(&job->produced, (long long)taken);
        atomic_store(&job->last_status, (int)status);
    }
    return status;
}

static void *
produce(void *arg)
{
    job_t *job = arg;
    char frame[128];
    bps_status status = BPS_OK;
    for (long long i = 0; job->batch == 0 && i < job->count; i++) {
        int length = snprintf(frame, sizeof(frame), "%s%lld ", job->prefix, i);
        /* Blocks while the stream is full (policy 'block'): backpressure. */
        status = api->put_frame(job->stream, frame, (size_t)length, -1, NULL);
        atomic_store(&job->last_status, (int)status);
        if (status == BPS_CLOSED) {
            break;   /* the consumer is gone: stop producing */
        }
        if (status == BPS_OK) {
            atomic_fetch_add(&job->produced, 1);
        }
        if (job->rate > 0) {
            sleep_seconds(1.0 / job->rate);
            if (api->is_closed(job->stream) == 1) {
                atomic_store(&job->last_status, (int)BPS_CLOSED);
                break;   /* notice a cancelled stream between ticks, too */
            }
        }
    }
    if (job->batch > 0) {
        status = produce_counter(job);
    }
    if (atomic_load(&job->last_status) != BPS_CLOSED) {
        if (job->error_errno != 0 || job->error_message[0] != '\0') {
            api->close_with_error(job->stream, job->error_errno, job->error_message);
        }
        else {
            api->close(job->stream, 0);   /* end of stream: the consumer drains, then stops */
        }
    }
    api->release(job->stream);
    atomic_store(&job->done, 1);
    return NULL;
}

typedef struct {
    PyObject_HEAD
    pthread_t thread;
    job_t *job;
    int joined;
} ProducerObject;

static PyObject *
producer_join(ProducerObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:join", kwlist, &timeout_obj)) {
        return NULL;
    }
    double timeout = -1;
    if (timeout_obj != Py_None && (timeout = PyFloat_AsDouble(timeout_obj)) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "timeout must be non-negative");
        }
        return NULL;
    }
    /* Wait for `done` in short slices without the GIL, answering Ctrl-C between them. */
    double waited = 0;
    while (!self->joined && !atomic_load(&self->job->done)) {
        if (timeout >= 0 && waited >= timeout) {
            Py_RETURN_FALSE;
        }
        Py_BEGIN_ALLOW_THREADS
        sleep_seconds(0.005);
        Py_END_ALLOW_THREADS
        waited += 0.005;
        if (PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
    if (!self->joined) {
        pthread_join(self->thread, NULL);
        self->joined = 1;
    }
    Py_RETURN_TRUE;
}

static PyObject *
producer_get_done(ProducerObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(atomic_load(&self->job->done));
}

static PyObject *
producer_get_produced(ProducerObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(atomic_load(&self->job->produced));
}

static PyObject *
producer_get_last_status(ProducerObject *self, void *closure)
{
    (void)closure;
    return PyUnicode_FromString(api->status_string((bps_status)atomic_load(&self->job->last_status)));
}

static void
producer_dealloc(ProducerObject *self)
{
    if (!self->joined) {
        /* The thread may still be waiting in a put; it ends once the stream is closed.
         * Detach rather than block here; it frees nothing of ours but the job. */
        pthread_detach(self->thread);
        /* The job is leaked on purpose only in this case: the thread still uses it. */
    }
    else {
        PyMem_RawFree(self->job);
    }
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *tokens_start_job(PyObject *, PyObject *, PyObject *, long long);

static PyMethodDef producer_methods[] = {
    {"join", (PyCFunction)(void (*)(void))producer_join, METH_VARARGS | METH_KEYWORDS,
     "join(timeout=None) -> bool: wait for the thread to end; True once it has."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef producer_getset[] = {
    {"done", (getter)producer_get_done, NULL, "True once the thread has ended.", NULL},
    {"produced", (getter)producer_get_produced, NULL, "Frames the stream took.", NULL},
    {"last_status", (getter)producer_get_last_status, NULL,
     "The status of the last put (e.g. 'closed: ...' after cancellation).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot producer_slots[] = {
    {Py_tp_dealloc, producer_dealloc},
    {Py_tp_methods, producer_methods},
    {Py_tp_getset, producer_getset},
    {Py_tp_doc, "A native producer thread (made by tokens.start)."},
    {0, NULL},
};

static PyType_Spec producer_spec = {
    .name = "tokens.Producer",
    .basicsize = sizeof(ProducerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = producer_slots,
};

static PyTypeObject *producer_type;

static PyObject *
tokens_start_job(PyObject *module, PyObject *args, PyObject *kwargs, long long batch)
{
    (void)module;
    static char *kwlist[] = {"stream", "count", "rate", "prefix", "error_errno",
                             "error_message", NULL};
    PyObject *stream_obj;
    long long count;
    double rate = 0;
    const char *prefix = "token";
    int error_errno = 0;
    const char *error_message = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OL|dsiz:start", kwlist, &stream_obj, &count,
                                     &rate, &prefix, &error_errno, &error_message)) {
        return NULL;
    }
    bps_stream *stream = api->stream_handle(stream_obj);   /* a new reference, GIL held */
    if (stream == NULL) {
        return NULL;
    }
    job_t *job = PyMem_RawCalloc(1, sizeof(job_t));   /* used without the GIL: Raw */
    ProducerObject *self = job == NULL ? NULL : PyObject_New(ProducerObject, producer_type);
    if (self == NULL) {
        PyMem_RawFree(job);
        api->release(stream);
        return PyErr_NoMemory();
    }
    job->stream = stream;
    job->count = count;
    job->batch = batch;
    job->rate = rate;
    snprintf(job->prefix, sizeof(job->prefix), "%s", prefix);
    job->error_errno = error_errno;
    snprintf(job->error_message, sizeof(job->error_message), "%s",
             error_message == NULL ? "" : error_message);
    self->job = job;
    self->joined = 0;
    int err = pthread_create(&self->thread, NULL, produce, job);
    if (err != 0) {
        self->joined = 1;   /* nothing to join; dealloc frees the job */
        api->release(stream);
        Py_DECREF(self);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return (PyObject *)self;
}

static PyObject *
tokens_start(PyObject *module, PyObject *args, PyObject *kwargs)
{
    return tokens_start_job(module, args, kwargs, 0);
}

static PyObject *
tokens_count(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"stream", "count", "batch", NULL};
    PyObject *stream_obj;
    long long count, batch = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OL|L:count", kwlist, &stream_obj, &count,
                                     &batch)) {
        return NULL;
    }
    if (batch < 1) {
        PyErr_SetString(PyExc_ValueError, "batch must be at least 1");
        return NULL;
    }
    PyObject *call_args = Py_BuildValue("(OL)", stream_obj, count);
    if (call_args == NULL) {
        return NULL;
    }
    PyObject *producer = tokens_start_job(module, call_args, NULL, batch);
    Py_DECREF(call_args);
    return producer;
}

static PyMethodDef tokens_methods[] = {
    {"count", (PyCFunction)(void (*)(void))tokens_count, METH_VARARGS | METH_KEYWORDS,
     "count(stream, count, batch=64)\n"
     "Start a native thread putting `count` 8-byte frames (a little-endian int64 counter),\n"
     "`batch` per call; returns a Producer."},
    {"start", (PyCFunction)(void (*)(void))tokens_start, METH_VARARGS | METH_KEYWORDS,
     "start(stream, count, rate=0.0, prefix='token', error_errno=0, error_message=None)\n"
     "Start a native thread putting `count` frames into `stream`; returns a Producer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef tokens_module = {
    PyModuleDef_HEAD_INIT, "tokens", "A native producer for bpstream (example).", -1,
    tokens_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit_tokens(void)
{
    api = BPStream_ImportCAPI();
    if (api == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&tokens_module);
    if (module == NULL) {
        return NULL;
    }
    producer_type = (PyTypeObject *)PyType_FromSpec(&producer_spec);
    if (producer_type == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
