/* The low-level binding's C entry points (binding.py, "Replies sent without the GIL").
 *
 * libfuse calls a trampoline here for each request; it calls the session's ctypes callback for the operation
 * (which takes the GIL, runs the Python handler and the layers, and returns having released the GIL), then sends
 * the reply the callback left in this thread's `pending` slot. Why: a ctypes reply sent from Python releases the
 * GIL for the write to /dev/fuse and must take it back to return. The reply wakes the caller, whose next request
 * another worker is by then running Python for, so nearly every request ended with a worker waiting for the GIL
 * (a futex wait and wake, two context switches) just to leave Python. Sending the reply here, with the GIL already
 * released, ends a request without touching the GIL again.
 *
 * Python side, per request: exactly one of the reply_*() functions below, called with the GIL held from inside
 * the callback (each replaces what an earlier call in the same request left). It records the libfuse reply and
 * its arguments, and keeps a reference to the Python objects whose memory the reply points into (an entry, a
 * stat, a buffer) until the next reply recorded on this thread, so the memory outlives the callback. The
 * trampoline then calls libfuse's fuse_reply_* without the GIL; with nothing recorded it replies EIO (forget and
 * forget_multi: no reply).
 *
 * No libfuse header is included and no libfuse struct is laid out here: arguments are passed through as the
 * pointers and integers the headers declare (tests/lowlevel/test_layout.py compiles this file against each
 * version's fuse_lowlevel.h and checks every trampoline's type against its fuse_lowlevel_ops member), and the
 * fuse_reply_* functions are found in the library the binding loaded (set_functions), so one build serves
 * libfuse 3.14 and 3.17 alike. The callbacks are per session: the session's userdata is its table
 * (callback_table), read back with fuse_req_userdata.
 *
 * Work after the reply (AFTER_REPLY, a capsule for other C modules): a module may ask, from inside a callback, to
 * have its hook called once this request's reply is sent; the trampoline calls it without the GIL (the hook takes
 * it). The tracing layer's recorder (tracing/_recorder.c) records the request's event there, so the caller is woken
 * before the event is made rather than after (docs/benchmarks.md, 2026-12-07 05:50).
 *
 * Also here, for the same reason of cost: the conversions every request makes (caller, fill_stat, fill_entry). In
 * Python through ctypes they cost 1-2.5 us each (a field set per struct member); here a tenth of that. They use
 * the two small structs libfuse declares by value (fuse_ctx, fuse_entry_param) and the system's struct stat; the
 * layout test checks both against each version's headers (_Static_assert below).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>

#include "turn.h"
#include "uring.h"

#ifdef FPT_CHECK_SIGNATURES /* the layout test: the trampolines must have the ops' exact types */
#include <fuse_lowlevel.h>
typedef struct fuse_file_info fi_t;
typedef struct stat stat_t;
typedef struct flock flock_t;
typedef struct fuse_forget_data forget_t;
#else
typedef struct fuse_req *fuse_req_t;
typedef uint64_t fuse_ino_t;
typedef struct fi_s fi_t;
typedef struct stat stat_t;
typedef struct flock flock_t;
typedef struct forget_s forget_t;
#endif

/* fuse_common.h / fuse_lowlevel.h, the same in 3.14 and 3.17 (checked below) */
struct fpt_ctx { uid_t uid; gid_t gid; pid_t pid; mode_t umask; };
struct fpt_entry { fuse_ino_t ino; uint64_t generation; struct stat attr; double attr_timeout, entry_timeout; };

#ifdef FPT_CHECK_SIGNATURES
#define SAME(a, b, f) (offsetof(struct a, f) == offsetof(struct b, f) && sizeof(((struct a *)0)->f) == \
                       sizeof(((struct b *)0)->f))
_Static_assert(sizeof(struct fpt_ctx) == sizeof(struct fuse_ctx) && SAME(fpt_ctx, fuse_ctx, uid) &&
               SAME(fpt_ctx, fuse_ctx, gid) && SAME(fpt_ctx, fuse_ctx, pid) && SAME(fpt_ctx, fuse_ctx, umask),
               "struct fuse_ctx");
_Static_assert(sizeof(struct fpt_entry) == sizeof(struct fuse_entry_param) && SAME(fpt_entry, fuse_entry_param, ino)
               && SAME(fpt_entry, fuse_entry_param, generation) && SAME(fpt_entry, fuse_entry_param, attr) &&
               SAME(fpt_entry, fuse_entry_param, attr_timeout) && SAME(fpt_entry, fuse_entry_param, entry_timeout),
               "struct fuse_entry_param");
#endif

enum kind { K_UNSET, K_ERR, K_NONE, K_ENTRY, K_CREATE, K_ATTR, K_READLINK, K_OPEN, K_WRITE, K_BUF, K_DATA, K_STATFS,
            K_XATTR, K_LOCK, K_LSEEK };

struct pending {
    enum kind kind;
    int num;            /* errno, fuse_reply_data's flags */
    const void *p1, *p2;
    uint64_t n;         /* a size or an offset */
    double timeout;
    PyObject *keep1, *keep2;
};
static __thread struct pending pending;

/* libfuse's functions, from the library the binding loaded (set_functions) */
static struct {
    int (*err)(fuse_req_t, int);
    void (*none)(fuse_req_t);
    int (*entry)(fuse_req_t, const void *);
    int (*create)(fuse_req_t, const void *, const void *);
    int (*attr)(fuse_req_t, const void *, double);
    int (*readlink)(fuse_req_t, const char *);
    int (*open)(fuse_req_t, const void *);
    int (*write)(fuse_req_t, size_t);
    int (*buf)(fuse_req_t, const char *, size_t);
    int (*data)(fuse_req_t, void *, int);
    int (*statfs)(fuse_req_t, const void *);
    int (*xattr)(fuse_req_t, size_t);
    int (*lock)(fuse_req_t, const void *);
    int (*lseek)(fuse_req_t, int64_t);
    void *(*userdata)(fuse_req_t);
    const struct fpt_ctx *(*ctx)(fuse_req_t);
    int (*session_fd)(void *);
    int (*custom_io)(void *, const void *, int); /* libfuse < 3.17 (session_io) */
    int (*custom_io_317)(void *, const void *, size_t, int); /* libfuse >= 3.17: the size of the struct we pass */
    void (*process_buf)(void *, const void *);                /* io_uring (uring.c) */
} lib;

enum op { O_lookup, O_forget, O_getattr, O_setattr, O_readlink, O_mknod, O_mkdir, O_unlink, O_rmdir, O_symlink,
          O_rename, O_link, O_open, O_read, O_write, O_flush, O_release, O_fsync, O_opendir, O_readdir,
          O_releasedir, O_fsyncdir, O_statfs, O_setxattr, O_getxattr, O_listxattr, O_removexattr, O_access,
          O_create, O_getlk, O_setlk, O_forget_multi, O_flock, O_fallocate, O_readdirplus, O_copy_file_range,
          O_lseek, O_tmpfile, NOPS };

