/* The per-event part of `report`'s tally (trace_scan.Tally.add), compiled: a slice's Event structs (already
 * decoded and type-checked by msgspec) taken apart into columns, their operations, paths and processes numbered.
 *
 * Why C: in Python each field of each event costs an attribute lookup and a list slot (about 3,000 instructions an
 * event for the eight fields), and numbering the names costs as much again; here a field is a load at a fixed
 * offset. Everything else (the sums, the tables, the sample) stays in trace_scan, which also has the same work in
 * Python for where this module is not built (see its `_python_columns`, which tests hold equal to this).
 *
 * columns(events, ops, op_names, paths, path_names, procs, proc_names)
 *   events: a list of Event structs; ops/paths/procs: dict name -> number, with *_names the names in number
 *   order (new names are added to both); a process's name is the tuple (pid, comm).
 * returns (op, path, proc, duration, ts, failed, errnos, injected), the first five as bytes holding intp, intp,
 * intp, int64 and double arrays; failed (uint8 array) and injected (uint8 array) as bytes or None when no event
 * failed (was injected); errnos: the errno of each failed event, in order. Returns None, having numbered
 * nothing, when an event is not one this can take (a duration beyond int64, a field of an unexpected type): the
 * caller then does it in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

enum { F_OP, F_PATH, F_PID, F_COMM, F_ERRNO, F_DURATION, F_TS, F_INJECTED, NFIELDS };
static const char *const FIELD_NAMES[NFIELDS] = {"op", "path", "pid", "comm", "errno", "duration_ns", "ts",
                                                  "injected"};
static Py_ssize_t offsets[NFIELDS];
static PyTypeObject *event_type; /* the type the fields are defined on (its subclasses share the offsets) */

#define FIELD(e, f) (*(PyObject **)((char *)(e) + offsets[f]))

/* setup(Event): the offsets of the fields, from their member descriptors. */
static PyObject *setup(PyObject *Py_UNUSED(module), PyObject *type)
{
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "setup() takes the Event type");
        return NULL;
    }
    for (int f = 0; f < NFIELDS; f++) {
        PyObject *descr = PyObject_GetAttrString(type, FIELD_NAMES[f]);
        if (descr == NULL)
            return NULL;
        if (!PyObject_TypeCheck(descr, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "field %s is not an object slot", FIELD_NAMES[f]);
            return NULL;
        }
        offsets[f] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
    }
    Py_XSETREF(event_type, (PyTypeObject *)Py_NewRef(type));
    Py_RETURN_NONE;
}

/* The number of `name` in (numbers, names), numbering it if new; -1 on error. */
static Py_ssize_t number_of(PyObject *numbers, PyObject *names, PyObject *name)
{
    PyObject *n = PyDict_GetItemWithError(numbers, name);
    if (n != NULL)
        return PyLong_AsSsize_t(n);
    if (PyErr_Occurred())
        return -1;
    Py_ssize_t k = PyList_GET_SIZE(names);
    PyObject *number = PyLong_FromSsize_t(k);
    if (number == NULL)
        return -1;
    int failed = PyDict_SetItem(numbers, name, number) < 0 || PyList_Append(names, name) < 0;
    Py_DECREF(number);
    return failed ? -1 : k;
}

/* Whether two field values (str or None) are equal: the same object, or equal strings. */
static inline int same(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    if (!PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    return n == PyUnicode_GET_LENGTH(b) && PyUnicode_KIND(a) == PyUnicode_KIND(b) &&
           memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n * PyUnicode_KIND(a)) == 0;
}

/* The last few names seen (str or None, with a pid for a process) and their numbers: the most recent first. */
enum { SEEN = 8 };
struct entry {
    PyObject *name, *pid;
    Py_ssize_t number;
};
struct seen {
    int count;
    struct entry at[SEEN];
};

static inline int same_pid(PyObject *a, PyObject *b)
{
    return a == b || (a != NULL && b != NULL && PyObject_RichCompareBool(a, b, Py_EQ) == 1);
}

/* `e` first, the entries before position j one place down (the one at j, if any, is overwritten). */
static inline Py_ssize_t put_first(struct seen *s, int j, struct entry e)
{
    memmove(&s->at[1], &s->at[0], (size_t)j * sizeof(struct entry));
    s->at[0] = e;
    return e.number;
}

