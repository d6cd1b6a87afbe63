/* AMX-INT8 Q8_0 output head (the "amx" variant): logits of one token or of a few at once.
 *
 * A Q8_0 row is blocks of 32 int8 weights with an fp16 scale each, so every block's integer dot
 * product is scaled on its own. One tdpbssd per block of 16 rows gives those dot products for
 * every token of the batch at once:
 *
 *   A = 16 weight rows x the 32 int8 weights of block b, loaded straight from the file (the
 *       rows are nb * 34 bytes apart; no copy, no repacking);
 *   B = block b of np tokens' Q8_0 activations in the VNNI layout (B row i, column n = bytes
 *       4i .. 4i+3 of token n's block), packed once per call; np is the token count rounded
 *       up to a power of two, the extra columns zero;
 *   C = the 16 x np exact int32 dot products of the block.
 *
 * The products are then scaled and summed in f32 with AVX-512: a zmm holds 16 / np rows of np
 * tokens each, and each lane does what the scalar reference does for its row and token,
 *
 *     acc = acc + (d_w * d_x) * (float)dot      (no fused multiply-add, block by block)
 *
 * so every logit is the reference's value bit for bit, whatever the batch size, the lane it
 * landed in or the rows around it: the one-token entry point is this kernel with one token,
 * and a token's logits come out the same alone or in a batch. The weights are read from memory
 * once per call for all the tokens, and the per-block work is a few tile instructions for 16
 * rows instead of a dot product per row and token.
 *
 * Rows beyond a multiple of 16 are copied into a zero-padded tile; k beyond HEAD_MAX_BLOCKS
 * blocks (whose packed activations would not fit the stack) takes the AVX-512 VNNI GEMV token
 * by token, for one token and for many alike. */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8,avx2,fma,f16c")
#include <immintrin.h>
#include <string.h>

#include "amx_tiles.h"
#include "er_kernels.h"

#define TILE_ROWS 16
#define MAX_TOKS 16          /* tokens per call of the tile kernel: one C tile's columns */
#define HEAD_MAX_BLOCKS 256  /* k <= 8192: packed activations nb * 32 * np bytes on the stack */
#define PF_BLOCKS 8          /* each row's weights are prefetched this many blocks ahead */

#define ER_INLINE static inline __attribute__((always_inline))

/* tiles 0-2 (A, B, C) for even blocks, 3-5 for odd ones, so two blocks are in flight */
static void head_configure(int np) {
    er_amx_tilecfg cfg;
    er_amx_tilecfg_init(&cfg);
    for (int s = 0; s < 2; s++) {
        cfg.colsb[3 * s + 0] = ER_QK8_0; /* A: 16 rows x 32 weights */
        cfg.rows[3 * s + 0] = TILE_ROWS;
        cfg.colsb[3 * s + 1] = (uint16_t)(4 * np); /* B: 8 rows of np x 4 bytes */
        cfg.rows[3 * s + 1] = ER_QK8_0 / 4;
        cfg.colsb[3 * s + 2] = (uint16_t)(4 * np); /* C: 16 rows x np int32 */
        cfg.rows[3 * s + 2] = TILE_ROWS;
    }
    _tile_loadconfig(&cfg);
}

/* One block's dot products c (16 rows x np, row-major) scaled into the accumulators: lane j of
 * acc[v] is row v * 16/np + j / np, token j % np. */
ER_INLINE void scale_add(__m512 *acc, const int32_t *c, __m512 dw, __m512 dx, const __m512i *row_of, const int np) {
#pragma GCC unroll 16
    for (int v = 0; v < np; v++) {
        const __m512 s = _mm512_mul_ps(_mm512_permutexvar_ps(row_of[v], dw), dx);
        acc[v] = _mm512_add_ps(acc[v], _mm512_mul_ps(s, _mm512_cvtepi32_ps(_mm512_load_si512((const void *)(c + 16 * v)))));
    }
}

/* the 16 scales of block b of rows w, w + nb, ...: an fp16 in the low half of each gathered dword */
ER_INLINE __m512 row_scales(const er_block_q8_0 *wb, __m512i row_offsets) {
    const __m512i d32 = _mm512_i32gather_epi32(row_offsets, (const void *)wb, 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d32));
}

/* rows [0, 16) of w: a full tile of the head, or the zero-padded copy of its tail rows */
ER_INLINE void head_tile(const er_block_q8_0 *w, int nb, const int8_t *xb, const float *dxp, float *fout,
                         const int np) {
    int32_t c0[TILE_ROWS * MAX_TOKS] __attribute__((aligned(64))), c1[TILE_ROWS * MAX_TOKS] __attribute__((aligned(64)));
    __m512i row_of[MAX_TOKS];
    for (int v = 0; v < np; v++)
        row_of[v] = _mm512_add_epi32(_mm512_set1_epi32(v * (16 / np)),
                                     _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                       __builtin_ctz((unsigned)np)));
    const __m512i row_offsets = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                   _mm512_set1_epi32(nb * (int)sizeof(er_block_q8_0)));
    const size_t astride = (size_t)nb * sizeof(er_block_q8_0), bstride = 4 * (size_t)np;
    __m512 acc[MAX_TOKS];
