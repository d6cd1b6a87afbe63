/* AVX-512 VNNI Q8_0 output head, one token (the GEMV) or several (the avx512vnni variant; the amx
 * variant takes this GEMV where its tile head does not fit).
 *
 * vpdpbusd multiplies unsigned by signed bytes; Q8_0 weights are signed. Flipping the sign bit
 * (w ^ 0x80 = w + 128 as an unsigned byte) gives sum((w + 128) * x) = sum(w * x) + 128 * sum(x),
 * and the second term depends on the activations only: it is computed once per block and token
 * (the same 8 int32 lanes, from 0x80 bytes) for a tile of rows. Each lane then holds the exact int32
 * sum of 4 products, converted to float and scaled by d_w * d_x as in the AVX2 kernel (the
 * lanes group the 32 products differently, so the float result agrees within rounding).
 * One vpdpbusd replaces the two widenings and two vpmaddwd of the AVX2 kernel: the head is read
 * from memory for every generated token, and fewer instructions per byte let one thread stream
 * it faster. */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#include <immintrin.h>

#include "er_kernels.h"

#define HEAD_ROWS 4
/* Up to GEMM_TOKS tokens per pass over a row tile (batched decode); one token is the GEMV. Each
 * weight block is loaded and sign-flipped once for the tile's tokens, and the activation term
 * 128 * sum(x) is the dpbusd's starting value (int32 sums are exact, so dpbusd(-bias, wu, x) is
 * dpbusd(0, wu, x) - bias). A token's lanes see the same float operations in the same order
 * whatever its batch, d_w * d_x rounded once and fused with the converted dot, so its logits do
 * not depend on the tokens beside it. */
#define GEMM_TOKS 4

static inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __attribute__((always_inline)) void q8_0_tile(const er_block_q8_0 *w, size_t nb,
                                                            const er_block_q8_0 *xq, float *out, size_t ldo,
                                                            const int R, const int T, size_t pf) {
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const __m256i zero = _mm256_setzero_si256();
    __m256 acc[HEAD_ROWS * GEMM_TOKS];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        __m256i xv[GEMM_TOKS], nbias[GEMM_TOKS];
        float dx[GEMM_TOKS];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const er_block_q8_0 *xb = xq + (size_t)t * nb + b;
            xv[t] = _mm256_loadu_si256((const __m256i *)xb->qs);
            nbias[t] = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, flip, xv[t]));
            dx[t] = half_to_float(xb->d);
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const er_block_q8_0 *wb = w + r * nb + b;
            _mm_prefetch((const char *)wb + pf, _MM_HINT_T0);
            const __m256i wu = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)wb->qs), flip);
            const float dw = half_to_float(wb->d);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m256i dot = _mm256_dpbusd_epi32(nbias[t], wu, xv[t]);
                acc[r * T + t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx[t]), _mm256_cvtepi32_ps(dot), acc[r * T + t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[(size_t)t * ldo + r] = hsum_ps(acc[r * T + t]);
}

#define TILE_CASE(R, NT)                                                                         \
    case NT:                                                                                     \
        q8_0_tile(w, nb, xq, out, ldo, R, NT, pf);                                               \
        break;
_Static_assert(GEMM_TOKS == 4, "one case per token count");
#define TILE_CASES(R) TILE_CASE(R, 1) TILE_CASE(R, 2) TILE_CASE(R, 3) TILE_CASE(R, 4)

static void q8_0_tile_rows(const er_block_q8_0 *w, size_t nb, const er_block_q8_0 *xq, float *out, size_t ldo,
                           int R, int nt, size_t pf) {
    if (R == HEAD_ROWS) {
        switch (nt) { TILE_CASES(HEAD_ROWS) }
    } else {
        switch (nt) { TILE_CASES(1) }
    }
}
#undef TILE_CASES
#undef TILE_CASE

void er_q8_0_gemm_avx512vnni(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int ldo, int rows,
                             int k, int n_tok) {
    const size_t nb = (size_t)k / ER_QK8_0;
    const size_t pf = er_prefetch_distance(HEAD_ROWS * nb * sizeof(er_block_q8_0));
    for (int r = 0; r < rows;) {
        const int R = r + HEAD_ROWS <= rows ? HEAD_ROWS : 1; /* the rows stay in L1 across token tiles */
        for (int t0 = 0; t0 < n_tok; t0 += GEMM_TOKS) {
            const int nt = n_tok - t0 < GEMM_TOKS ? n_tok - t0 : GEMM_TOKS;
            q8_0_tile_rows(w + (size_t)r * nb, nb, xq + (size_t)t0 * nb, out + (size_t)t0 * ldo + r, (size_t)ldo, R,
                           nt, pf);
        }
        r += R;
    }
}

void er_q8_0_gemv_avx512vnni(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) {
    er_q8_0_gemm_avx512vnni(w, xq, out, rows, rows, k, 1);
}
#endif /* __x86_64__ */
