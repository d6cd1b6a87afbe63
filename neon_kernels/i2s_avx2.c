/* AVX2 activation quantization and I2_S ternary GEMV/GEMM (x86-64 with AVX2, FMA, F16C).
 *
 * Ternary trick: codes stay unsigned (0..3) and feed the unsigned operand of vpmaddubsw;
 * sum((code - 1) * q) = sum(code * q) - sum(q), and sum(q) is computed once per token.
 * Sub-vector m (m = 0..3, shift 6 - 2m) of a 32-byte group lines up with the 32 contiguous
 * activations q[128g + 32m .. 128g + 32m + 31], so no permutation is needed.
 *
 * int16 bound: one vpmaddubsw lane is a pair sum of code * q, |.| <= 2 * 3 * 128 = 768.
 * A tile accumulator takes 4 such sums per group (one per sub-vector), so 8 groups add at most
 * 8 * 4 * 768 = 24576 < 32767 before the int16 lanes are widened to int32 (vpmaddwd by 1).
 */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include <math.h>

#include "er_kernels.h"
#include "i2s_gemm_blocking.h"

#define I2S_INT16_GROUPS 8

/* GEMM tiles: 3 x 3 int16 accumulators, 3 code vectors, the mask and one activation vector
 * fit the 16 ymm registers (measured best of 2x4..4x3 here). The weight rows of a block
 * (ROW_BLOCK_BYTES) stay cached while every token tile passes over them, so each weight
 * byte comes from memory once per call. */
#define GEMM_ROWS 3
#define GEMM_TOKS 3
#define GEMV_ROWS 4
#define ROW_BLOCK_BYTES (64 * 1024)
/* fixed array bounds of a tile: the compiler keeps fully unrolled fixed arrays in registers */
#define TILE_MAX_ROWS 4
#define TILE_MAX_ACC (GEMM_ROWS * GEMM_TOKS > GEMV_ROWS ? GEMM_ROWS * GEMM_TOKS : GEMV_ROWS)

#define ER_INLINE static inline __attribute__((always_inline))
/* a macro, not a const: the rounding mode must be an immediate even at -O0 */
#define ROUND_NEAREST_EVEN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/* An empty asm that "changes" v: stops GCC from reassociating the accumulator adds of the four
 * sub-vectors into a tree, which would keep every product live at once and spill the tile. */
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))

ER_INLINE int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

ER_INLINE float hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

ER_INLINE __m256i scaled_round_i32(const float *x, __m256 scale) {
    const __m256 scaled = _mm256_mul_ps(_mm256_loadu_ps(x), scale);
    return _mm256_cvtps_epi32(_mm256_round_ps(scaled, ROUND_NEAREST_EVEN));
}

/* 32 floats * scale -> 32 int8, round half to even, saturating (= clamp to [-128, 127]). */
ER_INLINE __m256i scale_round_pack32(const float *x, __m256 scale) {
    const __m256i ab = _mm256_packs_epi32(scaled_round_i32(x, scale), scaled_round_i32(x + 8, scale));
    const __m256i cd = _mm256_packs_epi32(scaled_round_i32(x + 16, scale), scaled_round_i32(x + 24, scale));
    /* packs work per 128-bit lane: the 4-byte runs come out as a0 b0 c0 d0 a1 b1 c1 d1,
     * where a0 = x[0..3] and a1 = x[4..7] */
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd),
                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

float er_quantize_row_i8_avx2(const float *x, int8_t *q, int n) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        m0 = _mm256_max_ps(m0, _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask));
        m1 = _mm256_max_ps(m1, _mm256_and_ps(_mm256_loadu_ps(x + i + 8), abs_mask));
    }
    float amax = hmax_ps(_mm256_max_ps(m0, m1));
    for (; i < n; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    if (amax < 1e-5f) amax = 1e-5f;
    const float s = 127.0f / amax;
    const __m256 vs = _mm256_set1_ps(s);
    i = 0;
    for (; i + 32 <= n; i += 32) _mm256_storeu_si256((__m256i *)(q + i), scale_round_pack32(x + i, vs));
    for (; i < n; i++) {
        float v = rintf(x[i] * s);
        v = v > 127.0f ? 127.0f : (v < -128.0f ? -128.0f : v);
        q[i] = (int8_t)v;
    }
    return s;
}

/* sum(q[0..k)), k % 128 == 0: vpmaddubsw by 1 then vpmaddwd by 1. */
static int32_t qsum_avx2(const int8_t *q, int k) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < k; i += 32) {
        __m256i p = _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)(q + i)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones16));
    }
    return hsum_epi32(acc);
}

