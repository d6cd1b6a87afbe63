/* AMX-INT8 I2_S ternary GEMM (x86-64 with AMX-TILE + AMX-INT8, e.g. Xeon Sapphire Rapids and
 * later): the prompt path and the batched-decode path of the "amx" variant
 * (its Q8_0 head is in head_amx.c; the rest of that variant is AVX-512 VNNI and AVX2).
 *
 * One tdpbsud multiplies a 16 x 64 tile of signed bytes A by a 64 x 16 tile of unsigned bytes B
 * held in the "VNNI" layout (B row i holds, for each of 16 columns n, the four consecutive
 * bytes 4i .. 4i+3 of column n) and adds the 16 x 16 int32 result to a tile C: 16384
 * multiply-adds per instruction.
 *
 *   A = 16 tokens x 64 activations, read straight from q with row stride ldq;
 *   B = 64 weights of 16 output rows, as 2-bit codes 0..3 widened to bytes;
 *   C = out[t][r] for those 16 tokens and 16 rows, stored straight to out with row stride ldo.
 *
 * C starts at -sum(q) of its token, so it ends at sum(code * q) - sum(q) = sum((code - 1) * q),
 * the same exact int32 as the scalar reference (an int32 lane adds at most k products of
 * 3 * 128, far from overflow for any k this kernel takes).
 *
 * Unpacking into the B layout. A 32-byte I2_S group (128 weights of one row) holds weight
 * 32m + j at byte j, bits 7-2m .. 6-2m. B row i of the tile for group weights 0..63 needs
 * weights 4i .. 4i+3 of 16 rows: for i < 8 these are byte dword i of the group at shift 6, for
 * i >= 8 dword i-8 at shift 4; the tile for weights 64..127 uses the same dwords at shifts 2 and
 * 0. So a 16-row x 8-dword transpose of the packed groups (two 8x8 dword transposes side by side
 * in one set of zmm registers) gives eight vectors G[d] = dword d of rows 0..15, and each of the
 * 32 B rows of the group is one shift and one mask of a G[d].
 *
 * Blocking: 32 weight rows (two B tiles) are unpacked for the whole k into a stack buffer
 * (32 * k bytes, at most AMX_MAX_K), then tokens pass over it 32 at a time (two A tiles): four C
 * tiles accumulate over k, so each unpacked B tile serves every token of the prompt. Fewer than
 * 16 tokens (and the tail of a prompt) take the small-batch path below; rows beyond a multiple
 * of 32 and k > AMX_MAX_K go to the AVX-512 VNNI GEMM, which gives the same result.
 *
 * The tile state must be enabled per process (arch_prctl ARCH_REQ_XCOMP_PERM); the dispatcher
 * does that once before it offers this variant. Each call loads the tile configuration on
 * entry and releases the tiles on exit, so a thread holds no AMX state between calls. */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,gfni,amx-tile,amx-int8,avx2,fma,f16c")
#include <immintrin.h>
#include <string.h>

#include "amx_tiles.h"
#include "er_kernels.h"

#define AMX_ROWS 32     /* weight rows per block: two B tiles */
#define AMX_TOKS 16     /* tokens per A tile */
#define AMX_MAX_K 8192  /* the B buffer of a block is AMX_ROWS * k bytes on the stack (256 KiB) */
#define KSTEP 64        /* weights per tile product */
#define PF_LINES 8       /* cache lines of the next row block prefetched per unpacked group */
#define TOK_CHUNK 256   /* tokens whose activation sums are kept at once (a multiple of 32) */

/* (byte >> s) & 3 of every byte in one GF(2) affine op, the 8x8 bit matrix of each qword:
 * output bit 0 <- input bit s, bit 1 <- bit s + 1 */
#define CODE_AT(s) ((long long)((1ull << (s)) << 56 | (1ull << ((s) + 1)) << 48))

/* the prompt path's tiles: 0-1 A, 2-3 B, 4-7 C, each 16 rows x 64 B */
static void amx_configure(void) {
    er_amx_tilecfg cfg;
    er_amx_tilecfg_init(&cfg);
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    _tile_loadconfig(&cfg);
}

