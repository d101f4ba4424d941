/* The tracing layer's per-request work in C (tracing/layer.py, TracingLayer.direct).
 *
 * A traced request used to run a Python closure around the handler: read the paths, describe the arguments, time
 * the call, look the caller's name up in the cache, build the event tuple and hand it to the sink. Measured in the
 * daemon (docs/benchmarks.md), that closure cost about as much CPU per request as the handler itself; the parts
 * that are not Python-level knowledge of the events (the timing, the caller, the name cache, the tuple, the sink's
 * append) are done here. What an event says stays in Python: the paths come from the node table's `path`, the
 * arguments and the result from layer.py's DESCRIBE functions, a name not in the cache from ProcessNames.lookup.
 *
 * Recorder(seq, cache, lookup, young_ns, ttl_ns, context, put, pending, batch, backlog): what every traced
 * handler shares: the event numbers (an iterator, shared with the layer's generic path), the process-name cache
 * (pid -> (first seen, last read, comm, cmdline), times in CLOCK_MONOTONIC ns as time.perf_counter_ns) and its
 * `lookup(pid, now_ns)`, `context(req) -> (uid, gid, pid, umask)`, and the sink: `pending.append(raw)` (an
 * EventBuffer, below: the event's fields encoded straight into it) then `backlog(len(pending))` once `batch` are
 * pending, or `put(raw)` where `pending` is None; `stat_type`
 * (optional): abi.stat_t, whose instances are read as the system's struct stat.
 *
 * Recorder.traced(op, fn, nodes_path, node_i, name_i, node2_i, name2_i, args_of, result_of, plan, accepts_op) -> a
 * callable `(req, *a)` that records exactly what layer.py's Python closure records (tests/tracing/
 * test_tracing_layer_unit.py runs both against the generic path): one event (seq, start, op, args, result or None,
 * errno or 0, duration ns, pid, uid, gid, comm, cmdline, None), paths read before the call (index -1: none; name
 * index -1: the node's own path). The event's arguments and result follow `plan` (layer.py PLANS: steps read
 * from the handler's arguments and result, no Python call) or, without one, come from args_of(a, p, p2, umask)
 * and result_of(result, a). With `accepts_op` (SETATTR), args_of gives a list of (op, args), one event each
 * whose op it accepts. With `path_cache` (table, root id), a path NodeTable has cached is read here
 * (inodes.py, NodeTable.path_cache), and `nodes_path` asked only for the others.
 *
 * Recorded after the reply: where the C trampolines call the handler (lowlevel/_trampolines.c, AFTER_REPLY), what
 * the call's event needs is kept at its end, and the event is made once the reply is sent, by the trampoline's
 * hook: the caller runs on while the event is encoded (docs/benchmarks.md, 2026-12-07 05:50). Kept calls wait in
 * one queue, oldest first, and every event is made in its turn: by the hook, or before any event made at once
 * (a call not under a trampoline, the generic path's `record_waiting()`), so events are numbered in the order
 * their calls ended, as before.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

/* EventBuffer: the events a ProcessSink has not sent yet, already in the form its writer reads (tracing/writer.py):
 * one frame, a 4-byte little-endian length then a marshal'ed list of event tuples. Appending encodes the tuple's
 * fields at once (marshal's encoding; back-references only to names this frame already holds), so a pending event
 * is bytes, not a tuple of a dozen objects for the garbage collector to walk and marshal.dumps to encode later
 * under the GIL. */
#define REF_SLOTS 64

typedef struct {
    PyObject_HEAD
    char *buf;
    Py_ssize_t len, cap, count;
    PyObject *stand_in;  /* field -> what marshal can write, for an event it refuses (sinks._stand_in); or NULL */
    /* Op and process names already in this frame (by identity, hashed on the address): written again as a
     * back-reference, so the writer makes one str of each per frame, not one per event. */
    struct { PyObject *str; uint32_t ref; } seen[REF_SLOTS];
    uint32_t refs;  /* objects flagged FLAG_REF so far in this frame: the next one's index */
} EventBuffer;

#define FRAME_HEAD 9  /* frame length (4), TYPE_LIST '[', event count (4) */

static int eb_reserve(EventBuffer *b, Py_ssize_t n) {
    if (b->len + n <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + n)
        cap *= 2;
    char *p = PyMem_Realloc(b->buf, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->buf = p;
    b->cap = cap;
    return 0;
}

static void eb_u32(char *p, uint32_t v) {
    p[0] = (char)(v & 0xff);
    p[1] = (char)((v >> 8) & 0xff);
    p[2] = (char)((v >> 16) & 0xff);
    p[3] = (char)(v >> 24);
}

static int eb_tagged(EventBuffer *b, char tag, uint32_t v) { /* a type code and a 4-byte little-endian word */
    if (eb_reserve(b, 5) < 0)
        return -1;
    b->buf[b->len] = tag;
    eb_u32(b->buf + b->len + 1, v);
    b->len += 5;
    return 0;
}

static int eb_marshal(EventBuffer *b, PyObject *v) { /* marshal's own encoding, version 2 */
    PyObject *data = PyMarshal_WriteObjectToString(v, 2);
    if (data == NULL)
        return -1;
    if (eb_reserve(b, PyBytes_GET_SIZE(data)) < 0) {
        Py_DECREF(data);
        return -1;
    }
    memcpy(b->buf + b->len, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
    b->len += PyBytes_GET_SIZE(data);
    Py_DECREF(data);
    return 0;
}

/* One value as marshal writes it: the common types here, anything else through marshal itself. A `shared` string
 * (an op or process name: few, each in many events) is written once per frame, then referred to. */
static int eb_value(EventBuffer *b, PyObject *v, int shared) {
    if (v == Py_None || v == Py_True || v == Py_False) {
        if (eb_reserve(b, 1) < 0)
            return -1;
        b->buf[b->len++] = v == Py_None ? 'N' : v == Py_True ? 'T' : 'F';
        return 0;
    }
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred())
            return -1;
        if (!overflow && x >= INT32_MIN && x <= INT32_MAX)
            return eb_tagged(b, 'i', (uint32_t)(int32_t)x);
        return eb_marshal(b, v);
    }
    if (PyFloat_CheckExact(v)) {
        if (eb_reserve(b, 9) < 0)
            return -1;
        b->buf[b->len] = 'g';
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(v), b->buf + b->len + 1, 1) < 0)
            return -1;
        b->len += 9;
        return 0;
    }
    if (PyUnicode_CheckExact(v) && PyUnicode_IS_ASCII(v) && PyUnicode_GET_LENGTH(v) < 256) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(v); /* TYPE_SHORT_ASCII: read without a UTF-8 decoder */
        size_t slot = ((uintptr_t)v >> 4) % REF_SLOTS;
        if (shared) { /* its slot, or the first free one of the next few; all taken: the first is reused */
            for (int k = 0; k < 4; k++) {
                size_t at = (slot + (size_t)k) % REF_SLOTS;
                if (b->seen[at].str == v)
                    return eb_tagged(b, 'r', b->seen[at].ref); /* TYPE_REF */
                if (b->seen[at].str == NULL) {
                    slot = at;
                    break;
                }
            }
        }
        if (eb_reserve(b, 2 + n) < 0)
            return -1;
        b->buf[b->len] = 'z';
        if (shared) {
            Py_XSETREF(b->seen[slot].str, Py_NewRef(v));
            b->seen[slot].ref = b->refs++;
            b->buf[b->len] = (char)('z' | 0x80); /* FLAG_REF: the reader keeps it for later references */
        }
        b->buf[b->len + 1] = (char)n;
        memcpy(b->buf + b->len + 2, PyUnicode_DATA(v), (size_t)n);
        b->len += 2 + n;
        return 0;
    }
    if (PyTuple_CheckExact(v)) {
        Py_ssize_t n = PyTuple_GET_SIZE(v);
        if (eb_tagged(b, '(', (uint32_t)n) < 0)
            return -1;
        for (Py_ssize_t k = 0; k < n; k++)
            if (eb_value(b, PyTuple_GET_ITEM(v, k), 0) < 0)
                return -1;
        return 0;
    }
    return eb_marshal(b, v);
}

