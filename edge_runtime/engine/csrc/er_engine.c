#define _POSIX_C_SOURCE 200809L
/* BitNet b1.58 forward pass (see er_engine.h). Per layer, for a batch of T tokens:
 *   h = x + Wo · sub_norm_a(attention(rope(Wq·n), rope(Wk·n), Wv·n)),   n = attn_norm(x)
 *   y = h + Wdown · sub_norm_f(relu(Wgate·z)^2 * (Wup·z)),               z = ffn_norm(h)
 * where every W· is a BitLinear: int8 per-token activations, ternary weights, one float scale. */
#include "er_engine.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "er_threadpool.h"

#define ER_ROW_ALIGN 16 /* rows handed to one thread come in multiples of this */

struct er_engine {
    er_config cfg;
    er_weights w;
    er_layer_weights *layers;
    const er_kernels *k;
    er_pool *pool;
    int n_ctx, n_batch, n_threads;
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
    float *head_x;    /* (dim,) final normed hidden state of one token */
    er_block_q8_0 *head_xq; /* (dim / 32,) */
    uint16_t *k_cache; /* (n_layers, n_ctx, kv_dim) f16 */
    uint16_t *v_cache; /* (n_layers, n_ctx, kv_dim) f16 */
    size_t state_bytes;
};

static inline float f16(uint16_t h) { return er_fp16_to_fp32_inline(h); }

/* Attention dot products in 8 interleaved partial sums (lane l adds elements i = l mod 8),
 * added up in a fixed order. Written with GCC vector types: element-wise operations with the
 * same rounding on every target, vectorized or not, so the result does not depend on the ISA. */
#if defined(__GNUC__) && !defined(__clang__)
/* the helpers below are static inline: the ABI note about passing 32-byte vectors is moot */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float er_v8f __attribute__((vector_size(32)));
typedef uint32_t er_v8u __attribute__((vector_size(32)));
typedef uint16_t er_v8h __attribute__((vector_size(16)));

/* 8 fp16 values -> f32, the same bits as er_fp16_to_fp32_inline */
static inline er_v8f f16x8(const uint16_t *p) {
    er_v8h h;
    memcpy(&h, p, sizeof(h));
    const er_v8u x = __builtin_convertvector(h, er_v8u);
    const er_v8u em = (x & 0x7fffu) << 13;
    const er_v8u inf_nan = (er_v8u)((x & 0x7c00u) == 0x7c00u);
    const er_v8u scaled = (er_v8u)((er_v8f)em * 0x1p112f);
    return (er_v8f)((scaled & ~inf_nan) | ((0x7f800000u | em) & inf_nan) | ((x & 0x8000u) << 16));
}