/* A session's userdata: its callbacks, what its own I/O (below) saw of the INIT exchange, and its workers' turns. */
#define PARK_SLOTS 64
struct table {
    void *cb[NOPS];
    uint64_t init_unique;   /* the INIT request's, once read */
    int init_read;
    int killpriv_v2_offered;  /* the kernel's INIT flags had FUSE_HANDLE_KILLPRIV_V2 */
    int killpriv_v2_wanted;   /* set it in the INIT reply */
    void *se;                 /* session_io's */
    int uring_offered;        /* the kernel's INIT flags had FUSE_OVER_IO_URING */
    int uring_threads;        /* uring_want: threads per CPU at most (one, and spares), 0: no io_uring */
    size_t uring_payload;
    struct fpt_uring *uring;  /* started once the INIT reply is written */
    long park_ns;             /* set_park: 0, workers do not park */
    _Atomic int slots_used;   /* workers seen (each has a slot in `started`) */
    _Atomic uint64_t started[PARK_SLOTS]; /* when each worker's request began (CLOCK_MONOTONIC ns), 0: none */
    _Atomic uint64_t busy[PARK_SLOTS];    /* each worker's time inside requests so far, ns */
    _Atomic uint64_t parks;   /* park_counts */
    struct fpt_turn turn;     /* the io_uring threads' turns at Python (turn.c) */
};

/* Workers taking turns (set_park): a worker that finishes a request while another worker is running one does not
 * read the next request at once. Both would run Python, which one of them can do at a time: every system call the
 * running one makes hands the interpreter lock to the other, each hand-over a futex wake and often a halted vCPU
 * woken (~40 us here), and parallel clients made two workers slower than one (docs/benchmarks.md, 2026-12-06
 * 14:45). The finished worker sleeps in steps of park_ns instead, and reads again after a step in which the others
 * were inside requests less than half the time (they keep up alone no longer than a second reader helps), or at
 * whose end none is inside a request younger than a step: an older one may be blocked (a lock wait, a slow
 * SOURCE), and the others must then be served as without parking, each request waiting at most a step longer.
 * Only the trampolines park (replies sent from Python do not). */
#define PARK_BUSY_PERCENT 50
static __thread struct table *slot_table; /* the table this worker's slot is in, and the slot */
static __thread int slot = -1;
static __thread int ring_worker; /* an io_uring thread (uring.c): one per CPU's entry, it never parks */
static void ring_worker_start(void) { ring_worker = 1; }
static __thread struct fpt_turn_waiter turn_waiter;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void enter(struct table *t) {
    if (t->park_ns == 0 || ring_worker)
        return;
    if (slot_table != t) { /* this worker's first request of this session */
        int i = atomic_fetch_add_explicit(&t->slots_used, 1, memory_order_relaxed);
        slot_table = t;
        slot = i < PARK_SLOTS ? i : -1; /* no slot: it neither parks nor makes others park */
    }
    if (slot >= 0)
        atomic_store_explicit(&t->started[slot], now_ns(), memory_order_relaxed);
}

/* Whether a worker other than this one is inside a request younger than `ns`; *busy: the others' time inside
 * requests so far (the finished ones, and the running ones until now). */
static int other_running(struct table *t, long ns, uint64_t *busy) {
    uint64_t now = now_ns(), total = 0;
    int running = 0, n = atomic_load_explicit(&t->slots_used, memory_order_relaxed);
    for (int i = 0; i < n && i < PARK_SLOTS; i++) {
        if (i == slot)
            continue;
        uint64_t began = atomic_load_explicit(&t->started[i], memory_order_relaxed);
        total += atomic_load_explicit(&t->busy[i], memory_order_relaxed);
        if (began != 0) {
            total += now - began;
            running |= now - began < (uint64_t)ns;
        }
    }
    *busy = total;
    return running;
}

static void leave(struct table *t) {
    long ns = t->park_ns;
    uint64_t before, busy;
    if (ns == 0 || slot_table != t || slot < 0 || ring_worker)
        return;
    uint64_t began = atomic_exchange_explicit(&t->started[slot], 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->busy[slot], now_ns() - began, memory_order_relaxed);
    if (!other_running(t, ns, &before))
        return;
    atomic_fetch_add_explicit(&t->parks, 1, memory_order_relaxed);
    for (;;) {
        struct timespec step = {ns / 1000000000, ns % 1000000000};
        nanosleep(&step, NULL);
        /* busy may read a little lower than before while a worker moves a finished request into its total */
        if (!other_running(t, ns, &busy) || busy <= before ||
            (busy - before) * 100 < (uint64_t)ns * PARK_BUSY_PERCENT)
            return;
        before = busy;
    }
}

/* AFTER_REPLY: the hook (one per process), and whether this thread's running callback is a trampoline's (its reply
 * is sent, and the hook called, once it returns). The struct is declared the same in tracing/_recorder.c. */
struct fpt_after_reply {
    int (*replied_after_return)(void);
    void (*set_hook)(void (*hook)(void));
};
static void (*after_reply_hook)(void);
static __thread int in_callback;
static int replied_after_return(void) { return in_callback && after_reply_hook != NULL; }
static void set_after_reply_hook(void (*hook)(void)) { after_reply_hook = hook; }
static const struct fpt_after_reply AFTER_REPLY = {replied_after_return, set_after_reply_hook};

static void send_pending(fuse_req_t req, enum kind if_unset) {
    struct pending *p = &pending;
    enum kind k = p->kind == K_UNSET ? if_unset : p->kind;
    p->kind = K_UNSET;
    switch (k) {
    case K_UNSET: lib.err(req, EIO); break; /* the callback recorded no reply */
    case K_ERR: lib.err(req, p->num); break;
    case K_NONE: lib.none(req); break;
    case K_ENTRY: lib.entry(req, p->p1); break;
    case K_CREATE: lib.create(req, p->p1, p->p2); break;
    case K_ATTR: lib.attr(req, p->p1, p->timeout); break;
    case K_READLINK: lib.readlink(req, p->p1); break;
    case K_OPEN: lib.open(req, p->p1); break;
    case K_WRITE: lib.write(req, (size_t)p->n); break;
    case K_BUF: lib.buf(req, p->p1, (size_t)p->n); break;
    case K_DATA: lib.data(req, (void *)p->p1, p->num); break;
    case K_STATFS: lib.statfs(req, p->p1); break;
    case K_XATTR: lib.xattr(req, (size_t)p->n); break;
    case K_LOCK: lib.lock(req, p->p1); break;
    case K_LSEEK: lib.lseek(req, (int64_t)p->n); break;
    }
}

