"""_engine.Engine fed bogus tables (config values, tensor offsets, types, shapes, scales, missing
entries, context sizes) raises, never crashes. Hypothesis drives the mutations in a child process,
so a segfault fails this test naming the last input instead of killing pytest."""
import json
import subprocess
import sys

import pytest
from conftest import subprocess_env

from edge_runtime.formats.random_model import write_random_model

pytest.importorskip("hypothesis")

FUZZ = r"""
import json, math, sys
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
from edge_runtime.engine import _engine
from edge_runtime.model.model import Model

path, n_examples = sys.argv[1], int(sys.argv[2])
model = Model(path, n_ctx=64, n_threads=1)
BUFFER = bytes(model._buffer)
CONFIG = dict(n_vocab=model.config.n_vocab, dim=model.config.dim, n_layers=model.config.n_layers,
              n_heads=model.config.n_heads, n_kv_heads=model.config.n_kv_heads, head_dim=model.config.head_dim,
              ffn_dim=model.config.ffn_dim, rope_theta=500000.0, norm_eps=1e-5)
TENSORS = {}
for name, info in model._mf.reader.tensors.items():
    rows = int(info.shape[0]) if len(info.shape) > 1 else 1
    scale = model._mf.i2s_scale(name) if info.ggml_type == _engine.GGML_TYPE_I2_S else None
    TENSORS[name] = (int(info.offset), int(info.ggml_type), rows, int(info.shape[-1]), scale)
model.close()
NAMES = sorted(TENSORS)
SIZE = len(BUFFER)

def near(v):
    return st.sampled_from([v - 1, v + 1, v * 2, v // 2, -v, 0, 2**31 - 1, 2**31, 2**24, 2**24 + 1, 2**63])

ints = st.one_of(st.integers(-2**40, 2**40), st.sampled_from([-1, 0, 1, 2, 3, 31, 32, 33, 127, 128, 129]))
values = st.one_of(ints, st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e39, None, "x", True, 2.5]))
offsets = st.one_of(st.integers(-2**20, SIZE + 2**20), st.sampled_from([SIZE - 1, SIZE, SIZE - 4, 2**62, -1]))
types = st.sampled_from([0, 1, 2, 8, 36, 3, 7, 35, 37, 2**31 - 1, -1])

@st.composite
def mutation(draw):
    kind = draw(st.sampled_from(["config", "config_near", "offset", "type", "rows", "cols", "scale", "drop",
                                 "entry", "ctx", "buffer", "several"]))
    return kind, draw(st.data())

def mutate(draw_data, kind, config, tensors, args, buffer):
    d = draw_data
    if kind == "several":
        for _ in range(d.draw(st.integers(2, 5))):
            k = d.draw(st.sampled_from(["config_near", "offset", "type", "rows", "cols", "scale"]))
            buffer = mutate(d, k, config, tensors, args, buffer)
        return buffer
    if kind in ("config", "config_near"):
        key = d.draw(st.sampled_from(sorted(CONFIG)))
        config[key] = d.draw(values if kind == "config" else near(int(CONFIG[key])))
    elif kind == "ctx":
        key = d.draw(st.sampled_from(["n_ctx", "n_batch", "n_threads"]))
        # no huge valid sizes: those are real allocations, not bad tables
        args[key] = d.draw(st.sampled_from([-5, 0, 1, 2, 2**24 + 1, 2**31, 2**40, None, 1.5]))
    elif kind == "buffer":
        buffer = buffer[: d.draw(st.integers(0, len(buffer)))]
    else:
        name = d.draw(st.sampled_from(NAMES))
        if kind == "drop":
            tensors.pop(name)
        elif kind == "entry":
            tensors[name] = d.draw(st.sampled_from([None, (), (1, 2), "x", (0, 0, 0, 0, 0, 0)]))
        else:
            entry = list(tensors[name])
            i = {"offset": 0, "type": 1, "rows": 2, "cols": 3, "scale": 4}[kind]
            entry[i] = d.draw({"offset": offsets, "type": types, "rows": near(entry[2]) | ints,
                               "cols": near(entry[3]) | ints, "scale": values}[kind])
            tensors[name] = tuple(entry)
    return buffer

outcomes = {}

@settings(max_examples=n_examples, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(mutation())
def fuzz(m):
    kind, data = m
    config, tensors, args = dict(CONFIG), dict(TENSORS), {"n_ctx": 64, "n_batch": 8, "n_threads": 1}
    buffer = mutate(data, kind, config, tensors, args, BUFFER)
    print(json.dumps({"try": kind, "config": repr(config), "args": repr(args), "size": len(buffer),
                      "tensors": repr({k: v for k, v in tensors.items() if TENSORS.get(k) != v})}), flush=True)
    try:
        eng = _engine.Engine(buffer, config, tensors, args["n_ctx"], args["n_batch"], args["n_threads"])
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:
        outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
        return
    outcomes["created"] = outcomes.get("created", 0) + 1
    for tokens, pos in (([0, 1, 2], 0), ([config["n_vocab"]], 0), ([1], 2**31 - 2), ([1, 2], eng.n_ctx - 1)):
        try:
            eng.eval(tokens, pos)
        except (ValueError, OverflowError):
            pass
    eng.close()

fuzz()
print(json.dumps({"outcomes": outcomes}), flush=True)
"""


