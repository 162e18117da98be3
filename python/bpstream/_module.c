/*
 * _module.c — the module bpstream._bpstream and the process it lives in.
 *
 * Owns: the module (multi-phase init, its state, traverse/clear), the exceptions and the
 * Policy enum it creates, module-level functions (abi_version, _at_exit,
 * _after_fork_child), and the process section: which thread holds the GIL, the release
 * callback every stream uses, the interpreter-exit handshake, the fork hook, the list of
 * live streams, and the hook that releases the GIL while a call waits. The rules these
 * enforce are stated once, in _bpstream.h (OWNERSHIP, GIL RULES).
 */
#include "_bpstream.h"

#include <pythread.h>
#include <stdatomic.h>
#include <time.h>

/* The policies by bps_policy: their values (_args.c parses them, repr shows them) and
 * the names of bpstream.Policy's members (make_policy_enum). */
const char *const policy_names[N_POLICIES] = {
    [BPS_POLICY_BLOCK] = "block",
    [BPS_POLICY_DROP_OLDEST] = "drop_oldest",
    [BPS_POLICY_DROP_NEWEST] = "drop_newest",
    [BPS_POLICY_REJECT] = "reject",
    [BPS_POLICY_DROP_ALL] = "drop_all",
    [BPS_POLICY_ADAPTIVE] = "adaptive",
};
static const char *const policy_member_names[N_POLICIES] = {
    [BPS_POLICY_BLOCK] = "BLOCK",
    [BPS_POLICY_DROP_OLDEST] = "DROP_OLDEST",
    [BPS_POLICY_DROP_NEWEST] = "DROP_NEWEST",
    [BPS_POLICY_REJECT] = "REJECT",
    [BPS_POLICY_DROP_ALL] = "DROP_ALL",
    [BPS_POLICY_ADAPTIVE] = "ADAPTIVE",
};

/* ------------------------------------------------------------------------- */
/* The process: who holds the GIL, interpreter exit, fork                    */
/* ------------------------------------------------------------------------- */

/* The thread that runs signal handlers (threading.main_thread()): set at import, and
 * again in a forked child, whose only thread is its main thread however it was forked.
 * Read and written with the GIL held. */
unsigned long main_thread_ident;

/* Every initialised StreamObject (stream_setup adds, dealloc removes; GIL held), so a
 * forked child can put right what the fork left behind (after_fork_child). */
static StreamObject *all_streams;

void
all_streams_add(StreamObject *self)
{
    self->next_stream = all_streams;
    if (all_streams != NULL) {
        all_streams->prev_stream = self;
    }
    all_streams = self;
}

void
all_streams_remove(StreamObject *self)
{
    if (self->prev_stream != NULL) {
        self->prev_stream->next_stream = self->next_stream;
    }
    else {
        all_streams = self->next_stream;
    }
    if (self->next_stream != NULL) {
        self->next_stream->prev_stream = self->prev_stream;
    }
}

/* 1 if THIS thread holds the GIL. On 3.12+ the thread state is thread-local and non-NULL
 * exactly while attached. On 3.11 _PyThreadState_UncheckedGet() names the thread that
 * holds the GIL, whichever it is, so it is compared with this thread's own state.
 * (Not PyGILState_Check(): it says 1 for everyone once a subinterpreter exists.) */
static inline int
holds_gil(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked() != NULL;
#elif PY_VERSION_HEX >= 0x030C0000
    return _PyThreadState_UncheckedGet() != NULL;
#else
    PyThreadState *mine = PyGILState_GetThisThreadState();
    return mine != NULL && mine == _PyThreadState_UncheckedGet();
#endif
}

/* Interpreter exit, a handshake between native threads that release Python objects and
 * the exiting interpreter (both sides sequentially consistent):
 *  - a native thread counts itself in native_releasers, THEN reads interpreter_exiting:
 *    set, it leaves the object alone and counts itself out; clear, it takes the GIL
 *    (PyGILState_Ensure), releases, gives the GIL back, and counts itself out;
 *  - at exit (an atexit callback: before finalization, while the GIL can still be taken)
 *    the interpreter sets interpreter_exiting, THEN waits, GIL released, until
 *    native_releasers is 0.
 * So either the native thread sees the flag, or the exit waits for it to be done: no
 * native thread ever takes the GIL of a finalizing interpreter (3.11 would end that thread
 * with pthread_exit inside our core, its locks held). */
