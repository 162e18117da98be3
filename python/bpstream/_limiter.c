/*
 * _limiter.c — bpstream.Limiter and its Token: admission by work in progress and rate.
 *
 * Owns: the Limiter type (a bps_limiter: a slot of max_concurrent and a rate token taken
 * together or not at all, FIFO without barging) and Token, the handle of one admission.
 *
 * OWNERSHIP
 *  - A Limiter owns one reference to its bps_limiter and a strong reference to the
 *    ManualClock it was given (or none).
 *  - A slot is anonymous in the core. A Token stands for exactly one held slot and gives
 *    it back exactly once: release(), __exit__, or, forgotten, its finalizer (with a
 *    ResourceWarning). `with limiter:` holds a slot without a Token: __enter__ takes one,
 *    __exit__ gives one back. A Token keeps its Limiter alive (strong reference).
 *  - Neither type is subclassable and neither holds arbitrary objects, so no reference
 *    cycle can go through them: no GC support needed (Tokens are made per admission).
 *
 * GIL: acquire waits through admission_acquire (_admission.c: the GIL released, Ctrl-C
 * answered); release_slot never waits.
 */
#include "_bpstream.h"

#include <math.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030C0000
#  include <structmember.h>
#  define Py_T_PYSSIZET T_PYSSIZET
#  define Py_READONLY READONLY
#endif

typedef struct {
    PyObject_HEAD
    bps_limiter *limiter;      /* NULL until __init__; then ours until dealloc */
    module_state *state;       /* borrowed: our type keeps the module alive */
    PyObject *clock;           /* the ManualClock given, or NULL */
    PyObject *weakreflist;
} LimiterObject;

typedef struct {
    PyObject_HEAD
    LimiterObject *limiter;    /* strong */
    int released;              /* 1 once the slot went back (GIL held) */
} TokenObject;

#define LIMITER_CHECK_INIT(self)                                                 \
    do {                                                                         \
        if ((self)->limiter == NULL) {                                           \
            PyErr_SetString(PyExc_RuntimeError, "Limiter.__init__() was not called"); \
            return NULL;                                                         \
        }                                                                        \
    } while (0)

/* self's bps_limiter as an admission_line: its n is always 1 (one slot and one token). */
static bps_status
limiter_line_try(void *line, int64_t n)
{
    (void)n;
    return bps_limiter_try_acquire_before_wait(line);
}

static bps_status
limiter_line_acquire(void *line, int64_t n, int64_t timeout_ns, const bps_waiter *waiter,
                     int64_t *out_waited_ns)
{
    (void)n;
    return bps_limiter_acquire(line, timeout_ns, waiter, out_waited_ns);
}

static bps_status
limiter_line_enqueue(void *line, int64_t n, bps_notify_fn notify,
                     bps_context_release_fn release_context, void *context, bps_ticket **out)
{
    (void)n;
    return bps_limiter_enqueue(line, notify, release_context, context, out);
}

static admission_line
limiter_line(LimiterObject *self)
{
    return (admission_line){self->limiter, limiter_line_try, limiter_line_acquire,
                            limiter_line_enqueue};
}

/* ------------------------------------------------------------------------- */
/* Token                                                                     */
/* ------------------------------------------------------------------------- */

// A new Token for a slot self already holds (the Token now owns that slot). On failure
// the slot is given back. Returns a new reference, or NULL.
static PyObject *
token_new(LimiterObject *self)
{
    TokenObject *token = PyObject_New(TokenObject, self->state->token_type);
    if (token == NULL) {
        (void)bps_limiter_release_slot(self->limiter);
        return NULL;
    }
    token->limiter = (LimiterObject *)Py_NewRef((PyObject *)self);
    token->released = 0;
    return (PyObject *)token;
}

// Gives the token's slot back once. Returns 0, or -1 with an exception.
static int
token_give_back(TokenObject *token)
{
    if (token->released) {
        return 0;
    }
    token->released = 1;
    bps_status status = bps_limiter_release_slot(token->limiter->limiter);
    if (status != BPS_OK) {
        set_error(token->limiter->state, status);
        return -1;
    }
    return 0;
}

