/* The per-event part of `report`'s tally (report/tally.py, Tally.add), compiled: a slice's Event structs (already
 * decoded and type-checked by msgspec) taken apart into columns, their operations, paths and processes numbered, and
 * the few fields the findings need (seq, the size, offset and fh of the args, the result as an integer) taken out
 * too, so that the events can be freed and everything else done with numpy on many slices at once.
 *
 * Why C: in Python each field of each event costs an attribute lookup and a list slot (about 3,000 instructions an
 * event for the eight fields), and numbering the names costs as much again; here a field is a load at a fixed
 * offset. Everything else (the sums, the tables, the sample) stays in report/tally.py, which also has the same work
 * in Python for where this module is not built (`Tally._python_columns`, which tests hold equal to this).
 *
 * columns(events, ops, op_names, op_kinds, kinds, paths, path_names, procs, proc_names, slow_floor)
 *   events: a list of Event structs; ops/paths/procs: dict name -> number, with *_names the names in number
 *   order (new names are added to both); a process's name is the tuple (pid, comm). op_kinds: a bytearray, the
 *   kind of each operation number (extended here for a new operation: kinds.get(name, 0)). slow_floor: events
 *   that took longer are returned in `slow`.
 * returns (op, path, proc, duration, ts, failed, errnos, injected, kind, seq, size, offset, fh, result, counted,
 *   odd, rare, slow): op, path, proc as bytes holding intp arrays; duration, seq, size, offset, fh, result and
 *   counted int64 arrays; ts double; kind int8; failed and injected uint8 arrays, or None when no event failed (was
 *   injected); errnos the errno of each failed event, in order. seq, size, offset, fh (of the args) and result
 *   hold NONE (INT64_MIN) where the value is not an int within int64 (evidence.ints); counted is what the summary
 *   adds to bytes read or written (an int result, True as 1; else 0), and odd is True when a result is an integer
 *   beyond int64 (the caller then adds that slice's bytes in Python). rare: the events that succeeded, with a path,
 *   whose kind is create, mknod, unlink or rename (matched by name in Python); slow: those longer than slow_floor.
 *   Returns None, having numbered nothing, when an event is not one this can take (a duration beyond int64, a
 *   field of an unexpected type): the caller then does it in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <locale.h>
#include <stdlib.h>

enum { F_OP, F_PATH, F_PID, F_COMM, F_ERRNO, F_DURATION, F_TS, F_INJECTED, F_SEQ, F_ARGS, F_RESULT, NFIELDS };
static const char *const FIELD_NAMES[NFIELDS] = {"op", "path", "pid", "comm", "errno", "duration_ns", "ts",
                                                  "injected", "seq", "args", "result"};
enum { A_SIZE, A_OFFSET, A_FH, NARGS };
static const char *const ARG_NAMES[NARGS] = {"size", "offset", "fh"};
static Py_ssize_t offsets[NFIELDS], arg_offsets[NARGS];
static PyTypeObject *event_type; /* the type the fields are defined on (its subclasses share the offsets) */
static PyTypeObject *args_type;  /* the struct of the args' fields the findings need (reading._Args) */
static PyTypeObject *raw_type;   /* msgspec.Raw: a result kept as its JSON text */
static PyObject *arg_keys[NARGS];

#define FIELD(e, f) (*(PyObject **)((char *)(e) + offsets[f]))
#define NONE INT64_MIN

/* The offsets of `names` in `type`, from their member descriptors; -1 with an exception if one is not a slot. */
static int slot_offsets(PyObject *type, const char *const *names, int count, Py_ssize_t *out)
{
    for (int f = 0; f < count; f++) {
        PyObject *descr = PyObject_GetAttrString(type, names[f]);
        if (descr == NULL)
            return -1;
        if (!PyObject_TypeCheck(descr, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "field %s is not an object slot", names[f]);
            return -1;
        }
        out[f] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
    }
    return 0;
}

