/* The trace writer's JSONL lines in C (tracing/formats.py, tracing/writer.py).
 *
 * encode_events(items, plans, head, errnos, fallback) -> (bytes, ends): the JSONL lines of a batch of raw event
 * tuples (RawEvent's order), each exactly `format_jsonl_bytes(event_of(item))` — what the stdlib's json encoder
 * writes with ensure_ascii — in one buffer; line i ends at ends[i]. Building each event's dict and encoding it
 * cost the writer ~2.3 us per event, competing for the CPU with the daemon and its clients (on a 2-core machine,
 * about its own CPU time in wall time: docs/benchmarks.md); this writes the same bytes in a fraction of that.
 * The knowledge of the events stays in Python (formats.py builds `plans` from events.py): per operation, each
 * argument's key and whether it is the path, the second path, a plain value or one to decode (with a decoder
 * whose results are cached by value), and how its result is written. Whatever this does not handle (an unknown
 * operation, extra arguments, a cmdline, an injected fault, an int beyond 64 bits, a type JSON has no form for, a
 * decoder raising) is written by `fallback(item) -> bytes`, the Python path.
 *
 * ascii_escaped(line: bytes) -> bytes: orjson's line (valid UTF-8) with every character beyond ASCII and DEL
 * written as the stdlib writes it (\uXXXX, surrogate pairs beyond the BMP). Outside string literals a JSON line is
 * ASCII, so every such byte is in one, where the escape means the same character. ValueError for bytes that are
 * not UTF-8.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const char HEX[] = "0123456789abcdef";

static char *escape(char *o, uint32_t u) {
    o[0] = '\\';
    o[1] = 'u';
    o[2] = HEX[(u >> 12) & 15];
    o[3] = HEX[(u >> 8) & 15];
    o[4] = HEX[(u >> 4) & 15];
    o[5] = HEX[u & 15];
    return o + 6;
}

static PyObject *ascii_escaped(PyObject *self, PyObject *line) {
    const unsigned char *s, *end;
    Py_ssize_t n;
    PyObject *out;
    char *o;
    if (!PyBytes_Check(line))
        return PyErr_Format(PyExc_TypeError, "bytes expected");
    s = (const unsigned char *)PyBytes_AS_STRING(line);
    n = PyBytes_GET_SIZE(line);
    end = s + n;
    /* at most 12 output bytes (a surrogate pair) per 4 input bytes, 6 per 1 (DEL) */
    out = PyBytes_FromStringAndSize(NULL, n * 6);
    if (out == NULL)
        return NULL;
    o = PyBytes_AS_STRING(out);
    while (s < end) {
        unsigned char c = *s;
        uint32_t u;
        int more;
        if (c < 0x7f) {
            *o++ = (char)c;
            s++;
            continue;
        }
        if (c == 0x7f) {
            u = c, more = 0;
        } else if (c >= 0xc2 && c <= 0xdf) {
            u = c & 0x1f, more = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            u = c & 0x0f, more = 2;
        } else if (c >= 0xf0 && c <= 0xf4) {
            u = c & 0x07, more = 3;
        } else {
            goto bad;
        }
        if (end - s <= more)
            goto bad;
        for (int i = 1; i <= more; i++) {
            if ((s[i] & 0xc0) != 0x80)
                goto bad;
            u = (u << 6) | (s[i] & 0x3f);
        }
        if ((more == 2 && u < 0x800) || (more == 3 && (u < 0x10000 || u > 0x10ffff)))
            goto bad; /* overlong, or beyond Unicode */
        s += more + 1;
        if (u >= 0x10000) {
            u -= 0x10000;
            o = escape(o, 0xd800 + (u >> 10));
            o = escape(o, 0xdc00 + (u & 0x3ff));
        } else {
            o = escape(o, u);
        }
    }
    if (_PyBytes_Resize(&out, o - PyBytes_AS_STRING(out)) < 0)
        return NULL;
    return out;
bad:
    Py_DECREF(out);
    return PyErr_Format(PyExc_ValueError, "not UTF-8 at byte %zd", (Py_ssize_t)(s - (end - n)));
}

/* ------------------------------------------------------------------------------------------ encode_events */
struct buf { char *p; Py_ssize_t len, cap; };

static int grow(struct buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap)
        return 1;
    Py_ssize_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

static int put(struct buf *b, const char *s, Py_ssize_t n) {
    if (!grow(b, n))
        return 0;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 1;
}

