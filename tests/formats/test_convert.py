"""`edge-runtime convert` against the references: transformers for Hugging Face checkpoints
(what it loads is what we must write), the `gguf` package for llama.cpp's TQ2_0 files."""

import argparse
import json
import lzma
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
from gguf import quants as gguf_quants  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from edge_runtime.formats import convert, sources  # noqa: E402
from edge_runtime.errors import EdgeRuntimeError, ModelFormatError  # noqa: E402
from edge_runtime.formats.gguf import GGMLType, GGUFReader, dequantize, unpack_i2s  # noqa: E402
from edge_runtime.formats.model_file import open_model_file  # noqa: E402
from helpers_hf import (  # noqa: E402
    effective_projection_weights, load_reference, make_tiny_bitnet_dir, make_tiny_tokenizer_json,
)

REPO = Path(__file__).resolve().parents[2]
LLAMA3_TOKENIZER = REPO / "tests" / "data" / "llama3-tokenizer.json.xz"  # in the repository: never skipped
HF_NORMS = {"attn_norm": "input_layernorm", "attn_sub_norm": "self_attn.attn_sub_norm",
            "ffn_norm": "post_attention_layernorm", "ffn_sub_norm": "mlp.ffn_sub_norm"}


def run_convert(*argv) -> int:
    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    return convert.main(parser.parse_args([str(a) for a in argv]))


def leftovers(directory):
    return sorted(p.name for p in Path(directory).iterdir() if ".tmp-" in p.name)


