/* The engine's run state, shared by the C files of the engine (not part of the public API). */
#ifndef ER_ENGINE_STATE_H
#define ER_ENGINE_STATE_H

#include <stdatomic.h>

#include "er_engine.h"
#include "er_threadpool.h"

#define ER_ROW_ALIGN 16 /* rows handed to one thread come in multiples of this */

/* Query heads per attention work item: the heads of one GQA group read the same K and V rows,
 * so an item of several heads converts each fp16 row once for all of them. */
#define ATT_MAX_HEADS 4

struct er_engine {
    er_config cfg;
    er_weights w;
    er_layer_weights *layers;
    const er_kernels *k;
    er_pool *pool;
    er_task_fn attention; /* er_attention_select(k) */
    int n_ctx, n_batch, n_threads, n_seq;
    int q_dim, kv_dim;
    atomic_int abort_flag;
    char err[256];

    /* run state; T = n_batch */
    float *x;         /* (T, dim) residual stream */
    float *xb;        /* (T, max(dim, q_dim)) normed input / attention output */
    float *q;         /* (T, q_dim) */
    float *kv_new;    /* (T, 2 * kv_dim) k then v of the batch */
    float *hb;        /* (T, ffn_dim) gate, then relu(gate)^2 * up */
    float *hb2;       /* (T, ffn_dim) up */
    int8_t *act_q;    /* (T, max(dim, q_dim, ffn_dim)) quantized activations */
    float *act_s;     /* (T,) activation scales */
    int32_t *acc;     /* (T, max rows of a fused region) int32 dot products */
    float *att;       /* (n_threads, n_ctx) attention scores */
    float *rope_cos;  /* (n_ctx, head_dim / 2) */
    float *rope_sin;  /* (n_ctx, head_dim / 2) */
    float *head_x;    /* (T, dim) final normed hidden states of the tokens that want logits */
    er_block_q8_0 *head_xq; /* (T, dim / 32) */
    int32_t *tok_pos; /* (T,) position of each token of the batch */
    int32_t *tok_seq; /* (T,) KV sequence of each token of the batch */
    uint16_t *k_cache; /* (n_seq, n_layers, n_ctx, kv_dim) f16 */
    uint16_t *v_cache; /* (n_seq, n_layers, n_ctx, kv_dim) f16 */
    size_t state_bytes;
};

er_task_fn er_attention_select(const er_kernels *k);

/* K (or V) rows of sequence seq, layer l: (n_ctx, kv_dim) */
static inline uint16_t *er_kv_rows(const er_engine *e, uint16_t *cache, int seq, int l) {
    return cache + ((size_t)seq * e->cfg.n_layers + (size_t)l) * (size_t)e->n_ctx * e->kv_dim;
}

#endif
