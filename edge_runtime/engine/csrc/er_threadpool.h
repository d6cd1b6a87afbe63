/* A small pthread pool for the forward pass: one parallel region at a time, the calling thread
 * takes part as worker 0, workers spin briefly between regions and then sleep. */
#ifndef ER_THREADPOOL_H
#define ER_THREADPOOL_H

/* Runs for ith in [0, nth): each call owns its slice of the work. */
typedef void (*er_task_fn)(void *ctx, int ith, int nth);

typedef struct er_pool er_pool;

/* Returns NULL if threads cannot be created (n_threads < 1 is treated as 1). */
er_pool *er_pool_create(int n_threads);
int er_pool_size(const er_pool *p);
/* Runs fn(ctx, i, n) for every i on n threads and returns when all are done. */
void er_pool_run(er_pool *p, er_task_fn fn, void *ctx);
void er_pool_free(er_pool *p);

#endif