/* One event of `n` fields (RawEvent's order), whole or not at all: nothing here runs Python code, so no other
 * thread (they append and take with the GIL) sees a part of it. */
static int eb_encode(EventBuffer *b, PyObject *const *fields, Py_ssize_t n) {
    Py_ssize_t start = b->len;
    uint32_t refs = b->refs;
    if (b->len == 0) {
        if (eb_reserve(b, FRAME_HEAD) < 0)
            return -1;
        b->len = FRAME_HEAD;
        start = b->len;
    }
    if (eb_tagged(b, '(', (uint32_t)n) < 0)
        goto fail;
    for (Py_ssize_t k = 0; k < n; k++)
        if (eb_value(b, fields[k], k == 2 || k == 10) < 0) /* op, comm */
            goto fail;
    b->count++;
    return 0;
fail:
    b->len = start;
    b->refs = refs; /* the strings the dropped part flagged are not in the stream: forget them */
    for (int k = 0; k < REF_SLOTS; k++)
        if (b->seen[k].str != NULL && b->seen[k].ref >= refs)
            Py_CLEAR(b->seen[k].str);
    return -1;
}

/* An event; one marshal refuses (a custom filesystem's exotic result) is written as stand_in makes its fields, asked
 * with nothing of the event in the buffer. */
static int eb_event(EventBuffer *b, PyObject *const *fields, Py_ssize_t n) {
    PyObject *f;
    int rc;
    if (eb_encode(b, fields, n) == 0)
        return 0;
    if (b->stand_in == NULL || !PyErr_ExceptionMatches(PyExc_ValueError))
        return -1;
    PyErr_Clear();
    f = PyTuple_New(n);
    if (f == NULL)
        return -1;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *v = PyObject_CallOneArg(b->stand_in, fields[k]);
        if (v == NULL) {
            Py_DECREF(f);
            return -1;
        }
        PyTuple_SET_ITEM(f, k, v);
    }
    rc = eb_encode(b, &PyTuple_GET_ITEM(f, 0), n);
    Py_DECREF(f);
    return rc;
}

