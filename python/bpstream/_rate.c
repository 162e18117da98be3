/*
 * _rate.c — ManualClock and the rate controllers (TokenBucket, SlidingWindow, AIMD).
 *
 * Owns: the ManualClock type (a bps_clock), the controllers' shared base type
 * _RateController (a bps_rate: try_acquire/acquire/aacquire/retry_after/rate/limit/stats)
 * and its three subclasses, each only a constructor (AIMD adds on_success/on_backpressure),
 * and _Ticket: one async waiter's place in a controller's or limiter's queue (bpstream.h,
 * TICKETS), polled by bpstream/_control.py. Argument helpers the limiter shares live here.
 *
 * OWNERSHIP
 *  - A ManualClock owns one reference to its bps_clock; a controller owns one to its
 *    bps_rate (which holds its own to the clock) and a strong reference to the ManualClock
 *    object it was given (for `clock`), or None.
 *  - A _Ticket owns its bps_ticket until release() (or dealloc, which releases it as
 *    cancelled); the notify context belongs to the ticket (freed by the core through
 *    aio_notify_context_release once the ticket is released and no notify runs), so the
 *    _Ticket only borrows it while the ticket lives. It keeps its owner (the controller
 *    or limiter object) alive.
 *
 * GIL: every bps_ call is made with the GIL held; acquire waits through the gil_waiter hook
 * (released GIL, Ctrl-C polled every 50 ms on the main thread: BPS_CANCELLED takes
 * nothing). Ticket notifies run on any thread without the GIL and only write an eventfd
 * (_aio.c). Clock moves wake waiters outside the core's locks, never under the GIL's
 * say-so: advance() never waits.
 */
#include "_bpstream.h"

#include <math.h>
#include <stddef.h>

#if PY_VERSION_HEX < 0x030C0000
#  include <structmember.h>
#  define Py_T_PYSSIZET T_PYSSIZET
#  define Py_READONLY READONLY
#endif

#define PERMITS_MAX ((int64_t)1 << 31)

/* ------------------------------------------------------------------------- */
/* Arguments                                                                 */
/* ------------------------------------------------------------------------- */

