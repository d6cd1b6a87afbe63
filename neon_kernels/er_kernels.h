/* edge-runtime kernels: block layouts, the kernel table, and every variant's entry points.
 *
 * The scalar reference (*_ref) is the specification. Every SIMD variant must return
 * BIT-IDENTICAL int32 results for the ternary kernels and identical int8 codes/scales for
 * activation quantization, for every shape the functions accept.
 *
 * Functions return nothing or a value; none allocates, none exits. Shapes are validated by
 * the caller (Python/Cython) before any kernel runs.
 */
#ifndef ER_KERNELS_H
#define ER_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------
 * I2_S (GGUF type id 36): 2 bits per weight, ONE float32 scale per tensor.
 * A tensor of n weights occupies n/4 bytes of codes, then the float32 scale, padded to
 * n/4 + 32 bytes. Codes: 0 -> -1, 1 -> 0, 2 -> +1 (3 never appears in a valid file and
 * is read as +2 by every variant alike).
 * Groups of 128 consecutive weights (row-major) fill 32 bytes: byte j (0..31) of group g
 * holds weight 128g+j at bits 7:6, 128g+j+32 at bits 5:4, 128g+j+64 at bits 3:2 and
 * 128g+j+96 at bits 1:0. A row of k weights (k % 128 == 0) is k/4 bytes.
 * ------------------------------------------------------------------------------------- */
#define ER_GGML_TYPE_F32 0
#define ER_GGML_TYPE_F16 1
#define ER_I2S_GROUP 128
#define ER_I2S_GROUP_BYTES 32
#define ER_GGML_TYPE_I2_S 36
#define ER_I2S_TRAILER_BYTES 32   /* the f32 scale plus padding after the codes */

/* ---------------------------------------------------------------------------------------
 * TQ1_S (GGUF type id 200): 1.6 bits per weight, ONE float32 scale per tensor, the same
 * trits as I2_S (code = weight + 1: 0 -> -1, 1 -> 0, 2 -> +1). The id lies far above ggml's
 * (0..41), so a ggml build refuses the tensor by its type instead of misreading it.
 *
 * Both formats cut a row of k weights (k % 128 == 0) into strips of 32 consecutive weights;
 * strip s holds weights 32s .. 32s+31, and byte j of a strip's container holds weight 32s+j.
 * I2_S puts four strips in a 32-byte group by bit position; TQ1_S puts FIVE strips in a
 * 32-byte chunk by powers of three (3^5 = 243 <= 256): byte j of chunk c holds the codes
 * c_p of weights 160c + 32p + j, p = 0..4, as
 *     v = sum_p c_p * 3^(4-p)   (0..242),   byte = ceil(256 * v / 243) = (256 v + 242) / 243
 * so that code p is the top base-3 digit of byte * 3^p taken mod 256:
 *     c_p = (((byte * 3^p) mod 256) * 3) >> 8 = (m > 85) + (m > 170),  m = (byte * 3^p) mod 256
 * — a wrapping 8-bit multiply (or two adds per step of p: m_{p+1} = 3 m_p) and two compares,
 * no division. Every byte value decodes to some codes, so no byte is invalid; the writer
 * emits only the 243 bytes above.
 * A row is ceil(k / 160) chunks; the last one holds (k mod 160) / 32 strips when k is not a
 * multiple of 160, its missing positions are written as code 1 and never read. The codes of
 * a tensor of (rows, k) are rows * ER_TQ1_ROW_BYTES(k) bytes, then the float32 scale padded
 * to ER_TQ1_TRAILER_BYTES, as I2_S. Rows are whole chunks, so a row is 32-byte aligned
 * whenever the tensor is. 2B4T: rows of 2560 are exactly 1.6 bits per weight, rows of 6912
 * 1.63 (the padded tail chunk); the 2.08 G ternary weights take 418.6 MB.
 * ------------------------------------------------------------------------------------- */
#define ER_GGML_TYPE_TQ1_S 200
#define ER_TQ1_STRIP 32                                   /* weights per strip */
#define ER_TQ1_STRIPS 5                                   /* strips per chunk */
#define ER_TQ1_CHUNK (ER_TQ1_STRIP * ER_TQ1_STRIPS)       /* 160 weights per chunk */
#define ER_TQ1_TRAILER_BYTES 32
typedef struct {
    uint8_t qs[ER_TQ1_STRIP]; /* byte j: codes of weights j + 32p, p = 0..4, base 3 scaled */
} er_block_tq1_s;
_Static_assert(sizeof(er_block_tq1_s) == 32, "a tq1_s chunk is 32 bytes for 160 weights");
_Static_assert(3 * 3 * 3 * 3 * 3 <= 256, "five trits fit a byte");
#define ER_TQ1_CHUNKS(k) (((k) + ER_TQ1_CHUNK - 1) / ER_TQ1_CHUNK)
#define ER_TQ1_ROW_BYTES(k) ((size_t)ER_TQ1_CHUNKS(k) * sizeof(er_block_tq1_s))