#define PUT_LIT(b, s) put(b, s, (Py_ssize_t)sizeof(s) - 1)

static int put_bytes(struct buf *b, PyObject *bytes) {
    return put(b, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
}

static int put_i64(struct buf *b, long long v) {
    char tmp[24], *e = tmp + sizeof tmp, *o = e;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--o = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--o = '-';
    return put(b, o, e - o);
}

/* What the stdlib writes for a str with ensure_ascii: '"' and '\\' escaped, \b \f \n \r \t short, every other
 * character outside ' '..'~' as \u00xx (lowercase), beyond the BMP as a surrogate pair. */
static int put_str(struct buf *b, PyObject *s) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t i = 0;
    if (!grow(b, n * 12 + 2))
        return 0;
    char *o = b->p + b->len;
    *o++ = '"';
    if (PyUnicode_IS_ASCII(s)) { /* most names: copied as they are up to the first character to escape */
        const unsigned char *a = data;
        while (i < n && a[i] >= 0x20 && a[i] < 0x7f && a[i] != '"' && a[i] != '\\')
            i++;
        memcpy(o, a, i);
        o += i;
    }
    for (; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0x20 && c < 0x7f) {
            if (c == '"' || c == '\\')
                *o++ = '\\';
            *o++ = (char)c;
            continue;
        }
        switch (c) {
        case '\b': *o++ = '\\'; *o++ = 'b'; continue;
        case '\f': *o++ = '\\'; *o++ = 'f'; continue;
        case '\n': *o++ = '\\'; *o++ = 'n'; continue;
        case '\r': *o++ = '\\'; *o++ = 'r'; continue;
        case '\t': *o++ = '\\'; *o++ = 't'; continue;
        }
        if (c >= 0x10000) {
            c -= 0x10000;
            o = escape(o, 0xd800 + (c >> 10));
            o = escape(o, 0xdc00 + (c & 0x3ff));
        } else {
            o = escape(o, c);
        }
    }
    *o++ = '"';
    b->len = o - b->p;
    return 1;
}

/* 0 with no exception set: a value this writer leaves to the fallback. */
static int put_value(struct buf *b, PyObject *v, int depth) {
    if (v == Py_None)
        return PUT_LIT(b, "null");
    if (v == Py_True)
        return PUT_LIT(b, "true");
    if (v == Py_False)
        return PUT_LIT(b, "false");
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        return put_i64(b, x);
    }
    if (PyUnicode_CheckExact(v))
        return put_str(b, v);
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        if (!isfinite(d))
            return 0;
        char *r = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (r == NULL)
            return 0;
        int ok = put(b, r, (Py_ssize_t)strlen(r));
        PyMem_Free(r);
        return ok;
    }
    if (depth > 8)
        return 0;
    if (PyTuple_CheckExact(v) || PyList_CheckExact(v)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        PyObject **items = PySequence_Fast_ITEMS(v);
        if (!PUT_LIT(b, "["))
            return 0;
        for (Py_ssize_t i = 0; i < n; i++)
            if ((i && !PUT_LIT(b, ",")) || !put_value(b, items[i], depth + 1))
                return 0;
        return PUT_LIT(b, "]");
    }
    if (PyDict_CheckExact(v)) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        int first = 1;
        if (!PUT_LIT(b, "{"))
            return 0;
        while (PyDict_Next(v, &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key))
                return 0;
            if ((!first && !PUT_LIT(b, ",")) || !put_str(b, key) || !PUT_LIT(b, ":") ||
                !put_value(b, value, depth + 1))
                return 0;
            first = 0;
        }
        return PUT_LIT(b, "}");
    }
    return 0;
}

/* How each argument goes into the event (formats.py: _ARG_*). */
enum { ARG_PLAIN, ARG_PATH, ARG_PATH2, ARG_DECODED };
/* How the result goes into it (formats.py: _RESULT_*). */
enum { RESULT_PLAIN, RESULT_STAT, RESULT_FH, RESULT_WRAPPED, RESULT_DECODED };

static int put_decoded(struct buf *b, PyObject *decoder, PyObject *cache, PyObject *value) {
    PyObject *d = cache != Py_None ? PyDict_GetItemWithError(cache, value) : NULL;
    if (d != NULL)
        return put_value(b, d, 0);
    if (PyErr_Occurred())
        return 0;
    d = PyObject_CallOneArg(decoder, value);
    if (d == NULL)
        return 0;
    if (cache != Py_None && PyDict_GET_SIZE(cache) < 4096 && PyDict_SetItem(cache, value, d) < 0) {
        Py_DECREF(d);
        return 0;
    }
    int ok = put_value(b, d, 0);
    Py_DECREF(d);
    return ok;
}