static inline er_v8f load8f(const float *p) {
    er_v8f v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* the 8 lanes of a partial-sum vector, added in a fixed order */
static inline float sum8(er_v8f v) {
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

/* Query heads per attention work item: the heads of one GQA group read the same K and V rows,
 * so an item of several heads converts each fp16 row once for all of them. */
#define ATT_MAX_HEADS 4

/* ---------------------------------------------------------------------------------------
 * Small float ops (scalar; compiled without fp contraction so every target rounds alike).
 * ------------------------------------------------------------------------------------- */

/* out = x / sqrt(mean(x^2) + eps) * weight, x (n,) */
static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float inv = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = weight[i] * (x[i] * inv);
}

/* rotate-half RoPE on one head vector v (d,) at table row cs/sn (d/2,) */
static void rope_rotate_half(float *v, const float *cs, const float *sn, int d) {
    const int h = d / 2;
    for (int i = 0; i < h; i++) {
        const float a = v[i], b = v[i + h];
        v[i] = a * cs[i] - b * sn[i];
        v[i + h] = b * cs[i] + a * sn[i];
    }
}

static void embed_row(const er_engine *e, int token, float *out) {
    const int dim = e->cfg.dim;
    switch (e->w.tok_embd_type) {
    case ER_TYPE_F32:
        memcpy(out, (const float *)e->w.tok_embd + (size_t)token * dim, sizeof(float) * dim);
        break;
    case ER_TYPE_F16: {
        const uint16_t *row = (const uint16_t *)e->w.tok_embd + (size_t)token * dim;
        for (int i = 0; i < dim; i++) out[i] = f16(row[i]);
        break;
    }
    case ER_TYPE_Q8_0: {
        const er_block_q8_0 *row = (const er_block_q8_0 *)e->w.tok_embd + (size_t)token * (dim / ER_QK8_0);
        for (int b = 0; b < dim / ER_QK8_0; b++) {
            const float d = f16(row[b].d);
            for (int j = 0; j < ER_QK8_0; j++) out[b * ER_QK8_0 + j] = d * row[b].qs[j];
        }
        break;
    }
    case ER_TYPE_Q4_0: {
        const er_block_q4_0 *row = (const er_block_q4_0 *)e->w.tok_embd + (size_t)token * (dim / ER_QK4_0);
        for (int b = 0; b < dim / ER_QK4_0; b++) {
            const float d = f16(row[b].d);
            for (int j = 0; j < ER_QK4_0 / 2; j++) {
                out[b * ER_QK4_0 + j] = d * (float)((row[b].qs[j] & 0x0f) - 8);
                out[b * ER_QK4_0 + j + 16] = d * (float)((row[b].qs[j] >> 4) - 8);
            }
        }
        break;
    }
    }
}

/* ---------------------------------------------------------------------------------------
 * Parallel regions.
 * ------------------------------------------------------------------------------------- */

static void split_rows(int rows, int ith, int nth, int *r0, int *r1) {
    int chunk = (rows + nth - 1) / nth;
    chunk = (chunk + ER_ROW_ALIGN - 1) / ER_ROW_ALIGN * ER_ROW_ALIGN;
    *r0 = ith * chunk < rows ? ith * chunk : rows;
    *r1 = *r0 + chunk < rows ? *r0 + chunk : rows;
}

/* Up to three BitLinears that share one quantized input: out_m (T, rows_m) = W_m · act. */
typedef struct {
    er_engine *e;
    int n_mats, T, k;
    const er_i2s_tensor *W[3];
    float *out[3];
    int ldo[3];
    size_t acc_off[3]; /* each matrix's (T, rows) int32 block inside e->acc */
    int residual;      /* out += W · act (the residual add fused in) instead of out = */
    int relu2_glu;     /* two matrices (gate, up): out[0] = relu(gate)^2 * up on the thread's rows */
} bitlinear_job;

static void bitlinear_task(void *ctx, int ith, int nth) {
    bitlinear_job *j = (bitlinear_job *)ctx;
    er_engine *e = j->e;
    const int T = j->T, k = j->k;
    for (int m = 0; m < j->n_mats; m++) {
        const er_i2s_tensor *W = j->W[m];
        int r0, r1;
        split_rows(W->rows, ith, nth, &r0, &r1);
        if (r1 > r0) {
            const int tq1 = W->type == ER_GGML_TYPE_TQ1_S;
            const uint8_t *wr = W->codes + (size_t)r0 * (tq1 ? ER_TQ1_ROW_BYTES(k) : (size_t)k / 4);
            int32_t *a = e->acc + j->acc_off[m];
            if (T == 1)
                (tq1 ? e->k->tq1_gemv : e->k->i2s_gemv)(wr, e->act_q, a + r0, r1 - r0, k);
            else
                (tq1 ? e->k->tq1_gemm : e->k->i2s_gemm)(wr, e->act_q, k, a + r0, W->rows, r1 - r0, k, T);
            for (int t = 0; t < T; t++) {
                /* y = (W_t · x_q) * scale_w / s_x */
                const float f = W->scale / e->act_s[t];
                const int32_t *at = a + (size_t)t * W->rows;
                float *o = j->out[m] + (size_t)t * j->ldo[m];
                if (j->residual)
                    for (int r = r0; r < r1; r++) o[r] += (float)at[r] * f;
                else
                    for (int r = r0; r < r1; r++) o[r] = (float)at[r] * f;
            }
        }
    }
    if (j->relu2_glu) { /* gate and up have the same rows, so this thread owns rows r0..r1 of both */
        int r0, r1;
        split_rows(j->W[0]->rows, ith, nth, &r0, &r1);
        for (int t = 0; t < T; t++) {
            float *g = j->out[0] + (size_t)t * j->ldo[0];
            const float *u = j->out[1] + (size_t)t * j->ldo[1];
            for (int r = r0; r < r1; r++) {
                const float v = g[r] > 0.0f ? g[r] : 0.0f;
                g[r] = v * v * u[r];
            }
        }
    }
}

/* The input of a BitLinear, per token (tokens spread over the threads): y = rmsnorm(x) * weight
 * into y (T, n), then quantized into e->act_q (T, n) and e->act_s. */
typedef struct {
    er_engine *e;
    const float *x, *weight;
    float *y;
    int T, n;
} norm_quant_job;

static void norm_quant_task(void *ctx, int ith, int nth) {
    norm_quant_job *j = (norm_quant_job *)ctx;
    er_engine *e = j->e;
    const size_t n = (size_t)j->n;
    for (int t = ith; t < j->T; t += nth) {
        rmsnorm(j->y + t * n, j->x + t * n, j->weight, j->n, e->cfg.norm_eps);
        e->act_s[t] = e->k->quantize_row_i8(j->y + t * n, e->act_q + t * n, j->n);
    }
}

/* A per-token task over T tokens: one token runs on the calling thread (no hand-off), a batch on
 * the pool. */
static void run_per_token(er_engine *e, int T, er_task_fn fn, void *ctx) {
    if (T == 1)
        fn(ctx, 0, 1);
    else
        er_pool_run(e->pool, fn, ctx);
}

static void norm_quant(er_engine *e, float *y, const float *x, const float *weight, int T, int n) {
    norm_quant_job j = {e, x, weight, y, T, n};
    run_per_token(e, T, norm_quant_task, &j);
}

static void run_bitlinear(er_engine *e, int T, int n_mats, const er_i2s_tensor *const *W,
                          float *const *out, const int *ldo, int residual, int relu2_glu) {
    bitlinear_job j;
    memset(&j, 0, sizeof(j));
    j.e = e;
    j.residual = residual;
    j.relu2_glu = relu2_glu;
    j.T = T;
    j.n_mats = n_mats;
    j.k = W[0]->cols;
    size_t off = 0;
    for (int m = 0; m < n_mats; m++) {
        j.acc_off[m] = off;
        off += (size_t)T * W[m]->rows;
        j.W[m] = W[m];
        j.out[m] = out[m];
        j.ldo[m] = ldo[m];
    }
    er_pool_run(e->pool, bitlinear_task, &j);
}

/* RoPE on the batch's queries and keys, and the keys and values into the f16 cache of layer l,
 * per token (tokens spread over the threads). */
typedef struct {
    er_engine *e;
    int l, T, pos;
} rope_job;

static void rope_task(void *ctx, int ith, int nth) {
    rope_job *j = (rope_job *)ctx;
    er_engine *e = j->e;
    const er_config *c = &e->cfg;
    const int hd = c->head_dim, qd = e->q_dim, kvd = e->kv_dim;
    uint16_t *kc = e->k_cache + (size_t)j->l * e->n_ctx * kvd;
    uint16_t *vc = e->v_cache + (size_t)j->l * e->n_ctx * kvd;
    for (int t = ith; t < j->T; t += nth) {
        const int p = j->pos + t;
        const float *cs = e->rope_cos + (size_t)p * (hd / 2), *sn = e->rope_sin + (size_t)p * (hd / 2);
        for (int h = 0; h < c->n_heads; h++) rope_rotate_half(e->q + (size_t)t * qd + (size_t)h * hd, cs, sn, hd);
        float *kt = e->kv_new + (size_t)t * 2 * kvd, *vt = kt + kvd;
        for (int h = 0; h < c->n_kv_heads; h++) rope_rotate_half(kt + (size_t)h * hd, cs, sn, hd);
        for (int i = 0; i < kvd; i++) {
            kc[(size_t)p * kvd + i] = er_fp32_to_fp16(kt[i]);
            vc[(size_t)p * kvd + i] = er_fp32_to_fp16(vt[i]);
        }
    }
}

/* Attention for T tokens at positions pos..pos+T-1 over the cache of layer l. */
typedef struct {
    er_engine *e;
    int l, T, pos;
    int heads_per_item; /* 1 .. ATT_MAX_HEADS */
} attention_job;

/* On x86-64 the attention loops are also compiled for AVX2 (twice as wide as the SSE2 baseline)
 * and picked at load time; both clones compute the same operations in the same order. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ER_ATTENTION_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ER_ATTENTION_CLONES
#endif

ER_ATTENTION_CLONES static void attention_task(void *ctx, int ith, int nth) {
    attention_job *j = (attention_job *)ctx;
    er_engine *e = j->e;
    const int hd = e->cfg.head_dim, n_kv = e->cfg.n_kv_heads;
    const int group = e->cfg.n_heads / n_kv;
    const int per_item = j->heads_per_item;
    const int chunks = (group + per_item - 1) / per_item;
    const size_t n_ctx = (size_t)e->n_ctx;
    const float scale = 1.0f / sqrtf((float)hd);
    float *att = e->att + (size_t)ith * ATT_MAX_HEADS * n_ctx;
    const uint16_t *kc = e->k_cache + (size_t)j->l * n_ctx * e->kv_dim;
    const uint16_t *vc = e->v_cache + (size_t)j->l * n_ctx * e->kv_dim;
    for (int idx = ith; idx < j->T * n_kv * chunks; idx += nth) {
        /* one item: token t, query heads h0 .. h0 + nh - 1, which all read kv head kvh */
        const int t = idx / (n_kv * chunks), kvh = idx / chunks % n_kv;
        const int h0 = kvh * group + idx % chunks * per_item;
        const int nh = per_item < kvh * group + group - h0 ? per_item : kvh * group + group - h0;
        const int n_pos = j->pos + t + 1; /* causal: positions 0 .. pos+t */
        const float *q0 = e->q + (size_t)t * e->q_dim + (size_t)h0 * hd;
        float mx[ATT_MAX_HEADS], inv[ATT_MAX_HEADS], a[ATT_MAX_HEADS];
        for (int g = 0; g < nh; g++) mx[g] = -INFINITY;
        for (int p = 0; p < n_pos; p++) {
            const uint16_t *kr = kc + (size_t)p * e->kv_dim + (size_t)kvh * hd;
            er_v8f acc[ATT_MAX_HEADS];
            for (int g = 0; g < nh; g++) acc[g] = (er_v8f){0.0f};
            int i = 0;
            for (; i + 8 <= hd; i += 8) {
                const er_v8f k8 = f16x8(kr + i); /* converted once for every head of the item */
                for (int g = 0; g < nh; g++) acc[g] += load8f(q0 + (size_t)g * hd + i) * k8;
            }
            for (int g = 0; g < nh; g++) {
                float s = sum8(acc[g]);
                for (int r = i; r < hd; r++) s += q0[(size_t)g * hd + r] * f16(kr[r]);
                s *= scale;
                att[g * n_ctx + p] = s;
                mx[g] = s > mx[g] ? s : mx[g];
            }
        }
        for (int g = 0; g < nh; g++) {
            float *ag = att + g * n_ctx, sum = 0.0f;
            for (int p = 0; p < n_pos; p++) {
                ag[p] = expf(ag[p] - mx[g]);
                sum += ag[p];
            }
            inv[g] = 1.0f / sum;
        }
        float *out0 = e->xb + (size_t)t * e->q_dim + (size_t)h0 * hd;
        for (int i = 0; i < nh * hd; i++) out0[i] = 0.0f;
        for (int p = 0; p < n_pos; p++) {
            const uint16_t *vr = vc + (size_t)p * e->kv_dim + (size_t)kvh * hd;
            for (int g = 0; g < nh; g++) a[g] = att[g * n_ctx + p] * inv[g];
            int i = 0;
            for (; i + 8 <= hd; i += 8) {
                const er_v8f v8 = f16x8(vr + i);
                for (int g = 0; g < nh; g++) {
                    float *o = out0 + (size_t)g * hd + i;
                    const er_v8f sum = load8f(o) + a[g] * v8;
                    memcpy(o, &sum, sizeof(sum));
                }
            }
            for (int g = 0; g < nh; g++)
                for (int r = i; r < hd; r++) out0[(size_t)g * hd + r] += a[g] * f16(vr[r]);
        }
    }
}

