"""1 GB and 512 MB boards: the board configs and the memory guard take 2B4T as the 1.6-bit file
(TQ1_S body + q4_0 head) on a 1 GB board at a context that fits, refuse the 2-bit files there, and
refuse every 2B4T file on a Zero 2 W with the board named. The 2B4T figures use Model.memory_need's
own arithmetic on the 2B4T config; the context fitting runs a real load."""
import dataclasses
import logging
import math
import types

import pytest
from conftest import tiny_tokenizer

from edge_runtime.board.device_config import find_config
from edge_runtime.board.loading import load_model
from edge_runtime.board.memory import MemoryBudgetError, kv_cache_bytes, memory_guard
from edge_runtime.formats.random_model import SHAPES, write_random_model
from edge_runtime.model.model import Model

MIB = 1024 ** 2
# what `convert --to tq1 --head q4_0` and `--head q8_0` write for 2B4T (README's model-file table)
TQ1_Q4_0_BYTES = 605_300_000
I2S_Q8_0_BYTES = 872_000_000
# MemAvailable of a 1 GB board running Raspberry Pi OS Lite (about 100 MB for the OS, 76 MB for the GPU)
MEM_AVAILABLE_1GB = 760 * MIB
MEM_AVAILABLE_512MB = 380 * MIB


def need_2b4t(file_bytes, n_ctx):
    s = SHAPES["2b4t"]
    config = types.SimpleNamespace(dim=s["dim"], ffn_dim=s["ffn_dim"], n_heads=s["n_heads"],
                                   n_kv_heads=s["n_kv_heads"], head_dim=s["dim"] // s["n_heads"],
                                   n_layers=s["n_layers"], n_vocab=s["n_vocab"])
    fake = types.SimpleNamespace(config=config, _mf=types.SimpleNamespace(file_size=file_bytes))
    return Model.memory_need(fake, n_ctx)


def guard(need, board, mem_available):
    return memory_guard(need.model_bytes, need.n_ctx, need.n_layers, need.n_kv_heads, need.head_dim,
                        need.scratch_bytes, board.memory_budget_mb, mem_available_bytes=mem_available)


def test_a_pi_3_takes_2b4t_tq1_q4_0_at_its_context_and_refuses_the_2_bit_file():
    pi3 = find_config("raspberry-pi-3")
    estimate = guard(need_2b4t(TQ1_Q4_0_BYTES, pi3.n_ctx), pi3, MEM_AVAILABLE_1GB)
    print(f"2B4T tq1+q4_0 at n_ctx {pi3.n_ctx}: {estimate.total_bytes / MIB:.1f} MiB "
          f"(budget {pi3.memory_budget_mb} MiB)")
    assert estimate.total_bytes < min(pi3.memory_budget_mb * MIB, MEM_AVAILABLE_1GB)
    with pytest.raises(MemoryBudgetError, match="exceeds the memory budget 800.0 MiB"):
        guard(need_2b4t(I2S_Q8_0_BYTES, pi3.n_ctx), pi3, MEM_AVAILABLE_1GB)


def test_a_pi_4_with_1_gb_fits_tq1_q4_0_only_below_the_configured_context():
    pi4 = find_config("raspberry-pi-4")
    with pytest.raises(MemoryBudgetError, match="exceeds MemAvailable 760.0 MiB"):
        guard(need_2b4t(TQ1_Q4_0_BYTES, pi4.n_ctx), pi4, MEM_AVAILABLE_1GB)
    assert guard(need_2b4t(TQ1_Q4_0_BYTES, pi4.n_ctx // 2), pi4, MEM_AVAILABLE_1GB).total_bytes < \
        MEM_AVAILABLE_1GB


@pytest.mark.parametrize("file_bytes", [TQ1_Q4_0_BYTES, I2S_Q8_0_BYTES])
def test_a_zero_2_w_refuses_every_2b4t_file_at_any_context(file_bytes):
    zero = find_config("raspberry-pi-zero-2-w")
    assert "too small for 2B4T" in zero.description
    for n_ctx in (256, 512, 2048):
        with pytest.raises(MemoryBudgetError, match="exceeds the memory budget 384.0 MiB"):
            guard(need_2b4t(file_bytes, n_ctx), zero, MEM_AVAILABLE_512MB)


@pytest.fixture(scope="module")
def kv_heavy_model(tmp_path_factory):
    """A small file whose KV cache is 4 KiB a token, so contexts differ by whole MiB."""
    path = tmp_path_factory.mktemp("fit") / "kv.gguf"
    return write_random_model(str(path), shape="tiny", tokenizer=tiny_tokenizer(), seed=5, dim=512,
                              n_layers=8, n_heads=8, n_kv_heads=2, ffn_dim=1024)


def budget_between(path, fits, refused):
    """A budget (MiB) that holds the load at n_ctx `fits` but not at `refused`."""
    with Model(path, n_ctx=64, n_threads=1) as probe:
        low, high = (probe.memory_need(n) for n in (fits, refused))
    total = [n.model_bytes + n.scratch_bytes + kv_cache_bytes(n.n_ctx, n.n_layers, n.n_kv_heads, n.head_dim)
             for n in (low, high)]
    mib = math.ceil(total[0] / MIB)
    assert total[1] > mib * MIB, "the test model's contexts are too close in size"
    return mib


def test_a_board_context_that_does_not_fit_is_halved_until_it_does(kv_heavy_model, caplog):
    budget = budget_between(kv_heavy_model, 1024, 2048)
    board = dataclasses.replace(find_config("raspberry-pi-4"), n_ctx=4096, memory_budget_mb=budget,
                                cpu_affinity=())
    with caplog.at_level(logging.WARNING, logger="edge_runtime.board"):
        with load_model(kv_heavy_model, board=board, n_threads=1) as model:
            assert model.n_ctx == 1024
            assert model.create_completion("hello", max_tokens=3, temperature=0)["choices"][0]["text"] \
                is not None
    fitted = [r.getMessage() for r in caplog.records if "does not fit" in r.getMessage()]
    assert len(fitted) == 2 and "n_ctx 4096" in fitted[0] and "trying 1024" in fitted[1], fitted


def test_a_context_the_caller_gave_is_kept_and_the_refusal_names_the_board(kv_heavy_model):
    budget = budget_between(kv_heavy_model, 1024, 2048)
    board = dataclasses.replace(find_config("raspberry-pi-4"), memory_budget_mb=budget, cpu_affinity=())
    with pytest.raises(MemoryBudgetError) as raised:
        load_model(kv_heavy_model, board=board, n_threads=1, n_ctx=2048)
    assert str(raised.value).startswith("raspberry-pi-4 (Raspberry Pi 4:")
    assert "n_ctx 2048" in str(raised.value)


def test_when_no_context_fits_the_refusal_says_how_far_it_went(kv_heavy_model):
    with Model(kv_heavy_model, n_ctx=64, n_threads=1) as probe:
        too_small = probe.memory_need(64).model_bytes // MIB  # not even the file fits
    board = dataclasses.replace(find_config("raspberry-pi-zero-2-w"), memory_budget_mb=int(too_small),
                                cpu_affinity=())
    with pytest.raises(MemoryBudgetError) as raised:
        load_model(kv_heavy_model, board=board, n_threads=1)
    message = str(raised.value)
    assert message.startswith("raspberry-pi-zero-2-w (Raspberry Pi Zero 2 W: 4x Cortex-A53, 512 MB; too small")
    assert "n_ctx 512, not given, was halved down to 256: no context fits" in message