static PyObject *eb_append(EventBuffer *b, PyObject *raw) {
    if (!PyTuple_Check(raw))
        return PyErr_Format(PyExc_TypeError, "an event is a tuple, not %.100s", Py_TYPE(raw)->tp_name);
    if (eb_event(b, &PyTuple_GET_ITEM(raw, 0), PyTuple_GET_SIZE(raw)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *eb_take(EventBuffer *b, PyObject *unused) {
    PyObject *frame, *out;
    Py_ssize_t count = b->count;
    if (count == 0)
        Py_RETURN_NONE;
    eb_u32(b->buf, (uint32_t)(b->len - 4));
    b->buf[4] = '[';
    eb_u32(b->buf + 5, (uint32_t)count);
    frame = PyBytes_FromStringAndSize(b->buf, b->len);
    if (frame == NULL)
        return NULL;
    b->len = 0;
    b->count = 0;
    b->refs = 0;
    for (int k = 0; k < REF_SLOTS; k++)
        Py_CLEAR(b->seen[k].str);
    if (b->cap > (1 << 22)) { /* a burst's buffer is not kept */
        PyMem_Free(b->buf);
        b->buf = NULL;
        b->cap = 0;
    }
    out = Py_BuildValue("(Nn)", frame, count);
    return out;
}

static Py_ssize_t eb_length(EventBuffer *b) { return b->count; }

static int eb_init(EventBuffer *b, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"stand_in", NULL};
    PyObject *stand_in = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:EventBuffer", kw, &stand_in))
        return -1;
    Py_XSETREF(b->stand_in, stand_in == Py_None ? NULL : Py_NewRef(stand_in));
    return 0;
}

static int eb_traverse(EventBuffer *b, visitproc visit, void *arg) {
    Py_VISIT(b->stand_in);
    return 0;
}

static int eb_clear(EventBuffer *b) {
    Py_CLEAR(b->stand_in);
    for (int k = 0; k < REF_SLOTS; k++)
        Py_CLEAR(b->seen[k].str);
    return 0;
}

static void eb_dealloc(EventBuffer *b) {
    PyObject_GC_UnTrack(b);
    eb_clear(b);
    PyMem_Free(b->buf);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyMethodDef eb_methods[] = {
    {"append", (PyCFunction)eb_append, METH_O, "append(event tuple): encode it after the others"},
    {"take", (PyCFunction)eb_take, METH_NOARGS,
     "take() -> (frame, count) of everything appended since the last take, or None when nothing was"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods eb_as_sequence = {.sq_length = (lenfunc)eb_length};

static PyTypeObject EventBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fuse_passthrough.tracing._recorder.EventBuffer",
    .tp_basicsize = sizeof(EventBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "pending events, encoded as the trace writer reads them (see the module's comment)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)eb_init,
    .tp_traverse = (traverseproc)eb_traverse,
    .tp_clear = (inquiry)eb_clear,
    .tp_dealloc = (destructor)eb_dealloc,
    .tp_methods = eb_methods,
    .tp_as_sequence = &eb_as_sequence,
};

typedef struct {
    PyObject_HEAD
    PyObject *seq, *cache, *lookup, *context, *put, *pending, *append, *backlog;
    PyObject *stat_type;  /* the ctypes struct stat (abi.stat_t), read as the C struct; NULL: by attribute */
    long long young, ttl;
    Py_ssize_t batch;
} Recorder;

/* A step of a plan (layer.py PLANS): how one argument of the event, or its result, is made. */
enum step_kind { S_PATH, S_PATH2, S_ARG, S_ATTR, S_LEN, S_MASKED, S_FH, S_DECODE, S_CONST,      /* arguments */
                 S_SAME, S_RLEN, S_ENTRY_STAT, S_FIRST_STAT, S_OPENED, S_ARG_FH, S_RATTR, S_RDECODE }; /* results */
struct step { enum step_kind kind; int i; PyObject *obj; /* an attribute's name, a constant */ };

static const struct { const char *name; enum step_kind kind; int has_i, has_obj; } STEPS[] = {
    {"path", S_PATH, 0, 0}, {"path2", S_PATH2, 0, 0}, {"arg", S_ARG, 1, 0}, {"attr", S_ATTR, 1, 1},
    {"len", S_LEN, 1, 0}, {"masked", S_MASKED, 1, 0}, {"fh", S_FH, 1, 0}, {"decode", S_DECODE, 1, 0},
    {"const", S_CONST, 0, 1}, {"same", S_SAME, 0, 0}, {"result_len", S_RLEN, 0, 0},
    {"entry_stat", S_ENTRY_STAT, 0, 0}, {"first_stat", S_FIRST_STAT, 0, 0}, {"opened", S_OPENED, 1, 0},
    {"arg_fh", S_ARG_FH, 1, 0}, {"result_attr", S_RATTR, 0, 1}, {"result_decode", S_RDECODE, 0, 0},
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Recorder *rec;
    PyObject *op, *fn, *nodes_path, *args_of, *result_of, *name;
    PyObject *accepts_op;  /* a MULTI operation's filter of its events' ops; NULL: one event, op */
    PyObject *table;       /* the node table whose cached paths are read here (inodes.py NodeTable), or NULL */
    PyObject *root_id;
    int node_i, name_i, node2_i, name2_i;
    Py_ssize_t nsteps;     /* -1: no plan, args_of and result_of describe the call */
    struct step *steps;    /* the arguments' steps, then the result's */
} Traced;

static PyObject *S_BY_ID_NAME, *S_EPOCH_NAME, *S_CACHED_NAME, *S_NAMES_NAME, *S_FH_NAME, *S_INO_NAME, *S_ATTR_NAME,
    *S_BACKING_NAME, *STAT_NAMES[6];

static long long now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* node.cached_path's path while it is of the table's current _path_epoch: a new reference, or NULL (no error) */
static PyObject *valid_cached(PyObject *node, PyObject *epoch) {
    PyObject *cached = PyObject_GetAttr(node, S_CACHED_NAME), *out = NULL;
    if (cached == NULL)
        return NULL;
    if (PyTuple_Check(cached) && PyTuple_GET_SIZE(cached) == 2 && PyUnicode_Check(PyTuple_GET_ITEM(cached, 1))) {
        int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(cached, 0), epoch, Py_EQ);
        if (same > 0)
            out = Py_NewRef(PyTuple_GET_ITEM(cached, 1));
    }
    Py_DECREF(cached);
    return out;
}

/* The node's path as NodeTable.path finds it without its lock: "/" for the root; None for a node unknown or
 * without a name; the cached path of the current epoch; its last name in a directory whose path is "/" or cached
 * (NodeTable._one_step). A new reference; NULL without an error: ask path(). */
static PyObject *cached_path(PyObject *table, PyObject *root_id, PyObject *nodeid) {
    PyObject *by_id, *node, *epoch, *names, *out = NULL;
    int same = PyObject_RichCompareBool(nodeid, root_id, Py_EQ);
    if (same != 0)
        return same < 0 ? NULL : PyUnicode_FromString("/");
    by_id = PyObject_GetAttr(table, S_BY_ID_NAME);
    if (by_id == NULL)
        return NULL;
    if (!PyDict_Check(by_id)) {
        Py_DECREF(by_id);
        return NULL;
    }
    node = PyDict_GetItemWithError(by_id, nodeid);
    if (node == NULL) {
        Py_DECREF(by_id);
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    Py_INCREF(node);
    epoch = PyObject_GetAttr(table, S_EPOCH_NAME);
    if (epoch == NULL)
        goto done;
    out = valid_cached(node, epoch);
    if (out != NULL || PyErr_Occurred())
        goto done;
    names = PyObject_GetAttr(node, S_NAMES_NAME);
    if (names == NULL)
        goto done;
    if (PyList_Check(names) && PyList_GET_SIZE(names) == 0) {
        out = Py_NewRef(Py_None);
    } else if (PyList_Check(names)) {
        PyObject *last = PyList_GET_ITEM(names, PyList_GET_SIZE(names) - 1), *parent, *name, *base = NULL, *up;
        if (PyTuple_Check(last) && PyTuple_GET_SIZE(last) == 2 && PyBytes_Check(PyTuple_GET_ITEM(last, 1))) {
            Py_INCREF(last);
            parent = PyTuple_GET_ITEM(last, 0);
            same = PyObject_RichCompareBool(parent, root_id, Py_EQ);
            if (same > 0) {
                base = PyUnicode_FromString("");
            } else if (same == 0 && (up = PyDict_GetItemWithError(by_id, parent)) != NULL) {
                Py_INCREF(up);
                base = valid_cached(up, epoch);
                Py_DECREF(up);
            }
            if (base != NULL) {
                name = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(PyTuple_GET_ITEM(last, 1)),
                                                        PyBytes_GET_SIZE(PyTuple_GET_ITEM(last, 1)));
                if (name != NULL)
                    out = PyUnicode_FromFormat("%U/%U", base, name);
                Py_XDECREF(name);
                Py_DECREF(base);
            }
            Py_DECREF(last);
        }
    }
    Py_DECREF(names);
done:
    Py_XDECREF(epoch);
    Py_DECREF(node);
    Py_DECREF(by_id);
    return out;
}

/* nodes_path(a[node_i]) or nodes_path(a[node_i], a[name_i]); None for node_i < 0 */
static PyObject *path_of(Traced *t, PyObject *const *a, Py_ssize_t n, int node_i, int name_i) {
    PyObject *args[2], *nodes_path = t->nodes_path;
    if (node_i < 0)
        Py_RETURN_NONE;
    if (node_i >= n || name_i >= n) {
        PyErr_SetString(PyExc_TypeError, "traced handler: too few arguments");
        return NULL;
    }
    if (t->table != NULL) {
        PyObject *base = cached_path(t->table, t->root_id, a[node_i]), *name, *out;
        if (base != NULL && (name_i < 0 || base == Py_None))
            return base;
        if (base != NULL && PyBytes_Check(a[name_i])) { /* base/name, as NodeTable.path joins them */
            name = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(a[name_i]), PyBytes_GET_SIZE(a[name_i]));
            if (name == NULL) {
                Py_DECREF(base);
                return NULL;
            }
            out = PyUnicode_GET_LENGTH(base) == 1 && PyUnicode_READ_CHAR(base, 0) == '/'
                      ? PyUnicode_FromFormat("/%U", name) : PyUnicode_FromFormat("%U/%U", base, name);
            Py_DECREF(base);
            Py_DECREF(name);
            return out;
        }
        Py_XDECREF(base);
        if (PyErr_Occurred())
            return NULL;
    }
    args[0] = a[node_i];
    if (name_i < 0)
        return PyObject_Vectorcall(nodes_path, args, 1, NULL);
    args[1] = a[name_i];
    return PyObject_Vectorcall(nodes_path, args, 2, NULL);
}

/* (comm, cmdline) of `pid` as new references: the cache's entry while it is valid, else lookup(pid, t1) */
static int names_of(Recorder *r, PyObject *pid, long long t1, PyObject **comm, PyObject **cmdline) {
    PyObject *hit = PyDict_GetItemWithError(r->cache, pid), *found, *now;
    if (hit != NULL && PyTuple_Check(hit) && PyTuple_GET_SIZE(hit) == 4) {
        long long first = PyLong_AsLongLong(PyTuple_GET_ITEM(hit, 0));
        long long last = PyLong_AsLongLong(PyTuple_GET_ITEM(hit, 1));
        if (PyErr_Occurred())
            return -1;
        if (t1 - first > r->young && t1 - last < r->ttl) {
            *comm = Py_NewRef(PyTuple_GET_ITEM(hit, 2));
            *cmdline = Py_NewRef(PyTuple_GET_ITEM(hit, 3));
            return 0;
        }
    } else if (PyErr_Occurred()) {
        return -1;
    }
    now = PyLong_FromLongLong(t1);
    if (now == NULL)
        return -1;
    found = PyObject_CallFunctionObjArgs(r->lookup, pid, now, NULL);
    Py_DECREF(now);
    if (found == NULL)
        return -1;
    if (!PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 2) {
        Py_DECREF(found);
        PyErr_SetString(PyExc_TypeError, "lookup() must return (comm, cmdline)");
        return -1;
    }
    *comm = Py_NewRef(PyTuple_GET_ITEM(found, 0));
    *cmdline = Py_NewRef(PyTuple_GET_ITEM(found, 1));
    Py_DECREF(found);
    return 0;
}

/* One event (op, args) to the sink: encoded into its EventBuffer, else a tuple to `pending.append` or `put`; then
 * `backlog(count)` once `batch` are pending. Steals nothing. */
static int emit(Recorder *r, PyObject *caller, PyObject *op, PyObject *args, PyObject *result, int err,
                long long d, double end, PyObject *comm, PyObject *cmdline) {
    PyObject *f[13], *raw, *ok;
    Py_ssize_t n = 0;
    int rc = -1;
    f[0] = PyIter_Next(r->seq);
    if (f[0] == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "the event numbers ran out");
        return -1;
    }
    f[1] = PyFloat_FromDouble(end - (double)d / 1e9);
    f[2] = op;
    f[3] = args;
    f[4] = result;
    f[5] = PyLong_FromLong(err);
    f[6] = PyLong_FromLongLong(d);
    f[7] = PyTuple_GET_ITEM(caller, 2);
    f[8] = PyTuple_GET_ITEM(caller, 0);
    f[9] = PyTuple_GET_ITEM(caller, 1);
    f[10] = comm;
    f[11] = cmdline;
    f[12] = Py_None;
    if (f[1] == NULL || f[5] == NULL || f[6] == NULL)
        goto done;
    if (Py_IS_TYPE(r->pending, &EventBufferType)) {
        if (eb_event((EventBuffer *)r->pending, f, 13) < 0)
            goto done;
        n = ((EventBuffer *)r->pending)->count;
    } else {
        raw = PyTuple_New(13);
        if (raw == NULL)
            goto done;
        for (int k = 0; k < 13; k++)
            PyTuple_SET_ITEM(raw, k, Py_NewRef(f[k]));
        ok = PyObject_CallOneArg(r->pending == Py_None ? r->put : r->append, raw);
        Py_DECREF(raw);
        if (ok == NULL)
            goto done;
        Py_DECREF(ok);
        if (r->pending != Py_None && (n = PyObject_Size(r->pending)) < 0)
            goto done;
    }
    if (r->pending != Py_None && n >= r->batch) {
        PyObject *count = PyLong_FromSsize_t(n);
        if (count == NULL)
            goto done;
        ok = PyObject_CallOneArg(r->backlog, count);
        Py_DECREF(count);
        if (ok == NULL)
            goto done;
        Py_DECREF(ok);
    }
    rc = 0;
done:
    Py_DECREF(f[0]);
    Py_XDECREF(f[1]);
    Py_XDECREF(f[5]);
    Py_XDECREF(f[6]);
    return rc;
}

/* The call's events: one, or for a MULTI operation one per (op, args) of `described` that the filter accepts;
 * the caller's names as names_of gave them. */
static int record_named(Traced *t, PyObject *caller, PyObject *described, PyObject *result, int err, long long t0,
                        long long t1, double end, PyObject *comm, PyObject *cmdline) {
    Recorder *r = t->rec;
    int rc = -1;
    if (t->accepts_op == NULL) {
        rc = emit(r, caller, t->op, described, result, err, t1 - t0, end, comm, cmdline);
    } else {
        PyObject *it = PyObject_GetIter(described), *pair;
        if (it == NULL)
            goto done;
        while ((pair = PyIter_Next(it)) != NULL) {
            PyObject *ok;
            int accepted;
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError, "a MULTI description is a list of (op, args)");
                Py_DECREF(pair);
                break;
            }
            ok = PyObject_CallOneArg(t->accepts_op, PyTuple_GET_ITEM(pair, 0));
            accepted = ok == NULL ? -1 : PyObject_IsTrue(ok);
            Py_XDECREF(ok);
            if (accepted < 0 || (accepted && emit(r, caller, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1),
                                                  result, err, t1 - t0, end, comm, cmdline) < 0)) {
                Py_DECREF(pair);
                break;
            }
            Py_DECREF(pair);
        }
        Py_DECREF(it);
        rc = PyErr_Occurred() ? -1 : 0;
    }