/* PEP 442 finalizer: a Token dropped unreleased gives its slot back and says so. */
static void
token_finalize(PyObject *obj)
{
    TokenObject *token = (TokenObject *)obj;
    if (token->released || token->limiter == NULL) {
        return;
    }
    PyObject *exc = get_raised_exception();
    if (token_give_back(token) < 0) {
        PyErr_WriteUnraisable(obj);
    }
    if (PyErr_ResourceWarning(obj, 1, "bpstream.Limiter token was never released "
                              "(its slot is given back now)") < 0) {
        PyErr_WriteUnraisable(obj);
    }
    set_raised_exception(exc);
}

static void
token_dealloc(TokenObject *token)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)token) < 0) {
        return;   /* resurrected */
    }
    PyTypeObject *tp = Py_TYPE(token);
    Py_XDECREF(token->limiter);
    PyObject_Free(token);
    Py_DECREF(tp);
}

PyDoc_STRVAR(token_release_doc,
"release($self, /)\n--\n\n"
"Give the slot back to the limiter (waking the next waiter it admits). Releasing\n"
"again does nothing.");

static PyObject *
token_release(TokenObject *token, PyObject *Py_UNUSED(ignored))
{
    if (token_give_back(token) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
token_enter(TokenObject *token, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef((PyObject *)token);
}

static PyObject *
token_exit(TokenObject *token, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return token_release(token, NULL);
}

static PyObject *
token_aenter(TokenObject *token, PyObject *Py_UNUSED(ignored))
{
    return ready_new(token->limiter->state, Py_NewRef((PyObject *)token));
}

static PyObject *
token_aexit(TokenObject *token, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *result = token_exit(token, args, nargs);
    return result != NULL ? ready_new(token->limiter->state, result)
                          : ready_from_error(token->limiter->state);
}

static PyObject *
token_get_released(TokenObject *token, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(token->released);
}

static PyObject *
token_get_limiter(TokenObject *token, void *Py_UNUSED(closure))
{
    return Py_NewRef((PyObject *)token->limiter);
}

static PyObject *
token_repr(TokenObject *token)
{
    return PyUnicode_FromFormat("<bpstream.Token %s>", token->released ? "released" : "held");
}

static PyMethodDef token_methods[] = {
    {"release", (PyCFunction)token_release, METH_NOARGS, token_release_doc},
    {"__enter__", (PyCFunction)token_enter, METH_NOARGS, PyDoc_STR("Return self.")},
    {"__exit__", (PyCFunction)(void (*)(void))token_exit, METH_FASTCALL,
     PyDoc_STR("Release the token.")},
    {"__aenter__", (PyCFunction)token_aenter, METH_NOARGS, PyDoc_STR("Coroutine: self.")},
    {"__aexit__", (PyCFunction)(void (*)(void))token_aexit, METH_FASTCALL,
     PyDoc_STR("Coroutine: release the token.")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef token_getset[] = {
    {"released", (getter)token_get_released, NULL, PyDoc_STR("True once released."), NULL},
    {"limiter", (getter)token_get_limiter, NULL, PyDoc_STR("The Limiter that admitted it."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(token_doc,
"One admission by a bpstream.Limiter: holds one slot until release() (or the end of\n"
"a with / async with block). release() is idempotent; a token garbage-collected\n"
"unreleased gives its slot back and emits a ResourceWarning.");

static PyType_Slot token_slots[] = {
    {Py_tp_doc, (void *)token_doc},
    {Py_tp_dealloc, token_dealloc},
    {Py_tp_finalize, token_finalize},
    {Py_tp_repr, token_repr},
    {Py_tp_methods, token_methods},
    {Py_tp_getset, token_getset},
    {0, NULL},
};

static PyType_Spec token_spec = {
    .name = "bpstream.Token",
    .basicsize = sizeof(TokenObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = token_slots,
};

/* ------------------------------------------------------------------------- */
/* Limiter: construction                                                     */
/* ------------------------------------------------------------------------- */

static PyObject *
limiter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    PyObject *module = PyType_GetModuleByDef(type, &bpstream_module);
    if (module == NULL) {
        return NULL;
    }
    LimiterObject *self = (LimiterObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->limiter = NULL;
    self->state = get_module_state(module);
    self->clock = NULL;
    self->weakreflist = NULL;
    return (PyObject *)self;
}

/* Borrows obj (NULL or None: no limit). */
static int
parse_max_concurrent(PyObject *obj, int64_t *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = BPS_LIMIT_NONE;
        return 0;
    }
    return permit_count(obj, "max_concurrent", out);
}

static int
limiter_init(LimiterObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_concurrent", "rate", "burst", "clock", NULL};
    PyObject *max_obj = NULL, *rate_obj = NULL, *burst_obj = NULL, *clock_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOO$O:Limiter", kwlist, &max_obj, &rate_obj,
                                     &burst_obj, &clock_obj)) {
        return -1;
    }
    if (self->limiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Limiter.__init__() called twice");
        return -1;
    }
    bps_limiter_config config;
    memset(&config, 0, sizeof(config));
    config.size = sizeof(config);
    if (parse_max_concurrent(max_obj, &config.max_concurrent) < 0) {
        return -1;
    }
    int has_rate = rate_obj != NULL && rate_obj != Py_None;
    if (has_rate && positive_seconds(rate_obj, "rate", &config.rate) < 0) {
        return -1;
    }
    if (burst_obj != NULL && burst_obj != Py_None) {
        if (permit_count(burst_obj, "burst", &config.burst) < 0) {
            return -1;
        }
        if (!has_rate) {
            PyErr_SetString(PyExc_ValueError, "burst is the rate limit's: give a rate with it");
            return -1;
        }
    }
    if (!has_rate && config.max_concurrent == BPS_LIMIT_NONE) {
        PyErr_SetString(PyExc_ValueError,
                        "a Limiter needs at least one limit: max_concurrent or rate");
        return -1;
    }
    if (clock_from_object(self->state, clock_obj, &config.clock) < 0) {
        return -1;
    }
    bps_limiter *limiter = NULL;
    bps_status status = bps_limiter_create(&config, &limiter);
    if (status != BPS_OK) {
        if (status == BPS_INVALID_ARGUMENT) {
            PyErr_SetString(PyExc_ValueError, "Limiter: parameters out of range");
        }
        else {
            set_error(self->state, status);
        }
        return -1;
    }
    self->limiter = limiter;
    self->clock = clock_obj != NULL && clock_obj != Py_None ? Py_NewRef(clock_obj) : NULL;
    return 0;
}

static void
limiter_dealloc(LimiterObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    if (self->limiter != NULL) {
        (void)bps_limiter_release(self->limiter);
    }
    Py_XDECREF(self->clock);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------------------- */
/* Limiter: admission                                                        */
/* ------------------------------------------------------------------------- */

PyDoc_STRVAR(limiter_try_acquire_doc,
"try_acquire($self, /)\n--\n\n"
"Admit one now if a slot and a rate token are both there and nobody waits: return\n"
"a Token; else None, having taken nothing. Never waits.");

static PyObject *
limiter_try_acquire(LimiterObject *self, PyObject *Py_UNUSED(ignored))
{
    LIMITER_CHECK_INIT(self);
    bps_status status = bps_limiter_try_acquire(self->limiter);
    if (status == BPS_OK) {
        return token_new(self);
    }
    if (status == BPS_FULL) {
        Py_RETURN_NONE;
    }
    return set_error(self->state, status);
}

/* Takes a slot (waiting as timeout_ns says). 0, or -1 with an exception. */
static int
limiter_take(LimiterObject *self, int64_t timeout_ns)
{
    admission_line line = limiter_line(self);
    bps_status status;
    int64_t waited;
    if (admission_acquire(self->state, &line, 1, timeout_ns, &status, &waited) < 0) {
        return -1;
    }
    if (status == BPS_OK) {
        return 0;
    }
    if (status == BPS_FULL) {
        PyErr_SetNone(PyExc_TimeoutError);
    }
    else {
        set_error(self->state, status);
    }
    return -1;
}

PyDoc_STRVAR(limiter_acquire_doc,
"acquire($self, /, timeout=None)\n--\n\n"
"Wait in line (first come, first served) to be admitted; return a Token. Raises\n"
"TimeoutError when the timeout (seconds on the limiter's clock; None: no limit, 0:\n"
"never wait) passes. The GIL is released while waiting; Ctrl-C interrupts the wait.\n"
"A wait that ends without admission takes nothing.");

static PyObject *
limiter_acquire(LimiterObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    LIMITER_CHECK_INIT(self);
    int64_t timeout_ns;
    PyObject *timeout_obj;
    if (parse_acquire_args("acquire", args, nargs, kwnames, NULL, &timeout_ns, &timeout_obj) < 0
        || limiter_take(self, timeout_ns) < 0) {
        return NULL;
    }
    return token_new(self);
}

/* The async admission: a Token (as_token) or None (async with) when admitted at once,
 * else bpstream._control's waiting coroutine. */
static PyObject *
limiter_admit_async(LimiterObject *self, int64_t timeout_ns, PyObject *timeout_obj, int as_token)
{
    admission_line line = limiter_line(self);
    bps_status status = admission_first_look(&line, 1, timeout_ns);
    if (status == BPS_OK) {   /* the fast path */
        return ready_new(self->state, as_token ? token_new(self) : Py_NewRef(Py_None));
    }
    if (status == BPS_FULL && timeout_ns != 0) {
        PyObject *call[3] = {(PyObject *)self, timeout_obj != NULL ? timeout_obj : Py_None,
                             as_token ? Py_True : Py_False};
        return call_control(self->state, "limiter_wait", call, 3);
    }
    if (status == BPS_FULL) {
        PyErr_SetNone(PyExc_TimeoutError);
    }
    else {
        set_error(self->state, status);
    }
    return ready_from_error(self->state);
}

PyDoc_STRVAR(limiter_aacquire_doc,
"aacquire($self, /, timeout=None)\n--\n\n"
"Coroutine: like acquire(), but waiting suspends the task, not the thread; tasks\n"
"and threads wait in one line. Cancelled while waiting, it takes nothing.");

static PyObject *
limiter_aacquire(LimiterObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    LIMITER_CHECK_INIT(self);
    int64_t timeout_ns;
    PyObject *timeout_obj;
    if (parse_acquire_args("aacquire", args, nargs, kwnames, NULL, &timeout_ns, &timeout_obj) < 0) {
        return NULL;
    }
    return limiter_admit_async(self, timeout_ns, timeout_obj, 1);
}

static PyObject *
limiter_enter(LimiterObject *self, PyObject *Py_UNUSED(ignored))
{
    LIMITER_CHECK_INIT(self);
    if (limiter_take(self, -1) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
limiter_release_anonymous(LimiterObject *self)
{
    LIMITER_CHECK_INIT(self);
    bps_status status = bps_limiter_release_slot(self->limiter);
    if (status == BPS_INVALID_STATE) {
        PyErr_SetString(PyExc_RuntimeError, "Limiter released more slots than it admitted");
        return NULL;
    }
    if (status != BPS_OK) {
        return set_error(self->state, status);
    }
    Py_RETURN_NONE;
}

static PyObject *
limiter_exit(LimiterObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return limiter_release_anonymous(self);
}

static PyObject *
limiter_aenter(LimiterObject *self, PyObject *Py_UNUSED(ignored))
{
    LIMITER_CHECK_INIT(self);
    return limiter_admit_async(self, -1, NULL, 0);
}

static PyObject *
limiter_aexit(LimiterObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    PyObject *result = limiter_release_anonymous(self);
    return result != NULL ? ready_new(self->state, result) : ready_from_error(self->state);
}

/* _enqueue(waker) -> _Ticket; _adopt() -> a Token for the slot a granted ticket holds. */
static PyObject *
limiter_enqueue(LimiterObject *self, PyObject *waker)
{
    LIMITER_CHECK_INIT(self);
    admission_line line = limiter_line(self);
    bps_status status;
    PyObject *ticket = admission_enqueue(self->state, (PyObject *)self, &line, 1, waker, &status);
    return ticket != NULL || status == BPS_OK ? ticket : set_error(self->state, status);
}

static PyObject *
limiter_adopt(LimiterObject *self, PyObject *Py_UNUSED(ignored))
{
    LIMITER_CHECK_INIT(self);
    return token_new(self);
}

static PyObject *
limiter_release_slot_method(LimiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return limiter_release_anonymous(self);
}

static PyObject *
limiter_now(LimiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return clock_now_seconds(self->clock);
}

PyDoc_STRVAR(limiter_retry_after_doc,
"retry_after($self, /)\n--\n\n"
"Seconds (on the limiter's clock) until a caller would be admitted if nothing\n"
"changes, the waiters already in line admitted first: 0.0 now (nobody waits), the\n"
"rate's delay for them and it, or inf when only a released slot can tell.");

static PyObject *
limiter_retry_after(LimiterObject *self, PyObject *Py_UNUSED(ignored))
{
    LIMITER_CHECK_INIT(self);
    int64_t ns = 0;
    bps_status status = bps_limiter_retry_after(self->limiter, &ns);
    if (status != BPS_OK) {
        return set_error(self->state, status);
    }
    return PyFloat_FromDouble(ns < 0 ? INFINITY : (double)ns / 1e9);
}

/* ------------------------------------------------------------------------- */
/* Limiter: state                                                            */
/* ------------------------------------------------------------------------- */

static int
snapshot(LimiterObject *self, bps_limiter_stats *s)
{
    if (self->limiter == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Limiter.__init__() was not called");
        return -1;
    }
    memset(s, 0, sizeof(*s));
    s->size = sizeof(*s);
    bps_status status = bps_limiter_get_stats(self->limiter, s);
    if (status != BPS_OK) {
        set_error(self->state, status);
        return -1;
    }
    return 0;
}

static PyObject *
max_concurrent_object(const bps_limiter_stats *s)
{
    return s->max_concurrent < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(s->max_concurrent);
}

static PyObject *
rate_object(const bps_limiter_stats *s)
{
    return s->rate <= 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble(s->rate);
}

PyDoc_STRVAR(limiter_stats_doc,
"stats($self, /)\n--\n\n"
"A snapshot as a dict: granted, refused (try_acquire refusals only; a wait counts as\n"
"a grant, a timeout or a cancellation), timed_out, cancelled (Ctrl-C, a cancelled\n"
"task, a task whose loop was closed under it or stayed in the parent of a fork),\n"
"released, in_flight, waiting, utilization, total_wait (seconds admitted waiters\n"
"waited), wakeups (one per grant without a herd), max_concurrent, rate, burst, tokens.");

static PyObject *
limiter_stats(LimiterObject *self, PyObject *Py_UNUSED(ignored))
{
    bps_limiter_stats s;
    if (snapshot(self, &s) < 0) {
        return NULL;
    }
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    if (dict_set_new(d, "granted", PyLong_FromUnsignedLongLong(s.granted)) < 0
        || dict_set_new(d, "refused", PyLong_FromUnsignedLongLong(s.refused)) < 0
        || dict_set_new(d, "timed_out", PyLong_FromUnsignedLongLong(s.timed_out)) < 0
        || dict_set_new(d, "cancelled", PyLong_FromUnsignedLongLong(s.cancelled)) < 0
        || dict_set_new(d, "released", PyLong_FromUnsignedLongLong(s.released)) < 0
        || dict_set_new(d, "in_flight", PyLong_FromUnsignedLongLong(s.in_flight)) < 0
        || dict_set_new(d, "waiting", PyLong_FromUnsignedLongLong(s.waiting)) < 0
        || dict_set_new(d, "utilization", PyFloat_FromDouble(s.utilization)) < 0
        || dict_set_new(d, "total_wait", PyFloat_FromDouble((double)s.wait_ns / 1e9)) < 0
        || dict_set_new(d, "wakeups", PyLong_FromUnsignedLongLong(s.wakeups)) < 0
        || dict_set_new(d, "max_concurrent", max_concurrent_object(&s)) < 0
        || dict_set_new(d, "rate", rate_object(&s)) < 0
        || dict_set_new(d, "burst", s.rate <= 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(s.burst)) < 0
        || dict_set_new(d, "tokens", PyFloat_FromDouble(s.tokens)) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *
limiter_get_in_flight(LimiterObject *self, void *Py_UNUSED(closure))
{
    bps_limiter_stats s;
    return snapshot(self, &s) < 0 ? NULL : PyLong_FromUnsignedLongLong(s.in_flight);
}

static PyObject *
limiter_get_waiting(LimiterObject *self, void *Py_UNUSED(closure))
{
    bps_limiter_stats s;
    return snapshot(self, &s) < 0 ? NULL : PyLong_FromUnsignedLongLong(s.waiting);
}

static PyObject *
limiter_get_capacity(LimiterObject *self, void *Py_UNUSED(closure))
{
    bps_limiter_stats s;
    return snapshot(self, &s) < 0 ? NULL : max_concurrent_object(&s);
}

static PyObject *
limiter_get_available(LimiterObject *self, void *Py_UNUSED(closure))
{
    bps_limiter_stats s;
    if (snapshot(self, &s) < 0) {
        return NULL;
    }
    if (s.max_concurrent < 0) {
        Py_RETURN_NONE;
    }
    long long free_slots = s.max_concurrent - (long long)s.in_flight;
    return PyLong_FromLongLong(free_slots > 0 ? free_slots : 0);
}

static PyObject *
limiter_get_utilization(LimiterObject *self, void *Py_UNUSED(closure))
{
    bps_limiter_stats s;
    return snapshot(self, &s) < 0 ? NULL : PyFloat_FromDouble(s.utilization);
}

static PyObject *
limiter_get_rate(LimiterObject *self, void *Py_UNUSED(closure))
{
    bps_limiter_stats s;
    return snapshot(self, &s) < 0 ? NULL : rate_object(&s);
}

static PyObject *
limiter_get_burst(LimiterObject *self, void *Py_UNUSED(closure))
{
    bps_limiter_stats s;
    if (snapshot(self, &s) < 0) {
        return NULL;
    }
    return s.rate <= 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(s.burst);
}

static int
limiter_set_max_concurrent(LimiterObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (self->limiter == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Limiter.__init__() was not called");
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete max_concurrent");
        return -1;
    }
    int64_t max_concurrent;
    if (parse_max_concurrent(value, &max_concurrent) < 0) {
        return -1;
    }
    bps_status status = bps_limiter_set_max_concurrent(self->limiter, max_concurrent);
    if (status == BPS_INVALID_ARGUMENT) {
        PyErr_SetString(PyExc_ValueError,
                        "a Limiter needs at least one limit: set a rate before removing "
                        "max_concurrent");
        return -1;
    }
    if (status != BPS_OK) {
        set_error(self->state, status);
        return -1;
    }
    return 0;
}

static int
limiter_set_rate(LimiterObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (self->limiter == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Limiter.__init__() was not called");
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete rate");
        return -1;
    }
    double rate = 0;
    if (value != Py_None && positive_seconds(value, "rate", &rate) < 0) {
        return -1;
    }
    bps_status status = bps_limiter_set_rate(self->limiter, rate, 0);
    if (status == BPS_INVALID_ARGUMENT) {
        PyErr_SetString(PyExc_ValueError,
                        "a Limiter needs at least one limit: set max_concurrent before "
                        "removing the rate");
        return -1;
    }
    if (status != BPS_OK) {
        set_error(self->state, status);
        return -1;
    }
    return 0;
}

static PyObject *
limiter_get_clock(LimiterObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->clock != NULL ? self->clock : Py_None);
}

static PyObject *
limiter_repr(LimiterObject *self)
{
    bps_limiter_stats s;
    if (self->limiter == NULL) {
        return PyUnicode_FromString("<bpstream.Limiter uninitialized>");
    }
    if (snapshot(self, &s) < 0) {
        return NULL;
    }
    PyObject *max_obj = max_concurrent_object(&s), *rate = rate_object(&s);
    PyObject *result = NULL;
    if (max_obj != NULL && rate != NULL) {
        result = PyUnicode_FromFormat("<bpstream.Limiter max_concurrent=%R rate=%R in_flight=%llu "
                                      "waiting=%llu>", max_obj, rate,
                                      (unsigned long long)s.in_flight,
                                      (unsigned long long)s.waiting);
    }
    Py_XDECREF(max_obj);
    Py_XDECREF(rate);
    return result;
}

static PyMethodDef limiter_methods[] = {
    {"try_acquire", (PyCFunction)limiter_try_acquire, METH_NOARGS, limiter_try_acquire_doc},
    {"acquire", (PyCFunction)(void (*)(void))limiter_acquire, METH_FASTCALL | METH_KEYWORDS,
     limiter_acquire_doc},
    {"aacquire", (PyCFunction)(void (*)(void))limiter_aacquire, METH_FASTCALL | METH_KEYWORDS,
     limiter_aacquire_doc},
    {"retry_after", (PyCFunction)limiter_retry_after, METH_NOARGS, limiter_retry_after_doc},
    {"stats", (PyCFunction)limiter_stats, METH_NOARGS, limiter_stats_doc},
    {"__enter__", (PyCFunction)limiter_enter, METH_NOARGS,
     PyDoc_STR("Wait to be admitted (like acquire()); the slot is held until __exit__.")},
    {"__exit__", (PyCFunction)(void (*)(void))limiter_exit, METH_FASTCALL,
     PyDoc_STR("Give the slot taken by __enter__ back.")},
    {"__aenter__", (PyCFunction)limiter_aenter, METH_NOARGS,
     PyDoc_STR("Coroutine: wait to be admitted (like aacquire()).")},
    {"__aexit__", (PyCFunction)(void (*)(void))limiter_aexit, METH_FASTCALL,
     PyDoc_STR("Coroutine: give the slot taken by __aenter__ back.")},
    {"_enqueue", (PyCFunction)limiter_enqueue, METH_O, NULL},
    {"_adopt", (PyCFunction)limiter_adopt, METH_NOARGS, NULL},
    {"_release_slot", (PyCFunction)limiter_release_slot_method, METH_NOARGS, NULL},
    {"_now", (PyCFunction)limiter_now, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef limiter_getset[] = {
    {"in_flight", (getter)limiter_get_in_flight, NULL, PyDoc_STR("Slots held now."), NULL},
    {"waiting", (getter)limiter_get_waiting, NULL, PyDoc_STR("Waiters in line now."), NULL},
    {"capacity", (getter)limiter_get_capacity, NULL,
     PyDoc_STR("max_concurrent (None: no concurrency limit)."), NULL},
    {"available", (getter)limiter_get_available, NULL,
     PyDoc_STR("Free slots now (None: no concurrency limit)."), NULL},
    {"utilization", (getter)limiter_get_utilization, NULL,
     PyDoc_STR("in_flight / max_concurrent (0.0 without a concurrency limit)."), NULL},
    {"max_concurrent", (getter)limiter_get_capacity, (setter)limiter_set_max_concurrent,
     PyDoc_STR("The concurrency limit (None: none). Raising it admits waiters at once; "
               "lowering it takes nothing back."), NULL},
    {"rate", (getter)limiter_get_rate, (setter)limiter_set_rate,
     PyDoc_STR("Admissions per second (None: no rate limit). Raising it admits waiters "
               "at once."), NULL},
    {"burst", (getter)limiter_get_burst, NULL,
     PyDoc_STR("The rate limit's burst (None: no rate limit)."), NULL},
    {"clock", (getter)limiter_get_clock, NULL,
     PyDoc_STR("The ManualClock given, or None (the monotonic clock)."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef limiter_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(LimiterObject, weakreflist), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(limiter_doc,
"Limiter(max_concurrent=None, rate=None, burst=None, *, clock=None)\n--\n\n"
"Admission control: at most max_concurrent units of work in flight and at most rate\n"
"admissions per second (a token bucket of burst, default 1), taken together or not\n"
"at all. acquire()/aacquire() return a Token (a context manager); `with limiter:`\n"
"and `async with limiter:` hold a slot for the block. Waiters (threads and tasks)\n"
"are admitted in arrival order, nobody barges in, each freed slot wakes exactly one.\n"
"At least one limit is required. clock: a ManualClock for tests.");

static PyType_Slot limiter_slots[] = {
    {Py_tp_doc, (void *)limiter_doc},
    {Py_tp_new, limiter_new},
    {Py_tp_init, limiter_init},
    {Py_tp_dealloc, limiter_dealloc},
    {Py_tp_repr, limiter_repr},
    {Py_tp_methods, limiter_methods},
    {Py_tp_getset, limiter_getset},
    {Py_tp_members, limiter_members},
    {0, NULL},
};

static PyType_Spec limiter_spec = {
    .name = "bpstream.Limiter",
    .basicsize = sizeof(LimiterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = limiter_slots,
};

bps_limiter *
bpstream_limiter_handle(PyObject *obj)
{
    PyObject *module = PyType_GetModuleByDef(Py_TYPE(obj), &bpstream_module);
    if (module == NULL || !PyObject_TypeCheck(obj, get_module_state(module)->limiter_type)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "expected a bpstream.Limiter, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    LimiterObject *self = (LimiterObject *)obj;
    if (self->limiter == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Limiter.__init__() was not called");
        return NULL;
    }
    (void)bps_limiter_retain(self->limiter);
    return self->limiter;
}

int
limiter_init_types(PyObject *module, module_state *st)
{
    st->limiter_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &limiter_spec, NULL);
    if (st->limiter_type == NULL || PyModule_AddType(module, st->limiter_type) < 0) {
        return -1;
    }
    st->token_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &token_spec, NULL);
    if (st->token_type == NULL || PyModule_AddType(module, st->token_type) < 0) {
        return -1;
    }
    return 0;
}
