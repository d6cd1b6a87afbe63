/* The attention of one batch's items (see attention_task in er_engine.c), included there once per
 * way of widening the f16 KV cache: ER_ATT_NAME is the function defined, ER_ATT_CVT(p) turns 8 f16
 * values at p into an er_v8f, ER_ATT_FMA(a, b, c) is the lanewise fused a * b + c (ER_ATT_FMA_S the
 * same with a scalar a) and ER_ATT_ATTRS holds the target attribute. Every version performs the
 * same float operations in the same order (the conversions are exact, a fused multiply-add is
 * one IEEE rounding everywhere, the exponential is built from those), so they agree bit for bit.
 *
 * An item is token t with the query heads h0 .. h0 + nh - 1 that read kv head kvh. Scores: per
 * position, 8 interleaved partial sums per head, added up by sum8 or, 8 positions at a time, by
 * sum8x8 (the same additions). Weights: exp8 over 8 positions at a time, their total in 8 lanes.
 * Output: per 8-wide slice of the head, the weighted V rows are summed over the positions in
 * order in registers and stored once. A version may define ER_ATT_QK8 (the raw partial sums of
 * 8 positions) and ER_ATT_V32 (the output slices of 32 lanes at a time) with the same arithmetic
 * in wider registers. */
#define ER_ATT_CAT2(a, b) a##b
#define ER_ATT_CAT(a, b) ER_ATT_CAT2(a, b)
#define ER_ATT_ITEM ER_ATT_CAT(ER_ATT_NAME, _item)
#define ER_ATT_EXP8 ER_ATT_CAT(ER_ATT_NAME, _exp8)

/* e^x lane by lane for x <= 0 (0 below -87, where e^x leaves the normal floats): x = n ln2 + r
 * with n = round(x log2e) by the 1.5 * 2^23 shift, r in two fused steps (Cody-Waite), e^r by a
 * degree-6 polynomial (Cephes' expf coefficients, within 2 ulp of expf), 2^n into the exponent. */
ER_ATT_ATTRS static inline er_v8f ER_ATT_EXP8(er_v8f x) {
    const er_v8f shift = {0x1.8p23f, 0x1.8p23f, 0x1.8p23f, 0x1.8p23f, 0x1.8p23f, 0x1.8p23f, 0x1.8p23f,
                          0x1.8p23f};
    const er_v8u low = (er_v8u)(x < -87.0f);
    const er_v8f t = ER_ATT_FMA(x, (er_v8f){0.0f} + 1.44269504088896341f, shift);
    const er_v8f n = t - shift;
    er_v8f r = ER_ATT_FMA(n, (er_v8f){0.0f} - 0.693359375f, x);
    r = ER_ATT_FMA(n, (er_v8f){0.0f} + 2.12194440e-4f, r);
    er_v8f y = (er_v8f){0.0f} + 1.9875691500e-4f;
    y = ER_ATT_FMA(y, r, (er_v8f){0.0f} + 1.3981999507e-3f);
    y = ER_ATT_FMA(y, r, (er_v8f){0.0f} + 8.3334519073e-3f);
    y = ER_ATT_FMA(y, r, (er_v8f){0.0f} + 4.1665795894e-2f);
    y = ER_ATT_FMA(y, r, (er_v8f){0.0f} + 1.6666665459e-1f);
    y = ER_ATT_FMA(y, r, (er_v8f){0.0f} + 5.0000001201e-1f);
    y = ER_ATT_FMA(y, r * r, r) + 1.0f;
    const er_v8u two_n = ((er_v8u)t - 0x4b400000u + 127u) << 23;
    return (er_v8f)((er_v8u)(y * (er_v8f)two_n) & ~low);
}