/* Output head over one token's normed hidden state e->head_x, rows split across threads. */
typedef struct {
    er_engine *e;
    float *logits;
} head_job;

static void head_task(void *ctx, int ith, int nth) {
    head_job *j = (head_job *)ctx;
    er_engine *e = j->e;
    const int dim = e->cfg.dim;
    int r0, r1;
    split_rows(e->cfg.n_vocab, ith, nth, &r0, &r1);
    if (r1 <= r0) return;
    const int n = r1 - r0;
    switch (e->w.output_type) {
    case ER_TYPE_F32: {
        const float *W = (const float *)e->w.output + (size_t)r0 * dim;
        for (int r = 0; r < n; r++) {
            float s = 0.0f;
            for (int i = 0; i < dim; i++) s += W[(size_t)r * dim + i] * e->head_x[i];
            j->logits[r0 + r] = s;
        }
        break;
    }
    case ER_TYPE_F16:
        e->k->f16_gemv((const uint16_t *)e->w.output + (size_t)r0 * dim, e->head_x, j->logits + r0, n, dim);
        break;
    case ER_TYPE_Q8_0:
        e->k->q8_0_gemv((const er_block_q8_0 *)e->w.output + (size_t)r0 * (dim / ER_QK8_0), e->head_xq,
                        j->logits + r0, n, dim);
        break;
    case ER_TYPE_Q4_0:
        e->k->q4_0_gemv((const er_block_q4_0 *)e->w.output + (size_t)r0 * (dim / ER_QK4_0), e->head_xq,
                        j->logits + r0, n, dim);
        break;
    }
}

