/* Run-time choice of the kernel variant: what was compiled in AND what this CPU reports. */
#define _GNU_SOURCE /* syscall() under -std=c11 */
#include <stdio.h>
#include <string.h>

#include "er_kernels.h"

#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define ER_ARCH_REQ_XCOMP_PERM 0x1023
#define ER_XFEATURE_XTILEDATA 18
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

/* 2B4T here, 2 threads: 2 tokens took 55 ms by the GEMV token by token against 65 in the AVX2
 * GEMM. The avx512vnni GEMM (with its software prefetch) and the amx tile GEMM are faster from
 * 2 tokens: on a Zen 4 machine, 2 tokens 59 ms by the GEMM against 59-67 by the GEMV, 4 tokens
 * 60-67 ms against 85 (minimum of 28 steps, ad-hoc timing of Engine.eval_multi). */
#define ER_GEMV_BATCH_MAX 2

static const er_kernels k_scalar = {
    ER_KERNEL_SCALAR,        "scalar",        er_quantize_row_i8_ref, er_i2s_gemv_ref,
    er_i2s_gemm_ref,         er_f16_gemv_ref, er_quantize_row_q8_0_ref, er_q8_0_gemv_ref,
    er_q4_0_gemv_ref,        er_tq1_gemv_ref, er_tq1_gemm_ref,
    NULL, ER_GEMV_BATCH_MAX,
};

#ifdef ER_HAVE_AVX2_BUILD
static const er_kernels k_avx2 = {
    ER_KERNEL_AVX2,          "avx2",           er_quantize_row_i8_avx2, er_i2s_gemv_avx2,
    er_i2s_gemm_avx2,        er_f16_gemv_avx2, er_quantize_row_q8_0_avx2, er_q8_0_gemv_avx2,
    er_q4_0_gemv_avx2,       er_tq1_gemv_avx2, er_tq1_gemm_avx2,
    NULL, ER_GEMV_BATCH_MAX,
};
static const er_kernels k_avx512vnni = {
    ER_KERNEL_AVX512VNNI,    "avx512vnni",     er_quantize_row_i8_avx2, er_i2s_gemv_avx512vnni,
    er_i2s_gemm_avx512vnni,  er_f16_gemv_avx2, er_quantize_row_q8_0_avx2, er_q8_0_gemv_avx512vnni,
    er_q4_0_gemv_avx2,       er_tq1_gemv_avx512vnni, er_tq1_gemm_avx512vnni,
    er_q8_0_gemm_avx512vnni, 1,
};
static const er_kernels k_amx = {
    ER_KERNEL_AMX,           "amx",            er_quantize_row_i8_avx2, er_i2s_gemv_avx512vnni,
    er_i2s_gemm_amx,         er_f16_gemv_avx2, er_quantize_row_q8_0_avx2, er_q8_0_gemv_amx,
    er_q4_0_gemv_avx2,       er_tq1_gemv_avx512vnni, er_tq1_gemm_amx,
    er_q8_0_gemm_amx, 1,
};
#endif

#ifdef ER_HAVE_NEON_BUILD
static const er_kernels k_neon = {
    ER_KERNEL_NEON,          "neon",           er_quantize_row_i8_neon, er_i2s_gemv_neon,
    er_i2s_gemm_neon,        er_f16_gemv_neon, er_quantize_row_q8_0_neon, er_q8_0_gemv_neon,
    er_q4_0_gemv_neon,       er_tq1_gemv_neon, er_tq1_gemm_neon,
    NULL, ER_GEMV_BATCH_MAX,
};
static const er_kernels k_neon_dot = {
    ER_KERNEL_NEON_DOT,      "neon_dot",       er_quantize_row_i8_neon, er_i2s_gemv_neon_dot,
    er_i2s_gemm_neon_dot,    er_f16_gemv_neon, er_quantize_row_q8_0_neon, er_q8_0_gemv_neon_dot,
    er_q4_0_gemv_neon_dot,   er_tq1_gemv_neon_dot, er_tq1_gemm_neon_dot,
    NULL, ER_GEMV_BATCH_MAX,
};
#endif

