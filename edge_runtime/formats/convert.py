"""`edge-runtime convert`: write an edge-runtime GGUF (architecture `bitnet-b1.58`, I2_S
projections — or with `--to tq1` the 1.6-bit TQ1_S ones, the same trits — F32 norms, an
F16/Q8_0/Q4_0 head) from

- a Hugging Face BitNet checkpoint dir (config.json + *.safetensors): packed uint8 projections
  with a weight_scale each, or float master weights ternarized here per tensor;
- a llama.cpp GGUF of architecture `bitnet` (TQ2_0 or TQ1_0 projections);
- an edge-runtime GGUF (to change its head type, or its body between I2_S and TQ1_S: the same
  trits and scale either way, so i2_s -> tq1 -> i2_s gives the same bytes back);

or, with `--to tq2_0` / `--to tq1_0`, export any of these as a llama.cpp `bitnet` GGUF.

Every source is read into the same neutral form (hyperparameters, ternary projections with one
scale each, f32 norms, the embedding/head as stored), checked for names and shapes first, then
streamed tensor by tensor into the output, which appears only when complete.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

import numpy as np

from edge_runtime.errors import EdgeRuntimeError, ModelFormatError
from edge_runtime.formats.gguf import (
    GGMLType, GGUFWriter, TQ2_0_BLOCK, ValueType, dequantize, pack_ternary, quantize,
    tensor_nbytes, ternary_to_tq1_0, ternary_to_tq2_0,
)
from edge_runtime.formats.model_file import (
    ARCH, LAYER_NORMS, LLAMA_CPP_BITNET_ARCH, ModelConfig, expected_tensors,
)
from edge_runtime.formats.sources import (
    LLAMA_CPP_FILE_TYPE_TQ1_0, LLAMA_CPP_FILE_TYPE_TQ2_0, STORABLE_HEAD_TYPES, EdgeRuntimeSource, HFSource, Source, open_source,
)

HEAD_CHOICES = {"f16": GGMLType.F16, "q8_0": GGMLType.Q8_0, "q4_0": GGMLType.Q4_0}
# --to: the projections' type; i2_s and tq1 write our architecture, tq2_0 and tq1_0 llama.cpp's
BODY_TYPES = {"i2_s": GGMLType.I2_S, "tq1": GGMLType.TQ1_S, "tq2_0": GGMLType.TQ2_0, "tq1_0": GGMLType.TQ1_0}
# the llama.cpp exports: general.file_type and the encoder of each
LLAMA_CPP_EXPORTS = {"tq2_0": (LLAMA_CPP_FILE_TYPE_TQ2_0, ternary_to_tq2_0),
                     "tq1_0": (LLAMA_CPP_FILE_TYPE_TQ1_0, ternary_to_tq1_0)}


HEAD_CHUNK_BYTES = 64 << 20  # f32 working set while requantizing a head (2B4T's is 1.3 GB in f32)


def _head_bytes(source: Source, name: str, target: GGMLType) -> Callable[[], bytes]:
    """Producer of token_embd/output in `target` type: the stored bytes when they already are,
    else dequantized to f32 and quantized again, a slab of rows at a time."""

    def produce():
        stored_type, data = source.matrix(name)
        raw = memoryview(data).cast("B") if isinstance(data, np.ndarray) else data
        if stored_type == target:
            return raw
        rows, cols = source.config.n_vocab, source.config.dim
        row_bytes = tensor_nbytes(stored_type, (cols,))
        step = max(1, HEAD_CHUNK_BYTES // (4 * cols))
        parts = []
        for start in range(0, rows, step):
            end = min(rows, start + step)
            x = dequantize(stored_type, raw[start * row_bytes : end * row_bytes], end - start, cols)
            try:
                parts.append(quantize(target, x, name=name))
            except ValueError as exc:
                raise ModelFormatError(f"{name}: cannot store as {target.name}: {exc}") from None
        return b"".join(parts)

    return produce


def _tensor_plan(source: Source) -> list[tuple[str, str]]:
    """(name, kind) in file order; kind is 'head', 'norm' or 'proj'."""
    plan = [("token_embd.weight", "head"), ("output_norm.weight", "norm")]
    if not source.config.tied:
        plan.append(("output.weight", "head"))
    for i in range(source.config.n_layers):
        for kind in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_sub_norm",
                     "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "ffn_sub_norm"):
            plan.append((f"blk.{i}.{kind}.weight", "norm" if kind in LAYER_NORMS else "proj"))
    return plan


def _hparams(writer: GGUFWriter, arch: str, c: ModelConfig) -> None:
    k = arch + "."
    u32 = ValueType.UINT32
    writer.add(k + "vocab_size", c.n_vocab, u32)
    writer.add(k + "context_length", c.n_ctx_train, u32)
    writer.add(k + "embedding_length", c.dim, u32)
    writer.add(k + "feed_forward_length", c.ffn_dim, u32)
    writer.add(k + "block_count", c.n_layers, u32)
    writer.add(k + "attention.head_count", c.n_heads, u32)
    writer.add(k + "attention.head_count_kv", c.n_kv_heads, u32)
    if c.head_dim * c.n_heads != c.dim:
        writer.add(k + "attention.key_length", c.head_dim, u32)
        writer.add(k + "attention.value_length", c.head_dim, u32)
    writer.add(k + "rope.dimension_count", c.head_dim, u32)
    writer.add(k + "rope.freq_base", c.rope_theta, ValueType.FLOAT32)
    writer.add(k + "attention.layer_norm_rms_epsilon", c.norm_eps, ValueType.FLOAT32)


def write_model(source: Source, output: str, *, to: str, head: GGMLType,
                embedding: GGMLType | None = None, progress: Callable | None = None) -> None:
    """Write `source` as our I2_S file (to="i2_s"), our TQ1_S file ("tq1") or llama.cpp's TQ2_0 or
    TQ1_0 bitnet file ("tq2_0", "tq1_0").
    `head` is the type of the output head: token_embd when tied, else output.weight, with
    token_embd then stored as `embedding` (F16 when not given)."""
    c = source.config
    embedding = head if c.tied else (embedding or GGMLType.F16)
    if to not in BODY_TYPES:
        raise EdgeRuntimeError(f"unknown body type {to!r} (expected one of {', '.join(BODY_TYPES)})")
    body = BODY_TYPES[to]
    export = LLAMA_CPP_EXPORTS.get(to)
    arch = LLAMA_CPP_BITNET_ARCH if export else ARCH
    if export:
        if not c.tied:
            raise EdgeRuntimeError(
                "llama.cpp's 'bitnet' architecture has no separate output head (output.weight); "
                f"only a model with tied embeddings can be exported to {body.name}")
        bad = sorted({n for n in (c.dim, c.ffn_dim, c.n_heads * c.head_dim) if n % TQ2_0_BLOCK})
        if bad:  # TQ2_0 and TQ1_0 both take blocks of 256
            raise EdgeRuntimeError(f"{body.name} needs rows of a multiple of {TQ2_0_BLOCK} weights; "
                                   f"this model has rows of {bad}")
    writer = GGUFWriter(output)
    writer.add("general.architecture", arch)
    writer.add("general.name", source.name or "bitnet")
    if export:
        writer.add("general.file_type", export[0], ValueType.UINT32)
    _hparams(writer, arch, c)
    if export:
        writer.add(arch + ".rope.scaling.type", "linear")
        writer.add(arch + ".rope.scaling.factor", 1.0, ValueType.FLOAT32)
    for key, (value, vtype) in source.tokenizer.items():
        writer.add(key, value, vtype)

    shapes = {name: shape for name, (_, shape) in expected_tensors(c).items()}
    for name, kind in _tensor_plan(source):
        dims = shapes[name][::-1]
        if kind == "head":
            ggml_type = embedding if name == "token_embd.weight" else head
            writer.add_tensor(name, _head_bytes(source, name, ggml_type), ggml_type, dims)
        elif kind == "norm":

            def norm_bytes(name=name):
                return np.ascontiguousarray(source.norm(name), dtype="<f4").tobytes()

            writer.add_tensor(name, norm_bytes, GGMLType.F32, dims)
        else:

            def proj_bytes(name=name):
                if not export:
                    raw = source.raw_projection(name, body)
                    if raw is not None:
                        return raw
                ternary, scale = source.projection(name)
                try:
                    if export:
                        return export[1](ternary, scale)
                    return pack_ternary(body, ternary, scale)
                except ValueError as exc:
                    raise ModelFormatError(f"{name}: {exc}") from None

            writer.add_tensor(name, proj_bytes, body, dims)
    writer.write(progress)


class _ProgressBar:
    """`[#####.....] 12/332 blk.3.ffn_up.weight` on stderr, redrawn in place."""

    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream = stream
        self.width = width

    def __call__(self, done: int, total: int, name: str) -> None:
        filled = self.width * done // max(total, 1)
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {name}"
        self.stream.write(line.ljust(80))
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="a Hugging Face BitNet checkpoint dir, a llama.cpp 'bitnet' "
                                 "TQ2_0/TQ1_0 GGUF, or an edge-runtime GGUF")
    p.add_argument("-o", "--output", required=True, help="the GGUF file to write")
    p.add_argument("--head", choices=sorted(HEAD_CHOICES), default=None,
                   help="type of the output head / embedding: f16 (default for checkpoints), "
                        "q8_0 (default for --to tq2_0/tq1_0), q4_0; GGUF inputs keep theirs by default")
    p.add_argument("--to", choices=tuple(BODY_TYPES), default="i2_s",
                   help="i2_s: edge-runtime 2-bit body (default); tq1: edge-runtime 1.6-bit body "
                        "(the same trits, 20%% fewer bytes); tq2_0, tq1_0: llama.cpp 'bitnet' formats")
    p.add_argument("--name", default=None, help="model name to store (general.name)")
    p.add_argument("--progress", action="store_true",
                   help="show a progress bar even when stderr is not a terminal")


def _kept_type(source: Source, name: str) -> GGMLType:
    """A GGUF source's stored type when we can store it too; F16 otherwise (and for checkpoints)."""
    if isinstance(source, HFSource):
        return GGMLType.F16
    stored, _ = source.matrix(name)
    return stored if stored in STORABLE_HEAD_TYPES else GGMLType.F16


