"""TQ1_S, the 1.6-bit ternary body: the codec against the layout of neon_kernels/er_kernels.h and
the C kernels, `convert --to tq1` from every input the converter reads, and back to I2_S losslessly."""

import argparse
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.engine import _engine
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.formats import convert
from edge_runtime.formats.gguf import (
    GGMLType, pack_i2s, pack_tq1, tensor_nbytes, tq1_row_bytes, unpack_i2s, unpack_tq1, unpack_ternary,
)
from edge_runtime.formats.model_file import open_model_file
from edge_runtime.formats.random_model import write_random_model


def run_convert(*argv) -> int:
    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    return convert.main(parser.parse_args([str(a) for a in argv]))


def projections(path):
    """{name: (type, ternary, scale)} of every projection of one of our files."""
    out = {}
    with open_model_file(path) as mf:
        for name, info in mf.reader.tensors.items():
            if info.ggml_type in (GGMLType.I2_S, GGMLType.TQ1_S):
                t, s = unpack_ternary(info.ggml_type, mf.reader.tensor_bytes(name), *info.shape, name=name)
                out[name] = (info.ggml_type, t, s)
    return out


# ---- the codec ------------------------------------------------------------------------------

@pytest.mark.parametrize("cols", [128, 256, 384, 640, 1152, 2560, 6912])
def test_pack_unpack_round_trip_and_size(cols):
    rng = np.random.default_rng(cols)
    t = rng.integers(-1, 2, size=(7, cols)).astype(np.int8)
    data = pack_tq1(t, 0.375)
    assert len(data) == tensor_nbytes(GGMLType.TQ1_S, (cols, 7)) == 7 * tq1_row_bytes(cols) + 32
    assert tq1_row_bytes(cols) == -(-cols // 160) * 32
    back, scale = unpack_tq1(data, 7, cols)
    assert np.array_equal(back, t) and scale == 0.375


def test_every_five_trits_have_their_own_byte():
    digits = np.array(np.unravel_index(np.arange(243), (3,) * 5)).T.astype(np.int8) - 1  # (243, 5)
    t = np.repeat(digits[:, :, None], 32, axis=2).reshape(243, 160)
    t = np.concatenate([t, np.zeros((243, 224), np.int8)], axis=1)  # rows of 384: 3 chunks, 2 strips in the last
    packed = np.frombuffer(pack_tq1(t, 1.0)[:-32], np.uint8).reshape(243, 96)
    assert len(set(packed[:, 0].tolist())) == 243 and np.all(packed[:, :32] == packed[:, :1])
    # the code of weight 32p + j is digit p, the most significant first: v = sum c_p 3^(4-p)
    v = ((digits + 1).astype(np.int64) * np.array([81, 27, 9, 3, 1])).sum(axis=1)
    assert np.array_equal(packed[:, 0], (256 * v + 242) // 243)
    assert np.array_equal(unpack_tq1(pack_tq1(t, 1.0), 243, 384)[0], t)
    # the last chunk: strips 0, 1 are weights 320..383 (code 1), its missing strips 2..4 code 1
    assert np.all(packed[:, 64:] == (256 * 121 + 242) // 243)


def test_every_byte_decodes_as_the_kernels_read_it():
    """Bytes no writer emits still decode (there is no invalid byte); the Python decoder and every
    kernel variant agree on them."""
    rng = np.random.default_rng(5)
    rows, cols = 9, 640
    raw = rng.integers(0, 256, size=rows * tq1_row_bytes(cols), dtype=np.uint8)
    raw[:256] = np.arange(256)
    t, _ = unpack_tq1(raw.tobytes() + bytes(32), rows, cols)
    q = rng.integers(-128, 128, size=(3, cols), dtype=np.int8)
    want = q.astype(np.int64) @ t.T.astype(np.int64)
    for variant in _engine.available_kernels():
        got = _engine.i2s_gemm(variant, raw.tobytes(), q, rows, cols, _engine.GGML_TYPE_TQ1_S)
        assert np.array_equal(got, want), variant
        got1 = _engine.i2s_gemm(variant, raw.tobytes(), q[:1], rows, cols, _engine.GGML_TYPE_TQ1_S)
        assert np.array_equal(got1, want[:1]), variant


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="multiple of 128"):
        pack_tq1(np.zeros((2, 96), np.int8), 1.0)
    with pytest.raises(ValueError, match="-1, 0 or \\+1"):
        pack_tq1(np.full((1, 128), 2, np.int8), 1.0)
    with pytest.raises(ValueError, match="finite and > 0"):
        pack_tq1(np.zeros((1, 128), np.int8), 0.0)
    with pytest.raises(Exception, match="needs 132 bytes"):
        unpack_tq1(bytes(100), 4, 128)
    with pytest.raises(ValueError, match="TQ1_S needs rows of a multiple of 128"):
        tensor_nbytes(GGMLType.TQ1_S, (100, 3))


# ---- convert --to tq1 -----------------------------------------------------------------------

def assert_same_model(tq1_path, i2s_path):
    """The same trits and scales, and every other tensor byte for byte."""
    a, b = projections(tq1_path), projections(i2s_path)
    assert a.keys() == b.keys() and a
    for name in a:
        assert a[name][0] == GGMLType.TQ1_S and b[name][0] == GGMLType.I2_S, name
        assert np.array_equal(a[name][1], b[name][1]) and a[name][2] == b[name][2], name
    with open_model_file(tq1_path) as x, open_model_file(i2s_path) as y:
        assert x.config == y.config and x.body_type == "TQ1_S" and y.body_type == "I2_S"
        for name, info in y.reader.tensors.items():
            if name not in b:
                assert bytes(x.reader.tensor_bytes(name)) == bytes(y.reader.tensor_bytes(name)), name


def round_trip(src, tmp_path, *extra):
    """src -> i2_s and src -> tq1 -> i2_s: the tq1 file holds the i2_s file's model, and coming
    back gives the i2_s file byte for byte."""
    i2s, tq1, back = tmp_path / "direct-i2s.gguf", tmp_path / "body-tq1.gguf", tmp_path / "back-i2s.gguf"
    assert run_convert(src, "-o", i2s, *extra) == 0
    assert run_convert(src, "-o", tq1, "--to", "tq1", *extra) == 0
    assert_same_model(tq1, i2s)
    assert run_convert(tq1, "-o", back, "--to", "i2_s") == 0
    assert back.read_bytes() == i2s.read_bytes()
    return i2s, tq1


def test_official_style_i2s_file_to_tq1_and_back_byte_identical(tmp_path):
    # an I2_S file as the official release stores it: codes, the f32 scale, zero padding
    # rows of 640 and 1280 weights: whole chunks, so the body is exactly 1.6 / 2 of I2_S's
    src = Path(write_random_model(str(tmp_path / "official.gguf"), shape="tiny", head="f16", seed=8,
                                  dim=640, n_heads=5, n_kv_heads=5, ffn_dim=1280))
    tq1 = tmp_path / "tq1.gguf"
    assert run_convert(src, "-o", tq1, "--to", "tq1") == 0
    with open_model_file(src) as mf:
        body = sum(t.nbytes for n, t in mf.reader.tensors.items() if t.ggml_type == GGMLType.I2_S)
    with open_model_file(tq1) as mf:
        body_tq1 = sum(t.nbytes for n, t in mf.reader.tensors.items() if t.ggml_type == GGMLType.TQ1_S)
    n_proj = 7 * 2
    assert body_tq1 - 32 * n_proj == 0.8 * (body - 32 * n_proj)
    back = tmp_path / "back.gguf"
    assert run_convert(tq1, "-o", back, "--to", "i2_s") == 0
    with open_model_file(src) as a, open_model_file(back) as b:
        assert list(a.reader.tensors) == list(b.reader.tensors)
        for name in a.reader.tensors:
            assert bytes(a.reader.tensor_bytes(name)) == bytes(b.reader.tensor_bytes(name)), name
    # and i2s -> tq1 -> i2s -> tq1 is stable too
    again = tmp_path / "again.gguf"
    assert run_convert(back, "-o", again, "--to", "tq1") == 0
    assert again.read_bytes() == tq1.read_bytes()


def test_same_body_without_a_new_head_is_refused(tmp_path):
    src = Path(write_random_model(str(tmp_path / "m.gguf"), shape="tiny", head="q8_0", seed=2))
    tq1 = tmp_path / "tq1.gguf"
    run_convert(src, "-o", tq1, "--to", "tq1")
    with pytest.raises(EdgeRuntimeError, match="already an edge-runtime file with a tq1 body"):
        run_convert(tq1, "-o", tmp_path / "same.gguf", "--to", "tq1")
    assert run_convert(tq1, "-o", tmp_path / "q4.gguf", "--to", "tq1", "--head", "q4_0") == 0
    with open_model_file(tmp_path / "q4.gguf") as mf:
        assert mf.config.head_type == "q4_0" and mf.body_type == "TQ1_S"


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from helpers_hf import make_tiny_bitnet_dir  # noqa: E402


@pytest.mark.parametrize("kind", ["packed", "masters"])
def test_hf_checkpoint_to_tq1(kind, tmp_path):
    d = make_tiny_bitnet_dir(tmp_path / "hf", kind=kind, dtype="bfloat16", seed=21)
    round_trip(d, tmp_path)


def test_llama_cpp_tq2_0_file_to_tq1(tmp_path):
    d = make_tiny_bitnet_dir(tmp_path / "hf", kind="masters", seed=11, hidden=256, ffn=512, heads=4, kv_heads=2)
    ours = tmp_path / "ours.gguf"
    run_convert(d, "-o", ours)
    llama = tmp_path / "llama-tq2_0.gguf"
    run_convert(ours, "-o", llama, "--to", "tq2_0")
    (tmp_path / "rt").mkdir()
    _, tq1 = round_trip(llama, tmp_path / "rt", "--head", "f16")
    # TQ2_0 -> tq1 -> tq2_0 gives llama.cpp's file back
    again = tmp_path / "again-tq2_0.gguf"
    run_convert(tq1, "-o", again, "--to", "tq2_0")
    assert again.read_bytes() == llama.read_bytes()