/* Unpack 16 rows (row_bytes apart) of I2_S codes into B tiles: for every group g, the tile of
 * weights 0..63 at b + (2g) * step and the tile of weights 64..127 at b + (2g + 1) * step. */
static void unpack_b16(const uint8_t *w, size_t row_bytes, int groups, uint8_t *b, size_t step,
                       const uint8_t *pf) {
    const __m512i at6 = _mm512_set1_epi64(CODE_AT(6)), at4 = _mm512_set1_epi64(CODE_AT(4));
    const __m512i at2 = _mm512_set1_epi64(CODE_AT(2)), at0 = _mm512_set1_epi64(CODE_AT(0));
    /* qword picks for the last transpose stage: lanes 0 and 2 of x and y, or lanes 1 and 3 */
    const __m512i pick_lo = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
    const __m512i pick_hi = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    for (int g = 0; g < groups; g++) {
        const uint8_t *src = w + (size_t)g * ER_I2S_GROUP_BYTES;
        for (int l = 0; l < PF_LINES; l++) _mm_prefetch((const char *)(pf + ((size_t)g * PF_LINES + l) * 64), _MM_HINT_T0);
        __m512i v[8], t[8], u[8], G[8];
        /* v[n] = row n (low 256 bits) and row n + 8 (high 256 bits) */
        for (int n = 0; n < 8; n++)
            v[n] = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(src + n * row_bytes))),
                _mm256_loadu_si256((const __m256i *)(src + (n + 8) * row_bytes)), 1);
        for (int n = 0; n < 8; n += 2) {
            t[n] = _mm512_unpacklo_epi32(v[n], v[n + 1]);
            t[n + 1] = _mm512_unpackhi_epi32(v[n], v[n + 1]);
        }
        /* u[4h + s]: rows 4h .. 4h+3 (and +8), dword s in 128-bit lanes 0/2, dword s + 4 in 1/3 */
        for (int h = 0; h < 2; h++) {
            u[4 * h + 0] = _mm512_unpacklo_epi64(t[4 * h + 0], t[4 * h + 2]);
            u[4 * h + 1] = _mm512_unpackhi_epi64(t[4 * h + 0], t[4 * h + 2]);
            u[4 * h + 2] = _mm512_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
            u[4 * h + 3] = _mm512_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
        }
        for (int s = 0; s < 4; s++) {
            G[s] = _mm512_permutex2var_epi64(u[s], pick_lo, u[4 + s]);
            G[s + 4] = _mm512_permutex2var_epi64(u[s], pick_hi, u[4 + s]);
        }
        uint8_t *b0 = b + (size_t)(2 * g) * step, *b1 = b0 + step;
        for (int d = 0; d < 8; d++) {
            _mm512_store_si512((void *)(b0 + d * 64), _mm512_gf2p8affine_epi64_epi8(G[d], at6, 0));
            _mm512_store_si512((void *)(b0 + (d + 8) * 64), _mm512_gf2p8affine_epi64_epi8(G[d], at4, 0));
            _mm512_store_si512((void *)(b1 + d * 64), _mm512_gf2p8affine_epi64_epi8(G[d], at2, 0));
            _mm512_store_si512((void *)(b1 + (d + 8) * 64), _mm512_gf2p8affine_epi64_epi8(G[d], at0, 0));
        }
    }
}

/* rows [0, 32) x tokens [0, n16) of the product, n16 % 16 == 0, with the block's B tiles in b
 * (k-step s: tile of rows 0-15 at b + s * 2048, rows 16-31 at + 1024) */
