/* AVX-512 VNNI TQ1_S ternary GEMV, and the AVX-512 VNNI and AMX prompt GEMMs over repacked
 * rows (x86-64 with AVX-512 F/BW/VL and VNNI).
 *
 * The AVX2 unpacking (m_{p+1} = 3 m_p by two byte adds, code = (m > 85) + (m > 170)) with the
 * AVX-512BW unsigned byte compares into mask registers, so no bias is needed: the code is a
 * masked move of 1 then a masked move of 2, and vpdpbusd adds code * q straight into int32
 * lanes (no int16 stage). Each chunk is 32 bytes, so the kernel works on ymm registers (the VL
 * encodings); an int32 lane takes 4 products of at most 2 * 128 per strip, no overflow for any
 * k this runtime accepts. */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#include <immintrin.h>

#include "er_kernels.h"
#include "tq1_gemm_repack.h"

#define ER_INLINE static inline __attribute__((always_inline))
#define GEMV_ROWS 4

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

ER_INLINE __m256i codes_of(__m256i m) {
    const __mmask32 a = _mm256_cmpgt_epu8_mask(m, _mm256_set1_epi8(85));
    const __mmask32 b = _mm256_cmpgt_epu8_mask(m, _mm256_set1_epi8((char)170));
    return _mm256_mask_mov_epi8(_mm256_maskz_mov_epi8(a, _mm256_set1_epi8(1)), b, _mm256_set1_epi8(2));
}

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
            if (p) m[r] = triple(m[r]);
            acc[r] = _mm256_dpbusd_epi32(acc[r], codes_of(m[r]), qv);
        }
    }
}

ER_INLINE void gemv_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, int k, int32_t qsum, int32_t *out,
                         const int R, size_t pf) {
    const int full = k / ER_TQ1_CHUNK, tail = (k % ER_TQ1_CHUNK) / ER_TQ1_STRIP;
    __m256i acc[GEMV_ROWS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_si256();
    for (int c = 0; c < full; c++) chunk_rows(w, row_bytes, q, c, R, ER_TQ1_STRIPS, acc, pf);
    switch (tail) {
    case 0: break;
    case 1: chunk_rows(w, row_bytes, q, full, R, 1, acc, 0); break;
    case 2: chunk_rows(w, row_bytes, q, full, R, 2, acc, 0); break;
    case 3: chunk_rows(w, row_bytes, q, full, R, 3, acc, 0); break;
    default: chunk_rows(w, row_bytes, q, full, R, 4, acc, 0); break;
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) out[r] = hsum_epi32(acc[r]) - qsum;
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
