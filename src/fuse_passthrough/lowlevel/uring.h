/* FUSE over io_uring for the binding's own I/O (uring.c; _trampolines.c calls it). */
#ifndef FPT_URING_H
#define FPT_URING_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define FPT_FUSE_INIT_EXT (1u << 30)
#define FPT_OVER_IO_URING_FLAGS2 (1u << 9) /* FUSE_OVER_IO_URING, bit 41 of the 64 INIT flags */

struct fpt_uring_config {
    void *session;
    int fd;                  /* the session's /dev/fuse */
    size_t payload_size;     /* per entry: at least the kernel's largest request or reply (max_write, max_pages) */
    int max_per_queue;       /* threads (each with an entry) per CPU at most: one, and spares around blocked ones */
    void (*process_buf)(void *session, const void *buf); /* fuse_session_process_buf */
    void (*thread_start)(void); /* called first in each ring thread */
};

struct fpt_uring;
/* Whether this libfuse build of the module has io_uring at all (liburing at build time). */
int fpt_uring_built(void);
/* Start a ring thread per CPU, each registering one entry (and spares, see watch()); NULL with errno set. */
struct fpt_uring *fpt_uring_start(const struct fpt_uring_config *config);
/* A reply written by libfuse on a ring thread for the request it is processing: copied into the entry and
 * committed; the bytes "written". -1 with errno ENOENT: not this thread's ring request (write it to /dev/fuse). */
ssize_t fpt_uring_reply(const struct iovec *iov, int count);
/* Whether every thread has registered its entry (the kernel then sends every request but FORGET and INTERRUPT
 * through io_uring). */
int fpt_uring_ready(const struct fpt_uring *u);
/* Entries registered and requests served so far. */
void fpt_uring_counts(const struct fpt_uring *u, int *registered, int *failed, uint64_t *served);
/* Stop and join every ring thread, free everything (call without the GIL). */
void fpt_uring_stop(struct fpt_uring *u);
#endif
