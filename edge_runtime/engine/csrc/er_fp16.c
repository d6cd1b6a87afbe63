/* fp16 <-> fp32 in software, round-half-even: the same bits on every target, so the scalar
 * reference, the KV cache and the converters agree without relying on F16C or __fp16. */
#include <string.h>

#include "er_kernels.h"

/* the branch-free form in er_kernels.h, which the engine's vector loops also use */
float er_fp16_to_fp32(uint16_t h) { return er_fp16_to_fp32_inline(h); }

uint16_t er_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan (nan stays quiet nan) */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) {
        /* below 2^-14: half subnormal. Adding 0.5f puts the half ulp (2^-24) at the f32 ulp, so
         * the f32 addition performs the round-half-even for us. */
        float v;
        memcpy(&v, &ax, 4);
        v += 0.5f;
        uint32_t vb;
        memcpy(&vb, &v, 4);
        return (uint16_t)(sign | (vb - 0x3f000000u));
    }
    uint32_t odd = (ax >> 13) & 1u;
    ax += 0xc8000fffu + odd; /* rebias exponent (-112 << 23, mod 2^32) and round half even */
    return (uint16_t)(sign | (ax >> 13));
}