/* Borrows obj. A real number (int, float, anything with __float__; not str). */
static int
real_number(PyObject *obj, const char *what, double *out)
{
    /* bool is an int, but True as a rate or a duration is a mistake, not a number. */
    if (PyUnicode_Check(obj) || PyBytes_Check(obj) || obj == Py_None || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a number, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s must be a number, not %.100s", what,
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    *out = v;
    return 0;
}

int
positive_seconds(PyObject *obj, const char *what, double *out)
{
    double v;
    if (real_number(obj, what, &v) < 0) {
        return -1;
    }
    if (!isfinite(v) || v <= 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a finite number > 0, got %R", what, obj);
        return -1;
    }
    *out = v;
    return 0;
}

int
permit_count(PyObject *obj, const char *what, int64_t *out)
{
    if (PyFloat_Check(obj) || PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL) {
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || v < 1 || v > PERMITS_MAX) {
        PyErr_Format(PyExc_ValueError, "%s must be between 1 and %lld, got %R", what,
                     (long long)PERMITS_MAX, obj);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* Borrows obj (NULL: 1). The n of a call: an int >= 1. Beyond 2^31 it is passed on as
 * such, so the core reports it as never grantable. */
static int
parse_n(PyObject *obj, int64_t *out)
{
    if (obj == NULL) {
        *out = 1;
        return 0;
    }
    if (PyFloat_Check(obj) || PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "n must be an int, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL) {
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && v < 1)) {
        PyErr_Format(PyExc_ValueError, "n must be at least 1, got %R", obj);
        return -1;
    }
    *out = overflow > 0 ? INT64_MAX : (int64_t)v;
    return 0;
}

// Seconds -> nanoseconds for a window or cooldown already checked finite and >= 0.
static int64_t
seconds_to_ns(double seconds)
{
    double ns = round(seconds * 1e9);
    return ns >= 9.2e18 ? INT64_MAX : (int64_t)ns;
}

PyObject *
call_control(module_state *st, const char *name, PyObject *const *args, size_t nargs)
{
    if (st->control == NULL) {
        st->control = PyImport_ImportModule("bpstream._control");
        if (st->control == NULL) {
            return NULL;
        }
    }
    PyObject *function = PyObject_GetAttrString(st->control, name);
    if (function == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_Vectorcall(function, args, nargs, NULL);
    Py_DECREF(function);
    return result;
}

/* Before a thread waits in a line that async tickets may share: releases the tickets of
 * event loops closed while their tasks waited (_control._forget_closed_loops), which would
 * otherwise stay ahead of it forever. Nothing to do before the first async wait (no ticket
 * can exist). 0, or -1 with an exception. */
int
forget_closed_loops(module_state *st)
{
    if (st->control == NULL) {
        return 0;
    }
    PyObject *result = call_control(st, "_forget_closed_loops", NULL, 0);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

// Returns a new reference, or NULL.
static PyObject *
ns_to_seconds(int64_t ns)
{
    return PyFloat_FromDouble((double)ns / 1e9);
}

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

/* ------------------------------------------------------------------------- */
/* _RateController: what TokenBucket, SlidingWindow and AIMD share           */
/* ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    bps_rate *rate;            /* NULL until __init__; then ours until dealloc */
    module_state *state;       /* borrowed: our type keeps the module alive */
    PyObject *clock;           /* the ManualClock given, or NULL (the system clock) */
    bps_rate_kind kind;
    double window_seconds;     /* SlidingWindow and AIMD: the window */
    PyObject *weakreflist;
} RateObject;

#define RATE_CHECK_INIT(self)                                                        \
    do {                                                                             \
        if ((self)->rate == NULL) {                                                  \
            PyErr_Format(PyExc_RuntimeError, "%.200s.__init__() was not called",     \
                         Py_TYPE(self)->tp_name);                                    \
            return NULL;                                                             \
        }                                                                            \
    } while (0)

static PyObject *
rate_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    PyObject *module = PyType_GetModuleByDef(type, &bpstream_module);
    if (module == NULL) {
        return NULL;
    }
    RateObject *self = (RateObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->rate = NULL;
    self->state = get_module_state(module);
    self->clock = NULL;
    self->window_seconds = 0;
    self->weakreflist = NULL;
    return (PyObject *)self;
}

static int
rate_traverse(RateObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->clock);
    return 0;
}

static int
rate_clear(RateObject *self)
{
    Py_CLEAR(self->clock);
    return 0;
}

static void
rate_dealloc(RateObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    if (self->rate != NULL) {
        (void)bps_rate_release(self->rate);   /* no waiter remains: each holds a reference */
        self->rate = NULL;
    }
    Py_CLEAR(self->clock);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* Creates self's controller once (the subclasses' __init__). Borrows clock_obj. */
static int
rate_setup(RateObject *self, bps_rate_config *config, PyObject *clock_obj)
{
    if (self->rate != NULL) {
        PyErr_Format(PyExc_RuntimeError, "%.200s.__init__() called twice", Py_TYPE(self)->tp_name);
        return -1;
    }
    if (clock_from_object(self->state, clock_obj, &config->clock) < 0) {
        return -1;
    }
    bps_rate *rate = NULL;
    bps_status status = bps_rate_create(config, &rate);
    if (status != BPS_OK) {
        if (status == BPS_INVALID_ARGUMENT) {
            PyErr_Format(PyExc_ValueError, "%.200s: parameters out of range",
                         Py_TYPE(self)->tp_name);
        }
        else {
            set_error(self->state, status);
        }
        return -1;
    }
    self->rate = rate;
    self->kind = config->kind;
    self->clock = clock_obj != NULL && clock_obj != Py_None ? Py_NewRef(clock_obj) : NULL;
    return 0;
}

static const char *
limit_name(bps_rate_kind kind)
{
    return kind == BPS_RATE_TOKEN_BUCKET ? "burst"
         : kind == BPS_RATE_SLIDING_WINDOW ? "window's limit" : "pacing burst";
}

/* The exception for a call that got `status` for n permits. Returns NULL. */
static PyObject *
rate_error(RateObject *self, bps_status status, int64_t n)
{
    if (status == BPS_INVALID_ARGUMENT) {
        double limit = 0;
        (void)bps_rate_get_limit(self->rate, &limit);
        double burst = self->kind == BPS_RATE_AIMD ? 1 : limit;
        PyErr_Format(PyExc_ValueError, "n=%lld can never be granted: the %s is %lld",
                     (long long)n, limit_name(self->kind), (long long)burst);
        return NULL;
    }
    if (status == BPS_FULL) {   /* acquire with timeout 0 */
        PyErr_SetNone(PyExc_TimeoutError);
        return NULL;
    }
    return set_error(self->state, status);
}

/* The optional n of try_acquire / retry_after: positional or n=. The common calls (no
 * keyword) skip the general parser: try_acquire is the hot path. 0, or -1 with an error. */
static int
parse_optional_n(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames, int64_t *n)
{
    if (kwnames == NULL && nargs <= 1) {
        *n = 1;
        return nargs == 1 ? parse_n(args[0], n) : 0;
    }
    static const char *const names[] = {"n"};
    arg_spec spec = {fname, names, 1, 0, 1, 0};
    PyObject *argv[1] = {NULL};
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0) {
        return -1;
    }
    return parse_n(argv[0], n);
}

PyDoc_STRVAR(rate_try_acquire_doc,
"try_acquire($self, /, n=1)\n--\n\n"
"Take n permits if they are there now and nobody waits; return whether it did.\n"
"Never waits; a refusal takes nothing. ValueError when n can never be granted.");

static PyObject *
rate_try_acquire(RateObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    RATE_CHECK_INIT(self);
    int64_t n = 1;
    if (parse_optional_n("try_acquire", args, nargs, kwnames, &n) < 0) {
        return NULL;
    }
    bps_status status = bps_rate_try_acquire(self->rate, n);
    if (status == BPS_OK) {
        Py_RETURN_TRUE;
    }
    if (status == BPS_FULL) {
        Py_RETURN_FALSE;
    }
    return rate_error(self, status, n);
}

PyDoc_STRVAR(rate_acquire_doc,
"acquire($self, /, n=1, timeout=None)\n--\n\n"
"Wait in line (first come, first served) until n permits are there, take them and\n"
"return the seconds waited (0.0: at once). Raises TimeoutError when the timeout\n"
"(seconds on the controller's clock; None: no limit, 0: never wait) passes, and\n"
"ValueError when n can never be granted. The GIL is released while waiting; Ctrl-C\n"
"interrupts the wait. A wait that ends without a grant takes nothing.");

static int
parse_n_timeout(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                int64_t *n, int64_t *timeout_ns, PyObject **timeout_obj)
{
    static const char *const names[] = {"n", "timeout"};
    arg_spec spec = {fname, names, 2, 0, 2, 0};
    PyObject *argv[2] = {NULL, NULL};
    if (nargs == 0 && kwnames == NULL) {
        *n = 1;
        *timeout_ns = -1;
        *timeout_obj = NULL;
        return 0;
    }
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0 || parse_n(argv[0], n) < 0
        || timeout_to_ns(argv[1], timeout_ns) < 0) {
        return -1;
    }
    *timeout_obj = argv[1];
    return 0;
}

