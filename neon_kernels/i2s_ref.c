/* Portable scalar reference for activation quantization and the I2_S ternary kernels.
 * This file is the specification: every SIMD variant must produce the same bits. */
#include <math.h>

#include "er_kernels.h"

/* x (n,) -> q (n,) int8, s = 127 / max(max|x|, 1e-5), q = clamp(rint(x * s), -128, 127). */
float er_quantize_row_i8_ref(const float *x, int8_t *q, int n) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    if (amax < 1e-5f) amax = 1e-5f;
    const float s = 127.0f / amax;
    for (int i = 0; i < n; i++) {
        float v = rintf(x[i] * s); /* round half to even, as torch.round */
        v = v > 127.0f ? 127.0f : (v < -128.0f ? -128.0f : v);
        q[i] = (int8_t)v;
    }
    return s;
}

/* out[r] = sum_i (code(r, i) - 1) * q[i] over one row of I2_S groups. */
static int32_t i2s_row_dot_ref(const uint8_t *row, const int8_t *q, int k) {
    int32_t acc = 0;
    for (int g = 0; g < k / ER_I2S_GROUP; g++) {
        const uint8_t *b = row + g * ER_I2S_GROUP_BYTES;
        const int8_t *x = q + g * ER_I2S_GROUP;
        for (int j = 0; j < ER_I2S_GROUP_BYTES; j++) {
            acc += ((b[j] >> 6) & 3) * x[j] + ((b[j] >> 4) & 3) * x[j + 32] +
                   ((b[j] >> 2) & 3) * x[j + 64] + (b[j] & 3) * x[j + 96];
        }
    }
    int32_t qsum = 0;
    for (int i = 0; i < k; i++) qsum += q[i];
    return acc - qsum;
}

void er_i2s_gemv_ref(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) {
    const size_t row_bytes = (size_t)k / 4;
    for (int r = 0; r < rows; r++) out[r] = i2s_row_dot_ref(w + r * row_bytes, q, k);
}

void er_i2s_gemm_ref(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                     int k, int n_tok) {
    for (int t = 0; t < n_tok; t++)
        er_i2s_gemv_ref(w, q + (size_t)t * ldq, out + (size_t)t * ldo, rows, k);
}
