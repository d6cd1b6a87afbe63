/* Runs a file of kernel cases through one kernel variant and writes the raw results, so the
 * same case table (tests/kernel_cases.py) checks every variant, natively and under qemu.
 *
 * Usage:  kernel_driver CASES_IN RESULTS_OUT
 *         kernel_driver --which          (only select the variant and print its name)
 * The variant is er_kernels_select(getenv("EDGE_RUNTIME_KERNEL")) ("auto" when unset). The
 * first stdout line is "kernel: NAME". A refused variant prints the reason on stderr and
 * exits 2; a malformed case file or a kernel writing outside its output exits 1.
 *
 * Case file: records, each a header of 8 little-endian int32
 *     op, p0, p1, p2, p3, p4, 0, 0
 * followed by the op's inputs, packed back to back:
 *     1 quantize_row_i8   p0 = n                x f32[n]
 *     2 i2s_gemv          p0 = rows, p1 = k     w u8[rows * k / 4], q i8[k]
 *     3 i2s_gemm          p0 = rows, p1 = k, p2 = n_tok, p3 = ldq, p4 = ldo
 *                                               w u8[rows * k / 4], q i8[n_tok * ldq]
 *     4 f16_gemv          p0 = rows, p1 = k     w f16[rows * k], x f32[k]
 *     5 quantize_row_q8_0 p0 = k                x f32[k]
 *     6 q8_0_gemv         p0 = rows, p1 = k     w q8_0[rows * k / 32], xq q8_0[k / 32]
 *     7 q4_0_gemv         p0 = rows, p1 = k     w q4_0[rows * k / 32], xq q8_0[k / 32]
 *     8 tq1_gemv          p0 = rows, p1 = k     w u8[rows * ER_TQ1_ROW_BYTES(k)], q i8[k]
 *     9 tq1_gemm          as 3, with w u8[rows * ER_TQ1_ROW_BYTES(k)]
 *    10 q8_0_gemm         p0 = rows, p1 = k, p2 = n_tok, p3 = ldo
 *                                               w q8_0[rows * k / 32], xq q8_0[n_tok * k / 32]
 * Results file: per record, int32 op, int32 byte count, then the bytes:
 *     1: s f32, q i8[n]        2: i32[rows]       3: i32[n_tok * ldo] (entries the kernel must
 *     not touch keep the fill 0x5a5a5a5a)       4, 6, 7: f32[rows]     5: q8_0[k / 32] blocks.     8: as 2      9: as 3.
 *     10: f32[n_tok * ldo] from the variant's q8_0_gemm (its q8_0_gemv token by token when it has
 *     none; untouched entries keep the fill), then f32[n_tok * rows] from its q8_0_gemv run on each
 *     token alone, which the gemm must equal bit for bit.
 * Inputs are placed at deliberately unaligned addresses, and every output buffer is fenced
 * by guard bytes that must survive the call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "er_kernels.h"

enum { OP_QUANT_I8 = 1, OP_I2S_GEMV, OP_I2S_GEMM, OP_F16_GEMV, OP_QUANT_Q8_0, OP_Q8_0_GEMV, OP_Q4_0_GEMV,
       OP_TQ1_GEMV, OP_TQ1_GEMM, OP_Q8_0_GEMM };

#define GUARD_BYTES 64
#define GUARD_FILL 0xa5
#define OUT_FILL 0x5a

typedef struct {
    const unsigned char *data;
    size_t size, pos;
    int record;
} reader;

static void die(int record, const char *msg) {
    fprintf(stderr, "kernel_driver: case %d: %s\n", record, msg);
    exit(1);
}

/* A copy of the next nbytes of the case file at address (16-aligned base + misalign). */
static void *take(reader *rd, size_t nbytes, size_t misalign, void **to_free) {
    if (nbytes > rd->size - rd->pos) die(rd->record, "case file ends inside this case's inputs");
    unsigned char *base = malloc(nbytes + misalign + 16);
    if (!base) die(rd->record, "out of memory");
    memcpy(base + misalign, rd->data + rd->pos, nbytes);
    rd->pos += nbytes;
    *to_free = base;
    return base + misalign;
}

