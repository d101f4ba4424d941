/* FUSE over io_uring (Linux >= 6.14, CONFIG_FUSE_IO_URING, /sys/module/fuse/parameters/enable_uring) for the
 * binding's own I/O, on libfuse 3.14 and 3.17, which have no io_uring of their own.
 *
 * Why: over /dev/fuse a request wakes a daemon thread wherever it slept, often on another, halted vCPU, and the
 * reply wakes the caller back there (~40-50 us each way on this VM; docs/benchmarks.md). The kernel hands an
 * io_uring request to the queue of the CPU the caller runs on; that queue's entries belong to threads pinned to
 * that CPU, so the request and its reply are two switches on one CPU.
 *
 * How (the kernel's fs/fuse/dev_uring.c, libfuse's lib/fuse_uring.c): after the INIT reply (sent over /dev/fuse
 * with FUSE_OVER_IO_URING), each thread sets up an io_uring of its own (128-byte SQEs: the command's arguments
 * live in the SQE) and registers one entry for its CPU's queue: a page of headers (the request's fuse_in_header,
 * its per-operation header, the entry's in/out sizes) and a payload buffer (the rest of the request's arguments;
 * the reply's). Once every queue has an entry the kernel sends requests there; FORGET and INTERRUPT still go to
 * /dev/fuse, where libfuse's workers keep reading. A request is rebuilt as /dev/fuse would have delivered it
 * (header, per-operation header, payload, contiguous: the two headers are copied in front of the payload, which
 * stays where the kernel wrote it) and given to fuse_session_process_buf; libfuse's reply reaches the session's
 * writev (_trampolines.c), which gives it to fpt_uring_reply on this thread: copied into the entry and committed
 * with COMMIT_AND_FETCH, which also makes the entry wait for the next request. One thread per CPU: a second one
 * took the CPU's next request whenever the first was busy with a background one (the RELEASE after a close), and
 * the two handed the interpreter lock back and forth (creates 1.9x slower, docs/design.md); a spare is started for
 * a CPU whose threads are all inside requests older than 50 ms (watch(), up to max_threads per CPU). On unmount the kernel completes the waiting entries with ENOTCONN and the threads end; fpt_uring_stop ends
 * them through an eventfd each ring polls. */
#define _GNU_SOURCE
#include "uring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifndef FPT_HAVE_URING
int fpt_uring_built(void) { return 0; }
struct fpt_uring *fpt_uring_start(const struct fpt_uring_config *config) {
    (void)config;
    errno = ENOSYS;
    return NULL;
}
ssize_t fpt_uring_reply(const struct iovec *iov, int count) {
    (void)iov, (void)count;
    errno = ENOENT;
    return -1;
}
void fpt_uring_counts(const struct fpt_uring *u, int *registered, int *failed, uint64_t *served) {
    (void)u;
    *registered = *failed = 0;
    *served = 0;
}
int fpt_uring_ready(const struct fpt_uring *u) {
    (void)u;
    return 0;
}
void fpt_uring_stop(struct fpt_uring *u) { (void)u; }
#else
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

/* linux/fuse.h (7.42), which Debian 12's headers predate; tests/lowlevel/test_layout.py checks them against
 * libfuse's copy of the kernel header where one has them. */
#define URING_CMD_REGISTER 1
#define URING_CMD_COMMIT_AND_FETCH 2
struct uring_ent_in_out { uint64_t flags, commit_id; uint32_t payload_sz, padding; uint64_t reserved; };
struct uring_req_header { char in_out[128]; char op_in[128]; struct uring_ent_in_out ring_ent_in_out; };
struct uring_cmd_req { uint64_t flags, commit_id; uint16_t qid; uint8_t padding[6]; };
struct in_header { uint32_t len, opcode; uint64_t unique, nodeid; uint32_t uid, gid, pid; uint16_t extlen, pad; };
struct out_header { uint32_t len; int32_t error; uint64_t unique; };
/* struct fuse_buf (3.17 appends mem_size, which 3.14 never reads) */
struct fuse_buf_s { size_t size; int flags; void *mem; int fd; off_t pos; size_t mem_size; };

