#define _POSIX_C_SOURCE 200809L
/* The engine's lifecycle: shape checks, the run state allocated up front, the RoPE tables, the
 * thread pool (see er_engine.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "er_engine_state.h"

/* ---------------------------------------------------------------------------------------
 * Lifecycle.
 * ------------------------------------------------------------------------------------- */

static int check_i2s(const er_i2s_tensor *t, int rows, int cols, const char *what, int l, char *err,
                     size_t err_len) {
    if (!t->codes || t->rows != rows || t->cols != cols || cols % ER_I2S_GROUP != 0 || !(t->scale > 0.0f) ||
        !isfinite(t->scale) || (t->type != ER_GGML_TYPE_I2_S && t->type != ER_GGML_TYPE_TQ1_S)) {
        snprintf(err, err_len,
                 "layer %d %s: expected I2_S or TQ1_S (%d, %d) with a positive finite scale, got type %d "
                 "(%d, %d) scale %g",
                 l, what, rows, cols, t->type, t->rows, t->cols, (double)t->scale);
        return 0;
    }
    return 1;
}

static void *alloc_state(er_engine *e, size_t n_bytes) {
    /* 64-byte aligned, zeroed */
    void *p = NULL;
    size_t sz = (n_bytes + 63) / 64 * 64;
    if (sz == 0) sz = 64;
    if (posix_memalign(&p, 64, sz) != 0) return NULL;
    memset(p, 0, sz);
    e->state_bytes += sz;
    return p;
}

