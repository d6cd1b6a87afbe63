/* Armv8.0 NEON activation quantization and I2_S ternary GEMV/GEMM (Cortex-A53/A72: no sdot).
 *
 * Ternary trick: codes stay unsigned (0..3) and are multiplied as int8 with vmull_s8/vmlal_s8;
 * sum((code - 1) * q) = sum(code * q) - sum(q), with sum(q) computed once per token.
 * Sub-vector m (m = 0..3, bits 7-2m..6-2m) of a 32-byte group lines up with the 32 contiguous
 * activations q[128g + 32m .. 128g + 32m + 31].
 *
 * int16 bound: a product lane is code * q, |.| <= 3 * 128 = 384. A (row, token) accumulator
 * takes 16 products per lane per group (128 weights over 8 lanes), so I2S_INT16_GROUPS = 5
 * groups add at most 5 * 16 * 384 = 30720 < 32767 before vpadalq_s16 widens them into int32.
 * The GEMV's scaled accumulators keep the same bound (see i2s_gemv_tile).
 *
 * Cost model (llvm-mca-19 static estimate): on Cortex-A72 smlal issues only on the F0 pipe, one per
 * cycle, so 8 MACs per cycle (32 cycles / 256 weights) is the floor of any smlal kernel; the
 * unpack ops share the other pipe. On Cortex-A53 every NEON op costs about one issue slot, so
 * the GEMV spends one unpack op per code vector instead of two.
 */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>

#include "er_kernels.h"
#include "i2s_gemm_blocking.h"

#define ER_INLINE static inline __attribute__((always_inline))

#define I2S_INT16_GROUPS 5
/* 2 x 4 tiles: 8 int16 + 8 int32 accumulators, 4 code and 2 activation vectors (of 32). */
#define GEMM_ROWS 2
#define GEMM_TOKS 4
#define GEMV_ROWS 4
#define TILE_MAX_ROWS 4
#define TILE_MAX_ACC 8
/* weight rows of one block stay in L2 while every token tile passes over them */
#define ROW_BLOCK_BYTES (64 * 1024)

float er_quantize_row_i8_neon(const float *x, int8_t *q, int n) {
    float32x4_t m0 = vdupq_n_f32(0.0f), m1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        m0 = vmaxq_f32(m0, vabsq_f32(vld1q_f32(x + i)));
        m1 = vmaxq_f32(m1, vabsq_f32(vld1q_f32(x + i + 4)));
    }
    float amax = vmaxvq_f32(vmaxq_f32(m0, m1));
    for (; i < n; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    if (amax < 1e-5f) amax = 1e-5f;
    const float s = 127.0f / amax;
    i = 0;
    for (; i + 16 <= n; i += 16) {
        /* fcvtns rounds half to even; the saturating narrows are the clamp to [-128, 127] */
        const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i), s));
        const int32x4_t b = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i + 4), s));
        const int32x4_t c = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i + 8), s));
        const int32x4_t d = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i + 12), s));
        const int16x8_t ab = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
        const int16x8_t cd = vcombine_s16(vqmovn_s32(c), vqmovn_s32(d));
        vst1q_s8(q + i, vcombine_s8(vqmovn_s16(ab), vqmovn_s16(cd)));
    }
    for (; i < n; i++) {
        float v = rintf(x[i] * s);
        v = v > 127.0f ? 127.0f : (v < -128.0f ? -128.0f : v);
        q[i] = (int8_t)v;
    }
    return s;
}

/* sum(q[0..k)), k % 128 == 0 */
static int32_t qsum_neon(const int8_t *q, int k) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int i = 0; i < k; i += 32) {
        acc = vpadalq_s16(acc, vpaddlq_s8(vld1q_s8(q + i)));
        acc = vpadalq_s16(acc, vpaddlq_s8(vld1q_s8(q + i + 16)));
    }
    return vaddvq_s32(acc);
}

/* Codes of sub-vector m from 16 bytes of a group; m is a constant after inlining. */
ER_INLINE int8x16_t unpack_codes(uint8x16_t b, int m, uint8x16_t mask3) {
    switch (m) {
    case 0: return vreinterpretq_s8_u8(vshrq_n_u8(b, 6));
    case 1: return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b, 4), mask3));
    case 2: return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b, 2), mask3));
    default: return vreinterpretq_s8_u8(vandq_u8(b, mask3));
    }
}

