#define _POSIX_C_SOURCE 200809L
/* The engine's lifecycle: shape checks, the run state allocated up front, the RoPE tables, the
 * thread pool (see er_engine.h). */
#include <math.h>
#include <stdint.h>
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

/* Checks of the config and of the tensor table against the mapped region. Sizes are size_t and
 * every product is checked, so no value in a file or a call can make them wrap. */

/* a * b; clears *ok on overflow */
static size_t mul_size(size_t a, size_t b, int *ok) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) {
        *ok = 0;
        return 0;
    }
    return r;
}

static int check_limits(const er_config *c, int n_ctx, int n_batch, int n_seq, int n_threads, char *err,
                        size_t err_len) {
    const long long ext[] = {c->n_vocab, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim,
                             n_ctx, n_batch, n_seq};
    static const char *const names[] = {"n_vocab", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                                        "ffn_dim", "n_ctx", "n_batch", "n_seq"};
    for (int i = 0; i < 10; i++) {
        if (ext[i] < 1 || ext[i] > ER_MAX_EXTENT) {
            snprintf(err, err_len, "%s = %lld: expected 1..%d", names[i], ext[i], ER_MAX_EXTENT);
            return 0;
        }
    }
    if (n_threads < 1 || n_threads > ER_MAX_THREADS) {
        snprintf(err, err_len, "n_threads = %d: expected 1..%d", n_threads, ER_MAX_THREADS);
        return 0;
    }
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta) || !(c->norm_eps > 0.0f) || !isfinite(c->norm_eps)) {
        snprintf(err, err_len, "rope_theta %g / norm_eps %g: expected finite numbers > 0", (double)c->rope_theta,
                 (double)c->norm_eps);
        return 0;
    }
    /* each factor is <= 2^24, so these 64-bit products cannot overflow */
    const long long qd = (long long)c->n_heads * c->head_dim, kvd = (long long)c->n_kv_heads * c->head_dim;
    long long wide = c->dim > c->ffn_dim ? c->dim : c->ffn_dim;
    if (qd + 2 * kvd > wide) wide = qd + 2 * kvd;
    if (2LL * c->ffn_dim > wide) wide = 2LL * c->ffn_dim;
    const long long products[][2] = {{c->n_vocab, c->dim}, {c->ffn_dim, c->dim}, {qd, c->dim}, {kvd, c->dim},
                                     {n_batch, wide},      {n_ctx, kvd},         {n_ctx, c->head_dim}};
    for (int i = 0; i < 7; i++) {
        if (products[i][0] * products[i][1] > ER_MAX_ELEMENTS) {
            snprintf(err, err_len,
                     "model shape: %lld x %lld elements exceed %lld (vocab %d, dim %d, ffn %d, heads %d/%d x %d, "
                     "n_ctx %d, n_batch %d)",
                     products[i][0], products[i][1], ER_MAX_ELEMENTS, c->n_vocab, c->dim, c->ffn_dim, c->n_heads,
                     c->n_kv_heads, c->head_dim, n_ctx, n_batch);
            return 0;
        }
    }
    return 1;
}

/* The n_bytes at p lie inside the region and p is a multiple of align (from the region start,
 * which is page-aligned for a mapped file). */
static int check_span(const er_weights *w, const void *p, size_t n_bytes, size_t align, const char *what, int l,
                      char *err, size_t err_len) {
    const uintptr_t start = (uintptr_t)w->region, at = (uintptr_t)p;
    if (p && at >= start && at - start <= w->region_size && n_bytes <= w->region_size - (at - start) &&
        (at - start) % align == 0)
        return 1;
    char where[48] = "";
    if (l >= 0) snprintf(where, sizeof(where), "layer %d ", l);
    const long long off = p && at >= start ? (long long)(at - start) : -1LL;
    if (off >= 0 && (size_t)off <= w->region_size && n_bytes <= w->region_size - (size_t)off)
        snprintf(err, err_len, "%s%s: offset %lld is not a multiple of %zu", where, what, off, align);
    else
        snprintf(err, err_len, "%s%s: %zu bytes at offset %lld do not fit the %zu-byte file", where, what, n_bytes,
                 off, w->region_size);
    return 0;
}