#ifdef FPT_CHECK_SIGNATURES /* tests/lowlevel/test_layout.py: against each version's headers */
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#define SAME(a, b, f) (offsetof(struct a, f) == offsetof(struct b, f) && sizeof(((struct a *)0)->f) == \
                       sizeof(((struct b *)0)->f))
_Static_assert(SAME(fuse_buf_s, fuse_buf, size) && SAME(fuse_buf_s, fuse_buf, flags) && SAME(fuse_buf_s, fuse_buf, mem)
               && SAME(fuse_buf_s, fuse_buf, fd) && SAME(fuse_buf_s, fuse_buf, pos), "struct fuse_buf");
#if FUSE_MAJOR_VERSION * 100 + FUSE_MINOR_VERSION >= 317
_Static_assert(SAME(fuse_buf_s, fuse_buf, mem_size) && sizeof(struct fuse_buf_s) == sizeof(struct fuse_buf),
               "struct fuse_buf");
#else
_Static_assert(offsetof(struct fuse_buf_s, mem_size) == sizeof(struct fuse_buf), "struct fuse_buf");
#endif
void (*const fpt_check_process_buf)(struct fuse_session *, const struct fuse_buf *) = fuse_session_process_buf;
_Static_assert(sizeof(struct in_header) == sizeof(struct fuse_in_header) && SAME(in_header, fuse_in_header, len) &&
               SAME(in_header, fuse_in_header, unique) && sizeof(struct out_header) == sizeof(struct fuse_out_header)
               && SAME(out_header, fuse_out_header, error) && SAME(out_header, fuse_out_header, unique),
               "linux/fuse.h");
_Static_assert(offsetof(struct fuse_init_out, flags2) == 32 && offsetof(struct fuse_init_in, flags2) == 16 &&
               FUSE_INIT_EXT == FPT_FUSE_INIT_EXT, "linux/fuse.h: INIT");
#ifdef FUSE_OVER_IO_URING /* Linux >= 6.14 headers */
_Static_assert(FUSE_OVER_IO_URING == (uint64_t)FPT_OVER_IO_URING_FLAGS2 << 32 &&
               FUSE_IO_URING_CMD_REGISTER == URING_CMD_REGISTER &&
               FUSE_IO_URING_CMD_COMMIT_AND_FETCH == URING_CMD_COMMIT_AND_FETCH &&
               sizeof(struct uring_req_header) == sizeof(struct fuse_uring_req_header) &&
               SAME(uring_req_header, fuse_uring_req_header, op_in) &&
               SAME(uring_req_header, fuse_uring_req_header, ring_ent_in_out) &&
               SAME(uring_ent_in_out, fuse_uring_ent_in_out, commit_id) &&
               SAME(uring_ent_in_out, fuse_uring_ent_in_out, payload_sz) &&
               sizeof(struct uring_cmd_req) == sizeof(struct fuse_uring_cmd_req) &&
               SAME(uring_cmd_req, fuse_uring_cmd_req, commit_id) && SAME(uring_cmd_req, fuse_uring_cmd_req, qid),
               "linux/fuse.h: io_uring");
#endif
#endif
/* What the kernel's documentation gives (Documentation/filesystems/fuse/fuse-io-uring.rst), where no header has it */
_Static_assert(sizeof(struct uring_req_header) == 288 && offsetof(struct uring_req_header, ring_ent_in_out) == 256 &&
               offsetof(struct uring_ent_in_out, payload_sz) == 16 && sizeof(struct uring_cmd_req) == 24 &&
               offsetof(struct uring_cmd_req, qid) == 16, "io_uring structs");

#define FRONT 4096 /* room before the payload for the two headers of a request */
#define STOP_TAG ((void *)1)