/* setup(Event, Args, Raw): the offsets of the fields, from their member descriptors. */
static PyObject *setup(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1]) || !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "setup() takes the Event, Args and Raw types");
        return NULL;
    }
    if (slot_offsets(args[0], FIELD_NAMES, NFIELDS, offsets) < 0 ||
        slot_offsets(args[1], ARG_NAMES, NARGS, arg_offsets) < 0)
        return NULL;
    for (int a = 0; a < NARGS; a++)
        if (arg_keys[a] == NULL && (arg_keys[a] = PyUnicode_InternFromString(ARG_NAMES[a])) == NULL)
            return NULL;
    Py_XSETREF(event_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(args_type, (PyTypeObject *)Py_NewRef(args[1]));
    Py_XSETREF(raw_type, (PyTypeObject *)Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

/* An int field as evidence.ints() takes it: its value if an int within (INT64_MIN, 2**63), else NONE. */
static inline int64_t as_int64(PyObject *v)
{
    if (v == NULL || !PyLong_CheckExact(v))
        return NONE;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    return overflow ? NONE : (int64_t)x; /* INT64_MIN itself reads as NONE: so does ints() */
}

/* The args' size, offset and fh (an Args struct, or the dict of an event read by the reference path). */
static inline void arg_ints(PyObject *a, int64_t *size, int64_t *offset, int64_t *fh)
{
    PyObject *v[NARGS] = {NULL, NULL, NULL};
    if (Py_TYPE(a) == args_type)
        for (int k = 0; k < NARGS; k++)
            v[k] = *(PyObject **)((char *)a + arg_offsets[k]);
    else if (PyDict_CheckExact(a))
        for (int k = 0; k < NARGS; k++)
            v[k] = PyDict_GetItem(a, arg_keys[k]); /* str keys: no error to clear */
    *size = as_int64(v[A_SIZE]);
    *offset = as_int64(v[A_OFFSET]);
    *fh = as_int64(v[A_FH]);
}

/* A JSON integer's text (an optional minus, digits: what msgspec checked is JSON) as int64; 0 if it is not one,
 * -1 if it is one beyond int64. */
static inline int json_int(const char *p, Py_ssize_t n, int64_t *out)
{
    Py_ssize_t i = 0;
    int negative = n > 0 && p[0] == '-';
    i += negative;
    if (i >= n)
        return 0;
    uint64_t x = 0;
    for (; i < n; i++) {
        unsigned d = (unsigned char)p[i] - '0';
        if (d > 9)
            return 0; /* a fraction or an exponent: a float */
        if (x > (UINT64_MAX - d) / 10)
            x = UINT64_MAX; /* past any int64: keep reading, it may still be a float */
        else
            x = x * 10 + d;
    }
    if (negative ? x > (uint64_t)INT64_MAX + 1 : x > (uint64_t)INT64_MAX)
        return -1;
    *out = negative ? (int64_t)(0 - x) : (int64_t)x;
    return 1;
}

/* The result: as evidence.ints() takes it (`result`), and what the summary adds to bytes read or written
 * (`counted`: an int, True as 1). Returns -1 for an int beyond int64 (odd), -2 on error, else 0. */
static inline int result_ints(PyObject *r, int64_t *result, int64_t *counted)
{
    *result = NONE;
    *counted = 0;
    if (Py_TYPE(r) == raw_type) {
        Py_buffer view;
        if (PyObject_GetBuffer(r, &view, PyBUF_SIMPLE) < 0)
            return -2;
        const char *p = view.buf;
        Py_ssize_t n = view.len;
        int64_t x;
        int got = 0;
        if (n > 0 && (p[0] == '-' || (p[0] >= '0' && p[0] <= '9')))
            got = json_int(p, n, &x);
        else if (n == 4 && memcmp(p, "true", 4) == 0)
            *counted = 1;
        PyBuffer_Release(&view);
        if (got < 0)
            return -1;
        if (got > 0) {
            *result = x == INT64_MIN ? NONE : x;
            *counted = x;
        }
        return 0;
    }
    if (r == Py_True) {
        *counted = 1;
        return 0;
    }
    if (!PyLong_CheckExact(r))
        return 0;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(r, &overflow);
    if (overflow)
        return -1;
    *result = x == INT64_MIN ? NONE : (int64_t)x;
    *counted = (int64_t)x;
    return 0;
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

/* The kind of operation number k (op_kinds[k]), extending op_kinds with kinds.get(name, 0) for new numbers. */
static int kind_of(PyObject *op_kinds, PyObject *kinds, PyObject *op_names, Py_ssize_t k)
{
    while (PyByteArray_GET_SIZE(op_kinds) <= k) {
        Py_ssize_t at = PyByteArray_GET_SIZE(op_kinds);
        PyObject *kind = PyDict_GetItemWithError(kinds, PyList_GET_ITEM(op_names, at));
        if (kind == NULL && PyErr_Occurred())
            return -1;
        long value = kind == NULL ? 0 : PyLong_AsLong(kind);
        if (value < 0 || value > 127) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "columns(): a kind is not within 0..127");
            return -1;
        }
        if (PyByteArray_Resize(op_kinds, at + 1) < 0)
            return -1;
        PyByteArray_AS_STRING(op_kinds)[at] = (char)value;
    }
    return (unsigned char)PyByteArray_AS_STRING(op_kinds)[k];
}

enum { K_CREATE = 4, K_MKNOD = 7, K_RENAME = 9 }; /* evidence.CREATE, MKNOD, RENAME: UNLINK is between */

enum { C_OP, C_PATH, C_PROC, C_DUR, C_TS, C_FAILED, C_INJECTED, C_KIND, C_SEQ, C_SIZE, C_OFFSET, C_FH, C_RESULT,
       C_COUNTED, NCOLS };

static PyObject *columns(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "columns() takes 10 arguments");
        return NULL;
    }
    PyObject *events = args[0], *ops = args[1], *op_names = args[2], *op_kinds = args[3], *kinds = args[4],
             *paths = args[5], *path_names = args[6], *procs = args[7], *proc_names = args[8];
    if (event_type == NULL || !PyList_CheckExact(events) || !PyDict_CheckExact(ops) || !PyList_CheckExact(op_names) ||
        !PyByteArray_CheckExact(op_kinds) || !PyDict_CheckExact(kinds) || !PyDict_CheckExact(paths) ||
        !PyList_CheckExact(path_names) || !PyDict_CheckExact(procs) || !PyList_CheckExact(proc_names)) {
        PyErr_SetString(PyExc_TypeError, "columns(): setup() first, then a list, dict/list pairs, a bytearray");
        return NULL;
    }
    long long slow_floor = PyLong_AsLongLong(args[9]);
    if (slow_floor == -1 && PyErr_Occurred())
        return NULL;
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

    static const Py_ssize_t width[NCOLS] = {sizeof(Py_ssize_t), sizeof(Py_ssize_t), sizeof(Py_ssize_t),
                                            sizeof(int64_t), sizeof(double), 1, 1, 1, sizeof(int64_t),
                                            sizeof(int64_t), sizeof(int64_t), sizeof(int64_t), sizeof(int64_t),
                                            sizeof(int64_t)};
    PyObject *col[NCOLS] = {NULL};
    PyObject *errnos = PyList_New(0), *rare = PyList_New(0), *slow = PyList_New(0);
    PyObject *result = NULL;
    for (int c = 0; c < NCOLS; c++)
        if ((col[c] = PyBytes_FromStringAndSize(NULL, n * width[c])) == NULL)
            goto done;
    if (!errnos || !rare || !slow)
        goto done;
