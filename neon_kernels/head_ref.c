/* Portable scalar reference for the output-head kernels (F16, Q8_0, Q4_0). */
#include <math.h>

#include "er_kernels.h"

/* W (rows, k) f16 @ x (k,) -> out (rows,) */
void er_f16_gemv_ref(const uint16_t *w, const float *x, float *out, int rows, int k) {
    for (int r = 0; r < rows; r++) {
        const uint16_t *row = w + (size_t)r * k;
        float acc = 0.0f;
        for (int i = 0; i < k; i++) acc += er_fp16_to_fp32(row[i]) * x[i];
        out[r] = acc;
    }
}

/* x (k,) -> Q8_0 blocks: d = max|x| / 127, q = rint(x / d) (round half even). */
void er_quantize_row_q8_0_ref(const float *x, er_block_q8_0 *y, int k) {
    for (int b = 0; b < k / ER_QK8_0; b++) {
        const float *xb = x + b * ER_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < ER_QK8_0; j++) {
            float a = fabsf(xb[j]);
            amax = a > amax ? a : amax;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = er_fp32_to_fp16(d);
        for (int j = 0; j < ER_QK8_0; j++) {
            float v = rintf(xb[j] * id);
            v = v > 127.0f ? 127.0f : (v < -128.0f ? -128.0f : v);
            y[b].qs[j] = (int8_t)v;
        }
    }
}

void er_q8_0_gemv_ref(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) {
    const int nb = k / ER_QK8_0;
    for (int r = 0; r < rows; r++) {
        const er_block_q8_0 *wr = w + (size_t)r * nb;
        float acc = 0.0f;
        for (int b = 0; b < nb; b++) {
            int32_t s = 0;
            for (int j = 0; j < ER_QK8_0; j++) s += wr[b].qs[j] * xq[b].qs[j];
            acc += er_fp16_to_fp32(wr[b].d) * er_fp16_to_fp32(xq[b].d) * (float)s;
        }
        out[r] = acc;
    }
}

void er_q4_0_gemv_ref(const er_block_q4_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) {
    const int nb = k / ER_QK4_0;
    for (int r = 0; r < rows; r++) {
        const er_block_q4_0 *wr = w + (size_t)r * nb;
        float acc = 0.0f;
        for (int b = 0; b < nb; b++) {
            int32_t s = 0;
            for (int j = 0; j < ER_QK4_0 / 2; j++) {
                s += ((wr[b].qs[j] & 0x0f) - 8) * xq[b].qs[j];
                s += ((wr[b].qs[j] >> 4) - 8) * xq[b].qs[j + 16];
            }
            acc += er_fp16_to_fp32(wr[b].d) * er_fp16_to_fp32(xq[b].d) * (float)s;
        }
        out[r] = acc;
    }
}
