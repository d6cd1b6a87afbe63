/* AVX-512 VNNI I2_S ternary GEMM (x86-64 with AVX-512 F/BW/VL and VNNI): the prompt path.
 *
 * vpdpbusd multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four products
 * into an int32 lane: 64 multiply-adds per instruction with no int16 stage to widen.
 *
 * Layout trick: a 32-byte I2_S group holds sub-vectors m = 0..3 (shift 6 - 2m), and sub-vector m
 * lines up with the 32 activations q[128g + 32m ..]. Broadcasting the group to both halves of a
 * zmm and shifting the low half by 6 and the high half by 4 gives sub-vectors 0 and 1 side by
 * side, which line up with the 64 contiguous activations q[128g .. 128g + 63]; shifts 2 and 0 give
 * sub-vectors 2 and 3 for q[128g + 64 ..]. So one group is two vpdpbusd per row and token, with
 * the activations read straight from memory.
 *
 * Exactness: codes stay unsigned (0..3), sum((code - 1) * q) = sum(code * q) - sum(q) as in the
 * other variants; an int32 lane adds 4 products of at most 3 * 128 per group, so no overflow
 * for any k this runtime accepts. The result equals the scalar reference bit for bit.
 *
 * GEMV (one token): the same group unpacking, 4 rows side by side with the activations loaded
 * once per group, and the software prefetch of the other GEMVs (er_prefetch_distance). It is
 * bound by memory; against the AVX2 GEMV it issues a third of the instructions per byte, which
 * measured 12.6 against 11.2 GB/s on one thread streaming a 520 MB matrix. */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#include <immintrin.h>

#include "er_kernels.h"
#include "i2s_gemm_blocking.h"

/* 4 rows x 5 tokens: 20 zmm accumulators, 2 code vectors, the mask and the two shift vectors fit
 * the 32 zmm registers. Measured here (GMAC/s, one thread): 4x5 250, 4x4 244, 5x4 245, 4x6 225,
 * 3x8 213, 2x8 200: about one 512-bit vpdpbusd per cycle. */
#define GEMM_ROWS 4
#define GEMM_TOKS 5
#define ROW_BLOCK_BYTES (64 * 1024)
#define TILE_MAX_ACC (GEMM_ROWS * GEMM_TOKS)

#define ER_INLINE static inline __attribute__((always_inline))

/* sum(q[0..k)), k % 128 == 0 */
int32_t er_i2s_qsum_avx512(const int8_t *q, int k) {
    const __m512i ones8 = _mm512_set1_epi8(1);
    __m512i acc = _mm512_setzero_si512();
    for (int i = 0; i < k; i += 64)
        acc = _mm512_dpbusd_epi32(acc, ones8, _mm512_loadu_si512((const void *)(q + i)));
    return _mm512_reduce_add_epi32(acc);
}

/* out[t * ldo + r] = sum_i code(r, i) * q[t * ldq + i] - qsum[t] for rows [0, R), tokens [0, T) */
ER_INLINE void i2s_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, size_t ldq, int groups,
                        const int32_t *qsum, int32_t *out, size_t ldo, const int R, const int T) {
    const __m512i mask3 = _mm512_set1_epi8(3);
    /* per 16-bit lane: low 256 bits shift by 6 (sub-vector 0) / 2 (sub-vector 2), high by 4 / 0 */
    const __m512i shift01 = _mm512_inserti64x4(_mm512_set1_epi16(6), _mm256_set1_epi16(4), 1);
    const __m512i shift23 = _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_set1_epi16(0), 1);
    const size_t pf = er_prefetch_distance(GEMM_ROWS * row_bytes);
    __m512i acc[TILE_MAX_ACC];
#pragma GCC unroll 32
    for (int i = 0; i < R * T; i++) acc[i] = _mm512_setzero_si512();
    for (int g = 0; g < groups; g++) {
        const int8_t *qg = q + (size_t)g * ER_I2S_GROUP;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const uint8_t *src = w + r * row_bytes + (size_t)g * ER_I2S_GROUP_BYTES;
            if ((g & 1) == 0) _mm_prefetch((const char *)(src + pf), _MM_HINT_T0); /* one line per 2 groups */
            const __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)src));
            const __m512i c01 = _mm512_and_si512(_mm512_srlv_epi16(b, shift01), mask3);
            const __m512i c23 = _mm512_and_si512(_mm512_srlv_epi16(b, shift23), mask3);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const int8_t *qt = qg + t * ldq;
                acc[r * T + t] = _mm512_dpbusd_epi32(acc[r * T + t], c01, _mm512_loadu_si512((const void *)qt));
                acc[r * T + t] =
                    _mm512_dpbusd_epi32(acc[r * T + t], c23, _mm512_loadu_si512((const void *)(qt + 64)));
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) out[t * ldo + r] = _mm512_reduce_add_epi32(acc[r * T + t]) - qsum[t];
}