#define COL(c, type) ((type *)PyBytes_AS_STRING(col[c]))
    Py_ssize_t *op = COL(C_OP, Py_ssize_t), *path = COL(C_PATH, Py_ssize_t), *proc = COL(C_PROC, Py_ssize_t);
    int64_t *dur = COL(C_DUR, int64_t), *seq = COL(C_SEQ, int64_t), *size = COL(C_SIZE, int64_t),
            *offset = COL(C_OFFSET, int64_t), *fh = COL(C_FH, int64_t), *res = COL(C_RESULT, int64_t),
            *counted = COL(C_COUNTED, int64_t);
    double *ts = COL(C_TS, double);
    uint8_t *failed = COL(C_FAILED, uint8_t), *injected = COL(C_INJECTED, uint8_t);
    int8_t *kind = COL(C_KIND, int8_t);
#undef COL
    int any_failed = 0, any_injected = 0, odd = 0;
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
        int k = kind_of(op_kinds, kinds, op_names, op[i]);
        if (k < 0)
            goto done;
        kind[i] = (int8_t)k;
        dur[i] = PyLong_AsLongLong(FIELD(e, F_DURATION)); /* checked above: fits */
        ts[i] = PyFloat_AS_DOUBLE(FIELD(e, F_TS));
        seq[i] = as_int64(FIELD(e, F_SEQ));
        arg_ints(FIELD(e, F_ARGS), &size[i], &offset[i], &fh[i]);
        int r = result_ints(FIELD(e, F_RESULT), &res[i], &counted[i]);
        if (r == -2)
            goto done;
        odd |= r == -1;
        failed[i] = err != Py_None;
        if (failed[i]) {
            any_failed = 1;
            if (PyList_Append(errnos, err) < 0)
                goto done;
        } else if (k >= K_CREATE && p != Py_None && (k == K_CREATE || (k >= K_MKNOD && k <= K_RENAME))) {
            if (PyList_Append(rare, e) < 0)
                goto done;
        }
        injected[i] = FIELD(e, F_INJECTED) != Py_None;
        any_injected |= injected[i];
        if (dur[i] > slow_floor && PyList_Append(slow, e) < 0)
            goto done;
    }
    result = Py_BuildValue("(OOOOOOOOOOOOOOOOOO)", col[C_OP], col[C_PATH], col[C_PROC], col[C_DUR], col[C_TS],
                           any_failed ? col[C_FAILED] : Py_None, errnos, any_injected ? col[C_INJECTED] : Py_None,
                           col[C_KIND], col[C_SEQ], col[C_SIZE], col[C_OFFSET], col[C_FH], col[C_RESULT],
                           col[C_COUNTED], odd ? Py_True : Py_False, rare, slow);
