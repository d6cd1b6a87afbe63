/* Copies of a sequence's KV rows out of and into the cache (see er_engine.h): what a prompt
 * cache snapshots and restores. The rows are the cache's own f16 bits, so a restored prefix
 * continues exactly as if it had been evaluated. */
#include <stdio.h>
#include <string.h>

#include "er_engine_state.h"

static int check_rows(er_engine *e, int seq, int n, int ld, const void *k, const void *v) {
    if (seq < 0 || seq >= e->n_seq || n < 0 || n > e->n_ctx || ld < n || (n > 0 && (!k || !v))) {
        snprintf(e->err, sizeof(e->err), "KV rows 0..%d of sequence %d: outside %d sequences of %d positions",
                 n - 1, seq, e->n_seq, e->n_ctx);
        return ER_ERR_ARG;
    }
    return ER_OK;
}

/* One copy between a sequence's rows and a caller's (n_layers, ld, kv_dim) K and V arrays; the
 * threads of the pool take the layers in turn (a restored 1,500-token 2B4T prefix is 115 MB). */
typedef struct {
    er_engine *e;
    int seq, n, ld, to_cache;
    uint16_t *k, *v;             /* the caller's arrays (read from when to_cache) */
} kv_copy_job;

static void kv_copy_task(void *ctx, int ith, int nth) {
    const kv_copy_job *j = (const kv_copy_job *)ctx;
    er_engine *e = j->e;
    const size_t row = (size_t)j->n * e->kv_dim * sizeof(uint16_t), stride = (size_t)j->ld * e->kv_dim;
    for (int l = ith; l < e->cfg.n_layers; l += nth) {
        uint16_t *kc = er_kv_rows(e, e->k_cache, j->seq, l), *vc = er_kv_rows(e, e->v_cache, j->seq, l);
        uint16_t *ko = j->k + (size_t)l * stride, *vo = j->v + (size_t)l * stride;
        memcpy(j->to_cache ? kc : ko, j->to_cache ? ko : kc, row);
        memcpy(j->to_cache ? vc : vo, j->to_cache ? vo : vc, row);
    }
}

static int kv_copy(er_engine *e, int seq, int n, int ld, uint16_t *k, uint16_t *v, int to_cache) {
    if (check_rows(e, seq, n, ld, k, v) != ER_OK) return ER_ERR_ARG;
    if (n == 0) return ER_OK;
    kv_copy_job j = {e, seq, n, ld, to_cache, k, v};
    er_pool_run(e->pool, kv_copy_task, &j);
    return ER_OK;
}

int er_engine_kv_read(er_engine *e, int seq, int n, int ld, uint16_t *k, uint16_t *v) {
    return kv_copy(e, seq, n, ld, k, v, 0);
}

int er_engine_kv_write(er_engine *e, int seq, int n, int ld, const uint16_t *k, const uint16_t *v) {
    return kv_copy(e, seq, n, ld, (uint16_t *)k, (uint16_t *)v, 1); /* only read from */
}

int er_engine_n_seq(const er_engine *e) { return e->n_seq; }
