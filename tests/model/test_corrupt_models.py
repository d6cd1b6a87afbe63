"""The corrupted-model battery: copies of the packaged model with one defect each (truncated,
header bytes flipped, metadata values out of range, tensor shapes/types/offsets wrong, NaN or
infinite weights, random flips in the metadata) go through Model() and a generation in a child
process, so a crash is a test failure naming the file, not a dead pytest.

Every deliberate defect must be a ModelFormatError at load. A random flip may also leave a file
that is still valid (a flipped letter inside a token): that one must then generate.
"""
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import subprocess_env

from edge_runtime.formats.gguf import GGMLType, GGUFReader
from edge_runtime.model.model import default_model_path

WORKER = r"""
import json, sys
from edge_runtime.errors import ModelFormatError
from edge_runtime.model.model import Model
for path in sys.argv[1:]:
    print(json.dumps({"start": path}), flush=True)
    try:
        model = Model(path, n_ctx=64, n_threads=1)
    except ModelFormatError as exc:
        out = {"load": "ModelFormatError", "message": str(exc)}
    except BaseException as exc:
        out = {"load": type(exc).__name__, "message": str(exc)}
    else:
        out = {"load": "ok"}
        try:
            model.create_chat_completion([{"role": "user", "content": "turn on the light"}], max_tokens=3,
                                         temperature=0)
            out["generate"] = "ok"
        except BaseException as exc:
            out["generate"] = type(exc).__name__
            out["mro"] = [c.__name__ for c in type(exc).__mro__]
            out["message"] = str(exc)
        model.close()
    print(json.dumps({"path": path, **out}), flush=True)
"""


def run_worker(paths, timeout=600):
    """{path: outcome}; a child that dies names the file it was on."""
    proc = subprocess.run([sys.executable, "-c", WORKER, *map(str, paths)], env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)
    outcomes, current = {}, None
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        if "start" in rec:
            current = rec["start"]
        else:
            outcomes[rec.pop("path")] = rec
            current = None
    assert proc.returncode == 0 and current is None, (
        f"the worker died (exit {proc.returncode}) on {current}:\n{proc.stderr[-3000:]}")
    return outcomes


# ---------------------------------------------------------------------------------------------
# Where things are in the packaged model

SOURCE = default_model_path()


@pytest.fixture(scope="module")
def original():
    with open(SOURCE, "rb") as f:
        data = f.read()
    reader = GGUFReader(SOURCE)
    tensors = {name: (info.ggml_type, info.shape, info.offset, info.n_elements)
               for name, info in reader.tensors.items()}
    layout = {"data_offset": reader.data_offset, "tensors": tensors}
    reader.close()
    return data, layout


def value_at(data, key):
    """Offset of the value of a metadata key (after its u32 type) and the type."""
    raw = key.encode()
    at = data.find(struct.pack("<Q", len(raw)) + raw)
    assert at > 0, key
    at += 8 + len(raw)
    return at + 4, struct.unpack_from("<I", data, at)[0]


def tensor_info_at(data, name):
    """Offset of a tensor's n_dims field in the tensor-info table."""
    raw = name.encode()
    at = data.rfind(struct.pack("<Q", len(raw)) + raw)
    assert at > 0, name
    return at + 8 + len(raw)


def set_u32(data, key, value):
    at, vtype = value_at(data, key)
    assert vtype == 4, (key, vtype)
    struct.pack_into("<I", data, at, value)


def set_f32(data, key, value):
    at, vtype = value_at(data, key)
    assert vtype == 6, (key, vtype)
    struct.pack_into("<f", data, at, value)


def set_string_same_length(data, key, value):
    at, vtype = value_at(data, key)
    assert vtype == 8
    n = struct.unpack_from("<Q", data, at)[0]
    assert len(value.encode()) == n, (key, value)
    data[at + 8:at + 8 + n] = value.encode()


def set_token_type(data, index, value):
    at, vtype = value_at(data, "tokenizer.ggml.token_type")
    assert vtype == 9 and struct.unpack_from("<I", data, at)[0] == 5  # array of int32
    struct.pack_into("<i", data, at + 4 + 8 + 4 * index, value)


def set_array_count(data, key, delta):
    at, _ = value_at(data, key)
    count = struct.unpack_from("<Q", data, at + 4)[0]
    struct.pack_into("<Q", data, at + 4, count + delta)