#pragma GCC unroll 16
    for (int v = 0; v < np; v++) acc[v] = _mm512_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        for (int r = 0; r < TILE_ROWS; r++)
            _mm_prefetch((const char *)(w + (size_t)r * nb + b + PF_BLOCKS), _MM_HINT_T0);
        _tile_loadd(0, w[b].qs, astride);
        _tile_loadd(1, xb + (size_t)b * ER_QK8_0 * np, bstride);
        _tile_zero(2);
        _tile_loadd(3, w[b + 1].qs, astride);
        _tile_loadd(4, xb + (size_t)(b + 1) * ER_QK8_0 * np, bstride);
        _tile_zero(5);
        _tile_dpbssd(2, 0, 1);
        _tile_dpbssd(5, 3, 4);
        _tile_stored(2, c0, bstride);
        _tile_stored(5, c1, bstride);
        scale_add(acc, c0, row_scales(w + b, row_offsets), _mm512_load_ps(dxp + 16 * b), row_of, np);
        scale_add(acc, c1, row_scales(w + b + 1, row_offsets), _mm512_load_ps(dxp + 16 * (b + 1)), row_of, np);
    }
    if (b < nb) {
        _tile_loadd(0, w[b].qs, astride);
        _tile_loadd(1, xb + (size_t)b * ER_QK8_0 * np, bstride);
        _tile_zero(2);
        _tile_dpbssd(2, 0, 1);
        _tile_stored(2, c0, bstride);
        scale_add(acc, c0, row_scales(w + b, row_offsets), _mm512_load_ps(dxp + 16 * b), row_of, np);
    }
#pragma GCC unroll 16
    for (int v = 0; v < np; v++) _mm512_store_ps(fout + 16 * v, acc[v]);
}

#define NP_CASES(CALL) \
    switch (np) {      \
    case 1:            \
        CALL(1);       \
        break;         \
    case 2:            \
        CALL(2);       \
        break;         \
    case 4:            \
        CALL(4);       \
        break;         \
    case 8:            \
        CALL(8);       \
        break;         \
    default:           \
        CALL(16);      \
        break;         \
    }

/* nt <= MAX_TOKS tokens xq (nt, nb) -> out (nt, ldo) for rows [0, rows) */
static void head_chunk(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int ldo, int rows, int nb,
                       int nt) {
    int np = 1;
    while (np < nt) np *= 2;
    int8_t xb[HEAD_MAX_BLOCKS * ER_QK8_0 * MAX_TOKS] __attribute__((aligned(64)));
    float dxp[HEAD_MAX_BLOCKS * 16] __attribute__((aligned(64)));
    float fout[TILE_ROWS * MAX_TOKS] __attribute__((aligned(64)));
    /* B of block b: row i (0..7), column n = bytes 4i .. 4i+3 of token n's block b */
    for (int b = 0; b < nb; b++) {
        int32_t *dst = (int32_t *)(xb + (size_t)b * ER_QK8_0 * np);
        for (int i = 0; i < ER_QK8_0 / 4; i++)
            for (int n = 0; n < np; n++) {
                int32_t v = 0;
                if (n < nt) memcpy(&v, xq[(size_t)n * nb + b].qs + 4 * i, 4);
                dst[i * np + n] = v;
            }
        /* lane j scales token j % np */
        for (int j = 0; j < 16; j++) {
            const int n = j % np;
            dxp[16 * b + j] = n < nt ? er_fp16_to_fp32(xq[(size_t)n * nb + b].d) : 0.0f;
        }
    }
    head_configure(np);
    int r0 = 0;
    for (; r0 + TILE_ROWS <= rows; r0 += TILE_ROWS) {
        const er_block_q8_0 *wr = w + (size_t)r0 * nb;
#define TILE_CALL(NP) head_tile(wr, nb, xb, dxp, fout, NP)
        NP_CASES(TILE_CALL)
#undef TILE_CALL
        for (int r = 0; r < TILE_ROWS; r++)
            for (int n = 0; n < nt; n++) out[(size_t)n * ldo + r0 + r] = fout[r * np + n];
    }
    if (r0 < rows) { /* the tail: a zero-padded copy of its rows (zero scales, zero weights) */
        const int nr = rows - r0;
        er_block_q8_0 pad[TILE_ROWS * HEAD_MAX_BLOCKS];
        memset(pad, 0, sizeof(er_block_q8_0) * TILE_ROWS * (size_t)nb);
        memcpy(pad, w + (size_t)r0 * nb, sizeof(er_block_q8_0) * (size_t)nr * nb);
#define TILE_CALL(NP) head_tile(pad, nb, xb, dxp, fout, NP)
        NP_CASES(TILE_CALL)
#undef TILE_CALL
        for (int r = 0; r < nr; r++)
            for (int n = 0; n < nt; n++) out[(size_t)n * ldo + r0 + r] = fout[r * np + n];
    }
    _tile_release();
}

void er_q8_0_gemm_amx(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int ldo, int rows, int k,
                      int n_tok) {
    const int nb = k / ER_QK8_0;
    if (nb > HEAD_MAX_BLOCKS) {
        for (int t = 0; t < n_tok; t++) er_q8_0_gemv_avx512vnni(w, xq + (size_t)t * nb, out + (size_t)t * ldo, rows, k);
        return;
    }
    for (int t0 = 0; t0 < n_tok; t0 += MAX_TOKS) {
        const int nt = n_tok - t0 < MAX_TOKS ? n_tok - t0 : MAX_TOKS;
        head_chunk(w, xq + (size_t)t0 * nb, out + (size_t)t0 * ldo, ldo, rows, nb, nt);
    }
}

void er_q8_0_gemv_amx(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) {
    er_q8_0_gemm_amx(w, xq, out, rows, rows, k, 1);
}
#endif /* __x86_64__ */
