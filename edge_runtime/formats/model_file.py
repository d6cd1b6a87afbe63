"""A BitNet b1.58 model file checked at the model level: the hyperparameters in the metadata,
and every tensor's presence, type and shape against them, before any weight is used.

Tensor shapes below are numpy order (rows, cols); GGUF stores the reversed dims.

    token_embd.weight          F16|F32|Q8_0|Q4_0   (n_vocab, dim)     also the head when tied
    output.weight (optional)   F16|F32|Q8_0|Q4_0   (n_vocab, dim)     a separate head
    output_norm.weight         F32                 (dim,)
    blk.N.attn_norm.weight     F32                 (dim,)
    blk.N.attn_q.weight        I2_S|TQ1_S          (n_head * head_dim, dim)   every projection:
                                                                      2-bit or 1.6-bit ternary
    blk.N.attn_k/attn_v.weight I2_S                (n_kv * head_dim, dim)
    blk.N.attn_output.weight   I2_S                (dim, n_head * head_dim)
    blk.N.attn_sub_norm.weight F32                 (dim,)
    blk.N.ffn_norm.weight      F32                 (dim,)
    blk.N.ffn_gate/ffn_up      I2_S                (ffn, dim)
    blk.N.ffn_down.weight      I2_S                (dim, ffn)
    blk.N.ffn_sub_norm.weight  F32                 (ffn,)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from edge_runtime.errors import ModelFormatError
from edge_runtime.formats.gguf import GGMLType, GGUFReader, I2S_GROUP, TensorInfo, ValueType, ternary_scale

ARCH = "bitnet-b1.58"
LLAMA_CPP_BITNET_ARCH = "bitnet"
HEAD_TYPES = {
    GGMLType.F16: "f16",
    GGMLType.F32: "f32",
    GGMLType.Q8_0: "q8_0",
    GGMLType.Q4_0: "q4_0",
}
NORM_TYPES = (GGMLType.F32,)
PROJECTION_TYPES = (GGMLType.I2_S, GGMLType.TQ1_S)
# Per-layer tensors, in the order a layer uses them.
LAYER_NORMS = ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")
LAYER_PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
TENSORS_PER_LAYER = len(LAYER_NORMS) + len(LAYER_PROJECTIONS)


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    name: str
    n_vocab: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    n_ctx_train: int
    rope_theta: float
    norm_eps: float
    head_type: str  # 'f16' | 'q8_0' | 'q4_0' | 'f32'
    tied: bool  # token_embd is also the output head


def expected_tensors(config: ModelConfig) -> dict[str, tuple[tuple[GGMLType, ...], tuple[int, ...]]]:
    """Every tensor a file of `config` must hold: name -> (allowed types, numpy shape)."""
    dim, ffn = config.dim, config.ffn_dim
    q_dim = config.n_heads * config.head_dim
    kv_dim = config.n_kv_heads * config.head_dim
    head_types = tuple(HEAD_TYPES)
    out = {
        "token_embd.weight": (head_types, (config.n_vocab, dim)),
        "output_norm.weight": (NORM_TYPES, (dim,)),
    }
    if not config.tied:
        out["output.weight"] = (head_types, (config.n_vocab, dim))
    for i in range(config.n_layers):
        p = f"blk.{i}."
        out[p + "attn_norm.weight"] = (NORM_TYPES, (dim,))
        out[p + "attn_q.weight"] = (PROJECTION_TYPES, (q_dim, dim))
        out[p + "attn_k.weight"] = (PROJECTION_TYPES, (kv_dim, dim))
        out[p + "attn_v.weight"] = (PROJECTION_TYPES, (kv_dim, dim))
        out[p + "attn_output.weight"] = (PROJECTION_TYPES, (dim, q_dim))
        out[p + "attn_sub_norm.weight"] = (NORM_TYPES, (dim,))
        out[p + "ffn_norm.weight"] = (NORM_TYPES, (dim,))
        out[p + "ffn_gate.weight"] = (PROJECTION_TYPES, (ffn, dim))
        out[p + "ffn_up.weight"] = (PROJECTION_TYPES, (ffn, dim))
        out[p + "ffn_down.weight"] = (PROJECTION_TYPES, (dim, ffn))
        out[p + "ffn_sub_norm.weight"] = (NORM_TYPES, (ffn,))
    return out


@dataclass
class ModelFile:
    path: str
    reader: GGUFReader
    config: ModelConfig
    _i2s_scales: dict[str, float] = field(default_factory=dict, repr=False)

    def tensor(self, name: str) -> TensorInfo:
        return self.reader.tensor_info(name)

    def i2s_scale(self, name: str) -> float:
        """The per-tensor scale of an I2_S or TQ1_S projection: its effective weight is
        ternary * scale."""
        return self._i2s_scales[name]

    @property
    def tokenizer_metadata(self) -> dict:
        """Every `tokenizer.*` entry (tokenizer.ggml.tokens, .merges, .token_type, ids, chat
        template, ...); empty when the file carries no tokenizer."""
        return {k: v for k, v in self.reader.metadata.items() if k.startswith("tokenizer.")}

    @property
    def body_type(self) -> str:
        """The projections' type: 'I2_S', 'TQ1_S', or 'I2_S+TQ1_S' for a file that mixes them."""
        types = sorted({self.reader.tensors[n].type_name for n in self._i2s_scales})
        return "+".join(types)

    @property
    def file_size(self) -> int:
        return self.reader.file_size

    @property
    def weights_nbytes(self) -> int:
        return sum(t.nbytes for t in self.reader.tensors.values())

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "ModelFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Metadata:
    """Typed look-ups in a reader's metadata whose errors name the file and key."""

    def __init__(self, reader: GGUFReader):
        self.reader = reader
        self.path = reader.path

    def fail(self, key: str, message: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path}: metadata {key}: {message}")

    def has(self, key: str) -> bool:
        return key in self.reader.metadata

    def integer(self, key: str, *, default: int | None = None, minimum: int = 1) -> int:
        if key not in self.reader.metadata:
            if default is not None:
                return default
            raise self.fail(key, f"missing (expected an integer >= {minimum})")
        value, vtype = self.reader.metadata[key], self.reader.value_types[key]
        if isinstance(vtype, tuple) or vtype in (ValueType.BOOL, ValueType.STRING,
                                                 ValueType.FLOAT32, ValueType.FLOAT64):
            raise self.fail(key, f"is {value!r} ({_type_label(vtype)}), expected an integer")
        if value < minimum:
            raise self.fail(key, f"is {value}, expected an integer >= {minimum}")
        return int(value)

    def positive_float(self, key: str) -> float:
        if key not in self.reader.metadata:
            raise self.fail(key, "missing (expected a positive number)")
        value, vtype = self.reader.metadata[key], self.reader.value_types[key]
        if isinstance(vtype, tuple) or vtype in (ValueType.BOOL, ValueType.STRING):
            raise self.fail(key, f"is {value!r} ({_type_label(vtype)}), expected a number")
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise self.fail(key, f"is {value}, expected a finite number > 0")
        return value

    def string(self, key: str, default: str) -> str:
        if key not in self.reader.metadata:
            return default
        value = self.reader.metadata[key]
        if not isinstance(value, str):
            raise self.fail(key, f"is {value!r}, expected a string")
        return value


