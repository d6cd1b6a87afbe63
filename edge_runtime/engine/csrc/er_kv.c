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

int er_engine_kv_read(er_engine *e, int seq, int n, int ld, uint16_t *k, uint16_t *v) {
    if (check_rows(e, seq, n, ld, k, v) != ER_OK) return ER_ERR_ARG;
    const size_t row = (size_t)n * e->kv_dim, stride = (size_t)ld * e->kv_dim;
    for (int l = 0; l < e->cfg.n_layers; l++) {
        memcpy(k + (size_t)l * stride, er_kv_rows(e, e->k_cache, seq, l), row * sizeof(uint16_t));
        memcpy(v + (size_t)l * stride, er_kv_rows(e, e->v_cache, seq, l), row * sizeof(uint16_t));
    }
    return ER_OK;
}

int er_engine_kv_write(er_engine *e, int seq, int n, int ld, const uint16_t *k, const uint16_t *v) {
    if (check_rows(e, seq, n, ld, k, v) != ER_OK) return ER_ERR_ARG;
    const size_t row = (size_t)n * e->kv_dim, stride = (size_t)ld * e->kv_dim;
    for (int l = 0; l < e->cfg.n_layers; l++) {
        memcpy(er_kv_rows(e, e->k_cache, seq, l), k + (size_t)l * stride, row * sizeof(uint16_t));
        memcpy(er_kv_rows(e, e->v_cache, seq, l), v + (size_t)l * stride, row * sizeof(uint16_t));
    }
    return ER_OK;
}

int er_engine_n_seq(const er_engine *e) { return e->n_seq; }