static void run_head(er_engine *e, const float *x, float *logits) {
    rmsnorm(e->head_x, x, e->w.output_norm, e->cfg.dim, e->cfg.norm_eps);
    if (e->w.output_type == ER_TYPE_Q8_0 || e->w.output_type == ER_TYPE_Q4_0)
        e->k->quantize_row_q8_0(e->head_x, e->head_xq, e->cfg.dim);
    head_job j = {e, logits};
    er_pool_run(e->pool, head_task, &j);
}

/* ---------------------------------------------------------------------------------------
 * Forward pass of one batch.
 * ------------------------------------------------------------------------------------- */

static void forward_layer(er_engine *e, int l, int T, int pos) {
    const er_config *c = &e->cfg;
    const er_layer_weights *L = &e->layers[l];
    const int dim = c->dim, qd = e->q_dim, kvd = e->kv_dim, ffn = c->ffn_dim;

    /* attention block */
    norm_quant(e, e->xb, e->x, L->attn_norm, T, dim);
    {
        const er_i2s_tensor *W[3] = {&L->wq, &L->wk, &L->wv};
        float *out[3] = {e->q, e->kv_new, e->kv_new + kvd};
        const int ldo[3] = {qd, 2 * kvd, 2 * kvd};
        run_bitlinear(e, T, 3, W, out, ldo, 0, 0);
    }
    rope_job rj = {e, l, T, pos};
    run_per_token(e, T, rope_task, &rj);
    /* Work items of up to ATT_MAX_HEADS heads of one GQA group: each K/V row is converted once
     * per item. Heads per item shrink until there are at least 4 items per thread (one token
     * on several threads), so that every thread gets work. */
    const int group = c->n_heads / c->n_kv_heads;
    int per_item = group < ATT_MAX_HEADS ? group : ATT_MAX_HEADS;
    while (per_item > 1 && T * c->n_kv_heads * ((group + per_item - 1) / per_item) < 4 * e->n_threads) per_item--;
    attention_job aj = {e, l, T, pos, per_item};
    er_pool_run(e->pool, attention_task, &aj);
    norm_quant(e, e->xb, e->xb, L->attn_sub_norm, T, qd);
    {
        const er_i2s_tensor *W[1] = {&L->wo};
        float *out[1] = {e->x};
        const int ldo[1] = {dim};
        run_bitlinear(e, T, 1, W, out, ldo, 1, 0); /* x += Wo · ... */
    }

    /* feed-forward block */
    norm_quant(e, e->xb, e->x, L->ffn_norm, T, dim);
    {
        const er_i2s_tensor *W[2] = {&L->w_gate, &L->w_up};
        float *out[2] = {e->hb, e->hb2};
        const int ldo[2] = {ffn, ffn};
        run_bitlinear(e, T, 2, W, out, ldo, 0, 1); /* hb = relu(gate)^2 * up */
    }
    norm_quant(e, e->hb, e->hb, L->ffn_sub_norm, T, ffn);
    {
        const er_i2s_tensor *W[1] = {&L->w_down};
        float *out[1] = {e->x};
        const int ldo[1] = {dim};
        run_bitlinear(e, T, 1, W, out, ldo, 1, 0); /* x += Wdown · ... */
    }
}