static atomic_int interpreter_exiting;
static atomic_long native_releasers;
static atomic_long objects_left_at_exit;   /* dropped by native threads after exit began */

// Steals object. From a thread that does not hold the GIL.
static void
release_object_without_gil(PyObject *object)
{
    atomic_fetch_add(&native_releasers, 1);
    if (atomic_load(&interpreter_exiting)) {
        atomic_fetch_add(&objects_left_at_exit, 1);
    }
    else {
        PyGILState_STATE gil = PyGILState_Ensure();
        Py_DECREF(object);
        PyGILState_Release(gil);
    }
    atomic_fetch_sub(&native_releasers, 1);
}

int
native_gil_enter(PyGILState_STATE *gil)
{
    atomic_fetch_add(&native_releasers, 1);
    if (atomic_load(&interpreter_exiting)) {
        atomic_fetch_sub(&native_releasers, 1);
        return 0;
    }
    *gil = PyGILState_Ensure();
    return 1;
}

void
native_gil_leave(PyGILState_STATE gil)
{
    PyGILState_Release(gil);
    atomic_fetch_sub(&native_releasers, 1);
}

/* The stream's release callback: drops the stream's reference to one item (steals it).
 * Runs on the thread whose call dropped it, with or without the GIL, never with the
 * stream's lock held (so taking the GIL here cannot deadlock against a GIL holder that
 * waits for that lock). */
void
release_item(void *item, void *context)
{
    (void)context;
    if (bps_item_is_frame(item)) {
        bps_frame_free(item);
    }
    else if (holds_gil()) {
        Py_DECREF((PyObject *)item);
    }
    else {
        release_object_without_gil((PyObject *)item);
    }
}

PyDoc_STRVAR(at_exit_doc,
"_at_exit($module, /)\n--\n\n"
"Registered with atexit: from now on native threads leave Python objects alone;\n"
"returns once none is releasing one.");

