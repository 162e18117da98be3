/*
 * _admission.c — what the rate controllers (_rate.c) and the Limiter (_limiter.c) share:
 * a line of waiters served first come, first served, by threads and tasks alike.
 *
 * Owns: the argument conversions of permits, rates and seconds; the blocking acquire (the
 * GIL released through the gil_waiter hook, Ctrl-C polled, tickets of closed loops cleared
 * first); the async first look and enqueue; the bpstream._control calls; and _Ticket, one
 * async waiter's place in a controller's or limiter's line (bpstream.h, TICKETS), polled
 * by bpstream/_control.py.
 *
 * OWNERSHIP
 *  - A _Ticket owns its bps_ticket until release() (or dealloc, which releases it as
 *    cancelled); the notify context belongs to the ticket (freed by the core through
 *    aio_notify_context_release once the ticket is released and no notify runs), so the
 *    _Ticket only borrows it while the ticket lives. It keeps its owner (the controller
 *    or limiter object) alive.
 *  - An admission_line borrows its line: the caller's object keeps it alive.
 *
 * GIL: every bps_ call is made with the GIL held; admission_acquire waits through the
 * gil_waiter hook (released GIL, Ctrl-C polled every 50 ms on the main thread:
 * BPS_CANCELLED takes nothing). Ticket notifies run on any thread without the GIL and only
 * write an eventfd (_aio.c).
 */
#include "_bpstream.h"

#include <math.h>

#define PERMITS_MAX ((int64_t)1 << 31)

/* ------------------------------------------------------------------------- */
/* Arguments                                                                 */
/* ------------------------------------------------------------------------- */

/* Borrows obj. A real number (int, float, anything with __float__; not str). */
int
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

/* Borrows obj. An int (anything with __index__; not float, not bool) as a long long:
 * 0 with *overflow -1/0/+1 as PyLong_AsLongLongAndOverflow, or -1 with TypeError. */
static int
whole_number(PyObject *obj, const char *what, long long *out, int *overflow)
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
    *out = PyLong_AsLongLongAndOverflow(index, overflow);
    Py_DECREF(index);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

int
permit_count(PyObject *obj, const char *what, int64_t *out)
{
    long long v;
    int overflow;
    if (whole_number(obj, what, &v, &overflow) < 0) {
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
int
parse_n(PyObject *obj, int64_t *out)
{
    if (obj == NULL) {
        *out = 1;
        return 0;
    }
    long long v;
    int overflow;
    if (whole_number(obj, "n", &v, &overflow) < 0) {
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
int64_t
seconds_to_ns(double seconds)
{
    double ns = round(seconds * 1e9);
    return ns >= 9.2e18 ? INT64_MAX : (int64_t)ns;
}


// Returns a new reference, or NULL.
PyObject *
ns_to_seconds(int64_t ns)
{
    return PyFloat_FromDouble((double)ns / 1e9);
}


int
parse_acquire_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames, int64_t *n, int64_t *timeout_ns, PyObject **timeout_obj)
{
    static const char *const with_n[] = {"n", "timeout"};
    static const char *const timeout_only[] = {"timeout"};
    int count = n != NULL ? 2 : 1;
    arg_spec spec = {fname, n != NULL ? with_n : timeout_only, count, 0, count, 0};
    PyObject *argv[2] = {NULL, NULL};
    if (n != NULL) {
        *n = 1;
    }
    *timeout_ns = -1;
    *timeout_obj = NULL;
    if (nargs == 0 && kwnames == NULL) {
        return 0;
    }
    if (parse_args(&spec, args, nargs, kwnames, argv) < 0
        || (n != NULL && parse_n(argv[0], n) < 0)
        || timeout_to_ns(argv[count - 1], timeout_ns) < 0) {
        return -1;
    }
    *timeout_obj = argv[count - 1];
    return 0;
}

// Returns 0 or -1: dict[key] = value (stolen; NULL: an exception is set).
int
dict_set_new(PyObject *dict, const char *key, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(dict, key, value);
    Py_DECREF(value);
    return rc;
}

/* ------------------------------------------------------------------------- */
/* Waiting in line                                                           */
/* ------------------------------------------------------------------------- */

int
admission_acquire(module_state *st, const admission_line *line, int64_t n, int64_t timeout_ns,
                  bps_status *status, int64_t *waited_ns)
{
    *waited_ns = 0;
    if (timeout_ns != 0 && st->control != NULL) {
        /* Tasks have waited in this process: when this call must wait, first clear tickets
         * a closed loop left in line (the fast path stays free of Python calls). */
        bps_status first = line->try_before_wait(line->line, n);
        if (first == BPS_OK) {
            *status = BPS_OK;
            return 0;
        }
        if (first == BPS_FULL && forget_closed_loops(st) < 0) {
            return -1;
        }
    }
    gil_waiter w;
    /* An admission wait removes no stream item: gil_waiter_init never looks at the stream. */
    *status = line->acquire(line->line, n, timeout_ns,
                            timeout_ns == 0 ? NULL : gil_waiter_init(&w, NULL, 0), waited_ns);
    return 0;
}

bps_status
admission_first_look(const admission_line *line, int64_t n, int64_t timeout_ns)
{
    return timeout_ns == 0
        ? line->acquire(line->line, n, 0, NULL, NULL)   /* counted like acquire's */
        : line->try_before_wait(line->line, n);        /* a refusal: we wait, uncounted */
}

PyObject *
admission_enqueue(module_state *st, PyObject *owner, const admission_line *line, int64_t n,
                  PyObject *waker, bps_status *status)
{
    *status = BPS_OK;
    void *context = aio_notify_context_new(st, waker);
    if (context == NULL) {
        return NULL;
    }
    bps_ticket *ticket = NULL;
    *status = line->enqueue(line->line, n, aio_notify, aio_notify_context_release, context,
                            &ticket);
    if (*status != BPS_OK) {
        aio_notify_context_release(context);   /* not taken: still ours (written on success) */
        return NULL;
    }
    return ticket_new(st, owner, ticket, context);
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


int
admission_init_types(PyObject *module, module_state *st)
{
    st->ticket_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ticket_spec, NULL);
    return st->ticket_type == NULL ? -1 : 0;
}