static PyObject *
rate_acquire(RateObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    RATE_CHECK_INIT(self);
    int64_t n, timeout_ns, waited = 0;
    PyObject *timeout_obj;
    if (parse_n_timeout("acquire", args, nargs, kwnames, &n, &timeout_ns, &timeout_obj) < 0) {
        return NULL;
    }
    if (timeout_ns != 0 && self->state->control != NULL) {
        /* Tasks have waited in this process: when this call must wait, first clear tickets
         * a closed loop left in line (the fast path stays free of Python calls). */
        bps_status first = bps_rate_try_acquire_before_wait(self->rate, n);
        if (first == BPS_OK) {
            return ns_to_seconds(0);
        }
        if (first == BPS_FULL && forget_closed_loops(self->state) < 0) {
            return NULL;
        }
    }
    gil_waiter w;
    /* A rate wait removes no stream item: gil_waiter_init never looks at the stream. */
    bps_status status = bps_rate_acquire(self->rate, n, timeout_ns,
                                         timeout_ns == 0 ? NULL : gil_waiter_init(&w, NULL, 0),
                                         &waited);
    if (status == BPS_OK) {
        return ns_to_seconds(waited);
    }
    return rate_error(self, status, n);
}

PyDoc_STRVAR(rate_aacquire_doc,
"aacquire($self, /, n=1, timeout=None)\n--\n\n"
"Coroutine: like acquire(), but waiting suspends the task, not the thread; tasks\n"
"and threads wait in one line. Returns the seconds waited. Cancelled while waiting,\n"
"it takes nothing (and hands its turn to the next waiter).");

static PyObject *
rate_aacquire(RateObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    RATE_CHECK_INIT(self);
    int64_t n, timeout_ns, waited = 0;
    PyObject *timeout_obj;
    if (parse_n_timeout("aacquire", args, nargs, kwnames, &n, &timeout_ns, &timeout_obj) < 0) {
        return NULL;
    }
    bps_status status = timeout_ns == 0
        ? bps_rate_acquire(self->rate, n, 0, NULL, &waited)   /* counted like acquire's */
        : bps_rate_try_acquire_before_wait(self->rate, n);   /* a refusal: we wait, uncounted */
    if (status == BPS_OK) {   /* the fast path */
        return ready_new(self->state, PyFloat_FromDouble(0.0));
    }
    if (status == BPS_INVALID_ARGUMENT) {
        return rate_error(self, status, n);   /* a bad n: raised at the call */
    }
    if (status == BPS_FULL && timeout_ns != 0) {
        PyObject *n_obj = PyLong_FromLongLong((long long)n);
        if (n_obj == NULL) {
            return NULL;
        }
        PyObject *call[3] = {(PyObject *)self, n_obj, timeout_obj != NULL ? timeout_obj : Py_None};
        PyObject *result = call_control(self->state, "rate_wait", call, 3);
        Py_DECREF(n_obj);
        return result;
    }
    rate_error(self, status, n);
    return ready_from_error(self->state);
}

PyDoc_STRVAR(rate_retry_after_doc,
"retry_after($self, /, n=1)\n--\n\n"
"Seconds (on the controller's clock) until a caller asking for n permits now would\n"
"be granted if nothing changes: the waiters already in line come first (a bucket:\n"
"the tokens they need, then n). 0.0: now, and nobody waits.");

static PyObject *
rate_retry_after(RateObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    RATE_CHECK_INIT(self);
    int64_t n = 1, ns = 0;
    if (parse_optional_n("retry_after", args, nargs, kwnames, &n) < 0) {
        return NULL;
    }
    bps_status status = bps_rate_retry_after(self->rate, n, &ns);
    if (status != BPS_OK) {
        return rate_error(self, status, n);
    }
    return ns_to_seconds(ns);
}

// Returns 0 or -1: dict[key] = value (stolen; NULL: an exception is set).
static int
dict_set_new(PyObject *dict, const char *key, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(dict, key, value);
    Py_DECREF(value);
    return rc;
}

static const char *const kind_names[] = {"token_bucket", "sliding_window", "aimd"};

