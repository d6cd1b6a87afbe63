/* AVX2 TQ1_S ternary GEMV, the TQ1_S -> I2_S repack and the prompt GEMM over it (x86-64 AVX2).
 *
 * Unpacking without an 8-bit multiply: x86 has none, but the multiple m_p = byte * 3^p mod 256
 * steps as m_{p+1} = m_p + m_p + m_p (two wrapping byte adds), and code p = (m_p > 85) +
 * (m_p > 170). AVX2 compares only signed bytes, so the chunk is biased once (s = m ^ 0x80,
 * i.e. m - 128): since 3 * 128 = 128 mod 256, tripling keeps the bias (3s = 3m - 128 mod 256),
 * and the tests become s > -43 and s > 42. The two compare masks (0 or -1) subtracted from
 * zero give the code (0..2), which feeds the unsigned operand of vpmaddubsw as the I2_S
 * kernels' codes do: sum((code - 1) * q) = sum(code * q) - sum(q).
 *
 * int16 bound: one vpmaddubsw lane is a pair sum |.| <= 2 * 2 * 128 = 512; a chunk adds five
 * (one per strip), so INT16_CHUNKS = 12 chunks add at most 12 * 5 * 512 = 30720 < 32767 before
 * vpmaddwd widens them into int32. */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include "er_kernels.h"
#include "tq1_gemm_repack.h"

#define ER_INLINE static inline __attribute__((always_inline))
#define INT16_CHUNKS 12
#define GEMV_ROWS 4
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))

ER_INLINE int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* sum(q[0..k)), k % 32 == 0 */
static int32_t qsum_avx2(const int8_t *q, int k) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < k; i += 32) {
        const __m256i p = _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)(q + i)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones16));
    }
    return hsum_epi32(acc);
}

ER_INLINE __m256i load_biased(const uint8_t *chunk) {
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)chunk), _mm256_set1_epi8((char)0x80));
}

ER_INLINE __m256i triple(__m256i s) { return _mm256_add_epi8(_mm256_add_epi8(s, s), s); }

/* codes 0..2 of the biased multiple s */
ER_INLINE __m256i codes_of(__m256i s) {
    const __m256i a = _mm256_cmpgt_epi8(s, _mm256_set1_epi8(-43)); /* m > 85 */
    const __m256i b = _mm256_cmpgt_epi8(s, _mm256_set1_epi8(42));  /* m > 170 */
    return _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), a), b);
}

/* acc16[r] += codes of strips 0..NP-1 of chunk c of each row times their activations */
ER_INLINE void chunk_rows(const uint8_t *w, size_t row_bytes, const int8_t *q, int c, const int R, const int NP,
                          __m256i *acc16, size_t pf) {
    __m256i s[GEMV_ROWS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const uint8_t *b = w + r * row_bytes + (size_t)c * sizeof(er_block_tq1_s);
        if (pf && (c & 1) == 0) _mm_prefetch((const char *)(b + pf), _MM_HINT_T0); /* a line per 2 chunks */
        s[r] = load_biased(b);
    }
#pragma GCC unroll 5
    for (int p = 0; p < NP; p++) {
        const __m256i qv = _mm256_loadu_si256((const __m256i *)(q + (size_t)c * ER_TQ1_CHUNK + p * ER_TQ1_STRIP));
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            if (p) s[r] = triple(s[r]);
            acc16[r] = _mm256_add_epi16(acc16[r], _mm256_maddubs_epi16(codes_of(s[r]), qv));
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) KEEP_IN_REGISTER(acc16[r]);
    }
}

/* rows [0, R) of w against one token: out[r] = sum_i code(r, i) * q[i] - qsum */
ER_INLINE void gemv_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, int k, int32_t qsum, int32_t *out,
                         const int R, size_t pf) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    const int full = k / ER_TQ1_CHUNK, tail = (k % ER_TQ1_CHUNK) / ER_TQ1_STRIP;
    __m256i acc32[GEMV_ROWS], acc16[GEMV_ROWS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc32[r] = _mm256_setzero_si256();
    for (int c0 = 0; c0 < full; c0 += INT16_CHUNKS) {
        const int c1 = c0 + INT16_CHUNKS < full ? c0 + INT16_CHUNKS : full;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc16[r] = _mm256_setzero_si256();
        for (int c = c0; c < c1; c++) chunk_rows(w, row_bytes, q, c, R, ER_TQ1_STRIPS, acc16, pf);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc32[r] = _mm256_add_epi32(acc32[r], _mm256_madd_epi16(acc16[r], ones16));
    }
    if (tail) {
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc16[r] = _mm256_setzero_si256();
        switch (tail) { /* 1..4 strips: each a constant, so the strip loop unrolls */
        case 1: chunk_rows(w, row_bytes, q, full, R, 1, acc16, 0); break;
        case 2: chunk_rows(w, row_bytes, q, full, R, 2, acc16, 0); break;
        case 3: chunk_rows(w, row_bytes, q, full, R, 3, acc16, 0); break;
        default: chunk_rows(w, row_bytes, q, full, R, 4, acc16, 0); break;
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc32[r] = _mm256_add_epi32(acc32[r], _mm256_madd_epi16(acc16[r], ones16));
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) out[r] = hsum_epi32(acc32[r]) - qsum;
}

void er_tq1_gemv_avx2(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = ER_TQ1_ROW_BYTES(k);
    const int32_t qsum = qsum_avx2(q, k);
    const size_t pf = er_prefetch_distance(GEMV_ROWS * row_bytes);
    int r = 0;
    for (; r + GEMV_ROWS <= rows; r += GEMV_ROWS) gemv_tile(w + r * row_bytes, row_bytes, q, k, qsum, out + r, GEMV_ROWS, pf);
    for (; r < rows; r++) gemv_tile(w + r * row_bytes, row_bytes, q, k, qsum, out + r, 1, pf);
}

/* I2_S group g of a row = strips 4g .. 4g+3 at bits 7:6, 5:4, 3:2, 1:0. The shifts are 16-bit,
 * which is exact here: a code is at most 2, so code << 6 stays inside its byte. */
void er_tq1_to_i2s_avx2(const uint8_t *w, uint8_t *i2s, int rows, int k) {
    const size_t tq1_row = ER_TQ1_ROW_BYTES(k), i2s_row = (size_t)k / 4;
    for (int r = 0; r < rows; r++) {
        const uint8_t *src = w + (size_t)r * tq1_row;
        uint8_t *dst = i2s + (size_t)r * i2s_row;
        for (int g = 0; g < k / ER_I2S_GROUP; g++) {
            __m256i c[4];
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                const int s = 4 * g + m, p = s % ER_TQ1_STRIPS;
                __m256i x = load_biased(src + (size_t)(s / ER_TQ1_STRIPS) * sizeof(er_block_tq1_s));
                for (int i = 0; i < p; i++) x = triple(x);
                c[m] = codes_of(x);
            }
            const __m256i v = _mm256_or_si256(
                _mm256_or_si256(_mm256_slli_epi16(c[0], 6), _mm256_slli_epi16(c[1], 4)),
                _mm256_or_si256(_mm256_slli_epi16(c[2], 2), c[3]));
            _mm256_storeu_si256((__m256i *)(dst + (size_t)g * ER_I2S_GROUP_BYTES), v);
        }
    }
}

void er_tq1_gemm_avx2(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                      int k, int n_tok) {
    er_tq1_gemm_repacked(er_tq1_to_i2s_avx2, er_i2s_gemm_avx2, er_tq1_gemv_avx2, w, q, ldq, out, ldo, rows, k,
                         n_tok);
}
#endif /* __x86_64__ */