static void amx_block(const uint8_t *b, const int8_t *q, size_t ldq, const int32_t *negsum, int32_t *out,
                      size_t ldo, int ksteps, int n16) {
    int32_t cinit[2][16][16] __attribute__((aligned(64)));
    const size_t qstride = ldq, ostride = ldo * sizeof(int32_t);
    int t0 = 0;
    for (; t0 + 2 * AMX_TOKS <= n16; t0 += 2 * AMX_TOKS) {
        for (int a = 0; a < 2; a++)
            for (int t = 0; t < 16; t++)
                for (int c = 0; c < 16; c++) cinit[a][t][c] = negsum[t0 + 16 * a + t];
        _tile_loadd(4, cinit[0], 64);
        _tile_loadd(5, cinit[0], 64);
        _tile_loadd(6, cinit[1], 64);
        _tile_loadd(7, cinit[1], 64);
        const int8_t *q0 = q + (size_t)t0 * ldq, *q1 = q0 + 16 * ldq;
        for (int s = 0; s < ksteps; s++) {
            _tile_loadd(0, q0 + (size_t)s * KSTEP, qstride);
            _tile_loadd(1, q1 + (size_t)s * KSTEP, qstride);
            _tile_loadd(2, b + (size_t)s * 2048, 64);
            _tile_loadd(3, b + (size_t)s * 2048 + 1024, 64);
            _tile_dpbsud(4, 0, 2);
            _tile_dpbsud(5, 0, 3);
            _tile_dpbsud(6, 1, 2);
            _tile_dpbsud(7, 1, 3);
        }
        int32_t *o0 = out + (size_t)t0 * ldo, *o1 = o0 + 16 * ldo;
        _tile_stored(4, o0, ostride);
        _tile_stored(5, o0 + 16, ostride);
        _tile_stored(6, o1, ostride);
        _tile_stored(7, o1 + 16, ostride);
    }
    if (t0 < n16) { /* one A tile left */
        for (int t = 0; t < 16; t++)
            for (int c = 0; c < 16; c++) cinit[0][t][c] = negsum[t0 + t];
        _tile_loadd(4, cinit[0], 64);
        _tile_loadd(5, cinit[0], 64);
        const int8_t *q0 = q + (size_t)t0 * ldq;
        for (int s = 0; s < ksteps; s++) {
            _tile_loadd(0, q0 + (size_t)s * KSTEP, qstride);
            _tile_loadd(2, b + (size_t)s * 2048, 64);
            _tile_loadd(3, b + (size_t)s * 2048 + 1024, 64);
            _tile_dpbsud(4, 0, 2);
            _tile_dpbsud(5, 0, 3);
        }
        int32_t *o0 = out + (size_t)t0 * ldo;
        _tile_stored(4, o0, ostride);
        _tile_stored(5, o0 + 16, ostride);
    }
}

/* ---- A few tokens (batched decode steps): the roles turn around -------------------------------
 *
 * With fewer than 16 tokens the A tile above would be mostly empty, so here the weights are A
 * and the tokens B:
 *
 *   A = 16 weight rows x 64 weights, the 2-bit codes widened to bytes (0..3) in weight order,
 *       which is what one GF(2) affine op per half makes of a group broadcast to a zmm (no
 *       transpose: A is row-major);
 *   B = 64 activations of np tokens in the VNNI layout (B row i, column n = bytes 4i .. 4i+3 of
 *       token n), packed once per call; np is n_tok rounded up to a power of two, the extra
 *       columns zero;
 *   C = 16 rows x np tokens, starting at -sum(q) of each token.
 *
 * tdpbusd (A unsigned, B signed) gives sum(code * q) exactly, so C ends at the reference's
 * int32. Rows go 32 at a time (two C tiles), group by group: each group's codes are widened
 * into a 4 KiB buffer that stays in L1, then four tile products use it. The codes are read
 * from memory once for all the tokens, and widening them costs about what the GEMV's own
 * unpacking does, so a step of a few tokens costs little more than one. */

