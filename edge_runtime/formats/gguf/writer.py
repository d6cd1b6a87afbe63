"""GGUF files: the atomic writer (a temp file renamed into place), streaming one tensor at a time."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from edge_runtime.formats.gguf.types import (
    DEFAULT_ALIGNMENT, GGMLType, GGUF_MAGIC, MAX_DIMS, ValueType, ValueTypeSpec, _HEADER,
    _INTEGER_VALUE_TYPES, _NUMPY_DTYPES, _SCALAR_STRUCTS, _U32, _U64, _VALUE_TYPE_OF_DTYPE,
    tensor_nbytes,
)


from edge_runtime.formats.gguf.reader import (
    StringArray,
)

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
