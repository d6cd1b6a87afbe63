/* AVX2 output-head kernels: F16 GEMV (F16C + FMA), Q8_0 activation quantization, and the
 * Q8_0 / Q4_0 GEMVs against Q8_0 activations.
 *
 * Per-block integer dot products are exact for every int8 input (including -128: no
 * vpsignb trick, which wraps -(-128)). Only the float accumulation order differs from the
 * reference: each block's int32 lanes are converted to float and fused-multiply-added with
 * d_w * d_x, so the result equals the reference up to float rounding. */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include <math.h>

#include "er_kernels.h"

#define ER_INLINE static inline __attribute__((always_inline))
/* a macro, not a const: the rounding mode must be an immediate even at -O0 */
#define ROUND_NEAREST_EVEN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define HEAD_ROWS 4

ER_INLINE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ER_INLINE float hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* fp16 bits -> f32 with F16C: exact for every half value, the same as er_fp16_to_fp32. */
ER_INLINE float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

/* ---- F16 GEMV: W (rows, k) f16 @ x (k,) -> out (rows,) ---------------------------------- */

/* R rows at once share each x load; two accumulators per row hide the FMA latency. */
ER_INLINE void f16_rows(const uint16_t *w, size_t ldw, const float *x, float *out, int k,
                        const int R, size_t pf) {
    __m256 acc0[HEAD_ROWS], acc1[HEAD_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint16_t *wr = w + r * ldw + i;
            _mm_prefetch((const char *)wr + pf, _MM_HINT_T0);
            acc0[r] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)wr)), x0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + 8))), x1,
                                      acc1[r]);
        }
    }
    for (; i + 8 <= k; i += 8) {
        const __m256 x0 = _mm256_loadu_ps(x + i);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            acc0[r] = _mm256_fmadd_ps(
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + r * ldw + i))), x0, acc0[r]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        float s = hsum_ps(_mm256_add_ps(acc0[r], acc1[r]));
        for (int j = i; j < k; j++) s += half_to_float(w[r * ldw + j]) * x[j];
        out[r] = s;
    }
}

void er_f16_gemv_avx2(const uint16_t *w, const float *x, float *out, int rows, int k) {
    const size_t ldw = (size_t)k;
    const size_t pf = er_prefetch_distance(HEAD_ROWS * ldw * sizeof(uint16_t));
    int r = 0;
    for (; r + HEAD_ROWS <= rows; r += HEAD_ROWS) f16_rows(w + r * ldw, ldw, x, out + r, k, HEAD_ROWS, pf);
    for (; r < rows; r++) f16_rows(w + r * ldw, ldw, x, out + r, k, 1, pf);
}

/* ---- Q8_0 activation quantization --------------------------------------------------------- */

void er_quantize_row_q8_0_avx2(const float *x, er_block_q8_0 *y, int k) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int b = 0; b < k / ER_QK8_0; b++) {
        const float *xb = x + b * ER_QK8_0;
        __m256 v[4];
        for (int j = 0; j < 4; j++) v[j] = _mm256_loadu_ps(xb + 8 * j);
        __m256 m = _mm256_and_ps(v[0], abs_mask);
        for (int j = 1; j < 4; j++) m = _mm256_max_ps(m, _mm256_and_ps(v[j], abs_mask));
        /* the same f32 operations as the reference: d = amax / 127, then id = 1 / d */
        const float d = hmax_ps(m) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = er_fp32_to_fp16(d);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i i32[4];
        for (int j = 0; j < 4; j++)
            i32[j] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[j], vid), ROUND_NEAREST_EVEN));
        /* saturating packs clamp to [-128, 127]; they work per 128-bit lane, so the 4-byte runs
         * come out as 0 2 4 6 1 3 5 7 (run i = x[4i..4i+3]) and are put back in order */
        const __m256i packed = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(i32[0], i32[1]), _mm256_packs_epi32(i32[2], i32[3])),
            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[b].qs, packed);
    }
}

/* ---- Q8_0 / Q4_0 GEMV against Q8_0 activations -------------------------------------------- */

/* 32 int8 x 32 int8 -> 8 int32 lanes, exact: widen to int16, vpmaddwd pairs. */
ER_INLINE __m256i dot_i8x32(const int8_t *a, __m256i b_lo16, __m256i b_hi16) {
    const __m256i a_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a));
    const __m256i a_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + 16)));
    return _mm256_add_epi32(_mm256_madd_epi16(a_lo, b_lo16), _mm256_madd_epi16(a_hi, b_hi16));
}

ER_INLINE void q8_0_rows(const er_block_q8_0 *w, size_t nb, const er_block_q8_0 *xq, float *out,
                         const int R, size_t pf) {
    __m256 acc[HEAD_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const __m256i x_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)xq[b].qs));
        const __m256i x_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(xq[b].qs + 16)));
        const float dx = half_to_float(xq[b].d);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const er_block_q8_0 *wb = w + r * nb + b;
            _mm_prefetch((const char *)wb + pf, _MM_HINT_T0);
            const __m256 dot = _mm256_cvtepi32_ps(dot_i8x32(wb->qs, x_lo, x_hi));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(wb->d) * dx), dot, acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) out[r] = hsum_ps(acc[r]);
}

void er_q8_0_gemv_avx2(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) {
    const size_t nb = (size_t)k / ER_QK8_0;
    const size_t pf = er_prefetch_distance(HEAD_ROWS * nb * sizeof(er_block_q8_0));
    int r = 0;
    for (; r + HEAD_ROWS <= rows; r += HEAD_ROWS) q8_0_rows(w + r * nb, nb, xq, out + r, HEAD_ROWS, pf);
    for (; r < rows; r++) q8_0_rows(w + r * nb, nb, xq, out + r, 1, pf);
}

/* Q4_0 nibbles n (0..15) are unsigned: sum((n - 8) * x) = maddubs(n, x) - maddubs(8, x) per
 * int16 lane; |maddubs(n, x)| <= 2 * 15 * 128 = 3840 and |maddubs(8, x)| <= 2048, so the
 * int16 difference is exact, and maddubs(8, x) is shared by every row. */
ER_INLINE void q4_0_rows(const er_block_q4_0 *w, size_t nb, const er_block_q8_0 *xq, float *out,
                         const int R, size_t pf) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256 acc[HEAD_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const __m256i xv = _mm256_loadu_si256((const __m256i *)xq[b].qs);
        const __m256i x_times_8 = _mm256_maddubs_epi16(eight, xv);
        const float dx = half_to_float(xq[b].d);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const er_block_q4_0 *wb = w + r * nb + b;
            _mm_prefetch((const char *)wb + pf, _MM_HINT_T0);
            const __m128i packed = _mm_loadu_si128((const __m128i *)wb->qs);
            /* low nibbles are weights 0..15, high nibbles weights 16..31 */
            const __m256i nib = _mm256_and_si256(
                _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4);
            const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(nib, xv), x_times_8);
            const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones16));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(wb->d) * dx), dot, acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) out[r] = hsum_ps(acc[r]);
}

void er_q4_0_gemv_avx2(const er_block_q4_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) {
    const size_t nb = (size_t)k / ER_QK4_0;
    const size_t pf = er_prefetch_distance(HEAD_ROWS * nb * sizeof(er_block_q4_0));
    int r = 0;
    for (; r + HEAD_ROWS <= rows; r += HEAD_ROWS) q4_0_rows(w + r * nb, nb, xq, out + r, HEAD_ROWS, pf);
    for (; r < rows; r++) q4_0_rows(w + r * nb, nb, xq, out + r, 1, pf);
}
#endif /* __x86_64__ */