def _type_label(vtype) -> str:
    return f"ARRAY of {ValueType(vtype[1]).name}" if isinstance(vtype, tuple) else ValueType(vtype).name


def read_config(reader: GGUFReader) -> ModelConfig:
    """Hyperparameters of a `bitnet-b1.58` file, checked for consistency with each other and with
    the tensor count (so a lying block_count fails before any per-layer work)."""
    path = reader.path
    meta = _Metadata(reader)
    arch = reader.metadata.get("general.architecture")
    if arch == LLAMA_CPP_BITNET_ARCH:
        raise ModelFormatError(
            f"{path}: this is a llama.cpp 'bitnet' file (TQ2_0/TQ1_0 weights); convert it first: "
            f"edge-runtime convert {path} -o model-i2_s.gguf"
        )
    if arch != ARCH:
        raise ModelFormatError(
            f"{path}: general.architecture is {arch!r}, expected {ARCH!r} (a BitNet b1.58 model)"
        )
    k = ARCH + "."
    n_layers = meta.integer(k + "block_count")
    # Bounds the per-layer name checks a hostile count could otherwise make endless; a count
    # that is merely wrong is reported as missing or unexpected tensors, which says more.
    if n_layers > len(reader.tensors):
        raise ModelFormatError(
            f"{path}: metadata {k}block_count is {n_layers}, which needs at least "
            f"{2 + n_layers * TENSORS_PER_LAYER} tensors, but the file holds {len(reader.tensors)}"
        )
    dim = meta.integer(k + "embedding_length")
    ffn_dim = meta.integer(k + "feed_forward_length")
    n_heads = meta.integer(k + "attention.head_count")
    n_kv_heads = meta.integer(k + "attention.head_count_kv", default=n_heads)
    if n_heads % n_kv_heads:
        raise meta.fail(
            k + "attention.head_count_kv",
            f"{n_kv_heads} does not divide head_count {n_heads} (grouped-query attention needs it)",
        )
    if meta.has(k + "attention.key_length"):
        head_dim = meta.integer(k + "attention.key_length")
    else:
        if dim % n_heads:
            raise meta.fail(
                k + "attention.head_count",
                f"{n_heads} does not divide embedding_length {dim} and no key_length is given",
            )
        head_dim = dim // n_heads
    if meta.has(k + "attention.value_length"):
        value_length = meta.integer(k + "attention.value_length")
        if value_length != head_dim:
            raise meta.fail(k + "attention.value_length",
                            f"is {value_length}, expected the key length {head_dim}")
    if head_dim % 2:
        raise ModelFormatError(f"{path}: head_dim {head_dim} is odd; rotary embedding needs it even")
    if meta.has(k + "rope.dimension_count"):
        rope_dims = meta.integer(k + "rope.dimension_count")
        if rope_dims != head_dim:
            raise meta.fail(k + "rope.dimension_count",
                            f"is {rope_dims}, expected the head dim {head_dim} (full rotary)")
    n_ctx_train = meta.integer(k + "context_length")
    rope_theta = meta.positive_float(k + "rope.freq_base")
    norm_eps = meta.positive_float(k + "attention.layer_norm_rms_epsilon")

    n_tokens = None
    tokens = reader.metadata.get("tokenizer.ggml.tokens")
    if tokens is not None:
        if reader.value_types["tokenizer.ggml.tokens"] != (ValueType.ARRAY, ValueType.STRING):
            raise meta.fail("tokenizer.ggml.tokens", "expected an array of strings")
        n_tokens = len(tokens)
    embd = reader.tensors.get("token_embd.weight")
    if meta.has(k + "vocab_size"):
        n_vocab = meta.integer(k + "vocab_size")
    elif n_tokens:
        n_vocab = n_tokens
    elif embd is not None and len(embd.shape) == 2:
        n_vocab = embd.shape[0]  # no tokenizer and no vocab_size: nothing else to go by
    else:
        raise meta.fail(k + "vocab_size", "missing, and the file has no tokenizer.ggml.tokens")
    if n_tokens is not None and n_tokens > n_vocab:
        raise ModelFormatError(
            f"{path}: the tokenizer has {n_tokens} tokens but the vocabulary size is {n_vocab}"
        )

    tied = "output.weight" not in reader.tensors
    head = reader.tensors.get("token_embd.weight" if tied else "output.weight")
    head_type = HEAD_TYPES.get(head.ggml_type, head.type_name.lower()) if head else "missing"
    return ModelConfig(
        arch=arch,
        name=meta.string("general.name", os.path.splitext(os.path.basename(path))[0]),
        n_vocab=n_vocab,
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        ffn_dim=ffn_dim,
        n_ctx_train=n_ctx_train,
        rope_theta=rope_theta,
        norm_eps=norm_eps,
        head_type=head_type,
        tied=tied,
    )


