"""The multi-slot prompt cache: greedy text with it (cold, warm, alternating two system prompts,
after a restart from its directory) is identical to uncached single requests on every kernel
variant; snapshots are written atomically, bounded by the budget, and a corrupt, truncated or
foreign one is ignored with a log line."""
import logging
import os

import numpy as np
import pytest

from edge_runtime.engine import _engine
from edge_runtime.model.model import Model
from edge_runtime.model.prompt_cache import SUFFIX, PromptCache

SYSTEM_A = ("You are the house assistant. Devices: kitchen light, landing light, hall fan, garage door, "
            "bedroom blinds, porch lock, living room thermostat, office lamp. Answer briefly.")
SYSTEM_B = ("You answer questions about the garden. Sensors: soil moisture north bed, soil moisture south "
            "bed, rain gauge, pond pump, greenhouse heater, compost thermometer. Be precise.")
QUESTIONS = ["turn on the kitchen light", "is it raining", "close the blinds", "how warm is it",
             "lock the porch"]


def chat(system, question):
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def greedy(model, messages):
    out = model.create_chat_completion(messages, max_tokens=12, temperature=0.0)
    return out["choices"][0]["message"]["content"], out["timings"]["prompt_tokens_evaluated"], \
        out["usage"]["prompt_tokens"]


def reference_texts(path, kernel, conversations):
    """Each conversation as an uncached single request."""
    with Model(path, n_ctx=512, n_threads=1, kernel=kernel) as m:
        texts = []
        for messages in conversations:
            m.reset()
            texts.append(greedy(m, messages)[0])
        return texts


CONVERSATIONS = [chat(SYSTEM_A, QUESTIONS[0]), chat(SYSTEM_B, QUESTIONS[1]), chat(SYSTEM_A, QUESTIONS[2]),
                 chat(SYSTEM_B, QUESTIONS[3]), chat(SYSTEM_A, QUESTIONS[4])]


@pytest.mark.parametrize("kernel", _engine.available_kernels())
def test_cached_text_is_identical_cold_warm_alternating_and_after_restart(tiny_chat_model_path, tmp_path,
                                                                          kernel):
    expected = reference_texts(tiny_chat_model_path, kernel, CONVERSATIONS)
    cache_dir = tmp_path / "cache"
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=2, kernel=kernel, prompt_cache=cache_dir) as m:
        got = [greedy(m, c) for c in CONVERSATIONS]
        assert [g[0] for g in got] == expected
        # cold: everything evaluated (B shares only the chat header with A); from the third request
        # (system A again, after B) on, warm
        assert got[0][1] == got[0][2] and got[1][1] > got[1][2] - 20
        for text, evaluated, total in got[2:]:
            assert evaluated < total // 2, (evaluated, total)
        assert len(m.prompt_cache) == 2 and m.prompt_cache.used_bytes <= m.cache_bytes
        m.prompt_cache.flush()
    assert len(list(cache_dir.glob("*" + SUFFIX))) == 2
    assert not [p for p in cache_dir.iterdir() if ".tmp." in p.name]
    # a restart with the same directory: the first request is warm and the text unchanged
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=1, kernel=kernel, prompt_cache=cache_dir) as m:
        text, evaluated, total = greedy(m, CONVERSATIONS[3])
        assert text == expected[3]
        assert evaluated < total // 2
        text, evaluated, total = greedy(m, CONVERSATIONS[4])
        assert text == expected[4] and evaluated < total // 2


def test_a_restart_reads_the_snapshots_in_before_the_first_request(tiny_chat_model_path, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    _fill(tiny_chat_model_path, cache_dir, CONVERSATIONS[:2])
    files = sorted(cache_dir.glob("*" + SUFFIX))
    assert len(files) == 2
    damaged = files[0]
    raw = bytearray(damaged.read_bytes())
    raw[-1] ^= 0xFF  # the last data byte: only the data CRC can tell
    damaged.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="edge_runtime.model.prompt_cache"):
        with Model(tiny_chat_model_path, n_ctx=512, n_threads=1, prompt_cache=cache_dir) as m:
            assert m.prompt_cache.preloaded.wait(30)
            entries = list(m.prompt_cache._entries.values())
            assert len(entries) == 1 and entries[0].k is not None  # in memory before any request
            assert not damaged.exists()
    assert any("CRC mismatch" in r.getMessage() and damaged.name in r.getMessage() for r in caplog.records)