static PyObject *
bpstream_at_exit(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    atomic_store(&interpreter_exiting, 1);
    if (atomic_load(&native_releasers) > 0) {
        Py_BEGIN_ALLOW_THREADS
        while (atomic_load(&native_releasers) > 0) {
            struct timespec pause = {0, 100 * 1000};
            nanosleep(&pause, NULL);
        }
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(after_fork_child_doc,
"_after_fork_child($module, /)\n--\n\n"
"Registered with os.register_at_fork(after_in_child=...): puts right what a fork\n"
"left behind in the child.");

/* In a forked child (GIL held, the only thread). The core already re-made every stream's
 * lock and conditions (bpstream.h, fork), so streams work; what is left is ours:
 *  - this thread is the main thread now, whichever thread forked;
 *  - no thread of the parent waits here, nor releases an object;
 *  - a stream fed by a native thread of the parent (a reader, or native code that took a
 *    handle through the C API) has no producer any more: it is closed, so its consumers
 *    drain what was buffered at the fork and stop instead of waiting forever. A reader's
 *    fds are closed with it (bps_reader_stop in a child joins nothing). */
static PyObject *
bpstream_after_fork_child(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    main_thread_ident = PyThread_get_thread_ident();
    atomic_store(&native_releasers, 0);
    for (StreamObject *self = all_streams; self != NULL; self = self->next_stream) {
        self->getters_waiting = 0;
        if (self->reader != NULL) {
            stop_reader(self);
        }
        else if (self->handed_to_native) {
            (void)bps_stream_close(self->stream, 0);   /* drain, then stop */
        }
    }
    Py_RETURN_NONE;
}

/* The waiter hook of every blocking call (gil_waiter_init, _bpstream.h). */
int
gil_wait_hook(void *context, bps_wait_event event)
{
    gil_waiter *w = (gil_waiter *)context;
    switch (event) {
    case BPS_WAIT_BEGIN:
        if (w->getters_waiting != NULL) {
            ++*w->getters_waiting;   /* still under the GIL */
        }
        w->tstate = PyEval_SaveThread();
        return 0;
    case BPS_WAIT_POLL: {
        PyEval_RestoreThread(w->tstate);
        int r = PyErr_CheckSignals();   /* runs handlers; KeyboardInterrupt -> -1 */
        w->tstate = PyEval_SaveThread();
        return r != 0;
    }
    case BPS_WAIT_END:
        PyEval_RestoreThread(w->tstate);
        if (w->getters_waiting != NULL) {
            --*w->getters_waiting;
        }
        return 0;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Module                                                                    */
/* ------------------------------------------------------------------------- */

PyDoc_STRVAR(abi_version_doc,
"abi_version($module, /)\n"
"--\n"
"\n"
"Return the ABI version of the libbpstream library actually loaded.");

static PyObject *
bpstream_abi_version(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(bps_abi_version());
}

static PyMethodDef module_methods[] = {
    {"abi_version", bpstream_abi_version, METH_NOARGS, abi_version_doc},
    {"_at_exit", bpstream_at_exit, METH_NOARGS, at_exit_doc},
    {"_after_fork_child", bpstream_after_fork_child, METH_NOARGS, after_fork_child_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(full_doc, "Raised when a put finds the stream full (subclass of queue.Full).");
PyDoc_STRVAR(empty_doc, "Raised when a get finds no item in time (subclass of queue.Empty).");
PyDoc_STRVAR(closed_doc,
"Raised by puts on a closed stream and by gets once it is closed and drained.\n"
"Subclass of queue.ShutDown where that exists (Python 3.13+); bpstream.ShutDown\n"
"is this class.");
PyDoc_STRVAR(producer_error_doc,
"Raised by a get (or a for loop) when a native producer ended the stream with an\n"
"error that is not an OS error; OS errors arrive as OSError with their errno.");
PyDoc_STRVAR(policy_doc,
"What a full stream does with the next put (a str enum: Policy.BLOCK == 'block').");

/* Registers _at_exit with atexit and _after_fork_child with os.register_at_fork (see
 * "The process"). Returns 0, or -1 with an exception. */
static int
register_process_hooks(PyObject *module)
{
    int rc = -1;
    PyObject *at_exit = NULL, *after_fork = NULL, *result = NULL, *kwargs = NULL;
    PyObject *atexit_module = NULL, *os_module = NULL, *register_at_fork = NULL;
    if ((at_exit = PyObject_GetAttrString(module, "_at_exit")) == NULL
        || (after_fork = PyObject_GetAttrString(module, "_after_fork_child")) == NULL
        || (atexit_module = PyImport_ImportModule("atexit")) == NULL
        || (os_module = PyImport_ImportModule("os")) == NULL) {
        goto done;
    }
    result = PyObject_CallMethod(atexit_module, "register", "O", at_exit);
    if (result == NULL) {
        goto done;
    }
    Py_CLEAR(result);
    register_at_fork = PyObject_GetAttrString(os_module, "register_at_fork");
    if (register_at_fork == NULL) {   /* no fork on this platform */
        PyErr_Clear();
        rc = 0;
        goto done;
    }
    kwargs = Py_BuildValue("{sO}", "after_in_child", after_fork);
    if (kwargs == NULL) {
        goto done;
    }
    PyObject *no_args = PyTuple_New(0);
    if (no_args == NULL) {
        goto done;
    }
    result = PyObject_Call(register_at_fork, no_args, kwargs);
    Py_DECREF(no_args);
    rc = result == NULL ? -1 : 0;
done:
    Py_XDECREF(result);
    Py_XDECREF(kwargs);
    Py_XDECREF(register_at_fork);
    Py_XDECREF(os_module);
    Py_XDECREF(atexit_module);
    Py_XDECREF(after_fork);
    Py_XDECREF(at_exit);
    return rc;
}

// Returns a new reference: the class bpstream.Policy, an enum.StrEnum.
static PyObject *
make_policy_enum(void)
{
    PyObject *enum_module = NULL, *str_enum = NULL, *members = NULL, *args = NULL,
             *kwargs = NULL, *result = NULL, *doc = NULL;
    enum_module = PyImport_ImportModule("enum");
    if (enum_module == NULL) {
        goto done;
    }
    str_enum = PyObject_GetAttrString(enum_module, "StrEnum");
    if (str_enum == NULL) {
        goto done;
    }
    members = PyList_New(N_POLICIES);
    if (members == NULL) {
        goto done;
    }
    for (int i = 0; i < N_POLICIES; i++) {
        PyObject *pair = Py_BuildValue("(ss)", policy_member_names[i], policy_names[i]);
        if (pair == NULL) {
            goto done;
        }
        PyList_SET_ITEM(members, i, pair);
    }
    args = Py_BuildValue("(sO)", "Policy", members);
    kwargs = Py_BuildValue("{ss}", "module", "bpstream");
    if (args == NULL || kwargs == NULL) {
        goto done;
    }
    result = PyObject_Call(str_enum, args, kwargs);
    if (result == NULL) {
        goto done;
    }
    doc = PyUnicode_FromString(policy_doc);
    if (doc == NULL || PyObject_SetAttrString(result, "__doc__", doc) < 0) {
        Py_CLEAR(result);
    }
done:
    Py_XDECREF(doc);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_XDECREF(members);
    Py_XDECREF(str_enum);
    Py_XDECREF(enum_module);
    return result;
}

static int
bpstream_exec(PyObject *module)
{
    module_state *st = get_module_state(module);
    PyObject *queue_module = NULL, *threading = NULL, *main_thread = NULL, *ident = NULL;
    PyObject *base;
    int rc = -1;

    if (bps_abi_version() != BPS_ABI_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "bpstream: libbpstream ABI version %u, but the extension was built "
                     "for version %d", (unsigned)bps_abi_version(), BPS_ABI_VERSION);
        return -1;
    }

    /* The main thread is the one that runs signal handlers, wherever we are imported. */
    threading = PyImport_ImportModule("threading");
    if (threading == NULL) {
        goto done;
    }
    main_thread = PyObject_CallMethod(threading, "main_thread", NULL);
    if (main_thread == NULL) {
        goto done;
    }
    ident = PyObject_GetAttrString(main_thread, "ident");
    if (ident == NULL) {
        goto done;
    }
    main_thread_ident = PyLong_AsUnsignedLong(ident);
    if (main_thread_ident == (unsigned long)-1 && PyErr_Occurred()) {
        goto done;
    }

    queue_module = PyImport_ImportModule("queue");
    if (queue_module == NULL) {
        goto done;
    }
    base = PyObject_GetAttrString(queue_module, "Full");
    if (base == NULL) {
        goto done;
    }
    st->Full = PyErr_NewExceptionWithDoc("bpstream.Full", full_doc, base, NULL);
    Py_DECREF(base);
    if (st->Full == NULL || PyModule_AddObjectRef(module, "Full", st->Full) < 0) {
        goto done;
    }
    base = PyObject_GetAttrString(queue_module, "Empty");
    if (base == NULL) {
        goto done;
    }
    st->Empty = PyErr_NewExceptionWithDoc("bpstream.Empty", empty_doc, base, NULL);
    Py_DECREF(base);
    if (st->Empty == NULL || PyModule_AddObjectRef(module, "Empty", st->Empty) < 0) {
        goto done;
    }
    base = PyObject_GetAttrString(queue_module, "ShutDown");   /* Python 3.13+ */
    if (base == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            goto done;
        }
        PyErr_Clear();
        base = Py_NewRef(PyExc_Exception);
    }
    st->Closed = PyErr_NewExceptionWithDoc("bpstream.Closed", closed_doc, base, NULL);
    Py_DECREF(base);
    if (st->Closed == NULL || PyModule_AddObjectRef(module, "Closed", st->Closed) < 0) {
        goto done;
    }

    st->ProducerError = PyErr_NewExceptionWithDoc("bpstream.ProducerError",
                                                  producer_error_doc, NULL, NULL);
    if (st->ProducerError == NULL
        || PyModule_AddObjectRef(module, "ProducerError", st->ProducerError) < 0) {
        goto done;
    }
    PyObject *capsule = capi_capsule();
    int added = capsule == NULL ? -1 : PyModule_AddObjectRef(module, "_C_API", capsule);
    Py_XDECREF(capsule);
    if (added < 0) {
        goto done;
    }

    st->policy_enum = make_policy_enum();
    if (st->policy_enum == NULL
        || PyModule_AddObjectRef(module, "Policy", st->policy_enum) < 0) {
        goto done;
    }
    for (int i = 0; i < N_POLICIES; i++) {
        st->policy_members[i] = PyObject_GetAttrString(st->policy_enum,
                                                        policy_member_names[i]);
        if (st->policy_members[i] == NULL) {
            goto done;
        }
    }

    st->stats_type = PyStructSequence_NewType(&stats_desc);
    if (st->stats_type == NULL
        || PyModule_AddObjectRef(module, "Stats", (PyObject *)st->stats_type) < 0) {
        goto done;
    }

    st->stream_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &stream_spec, NULL);
    if (st->stream_type == NULL || PyModule_AddType(module, st->stream_type) < 0) {
        goto done;
    }
    st->queue_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &queue_spec, (PyObject *)st->stream_type);
    if (st->queue_type == NULL || PyModule_AddType(module, st->queue_type) < 0) {
        goto done;
    }
    st->iterator_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &iterator_spec, NULL);
    if (st->iterator_type == NULL) {
        goto done;
    }
    if (aio_init_types(module, st) < 0 || clock_init_types(module, st) < 0
        || admission_init_types(module, st) < 0 || rate_init_types(module, st) < 0
        || limiter_init_types(module, st) < 0 || register_process_hooks(module) < 0) {
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(queue_module);
    Py_XDECREF(ident);
    Py_XDECREF(main_thread);
    Py_XDECREF(threading);
    return rc;
}

static int
bpstream_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = get_module_state(module);
    Py_VISIT(st->stream_type);
    Py_VISIT(st->queue_type);
    Py_VISIT(st->stats_type);
    Py_VISIT(st->Full);
    Py_VISIT(st->Empty);
    Py_VISIT(st->Closed);
    Py_VISIT(st->ProducerError);
    Py_VISIT(st->iterator_type);
    Py_VISIT(st->policy_enum);
    for (int i = 0; i < N_POLICIES; i++) {
        Py_VISIT(st->policy_members[i]);
    }
    Py_VISIT(st->ready_type);
    Py_VISIT(st->waker_type);
    Py_VISIT(st->watch_type);
    Py_VISIT(st->aio);
    Py_VISIT(st->ready_cache);
    Py_VISIT(st->manual_clock_type);
    Py_VISIT(st->rate_base_type);
    Py_VISIT(st->token_bucket_type);
    Py_VISIT(st->sliding_window_type);
    Py_VISIT(st->aimd_type);
    Py_VISIT(st->ticket_type);
    Py_VISIT(st->limiter_type);
    Py_VISIT(st->token_type);
    Py_VISIT(st->control);
    return 0;
}

static int
bpstream_clear(PyObject *module)
{
    module_state *st = get_module_state(module);
    Py_CLEAR(st->stream_type);
    Py_CLEAR(st->queue_type);
    Py_CLEAR(st->stats_type);
    Py_CLEAR(st->Full);
    Py_CLEAR(st->Empty);
    Py_CLEAR(st->Closed);
    Py_CLEAR(st->ProducerError);
    Py_CLEAR(st->iterator_type);
    Py_CLEAR(st->policy_enum);
    for (int i = 0; i < N_POLICIES; i++) {
        Py_CLEAR(st->policy_members[i]);
    }
    Py_CLEAR(st->ready_type);
    Py_CLEAR(st->waker_type);
    Py_CLEAR(st->watch_type);
    Py_CLEAR(st->aio);
    Py_CLEAR(st->ready_cache);
    Py_CLEAR(st->manual_clock_type);
    Py_CLEAR(st->rate_base_type);
    Py_CLEAR(st->token_bucket_type);
    Py_CLEAR(st->sliding_window_type);
    Py_CLEAR(st->aimd_type);
    Py_CLEAR(st->ticket_type);
    Py_CLEAR(st->limiter_type);
    Py_CLEAR(st->token_type);
    Py_CLEAR(st->control);
    return 0;
}

static void
bpstream_free(void *module)
{
    (void)bpstream_clear((PyObject *)module);
}

static PyModuleDef_Slot bpstream_slots[] = {
    {Py_mod_exec, bpstream_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* Shared GIL only: release_item() relies on PyGILState, which knows one
     * interpreter per thread. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    /* getters_waiting and the waiter hooks rely on the GIL. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
"Native core of bpstream: BoundedStream and Queue over libbpstream's C ABI.\n"
"Import the public API from bpstream, not from here.");

struct PyModuleDef bpstream_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "bpstream._bpstream",
    .m_doc = module_doc,
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = bpstream_slots,
    .m_traverse = bpstream_traverse,
    .m_clear = bpstream_clear,
    .m_free = bpstream_free,
};

PyMODINIT_FUNC
PyInit__bpstream(void)
{
    return PyModuleDef_Init(&bpstream_module);
}