def check_tensors(reader: GGUFReader, config: ModelConfig) -> dict[str, float]:
    """Check presence, type and shape of every tensor; returns the I2_S scales by name."""
    path = reader.path
    expected = expected_tensors(config)
    missing = [name for name in expected if name not in reader.tensors]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ModelFormatError(f"{path}: missing tensors {missing[:5]}{more}")
    extra = [name for name in reader.tensors if name not in expected]
    if extra:
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        raise ModelFormatError(
            f"{path}: unexpected tensors {extra[:5]}{more} for a {config.n_layers}-layer {ARCH} model"
        )
    scales = {}
    for name, (types, shape) in expected.items():
        info = reader.tensors[name]
        if info.ggml_type not in types:
            allowed = "/".join(t.name for t in types)
            raise ModelFormatError(
                f"{path}: tensor {name} has type {info.type_name}, expected {allowed}"
            )
        if info.shape != shape:
            raise ModelFormatError(
                f"{path}: tensor {name} has shape {list(info.shape)}, expected {list(shape)} "
                f"(from the metadata: dim {config.dim}, ffn {config.ffn_dim}, heads "
                f"{config.n_heads}/{config.n_kv_heads} x {config.head_dim}, vocab {config.n_vocab})"
            )
        if info.ggml_type in PROJECTION_TYPES:
            if shape[1] % I2S_GROUP:
                raise ModelFormatError(
                    f"{path}: tensor {name} has rows of {shape[1]} weights; {info.type_name} needs a "
                    f"multiple of {I2S_GROUP}"
                )
            scale = ternary_scale(info.ggml_type, reader.buffer, shape[0], shape[1], offset=info.offset)
            if not math.isfinite(scale) or scale <= 0:
                raise ModelFormatError(
                    f"{path}: tensor {name} has {info.type_name} scale {scale} at offset "
                    f"{info.offset + info.nbytes - 32}, expected a finite number > 0"
                )
            scales[name] = scale
    return scales


def open_model_file(path: str | os.PathLike) -> ModelFile:
    """Open and fully validate a `bitnet-b1.58` GGUF; raises ModelFormatError naming what is wrong."""
    reader = GGUFReader(path)
    try:
        config = read_config(reader)
        scales = check_tensors(reader, config)
    except BaseException:
        reader.close()
        raise
    return ModelFile(path=reader.path, reader=reader, config=config, _i2s_scales=scales)
