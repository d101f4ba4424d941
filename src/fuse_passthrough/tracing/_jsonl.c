/* The trace writer's JSONL lines with names beyond ASCII (tracing/formats.py, format_jsonl_bytes).
 *
 * orjson writes what the stdlib's json encoder writes, except that it leaves non-ASCII characters raw (UTF-8)
 * where the stdlib (ensure_ascii) writes \uXXXX escapes, surrogate pairs beyond the BMP. Such names are common
 * (CPython's test suite works in directories whose names end in a non-ASCII letter), and encoding those events
 * a second time with the stdlib cost ~4 us each; escaping orjson's line here costs a tenth of that.
 *
 * ascii_escaped(line: bytes) -> bytes: `line` (valid UTF-8, as orjson writes) with every character beyond ASCII
 * and DEL written as the stdlib writes it. Outside string literals a JSON line is ASCII, so every such byte is in
 * one, where the escape means the same character. ValueError for bytes that are not UTF-8.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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

static PyMethodDef METHODS[] = {
    {"ascii_escaped", ascii_escaped, METH_O, "ascii_escaped(line: bytes) -> bytes: non-ASCII as \\uXXXX escapes"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_jsonl", "JSONL lines beyond ASCII, escaped.", -1,
                                    METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jsonl(void) { return PyModule_Create(&MODULE); }