/* The number of (name, pid) if among those seen (moved to the front), else -1. */
static inline Py_ssize_t recall(struct seen *s, PyObject *name, PyObject *pid)
{
    for (int j = 0; j < s->count; j++)
        if (same(name, s->at[j].name) && same_pid(pid, s->at[j].pid))
            return put_first(s, j, s->at[j]);
    return -1;
}

/* Remember (name, pid) as the most recent, with its number (passed through: -1 for an error). */
static inline Py_ssize_t remember(struct seen *s, PyObject *name, PyObject *pid, Py_ssize_t number)
{
    if (number < 0)
        return -1;
    int keep = s->count < SEEN ? s->count : SEEN - 1; /* the oldest goes when all are taken */
    s->count = keep + 1;
    return put_first(s, keep, (struct entry){name, pid, number});
}

static inline int str_or_none(PyObject *v) { return v == Py_None || PyUnicode_CheckExact(v); }

static PyObject *columns(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "columns() takes 7 arguments");
        return NULL;
    }
    PyObject *events = args[0], *ops = args[1], *op_names = args[2], *paths = args[3], *path_names = args[4],
             *procs = args[5], *proc_names = args[6];
    if (event_type == NULL || !PyList_CheckExact(events) || !PyDict_CheckExact(ops) || !PyList_CheckExact(op_names) ||
        !PyDict_CheckExact(paths) || !PyList_CheckExact(path_names) || !PyDict_CheckExact(procs) ||
        !PyList_CheckExact(proc_names)) {
        PyErr_SetString(PyExc_TypeError, "columns(): setup() first, then a list and dict/list pairs");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(events);

    /* First pass: every event one this can take, so that nothing is numbered for a slice handed back. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyList_GET_ITEM(events, i);
        if (!PyObject_TypeCheck(e, event_type))
            Py_RETURN_NONE;
        for (int f = 0; f < NFIELDS; f++)
            if (FIELD(e, f) == NULL) /* a slot never set (msgspec sets them all) */
                Py_RETURN_NONE;
        PyObject *dur = FIELD(e, F_DURATION), *pid = FIELD(e, F_PID);
        if (!PyUnicode_CheckExact(FIELD(e, F_OP)) || !str_or_none(FIELD(e, F_PATH)) ||
            !str_or_none(FIELD(e, F_COMM)) || !str_or_none(FIELD(e, F_ERRNO)) || !PyLong_CheckExact(dur) ||
            !PyLong_CheckExact(pid) || !PyFloat_CheckExact(FIELD(e, F_TS)))
            Py_RETURN_NONE;
        int overflow;
        long long d = PyLong_AsLongLongAndOverflow(dur, &overflow);
        if (overflow || d < 0)
            Py_RETURN_NONE;
    }

    PyObject *op_col = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(Py_ssize_t));
    PyObject *path_col = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(Py_ssize_t));
    PyObject *proc_col = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(Py_ssize_t));
    PyObject *dur_col = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    PyObject *ts_col = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(double));
    PyObject *failed_col = PyBytes_FromStringAndSize(NULL, n);
    PyObject *injected_col = PyBytes_FromStringAndSize(NULL, n);
    PyObject *errnos = PyList_New(0);
    PyObject *result = NULL;
    if (!op_col || !path_col || !proc_col || !dur_col || !ts_col || !failed_col || !injected_col || !errnos)
        goto done;
    Py_ssize_t *op = (Py_ssize_t *)PyBytes_AS_STRING(op_col), *path = (Py_ssize_t *)PyBytes_AS_STRING(path_col),
               *proc = (Py_ssize_t *)PyBytes_AS_STRING(proc_col);
    int64_t *dur = (int64_t *)PyBytes_AS_STRING(dur_col);
    double *ts = (double *)PyBytes_AS_STRING(ts_col);
    uint8_t *failed = (uint8_t *)PyBytes_AS_STRING(failed_col), *injected = (uint8_t *)PyBytes_AS_STRING(injected_col);
    int any_failed = 0, any_injected = 0;
    /* Names repeat: a slice has a few operations and processes, and events come in runs (one process statting one
     * path, then the next). A name equal to one of the last few seen in the slice (compared: no hash, no probe of a
     * large table) is not looked up. The names compared are fields of events in `events`: alive until we return. */
    struct seen ops_seen = {0}, paths_seen = {0}, procs_seen = {0};
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyList_GET_ITEM(events, i);
        PyObject *o = FIELD(e, F_OP), *p = FIELD(e, F_PATH), *pid = FIELD(e, F_PID), *comm = FIELD(e, F_COMM),
                 *err = FIELD(e, F_ERRNO);
        if ((op[i] = recall(&ops_seen, o, NULL)) < 0 &&
            (op[i] = remember(&ops_seen, o, NULL, number_of(ops, op_names, o))) < 0)
            goto done;
        if ((path[i] = recall(&paths_seen, p, NULL)) < 0 &&
            (path[i] = remember(&paths_seen, p, NULL, number_of(paths, path_names, p))) < 0)
            goto done;
        if ((proc[i] = recall(&procs_seen, comm, pid)) < 0) {
            PyObject *key = PyTuple_Pack(2, pid, comm);
            if (key == NULL)
                goto done;
            proc[i] = remember(&procs_seen, comm, pid, number_of(procs, proc_names, key));
            Py_DECREF(key);
            if (proc[i] < 0)
                goto done;
        }
        dur[i] = PyLong_AsLongLong(FIELD(e, F_DURATION)); /* checked above: fits */
        ts[i] = PyFloat_AS_DOUBLE(FIELD(e, F_TS));
        failed[i] = err != Py_None;
        if (failed[i]) {
            any_failed = 1;
            if (PyList_Append(errnos, err) < 0)
                goto done;
        }
        injected[i] = FIELD(e, F_INJECTED) != Py_None;
        any_injected |= injected[i];
    }
    result = PyTuple_Pack(8, op_col, path_col, proc_col, dur_col, ts_col, any_failed ? failed_col : Py_None, errnos,
                          any_injected ? injected_col : Py_None);