done:
    for (int c = 0; c < NCOLS; c++)
        Py_XDECREF(col[c]);
    Py_XDECREF(errnos);
    Py_XDECREF(rare);
    Py_XDECREF(slow);
    return result;
}

/* ---------------------------------------------------------------------------------------------- lines
 * scan(data, starts, first, last, ops, op_names, op_kinds, kinds, paths, path_names, procs, proc_names, slow_floor)
 *   What columns() returns for the events of lines first..last-1 of `data` (line k spans starts[k] up to the byte
 * before starts[k + 1], its newline excluded; `starts` an intp buffer from line_starts()), read straight from the
 * lines' bytes: no struct, string or int object per event (msgspec's decoding, and freeing it, were half of a
 * worker's time). Only lines exactly as the writer writes them are taken: compact (no whitespace), the fields in the
 * writer's order, v to comm and no more (no cmdline, injected or delay_ns), ASCII strings without escapes or control
 * characters, ints within int64 (duration_ns >= 0), args an object (size, offset and fh each at most once, int or
 * null), any other value well-formed JSON of that kind (nested at most 32 deep). Every such line is one msgspec
 * decodes to an event with the same values (its JSON is valid and its fields have the schema's types), so the
 * columns are the same. Anything else, in any line: None, having numbered nothing (the caller decodes that slice
 * with msgspec, which says what is wrong with a bad line). rare and slow are the indices (from 0) of the lines
 * concerned, for the caller to decode; injected is always None, odd always False. */

struct span {
    Py_ssize_t at, len; /* len -1: null */
};

static locale_t c_locale; /* for strtod_l: a "." decimal point whatever LC_NUMERIC says */

struct line {
    struct span op, path, comm, err;
    int64_t pid;
};

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A JSON string of printable ASCII without escapes at *p: its contents' span; 0 if not one. */
static inline int take_string(const char **p, const char *end, const char *base, struct span *out)
{
    const char *s = *p;
    if (s >= end || *s != '"')
        return 0;
    s++;
    const char *q = memchr(s, '"', (size_t)(end - s));
    if (q == NULL)
        return 0;
    /* every byte printable ASCII, none a backslash (a quote before it would be escaped: refused too); 8 at a time,
     * with the classic tests for a byte below n and a zero byte (exact for bytes below 0x80, checked first) */
    const char *c = s;
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    for (; q - c >= 8; c += 8) {
        uint64_t w, del, bs;
        memcpy(&w, c, 8);
        if (w & high)
            return 0; /* not ASCII */
        del = w ^ (0x7f * ones);
        bs = w ^ (0x5c * ones);
        if ((((w - 0x20 * ones) & ~w) | ((del - ones) & ~del) | ((bs - ones) & ~bs)) & high)
            return 0; /* a control character, DEL or a backslash */
    }
    for (; c < q; c++) {
        unsigned char b = (unsigned char)*c;
        if (b < 0x20 || b >= 0x7f || b == '\\')
            return 0;
    }
    out->at = s - base;
    out->len = q - s;
    *p = q + 1;
    return 1;
}

