/* Armv8.0 NEON output-head kernels: F16 GEMV (fcvtl + fma), Q8_0 activation quantization, and
 * the Q8_0 / Q4_0 GEMVs against Q8_0 activations (vmull_s8, no sdot).
 *
 * Per-block integer dot products are exact for every int8 input; each block's int32 lanes are
 * converted to float and fused-multiply-added with d_w * d_x, so only the float rounding
 * differs from the reference. */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "er_kernels.h"

#define ER_INLINE static inline __attribute__((always_inline))
#define HEAD_ROWS 4

/* fp16 bits -> f32 with the Armv8.0 fcvt instruction: exact for every half value. */
ER_INLINE float half_to_float(uint16_t h) {
    __fp16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

/* ---- F16 GEMV: W (rows, k) f16 @ x (k,) -> out (rows,) ---------------------------------- */

ER_INLINE void f16_rows(const uint16_t *w, size_t ldw, const float *x, float *out, int k, const int R,
                        size_t pf) {
    float32x4_t acc0[HEAD_ROWS], acc1[HEAD_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc0[r] = acc1[r] = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= k; i += 8) {
        const float32x4_t x0 = vld1q_f32(x + i), x1 = vld1q_f32(x + i + 4);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint16_t *wr = w + r * ldw + i;
            __builtin_prefetch((const char *)wr + pf, 0, 3);
            const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(wr));
            acc0[r] = vfmaq_f32(acc0[r], vcvt_f32_f16(vget_low_f16(h)), x0);
            acc1[r] = vfmaq_f32(acc1[r], vcvt_high_f32_f16(h), x1);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        float s = vaddvq_f32(vaddq_f32(acc0[r], acc1[r]));
        for (int j = i; j < k; j++) s += half_to_float(w[r * ldw + j]) * x[j];
        out[r] = s;
    }
}

void er_f16_gemv_neon(const uint16_t *w, const float *x, float *out, int rows, int k) {
    const size_t ldw = (size_t)k;
    const size_t pf = er_prefetch_distance(HEAD_ROWS * ldw * sizeof(uint16_t));
    int r = 0;
    for (; r + HEAD_ROWS <= rows; r += HEAD_ROWS) f16_rows(w + r * ldw, ldw, x, out + r, k, HEAD_ROWS, pf);
    for (; r < rows; r++) f16_rows(w + r * ldw, ldw, x, out + r, k, 1, pf);
}

/* ---- Q8_0 activation quantization --------------------------------------------------------- */

void er_quantize_row_q8_0_neon(const float *x, er_block_q8_0 *y, int k) {
    for (int b = 0; b < k / ER_QK8_0; b++) {
        const float *xb = x + b * ER_QK8_0;
        float32x4_t v[8];
        for (int j = 0; j < 8; j++) v[j] = vld1q_f32(xb + 4 * j);
        float32x4_t m = vabsq_f32(v[0]);
        for (int j = 1; j < 8; j++) m = vmaxq_f32(m, vabsq_f32(v[j]));
        /* the same f32 operations as the reference: d = amax / 127, then id = 1 / d */
        const float d = vmaxvq_f32(m) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = er_fp32_to_fp16(d);
        for (int j = 0; j < 2; j++) {
            /* fcvtns rounds half to even; the saturating narrows clamp to [-128, 127] */
            const int16x8_t lo = vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(vmulq_n_f32(v[4 * j], id))),
                                              vqmovn_s32(vcvtnq_s32_f32(vmulq_n_f32(v[4 * j + 1], id))));
            const int16x8_t hi = vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(vmulq_n_f32(v[4 * j + 2], id))),
                                              vqmovn_s32(vcvtnq_s32_f32(vmulq_n_f32(v[4 * j + 3], id))));
            vst1q_s8(y[b].qs + 16 * j, vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi)));
        }
    }
}

/* ---- Q8_0 / Q4_0 GEMV against Q8_0 activations -------------------------------------------- */

/* 32 x 32 int8 -> 4 int32 lanes. A product can be 16384 (-128 * -128), so two of them could
 * overflow int16: every vmull_s8 is widened at once by vpadalq_s16. */