PyDoc_STRVAR(rate_stats_doc,
"stats($self, /)\n--\n\n"
"A snapshot as a dict: kind, granted, refused (try_acquire refusals only; a wait\n"
"counts as a grant, a timeout or a cancellation), timed_out,\n"
"cancelled (waits ended by Ctrl-C or a cancelled task; also the waits of tasks\n"
"whose loop was closed under them or stayed in the parent of a fork), waiting,\n"
"total_wait (seconds\n"
"granted waiters waited), wakeups (times a parked thread was woken to act: one per\n"
"grant without a herd), rate (permits per second), limit (burst / window limit / AIMD\n"
"limit), tokens (permits there now); AIMD adds increases and decreases.");

static PyObject *
rate_stats(RateObject *self, PyObject *Py_UNUSED(ignored))
{
    RATE_CHECK_INIT(self);
    bps_rate_stats s;
    memset(&s, 0, sizeof(s));
    s.size = sizeof(s);
    bps_status status = bps_rate_get_stats(self->rate, &s);
    if (status != BPS_OK) {
        return set_error(self->state, status);
    }
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    int kind = (unsigned)s.kind < 3 ? (int)s.kind : (int)self->kind;
    if (dict_set_new(d, "kind", PyUnicode_FromString(kind_names[kind])) < 0
        || dict_set_new(d, "granted", PyLong_FromUnsignedLongLong(s.granted)) < 0
        || dict_set_new(d, "refused", PyLong_FromUnsignedLongLong(s.refused)) < 0
        || dict_set_new(d, "timed_out", PyLong_FromUnsignedLongLong(s.timed_out)) < 0
        || dict_set_new(d, "cancelled", PyLong_FromUnsignedLongLong(s.cancelled)) < 0
        || dict_set_new(d, "waiting", PyLong_FromUnsignedLongLong(s.waiting)) < 0
        || dict_set_new(d, "total_wait", PyFloat_FromDouble((double)s.wait_ns / 1e9)) < 0
        || dict_set_new(d, "wakeups", PyLong_FromUnsignedLongLong(s.wakeups)) < 0
        || dict_set_new(d, "rate", PyFloat_FromDouble(s.rate)) < 0
        || dict_set_new(d, "limit", s.kind == BPS_RATE_AIMD ? PyFloat_FromDouble(s.limit)
                                    : PyLong_FromLongLong((long long)s.limit)) < 0
        || dict_set_new(d, "tokens", PyFloat_FromDouble(s.tokens)) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    if (s.kind == BPS_RATE_AIMD
        && (dict_set_new(d, "increases", PyLong_FromUnsignedLongLong(s.increases)) < 0
            || dict_set_new(d, "decreases", PyLong_FromUnsignedLongLong(s.decreases)) < 0)) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *
rate_get_rate(RateObject *self, void *Py_UNUSED(closure))
{
    RATE_CHECK_INIT(self);
    double v = 0;
    bps_status status = bps_rate_get_rate(self->rate, &v);
    return status == BPS_OK ? PyFloat_FromDouble(v) : set_error(self->state, status);
}

static int
rate_set_rate(RateObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (self->rate == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%.200s.__init__() was not called", Py_TYPE(self)->tp_name);
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete rate");
        return -1;
    }
    double v;
    if (positive_seconds(value, "rate", &v) < 0) {
        return -1;
    }
    bps_status status = bps_rate_set_rate(self->rate, v);
    if (status == BPS_INVALID_ARGUMENT) {
        PyErr_Format(PyExc_ValueError, "rate %R is out of range for this %.100s "
                     "(a window's limit, rate * window, must be at least 1)",
                     value, Py_TYPE(self)->tp_name);
        return -1;
    }
    if (status != BPS_OK) {
        set_error(self->state, status);
        return -1;
    }
    return 0;
}

static PyObject *
rate_get_limit(RateObject *self, void *Py_UNUSED(closure))
{
    RATE_CHECK_INIT(self);
    double v = 0;
    bps_status status = bps_rate_get_limit(self->rate, &v);
    if (status != BPS_OK) {
        return set_error(self->state, status);
    }
    return self->kind == BPS_RATE_AIMD ? PyFloat_FromDouble(v) : PyLong_FromLongLong((long long)v);
}

static int
rate_set_limit(RateObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (self->rate == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%.200s.__init__() was not called", Py_TYPE(self)->tp_name);
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete limit");
        return -1;
    }
    double v;
    if (self->kind == BPS_RATE_AIMD) {
        if (positive_seconds(value, "limit", &v) < 0) {
            return -1;
        }
    }
    else {
        int64_t count;
        if (permit_count(value, "limit", &count) < 0) {
            return -1;
        }
        v = (double)count;
    }
    bps_status status = bps_rate_set_limit(self->rate, v);
    if (status != BPS_OK) {
        set_error(self->state, status);
        return -1;
    }
    return 0;
}

static PyObject *
rate_get_clock(RateObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->clock != NULL ? self->clock : Py_None);
}

/* _now(): seconds on the controller's clock (for bpstream._control). */
static PyObject *
rate_now(RateObject *self, PyObject *Py_UNUSED(ignored))
{
    int64_t ns = 0;
    bps_clock *clock = self->clock != NULL ? ((ClockObject *)self->clock)->clock : NULL;
    (void)bps_clock_now(clock, &ns);
    return ns_to_seconds(ns);
}

/* _enqueue(n, waker) -> _Ticket: a place in the line for an async waiter. */
static PyObject *
rate_enqueue(RateObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    RATE_CHECK_INIT(self);
    int64_t n;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_enqueue(n, waker)");
        return NULL;
    }
    if (parse_n(args[0], &n) < 0) {
        return NULL;
    }
    void *context = aio_notify_context_new(self->state, args[1]);
    if (context == NULL) {
        return NULL;
    }
    bps_ticket *ticket = NULL;
    bps_status status = bps_rate_enqueue(self->rate, n, aio_notify, aio_notify_context_release,
                                         context, &ticket);
    if (status != BPS_OK) {
        aio_notify_context_release(context);   /* not taken: still ours (written on success) */
        return rate_error(self, status, n);
    }
    return ticket_new(self->state, (PyObject *)self, ticket, context);
}