static const char *const k_names[ER_KERNEL_COUNT] = {"scalar", "avx2", "neon", "neon_dot", "avx512vnni",
                                                     "amx"};

#if defined(__x86_64__) && defined(__linux__)
/* Linux hands out the AMX tile state only to a process that asks for it; a tile instruction
 * without it kills the process with SIGILL. Asked once; the answer stands for every thread. */
static int amx_permitted(void) {
    static int state = -1; /* -1 unknown, 0 refused, 1 granted */
    if (state < 0) state = syscall(SYS_arch_prctl, ER_ARCH_REQ_XCOMP_PERM, ER_XFEATURE_XTILEDATA) == 0;
    return state;
}
#endif

int er_cpu_supports(er_kernel_id id) {
    switch (id) {
    case ER_KERNEL_SCALAR:
        return 1;
    case ER_KERNEL_AVX2:
#if defined(__x86_64__) && defined(__GNUC__)
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
#else
        return 0;
#endif
    case ER_KERNEL_AVX512VNNI:
#if defined(__x86_64__) && defined(__GNUC__)
        /* libgcc reports AVX-512 features only when the OS saves the zmm state */
        return er_cpu_supports(ER_KERNEL_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
#else
        return 0;
#endif
    case ER_KERNEL_AMX:
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
        return er_cpu_supports(ER_KERNEL_AVX512VNNI) && __builtin_cpu_supports("amx-tile") &&
               __builtin_cpu_supports("amx-int8") && amx_permitted();
#else
        return 0;
#endif
    case ER_KERNEL_NEON:
#if defined(__aarch64__)
        return 1; /* Advanced SIMD is mandatory in Armv8-A */
#else
        return 0;
#endif
    case ER_KERNEL_NEON_DOT:
#if defined(__aarch64__) && defined(__linux__)
        return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
        return 0;
#endif
    default:
        return 0;
    }
}

static const er_kernels *compiled(er_kernel_id id) {
    switch (id) {
    case ER_KERNEL_SCALAR:
        return &k_scalar;
#ifdef ER_HAVE_AVX2_BUILD
    case ER_KERNEL_AVX2:
        return &k_avx2;
    case ER_KERNEL_AVX512VNNI:
        return &k_avx512vnni;
    case ER_KERNEL_AMX:
        return &k_amx;
#endif
#ifdef ER_HAVE_NEON_BUILD
    case ER_KERNEL_NEON:
        return &k_neon;
    case ER_KERNEL_NEON_DOT:
        return &k_neon_dot;
#endif
    default:
        return NULL;
    }
}

const er_kernels *er_kernels_get(er_kernel_id id) {
    if ((int)id < 0 || id >= ER_KERNEL_COUNT) return NULL;
    return er_cpu_supports(id) ? compiled(id) : NULL;
}

const er_kernels *er_kernels_best(void) {
    static const er_kernel_id order[] = {ER_KERNEL_NEON_DOT, ER_KERNEL_NEON, ER_KERNEL_AMX,
                                         ER_KERNEL_AVX512VNNI, ER_KERNEL_AVX2};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        const er_kernels *k = er_kernels_get(order[i]);
        if (k) return k;
    }
    return &k_scalar;
}

const er_kernels *er_kernels_select(const char *name, char *err, size_t err_len) {
    if (name == NULL || name[0] == '\0' || strcmp(name, "auto") == 0) return er_kernels_best();
    for (int i = 0; i < ER_KERNEL_COUNT; i++) {
        if (strcmp(name, k_names[i]) != 0) continue;
        if (!compiled((er_kernel_id)i)) {
            snprintf(err, err_len, "kernel variant '%s' is not built for this architecture", name);
            return NULL;
        }
        if (!er_cpu_supports((er_kernel_id)i)) {
            snprintf(err, err_len, "kernel variant '%s' cannot run on this CPU (missing instructions%s)",
                     name, i == ER_KERNEL_AMX ? ", or the OS did not grant the AMX tile state" : "");
            return NULL;
        }
        return compiled((er_kernel_id)i);
    }
    snprintf(err, err_len, "unknown kernel variant '%s' (expected one of: auto, scalar, avx2, avx512vnni, amx, neon, neon_dot)",
             name);
    return NULL;
}
