"""A TQ1_S body gives the I2_S file's logits bit for bit: the same trits, the same int32 sums, on
every kernel variant this CPU runs, through the prompt GEMM (batches) and the decode GEMV."""
import argparse

import numpy as np
import pytest

from edge_runtime.engine import _engine
from edge_runtime.formats import convert
from edge_runtime.formats.model_file import open_model_file
from edge_runtime.formats.random_model import write_random_model
from edge_runtime.model.model import Model

TOKENS = [5, 17, 300, 2, 2, 511, 0, 42, 99, 100, 101, 7, 3, 250, 128, 64, 1, 480, 33]
# rows of 256 and 384 (tiny) leave a part-filled last chunk; 640 and 1280 fill whole chunks
SHAPES = {"tails": {}, "whole-chunks": dict(dim=640, n_heads=5, n_kv_heads=5, ffn_dim=1280)}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def pair(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("tq1-" + request.param)
    i2s = write_random_model(str(d / "i2s.gguf"), shape="tiny", head="q8_0", seed=7, **SHAPES[request.param])
    tq1 = d / "tq1.gguf"
    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    assert convert.main(parser.parse_args([i2s, "-o", str(tq1), "--to", "tq1"])) == 0
    with open_model_file(tq1) as mf:
        assert mf.body_type == "TQ1_S"
    return i2s, str(tq1)


def logits(path, **kw):
    with Model(path, n_ctx=64, **kw) as m:
        prompt = m.eval_logits(TOKENS)  # every position's logits: one batch through the GEMM
        decode = [m._engine.eval([t], len(TOKENS) + i).copy() for i, t in enumerate(TOKENS[:5])]
    return prompt, np.stack(decode)


@pytest.mark.parametrize("kernel", _engine.available_kernels())
def test_tq1_logits_bit_identical_to_i2s(pair, kernel):
    i2s, tq1 = pair
    for n_batch, n_threads in ((32, 1), (1, 1), (7, 2)):
        want = logits(i2s, kernel=kernel, n_batch=n_batch, n_threads=n_threads)
        got = logits(tq1, kernel=kernel, n_batch=n_batch, n_threads=n_threads)
        assert np.isfinite(want[0]).all()
        for w, g in zip(want, got):
            assert w.tobytes() == g.tobytes(), f"{kernel} n_batch={n_batch} n_threads={n_threads}"


def test_truncated_tq1_tensor_is_a_format_error(pair, tmp_path):
    from edge_runtime.errors import ModelFormatError

    _, tq1 = pair
    data = open(tq1, "rb").read()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 4096])
    with pytest.raises(ModelFormatError):
        Model(str(cut), n_ctx=16)
