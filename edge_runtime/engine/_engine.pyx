# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython face of the C engine: builds the weight table from offsets into the mapped model file,
runs the forward pass without the GIL, and exposes every kernel variant for tests."""
from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

import math
import operator
import threading

import numpy as np

from edge_runtime.engine._cdefs cimport *
from edge_runtime.errors import ModelClosedError

# the GGUF type ids and block layouts of what the kernels compute, from neon_kernels/er_kernels.h
GGML_TYPE_F32 = ER_GGML_TYPE_F32
GGML_TYPE_F16 = ER_GGML_TYPE_F16
GGML_TYPE_Q4_0 = ER_GGML_TYPE_Q4_0
GGML_TYPE_Q8_0 = ER_GGML_TYPE_Q8_0
GGML_TYPE_I2_S = ER_GGML_TYPE_I2_S
MAX_EXTENT = ER_MAX_EXTENT                  # the largest dimension, n_ctx or n_batch the engine takes
I2S_GROUP = ER_I2S_GROUP                    # weights per group of 2-bit codes
I2S_GROUP_BYTES = ER_I2S_GROUP_BYTES
I2S_TRAILER_BYTES = ER_I2S_TRAILER_BYTES    # the per-tensor f32 scale, padded
MAX_BATCH_WANT = ER_MAX_BATCH_WANT          # rows of logits one mixed batch may return
GGML_TYPE_TQ1_S = ER_GGML_TYPE_TQ1_S
TQ1_STRIP = ER_TQ1_STRIP                    # weights per strip (one byte position of a chunk)
TQ1_CHUNK = ER_TQ1_CHUNK                    # weights per 32-byte chunk: five strips
TQ1_CHUNK_BYTES = sizeof(er_block_tq1_s)
TQ1_TRAILER_BYTES = ER_TQ1_TRAILER_BYTES
TERNARY_TYPES = (GGML_TYPE_I2_S, GGML_TYPE_TQ1_S)


def tq1_row_bytes(int k):
    """Bytes of one TQ1_S row of k weights: ceil(k / 160) chunks of 32."""
    return ER_TQ1_ROW_BYTES(k)
# (weights per block, bytes per block) of the block types
BLOCK_LAYOUTS = {GGML_TYPE_F32: (1, 4), GGML_TYPE_F16: (1, 2),
                 GGML_TYPE_Q8_0: (ER_QK8_0, sizeof(er_block_q8_0)),
                 GGML_TYPE_Q4_0: (ER_QK4_0, sizeof(er_block_q4_0))}

_VARIANTS = {"scalar": ER_KERNEL_SCALAR, "avx2": ER_KERNEL_AVX2, "neon": ER_KERNEL_NEON,
             "neon_dot": ER_KERNEL_NEON_DOT, "avx512vnni": ER_KERNEL_AVX512VNNI,
             "amx": ER_KERNEL_AMX}


class KernelUnavailableError(RuntimeError):
    """A kernel variant was requested that this build or this CPU cannot run."""


cdef const er_kernels *_select(name) except NULL:
    cdef char err[256]
    memset(err, 0, sizeof(err))
    cdef bytes bname = (name or "auto").encode()
    cdef const er_kernels *k = er_kernels_select(bname, err, sizeof(err))
    if k == NULL:
        raise KernelUnavailableError(err.decode())
    return k


def best_kernel():
    """Name of the variant this CPU runs by default."""
    return er_kernels_best().name.decode()


def available_kernels():
    """Variants compiled into this build that this CPU can run, best last."""
    out = []
    for name, kid in _VARIANTS.items():
        if er_kernels_get(kid) != NULL:
            out.append(name)
    return out


def cpu_supports(name):
    if name not in _VARIANTS:
        raise KernelUnavailableError(f"unknown kernel variant {name!r}")
    return bool(er_cpu_supports(_VARIANTS[name]))


def select_kernel(name):
    """Validate a variant name ("auto" or None for the best); returns the chosen name."""
    return _select(name).name.decode()


# ----------------------------------------------------------------------------------------------
# Kernel entry points for tests: each validates shapes, then calls the chosen variant.
# ----------------------------------------------------------------------------------------------

def quantize_row_i8(variant, x):
    cdef const er_kernels *k = _select(variant)
    cdef float[::1] xv = np.ascontiguousarray(x, dtype=np.float32)
    q = np.zeros(xv.shape[0], dtype=np.int8)
    cdef int8_t[::1] qv = q
    cdef int n = xv.shape[0]
    if n < 1:
        raise ValueError("quantize_row_i8 needs at least one value")
    cdef float s
    with nogil:
        s = k.quantize_row_i8(&xv[0], &qv[0], n)
    return q, s


def i2s_gemm(variant, w, q, int rows, int k_dim, int ggml_type=ER_GGML_TYPE_I2_S):
    """W (rows, k) ternary codes (bytes-like: I2_S rows*k/4 or TQ1_S rows*tq1_row_bytes(k))
    @ Q (n_tok, k) int8 -> (n_tok, rows) int32."""
    cdef const er_kernels *k = _select(variant)
    if rows < 1 or k_dim < 128 or k_dim % 128:
        raise ValueError(f"bad shape rows={rows} k={k_dim} (k must be a positive multiple of 128)")
    if ggml_type not in TERNARY_TYPES:
        raise ValueError(f"ggml_type {ggml_type} is not a ternary type (I2_S or TQ1_S)")
    cdef bint tq1 = ggml_type == ER_GGML_TYPE_TQ1_S
    cdef Py_ssize_t need = rows * (ER_TQ1_ROW_BYTES(k_dim) if tq1 else k_dim // 4)
    cdef const uint8_t[::1] wv = np.frombuffer(w, dtype=np.uint8)
    if wv.shape[0] < need:
        raise ValueError(f"weights hold {wv.shape[0]} bytes, need {need}")
    q2 = np.ascontiguousarray(np.atleast_2d(q), dtype=np.int8)
    if q2.shape[1] != k_dim:
        raise ValueError(f"activations have {q2.shape[1]} columns, expected {k_dim}")
    cdef int n_tok = q2.shape[0]
    cdef const int8_t[:, ::1] qv = q2
    out = np.zeros((n_tok, rows), dtype=np.int32)
    cdef int32_t[:, ::1] ov = out
    with nogil:
        if n_tok == 1:
            (k.tq1_gemv if tq1 else k.i2s_gemv)(&wv[0], &qv[0, 0], &ov[0, 0], rows, k_dim)
        else:
            (k.tq1_gemm if tq1 else k.i2s_gemm)(&wv[0], &qv[0, 0], k_dim, &ov[0, 0], rows, rows, k_dim, n_tok)
    return out


def head_gemv(variant, w, x, int rows, int k_dim, int ggml_type):
    """Output-head GEMV of a variant: W (rows, k) of ggml_type (F16, Q8_0 or Q4_0) @ x (k,) f32.
    Q8_0/Q4_0 quantize x to Q8_0 blocks first, as the engine does."""
    cdef const er_kernels *k = _select(variant)
    if rows < 1 or k_dim < 32 or k_dim % 32:
        raise ValueError(f"bad shape rows={rows} k={k_dim} (k must be a positive multiple of 32)")
    cdef float[::1] xv = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    if xv.shape[0] != k_dim:
        raise ValueError(f"x has {xv.shape[0]} values, expected {k_dim}")
    row_bytes = {t: k_dim // w * b for t, (w, b) in BLOCK_LAYOUTS.items() if t != GGML_TYPE_F32}
    if ggml_type not in row_bytes:
        raise ValueError(f"head type {ggml_type} is not one of F16, Q8_0, Q4_0")
    cdef const uint8_t[::1] wv = np.frombuffer(w, dtype=np.uint8)
    if wv.shape[0] < rows * row_bytes[ggml_type]:
        raise ValueError(f"weights hold {wv.shape[0]} bytes, need {rows * row_bytes[ggml_type]}")
    out = np.zeros(rows, dtype=np.float32)
    cdef float[::1] ov = out
    xq = np.zeros(k_dim // 32 * 34, dtype=np.uint8)
    cdef uint8_t[::1] xqv = xq
    cdef int t = ggml_type
    with nogil:
        if t == 1:
            k.f16_gemv(<const uint16_t *>&wv[0], &xv[0], &ov[0], rows, k_dim)
        else:
            k.quantize_row_q8_0(&xv[0], <er_block_q8_0 *>&xqv[0], k_dim)
            if t == 8:
                k.q8_0_gemv(<const er_block_q8_0 *>&wv[0], <const er_block_q8_0 *>&xqv[0], &ov[0], rows, k_dim)
            else:
                k.q4_0_gemv(<const er_block_q4_0 *>&wv[0], <const er_block_q8_0 *>&xqv[0], &ov[0], rows, k_dim)
    return out


def fp16_to_fp32(h):
    cdef uint16_t[::1] hv = np.ascontiguousarray(h, dtype=np.uint16).reshape(-1)
    out = np.empty(hv.shape[0], dtype=np.float32)
    cdef float[::1] ov = out
    cdef Py_ssize_t i
    for i in range(hv.shape[0]):
        ov[i] = er_fp16_to_fp32(hv[i])
    return out


def fp32_to_fp16(x):
    cdef float[::1] xv = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty(xv.shape[0], dtype=np.uint16)
    cdef uint16_t[::1] ov = out
    cdef Py_ssize_t i
    for i in range(xv.shape[0]):
        ov[i] = er_fp32_to_fp16(xv[i])
    return out


# ----------------------------------------------------------------------------------------------
# The engine.
# ----------------------------------------------------------------------------------------------

cdef class Engine:
    """Forward pass over a mapped model file.

    buffer: the mapped file (any read-only buffer; kept alive by the engine).
    config: dict with n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, rope_theta, norm_eps.
    tensors: dict name -> (absolute offset, ggml type, rows, cols, scale or None).

    One eval() runs at a time (a lock; the C call itself runs without the GIL). close() from any
    thread aborts a running eval, waits for it to return and only then frees the run state; every
    later eval raises ModelClosedError. The run state is freed only with the GIL held, so abort()
    and the properties, which also hold it, never see a freed engine.
    """
    cdef er_engine *e
    cdef object _buffer
    cdef const uint8_t[::1] _mem
    cdef er_layer_weights *_layers
    cdef object _run_lock
    cdef bint _closing
    cdef readonly int n_ctx, n_batch, n_vocab, n_seq, n_layers, kv_dim
    cdef readonly str kernel

    def __cinit__(self):
        self.e = NULL
        self._layers = NULL
        self._run_lock = threading.Lock()
        self._closing = False

    def __init__(self, buffer, dict config, dict tensors, n_ctx, n_batch=32, n_threads=1, kernel=None,
                 n_seq=1):
        # Every value is checked before use: types and ranges here, shapes, extents inside the buffer
        # and alignment in er_engine_create. A bad table raises ValueError; nothing reads outside.
        cdef const er_kernels *kern = _select(kernel)
        try:
            self._mem = buffer
        except (TypeError, ValueError, BufferError) as exc:
            raise ValueError(f"buffer: expected a contiguous byte buffer ({exc})") from None
        self._buffer = buffer
        cdef Py_ssize_t size = self._mem.shape[0]
        if size < 1:
            raise ValueError("buffer: the mapped file is empty")
        cdef const uint8_t *base = &self._mem[0]
        cdef er_config cfg
        cfg.n_vocab = _c_int("n_vocab", _key(config, "n_vocab"))
        cfg.dim = _c_int("dim", _key(config, "dim"))
        cfg.n_layers = _c_int("n_layers", _key(config, "n_layers"))
        cfg.n_heads = _c_int("n_heads", _key(config, "n_heads"))
        cfg.n_kv_heads = _c_int("n_kv_heads", _key(config, "n_kv_heads"))
        cfg.head_dim = _c_int("head_dim", _key(config, "head_dim"))
        cfg.ffn_dim = _c_int("ffn_dim", _key(config, "ffn_dim"))
        cfg.rope_theta = _c_float("rope_theta", _key(config, "rope_theta"))
        cfg.norm_eps = _c_float("norm_eps", _key(config, "norm_eps"))
        cdef int c_ctx = _c_int("n_ctx", n_ctx), c_batch = _c_int("n_batch", n_batch)
        cdef int c_threads = _c_int("n_threads", n_threads), c_seq = _c_int("n_seq", n_seq)
        if not 1 <= cfg.n_layers <= ER_MAX_EXTENT:
            raise ValueError(f"n_layers = {cfg.n_layers}: expected 1..{ER_MAX_EXTENT}")

        cdef er_weights w
        memset(&w, 0, sizeof(w))
        w.region = base
        w.region_size = <size_t>size
        cdef int n_layers = cfg.n_layers
        self._layers = <er_layer_weights *>calloc(n_layers, sizeof(er_layer_weights))
        if self._layers == NULL:
            raise MemoryError()
        head_types = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0}
        w.tok_embd = base + _off(tensors, size, "token_embd.weight", head_types)
        w.tok_embd_type = _entry(tensors, "token_embd.weight")[1]
        head_name = "output.weight" if "output.weight" in tensors else "token_embd.weight"
        w.output = base + _off(tensors, size, head_name, head_types)
        w.output_type = _entry(tensors, head_name)[1]
        w.output_norm = <const float *>(base + _off(tensors, size, "output_norm.weight", {GGML_TYPE_F32}))
        cdef er_layer_weights *L
        cdef int l
        for l in range(n_layers):
            L = &self._layers[l]
            p = f"blk.{l}."
            L.attn_norm = <const float *>(base + _off(tensors, size, p + "attn_norm.weight", {GGML_TYPE_F32}))
            L.attn_sub_norm = <const float *>(base + _off(tensors, size, p + "attn_sub_norm.weight", {GGML_TYPE_F32}))
            L.ffn_norm = <const float *>(base + _off(tensors, size, p + "ffn_norm.weight", {GGML_TYPE_F32}))
            L.ffn_sub_norm = <const float *>(base + _off(tensors, size, p + "ffn_sub_norm.weight", {GGML_TYPE_F32}))
            _set_i2s(&L.wq, base, size, tensors, p + "attn_q.weight")
            _set_i2s(&L.wk, base, size, tensors, p + "attn_k.weight")
            _set_i2s(&L.wv, base, size, tensors, p + "attn_v.weight")
            _set_i2s(&L.wo, base, size, tensors, p + "attn_output.weight")
            _set_i2s(&L.w_gate, base, size, tensors, p + "ffn_gate.weight")
            _set_i2s(&L.w_up, base, size, tensors, p + "ffn_up.weight")
            _set_i2s(&L.w_down, base, size, tensors, p + "ffn_down.weight")
        w.layers = self._layers

        cdef char err[256]
        memset(err, 0, sizeof(err))
        cdef int rc
        with nogil:
            rc = er_engine_create(&self.e, &cfg, &w, kern, c_ctx, c_batch, c_seq, c_threads, err, sizeof(err))
        if rc == ER_ERR_NOMEM:
            raise MemoryError(err.decode())
        if rc != ER_OK:
            raise ValueError(err.decode())
        self.n_ctx = c_ctx
        self.n_batch = c_batch
        self.n_vocab = cfg.n_vocab
        self.n_seq = c_seq
        self.n_layers = cfg.n_layers
        self.kv_dim = cfg.n_kv_heads * cfg.head_dim
        self.kernel = er_engine_kernel_name(self.e).decode()

    def __dealloc__(self):
        if self.e != NULL:
            er_engine_free(self.e)
            self.e = NULL
        if self._layers != NULL:
            free(self._layers)
            self._layers = NULL

    def close(self):
        """Abort a running eval(), wait for it, stop the threads and free the run state; the engine is
        unusable afterwards (eval raises ModelClosedError). Safe from any thread, and more than once."""
        self._closing = True
        if self.e != NULL:
            er_engine_abort(self.e, 1)
        with self._run_lock:  # blocks (GIL released) until a running eval has returned
            if self.e != NULL:
                er_engine_free(self.e)
                self.e = NULL
            self._mem = None
            self._buffer = None

    @property
    def closed(self):
        return self.e == NULL

    @property
    def n_threads(self):
        return er_engine_n_threads(self.e) if self.e != NULL else 0

    @property
    def state_bytes(self):
        return er_engine_state_bytes(self.e) if self.e != NULL else 0

    def abort(self, flag=True):
        """Make a running eval() return early (callable from any thread)."""
        if self.e != NULL:
            er_engine_abort(self.e, 1 if flag else 0)

    def eval(self, tokens, int pos, bint all_logits=False, out=None, int seq=0):
        """Run tokens at positions pos.. of KV sequence seq and return logits ((n, vocab) if
        all_logits else (vocab,))."""
        cdef int32_t[::1] tv = np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1)
        cdef int n = tv.shape[0]
        if n < 1:
            raise ValueError("eval needs at least one token")
        if all_logits:
            shape = (n, self.n_vocab)
        else:
            shape = (self.n_vocab,)
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
        cdef float[::1] ov = out.reshape(-1)
        cdef int rc
        cdef er_engine *e
        with self._run_lock:
            e = self._live()
            with nogil:
                rc = er_engine_eval_seq(e, seq, &tv[0], n, pos, &ov[0], 1 if all_logits else 0)
            self._check(e, rc)
        return out

    cdef er_engine *_live(self) except NULL:
        """The engine, held under _run_lock by the caller; ModelClosedError once closed."""
        if self.e == NULL:
            raise ModelClosedError("the model is closed")
        return self.e

    cdef int _check(self, er_engine *e, int rc) except -1:
        if rc == ER_ERR_ABORT:
            if self._closing:
                raise ModelClosedError("the model was closed during the evaluation")
            er_engine_abort(e, 0)
            raise InterruptedError(er_engine_error(e).decode())
        if rc != ER_OK:
            raise ValueError(er_engine_error(e).decode())
        return 0

    def eval_multi(self, tokens, positions, sequences, want):
        """One mixed batch: token i at positions[i] of KV sequence sequences[i] (several sequences'
        decode steps and prompt chunks share one pass over the weights). Returns the logits of the
        rows listed in want, (len(want), vocab)."""
        cdef int32_t[::1] tv = np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1)
        cdef int32_t[::1] pv = np.ascontiguousarray(positions, dtype=np.int32).reshape(-1)
        cdef int32_t[::1] sv = np.ascontiguousarray(sequences, dtype=np.int32).reshape(-1)
        wa = np.ascontiguousarray(want, dtype=np.int32).reshape(-1)
        cdef int n = tv.shape[0]
        if n < 1 or pv.shape[0] != n or sv.shape[0] != n:
            raise ValueError(f"tokens, positions and sequences must be equally long and not empty "
                             f"({n}, {pv.shape[0]}, {sv.shape[0]})")
        cdef int n_want = wa.shape[0]
        out = np.empty((max(n_want, 1), self.n_vocab), dtype=np.float32)
        cdef float[:, ::1] ov = out
        if n_want == 0:
            wa = np.zeros(1, dtype=np.int32)
        cdef int32_t[::1] wv = wa
        cdef int rc
        cdef er_engine *e
        with self._run_lock:
            e = self._live()
            with nogil:
                rc = er_engine_eval_multi(e, &tv[0], &pv[0], &sv[0], n, &wv[0], n_want, &ov[0, 0])
            self._check(e, rc)
        return out[:n_want]

    def kv_read(self, int seq, int n):
        """The f16 K and V rows of positions [0, n) of a sequence: two (n_layers, n, kv_dim) arrays."""
        if n < 0:
            raise ValueError(f"{n} rows asked")
        k = np.empty((self.n_layers, n, self.kv_dim), dtype=np.uint16)
        v = np.empty_like(k)
        cdef uint16_t[:, :, ::1] kv = k
        cdef uint16_t[:, :, ::1] vv = v
        cdef int rc
        cdef er_engine *e
        with self._run_lock:
            e = self._live()
            if n == 0:
                return k, v
            with nogil:
                rc = er_engine_kv_read(e, seq, n, n, &kv[0, 0, 0], &vv[0, 0, 0])
            self._check(e, rc)
        return k, v

    def kv_write(self, int seq, k, v, n=None):
        """Put the first n (default all) K and V rows of (n_layers, rows, kv_dim) f16 arrays back at
        positions [0, n) of a sequence."""
        ka = np.ascontiguousarray(k, dtype=np.uint16)
        va = np.ascontiguousarray(v, dtype=np.uint16)
        if ka.ndim != 3 or ka.shape != va.shape or ka.shape[0] != self.n_layers or ka.shape[2] != self.kv_dim:
            raise ValueError(f"K/V rows must both be ({self.n_layers}, n, {self.kv_dim}) uint16, got "
                             f"{ka.shape} and {va.shape}")
        cdef int ld = ka.shape[1]
        cdef int rows = ld if n is None else n
        if rows < 0 or rows > ld:
            raise ValueError(f"{rows} rows asked of snapshots holding {ld}")
        cdef const uint16_t[:, :, ::1] kv = ka
        cdef const uint16_t[:, :, ::1] vv = va
        cdef int rc
        cdef er_engine *e
        with self._run_lock:
            e = self._live()
            if rows == 0:
                return
            with nogil:
                rc = er_engine_kv_write(e, seq, rows, ld, &kv[0, 0, 0], &vv[0, 0, 0])
            self._check(e, rc)


def _key(dict config, str key):
    try:
        return config[key]
    except KeyError:
        raise ValueError(f"engine config: missing {key!r}") from None


cdef int _c_int(str what, value) except? -1:
    """An integer that fits a C int, or ValueError naming it."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{what} = {value!r}: expected an integer")
    v = operator.index(value)
    if not -2**31 <= v < 2**31:
        raise ValueError(f"{what} = {v}: out of range")
    return v


