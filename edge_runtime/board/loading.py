"""The one model factory: a Model loaded the way a board runs it.

Command-line values first, then the board config (threads, n_ctx, CPU affinity, mmap/mlock,
memory budget), then defaults; the memory guard (edge_runtime.board.memory) runs before the
engine allocates anything. The CLI, every `serve` transport and the assistant load through here.
"""
from __future__ import annotations

from edge_runtime.board.device_config import DeviceConfig, apply_affinity, effective_threads
from edge_runtime.board.memory import memory_guard

DEFAULT_N_CTX = 2048
UNBOUNDED_BUDGET_MB = 1 << 30  # no board budget: only the machine's MemAvailable limits the load


def guard(budget_mb: int | None = None):
    """A Model(memory_guard=...) callable: refuses (MemoryBudgetError) a load whose needs exceed
    `budget_mb` MiB or the machine's MemAvailable; returns the MemoryEstimate otherwise."""
    budget = UNBOUNDED_BUDGET_MB if budget_mb is None else int(budget_mb)

    def check(need):
        return memory_guard(need.model_bytes, need.n_ctx, need.n_layers, need.n_kv_heads, need.head_dim,
                            need.scratch_bytes, budget)

    return check


def load_model(path=None, *, board: DeviceConfig | None = None, n_threads: int | None = None,
               n_ctx: int | None = None, use_mmap: bool = True, use_mlock: bool = False,
               kernel: str | None = None, seed: int | None = None, memory_budget_mb: int | None = None):
    """Open `path` (the package's default model when None) as a Model. With `board`, pin to its
    CPUs and take its threads, n_ctx, mmap/mlock and memory budget where the caller gave none."""
    from edge_runtime.model.model import Model, default_model_path

    if path is None:
        path = default_model_path()
        if path is None:
            raise ValueError("give -m MODEL (this build ships no default model)")
    budget_mb = memory_budget_mb
    if board is not None:
        apply_affinity(board.cpu_affinity)
        n_threads = n_threads or effective_threads(board)
        n_ctx = n_ctx or board.n_ctx
        use_mmap = use_mmap and board.use_mmap
        use_mlock = use_mlock or board.use_mlock
        budget_mb = budget_mb if budget_mb is not None else board.memory_budget_mb
    return Model(path, n_threads=n_threads, n_ctx=n_ctx or DEFAULT_N_CTX, use_mmap=use_mmap,
                 use_mlock=use_mlock, kernel=kernel, seed=seed, memory_guard=guard(budget_mb))