/* 3^p for p = 0..4, a constant expression */
#define ER_TQ1_POW3(p) ((p) == 0 ? 1 : (p) == 1 ? 3 : (p) == 2 ? 9 : (p) == 3 ? 27 : 81)

/* Code p (0..4) of one TQ1_S byte: the specification every kernel and codec follows. */
static inline int er_tq1_code(uint8_t byte, int p) {
    const uint8_t m = (uint8_t)(byte * ER_TQ1_POW3(p));
    return (m * 3) >> 8;
}

/* Q8_0 (GGUF type id 8): 8.5 bits per weight; blocks of 32: fp16 scale d, then 32 int8. */
#define ER_GGML_TYPE_Q8_0 8
#define ER_QK8_0 32
typedef struct {
    uint16_t d;        /* fp16 bits */
    int8_t qs[ER_QK8_0];
} er_block_q8_0;
_Static_assert(sizeof(er_block_q8_0) == 34, "q8_0 block is 34 bytes");

/* Q4_0 (GGUF type id 2): 4.5 bits per weight; blocks of 32: fp16 scale d, then 16 bytes;
 * byte j holds weight j (low nibble) and weight j+16 (high nibble), value = (nibble - 8) * d. */
#define ER_GGML_TYPE_Q4_0 2
#define ER_QK4_0 32
typedef struct {
    uint16_t d;
    uint8_t qs[ER_QK4_0 / 2];
} er_block_q4_0;
_Static_assert(sizeof(er_block_q4_0) == 18, "q4_0 block is 18 bytes");

/* ---------------------------------------------------------------------------------------
 * Kernel signatures (every variant has the same ones).
 * ------------------------------------------------------------------------------------- */

/* x (n,) f32 -> q (n,) int8 with q = clamp(round_half_even(x * s), -128, 127),
 * s = 127 / max(max|x|, 1e-5). Returns s. (Per-token activation quantization of BitLinear.) */
typedef float (*er_quantize_row_i8_fn)(const float *x, int8_t *q, int n);

/* Ternary GEMV: W (rows, k) I2_S codes @ q (k,) int8 -> out (rows,) int32,
 * out[r] = sum_i (code(r,i) - 1) * q[i]. k % 128 == 0, rows >= 1. Exact in int32. */
typedef void (*er_i2s_gemv_fn)(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);

/* Ternary GEMM: W (rows, k) @ Q^T -> out, for n_tok tokens:
 * out[t * ldo + r] = sum_i (code(r,i) - 1) * q[t * ldq + i].
 * Each unpacked weight block is reused across the tokens of a tile. */
typedef void (*er_i2s_gemm_fn)(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo,
                               int rows, int k, int n_tok);

/* Output head, F16 weights: W (rows, k) f16 @ x (k,) f32 -> out (rows,) f32. */
/* TQ1_S GEMV and GEMM: the I2_S contracts with W in TQ1_S rows of ER_TQ1_ROW_BYTES(k) bytes:
 * out[r] = sum_i (code(r, i) - 1) * q[i], k % 128 == 0. The same trits give the same int32. */