def hf_state(directory):
    state = {}
    for f in sorted(Path(directory).glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state


def ternary_and_scale(mf, name):
    info = mf.tensor(name)
    return unpack_i2s(mf.reader.tensor_bytes(name), *info.shape)


# ---------------------------------------------------------------------------------------------
# Hugging Face checkpoints -> I2_S, checked against what transformers loads
# ---------------------------------------------------------------------------------------------

CHECKPOINTS = {
    # name: (make_tiny_bitnet_dir kwargs, relative tolerance of the scale vs the reference)
    "packed-bitlinear-f32": (dict(kind="packed", linear_class="bitlinear", dtype="float32"), 1e-6),
    "packed-autobitlinear-bf16": (dict(kind="packed", linear_class="autobitlinear", dtype="bfloat16"), 1e-6),
    "packed-bitlinear-bf16": (dict(kind="packed", linear_class="bitlinear", dtype="bfloat16", seed=3), 1e-6),
    # the reference casts the ternarized master back to bf16/f16, rounding the scale there
    "masters-bf16": (dict(kind="masters", dtype="bfloat16"), 2**-8),
    "masters-f16": (dict(kind="masters", dtype="float16", seed=4), 2**-10),
    "masters-online-f32": (dict(kind="masters", quantization="online", dtype="float32", seed=5), 1e-6),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(case):
        if case not in cache:
            kwargs, _ = CHECKPOINTS[case]
            d = make_tiny_bitnet_dir(tmp_path_factory.mktemp(case) / "hf", **kwargs)
            out = Path(d).parent / "model.gguf"
            assert run_convert(d, "-o", out) == 0
            cache[case] = (d, out)
        return cache[case]

    return get


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_checkpoint_converts_to_the_weights_transformers_uses(converted, case):
    directory, out = converted(case)
    _, rtol = CHECKPOINTS[case]
    reference = load_reference(directory)
    config = reference.config
    effective = effective_projection_weights(reference)
    state = hf_state(directory)
    with open_model_file(out) as mf:
        c = mf.config
        assert (c.dim, c.ffn_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.n_vocab) == (
            config.hidden_size, config.intermediate_size, config.num_hidden_layers,
            config.num_attention_heads, config.num_key_value_heads, config.vocab_size)
        assert c.rope_theta == config.rope_parameters["rope_theta"] and c.tied
        assert c.norm_eps == pytest.approx(config.rms_norm_eps) and c.head_type == "f16"
        assert len(effective) == 7 * c.n_layers
        for name, weight in effective.items():
            ternary, scale = ternary_and_scale(mf, name)
            # the same ternary codes, exactly, and one positive scale
            assert np.array_equal(ternary, np.sign(weight).astype(np.int8)), name
            nonzero = weight[weight != 0]
            assert np.allclose(np.abs(nonzero), scale, rtol=rtol, atol=0), (name, scale, nonzero[:3])
        for i in range(c.n_layers):
            for gg, hf in HF_NORMS.items():
                expected = state[f"model.layers.{i}.{hf}.weight"].float().numpy()
                assert np.array_equal(mf.reader.tensor_array(f"blk.{i}.{gg}.weight"), expected)
        assert np.array_equal(mf.reader.tensor_array("output_norm.weight"),
                              state["model.norm.weight"].float().numpy())
        embedding = state["model.embed_tokens.weight"].float().numpy()
        assert np.array_equal(mf.reader.tensor_array("token_embd.weight"), embedding.astype(np.float16))


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_weight_scale_direction_follows_the_linear_class(converted, linear_class):
    """BitLinear divides by weight_scale, AutoBitLinear multiplies: the I2_S scale is
    1/weight_scale for the one and weight_scale for the other."""
    directory, out = converted(f"packed-{linear_class}-{'f32' if linear_class == 'bitlinear' else 'bf16'}")
    state = hf_state(directory)
    with open_model_file(out) as mf:
        for i in range(mf.config.n_layers):
            weight_scale = state[f"model.layers.{i}.mlp.down_proj.weight_scale"].float().item()
            expected = 1 / np.float32(weight_scale) if linear_class == "bitlinear" else weight_scale
            assert mf.i2s_scale(f"blk.{i}.ffn_down.weight") == pytest.approx(expected, rel=1e-7)


def test_unpacked_autobitlinear_weights_convert_like_packed_ones(converted, tmp_path):
    """AutoBitLinear (offline) checkpoints may hold the ternary weights unpacked, as floats."""
    from transformers.integrations.bitnet import unpack_weights

    packed_dir, packed_out = converted("packed-autobitlinear-bf16")
    unpacked_dir = tmp_path / "unpacked"
    unpacked_dir.mkdir()
    (unpacked_dir / "config.json").write_bytes((Path(packed_dir) / "config.json").read_bytes())
    state = hf_state(packed_dir)
    for name, value in list(state.items()):
        if value.dtype == torch.uint8:
            state[name] = unpack_weights(value, dtype=torch.bfloat16).contiguous()
    save_file(state, str(unpacked_dir / "model.safetensors"), metadata={"format": "pt"})
    run_convert(unpacked_dir, "-o", tmp_path / "m.gguf", "--name", "hf")
    run_convert(packed_dir, "-o", tmp_path / "p.gguf", "--name", "hf")
    assert (tmp_path / "m.gguf").read_bytes() == (tmp_path / "p.gguf").read_bytes()
    state["model.layers.0.mlp.up_proj.weight"][0, 0] = 0.5
    save_file(state, str(unpacked_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelFormatError, match="values other than -1, 0, \\+1"):
        run_convert(unpacked_dir, "-o", tmp_path / "bad.gguf")


def test_sharded_checkpoint_converts_identically(tmp_path):
    single = make_tiny_bitnet_dir(tmp_path / "single", seed=7)
    sharded = make_tiny_bitnet_dir(tmp_path / "sharded", seed=7, shards=3)
    assert len(list(Path(sharded).glob("*.safetensors"))) == 3
    run_convert(single, "-o", tmp_path / "a.gguf", "--name", "x")
    run_convert(sharded, "-o", tmp_path / "b.gguf", "--name", "x")
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


@pytest.mark.parametrize("head", ["q8_0", "q4_0"])
def test_untied_head_is_quantized_and_the_embedding_kept(tmp_path, head):
    d = make_tiny_bitnet_dir(tmp_path / "hf", tie_word_embeddings=False, seed=8)
    out = tmp_path / "m.gguf"
    run_convert(d, "-o", out, "--head", head)
    state = hf_state(d)
    lm_head = state["lm_head.weight"].float().numpy()
    with open_model_file(out) as mf:
        assert not mf.config.tied and mf.config.head_type == head
        assert mf.tensor("token_embd.weight").ggml_type == GGMLType.F16
        got = dequantize(mf.tensor("output.weight").ggml_type, mf.reader.tensor_bytes("output.weight"),
                         *lm_head.shape)
        # per-block error bound: half a step (q8_0) or a full step (q4_0, whose codes reach
        # -8 but only +7), plus the f16 rounding of the block scale
        amax = np.abs(lm_head).reshape(-1, 32).max(axis=1).repeat(32).reshape(lm_head.shape)
        bound = amax * (0.5 / 127 + 2**-11) if head == "q8_0" else amax * (1 / 8 + 2**-11)
        assert np.all(np.abs(got - lm_head) <= bound)


def test_head_requantized_in_slabs_equals_in_one_go(tmp_path, monkeypatch):
    d = make_tiny_bitnet_dir(tmp_path / "hf", seed=9, dtype="bfloat16")
    run_convert(d, "-o", tmp_path / "whole.gguf", "--head", "q4_0")
    monkeypatch.setattr(convert, "HEAD_CHUNK_BYTES", 7 * 256 * 4)  # 7 rows per slab
    run_convert(d, "-o", tmp_path / "slabs.gguf", "--head", "q4_0")
    assert (tmp_path / "whole.gguf").read_bytes() == (tmp_path / "slabs.gguf").read_bytes()
    embedding = hf_state(d)["model.embed_tokens.weight"].float().numpy()
    with open_model_file(tmp_path / "slabs.gguf") as mf:
        from edge_runtime.formats.gguf import quantize_q4_0

        assert bytes(mf.reader.tensor_bytes("token_embd.weight")) == quantize_q4_0(embedding)


def test_tokenizer_json_becomes_gguf_tokenizer_metadata(tmp_path):
    from tokenizers import Tokenizer

    tj = make_tiny_tokenizer_json(300)
    d = make_tiny_bitnet_dir(tmp_path / "hf", tokenizer_json=tj, bos_token_id=297, eos_token_id=[298, 299])
    (Path(d) / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    out = tmp_path / "m.gguf"
    run_convert(d, "-o", out)
    reference = Tokenizer.from_file(str(Path(d) / "tokenizer.json"))
    with open_model_file(out) as mf:
        meta = mf.tokenizer_metadata
        tokens = meta["tokenizer.ggml.tokens"]
        assert tokens == [reference.id_to_token(i) for i in range(300)]
        assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "llama-bpe"
        assert meta["tokenizer.ggml.merges"] == [" ".join(m) for m in tj["model"]["merges"]]
        assert meta["tokenizer.ggml.token_type"].tolist() == [1] * 297 + [3, 3, 3]
        assert meta["tokenizer.ggml.bos_token_id"] == 297 and meta["tokenizer.ggml.eos_token_id"] == 298
        assert meta["tokenizer.ggml.eot_token_id"] == 299
        assert meta["tokenizer.chat_template"] == "{{ messages }}"
        assert mf.reader.value_types["tokenizer.ggml.token_type"][1].name == "INT32"


def test_llama3_tokenizer_fixture(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(lzma.decompress(LLAMA3_TOKENIZER.read_bytes()))
    meta = sources.tokenizer_metadata_from_hf(path, n_vocab=128256, bos_token_id=128000,
                                              eos_token_id=128001)
    tokens = meta["tokenizer.ggml.tokens"][0]
    types = meta["tokenizer.ggml.token_type"][0]
    assert len(tokens) == 128256 and len(meta["tokenizer.ggml.merges"][0]) == 280147
    assert tokens[128000] == "<|begin_of_text|>" and tokens[128009] == "<|eot_id|>"
    assert meta["tokenizer.ggml.eot_token_id"][0] == 128009
    assert types[:128000].tolist() == [1] * 128000 and set(types[128000:].tolist()) == {3}
    from edge_runtime.formats.gguf import GGUFWriter

    w = GGUFWriter(tmp_path / "tok.gguf")
    for key, (value, vtype) in meta.items():
        w.add(key, value, vtype)
    w.write()
    start = time.perf_counter()
    with GGUFReader(tmp_path / "tok.gguf") as r:
        assert r.metadata["tokenizer.ggml.tokens"] == tokens
        assert r.metadata["tokenizer.ggml.merges"][:2] == ["\u0120 \u0120", "\u0120 \u0120\u0120\u0120"]
    assert time.perf_counter() - start < 1.5


# ---------------------------------------------------------------------------------------------
# llama.cpp TQ2_0 files, both directions
# ---------------------------------------------------------------------------------------------

TQ_DIMS = dict(hidden=256, ffn=512, heads=4, kv_heads=2)  # TQ2_0 / TQ1_0 rows are multiples of 256
LLAMA_CPP_TYPES = {"tq2_0": gguf.GGMLQuantizationType.TQ2_0, "tq1_0": gguf.GGMLQuantizationType.TQ1_0}


def write_llama_cpp_bitnet(path, mf, *, vary_block_scales=False, projection_type="tq2_0"):
    """A llama.cpp `bitnet` file made with the gguf package's own writer and TQ2_0 quantizer
    from the weights of one of our files (ternary * scale, as llama.cpp's converter hands them
    to the quantizer)."""
    c = mf.config
    w = gguf.GGUFWriter(str(path), arch="bitnet")
    w.add_name("tiny-bitnet")
    w.add_vocab_size(c.n_vocab)
    w.add_context_length(c.n_ctx_train)
    w.add_embedding_length(c.dim)
    w.add_feed_forward_length(c.ffn_dim)
    w.add_block_count(c.n_layers)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(1.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"tok{i}" for i in range(c.n_vocab)])
    w.add_token_types([1] * c.n_vocab)
    embd = mf.reader.tensor_array("token_embd.weight")
    w.add_tensor("token_embd.weight", np.array(embd))
    for name, info in mf.reader.tensors.items():
        if info.ggml_type == GGMLType.F32:
            w.add_tensor(name, np.array(mf.reader.tensor_array(name)))
        elif info.ggml_type == GGMLType.I2_S:
            ternary, scale = ternary_and_scale(mf, name)
            values = ternary.astype(np.float32) * np.float32(scale)
            if vary_block_scales and name == "blk.1.ffn_up.weight":
                values[0, :256] *= 1.5
            if projection_type == "f16":  # llama.cpp's --outtype f16 export of a BitNet model
                w.add_tensor(name, values.astype(np.float16))
            else:
                qtype = LLAMA_CPP_TYPES[projection_type]
                w.add_tensor(name, gguf_quants.quantize(values, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tq_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("tq")
    d = make_tiny_bitnet_dir(root / "hf", kind="masters", seed=11, **TQ_DIMS)
    run_convert(d, "-o", root / "ours.gguf")
    return root, root / "ours.gguf"


@pytest.mark.parametrize("projection_type", ["tq2_0", "tq1_0", "f16"])
def test_llama_cpp_bitnet_file_converts_to_i2_s(tq_model, tmp_path, projection_type):
    _, ours = tq_model
    with open_model_file(ours) as mf:
        write_llama_cpp_bitnet(tmp_path / "llama.gguf", mf, projection_type=projection_type)
        run_convert(tmp_path / "llama.gguf", "-o", tmp_path / "from_llama.gguf")
        with open_model_file(tmp_path / "from_llama.gguf") as back:
            assert back.config.n_layers == mf.config.n_layers and back.config.name == "tiny-bitnet"
            assert back.tokenizer_metadata["tokenizer.ggml.tokens"][5] == "tok5"
            assert back.tensor("token_embd.weight").ggml_type == GGMLType.F16  # kept
            for name, info in mf.reader.tensors.items():
                if info.ggml_type == GGMLType.I2_S:
                    t0, s0 = ternary_and_scale(mf, name)
                    t1, s1 = ternary_and_scale(back, name)
                    assert np.array_equal(t0, t1) and s1 == float(np.float16(s0)), name
                else:
                    assert bytes(back.reader.tensor_bytes(name)) == bytes(mf.reader.tensor_bytes(name))


def test_tq2_0_with_per_block_scales_is_rejected(tq_model, tmp_path):
    _, ours = tq_model
    with open_model_file(ours) as mf:
        write_llama_cpp_bitnet(tmp_path / "mixed.gguf", mf, vary_block_scales=True)
    with pytest.raises(ModelFormatError, match="blk.1.ffn_up.weight.*not per-tensor ternary"):
        run_convert(tmp_path / "mixed.gguf", "-o", tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("body", ["tq2_0", "tq1_0"])
def test_export_to_llama_cpp_reads_back_with_the_gguf_package(tq_model, tmp_path, body):
    _, ours = tq_model
    exported = tmp_path / "llama.gguf"
    run_convert(ours, "-o", exported, "--to", body)
    qtype = LLAMA_CPP_TYPES[body]
    assert ref_file_type(exported) == {"tq2_0": 37, "tq1_0": 36}[body]  # llama.cpp's LLAMA_FTYPE_MOSTLY_*
    ref = gguf.GGUFReader(str(exported))
    arch = ref.get_field("general.architecture").contents()
    assert arch == gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BITNET]
    with open_model_file(ours) as mf:
        c = mf.config
        keys = gguf.Keys
        for key, value in ((keys.LLM.BLOCK_COUNT, c.n_layers), (keys.LLM.EMBEDDING_LENGTH, c.dim),
                           (keys.LLM.FEED_FORWARD_LENGTH, c.ffn_dim), (keys.LLM.VOCAB_SIZE, c.n_vocab),
                           (keys.Attention.HEAD_COUNT, c.n_heads), (keys.Attention.HEAD_COUNT_KV, c.n_kv_heads),
                           (keys.LLM.CONTEXT_LENGTH, c.n_ctx_train), (keys.Rope.FREQ_BASE, c.rope_theta),
                           (keys.Attention.LAYERNORM_RMS_EPS, c.norm_eps)):
            assert ref.get_field(key.format(arch=arch)).contents() == pytest.approx(value), key
        names = {t.name: t for t in ref.tensors}
        expected_names = {"token_embd.weight", "output_norm.weight"} | {
            gguf.TENSOR_NAMES[t].format(bid=i) + ".weight"
            for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.BITNET] if "{bid}" in gguf.TENSOR_NAMES[t]
            for i in range(c.n_layers)}
        assert set(names) == expected_names
        assert names["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
        for name, info in mf.reader.tensors.items():
            t = names[name]
            if info.ggml_type == GGMLType.I2_S:
                assert t.tensor_type == qtype
                ternary, scale = ternary_and_scale(mf, name)
                # byte for byte what the gguf package's own quantizer makes of ternary * f16(scale)
                expected = gguf_quants.quantize(ternary.astype(np.float32) * np.float32(np.float16(scale)), qtype)
                assert np.array_equal(np.asarray(t.data).reshape(-1), expected.reshape(-1)), name
                values = gguf_quants.dequantize(t.data, qtype)
                assert np.array_equal(values.reshape(ternary.shape),
                                      ternary * np.float32(np.float16(scale))), name
            elif info.ggml_type == GGMLType.F32:
                assert np.array_equal(t.data, mf.reader.tensor_array(name))
        embd = mf.reader.tensor_array("token_embd.weight").astype(np.float32)
        head = gguf_quants.dequantize(names["token_embd.weight"].data, gguf.GGMLQuantizationType.Q8_0)
        assert np.abs(head.reshape(embd.shape) - embd).max() <= np.abs(embd).max() / 127
    # and back again: the same ternary weights, the scale rounded to f16 once
    run_convert(exported, "-o", tmp_path / "again.gguf", "--head", "f16")
    with open_model_file(ours) as a, open_model_file(tmp_path / "again.gguf") as b:
        for name, info in a.reader.tensors.items():
            if info.ggml_type == GGMLType.I2_S:
                (t0, s0), (t1, s1) = ternary_and_scale(a, name), ternary_and_scale(b, name)
                assert np.array_equal(t0, t1) and s1 == float(np.float16(s0))


def ref_file_type(path):
    return int(gguf.GGUFReader(str(path)).get_field("general.file_type").contents())


def test_untied_model_cannot_become_llama_cpp_bitnet(tmp_path):
    d = make_tiny_bitnet_dir(tmp_path / "hf", tie_word_embeddings=False, **TQ_DIMS)
    with pytest.raises(EdgeRuntimeError, match="output head"):
        run_convert(d, "-o", tmp_path / "x.gguf", "--to", "tq2_0")
    assert not (tmp_path / "x.gguf").exists()


def test_our_file_gets_a_new_head_and_keeps_the_projections(tq_model, tmp_path):
    _, ours = tq_model
    with pytest.raises(EdgeRuntimeError, match="already an edge-runtime file"):
        run_convert(ours, "-o", tmp_path / "same.gguf")
    run_convert(ours, "-o", tmp_path / "q4.gguf", "--head", "q4_0")
    with open_model_file(ours) as a, open_model_file(tmp_path / "q4.gguf") as b:
        assert b.config.head_type == "q4_0"
        for name, info in a.reader.tensors.items():
            if name != "token_embd.weight":
                assert bytes(a.reader.tensor_bytes(name)) == bytes(b.reader.tensor_bytes(name))


# ---------------------------------------------------------------------------------------------
# Errors, and nothing half-written
# ---------------------------------------------------------------------------------------------


def _rewrite_state(directory, change):
    path = Path(directory) / "model.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata={"format": "pt"})


def _set_config(directory, **changes):
    path = Path(directory) / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))


BAD_CHECKPOINTS = {
    "no config": (lambda d: os.remove(Path(d) / "config.json"), "config.json: missing"),
    "missing tensor": (lambda d: _rewrite_state(d, lambda s: s.pop("model.layers.1.mlp.up_proj.weight")),
                       "model.layers.1.mlp.up_proj.weight is missing"),
    "missing weight_scale": (lambda d: _rewrite_state(
        d, lambda s: s.pop("model.layers.0.self_attn.q_proj.weight_scale")), "has no .*weight_scale"),
    "wrong shape": (lambda d: _set_config(d, intermediate_size=512), "has shape \\[96, 256\\], expected \\[128, 256\\]"),
    "unsupported dtype": (lambda d: _rewrite_state(
        d, lambda s: s.update({"model.norm.weight": s["model.norm.weight"].double()})), "dtype F64"),
    "extra tensor": (lambda d: _rewrite_state(
        d, lambda s: s.update({"model.layers.0.mlp.extra.weight": torch.zeros(2)})), "unexpected tensors"),
    "not bitnet": (lambda d: _set_config(d, model_type="llama"), "model_type is 'llama'"),
    "packed without quantization_config": (lambda d: _set_config(d, quantization_config=None),
                                           "no bitnet quantization_config"),
    "rms norm inside bitlinear": (lambda d: _set_config(d, quantization_config={
        "quant_method": "bitnet", "linear_class": "bitlinear", "use_rms_norm": True}), "use_rms_norm"),
    "untied without lm_head": (lambda d: _set_config(d, tie_word_embeddings=False), "no lm_head.weight"),
    "other activation": (lambda d: _set_config(d, hidden_act="silu"), "hidden_act"),
    "corrupt safetensors": (lambda d: (Path(d) / "model.safetensors").write_bytes(b"\xff" * 64), "header length"),
    "late code 3": (lambda d: _rewrite_state(d, lambda s: s["model.layers.1.mlp.down_proj.weight"].__setitem__(
        (5, 7), 0xFF)), "down_proj.weight: packed value 3"),
}


@pytest.mark.parametrize("label", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoints_fail_clearly_and_write_nothing(tmp_path, label):
    damage, match = BAD_CHECKPOINTS[label]
    d = make_tiny_bitnet_dir(tmp_path / "hf", seed=12)
    damage(d)
    out = tmp_path / "out.gguf"
    with pytest.raises(ModelFormatError, match=match):
        run_convert(d, "-o", out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_missing_paths(tmp_path):
    with pytest.raises(EdgeRuntimeError, match="no such file or directory"):
        run_convert(tmp_path / "nope", "-o", tmp_path / "x.gguf")
    d = make_tiny_bitnet_dir(tmp_path / "hf")
    with pytest.raises(EdgeRuntimeError, match="does not exist"):
        run_convert(d, "-o", tmp_path / "no-dir" / "x.gguf")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        run_convert(tmp_path / "notes.txt", "-o", tmp_path / "x.gguf")


def test_interrupted_convert_leaves_no_output(tmp_path):
    """A real SIGINT (Ctrl-C) arriving while the third tensor is being produced."""
    d = make_tiny_bitnet_dir(tmp_path / "hf", seed=13)
    out = tmp_path / "out.gguf"
    calls = []

    def interrupt_on_third_tensor(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "proj_bytes":
            calls.append(1)
            if len(calls) == 3:
                signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.setprofile(interrupt_on_third_tensor)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_convert(d, "-o", out)
    finally:
        sys.setprofile(None)
        signal.signal(signal.SIGINT, previous)
    assert len(calls) == 3
    assert not out.exists() and leftovers(tmp_path) == []


def test_command_line(tmp_path):
    d = make_tiny_bitnet_dir(tmp_path / "hf", seed=14)
    # the edge_runtime this test imported (installed or the source tree), not whatever is first
    package_root = str(Path(convert.__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=package_root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "edge_runtime", "convert", d, "-o", str(tmp_path / "m.gguf"),
                           "--progress", "--head", "q8_0"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[##############################] 24/24 blk.1.ffn_sub_norm.weight" in done.stderr
    with open_model_file(tmp_path / "m.gguf") as mf:
        assert mf.config.head_type == "q8_0"
    failed = subprocess.run([sys.executable, "-m", "edge_runtime", "convert", str(tmp_path / "missing"),
                             "-o", str(tmp_path / "x.gguf")], capture_output=True, text=True, env=env,
                            timeout=120)
    assert failed.returncode == 1
    assert len(failed.stderr.strip().splitlines()) == 1 and "missing" in failed.stderr
