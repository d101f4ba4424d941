/* The trace writer's per-event work in C: its JSONL and text lines (tracing/formats.py, tracing/writer.py) and the
 * summary's tally (tracing/stats.py; `encode_text_events` and `tally` further down).
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

/* an exact int of 64 bits in decimal; 0 (no exception set) for a bigger one */
static int put_int(struct buf *b, PyObject *v) {
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return put_i64(b, x);
}

/* a mode as oct() writes it, "0o100644" (quoted: as a JSON string); 0 (no exception set) unless an int 0..2**63 */
static int put_mode(struct buf *b, PyObject *v, int quoted) {
    int overflow;
    long long mode = PyLong_CheckExact(v) ? PyLong_AsLongLongAndOverflow(v, &overflow) : -1;
    char tmp[32];
    if (!PyLong_CheckExact(v) || overflow || mode < 0 || (mode == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return put(b, tmp, snprintf(tmp, sizeof tmp, quoted ? "\"0o%llo\"" : "0o%llo", mode));
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

/* repr(d) for 2**28 <= d < 2**53 (an event's ts, seconds since 1970), the same digits as Python's repr (David Gay's
 * shortest round-trip, PyOS_double_to_string 'r'), ~10 times faster: that general algorithm was 40 % of the JSONL
 * encoding's time. d = N / 2**k exactly (N the 53-bit significand, k = 52 - exponent, 0..24), so in units of
 * 10**-(k+1) / 2 every number involved is an integer below 2**114: d itself V = 4N * 5**(k+1), and the numbers
 * that read back as d lie between the midpoints to its neighbours, (4N -+ 2) * 5**(k+1) (the lower one (4N - 1) *
 * 5**(k+1) when N = 2**52, whose lower neighbour is closer), included when N is even (round-half-even). The
 * shortest is the first multiple of 2 * 10**(k+1-j) in that interval for j = 0, 1, ... fractional digits; of two,
 * the nearer to d, and of two as near, the even one, as Gay's algorithm chooses. */
typedef unsigned __int128 u128;

static int put_float_repr(struct buf *b, double d) {
    int e;
    double m = frexp(d, &e);                               /* d = m * 2**e, 0.5 <= m < 1 */
    uint64_t n = (uint64_t)ldexp(m, 53);                   /* exact: the significand */
    int k = 53 - e;                                        /* d = n / 2**k */
    u128 p5 = 1, pow10 = 1;
    for (int i = 0; i < k + 1; i++)
        p5 *= 5;
    u128 v = (u128)4 * n * p5;
    u128 hi = ((u128)4 * n + 2) * p5;
    u128 lo = ((u128)4 * n - (n == (1ULL << 52) ? 1 : 2)) * p5;
    int inclusive = (n & 1) == 0;
    for (int i = 0; i < k + 1; i++)
        pow10 *= 10;
    for (int j = 0; j <= k + 1; j++, pow10 /= 10) {
        u128 step = 2 * pow10;                             /* 10**-j in these units */
        u128 below = v / step * step, above = below + step, pick;
        int below_ok = inclusive ? below >= lo : below > lo, above_ok = inclusive ? above <= hi : above < hi;
        if (below == v)
            above_ok = 0;
        if (!below_ok && !above_ok)
            continue;
        if (below_ok && above_ok) {
            u128 db = v - below, da = above - v;
            pick = db < da ? below : da < db ? above : ((below / step) % 2 == 0 ? below : above);
        } else {
            pick = below_ok ? below : above;
        }
        u128 q = pick / step;                              /* the digits: q * 10**-j */
        u128 scale = 1;
        for (int i = 0; i < j; i++)
            scale *= 10;
        uint64_t whole = (uint64_t)(q / scale);
        u128 frac = q % scale;
        char tmp[64], *o = tmp + sizeof tmp;
        if (j == 0) {
            *--o = '0';
        } else {
            for (int i = 0; i < j; i++) {
                *--o = (char)('0' + (int)(frac % 10));
                frac /= 10;
            }
        }
        *--o = '.';
        do {
            *--o = (char)('0' + (int)(whole % 10));
            whole /= 10;
        } while (whole);
        return put(b, o, tmp + sizeof tmp - o);
    }
    return 0; /* not reached: j = k + 1 gives d itself */
}

/* None, True, False as `words` name them (JSON's or Python's), an int in decimal: 1 written, 0 not written (an int
 * beyond 64 bits, or no memory), -1 for any other value. */
static const char *const JSON_WORDS[3] = {"null", "true", "false"}, *const PYTHON_WORDS[3] = {"None", "True", "False"};

static int put_scalar(struct buf *b, PyObject *v, const char *const words[3]) {
    if (v == Py_None || v == Py_True || v == Py_False) {
        const char *w = words[v == Py_None ? 0 : v == Py_True ? 1 : 2];
        return put(b, w, (Py_ssize_t)strlen(w));
    }
    if (PyLong_CheckExact(v))
        return put_int(b, v);
    return -1;
}

/* 0 with no exception set: a value this writer leaves to the fallback. */
static int put_value(struct buf *b, PyObject *v, int depth) {
    int scalar = put_scalar(b, v, JSON_WORDS);
    if (scalar >= 0)
        return scalar;
    if (PyUnicode_CheckExact(v))
        return put_str(b, v);
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        if (!isfinite(d))
            return 0;
        if (d >= 268435456.0 && d < 9007199254740992.0) /* 2**28 <= d < 2**53: every event's ts */
            return put_float_repr(b, d);
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

/* (mode, size, ino, nlink, uid, gid) as stat_summary's dict is written: `keys` before each field (with the opening
 * brace), the mode as oct() (quoted in JSON), the others as None, a bool or an int in `words` (else 0: the fallback
 * writes the event). */
static const char *const JSON_STAT_KEYS[6] = {"{\"mode\":", ",\"size\":", ",\"ino\":", ",\"nlink\":", ",\"uid\":",
                                              ",\"gid\":"};
static const char *const TEXT_STAT_KEYS[6] = {"= {mode=", " size=", " ino=", " nlink=", " uid=", " gid="};

static int put_stat(struct buf *b, PyObject *r, const char *const keys[6], const char *const words[3]) {
    PyObject **f = PySequence_Fast_ITEMS(r);
    for (int i = 0; i < 6; i++) {
        if (!put(b, keys[i], (Py_ssize_t)strlen(keys[i])))
            return 0;
        if (i == 0 ? !put_mode(b, f[0], words == JSON_WORDS) : put_scalar(b, f[i], words) <= 0)
            return 0;
    }
    return PUT_LIT(b, "}");
}

/* The plan of an event the compiled writers write (borrowed; its 13 fields in *fields): a RawEvent tuple without a
 * cmdline or an injected fault, of an operation `plans` has, with no more arguments than it names and an int errno;
 * else NULL (an exception set or not). */
static PyObject *usual_event(PyObject *item, PyObject *plans, PyObject ***fields) {
    PyObject **f, *plan, *args;
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 13)
        return NULL;
    f = *fields = &PyTuple_GET_ITEM(item, 0);
    /* seq ts op args result err duration pid uid gid comm cmdline injected */
    if (f[11] != Py_None || PyObject_IsTrue(f[12]) != 0 || !PyUnicode_CheckExact(f[2]))
        return NULL;
    plan = PyDict_GetItemWithError(plans, f[2]);
    if (plan == NULL)
        return NULL;
    args = f[3];
    if (!(PyTuple_CheckExact(args) || PyList_CheckExact(args)) ||
        PySequence_Fast_GET_SIZE(args) > PyTuple_GET_SIZE(PyTuple_GET_ITEM(plan, 0)) || !is_int(f[5]))
        return NULL;
    return plan;
}

/* One event; 0 (nothing written that counts) where the fallback must write it. */
static int put_event(struct buf *b, PyObject *item, PyObject *plans, PyObject *head, PyObject *errnos) {
    PyObject **f, *plan = usual_event(item, plans, &f), *args_plan, *args;
    if (plan == NULL)
        return 0;
    args = f[3];
    args_plan = PyTuple_GET_ITEM(plan, 0);
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
            ok = put_stat(b, r, JSON_STAT_KEYS, JSON_WORDS);
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

/* A batch's lines, one per item: `put_line(buf, item, ctx)` where it can (1), else `fallback(item) -> bytes`. */
typedef int (*put_line_t)(struct buf *b, PyObject *item, PyObject *const *ctx);

static PyObject *encode_batch(PyObject *items, PyObject *fallback, put_line_t put_line, PyObject *const *ctx) {
    PyObject *ends = NULL, *out = NULL;
    struct buf b = {NULL, 0, 0};
    Py_ssize_t n = PyList_GET_SIZE(items);
    ends = PyList_New(n);
    if (ends == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_ssize_t start = b.len;
        if (!put_line(&b, item, ctx)) {
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

static int put_jsonl_line(struct buf *b, PyObject *item, PyObject *const *ctx) { /* plans, head, errnos */
    return put_event(b, item, ctx[0], ctx[1], ctx[2]);
}

static PyObject *encode_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1]) || !PyBytes_CheckExact(args[2]) ||
        !PyDict_CheckExact(args[3]))
        return PyErr_Format(PyExc_TypeError, "(items: list, plans: dict, head: bytes, errnos: dict, fallback) "
                            "expected");
    return encode_batch(args[0], args[4], put_jsonl_line, args + 1);
}

/* ------------------------------------------------------------------------------------------ encode_text_events
 * encode_text_events(items, plans, errnos, fallback) -> (bytes, ends): the text lines of a batch of raw events, each
 * exactly `format_text(event_of(item)).encode("utf-8", "backslashreplace")` (formats.py), as encode_events does for
 * JSONL. `plans` (formats.py _TEXT_PLANS): per operation, per argument (kind, text, cache) — TEXT_PATH: repr of the
 * path; TEXT_DATA: "<N bytes>" for an int; TEXT_VALUE: an int, None or bool as repr writes it, else text(value) ->
 * bytes, remembered in `cache` (a dict, or None) — and how the result is written (TEXT_RESULT_*, with the key of a
 * wrapped one). Whatever it does not handle (an unknown operation, extra arguments, a cmdline, an injected fault, a
 * result of another shape) is `fallback(item) -> bytes`. */
enum { TEXT_PATH, TEXT_DATA, TEXT_VALUE };
enum { TEXT_RESULT_PLAIN, TEXT_RESULT_STAT, TEXT_RESULT_FH, TEXT_RESULT_WRAPPED, TEXT_RESULT_OTHER };

static int put_text_str(struct buf *b, PyObject *s) { /* str(s) encoded as utf-8 with backslashreplace */
    if (PyUnicode_IS_ASCII(s))
        return put(b, (const char *)PyUnicode_DATA(s), PyUnicode_GET_LENGTH(s));
    PyObject *e = PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace");
    if (e == NULL)
        return 0;
    int ok = put_bytes(b, e);
    Py_DECREF(e);
    return ok;
}

static int put_repr(struct buf *b, PyObject *v) { /* repr(v), as put_text_str writes a str */
    if (v == Py_None)
        return PUT_LIT(b, "None");
    if (PyUnicode_CheckExact(v) && PyUnicode_IS_ASCII(v)) {
        const char *p = (const char *)PyUnicode_DATA(v);
        Py_ssize_t n = PyUnicode_GET_LENGTH(v), i;
        for (i = 0; i < n; i++)
            if (p[i] < 0x20 || p[i] == 0x7f || p[i] == '\'' || p[i] == '\\')
                break;
        if (i == n) /* nothing repr escapes, no quote to choose: 'text' */
            return PUT_LIT(b, "'") && put(b, p, n) && PUT_LIT(b, "'");
    }
    PyObject *r = PyObject_Repr(v);
    if (r == NULL)
        return 0;
    int ok = put_text_str(b, r);
    Py_DECREF(r);
    return ok;
}

/* an int, None or a bool as repr writes them; 0 (no exception) for anything else */
static int put_simple(struct buf *b, PyObject *v) { return put_scalar(b, v, PYTHON_WORDS) > 0; }

static int put_text_arg(struct buf *b, PyObject *spec, PyObject *v) {
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    PyObject *text = PyTuple_GET_ITEM(spec, 1), *cache = PyTuple_GET_ITEM(spec, 2), *t;
    if (kind == TEXT_PATH)
        return put_repr(b, v);
    if (kind == TEXT_DATA && PyLong_CheckExact(v))
        return PUT_LIT(b, "<") && put_simple(b, v) && PUT_LIT(b, " bytes>");
    if (kind == TEXT_VALUE && cache == Py_None && put_simple(b, v))
        return 1;
    if (cache != Py_None && (PyLong_CheckExact(v) || PyUnicode_CheckExact(v))) {
        t = PyDict_GetItemWithError(cache, v);
        if (t != NULL)
            return PyBytes_Check(t) && put_bytes(b, t);
        if (PyErr_Occurred())
            return 0;
        if ((t = PyObject_CallOneArg(text, v)) == NULL)
            return 0;
        if (PyBytes_Check(t) && PyDict_GET_SIZE(cache) < 4096 && PyDict_SetItem(cache, v, t) < 0) {
            Py_DECREF(t);
            return 0;
        }
    } else if ((t = PyObject_CallOneArg(text, v)) == NULL) {
        return 0;
    }
    int ok = PyBytes_Check(t) && put_bytes(b, t);
    Py_DECREF(t);
    return ok;
}

static int put_text_result(struct buf *b, PyObject *plan, PyObject *r) {
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(plan, 1));
    if (r == Py_None)
        return PUT_LIT(b, "= None");
    switch (kind) {
    case TEXT_RESULT_STAT:
        return PyTuple_CheckExact(r) && PyTuple_GET_SIZE(r) == 6 && put_stat(b, r, TEXT_STAT_KEYS, PYTHON_WORDS);
    case TEXT_RESULT_FH:
        if (PyLong_CheckExact(r))
            return PUT_LIT(b, "= fh ") && put_simple(b, r);
        if (PyTuple_CheckExact(r) && PyTuple_GET_SIZE(r) == 2 && PyLong_CheckExact(PyTuple_GET_ITEM(r, 0)) &&
            PyLong_CheckExact(PyTuple_GET_ITEM(r, 1)))
            return PUT_LIT(b, "= fh ") && put_simple(b, PyTuple_GET_ITEM(r, 0)) &&
                   PUT_LIT(b, " [kernel passthrough, backing ") && put_simple(b, PyTuple_GET_ITEM(r, 1)) &&
                   PUT_LIT(b, ": read/write not traced]");
        return 0;
    case TEXT_RESULT_WRAPPED: /* "= {key=value}", the key with its "= {" and "=" (plan[2]) */
        return PyLong_CheckExact(r) && put_bytes(b, PyTuple_GET_ITEM(plan, 2)) && put_simple(b, r) &&
               PUT_LIT(b, "}");
    case TEXT_RESULT_PLAIN:
        if (PyUnicode_CheckExact(r))
            return PUT_LIT(b, "= ") && put_repr(b, r);
        return PUT_LIT(b, "= ") && put_simple(b, r);
    default:
        return 0;
    }
}

/* One event's line; 0 (nothing written that counts) where the fallback must write it. */
static int put_text_event(struct buf *b, PyObject *item, PyObject *plans, PyObject *errnos) {
    PyObject **f, *plan = usual_event(item, plans, &f), *args_plan, *args;
    if (plan == NULL || !PyUnicode_IS_ASCII(f[2]) || !is_int(f[6]) || !is_int(f[7]) || !is_int(f[8]) ||
        !is_int(f[9]))
        return 0;
    args = f[3];
    args_plan = PyTuple_GET_ITEM(plan, 0);
    Py_ssize_t nargs = PySequence_Fast_GET_SIZE(args), nnames = PyTuple_GET_SIZE(args_plan);
    PyObject **a = PySequence_Fast_ITEMS(args);
    if (!put_text_str(b, f[2]) || !PUT_LIT(b, "("))
        return 0;
    /* every name's part, in the names' order: path and path2 always (None when absent), the others if given */
    for (Py_ssize_t i = 0, parts = 0; i < nnames; i++) {
        PyObject *spec = PyTuple_GET_ITEM(args_plan, i);
        int path = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0)) == TEXT_PATH;
        if (!path && i >= nargs)
            continue;
        if ((parts++ && !PUT_LIT(b, ", ")) || !put_text_arg(b, spec, i < nargs ? a[i] : Py_None))
            return 0;
    }
    if (!PUT_LIT(b, ") "))
        return 0;
    long long err = PyLong_AsLongLong(f[5]);
    if (err == -1 && PyErr_Occurred())
        return 0;
    if (err != 0) {
        PyObject *name = PyDict_GetItemWithError(errnos, f[5]);
        if (!PUT_LIT(b, "-> ") || (name != NULL ? !put_text_str(b, name) : !put_simple(b, f[5])))
            return 0;
    } else if (!put_text_result(b, plan, f[4])) {
        return 0;
    }
    int overflow;
    long long ns = PyLong_AsLongLongAndOverflow(f[6], &overflow);
    char tmp[64];
    if (overflow || (ns == -1 && PyErr_Occurred()))
        return 0;
    if (!PUT_LIT(b, "   ") || !put(b, tmp, snprintf(tmp, sizeof tmp, "%.3f", (double)ns / 1e6)) ||
        !PUT_LIT(b, " ms  "))
        return 0;
    long long pid = PyLong_AsLongLongAndOverflow(f[7], &overflow);
    if (overflow || (pid == -1 && PyErr_Occurred()))
        return 0;
    if (pid == 0) {
        if (!PUT_LIT(b, "[kernel]"))
            return 0;
    } else {
        PyObject *comm = f[10];
        int named = comm != Py_None && (!PyUnicode_Check(comm) || PyUnicode_GET_LENGTH(comm) > 0);
        if (named && !PyUnicode_CheckExact(comm))
            return 0;
        if (!(named ? put_text_str(b, comm) : PUT_LIT(b, "?")) || !PUT_LIT(b, "[") || !put_i64(b, pid) ||
            !PUT_LIT(b, "]"))
            return 0;
    }
    return PUT_LIT(b, " uid=") && put_simple(b, f[8]) && PUT_LIT(b, " gid=") && put_simple(b, f[9]) &&
           PUT_LIT(b, "\n");
}