static inline int take_literal(const char **p, const char *end, const char *text, size_t n)
{
    if ((size_t)(end - *p) < n || memcmp(*p, text, n) != 0)
        return 0;
    *p += n;
    return 1;
}

/* A string or null. */
static inline int take_string_or_null(const char **p, const char *end, const char *base, struct span *out)
{
    if (take_literal(p, end, "null", 4)) {
        out->at = 0;
        out->len = -1;
        return 1;
    }
    return take_string(p, end, base, out);
}

/* A JSON number's text at *p (the grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?); sets *integer when it
 * has neither fraction nor exponent. 0 if not one. */
static inline int take_number(const char **p, const char *end, int *integer)
{
    const char *q = *p;
    if (q < end && *q == '-')
        q++;
    if (q >= end || !is_digit(*q))
        return 0;
    if (*q == '0')
        q++;
    else
        while (q < end && is_digit(*q))
            q++;
    *integer = 1;
    if (q < end && *q == '.') {
        q++;
        if (q >= end || !is_digit(*q))
            return 0;
        while (q < end && is_digit(*q))
            q++;
        *integer = 0;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < end && (*q == '+' || *q == '-'))
            q++;
        if (q >= end || !is_digit(*q))
            return 0;
        while (q < end && is_digit(*q))
            q++;
        *integer = 0;
    }
    *p = q;
    return 1;
}

/* A JSON integer within int64 (no fraction, no exponent). */
static inline int take_int(const char **p, const char *end, int64_t *out)
{
    const char *s = *p;
    int integer;
    if (!take_number(p, end, &integer) || !integer)
        return 0;
    return json_int(s, *p - s, out) == 1;
}

static inline int take_int_or_null(const char **p, const char *end, int64_t *out)
{
    if (take_literal(p, end, "null", 4)) {
        *out = NONE;
        return 1;
    }
    if (!take_int(p, end, out))
        return 0;
    if (*out == INT64_MIN)
        *out = NONE; /* as ints() reads it */
    return 1;
}

/* Any compact JSON value (strings as take_string takes them), skipped. */
static int skip_value(const char **p, const char *end, int depth)
{
    const char *q = *p;
    if (q >= end || depth > 32)
        return 0;
    struct span s;
    int integer;
    switch (*q) {
    case '"':
        return take_string(p, end, q, &s);
    case 't':
        return take_literal(p, end, "true", 4);
    case 'f':
        return take_literal(p, end, "false", 5);
    case 'n':
        return take_literal(p, end, "null", 4);
    case '[':
        (*p)++;
        if (*p < end && **p == ']') {
            (*p)++;
            return 1;
        }
        for (;;) {
            if (!skip_value(p, end, depth + 1) || *p >= end)
                return 0;
            if (**p == ']') {
                (*p)++;
                return 1;
            }
            if (**p != ',')
                return 0;
            (*p)++;
        }
    case '{':
        (*p)++;
        if (*p < end && **p == '}') {
            (*p)++;
            return 1;
        }
        for (;;) {
            if (!take_string(p, end, q, &s) || *p >= end || **p != ':')
                return 0;
            (*p)++;
            if (!skip_value(p, end, depth + 1) || *p >= end)
                return 0;
            if (**p == '}') {
                (*p)++;
                return 1;
            }
            if (**p != ',')
                return 0;
            (*p)++;
        }
    default:
        return take_number(p, end, &integer);
    }
}

/* The args object: its size, offset and fh (each at most once; an int within int64 or null), the rest skipped. */
static int take_args(const char **p, const char *end, int64_t *size, int64_t *offset, int64_t *fh)
{
    *size = *offset = *fh = NONE;
    const char *base = *p;
    if (*p >= end || **p != '{')
        return 0;
    (*p)++;
    if (*p < end && **p == '}') {
        (*p)++;
        return 1;
    }
    int seen = 0;
    for (;;) {
        struct span key;
        if (!take_string(p, end, base, &key) || *p >= end || **p != ':')
            return 0;
        (*p)++;
        const char *k = base + key.at;
        int64_t *slot = NULL;
        int bit = 0;
        if (key.len == 4 && memcmp(k, "size", 4) == 0)
            slot = size, bit = 1;
        else if (key.len == 6 && memcmp(k, "offset", 6) == 0)
            slot = offset, bit = 2;
        else if (key.len == 2 && memcmp(k, "fh", 2) == 0)
            slot = fh, bit = 4;
        if (slot != NULL) {
            if (seen & bit)
                return 0;
            seen |= bit;
            if (!take_int_or_null(p, end, slot))
                return 0;
        } else if (!skip_value(p, end, 1))
            return 0;
        if (*p >= end)
            return 0;
        if (**p == '}') {
            (*p)++;
            return 1;
        }
        if (**p != ',')
            return 0;
        (*p)++;
    }
}