def main(args) -> int:
    output = os.path.abspath(args.output)
    out_dir = os.path.dirname(output)
    if not os.path.isdir(out_dir):
        raise EdgeRuntimeError(f"{args.output}: directory {out_dir} does not exist")
    if os.path.exists(args.input) and os.path.exists(output) and os.path.samefile(args.input, output):
        raise EdgeRuntimeError(f"{args.output}: output would overwrite the input")
    source = open_source(args.input, args.name)
    try:
        if (isinstance(source, EdgeRuntimeSource) and args.to not in LLAMA_CPP_EXPORTS and args.head is None
                and source.model.body_type == BODY_TYPES[args.to].name):
            raise EdgeRuntimeError(f"{args.input} is already an edge-runtime file with a {args.to} body; give "
                                   f"--head to change its head type, --to tq1 or --to i2_s to change "
                                   f"its body, or --to tq2_0 / --to tq1_0 to export it")
        head_name = "token_embd.weight" if source.config.tied else "output.weight"
        if args.head:
            head = HEAD_CHOICES[args.head]
        else:
            head = GGMLType.Q8_0 if args.to in LLAMA_CPP_EXPORTS else _kept_type(source, head_name)
        embedding = _kept_type(source, "token_embd.weight")
        show = getattr(args, "progress", False) or sys.stderr.isatty()
        try:
            write_model(source, output, to=args.to, head=head, embedding=embedding,
                        progress=_ProgressBar() if show else None)
        except OSError as exc:
            raise EdgeRuntimeError(f"{args.output}: cannot write: {exc.strerror or exc}") from None
    finally:
        source.close()
    size = os.path.getsize(output)
    c = source.config
    print(f"wrote {args.output}: {BODY_TYPES[args.to].name} {c.n_layers} layers, dim {c.dim}, vocab "
          f"{c.n_vocab}, head {head.name}, {size / 1e6:.1f} MB")
    return 0
