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

#include "er_engine_state.h"
#include "er_threadpool.h"


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


/* sum8 of each of 8 partial-sum vectors, as one vector: the same additions, 8 at a time */
static inline er_v8f sum8x8(const er_v8f a[8]) {
    const er_v8u lo4 = {0, 1, 2, 3, 8, 9, 10, 11}, hi4 = {4, 5, 6, 7, 12, 13, 14, 15};
    const er_v8u lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
    const er_v8u lo1 = {0, 4, 2, 6, 8, 12, 10, 14}, hi1 = {1, 5, 3, 7, 9, 13, 11, 15};
    er_v8f b[4], c[2];
    for (int j = 0; j < 4; j++) /* lanes v0+v4 .. v3+v7 of a[2j], then of a[2j+1] */
        b[j] = __builtin_shuffle(a[2 * j], a[2 * j + 1], lo4) + __builtin_shuffle(a[2 * j], a[2 * j + 1], hi4);
    for (int j = 0; j < 2; j++) /* (v0+v4)+(v2+v6), (v1+v5)+(v3+v7) of a[4j], a[4j+2], a[4j+1], a[4j+3] */
        c[j] = __builtin_shuffle(b[2 * j], b[2 * j + 1], lo2) + __builtin_shuffle(b[2 * j], b[2 * j + 1], hi2);
    return __builtin_shuffle(c[0], c[1], lo1) + __builtin_shuffle(c[0], c[1], hi1);
}


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

/* A few tokens (the decode steps of batched requests, up to the variant's gemv_batch_max): each
 * chunk of rows is read from memory once and run through the GEMV for every token while it is in
 * cache. The GEMV and GEMM give the same int32, so a token's result does not depend on which
 * path ran it. */
#define ER_GEMV_CHUNK_ROWS 64 /* a multiple of ER_ROW_ALIGN; 64 rows of ffn_down (k 6912) are 108 KiB */

static void gemv_tokens(const er_kernels *kern, int tq1, const uint8_t *wr, const int8_t *act_q, int32_t *acc,
                        int ldo, int r0, int r1, int k, int T) {
    const size_t row_bytes = tq1 ? (size_t)ER_TQ1_ROW_BYTES(k) : (size_t)k / 4;
    const er_i2s_gemv_fn gemv = tq1 ? kern->tq1_gemv : kern->i2s_gemv;
    for (int c0 = r0; c0 < r1; c0 += ER_GEMV_CHUNK_ROWS) {
        const int n = r1 - c0 < ER_GEMV_CHUNK_ROWS ? r1 - c0 : ER_GEMV_CHUNK_ROWS;
        const uint8_t *w = wr + (size_t)(c0 - r0) * row_bytes;
        for (int t = 0; t < T; t++) gemv(w, act_q + (size_t)t * k, acc + (size_t)t * ldo + c0, n, k);
    }
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
            else if (T <= e->k->gemv_batch_max)
                gemv_tokens(e->k, tq1, wr, e->act_q, a, W->rows, r0, r1, k, T);
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
    int l, T;
} rope_job;