int er_engine_eval(er_engine *e, const int32_t *tokens, int n, int pos, float *logits, int all_logits) {
    if (!tokens || n < 1 || pos < 0 || pos > e->n_ctx - n) { /* n_ctx - n cannot overflow; pos + n could */
        snprintf(e->err, sizeof(e->err), "positions %d..%lld do not fit the context of %d tokens", pos,
                 (long long)pos + n - 1, e->n_ctx);
        return ER_ERR_ARG;
    }
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= e->cfg.n_vocab) {
            snprintf(e->err, sizeof(e->err), "token id %d at index %d is outside the vocabulary (0..%d)",
                     tokens[i], i, e->cfg.n_vocab - 1);
            return ER_ERR_ARG;
        }
    }
    const int dim = e->cfg.dim;
    for (int b0 = 0; b0 < n; b0 += e->n_batch) {
        const int T = n - b0 < e->n_batch ? n - b0 : e->n_batch;
        for (int t = 0; t < T; t++) embed_row(e, tokens[b0 + t], e->x + (size_t)t * dim);
        for (int l = 0; l < e->cfg.n_layers; l++) {
            if (atomic_load_explicit(&e->abort_flag, memory_order_relaxed)) {
                snprintf(e->err, sizeof(e->err), "evaluation aborted");
                return ER_ERR_ABORT;
            }
            forward_layer(e, l, T, pos + b0);
        }
        if (logits && all_logits) {
            for (int t = 0; t < T; t++)
                run_head(e, e->x + (size_t)t * dim, logits + (size_t)(b0 + t) * e->cfg.n_vocab);
        } else if (logits && b0 + T == n) {
            run_head(e, e->x + (size_t)(T - 1) * dim, logits);
        }
    }
    return ER_OK;
}

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