static int is_int(PyObject *v) { return PyLong_CheckExact(v); }

/* (mode, size, ino, nlink, uid, gid) as events.stat_summary writes it */
static int put_stat(struct buf *b, PyObject *r) {
    static const char *const KEYS[6] = {"{\"mode\":", ",\"size\":", ",\"ino\":", ",\"nlink\":", ",\"uid\":",
                                        ",\"gid\":"};
    PyObject **f = PySequence_Fast_ITEMS(r);
    for (int i = 0; i < 6; i++) {
        if (!put(b, KEYS[i], (Py_ssize_t)strlen(KEYS[i])))
            return 0;
        if (i == 0) {
            int overflow;
            long long mode = PyLong_AsLongLongAndOverflow(f[0], &overflow);
            char tmp[32];
            if (overflow || mode < 0 || (mode == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                return 0;
            }
            if (!put(b, tmp, snprintf(tmp, sizeof tmp, "\"0o%llo\"", mode)))
                return 0;
        } else if (!put_value(b, f[i], 1)) {
            return 0;
        }
    }
    return PUT_LIT(b, "}");
}

/* One event; 0 (nothing written that counts) where the fallback must write it. */
static int put_event(struct buf *b, PyObject *item, PyObject *plans, PyObject *head, PyObject *errnos) {
    PyObject **f, *plan, *args_plan, *args;
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 13)
        return 0;
    f = &PyTuple_GET_ITEM(item, 0);
    /* seq ts op args result err duration pid uid gid comm cmdline injected */
    if (f[11] != Py_None || PyObject_IsTrue(f[12]) != 0 || !PyUnicode_CheckExact(f[2]))
        return 0;
    plan = PyDict_GetItemWithError(plans, f[2]);
    if (plan == NULL)
        return 0;
    args = f[3];
    args_plan = PyTuple_GET_ITEM(plan, 0);
    if (!(PyTuple_CheckExact(args) || PyList_CheckExact(args)) ||
        PySequence_Fast_GET_SIZE(args) > PyTuple_GET_SIZE(args_plan) || !is_int(f[5]))
        return 0;
    PyObject *path = Py_None, *path2 = Py_None;
    Py_ssize_t nargs = PySequence_Fast_GET_SIZE(args);
    PyObject **a = PySequence_Fast_ITEMS(args);
    for (Py_ssize_t i = 0; i < nargs; i++) {
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(PyTuple_GET_ITEM(args_plan, i), 1));
        if (kind == ARG_PATH)
            path = a[i];
        else if (kind == ARG_PATH2)
            path2 = a[i];
    }
    if (!put_bytes(b, head) || !put_value(b, f[0], 0) || !PUT_LIT(b, ",\"ts\":") || !PyFloat_CheckExact(f[1]) ||
        !put_value(b, f[1], 0) || !PUT_LIT(b, ",\"op\":") || !put_str(b, f[2]) || !PUT_LIT(b, ",\"path\":") ||
        !put_value(b, path, 0) || !PUT_LIT(b, ",\"path2\":") || !put_value(b, path2, 0) ||
        !PUT_LIT(b, ",\"args\":{"))
        return 0;
    int first = 1;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *spec = PyTuple_GET_ITEM(args_plan, i); /* (key JSON bytes, kind, decoder, cache) */
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
        if (kind == ARG_PATH || kind == ARG_PATH2)
            continue;
        if ((!first && !PUT_LIT(b, ",")) || !put_bytes(b, PyTuple_GET_ITEM(spec, 0)))
            return 0;
        first = 0;
        if (kind == ARG_DECODED && a[i] != Py_None) {
            if (!put_decoded(b, PyTuple_GET_ITEM(spec, 2), PyTuple_GET_ITEM(spec, 3), a[i]))
                return 0;
        } else if (!put_value(b, a[i], 0)) {
            return 0;
        }
    }
    if (!PUT_LIT(b, "},\"result\":"))
        return 0;
    long long err = PyLong_AsLongLong(f[5]);
    PyObject *r = f[4];
    if (err != 0 || r == Py_None) {
        if (!PUT_LIT(b, "null"))
            return 0;
    } else {
        long rkind = PyLong_AsLong(PyTuple_GET_ITEM(plan, 1));
        PyObject *rarg = PyTuple_GET_ITEM(plan, 2);
        int ok;
        if (rkind == RESULT_STAT && PyTuple_CheckExact(r) && PyTuple_GET_SIZE(r) == 6 && is_int(PyTuple_GET_ITEM(r, 0)))
            ok = put_stat(b, r);
        else if (rkind == RESULT_FH && is_int(r))
            ok = PUT_LIT(b, "{\"fh\":") && put_value(b, r, 0) && PUT_LIT(b, "}");
        else if (rkind == RESULT_WRAPPED)
            ok = put_bytes(b, rarg) && put_value(b, r, 0) && PUT_LIT(b, "}");
        else if (rkind == RESULT_PLAIN)
            ok = put_value(b, r, 0);
        else /* decoded by events.decode_result (rarg: bound to the operation) */
            ok = put_decoded(b, rarg, Py_None, r);
        if (!ok)
            return 0;
    }
    if (!PUT_LIT(b, ",\"errno\":"))
        return 0;
    if (err == 0) {
        if (!PUT_LIT(b, "null"))
            return 0;
    } else {
        PyObject *name = PyDict_GetItemWithError(errnos, f[5]);
        if (name == NULL || !put_str(b, name))
            return 0;
    }
    return PUT_LIT(b, ",\"duration_ns\":") && is_int(f[6]) && put_value(b, f[6], 0) && PUT_LIT(b, ",\"pid\":") &&
           is_int(f[7]) && put_value(b, f[7], 0) && PUT_LIT(b, ",\"uid\":") && is_int(f[8]) &&
           put_value(b, f[8], 0) && PUT_LIT(b, ",\"gid\":") && is_int(f[9]) && put_value(b, f[9], 0) &&
           PUT_LIT(b, ",\"comm\":") && (f[10] == Py_None || PyUnicode_CheckExact(f[10])) &&
           put_value(b, f[10], 0) && PUT_LIT(b, "}\n");
}