#define T(op, UNSET, PARAMS, ARGS) \
    static void t_##op PARAMS { \
        struct table *t = lib.userdata(req); \
        enter(t); \
        int turn = ring_worker && fpt_turn_take(&t->turn, &turn_waiter); \
        in_callback = 1; \
        ((void (*) PARAMS)t->cb[O_##op]) ARGS; \
        in_callback = 0; \
        if (turn) /* before the reply: the woken caller may take this CPU from the thread at once */ \
            fpt_turn_give(&t->turn); \
        send_pending(req, UNSET); \
        if (after_reply_hook != NULL) { \
            turn = ring_worker && fpt_turn_take(&t->turn, &turn_waiter); \
            after_reply_hook(); \
            if (turn) \
                fpt_turn_give(&t->turn); \
        } \
        leave(t); \
    }
#define R K_UNSET
T(lookup, R, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
T(forget, K_NONE, (fuse_req_t req, fuse_ino_t ino, uint64_t nlookup), (req, ino, nlookup))
T(getattr, R, (fuse_req_t req, fuse_ino_t ino, fi_t *fi), (req, ino, fi))
T(setattr, R, (fuse_req_t req, fuse_ino_t ino, stat_t *attr, int to_set, fi_t *fi), (req, ino, attr, to_set, fi))
T(readlink, R, (fuse_req_t req, fuse_ino_t ino), (req, ino))
T(mknod, R, (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev),
  (req, parent, name, mode, rdev))
T(mkdir, R, (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode), (req, parent, name, mode))
T(unlink, R, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
T(rmdir, R, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
T(symlink, R, (fuse_req_t req, const char *link, fuse_ino_t parent, const char *name), (req, link, parent, name))
T(rename, R, (fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
              unsigned int flags), (req, parent, name, newparent, newname, flags))
T(link, R, (fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname), (req, ino, newparent, newname))
T(open, R, (fuse_req_t req, fuse_ino_t ino, fi_t *fi), (req, ino, fi))
T(read, R, (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fi_t *fi), (req, ino, size, off, fi))
T(write, R, (fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, fi_t *fi),
  (req, ino, buf, size, off, fi))
T(flush, R, (fuse_req_t req, fuse_ino_t ino, fi_t *fi), (req, ino, fi))
T(release, R, (fuse_req_t req, fuse_ino_t ino, fi_t *fi), (req, ino, fi))
T(fsync, R, (fuse_req_t req, fuse_ino_t ino, int datasync, fi_t *fi), (req, ino, datasync, fi))
T(opendir, R, (fuse_req_t req, fuse_ino_t ino, fi_t *fi), (req, ino, fi))
T(readdir, R, (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fi_t *fi), (req, ino, size, off, fi))
T(releasedir, R, (fuse_req_t req, fuse_ino_t ino, fi_t *fi), (req, ino, fi))
T(fsyncdir, R, (fuse_req_t req, fuse_ino_t ino, int datasync, fi_t *fi), (req, ino, datasync, fi))
T(statfs, R, (fuse_req_t req, fuse_ino_t ino), (req, ino))
T(setxattr, R, (fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags),
  (req, ino, name, value, size, flags))
T(getxattr, R, (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size), (req, ino, name, size))
T(listxattr, R, (fuse_req_t req, fuse_ino_t ino, size_t size), (req, ino, size))
T(removexattr, R, (fuse_req_t req, fuse_ino_t ino, const char *name), (req, ino, name))
T(access, R, (fuse_req_t req, fuse_ino_t ino, int mask), (req, ino, mask))
T(create, R, (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, fi_t *fi),
  (req, parent, name, mode, fi))
T(getlk, R, (fuse_req_t req, fuse_ino_t ino, fi_t *fi, flock_t *lock), (req, ino, fi, lock))
T(setlk, R, (fuse_req_t req, fuse_ino_t ino, fi_t *fi, flock_t *lock, int sleep), (req, ino, fi, lock, sleep))
T(forget_multi, K_NONE, (fuse_req_t req, size_t count, forget_t *forgets), (req, count, forgets))
T(flock, R, (fuse_req_t req, fuse_ino_t ino, fi_t *fi, int op), (req, ino, fi, op))
T(fallocate, R, (fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fi_t *fi),
  (req, ino, mode, offset, length, fi))
T(readdirplus, R, (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fi_t *fi), (req, ino, size, off, fi))
T(copy_file_range, R, (fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fi_t *fi_in, fuse_ino_t ino_out,
                       off_t off_out, fi_t *fi_out, size_t len, int flags),
  (req, ino_in, off_in, fi_in, ino_out, off_out, fi_out, len, flags))
T(lseek, R, (fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fi_t *fi), (req, ino, off, whence, fi))
T(tmpfile, R, (fuse_req_t req, fuse_ino_t parent, mode_t mode, fi_t *fi), (req, parent, mode, fi))
#undef R

#define E(op) {#op, (void *)t_##op}
static const struct { const char *name; void *fn; } TRAMPOLINES[NOPS] = {
    E(lookup), E(forget), E(getattr), E(setattr), E(readlink), E(mknod), E(mkdir), E(unlink), E(rmdir), E(symlink),
    E(rename), E(link), E(open), E(read), E(write), E(flush), E(release), E(fsync), E(opendir), E(readdir),
    E(releasedir), E(fsyncdir), E(statfs), E(setxattr), E(getxattr), E(listxattr), E(removexattr), E(access),
    E(create), E(getlk), E(setlk), E(forget_multi), E(flock), E(fallocate), E(readdirplus), E(copy_file_range),
    E(lseek), E(tmpfile)};

#ifdef FPT_CHECK_SIGNATURES
/* Each assignment must compile without a warning (-Werror): the trampoline has the member's type. */
void fpt_check_signatures(struct fuse_lowlevel_ops *o) {
    o->lookup = t_lookup; o->forget = t_forget; o->getattr = t_getattr; o->setattr = t_setattr;
    o->readlink = t_readlink; o->mknod = t_mknod; o->mkdir = t_mkdir; o->unlink = t_unlink; o->rmdir = t_rmdir;
    o->symlink = t_symlink; o->rename = t_rename; o->link = t_link; o->open = t_open; o->read = t_read;
    o->write = t_write; o->flush = t_flush; o->release = t_release; o->fsync = t_fsync; o->opendir = t_opendir;
    o->readdir = t_readdir; o->releasedir = t_releasedir; o->fsyncdir = t_fsyncdir; o->statfs = t_statfs;
    o->setxattr = t_setxattr; o->getxattr = t_getxattr; o->listxattr = t_listxattr;
    o->removexattr = t_removexattr; o->access = t_access; o->create = t_create; o->getlk = t_getlk;
    o->setlk = t_setlk; o->forget_multi = t_forget_multi; o->flock = t_flock; o->fallocate = t_fallocate;
    o->readdirplus = t_readdirplus; o->copy_file_range = t_copy_file_range; o->lseek = t_lseek;
#if FUSE_MAJOR_VERSION * 100 + FUSE_MINOR_VERSION >= 317
    o->tmpfile = t_tmpfile;
#endif
}
#endif

/* ------------------------------------------------------------------------------------------ Python functions */
static int find_op(PyObject *name) {
    const char *s = PyUnicode_AsUTF8(name);
    if (s == NULL)
        return -1;
    for (int i = 0; i < NOPS; i++)
        if (strcmp(TRAMPOLINES[i].name, s) == 0)
            return i;
    PyErr_Format(PyExc_KeyError, "no trampoline for %R", name);
    return -1;
}

static int as_address(PyObject *o, void **out) {
    void *v = PyLong_AsVoidPtr(o);
    if (v == NULL && PyErr_Occurred())
        return 0;
    *out = v;
    return 1;
}

/* ------------------------------------------------------------------------------------------ the session's I/O
 * FUSE_HANDLE_KILLPRIV_V2 makes the kernel leave clearing set-id bits and capabilities on write, truncate and
 * O_TRUNC open to the file system and mark the superblock SB_NOSEC, so that it asks getxattr("security.capability")
 * once per inode instead of before every write (docs/benchmarks.md, 2026-12-04 21:53). libfuse < 3.17 has no
 * capability bit for it and never sets the flag in its INIT reply. There the session reads and writes /dev/fuse
 * through these two functions (fuse_session_custom_io on the fd fuse_session_mount opened): the same read(2) and
 * writev(2), except that they note whether the kernel's INIT request offers the flag, and set it in the INIT reply
 * when the file system asked for it (binding.py: it sees FUSE_CAP_HANDLE_KILLPRIV_V2 as on 3.17). libfuse 3.14
 * ignores the kill flags of later requests; the file system needs none (it writes as the caller). The structs
 * are the kernel's (linux/fuse.h; checked below), the same for every protocol version libfuse 3 speaks. */
#define FPT_FUSE_INIT 26
#define FPT_HANDLE_KILLPRIV_V2 (1u << 28)
struct fpt_in_header { uint32_t len, opcode; uint64_t unique, nodeid; uint32_t uid, gid, pid; uint16_t extlen, pad; };
struct fpt_out_header { uint32_t len; int32_t error; uint64_t unique; };
struct fpt_init { uint32_t major, minor, max_readahead, flags; }; /* the start of fuse_init_in and fuse_init_out */
#define FPT_INIT_OUT_FLAGS2 32 /* offsetof(struct fuse_init_out, flags2) */
struct fpt_custom_io {
    ssize_t (*writev)(int, struct iovec *, int, void *);
    ssize_t (*read)(int, void *, size_t, void *);
    void *splice_receive, *splice_send; /* NULL: libfuse does not offer splice (the file system asks for none) */
    int (*clone_fd)(int);               /* libfuse >= 3.17 (< 3.17 clones the fd itself and copies no further) */
};

/* A request, waited for in poll(2) rather than in read(2). The kernel hands a request to one blocked reader, the
 * one that has waited longest: often a worker on the other, halted, vCPU, while the worker that just replied is
 * about to read on the client's CPU; the request then waits for that vCPU to wake (~40 us here). poll wakes every
 * waiting worker and the first to read takes the request (the others find nothing and wait again): untar 3.00 ->
 * 2.23 s untraced (docs/benchmarks.md, 2026-12-06 20:30). Never EAGAIN to libfuse (its loop would end); EINTR,
 * and ENODEV once unmounted, as read(2) gives them. On a blocking fd, a plain read. */
static ssize_t read_polled(int fd, void *buf, size_t buf_len) {
    for (;;) {
        ssize_t n = read(fd, buf, buf_len);
        if (n >= 0 || errno != EAGAIN)
            return n;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, -1) < 0)
            return -1;
    }
}

/* With io_uring serving the requests, /dev/fuse brings only FORGET (and INTERRUPT): read 20 ms after one comes, so
 * that the kernel has gathered the next ones into a BATCH_FORGET, rather than take the interpreter lock from the
 * ring threads for each (a removal of many files: one FORGET per file). 1 ms left each create+rename+unlink 10-40 %
 * slower than over /dev/fuse; 20 ms, 5-10 % faster (docs/benchmarks.md, 2026-12-07 12:00). */
#define FORGET_GATHER_NS 20000000
static pthread_mutex_t forget_reader = PTHREAD_MUTEX_INITIALIZER;
/* libfuse's loop cancels its workers at exit (SIGTERM...), one of them maybe in poll below: the next one, waiting
 * for the lock, must still get it, and be cancelled in poll in turn. */
static void forget_reader_unlock(void *unused) {
    (void)unused;
    pthread_mutex_unlock(&forget_reader);
}

static ssize_t io_read(int fd, void *buf, size_t buf_len, void *userdata) {
    struct table *t = userdata;
    ssize_t n;
    if (t->uring != NULL && fpt_uring_ready(t->uring)) {
        struct pollfd p = {fd, POLLIN, 0};
        struct timespec gather = {0, FORGET_GATHER_NS};
        pthread_mutex_lock(&forget_reader); /* one worker waits in poll: a FORGET wakes one, not each */
        pthread_cleanup_push(forget_reader_unlock, NULL);
        if (poll(&p, 1, -1) > 0 && !(p.revents & (POLLERR | POLLHUP)))
            nanosleep(&gather, NULL);
        n = read_polled(fd, buf, buf_len);
        pthread_cleanup_pop(1);
    } else
        n = read_polled(fd, buf, buf_len);
    if (!t->init_read && n >= (ssize_t)(sizeof(struct fpt_in_header) + sizeof(struct fpt_init))) {
        const struct fpt_in_header *h = buf;
        if (h->opcode == FPT_FUSE_INIT) { /* the first request of a session */
            const struct fpt_init *in = (const void *)(h + 1);
            t->init_unique = h->unique;
            t->killpriv_v2_offered = (in->flags & FPT_HANDLE_KILLPRIV_V2) != 0;
            /* flags2 follows flags in fuse_init_in */
            t->uring_offered = in->flags & FPT_FUSE_INIT_EXT && n >= (ssize_t)(sizeof *h + sizeof *in + 4) &&
                               ((const uint32_t *)(in + 1))[0] & FPT_OVER_IO_URING_FLAGS2;
            t->init_read = 1;
        }
    }
    return n; /* errno as read(2) left it: libfuse reads it */
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata) {
    struct table *t = userdata;
    ssize_t n;
    if (t->uring != NULL && ((n = fpt_uring_reply(iov, count)) >= 0 || errno != ENOENT))
        return n; /* the reply to a request that came through io_uring */
    if ((t->killpriv_v2_wanted || t->uring_threads) && count >= 2 && iov[0].iov_len == sizeof(struct fpt_out_header)
        && iov[1].iov_len >= sizeof(struct fpt_init)) {
        const struct fpt_out_header *o = iov[0].iov_base;
        if (o->unique == t->init_unique && o->error == 0) {
            struct fpt_init *out = iov[1].iov_base;
            if (t->killpriv_v2_wanted)
                out->flags |= FPT_HANDLE_KILLPRIV_V2;
            t->killpriv_v2_wanted = 0;
            if (t->uring_threads && t->uring_offered && iov[1].iov_len >= FPT_INIT_OUT_FLAGS2 + 4 &&
                lib.process_buf != NULL && fpt_uring_built()) {
                out->flags |= FPT_FUSE_INIT_EXT;
                *(uint32_t *)((char *)out + FPT_INIT_OUT_FLAGS2) |= FPT_OVER_IO_URING_FLAGS2;
                n = writev(fd, iov, count);
                if (n >= 0) { /* the kernel has taken the INIT reply: entries may be registered now */
                    struct fpt_uring_config c = {t->se, lib.session_fd(t->se), t->uring_payload, t->uring_threads,
                                                 lib.process_buf, ring_worker_start};
                    if ((t->uring = fpt_uring_start(&c)) == NULL)
                        perror("fuse-passthrough: io_uring threads");
                }
                t->uring_threads = 0;
                return n;
            }
            t->uring_threads = 0;
        }
    }
    return writev(fd, iov, count);
}

/* -o clone_fd on 3.17, which leaves cloning to a custom I/O: libfuse's own way (a new /dev/fuse fd attached to the
 * session's connection), non-blocking like the session's fd so that its worker waits in poll too. */
#define FPT_DEV_IOC_CLONE _IOR(229, 0, uint32_t)
static int io_clone_fd(int master_fd) {
    uint32_t master = (uint32_t)master_fd;
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC), flags = fcntl(master_fd, F_GETFL);
    if (fd < 0)
        return -1;
    if (ioctl(fd, FPT_DEV_IOC_CLONE, &master) != 0) {
        close(fd);
        return -1;
    }
    if (flags >= 0 && flags & O_NONBLOCK)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

#ifdef FPT_CHECK_SIGNATURES
#include <linux/fuse.h>
_Static_assert(FPT_FUSE_INIT == FUSE_INIT && FPT_HANDLE_KILLPRIV_V2 == FUSE_HANDLE_KILLPRIV_V2 &&
               FPT_DEV_IOC_CLONE == FUSE_DEV_IOC_CLONE, "linux/fuse.h");
_Static_assert(sizeof(struct fpt_in_header) == sizeof(struct fuse_in_header) &&
               SAME(fpt_in_header, fuse_in_header, opcode) && SAME(fpt_in_header, fuse_in_header, unique) &&
               sizeof(struct fpt_out_header) == sizeof(struct fuse_out_header) &&
               SAME(fpt_out_header, fuse_out_header, error) && SAME(fpt_out_header, fuse_out_header, unique) &&
               SAME(fpt_init, fuse_init_in, flags) && SAME(fpt_init, fuse_init_out, flags), "linux/fuse.h");
_Static_assert(SAME(fpt_custom_io, fuse_custom_io, writev) && SAME(fpt_custom_io, fuse_custom_io, read) &&
               SAME(fpt_custom_io, fuse_custom_io, splice_receive) &&
               SAME(fpt_custom_io, fuse_custom_io, splice_send), "struct fuse_custom_io");
#if FUSE_MAJOR_VERSION * 100 + FUSE_MINOR_VERSION < 317
_Static_assert(offsetof(struct fpt_custom_io, clone_fd) == sizeof(struct fuse_custom_io), "struct fuse_custom_io");
void fpt_check_io(struct fuse_custom_io *io) { io->read = io_read; io->writev = io_writev; }
#else
_Static_assert(SAME(fpt_custom_io, fuse_custom_io, clone_fd) &&
               sizeof(struct fpt_custom_io) == sizeof(struct fuse_custom_io), "struct fuse_custom_io");
void fpt_check_io(struct fuse_custom_io *io) { io->read = io_read; io->writev = io_writev; io->clone_fd = io_clone_fd; }
#endif
#endif

PyDoc_STRVAR(session_io_doc, "session_io(session: int, table: int): the session (mounted) reads and writes /dev/fuse "
             "through this module (waiting in poll; see killpriv_v2_offered); `table` is its userdata.");
static PyObject *session_io(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    void *se, *t;
    int rc;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "(session, table) expected");
    if (!as_address(args[0], &se) || !as_address(args[1], &t))
        return NULL;
    if ((lib.custom_io == NULL && lib.custom_io_317 == NULL) || lib.session_fd == NULL)
        return PyErr_Format(PyExc_RuntimeError, "this libfuse has no fuse_session_custom_io");
    struct fpt_custom_io io = {io_writev, io_read, NULL, NULL, io_clone_fd};
    ((struct table *)t)->se = se;
    int fd = lib.session_fd(se), flags = fcntl(fd, F_GETFL);
    /* libfuse copies `io` (< 3.17: the members before clone_fd, the struct it knows) */
    rc = lib.custom_io_317 != NULL ? lib.custom_io_317(se, &io, sizeof io, fd) : lib.custom_io(se, &io, fd);
    if (rc != 0)
        return PyErr_Format(PyExc_OSError, "fuse_session_custom_io failed (%d)", rc);
    if (flags >= 0) /* else blocking reads, as read_polled does them on a blocking fd */
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    Py_RETURN_NONE;
}

static struct table *table_at(PyObject *address) {
    void *t;
    if (!as_address(address, &t))
        return NULL;
    if (t == NULL)
        PyErr_SetString(PyExc_ValueError, "no table");
    return t;
}

PyDoc_STRVAR(killpriv_v2_offered_doc, "killpriv_v2_offered(table: int) -> bool: whether the session's INIT request, "
             "read through session_io, offers FUSE_HANDLE_KILLPRIV_V2 (call from the init handler).");
static PyObject *killpriv_v2_offered(PyObject *self, PyObject *address) {
    struct table *t = table_at(address);
    return t == NULL ? NULL : PyBool_FromLong(t->init_read && t->killpriv_v2_offered);
}

PyDoc_STRVAR(want_killpriv_v2_doc, "want_killpriv_v2(table: int): set FUSE_HANDLE_KILLPRIV_V2 in the session's INIT "
             "reply (from the init handler, where killpriv_v2_offered).");
static PyObject *want_killpriv_v2(PyObject *self, PyObject *address) {
    struct table *t = table_at(address);
    if (t == NULL)
        return NULL;
    t->killpriv_v2_wanted = t->init_read && t->killpriv_v2_offered;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(set_functions_doc, "set_functions(addresses: dict[str, int]): libfuse's fuse_reply_*, "
             "fuse_req_userdata, fuse_req_ctx, fuse_session_fd and fuse_session_custom_io (< 3.17) or _317, by "
             "symbol, from the loaded library.");
static PyObject *set_functions(PyObject *self, PyObject *addresses) {
    static const struct { const char *symbol; void **slot; } SLOTS[] = {
        {"fuse_reply_err", (void **)&lib.err}, {"fuse_reply_none", (void **)&lib.none},
        {"fuse_reply_entry", (void **)&lib.entry}, {"fuse_reply_create", (void **)&lib.create},
        {"fuse_reply_attr", (void **)&lib.attr}, {"fuse_reply_readlink", (void **)&lib.readlink},
        {"fuse_reply_open", (void **)&lib.open}, {"fuse_reply_write", (void **)&lib.write},
        {"fuse_reply_buf", (void **)&lib.buf}, {"fuse_reply_data", (void **)&lib.data},
        {"fuse_reply_statfs", (void **)&lib.statfs}, {"fuse_reply_xattr", (void **)&lib.xattr},
        {"fuse_reply_lock", (void **)&lib.lock}, {"fuse_reply_lseek", (void **)&lib.lseek},
        {"fuse_req_userdata", (void **)&lib.userdata}, {"fuse_req_ctx", (void **)&lib.ctx},
        {"fuse_session_fd", (void **)&lib.session_fd}};
    static const struct { const char *symbol; void **slot; } OPTIONAL[] = {
        {"fuse_session_custom_io", (void **)&lib.custom_io},
        {"fuse_session_custom_io_317", (void **)&lib.custom_io_317},
        {"fuse_session_process_buf", (void **)&lib.process_buf}};
    if (!PyDict_Check(addresses))
        return PyErr_Format(PyExc_TypeError, "a dict of addresses");
    for (size_t i = 0; i < sizeof SLOTS / sizeof SLOTS[0]; i++) {
        PyObject *a = PyDict_GetItemString(addresses, SLOTS[i].symbol);
        void *v;
        if (a == NULL)
            return PyErr_Format(PyExc_KeyError, "%s", SLOTS[i].symbol);
        if (!as_address(a, &v))
            return NULL;
        if (v == NULL)
            return PyErr_Format(PyExc_ValueError, "%s: NULL", SLOTS[i].symbol);
        *SLOTS[i].slot = v;
    }
    for (size_t i = 0; i < sizeof OPTIONAL / sizeof OPTIONAL[0]; i++) {
        PyObject *a = PyDict_GetItemString(addresses, OPTIONAL[i].symbol);
        void *v = NULL;
        if (a != NULL && !as_address(a, &v))
            return NULL;
        *OPTIONAL[i].slot = v;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(trampoline_doc, "trampoline(op: str) -> int: the address of the C function to register for `op`.");
static PyObject *trampoline(PyObject *self, PyObject *op) {
    int i = find_op(op);
    return i < 0 ? NULL : PyLong_FromVoidPtr(TRAMPOLINES[i].fn);
}

PyDoc_STRVAR(callback_table_doc, "callback_table(callbacks: dict[str, int]) -> int: a table of the callbacks' "
             "addresses by operation, for a session's userdata; free it with free_callback_table once the session "
             "is destroyed.");
static PyObject *callback_table(PyObject *self, PyObject *callbacks) {
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    struct table *t;
    if (!PyDict_Check(callbacks))
        return PyErr_Format(PyExc_TypeError, "a dict of addresses");
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return PyErr_NoMemory();
    pthread_mutex_init(&t->turn.lock, NULL);
    while (PyDict_Next(callbacks, &pos, &key, &value)) {
        int i = find_op(key);
        if (i < 0 || !as_address(value, &t->cb[i])) {
            free(t);
            return NULL;
        }
    }
    return PyLong_FromVoidPtr(t);
}

static PyObject *free_callback_table(PyObject *self, PyObject *address) {
    void *t;
    if (!as_address(address, &t))
        return NULL;
    free(t);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(uring_want_doc, "uring_want(table: int, max_per_cpu: int, payload_size: int) -> bool: serve requests "
             "through FUSE over io_uring if the kernel's INIT offers it (before the loop; uring.c). False: this build "
             "cannot (no liburing when it was compiled, or a libfuse without fuse_session_process_buf).");
static PyObject *uring_want(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    struct table *t;
    long threads;
    Py_ssize_t payload;
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "(table, max_per_cpu, payload_size) expected");
    if ((t = table_at(args[0])) == NULL)
        return NULL;
    threads = PyLong_AsLong(args[1]);
    payload = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (!fpt_uring_built() || lib.process_buf == NULL || (lib.custom_io == NULL && lib.custom_io_317 == NULL))
        Py_RETURN_FALSE;
    t->uring_threads = threads > 0 ? (int)threads : 0;
    t->uring_payload = (size_t)payload;
    Py_RETURN_TRUE;
}

static PyObject *uring_built(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(fpt_uring_built());
}

PyDoc_STRVAR(uring_counts_doc, "uring_counts(table: int) -> tuple[int, int, int] | None: io_uring entries registered, "
             "entries refused, requests served through them; None if the session does not use io_uring.");
static PyObject *uring_counts(PyObject *self, PyObject *address) {
    struct table *t = table_at(address);
    int registered, failed;
    uint64_t served;
    if (t == NULL)
        return NULL;
    if (t->uring == NULL)
        Py_RETURN_NONE;
    fpt_uring_counts(t->uring, &registered, &failed, &served);
    return Py_BuildValue("iiK", registered, failed, (unsigned long long)served);
}

PyDoc_STRVAR(uring_stop_doc, "uring_stop(table: int): end and join the session's io_uring threads (after the loop).");
static PyObject *uring_stop(PyObject *self, PyObject *address) {
    struct table *t = table_at(address);
    struct fpt_uring *u;
    if (t == NULL)
        return NULL;
    u = t->uring;
    t->uring = NULL;
    Py_BEGIN_ALLOW_THREADS /* a ring thread may be waiting for the GIL to finish its request */
    fpt_uring_stop(u);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(set_park_doc, "set_park(table: int, ns: int): a worker that finishes a request while another is running "
             "one sleeps in steps of `ns` before reading again (see leave() above); 0: never. Before the loop.");
static PyObject *set_park(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    struct table *t;
    long ns;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "(table, ns) expected");
    if ((t = table_at(args[0])) == NULL || ((ns = PyLong_AsLong(args[1])) == -1 && PyErr_Occurred()))
        return NULL;
    if (ns < 0)
        return PyErr_Format(PyExc_ValueError, "a step of %ld ns", ns);
    t->park_ns = ns;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(park_counts_doc, "park_counts(table: int) -> int: how often a worker parked.");
static PyObject *park_counts(PyObject *self, PyObject *address) {
    struct table *t = table_at(address);
    if (t == NULL)
        return NULL;
    return PyLong_FromUnsignedLongLong(atomic_load(&t->parks));
}

/* Record a reply in this thread's slot; objects whose memory it points into are kept until the next one. */
static struct pending *record(enum kind kind, PyObject *keep1, PyObject *keep2) {
    struct pending *p = &pending;
    PyObject *old1 = p->keep1, *old2 = p->keep2;
    Py_XINCREF(keep1);
    Py_XINCREF(keep2);
    p->keep1 = keep1;
    p->keep2 = keep2;
    p->kind = kind;
    Py_XDECREF(old1);
    Py_XDECREF(old2);
    return p;
}

/* The address of a ctypes object's (or any buffer's) memory, and its length. */
static int memory_of(PyObject *o, const void **ptr, Py_ssize_t *len) {
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0)
        return 0;
    *ptr = view.buf;
    if (len)
        *len = view.len;
    PyBuffer_Release(&view);
    return 1;
}

static PyObject *reply_pointer(PyObject *const *args, Py_ssize_t nargs, enum kind kind) {
    const void *p;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "(req, struct) expected");
    if (!memory_of(args[1], &p, NULL))
        return NULL;
    record(kind, args[1], NULL)->p1 = p;
    Py_RETURN_NONE;
}

static PyObject *reply_size(PyObject *const *args, Py_ssize_t nargs, enum kind kind) {
    unsigned long long n;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "(req, n) expected");
    n = PyLong_AsUnsignedLongLongMask(args[1]);
    if (n == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    record(kind, NULL, NULL)->n = n;
    Py_RETURN_NONE;
}

static PyObject *reply_err(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int e;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "(req, errno) expected");
    e = PyLong_AsLong(args[1]);
    if (e == -1 && PyErr_Occurred())
        return NULL;
    record(K_ERR, NULL, NULL)->num = e;
    Py_RETURN_NONE;
}

static PyObject *reply_none(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    record(K_NONE, NULL, NULL);
    Py_RETURN_NONE;
}

static PyObject *reply_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return reply_pointer(args, nargs, K_ENTRY);
}

static PyObject *reply_create(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const void *e, *fi;
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "(req, entry, fi) expected");
    if (!memory_of(args[1], &e, NULL) || !memory_of(args[2], &fi, NULL))
        return NULL;
    struct pending *p = record(K_CREATE, args[1], args[2]);
    p->p1 = e;
    p->p2 = fi;
    Py_RETURN_NONE;
}