typedef void (*er_tq1_gemv_fn)(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
typedef void (*er_tq1_gemm_fn)(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo,
                               int rows, int k, int n_tok);

/* TQ1_S rows -> the I2_S rows of the same trits (rows * k / 4 bytes): the prompt GEMMs repack
 * a block of rows into cache and run the variant's I2_S GEMM over it. */
typedef void (*er_tq1_to_i2s_fn)(const uint8_t *w, uint8_t *i2s, int rows, int k);

typedef void (*er_f16_gemv_fn)(const uint16_t *w, const float *x, float *out, int rows, int k);

/* Quantize x (k,) f32 into Q8_0 blocks (k % 32 == 0), round-half-even, d = max|x|/127. */
typedef void (*er_quantize_row_q8_0_fn)(const float *x, er_block_q8_0 *y, int k);

/* Output head, Q8_0 weights: W (rows, k) Q8_0 @ xq (k,) Q8_0 -> out (rows,) f32,
 * out[r] = sum_b d_w(r,b) * d_x(b) * sum_j w_q * x_q  (per-block int32 sums are exact). */
typedef void (*er_q8_0_gemv_fn)(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out,
                                int rows, int k);

/* Output head for several tokens: xq (n_tok, k/32) Q8_0 blocks -> out[t * ldo + r] (rows of each
 * token ldo floats apart). A variant that has one gives, for every token, exactly the floats its
 * own q8_0_gemv gives for that token alone; a variant without one (NULL in its table) runs the
 * GEMV token by token. */
typedef void (*er_q8_0_gemm_fn)(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int ldo,
                                int rows, int k, int n_tok);

/* Output head, Q4_0 weights against Q8_0 activations, same contract as the Q8_0 head. */
typedef void (*er_q4_0_gemv_fn)(const er_block_q4_0 *w, const er_block_q8_0 *xq, float *out,
                                int rows, int k);

typedef enum {
    ER_KERNEL_SCALAR = 0,
    ER_KERNEL_AVX2 = 1,
    ER_KERNEL_NEON = 2,
    ER_KERNEL_NEON_DOT = 3,
    ER_KERNEL_AVX512VNNI = 4,
    ER_KERNEL_AMX = 5,
    ER_KERNEL_COUNT = 6
} er_kernel_id;

typedef struct {
    er_kernel_id id;
    const char *name; /* "scalar", "avx2", "neon", "neon_dot", "avx512vnni", "amx" */
    er_quantize_row_i8_fn quantize_row_i8;
    er_i2s_gemv_fn i2s_gemv;
    er_i2s_gemm_fn i2s_gemm;
    er_f16_gemv_fn f16_gemv;
    er_quantize_row_q8_0_fn quantize_row_q8_0;
    er_q8_0_gemv_fn q8_0_gemv;
    er_q4_0_gemv_fn q4_0_gemv;
    er_tq1_gemv_fn tq1_gemv;
    er_tq1_gemm_fn tq1_gemm;
    er_q8_0_gemm_fn q8_0_gemm; /* NULL: q8_0_gemv token by token */
    /* Batches of up to this many tokens run the ternary GEMV token by token over cached row
     * chunks instead of the GEMM (the GEMV and GEMM give the same int32 either way). */
    int gemv_batch_max;
} er_kernels;

/* ---------------------------------------------------------------------------------------
 * Variants. A variant whose ISA the build target lacks is not compiled; its table entry
 * is NULL and er_kernels_get() refuses it.
 * ------------------------------------------------------------------------------------- */
float er_quantize_row_i8_ref(const float *x, int8_t *q, int n);
void er_i2s_gemv_ref(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
void er_i2s_gemm_ref(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                     int k, int n_tok);
void er_f16_gemv_ref(const uint16_t *w, const float *x, float *out, int rows, int k);
void er_quantize_row_q8_0_ref(const float *x, er_block_q8_0 *y, int k);
void er_q8_0_gemv_ref(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k);
void er_q4_0_gemv_ref(const er_block_q4_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k);
void er_tq1_gemv_ref(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
void er_tq1_gemm_ref(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                     int k, int n_tok);
void er_tq1_to_i2s_ref(const uint8_t *w, uint8_t *i2s, int rows, int k);

#if defined(__x86_64__) || defined(_M_X64)
#define ER_HAVE_AVX2_BUILD 1
float er_quantize_row_i8_avx2(const float *x, int8_t *q, int n);
void er_i2s_gemv_avx2(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
void er_i2s_gemm_avx2(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                      int k, int n_tok);
void er_f16_gemv_avx2(const uint16_t *w, const float *x, float *out, int rows, int k);
void er_quantize_row_q8_0_avx2(const float *x, er_block_q8_0 *y, int k);
void er_q8_0_gemv_avx2(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k);
void er_q4_0_gemv_avx2(const er_block_q4_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k);
/* avx512vnni: the AVX2 kernels with AVX-512 VNNI I2_S GEMV and GEMM and Q8_0 head GEMV */
void er_i2s_gemv_avx512vnni(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
/* sum(q[0..k)), k % 128 == 0: the activation sum every AVX-512 I2_S kernel subtracts */
int32_t er_i2s_qsum_avx512(const int8_t *q, int k);
void er_q8_0_gemv_avx512vnni(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k);
void er_q8_0_gemm_avx512vnni(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int ldo, int rows,
                             int k, int n_tok);
void er_i2s_gemm_avx512vnni(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                            int k, int n_tok);
/* amx: the avx512vnni kernels with AMX-INT8 tile GEMMs (prompts, batched decode) and Q8_0 head */
void er_i2s_gemm_amx(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows, int k,
                     int n_tok);
void er_q8_0_gemv_amx(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k);
void er_q8_0_gemm_amx(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int ldo, int rows, int k,
                      int n_tok);
void er_tq1_gemv_avx2(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
void er_tq1_gemm_avx2(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                      int k, int n_tok);
void er_tq1_to_i2s_avx2(const uint8_t *w, uint8_t *i2s, int rows, int k);
void er_tq1_gemv_avx512vnni(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
void er_tq1_gemm_avx512vnni(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                            int k, int n_tok);
void er_tq1_gemm_amx(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows, int k,
                     int n_tok);
#endif

#if defined(__aarch64__)
#define ER_HAVE_NEON_BUILD 1
float er_quantize_row_i8_neon(const float *x, int8_t *q, int n);
void er_i2s_gemv_neon(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
void er_i2s_gemm_neon(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                      int k, int n_tok);
void er_f16_gemv_neon(const uint16_t *w, const float *x, float *out, int rows, int k);
void er_quantize_row_q8_0_neon(const float *x, er_block_q8_0 *y, int k);
void er_q8_0_gemv_neon(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k);
void er_q4_0_gemv_neon(const er_block_q4_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k);
/* dotprod (sdot) variants; the rest of the neon_dot table reuses the plain NEON functions. */
void er_i2s_gemv_neon_dot(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
void er_i2s_gemm_neon_dot(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo,
                          int rows, int k, int n_tok);
void er_q8_0_gemv_neon_dot(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows,
                           int k);
void er_q4_0_gemv_neon_dot(const er_block_q4_0 *w, const er_block_q8_0 *xq, float *out, int rows,
                           int k);
void er_tq1_gemv_neon(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
void er_tq1_gemm_neon(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo, int rows,
                      int k, int n_tok);
void er_tq1_to_i2s_neon(const uint8_t *w, uint8_t *i2s, int rows, int k);
void er_tq1_gemv_neon_dot(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k);
void er_tq1_gemm_neon_dot(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo,
                          int rows, int k, int n_tok);
#endif

/* ---------------------------------------------------------------------------------------
 * Dispatch (er_dispatch.c).
 * ------------------------------------------------------------------------------------- */
/* The table of a variant if it was compiled in AND this CPU can run it, else NULL. */
/* Software prefetch in the GEMV kernels. A GEMV tile reads R rows side by side; each row is
 * only a few hundred bytes to a few KiB long, too short for the hardware stream prefetcher to
 * lock on, so a single thread waited on memory (6.7 GB/s against 10.9 GB/s for a plain
 * sequential read on the x86 test machine). The kernels prefetch the same offset in the first
 * whole row tile at least ER_PREFETCH_MIN_BYTES ahead (a prefetch never faults, so running past
 * the end of the matrix is harmless). */
#define ER_PREFETCH_MIN_BYTES 4096
static inline size_t er_prefetch_distance(size_t tile_bytes) {
    if (tile_bytes == 0) return ER_PREFETCH_MIN_BYTES;
    return (ER_PREFETCH_MIN_BYTES + tile_bytes - 1) / tile_bytes * tile_bytes;
}

const er_kernels *er_kernels_get(er_kernel_id id);
/* Whether this CPU can run a variant (independent of whether it was compiled in). */
int er_cpu_supports(er_kernel_id id);
/* The best variant this CPU can run. */
const er_kernels *er_kernels_best(void);
/* Select by name ("auto" or NULL = best). On failure returns NULL and writes a message. */
const er_kernels *er_kernels_select(const char *name, char *err, size_t err_len);

/* fp16 <-> fp32, round-half-even, identical on every target. */
float er_fp16_to_fp32(uint16_t h);

/* fp16 bits -> f32, exact for every input, with no branch or table so that loops over it
 * vectorize. The exponent and mantissa are moved into f32 position and the value rescaled by
 * 2^112, which is exact for normal and subnormal halves alike (a subnormal half m * 2^-24 lands
 * as the f32 subnormal m * 2^-136); inf and nan (exponent 31) are patched in by a select. */
static inline float er_fp16_to_fp32_inline(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t em = (uint32_t)(h & 0x7fffu) << 13;
    const uint32_t inf_nan = 0u - (uint32_t)((h & 0x7c00u) == 0x7c00u); /* all ones or zero */
    float f;
    __builtin_memcpy(&f, &em, 4);
    f *= 0x1p112f;
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    u = (u & ~inf_nan) | ((0x7f800000u | em) & inf_nan) | sign;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
uint16_t er_fp32_to_fp16(float f);

#ifdef __cplusplus
}
#endif
#endif /* ER_KERNELS_H */