static PyObject *encode_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *items, *plans, *head, *errnos, *fallback, *ends = NULL, *out = NULL;
    struct buf b = {NULL, 0, 0};
    if (nargs != 5 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1]) || !PyBytes_CheckExact(args[2]) ||
        !PyDict_CheckExact(args[3]))
        return PyErr_Format(PyExc_TypeError, "(items: list, plans: dict, head: bytes, errnos: dict, fallback) "
                            "expected");
    items = args[0], plans = args[1], head = args[2], errnos = args[3], fallback = args[4];
    Py_ssize_t n = PyList_GET_SIZE(items);
    ends = PyList_New(n);
    if (ends == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_ssize_t start = b.len;
        if (!put_event(&b, item, plans, head, errnos)) {
            if (PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_Exception))
                    goto fail; /* MemoryError is an Exception; KeyboardInterrupt is not */
                PyErr_Clear();
            }
            b.len = start;
            PyObject *line = PyObject_CallOneArg(fallback, item);
            if (line == NULL)
                goto fail;
            int ok = PyBytes_Check(line) && put_bytes(&b, line);
            Py_DECREF(line);
            if (!ok) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "fallback must return bytes");
                goto fail;
            }
        }
        PyObject *end = PyLong_FromSsize_t(b.len);
        if (end == NULL)
            goto fail;
        PyList_SET_ITEM(ends, i, end);
    }
    out = PyBytes_FromStringAndSize(b.p ? b.p : "", b.len);
    PyMem_Free(b.p);
    if (out == NULL) {
        Py_DECREF(ends);
        return NULL;
    }
    return Py_BuildValue("(NN)", out, ends);
fail:
    PyMem_Free(b.p);
    Py_XDECREF(ends);
    return NULL;
}

static PyMethodDef METHODS[] = {
    {"ascii_escaped", ascii_escaped, METH_O, "ascii_escaped(line: bytes) -> bytes: non-ASCII as \\uXXXX escapes"},
    {"encode_events", (PyCFunction)(void (*)(void))encode_events, METH_FASTCALL,
     "encode_events(items, plans, head, errnos, fallback) -> (bytes, ends): the JSONL lines of raw events"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_jsonl", "JSONL lines beyond ASCII, escaped.", -1,
                                    METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jsonl(void) { return PyModule_Create(&MODULE); }