static PyObject *reply_attr(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const void *st;
    double timeout;
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "(req, stat, timeout) expected");
    timeout = PyFloat_AsDouble(args[2]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    if (!memory_of(args[1], &st, NULL))
        return NULL;
    struct pending *p = record(K_ATTR, args[1], NULL);
    p->p1 = st;
    p->timeout = timeout;
    Py_RETURN_NONE;
}

static PyObject *reply_readlink(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[1]))
        return PyErr_Format(PyExc_TypeError, "(req, bytes) expected");
    record(K_READLINK, args[1], NULL)->p1 = PyBytes_AS_STRING(args[1]); /* NUL-terminated */
    Py_RETURN_NONE;
}

static PyObject *reply_open(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return reply_pointer(args, nargs, K_OPEN);
}

static PyObject *reply_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return reply_size(args, nargs, K_WRITE);
}

static PyObject *reply_buf(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const void *data;
    Py_ssize_t len, size;
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "(req, buffer, size) expected");
    size = PyLong_AsSsize_t(args[2]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (!memory_of(args[1], &data, &len))
        return NULL;
    if (size < 0 || size > len)
        return PyErr_Format(PyExc_ValueError, "size %zd beyond the buffer's %zd bytes", size, len);
    struct pending *p = record(K_BUF, args[1], NULL);
    p->p1 = data;
    p->n = (uint64_t)size;
    Py_RETURN_NONE;
}

