/* Taking turns at Python (turn.c): the threads that serve requests over io_uring (the trampolines take it). */
#ifndef FPT_TURN_H
#define FPT_TURN_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct fpt_turn_waiter {
    _Atomic int granted;        /* handed the turn while it waited */
    _Atomic uint64_t since;     /* when it took the turn (CLOCK_MONOTONIC ns): how long the holder has had it */
    struct fpt_turn_waiter *next;
};

struct fpt_turn {
    pthread_mutex_t lock;
    int taken;
    struct fpt_turn_waiter *queue;           /* waiting, oldest first */
    struct fpt_turn_waiter *_Atomic holder;
};

/* Take the turn, waiting behind a holder that has had it for less than FPT_TURN_NS; 1 if taken, 0 if it goes
 * without (the holder may be blocked: a lock wait, a slow SOURCE). */
int fpt_turn_take(struct fpt_turn *t, struct fpt_turn_waiter *w);
/* Give it up: to the longest waiting thread, if any. */
void fpt_turn_give(struct fpt_turn *t);
#endif
