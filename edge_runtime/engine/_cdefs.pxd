# C API of neon_kernels/ (er_kernels.h, er_engine.h) as seen from Cython.
from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t


cdef extern from "er_kernels.h" nogil:
    int ER_GGML_TYPE_F32
    int ER_GGML_TYPE_F16
    int ER_GGML_TYPE_Q4_0
    int ER_GGML_TYPE_Q8_0
    int ER_GGML_TYPE_I2_S
    int ER_I2S_GROUP
    int ER_I2S_GROUP_BYTES
    int ER_I2S_TRAILER_BYTES
    int ER_GGML_TYPE_TQ1_S
    int ER_TQ1_STRIP
    int ER_TQ1_CHUNK
    int ER_TQ1_TRAILER_BYTES
    size_t ER_TQ1_ROW_BYTES(int k)

    ctypedef struct er_block_tq1_s:
        uint8_t qs[32]
    int ER_QK8_0
    int ER_QK4_0

    ctypedef struct er_block_q8_0:
        uint16_t d
        int8_t qs[32]

    ctypedef struct er_block_q4_0:
        uint16_t d
        uint8_t qs[16]

    ctypedef enum er_kernel_id:
        ER_KERNEL_SCALAR
        ER_KERNEL_AVX2
        ER_KERNEL_NEON
        ER_KERNEL_NEON_DOT
        ER_KERNEL_AVX512VNNI
        ER_KERNEL_AMX
        ER_KERNEL_COUNT

    ctypedef struct er_kernels:
        er_kernel_id id
        const char *name
        float (*quantize_row_i8)(const float *x, int8_t *q, int n) noexcept nogil
        void (*i2s_gemv)(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) noexcept nogil
        void (*i2s_gemm)(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo,
                         int rows, int k, int n_tok) noexcept nogil
        void (*f16_gemv)(const uint16_t *w, const float *x, float *out, int rows, int k) noexcept nogil
        void (*quantize_row_q8_0)(const float *x, er_block_q8_0 *y, int k) noexcept nogil
        void (*q8_0_gemv)(const er_block_q8_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) noexcept nogil
        void (*q4_0_gemv)(const er_block_q4_0 *w, const er_block_q8_0 *xq, float *out, int rows, int k) noexcept nogil
        void (*tq1_gemv)(const uint8_t *w, const int8_t *q, int32_t *out, int rows, int k) noexcept nogil
        void (*tq1_gemm)(const uint8_t *w, const int8_t *q, int ldq, int32_t *out, int ldo,
                         int rows, int k, int n_tok) noexcept nogil

    const er_kernels *er_kernels_get(er_kernel_id id)
    int er_cpu_supports(er_kernel_id id)
    const er_kernels *er_kernels_best()
    const er_kernels *er_kernels_select(const char *name, char *err, size_t err_len)
    float er_fp16_to_fp32(uint16_t h)
    uint16_t er_fp32_to_fp16(float f)


cdef extern from "er_engine.h" nogil:
    int ER_OK
    int ER_ERR_ARG
    int ER_ERR_NOMEM
    int ER_ERR_ABORT

    int ER_MAX_EXTENT

    ctypedef struct er_config:
        int n_vocab
        int dim
        int n_layers
        int n_heads
        int n_kv_heads
        int head_dim
        int ffn_dim
        float rope_theta
        float norm_eps

    ctypedef struct er_i2s_tensor:
        const uint8_t *codes
        float scale
        int rows
        int cols
        int type

    ctypedef struct er_layer_weights:
        const float *attn_norm
        er_i2s_tensor wq
        er_i2s_tensor wk
        er_i2s_tensor wv
        er_i2s_tensor wo
        const float *attn_sub_norm
        const float *ffn_norm
        er_i2s_tensor w_gate
        er_i2s_tensor w_up
        er_i2s_tensor w_down
        const float *ffn_sub_norm

    ctypedef struct er_weights:
        const void *tok_embd
        int tok_embd_type
        const void *output
        int output_type
        const float *output_norm
        const er_layer_weights *layers
        const uint8_t *region
        size_t region_size

    ctypedef struct er_engine:
        pass

    int ER_MAX_BATCH_WANT

    int er_engine_create(er_engine **out, const er_config *cfg, const er_weights *w,
                         const er_kernels *kernels, int n_ctx, int n_batch, int n_seq, int n_threads,
                         char *err, size_t err_len)
    int er_engine_eval(er_engine *e, const int32_t *tokens, int n, int pos, float *logits,
                       int all_logits)
    int er_engine_eval_seq(er_engine *e, int seq, const int32_t *tokens, int n, int pos,
                           float *logits, int all_logits)
    int er_engine_eval_multi(er_engine *e, const int32_t *tokens, const int32_t *pos,
                             const int32_t *seq, int n, const int32_t *want, int n_want,
                             float *logits)
    int er_engine_kv_read(er_engine *e, int seq, int n, int ld, uint16_t *k, uint16_t *v)
    int er_engine_kv_write(er_engine *e, int seq, int n, int ld, const uint16_t *k,
                          const uint16_t *v)
    int er_engine_n_seq(const er_engine *e)
    void er_engine_abort(er_engine *e, int flag)
    const char *er_engine_error(const er_engine *e)
    const char *er_engine_kernel_name(const er_engine *e)
    int er_engine_n_threads(const er_engine *e)
    size_t er_engine_state_bytes(const er_engine *e)
    void er_engine_free(er_engine *e)
