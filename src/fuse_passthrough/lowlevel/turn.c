/* Taking turns at Python. Two threads inside requests at once hand the interpreter lock to each other at every
 * system call their handlers make, each hand-over a wake-up on the other CPU: the io_uring threads take turns
 * instead, each request's Python work in one go. A thread waits for the turn while the thread that has it has had
 * it for less than FPT_TURN_NS (a longer one may be blocked: then it goes without).
 *
 * The turn is handed over in order of arrival: with a plain mutex, the thread that gave the turn took it back
 * before the woken waiter ran, and several busy clients' requests took twice as long. A waiter first yields its
 * CPU for up to FPT_TURN_SPIN_NS (to its own CPU's callers, if any) before it sleeps: its CPU stays awake, and
 * waking a halted virtual CPU costs more than a request (docs/benchmarks.md, 2026-12-07 14:30). */
#define _GNU_SOURCE
#include "turn.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FPT_TURN_NS 1000000
#define FPT_TURN_SPIN_NS 50000

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void futex(_Atomic int *word, int op, int value, const struct timespec *timeout) {
    syscall(SYS_futex, word, op, value, timeout, NULL, 0);
}

int fpt_turn_take(struct fpt_turn *t, struct fpt_turn_waiter *w) {
    struct fpt_turn_waiter *holder, **end;
    uint64_t since, start = now_ns(), now;
    pthread_mutex_lock(&t->lock);
    if (!t->taken) {
        t->taken = 1;
        atomic_store(&w->since, start);
        atomic_store_explicit(&t->holder, w, memory_order_relaxed);
        pthread_mutex_unlock(&t->lock);
        return 1;
    }
    holder = atomic_load_explicit(&t->holder, memory_order_relaxed);
    since = holder != NULL ? atomic_load(&holder->since) : 0;
    if (since == 0 || start - since >= FPT_TURN_NS) {
        pthread_mutex_unlock(&t->lock);
        return 0;
    }
    atomic_store(&w->granted, 0);
    w->next = NULL;
    for (end = &t->queue; *end != NULL; end = &(*end)->next)
        ;
    *end = w;
    pthread_mutex_unlock(&t->lock);
    while (!atomic_load(&w->granted) && (now = now_ns()) < since + FPT_TURN_NS) {
        if (now - start < FPT_TURN_SPIN_NS) {
            sched_yield();
        } else {
            struct timespec left = {0, (long)(since + FPT_TURN_NS - now)};
            futex(&w->granted, FUTEX_WAIT_PRIVATE, 0, &left);
        }
    }
    if (!atomic_load(&w->granted)) {
        pthread_mutex_lock(&t->lock);
        if (!atomic_load(&w->granted)) { /* out of the queue, and on without the turn */
            for (end = &t->queue; *end != w; end = &(*end)->next)
                ;
            *end = w->next;
            pthread_mutex_unlock(&t->lock);
            return 0;
        }
        pthread_mutex_unlock(&t->lock);
    }
    return 1; /* fpt_turn_give() made it the holder */
}

void fpt_turn_give(struct fpt_turn *t) {
    struct fpt_turn_waiter *next;
    pthread_mutex_lock(&t->lock);
    if ((next = t->queue) != NULL) {
        t->queue = next->next;
        atomic_store(&next->since, now_ns());
        atomic_store_explicit(&t->holder, next, memory_order_relaxed);
        atomic_store(&next->granted, 1);
        futex(&next->granted, FUTEX_WAKE_PRIVATE, 1, NULL);
    } else {
        t->taken = 0;
        atomic_store_explicit(&t->holder, NULL, memory_order_relaxed);
    }
    pthread_mutex_unlock(&t->lock);
}