static void rope_task(void *ctx, int ith, int nth) {
    rope_job *j = (rope_job *)ctx;
    er_engine *e = j->e;
    const er_config *c = &e->cfg;
    const int hd = c->head_dim, qd = e->q_dim, kvd = e->kv_dim;
    for (int t = ith; t < j->T; t += nth) {
        const int p = e->tok_pos[t];
        uint16_t *kc = er_kv_rows(e, e->k_cache, e->tok_seq[t], j->l);
        uint16_t *vc = er_kv_rows(e, e->v_cache, e->tok_seq[t], j->l);
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

/* Attention for T tokens, each at its position e->tok_pos[t] over the cache of its sequence
 * e->tok_seq[t], layer l. */
typedef struct {
    er_engine *e;
    int l, T;
    int heads_per_item; /* 1 .. ATT_MAX_HEADS */
} attention_job;

/* The fused multiply-adds of the attention, lane by lane: one rounding each, so the generic
 * version (fmaf, a libm call where the CPU has no FMA) gives the bits of the hardware ones. */
static inline er_v8f fma8(er_v8f a, er_v8f b, er_v8f c) {
    er_v8f r;
    for (int i = 0; i < 8; i++) r[i] = fmaf(a[i], b[i], c[i]);
    return r;
}
static inline er_v8f fma8s(float a, er_v8f b, er_v8f c) {
    er_v8f r;
    for (int i = 0; i < 8; i++) r[i] = fmaf(a, b[i], c[i]);
    return r;
}

#define ER_ATT_NAME attention_task_generic
#define ER_ATT_CVT f16x8
#define ER_ATT_FMA fma8
#define ER_ATT_FMA_S fma8s
#define ER_ATT_ATTRS
#include "er_attention_body.h"
#undef ER_ATT_NAME
#undef ER_ATT_CVT
#undef ER_ATT_FMA
#undef ER_ATT_FMA_S
#undef ER_ATT_ATTRS

/* The same loops with the CPU's own f16 widening (exact, so the same bits as f16x8): on x86-64
 * with AVX2 and F16C, picked at run time; on AArch64 always (fcvtl is in the base ISA). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define ER_ATT_HW_TARGET __attribute__((target("avx2,f16c,fma")))
ER_ATT_HW_TARGET static inline er_v8f f16x8_f16c(const uint16_t *p) {
    return (er_v8f)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
ER_ATT_HW_TARGET static inline er_v8f fma8_hw(er_v8f a, er_v8f b, er_v8f c) {
    return (er_v8f)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
}
ER_ATT_HW_TARGET static inline er_v8f fma8s_hw(float a, er_v8f b, er_v8f c) {
    return (er_v8f)_mm256_fmadd_ps(_mm256_set1_ps(a), (__m256)b, (__m256)c);
}
#define ER_ATT_NAME attention_task_hw
#define ER_ATT_CVT f16x8_f16c
#define ER_ATT_FMA fma8_hw
#define ER_ATT_FMA_S fma8s_hw
#define ER_ATT_ATTRS ER_ATT_HW_TARGET
#include "er_attention_body.h"
#undef ER_ATT_NAME
#undef ER_ATT_ATTRS

/* The AVX-512 version: the same lanes, two positions (or 16 output lanes) per register. */
#define ER_ATT_512_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx2,f16c,fma")))
ER_ATT_512_TARGET static inline __m512 cvt16_rows(const uint16_t *a, const uint16_t *b) {
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a)),
                                                   _mm_loadu_si128((const __m128i *)b), 1));
}
/* raw[g][0..7]: the 8 partial sums of head g at positions 0..7 of kr, four positions a step */
ER_ATT_512_TARGET static inline __attribute__((always_inline)) void
att_qk8_avx512(er_v8f raw[][8], const uint16_t *kr, size_t kv_dim, const float *q0, int hd, const int nh) {
    for (int pp = 0; pp < 8; pp += 4) {
        const uint16_t *r = kr + (size_t)pp * kv_dim;
        __m512 acc[ATT_MAX_HEADS][2];
        for (int g = 0; g < nh; g++) acc[g][0] = acc[g][1] = _mm512_setzero_ps();
        for (int i = 0; i < hd; i += 8) {
            const __m512 k01 = cvt16_rows(r + i, r + kv_dim + i);
            const __m512 k23 = cvt16_rows(r + 2 * kv_dim + i, r + 3 * kv_dim + i);
            for (int g = 0; g < nh; g++) {
                const __m512 qv = _mm512_broadcast_f32x8(_mm256_loadu_ps(q0 + (size_t)g * hd + i));
                acc[g][0] = _mm512_fmadd_ps(qv, k01, acc[g][0]);
                acc[g][1] = _mm512_fmadd_ps(qv, k23, acc[g][1]);
            }
        }
        for (int g = 0; g < nh; g++) {
            _mm512_storeu_ps((float *)&raw[g][pp], acc[g][0]);
            _mm512_storeu_ps((float *)&raw[g][pp + 2], acc[g][1]);
        }
    }
}
/* the output lanes 0 .. 32k - 1 of every head; returns how many */
ER_ATT_512_TARGET static inline __attribute__((always_inline)) int
att_v32_avx512(float *out0, const uint16_t *vc, size_t kv_dim, const float *att, size_t n_ctx, int n_pos, int hd,
               const int nh) {
    int i = 0;
    for (; i + 32 <= hd; i += 32) {
        __m512 o[ATT_MAX_HEADS][2];
        for (int g = 0; g < nh; g++) o[g][0] = o[g][1] = _mm512_setzero_ps();
        for (int p = 0; p < n_pos; p++) {
            const uint16_t *vr = vc + (size_t)p * kv_dim + i;
            const __m512 v0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)vr));
            const __m512 v1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vr + 16)));
            for (int g = 0; g < nh; g++) {
                const __m512 a = _mm512_set1_ps(att[g * n_ctx + p]);
                o[g][0] = _mm512_fmadd_ps(a, v0, o[g][0]);
                o[g][1] = _mm512_fmadd_ps(a, v1, o[g][1]);
            }
        }
        for (int g = 0; g < nh; g++) {
            _mm512_storeu_ps(out0 + (size_t)g * hd + i, o[g][0]);
            _mm512_storeu_ps(out0 + (size_t)g * hd + i + 16, o[g][1]);
        }
    }
    return i;
}
#define ER_ATT_NAME attention_task_avx512
#define ER_ATT_ATTRS ER_ATT_512_TARGET
#define ER_ATT_QK8 att_qk8_avx512
#define ER_ATT_V32 att_v32_avx512
#include "er_attention_body.h"
#undef ER_ATT_QK8
#undef ER_ATT_V32
#define ER_ATT_HW_USABLE() \
    (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma"))
#define ER_ATT_512_USABLE() (ER_ATT_HW_USABLE() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))
#elif defined(__aarch64__)
#include <arm_neon.h>
typedef _Float16 er_v8hf __attribute__((vector_size(16)));
static inline er_v8f f16x8_fcvtl(const uint16_t *p) {
    er_v8hf h;
    memcpy(&h, p, sizeof(h));
    return __builtin_convertvector(h, er_v8f);
}
static inline er_v8f fma8_neon(er_v8f a, er_v8f b, er_v8f c) {
    float32x4_t a2[2], b2[2], c2[2];
    memcpy(a2, &a, sizeof(a));
    memcpy(b2, &b, sizeof(b));
    memcpy(c2, &c, sizeof(c));
    c2[0] = vfmaq_f32(c2[0], a2[0], b2[0]);
    c2[1] = vfmaq_f32(c2[1], a2[1], b2[1]);
    memcpy(&c, c2, sizeof(c));
    return c;
}
static inline er_v8f fma8s_neon(float a, er_v8f b, er_v8f c) {
    float32x4_t b2[2], c2[2];
    memcpy(b2, &b, sizeof(b));
    memcpy(c2, &c, sizeof(c));
    c2[0] = vfmaq_n_f32(c2[0], b2[0], a);
    c2[1] = vfmaq_n_f32(c2[1], b2[1], a);
    memcpy(&c, c2, sizeof(c));
    return c;
}
#define ER_ATT_NAME attention_task_hw
#define ER_ATT_CVT f16x8_fcvtl
#define ER_ATT_FMA fma8_neon
#define ER_ATT_FMA_S fma8s_neon
#define ER_ATT_ATTRS
#include "er_attention_body.h"
#define ER_ATT_HW_USABLE() 1
#endif

/* The attention version of a kernel variant: the reference variant runs the portable one, AVX2
 * the f16c one and the AVX-512 variants the AVX-512 one (each where the CPU has it), so the tests
 * of every variant also cover every attention version; all give the same bits. */
er_task_fn er_attention_select(const er_kernels *k) {
    if (strcmp(k->name, "scalar") == 0) return attention_task_generic;
#ifdef ER_ATT_512_USABLE
    if (strcmp(k->name, "avx2") != 0 && ER_ATT_512_USABLE()) return attention_task_avx512;
#endif
#ifdef ER_ATT_HW_USABLE
    if (ER_ATT_HW_USABLE()) return attention_task_hw;
#endif
    return attention_task_generic;
}

/* Output head over the normed hidden states e->head_x (n_tok, dim): each thread owns a range
 * of vocabulary rows and walks it in blocks of HEAD_BLOCK rows, running every token over a block
 * while it is in cache, so N tokens read the head from memory once. Blocks start at multiples of
 * ER_ROW_ALIGN, so each row is computed exactly as by one token's GEMV over the whole range.
 * A variant with a multi-token Q8_0 head (q8_0_gemm) runs it over the thread's rows instead. */
#define HEAD_BLOCK 64

typedef struct {
    er_engine *e;
    float *logits; /* (n_tok, n_vocab) */
    int n_tok;
} head_job;

static void head_rows(er_engine *e, int t, int r0, int n, float *logits) {
    const int dim = e->cfg.dim;
    const float *x = e->head_x + (size_t)t * dim;
    const er_block_q8_0 *xq = e->head_xq + (size_t)t * (dim / ER_QK8_0);
    switch (e->w.output_type) {
    case ER_TYPE_F32: {
        const float *W = (const float *)e->w.output + (size_t)r0 * dim;
        for (int r = 0; r < n; r++) {
            float s = 0.0f;
            for (int i = 0; i < dim; i++) s += W[(size_t)r * dim + i] * x[i];
            logits[r0 + r] = s;
        }
        break;
    }
    case ER_TYPE_F16:
        e->k->f16_gemv((const uint16_t *)e->w.output + (size_t)r0 * dim, x, logits + r0, n, dim);
        break;
    case ER_TYPE_Q8_0:
        e->k->q8_0_gemv((const er_block_q8_0 *)e->w.output + (size_t)r0 * (dim / ER_QK8_0), xq, logits + r0, n,
                        dim);
        break;
    case ER_TYPE_Q4_0:
        e->k->q4_0_gemv((const er_block_q4_0 *)e->w.output + (size_t)r0 * (dim / ER_QK4_0), xq, logits + r0, n,
                        dim);
        break;
    }
}

static void head_task(void *ctx, int ith, int nth) {
    head_job *j = (head_job *)ctx;
    er_engine *e = j->e;
    int r0, r1;
    split_rows(e->cfg.n_vocab, ith, nth, &r0, &r1);
    if (r1 <= r0) return;
    if (j->n_tok == 1) {
        head_rows(e, 0, r0, r1 - r0, j->logits);
        return;
    }
    if (e->w.output_type == ER_TYPE_Q8_0 && e->k->q8_0_gemm) { /* every token in one pass over the rows */
        const int dim = e->cfg.dim, nb = dim / ER_QK8_0;
        e->k->q8_0_gemm((const er_block_q8_0 *)e->w.output + (size_t)r0 * nb, e->head_xq, j->logits + r0,
                        e->cfg.n_vocab, r1 - r0, dim, j->n_tok);
        return;
    }
    for (int b = r0; b < r1; b += HEAD_BLOCK) {
        const int n = r1 - b < HEAD_BLOCK ? r1 - b : HEAD_BLOCK;
        for (int t = 0; t < j->n_tok; t++) head_rows(e, t, b, n, j->logits + (size_t)t * e->cfg.n_vocab);
    }
}

/* logits (n_tok, n_vocab) of the hidden states x rows rows[0..n_tok) */
static void run_head(er_engine *e, const int *rows, int n_tok, float *logits) {
    const int dim = e->cfg.dim;
    for (int t = 0; t < n_tok; t++) {
        rmsnorm(e->head_x + (size_t)t * dim, e->x + (size_t)rows[t] * dim, e->w.output_norm, dim, e->cfg.norm_eps);
        if (e->w.output_type == ER_TYPE_Q8_0 || e->w.output_type == ER_TYPE_Q4_0)
            e->k->quantize_row_q8_0(e->head_x + (size_t)t * dim, e->head_xq + (size_t)t * (dim / ER_QK8_0), dim);
    }
    head_job j = {e, logits, n_tok};
    er_pool_run(e->pool, head_task, &j);
}

/* ---------------------------------------------------------------------------------------
 * Forward pass of one batch.
 * ------------------------------------------------------------------------------------- */

static void forward_layer(er_engine *e, int l, int T) {
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
    rope_job rj = {e, l, T};
    run_per_token(e, T, rope_task, &rj);
    /* Work items of up to ATT_MAX_HEADS heads of one GQA group: each K/V row is converted once
     * per item. Heads per item shrink until there are at least 4 items per thread (one token
     * on several threads), so that every thread gets work. */
    const int group = c->n_heads / c->n_kv_heads;
    int per_item = group < ATT_MAX_HEADS ? group : ATT_MAX_HEADS;
    while (per_item > 1 && T * c->n_kv_heads * ((group + per_item - 1) / per_item) < 4 * e->n_threads) per_item--;
    attention_job aj = {e, l, T, per_item};
    er_pool_run(e->pool, e->attention, &aj);
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

/* One batch of T <= n_batch tokens whose positions and sequences are in e->tok_pos/tok_seq;
 * logits of the rows listed in want (n_want of them) go to logits (n_want, n_vocab). */
static int forward_batch(er_engine *e, const int32_t *tokens, int T, const int *want, int n_want, float *logits) {
    const int dim = e->cfg.dim;
    for (int t = 0; t < T; t++) embed_row(e, tokens[t], e->x + (size_t)t * dim);
    for (int l = 0; l < e->cfg.n_layers; l++) {
        if (atomic_load_explicit(&e->abort_flag, memory_order_relaxed)) {
            snprintf(e->err, sizeof(e->err), "evaluation aborted");
            return ER_ERR_ABORT;
        }
        forward_layer(e, l, T);
    }
    if (logits && n_want > 0) run_head(e, want, n_want, logits);
    return ER_OK;
}

static int check_tokens(er_engine *e, const int32_t *tokens, int n) {
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= e->cfg.n_vocab) {
            snprintf(e->err, sizeof(e->err), "token id %d at index %d is outside the vocabulary (0..%d)",
                     tokens[i], i, e->cfg.n_vocab - 1);
            return ER_ERR_ARG;
        }
    }
    return ER_OK;
}