done:
    return rc;
}

static int record(Traced *t, PyObject *caller, PyObject *described, PyObject *result, int err, long long t0,
                  long long t1, double end) {
    PyObject *comm, *cmdline;
    int rc;
    if (names_of(t->rec, PyTuple_GET_ITEM(caller, 2), t1, &comm, &cmdline) < 0)
        return -1;
    rc = record_named(t, caller, described, result, err, t0, t1, end, comm, cmdline);
    Py_DECREF(comm);
    Py_DECREF(cmdline);
    return rc;
}

/* The errno an exception stands for: an OSError's positive errno, else EIO (as layer.py). */
static int errno_of(PyObject *exc) {
    int e = EIO;
    if (exc != NULL && PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_OSError)) {
        PyObject *v = PyObject_GetAttrString(exc, "errno");
        if (v == NULL) {
            PyErr_Clear();
        } else {
            if (PyLong_Check(v)) {
                long x = PyLong_AsLong(v);
                if (x > 0 && x <= 0x7fffffff)
                    e = (int)x;
                else
                    PyErr_Clear();
            }
            Py_DECREF(v);
        }
    }
    return e;
}

/* (st_mode, st_size, st_ino, st_nlink, st_uid, st_gid) of a stat, as layer.py's _stat_tuple. An abi.stat_t is the
 * system's struct stat (tests/lowlevel/test_layout.py; _trampolines.c fills it as one): read as that, not
 * through six ctypes field reads. */
static PyObject *stat_tuple(PyObject *stat_type, PyObject *st) {
    PyObject *t;
    if (stat_type != NULL && (PyObject *)Py_TYPE(st) == stat_type) {
        Py_buffer view;
        if (PyObject_GetBuffer(st, &view, PyBUF_SIMPLE) == 0) {
            if (view.len == (Py_ssize_t)sizeof(struct stat)) {
                struct stat c;
                memcpy(&c, view.buf, sizeof c);
                PyBuffer_Release(&view);
                return Py_BuildValue("(KLKKkk)", (unsigned long long)c.st_mode, (long long)c.st_size,
                                     (unsigned long long)c.st_ino, (unsigned long long)c.st_nlink,
                                     (unsigned long)c.st_uid, (unsigned long)c.st_gid);
            }
            PyBuffer_Release(&view);
        } else {
            PyErr_Clear();
        }
    }
    t = PyTuple_New(6);
    if (t == NULL)
        return NULL;
    for (int k = 0; k < 6; k++) {
        PyObject *v = PyObject_GetAttr(st, STAT_NAMES[k]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, k, v);
    }
    return t;
}