/* Bytes of a (rows, cols) embedding/head matrix; 0 for another type. */
static size_t head_bytes(int type, size_t rows, size_t cols, int *ok) {
    switch (type) {
    case ER_TYPE_F32: return mul_size(rows, mul_size(cols, 4, ok), ok);
    case ER_TYPE_F16: return mul_size(rows, mul_size(cols, 2, ok), ok);
    case ER_TYPE_Q8_0: return mul_size(rows, mul_size(cols / ER_QK8_0, sizeof(er_block_q8_0), ok), ok);
    case ER_TYPE_Q4_0: return mul_size(rows, mul_size(cols / ER_QK4_0, sizeof(er_block_q4_0), ok), ok);
    }
    *ok = 0;
    return 0;
}

/* Every tensor the forward pass reads lies inside the region at the size the config implies.
 * Runs after the shape checks, so the I2_S (rows, cols) equal the config's. */
static int check_extents(const er_config *c, const er_weights *w, char *err, size_t err_len) {
    if (!w->region || w->region_size == 0) {
        snprintf(err, err_len, "no weight region (the mapped file) given");
        return 0;
    }
    int ok = 1;
    const size_t embd = head_bytes(w->tok_embd_type, c->n_vocab, c->dim, &ok);
    const size_t head = head_bytes(w->output_type, c->n_vocab, c->dim, &ok);
    if (!ok) {
        snprintf(err, err_len, "token_embd/output: size overflows");
        return 0;
    }
    const size_t f = sizeof(float);
    if (!check_span(w, w->tok_embd, embd, w->tok_embd_type == ER_TYPE_F32 ? 4 : 2, "token_embd", -1, err, err_len) ||
        !check_span(w, w->output, head, w->output_type == ER_TYPE_F32 ? 4 : 2, "output", -1, err, err_len) ||
        !check_span(w, w->output_norm, f * (size_t)c->dim, f, "output_norm", -1, err, err_len))
        return 0;
    for (int l = 0; l < c->n_layers; l++) {
        const er_layer_weights *L = &w->layers[l];
        const er_i2s_tensor *proj[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        static const char *const proj_names[] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                 "ffn_gate", "ffn_up", "ffn_down"};
        if (!check_span(w, L->attn_norm, f * (size_t)c->dim, f, "attn_norm", l, err, err_len) ||
            !check_span(w, L->attn_sub_norm, f * (size_t)c->dim, f, "attn_sub_norm", l, err, err_len) ||
            !check_span(w, L->ffn_norm, f * (size_t)c->dim, f, "ffn_norm", l, err, err_len) ||
            !check_span(w, L->ffn_sub_norm, f * (size_t)c->ffn_dim, f, "ffn_sub_norm", l, err, err_len))
            return 0;
        for (int i = 0; i < 7; i++) {
            /* rows * cols <= ER_MAX_ELEMENTS (check_limits) */
            const size_t row_bytes = proj[i]->type == ER_GGML_TYPE_TQ1_S ? (size_t)ER_TQ1_ROW_BYTES(proj[i]->cols)
                                                                         : (size_t)proj[i]->cols / 4;
            const size_t n = (size_t)proj[i]->rows * row_bytes;
            if (!check_span(w, proj[i]->codes, n, 1, proj_names[i], l, err, err_len)) return 0;
        }
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
    if (!cfg || !w || !kernels || !check_limits(c, n_ctx, n_batch, n_seq, n_threads, err, err_len)) {
        if (!cfg || !w || !kernels) snprintf(err, err_len, "missing config, weights or kernels");
        return ER_ERR_ARG;
    }
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
    if (!check_extents(c, w, err, err_len)) return ER_ERR_ARG;

    er_engine *e = (er_engine *)calloc(1, sizeof(er_engine));
    if (!e) goto nomem;
    e->cfg = *c;
    e->w = *w;
    e->k = kernels;
    e->attention = er_attention_select(kernels);
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
    int kv_ok = 1; /* n_ctx * kvd <= ER_MAX_ELEMENTS (check_limits); n_seq and n_layers can still make it wrap */
    const size_t kv_bytes = mul_size(mul_size(sizeof(uint16_t) * (size_t)n_ctx * kvd, (size_t)c->n_layers, &kv_ok),
                                     (size_t)n_seq, &kv_ok);
    if (!kv_ok) {
        snprintf(err, err_len, "KV cache of %d sequences x %d layers x %d positions overflows", n_seq, c->n_layers,
                 n_ctx);
        er_engine_free(e);
        return ER_ERR_NOMEM;
    }
    e->k_cache = alloc_state(e, kv_bytes);
    e->v_cache = alloc_state(e, kv_bytes);
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