done:
    Py_XDECREF(op_col);
    Py_XDECREF(path_col);
    Py_XDECREF(proc_col);
    Py_XDECREF(dur_col);
    Py_XDECREF(ts_col);
    Py_XDECREF(failed_col);
    Py_XDECREF(injected_col);
    Py_XDECREF(errnos);
    return result;
}

/* line_starts(data, last_open): trace_scan.line_starts() (which see) compiled: where each line of `data` (bytes-like)
 * starts and its end last, as bytes holding an intp array; None unless every line starts with "{" and ends with "}".
 * (numpy finds the newlines with a comparison, then their positions with a second pass: 3 times the instructions.) */
static PyObject *line_starts(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "line_starts() takes 2 arguments");
        return NULL;
    }
    int last_open = PyObject_IsTrue(args[1]);
    Py_buffer view;
    if (last_open < 0 || PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *data = view.buf, *end = data + view.len;
    Py_ssize_t lines = 0;
    for (const char *p = data; p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        lines++;
    if (last_open && view.len > 0)
        lines++;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (lines + 1) * (Py_ssize_t)sizeof(Py_ssize_t));
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t *starts = (Py_ssize_t *)PyBytes_AS_STRING(out);
    const char *line = data;
    int good = 1;
    for (Py_ssize_t k = 0; k < lines; k++) {
        const char *nl = line < end ? memchr(line, '\n', (size_t)(end - line)) : NULL;
        const char *stop = nl != NULL ? nl : end; /* no newline: the last line, open */
        if (stop == line || line[0] != '{' || stop[-1] != '}') {
            good = 0;
            break;
        }
        starts[k] = line - data;
        line = stop + 1;
    }
    if (line < end) /* text after the last newline of data said to end with one */
        good = 0;
    starts[lines] = view.len;
    PyBuffer_Release(&view);
    if (!good) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"line_starts", (PyCFunction)(void (*)(void))line_starts, METH_FASTCALL, "where each line starts, or None"},
    {"setup", setup, METH_O, "setup(Event): take the fields' offsets from the struct type"},
    {"columns", (PyCFunction)(void (*)(void))columns, METH_FASTCALL, "a slice of events as numbered columns"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_columns", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__columns(void) { return PyModule_Create(&module); }