static PyObject *reply_data(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const void *bv;
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "(req, bufvec, flags) expected");
    int flags = PyLong_AsLong(args[2]);
    if (flags == -1 && PyErr_Occurred())
        return NULL;
    if (!memory_of(args[1], &bv, NULL))
        return NULL;
    struct pending *p = record(K_DATA, args[1], NULL);
    p->p1 = bv;
    p->num = flags;
    Py_RETURN_NONE;
}

static PyObject *reply_statfs(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return reply_pointer(args, nargs, K_STATFS);
}

static PyObject *reply_xattr(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return reply_size(args, nargs, K_XATTR);
}

static PyObject *reply_lock(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return reply_pointer(args, nargs, K_LOCK);
}

static PyObject *reply_lseek(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long off;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "(req, offset) expected");
    off = PyLong_AsLongLong(args[1]);
    if (off == -1 && PyErr_Occurred())
        return NULL;
    record(K_LSEEK, NULL, NULL)->n = (uint64_t)off;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------------ conversions */
PyDoc_STRVAR(caller_doc, "caller(req: int) -> (uid, gid, pid, umask) of the process behind the request.");
static PyObject *caller(PyObject *self, PyObject *req) {
    void *r;
    if (!as_address(req, &r))
        return NULL;
    if (lib.ctx == NULL || r == NULL)
        return PyErr_Format(PyExc_ValueError, "no request");
    const struct fpt_ctx *c = lib.ctx(r);
    return Py_BuildValue("(kkik)", (unsigned long)c->uid, (unsigned long)c->gid, (int)c->pid,
                         (unsigned long)c->umask);
}