static int put_text_line(struct buf *b, PyObject *item, PyObject *const *ctx) { /* plans, errnos */
    return put_text_event(b, item, ctx[0], ctx[1]);
}

static PyObject *encode_text_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1]) || !PyDict_CheckExact(args[2]))
        return PyErr_Format(PyExc_TypeError, "(items: list, plans: dict, errnos: dict, fallback) expected");
    return encode_batch(args[0], args[3], put_text_line, args + 1);
}

/* ------------------------------------------------------------------------------------------ tally
 * tally(items) -> [(op, calls, errors, total_ns, bytes_read, bytes_written, injected, [(bucket, count), ...]), ...]
 * or None: stats.Summary.add_batch's loop over a batch of raw event tuples, per operation in the order first
 * seen, with the latency buckets of stats._bucket (int(log2(ns) * 16), 0 for ns <= 1). None (nothing counted)
 * for a batch it leaves to that loop: an item that is not a tuple of at least 7 fields, an operation that is not a
 * str, a duration that is not an int of 0 to 2**63 - 1, a sum beyond 64 bits, or more than TALLY_OPS operations. */
#define TALLY_OPS 64
#define TALLY_BUCKETS (64 * 16 + 1)

struct op_tally {
    PyObject *op; /* borrowed from the items */
    long long calls, errors, total_ns, bytes_read, bytes_written, injected;
    uint32_t *buckets; /* TALLY_BUCKETS counts */
    int lo, hi;        /* the buckets used */
};