/* One GEMM tile: rows [0, R) of w times tokens [0, T) of q.
 * out[t * ldo + r] = sum_i code(r, i) * q[t * ldq + i] - qsum[t]. */
ER_INLINE void i2s_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, size_t ldq,
                        int groups, const int32_t *qsum, int32_t *out, size_t ldo, const int R,
                        const int T) {
    const uint8x16_t mask3 = vdupq_n_u8(3);
    int32x4_t acc32[TILE_MAX_ACC];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc32[i] = vdupq_n_s32(0);
    for (int g0 = 0; g0 < groups; g0 += I2S_INT16_GROUPS) {
        const int g1 = g0 + I2S_INT16_GROUPS < groups ? g0 + I2S_INT16_GROUPS : groups;
        int16x8_t acc16[TILE_MAX_ACC];
#pragma GCC unroll 16
        for (int i = 0; i < R * T; i++) acc16[i] = vdupq_n_s16(0);
        for (int g = g0; g < g1; g++) {
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                int8x16_t c0[TILE_MAX_ROWS], c1[TILE_MAX_ROWS];
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) {
                    const uint8_t *grp = w + r * row_bytes + (size_t)g * ER_I2S_GROUP_BYTES;
                    c0[r] = unpack_codes(vld1q_u8(grp), m, mask3);
                    c1[r] = unpack_codes(vld1q_u8(grp + 16), m, mask3);
                }
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    const int8_t *qm = q + t * ldq + (size_t)g * ER_I2S_GROUP + 32 * m;
                    const int8x16_t q0 = vld1q_s8(qm), q1 = vld1q_s8(qm + 16);
#pragma GCC unroll 4
                    for (int r = 0; r < R; r++) {
                        int16x8_t a = acc16[r * T + t];
                        a = vmlal_s8(a, vget_low_s8(c0[r]), vget_low_s8(q0));
                        a = vmlal_high_s8(a, c0[r], q0);
                        a = vmlal_s8(a, vget_low_s8(c1[r]), vget_low_s8(q1));
                        a = vmlal_high_s8(a, c1[r], q1);
                        acc16[r * T + t] = a;
                    }
                }
            }
        }
#pragma GCC unroll 16
        for (int i = 0; i < R * T; i++) acc32[i] = vpadalq_s16(acc32[i], acc16[i]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[t * ldo + r] = vaddvq_s32(acc32[r * T + t]) - qsum[t];
}

ER_INLINE int8x16_t as_s8(uint8x16_t v) { return vreinterpretq_s8_u8(v); }

/* acc + sum over 32 lanes of c * q (c0, c1 the codes of one sub-vector, q0, q1 its activations) */
ER_INLINE int16x8_t mac32(int16x8_t acc, int8x16_t c0, int8x16_t c1, int8x16_t q0, int8x16_t q1) {
    acc = vmlal_s8(acc, vget_low_s8(c0), vget_low_s8(q0));
    acc = vmlal_high_s8(acc, c0, q0);
    acc = vmlal_s8(acc, vget_low_s8(c1), vget_low_s8(q1));
    return vmlal_high_s8(acc, c1, q1);
}

/* GEMV tile: R rows, one token. Every sub-vector is unpacked with ONE op, leaving some codes
 * scaled: m = 0 is b >> 6 (c), m = 3 is b & 0x03 (c), m = 2 is b & 0x0C (4c), m = 1 is
 * b & 0x30 (16c); all stay < 64, so they are valid int8 multiplicands. Scaled products go into
 * their own accumulators and are folded into acc1 with a shift-right-accumulate, exact because
 * those sums are multiples of 4 (16). Bounds per lane (|c * q| <= 384; a sub-vector puts 4
 * products per lane into its accumulator per group):
 *   sum_x16 (m = 1, one group):           4 * 16 * 384 = 24576
 *   acc4    (m = 2, 5 groups):        5 * 4 *  4 * 384 = 30720
 *   acc1    (m = 0 and 3, plus sum_x16 >> 4 every group and acc4 >> 2 every 5 groups):
 *                                     5 * 16 *     384 = 30720, the same bound as unscaled codes.
 * Against the shift+mask unpack this drops 4 of 12 unpack ops per row and group. */