#define KEY(text) take_literal(&p, end, text, sizeof(text) - 1)

/* One line [p, end) as the writer writes it (see scan), into `ln` and row i of the columns; 0 if it is not. */
static int take_line(const char *p, const char *end, const char *base, struct line *ln, int64_t *seq, double *ts,
                     int64_t *size, int64_t *offset, int64_t *fh, int64_t *res, int64_t *counted, int64_t *dur)
{
    int integer;
    if (!KEY("{\"v\":") || p >= end || (*p != '1' && *p != '2'))
        return 0;
    p++;
    if (!KEY(",\"seq\":") || !take_int_or_null(&p, end, seq) || !KEY(",\"ts\":"))
        return 0;
    const char *t = p;
    if (!take_number(&p, end, &integer) || p - t >= 64 || (integer && p - t > 15))
        return 0; /* an integer of more digits than a double holds exactly: left to msgspec */
    char text[64];
    memcpy(text, t, (size_t)(p - t));
    text[p - t] = '\0';
    char *stop;
    /* glibc's strtod is correctly rounded, as msgspec's parser is (and 3-4 times as fast as Python's dtoa here);
     * in the C locale whatever the process's */
    *ts = strtod_l(text, &stop, c_locale);
    if (*stop != '\0' || !isfinite(*ts))
        return 0;
    if (!KEY(",\"op\":") || !take_string(&p, end, base, &ln->op) || !KEY(",\"path\":") ||
        !take_string_or_null(&p, end, base, &ln->path) || !KEY(",\"path2\":"))
        return 0;
    struct span skipped;
    if (!take_string_or_null(&p, end, base, &skipped) || !KEY(",\"args\":") || !take_args(&p, end, size, offset, fh) ||
        !KEY(",\"result\":"))
        return 0;
    const char *r = p;
    if (!skip_value(&p, end, 1))
        return 0;
    *res = NONE;
    *counted = 0;
    if (*r == '-' || is_digit(*r)) {
        int64_t x;
        int got = json_int(r, p - r, &x);
        if (got < 0)
            return 0; /* an int beyond int64 (odd): columns() and Python take it */
        if (got > 0) {
            *res = x == INT64_MIN ? NONE : x;
            *counted = x;
        }
    } else if (*r == 't')
        *counted = 1;
    int64_t ignored;
    if (!KEY(",\"errno\":") || !take_string_or_null(&p, end, base, &ln->err) || !KEY(",\"duration_ns\":") ||
        !take_int(&p, end, dur) || *dur < 0 || !KEY(",\"pid\":") || !take_int(&p, end, &ln->pid) ||
        !KEY(",\"uid\":") || !take_int_or_null(&p, end, &ignored) || !KEY(",\"gid\":") ||
        !take_int_or_null(&p, end, &ignored) || !KEY(",\"comm\":") || !take_string_or_null(&p, end, base, &ln->comm))
        return 0;
    return p + 1 == end && *p == '}';
}

#undef KEY

static inline int same_span(const char *base, struct span a, struct span b)
{
    return a.len == b.len && (a.len <= 0 || memcmp(base + a.at, base + b.at, (size_t)a.len) == 0);
}

/* The last few names seen in this slice, as spans of the data: the most recent first. */
struct span_entry {
    struct span name;
    int64_t pid;
    Py_ssize_t number;
};
struct spans_seen {
    int count;
    struct span_entry at[SEEN];
};

static inline Py_ssize_t span_recall(struct spans_seen *s, const char *base, struct span name, int64_t pid)
{
    for (int j = 0; j < s->count; j++)
        if (s->at[j].pid == pid && same_span(base, name, s->at[j].name)) {
            struct span_entry e = s->at[j];
            memmove(&s->at[1], &s->at[0], (size_t)j * sizeof(struct span_entry));
            s->at[0] = e;
            return e.number;
        }
    return -1;
}