static PyObject *tally(PyObject *self, PyObject *items) {
    struct op_tally t[TALLY_OPS];
    int nops = 0, last = -1;
    PyObject *out = NULL;
    if (!PyList_CheckExact(items))
        return PyErr_Format(PyExc_TypeError, "a list of raw events expected");
    Py_ssize_t n = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i), *op, *result;
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) < 7)
            goto python;
        op = PyTuple_GET_ITEM(item, 2);
        if (!PyUnicode_CheckExact(op))
            goto python;
        int k = last >= 0 && t[last].op == op ? last : -1; /* a frame's op names are shared objects */
        for (int j = 0; k < 0 && j < nops; j++) {
            if (t[j].op == op) {
                k = j;
            } else {
                int eq = PyUnicode_Compare(t[j].op, op);
                if (eq == -1 && PyErr_Occurred())
                    goto fail;
                if (eq == 0)
                    k = j;
            }
        }
        if (k < 0) {
            if (nops == TALLY_OPS)
                goto python;
            k = nops;
            memset(&t[k], 0, sizeof t[k]);
            t[k].op = op;
            t[k].lo = TALLY_BUCKETS;
            t[k].hi = -1;
            t[k].buckets = PyMem_Calloc(TALLY_BUCKETS, sizeof(uint32_t));
            if (t[k].buckets == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            nops++;
        }
        last = k;
        int overflow;
        PyObject *ns_obj = PyTuple_GET_ITEM(item, 6);
        if (!PyLong_CheckExact(ns_obj))
            goto python;
        long long ns = PyLong_AsLongLongAndOverflow(ns_obj, &overflow);
        if (overflow || ns < 0)
            goto python;
        int failed = PyObject_IsTrue(PyTuple_GET_ITEM(item, 5));
        if (failed < 0)
            goto fail;
        struct op_tally *o = &t[k];
        o->calls++;
        if (__builtin_add_overflow(o->total_ns, ns, &o->total_ns))
            goto python;
        if (failed) {
            o->errors++;
        } else if (PyLong_Check(result = PyTuple_GET_ITEM(item, 4))) { /* isinstance(result, int) */
            int is_read = PyUnicode_CompareWithASCIIString(op, "read") == 0;
            if (is_read || PyUnicode_CompareWithASCIIString(op, "write") == 0 ||
                PyUnicode_CompareWithASCIIString(op, "copy_file_range") == 0) {
                long long v = PyLong_AsLongLongAndOverflow(result, &overflow);
                if (overflow || (v == -1 && PyErr_Occurred()))
                    goto python;
                if (__builtin_add_overflow(is_read ? o->bytes_read : o->bytes_written, v,
                                           is_read ? &o->bytes_read : &o->bytes_written))
                    goto python;
            }
        }
        if (PyTuple_GET_SIZE(item) > 12) {
            int injected = PyObject_IsTrue(PyTuple_GET_ITEM(item, 12));
            if (injected < 0)
                goto fail;
            o->injected += injected;
        }
        int b = ns <= 1 ? 0 : (int)(log2((double)ns) * 16);
        o->buckets[b]++;
        if (b < o->lo)
            o->lo = b;
        if (b > o->hi)
            o->hi = b;
    }
    if ((out = PyList_New(nops)) == NULL)
        goto fail;
    for (int k = 0; k < nops; k++) {
        struct op_tally *o = &t[k];
        PyObject *hist = PyList_New(0), *row;
        if (hist == NULL)
            goto fail;
        for (int b = o->lo; b <= o->hi; b++) {
            if (!o->buckets[b])
                continue;
            PyObject *pair = Py_BuildValue("(iI)", b, (unsigned int)o->buckets[b]);
            if (pair == NULL || PyList_Append(hist, pair) < 0) {
                Py_XDECREF(pair);
                Py_DECREF(hist);
                goto fail;
            }
            Py_DECREF(pair);
        }
        row = Py_BuildValue("(OLLLLLLN)", o->op, o->calls, o->errors, o->total_ns, o->bytes_read, o->bytes_written,
                            o->injected, hist);
        if (row == NULL)
            goto fail;
        PyList_SET_ITEM(out, k, row);
    }
    goto done;
python:
    out = Py_NewRef(Py_None);
    goto done;
fail:
    Py_CLEAR(out);
done:
    for (int k = 0; k < nops; k++)
        PyMem_Free(t[k].buckets);
    return out;
}

static PyMethodDef METHODS[] = {
    {"tally", tally, METH_O, "tally(items) -> [(op, calls, errors, total_ns, bytes_read, bytes_written, injected, "
     "[(bucket, count), ...]), ...] or None: a batch's per-operation numbers (stats.Summary.add_batch)"},
    {"ascii_escaped", ascii_escaped, METH_O, "ascii_escaped(line: bytes) -> bytes: non-ASCII as \\uXXXX escapes"},
    {"encode_text_events", (PyCFunction)(void (*)(void))encode_text_events, METH_FASTCALL,
     "encode_text_events(items, plans, errnos, fallback) -> (bytes, ends): the text lines of raw events"},
    {"encode_events", (PyCFunction)(void (*)(void))encode_events, METH_FASTCALL,
     "encode_events(items, plans, head, errnos, fallback) -> (bytes, ends): the JSONL lines of raw events"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_jsonl", "The trace writer's per-event work in C.", -1,
                                    METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jsonl(void) { return PyModule_Create(&MODULE); }