/* Codes of sub-vector m of a 32-byte group; m is a constant after inlining. */
ER_INLINE __m256i unpack_codes(const uint8_t *group, int m, __m256i mask3) {
    __m256i b = _mm256_loadu_si256((const __m256i *)group);
    switch (m) {
    case 0: return _mm256_and_si256(_mm256_srli_epi16(b, 6), mask3);
    case 1: return _mm256_and_si256(_mm256_srli_epi16(b, 4), mask3);
    case 2: return _mm256_and_si256(_mm256_srli_epi16(b, 2), mask3);
    default: return _mm256_and_si256(b, mask3);
    }
}

/* One tile: rows [0, R) of w times tokens [0, T) of q; pf > 0 prefetches pf bytes ahead.
 * out[t * ldo + r] = sum_i code(r, i) * q[t * ldq + i] - qsum[t]. */
ER_INLINE void i2s_tile(const uint8_t *w, size_t row_bytes, const int8_t *q, size_t ldq,
                        int groups, const int32_t *qsum, int32_t *out, size_t ldo, const int R,
                        const int T, size_t pf) {
    const __m256i mask3 = _mm256_set1_epi8(3), ones16 = _mm256_set1_epi16(1);
    __m256i acc32[TILE_MAX_ACC];
#pragma GCC unroll 32
    for (int i = 0; i < R * T; i++) acc32[i] = _mm256_setzero_si256();
    for (int g0 = 0; g0 < groups; g0 += I2S_INT16_GROUPS) {
        const int g1 = g0 + I2S_INT16_GROUPS < groups ? g0 + I2S_INT16_GROUPS : groups;
        __m256i acc16[TILE_MAX_ACC];
#pragma GCC unroll 32
        for (int i = 0; i < R * T; i++) acc16[i] = _mm256_setzero_si256();
        for (int g = g0; g < g1; g++) {
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                __m256i codes[TILE_MAX_ROWS];
                if (m == 0 && pf)
#pragma GCC unroll 8
                    for (int r = 0; r < R; r++)
                        _mm_prefetch((const char *)(w + r * row_bytes + (size_t)g * ER_I2S_GROUP_BYTES + pf),
                                     _MM_HINT_T0);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++)
                    codes[r] = unpack_codes(w + r * row_bytes + (size_t)g * ER_I2S_GROUP_BYTES, m, mask3);
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    const __m256i qv = _mm256_loadu_si256(
                        (const __m256i *)(q + t * ldq + (size_t)g * ER_I2S_GROUP + 32 * m));
#pragma GCC unroll 8
                    for (int r = 0; r < R; r++)
                        acc16[r * T + t] =
                            _mm256_add_epi16(acc16[r * T + t], _mm256_maddubs_epi16(codes[r], qv));
                }
#pragma GCC unroll 32
                for (int i = 0; i < R * T; i++) KEEP_IN_REGISTER(acc16[i]);
            }
        }
#pragma GCC unroll 32
        for (int i = 0; i < R * T; i++)
            acc32[i] = _mm256_add_epi32(acc32[i], _mm256_madd_epi16(acc16[i], ones16));
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) out[t * ldo + r] = hsum_epi32(acc32[r * T + t]) - qsum[t];
}

void er_i2s_gemv_avx2(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = (size_t)k / 4;
    const int groups = k / ER_I2S_GROUP;
    const int32_t qsum = qsum_avx2(q, k);
    const size_t pf = er_prefetch_distance(GEMV_ROWS * row_bytes);
    int r = 0;
    for (; r + GEMV_ROWS <= rows; r += GEMV_ROWS)
        i2s_tile(w + r * row_bytes, row_bytes, q, 0, groups, &qsum, out + r, 0, GEMV_ROWS, 1, pf);
    for (; r < rows; r++) i2s_tile(w + r * row_bytes, row_bytes, q, 0, groups, &qsum, out + r, 0, 1, 1, pf);
}

/* One row tile (R = GEMM_ROWS or 1) against nt <= GEMM_TOKS tokens; R and nt become
 * constants in each case, so every tile shape is fully unrolled. */
#define TILE_CASE(R, NT)                                                                         \
    case NT:                                                                                     \
        i2s_tile(w, row_bytes, q, ldq, groups, qsum, out, ldo, R, NT, 0);                        \
        break;

_Static_assert(GEMM_TOKS == 3, "TILE_CASES lists one case per token count");
#define TILE_CASES(R) TILE_CASE(R, 1) TILE_CASE(R, 2) TILE_CASE(R, 3)

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

void er_i2s_gemm_avx2(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                      int k, int n_tok) {
    _Static_assert(GEMM_TOKS <= ER_GEMM_MAX_TOKS, "qsum array of the blocking loop");
    er_i2s_gemm_blocked(i2s_tile_rows, qsum_avx2, GEMM_ROWS, GEMM_TOKS, ROW_BLOCK_BYTES, w, q, ldq, out, ldo, rows, k,
                        n_tok);
}
#endif /* __x86_64__ */