static void amx_configure_small(int np) {
    er_amx_tilecfg cfg;
    er_amx_tilecfg_init(&cfg);
    for (int i = 0; i < 4; i++) { /* A: rows 0-15 / 16-31, weights 0..63 / 64..127 of a group */
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    for (int i = 4; i < 8; i++) { /* B (4, 5) and C (6, 7): np columns of 4 bytes */
        cfg.colsb[i] = (uint16_t)(4 * np);
        cfg.rows[i] = 16;
    }
    _tile_loadconfig(&cfg);
}

/* q (n_tok, ldq) -> qb: k-step s (64 weights) is a 16 x 4np byte B tile at qb + s * 64np */
static void pack_tokens_vnni(const int8_t *q, int ldq, int n_tok, int np, int k, int8_t *qb) {
    const int ksteps = k / KSTEP;
    int32_t *d = (int32_t *)qb;
    for (int s = 0; s < ksteps; s++)
        for (int i = 0; i < 16; i++)
            for (int n = 0; n < np; n++) {
                int32_t v = 0;
                if (n < n_tok) memcpy(&v, q + (size_t)n * ldq + (size_t)s * KSTEP + 4 * i, 4);
                d[((size_t)s * 16 + i) * np + n] = v;
            }
}

/* the codes of group g of 16 rows, widened: a0 (16 x 64) = weights 0..63, a1 = weights 64..127 */
static inline __attribute__((always_inline)) void widen_group16(const uint8_t *src, size_t row_bytes, uint8_t *a0,
                                                                uint8_t *a1, __m512i at64, __m512i at20) {
#pragma GCC unroll 16
    for (int r = 0; r < 16; r++) {
        const __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(src + r * row_bytes)));
        _mm512_store_si512((void *)(a0 + r * 64), _mm512_gf2p8affine_epi64_epi8(b, at64, 0));
        _mm512_store_si512((void *)(a1 + r * 64), _mm512_gf2p8affine_epi64_epi8(b, at20, 0));
    }
}

/* rows [0, r32) (r32 % 32 == 0) x tokens [0, n_tok), 1 <= n_tok <= 16, k <= AMX_MAX_K (the
 * packed activations, np * k bytes, are on the stack) */
static void i2s_gemm_amx_small(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int r32, int k,
                               int n_tok) {
    int np = 1;
    while (np < n_tok) np *= 2;
    const size_t row_bytes = (size_t)k / 4;
    const int groups = k / ER_I2S_GROUP;
    int8_t qb[16 * AMX_MAX_K] __attribute__((aligned(64)));
    uint8_t abuf[2][4][16 * 64] __attribute__((aligned(64))); /* two groups: one widened while the other is read */
    int32_t cinit[16 * 16] __attribute__((aligned(64))), cout[2][16 * 16] __attribute__((aligned(64)));
    pack_tokens_vnni(q, ldq, n_tok, np, k, qb);
    for (int n = 0; n < np; n++) {
        const int32_t ns = n < n_tok ? -er_i2s_qsum_avx512(q + (size_t)n * ldq, k) : 0;
        for (int r = 0; r < 16; r++) cinit[r * np + n] = ns;
    }
    /* the low half of the zmm takes shift 6 (or 2) and the high half shift 4 (or 0): weights j
     * and 32 + j of the group side by side */
    const __m512i at64 = _mm512_inserti64x4(_mm512_set1_epi64(CODE_AT(6)), _mm256_set1_epi64x(CODE_AT(4)), 1);
    const __m512i at20 = _mm512_inserti64x4(_mm512_set1_epi64(CODE_AT(2)), _mm256_set1_epi64x(CODE_AT(0)), 1);
    const int bstride = 4 * np;
    const size_t lines_per_group = 32 * row_bytes / 64 / (size_t)groups; /* 16 */
    amx_configure_small(np);
    for (int r0 = 0; r0 < r32; r0 += AMX_ROWS) {
        const uint8_t *wr = w + (size_t)r0 * row_bytes;
        const uint8_t *next = wr + AMX_ROWS * row_bytes;
        _tile_loadd(6, cinit, bstride);
        _tile_loadd(7, cinit, bstride);
        /* software pipeline: group g + 1 is widened before group g's tiles are loaded, so the
         * tile loads never wait on the stores just made */
        widen_group16(wr, row_bytes, abuf[0][0], abuf[0][1], at64, at20);
        widen_group16(wr + 16 * row_bytes, row_bytes, abuf[0][2], abuf[0][3], at64, at20);
        for (int g = 0; g < groups; g++) {
            if (r0 + AMX_ROWS < r32)
                for (size_t l = 0; l < lines_per_group; l++)
                    _mm_prefetch((const char *)(next + ((size_t)g * lines_per_group + l) * 64), _MM_HINT_T0);
            if (g + 1 < groups) {
                const uint8_t *src = wr + (size_t)(g + 1) * ER_I2S_GROUP_BYTES;
                uint8_t(*a)[16 * 64] = abuf[(g + 1) & 1];
                widen_group16(src, row_bytes, a[0], a[1], at64, at20);
                widen_group16(src + 16 * row_bytes, row_bytes, a[2], a[3], at64, at20);
            }
            uint8_t(*a)[16 * 64] = abuf[g & 1];
            _tile_loadd(0, a[0], 64);
            _tile_loadd(1, a[1], 64);
            _tile_loadd(2, a[2], 64);
            _tile_loadd(3, a[3], 64);
            _tile_loadd(4, qb + (size_t)(2 * g) * 16 * bstride, bstride);
            _tile_loadd(5, qb + (size_t)(2 * g + 1) * 16 * bstride, bstride);
            _tile_dpbusd(6, 0, 4);
            _tile_dpbusd(6, 1, 5);
            _tile_dpbusd(7, 2, 4);
            _tile_dpbusd(7, 3, 5);
        }
        _tile_stored(6, cout[0], bstride);
        _tile_stored(7, cout[1], bstride);
        for (int h = 0; h < 2; h++)
            for (int r = 0; r < 16; r++)
                for (int n = 0; n < n_tok; n++) out[(size_t)n * ldo + r0 + 16 * h + r] = cout[h][r * np + n];
    }
    _tile_release();
}

