/* Armv8.2 dotprod (sdot) TQ1_S ternary GEMV and prompt GEMM (Cortex-A76/A55, Raspberry Pi 5).
 * Only called when the CPU reports asimddp (er_dispatch.c).
 *
 * The plain NEON unpacking (m_{p+1} = 3 m_p by two byte adds, -code = mask(m > 85) +
 * mask(m > 170)), then sdot accumulates -code * q straight into int32: no int16 bound. */
#if defined(__aarch64__)
#pragma GCC target("arch=armv8.2-a+dotprod")
#include <arm_neon.h>

#include "er_kernels.h"
#include "tq1_gemm_repack.h"

#define ER_INLINE static inline __attribute__((always_inline))
#define GEMV_ROWS 4

static int32_t qsum_dot(const int8_t *q, int k) {
    const int8x16_t ones = vdupq_n_s8(1);
    int32x4_t acc0 = vdupq_n_s32(0), acc1 = vdupq_n_s32(0);
    for (int i = 0; i < k; i += 32) {
        acc0 = vdotq_s32(acc0, vld1q_s8(q + i), ones);
        acc1 = vdotq_s32(acc1, vld1q_s8(q + i + 16), ones);
    }
    return vaddvq_s32(vaddq_s32(acc0, acc1));
}

ER_INLINE uint8x16_t triple(uint8x16_t m) { return vaddq_u8(vaddq_u8(m, m), m); }

ER_INLINE int8x16_t neg_codes(uint8x16_t m) {
    return vreinterpretq_s8_u8(vaddq_u8(vcgtq_u8(m, vdupq_n_u8(85)), vcgtq_u8(m, vdupq_n_u8(170))));
}

ER_INLINE void chunk_rows(const uint8_t *w, size_t row_bytes, const int8_t *q, int c, const int R, const int NP,
                          int32x4_t *acc, size_t pf) {
    uint8x16_t lo[GEMV_ROWS], hi[GEMV_ROWS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const uint8_t *b = w + r * row_bytes + (size_t)c * sizeof(er_block_tq1_s);
        if (pf && (c & 1) == 0) __builtin_prefetch(b + pf);
        lo[r] = vld1q_u8(b);
        hi[r] = vld1q_u8(b + 16);
    }
#pragma GCC unroll 5
    for (int p = 0; p < NP; p++) {
        const int8_t *qp = q + (size_t)c * ER_TQ1_CHUNK + p * ER_TQ1_STRIP;
        const int8x16_t q0 = vld1q_s8(qp), q1 = vld1q_s8(qp + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            if (p) {
                lo[r] = triple(lo[r]);
                hi[r] = triple(hi[r]);
            }
            acc[2 * r] = vdotq_s32(acc[2 * r], neg_codes(lo[r]), q0);
            acc[2 * r + 1] = vdotq_s32(acc[2 * r + 1], neg_codes(hi[r]), q1);
        }
    }
}

ER_INLINE void gemv_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, int k, int32_t qsum, int32_t *out,
                         const int R, size_t pf) {
    const int full = k / ER_TQ1_CHUNK, tail = (k % ER_TQ1_CHUNK) / ER_TQ1_STRIP;
    int32x4_t acc[2 * GEMV_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < 2 * R; i++) acc[i] = vdupq_n_s32(0);
    for (int c = 0; c < full; c++) chunk_rows(w, row_bytes, q, c, R, ER_TQ1_STRIPS, acc, pf);
    switch (tail) {
    case 0: break;
    case 1: chunk_rows(w, row_bytes, q, full, R, 1, acc, 0); break;
    case 2: chunk_rows(w, row_bytes, q, full, R, 2, acc, 0); break;
    case 3: chunk_rows(w, row_bytes, q, full, R, 3, acc, 0); break;
    default: chunk_rows(w, row_bytes, q, full, R, 4, acc, 0); break;
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) out[r] = -vaddvq_s32(vaddq_s32(acc[2 * r], acc[2 * r + 1])) - qsum;
}

void er_tq1_gemv_neon_dot(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = ER_TQ1_ROW_BYTES(k);
    const int32_t qsum = qsum_dot(q, k);
    const size_t pf = er_prefetch_distance(GEMV_ROWS * row_bytes);
    int r = 0;
    for (; r + GEMV_ROWS <= rows; r += GEMV_ROWS) gemv_tile(w + r * row_bytes, row_bytes, q, k, qsum, out + r, GEMV_ROWS, pf);
    for (; r < rows; r++) gemv_tile(w + r * row_bytes, row_bytes, q, k, qsum, out + r, 1, pf);
}

void er_tq1_gemm_neon_dot(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                          int k, int n_tok) {
    er_tq1_gemm_repacked(er_tq1_to_i2s_neon, er_i2s_gemm_neon_dot, er_tq1_gemv_neon_dot, w, q, ldq, out, ldo,
                         rows, k, n_tok);
}
#endif /* __aarch64__ */