PyDoc_STRVAR(data_view_doc, "data_view(address: int, size: int) -> a read-only memoryview of `size` bytes at "
             "`address`, not copied: a write request's data in libfuse's buffer, valid while its handler runs.");
static PyObject *data_view(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    void *address;
    Py_ssize_t size;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "data_view(address, size)");
    size = PyLong_AsSsize_t(args[1]);
    if (size < 0)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "negative size");
    if (size == 0)
        return PyMemoryView_FromMemory((char *)"", 0, PyBUF_READ);
    if (!as_address(args[0], &address))
        return NULL;
    if (address == NULL)
        return PyErr_Format(PyExc_ValueError, "no data");
    return PyMemoryView_FromMemory(address, size, PyBUF_READ);
}

/* Where os.stat_result keeps each field (set_stat_fields: the fields past the tuple's ten have no fixed place). */
enum { FLD_DEV, FLD_INO, FLD_NLINK, FLD_MODE, FLD_UID, FLD_GID, FLD_RDEV, FLD_SIZE, FLD_BLKSIZE, FLD_BLOCKS,
       FLD_ATIME, FLD_MTIME, FLD_CTIME, NSTAT };
static Py_ssize_t stat_index[NSTAT];
static PyTypeObject *stat_type;

PyDoc_STRVAR(set_stat_fields_doc, "set_stat_fields(stat_result: type, indices: tuple[int, ...]): where "
             "os.stat_result keeps st_dev, st_ino, st_nlink, st_mode, st_uid, st_gid, st_rdev, st_size, st_blksize, "
             "st_blocks, st_atime_ns, st_mtime_ns, st_ctime_ns.");