@pytest.fixture(scope="module")
def fuzz_model(tmp_path_factory):
    return write_random_model(str(tmp_path_factory.mktemp("fuzz") / "fuzz.gguf"), shape="tiny", head="f16")


def test_bogus_tensor_tables_raise_and_never_crash(fuzz_model):
    proc = subprocess.run([sys.executable, "-c", FUZZ, str(fuzz_model), "1500"], env=subprocess_env(),
                          capture_output=True, text=True, timeout=900)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, (f"the engine crashed (exit {proc.returncode}) on:\n{lines[-1] if lines else ''}"
                                  f"\n{proc.stderr[-2000:]}")
    outcomes = json.loads(lines[-1])["outcomes"]
    print(f"engine fuzz, 1500 tables: {outcomes}")
    assert sum(outcomes.values()) == 1500
    assert outcomes.get("ValueError", 0) > 1000  # most mutations are refused, by the checks, with ValueError
    assert outcomes.get("created", 0) > 0        # and harmless ones (a scale, a padding offset) still build


@pytest.mark.parametrize("name, field, value, message", [
    ("token_embd.weight", 0, "end", "token_embd: .* do not fit"),
    ("blk.1.ffn_down.weight", 0, "end", "layer 1 ffn_down: .* do not fit"),
    ("output_norm.weight", 0, "end", "output_norm: .* do not fit"),
    ("blk.0.attn_norm.weight", 0, 1, "layer 0 attn_norm: offset .* is not a multiple of 4"),
    ("token_embd.weight", 1, 0, "token_embd: .* do not fit"),   # F16 bytes read as F32: twice the size
])
def test_a_tensor_outside_the_buffer_is_refused_naming_it(fuzz_model, name, field, value, message):
    from edge_runtime.engine import _engine
    from edge_runtime.model.model import Model

    model = Model(fuzz_model, n_ctx=64, n_threads=1)
    buffer = bytes(model._buffer)
    c = model.config
    config = dict(n_vocab=c.n_vocab, dim=c.dim, n_layers=c.n_layers, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads,
                  head_dim=c.head_dim, ffn_dim=c.ffn_dim, rope_theta=5e5, norm_eps=1e-5)
    tensors = {}
    for n, info in model._mf.reader.tensors.items():
        rows = int(info.shape[0]) if len(info.shape) > 1 else 1
        scale = model._mf.i2s_scale(n) if info.ggml_type == _engine.GGML_TYPE_I2_S else None
        tensors[n] = [int(info.offset), int(info.ggml_type), rows, int(info.shape[-1]), scale]
    model.close()
    entry = tensors[name]
    entry[field] = len(buffer) - 64 if value == "end" else (entry[field] + value if field == 0 else value)
    tensors = {k: tuple(v) for k, v in tensors.items()}
    with pytest.raises(ValueError, match=message):
        _engine.Engine(buffer, config, tensors, 64, 8, 1)