struct ring_thread {
    struct fpt_uring *u;
    int qid;
    pthread_t tid;
    int started;
    struct io_uring ring;
    int ring_ok;
    struct uring_req_header *headers; /* a page of its own */
    char *region;                     /* FRONT bytes, then the payload */
    size_t region_size;
    struct iovec iov[2];
    uint64_t commit_id;               /* the request being processed */
    int replied;
    _Atomic uint64_t busy_since;      /* when that request began (CLOCK_MONOTONIC ns), 0: waiting for one */
};

struct fpt_uring {
    struct fpt_uring_config c;
    int queues, nthreads, total, capacity, stop_fd; /* threads started, first ones, room for spares */
    struct ring_thread *threads;
    pthread_t watchdog;
    int watchdog_started;
    _Atomic int registered, failed;
    _Atomic uint64_t served;
};

static __thread struct ring_thread *current;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int fpt_uring_built(void) { return 1; }

static int submit(struct ring_thread *r, uint32_t cmd_op) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    struct uring_cmd_req *cmd;
    if (sqe == NULL)
        return -EBUSY;
    memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = r->u->c.fd;
    sqe->cmd_op = cmd_op;
    if (cmd_op == URING_CMD_REGISTER) {
        sqe->addr = (uint64_t)(uintptr_t)r->iov;
        sqe->len = 2;
    }
    cmd = (struct uring_cmd_req *)sqe->cmd;
    cmd->qid = (uint16_t)r->qid;
    cmd->commit_id = cmd_op == URING_CMD_COMMIT_AND_FETCH ? r->commit_id : 0;
    io_uring_sqe_set_data(sqe, r);
    return io_uring_submit(&r->ring);
}

ssize_t fpt_uring_reply(const struct iovec *iov, int count) {
    struct ring_thread *r = current;
    const struct out_header *out;
    struct out_header *dest;
    size_t len = 0, room;
    if (r == NULL || r->replied || count < 1 || iov[0].iov_len != sizeof *out ||
        ((const struct out_header *)iov[0].iov_base)->unique != r->commit_id) {
        errno = ENOENT;
        return -1;
    }
    out = iov[0].iov_base;
    dest = (struct out_header *)r->headers->in_out;
    *dest = *out;
    room = r->region_size - FRONT;
    for (int i = 1; i < count; i++) {
        if (len + iov[i].iov_len > room) { /* cannot happen with the sizes the kernel negotiated */
            dest->error = -EIO;
            len = 0;
            break;
        }
        memcpy(r->region + FRONT + len, iov[i].iov_base, iov[i].iov_len);
        len += iov[i].iov_len;
    }
    r->headers->ring_ent_in_out.payload_sz = (uint32_t)len;
    r->replied = 1;
    if (submit(r, URING_CMD_COMMIT_AND_FETCH) < 0) {
        errno = EIO;
        return -1;
    }
    return (ssize_t)(sizeof *out + len);
}

static void process(struct ring_thread *r) {
    const struct in_header *in = (const void *)r->headers->in_out;
    const struct uring_ent_in_out *sizes = &r->headers->ring_ent_in_out;
    size_t payload = sizes->payload_sz, op_in;
    r->commit_id = sizes->commit_id;
    r->replied = 0;
    /* in->len counts every argument, as over /dev/fuse: what the payload does not hold is the op header */
    if (in->len < sizeof *in + payload || (op_in = in->len - sizeof *in - payload) > sizeof r->headers->op_in ||
        payload > r->region_size - FRONT) {
        struct out_header err = {sizeof err, -EIO, in->unique};
        struct iovec iov = {&err, sizeof err};
        r->commit_id = in->unique;
        fpt_uring_reply(&iov, 1);
        return;
    }
    char *start = r->region + FRONT - op_in - sizeof *in;
    memcpy(start, in, sizeof *in);
    memcpy(start + sizeof *in, r->headers->op_in, op_in);
    struct fuse_buf_s buf = {in->len, 0, start, -1, 0, r->region_size - (size_t)(start - r->region)};
    atomic_store_explicit(&r->busy_since, now_ns(), memory_order_relaxed);
    r->u->c.process_buf(r->u->c.session, &buf); /* the trampolines take turns at Python (turn.c) */
    atomic_store_explicit(&r->busy_since, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->u->served, 1, memory_order_relaxed);
    if (!r->replied) { /* libfuse answers every request but FORGET, which never comes this way */
        struct out_header err = {sizeof err, -EIO, r->commit_id};
        struct iovec iov = {&err, sizeof err};
        fpt_uring_reply(&iov, 1);
    }
}

