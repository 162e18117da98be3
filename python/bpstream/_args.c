/*
 * _args.c — Python arguments to C values, off the fast paths.
 *
 * Owns: timeouts (seconds -> the ABI's nanoseconds), policies (str -> bps_policy), and
 * parse_args, the METH_FASTCALL|METH_KEYWORDS parser every method with options uses.
 */
#include "_bpstream.h"

#include <math.h>

/* Borrows obj. Seconds (None, int, float) -> the ABI's nanoseconds: None, inf and
 * anything beyond int64 nanoseconds (~292 years) mean -1, no limit; 0 means do not
 * wait; positive values round up so a tiny timeout still waits. Negative or NaN ->
 * ValueError. Returns 0, or -1 with an exception set. */
int
timeout_to_ns(PyObject *obj, int64_t *out)
{
    double seconds;
    if (obj == NULL || obj == Py_None) {
        *out = -1;
        return 0;
    }
    if (PyFloat_CheckExact(obj)) {
        seconds = PyFloat_AS_DOUBLE(obj);
    }
    else if (PyLong_Check(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow > 0) {
            *out = -1;
            return 0;
        }
        if (overflow < 0 || v < 0) {
            goto negative;
        }
        *out = v > INT64_MAX / NS_PER_SEC ? -1 : (int64_t)v * NS_PER_SEC;
        return 0;
    }
    else {
        seconds = PyFloat_AsDouble(obj);
        if (seconds == -1.0 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (isnan(seconds) || seconds < 0) {
        goto negative;
    }
    double ns = ceil(seconds * 1e9);
    *out = ns >= 9.2e18 ? -1 : (int64_t)ns;
    return 0;
negative:
    PyErr_SetString(PyExc_ValueError, "'timeout' must be a non-negative number");
    return -1;
}

/* Borrows obj. Any str (a Policy member is one) -> bps_policy. */
int
policy_from_object(PyObject *obj, bps_policy *out)
{
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "policy must be a str or bpstream.Policy, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    for (int i = 0; i < N_POLICIES; i++) {
        if (PyUnicode_CompareWithASCIIString(obj, policy_names[i]) == 0) {
            *out = (bps_policy)i;
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "policy must be one of 'block', 'drop_oldest', 'drop_newest', "
                 "'reject', 'drop_all', 'adaptive', not %R", obj);
    return -1;
}

/* out[i] gets a borrowed reference, or NULL when omitted. Returns 0 or -1. */
int
parse_args(const arg_spec *spec, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames, PyObject **out)
{
    if (nargs > spec->kwonly) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most %d positional argument%s (%zd given)",
                     spec->fname, spec->kwonly, spec->kwonly == 1 ? "" : "s", nargs);
        return -1;
    }
    for (int i = 0; i < spec->n; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int i;
        for (i = spec->posonly; i < spec->n; i++) {
            if (PyUnicode_CompareWithASCIIString(key, spec->names[i]) == 0) {
                break;
            }
        }
        if (i == spec->n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                         spec->fname, key);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                         spec->fname, spec->names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (int i = 0; i < spec->required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)",
                         spec->fname, spec->names[i], i + 1);
            return -1;
        }
    }
    return 0;
}
