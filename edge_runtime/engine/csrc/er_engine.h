/* The BitNet b1.58 forward pass over weights that live in a memory-mapped model file.
 *
 * Three structs, one job each: er_config (the blueprint), er_weights (pointers into the mapped
 * file, nothing owned), and the engine (run state: activation buffers and KV cache, all allocated
 * in er_engine_create; er_engine_eval allocates nothing). */
#ifndef ER_ENGINE_H
#define ER_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "er_kernels.h"

/* GGUF tensor type ids used for embeddings and the head. */
#define ER_TYPE_F32 0
#define ER_TYPE_F16 1
#define ER_TYPE_Q4_0 2
#define ER_TYPE_Q8_0 8

/* Return codes of the engine API. */
#define ER_OK 0
#define ER_ERR_ARG (-1)    /* bad argument: token id, position, shape */
#define ER_ERR_NOMEM (-2)  /* allocation or thread creation failed */

/* Limits er_engine_create checks before anything else: every extent (a dimension, n_ctx, n_batch)
 * at most ER_MAX_EXTENT, every weight matrix and batch of activations, and the KV cache of one
 * layer, at most ER_MAX_ELEMENTS elements. Every int product the forward pass and the kernels
 * form then fits an int, and every size is computed in size_t with overflow checks. */
#define ER_MAX_EXTENT (1 << 24)
#define ER_MAX_ELEMENTS 2147483647LL /* INT_MAX */
#define ER_MAX_THREADS 1024

typedef struct {
    int n_vocab;
    int dim;        /* hidden size */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int ffn_dim;
    float rope_theta;
    float norm_eps;
} er_config;

typedef struct {
    const uint8_t *codes; /* (rows, cols) ternary codes: I2_S (rows * cols / 4 bytes) or TQ1_S
                             (rows * ER_TQ1_ROW_BYTES(cols) bytes), as `type` says */
    float scale;          /* the per-tensor scale that multiplies the ternary product */
    int rows, cols;
    int type;             /* ER_GGML_TYPE_I2_S or ER_GGML_TYPE_TQ1_S */
} er_i2s_tensor;

typedef struct {
    const float *attn_norm;     /* (dim,) */
    er_i2s_tensor wq;           /* (n_heads * head_dim, dim) */
    er_i2s_tensor wk;           /* (n_kv_heads * head_dim, dim) */
    er_i2s_tensor wv;           /* (n_kv_heads * head_dim, dim) */
    er_i2s_tensor wo;           /* (dim, n_heads * head_dim) */
    const float *attn_sub_norm; /* (dim,) */
    const float *ffn_norm;      /* (dim,) */
    er_i2s_tensor w_gate;       /* (ffn_dim, dim) */
    er_i2s_tensor w_up;         /* (ffn_dim, dim) */
    er_i2s_tensor w_down;       /* (dim, ffn_dim) */
    const float *ffn_sub_norm;  /* (ffn_dim,) */
} er_layer_weights;

typedef struct {
    const void *tok_embd;   /* (n_vocab, dim) of tok_embd_type */
    int tok_embd_type;
    const void *output;     /* (n_vocab, dim) of output_type; the same pointer when tied */
    int output_type;
    const float *output_norm; /* (dim,) */
    const er_layer_weights *layers; /* (n_layers,), copied by er_engine_create */
    /* The mapped file: er_engine_create checks that every tensor above, at the size the config
     * implies, lies inside [region, region + region_size) and is aligned for its type. */
    const uint8_t *region;
    size_t region_size;
} er_weights;

typedef struct er_engine er_engine;

/* Validates the limits above, shapes, every tensor's extent and alignment; allocates the run state for
 * n_seq KV sequences of n_ctx positions each and batches of up to n_batch tokens, starts n_threads
 * threads. On failure returns a negative code and writes err. */
int er_engine_create(er_engine **out, const er_config *cfg, const er_weights *w,
                     const er_kernels *kernels, int n_ctx, int n_batch, int n_seq, int n_threads,
                     char *err, size_t err_len);

/* Runs tokens (n,) at positions pos .. pos+n-1 of sequence 0, reusing the KV cache below pos.
 * logits: (n, n_vocab) when all_logits, else (n_vocab,) for the last token; may be NULL.
 * Returns ER_OK or ER_ERR_ARG (with er_engine_error set). The cache above pos+n is stale. */
int er_engine_eval(er_engine *e, const int32_t *tokens, int n, int pos, float *logits,
                   int all_logits);
/* The same on sequence seq (0 .. n_seq-1). */
int er_engine_eval_seq(er_engine *e, int seq, const int32_t *tokens, int n, int pos, float *logits,
                       int all_logits);

/* Rows of logits one mixed batch may ask for. */
#define ER_MAX_BATCH_WANT 64

/* One mixed batch of n <= n_batch tokens: token t at position pos[t] of sequence seq[t], over
 * that sequence's cache below pos[t] (and the batch's own earlier tokens of that sequence).
 * Decode steps of several sequences and a prompt chunk of another share one pass over the
 * weights. logits (n_want, n_vocab) receives the rows want[0..n_want). */
int er_engine_eval_multi(er_engine *e, const int32_t *tokens, const int32_t *pos,
                         const int32_t *seq, int n, const int32_t *want, int n_want,
                         float *logits);

/* KV rows of positions [0, n) of sequence seq, every layer, as f16: k and v are each
 * (n_layers, ld, kv_dim) with ld >= n (rows n..ld-1 untouched). read copies them out of the
 * cache, write into it. */
int er_engine_kv_read(er_engine *e, int seq, int n, int ld, uint16_t *k, uint16_t *v);
int er_engine_kv_write(er_engine *e, int seq, int n, int ld, const uint16_t *k, const uint16_t *v);

/* Set by another thread to make a running er_engine_eval return early with ER_ERR_ABORT. */
#define ER_ERR_ABORT (-3)
void er_engine_abort(er_engine *e, int flag);

const char *er_engine_error(const er_engine *e);
const char *er_engine_kernel_name(const er_engine *e);
int er_engine_n_threads(const er_engine *e);
int er_engine_n_seq(const er_engine *e);
size_t er_engine_state_bytes(const er_engine *e);
void er_engine_free(er_engine *e);

#endif
