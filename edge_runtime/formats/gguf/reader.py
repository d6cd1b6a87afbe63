"""GGUF v2/v3 files: the validating memory-mapped reader.

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

import mmap
import operator
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_runtime.errors import ModelFormatError
from edge_runtime.formats.gguf.types import (
    DEFAULT_ALIGNMENT, GGMLType, GGUF_MAGIC, MAX_ARRAY_NESTING, MAX_DIMS, SUPPORTED_VERSIONS,
    TensorInfo, ValueType, ValueTypeSpec, _HEADER, _INT64_MAX, _INTEGER_VALUE_TYPES, _NUMPY_DTYPES,
    _SCALAR_STRUCTS, _U32, _U64, tensor_nbytes,
)

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