static PyObject *set_stat_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyType_Check(args[0]) || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != NSTAT)
        return PyErr_Format(PyExc_TypeError, "(type, tuple of %d indices) expected", NSTAT);
    for (int i = 0; i < NSTAT; i++) {
        Py_ssize_t v = PyLong_AsSsize_t(PyTuple_GET_ITEM(args[1], i));
        if (v == -1 && PyErr_Occurred())
            return NULL;
        stat_index[i] = v;
    }
    Py_XSETREF(stat_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_RETURN_NONE;
}

static unsigned long long field_u(PyObject *st, int f) {
    return PyLong_AsUnsignedLongLong(PyStructSequence_GetItem(st, stat_index[f]));
}

static long long field_s(PyObject *st, int f) {
    return PyLong_AsLongLong(PyStructSequence_GetItem(st, stat_index[f]));
}

static struct timespec field_time(PyObject *st, int f) {
    long long ns = field_s(st, f);
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    if (ts.tv_nsec < 0) { /* floor, as divmod: before 1970 */
        ts.tv_nsec += 1000000000;
        ts.tv_sec -= 1;
    }
    return ts;
}

/* `out` (a struct stat) from os.stat_result `st`; 0 with an exception set on failure. */
static int stat_of(PyObject *st, struct stat *out) {
    if (stat_type == NULL || !Py_IS_TYPE(st, stat_type)) {
        PyErr_Format(PyExc_TypeError, "an os.stat_result expected, not %.100s", Py_TYPE(st)->tp_name);
        return 0;
    }
    memset(out, 0, sizeof *out);
    out->st_dev = (dev_t)field_u(st, FLD_DEV);
    out->st_ino = (ino_t)field_u(st, FLD_INO);
    out->st_nlink = (nlink_t)field_u(st, FLD_NLINK);
    out->st_mode = (mode_t)field_u(st, FLD_MODE);
    out->st_uid = (uid_t)field_u(st, FLD_UID);
    out->st_gid = (gid_t)field_u(st, FLD_GID);
    out->st_rdev = (dev_t)field_u(st, FLD_RDEV);
    out->st_size = (off_t)field_s(st, FLD_SIZE);
    out->st_blksize = (blksize_t)field_s(st, FLD_BLKSIZE);
    out->st_blocks = (blkcnt_t)field_s(st, FLD_BLOCKS);
    out->st_atim = field_time(st, FLD_ATIME);
    out->st_mtim = field_time(st, FLD_MTIME);
    out->st_ctim = field_time(st, FLD_CTIME);
    return !PyErr_Occurred();
}