static PyObject *decoded(PyObject *name) { /* os.fsdecode */
    if (PyUnicode_Check(name))
        return Py_NewRef(name);
    if (PyBytes_Check(name))
        return PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
    return PyErr_Format(PyExc_TypeError, "expected str or bytes, not %.100s", Py_TYPE(name)->tp_name);
}

static PyObject *int_attr(PyObject *o, PyObject *name) { /* int(o.name) */
    PyObject *v = PyObject_GetAttr(o, name), *n;
    if (v == NULL)
        return NULL;
    n = PyNumber_Long(v);
    Py_DECREF(v);
    return n;
}

/* One step of a plan; `a` (na of them) are the handler's arguments after req, `r` its result. */
static PyObject *step_value(PyObject *stat_type, const struct step *s, PyObject *const *a, Py_ssize_t na, PyObject *p,
                            PyObject *p2, PyObject *umask, PyObject *r) {
    if (s->i >= na && s->i > 0)
        return PyErr_Format(PyExc_TypeError, "traced handler: argument %d expected", s->i);
    if (na == 0 && (s->kind == S_ARG || s->kind == S_ATTR || s->kind == S_LEN || s->kind == S_MASKED ||
                    s->kind == S_FH || s->kind == S_DECODE || s->kind == S_OPENED || s->kind == S_ARG_FH))
        return PyErr_Format(PyExc_TypeError, "traced handler: argument %d expected", s->i);
    switch (s->kind) {
    case S_PATH: return Py_NewRef(p);
    case S_PATH2: return Py_NewRef(p2);
    case S_ARG: return Py_NewRef(a[s->i]);
    case S_ATTR: return PyObject_GetAttr(a[s->i], s->obj);
    case S_LEN: {
        Py_ssize_t n = PyObject_Size(a[s->i]);
        return n < 0 ? NULL : PyLong_FromSsize_t(n);
    }
    case S_MASKED: {
        long mode = PyLong_AsLong(a[s->i]), mask = PyLong_AsLong(umask);
        if (PyErr_Occurred())
            return NULL;
        return PyLong_FromLong(mode & ~(mask & 0777));
    }
    case S_FH: return a[s->i] == Py_None ? Py_NewRef(Py_None) : int_attr(a[s->i], S_FH_NAME);
    case S_DECODE: return decoded(a[s->i]);
    case S_CONST: return Py_NewRef(s->obj);
    case S_SAME: return Py_NewRef(r);
    case S_RLEN: {
        Py_ssize_t n = PyObject_Size(r);
        return n < 0 ? NULL : PyLong_FromSsize_t(n);
    }
    case S_ENTRY_STAT: { /* a negative entry (ino 0) has no attributes */
        PyObject *ino = PyObject_GetAttr(r, S_INO_NAME), *st, *out;
        int truth;
        if (ino == NULL)
            return NULL;
        truth = PyObject_IsTrue(ino);
        Py_DECREF(ino);
        if (truth <= 0)
            return truth < 0 ? NULL : Py_NewRef(Py_None);
        st = PyObject_GetAttr(r, S_ATTR_NAME);
        if (st == NULL)
            return NULL;
        out = stat_tuple(stat_type, st);
        Py_DECREF(st);
        return out;
    }
    case S_FIRST_STAT: {
        PyObject *st = PySequence_GetItem(r, 0), *out;
        if (st == NULL)
            return NULL;
        out = stat_tuple(stat_type, st);
        Py_DECREF(st);
        return out;
    }
    case S_OPENED: { /* fh, or (fh, backing id) */
        PyObject *fh = int_attr(a[s->i], S_FH_NAME), *bid, *n, *out;
        int truth;
        if (fh == NULL)
            return NULL;
        bid = PyObject_GetAttr(a[s->i], S_BACKING_NAME);
        if (bid == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                Py_DECREF(fh);
                return NULL;
            }
            PyErr_Clear();
            return fh;
        }
        truth = PyObject_IsTrue(bid);
        if (truth <= 0) {
            Py_DECREF(bid);
            if (truth < 0) {
                Py_DECREF(fh);
                return NULL;
            }
            return fh;
        }
        n = PyNumber_Long(bid);
        Py_DECREF(bid);
        if (n == NULL) {
            Py_DECREF(fh);
            return NULL;
        }
        out = PyTuple_Pack(2, fh, n);
        Py_DECREF(fh);
        Py_DECREF(n);
        return out;
    }
    case S_ARG_FH: return int_attr(a[s->i], S_FH_NAME);
    case S_RATTR: return PyObject_GetAttr(r, s->obj);
    case S_RDECODE: return decoded(r);
    }
    return PyErr_Format(PyExc_SystemError, "unknown plan step %d", (int)s->kind);
}

/* the event's arguments from the plan: every step but the last (the result's) */
static PyObject *described_by_plan(Traced *t, PyObject *const *a, Py_ssize_t na, PyObject *p, PyObject *p2,
                                   PyObject *umask) {
    PyObject *out = PyTuple_New(t->nsteps - 1);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < t->nsteps - 1; k++) {
        PyObject *v = step_value(t->rec->stat_type, &t->steps[k], a, na, p, p2, umask, Py_None);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, k, v);
    }
    return out;
}

/* AFTER_REPLY of lowlevel/_trampolines.c (declared the same there); NULL where that module is not built. */
struct fpt_after_reply {
    int (*replied_after_return)(void);  /* the running callback's reply is sent, and the hook called, after it */
    void (*set_hook)(void (*hook)(void));
};
static const struct fpt_after_reply *after_reply;

/* A call whose event waits for its reply to be sent: what `record` needs, and the handler's arguments and result
 * for the result's description (result NULL: the call failed with `err`). The caller's names are read before the
 * reply, while the caller waits for it: a process may be gone once answered (its last close). */
struct kept_call {
    Traced *t;
    PyObject *caller, *described, *args, *result, *comm, *cmdline;
    int err;
    long long t0, t1;
    double end;
};
/* The queue, oldest at `head`; changed only under the GIL. `waiting` is read by the hook before it takes the GIL. */
static struct kept_call *kept;
static Py_ssize_t kept_head, kept_len, kept_cap;
static _Atomic Py_ssize_t waiting;
static int recording_kept; /* a thread is making the kept calls' events (and may let go of the GIL meanwhile) */

/* The handler's arguments as a tuple (a new reference), for a Python description or a kept call */
static PyObject *tuple_of(PyObject *const *a, Py_ssize_t n) {
    PyObject *out = PyTuple_New(n);
    if (out != NULL)
        for (Py_ssize_t i = 0; i < n; i++)
            PyTuple_SET_ITEM(out, i, Py_NewRef(a[i]));
    return out;
}