ER_INLINE void i2s_gemv_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, int groups, int32_t qsum,
                             int32_t *out, const int R, size_t pf) {
    const uint8x16_t mask_x16 = vdupq_n_u8(0x30), mask_x4 = vdupq_n_u8(0x0C), mask_x1 = vdupq_n_u8(0x03);
    int32x4_t acc32[TILE_MAX_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc32[r] = vdupq_n_s32(0);
    for (int g0 = 0; g0 < groups; g0 += I2S_INT16_GROUPS) {
        const int g1 = g0 + I2S_INT16_GROUPS < groups ? g0 + I2S_INT16_GROUPS : groups;
        int16x8_t acc1[TILE_MAX_ROWS], acc4[TILE_MAX_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) acc1[r] = acc4[r] = vdupq_n_s16(0);
        for (int g = g0; g < g1; g++) {
            const int8_t *qg = q + (size_t)g * ER_I2S_GROUP;
            int8x16_t qv[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) qv[i] = vld1q_s8(qg + 16 * i);
            if (pf)
#pragma GCC unroll 4
                for (int r = 0; r < R; r++)
                    __builtin_prefetch(w + r * row_bytes + (size_t)g * ER_I2S_GROUP_BYTES + pf, 0, 3);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                const uint8_t *grp = w + r * row_bytes + (size_t)g * ER_I2S_GROUP_BYTES;
                const uint8x16_t b0 = vld1q_u8(grp), b1 = vld1q_u8(grp + 16);
                int16x8_t a = mac32(acc1[r], as_s8(vshrq_n_u8(b0, 6)), as_s8(vshrq_n_u8(b1, 6)), qv[0], qv[1]);
                a = mac32(a, as_s8(vandq_u8(b0, mask_x1)), as_s8(vandq_u8(b1, mask_x1)), qv[6], qv[7]);
                const int16x8_t sum_x16 = mac32(vdupq_n_s16(0), as_s8(vandq_u8(b0, mask_x16)),
                                                as_s8(vandq_u8(b1, mask_x16)), qv[2], qv[3]);
                acc1[r] = vsraq_n_s16(a, sum_x16, 4);
                acc4[r] = mac32(acc4[r], as_s8(vandq_u8(b0, mask_x4)), as_s8(vandq_u8(b1, mask_x4)), qv[4], qv[5]);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) acc32[r] = vpadalq_s16(acc32[r], vsraq_n_s16(acc1[r], acc4[r], 2));
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) out[r] = vaddvq_s32(acc32[r]) - qsum;
}

void er_i2s_gemv_neon(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = (size_t)k / 4;
    const int groups = k / ER_I2S_GROUP;
    const int32_t qsum = qsum_neon(q, k);
    const size_t pf = er_prefetch_distance(GEMV_ROWS * row_bytes);
    int r = 0;
    for (; r + GEMV_ROWS <= rows; r += GEMV_ROWS)
        i2s_gemv_tile(w + r * row_bytes, row_bytes, q, groups, qsum, out + r, GEMV_ROWS, pf);
    for (; r < rows; r++) i2s_gemv_tile(w + r * row_bytes, row_bytes, q, groups, qsum, out + r, 1, pf);
}

/* One row tile (R = GEMM_ROWS or 1) against nt <= GEMM_TOKS tokens; R and nt become
 * constants in each case, so every tile shape is fully unrolled. */
#define TILE_CASE(R, NT)                                                                         \
    case NT:                                                                                     \
        i2s_tile(w, row_bytes, q, ldq, groups, qsum, out, ldo, R, NT);                           \
        break;
_Static_assert(GEMM_TOKS == 4, "TILE_CASES lists one case per token count");
#define TILE_CASES(R) TILE_CASE(R, 1) TILE_CASE(R, 2) TILE_CASE(R, 3) TILE_CASE(R, 4)

static void i2s_tile_rows(const uint8_t *w, size_t row_bytes, const int8_t *q, size_t ldq,
                          int groups, const int32_t *qsum, int32_t *out, size_t ldo, int R, int nt) {
    if (R == GEMM_ROWS) {
        switch (nt) { TILE_CASES(GEMM_ROWS) }
    } else {
        switch (nt) { TILE_CASES(1) }
    }
}
#undef TILE_CASES
#undef TILE_CASE

void er_i2s_gemm_neon(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                      int k, int n_tok) {
    _Static_assert(GEMM_TOKS <= ER_GEMM_MAX_TOKS, "qsum array of the blocking loop");
    er_i2s_gemm_blocked(i2s_tile_rows, qsum_neon, GEMM_ROWS, GEMM_TOKS, ROW_BLOCK_BYTES, w, q, ldq, out, ldo, rows, k,
                        n_tok);
}
#endif /* __aarch64__ */