int er_engine_create(er_engine **out, const er_config *cfg, const er_weights *w, const er_kernels *kernels,
                     int n_ctx, int n_batch, int n_seq, int n_threads, char *err, size_t err_len) {
    *out = NULL;
    const er_config *c = cfg;
    if (c->n_vocab < 1 || c->dim < 1 || c->n_layers < 1 || c->n_heads < 1 || c->n_kv_heads < 1 ||
        c->head_dim < 2 || c->head_dim % 2 != 0 || c->ffn_dim < 1 || c->n_heads % c->n_kv_heads != 0 ||
        c->dim % ER_I2S_GROUP != 0 || c->ffn_dim % ER_I2S_GROUP != 0 ||
        (c->n_heads * c->head_dim) % ER_I2S_GROUP != 0) {
        snprintf(err, err_len, "unsupported model shape: dim %d, ffn %d, heads %d/%d, head_dim %d", c->dim,
                 c->ffn_dim, c->n_heads, c->n_kv_heads, c->head_dim);
        return ER_ERR_ARG;
    }
    if (n_ctx < 1 || n_batch < 1 || n_seq < 1 || n_threads < 1 || !kernels) {
        snprintf(err, err_len, "invalid n_ctx %d / n_batch %d / n_seq %d / n_threads %d", n_ctx, n_batch, n_seq,
                 n_threads);
        return ER_ERR_ARG;
    }
    const int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    const int types_ok = (w->tok_embd_type == ER_TYPE_F32 || w->tok_embd_type == ER_TYPE_F16 ||
                          w->tok_embd_type == ER_TYPE_Q8_0 || w->tok_embd_type == ER_TYPE_Q4_0) &&
                         (w->output_type == ER_TYPE_F32 || w->output_type == ER_TYPE_F16 ||
                          w->output_type == ER_TYPE_Q8_0 || w->output_type == ER_TYPE_Q4_0);
    if (!types_ok || !w->tok_embd || !w->output || !w->output_norm || !w->layers || c->dim % 32 != 0) {
        snprintf(err, err_len, "unsupported embedding/head types %d/%d or missing tensors", w->tok_embd_type,
                 w->output_type);
        return ER_ERR_ARG;
    }
    for (int l = 0; l < c->n_layers; l++) {
        const er_layer_weights *L = &w->layers[l];
        if (!L->attn_norm || !L->attn_sub_norm || !L->ffn_norm || !L->ffn_sub_norm) {
            snprintf(err, err_len, "layer %d: missing norm weights", l);
            return ER_ERR_ARG;
        }
        if (!check_i2s(&L->wq, qd, c->dim, "attn_q", l, err, err_len) ||
            !check_i2s(&L->wk, kvd, c->dim, "attn_k", l, err, err_len) ||
            !check_i2s(&L->wv, kvd, c->dim, "attn_v", l, err, err_len) ||
            !check_i2s(&L->wo, c->dim, qd, "attn_output", l, err, err_len) ||
            !check_i2s(&L->w_gate, c->ffn_dim, c->dim, "ffn_gate", l, err, err_len) ||
            !check_i2s(&L->w_up, c->ffn_dim, c->dim, "ffn_up", l, err, err_len) ||
            !check_i2s(&L->w_down, c->dim, c->ffn_dim, "ffn_down", l, err, err_len))
            return ER_ERR_ARG;
    }
    if (qd != c->dim) {
        /* attn_sub_norm has size dim in BitNet; the attention output width must match it */
        snprintf(err, err_len, "n_heads * head_dim (%d) must equal dim (%d)", qd, c->dim);
        return ER_ERR_ARG;
    }

    er_engine *e = (er_engine *)calloc(1, sizeof(er_engine));
    if (!e) goto nomem;
    e->cfg = *c;
    e->w = *w;
    e->k = kernels;
    e->n_ctx = n_ctx;
    e->n_batch = n_batch;
    e->n_seq = n_seq;
    e->q_dim = qd;
    e->kv_dim = kvd;
    atomic_init(&e->abort_flag, 0);
    e->layers = (er_layer_weights *)malloc(sizeof(er_layer_weights) * c->n_layers);
    if (!e->layers) goto nomem;
    memcpy(e->layers, w->layers, sizeof(er_layer_weights) * c->n_layers);
    e->w.layers = e->layers;

    const size_t T = (size_t)n_batch;
    size_t wide = (size_t)c->dim;
    if ((size_t)qd > wide) wide = qd;
    if ((size_t)c->ffn_dim > wide) wide = c->ffn_dim;
    size_t acc_rows = (size_t)qd + 2 * (size_t)kvd;
    if (2 * (size_t)c->ffn_dim > acc_rows) acc_rows = 2 * (size_t)c->ffn_dim;
    e->x = alloc_state(e, sizeof(float) * T * c->dim);
    e->xb = alloc_state(e, sizeof(float) * T * wide);
    e->q = alloc_state(e, sizeof(float) * T * qd);
    e->kv_new = alloc_state(e, sizeof(float) * T * 2 * kvd);
    e->hb = alloc_state(e, sizeof(float) * T * c->ffn_dim);
    e->hb2 = alloc_state(e, sizeof(float) * T * c->ffn_dim);
    e->act_q = alloc_state(e, T * wide);
    e->act_s = alloc_state(e, sizeof(float) * T);
    e->acc = alloc_state(e, sizeof(int32_t) * T * acc_rows);
    e->att = alloc_state(e, sizeof(float) * (size_t)n_threads * ATT_MAX_HEADS * n_ctx);
    e->rope_cos = alloc_state(e, sizeof(float) * (size_t)n_ctx * (c->head_dim / 2));
    e->rope_sin = alloc_state(e, sizeof(float) * (size_t)n_ctx * (c->head_dim / 2));
    const size_t head_rows = T < ER_MAX_BATCH_WANT ? T : ER_MAX_BATCH_WANT;
    e->head_x = alloc_state(e, sizeof(float) * head_rows * c->dim);
    e->head_xq = alloc_state(e, sizeof(er_block_q8_0) * head_rows * (c->dim / ER_QK8_0));
    e->tok_pos = alloc_state(e, sizeof(int32_t) * T);
    e->tok_seq = alloc_state(e, sizeof(int32_t) * T);
    e->k_cache = alloc_state(e, sizeof(uint16_t) * (size_t)n_seq * c->n_layers * n_ctx * kvd);
    e->v_cache = alloc_state(e, sizeof(uint16_t) * (size_t)n_seq * c->n_layers * n_ctx * kvd);
    if (!e->x || !e->xb || !e->q || !e->kv_new || !e->hb || !e->hb2 || !e->act_q || !e->act_s ||
        !e->acc || !e->att || !e->rope_cos || !e->rope_sin || !e->head_x || !e->head_xq || !e->tok_pos || !e->tok_seq || !e->k_cache ||
        !e->v_cache)
        goto nomem;

    /* inv_freq_i = theta^(-2i/d) and angle = pos * inv_freq, both rounded to f32 as the reference does */
    const int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        const float inv_freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
        for (int p = 0; p < n_ctx; p++) {
            const float ang = (float)p * inv_freq;
            e->rope_cos[(size_t)p * half + i] = cosf(ang);
            e->rope_sin[(size_t)p * half + i] = sinf(ang);
        }
    }

    e->pool = er_pool_create(n_threads);
    if (!e->pool) goto nomem;
    e->n_threads = er_pool_size(e->pool);
    *out = e;
    return ER_OK;

nomem:
    snprintf(err, err_len, "out of memory allocating the run state (n_ctx %d, n_batch %d, n_seq %d)", n_ctx, n_batch,
             n_seq);
    er_engine_free(e);
    return ER_ERR_NOMEM;
}

void er_engine_abort(er_engine *e, int flag) { atomic_store(&e->abort_flag, flag ? 1 : 0); }
const char *er_engine_error(const er_engine *e) { return e->err; }
const char *er_engine_kernel_name(const er_engine *e) { return e->k->name; }
int er_engine_n_threads(const er_engine *e) { return e->n_threads; }
size_t er_engine_state_bytes(const er_engine *e) { return e->state_bytes; }

void er_engine_free(er_engine *e) {
    if (!e) return;
    er_pool_free(e->pool);
    free(e->layers);
    free(e->x);
    free(e->xb);
    free(e->q);
    free(e->kv_new);
    free(e->hb);
    free(e->hb2);
    free(e->act_q);
    free(e->act_s);
    free(e->acc);
    free(e->att);
    free(e->rope_cos);
    free(e->rope_sin);
    free(e->head_x);
    free(e->head_xq);
    free(e->tok_pos);
    free(e->tok_seq);
    free(e->k_cache);
    free(e->v_cache);
    free(e);
}