/* `atuple`: the arguments `a` as a tuple where the caller has made one already, else NULL. */
static int keep(Traced *t, PyObject *caller, PyObject *described, PyObject *const *a, Py_ssize_t na,
                PyObject *atuple, PyObject *result, int err, long long t0, long long t1, double end) {
    struct kept_call *k;
    PyObject *args, *comm, *cmdline;
    if (names_of(t->rec, PyTuple_GET_ITEM(caller, 2), t1, &comm, &cmdline) < 0)
        return -1;
    args = atuple != NULL ? Py_NewRef(atuple) : tuple_of(a, na);
    if (args == NULL)
        goto fail;
    if (kept_len == kept_cap) {
        if (kept_head > 0) {
            memmove(kept, kept + kept_head, (size_t)(kept_len - kept_head) * sizeof *kept);
            kept_len -= kept_head;
            kept_head = 0;
        } else {
            Py_ssize_t cap = kept_cap ? kept_cap * 2 : 16;
            struct kept_call *grown = realloc(kept, (size_t)cap * sizeof *kept);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            kept = grown;
            kept_cap = cap;
        }
    }
    k = &kept[kept_len++];
    k->t = (Traced *)Py_NewRef((PyObject *)t);
    k->caller = Py_NewRef(caller);
    k->described = Py_NewRef(described);
    k->args = args;
    k->result = Py_XNewRef(result);
    k->comm = comm;
    k->cmdline = cmdline;
    k->err = err;
    k->t0 = t0;
    k->t1 = t1;
    k->end = end;
    atomic_fetch_add_explicit(&waiting, 1, memory_order_relaxed);
    return 0;
fail:
    Py_XDECREF(args);
    Py_DECREF(comm);
    Py_DECREF(cmdline);
    return -1;
}

/* The event of one kept call: its result described as traced_call would have, then recorded. */
static int record_kept(struct kept_call *k) {
    Traced *t = k->t;
    PyObject *res;
    int rc;
    if (k->result == NULL)
        return record_named(t, k->caller, k->described, Py_None, k->err, k->t0, k->t1, k->end, k->comm, k->cmdline);
    if (t->nsteps >= 0) {
        res = step_value(t->rec->stat_type, &t->steps[t->nsteps - 1], &PyTuple_GET_ITEM(k->args, 0),
                         PyTuple_GET_SIZE(k->args), Py_None, Py_None, PyTuple_GET_ITEM(k->caller, 3), k->result);
    } else {
        PyObject *res_args[2] = {k->result, k->args};
        res = PyObject_Vectorcall(t->result_of, res_args, 2, NULL);
    }
    if (res == NULL)
        return -1;
    rc = record_named(t, k->caller, k->described, res, 0, k->t0, k->t1, k->end, k->comm, k->cmdline);
    Py_DECREF(res);
    return rc;
}

/* Every kept call's event, oldest first (GIL held). An event that cannot be made is reported as unraisable: its
 * request was answered already. A thread that finds another one at it (that one let go of the GIL in a name lookup
 * or the sink) leaves the queue to it. */
static void record_all_kept(void) {
    if (recording_kept)
        return;
    recording_kept = 1;
    while (kept_head < kept_len) {
        struct kept_call k = kept[kept_head++];
        if (kept_head == kept_len)
            kept_head = kept_len = 0;
        atomic_fetch_sub_explicit(&waiting, 1, memory_order_relaxed);
        if (record_kept(&k) < 0)
            PyErr_WriteUnraisable((PyObject *)k.t);
        Py_DECREF(k.t);
        Py_DECREF(k.caller);
        Py_DECREF(k.described);
        Py_DECREF(k.args);
        Py_XDECREF(k.result);
        Py_DECREF(k.comm);
        Py_DECREF(k.cmdline);
    }
    recording_kept = 0;
}

/* Kept calls beyond which a worker whose hook finds another thread making the events waits for it: that thread
 * may be waiting for room in the sink (the writer behind), and the queue must not grow past the sink's bound
 * meanwhile, as it would if the other workers served on. */
#define KEPT_BOUND 1024

/* The trampolines' hook, after each reply (no GIL). */
static void after_reply_hook(void) {
    PyGILState_STATE g;
    if (atomic_load_explicit(&waiting, memory_order_relaxed) == 0)
        return;
    g = PyGILState_Ensure();
    record_all_kept();
    while (recording_kept && kept_len - kept_head > KEPT_BOUND) {
        Py_BEGIN_ALLOW_THREADS
        struct timespec step = {0, 1000000};
        nanosleep(&step, NULL);
        Py_END_ALLOW_THREADS
        record_all_kept();
    }
    PyGILState_Release(g);
}

static PyObject *traced_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Traced *t = (Traced *)self;
    Recorder *r = t->rec;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), na;
    PyObject *const *a;
    PyObject *p = NULL, *p2 = NULL, *caller = NULL, *described = NULL, *atuple = NULL, *result = NULL;
    PyObject *call[4], *ret = NULL;
    long long t0, t1;
    double end;
    int truth;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "traced handler: no keyword arguments");
        return NULL;
    }
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "traced handler: req expected");
        return NULL;
    }
    a = args + 1;
    na = nargs - 1;
    p = path_of(t, a, na, t->node_i, t->name_i);
    if (p == NULL)
        goto done;
    p2 = path_of(t, a, na, t->node2_i, t->name2_i);
    if (p2 == NULL)
        goto done;
    truth = PyObject_IsTrue(args[0]);
    if (truth < 0)
        goto done;
    if (truth) {
        caller = PyObject_CallOneArg(r->context, args[0]);
        if (caller == NULL)
            goto done;
    } else {
        caller = Py_BuildValue("(iiii)", 0, 0, 0, 0);
        if (caller == NULL)
            goto done;
    }
    if (!PyTuple_Check(caller) || PyTuple_GET_SIZE(caller) != 4) {
        PyErr_SetString(PyExc_TypeError, "context() must return (uid, gid, pid, umask)");
        goto done;
    }
    if (t->nsteps >= 0) {
        described = described_by_plan(t, a, na, p, p2, PyTuple_GET_ITEM(caller, 3));
    } else {
        atuple = tuple_of(a, na);
        if (atuple == NULL)
            goto done;
        call[0] = atuple;
        call[1] = p;
        call[2] = p2;
        call[3] = PyTuple_GET_ITEM(caller, 3);
        described = PyObject_Vectorcall(t->args_of, call, 4, NULL);
    }
    if (described == NULL)
        goto done;
    t0 = now_ns(CLOCK_MONOTONIC);
    result = PyObject_Vectorcall(t->fn, args, nargs, NULL);
    t1 = now_ns(CLOCK_MONOTONIC);
    end = (double)now_ns(CLOCK_REALTIME) / 1e9;
    if (after_reply != NULL && after_reply->replied_after_return()) {
        PyObject *type = NULL, *value = NULL, *tb = NULL;
        int err = 0;
        if (result == NULL) { /* set aside while the call is kept (which may run Python code) */
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            err = errno_of(value);
            if (tb != NULL && value != NULL)
                PyException_SetTraceback(value, tb);
        }
        if (keep(t, caller, described, a, na, atuple, result, err, t0, t1, end) < 0) {
            Py_XDECREF(type);  /* the handler's exception, if any, gives way to this one */
            Py_XDECREF(value);
            Py_XDECREF(tb);
            Py_CLEAR(result);
            goto done;
        }
        if (result == NULL)
            PyErr_Restore(type, value, tb);
        ret = Py_XNewRef(result);
        goto done;
    }
    if (kept_head < kept_len) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        record_all_kept();
        PyErr_Restore(type, value, tb);
    }
    if (result == NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (record(t, caller, described, Py_None, errno_of(value), t0, t1, end) < 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            goto done;
        }
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
        PyErr_Restore(type, value, tb);
        goto done;
    } else {
        PyObject *res_args[2] = {result, atuple}, *res;
        if (t->nsteps >= 0)
            res = step_value(r->stat_type, &t->steps[t->nsteps - 1], a, na, p, p2, PyTuple_GET_ITEM(caller, 3),
                             result);
        else
            res = PyObject_Vectorcall(t->result_of, res_args, 2, NULL);
        if (res == NULL)
            goto done;
        if (record(t, caller, described, res, 0, t0, t1, end) < 0) {
            Py_DECREF(res);
            goto done;
        }
        Py_DECREF(res);
        ret = Py_NewRef(result);
    }
