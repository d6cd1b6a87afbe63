"""GGUF's vocabulary: value types, GGML tensor types and their block layouts, tensor sizes."""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Union

import numpy as np

from edge_runtime.engine import _engine

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
# Nested arrays exist in the format but no model uses them deeply; the bound keeps a hostile
# file from recursing the parser into a RecursionError.
MAX_ARRAY_NESTING = 8
_HEADER = struct.Struct("<4sIQQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F32 = struct.Struct("<f")
_INT64_MAX = (1 << 63) - 1


class ValueType(enum.IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_STRUCTS = {
    ValueType.UINT8: struct.Struct("<B"),
    ValueType.INT8: struct.Struct("<b"),
    ValueType.UINT16: struct.Struct("<H"),
    ValueType.INT16: struct.Struct("<h"),
    ValueType.UINT32: struct.Struct("<I"),
    ValueType.INT32: struct.Struct("<i"),
    ValueType.FLOAT32: struct.Struct("<f"),
    ValueType.BOOL: struct.Struct("<B"),
    ValueType.UINT64: struct.Struct("<Q"),
    ValueType.INT64: struct.Struct("<q"),
    ValueType.FLOAT64: struct.Struct("<d"),
}
_NUMPY_DTYPES = {
    ValueType.UINT8: np.dtype("<u1"),
    ValueType.INT8: np.dtype("<i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("u1"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}
_VALUE_TYPE_OF_DTYPE = {dt: vt for vt, dt in _NUMPY_DTYPES.items() if vt != ValueType.BOOL}
_VALUE_TYPE_OF_DTYPE[np.dtype(bool)] = ValueType.BOOL
_INTEGER_VALUE_TYPES = frozenset(
    {ValueType.UINT8, ValueType.INT8, ValueType.UINT16, ValueType.INT16, ValueType.UINT32,
     ValueType.INT32, ValueType.UINT64, ValueType.INT64}
)
_FLOAT_VALUE_TYPES = frozenset({ValueType.FLOAT32, ValueType.FLOAT64})

# A value type as the reader reports it and the writer accepts it: a ValueType for a scalar, or
# (ValueType.ARRAY, item ValueType) for an array.
ValueTypeSpec = Union[ValueType, tuple]


class GGMLType(enum.IntEnum):
    F32 = _engine.GGML_TYPE_F32
    F16 = _engine.GGML_TYPE_F16
    Q4_0 = _engine.GGML_TYPE_Q4_0
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = _engine.GGML_TYPE_Q8_0
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    # bitnet.cpp's id; upstream ggml once used 36 for a repacked Q4 type that it has since removed.
    I2_S = _engine.GGML_TYPE_I2_S
    # edge-runtime's 1.6-bit ternary rows (neon_kernels/er_kernels.h), far above ggml's ids
    TQ1_S = _engine.GGML_TYPE_TQ1_S
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


# (weights per block, bytes per block). Every type is listed, not only the ones we compute with,
# so the reader can size and bounds-check any tensor and the model check can name its type. The
# types the kernels compute take their layouts from the one header that defines them.
_BLOCK_LAYOUT = {
    **{GGMLType(t): layout for t, layout in _engine.BLOCK_LAYOUTS.items()},
    GGMLType.Q4_1: (32, 20), GGMLType.Q5_0: (32, 22), GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_1: (32, 40), GGMLType.Q2_K: (256, 84), GGMLType.Q3_K: (256, 110),
    GGMLType.Q4_K: (256, 144), GGMLType.Q5_K: (256, 176), GGMLType.Q6_K: (256, 210),
    GGMLType.Q8_K: (256, 292), GGMLType.IQ2_XXS: (256, 66), GGMLType.IQ2_XS: (256, 74),
    GGMLType.IQ3_XXS: (256, 98), GGMLType.IQ1_S: (256, 50), GGMLType.IQ4_NL: (32, 18),
    GGMLType.IQ3_S: (256, 110), GGMLType.IQ2_S: (256, 82), GGMLType.IQ4_XS: (256, 136),
    GGMLType.I8: (1, 1), GGMLType.I16: (1, 2), GGMLType.I32: (1, 4), GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8), GGMLType.IQ1_M: (256, 56), GGMLType.BF16: (1, 2),
    GGMLType.TQ1_0: (256, 54), GGMLType.TQ2_0: (256, 66), GGMLType.MXFP4: (32, 17),
    GGMLType.NVFP4: (64, 36), GGMLType.Q1_0: (128, 18),
}

I2S_GROUP = _engine.I2S_GROUP  # weights per 32-byte I2_S group
I2S_TRAILER = _engine.I2S_TRAILER_BYTES  # the f32 scale plus padding after the codes
TQ1_CHUNK = _engine.TQ1_CHUNK  # weights per 32-byte TQ1_S chunk (five strips of 32)
TQ1_CHUNK_BYTES = _engine.TQ1_CHUNK_BYTES
TQ1_TRAILER = _engine.TQ1_TRAILER_BYTES  # the f32 scale plus padding after the rows
TQ2_0_BLOCK = _BLOCK_LAYOUT[GGMLType.TQ2_0][0]
TQ1_0_BLOCK = _BLOCK_LAYOUT[GGMLType.TQ1_0][0]
Q8_0_BLOCK = _BLOCK_LAYOUT[GGMLType.Q8_0][0]
Q4_0_BLOCK = _BLOCK_LAYOUT[GGMLType.Q4_0][0]


def tq1_row_bytes(cols: int) -> int:
    """Bytes of one TQ1_S row of `cols` weights."""
    return -(-cols // TQ1_CHUNK) * TQ1_CHUNK_BYTES


def type_name(ggml_type: int) -> str:
    try:
        return GGMLType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def tensor_nbytes(ggml_type: int, dims: tuple[int, ...]) -> int:
    """Bytes a tensor of `dims` (ggml order) occupies; ValueError when the shape cannot hold it.

    I2_S: n/4 bytes of 2-bit codes, then one f32 scale, padded to n/4 + 32 bytes.
    TQ1_S: rows of ceil(cols/160) 32-byte chunks, then one f32 scale padded to 32 bytes.
    Block types: dims[0] must be a multiple of the block size (rows never share a block).
    """
    n = math.prod(dims)
    ggml_type = GGMLType(ggml_type)
    if ggml_type == GGMLType.I2_S:
        if n % 4:
            raise ValueError(f"I2_S needs a multiple of 4 weights, got {n}")
        return n // 4 + I2S_TRAILER
    if ggml_type == GGMLType.TQ1_S:
        if not dims or dims[0] % I2S_GROUP:
            raise ValueError(f"TQ1_S needs rows of a multiple of {I2S_GROUP} weights, got {dims[:1]}")
        return n // dims[0] * tq1_row_bytes(dims[0]) + TQ1_TRAILER
    block_weights, block_bytes = _BLOCK_LAYOUT[ggml_type]
    if dims[0] % block_weights:
        raise ValueError(
            f"{ggml_type.name} needs rows of a multiple of {block_weights} weights, got {dims[0]}"
        )
    return n // block_weights * block_bytes


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: dims[0] is the contiguous (column) axis
    shape: tuple[int, ...]  # numpy order: reversed dims, (rows, cols) for a matrix
    ggml_type: GGMLType
    offset: int  # absolute file offset of the first byte
    nbytes: int
    n_elements: int

    @property
    def type_name(self) -> str:
        return self.ggml_type.name