/* An output buffer of nbytes filled with OUT_FILL, fenced by guard bytes on both sides. */
static unsigned char *guarded(size_t nbytes, int record) {
    unsigned char *base = malloc(nbytes + 2 * GUARD_BYTES);
    if (!base) die(record, "out of memory");
    memset(base, GUARD_FILL, GUARD_BYTES);
    memset(base + GUARD_BYTES, OUT_FILL, nbytes);
    memset(base + GUARD_BYTES + nbytes, GUARD_FILL, GUARD_BYTES);
    return base + GUARD_BYTES;
}

static void check_guards(unsigned char *out, size_t nbytes, int record, const char *op) {
    for (int i = 0; i < GUARD_BYTES; i++) {
        if (out[-1 - i] != GUARD_FILL || out[nbytes + i] != GUARD_FILL) {
            fprintf(stderr, "kernel_driver: case %d: %s wrote outside its output buffer\n", record, op);
            exit(1);
        }
    }
}

static void emit(FILE *f, int op, const void *bytes, size_t nbytes) {
    int32_t head[2] = {op, (int32_t)nbytes};
    if (fwrite(head, sizeof head, 1, f) != 1 || (nbytes && fwrite(bytes, nbytes, 1, f) != 1)) {
        fprintf(stderr, "kernel_driver: cannot write the results file\n");
        exit(1);
    }
}