static inline Py_ssize_t span_remember(struct spans_seen *s, struct span name, int64_t pid, Py_ssize_t number)
{
    if (number < 0)
        return -1;
    int keep = s->count < SEEN ? s->count : SEEN - 1;
    s->count = keep + 1;
    memmove(&s->at[1], &s->at[0], (size_t)keep * sizeof(struct span_entry));
    s->at[0] = (struct span_entry){name, pid, number};
    return number;
}

/* A span's str (None for null); NULL with an exception on error. */
static inline PyObject *span_str(const char *base, struct span s)
{
    if (s.len < 0)
        return Py_NewRef(Py_None);
    return PyUnicode_DecodeASCII(base + s.at, s.len, NULL);
}

/* The number of the name at span `s` in (numbers, names), numbering it if new; -1 on error. */
static Py_ssize_t number_of_span(PyObject *numbers, PyObject *names, const char *base, struct span s)
{
    PyObject *name = span_str(base, s);
    if (name == NULL)
        return -1;
    Py_ssize_t k = number_of(numbers, names, name);
    Py_DECREF(name);
    return k;
}

static PyObject *scan(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "scan() takes 13 arguments");
        return NULL;
    }
    PyObject *ops = args[4], *op_names = args[5], *op_kinds = args[6], *kinds = args[7], *paths = args[8],
             *path_names = args[9], *procs = args[10], *proc_names = args[11];
    if (!PyDict_CheckExact(ops) || !PyList_CheckExact(op_names) || !PyByteArray_CheckExact(op_kinds) ||
        !PyDict_CheckExact(kinds) || !PyDict_CheckExact(paths) || !PyList_CheckExact(path_names) ||
        !PyDict_CheckExact(procs) || !PyList_CheckExact(proc_names)) {
        PyErr_SetString(PyExc_TypeError, "scan(): dict/list pairs and a bytearray expected");
        return NULL;
    }
    if (c_locale == (locale_t)0 && (c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0)) == (locale_t)0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    Py_ssize_t first = PyLong_AsSsize_t(args[2]), last = PyLong_AsSsize_t(args[3]);
    long long slow_floor = PyLong_AsLongLong(args[12]);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer view, starts_view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &starts_view, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyObject *result = NULL;
    PyObject *col[NCOLS] = {NULL};
    PyObject *errnos = NULL, *rare = NULL, *slow = NULL;
    struct line *lines = NULL;
    const char *base = view.buf;
    const Py_ssize_t *starts = starts_view.buf;
    Py_ssize_t count = starts_view.len / (Py_ssize_t)sizeof(Py_ssize_t);
    if (first < 0 || last < first || last >= count) {
        PyErr_SetString(PyExc_ValueError, "scan(): lines out of range");
        goto done;
    }
    Py_ssize_t n = last - first;
    static const Py_ssize_t width[NCOLS] = {sizeof(Py_ssize_t), sizeof(Py_ssize_t), sizeof(Py_ssize_t),
                                            sizeof(int64_t), sizeof(double), 1, 1, 1, sizeof(int64_t),
                                            sizeof(int64_t), sizeof(int64_t), sizeof(int64_t), sizeof(int64_t),
                                            sizeof(int64_t)};
    for (int c = 0; c < NCOLS; c++)
        if ((col[c] = PyBytes_FromStringAndSize(NULL, n * width[c])) == NULL)
            goto done;
    if ((lines = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(struct line))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
#define COL(c, type) ((type *)PyBytes_AS_STRING(col[c]))
    Py_ssize_t *op = COL(C_OP, Py_ssize_t), *path = COL(C_PATH, Py_ssize_t), *proc = COL(C_PROC, Py_ssize_t);
    int64_t *dur = COL(C_DUR, int64_t), *seq = COL(C_SEQ, int64_t), *size = COL(C_SIZE, int64_t),
            *offset = COL(C_OFFSET, int64_t), *fh = COL(C_FH, int64_t), *res = COL(C_RESULT, int64_t),
            *counted = COL(C_COUNTED, int64_t);
    double *ts = COL(C_TS, double);
    uint8_t *failed = COL(C_FAILED, uint8_t);
    int8_t *kind = COL(C_KIND, int8_t);
#undef COL
    /* First pass: every line one this takes (else nothing numbered) */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t a = starts[first + i], b = starts[first + i + 1];
        if (a < 0 || b > view.len || b <= a)
            goto none;
        if (base[b - 1] == '\n')
            b--;
        if (!take_line(base + a, base + b, base, &lines[i], &seq[i], &ts[i], &size[i], &offset[i], &fh[i],
                       &res[i], &counted[i], &dur[i]))
            goto none;
    }
    if ((errnos = PyList_New(0)) == NULL || (rare = PyList_New(0)) == NULL || (slow = PyList_New(0)) == NULL)
        goto done;
    int any_failed = 0;
    struct spans_seen ops_seen = {0}, paths_seen = {0}, procs_seen = {0};
    for (Py_ssize_t i = 0; i < n; i++) {
        struct line *ln = &lines[i];
        if ((op[i] = span_recall(&ops_seen, base, ln->op, 0)) < 0 &&
            (op[i] = span_remember(&ops_seen, ln->op, 0, number_of_span(ops, op_names, base, ln->op))) < 0)
            goto done;
        if ((path[i] = span_recall(&paths_seen, base, ln->path, 0)) < 0 &&
            (path[i] = span_remember(&paths_seen, ln->path, 0, number_of_span(paths, path_names, base, ln->path))) < 0)
            goto done;
        if ((proc[i] = span_recall(&procs_seen, base, ln->comm, ln->pid)) < 0) {
            PyObject *pid = PyLong_FromLongLong(ln->pid), *comm = span_str(base, ln->comm), *key = NULL;
            if (pid != NULL && comm != NULL)
                key = PyTuple_Pack(2, pid, comm);
            Py_XDECREF(pid);
            Py_XDECREF(comm);
            if (key == NULL)
                goto done;
            proc[i] = span_remember(&procs_seen, ln->comm, ln->pid, number_of(procs, proc_names, key));
            Py_DECREF(key);
            if (proc[i] < 0)
                goto done;
        }
        int k = kind_of(op_kinds, kinds, op_names, op[i]);
        if (k < 0)
            goto done;
        kind[i] = (int8_t)k;
        failed[i] = ln->err.len >= 0;
        if (failed[i]) {
            any_failed = 1;
            PyObject *err = span_str(base, ln->err);
            if (err == NULL || PyList_Append(errnos, err) < 0) {
                Py_XDECREF(err);
                goto done;
            }
            Py_DECREF(err);
        } else if (k >= K_CREATE && ln->path.len >= 0 && (k == K_CREATE || (k >= K_MKNOD && k <= K_RENAME))) {
            PyObject *at = PyLong_FromSsize_t(i);
            if (at == NULL || PyList_Append(rare, at) < 0) {
                Py_XDECREF(at);
                goto done;
            }
            Py_DECREF(at);
        }
        if (dur[i] > slow_floor) {
            PyObject *at = PyLong_FromSsize_t(i);
            if (at == NULL || PyList_Append(slow, at) < 0) {
                Py_XDECREF(at);
                goto done;
            }
            Py_DECREF(at);
        }
    }
    result = Py_BuildValue("(OOOOOOOOOOOOOOOOOO)", col[C_OP], col[C_PATH], col[C_PROC], col[C_DUR], col[C_TS],
                           any_failed ? col[C_FAILED] : Py_None, errnos, Py_None, col[C_KIND], col[C_SEQ],
                           col[C_SIZE], col[C_OFFSET], col[C_FH], col[C_RESULT], col[C_COUNTED], Py_False, rare, slow);
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(lines);
    for (int c = 0; c < NCOLS; c++)
        Py_XDECREF(col[c]);
    Py_XDECREF(errnos);
    Py_XDECREF(rare);
    Py_XDECREF(slow);
    PyBuffer_Release(&starts_view);
    PyBuffer_Release(&view);
    return result;
}

/* line_starts(data, last_open): reading.line_starts() (which see) compiled: where each line of `data` (bytes-like)
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
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL, "setup(Event, Args, Raw): take the fields' offsets"},
    {"columns", (PyCFunction)(void (*)(void))columns, METH_FASTCALL, "a slice of events as numbered columns"},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, "columns() read from the lines' bytes, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_columns", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__columns(void) { return PyModule_Create(&module); }
