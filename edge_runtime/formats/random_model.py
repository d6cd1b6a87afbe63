"""Model files with random ternary weights, in any BitNet b1.58 shape: for benchmarks (the 2B4T
shape without a 1.2 GB download) and for tests. Speed does not depend on the weights' values, so a
random file measures exactly what the real one would.
"""
import os

import numpy as np

from edge_runtime.formats.gguf import GGMLType, GGUFWriter

ARCH = "bitnet-b1.58"

SHAPES = {
    # BitNet b1.58 2B4T (FACTS.md)
    "2b4t": dict(n_vocab=128256, dim=2560, n_layers=30, n_heads=20, n_kv_heads=5, ffn_dim=6912, n_ctx_train=4096),
    # a small model of the same family, for tests
    "tiny": dict(n_vocab=512, dim=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=384, n_ctx_train=512),
}


def _i2s_image(rng, rows, cols):
    """An I2_S tensor image: rows*cols/4 bytes of codes in {0,1,2}, the f32 scale, padding to n/4+32."""
    n = rows * cols
    codes = rng.integers(0, 3, size=(n // 4, 4), dtype=np.uint8)
    packed = (codes[:, 0] << 6) | (codes[:, 1] << 4) | (codes[:, 2] << 2) | codes[:, 3]
    scale = np.float32(1.0 / np.sqrt(cols))  # keeps activations O(1) through the layers
    tail = np.zeros(32, dtype=np.uint8)
    tail[:4] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
    return np.concatenate([packed.astype(np.uint8), tail]).tobytes()


HEAD_TYPES = {"f16": GGMLType.F16, "f32": GGMLType.F32, "q8_0": GGMLType.Q8_0, "q4_0": GGMLType.Q4_0}


def _random_head(rng, rows, cols, head):
    """A random (rows, cols) embedding/head image of a type in HEAD_TYPES."""
    if head == "f16":
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16).tobytes()
    if head == "f32":
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).tobytes()
    if head == "q8_0":
        nb = rows * cols // 32
        blocks = np.empty((nb, 34), dtype=np.uint8)
        d = np.full(nb, 0.02 / 127 * 3, dtype=np.float16)
        blocks[:, :2] = d.view(np.uint8).reshape(nb, 2)
        blocks[:, 2:] = rng.integers(-127, 128, size=(nb, 32), dtype=np.int8).view(np.uint8)
        return blocks.tobytes()
    nb = rows * cols // 32  # q4_0
    blocks = np.empty((nb, 18), dtype=np.uint8)
    d = np.full(nb, 0.02 / 8 * 3, dtype=np.float16)
    blocks[:, :2] = d.view(np.uint8).reshape(nb, 2)
    blocks[:, 2:] = rng.integers(0, 256, size=(nb, 16), dtype=np.uint8)
    return blocks.tobytes()


def write_random_model(path, shape="tiny", head="q8_0", seed=0, name=None, tokenizer=None, **overrides):
    """Write a random BitNet b1.58 GGUF of a named shape (see SHAPES) to path; returns path.

    tokenizer: an edge_runtime.text.tokenizer.Tokenizer to store in the file (the vocabulary size then
    follows the tokenizer)."""
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r}: expected one of {sorted(SHAPES)}")
    if head not in HEAD_TYPES:
        raise ValueError(f"head type {head!r}: expected one of {sorted(HEAD_TYPES)}")
    s = {**SHAPES[shape], **overrides}
    if tokenizer is not None:
        s["n_vocab"] = tokenizer.n_vocab
    rng = np.random.default_rng(seed)
    dim, ffn, nh, nkv = s["dim"], s["ffn_dim"], s["n_heads"], s["n_kv_heads"]
    hd = dim // nh
    w = GGUFWriter(os.fspath(path))
    w.add("general.architecture", ARCH)
    w.add("general.name", name or f"random-{shape}-{head}")
    w.add(f"{ARCH}.vocab_size", s["n_vocab"])
    w.add(f"{ARCH}.context_length", s["n_ctx_train"])
    w.add(f"{ARCH}.embedding_length", dim)
    w.add(f"{ARCH}.feed_forward_length", ffn)
    w.add(f"{ARCH}.block_count", s["n_layers"])
    w.add(f"{ARCH}.attention.head_count", nh)
    w.add(f"{ARCH}.attention.head_count_kv", nkv)
    w.add(f"{ARCH}.rope.freq_base", 500000.0)
    w.add(f"{ARCH}.attention.layer_norm_rms_epsilon", 1e-5)
    if tokenizer is not None:
        for key, value in tokenizer.to_gguf_metadata().items():
            w.add(key, value)
    w.add_tensor("token_embd.weight", lambda: _random_head(rng, s["n_vocab"], dim, head), HEAD_TYPES[head],
                 (dim, s["n_vocab"]))
    ones = lambda n: (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)  # noqa: E731
    w.add_tensor("output_norm.weight", ones(dim), GGMLType.F32, (dim,))
    i2s = GGMLType.I2_S

    def lazy_i2s(rows, cols):  # generated when the writer reaches it: bounds peak memory
        return lambda: _i2s_image(rng, rows, cols)

    for l in range(s["n_layers"]):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", ones(dim), GGMLType.F32, (dim,))
        w.add_tensor(p + "attn_q.weight", lazy_i2s(nh * hd, dim), i2s, (dim, nh * hd))
        w.add_tensor(p + "attn_k.weight", lazy_i2s(nkv * hd, dim), i2s, (dim, nkv * hd))
        w.add_tensor(p + "attn_v.weight", lazy_i2s(nkv * hd, dim), i2s, (dim, nkv * hd))
        w.add_tensor(p + "attn_output.weight", lazy_i2s(dim, nh * hd), i2s, (nh * hd, dim))
        w.add_tensor(p + "attn_sub_norm.weight", ones(dim), GGMLType.F32, (dim,))
        w.add_tensor(p + "ffn_norm.weight", ones(dim), GGMLType.F32, (dim,))
        w.add_tensor(p + "ffn_gate.weight", lazy_i2s(ffn, dim), i2s, (dim, ffn))
        w.add_tensor(p + "ffn_up.weight", lazy_i2s(ffn, dim), i2s, (dim, ffn))
        w.add_tensor(p + "ffn_down.weight", lazy_i2s(dim, ffn), i2s, (ffn, dim))
        w.add_tensor(p + "ffn_sub_norm.weight", ones(ffn), GGMLType.F32, (ffn,))
    w.write()
    return path
