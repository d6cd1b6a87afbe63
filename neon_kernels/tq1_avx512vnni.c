/* AVX-512 VNNI TQ1_S ternary GEMV, and the AVX-512 VNNI and AMX prompt GEMMs over repacked
 * rows (x86-64 with AVX-512 F/BW/VL and VNNI).
 *
 * The GEMV never unpacks a code. With m_p = byte * 3^p mod 256 (m_{p+1} = m_p + m_p + m_p, two
 * wrapping byte adds), 3 m_p = 256 code_p + m_{p+1}: code p is the top base-3 digit of m_p and
 * m_{p+1} the rest. So sum(code * q) = (3 A - B) / 256 with A = sum m_p * q_p and
 * B = sum m_{p+1} * q_p, and vpdpbusd takes the bytes m_p as its unsigned operand directly:
 * two vpdpbusd and two adds per 32 weights, then out = sum(code * q) - sum(q) as in the I2_S
 * kernels. Each chunk is 32 bytes, so the kernel works on ymm registers (the VL encodings).
 *
 * Exactness: every int32 lane of 3 A - B sums 256 * code * q terms, so the shift by 8 is exact;
 * a lane of A or B takes 20 products of at most 255 * 128 per chunk and is folded into the row
 * total every FLUSH_CHUNKS = 32 chunks (3 * 32 * 20 * 32640 < 2^31). */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#include <immintrin.h>

#include "er_kernels.h"
#include "tq1_gemm_repack.h"

#define ER_INLINE static inline __attribute__((always_inline))
#define GEMV_ROWS 4
#define FLUSH_CHUNKS 32

ER_INLINE int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

static int32_t qsum_vnni(const int8_t *q, int k) {
    const __m256i ones8 = _mm256_set1_epi8(1);
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < k; i += 32) acc = _mm256_dpbusd_epi32(acc, ones8, _mm256_loadu_si256((const __m256i *)(q + i)));
    return hsum_epi32(acc);
}

ER_INLINE __m256i triple(__m256i m) { return _mm256_add_epi8(_mm256_add_epi8(m, m), m); }

/* acc[2r] += A, acc[2r+1] += B over strips 0..NP-1 of chunk c of each row */
ER_INLINE void chunk_rows(const uint8_t *w, size_t row_bytes, const int8_t *q, int c, const int R, const int NP,
                          __m256i *acc, size_t pf) {
    __m256i m[GEMV_ROWS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const uint8_t *b = w + r * row_bytes + (size_t)c * sizeof(er_block_tq1_s);
        if (pf && (c & 1) == 0) _mm_prefetch((const char *)(b + pf), _MM_HINT_T0);
        m[r] = _mm256_loadu_si256((const __m256i *)b);
    }
#pragma GCC unroll 5
    for (int p = 0; p < NP; p++) {
        const __m256i qv = _mm256_loadu_si256((const __m256i *)(q + (size_t)c * ER_TQ1_CHUNK + p * ER_TQ1_STRIP));
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256i next = triple(m[r]);
            acc[2 * r] = _mm256_dpbusd_epi32(acc[2 * r], m[r], qv);
            acc[2 * r + 1] = _mm256_dpbusd_epi32(acc[2 * r + 1], next, qv);
            m[r] = next;
        }
    }
}

ER_INLINE void flush(__m256i *acc, __m256i *total, const int R) {
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const __m256i a3 = _mm256_add_epi32(_mm256_add_epi32(acc[2 * r], acc[2 * r]), acc[2 * r]);
        total[r] = _mm256_add_epi32(total[r], _mm256_srai_epi32(_mm256_sub_epi32(a3, acc[2 * r + 1]), 8));
        acc[2 * r] = acc[2 * r + 1] = _mm256_setzero_si256();
    }
}

ER_INLINE void gemv_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, int k, int32_t qsum, int32_t *out,
                         const int R, size_t pf) {
    const int full = k / ER_TQ1_CHUNK, tail = (k % ER_TQ1_CHUNK) / ER_TQ1_STRIP;
    __m256i acc[2 * GEMV_ROWS], total[GEMV_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < 2 * R; i++) acc[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) total[r] = _mm256_setzero_si256();
    for (int c0 = 0; c0 < full; c0 += FLUSH_CHUNKS) {
        const int c1 = c0 + FLUSH_CHUNKS < full ? c0 + FLUSH_CHUNKS : full;
        for (int c = c0; c < c1; c++) chunk_rows(w, row_bytes, q, c, R, ER_TQ1_STRIPS, acc, pf);
        flush(acc, total, R);
    }
    switch (tail) {
    case 0: break;
    case 1: chunk_rows(w, row_bytes, q, full, R, 1, acc, 0); break;
    case 2: chunk_rows(w, row_bytes, q, full, R, 2, acc, 0); break;
    case 3: chunk_rows(w, row_bytes, q, full, R, 3, acc, 0); break;
    default: chunk_rows(w, row_bytes, q, full, R, 4, acc, 0); break;
    }
    flush(acc, total, R);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) out[r] = hsum_epi32(total[r]) - qsum;
}

void er_tq1_gemv_avx512vnni(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = ER_TQ1_ROW_BYTES(k);
    const int32_t qsum = qsum_vnni(q, k);
    const size_t pf = er_prefetch_distance(GEMV_ROWS * row_bytes);
    int r = 0;
    for (; r + GEMV_ROWS <= rows; r += GEMV_ROWS) gemv_tile(w + r * row_bytes, row_bytes, q, k, qsum, out + r, GEMV_ROWS, pf);
    for (; r < rows; r++) gemv_tile(w + r * row_bytes, row_bytes, q, k, qsum, out + r, 1, pf);
}

void er_tq1_gemm_avx512vnni(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                            int k, int n_tok) {
    er_tq1_gemm_repacked(er_tq1_to_i2s_avx2, er_i2s_gemm_avx512vnni, er_tq1_gemv_avx512vnni, w, q, ldq, out, ldo,
                         rows, k, n_tok);
}

/* AMX: the repacked block is what the AMX GEMM unpacks into its int8 tiles */
void er_tq1_gemm_amx(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows, int k,
                     int n_tok) {
    er_tq1_gemm_repacked(er_tq1_to_i2s_avx2, er_i2s_gemm_amx, er_tq1_gemv_avx512vnni, w, q, ldq, out, ldo, rows,
                         k, n_tok);
}
#endif /* __x86_64__ */
