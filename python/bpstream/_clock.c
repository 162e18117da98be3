/*
 * _clock.c — bpstream.ManualClock: a clock that stands still until advance() moves it.
 *
 * Owns: the ManualClock type (a bps_clock) and the lookups the controllers and the
 * Limiter make of a clock= argument (clock_from_object, clock_now_seconds).
 *
 * OWNERSHIP
 *  - A ManualClock owns one reference to its bps_clock. A controller or limiter made on it
 *    holds its own reference to the bps_clock (in the core) and one to the ManualClock
 *    object (for `clock`).
 *
 * GIL: every bps_ call is made with the GIL held. Clock moves wake waiters outside the
 * core's locks: advance() never waits.
 */
#include "_bpstream.h"

#include <math.h>

/* ------------------------------------------------------------------------- */
/* ManualClock                                                               */
/* ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    bps_clock *clock;      /* ours */
} ClockObject;

static PyObject *
clock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "ManualClock() takes no arguments");
        return NULL;
    }
    PyObject *module = PyType_GetModuleByDef(type, &bpstream_module);
    if (module == NULL) {
        return NULL;
    }
    bps_clock *clock = NULL;
    bps_status status = bps_clock_create_manual(&clock);
    if (status != BPS_OK) {
        return set_error(get_module_state(module), status);
    }
    ClockObject *self = (ClockObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        (void)bps_clock_release(clock);
        return NULL;
    }
    self->clock = clock;
    return (PyObject *)self;
}

static void
clock_dealloc(ClockObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->clock != NULL) {
        (void)bps_clock_release(self->clock);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
clock_now(ClockObject *self, PyObject *Py_UNUSED(ignored))
{
    int64_t ns = 0;
    (void)bps_clock_now(self->clock, &ns);
    return ns_to_seconds(ns);
}

static PyObject *
clock_get_time(ClockObject *self, void *Py_UNUSED(closure))
{
    return clock_now(self, NULL);
}

PyDoc_STRVAR(clock_advance_doc,
"advance($self, seconds, /)\n--\n\n"
"Move the clock forward by seconds (>= 0). Waiters on controllers and limiters using\n"
"this clock whose time has come are granted (threads) or woken (tasks) at once.");

static PyObject *
clock_advance(ClockObject *self, PyObject *arg)
{
    int64_t ns;
    if (PyLong_Check(arg) && !PyBool_Check(arg)) {   /* a bool goes to real_number: refused */
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(arg, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow != 0 || v < 0 || v > INT64_MAX / NS_PER_SEC) {
            PyErr_Format(PyExc_ValueError, "seconds must be between 0 and %lld, got %R",
                         (long long)(INT64_MAX / NS_PER_SEC), arg);
            return NULL;
        }
        ns = (int64_t)v * NS_PER_SEC;
    }
    else {
        double seconds;
        if (real_number(arg, "seconds", &seconds) < 0) {
            return NULL;
        }
        if (!isfinite(seconds) || seconds < 0 || seconds * 1e9 >= 9.2e18) {
            PyErr_Format(PyExc_ValueError,
                         "seconds must be a finite number >= 0 (a clock never goes back), "
                         "got %R", arg);
            return NULL;
        }
        ns = seconds_to_ns(seconds);
    }
    bps_status status = bps_clock_advance(self->clock, ns);
    if (status != BPS_OK) {
        PyObject *module = PyType_GetModuleByDef(Py_TYPE(self), &bpstream_module);
        return module == NULL ? NULL : set_error(get_module_state(module), status);
    }
    Py_RETURN_NONE;
}

static PyObject *
clock_repr(ClockObject *self)
{
    int64_t ns = 0;
    (void)bps_clock_now(self->clock, &ns);
    PyObject *seconds = ns_to_seconds(ns);
    if (seconds == NULL) {
        return NULL;
    }
    PyObject *result = PyUnicode_FromFormat("<bpstream.ManualClock time=%R>", seconds);
    Py_DECREF(seconds);
    return result;
}

static PyMethodDef clock_methods[] = {
    {"now", (PyCFunction)clock_now, METH_NOARGS,
     PyDoc_STR("now($self, /)\n--\n\nThe clock's time in seconds (starts at 0).")},
    {"advance", (PyCFunction)clock_advance, METH_O, clock_advance_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef clock_getset[] = {
    {"time", (getter)clock_get_time, NULL, PyDoc_STR("The clock's time in seconds (now())."),
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(clock_doc,
"ManualClock()\n--\n\n"
"A clock that stands still until advance() moves it: give it as clock= to a rate\n"
"controller or a Limiter and the test decides what time it is. Starts at 0.\n"
"Timeouts of acquire() on such a controller are on this clock too; Ctrl-C still\n"
"interrupts a wait on a clock that stands still.");

static PyType_Slot clock_slots[] = {
    {Py_tp_doc, (void *)clock_doc},
    {Py_tp_new, clock_new},
    {Py_tp_dealloc, clock_dealloc},
    {Py_tp_repr, clock_repr},
    {Py_tp_methods, clock_methods},
    {Py_tp_getset, clock_getset},
    {0, NULL},
};

static PyType_Spec clock_spec = {
    .name = "bpstream.ManualClock",
    .basicsize = sizeof(ClockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = clock_slots,
};

int
clock_from_object(module_state *st, PyObject *obj, bps_clock **out)
{
    if (obj == NULL || obj == Py_None) {
        *out = NULL;
        return 0;
    }
    if (!PyObject_TypeCheck(obj, st->manual_clock_type)) {
        PyErr_Format(PyExc_TypeError, "clock must be a bpstream.ManualClock or None, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    *out = ((ClockObject *)obj)->clock;
    return 0;
}

bps_clock *
bpstream_clock_handle(PyObject *obj)
{
    PyObject *module = PyType_GetModuleByDef(Py_TYPE(obj), &bpstream_module);
    if (module == NULL
        || !PyObject_TypeCheck(obj, get_module_state(module)->manual_clock_type)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "expected a bpstream.ManualClock, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return ((ClockObject *)obj)->clock;
}


PyObject *
clock_now_seconds(PyObject *clock_obj)
{
    int64_t ns = 0;
    (void)bps_clock_now(clock_obj != NULL ? ((ClockObject *)clock_obj)->clock : NULL, &ns);
    return ns_to_seconds(ns);
}

int
clock_init_types(PyObject *module, module_state *st)
{
    st->manual_clock_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &clock_spec, NULL);
    if (st->manual_clock_type == NULL || PyModule_AddType(module, st->manual_clock_type) < 0) {
        return -1;
    }
    return 0;
}
