"""The memory guard: refuse a load whose model + KV cache + scratch exceeds the board's budget or the
machine's MemAvailable, before anything is allocated, rather than swap a board to death."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


class MemoryBudgetError(ValueError):
    """The model, its KV cache and scratch do not fit in the budget or in the machine's RAM."""


@dataclass(frozen=True)
class MemoryEstimate:
    model_bytes: int
    kv_cache_bytes: int
    scratch_bytes: int
    budget_bytes: int
    mem_available_bytes: int | None

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.kv_cache_bytes + self.scratch_bytes


def kv_cache_bytes(n_ctx: int, n_layers: int, n_kv_heads: int, head_dim: int,
                   bytes_per_element: int = 2) -> int:
    """K and V for every layer: 2 * n_layers * n_kv_heads * head_dim * n_ctx elements."""
    return 2 * n_layers * n_kv_heads * head_dim * n_ctx * bytes_per_element


def read_mem_available(meminfo_path: str | os.PathLike = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes, or None where /proc/meminfo is missing or has no such line."""
    try:
        text = Path(meminfo_path).read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def memory_guard(model_bytes: int, n_ctx: int, n_layers: int, n_kv_heads: int, head_dim: int,
                 scratch_bytes: int, budget_mb: int, mem_available_bytes: int | None = None, *,
                 kv_bytes_per_element: int = 2,
                 meminfo_path: str | os.PathLike = "/proc/meminfo") -> MemoryEstimate:
    """Refuse (MemoryBudgetError) a load whose model + KV cache at n_ctx + scratch exceeds the
    board's budget or the machine's MemAvailable (read from `meminfo_path` when not given).
    Returns the estimate when it fits."""
    for label, value in (("model_bytes", model_bytes), ("n_ctx", n_ctx), ("n_layers", n_layers),
                         ("n_kv_heads", n_kv_heads), ("head_dim", head_dim),
                         ("scratch_bytes", scratch_bytes), ("budget_mb", budget_mb),
                         ("kv_bytes_per_element", kv_bytes_per_element)):
        if type(value) is not int or value < 0:
            raise ValueError(f"memory_guard: {label} = {value!r}: expected an integer >= 0")
    if mem_available_bytes is None:
        mem_available_bytes = read_mem_available(meminfo_path)
    elif type(mem_available_bytes) is not int or mem_available_bytes < 0:
        raise ValueError(f"memory_guard: mem_available_bytes = {mem_available_bytes!r}: "
                         f"expected an integer >= 0 or None")

    estimate = MemoryEstimate(
        model_bytes=model_bytes,
        kv_cache_bytes=kv_cache_bytes(n_ctx, n_layers, n_kv_heads, head_dim, kv_bytes_per_element),
        scratch_bytes=scratch_bytes,
        budget_bytes=budget_mb * MIB,
        mem_available_bytes=mem_available_bytes,
    )
    limits = [("the memory budget", estimate.budget_bytes)]
    if mem_available_bytes is not None:
        limits.append(("MemAvailable", mem_available_bytes))
    exceeded = [f"{label} {_mib(limit)}" for label, limit in limits if estimate.total_bytes > limit]
    if exceeded:
        available = _mib(mem_available_bytes) if mem_available_bytes is not None else "unknown"
        raise MemoryBudgetError(
            f"refusing to load: model {_mib(model_bytes)} + KV cache "
            f"{_mib(estimate.kv_cache_bytes)} (n_ctx {n_ctx} x {n_layers} layers x {n_kv_heads} "
            f"KV heads x head_dim {head_dim} x 2 x {kv_bytes_per_element} bytes) + scratch "
            f"{_mib(scratch_bytes)} = {_mib(estimate.total_bytes)} exceeds "
            f"{' and '.join(exceeded)} (budget {budget_mb} MiB, MemAvailable {available}); "
            f"lower n_ctx, use a smaller model or a board with more RAM")
    return estimate
