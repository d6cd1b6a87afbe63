/* Armv8.2 dotprod (sdot) TQ1_S ternary GEMV and prompt GEMM (Cortex-A76/A55, Raspberry Pi 5).
 * Only called when the CPU reports asimddp (er_dispatch.c).
 *
 * No code is ever unpacked. With m_p = byte * 3^p mod 256, 3 m_p = 256 code_p + m_{p+1} (code
 * p is the top base-3 digit of m_p, m_{p+1} what is left), so per weight
 *     256 (code_p - 1) = 3 s_p - s_{p+1},   s_p = m_p - 128,
 * and a row's sum(w * q) = (3 A - B) / 256 with A = sum s_p * q_p, B = sum s_{p+1} * q_p: two
 * sdot per 16 weights on the bytes as they are, plus one multiply to step s_p to s_{p+1}. The
 * signed s_p come for free: (byte ^ 0x80) * 3^p = s_p + 256 n for every p, because 3^p is odd
 * and 128 * odd = 128 mod 256; and with the bias the activation sum cancels too.
 *
 * Exactness: every lane of 3 A - B is a sum of 256 (code - 1) * q terms, so the shift by 8 is
 * exact; a lane of A or B takes 20 products of at most 128 * 128 per chunk, and is folded into
 * the row total every FLUSH_CHUNKS = 32 chunks (3 * 32 * 20 * 16384 < 2^31). */
#if defined(__aarch64__)
#pragma GCC target("arch=armv8.2-a+dotprod")
#include <arm_neon.h>

#include "er_kernels.h"
#include "tq1_gemm_repack.h"

#define ER_INLINE static inline __attribute__((always_inline))
/* hides the constant 3 from GCC, which would make each multiply a shift and an add */
#define OPAQUE(v) __asm__("" : "+w"(v))
#define GEMV_ROWS 4
#define FLUSH_CHUNKS 32

/* acc[4r..4r+3] += A and B of the low and high halves of chunk c of each row, strips 0..NP-1 */
ER_INLINE void chunk_rows(const uint8_t *w, size_t row_bytes, const int8_t *q, int c, const int R, const int NP,
                          int32x4_t *acc, int8x16_t three, size_t pf) {
    int8x16_t lo[GEMV_ROWS], hi[GEMV_ROWS];
    const uint8x16_t bias = vdupq_n_u8(0x80);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const uint8_t *b = w + r * row_bytes + (size_t)c * sizeof(er_block_tq1_s);
        if (pf && (c & 1) == 0) __builtin_prefetch(b + pf);
        lo[r] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(b), bias));
        hi[r] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(b + 16), bias));
    }
#pragma GCC unroll 5
    for (int p = 0; p < NP; p++) {
        const int8_t *qp = q + (size_t)c * ER_TQ1_CHUNK + p * ER_TQ1_STRIP;
        const int8x16_t q0 = vld1q_s8(qp), q1 = vld1q_s8(qp + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const int8x16_t lo_next = vmulq_s8(lo[r], three), hi_next = vmulq_s8(hi[r], three);
            acc[4 * r] = vdotq_s32(acc[4 * r], lo[r], q0);
            acc[4 * r + 1] = vdotq_s32(acc[4 * r + 1], lo_next, q0);
            acc[4 * r + 2] = vdotq_s32(acc[4 * r + 2], hi[r], q1);
            acc[4 * r + 3] = vdotq_s32(acc[4 * r + 3], hi_next, q1);
            lo[r] = lo_next;
            hi[r] = hi_next;
        }
    }
}

/* total[r] += (3 A - B) >> 8 lane-wise (exact), and the accumulators restart */
ER_INLINE void flush(int32x4_t *acc, int32x4_t *total, const int R) {
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const int32x4_t a = vaddq_s32(acc[4 * r], acc[4 * r + 2]), b = vaddq_s32(acc[4 * r + 1], acc[4 * r + 3]);
        total[r] = vaddq_s32(total[r], vshrq_n_s32(vsubq_s32(vmulq_n_s32(a, 3), b), 8));
        acc[4 * r] = acc[4 * r + 1] = acc[4 * r + 2] = acc[4 * r + 3] = vdupq_n_s32(0);
    }
}

ER_INLINE void gemv_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, int k, int32_t *out, const int R,
                         size_t pf) {
    const int full = k / ER_TQ1_CHUNK, tail = (k % ER_TQ1_CHUNK) / ER_TQ1_STRIP;
    int8x16_t three = vdupq_n_s8(3);
    OPAQUE(three);
    int32x4_t acc[4 * GEMV_ROWS], total[GEMV_ROWS];
#pragma GCC unroll 16
    for (int i = 0; i < 4 * R; i++) acc[i] = vdupq_n_s32(0);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) total[r] = vdupq_n_s32(0);
    for (int c0 = 0; c0 < full; c0 += FLUSH_CHUNKS) {
        const int c1 = c0 + FLUSH_CHUNKS < full ? c0 + FLUSH_CHUNKS : full;
        for (int c = c0; c < c1; c++) chunk_rows(w, row_bytes, q, c, R, ER_TQ1_STRIPS, acc, three, pf);
        flush(acc, total, R);
    }
    switch (tail) {
    case 0: break;
    case 1: chunk_rows(w, row_bytes, q, full, R, 1, acc, three, 0); break;
    case 2: chunk_rows(w, row_bytes, q, full, R, 2, acc, three, 0); break;
    case 3: chunk_rows(w, row_bytes, q, full, R, 3, acc, three, 0); break;
    default: chunk_rows(w, row_bytes, q, full, R, 4, acc, three, 0); break;
    }
    flush(acc, total, R);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) out[r] = vaddvq_s32(total[r]);
}

void er_tq1_gemv_neon_dot(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = ER_TQ1_ROW_BYTES(k);
    const size_t pf = er_prefetch_distance(GEMV_ROWS * row_bytes);
    int r = 0;
    for (; r + GEMV_ROWS <= rows; r += GEMV_ROWS) gemv_tile(w + r * row_bytes, row_bytes, q, k, out + r, GEMV_ROWS, pf);
    for (; r < rows; r++) gemv_tile(w + r * row_bytes, row_bytes, q, k, out + r, 1, pf);
}

void er_tq1_gemm_neon_dot(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                          int k, int n_tok) {
    er_tq1_gemm_repacked(er_tq1_to_i2s_neon, er_i2s_gemm_neon_dot, er_tq1_gemv_neon_dot, w, q, ldq, out, ldo,
                         rows, k, n_tok);
}
#endif /* __aarch64__ */
