"""GGUF v2/v3 files: a validating memory-mapped reader, an atomic writer, and the block codecs
(I2_S, TQ2_0, Q8_0, Q4_0, F16) the runtime and the converter need.

Layout (little-endian): "GGUF", version u32, tensor count u64, kv count u64, the kvs (key string,
value type u32, value), the tensor infos (name string, n_dims u32, dims u64[n_dims] with dims[0]
the contiguous axis, ggml type u32, offset u64 relative to the data section), padding, then the
data section aligned to `general.alignment` (32 when absent). A string is a u64 length and that
many UTF-8 bytes; an array is an item type u32, a count u64 and the items.

The reader checks every count, length, type, shape and offset against the file before anything
is allocated or any tensor byte is read, so a truncated or hostile file raises ModelFormatError
naming the field and offset instead of crashing, hanging or allocating gigabytes.
"""

from __future__ import annotations

import enum
import math
import mmap
import operator
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from edge_runtime.errors import ModelFormatError

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
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
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
    I2_S = 36
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


# (weights per block, bytes per block). Every type is listed, not only the ones we compute with,
# so the reader can size and bounds-check any tensor and the model check can name its type.
_BLOCK_LAYOUT = {
    GGMLType.F32: (1, 4), GGMLType.F16: (1, 2), GGMLType.Q4_0: (32, 18), GGMLType.Q4_1: (32, 20),
    GGMLType.Q5_0: (32, 22), GGMLType.Q5_1: (32, 24), GGMLType.Q8_0: (32, 34),
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

I2S_GROUP = 128  # weights per 32-byte I2_S group
I2S_TRAILER = 32  # the f32 scale plus padding after the codes
TQ2_0_BLOCK = 256
Q8_0_BLOCK = 32
Q4_0_BLOCK = 32


def type_name(ggml_type: int) -> str:
    try:
        return GGMLType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def tensor_nbytes(ggml_type: int, dims: tuple[int, ...]) -> int:
    """Bytes a tensor of `dims` (ggml order) occupies; ValueError when the shape cannot hold it.

    I2_S: n/4 bytes of 2-bit codes, then one f32 scale, padded to n/4 + 32 bytes.
    Block types: dims[0] must be a multiple of the block size (rows never share a block).
    """
    n = math.prod(dims)
    ggml_type = GGMLType(ggml_type)
    if ggml_type == GGMLType.I2_S:
        if n % 4:
            raise ValueError(f"I2_S needs a multiple of 4 weights, got {n}")
        return n // 4 + I2S_TRAILER
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


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------


class _Cursor:
    """Bounds-checked sequential reads over the mapped file; every failure names the field."""

    __slots__ = ("buf", "pos", "size", "path")

    def __init__(self, buf, pos: int, size: int, path: str):
        self.buf = buf
        self.pos = pos
        self.size = size
        self.path = path

    def fail(self, what: str, message: str, at: int | None = None) -> ModelFormatError:
        where = self.pos if at is None else at
        return ModelFormatError(f"{self.path}: {what} at offset {where}: {message}")

    def need(self, n: int, what: str) -> int:
        start = self.pos
        if n > self.size - start:
            raise self.fail(
                what, f"needs {n} bytes but the file ends at {self.size} (truncated or corrupt)"
            )
        self.pos = start + n
        return start

    def u32(self, what: str) -> int:
        return _U32.unpack_from(self.buf, self.need(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack_from(self.buf, self.need(8, what))[0]

    def raw_string(self, what: str) -> bytes:
        at = self.pos
        length = self.u64(f"{what} length")
        if length > self.size - self.pos:
            raise self.fail(
                what, f"string length {length} runs past the end of the file ({self.size} bytes)", at
            )
        start = self.pos
        self.pos = start + length
        return self.buf[start : self.pos]

    def name(self, what: str) -> str:
        at = self.pos
        raw = self.raw_string(what)
        if not raw:
            raise self.fail(what, "is empty", at)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(what, f"is not valid UTF-8 ({exc.reason})", at) from None


def _value_type(code: int, cur: _Cursor, what: str, at: int) -> ValueType:
    try:
        return ValueType(code)
    except ValueError:
        raise cur.fail(what, f"unknown value type {code} (expected 0..12)", at) from None


class StringArray(Sequence):
    """A GGUF array of strings, read in place from the file's mapping: a string is decoded each
    time it is read, and none is kept. A Llama-3 vocabulary (128k tokens, 280k merges) held as
    Python strings costs about 33 MiB of RAM for the life of the model; most runs never read it
    (the tokenizer is built on first use and keeps its own tables). Lengths were checked when
    the file was opened. Compares equal to a list or tuple of the same strings."""

    __slots__ = ("_buf", "_start", "_count", "_offsets")

    def __init__(self, buf, start: int, count: int):
        self._buf, self._start, self._count = buf, start, count
        self._offsets: np.ndarray | None = None  # built on the first indexed read

    def __len__(self) -> int:
        return self._count

    def _check_open(self) -> None:
        if getattr(self._buf, "closed", False):
            raise ValueError("the GGUF file is closed; its string arrays can no longer be read")

    def __iter__(self):
        self._check_open()
        buf, pos, unpack_u64 = self._buf, self._start, _U64.unpack_from
        for _ in range(self._count):
            length = unpack_u64(buf, pos)[0]
            pos += 8
            yield str(buf[pos : pos + length], "utf-8", "surrogateescape")
            pos += length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        i = range(self._count)[operator.index(index)]  # negative indices, IndexError
        self._check_open()
        if self._offsets is None:
            offsets = np.empty(self._count, np.int64)
            buf, pos, unpack_u64 = self._buf, self._start, _U64.unpack_from
            for j in range(self._count):
                offsets[j] = pos
                pos += 8 + unpack_u64(buf, pos)[0]
            self._offsets = offsets
        pos = int(self._offsets[i])
        length = _U64.unpack_from(self._buf, pos)[0]
        return str(self._buf[pos + 8 : pos + 8 + length], "utf-8", "surrogateescape")

    def __eq__(self, other) -> bool:
        if isinstance(other, (StringArray, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        return f"StringArray([{head}{', ...' if self._count > 3 else ''}], {self._count} strings)"


class GGUFReader:
    """A GGUF file mapped read-only and fully validated on open.

    Attributes: path, version, metadata (key -> value, in file order; numeric arrays as numpy
    arrays, string arrays as StringArray (a read-only sequence of str decoded from the mapping
    on access), nested arrays as lists), value_types (key ->
    ValueType or (ValueType.ARRAY, item type), for writing the same types back), tensors (name
    -> TensorInfo, in file order), alignment, data_offset, file_size, buffer (the mmap).
    String values that are not valid UTF-8 decode with "surrogateescape", so writing them back
    reproduces the original bytes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.buffer: mmap.mmap | None = None
        try:
            with open(self.path, "rb") as f:
                self.file_size = os.fstat(f.fileno()).st_size
                if self.file_size < _HEADER.size:
                    start = f.read(4)
                    what = "a truncated GGUF header" if start == GGUF_MAGIC else (
                        f"not a GGUF file (starts with {start!r})")
                    raise ModelFormatError(
                        f"{self.path}: {what}: the file is {self.file_size} bytes, a GGUF header "
                        f"is {_HEADER.size}"
                    )
                self.buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise ModelFormatError(f"{self.path}: cannot open: {exc.strerror or exc}") from None
        try:
            self._parse()
        except (struct.error, OverflowError, IndexError, UnicodeDecodeError) as exc:
            # Every read above is bounds-checked; this only turns a check we missed into the
            # error type callers expect instead of a crash.
            self.close()
            raise ModelFormatError(f"{self.path}: malformed GGUF file: {exc}") from exc
        except BaseException:
            self.close()
            raise

    # -- parsing --------------------------------------------------------------------------

    def _parse(self) -> None:
        buf, size, path = self.buffer, self.file_size, self.path
        magic, version, n_tensors, n_kv = _HEADER.unpack_from(buf, 0)
        if magic != GGUF_MAGIC:
            raise ModelFormatError(
                f"{path}: not a GGUF file: magic at offset 0 is {magic!r}, expected b'GGUF'"
            )
        if version not in SUPPORTED_VERSIONS:
            hint = " (a big-endian file?)" if version & 0xFFFF == 0 else ""
            raise ModelFormatError(
                f"{path}: GGUF version {version} at offset 4 is not supported{hint}; "
                f"expected 2 or 3"
            )
        self.version = version
        room = size - _HEADER.size
        # Smallest possible entries: a tensor info is a name (8 + 1), n_dims, one dim, type and
        # offset = 33 bytes; a kv is a key (8 + 1), a type and a 1-byte value = 14 bytes.
        if n_tensors > room // 33:
            raise ModelFormatError(
                f"{path}: tensor count {n_tensors} at offset 8 cannot fit in a file of {size} bytes"
            )
        if n_kv > room // 14 or n_tensors * 33 + n_kv * 14 > room:
            raise ModelFormatError(
                f"{path}: metadata count {n_kv} at offset 16 cannot fit in a file of {size} bytes"
            )
        cur = _Cursor(buf, _HEADER.size, size, path)
        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, ValueTypeSpec] = {}
        for index in range(n_kv):
            at = cur.pos
            key = cur.name(f"metadata key #{index}")
            if key in self.metadata:
                raise cur.fail(f"metadata key {key!r}", "appears twice", at)
            type_at = cur.pos
            vtype = _value_type(cur.u32(f"type of {key!r}"), cur, f"type of {key!r}", type_at)
            value, spec = self._read_value(cur, vtype, f"value of {key!r}", 0)
            self.metadata[key] = value
            self.value_types[key] = spec
        self.alignment = self._alignment()
        self.tensors: dict[str, TensorInfo] = {}
        seen: set[str] = set()
        infos = [self._read_tensor_info(cur, index, seen) for index in range(n_tensors)]
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        self._place_tensors(infos)

    def _read_value(self, cur: _Cursor, vtype: ValueType, what: str, depth: int):
        scalar = _SCALAR_STRUCTS.get(vtype)
        if scalar is not None:
            at = cur.need(scalar.size, what)
            value = scalar.unpack_from(cur.buf, at)[0]
            if vtype == ValueType.BOOL:
                if value > 1:
                    raise cur.fail(what, f"bool byte is {value}, expected 0 or 1", at)
                value = bool(value)
            return value, vtype
        if vtype == ValueType.STRING:
            return cur.raw_string(what).decode("utf-8", "surrogateescape"), vtype
        # ARRAY
        at = cur.pos
        item_type = _value_type(cur.u32(f"{what} item type"), cur, f"{what} item type", at)
        count_at = cur.pos
        count = cur.u64(f"{what} count")
        left = cur.size - cur.pos
        if item_type == ValueType.STRING:
            if count > left // 8:
                raise cur.fail(
                    what, f"array of {count} strings cannot fit in the {left} bytes left", count_at
                )
            return self._read_string_array(cur, count, what), (ValueType.ARRAY, item_type)
        if item_type == ValueType.ARRAY:
            if depth + 1 >= MAX_ARRAY_NESTING:
                raise cur.fail(what, f"arrays nested deeper than {MAX_ARRAY_NESTING}", at)
            if count > left // 12:
                raise cur.fail(
                    what, f"array of {count} arrays cannot fit in the {left} bytes left", count_at
                )
            # Each item is itself an array: item type, count, items.
            items = [
                self._read_value(cur, ValueType.ARRAY, f"{what}[{i}]", depth + 1)[0]
                for i in range(count)
            ]
            return items, (ValueType.ARRAY, item_type)
        dtype = _NUMPY_DTYPES[item_type]
        if count > left // dtype.itemsize:
            raise cur.fail(
                what,
                f"array of {count} {item_type.name} items needs {count * dtype.itemsize} bytes "
                f"but only {left} are left",
                count_at,
            )
        start = cur.need(count * dtype.itemsize, what)
        values = np.frombuffer(cur.buf, dtype=dtype, count=count, offset=start).copy()
        if item_type == ValueType.BOOL:
            if count and int(values.max()) > 1:
                bad = int(np.argmax(values > 1))
                raise cur.fail(what, f"bool item {bad} is {values[bad]}, expected 0 or 1", start)
            values = values.astype(bool)
        return values, (ValueType.ARRAY, item_type)

    @staticmethod
    def _read_string_array(cur: _Cursor, count: int, what: str) -> "StringArray":
        # The hot loop for tokenizer vocabularies (128k tokens + 280k merges): locals only. The
        # lengths are checked here; the strings are decoded only when someone reads them.
        buf, size, pos = cur.buf, cur.size, cur.pos
        start = pos
        unpack_u64 = _U64.unpack_from
        for i in range(count):
            if size - pos < 8:
                cur.pos = pos
                raise cur.fail(f"{what}[{i}] length", "file ends inside the array")
            length = unpack_u64(buf, pos)[0]
            pos += 8
            if length > size - pos:
                raise cur.fail(
                    f"{what}[{i}]",
                    f"string length {length} runs past the end of the file ({size} bytes)",
                    pos - 8,
                )
            pos += length
        cur.pos = pos
        return StringArray(buf, start, count)

    def _alignment(self) -> int:
        if "general.alignment" not in self.metadata:
            return DEFAULT_ALIGNMENT
        value = self.metadata["general.alignment"]
        vtype = self.value_types["general.alignment"]
        if vtype not in _INTEGER_VALUE_TYPES or not 0 < value <= 1 << 24 or value & (value - 1):
            raise ModelFormatError(
                f"{self.path}: general.alignment is {value!r} ({_spec_name(vtype)}), expected a "
                f"power of two integer (usually 32)"
            )
        return int(value)

    def _read_tensor_info(self, cur: _Cursor, index: int, seen: set[str]):
        at = cur.pos
        name = cur.name(f"tensor #{index} name")
        what = f"tensor {name!r}"
        if name in seen:
            raise cur.fail(what, "name appears twice", at)
        seen.add(name)
        n_dims_at = cur.pos
        n_dims = cur.u32(f"{what} n_dims")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(what, f"n_dims is {n_dims}, expected 1..{MAX_DIMS}", n_dims_at)
        dims = []
        n_elements = 1
        for d in range(n_dims):
            dim_at = cur.pos
            dim = cur.u64(f"{what} dims[{d}]")
            if dim == 0:
                raise cur.fail(what, f"dims[{d}] is 0, expected > 0", dim_at)
            n_elements *= dim
            if n_elements > _INT64_MAX:
                raise cur.fail(what, f"element count overflows int64 (dims so far {dims + [dim]})",
                               dim_at)
            dims.append(dim)
        type_at = cur.pos
        type_code = cur.u32(f"{what} type")
        try:
            ggml_type = GGMLType(type_code)
        except ValueError:
            raise cur.fail(what, f"unknown ggml type id {type_code}", type_at) from None
        dims = tuple(dims)
        try:
            nbytes = tensor_nbytes(ggml_type, dims)
        except ValueError as exc:
            raise cur.fail(what, f"shape {list(dims)} does not fit its type: {exc}", type_at) from None
        offset_at = cur.pos
        offset = cur.u64(f"{what} offset")
        return name, dims, ggml_type, offset, offset_at, nbytes, n_elements

    def _place_tensors(self, infos) -> None:
        path = self.path
        if infos and self.data_offset > self.file_size:
            raise ModelFormatError(
                f"{path}: data section would start at offset {self.data_offset}, past the end of "
                f"the file ({self.file_size} bytes)"
            )
        data_size = self.file_size - self.data_offset
        for name, dims, ggml_type, offset, offset_at, nbytes, n_elements in infos:
            if offset % self.alignment:
                raise ModelFormatError(
                    f"{path}: tensor {name!r} offset {offset} (field at offset {offset_at}) is not "
                    f"a multiple of the alignment {self.alignment}"
                )
            if offset > data_size or nbytes > data_size - offset:
                raise ModelFormatError(
                    f"{path}: tensor {name!r} ({ggml_type.name} {list(dims)}, {nbytes} bytes) at "
                    f"data offset {offset} runs past the end of the file: the data section holds "
                    f"{data_size} bytes"
                )
            self.tensors[name] = TensorInfo(
                name=name,
                dims=dims,
                shape=tuple(reversed(dims)),
                ggml_type=ggml_type,
                offset=self.data_offset + offset,
                nbytes=nbytes,
                n_elements=n_elements,
            )
        by_offset = sorted(self.tensors.values(), key=lambda t: t.offset)
        for before, after in zip(by_offset, by_offset[1:]):
            if after.offset < before.offset + before.nbytes:
                raise ModelFormatError(
                    f"{path}: tensor {after.name!r} at offset {after.offset} overlaps tensor "
                    f"{before.name!r} ({before.offset}..{before.offset + before.nbytes})"
                )

    # -- access ---------------------------------------------------------------------------

    def tensor_info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def tensor_bytes(self, name: str) -> memoryview:
        """The tensor's bytes as a zero-copy view into the mapping."""
        if self.buffer is None:
            raise ValueError(f"{self.path}: reader is closed")
        info = self.tensor_info(name)
        return memoryview(self.buffer)[info.offset : info.offset + info.nbytes]

    def tensor_array(self, name: str) -> np.ndarray:
        """A zero-copy numpy view: F32/F16/BF16 (as uint16) in numpy shape, other types as raw
        uint8 bytes."""
        if self.buffer is None:
            raise ValueError(f"{self.path}: reader is closed")
        info = self.tensor_info(name)
        dtype = {GGMLType.F32: "<f4", GGMLType.F16: "<f2", GGMLType.BF16: "<u2"}.get(info.ggml_type)
        if dtype is None:
            return np.frombuffer(self.buffer, np.uint8, info.nbytes, info.offset)
        return np.frombuffer(self.buffer, dtype, info.n_elements, info.offset).reshape(info.shape)

    def close(self) -> None:
        """Unmap the file. Views handed out earlier keep the mapping alive until they are
        dropped (an mmap cannot close under a live view); nothing else is held."""
        buffer, self.buffer = self.buffer, None
        if buffer is not None:
            try:
                buffer.close()
            except BufferError:
                pass

    def __enter__(self) -> "GGUFReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _spec_name(spec: ValueTypeSpec) -> str:
    if isinstance(spec, tuple):
        return f"ARRAY of {ValueType(spec[1]).name}"
    return ValueType(spec).name


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------

# A tensor's bytes: given now, or produced at write time by a zero-argument callable so a
# converter can stream one tensor at a time instead of holding the whole model in memory.
TensorData = Union[bytes, bytearray, memoryview, np.ndarray, Callable[[], Any]]

_DTYPE_OF_PLAIN_TYPE = {
    GGMLType.F32: np.dtype("<f4"), GGMLType.F16: np.dtype("<f2"), GGMLType.F64: np.dtype("<f8"),
    GGMLType.I8: np.dtype("<i1"), GGMLType.I16: np.dtype("<i2"), GGMLType.I32: np.dtype("<i4"),
    GGMLType.I64: np.dtype("<i8"),
}


@dataclass
class _PendingTensor:
    name: str
    ggml_type: GGMLType
    dims: tuple[int, ...]
    nbytes: int
    data: TensorData


def _value_type_of_dtype(dtype: np.dtype) -> ValueType:
    try:
        return _VALUE_TYPE_OF_DTYPE[np.dtype(dtype).newbyteorder("<")]
    except KeyError:
        raise TypeError(f"no GGUF value type for numpy dtype {dtype}") from None


def infer_value_type(value: Any) -> ValueTypeSpec:
    """The GGUF type a Python/numpy value is written as when no type is given: bool -> BOOL,
    non-negative int < 2**32 -> UINT32 (llama.cpp's type for counts), other ints -> INT32 or
    INT64, float -> FLOAT32, str -> STRING, numpy arrays by dtype, lists by their items (ints ->
    INT32 or INT64, floats -> FLOAT32)."""
    if isinstance(value, (bool, np.bool_)):
        return ValueType.BOOL
    if isinstance(value, np.generic):
        return _value_type_of_dtype(value.dtype)
    if isinstance(value, int):
        if 0 <= value < 1 << 32:
            return ValueType.UINT32
        if -(1 << 31) <= value < 0:
            return ValueType.INT32
        return ValueType.INT64 if -(1 << 63) <= value < 1 << 63 else ValueType.UINT64
    if isinstance(value, float):
        return ValueType.FLOAT32
    if isinstance(value, str):
        return ValueType.STRING
    if isinstance(value, np.ndarray):
        return (ValueType.ARRAY, _value_type_of_dtype(value.dtype))
    if isinstance(value, StringArray):
        return (ValueType.ARRAY, ValueType.STRING)
    if isinstance(value, (list, tuple)):
        if not value:
            raise TypeError("cannot infer the item type of an empty array; pass vtype")
        if all(isinstance(v, str) for v in value):
            return (ValueType.ARRAY, ValueType.STRING)
        if all(isinstance(v, (bool, np.bool_)) for v in value):
            return (ValueType.ARRAY, ValueType.BOOL)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
            fits32 = all(-(1 << 31) <= int(v) < 1 << 31 for v in value)
            return (ValueType.ARRAY, ValueType.INT32 if fits32 else ValueType.INT64)
        if all(isinstance(v, (int, float, np.integer, np.floating)) for v in value):
            return (ValueType.ARRAY, ValueType.FLOAT32)
        if all(isinstance(v, (list, tuple, np.ndarray)) for v in value):
            return (ValueType.ARRAY, ValueType.ARRAY)
        raise TypeError(f"cannot infer one GGUF item type for a mixed list: {value[:4]!r}...")
    raise TypeError(f"no GGUF type for a value of type {type(value).__name__}")


def _normalise_spec(spec: ValueTypeSpec) -> ValueTypeSpec:
    if isinstance(spec, tuple):
        outer, item = spec
        if ValueType(outer) != ValueType.ARRAY:
            raise ValueError(f"a tuple value type must be (ARRAY, item type), got {spec!r}")
        return (ValueType.ARRAY, ValueType(item))
    spec = ValueType(spec)
    if spec == ValueType.ARRAY:
        raise ValueError("give an array's item type: vtype=(ValueType.ARRAY, item_type)")
    return spec


def _encode_value(spec: ValueTypeSpec, value: Any, what: str, parts: list) -> None:
    if not isinstance(spec, tuple):
        if spec == ValueType.STRING:
            if not isinstance(value, str):
                raise TypeError(f"{what}: STRING value must be str, got {type(value).__name__}")
            raw = value.encode("utf-8", "surrogateescape")
            parts.append(_U64.pack(len(raw)))
            parts.append(raw)
            return
        if spec == ValueType.BOOL:
            parts.append(b"\x01" if value else b"\x00")
            return
        if spec in _INTEGER_VALUE_TYPES and (isinstance(value, (float, np.floating))
                                             or isinstance(value, (bool, np.bool_))):
            raise TypeError(f"{what}: {spec.name} value must be an integer, got {value!r}")
        try:
            parts.append(_SCALAR_STRUCTS[spec].pack(value))
        except struct.error as exc:
            raise ValueError(f"{what}: {value!r} does not fit {spec.name}: {exc}") from None
        return
    item = spec[1]
    parts.append(_U32.pack(item))
    parts.append(_U64.pack(len(value)))
    if item == ValueType.STRING:
        for i, s in enumerate(value):
            if not isinstance(s, str):
                raise TypeError(f"{what}[{i}]: STRING item must be str, got {type(s).__name__}")
            raw = s.encode("utf-8", "surrogateescape")
            parts.append(_U64.pack(len(raw)))
            parts.append(raw)
        return
    if item == ValueType.ARRAY:
        for i, sub in enumerate(value):
            _encode_value(infer_value_type(sub), sub, f"{what}[{i}]", parts)
        return
    array = np.asarray(value)
    dtype = _NUMPY_DTYPES[item]
    if item == ValueType.BOOL:
        array = array.astype(bool)
    elif item in _INTEGER_VALUE_TYPES and array.size:
        if array.dtype.kind not in "iub":
            raise TypeError(f"{what}: {item.name} items must be integers, got dtype {array.dtype}")
        info = np.iinfo(dtype)
        lo, hi = int(array.min()), int(array.max())
        if lo < info.min or hi > info.max:
            raise ValueError(f"{what}: items {lo}..{hi} do not fit {item.name}")
    parts.append(array.astype(dtype, copy=False).tobytes())


def _data_bytes(data: Any, what: str) -> memoryview:
    if isinstance(data, np.ndarray):
        if data.dtype.byteorder == ">":
            raise ValueError(f"{what}: big-endian array; convert to little-endian first")
        return memoryview(np.ascontiguousarray(data)).cast("B")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return memoryview(data).cast("B")
    raise TypeError(f"{what}: tensor data must be bytes or a numpy array, got {type(data).__name__}")


class GGUFWriter:
    """Collects metadata and tensors, then `write()` produces the file atomically: everything
    goes to `<path>.tmp-<pid>` in the same directory, which is renamed over `path` only after
    the last byte is written and synced. Any failure, including KeyboardInterrupt, removes the
    temporary file and leaves `path` untouched."""

    def __init__(self, path: str | os.PathLike, *, alignment: int = DEFAULT_ALIGNMENT):
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        self.path = os.fspath(path)
        self.alignment = alignment
        self._kv: dict[str, tuple[ValueTypeSpec, Any]] = {}
        self._tensors: dict[str, _PendingTensor] = {}

    def add(self, key: str, value: Any, vtype: ValueTypeSpec | None = None) -> None:
        """Add one metadata entry; its type is inferred (see infer_value_type) unless given as a
        ValueType or (ValueType.ARRAY, item ValueType). Adding a key again replaces it."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"metadata key must be a non-empty str, got {key!r}")
        spec = _normalise_spec(vtype) if vtype is not None else infer_value_type(value)
        parts: list = []
        _encode_value(spec, value, f"metadata {key!r}", parts)  # validates now, not at write
        if key == "general.alignment":
            if spec not in _INTEGER_VALUE_TYPES or value <= 0 or value & (value - 1):
                raise ValueError(f"general.alignment must be a power-of-two integer, got {value!r}")
            self.alignment = int(value)
        self._kv[key] = (spec, b"".join(parts))

    def add_tensor(self, name: str, data: TensorData, ggml_type: int,
                   dims: tuple[int, ...] | list[int] | None = None) -> None:
        """Add a tensor of `ggml_type` with `dims` in ggml order (dims[0] = columns). For an
        F32/F16/I* numpy array of the matching dtype, dims may be omitted (the reversed shape).
        `data` may be a zero-argument callable returning the bytes at write time."""
        ggml_type = GGMLType(ggml_type)
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor name must be a non-empty str, got {name!r}")
        if name in self._tensors:
            raise ValueError(f"tensor {name!r} added twice")
        if dims is None:
            if not isinstance(data, np.ndarray):
                raise ValueError(f"tensor {name!r}: dims are required unless data is a numpy array")
            expected = _DTYPE_OF_PLAIN_TYPE.get(ggml_type)
            if expected is None or data.dtype.newbyteorder("<") != expected:
                raise ValueError(
                    f"tensor {name!r}: dims are required for {ggml_type.name} from {data.dtype} data"
                )
            dims = tuple(reversed(data.shape))
        dims = tuple(int(d) for d in dims)
        if not 1 <= len(dims) <= MAX_DIMS or any(d <= 0 for d in dims):
            raise ValueError(f"tensor {name!r}: dims {list(dims)} must be 1..4 positive sizes")
        nbytes = tensor_nbytes(ggml_type, dims)
        if not callable(data):
            got = _data_bytes(data, f"tensor {name!r}").nbytes
            if got != nbytes:
                raise ValueError(
                    f"tensor {name!r}: {ggml_type.name} {list(dims)} is {nbytes} bytes, data has {got}"
                )
        self._tensors[name] = _PendingTensor(name, ggml_type, dims, nbytes, data)

    def _header_bytes(self) -> bytes:
        parts = [_HEADER.pack(GGUF_MAGIC, 3, len(self._tensors), len(self._kv))]
        for key, (spec, blob) in self._kv.items():
            raw = key.encode("utf-8")
            parts += [_U64.pack(len(raw)), raw, _U32.pack(spec[0] if isinstance(spec, tuple) else spec), blob]
        offset = 0
        for t in self._tensors.values():
            raw = t.name.encode("utf-8")
            parts += [_U64.pack(len(raw)), raw, _U32.pack(len(t.dims))]
            parts += [_U64.pack(d) for d in t.dims]
            parts += [_U32.pack(t.ggml_type), _U64.pack(offset)]
            offset += -(-t.nbytes // self.alignment) * self.alignment
        header = b"".join(parts)
        return header + bytes(-len(header) % self.alignment)

    def write(self, progress: Callable[[int, int, str], None] | None = None) -> None:
        """Write the file; `progress(done, total, tensor_name)` is called after each tensor."""
        tmp = f"{self.path}.tmp-{os.getpid()}"
        total = len(self._tensors)
        try:
            with open(tmp, "wb") as f:
                f.write(self._header_bytes())
                for done, t in enumerate(self._tensors.values(), 1):
                    data = t.data() if callable(t.data) else t.data
                    view = _data_bytes(data, f"tensor {t.name!r}")
                    if view.nbytes != t.nbytes:
                        raise ValueError(
                            f"tensor {t.name!r}: {t.ggml_type.name} {list(t.dims)} is {t.nbytes} "
                            f"bytes, its data producer returned {view.nbytes}"
                        )
                    f.write(view)
                    f.write(bytes(-t.nbytes % self.alignment))
                    del data, view
                    if progress is not None:
                        progress(done, total, t.name)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise


# ---------------------------------------------------------------------------------------------
# Block codecs. Matrices are numpy (rows, cols); a tensor is its rows flattened in order.
# ---------------------------------------------------------------------------------------------

_Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", (Q8_0_BLOCK,))])
_Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (Q4_0_BLOCK // 2,))])
_TQ2_0_BLOCK = np.dtype([("qs", "u1", (TQ2_0_BLOCK // 4,)), ("d", "<f2")])
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


def ternary_to_tq2_0(ternary: Any, scale: float) -> bytes:
    """(rows, cols) ternary and one scale -> TQ2_0 blocks (llama.cpp): 256 weights = 64 bytes of
    codes w+1 (in each 128-weight half, byte m holds weight m, m+32, m+64, m+96 at bits 1:0, 3:2,
    5:4, 7:6) then the f16 scale d; value = (code - 1) * d. cols must be a multiple of 256."""
    t = _check_ternary(_matrix(ternary, "ternary_to_tq2_0"), "ternary_to_tq2_0")
    if t.shape[1] % TQ2_0_BLOCK:
        raise ValueError(f"ternary_to_tq2_0: cols {t.shape[1]} is not a multiple of {TQ2_0_BLOCK}")
    d = np.float16(scale)
    if not np.isfinite(d) or d <= 0:
        raise ValueError(f"ternary_to_tq2_0: scale {scale} is not a finite positive f16 value")
    codes = (t.astype(np.int8) + 1).astype(np.uint8).reshape(-1, 2, 4, 32)
    blocks = np.empty(codes.shape[0], dtype=_TQ2_0_BLOCK)
    blocks["qs"] = np.bitwise_or.reduce(codes << _TQ2_0_SHIFTS, axis=2).reshape(-1, 64)
    blocks["d"] = d
    return blocks.tobytes()


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