static PyObject *
rate_repr(RateObject *self)
{
    if (self->rate == NULL) {
        return PyUnicode_FromFormat("<%s uninitialized>", Py_TYPE(self)->tp_name);
    }
    bps_rate_stats s;
    memset(&s, 0, sizeof(s));
    s.size = sizeof(s);
    (void)bps_rate_get_stats(self->rate, &s);
    PyObject *rate = PyFloat_FromDouble(s.rate), *limit = PyFloat_FromDouble(s.limit),
             *tokens = PyFloat_FromDouble(s.tokens);
    PyObject *result = NULL;
    if (rate != NULL && limit != NULL && tokens != NULL) {
        result = PyUnicode_FromFormat("<%s rate=%R limit=%R tokens=%R waiting=%llu>",
                                      Py_TYPE(self)->tp_name, rate, limit, tokens,
                                      (unsigned long long)s.waiting);
    }
    Py_XDECREF(rate);
    Py_XDECREF(limit);
    Py_XDECREF(tokens);
    return result;
}

static PyMethodDef rate_methods[] = {
    {"try_acquire", (PyCFunction)(void (*)(void))rate_try_acquire, METH_FASTCALL | METH_KEYWORDS,
     rate_try_acquire_doc},
    {"acquire", (PyCFunction)(void (*)(void))rate_acquire, METH_FASTCALL | METH_KEYWORDS,
     rate_acquire_doc},
    {"aacquire", (PyCFunction)(void (*)(void))rate_aacquire, METH_FASTCALL | METH_KEYWORDS,
     rate_aacquire_doc},
    {"retry_after", (PyCFunction)(void (*)(void))rate_retry_after, METH_FASTCALL | METH_KEYWORDS,
     rate_retry_after_doc},
    {"stats", (PyCFunction)rate_stats, METH_NOARGS, rate_stats_doc},
    {"_now", (PyCFunction)rate_now, METH_NOARGS, NULL},
    {"_enqueue", (PyCFunction)(void (*)(void))rate_enqueue, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rate_getset[] = {
    {"rate", (getter)rate_get_rate, (setter)rate_set_rate,
     PyDoc_STR("Permits per second (SlidingWindow: limit / window; AIMD: its limit). "
               "Settable: sleeping waiters are re-planned at once."), NULL},
    {"limit", (getter)rate_get_limit, (setter)rate_set_limit,
     PyDoc_STR("TokenBucket: the burst; SlidingWindow: permits per window; AIMD: the "
               "current limit in permits per second. Settable."), NULL},
    {"clock", (getter)rate_get_clock, NULL,
     PyDoc_STR("The ManualClock given, or None (the monotonic clock)."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef rate_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(RateObject, weakreflist), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot rate_base_slots[] = {
    {Py_tp_doc, (void *)"The base of bpstream's rate controllers (TokenBucket, SlidingWindow, AIMD)."},
    {Py_tp_new, rate_new},
    {Py_tp_dealloc, rate_dealloc},
    {Py_tp_traverse, rate_traverse},
    {Py_tp_clear, rate_clear},
    {Py_tp_repr, rate_repr},
    {Py_tp_methods, rate_methods},
    {Py_tp_getset, rate_getset},
    {Py_tp_members, rate_members},
    {0, NULL},
};

static PyType_Spec rate_base_spec = {
    .name = "bpstream._bpstream._RateController",
    .basicsize = sizeof(RateObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = rate_base_slots,
};

bps_rate *
bpstream_rate_handle(PyObject *obj)
{
    PyObject *module = PyType_GetModuleByDef(Py_TYPE(obj), &bpstream_module);
    if (module == NULL || !PyObject_TypeCheck(obj, get_module_state(module)->rate_base_type)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "expected a bpstream.TokenBucket, SlidingWindow or AIMD, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    RateObject *self = (RateObject *)obj;
    if (self->rate == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%.200s.__init__() was not called", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return self->rate;
}

/* ------------------------------------------------------------------------- */
/* TokenBucket, SlidingWindow, AIMD: constructors                            */
/* ------------------------------------------------------------------------- */

static int
token_bucket_init(RateObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"rate", "burst", "start_full", "clock", NULL};
    PyObject *rate_obj, *burst_obj, *start_full_obj = NULL, *clock_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$OO:TokenBucket", kwlist, &rate_obj,
                                     &burst_obj, &start_full_obj, &clock_obj)) {
        return -1;
    }
    bps_rate_config config;
    memset(&config, 0, sizeof(config));
    config.size = sizeof(config);
    config.kind = BPS_RATE_TOKEN_BUCKET;
    int start_full = truth(start_full_obj, 1);
    if (positive_seconds(rate_obj, "rate", &config.rate) < 0
        || permit_count(burst_obj, "burst", &config.burst) < 0 || start_full < 0) {
        return -1;
    }
    config.start_full = (uint8_t)start_full;
    return rate_setup(self, &config, clock_obj);
}

static PyObject *
token_bucket_get_burst(RateObject *self, void *closure)
{
    return rate_get_limit(self, closure);
}

static PyGetSetDef token_bucket_getset[] = {
    {"burst", (getter)token_bucket_get_burst, NULL,
     PyDoc_STR("The most tokens the bucket holds (the limit)."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(token_bucket_doc,
"TokenBucket(rate, burst, *, start_full=True, clock=None)\n--\n\n"
"A token bucket: rate tokens per second, holding at most burst (so after idling at\n"
"most burst permits go at once). try_acquire(n) never waits; acquire(n, timeout)\n"
"and aacquire(n, timeout) wait first come, first served (threads and tasks in one\n"
"line, one wake-up per grant); retry_after(n) says how long until n are there.\n"
"rate can be changed at any time (sleepers re-plan at once). clock: a ManualClock\n"
"for tests, or None for the monotonic clock.");

static PyType_Slot token_bucket_slots[] = {
    {Py_tp_doc, (void *)token_bucket_doc},
    {Py_tp_init, token_bucket_init},
    {Py_tp_getset, token_bucket_getset},
    {0, NULL},
};

static PyType_Spec token_bucket_spec = {
    .name = "bpstream.TokenBucket",
    .basicsize = sizeof(RateObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,   /* GC: inherited */
    .slots = token_bucket_slots,
};

static int
sliding_window_init(RateObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"limit", "window", "clock", NULL};
    PyObject *limit_obj, *window_obj, *clock_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$O:SlidingWindow", kwlist, &limit_obj,
                                     &window_obj, &clock_obj)) {
        return -1;
    }
    bps_rate_config config;
    memset(&config, 0, sizeof(config));
    config.size = sizeof(config);
    config.kind = BPS_RATE_SLIDING_WINDOW;
    double window;
    if (permit_count(limit_obj, "limit", &config.limit) < 0
        || positive_seconds(window_obj, "window", &window) < 0) {
        return -1;
    }
    config.window_ns = seconds_to_ns(window);
    if (config.window_ns < 1) {
        PyErr_Format(PyExc_ValueError, "window must be at least 1 ns, got %R", window_obj);
        return -1;
    }
    if (rate_setup(self, &config, clock_obj) < 0) {
        return -1;
    }
    self->window_seconds = window;
    return 0;
}

static PyObject *
rate_get_window(RateObject *self, void *Py_UNUSED(closure))
{
    return PyFloat_FromDouble(self->window_seconds);
}

static PyGetSetDef sliding_window_getset[] = {
    {"window", (getter)rate_get_window, NULL, PyDoc_STR("The window in seconds."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(sliding_window_doc,
"SlidingWindow(limit, window, *, clock=None)\n--\n\n"
"At most limit permits in any window seconds, with exact log semantics: a grant is\n"
"logged at its time and leaves the window window seconds later; a refusal is not\n"
"logged. The same methods as TokenBucket; setting rate sets the limit to\n"
"round(rate * window).");

static PyType_Slot sliding_window_slots[] = {
    {Py_tp_doc, (void *)sliding_window_doc},
    {Py_tp_init, sliding_window_init},
    {Py_tp_getset, sliding_window_getset},
    {0, NULL},
};

static PyType_Spec sliding_window_spec = {
    .name = "bpstream.SlidingWindow",
    .basicsize = sizeof(RateObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,   /* GC: inherited */
    .slots = sliding_window_slots,
};

/* Borrows obj (NULL: the default). A finite number in (low, high) / [low, ...). */
static int
aimd_number(PyObject *obj, const char *what, double default_value, double *out)
{
    if (obj == NULL) {
        *out = default_value;
        return 0;
    }
    return real_number(obj, what, out);
}

static int
aimd_init(RateObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"initial", "minimum", "maximum", "increase", "decrease", "window",
                             "cooldown", "clock", NULL};
    PyObject *initial_obj, *minimum_obj = NULL, *maximum_obj = NULL, *increase_obj = NULL,
             *decrease_obj = NULL, *window_obj = NULL, *cooldown_obj = NULL, *clock_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$OOOOOOO:AIMD", kwlist, &initial_obj,
                                     &minimum_obj, &maximum_obj, &increase_obj, &decrease_obj,
                                     &window_obj, &cooldown_obj, &clock_obj)) {
        return -1;
    }
    bps_rate_config config;
    memset(&config, 0, sizeof(config));
    config.size = sizeof(config);
    config.kind = BPS_RATE_AIMD;
    config.burst = 1;
    double window = 1.0, cooldown = -1;
    if (real_number(initial_obj, "initial", &config.initial) < 0
        || aimd_number(minimum_obj, "minimum", 1.0, &config.minimum) < 0
        || aimd_number(maximum_obj, "maximum", INFINITY, &config.maximum) < 0
        || aimd_number(increase_obj, "increase", 1.0, &config.increase) < 0
        || aimd_number(decrease_obj, "decrease", 0.5, &config.decrease) < 0
        || (window_obj != NULL && positive_seconds(window_obj, "window", &window) < 0)
        || (cooldown_obj != NULL && cooldown_obj != Py_None
            && real_number(cooldown_obj, "cooldown", &cooldown) < 0)) {
        return -1;
    }
    /* PyErr_Format has no %g: the numbers are formatted by PyOS_snprintf. */
    char message[200];
    message[0] = '\0';
    if (!(isfinite(config.minimum) && config.minimum > 0)) {
        PyOS_snprintf(message, sizeof(message), "minimum must be a finite number > 0, got %g",
                      config.minimum);
    }
    else if (isnan(config.maximum) || config.maximum < config.minimum) {
        PyOS_snprintf(message, sizeof(message), "maximum (%g) must be at least minimum (%g)",
                      config.maximum, config.minimum);
    }
    else if (!isfinite(config.initial) || config.initial < config.minimum
             || config.initial > config.maximum) {
        PyOS_snprintf(message, sizeof(message),
                      "initial must be between minimum (%g) and maximum (%g), got %g",
                      config.minimum, config.maximum, config.initial);
    }
    else if (!(isfinite(config.increase) && config.increase > 0)) {
        PyOS_snprintf(message, sizeof(message), "increase must be a finite number > 0, got %g",
                      config.increase);
    }
    else if (!(config.decrease > 0 && config.decrease < 1)) {
        PyOS_snprintf(message, sizeof(message),
                      "decrease must be between 0 and 1 (exclusive), got %g", config.decrease);
    }
    if (message[0] != '\0') {
        PyErr_SetString(PyExc_ValueError, message);
        return -1;
    }
    if (cooldown_obj != NULL && cooldown_obj != Py_None && !(isfinite(cooldown) && cooldown >= 0)) {
        PyErr_Format(PyExc_ValueError, "cooldown must be None or a finite number >= 0, got %R",
                     cooldown_obj);
        return -1;
    }
    config.window_ns = seconds_to_ns(window);
    config.cooldown_ns = cooldown < 0 ? -1 : seconds_to_ns(cooldown);
    if (config.window_ns < 1) {
        PyErr_Format(PyExc_ValueError, "window must be at least 1 ns, got %R", window_obj);
        return -1;
    }
    if (rate_setup(self, &config, clock_obj) < 0) {
        return -1;
    }
    self->window_seconds = window;
    return 0;
}

PyDoc_STRVAR(aimd_on_success_doc,
"on_success($self, /)\n--\n\n"
"Feedback: the work paced by this limit went through. A window that saw at least one\n"
"success and no backpressure adds `increase` to the limit (at most `maximum`).");

static PyObject *
aimd_on_success(RateObject *self, PyObject *Py_UNUSED(ignored))
{
    RATE_CHECK_INIT(self);
    bps_status status = bps_rate_on_success(self->rate);
    if (status != BPS_OK) {
        return set_error(self->state, status);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(aimd_on_backpressure_doc,
"on_backpressure($self, /)\n--\n\n"
"Feedback: congestion. Multiplies the limit by `decrease` (at least `minimum`), at\n"
"most once per congestion episode (cooldown; default one window).");

static PyObject *
aimd_on_backpressure(RateObject *self, PyObject *Py_UNUSED(ignored))
{
    RATE_CHECK_INIT(self);
    bps_status status = bps_rate_on_backpressure(self->rate);
    if (status != BPS_OK) {
        return set_error(self->state, status);
    }
    Py_RETURN_NONE;
}

static PyMethodDef aimd_methods[] = {
    {"on_success", (PyCFunction)aimd_on_success, METH_NOARGS, aimd_on_success_doc},
    {"on_backpressure", (PyCFunction)aimd_on_backpressure, METH_NOARGS, aimd_on_backpressure_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef aimd_getset[] = {
    {"window", (getter)rate_get_window, NULL, PyDoc_STR("The window in seconds."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(aimd_doc,
"AIMD(initial, *, minimum=1, maximum=inf, increase=1.0, decrease=0.5, window=1.0,\n"
"     cooldown=None, clock=None)\n--\n\n"
"A rate limit (permits per second, a float) that adapts: +increase once per window\n"
"that saw at least one on_success() and no on_backpressure(); *decrease on\n"
"backpressure, at most once per congestion episode (cooldown, default one window);\n"
"always within [minimum, maximum]. limit is the current value; acquiring paces at\n"
"it (a bucket of burst 1), with the same methods as TokenBucket.");

static PyType_Slot aimd_slots[] = {
    {Py_tp_doc, (void *)aimd_doc},
    {Py_tp_init, aimd_init},
    {Py_tp_methods, aimd_methods},
    {Py_tp_getset, aimd_getset},
    {0, NULL},
};

static PyType_Spec aimd_spec = {
    .name = "bpstream.AIMD",
    .basicsize = sizeof(RateObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,   /* GC: inherited */
    .slots = aimd_slots,
};

/* ------------------------------------------------------------------------- */
/* _Ticket: an async waiter's place in a queue                               */
/* ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    bps_ticket *ticket;    /* ours until release(); NULL after */
    void *context;         /* the notify context: the ticket's, borrowed while it lives */
    PyObject *owner;       /* the controller or limiter (strong) */
} TicketObject;

PyObject *
ticket_new(module_state *st, PyObject *owner, bps_ticket *ticket, void *context)
{
    TicketObject *self = PyObject_New(TicketObject, st->ticket_type);
    if (self == NULL) {
        (void)bps_ticket_release(ticket, 0);
        return NULL;
    }
    self->ticket = ticket;
    self->context = context;
    self->owner = Py_NewRef(owner);
    return (PyObject *)self;
}

static void
ticket_dealloc(TicketObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->ticket != NULL) {
        (void)bps_ticket_release(self->ticket, 0);   /* ungranted: takes nothing */
    }
    Py_XDECREF(self->owner);
    PyObject_Free(self);
    Py_DECREF(tp);
}

/* poll() -> 0 granted (the permits are taken), > 0 ns until due (or until its timeout) on
 * the owner's clock, -1 wait for a notify. TimeoutError: its timeout passed ungranted
 * (nothing taken; release it as timed out). */
static PyObject *
ticket_poll(TicketObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ticket == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ticket already released");
        return NULL;
    }
    int64_t retry = -1;
    bps_status status = bps_ticket_poll(self->ticket, &retry);
    if (status == BPS_TIMED_OUT) {
        PyErr_SetNone(PyExc_TimeoutError);
        return NULL;
    }
    if (status != BPS_OK) {
        PyObject *module = PyType_GetModuleByDef(Py_TYPE(self), &bpstream_module);
        return module == NULL ? NULL : set_error(get_module_state(module), status);
    }
    return PyLong_FromLongLong((long long)retry);
}

/* set_timeout(seconds): the ticket's timeout on the owner's clock, from its enqueue
 * (None: none). The core times it: a ManualClock moving past it notifies the ticket. */
static PyObject *
ticket_set_timeout(TicketObject *self, PyObject *timeout)
{
    int64_t timeout_ns;
    if (self->ticket == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ticket already released");
        return NULL;
    }
    if (timeout_to_ns(timeout, &timeout_ns) < 0) {
        return NULL;
    }
    (void)bps_ticket_set_timeout(self->ticket, timeout_ns);
    Py_RETURN_NONE;
}

/* take_pending() -> whether a notify came since the last call (and clear). */
static PyObject *
ticket_take_pending(TicketObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ticket == NULL) {
        Py_RETURN_FALSE;
    }
    return PyBool_FromLong(aio_notify_take_pending(self->context) != 0);
}

/* release(timed_out=False): leave the queue (an ungranted ticket takes nothing). */
static PyObject *
ticket_release(TicketObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int timed_out = nargs > 0 ? PyObject_IsTrue(args[0]) : 0;
    if (timed_out < 0) {
        return NULL;
    }
    if (self->ticket != NULL) {
        bps_ticket *ticket = self->ticket;
        self->ticket = NULL;
        self->context = NULL;
        (void)bps_ticket_release(ticket, timed_out);
    }
    Py_RETURN_NONE;
}

static PyMethodDef ticket_methods[] = {
    {"poll", (PyCFunction)ticket_poll, METH_NOARGS, NULL},
    {"take_pending", (PyCFunction)ticket_take_pending, METH_NOARGS, NULL},
    {"set_timeout", (PyCFunction)ticket_set_timeout, METH_O, NULL},
    {"release", (PyCFunction)(void (*)(void))ticket_release, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ticket_slots[] = {
    {Py_tp_doc, (void *)"An async waiter's place in a rate controller's or limiter's line."},
    {Py_tp_dealloc, ticket_dealloc},
    {Py_tp_methods, ticket_methods},
    {0, NULL},
};

static PyType_Spec ticket_spec = {
    .name = "bpstream._bpstream._Ticket",
    .basicsize = sizeof(TicketObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ticket_slots,
};

/* ------------------------------------------------------------------------- */
/* Registration                                                              */
/* ------------------------------------------------------------------------- */

// Creates a type from spec (base may be NULL) and, public, adds it to the module.
static PyTypeObject *
add_type(PyObject *module, PyType_Spec *spec, PyTypeObject *base, int public)
{
    PyTypeObject *type = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, (PyObject *)base);
    if (type == NULL) {
        return NULL;
    }
    if (public && PyModule_AddType(module, type) < 0) {
        Py_DECREF(type);
        return NULL;
    }
    return type;
}

int
rate_init_types(PyObject *module, module_state *st)
{
    if ((st->manual_clock_type = add_type(module, &clock_spec, NULL, 1)) == NULL
        || (st->rate_base_type = add_type(module, &rate_base_spec, NULL, 1)) == NULL
        || (st->token_bucket_type = add_type(module, &token_bucket_spec, st->rate_base_type, 1)) == NULL
        || (st->sliding_window_type = add_type(module, &sliding_window_spec, st->rate_base_type, 1)) == NULL
        || (st->aimd_type = add_type(module, &aimd_spec, st->rate_base_type, 1)) == NULL
        || (st->ticket_type = add_type(module, &ticket_spec, NULL, 0)) == NULL) {
        return -1;
    }
    return 0;
}
