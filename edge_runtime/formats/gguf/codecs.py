"""Block codecs (I2_S, TQ1_S, TQ2_0, TQ1_0, Q8_0, Q4_0, F16, BF16). Matrices are numpy (rows, cols); a tensor is its
rows flattened in order. The block layouts are the ones neon_kernels/er_kernels.h defines."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge_runtime.errors import ModelFormatError
from edge_runtime.formats.gguf.types import (
    GGMLType, I2S_GROUP, I2S_TRAILER, Q4_0_BLOCK, Q8_0_BLOCK, TQ1_CHUNK, TQ1_CHUNK_BYTES, TQ1_TRAILER,
    TQ1_0_BLOCK, TQ2_0_BLOCK, _F32, tq1_row_bytes,
)

_Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", (Q8_0_BLOCK,))])
_Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (Q4_0_BLOCK // 2,))])
_TQ2_0_BLOCK = np.dtype([("qs", "u1", (TQ2_0_BLOCK // 4,)), ("d", "<f2")])
# TQ1_0 (llama.cpp): 256 weights = 48 bytes of five trits + 4 bytes of four trits + the f16 scale d
_TQ1_0_QS = (TQ1_0_BLOCK - 4 * TQ1_0_BLOCK // 64) // 5  # 48
_TQ1_0_QH = TQ1_0_BLOCK // 64  # 4
_TQ1_0_BLOCK = np.dtype([("qs", "u1", (_TQ1_0_QS,)), ("qh", "u1", (_TQ1_0_QH,)), ("d", "<f2")])
# the weights of a block in the order its bytes take them: strips of 32 bytes x 5 trits (the first 160
# weights), of 16 x 5 (the next 80), then 4 x 4 (the last 16); in a byte the first trit is the most
# significant base-3 digit, and the byte stores ceil(value * 256 / 243) so a multiply-high reads it back
_TQ1_0_POW5 = np.array([81, 27, 9, 3, 1], dtype=np.uint16)
_TQ1_0_POW4 = np.array([81, 27, 9, 3], dtype=np.uint16)  # one trit short: shifted up by one digit
# Bit positions inside one byte, for the 4 sub-blocks of 32 weights that share it.
_I2S_SHIFTS = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)
_TQ2_0_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)


def _matrix(x: Any, what: str, dtype=None) -> np.ndarray:
    x = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a (rows, cols) matrix, got shape {x.shape}")
    return x


def _check_ternary(t: np.ndarray, what: str) -> np.ndarray:
    if t.dtype.kind not in "iu":
        raise ValueError(f"{what}: ternary weights must be an integer array, got {t.dtype}")
    if t.size and (int(t.min()) < -1 or int(t.max()) > 1):
        raise ValueError(f"{what}: weights must be -1, 0 or +1, found {int(t.min())}..{int(t.max())}")
    return t


def _check_buffer(buf, nbytes: int, what: str) -> memoryview:
    if isinstance(buf, np.ndarray):
        buf = np.ascontiguousarray(buf)
    view = memoryview(buf).cast("B")
    if view.nbytes < nbytes:
        raise ModelFormatError(f"{what}: needs {nbytes} bytes, got {view.nbytes}")
    return view


def pack_i2s(ternary: Any, scale: float) -> bytes:
    """(rows, cols) ternary -> I2_S bytes: codes w+1, 128-weight groups in 32 bytes with weight
    j, j+32, j+64, j+96 of a group at bits 7:6, 5:4, 3:2, 1:0 of byte j; then the f32 scale,
    zero-padded to n/4 + 32 bytes. cols must be a multiple of 128."""
    t = _check_ternary(_matrix(ternary, "pack_i2s"), "pack_i2s")
    if t.shape[1] % I2S_GROUP:
        raise ValueError(f"pack_i2s: cols {t.shape[1]} is not a multiple of {I2S_GROUP}")
    scale = float(np.float32(scale))
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"pack_i2s: scale must be finite and > 0, got {scale}")
    codes = (t.astype(np.int8) + 1).astype(np.uint8).reshape(-1, 4, 32)
    packed = np.bitwise_or.reduce(codes << _I2S_SHIFTS, axis=1)
    return packed.tobytes() + _F32.pack(scale) + bytes(I2S_TRAILER - 4)


def unpack_i2s(buf: Any, rows: int, cols: int, *,
               name: str = "I2_S tensor") -> tuple[np.ndarray, float]:
    """I2_S bytes -> ((rows, cols) int8 ternary, f32 scale). Code 3 (not ternary) raises
    ModelFormatError naming `name`."""
    if cols % I2S_GROUP:
        raise ModelFormatError(f"{name}: I2_S row length {cols} is not a multiple of {I2S_GROUP}")
    n = rows * cols
    view = _check_buffer(buf, n // 4 + 4, name)
    packed = np.frombuffer(view, np.uint8, n // 4).reshape(-1, 1, 32)
    codes = ((packed >> _I2S_SHIFTS) & 3).reshape(rows, cols)
    if n and int(codes.max()) == 3:
        flat = int(np.argmax(codes.reshape(-1) == 3))
        raise ModelFormatError(
            f"{name}: I2_S code 3 (not a ternary value) at row {flat // cols}, column {flat % cols}"
        )
    scale = _F32.unpack_from(view, n // 4)[0]
    return codes.astype(np.int8) - 1, scale


def i2s_scale(buf: Any, n_elements: int, *, offset: int = 0) -> float:
    """The f32 scale stored after the n/4 code bytes of an I2_S tensor starting at `offset`."""
    return _F32.unpack_from(buf, offset + n_elements // 4)[0]


# TQ1_S: code p of a byte (p = 0..4, weight 160c + 32p + j of byte j of chunk c) is the top
# base-3 digit of byte * 3^p mod 256; the writer stores ceil(256 * sum_p code_p 3^(4-p) / 243).
_TQ1_DIGITS = np.array([81, 27, 9, 3, 1], dtype=np.int32).reshape(1, 1, 5, 1)
_TQ1_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint16).reshape(1, 1, 5, 1)
_TQ1_STRIPS = TQ1_CHUNK // TQ1_CHUNK_BYTES


def pack_tq1(ternary: Any, scale: float) -> bytes:
    """(rows, cols) ternary -> TQ1_S bytes: per row ceil(cols/160) chunks of 32 bytes, byte j of
    chunk c holding the codes w+1 of weights 160c + 32p + j (p = 0..4) as
    ceil(256 * sum_p code_p 3^(4-p) / 243), the strips past cols as code 1; then the f32 scale
    zero-padded to 32 bytes. cols must be a multiple of 128."""
    t = _check_ternary(_matrix(ternary, "pack_tq1"), "pack_tq1")
    rows, cols = t.shape
    if cols % I2S_GROUP:
        raise ValueError(f"pack_tq1: cols {cols} is not a multiple of {I2S_GROUP}")
    scale = float(np.float32(scale))
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"pack_tq1: scale must be finite and > 0, got {scale}")
    n_chunks = -(-cols // TQ1_CHUNK)
    codes = np.ones((rows, n_chunks * TQ1_CHUNK), np.int32)
    codes[:, :cols] = t
    codes[:, :cols] += 1
    v = (codes.reshape(rows, n_chunks, _TQ1_STRIPS, TQ1_CHUNK_BYTES) * _TQ1_DIGITS).sum(axis=2)
    packed = ((v * 256 + 242) // 243).astype(np.uint8)
    return packed.tobytes() + _F32.pack(scale) + bytes(TQ1_TRAILER - 4)


def unpack_tq1(buf: Any, rows: int, cols: int, *,
               name: str = "TQ1_S tensor") -> tuple[np.ndarray, float]:
    """TQ1_S bytes -> ((rows, cols) int8 ternary, f32 scale). Every byte decodes (the kernels
    read any byte the same way), so no code is invalid."""
    if cols % I2S_GROUP:
        raise ModelFormatError(f"{name}: TQ1_S row length {cols} is not a multiple of {I2S_GROUP}")
    row_bytes = tq1_row_bytes(cols)
    view = _check_buffer(buf, rows * row_bytes + 4, name)
    packed = np.frombuffer(view, np.uint8, rows * row_bytes).reshape(rows, -1, 1, TQ1_CHUNK_BYTES)
    m = (packed.astype(np.uint16) * _TQ1_POW3) & 0xFF
    codes = ((m * 3) >> 8).astype(np.int8).reshape(rows, -1)[:, :cols]
    return codes - 1, _F32.unpack_from(view, rows * row_bytes)[0]


def tq1_scale(buf: Any, rows: int, cols: int, *, offset: int = 0) -> float:
    """The f32 scale stored after the rows of a TQ1_S tensor starting at `offset`."""
    return _F32.unpack_from(buf, offset + rows * tq1_row_bytes(cols))[0]


def pack_ternary(ggml_type: int, ternary: Any, scale: float) -> bytes:
    """pack_i2s or pack_tq1 by type."""
    if ggml_type == GGMLType.I2_S:
        return pack_i2s(ternary, scale)
    if ggml_type == GGMLType.TQ1_S:
        return pack_tq1(ternary, scale)
    raise ValueError(f"{GGMLType(ggml_type).name} is not a per-tensor ternary type (I2_S or TQ1_S)")


def unpack_ternary(ggml_type: int, buf: Any, rows: int, cols: int, *, name: str) -> tuple[np.ndarray, float]:
    """unpack_i2s or unpack_tq1 by type."""
    if ggml_type == GGMLType.TQ1_S:
        return unpack_tq1(buf, rows, cols, name=name)
    return unpack_i2s(buf, rows, cols, name=name)


def ternary_scale(ggml_type: int, buf: Any, rows: int, cols: int, *, offset: int = 0) -> float:
    """The per-tensor scale of an I2_S or TQ1_S tensor."""
    if ggml_type == GGMLType.TQ1_S:
        return tq1_scale(buf, rows, cols, offset=offset)
    return i2s_scale(buf, rows * cols, offset=offset)


def _llama_ternary(ternary: Any, scale: float, what: str, block: int) -> tuple[np.ndarray, np.float16]:
    """The checked (rows, cols) ternary matrix and f16 scale of a llama.cpp ternary encoder (rows
    in blocks of `block` weights, one positive scale)."""
    t = _check_ternary(_matrix(ternary, what), what)
    if t.shape[1] % block:
        raise ValueError(f"{what}: cols {t.shape[1]} is not a multiple of {block}")
    d = np.float16(scale)
    if not np.isfinite(d) or d <= 0:
        raise ValueError(f"{what}: scale {scale} is not a finite positive f16 value")
    return t, d


def ternary_to_tq2_0(ternary: Any, scale: float) -> bytes:
    """(rows, cols) ternary and one scale -> TQ2_0 blocks (llama.cpp): 256 weights = 64 bytes of
    codes w+1 (in each 128-weight half, byte m holds weight m, m+32, m+64, m+96 at bits 1:0, 3:2,
    5:4, 7:6) then the f16 scale d; value = (code - 1) * d. cols must be a multiple of 256."""
    t, d = _llama_ternary(ternary, scale, "ternary_to_tq2_0", TQ2_0_BLOCK)
    codes = (t.astype(np.int8) + 1).astype(np.uint8).reshape(-1, 2, 4, 32)
    blocks = np.empty(codes.shape[0], dtype=_TQ2_0_BLOCK)
    blocks["qs"] = np.bitwise_or.reduce(codes << _TQ2_0_SHIFTS, axis=2).reshape(-1, 64)
    blocks["d"] = d
    return blocks.tobytes()


def ternary_to_tq1_0(ternary: Any, scale: float) -> bytes:
    """(rows, cols) ternary and one scale -> TQ1_0 blocks (llama.cpp), value = trit * d with d the
    scale in f16 for every block. cols must be a multiple of 256."""
    t, d = _llama_ternary(ternary, scale, "ternary_to_tq1_0", TQ1_0_BLOCK)
    codes = (t.astype(np.int16) + 1).astype(np.uint16).reshape(-1, TQ1_0_BLOCK)
    n = codes.shape[0]
    strip5a = (codes[:, :160].reshape(n, 5, 32) * _TQ1_0_POW5[None, :, None]).sum(axis=1)
    strip5b = (codes[:, 160:240].reshape(n, 5, 16) * _TQ1_0_POW5[None, :, None]).sum(axis=1)
    strip4 = (codes[:, 240:].reshape(n, 4, 4) * _TQ1_0_POW4[None, :, None]).sum(axis=1)
    packed = (np.concatenate([strip5a, strip5b, strip4], axis=1) * 256 + 242) // 243
    blocks = np.empty(n, dtype=_TQ1_0_BLOCK)
    blocks["qs"] = packed[:, :_TQ1_0_QS]
    blocks["qh"] = packed[:, _TQ1_0_QS:]
    blocks["d"] = d
    return blocks.tobytes()


def tq1_0_to_ternary(buf: Any, rows: int, cols: int, *,
                     name: str = "TQ1_0 tensor") -> tuple[np.ndarray, np.ndarray]:
    """TQ1_0 bytes -> ((rows, cols) int8 ternary, f32 scale d of every 256-weight block)."""
    if cols % TQ1_0_BLOCK:
        raise ModelFormatError(f"{name}: TQ1_0 row length {cols} is not a multiple of {TQ1_0_BLOCK}")
    n_blocks = rows * cols // TQ1_0_BLOCK
    view = _check_buffer(buf, n_blocks * _TQ1_0_BLOCK.itemsize, name)
    blocks = np.frombuffer(view, _TQ1_0_BLOCK, n_blocks)
    packed = np.concatenate([blocks["qs"], blocks["qh"]], axis=1).astype(np.uint16)

    def digits(b, count):  # the base-3 digits of b (count of them, most significant first)
        out = []
        for _ in range(count):
            b = b * 3
            out.append(b >> 8)
            b = b & 0xFF
        return np.stack(out, axis=1)

    w5a = digits(packed[:, :32], 5).reshape(n_blocks, 160)
    w5b = digits(packed[:, 32:48], 5).reshape(n_blocks, 80)
    w4 = digits(packed[:, 48:], 4).reshape(n_blocks, 16)
    codes = np.concatenate([w5a, w5b, w4], axis=1)  # every byte reads back as digits 0..2
    ternary = (codes.astype(np.int8) - 1).reshape(rows, cols)
    return ternary, blocks["d"].astype(np.float32)


def tq2_0_to_ternary(buf: Any, rows: int, cols: int, *,
                     name: str = "TQ2_0 tensor") -> tuple[np.ndarray, np.ndarray]:
    """TQ2_0 bytes -> ((rows, cols) int8 ternary, f32 scale d of every 256-weight block).
    Code 3 raises ModelFormatError naming `name`."""
    if cols % TQ2_0_BLOCK:
        raise ModelFormatError(f"{name}: TQ2_0 row length {cols} is not a multiple of {TQ2_0_BLOCK}")
    n_blocks = rows * cols // TQ2_0_BLOCK
    view = _check_buffer(buf, n_blocks * _TQ2_0_BLOCK.itemsize, name)
    blocks = np.frombuffer(view, _TQ2_0_BLOCK, n_blocks)
    packed = blocks["qs"].reshape(-1, 2, 1, 32)
    codes = ((packed >> _TQ2_0_SHIFTS) & 3).reshape(rows, cols)
    if codes.size and int(codes.max()) == 3:
        flat = int(np.argmax(codes.reshape(-1) == 3))
        raise ModelFormatError(
            f"{name}: TQ2_0 code 3 (not a ternary value) at row {flat // cols}, column {flat % cols}"
        )
    return codes.astype(np.int8) - 1, blocks["d"].astype(np.float32)


def encode_f16(x: Any, *, name: str = "tensor") -> bytes:
    """f32 -> f16 bytes (round half to even); values beyond the f16 range raise ValueError."""
    x = np.asarray(x, dtype=np.float32)
    h = x.astype(np.float16)
    if not np.all(np.isfinite(h)):
        bad = np.flatnonzero(~np.isfinite(h.reshape(-1)))[0]
        raise ValueError(f"{name}: value {x.reshape(-1)[bad]} at index {bad} is not finite in f16")
    return h.tobytes()


def _blocks_of(x: np.ndarray, block: int, what: str) -> np.ndarray:
    if x.shape[1] % block:
        raise ValueError(f"{what}: cols {x.shape[1]} is not a multiple of {block}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: input holds NaN or infinity")
    return x.reshape(-1, block)


def quantize_q8_0(x: Any) -> bytes:
    """(rows, cols) f32 -> Q8_0 blocks of 32: d = max|x| / 127 in f32, q = round-half-even(x *
    (1/d)) with 1/d taken as 0 when d = 0, then d stored as f16 (the runtime's activation
    quantizer uses the same rule)."""
    blocks = _blocks_of(_matrix(x, "quantize_q8_0", np.float32), Q8_0_BLOCK, "quantize_q8_0")
    d = np.abs(blocks).max(axis=1) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = np.clip(np.rint(blocks * inv_d[:, None]), -128, 127).astype(np.int8)
    out = np.empty(blocks.shape[0], dtype=_Q8_0_BLOCK)
    out["d"] = d
    out["qs"] = q
    if not np.all(np.isfinite(out["d"])):
        raise ValueError("quantize_q8_0: a block scale overflows f16")
    return out.tobytes()


def dequantize_q8_0(buf: Any, rows: int, cols: int) -> np.ndarray:
    """Q8_0 bytes -> (rows, cols) f32, value = q * d."""
    n_blocks = rows * cols // Q8_0_BLOCK
    blocks = np.frombuffer(_check_buffer(buf, n_blocks * _Q8_0_BLOCK.itemsize, "Q8_0 tensor"),
                           _Q8_0_BLOCK, n_blocks)
    out = blocks["qs"].astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return out.reshape(rows, cols)


def quantize_q4_0(x: Any) -> bytes:
    """(rows, cols) f32 -> Q4_0 blocks of 32, ggml's rule: m = the value of largest magnitude
    (with its sign), d = m / -8, nibble = min(15, trunc(x / d + 8.5)); so m maps to nibble 0
    (-8 * d = m) and the range [-8, 7] * d covers the block. Byte j holds weight j in the low
    nibble and weight j+16 in the high nibble; value = (nibble - 8) * d."""
    blocks = _blocks_of(_matrix(x, "quantize_q4_0", np.float32), Q4_0_BLOCK, "quantize_q4_0")
    imax = np.abs(blocks).argmax(axis=1)
    m = np.take_along_axis(blocks, imax[:, None], axis=1)[:, 0]
    d = (m / np.float32(-8)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = np.clip(np.trunc(blocks * inv_d[:, None] + np.float32(8.5)), 0, 15).astype(np.uint8)
    out = np.empty(blocks.shape[0], dtype=_Q4_0_BLOCK)
    out["d"] = d
    out["qs"] = q[:, :16] | (q[:, 16:] << 4)
    if not np.all(np.isfinite(out["d"])):
        raise ValueError("quantize_q4_0: a block scale overflows f16")
    return out.tobytes()


def dequantize_q4_0(buf: Any, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes -> (rows, cols) f32."""
    n_blocks = rows * cols // Q4_0_BLOCK
    blocks = np.frombuffer(_check_buffer(buf, n_blocks * _Q4_0_BLOCK.itemsize, "Q4_0 tensor"),
                           _Q4_0_BLOCK, n_blocks)
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    out = nibbles.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return out.reshape(rows, cols)


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) -> f32: bf16 is the top half of an f32."""
    return (np.asarray(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def dequantize(ggml_type: int, buf: Any, rows: int, cols: int) -> np.ndarray:
    """F32/F16/BF16/Q8_0/Q4_0 bytes -> (rows, cols) f32."""
    ggml_type = GGMLType(ggml_type)
    n = rows * cols
    if ggml_type == GGMLType.Q8_0:
        return dequantize_q8_0(buf, rows, cols)
    if ggml_type == GGMLType.Q4_0:
        return dequantize_q4_0(buf, rows, cols)
    plain = {GGMLType.F32: "<f4", GGMLType.F16: "<f2", GGMLType.BF16: "<u2"}.get(ggml_type)
    if plain is None:
        raise ValueError(f"cannot dequantize {ggml_type.name}")
    dtype = np.dtype(plain)
    x = np.frombuffer(_check_buffer(buf, n * dtype.itemsize, ggml_type.name), dtype, n)
    x = bf16_to_f32(x) if ggml_type == GGMLType.BF16 else x.astype(np.float32)
    return x.reshape(rows, cols)


def quantize(ggml_type: int, x: Any, *, name: str = "tensor") -> bytes:
    """(rows, cols) f32 -> bytes of F32/F16/Q8_0/Q4_0."""
    ggml_type = GGMLType(ggml_type)
    x = _matrix(x, name, np.float32)
    if ggml_type == GGMLType.F32:
        return np.ascontiguousarray(x, dtype="<f4").tobytes()
    if ggml_type == GGMLType.F16:
        return encode_f16(x, name=name)
    if ggml_type == GGMLType.Q8_0:
        return quantize_q8_0(x)
    if ggml_type == GGMLType.Q4_0:
        return quantize_q4_0(x)
    raise ValueError(f"{name}: cannot quantize to {ggml_type.name}")
