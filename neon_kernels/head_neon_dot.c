/* Armv8.2 dotprod (sdot) Q8_0 / Q4_0 output-head GEMVs against Q8_0 activations.
 * Only called when the CPU reports asimddp (er_dispatch.c). vdotq_s32 sums four int8
 * products straight into int32, so every block dot product is exact. */
#if defined(__aarch64__)
/* GCC 12 arm_neon.h defines vdotq_s32 under arch=armv8.2-a+dotprod; every dotprod core is v8.2+ */
#pragma GCC target("arch=armv8.2-a+dotprod")
#include <arm_neon.h>
#include <string.h>

#include "er_kernels.h"

#define ER_INLINE static inline __attribute__((always_inline))
#define HEAD_ROWS 4

ER_INLINE float half_to_float(uint16_t h) {
    __fp16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
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
            int32x4_t dot = vdotq_s32(vdupq_n_s32(0), vld1q_s8(wb->qs), x0);
            dot = vdotq_s32(dot, vld1q_s8(wb->qs + 16), x1);
            acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(dot), half_to_float(wb->d) * dx);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(acc[r]);
}

void er_q8_0_gemv_neon_dot(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) {
    const size_t nb = (size_t)k / ER_QK8_0;
    const size_t pf = er_prefetch_distance(HEAD_ROWS * nb * sizeof(er_block_q8_0));
    int r = 0;
    for (; r + HEAD_ROWS <= rows; r += HEAD_ROWS) q8_0_rows(w + r * nb, nb, xq, out + r, HEAD_ROWS, pf);
    for (; r < rows; r++) q8_0_rows(w + r * nb, nb, xq, out + r, 1, pf);
}

/* Q4_0 nibbles n (0..15) go into sdot unshifted: sum((n - 8) * x) = sum(n * x) - 8 * sum(x),
 * and 8 * sum(x) (one sdot against a vector of 8s) is shared by every row of the block. */
ER_INLINE void q4_0_rows(const er_block_q4_0 *w, size_t nb, const er_block_q8_0 *xq, float *out,
                         const int R, size_t pf) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    float32x4_t acc[HEAD_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[r] = vdupq_n_f32(0.0f);
    for (size_t b = 0; b < nb; b++) {
        const int8x16_t x0 = vld1q_s8(xq[b].qs), x1 = vld1q_s8(xq[b].qs + 16);
        const int32x4_t x_times_8 = vdotq_s32(vdotq_s32(vdupq_n_s32(0), eight, x0), eight, x1);
        const float dx = half_to_float(xq[b].d);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const er_block_q4_0 *wb = w + r * nb + b;
            __builtin_prefetch((const char *)wb + pf, 0, 3);
            const uint8x16_t packed = vld1q_u8(wb->qs);
            /* low nibbles are weights 0..15, high nibbles weights 16..31 */
            int32x4_t dot = vdotq_s32(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(packed, low4)), x0);
            dot = vdotq_s32(dot, vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), x1);
            dot = vsubq_s32(dot, x_times_8);
            acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(dot), half_to_float(wb->d) * dx);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(acc[r]);
}

void er_q4_0_gemv_neon_dot(const er_block_q4_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) {
    const size_t nb = (size_t)k / ER_QK4_0;
    const size_t pf = er_prefetch_distance(HEAD_ROWS * nb * sizeof(er_block_q4_0));
    int r = 0;
    for (; r + HEAD_ROWS <= rows; r += HEAD_ROWS) q4_0_rows(w + r * nb, nb, xq, out + r, HEAD_ROWS, pf);
    for (; r < rows; r++) q4_0_rows(w + r * nb, nb, xq, out + r, 1, pf);
}
#endif /* __aarch64__ */