cdef float _c_float(str what, value) except? -1:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{what} = {value!r}: expected a number")
    v = float(value)
    if not math.isfinite(v) or abs(v) > 3.0e38:
        raise ValueError(f"{what} = {v}: expected a finite float32")
    return v


def _entry(dict tensors, name):
    """(offset, type, rows, cols, scale) of a tensor, the integers checked to fit C."""
    if name not in tensors:
        raise ValueError(f"tensor {name!r} missing")
    entry = tensors[name]
    if not isinstance(entry, tuple) or len(entry) != 5:
        raise ValueError(f"tensor {name!r}: expected (offset, type, rows, cols, scale), got {entry!r}")
    off, typ, rows, cols, scale = entry
    for what, v in (("offset", off), ("type", typ), ("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise ValueError(f"tensor {name!r}: {what} = {v!r}, expected an integer")
        if what != "offset" and not -2**31 <= operator.index(v) < 2**31:
            raise ValueError(f"tensor {name!r}: {what} = {v} is out of range")
    return operator.index(off), operator.index(typ), operator.index(rows), operator.index(cols), scale


cdef Py_ssize_t _off(dict tensors, Py_ssize_t size, name, expected_types) except -1:
    """Offset of a tensor inside the buffer, checked against its expected types (er_engine_create
    checks that the bytes its shape implies lie inside the buffer)."""
    off, typ, rows, cols, scale = _entry(tensors, name)
    if typ not in expected_types:
        raise ValueError(f"tensor {name!r} has type {typ}, expected one of {sorted(expected_types)}")
    if off < 0 or off >= size:
        raise ValueError(f"tensor {name!r} offset {off} outside the mapped file of {size} bytes")
    return off


cdef int _set_i2s(er_i2s_tensor *t, const uint8_t *base, Py_ssize_t size, dict tensors, name) except -1:
    cdef Py_ssize_t off = _off(tensors, size, name, set(TERNARY_TYPES))
    _, typ, rows, cols, scale = _entry(tensors, name)
    t.codes = base + off
    t.rows = rows
    t.cols = cols
    t.scale = _c_float(f"tensor {name!r} scale", scale)
    t.type = typ
    return 0


cdef extern from "sys/mman.h" nogil:
    int mlock(const void *addr, size_t length)

cdef extern from "errno.h":
    int errno


def mlock_buffer(buffer):
    """Pin a buffer's pages in RAM (use_mlock): the model then never pages out under pressure."""
    cdef const uint8_t[::1] mv = buffer
    if mv.shape[0] == 0:
        return
    if mlock(&mv[0], mv.shape[0]) != 0:
        import os
        err = errno
        raise OSError(err, f"mlock of {mv.shape[0]} bytes failed: {os.strerror(err)} "
                           "(raise the memlock limit, e.g. LimitMEMLOCK=infinity in the service unit)")


cdef extern from *:
    """
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int er_trim_heap(void) { return malloc_trim(0); }
    #else
    static int er_trim_heap(void) { return 0; }
    #endif
    """
    int er_trim_heap() nogil


def release_free_heap():
    """Give the C heap's free pages back to the system (glibc malloc_trim). Building a 128k-token
    tokenizer frees some 7 MiB of temporaries that would otherwise stay resident for the life of
    the process. Returns whether anything was released."""
    return bool(er_trim_heap())
