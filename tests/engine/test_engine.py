"""The forward pass through the built extension: consistency across batch sizes, thread counts,
kernel variants and file-loading modes, and its error paths."""
import os
import threading

import numpy as np
import pytest

from edge_runtime.engine import _engine
from edge_runtime.errors import EdgeRuntimeError, ModelFormatError
from edge_runtime.model.model import ContextOverflowError, Model
from edge_runtime.formats.random_model import write_random_model

TOKENS = [5, 17, 300, 2, 2, 511, 0, 42, 99, 100, 101, 7, 3, 250, 128, 64, 1, 480, 33]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return write_random_model(str(d / "tiny-q8.gguf"), shape="tiny", head="q8_0", seed=3)


@pytest.fixture(scope="module")
def tiny_f16_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("models16")
    return write_random_model(str(d / "tiny-f16.gguf"), shape="tiny", head="f16", seed=4)


def logits_of(path, tokens, **kw):
    with Model(path, **kw) as m:
        return m.eval_logits(tokens)


@pytest.mark.parametrize("kernel", _engine.available_kernels())
def test_batch_sizes_and_threads_give_identical_logits(tiny_path, kernel):
    # a batch of 32 runs the GEMM kernel, a batch of 1 the GEMV: integer results must agree exactly,
    # and the row split across threads must not change any row's arithmetic
    ref = logits_of(tiny_path, TOKENS, n_ctx=64, n_batch=1, n_threads=1, kernel=kernel)
    assert np.isfinite(ref).all()
    for n_batch, n_threads in [(32, 1), (5, 2), (32, 2), (3, 3)]:
        got = logits_of(tiny_path, TOKENS, n_ctx=64, n_batch=n_batch, n_threads=n_threads, kernel=kernel)
        np.testing.assert_array_equal(got, ref, err_msg=f"n_batch={n_batch} n_threads={n_threads}")


def test_incremental_decode_matches_one_batch(tiny_f16_path):
    with Model(tiny_f16_path, n_ctx=64, n_threads=2) as m:
        full = m.eval_logits(TOKENS)
        m.eval_logits(TOKENS[:4])
        for i, t in enumerate(TOKENS[4:], start=4):
            step = m._engine.eval([t], i)
            np.testing.assert_array_equal(step, full[i])


def test_kernel_variants_agree(tiny_path, tiny_f16_path):
    for path in (tiny_path, tiny_f16_path):
        outs = {k: logits_of(path, TOKENS, n_ctx=64, kernel=k) for k in _engine.available_kernels()}
        ref = outs["scalar"]
        for k, v in outs.items():
            # ternary layers are bit-exact; only the head's float summation order may differ
            np.testing.assert_allclose(v, ref, rtol=0, atol=1e-4 * np.abs(ref).max(), err_msg=k)
            assert (v.argmax(-1) == ref.argmax(-1)).all()


def test_attention_versions_agree_bit_for_bit(tiny_f16_path):
    """The SIMD variants share the f16 head but not the attention (avx2: the f16c version, the AVX-512
    variants: the AVX-512 one), so with an f16 head their logits must be the same bits; 77 tokens
    cover the 8-position blocks of the scores and the exponential and their tails."""
    tokens = [int(t) for t in np.random.default_rng(1).integers(0, 200, 77)]
    outs = {k: logits_of(tiny_f16_path, tokens, n_ctx=128, kernel=k) for k in _engine.available_kernels()
            if k != "scalar"}
    first = next(iter(outs.values()))
    for k, v in outs.items():
        np.testing.assert_array_equal(v, first, err_msg=k)


def test_no_mmap_and_mlock_give_same_logits(tiny_path):
    ref = logits_of(tiny_path, TOKENS, n_ctx=64)
    np.testing.assert_array_equal(logits_of(tiny_path, TOKENS, n_ctx=64, use_mmap=False), ref)
    try:
        got = logits_of(tiny_path, TOKENS, n_ctx=64, use_mlock=True)
    except OSError as exc:  # a low RLIMIT_MEMLOCK is an environment fact, but the error must say so
        assert "mlock" in str(exc)
    else:
        np.testing.assert_array_equal(got, ref)


def test_forced_kernel_refused_with_clear_message(tiny_path, monkeypatch):
    unavailable = [k for k in ("scalar", "avx2", "avx512vnni", "amx", "neon", "neon_dot")
                   if k not in _engine.available_kernels()]
    assert unavailable, "this test expects at least one variant that cannot run here"
    with pytest.raises(EdgeRuntimeError, match=unavailable[0]):
        Model(tiny_path, kernel=unavailable[0])
    monkeypatch.setenv("EDGE_RUNTIME_KERNEL", "no-such-kernel")
    with pytest.raises(EdgeRuntimeError, match="unknown kernel variant"):
        Model(tiny_path)
    monkeypatch.setenv("EDGE_RUNTIME_KERNEL", "scalar")
    with Model(tiny_path) as m:
        assert m.kernel == "scalar"


