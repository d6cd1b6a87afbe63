/* Armv8.2 dotprod (sdot) I2_S ternary GEMV/GEMM (Cortex-A76/A55, Raspberry Pi 5, phones).
 * Only called when the CPU reports asimddp (er_dispatch.c); the rest of the neon_dot table
 * is the plain NEON code.
 *
 * sum((code - 1) * q) = sum(code * q) - sum(q); vdotq_s32 accumulates straight into int32,
 * so there is no int16 bound to respect.
 */
#if defined(__aarch64__)
/* GCC 12 arm_neon.h defines vdotq_s32 under arch=armv8.2-a+dotprod; every dotprod core is v8.2+ */
#pragma GCC target("arch=armv8.2-a+dotprod")
#include <arm_neon.h>

#include "er_kernels.h"
#include "i2s_gemm_blocking.h"

#define ER_INLINE static inline __attribute__((always_inline))
/* An empty asm that "changes" v: keeps the scheduler from hoisting the unpacking of later
 * sub-vectors above the dot products of the current one, which spills a 4 x 4 tile. */
#define KEEP_IN_REGISTER(v) __asm__("" : "+w"(v))

/* 2 x 4 tiles: per (row, token) and group, 8 sdot plus 12 / 4 unpacking ops. Bigger tiles
 * (4 x 4) spill under GCC's pre-RA scheduler and unpack no less per sdot. */
#define GEMM_ROWS 2
#define GEMM_TOKS 4
#define GEMV_ROWS 2
#define TILE_MAX_ROWS 2
#define TILE_MAX_ACC 8
#define ROW_BLOCK_BYTES (64 * 1024)

static int32_t qsum_dot(const int8_t *q, int k) {
    const int8x16_t ones = vdupq_n_s8(1);
    int32x4_t acc0 = vdupq_n_s32(0), acc1 = vdupq_n_s32(0);
    for (int i = 0; i < k; i += 32) {
        acc0 = vdotq_s32(acc0, vld1q_s8(q + i), ones);
        acc1 = vdotq_s32(acc1, vld1q_s8(q + i + 16), ones);
    }
    return vaddvq_s32(vaddq_s32(acc0, acc1));
}

/* ---- GEMV ---------------------------------------------------------------------------------
 * Decode is dominated by unpacking, so sub-vectors 1 and 2 are masked in place instead of
 * shifted: (b & 0x30) = 16 * code and (b & 0x0c) = 4 * code are still small positive int8,
 * and their dot products go to accumulators divided by 16 and 4 (exact arithmetic shifts) at
 * the end: 2 shifts + 6 ands per 32 bytes instead of 6 + 6. The scaled sums stay far inside
 * int32: |16 * 3 * 128 * k / 4| < 2^31 for k < 1.3M. */
ER_INLINE void gemv_rows(const uint8_t *w, size_t row_bytes, const int8_t *q, int groups,
                         int32_t qsum, int32_t *out, const int R, size_t pf) {
    const uint8x16_t mask03 = vdupq_n_u8(0x03), mask0c = vdupq_n_u8(0x0c), mask30 = vdupq_n_u8(0x30);
    int32x4_t acc1[GEMV_ROWS], acc4[GEMV_ROWS], acc16[GEMV_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc1[r] = acc4[r] = acc16[r] = vdupq_n_s32(0);
    for (int g = 0; g < groups; g++) {
        const int8_t *qg = q + (size_t)g * ER_I2S_GROUP;
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *grp = w + r * row_bytes + (size_t)g * ER_I2S_GROUP_BYTES;
            __builtin_prefetch(grp + pf, 0, 3);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const uint8x16_t b = vld1q_u8(grp + 16 * h);
                const int8_t *qh = qg + 16 * h;
                acc1[r] = vdotq_s32(acc1[r], vreinterpretq_s8_u8(vshrq_n_u8(b, 6)), vld1q_s8(qh));
                acc16[r] = vdotq_s32(acc16[r], vreinterpretq_s8_u8(vandq_u8(b, mask30)), vld1q_s8(qh + 32));
                acc4[r] = vdotq_s32(acc4[r], vreinterpretq_s8_u8(vandq_u8(b, mask0c)), vld1q_s8(qh + 64));
                acc1[r] = vdotq_s32(acc1[r], vreinterpretq_s8_u8(vandq_u8(b, mask03)), vld1q_s8(qh + 96));
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const int32x4_t scaled = vaddq_s32(vshrq_n_s32(acc16[r], 4), vshrq_n_s32(acc4[r], 2));
        const int32x4_t sum = vaddq_s32(acc1[r], scaled);
        out[r] = vaddvq_s32(sum) - qsum;
    }
}

void er_i2s_gemv_neon_dot(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = (size_t)k / 4;
    const int groups = k / ER_I2S_GROUP;
    const int32_t qsum = qsum_dot(q, k);
    const size_t pf = er_prefetch_distance(GEMV_ROWS * row_bytes);
    int r = 0;
    for (; r + GEMV_ROWS <= rows; r += GEMV_ROWS)
        gemv_rows(w + r * row_bytes, row_bytes, q, groups, qsum, out + r, GEMV_ROWS, pf);
    for (; r < rows; r++) gemv_rows(w + r * row_bytes, row_bytes, q, groups, qsum, out + r, 1, pf);
}

/* ---- GEMM ---------------------------------------------------------------------------------
 * Unpacking is shared by the T tokens of a tile, so plain shift-and-mask codes keep one
 * accumulator per (row, token). */
ER_INLINE int8x16_t unpack_codes(uint8x16_t b, int m, uint8x16_t mask3) {
    switch (m) {
    case 0: return vreinterpretq_s8_u8(vshrq_n_u8(b, 6));
    case 1: return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b, 4), mask3));
    case 2: return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b, 2), mask3));
    default: return vreinterpretq_s8_u8(vandq_u8(b, mask3));
    }
}

ER_INLINE void i2s_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, size_t ldq,
                        int groups, const int32_t *qsum, int32_t *out, size_t ldo, const int R,
                        const int T) {
    const uint8x16_t mask3 = vdupq_n_u8(3);
    int32x4_t acc[TILE_MAX_ACC];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = vdupq_n_s32(0);
    for (int g = 0; g < groups; g++) {
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
                for (int r = 0; r < R; r++)
                    acc[r * T + t] = vdotq_s32(vdotq_s32(acc[r * T + t], c0[r], q0), c1[r], q1);
            }
#pragma GCC unroll 16
            for (int i = 0; i < R * T; i++) KEEP_IN_REGISTER(acc[i]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[t * ldo + r] = vaddvq_s32(acc[r * T + t]) - qsum[t];
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

void er_i2s_gemm_neon_dot(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo,
                          int rows, int k, int n_tok) {
    _Static_assert(GEMM_TOKS <= ER_GEMM_MAX_TOKS, "qsum array of the blocking loop");
    er_i2s_gemm_blocked(i2s_tile_rows, qsum_dot, GEMM_ROWS, GEMM_TOKS, ROW_BLOCK_BYTES, w, q, ldq, out, ldo, rows, k,
                        n_tok);
}
#endif /* __aarch64__ */