done:
    Py_XDECREF(p);
    Py_XDECREF(p2);
    Py_XDECREF(caller);
    Py_XDECREF(described);
    Py_XDECREF(atuple);
    Py_XDECREF(result);
    return ret;
}

static int traced_traverse(Traced *t, visitproc visit, void *arg) {
    for (Py_ssize_t k = 0; k < t->nsteps; k++)
        Py_VISIT(t->steps[k].obj);
    Py_VISIT(t->rec);
    Py_VISIT(t->op);
    Py_VISIT(t->fn);
    Py_VISIT(t->nodes_path);
    Py_VISIT(t->args_of);
    Py_VISIT(t->result_of);
    Py_VISIT(t->name);
    Py_VISIT(t->accepts_op);
    Py_VISIT(t->table);
    Py_VISIT(t->root_id);
    return 0;
}

static void free_steps(Traced *t) {
    for (Py_ssize_t k = 0; k < t->nsteps; k++)
        Py_CLEAR(t->steps[k].obj);
    PyMem_Free(t->steps);
    t->steps = NULL;
    t->nsteps = -1;
}

static int traced_clear(Traced *t) {
    free_steps(t);
    Py_CLEAR(t->rec);
    Py_CLEAR(t->op);
    Py_CLEAR(t->fn);
    Py_CLEAR(t->nodes_path);
    Py_CLEAR(t->args_of);
    Py_CLEAR(t->result_of);
    Py_CLEAR(t->name);
    Py_CLEAR(t->accepts_op);
    Py_CLEAR(t->table);
    Py_CLEAR(t->root_id);
    return 0;
}

static void traced_dealloc(Traced *t) {
    PyObject_GC_UnTrack(t);
    traced_clear(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *traced_get_name(Traced *t, void *closure) { return Py_NewRef(t->name); }

static PyObject *traced_get_wrapped(Traced *t, void *closure) { return Py_NewRef(t->fn); }

static PyGetSetDef traced_getset[] = {
    {"__name__", (getter)traced_get_name, NULL, "the operation", NULL},
    {"__wrapped__", (getter)traced_get_wrapped, NULL, "the handler traced", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TracedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fuse_passthrough.tracing._recorder.Traced",
    .tp_basicsize = sizeof(Traced),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "a handler traced by a Recorder (Recorder.traced)",
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Traced, vectorcall),
    .tp_traverse = (traverseproc)traced_traverse,
    .tp_clear = (inquiry)traced_clear,
    .tp_dealloc = (destructor)traced_dealloc,
    .tp_getset = traced_getset,
};

/* plan: (argument steps..., result step), each a tuple (name, [index], [object]) as STEPS says */
static int parse_plan(Traced *t, PyObject *plan) {
    Py_ssize_t n;
    if (plan == Py_None)
        return 0;
    if (!PyTuple_Check(plan) || (n = PyTuple_GET_SIZE(plan)) < 1) {
        PyErr_SetString(PyExc_TypeError, "a plan is a non-empty tuple of steps");
        return -1;
    }
    t->steps = PyMem_Calloc((size_t)n, sizeof(struct step));
    if (t->steps == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->nsteps = n;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *st = PyTuple_GET_ITEM(plan, k);
        const char *name;
        size_t j;
        Py_ssize_t at = 1;
        if (!PyTuple_Check(st) || PyTuple_GET_SIZE(st) < 1 || !(name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(st, 0)))) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "a plan step is (name, [index], [object])");
            return -1;
        }
        for (j = 0; j < sizeof(STEPS) / sizeof(STEPS[0]) && strcmp(STEPS[j].name, name); j++)
            ;
        if (j == sizeof(STEPS) / sizeof(STEPS[0]) || PyTuple_GET_SIZE(st) != 1 + STEPS[j].has_i + STEPS[j].has_obj
            || (k < n - 1 ? STEPS[j].kind > S_CONST : STEPS[j].kind < S_CONST)) { /* arguments', then a result's */
            PyErr_Format(PyExc_ValueError, "plan step %zd: %R", k, st);
            return -1;
        }
        t->steps[k].kind = STEPS[j].kind;
        if (STEPS[j].has_i) {
            long i = PyLong_AsLong(PyTuple_GET_ITEM(st, at++));
            if (i < 0 || i > 64) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "plan step %zd: bad index", k);
                return -1;
            }
            t->steps[k].i = (int)i;
        }
        if (STEPS[j].has_obj) {
            PyObject *o = PyTuple_GET_ITEM(st, at);
            if (STEPS[j].kind != S_CONST) {
                if (!PyUnicode_Check(o)) {
                    PyErr_Format(PyExc_TypeError, "plan step %zd: an attribute name expected", k);
                    return -1;
                }
                o = PyUnicode_FromObject(o);
                if (o == NULL)
                    return -1;
                PyUnicode_InternInPlace(&o);
                t->steps[k].obj = o;
            } else {
                t->steps[k].obj = Py_NewRef(o);
            }
        }
    }
    return 0;
}