def set_tensor_field(data, name, field, value):
    at = tensor_info_at(data, name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    if field == "n_dims":
        struct.pack_into("<I", data, at, value)
        return
    if field.startswith("dim"):
        struct.pack_into("<Q", data, at + 4 + 8 * int(field[3:]), value)
        return
    type_at = at + 4 + 8 * n_dims
    if field == "type":
        struct.pack_into("<I", data, type_at, value)
    else:  # a change of the offset relative to the data section
        old = struct.unpack_from("<Q", data, type_at + 4)[0]
        struct.pack_into("<Q", data, type_at + 4, value(old))


def set_weight(data, layout, name, index, value, dtype="<f4"):
    _, _, offset, _ = layout["tensors"][name]
    struct.pack_into(dtype[0] + {"<f4": "f", "<f2": "e"}[dtype], data, offset + index * int(dtype[-1]), value)


def set_i2s_scale(data, layout, name, value):
    _, _, offset, n = layout["tensors"][name]
    struct.pack_into("<f", data, offset + n // 4, value)


# ---------------------------------------------------------------------------------------------
# The deliberate defects: each must be refused at load

def deliberate_cases(data, layout):
    size, data_offset = len(data), layout["data_offset"]
    tensors = layout["tensors"]
    cases = {}

    def case(name, mutate):
        buf = bytearray(data)
        out = mutate(buf)
        cases[name] = bytes(out if isinstance(out, bytearray) else buf)

    cuts = sorted({0, 3, 4, 7, 8, 15, 16, 23, 24, 40, 100, 1000, 10_000, 50_000, 100_000, data_offset - 1,
                   data_offset, data_offset + 1, tensors["output_norm.weight"][2] + 512,
                   tensors["blk.3.attn_q.weight"][2] + 100, size // 2, size - 1000, size - 33, size - 1})
    for cut in cuts:
        case(f"truncated at {cut}", lambda b, cut=cut: b[:cut])
    for i in range(24):  # magic, version, tensor count, metadata count
        case(f"header byte {i} flipped", lambda b, i=i: b.__setitem__(i, b[i] ^ 0xFF))
    for version in (1, 4):  # 2 has version 3's layout and is read
        case(f"header version {version}", lambda b, v=version: struct.pack_into("<I", b, 4, v))

    for key in ("bos", "eos", "eot"):
        for value in (4096, 5000, 0xFFFFFFFF):
            case(f"{key} id {value}", lambda b, k=key, v=value: set_u32(b, f"tokenizer.ggml.{k}_token_id", v))
    case("pre-tokenizer unknown", lambda b: set_string_same_length(b, "tokenizer.ggml.pre", "gpt99-bpe"))
    case("tokenizer model unknown", lambda b: set_string_same_length(b, "tokenizer.ggml.model", "spm2"))
    case("architecture unknown", lambda b: set_string_same_length(b, "general.architecture", "bitnet-b1.59"))
    for index, value in ((5, 9), (100, 0), (4095, -1), (7, 1 << 20)):
        case(f"token type [{index}] = {value}", lambda b, i=index, v=value: set_token_type(b, i, v))
    for value in (4095, 4097, 0, 8192):
        case(f"vocab_size {value}", lambda b, v=value: set_u32(b, "bitnet-b1.58.vocab_size", v))
    arch = "bitnet-b1.58."
    for key, values in (("embedding_length", (255, 512, 0)), ("feed_forward_length", (767, 1024)),
                        ("block_count", (5, 7, 0, 1 << 30)), ("attention.head_count", (3, 8, 0)),
                        ("attention.head_count_kv", (3, 0, 4)), ("rope.dimension_count", (32, 0)),
                        ("context_length", (0,))):
        for value in values:
            case(f"{key} {value}", lambda b, k=key, v=value: set_u32(b, arch + k, v))
    for key in ("rope.freq_base", "attention.layer_norm_rms_epsilon"):
        for value in (math.nan, math.inf, 0.0, -1.0):
            case(f"{key} {value}", lambda b, k=key, v=value: set_f32(b, arch + k, v))
    case("tokens array one short", lambda b: set_array_count(b, "tokenizer.ggml.tokens", -1))
    case("token types one short", lambda b: set_array_count(b, "tokenizer.ggml.token_type", -1))
    case("merges count huge", lambda b: set_array_count(b, "tokenizer.ggml.merges", 1 << 40))

    for name in ("token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight", "blk.5.ffn_down.weight",
                 "blk.2.ffn_sub_norm.weight"):
        case(f"{name} dim0 + 1", lambda b, n=name: set_tensor_field(b, n, "dim0", tensors[n][1][-1] + 1))
        case(f"{name} dim0 huge", lambda b, n=name: set_tensor_field(b, n, "dim0", 1 << 62))
        for typ in (GGMLType.F32, GGMLType.F16, GGMLType.Q8_0, GGMLType.I2_S, 999):
            # F16 head bytes read as a smaller Q8_0 head are a valid (if meaningless) model
            if typ != tensors[name][0] and not (name == "token_embd.weight" and typ == GGMLType.Q8_0):
                case(f"{name} type {int(typ)}", lambda b, n=name, t=typ: set_tensor_field(b, n, "type", int(t)))
        case(f"{name} offset + 32", lambda b, n=name: set_tensor_field(b, n, "offset", lambda o: o + 32))
        case(f"{name} offset misaligned", lambda b, n=name: set_tensor_field(b, n, "offset", lambda o: o + 2))
        case(f"{name} offset past the end", lambda b, n=name: set_tensor_field(b, n, "offset", lambda o: size))
    case("blk.0.attn_k dims swapped", lambda b: (set_tensor_field(b, "blk.0.attn_k.weight", "dim0", 128),
                                                  set_tensor_field(b, "blk.0.attn_k.weight", "dim1", 256)))

    for name, index in (("output_norm.weight", 0), ("blk.0.attn_norm.weight", 7), ("blk.3.ffn_sub_norm.weight", 767),
                        ("blk.5.attn_sub_norm.weight", 100), ("blk.1.ffn_norm.weight", 255)):
        for value in (math.nan, math.inf, -math.inf):
            case(f"{name}[{index}] = {value}", lambda b, n=name, i=index, v=value: set_weight(b, layout, n, i, v))
    for name in ("blk.0.attn_q.weight", "blk.4.ffn_up.weight", "blk.5.attn_output.weight"):
        for value in (math.nan, math.inf, 0.0, -0.5):
            case(f"{name} scale {value}", lambda b, n=name, v=value: set_i2s_scale(b, layout, n, v))
    return cases


def write_cases(tmp_path, cases):
    paths = {}
    for i, (name, blob) in enumerate(cases.items()):
        path = tmp_path / f"case{i:03d}.gguf"
        path.write_bytes(blob)
        paths[str(path)] = name
    return paths


def test_every_deliberate_defect_is_a_format_error_at_load(original, tmp_path):
    data, layout = original
    cases = deliberate_cases(data, layout)
    assert len(cases) > 150
    paths = write_cases(tmp_path, cases)
    outcomes = run_worker(paths)
    wrong = {paths[p]: o for p, o in outcomes.items() if o["load"] != "ModelFormatError"}
    assert not wrong, f"{len(wrong)} of {len(cases)} corrupted files were not refused at load: {wrong}"
    # the message names the file
    assert all(p in o["message"] for p, o in outcomes.items()), [o for p, o in outcomes.items()
                                                                   if p not in o["message"]][:3]
    print(f"corrupted-model battery: {len(cases)} deliberate defects, {len(cases)} ModelFormatError at load")


def test_eos_4096_in_the_packaged_model_is_refused_naming_the_key(original, tmp_path):
    buf = bytearray(original[0])
    set_u32(buf, "tokenizer.ggml.eos_token_id", 4096)
    path = tmp_path / "eos4096.gguf"
    path.write_bytes(buf)
    from edge_runtime.errors import ModelFormatError
    from edge_runtime.model.model import Model

    with pytest.raises(ModelFormatError, match=r"eos.*4096"):
        Model(str(path), n_ctx=64)


def test_random_metadata_flips_are_refused_or_harmless(original, tmp_path):
    """Seeded single-byte flips anywhere before the weights: refused at load, or a file that still
    loads and generates. Never another exception, never a crash."""
    data, layout = original
    rng = np.random.default_rng(18)
    cases = {}
    for at in rng.integers(0, layout["data_offset"], size=120):
        buf = bytearray(data)
        buf[int(at)] ^= int(rng.integers(1, 256))
        cases[f"byte {int(at)} flipped"] = bytes(buf)
    paths = write_cases(tmp_path, cases)
    outcomes = run_worker(paths)
    bad = {paths[p]: o for p, o in outcomes.items()
           if not (o["load"] == "ModelFormatError" or (o["load"] == "ok" and o.get("generate") == "ok"))}
    assert not bad, bad
    refused = sum(o["load"] == "ModelFormatError" for o in outcomes.values())
    print(f"random flips: {len(cases)} files, {refused} ModelFormatError at load, {len(cases) - refused} "
          "still valid and generate")


def test_a_nan_in_the_head_is_a_model_error_at_generation_not_a_client_error(original, tmp_path):
    """The 2 MiB head here could be scanned, but the 657 MB one of 2B4T is not (see
    model/load_checks.py): its NaN is found when it is used, and reported as the model's fault."""
    data, layout = original
    buf = bytearray(data)
    for row in range(0, 4096, 97):
        set_weight(buf, layout, "token_embd.weight", row * 256 + 3, math.nan, dtype="<f2")
    path = tmp_path / "nan-head.gguf"
    path.write_bytes(buf)
    (outcome,) = run_worker([path]).values()
    assert outcome["load"] == "ok"
    assert outcome["generate"] == "NonFiniteLogitsError", outcome
    assert "EdgeRuntimeError" in outcome["mro"] and "ValueError" not in outcome["mro"]
    assert str(path) in outcome["message"]
