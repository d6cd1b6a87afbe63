"""Ternary weights: absmean ternarization (as BitNet b1.58 trains), HF's packed 2-bit form, and the
one-scale-per-tensor check every I2_S projection needs."""

from __future__ import annotations

import math

import numpy as np

from edge_runtime.errors import ModelFormatError
from edge_runtime.formats.gguf import (
    TQ2_0_BLOCK,
)

ABSMEAN_MIN = np.float32(1e-5)  # transformers clamps the absmean scale to this


def ternarize_absmean(weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Master weights -> (ternary, scale) as transformers' BitNet weight quantizer does it:
    s = max(mean|W|, 1e-5) in f32, t = clamp(round_half_even(W * (1/s)), -1, 1), and the
    effective weight t / (1/s). Multiplying by the f32 reciprocal (not dividing by s) matches the
    reference's rounding of values next to +-0.5."""
    w = np.asarray(weight, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        raise ValueError("master weights hold NaN or infinity")
    mean = np.float32(np.abs(w).mean(dtype=np.float64))
    inv_scale = np.float32(1) / max(mean, ABSMEAN_MIN)
    ternary = np.clip(np.rint(w * inv_scale), -1, 1).astype(np.int8)
    return ternary, float(np.float32(1) / inv_scale)


def unpack_hf_ternary(packed: np.ndarray, *, name: str) -> np.ndarray:
    """transformers' packed layout -> (4P, in) ternary: bits 2i..2i+1 of packed[r, c] hold
    W[i*P + r, c] + 1 (P = packed rows)."""
    parts = [(packed >> np.uint8(2 * i)) & np.uint8(3) for i in range(4)]
    codes = np.concatenate(parts, axis=0)
    if codes.size and int(codes.max()) == 3:
        row, col = np.argwhere(codes == 3)[0]
        raise ModelFormatError(
            f"{name}: packed value 3 (not a ternary weight) for row {row}, column {col}"
        )
    return codes.astype(np.int8) - 1


def single_scale(ternary: np.ndarray, block_scales: np.ndarray, *, name: str) -> float:
    """The one scale a TQ2_0 tensor's blocks share. Blocks whose weights are all zero say
    nothing about it; the others must agree to within f16 rounding (1 part in 1024), else the
    tensor is not a per-tensor ternary BitNet weight and cannot become I2_S losslessly."""
    informative = np.any(ternary.reshape(-1, TQ2_0_BLOCK) != 0, axis=1)
    d = block_scales[informative]
    if d.size == 0:
        return 1.0  # an all-zero matrix: any positive scale represents it
    if not np.all(np.isfinite(d)) or float(d.min()) <= 0:
        raise ModelFormatError(f"{name}: TQ2_0 block scales must be finite and > 0, found "
                               f"{float(d.min())}..{float(d.max())}")
    lo, hi = float(d.min()), float(d.max())
    if hi - lo > hi / 1024:
        raise ModelFormatError(
            f"{name}: TQ2_0 block scales range over {lo:.6g}..{hi:.6g}; the file is not "
            f"per-tensor ternary (BitNet b1.58 has one scale per tensor), so it cannot be "
            f"converted to I2_S without changing the model"
        )
    values, counts = np.unique(d, return_counts=True)
    return float(values[np.argmax(counts)])


def ternary_from_values(w: np.ndarray, *, name: str) -> tuple[np.ndarray, float]:
    """A float tensor that already holds ternary * scale (llama.cpp's f16/f32 BitNet export)
    -> (ternary, scale); anything else raises ModelFormatError."""
    w = np.asarray(w, dtype=np.float32)
    scale = float(np.abs(w).max()) if w.size else 0.0
    if not math.isfinite(scale):
        raise ModelFormatError(f"{name}: weights hold NaN or infinity")
    if scale == 0:
        return np.zeros(w.shape, np.int8), 1.0
    ternary = np.rint(w / np.float32(scale)).astype(np.int8)
    if float(np.abs(w - ternary * np.float32(scale)).max()) > scale / 1024:
        raise ModelFormatError(
            f"{name}: weights are not ternary (values other than -s, 0, +s with s = {scale:.6g}); "
            f"not a BitNet b1.58 projection"
        )
    return ternary, scale