def test_the_preload_gives_way_to_a_request_and_never_blocks_it(tiny_chat_model_path, tmp_path):
    """While a request runs its prompt (demand) the preload waits; a request for a snapshot the preload
    has not read (or is reading) reads it itself, and the preload finishes once requests are done."""
    cache_dir = tmp_path / "cache"
    _fill(tiny_chat_model_path, cache_dir, CONVERSATIONS[:2])
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=1, prompt_cache=cache_dir) as m:
        cache = m.prompt_cache
        entries = list(cache._entries.values())
        with cache.demand():
            for e in entries:   # each read by this thread, whatever the preload is doing
                n, k, v = cache.lookup(e.tokens)
                assert n == len(e.tokens) and k is not None
        assert cache.preloaded.wait(30)
        assert all(e.k is not None for e in cache._entries.values())
        assert greedy(m, CONVERSATIONS[0])[0] == reference_texts(tiny_chat_model_path, "auto", CONVERSATIONS[:1])[0]


def _fill(path, cache_dir, conversations, **kw):
    with Model(path, n_ctx=512, n_threads=1, prompt_cache=cache_dir, **kw) as m:
        for c in conversations:
            greedy(m, c)
        m.prompt_cache.flush()


@pytest.mark.parametrize("damage", ["flip_data", "truncate", "flip_header", "zero_length"])
def test_a_damaged_snapshot_is_ignored_with_a_log_line(tiny_chat_model_path, tmp_path, caplog, damage):
    cache_dir = tmp_path / "cache"
    _fill(tiny_chat_model_path, cache_dir, CONVERSATIONS[:1])
    (snap,) = cache_dir.glob("*" + SUFFIX)
    data = bytearray(snap.read_bytes())
    if damage == "flip_data":
        data[-100] ^= 0x40
    elif damage == "truncate":
        data = data[:len(data) - 4096]
    elif damage == "flip_header":
        data[40] ^= 0x01
    else:
        data = b""
    snap.write_bytes(bytes(data))
    expected = reference_texts(tiny_chat_model_path, None, CONVERSATIONS[2:3])[0]
    with caplog.at_level(logging.WARNING, logger="edge_runtime.model.prompt_cache"):
        with Model(tiny_chat_model_path, n_ctx=512, n_threads=1, prompt_cache=cache_dir) as m:
            text, evaluated, total = greedy(m, CONVERSATIONS[2])
    assert text == expected
    assert evaluated == total  # nothing of the damaged snapshot was used
    assert any("ignoring" in r.getMessage() and snap.name in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]


def test_a_foreign_snapshot_is_ignored_and_kept(tiny_chat_model_path, tmp_path, caplog):
    from conftest import write_tiny_chat_model

    other = write_tiny_chat_model(tmp_path / "other.gguf", seed=5)
    cache_dir = tmp_path / "cache"
    _fill(other, cache_dir, CONVERSATIONS[:1])
    (foreign,) = cache_dir.glob("*" + SUFFIX)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.model.prompt_cache"):
        with Model(tiny_chat_model_path, n_ctx=512, n_threads=1, prompt_cache=cache_dir) as m:
            text, evaluated, total = greedy(m, CONVERSATIONS[2])
            m.prompt_cache.flush()
    assert evaluated == total
    assert any("foreign" in r.getMessage() for r in caplog.records)
    assert foreign.exists()  # another model's snapshot is not ours to delete
    assert len(list(cache_dir.glob("*" + SUFFIX))) == 2


def test_a_snapshot_of_a_rewritten_model_file_is_foreign(tmp_path, caplog):
    from conftest import write_tiny_chat_model

    path = write_tiny_chat_model(tmp_path / "m.gguf", seed=1)
    cache_dir = tmp_path / "cache"
    _fill(path, cache_dir, CONVERSATIONS[:1])
    write_tiny_chat_model(tmp_path / "m.gguf", seed=2)  # same name and size, other weights
    os.utime(path, ns=(1, 1))
    with caplog.at_level(logging.WARNING, logger="edge_runtime.model.prompt_cache"):
        with Model(path, n_ctx=512, n_threads=1, prompt_cache=cache_dir) as m:
            _, evaluated, total = greedy(m, CONVERSATIONS[2])
    assert evaluated == total
    assert any("foreign" in r.getMessage() for r in caplog.records)