def test_auto_kernel_is_the_best_this_cpu_runs(tiny_path):
    with Model(tiny_path) as m:
        assert m.kernel == _engine.best_kernel()
    if _engine.cpu_supports("amx"):
        assert _engine.best_kernel() == "amx"
    elif _engine.cpu_supports("avx512vnni"):
        assert _engine.best_kernel() == "avx512vnni"
    elif _engine.cpu_supports("avx2"):
        assert _engine.best_kernel() == "avx2"


def test_bad_token_and_position_are_errors_not_crashes(tiny_path):
    with Model(tiny_path, n_ctx=16) as m:
        with pytest.raises(ValueError, match="outside the vocabulary"):
            m._engine.eval([1, 512], 0)
        with pytest.raises(ValueError, match="outside the vocabulary"):
            m._engine.eval([-1], 0)
        with pytest.raises(ValueError, match="do not fit the context"):
            m._engine.eval([1, 2], 15)
        with pytest.raises(ContextOverflowError):
            m.eval_logits(list(range(17)))
        # the engine still works after the errors
        assert np.isfinite(m.eval_logits([1, 2, 3])).all()


def test_abort_stops_a_long_prompt(tiny_path):
    with Model(tiny_path, n_ctx=4096, n_batch=8, n_threads=1) as m:
        tokens = list(np.random.default_rng(0).integers(0, 512, size=4000))
        timer = threading.Timer(0.05, m._engine.abort)
        timer.start()
        with pytest.raises(InterruptedError):
            m._engine.eval(tokens, 0)
        timer.join()
        assert np.isfinite(m.eval_logits([1, 2, 3])).all()


def test_bad_arguments(tiny_path):
    for kw in (dict(n_ctx=0), dict(n_threads=0), dict(n_batch=-1)):
        with pytest.raises(ValueError):
            Model(tiny_path, **kw)
    with pytest.raises((ModelFormatError, OSError)):
        Model(os.path.join(os.path.dirname(tiny_path), "missing.gguf"))


def test_state_is_allocated_up_front_and_rss_stays_flat(tiny_path):
    from edge_runtime.engine.cpu import rss_bytes

    with Model(tiny_path, n_ctx=512, n_threads=2) as m:
        assert m.state_bytes > 2 * 2 * 512 * 128 * 2  # at least the KV cache (layers*2*ctx*kv_dim*2B)
        m.eval_logits(TOKENS)
        before = rss_bytes()
        for i in range(200):
            m._engine.eval([i % 512], len(TOKENS) + i)
        assert rss_bytes() - before < 4 * 2**20


def test_memory_guard_refuses_with_numbers(tiny_path):
    from edge_runtime.board.loading import guard, load_model
    from edge_runtime.board.memory import MemoryBudgetError

    with pytest.raises(MemoryBudgetError, match=r"KV cache .* exceeds the memory budget 1\.0 MiB"):
        load_model(tiny_path, n_ctx=4096, memory_budget_mb=1)
    with pytest.raises(MemoryBudgetError, match="MemAvailable"):
        load_model(tiny_path, n_ctx=1 << 30)  # a KV cache of terabytes: refused before any allocation
    with load_model(tiny_path, n_ctx=64, memory_budget_mb=64) as m:
        assert m.memory.total_bytes <= 64 * 2**20
        assert m.memory.kv_cache_bytes == 2 * m.config.n_layers * m.config.n_kv_heads * m.config.head_dim * 64 * 2
    # the guard is the caller's: a Model given one runs it, a Model given none allocates or fails cleanly
    with pytest.raises(MemoryBudgetError):
        Model(tiny_path, n_ctx=4096, memory_guard=guard(1))
    # a Model given none refuses what the engine cannot index before allocating anything
    with pytest.raises(ValueError, match=r"n_ctx must be an integer in 1\.\.16777216"):
        Model(tiny_path, n_ctx=1 << 30)


def test_model_imports_no_board_code():
    import subprocess
    import sys

    code = ("import sys, edge_runtime.model.model as m; "
            "print(sorted(k for k in sys.modules if k.startswith('edge_runtime.board')))")
    from conftest import subprocess_env

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=subprocess_env())
    assert out.stdout.strip() == "[]"