/* One row tile (R = GEMM_ROWS or 1) against nt <= GEMM_TOKS tokens; each (R, nt) pair is its
 * own fully unrolled instance. */
#define TILE_CASE(R, NT)                                                                         \
    case NT:                                                                                     \
        i2s_tile(w, row_bytes, q, ldq, groups, qsum, out, ldo, R, NT);                           \
        break;

_Static_assert(GEMM_TOKS == 5, "TILE_CASES lists one case per token count");
#define TILE_CASES(R) TILE_CASE(R, 1) TILE_CASE(R, 2) TILE_CASE(R, 3) TILE_CASE(R, 4) TILE_CASE(R, 5)

static void i2s_tile_rows(const uint8_t *w, size_t row_bytes, const int8_t *q, size_t ldq, int groups,
                          const int32_t *qsum, int32_t *out, size_t ldo, int R, int nt) {
    if (R == GEMM_ROWS) {
        switch (nt) { TILE_CASES(GEMM_ROWS) }
    } else {
        switch (nt) { TILE_CASES(1) }
    }
}
#undef TILE_CASES
#undef TILE_CASE

#define GEMV_ROWS 4

/* rows [0, R) of w times one token q: out[r] = sum_i code(r, i) * q[i] - qsum */
ER_INLINE void gemv_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, int groups, int32_t qsum,
                         int32_t *out, size_t pf, const int R) {
    const __m512i mask3 = _mm512_set1_epi8(3);
    const __m512i shift01 = _mm512_inserti64x4(_mm512_set1_epi16(6), _mm256_set1_epi16(4), 1);
    const __m512i shift23 = _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_set1_epi16(0), 1);
    __m512i acc[2 * GEMV_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < 2 * R; i++) acc[i] = _mm512_setzero_si512();
    for (int g = 0; g < groups; g++) {
        const int8_t *qg = q + (size_t)g * ER_I2S_GROUP;
        const __m512i q01 = _mm512_loadu_si512((const void *)qg), q23 = _mm512_loadu_si512((const void *)(qg + 64));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *src = w + r * row_bytes + (size_t)g * ER_I2S_GROUP_BYTES;
            if ((g & 1) == 0) _mm_prefetch((const char *)(src + pf), _MM_HINT_T0); /* one line per 2 groups */
            const __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)src));
            acc[2 * r] = _mm512_dpbusd_epi32(acc[2 * r], _mm512_and_si512(_mm512_srlv_epi16(b, shift01), mask3), q01);
            acc[2 * r + 1] =
                _mm512_dpbusd_epi32(acc[2 * r + 1], _mm512_and_si512(_mm512_srlv_epi16(b, shift23), mask3), q23);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(acc[2 * r], acc[2 * r + 1])) - qsum;
}

void er_i2s_gemv_avx512vnni(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = (size_t)k / 4;
    const int groups = k / ER_I2S_GROUP;
    const int32_t qsum = er_i2s_qsum_avx512(q, k);
    const size_t pf = er_prefetch_distance(GEMV_ROWS * row_bytes);
    int r = 0;
    for (; r + GEMV_ROWS <= rows; r += GEMV_ROWS)
        gemv_tile(w + r * row_bytes, row_bytes, q, groups, qsum, out + r, pf, GEMV_ROWS);
    for (; r < rows; r++) gemv_tile(w + r * row_bytes, row_bytes, q, groups, qsum, out + r, pf, 1);
}

void er_i2s_gemm_avx512vnni(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                            int k, int n_tok) {
    _Static_assert(GEMM_TOKS <= ER_GEMM_MAX_TOKS, "qsum array of the blocking loop");
    er_i2s_gemm_blocked(i2s_tile_rows, er_i2s_qsum_avx512, GEMM_ROWS, GEMM_TOKS, ROW_BLOCK_BYTES, w, q, ldq, out,
                        ldo, rows, k, n_tok);
}
#endif /* __x86_64__ */
