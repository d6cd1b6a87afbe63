/* The blocking loop that every I2_S GEMM variant shares: rows are taken in blocks of about
 * row_block_bytes of codes, so a block stays in cache while tiles of up to gemm_toks tokens pass
 * over it, and each tile unpacks a weight group once for all its tokens. A variant supplies its
 * tile kernel and its activation-sum routine; included after the variant's ISA pragma, so the
 * loop is compiled (and the kernels inlined) for that ISA. */
#ifndef ER_I2S_GEMM_BLOCKING_H
#define ER_I2S_GEMM_BLOCKING_H

#include <stddef.h>
#include <stdint.h>

#include "er_kernels.h"

#define ER_GEMM_MAX_TOKS 8

/* out tile (nt tokens, R rows) = W rows @ q tokens, with qsum[t] = sum of token t's codes */
typedef void (*er_i2s_tile_fn)(const uint8_t *w, size_t row_bytes, const int8_t *q, size_t ldq, int groups,
                               const int32_t *qsum, int32_t *out, size_t ldo, int R, int nt);
typedef int32_t (*er_qsum_fn)(const int8_t *q, int k);

static inline __attribute__((always_inline)) void er_i2s_gemm_blocked(
    er_i2s_tile_fn tile, er_qsum_fn qsum_of, int gemm_rows, int gemm_toks, size_t row_block_bytes,
    const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows, int k, int n_tok) {
    const size_t row_bytes = (size_t)k / 4;
    const int groups = k / ER_I2S_GROUP;
    int block_rows = (int)(row_block_bytes / row_bytes) / gemm_rows * gemm_rows;
    if (block_rows < gemm_rows) block_rows = gemm_rows;
    for (int r0 = 0; r0 < rows; r0 += block_rows) {
        const int r1 = r0 + block_rows < rows ? r0 + block_rows : rows;
        for (int t0 = 0; t0 < n_tok; t0 += gemm_toks) {
            const int nt = n_tok - t0 < gemm_toks ? n_tok - t0 : gemm_toks;
            const int8_t *qt = q + (size_t)t0 * ldq;
            int32_t *ot = out + (size_t)t0 * ldo;
            int32_t qsum[ER_GEMM_MAX_TOKS];
            for (int t = 0; t < nt; t++) qsum[t] = qsum_of(qt + (size_t)t * ldq, k);
            for (int r = r0; r < r1;) {
                const int R = r + gemm_rows <= r1 ? gemm_rows : 1;
                tile(w + r * row_bytes, row_bytes, qt, ldq, groups, qsum, ot + r, ldo, R, nt);
                r += R;
            }
        }
    }
}

#endif