/* One item; nh is a constant in each call below, so the partial sums stay in registers. */
ER_ATT_ATTRS static __attribute__((noinline)) void ER_ATT_ITEM(er_engine *e, int l, float *att, int t,
                                                                            int kvh, int h0, const int nh) {
    const int hd = e->cfg.head_dim;
    const size_t n_ctx = (size_t)e->n_ctx, kv_dim = (size_t)e->kv_dim;
    const float scale = 1.0f / sqrtf((float)hd);
    const int n_pos = e->tok_pos[t] + 1; /* causal: positions 0 .. pos of the token */
    const uint16_t *kc = er_kv_rows(e, e->k_cache, e->tok_seq[t], l) + (size_t)kvh * hd;
    const uint16_t *vc = er_kv_rows(e, e->v_cache, e->tok_seq[t], l) + (size_t)kvh * hd;
    const float *q0 = e->q + (size_t)t * e->q_dim + (size_t)h0 * hd;
    float mx[ATT_MAX_HEADS], inv[ATT_MAX_HEADS];
    for (int g = 0; g < nh; g++) mx[g] = -INFINITY;
    er_v8f vmx[ATT_MAX_HEADS];
    for (int g = 0; g < nh; g++) vmx[g] = (er_v8f){0.0f} - INFINITY;
    int p = 0;
    for (; p + 8 <= n_pos && hd % 8 == 0; p += 8) { /* two positions share each load of q */
        er_v8f raw[ATT_MAX_HEADS][8];
#ifdef ER_ATT_QK8
        ER_ATT_QK8(raw, kc + (size_t)p * kv_dim, kv_dim, q0, hd, nh);
#else
        for (int pp = 0; pp < 8; pp += 2) {
            const uint16_t *kr0 = kc + (size_t)(p + pp) * kv_dim, *kr1 = kr0 + kv_dim;
            er_v8f acc0[ATT_MAX_HEADS], acc1[ATT_MAX_HEADS];
            for (int g = 0; g < nh; g++) acc0[g] = acc1[g] = (er_v8f){0.0f};
            for (int i = 0; i < hd; i += 8) {
                const er_v8f k0 = ER_ATT_CVT(kr0 + i), k1 = ER_ATT_CVT(kr1 + i);
                for (int g = 0; g < nh; g++) {
                    const er_v8f qv = load8f(q0 + (size_t)g * hd + i);
                    acc0[g] = ER_ATT_FMA(qv, k0, acc0[g]);
                    acc1[g] = ER_ATT_FMA(qv, k1, acc1[g]);
                }
            }
            for (int g = 0; g < nh; g++) {
                raw[g][pp] = acc0[g];
                raw[g][pp + 1] = acc1[g];
            }
        }
#endif
        for (int g = 0; g < nh; g++) {
            const er_v8f s = sum8x8(raw[g]) * scale;
            memcpy(att + g * n_ctx + p, &s, sizeof(s));
            const er_v8u up = (er_v8u)(s > vmx[g]);
            vmx[g] = (er_v8f)(((er_v8u)s & up) | ((er_v8u)vmx[g] & ~up));
        }
    }
    for (int g = 0; g < nh; g++)
        for (int l = 0; l < 8; l++) mx[g] = vmx[g][l] > mx[g] ? vmx[g][l] : mx[g];
    for (; p < n_pos; p++) {
        const uint16_t *kr = kc + (size_t)p * kv_dim;
        er_v8f acc[ATT_MAX_HEADS];
        for (int g = 0; g < nh; g++) acc[g] = (er_v8f){0.0f};
        int i = 0;
        for (; i + 8 <= hd; i += 8) {
            const er_v8f k8 = ER_ATT_CVT(kr + i); /* converted once for every head of the item */
            for (int g = 0; g < nh; g++) acc[g] = ER_ATT_FMA(load8f(q0 + (size_t)g * hd + i), k8, acc[g]);
        }
        for (int g = 0; g < nh; g++) {
            float s = sum8(acc[g]);
            for (int r = i; r < hd; r++) s += q0[(size_t)g * hd + r] * f16(kr[r]);
            s *= scale;
            att[g * n_ctx + p] = s;
            mx[g] = s > mx[g] ? s : mx[g];
        }
    }
    for (int g = 0; g < nh; g++) {
        float *ag = att + g * n_ctx;
        er_v8f total = {0.0f};
        for (int p = 0; p < n_pos; p += 8) { /* the last block padded with -inf, whose weight is 0 */
            const int n = n_pos - p < 8 ? n_pos - p : 8;
            er_v8f x = (er_v8f){0.0f} - INFINITY;
            memcpy(&x, ag + p, sizeof(float) * (size_t)n);
            const er_v8f w = ER_ATT_EXP8(x - mx[g]);
            memcpy(ag + p, &w, sizeof(float) * (size_t)n);
            total = total + w;
        }
        inv[g] = 1.0f / sum8(total);
        for (int p = 0; p < n_pos; p++) ag[p] *= inv[g]; /* the weights */
    }
    float *out0 = e->xb + (size_t)t * e->q_dim + (size_t)h0 * hd;
    int i = 0;
#ifdef ER_ATT_V32
    i = ER_ATT_V32(out0, vc, kv_dim, att, n_ctx, n_pos, hd, nh);
#endif
    for (; i + 16 <= hd; i += 16) { /* two slices share each weight */
        er_v8f o0[ATT_MAX_HEADS], o1[ATT_MAX_HEADS];
        for (int g = 0; g < nh; g++) o0[g] = o1[g] = (er_v8f){0.0f};
        for (int p = 0; p < n_pos; p++) {
            const uint16_t *vr = vc + (size_t)p * kv_dim + i;
            const er_v8f v0 = ER_ATT_CVT(vr), v1 = ER_ATT_CVT(vr + 8);
            for (int g = 0; g < nh; g++) {
                const float a = att[g * n_ctx + p];
                o0[g] = ER_ATT_FMA_S(a, v0, o0[g]);
                o1[g] = ER_ATT_FMA_S(a, v1, o1[g]);
            }
        }
        for (int g = 0; g < nh; g++) {
            memcpy(out0 + (size_t)g * hd + i, &o0[g], sizeof(o0[g]));
            memcpy(out0 + (size_t)g * hd + i + 8, &o1[g], sizeof(o1[g]));
        }
    }
    for (; i + 8 <= hd; i += 8) {
        er_v8f o[ATT_MAX_HEADS];
        for (int g = 0; g < nh; g++) o[g] = (er_v8f){0.0f};
        for (int p = 0; p < n_pos; p++) {
            const er_v8f v8 = ER_ATT_CVT(vc + (size_t)p * kv_dim + i);
            for (int g = 0; g < nh; g++) o[g] = ER_ATT_FMA_S(att[g * n_ctx + p], v8, o[g]);
        }
        for (int g = 0; g < nh; g++) memcpy(out0 + (size_t)g * hd + i, &o[g], sizeof(o[g]));
    }
    for (; i < hd; i++)
        for (int g = 0; g < nh; g++) {
            float s = 0.0f;
            for (int p = 0; p < n_pos; p++) s = s + att[g * n_ctx + p] * f16(vc[(size_t)p * kv_dim + i]);
            out0[(size_t)g * hd + i] = s;
        }
}

