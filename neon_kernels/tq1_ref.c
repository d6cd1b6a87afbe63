/* Portable scalar reference for the TQ1_S ternary kernels: the specification every SIMD variant
 * must match bit for bit (and, on the same trits, the I2_S reference too). */
#include <string.h>

#include "er_kernels.h"

/* sum_i code(row, i) * q[i] over one TQ1_S row, minus sum(q): out[r] of the GEMV. */
static int32_t tq1_row_dot_ref(const uint8_t *row, const int8_t *q, int k) {
    int32_t acc = 0, qsum = 0;
    for (int c = 0; c < ER_TQ1_CHUNKS(k); c++) {
        const uint8_t *b = row + (size_t)c * sizeof(er_block_tq1_s);
        for (int p = 0; p < ER_TQ1_STRIPS; p++) {
            const int base = c * ER_TQ1_CHUNK + p * ER_TQ1_STRIP;
            if (base >= k) break; /* padding strips of the last chunk */
            for (int j = 0; j < ER_TQ1_STRIP; j++) acc += er_tq1_code(b[j], p) * q[base + j];
        }
    }
    for (int i = 0; i < k; i++) qsum += q[i];
    return acc - qsum;
}

void er_tq1_gemv_ref(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = ER_TQ1_ROW_BYTES(k);
    for (int r = 0; r < rows; r++) out[r] = tq1_row_dot_ref(w + (size_t)r * row_bytes, q, k);
}

void er_tq1_gemm_ref(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                     int k, int n_tok) {
    for (int t = 0; t < n_tok; t++)
        er_tq1_gemv_ref(w, q + (size_t)t * ldq, out + (size_t)t * ldo, rows, k);
}

/* Strip s of a TQ1_S row is chunk s / 5, position s % 5; in I2_S it is group s / 4 at bits
 * 7 - 2 (s % 4) .. 6 - 2 (s % 4), byte j of both holding weight 32 s + j. */
void er_tq1_to_i2s_ref(const uint8_t *w, uint8_t *i2s, int rows, int k) {
    const size_t tq1_row = ER_TQ1_ROW_BYTES(k), i2s_row = (size_t)k / 4;
    for (int r = 0; r < rows; r++) {
        const uint8_t *src = w + (size_t)r * tq1_row;
        uint8_t *dst = i2s + (size_t)r * i2s_row;
        memset(dst, 0, i2s_row);
        for (int s = 0; s < k / ER_TQ1_STRIP; s++) {
            const uint8_t *b = src + (size_t)(s / ER_TQ1_STRIPS) * sizeof(er_block_tq1_s);
            uint8_t *g = dst + (size_t)(s / 4) * ER_I2S_GROUP_BYTES;
            const int shift = 6 - 2 * (s % 4);
            for (int j = 0; j < ER_TQ1_STRIP; j++) g[j] |= (uint8_t)(er_tq1_code(b[j], s % ER_TQ1_STRIPS) << shift);
        }
    }
}