def test_budget_evicts_least_recently_used_and_its_file(tiny_chat_model_path, tmp_path):
    cache_dir = tmp_path / "cache"
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=1, prompt_cache=cache_dir) as m:
        greedy(m, CONVERSATIONS[0])
        one = m.prompt_cache.used_bytes
    budget_mb = 1.5 * one / 2**20  # room for one snapshot, not two
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=1, prompt_cache=cache_dir, cache_mb=budget_mb) as m:
        assert len(m.prompt_cache) == 1
        greedy(m, CONVERSATIONS[1])  # system B evicts A
        assert len(m.prompt_cache) == 1 and m.prompt_cache.used_bytes <= m.cache_bytes
        m.prompt_cache.flush()
        assert len(list(cache_dir.glob("*" + SUFFIX))) == 1
        _, evaluated, total = greedy(m, CONVERSATIONS[2])
        assert evaluated > total - 20  # A was evicted: only the chat header is shared with B
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=1, prompt_cache=True) as m:  # memory only
        greedy(m, CONVERSATIONS[0])
        greedy(m, CONVERSATIONS[1])
        _, evaluated, total = greedy(m, CONVERSATIONS[2])
        assert evaluated < total // 2 and m.prompt_cache.directory is None


def test_stale_temporary_files_are_removed_and_others_left(tiny_chat_model_path, tmp_path):
    cache_dir = tmp_path / "cache"
    _fill(tiny_chat_model_path, cache_dir, CONVERSATIONS[:1])
    (snap,) = cache_dir.glob("*" + SUFFIX)
    stale = cache_dir / f"{snap.name}.tmp.999999999.1"
    stale.write_bytes(b"partial")
    unrelated = cache_dir / "notes.txt"
    unrelated.write_text("kept")
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=1, prompt_cache=cache_dir):
        pass
    assert not stale.exists() and unrelated.exists() and snap.exists()


def test_lookup_is_longest_prefix_and_store_drops_prefixes():
    c = PromptCache(n_layers=2, kv_dim=4, budget_bytes=1 << 20, min_tokens=2)
    rows = lambda n, fill: (np.full((2, n, 4), fill, np.uint16), np.full((2, n, 4), fill + 1, np.uint16))  # noqa
    assert c.store([1, 2, 3], *rows(3, 10))
    assert c.store([1, 2, 9, 9, 9], *rows(5, 20))
    n, k, _ = c.lookup([1, 2, 9, 9, 4])
    assert n == 4 and k[0, 0, 0] == 20
    n, k, _ = c.lookup([1, 2, 3, 7])
    assert n == 3 and k[0, 0, 0] == 10
    assert c.lookup([5])[0] == 0
    assert c.store([1, 2, 3, 4, 5, 6], *rows(6, 30))  # [1, 2, 3] is a prefix of it: dropped
    assert len(c) == 2
    assert not c.wants([1, 2, 3, 4, 5, 6, 7])  # one new token: below min_tokens
    with pytest.raises(ValueError, match="expected"):
        c.store([1, 2], *rows(3, 0))


def test_engine_kv_rows_round_trip_and_errors(tiny_chat_model_path):
    tokens = list(range(1, 40))
    with Model(tiny_chat_model_path, n_ctx=64, n_threads=1, slots=2) as m:
        eng = m._engine
        full = eng.eval(tokens, 0, seq=0)
        k, v = eng.kv_read(0, len(tokens))
        eng.kv_write(1, k, v, 30)  # a prefix of the rows into the other sequence
        np.testing.assert_array_equal(eng.eval(tokens[30:], 30, seq=1), full)
        with pytest.raises(ValueError, match="sequence 2"):
            eng.kv_read(2, 4)
        with pytest.raises(ValueError, match="rows asked"):
            eng.kv_write(0, k, v, 60)
        with pytest.raises(ValueError, match="must both be"):
            eng.kv_write(0, k[:1], v[:1])
