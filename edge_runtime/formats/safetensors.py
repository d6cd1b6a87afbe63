"""Safetensors, read here (a JSON header + raw little-endian data, memory-mapped), and a Hugging Face
checkpoint's tensors across its shards."""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path

import numpy as np

from edge_runtime.errors import ModelFormatError
from edge_runtime.formats.gguf import (
    bf16_to_f32,
)

_SAFETENSORS_DTYPES = {  # name -> (itemsize, numpy dtype or None when we cannot use it)
    "U8": (1, np.dtype("u1")), "BF16": (2, np.dtype("<u2")), "F16": (2, np.dtype("<f2")),
    "F32": (4, np.dtype("<f4")), "I8": (1, None), "I16": (2, None), "U16": (2, None),
    "I32": (4, None), "U32": (4, None), "I64": (8, None), "U64": (8, None), "F64": (8, None),
    "BOOL": (1, None), "F8_E4M3": (1, None), "F8_E5M2": (1, None),
}
_MAX_SAFETENSORS_HEADER = 100 << 20


class SafetensorsFile:
    """One .safetensors file: `entries` name -> (dtype, shape, absolute offset, nbytes)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._map = None
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 8:
                    raise ModelFormatError(f"{self.path}: {size} bytes, too small for safetensors")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise ModelFormatError(f"{self.path}: cannot open: {exc.strerror or exc}") from None
        try:
            self.entries = self._parse(size)
        except BaseException:
            self.close()
            raise

    def _parse(self, size: int) -> dict:
        (header_len,) = struct.unpack_from("<Q", self._map, 0)
        if header_len > min(size - 8, _MAX_SAFETENSORS_HEADER):
            raise ModelFormatError(
                f"{self.path}: header length {header_len} exceeds the file ({size} bytes)")
        try:
            header = json.loads(bytes(self._map[8 : 8 + header_len]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{self.path}: header is not valid JSON: {exc}") from None
        if not isinstance(header, dict):
            raise ModelFormatError(f"{self.path}: header is not a JSON object")
        data_start = 8 + header_len
        data_size = size - data_start
        entries = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            what = f"{self.path}: tensor {name!r}"
            if not isinstance(entry, dict):
                raise ModelFormatError(f"{what}: header entry is not an object")
            dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
            if dtype not in _SAFETENSORS_DTYPES:
                raise ModelFormatError(f"{what}: unknown dtype {dtype!r}")
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ModelFormatError(f"{what}: shape {shape!r} is not a list of sizes")
            if (not isinstance(offsets, list) or len(offsets) != 2
                    or not all(isinstance(o, int) for o in offsets)
                    or not 0 <= offsets[0] <= offsets[1] <= data_size):
                raise ModelFormatError(
                    f"{what}: data_offsets {offsets!r} outside the data section ({data_size} bytes)")
            nbytes = math.prod(shape) * _SAFETENSORS_DTYPES[dtype][0]
            if offsets[1] - offsets[0] != nbytes:
                raise ModelFormatError(
                    f"{what}: {dtype} {shape} needs {nbytes} bytes, data_offsets span "
                    f"{offsets[1] - offsets[0]}")
            entries[name] = (dtype, tuple(shape), data_start + offsets[0], nbytes)
        return entries

    def array(self, name: str) -> np.ndarray:
        """Zero-copy view in the stored dtype (BF16 as uint16 bit patterns)."""
        dtype, shape, offset, _ = self.entries[name]
        np_dtype = _SAFETENSORS_DTYPES[dtype][1]
        if np_dtype is None:
            raise ModelFormatError(
                f"{self.path}: tensor {name!r} has dtype {dtype}; expected U8, BF16, F16 or F32")
        return np.frombuffer(self._map, np_dtype, math.prod(shape), offset).reshape(shape)

    def close(self) -> None:
        m, self._map = self._map, None
        if m is not None:
            try:
                m.close()
            except BufferError:
                pass  # a view is still alive; the mapping goes with it


class HFTensors:
    """All tensors of a checkpoint dir, over one or more safetensors files."""

    def __init__(self, directory: Path):
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                files = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ModelFormatError(f"{index}: not a valid safetensors index: {exc}") from None
            paths = [directory / f for f in files]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise ModelFormatError(f"{index}: names files that are missing: {missing[:3]}")
        else:
            paths = sorted(directory.glob("*.safetensors"))
        if not paths:
            raise ModelFormatError(f"{directory}: no *.safetensors files")
        self.files = []
        self.where: dict[str, SafetensorsFile] = {}
        try:
            for p in paths:
                f = SafetensorsFile(p)
                self.files.append(f)
                for name in f.entries:
                    if name in self.where:
                        raise ModelFormatError(
                            f"{directory}: tensor {name!r} is in both {self.where[name].path} and {p}")
                    self.where[name] = f
        except BaseException:
            self.close()
            raise

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def dtype(self, name: str) -> str:
        return self.where[name].entries[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.where[name].entries[name][1]

    def raw(self, name: str) -> np.ndarray:
        return self.where[name].array(name)

    def float32(self, name: str) -> np.ndarray:
        dtype = self.dtype(name)
        if dtype not in ("BF16", "F16", "F32"):
            raise ModelFormatError(
                f"{self.where[name].path}: tensor {name!r} has dtype {dtype}; expected BF16, F16 or F32")
        x = self.raw(name)
        return bf16_to_f32(x) if dtype == "BF16" else x.astype(np.float32)

    def close(self) -> None:
        for f in self.files:
            f.close()