ER_ATT_ATTRS static void ER_ATT_NAME(void *ctx, int ith, int nth) {
    attention_job *j = (attention_job *)ctx;
    er_engine *e = j->e;
    const int n_kv = e->cfg.n_kv_heads;
    const int group = e->cfg.n_heads / n_kv;
    const int per_item = j->heads_per_item;
    const int chunks = (group + per_item - 1) / per_item;
    float *att = e->att + (size_t)ith * ATT_MAX_HEADS * (size_t)e->n_ctx;
    /* Items in kv-head-major order and a contiguous range per thread: a thread walks the tokens of
     * one kv head in a row, so that head's K and V rows stay in its cache. */
    const int n_items = j->T * n_kv * chunks;
    const int i0 = (int)((long long)n_items * ith / nth), i1 = (int)((long long)n_items * (ith + 1) / nth);
    for (int idx = i0; idx < i1; idx++) {
        const int kvh = idx / (j->T * chunks), t = idx / chunks % j->T;
        const int h0 = kvh * group + idx % chunks * per_item;
        const int nh = per_item < kvh * group + group - h0 ? per_item : kvh * group + group - h0;
        _Static_assert(ATT_MAX_HEADS == 4, "one case per head count");
        switch (nh) {
        case 1: ER_ATT_ITEM(e, j->l, att, t, kvh, h0, 1); break;
        case 2: ER_ATT_ITEM(e, j->l, att, t, kvh, h0, 2); break;
        case 3: ER_ATT_ITEM(e, j->l, att, t, kvh, h0, 3); break;
        default: ER_ATT_ITEM(e, j->l, att, t, kvh, h0, 4); break;
        }
    }
}
#undef ER_ATT_ITEM
#undef ER_ATT_EXP8