static void need(int ok, int record, const char *what) {
    if (!ok) die(record, what);
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "kernel_driver: cannot open case file %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || (n > 0 && fread(buf, (size_t)n, 1, f) != 1)) {
        fprintf(stderr, "kernel_driver: cannot read case file %s\n", path);
        exit(1);
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static void run_case(const er_kernels *K, reader *rd, FILE *out) {
    int32_t h[8];
    void *f1, *f2;
    need(rd->size - rd->pos >= sizeof h, rd->record, "truncated header");
    memcpy(h, rd->data + rd->pos, sizeof h);
    rd->pos += sizeof h;
    const int op = h[0], rec = rd->record;
    for (int i = 1; i < 6; i++) need(h[i] >= 0 && h[i] <= (1 << 24), rec, "header field out of range");
    switch (op) {
    case OP_QUANT_I8: {
        const int n = h[1];
        need(n >= 1, rec, "quantize_row_i8 needs n >= 1");
        const float *x = take(rd, (size_t)n * 4, 4, &f1);
        unsigned char *qbuf = guarded((size_t)n, rec);
        const float s = K->quantize_row_i8(x, (int8_t *)qbuf, n);
        check_guards(qbuf, (size_t)n, rec, "quantize_row_i8");
        unsigned char *res = malloc(4 + (size_t)n);
        need(res != NULL, rec, "out of memory");
        memcpy(res, &s, 4);
        memcpy(res + 4, qbuf, (size_t)n);
        emit(out, op, res, 4 + (size_t)n);
        free(res);
        free(qbuf - GUARD_BYTES);
        free(f1);
        break;
    }
    case OP_I2S_GEMV:
    case OP_TQ1_GEMV: {
        const int rows = h[1], k = h[2], tq1 = op == OP_TQ1_GEMV;
        need(rows >= 1 && k >= ER_I2S_GROUP && k % ER_I2S_GROUP == 0, rec,
             tq1 ? "tq1_gemv needs rows >= 1, k % 128 == 0" : "i2s_gemv needs rows >= 1, k % 128 == 0");
        const size_t row_bytes = tq1 ? ER_TQ1_ROW_BYTES(k) : (size_t)k / 4;
        const uint8_t *w = take(rd, (size_t)rows * row_bytes, 1, &f1);
        const int8_t *q = take(rd, (size_t)k, 1, &f2);
        const size_t nbytes = (size_t)rows * 4;
        unsigned char *res = guarded(nbytes, rec);
        (tq1 ? K->tq1_gemv : K->i2s_gemv)(w, q, (int32_t *)res, rows, k);
        check_guards(res, nbytes, rec, tq1 ? "tq1_gemv" : "i2s_gemv");
        emit(out, op, res, nbytes);
        free(res - GUARD_BYTES);
        free(f1);
        free(f2);
        break;
    }
    case OP_I2S_GEMM:
    case OP_TQ1_GEMM: {
        const int rows = h[1], k = h[2], n_tok = h[3], ldq = h[4], ldo = h[5], tq1 = op == OP_TQ1_GEMM;
        need(rows >= 1 && k >= ER_I2S_GROUP && k % ER_I2S_GROUP == 0 && n_tok >= 1 && ldq >= k &&
                 ldo >= rows,
             rec, "i2s_gemm/tq1_gemm needs rows >= 1, k % 128 == 0, n_tok >= 1, ldq >= k, ldo >= rows");
        const size_t row_bytes = tq1 ? ER_TQ1_ROW_BYTES(k) : (size_t)k / 4;
        const uint8_t *w = take(rd, (size_t)rows * row_bytes, 1, &f1);
        const int8_t *q = take(rd, (size_t)n_tok * ldq, 1, &f2);
        const size_t nbytes = (size_t)n_tok * ldo * 4;
        unsigned char *res = guarded(nbytes, rec);
        (tq1 ? K->tq1_gemm : K->i2s_gemm)(w, q, ldq, (int32_t *)res, ldo, rows, k, n_tok);
        check_guards(res, nbytes, rec, tq1 ? "tq1_gemm" : "i2s_gemm");
        emit(out, op, res, nbytes);
        free(res - GUARD_BYTES);
        free(f1);
        free(f2);
        break;
    }
    case OP_F16_GEMV: {
        const int rows = h[1], k = h[2];
        need(rows >= 1 && k >= 1, rec, "f16_gemv needs rows >= 1, k >= 1");
        const uint16_t *w = take(rd, (size_t)rows * k * 2, 2, &f1);
        const float *x = take(rd, (size_t)k * 4, 4, &f2);
        const size_t nbytes = (size_t)rows * 4;
        unsigned char *res = guarded(nbytes, rec);
        K->f16_gemv(w, x, (float *)res, rows, k);
        check_guards(res, nbytes, rec, "f16_gemv");
        emit(out, op, res, nbytes);
        free(res - GUARD_BYTES);
        free(f1);
        free(f2);
        break;
    }
    case OP_QUANT_Q8_0: {
        const int k = h[1];
        need(k >= ER_QK8_0 && k % ER_QK8_0 == 0, rec, "quantize_row_q8_0 needs k % 32 == 0");
        const float *x = take(rd, (size_t)k * 4, 4, &f1);
        const size_t nbytes = (size_t)k / ER_QK8_0 * sizeof(er_block_q8_0);
        unsigned char *res = guarded(nbytes, rec);
        K->quantize_row_q8_0(x, (er_block_q8_0 *)res, k);
        check_guards(res, nbytes, rec, "quantize_row_q8_0");
        emit(out, op, res, nbytes);
        free(res - GUARD_BYTES);
        free(f1);
        break;
    }
    case OP_Q8_0_GEMV:
    case OP_Q4_0_GEMV: {
        const int rows = h[1], k = h[2];
        need(rows >= 1 && k >= 32 && k % 32 == 0, rec, "q8_0/q4_0 gemv needs rows >= 1, k % 32 == 0");
        const size_t wblock = op == OP_Q8_0_GEMV ? sizeof(er_block_q8_0) : sizeof(er_block_q4_0);
        const void *w = take(rd, (size_t)rows * (k / 32) * wblock, 2, &f1);
        const er_block_q8_0 *xq = take(rd, (size_t)(k / 32) * sizeof(er_block_q8_0), 2, &f2);
        const size_t nbytes = (size_t)rows * 4;
        unsigned char *res = guarded(nbytes, rec);
        if (op == OP_Q8_0_GEMV)
            K->q8_0_gemv((const er_block_q8_0 *)w, xq, (float *)res, rows, k);
        else
            K->q4_0_gemv((const er_block_q4_0 *)w, xq, (float *)res, rows, k);
        check_guards(res, nbytes, rec, op == OP_Q8_0_GEMV ? "q8_0_gemv" : "q4_0_gemv");
        emit(out, op, res, nbytes);
        free(res - GUARD_BYTES);
        free(f1);
        free(f2);
        break;
    }
    case OP_Q8_0_GEMM: {
        const int rows = h[1], k = h[2], n_tok = h[3], ldo = h[4];
        need(rows >= 1 && k >= 32 && k % 32 == 0 && n_tok >= 1 && ldo >= rows, rec,
             "q8_0_gemm needs rows >= 1, k % 32 == 0, n_tok >= 1, ldo >= rows");
        const size_t nb = (size_t)k / 32;
        const er_block_q8_0 *w = take(rd, (size_t)rows * nb * sizeof(er_block_q8_0), 2, &f1);
        const er_block_q8_0 *xq = take(rd, (size_t)n_tok * nb * sizeof(er_block_q8_0), 2, &f2);
        const size_t nbytes = (size_t)n_tok * ldo * 4, nsingle = (size_t)n_tok * rows * 4;
        unsigned char *res = guarded(nbytes, rec), *single = guarded(nsingle, rec);
        if (K->q8_0_gemm)
            K->q8_0_gemm(w, xq, (float *)res, ldo, rows, k, n_tok);
        else
            for (int t = 0; t < n_tok; t++) K->q8_0_gemv(w, xq + t * nb, (float *)res + (size_t)t * ldo, rows, k);
        for (int t = 0; t < n_tok; t++) K->q8_0_gemv(w, xq + t * nb, (float *)single + (size_t)t * rows, rows, k);
        check_guards(res, nbytes, rec, "q8_0_gemm");
        check_guards(single, nsingle, rec, "q8_0_gemv");
        unsigned char *both = malloc(nbytes + nsingle);
        need(both != NULL, rec, "out of memory");
        memcpy(both, res, nbytes);
        memcpy(both + nbytes, single, nsingle);
        emit(out, op, both, nbytes + nsingle);
        free(both);
        free(res - GUARD_BYTES);
        free(single - GUARD_BYTES);
        free(f1);
        free(f2);
        break;
    }
    default:
        die(rec, "unknown op in header (expected 1..10)");
    }
}

int main(int argc, char **argv) {
    const char *want = getenv("EDGE_RUNTIME_KERNEL");
    char err[256] = "";
    const er_kernels *K = er_kernels_select(want, err, sizeof err);
    if (!K) {
        fprintf(stderr, "kernel_driver: EDGE_RUNTIME_KERNEL=%s refused: %s\n", want ? want : "", err);
        return 2;
    }
    printf("kernel: %s\n", K->name);
    fflush(stdout);
    if (argc == 2 && strcmp(argv[1], "--which") == 0) return 0;
    if (argc != 3) {
        fprintf(stderr, "usage: kernel_driver CASES_IN RESULTS_OUT | kernel_driver --which\n");
        return 2;
    }
    reader rd = {0};
    rd.data = read_file(argv[1], &rd.size);
    FILE *out = fopen(argv[2], "wb");
    if (!out) {
        fprintf(stderr, "kernel_driver: cannot create results file %s\n", argv[2]);
        return 1;
    }
    while (rd.pos < rd.size) {
        run_case(K, &rd, out);
        rd.record++;
    }
    if (fclose(out) != 0) {
        fprintf(stderr, "kernel_driver: cannot write the results file %s\n", argv[2]);
        return 1;
    }
    printf("cases: %d\n", rd.record);
    free((void *)rd.data);
    return 0;
}
