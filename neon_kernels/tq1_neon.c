/* Armv8.0 NEON TQ1_S ternary GEMV, the TQ1_S -> I2_S repack and the prompt GEMM over it
 * (Cortex-A53/A72: no sdot).
 *
 * Unpacking: the multiple m_p = byte * 3^p mod 256 steps as m_{p+1} = m_p + m_p + m_p (two
 * byte adds; on Cortex-A72 the 8-bit multiply would take the F0 pipe that every smlal needs),
 * and code p = (m_p > 85) + (m_p > 170). The two compare masks (0 or -1) added give -code
 * (0, -1, -2) as int8, multiplied with the activations by smlal/smlal2; the row's sum is then
 * -sum(code * q), and out = sum(code * q) - sum(q) as in the I2_S kernels.
 *
 * int16 bound: a product is |code * q| <= 2 * 128 = 256; a chunk puts 160 products on the 8
 * lanes of a row's accumulator, 20 each, so INT16_CHUNKS = 6 chunks add at most
 * 6 * 20 * 256 = 30720 < 32767 before sadalp widens them into int32. */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "er_kernels.h"
#include "tq1_gemm_repack.h"

#define ER_INLINE static inline __attribute__((always_inline))
#define INT16_CHUNKS 6
#define GEMV_ROWS 4
#define KEEP_IN_REGISTER(v) __asm__("" : "+w"(v))

static int32_t qsum_neon(const int8_t *q, int k) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int i = 0; i < k; i += 32)
        acc = vpadalq_s16(acc, vaddq_s16(vpaddlq_s8(vld1q_s8(q + i)), vpaddlq_s8(vld1q_s8(q + i + 16))));
    return vaddvq_s32(acc);
}

ER_INLINE uint8x16_t triple(uint8x16_t m) { return vaddq_u8(vaddq_u8(m, m), m); }

/* -code (0, -1, -2) of the multiple m */
ER_INLINE int8x16_t neg_codes(uint8x16_t m) {
    return vreinterpretq_s8_u8(vaddq_u8(vcgtq_u8(m, vdupq_n_u8(85)), vcgtq_u8(m, vdupq_n_u8(170))));
}

/* acc16[r] += -code * q over strips 0..NP-1 of chunk c of each row */
ER_INLINE void chunk_rows(const uint8_t *w, size_t row_bytes, const int8_t *q, int c, const int R, const int NP,
                          int16x8_t *acc16, size_t pf) {
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
            const int8x16_t n0 = neg_codes(lo[r]), n1 = neg_codes(hi[r]);
            int16x8_t a = acc16[r];
            a = vmlal_s8(a, vget_low_s8(n0), vget_low_s8(q0));
            a = vmlal_high_s8(a, n0, q0);
            a = vmlal_s8(a, vget_low_s8(n1), vget_low_s8(q1));
            a = vmlal_high_s8(a, n1, q1);
            acc16[r] = a;
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) KEEP_IN_REGISTER(acc16[r]);
    }
}

ER_INLINE void gemv_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, int k, int32_t qsum, int32_t *out,
                         const int R, size_t pf) {
    const int full = k / ER_TQ1_CHUNK, tail = (k % ER_TQ1_CHUNK) / ER_TQ1_STRIP;
    int32x4_t acc32[GEMV_ROWS];
    int16x8_t acc16[GEMV_ROWS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc32[r] = vdupq_n_s32(0);
    for (int c0 = 0; c0 < full; c0 += INT16_CHUNKS) {
        const int c1 = c0 + INT16_CHUNKS < full ? c0 + INT16_CHUNKS : full;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc16[r] = vdupq_n_s16(0);
        for (int c = c0; c < c1; c++) chunk_rows(w, row_bytes, q, c, R, ER_TQ1_STRIPS, acc16, pf);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc32[r] = vpadalq_s16(acc32[r], acc16[r]);
    }
    if (tail) {
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc16[r] = vdupq_n_s16(0);
        switch (tail) {
        case 1: chunk_rows(w, row_bytes, q, full, R, 1, acc16, 0); break;
        case 2: chunk_rows(w, row_bytes, q, full, R, 2, acc16, 0); break;
        case 3: chunk_rows(w, row_bytes, q, full, R, 3, acc16, 0); break;
        default: chunk_rows(w, row_bytes, q, full, R, 4, acc16, 0); break;
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc32[r] = vpadalq_s16(acc32[r], acc16[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) out[r] = -vaddvq_s32(acc32[r]) - qsum;
}

void er_tq1_gemv_neon(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = ER_TQ1_ROW_BYTES(k);
    const int32_t qsum = qsum_neon(q, k);
    const size_t pf = er_prefetch_distance(GEMV_ROWS * row_bytes);
    int r = 0;
    for (; r + GEMV_ROWS <= rows; r += GEMV_ROWS) gemv_tile(w + r * row_bytes, row_bytes, q, k, qsum, out + r, GEMV_ROWS, pf);
    for (; r < rows; r++) gemv_tile(w + r * row_bytes, row_bytes, q, k, qsum, out + r, 1, pf);
}

/* codes (0..2) of strip s of a row */
ER_INLINE uint8x16_t strip_codes(const uint8_t *chunk, int p) {
    static const uint8_t pow3[ER_TQ1_STRIPS] = {1, 3, 9, 27, 81};
    const uint8x16_t m = vmulq_u8(vld1q_u8(chunk), vdupq_n_u8(pow3[p]));
    return vreinterpretq_u8_s8(vnegq_s8(neg_codes(m)));
}

/* I2_S group g = strips 4g .. 4g+3 at bits 7:6, 5:4, 3:2, 1:0, built by shift-and-insert */
void er_tq1_to_i2s_neon(const uint8_t *w, uint8_t *i2s, int rows, int k) {
    const size_t tq1_row = ER_TQ1_ROW_BYTES(k), i2s_row = (size_t)k / 4;
    for (int r = 0; r < rows; r++) {
        const uint8_t *src = w + (size_t)r * tq1_row;
        uint8_t *dst = i2s + (size_t)r * i2s_row;
        for (int g = 0; g < k / ER_I2S_GROUP; g++) {
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                uint8x16_t c[4];
#pragma GCC unroll 4
                for (int m = 0; m < 4; m++) {
                    const int s = 4 * g + m;
                    c[m] = strip_codes(src + (size_t)(s / ER_TQ1_STRIPS) * sizeof(er_block_tq1_s) + 16 * h,
                                       s % ER_TQ1_STRIPS);
                }
                const uint8x16_t v = vsliq_n_u8(vsliq_n_u8(vsliq_n_u8(c[3], c[2], 2), c[1], 4), c[0], 6);
                vst1q_u8(dst + (size_t)g * ER_I2S_GROUP_BYTES + 16 * h, v);
            }
        }
    }
}

void er_tq1_gemm_neon(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                      int k, int n_tok) {
    er_tq1_gemm_repacked(er_tq1_to_i2s_neon, er_i2s_gemm_neon, er_tq1_gemv_neon, w, q, ldq, out, ldo, rows, k,
                         n_tok);
}
#endif /* __aarch64__ */
