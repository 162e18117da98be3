/*
 * _rate.c — the rate controllers: TokenBucket, SlidingWindow, AIMD.
 *
 * Owns: the controllers' shared base type _RateController (a bps_rate:
 * try_acquire/acquire/aacquire/retry_after/rate/limit/stats) and its three subclasses,
 * each only a constructor (AIMD adds on_success/on_backpressure). Waiting in line, the
 * async tickets and the argument conversions are _admission.c's; ManualClock is _clock.c's.
 *
 * OWNERSHIP
 *  - A controller owns one reference to its bps_rate (which holds its own to the clock)
 *    and a strong reference to the ManualClock object it was given (for `clock`), or None.
 *
 * GIL: every bps_ call is made with the GIL held; acquire waits through admission_acquire
 * (released GIL, Ctrl-C polled: BPS_CANCELLED takes nothing).
 */
#include "_bpstream.h"

#include <math.h>
#include <stddef.h>

#if PY_VERSION_HEX < 0x030C0000
#  include <structmember.h>
#  define Py_T_PYSSIZET T_PYSSIZET
#  define Py_READONLY READONLY
#endif

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

/* self's bps_rate as an admission_line (the adapters only convert the line pointer). */
static bps_status
rate_line_try(void *line, int64_t n)
{
    return bps_rate_try_acquire_before_wait(line, n);
}

static bps_status
rate_line_acquire(void *line, int64_t n, int64_t timeout_ns, const bps_waiter *waiter,
                  int64_t *out_waited_ns)
{
    return bps_rate_acquire(line, n, timeout_ns, waiter, out_waited_ns);
}

static bps_status
rate_line_enqueue(void *line, int64_t n, bps_notify_fn notify,
                  bps_context_release_fn release_context, void *context, bps_ticket **out)
{
    return bps_rate_enqueue(line, n, notify, release_context, context, out);
}

static admission_line
rate_line(RateObject *self)
{
    return (admission_line){self->rate, rate_line_try, rate_line_acquire, rate_line_enqueue};
}

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

static PyObject *
rate_acquire(RateObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    RATE_CHECK_INIT(self);
    int64_t n, timeout_ns, waited;
    PyObject *timeout_obj;
    bps_status status;
    admission_line line = rate_line(self);
    if (parse_acquire_args("acquire", args, nargs, kwnames, &n, &timeout_ns, &timeout_obj) < 0
        || admission_acquire(self->state, &line, n, timeout_ns, &status, &waited) < 0) {
        return NULL;
    }
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
    int64_t n, timeout_ns;
    PyObject *timeout_obj;
    if (parse_acquire_args("aacquire", args, nargs, kwnames, &n, &timeout_ns, &timeout_obj) < 0) {
        return NULL;
    }
    admission_line line = rate_line(self);
    bps_status status = admission_first_look(&line, n, timeout_ns);
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
    return clock_now_seconds(self->clock);
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
    admission_line line = rate_line(self);
    bps_status status;
    PyObject *ticket = admission_enqueue(self->state, (PyObject *)self, &line, n, args[1], &status);
    return ticket != NULL || status == BPS_OK ? ticket : rate_error(self, status, n);
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

/* A config of kind, every other field zero (the core's "unset"). */
static bps_rate_config
rate_config(bps_rate_kind kind)
{
    bps_rate_config config;
    memset(&config, 0, sizeof(config));
    config.size = sizeof(config);
    config.kind = kind;
    return config;
}

/* rate_setup for the controllers with a window (SlidingWindow, AIMD): window in seconds,
 * already checked finite and > 0 (window_obj, borrowed, may be NULL: the default). */
static int
rate_setup_windowed(RateObject *self, bps_rate_config *config, PyObject *clock_obj,
                    double window, PyObject *window_obj)
{
    config->window_ns = seconds_to_ns(window);
    if (config->window_ns < 1) {
        PyErr_Format(PyExc_ValueError, "window must be at least 1 ns, got %R", window_obj);
        return -1;
    }
    if (rate_setup(self, config, clock_obj) < 0) {
        return -1;
    }
    self->window_seconds = window;
    return 0;
}

/* The spec of a public subclass of _RateController: only its constructor and extras. */
#define RATE_SUBCLASS_SPEC(NAME, SLOTS)                                                  \
    {                                                                                    \
        .name = NAME,                                                                    \
        .basicsize = sizeof(RateObject),                                                 \
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,   /* GC: inherited */    \
        .slots = SLOTS,                                                                  \
    }

static int
token_bucket_init(RateObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"rate", "burst", "start_full", "clock", NULL};
    PyObject *rate_obj, *burst_obj, *start_full_obj = NULL, *clock_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$OO:TokenBucket", kwlist, &rate_obj,
                                     &burst_obj, &start_full_obj, &clock_obj)) {
        return -1;
    }
    bps_rate_config config = rate_config(BPS_RATE_TOKEN_BUCKET);
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

static PyType_Spec token_bucket_spec = RATE_SUBCLASS_SPEC("bpstream.TokenBucket", token_bucket_slots);

static int
sliding_window_init(RateObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"limit", "window", "clock", NULL};
    PyObject *limit_obj, *window_obj, *clock_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$O:SlidingWindow", kwlist, &limit_obj,
                                     &window_obj, &clock_obj)) {
        return -1;
    }
    bps_rate_config config = rate_config(BPS_RATE_SLIDING_WINDOW);
    double window;
    if (permit_count(limit_obj, "limit", &config.limit) < 0
        || positive_seconds(window_obj, "window", &window) < 0) {
        return -1;
    }
    return rate_setup_windowed(self, &config, clock_obj, window, window_obj);
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

static PyType_Spec sliding_window_spec = RATE_SUBCLASS_SPEC("bpstream.SlidingWindow", sliding_window_slots);

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
    bps_rate_config config = rate_config(BPS_RATE_AIMD);
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
    config.cooldown_ns = cooldown < 0 ? -1 : seconds_to_ns(cooldown);
    return rate_setup_windowed(self, &config, clock_obj, window, window_obj);
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

static PyType_Spec aimd_spec = RATE_SUBCLASS_SPEC("bpstream.AIMD", aimd_slots);

/* ------------------------------------------------------------------------- */
/* Registration                                                              */
/* ------------------------------------------------------------------------- */

// Creates a type from spec (base may be NULL) and adds it to the module.
static PyTypeObject *
add_type(PyObject *module, PyType_Spec *spec, PyTypeObject *base)
{
    PyTypeObject *type = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, (PyObject *)base);
    if (type == NULL) {
        return NULL;
    }
    if (PyModule_AddType(module, type) < 0) {
        Py_DECREF(type);
        return NULL;
    }
    return type;
}

int
rate_init_types(PyObject *module, module_state *st)
{
    if ((st->rate_base_type = add_type(module, &rate_base_spec, NULL)) == NULL
        || (st->token_bucket_type = add_type(module, &token_bucket_spec, st->rate_base_type)) == NULL
        || (st->sliding_window_type = add_type(module, &sliding_window_spec, st->rate_base_type)) == NULL
        || (st->aimd_type = add_type(module, &aimd_spec, st->rate_base_type)) == NULL) {
        return -1;
    }
    return 0;
}