static PyObject *recorder_traced(Recorder *r, PyObject *args) {
    PyObject *op, *fn, *nodes_path, *args_of, *result_of, *plan = Py_None, *accepts_op = Py_None;
    PyObject *table = Py_None, *root_id = Py_None;
    int node_i, name_i, node2_i, name2_i;
    Traced *t;
    if (!PyArg_ParseTuple(args, "UOOiiiiOO|OO(OO):traced", &op, &fn, &nodes_path, &node_i, &name_i, &node2_i,
                          &name2_i, &args_of, &result_of, &plan, &accepts_op, &table, &root_id))
        return NULL;
    if (accepts_op != Py_None && plan != Py_None)
        return PyErr_Format(PyExc_ValueError, "a MULTI operation has no plan");
    if ((node_i >= 0 || node2_i >= 0) && !PyCallable_Check(nodes_path))
        return PyErr_Format(PyExc_TypeError, "nodes_path must be callable");
    t = PyObject_GC_New(Traced, &TracedType);
    if (t == NULL)
        return NULL;
    t->nsteps = -1;
    t->steps = NULL;
    t->rec = NULL;
    t->op = t->name = t->fn = t->nodes_path = t->args_of = t->result_of = NULL;
    t->accepts_op = accepts_op == Py_None ? NULL : Py_NewRef(accepts_op);
    t->table = table == Py_None ? NULL : Py_NewRef(table);
    t->root_id = table == Py_None ? NULL : Py_NewRef(root_id);
    if (parse_plan(t, plan) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    t->vectorcall = traced_call;
    t->rec = (Recorder *)Py_NewRef((PyObject *)r);
    t->op = Py_NewRef(op);
    t->name = Py_NewRef(op);
    t->fn = Py_NewRef(fn);
    t->nodes_path = Py_NewRef(nodes_path);
    t->args_of = Py_NewRef(args_of);
    t->result_of = Py_NewRef(result_of);
    t->node_i = node_i;
    t->name_i = name_i;
    t->node2_i = node2_i;
    t->name2_i = name2_i;
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

static int recorder_init(Recorder *r, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"seq", "cache", "lookup", "young_ns", "ttl_ns", "context", "put", "pending", "batch",
                         "backlog", "stat_type", NULL};
    PyObject *seq, *cache, *lookup, *context, *put, *pending, *backlog, *append = NULL, *stat_type = Py_None;
    long long young, ttl;
    Py_ssize_t batch;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!OLLOOOnO|O:Recorder", kw, &seq, &PyDict_Type, &cache, &lookup,
                                     &young, &ttl, &context, &put, &pending, &batch, &backlog, &stat_type))
        return -1;
    if (stat_type != Py_None && !PyType_Check(stat_type)) {
        PyErr_SetString(PyExc_TypeError, "stat_type must be a type");
        return -1;
    }
    if (!PyIter_Check(seq)) {
        PyErr_SetString(PyExc_TypeError, "seq must be an iterator");
        return -1;
    }
    if (pending != Py_None && !Py_IS_TYPE(pending, &EventBufferType)) {
        append = PyObject_GetAttrString(pending, "append");
        if (append == NULL)
            return -1;
    }
    Py_XSETREF(r->seq, Py_NewRef(seq));
    Py_XSETREF(r->cache, Py_NewRef(cache));
    Py_XSETREF(r->lookup, Py_NewRef(lookup));
    Py_XSETREF(r->context, Py_NewRef(context));
    Py_XSETREF(r->put, Py_NewRef(put));
    Py_XSETREF(r->pending, Py_NewRef(pending));
    Py_XSETREF(r->append, append);
    Py_XSETREF(r->backlog, Py_NewRef(backlog));
    Py_XSETREF(r->stat_type, stat_type == Py_None ? NULL : Py_NewRef(stat_type));
    r->young = young;
    r->ttl = ttl;
    r->batch = batch;
    if (after_reply == NULL) {
        after_reply = PyCapsule_Import("fuse_passthrough.lowlevel._trampolines.AFTER_REPLY", 0);
        if (after_reply == NULL)
            PyErr_Clear(); /* not built: events are made before the reply, as the binding replies from Python */
        else
            after_reply->set_hook(after_reply_hook);
    }
    return 0;
}

PyDoc_STRVAR(record_waiting_doc, "record_waiting(): make the events of calls still waiting for their reply to be "
             "sent (the generic path, before an event of its own, keeps the events in the order their calls ended).");
static PyObject *record_waiting(PyObject *module, PyObject *unused) {
    record_all_kept();
    Py_RETURN_NONE;
}

static PyMethodDef MODULE_METHODS[] = {
    {"record_waiting", record_waiting, METH_NOARGS, record_waiting_doc},
    {NULL, NULL, 0, NULL}};

static int recorder_traverse(Recorder *r, visitproc visit, void *arg) {
    Py_VISIT(r->seq);
    Py_VISIT(r->cache);
    Py_VISIT(r->lookup);
    Py_VISIT(r->context);
    Py_VISIT(r->put);
    Py_VISIT(r->pending);
    Py_VISIT(r->append);
    Py_VISIT(r->backlog);
    Py_VISIT(r->stat_type);
    return 0;
}

static int recorder_clear(Recorder *r) {
    Py_CLEAR(r->seq);
    Py_CLEAR(r->cache);
    Py_CLEAR(r->lookup);
    Py_CLEAR(r->context);
    Py_CLEAR(r->put);
    Py_CLEAR(r->pending);
    Py_CLEAR(r->append);
    Py_CLEAR(r->backlog);
    Py_CLEAR(r->stat_type);
    return 0;
}

static void recorder_dealloc(Recorder *r) {
    PyObject_GC_UnTrack(r);
    recorder_clear(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyMethodDef recorder_methods[] = {
    {"traced", (PyCFunction)recorder_traced, METH_VARARGS,
     "traced(op, fn, nodes_path, node_i, name_i, node2_i, name2_i, args_of, result_of, plan=None, accepts_op=None, "
     "path_cache=(None, None)) -> the traced handler"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fuse_passthrough.tracing._recorder.Recorder",
    .tp_basicsize = sizeof(Recorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "what the traced handlers share (see the module's comment)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)recorder_init,
    .tp_traverse = (traverseproc)recorder_traverse,
    .tp_clear = (inquiry)recorder_clear,
    .tp_dealloc = (destructor)recorder_dealloc,
    .tp_methods = recorder_methods,
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_recorder",
                                    "The tracing layer's per-request work (see _recorder.c).", -1, MODULE_METHODS,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__recorder(void) {
    PyObject *m;
    static const char *stat_fields[6] = {"st_mode", "st_size", "st_ino", "st_nlink", "st_uid", "st_gid"};
    if (PyType_Ready(&TracedType) < 0 || PyType_Ready(&RecorderType) < 0 || PyType_Ready(&EventBufferType) < 0)
        return NULL;
    if (!(S_BY_ID_NAME = PyUnicode_InternFromString("_by_id")) ||
        !(S_EPOCH_NAME = PyUnicode_InternFromString("_path_epoch")) ||
        !(S_CACHED_NAME = PyUnicode_InternFromString("cached_path")) ||
        !(S_NAMES_NAME = PyUnicode_InternFromString("names")) ||
        !(S_FH_NAME = PyUnicode_InternFromString("fh")) || !(S_INO_NAME = PyUnicode_InternFromString("ino")) ||
        !(S_ATTR_NAME = PyUnicode_InternFromString("attr")) ||
        !(S_BACKING_NAME = PyUnicode_InternFromString("backing_id")))
        return NULL;
    for (int k = 0; k < 6; k++)
        if (!(STAT_NAMES[k] = PyUnicode_InternFromString(stat_fields[k])))
            return NULL;
    m = PyModule_Create(&MODULE);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Recorder", (PyObject *)&RecorderType) < 0 ||
        PyModule_AddObjectRef(m, "Traced", (PyObject *)&TracedType) < 0 ||
        PyModule_AddObjectRef(m, "EventBuffer", (PyObject *)&EventBufferType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