/* The writable memory of `o` (a ctypes struct), which must be `size` bytes. */
static void *writable(PyObject *o, size_t size, const char *what) {
    Py_buffer view;
    void *p;
    if (PyObject_GetBuffer(o, &view, PyBUF_WRITABLE) < 0)
        return NULL;
    p = view.buf;
    if ((size_t)view.len != size) {
        PyErr_Format(PyExc_TypeError, "a %s (%zu bytes) expected, not %zd bytes", what, size, view.len);
        p = NULL;
    }
    PyBuffer_Release(&view);
    return p;
}

PyDoc_STRVAR(fill_stat_doc, "fill_stat(out: stat_t, st: os.stat_result): `out` set to `st`.");
static PyObject *fill_stat(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    struct stat s, *out;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "(out, stat_result) expected");
    if ((out = writable(args[0], sizeof *out, "struct stat")) == NULL || !stat_of(args[1], &s))
        return NULL;
    *out = s;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fill_entry_doc, "fill_entry(out: fuse_entry_param, ino, generation, st: os.stat_result, attr_timeout, "
             "entry_timeout): `out` set to these.");
static PyObject *fill_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    struct fpt_entry e, *out;
    if (nargs != 6)
        return PyErr_Format(PyExc_TypeError,
                            "(out, ino, generation, stat_result, attr_timeout, entry_timeout) expected");
    if ((out = writable(args[0], sizeof *out, "struct fuse_entry_param")) == NULL || !stat_of(args[3], &e.attr))
        return NULL;
    e.ino = PyLong_AsUnsignedLongLong(args[1]);
    e.generation = PyLong_AsUnsignedLongLong(args[2]);
    e.attr_timeout = PyFloat_AsDouble(args[4]);
    e.entry_timeout = PyFloat_AsDouble(args[5]);
    if (PyErr_Occurred())
        return NULL;
    *out = e;
    Py_RETURN_NONE;
}

#define FAST(name, doc) {#name, (PyCFunction)(void (*)(void))name, METH_FASTCALL, doc}
static PyMethodDef METHODS[] = {
    {"set_functions", set_functions, METH_O, set_functions_doc},
    {"trampoline", trampoline, METH_O, trampoline_doc},
    {"callback_table", callback_table, METH_O, callback_table_doc},
    {"free_callback_table", free_callback_table, METH_O, "free_callback_table(address: int)"},
    {"caller", caller, METH_O, caller_doc},
    FAST(data_view, data_view_doc),
    FAST(session_io, session_io_doc),
    {"killpriv_v2_offered", killpriv_v2_offered, METH_O, killpriv_v2_offered_doc},
    {"want_killpriv_v2", want_killpriv_v2, METH_O, want_killpriv_v2_doc},
    FAST(set_park, set_park_doc),
    FAST(uring_want, uring_want_doc),
    {"uring_counts", uring_counts, METH_O, uring_counts_doc},
    {"uring_built", uring_built, METH_NOARGS, "uring_built() -> bool: whether this build has FUSE over io_uring"},
    {"uring_stop", uring_stop, METH_O, uring_stop_doc},
    {"park_counts", park_counts, METH_O, park_counts_doc},
    FAST(set_stat_fields, set_stat_fields_doc),
    FAST(fill_stat, fill_stat_doc),
    FAST(fill_entry, fill_entry_doc),
    FAST(reply_err, "reply_err(req, errno)"),
    FAST(reply_none, "reply_none(req): no reply (forget)"),
    FAST(reply_entry, "reply_entry(req, entry: fuse_entry_param)"),
    FAST(reply_create, "reply_create(req, entry, fi)"),
    FAST(reply_attr, "reply_attr(req, stat, timeout)"),
    FAST(reply_readlink, "reply_readlink(req, target: bytes)"),
    FAST(reply_open, "reply_open(req, fi)"),
    FAST(reply_write, "reply_write(req, count)"),
    FAST(reply_buf, "reply_buf(req, buffer, size)"),
    FAST(reply_data, "reply_data(req, bufvec, flags)"),
    FAST(reply_statfs, "reply_statfs(req, statvfs)"),
    FAST(reply_xattr, "reply_xattr(req, size)"),
    FAST(reply_lock, "reply_lock(req, flock)"),
    FAST(reply_lseek, "reply_lseek(req, offset)"),
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_trampolines",
                                    "C entry points for the low-level binding: replies sent without the GIL, and "
                                    "per-request conversions.", -1,
                                    METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__trampolines(void) {
    PyObject *m = PyModule_Create(&MODULE), *capsule;
    if (m == NULL)
        return NULL;
    capsule = PyCapsule_New((void *)&AFTER_REPLY, "fuse_passthrough.lowlevel._trampolines.AFTER_REPLY", NULL);
    if (capsule == NULL || PyModule_AddObject(m, "AFTER_REPLY", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