int er_engine_eval(er_engine *e, const int32_t *tokens, int n, int pos, float *logits, int all_logits) {
    return er_engine_eval_seq(e, 0, tokens, n, pos, logits, all_logits);
}

int er_engine_eval_seq(er_engine *e, int seq, const int32_t *tokens, int n, int pos, float *logits,
                       int all_logits) {
    if (!tokens || n < 1 || pos < 0 || pos > e->n_ctx - n) { /* n_ctx - n cannot overflow; pos + n could */
        snprintf(e->err, sizeof(e->err), "positions %d..%lld do not fit the context of %d tokens", pos,
                 (long long)pos + n - 1, e->n_ctx);
        return ER_ERR_ARG;
    }
    if (seq < 0 || seq >= e->n_seq) {
        snprintf(e->err, sizeof(e->err), "sequence %d is outside 0..%d", seq, e->n_seq - 1);
        return ER_ERR_ARG;
    }
    if (check_tokens(e, tokens, n) != ER_OK) return ER_ERR_ARG;
    int want[ER_MAX_BATCH_WANT];
    for (int b0 = 0; b0 < n; b0 += e->n_batch) {
        const int T = n - b0 < e->n_batch ? n - b0 : e->n_batch;
        for (int t = 0; t < T; t++) {
            e->tok_pos[t] = pos + b0 + t;
            e->tok_seq[t] = seq;
        }
        int rc;
        if (logits && all_logits) {
            /* the head runs one token at a time here: want lists at most ER_MAX_BATCH_WANT rows */
            rc = forward_batch(e, tokens + b0, T, NULL, 0, NULL);
            for (int t = 0; rc == ER_OK && t < T; t++) {
                want[0] = t;
                run_head(e, want, 1, logits + (size_t)(b0 + t) * e->cfg.n_vocab);
            }
        } else {
            want[0] = T - 1;
            rc = forward_batch(e, tokens + b0, T, want, logits && b0 + T == n ? 1 : 0, logits);
        }
        if (rc != ER_OK) return rc;
    }
    return ER_OK;
}

