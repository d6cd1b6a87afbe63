/* The prompt GEMM every TQ1_S variant shares: a block of rows is repacked into I2_S codes in a
 * stack buffer (the same trits, 2 bits each) and the variant's tuned I2_S GEMM runs over it with
 * all the tokens. Repacking costs one pass over k weights per row; the GEMM then reuses each
 * row n_tok times, so for a prompt the unpack is a small part of the work — the form in which
 * AMX wants its weights anyway. Included after the variant's ISA pragma. */
#ifndef ER_TQ1_GEMM_REPACK_H
#define ER_TQ1_GEMM_REPACK_H

#include <stddef.h>
#include <stdint.h>

#include "er_kernels.h"

/* as the I2_S GEMMs' own row blocks: the repacked rows stay in L2 while the tokens pass */
#define ER_TQ1_REPACK_BYTES (64 * 1024)
/* block rows are kept a multiple of this when they can be (the AMX GEMM tiles 32 rows) */
#define ER_TQ1_REPACK_ROW_MULTIPLE 32

static inline __attribute__((always_inline)) void er_tq1_gemm_repacked(
    er_tq1_to_i2s_fn repack, er_i2s_gemm_fn i2s_gemm, er_tq1_gemv_fn tq1_gemv, const uint8_t *w,
    const int8_t *q, int ldq, int32_t *out, int ldo, int rows, int k, int n_tok) {
    const size_t i2s_row = (size_t)k / 4, tq1_row = ER_TQ1_ROW_BYTES(k);
    if (i2s_row > ER_TQ1_REPACK_BYTES) { /* a row longer than the buffer: token by token */
        for (int t = 0; t < n_tok; t++) tq1_gemv(w, q + (size_t)t * ldq, out + (size_t)t * ldo, rows, k);
        return;
    }
    uint8_t buf[ER_TQ1_REPACK_BYTES] __attribute__((aligned(64)));
    int block = (int)(ER_TQ1_REPACK_BYTES / i2s_row);
    if (block >= ER_TQ1_REPACK_ROW_MULTIPLE) block = block / ER_TQ1_REPACK_ROW_MULTIPLE * ER_TQ1_REPACK_ROW_MULTIPLE;
    for (int r0 = 0; r0 < rows; r0 += block) {
        const int nr = rows - r0 < block ? rows - r0 : block;
        repack(w + (size_t)r0 * tq1_row, buf, nr, k);
        i2s_gemm(buf, q, ldq, out + r0, ldo, nr, k, n_tok);
    }
}

#endif
