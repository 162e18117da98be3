/*
 * _errors.c — the one place a bps_status becomes a Python exception.
 *
 * Owns: set_error (every status), stream_error (a stream's BPS_FAILED: the producer's own
 * error), and the RuntimeError of a stream whose __init__ did not run. The exception
 * classes themselves are created with the module (_module.c).
 */
#include "_bpstream.h"

#include <errno.h>

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