int er_engine_eval_multi(er_engine *e, const int32_t *tokens, const int32_t *pos, const int32_t *seq, int n,
                         const int32_t *want, int n_want, float *logits) {
    if (!tokens || !pos || !seq || n < 1 || n > e->n_batch) {
        snprintf(e->err, sizeof(e->err), "a mixed batch holds 1..%d tokens, got %d", e->n_batch, n);
        return ER_ERR_ARG;
    }
    if (n_want < 0 || n_want > n || n_want > ER_MAX_BATCH_WANT || (n_want > 0 && (!want || !logits))) {
        snprintf(e->err, sizeof(e->err), "logits wanted for %d rows of a batch of %d (at most %d)", n_want, n,
                 ER_MAX_BATCH_WANT);
        return ER_ERR_ARG;
    }
    if (check_tokens(e, tokens, n) != ER_OK) return ER_ERR_ARG;
    for (int t = 0; t < n; t++) {
        if (seq[t] < 0 || seq[t] >= e->n_seq || pos[t] < 0 || pos[t] >= e->n_ctx) {
            snprintf(e->err, sizeof(e->err), "token %d: sequence %d / position %d outside 0..%d / 0..%d", t, seq[t],
                     pos[t], e->n_seq - 1, e->n_ctx - 1);
            return ER_ERR_ARG;
        }
        for (int u = 0; u < t; u++) {
            if (seq[u] == seq[t] && pos[u] == pos[t]) {
                snprintf(e->err, sizeof(e->err), "tokens %d and %d both write sequence %d position %d", u, t,
                         seq[t], pos[t]);
                return ER_ERR_ARG;
            }
        }
        e->tok_pos[t] = pos[t];
        e->tok_seq[t] = seq[t];
    }
    int rows[ER_MAX_BATCH_WANT];
    for (int i = 0; i < n_want; i++) {
        if (want[i] < 0 || want[i] >= n) {
            snprintf(e->err, sizeof(e->err), "logits wanted for row %d of a batch of %d", want[i], n);
            return ER_ERR_ARG;
        }
        rows[i] = want[i];
    }
    return forward_batch(e, tokens, n, rows, n_want, logits);
}
