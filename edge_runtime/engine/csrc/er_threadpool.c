/* Pool design: a generation counter announces a region; workers spin on it for a short while
 * (regions come back-to-back inside a forward pass, so sleeping between them costs more than
 * the work of a small matrix), then yield the CPU for a while, then block on a condition
 * variable so an idle service uses no CPU. Every wait yields after a short spin: on a loaded or
 * oversubscribed machine a spinning thread would otherwise burn the time slice that the thread
 * it waits for needs. */
#define _GNU_SOURCE

#include "er_threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ER_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define ER_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define ER_CPU_RELAX() ((void)0)
#endif

#define ER_SPIN_ITERS 2000        /* busy-wait iterations before yielding */
#define ER_YIELD_NS 2000000LL     /* then sched_yield for up to 2 ms before sleeping */

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

typedef struct {
    er_pool *pool;
    int ith;
} er_worker_arg;

struct er_pool {
    int n;
    pthread_t *threads;
    er_worker_arg *args;
    atomic_uint generation;   /* bumped once per region */
    atomic_int pending;       /* workers (excluding caller) still running the region */
    atomic_int stop;
    er_task_fn fn;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int sleepers;
};

static void *worker_main(void *arg) {
    er_worker_arg *a = (er_worker_arg *)arg;
    er_pool *p = a->pool;
    /* generation is 0 at creation; a worker that starts late must still run region 1 */
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        long long yield_start = 0;
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_acquire)) {
            if (++spins < ER_SPIN_ITERS) {
                ER_CPU_RELAX();
                continue;
            }
            if (yield_start == 0) yield_start = now_ns();
            if (now_ns() - yield_start < ER_YIELD_NS) {
                sched_yield();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
            yield_start = 0;
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
        seen = g;
        p->fn(p->ctx, a->ith, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
    }
}

er_pool *er_pool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    er_pool *p = (er_pool *)calloc(1, sizeof(er_pool));
    if (!p) return NULL;
    p->n = n_threads;
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->sleepers, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->threads = (pthread_t *)calloc((size_t)n_threads, sizeof(pthread_t));
        p->args = (er_worker_arg *)calloc((size_t)n_threads, sizeof(er_worker_arg));
        if (!p->threads || !p->args) {
            er_pool_free(p);
            return NULL;
        }
        for (int i = 1; i < n_threads; i++) {
            p->args[i].pool = p;
            p->args[i].ith = i;
            if (pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]) != 0) {
                p->n = i; /* only join what was started */
                er_pool_free(p);
                return NULL;
            }
        }
    }
    return p;
}

int er_pool_size(const er_pool *p) { return p->n; }

void er_pool_run(er_pool *p, er_task_fn fn, void *ctx) {
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: ordered against the sleepers load below */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, p->n);
    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        if (++spins < ER_SPIN_ITERS)
            ER_CPU_RELAX();
        else
            sched_yield();
    }
}

void er_pool_free(er_pool *p) {
    if (!p) return;
    if (p->threads) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stop, 1);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p->args);
    free(p);
}