static int setup(struct ring_thread *r) {
    struct fpt_uring *u = r->u;
    struct io_uring_params p;
    struct io_uring_sqe *sqe;
    struct io_uring_cqe *cqe;
    long page = sysconf(_SC_PAGESIZE);
    int rc;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
    p.cq_entries = 8;
    if ((rc = io_uring_queue_init_params(4, &r->ring, &p)) < 0)
        return rc;
    r->ring_ok = 1;
    r->headers = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    r->region_size = FRONT + u->c.payload_size;
    r->region = mmap(NULL, r->region_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r->headers == MAP_FAILED || r->region == MAP_FAILED) {
        if (r->headers == MAP_FAILED)
            r->headers = NULL;
        if (r->region == MAP_FAILED)
            r->region = NULL;
        return -ENOMEM;
    }
    r->iov[0] = (struct iovec){r->headers, (size_t)page};
    r->iov[1] = (struct iovec){r->region + FRONT, u->c.payload_size};
    if ((sqe = io_uring_get_sqe(&r->ring)) == NULL)
        return -EBUSY;
    io_uring_prep_poll_add(sqe, u->stop_fd, POLLIN);
    io_uring_sqe_set_data(sqe, STOP_TAG);
    if ((rc = submit(r, URING_CMD_REGISTER)) < 0)
        return rc;
    /* a registration the kernel refuses completes at once; an accepted one completes with a request */
    if (io_uring_peek_cqe(&r->ring, &cqe) == 0 && io_uring_cqe_get_data(cqe) == r && cqe->res < 0) {
        rc = cqe->res;
        io_uring_cqe_seen(&r->ring, cqe);
        return rc;
    }
    return 0;
}

static void *ring_main(void *arg) {
    struct ring_thread *r = arg;
    struct fpt_uring *u = r->u;
    char name[16];
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(r->qid, &cpus);
    sched_setaffinity(0, sizeof cpus, &cpus); /* best effort: a CPU outside the process's set stays unpinned */
    snprintf(name, sizeof name, "fuse-ring-%d", r->qid);
    pthread_setname_np(pthread_self(), name);
    if (u->c.thread_start != NULL)
        u->c.thread_start();
    int rc = setup(r);
    if (rc < 0) {
        atomic_fetch_add(&u->failed, 1);
        if (rc != -ENOTCONN)
            fprintf(stderr, "fuse-passthrough: io_uring queue %d: %s; its requests go through /dev/fuse\n", r->qid,
                    strerror(-rc));
        return NULL;
    }
    if (atomic_fetch_add(&u->registered, 1) + 1 == u->total) /* the first threads; spares come later */
        fprintf(stderr, "fuse-passthrough: requests go through FUSE over io_uring (a queue per CPU, %d)\n",
                get_nprocs_conf());
    current = r;
    for (;;) {
        struct io_uring_cqe *cqe;
        if ((rc = io_uring_wait_cqe(&r->ring, &cqe)) < 0) {
            if (rc == -EINTR)
                continue;
            break;
        }
        void *tag = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&r->ring, cqe);
        if (tag == STOP_TAG)
            break;
        if (res == -EINTR || res == -EAGAIN) { /* the command did not start: send it again */
            if (submit(r, r->replied ? URING_CMD_COMMIT_AND_FETCH : URING_CMD_REGISTER) < 0)
                break;
            continue;
        }
        if (res < 0) /* ENOTCONN: unmounted, ECANCELED: the ring is going */
            break;
        process(r);
    }
    current = NULL;
    return NULL;
}