void er_i2s_gemm_amx(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows, int k,
                     int n_tok) {
    const int n16 = n_tok / AMX_TOKS * AMX_TOKS;
    const int r32 = rows / AMX_ROWS * AMX_ROWS;
    if (r32 == 0 || k > AMX_MAX_K) {
        er_i2s_gemm_avx512vnni(w, q, ldq, out, ldo, rows, k, n_tok);
        return;
    }
    if (n16 == 0) { /* a few tokens */
        i2s_gemm_amx_small(w, q, ldq, out, ldo, r32, k, n_tok);
        if (rows > r32)
            er_i2s_gemm_avx512vnni(w + (size_t)r32 * (k / 4), q, ldq, out + r32, ldo, rows - r32, k, n_tok);
        return;
    }
    const size_t row_bytes = (size_t)k / 4;
    const int groups = k / ER_I2S_GROUP, ksteps = k / KSTEP;
    uint8_t bbuf[AMX_ROWS * AMX_MAX_K] __attribute__((aligned(64)));
    int32_t negsum[TOK_CHUNK];
    amx_configure();
    for (int t0 = 0; t0 < n16; t0 += TOK_CHUNK) {
        const int nt = n16 - t0 < TOK_CHUNK ? n16 - t0 : TOK_CHUNK;
        for (int t = 0; t < nt; t++) negsum[t] = -er_i2s_qsum_avx512(q + (size_t)(t0 + t) * ldq, k);
        for (int r0 = 0; r0 < r32; r0 += AMX_ROWS) {
            const uint8_t *wr = w + (size_t)r0 * row_bytes;
            /* the next block (32 rows = 8k bytes, contiguous) is fetched while this one is unpacked:
             * 512 bytes per group of each half */
            const uint8_t *next = wr + AMX_ROWS * row_bytes;
            unpack_b16(wr, row_bytes, groups, bbuf, 2048, next);
            unpack_b16(wr + 16 * row_bytes, row_bytes, groups, bbuf + 1024, 2048, next + 16 * row_bytes);
            amx_block(bbuf, q + (size_t)t0 * ldq, (size_t)ldq, negsum, out + (size_t)t0 * ldo + r0, (size_t)ldo,
                      ksteps, nt);
        }
    }
    _tile_release();
    if (n_tok > n16)
        i2s_gemm_amx_small(w, q + (size_t)n16 * ldq, ldq, out + (size_t)n16 * ldo, ldo, r32, k, n_tok - n16);
    if (rows > r32)
        er_i2s_gemm_avx512vnni(w + (size_t)r32 * row_bytes, q, ldq, out + r32, ldo, rows - r32, k, n_tok);
}
#endif /* __x86_64__ */
