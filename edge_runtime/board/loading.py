"""The one model factory: a Model loaded the way a board runs it.

Command-line values first, then the board config (threads, n_ctx, CPU affinity, mmap/mlock,
memory budget, prompt-cache budget), then defaults; the memory guard (edge_runtime.board.memory) runs before the
engine allocates anything. The CLI, every `serve` transport and the assistant load through here.
"""
from __future__ import annotations

import logging

from edge_runtime.board.device_config import DeviceConfig, apply_affinity, effective_threads
from edge_runtime.board.memory import MemoryBudgetError, memory_guard

log = logging.getLogger("edge_runtime.board")

DEFAULT_N_CTX = 2048
# An n_ctx the caller did not give (the board's or the default) is halved down to this while the load
# does not fit: a 1 GB board runs a big model at a shorter context instead of refusing it.
MIN_FITTED_N_CTX = 256
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
               kernel: str | None = None, seed: int | None = None, memory_budget_mb: int | None = None,
               prompt_cache=None, cache_mb: float | None = None, slots: int = 1):
    """Open `path` (the package's default model when None) as a Model. With `board`, pin to its
    CPUs and take its threads, n_ctx, mmap/mlock, memory budget and prompt-cache budget
    (prompt_cache_mb) where the caller gave none. `prompt_cache` (a directory) and `slots`: see Model.
    An n_ctx the caller did not give is halved while the load does not fit (MIN_FITTED_N_CTX at
    least); a given one is kept, and a load that does not fit raises MemoryBudgetError naming the board."""
    from edge_runtime.model.model import Model, default_model_path

    if path is None:
        path = default_model_path()
        if path is None:
            raise ValueError("give -m MODEL (this build ships no default model)")
    budget_mb = memory_budget_mb
    ctx_given = n_ctx is not None
    if board is not None:
        apply_affinity(board.cpu_affinity)
        n_threads = n_threads or effective_threads(board)
        n_ctx = n_ctx or board.n_ctx
        use_mmap = use_mmap and board.use_mmap
        use_mlock = use_mlock or board.use_mlock
        budget_mb = budget_mb if budget_mb is not None else board.memory_budget_mb
        cache_mb = cache_mb if cache_mb is not None else board.prompt_cache_mb
    first_ctx = n_ctx = n_ctx or DEFAULT_N_CTX
    while True:
        try:
            return Model(path, n_threads=n_threads, n_ctx=n_ctx, use_mmap=use_mmap, use_mlock=use_mlock,
                         kernel=kernel, seed=seed, memory_guard=guard(budget_mb), prompt_cache=prompt_cache,
                         cache_mb=cache_mb, slots=slots)
        except MemoryBudgetError as exc:
            where = f"{board.name} ({board.description}): " if board is not None else ""
            if ctx_given:
                raise MemoryBudgetError(f"{where}{exc}") from None
            if n_ctx // 2 < max(MIN_FITTED_N_CTX, slots):
                raise MemoryBudgetError(f"{where}{exc} (n_ctx {first_ctx}, not given, was halved down to "
                                        f"{n_ctx}: no context fits)") from None
            log.warning("n_ctx %d does not fit the memory (%s); trying %d", n_ctx, exc, n_ctx // 2)
            n_ctx //= 2