ER_INLINE int32x4_t dot_q8_block(const int8_t *a, int8x16_t x0, int8x16_t x1) {
    const int8x16_t a0 = vld1q_s8(a), a1 = vld1q_s8(a + 16);
    int32x4_t s = vpaddlq_s16(vmull_s8(vget_low_s8(a0), vget_low_s8(x0)));
    s = vpadalq_s16(s, vmull_high_s8(a0, x0));
    s = vpadalq_s16(s, vmull_s8(vget_low_s8(a1), vget_low_s8(x1)));
    return vpadalq_s16(s, vmull_high_s8(a1, x1));
}

ER_INLINE void q8_0_rows(const er_block_q8_0 *w, size_t nb, const er_block_q8_0 *xq, float *out,
                         const int R, size_t pf) {
    float32x4_t acc[HEAD_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[r] = vdupq_n_f32(0.0f);
    for (size_t b = 0; b < nb; b++) {
        const int8x16_t x0 = vld1q_s8(xq[b].qs), x1 = vld1q_s8(xq[b].qs + 16);
        const float dx = half_to_float(xq[b].d);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const er_block_q8_0 *wb = w + r * nb + b;
            __builtin_prefetch((const char *)wb + pf, 0, 3);
            const float32x4_t dot = vcvtq_f32_s32(dot_q8_block(wb->qs, x0, x1));
            acc[r] = vfmaq_n_f32(acc[r], dot, half_to_float(wb->d) * dx);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(acc[r]);
}

void er_q8_0_gemv_neon(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) {
    const size_t nb = (size_t)k / ER_QK8_0;
    const size_t pf = er_prefetch_distance(HEAD_ROWS * nb * sizeof(er_block_q8_0));
    int r = 0;
    for (; r + HEAD_ROWS <= rows; r += HEAD_ROWS) q8_0_rows(w + r * nb, nb, xq, out + r, HEAD_ROWS, pf);
    for (; r < rows; r++) q8_0_rows(w + r * nb, nb, xq, out + r, 1, pf);
}

/* Q4_0: (nibble - 8) is in [-8, 7], so a product is at most 1024 in magnitude and the four
 * products per int16 lane (32 weights over 8 lanes) stay below 4096. */
ER_INLINE void q4_0_rows(const er_block_q4_0 *w, size_t nb, const er_block_q8_0 *xq, float *out,
                         const int R, size_t pf) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    float32x4_t acc[HEAD_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[r] = vdupq_n_f32(0.0f);
    for (size_t b = 0; b < nb; b++) {
        const int8x16_t x0 = vld1q_s8(xq[b].qs), x1 = vld1q_s8(xq[b].qs + 16);
        const float dx = half_to_float(xq[b].d);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const er_block_q4_0 *wb = w + r * nb + b;
            __builtin_prefetch((const char *)wb + pf, 0, 3);
            const uint8x16_t packed = vld1q_u8(wb->qs);
            /* low nibbles are weights 0..15, high nibbles weights 16..31 */
            const int8x16_t w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(packed, low4)), eight);
            const int8x16_t w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), eight);
            int16x8_t p = vmull_s8(vget_low_s8(w0), vget_low_s8(x0));
            p = vmlal_high_s8(p, w0, x0);
            p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(x1));
            p = vmlal_high_s8(p, w1, x1);
            acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(vpaddlq_s16(p)), half_to_float(wb->d) * dx);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(acc[r]);
}

void er_q4_0_gemv_neon(const er_block_q4_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) {
    const size_t nb = (size_t)k / ER_QK4_0;
    const size_t pf = er_prefetch_distance(HEAD_ROWS * nb * sizeof(er_block_q4_0));
    int r = 0;
    for (; r + HEAD_ROWS <= rows; r += HEAD_ROWS) q4_0_rows(w + r * nb, nb, xq, out + r, HEAD_ROWS, pf);
    for (; r < rows; r++) q4_0_rows(w + r * nb, nb, xq, out + r, 1, pf);
}
#endif /* __aarch64__ */