static int check_limits(const er_config *c, int n_ctx, int n_batch, int n_threads, char *err, size_t err_len) {
    const long long ext[] = {c->n_vocab, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim,
                             n_ctx, n_batch};
    static const char *const names[] = {"n_vocab", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                                        "ffn_dim", "n_ctx", "n_batch"};
    for (int i = 0; i < 9; i++) {
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
                     int n_ctx, int n_batch, int n_threads, char *err, size_t err_len) {
    *out = NULL;
    const er_config *c = cfg;
    if (!cfg || !w || !kernels || !check_limits(c, n_ctx, n_batch, n_threads, err, err_len)) {
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
    if (n_ctx < 1 || n_batch < 1 || n_threads < 1 || !kernels) {
        snprintf(err, err_len, "invalid n_ctx %d / n_batch %d / n_threads %d", n_ctx, n_batch, n_threads);
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
    e->n_ctx = n_ctx;
    e->n_batch = n_batch;
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
    e->head_x = alloc_state(e, sizeof(float) * c->dim);
    e->head_xq = alloc_state(e, sizeof(er_block_q8_0) * (c->dim / ER_QK8_0));
    e->k_cache = alloc_state(e, sizeof(uint16_t) * (size_t)c->n_layers * n_ctx * kvd);
    e->v_cache = alloc_state(e, sizeof(uint16_t) * (size_t)c->n_layers * n_ctx * kvd);
    if (!e->x || !e->xb || !e->q || !e->kv_new || !e->hb || !e->hb2 || !e->act_q || !e->act_s ||
        !e->acc || !e->att || !e->rope_cos || !e->rope_sin || !e->head_x || !e->head_xq || !e->k_cache ||
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
    snprintf(err, err_len, "out of memory allocating the run state (n_ctx %d, n_batch %d)", n_ctx, n_batch);
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
    free(e->k_cache);
    free(e->v_cache);
    free(e);
}
