/*
 * limiter_capi.c — a test extension: native threads (no GIL) admitted by a
 * bpstream.Limiter through the C API capsule (bpstream_capi.h, version 2).
 *
 *   run(limiter, threads, iterations, timeout_ns) -> (admitted, timed_out, peak)
 *
 * Each of `threads` pthreads takes `iterations` admissions with limiter_acquire (or
 * limiter_try_acquire when timeout_ns == 0, retrying), counts the slots held at once
 * (the peak must never exceed max_concurrent), and gives each back with
 * limiter_release_slot. The GIL is released while the threads run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdatomic.h>

#include "bpstream_capi.h"

static const BPStream_CAPI *api;

typedef struct {
    bps_limiter *limiter;
    long iterations;
    int64_t timeout_ns;
    atomic_long *held, *peak, *admitted, *timed_out;
} job;

static void *
worker(void *arg)
{
    job *j = (job *)arg;
    for (long i = 0; i < j->iterations; i++) {
        bps_status st;
        if (j->timeout_ns == 0) {
            while ((st = api->limiter_try_acquire(j->limiter)) == BPS_FULL) {
                sched_yield();
            }
        }
        else {
            st = api->limiter_acquire(j->limiter, j->timeout_ns, NULL, NULL);
        }
        if (st != BPS_OK) {
            atomic_fetch_add(j->timed_out, 1);
            continue;
        }
        long now = atomic_fetch_add(j->held, 1) + 1;
        long seen = atomic_load(j->peak);
        while (now > seen && !atomic_compare_exchange_weak(j->peak, &seen, now)) {
        }
        atomic_fetch_add(j->admitted, 1);
        atomic_fetch_sub(j->held, 1);
        api->limiter_release_slot(j->limiter);
    }
    return NULL;
}

static PyObject *
run(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *obj;
    int threads;
    long iterations;
    long long timeout_ns;
    if (!PyArg_ParseTuple(args, "OilL", &obj, &threads, &iterations, &timeout_ns)) {
        return NULL;
    }
    if (threads < 1 || threads > 64) {
        PyErr_SetString(PyExc_ValueError, "threads: 1 ... 64");
        return NULL;
    }
    bps_limiter *limiter = api->limiter_handle(obj);   /* a new reference */
    if (limiter == NULL) {
        return NULL;
    }
    atomic_long held = 0, peak = 0, admitted = 0, timed_out = 0;
    job j = {limiter, iterations, (int64_t)timeout_ns, &held, &peak, &admitted, &timed_out};
    pthread_t tids[64];
    int started = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; started < threads; started++) {
        if (pthread_create(&tids[started], NULL, worker, &j) != 0) {
            break;
        }
    }
    for (int i = 0; i < started; i++) {
        pthread_join(tids[i], NULL);
    }
    api->limiter_release(limiter);
    Py_END_ALLOW_THREADS
    if (started < threads) {
        PyErr_SetString(PyExc_OSError, "pthread_create failed");
        return NULL;
    }
    return Py_BuildValue("(lll)", atomic_load(&admitted), atomic_load(&timed_out),
                         atomic_load(&peak));
}

static PyMethodDef methods[] = {
    {"run", run, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "limiter_capi", NULL, -1, methods};

PyMODINIT_FUNC
PyInit_limiter_capi(void)
{
    api = BPStream_ImportCAPI();
    if (api == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