static int start_thread(struct fpt_uring *u, int qid) {
    struct ring_thread *r = &u->threads[u->nthreads];
    int err;
    r->u = u;
    r->qid = qid;
    if ((err = pthread_create(&r->tid, NULL, ring_main, r)) != 0)
        return err;
    r->started = 1;
    u->nthreads++;
    return 0;
}

/* Serving around a blocked request: a CPU's requests wait while its every thread is inside one. Every WATCH_MS,
 * a queue whose threads have all been inside their requests for longer than that gets one more thread (up to
 * max_per_queue), and its entry takes that CPU's next requests. Spares stay: an entry cannot be withdrawn from
 * the kernel's queue without the risk of a request already on its way. */
#define WATCH_MS 50
static void *watch(void *arg) {
    struct fpt_uring *u = arg;
    struct pollfd stop = {u->stop_fd, POLLIN, 0};
    while (poll(&stop, 1, WATCH_MS) == 0 || (stop.revents & POLLIN) == 0) {
        uint64_t now = now_ns(), old = (uint64_t)WATCH_MS * 1000000u;
        for (int q = 0; q < u->queues && u->nthreads < u->capacity; q++) {
            int threads = 0, stuck = 0;
            for (int i = 0; i < u->nthreads; i++) {
                uint64_t since;
                if (u->threads[i].qid != q)
                    continue;
                threads++;
                since = atomic_load_explicit(&u->threads[i].busy_since, memory_order_relaxed);
                stuck += since != 0 && now - since > old;
            }
            if (threads == stuck && threads < u->c.max_per_queue && start_thread(u, q) != 0)
                break;
        }
    }
    return NULL;
}

struct fpt_uring *fpt_uring_start(const struct fpt_uring_config *config) {
    struct fpt_uring *u = calloc(1, sizeof *u);
    int err;
    if (u == NULL)
        return NULL;
    u->c = *config;
    if (u->c.max_per_queue < 1)
        u->c.max_per_queue = 1;
    u->queues = get_nprocs_conf();
    u->total = u->queues;
    u->capacity = u->queues * u->c.max_per_queue;
    u->threads = calloc((size_t)u->capacity, sizeof *u->threads);
    u->stop_fd = eventfd(0, EFD_CLOEXEC);
    err = u->threads == NULL || u->stop_fd < 0 ? errno : 0;
    for (int q = 0; q < u->queues && err == 0; q++)
        err = start_thread(u, q);
    if (err == 0 && u->c.max_per_queue > 1 && (err = pthread_create(&u->watchdog, NULL, watch, u)) == 0)
        u->watchdog_started = 1;
    if (err != 0) {
        fpt_uring_stop(u);
        errno = err;
        return NULL;
    }
    return u;
}

int fpt_uring_ready(const struct fpt_uring *u) {
    return atomic_load_explicit(&u->registered, memory_order_relaxed) >= u->total;
}

void fpt_uring_counts(const struct fpt_uring *u, int *registered, int *failed, uint64_t *served) {
    *registered = atomic_load(&u->registered);
    *failed = atomic_load(&u->failed);
    *served = atomic_load(&u->served);
}

void fpt_uring_stop(struct fpt_uring *u) {
    uint64_t one = 1;
    long page = sysconf(_SC_PAGESIZE);
    if (u == NULL)
        return;
    if (u->stop_fd >= 0 && write(u->stop_fd, &one, sizeof one) < 0)
        perror("fuse-passthrough: stopping the io_uring threads");
    if (u->watchdog_started) /* first: it may start threads until it sees the stop */
        pthread_join(u->watchdog, NULL);
    for (int i = 0; i < u->nthreads; i++) {
        struct ring_thread *r = &u->threads[i];
        if (r->started)
            pthread_join(r->tid, NULL);
        if (r->ring_ok)
            io_uring_queue_exit(&r->ring); /* cancels the entry's command, if the kernel still holds it */
        if (r->headers != NULL)
            munmap(r->headers, (size_t)page);
        if (r->region != NULL)
            munmap(r->region, r->region_size);
    }
    if (u->stop_fd >= 0)
        close(u->stop_fd);
    free(u->threads);
    free(u);
}
#endif
