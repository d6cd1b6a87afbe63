"""Sources of `convert`: every input (a Hugging Face BitNet dir, a llama.cpp `bitnet` TQ2_0 GGUF, an
edge-runtime GGUF) read into the same neutral form: hyperparameters, ternary projections with one
scale each, f32 norms, the embedding/head as stored."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from edge_runtime.errors import EdgeRuntimeError, ModelFormatError
from edge_runtime.formats.gguf import (
    GGMLType, GGUFReader, ValueType, dequantize, tq1_0_to_ternary, tq2_0_to_ternary, unpack_ternary,
)
from edge_runtime.formats.model_file import (
    ARCH, LAYER_PROJECTIONS, LLAMA_CPP_BITNET_ARCH, ModelConfig, expected_tensors, open_model_file,
)
from edge_runtime.formats.safetensors import HFTensors
from edge_runtime.formats.ternary import (
    single_scale, ternarize_absmean, ternary_from_values, unpack_hf_ternary,
)

STORABLE_HEAD_TYPES = (GGMLType.F16, GGMLType.F32, GGMLType.Q8_0, GGMLType.Q4_0)
LLAMA_CPP_FILE_TYPE_TQ2_0 = 37  # llama.cpp's LLAMA_FTYPE_MOSTLY_TQ2_0 (general.file_type)
LLAMA_CPP_FILE_TYPE_TQ1_0 = 36  # llama.cpp's LLAMA_FTYPE_MOSTLY_TQ1_0

# llama.cpp token types (tokenizer.ggml.token_type)
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5

HF_PROJECTIONS = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
HF_NORMS = {
    "attn_norm": "input_layernorm", "attn_sub_norm": "self_attn.attn_sub_norm",
    "ffn_norm": "post_attention_layernorm", "ffn_sub_norm": "mlp.ffn_sub_norm",
}


class Source:
    """A model to convert. `config` has the hyperparameters (arch/head_type/tied describe the
    source); `tokenizer` maps GGUF keys to (value, value type); `projection(name)` -> (ternary,
    scale); `norm(name)` -> f32 vector; `matrix(name)` -> (ggml type, the stored data as bytes
    or a numpy view) for token_embd/output. `raw_projection(name, ggml_type)` gives the stored bytes
    when the source holds that projection in that type (I2_S or TQ1_S; copied as-is)."""

    config: ModelConfig
    tokenizer: dict
    name: str

    def projection(self, name: str) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def raw_projection(self, name: str, ggml_type: GGMLType):
        return None

    def norm(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def matrix(self, name: str):
        raise NotImplementedError

    def close(self) -> None:
        pass


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing ({what})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: cannot read {what}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: {what} is not a JSON object")
    return data


def _config_int(cfg: dict, key: str, path: Path, *, default=None, minimum: int = 1) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise ModelFormatError(f"{path}: {key} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelFormatError(f"{path}: {key} is {value!r}, expected an integer >= {minimum}")
    return value


def _config_float(value, key: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise ModelFormatError(f"{path}: {key} is {value!r}, expected a positive number")
    return float(value)


_GGML_TYPE_OF_SAFETENSORS = {"BF16": GGMLType.BF16, "F16": GGMLType.F16, "F32": GGMLType.F32}


class HFSource(Source):
    """A transformers BitNetForCausalLM checkpoint directory."""

    def __init__(self, directory: Path, name: str | None):
        self.dir = directory
        cfg_path = directory / "config.json"
        cfg = _read_json(cfg_path, "the model's config.json")
        if cfg.get("model_type") != "bitnet":
            raise ModelFormatError(
                f"{cfg_path}: model_type is {cfg.get('model_type')!r}, expected 'bitnet' "
                f"(a BitNetForCausalLM checkpoint)")
        if cfg.get("hidden_act", "relu2") != "relu2":
            raise ModelFormatError(f"{cfg_path}: hidden_act is {cfg['hidden_act']!r}, expected 'relu2'")
        if cfg.get("attention_bias"):
            raise ModelFormatError(f"{cfg_path}: attention_bias is true; BitNet has no biases")
        self._quantization(cfg, cfg_path)
        dim = _config_int(cfg, "hidden_size", cfg_path)
        n_heads = _config_int(cfg, "num_attention_heads", cfg_path)
        n_kv = _config_int(cfg, "num_key_value_heads", cfg_path, default=n_heads)
        if cfg.get("head_dim") is not None:
            head_dim = _config_int(cfg, "head_dim", cfg_path)
        elif dim % n_heads == 0:
            head_dim = dim // n_heads
        else:
            raise ModelFormatError(f"{cfg_path}: num_attention_heads {n_heads} does not divide "
                                   f"hidden_size {dim} and no head_dim is given")
        if n_heads % n_kv:
            raise ModelFormatError(f"{cfg_path}: num_key_value_heads {n_kv} does not divide "
                                   f"num_attention_heads {n_heads}")
        # transformers 5 keeps rope settings in rope_parameters, older configs in rope_scaling
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rope_type = rope.get("rope_type") or rope.get("type") or "default"
        if rope_type != "default":
            raise ModelFormatError(f"{cfg_path}: rope type {rope_type!r} is not supported "
                                   f"(only the default rotary embedding)")
        theta = rope.get("rope_theta", cfg.get("rope_theta", 500000.0))
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        n_vocab = _config_int(cfg, "vocab_size", cfg_path)
        self.config = ModelConfig(
            arch=ARCH, name="", n_vocab=n_vocab, dim=dim,
            n_layers=_config_int(cfg, "num_hidden_layers", cfg_path),
            n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim,
            ffn_dim=_config_int(cfg, "intermediate_size", cfg_path),
            # defaults as in transformers' BitNetConfig
            n_ctx_train=_config_int(cfg, "max_position_embeddings", cfg_path, default=2048),
            rope_theta=_config_float(theta, "rope_theta", cfg_path),
            norm_eps=_config_float(cfg.get("rms_norm_eps", 1e-5), "rms_norm_eps", cfg_path),
            head_type="f32", tied=self.tied,
        )
        self.name = name or cfg.get("_name_or_path") or directory.resolve().name
        self.tensors = HFTensors(directory)
        try:
            self._check_tensors()
            self.tokenizer = self._tokenizer(cfg, cfg_path)
        except BaseException:
            self.tensors.close()
            raise

    def _quantization(self, cfg: dict, cfg_path: Path) -> None:
        q = cfg.get("quantization_config")
        self.linear_class = None  # None: master weights ternarized here
        if q is None:
            return
        if not isinstance(q, dict) or q.get("quant_method") != "bitnet":
            method = q.get("quant_method") if isinstance(q, dict) else q
            raise ModelFormatError(f"{cfg_path}: quantization_config.quant_method is {method!r}, "
                                   f"expected 'bitnet'")
        if q.get("use_rms_norm"):
            raise ModelFormatError(f"{cfg_path}: quantization_config.use_rms_norm is true (a norm "
                                   f"inside every BitLinear), which this runtime does not support")
        skipped = [m for m in q.get("modules_to_not_convert") or []
                   if any(p.split(".")[-1] in m for p in HF_PROJECTIONS.values())]
        if skipped:
            raise ModelFormatError(f"{cfg_path}: quantization_config.modules_to_not_convert keeps "
                                   f"projections {skipped[:3]} in float; every projection must be ternary")
        linear_class = q.get("linear_class", "bitlinear")
        if linear_class not in ("bitlinear", "autobitlinear"):
            raise ModelFormatError(f"{cfg_path}: quantization_config.linear_class is "
                                   f"{linear_class!r}, expected 'bitlinear' or 'autobitlinear'")
        if linear_class == "autobitlinear" and q.get("quantization_mode", "offline") == "online":
            return  # master weights, quantized on the fly by the reference
        self.linear_class = linear_class

    def _hf(self, gguf_name: str) -> str:
        if gguf_name == "token_embd.weight":
            return "model.embed_tokens.weight"
        if gguf_name == "output.weight":
            return "lm_head.weight"
        if gguf_name == "output_norm.weight":
            return "model.norm.weight"
        _, layer, kind, _ = gguf_name.split(".")
        hf = HF_PROJECTIONS.get(kind) or HF_NORMS[kind]
        return f"model.layers.{layer}.{hf}.weight"

    def _check_tensors(self) -> None:
        c = self.config
        expected = expected_tensors(c)
        used = set()
        for gguf_name, (_, shape) in expected.items():
            hf = self._hf(gguf_name)
            if hf not in self.tensors:
                if gguf_name == "output.weight":
                    raise ModelFormatError(
                        f"{self.dir}: config.json has tie_word_embeddings false but there is no "
                        f"lm_head.weight (set tie_word_embeddings to true if the embedding is the head)")
                raise ModelFormatError(f"{self.dir}: tensor {hf} is missing")
            used.add(hf)
            got = self.tensors.shape(hf)
            dtype = self.tensors.dtype(hf)
            kind = gguf_name.split(".")[-2]
            if kind in HF_PROJECTIONS:
                scale_name = hf[: -len("weight")] + "weight_scale"
                used.add(scale_name)
                if dtype == "U8":
                    if self.linear_class is None:
                        raise ModelFormatError(
                            f"{self.dir}: {hf} is packed uint8 but config.json has no bitnet "
                            f"quantization_config saying how to scale it")
                    if shape[0] % 4:
                        raise ModelFormatError(f"{self.dir}: {hf}: {shape[0]} output rows "
                                               f"cannot be packed 4 per byte")
                    shape = (shape[0] // 4, shape[1])
                    self._check_scale(scale_name, hf)
                elif dtype in ("BF16", "F16", "F32"):
                    if scale_name in self.tensors:
                        if self.linear_class != "autobitlinear":
                            raise ModelFormatError(
                                f"{self.dir}: {hf} is {dtype} with a weight_scale; only "
                                f"linear_class 'autobitlinear' stores unpacked ternary weights")
                        self._check_scale(scale_name, hf)
                else:
                    raise ModelFormatError(f"{self.dir}: {hf} has dtype {dtype}; expected U8 "
                                           f"(packed), BF16, F16 or F32")
            elif dtype not in ("BF16", "F16", "F32"):
                raise ModelFormatError(f"{self.dir}: {hf} has dtype {dtype}; expected BF16, F16 or F32")
            if got != shape:
                raise ModelFormatError(
                    f"{self.dir}: {hf} has shape {list(got)}, expected {list(shape)} (from "
                    f"config.json: hidden {c.dim}, intermediate {c.ffn_dim}, heads "
                    f"{c.n_heads}/{c.n_kv_heads} x {c.head_dim}, vocab {c.n_vocab})")
        ignorable = {"lm_head.weight"} if self.tied else set()
        extra = [n for n in self.tensors.where
                 if n not in used and n not in ignorable and not n.endswith("rotary_emb.inv_freq")]
        if extra:
            raise ModelFormatError(f"{self.dir}: unexpected tensors {sorted(extra)[:5]} for a "
                                   f"{c.n_layers}-layer BitNet model")

    def _check_scale(self, scale_name: str, weight_name: str) -> None:
        if scale_name not in self.tensors:
            raise ModelFormatError(f"{self.dir}: {weight_name} has no {scale_name}")
        if math.prod(self.tensors.shape(scale_name)) != 1:
            raise ModelFormatError(f"{self.dir}: {scale_name} has shape "
                                   f"{list(self.tensors.shape(scale_name))}, expected one value")

    def _weight_scale(self, scale_name: str) -> float:
        value = float(self.tensors.float32(scale_name).reshape(-1)[0])
        if not math.isfinite(value) or value == 0:
            raise ModelFormatError(f"{self.dir}: {scale_name} is {value}, expected a finite non-zero value")
        return value

    def projection(self, name: str) -> tuple[np.ndarray, float]:
        hf = self._hf(name)
        scale_name = hf[: -len("weight")] + "weight_scale"
        if self.tensors.dtype(hf) == "U8":
            ternary = unpack_hf_ternary(self.tensors.raw(hf), name=f"{self.dir}: {hf}")
        elif scale_name in self.tensors:
            # AutoBitLinear offline may store the ternary weights unpacked, as floats
            values = self.tensors.float32(hf)
            ternary = np.clip(np.rint(values), -1, 1).astype(np.int8)
            if not np.array_equal(values, ternary):
                raise ModelFormatError(f"{self.dir}: {hf} holds values other than -1, 0, +1 "
                                       f"next to its weight_scale")
        else:
            try:
                return ternarize_absmean(self.tensors.float32(hf))
            except ValueError as exc:
                raise ModelFormatError(f"{self.dir}: {hf}: {exc}") from None
        weight_scale = self._weight_scale(scale_name)
        # BitLinear divides its output by weight_scale; AutoBitLinear (offline) multiplies.
        scale = float(np.float32(1) / np.float32(weight_scale)) if self.linear_class == "bitlinear" \
            else weight_scale
        if scale < 0:  # the same effective weights with the sign moved into the codes
            ternary, scale = -ternary, -scale
        return ternary, scale

    def norm(self, name: str) -> np.ndarray:
        return self.tensors.float32(self._hf(name))

    def matrix(self, name: str):
        hf = self._hf(name)
        return _GGML_TYPE_OF_SAFETENSORS[self.tensors.dtype(hf)], self.tensors.raw(hf)

    def _tokenizer(self, cfg: dict, cfg_path: Path) -> dict:
        path = self.dir / "tokenizer.json"
        if not path.is_file():
            return {}
        chat_template = None
        tok_cfg = self.dir / "tokenizer_config.json"
        if tok_cfg.is_file():
            template = _read_json(tok_cfg, "tokenizer config").get("chat_template")
            chat_template = template if isinstance(template, str) else None
        eos = cfg.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        return tokenizer_metadata_from_hf(
            path, n_vocab=self.config.n_vocab, bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=eos, chat_template=chat_template)

    def close(self) -> None:
        self.tensors.close()


def tokenizer_metadata_from_hf(path, *, n_vocab: int, bos_token_id=None, eos_token_id=None,
                               chat_template: str | None = None) -> dict:
    """A byte-level BPE tokenizer.json -> GGUF tokenizer keys -> (value, value type).

    tokens: the vocab plus added tokens by id, gaps and the padding up to n_vocab filled with
    "[PAD<id>]" (type unused); token_type: 1 normal, 3 control (special added tokens), 4
    user-defined (other added tokens), 5 unused; merges as "a b" strings (tokenizer.json has
    them either so or as [a, b] pairs); bos/eos from the model config, eot = <|eot_id|>."""
    path = Path(path)
    tj = _read_json(path, "tokenizer")
    model = tj.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else None
        raise ModelFormatError(f"{path}: tokenizer model type is {kind!r}, expected 'BPE'")
    vocab = model.get("vocab")
    merges = model.get("merges", [])
    added = tj.get("added_tokens") or []
    if not isinstance(vocab, dict) or not isinstance(merges, list) or not isinstance(added, list):
        raise ModelFormatError(f"{path}: model.vocab, model.merges or added_tokens has the wrong type")
    by_id: dict[int, tuple[str, int]] = {}
    for token, idx in vocab.items():
        if not isinstance(idx, int) or idx < 0:
            raise ModelFormatError(f"{path}: vocab entry {token!r} has id {idx!r}")
        if idx in by_id:
            raise ModelFormatError(f"{path}: id {idx} is used by {by_id[idx][0]!r} and {token!r}")
        by_id[idx] = (token, TOKEN_NORMAL)
    for entry in added:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or not isinstance(
                entry.get("content"), str):
            raise ModelFormatError(f"{path}: added_tokens entry {entry!r} needs an int id and content")
        idx, content = entry["id"], entry["content"]
        if idx in by_id and by_id[idx][0] != content:
            raise ModelFormatError(f"{path}: added token {content!r} reuses id {idx} of "
                                   f"{by_id[idx][0]!r}")
        by_id[idx] = (content, TOKEN_CONTROL if entry.get("special") else TOKEN_USER_DEFINED)
    size = max(by_id, default=-1) + 1
    if size > n_vocab:
        raise ModelFormatError(f"{path}: the tokenizer has ids up to {size - 1} but the model's "
                               f"vocab_size is {n_vocab}")
    tokens, types = [], np.empty(n_vocab, dtype=np.int32)
    for i in range(n_vocab):
        token, kind = by_id.get(i, (f"[PAD{i}]", TOKEN_UNUSED))
        tokens.append(token)
        types[i] = kind
    merge_strings = []
    for m in merges:
        if isinstance(m, str):
            merge_strings.append(m)
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            merge_strings.append(f"{m[0]} {m[1]}")
        else:
            raise ModelFormatError(f"{path}: merge {m!r} is neither 'a b' nor [a, b]")
    strings = (ValueType.ARRAY, ValueType.STRING)
    out = {
        "tokenizer.ggml.model": ("gpt2", ValueType.STRING),
        "tokenizer.ggml.pre": ("llama-bpe", ValueType.STRING),
        "tokenizer.ggml.tokens": (tokens, strings),
        "tokenizer.ggml.token_type": (types, (ValueType.ARRAY, ValueType.INT32)),
        "tokenizer.ggml.merges": (merge_strings, strings),
    }
    for key, value in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_vocab:
            raise ModelFormatError(f"{path}: {key} {value!r} is not a token id below {n_vocab}")
        out[f"tokenizer.ggml.{key}"] = (value, ValueType.UINT32)
    if "<|eot_id|>" in tokens:
        out["tokenizer.ggml.eot_token_id"] = (tokens.index("<|eot_id|>"), ValueType.UINT32)
    if chat_template:
        out["tokenizer.chat_template"] = (chat_template, ValueType.STRING)
    return out


def _tokenizer_from_reader(reader: GGUFReader) -> dict:
    return {k: (v, reader.value_types[k]) for k, v in reader.metadata.items()
            if k.startswith("tokenizer.")}


class LlamaCppBitnetSource(Source):
    """A llama.cpp GGUF of architecture `bitnet`: TQ2_0 (or f16/f32 ternary-valued) projections
    with optional per-tensor `.scale` tensors, the same tensor names as ours."""

    def __init__(self, reader: GGUFReader, name: str | None):
        self.reader = reader
        path, meta = reader.path, reader.metadata
        k = LLAMA_CPP_BITNET_ARCH + "."

        def integer(key, default=None):
            value = meta.get(k + key, default)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ModelFormatError(f"{path}: metadata {k}{key} is {value!r}, expected an integer >= 1")
            return int(value)

        def number(key, default=None):
            value = meta.get(k + key, default)
            if isinstance(value, (bool, str)) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise ModelFormatError(f"{path}: metadata {k}{key} is {value!r}, expected a positive number")
            return float(value)

        scaling = meta.get(k + "rope.scaling.type", "none")
        factor = meta.get(k + "rope.scaling.factor", 1.0)
        if scaling not in ("none", "linear") or (scaling == "linear" and factor != 1.0):
            raise ModelFormatError(f"{path}: rope scaling {scaling!r} x {factor} is not supported")
        dim, n_heads = integer("embedding_length"), integer("attention.head_count")
        head_dim = integer("attention.key_length", dim // n_heads if dim % n_heads == 0 else None)
        n_layers = integer("block_count")
        if 2 + 11 * n_layers > len(reader.tensors):
            raise ModelFormatError(f"{path}: block_count {n_layers} needs more tensors than the "
                                   f"file's {len(reader.tensors)}")
        tokens = meta.get("tokenizer.ggml.tokens")
        embd = reader.tensors.get("token_embd.weight")
        n_vocab = meta.get(k + "vocab_size") or (len(tokens) if tokens else None) or (
            embd.shape[0] if embd is not None and len(embd.shape) == 2 else None)
        if not n_vocab:
            raise ModelFormatError(f"{path}: no {k}vocab_size, tokenizer or token_embd.weight "
                                   f"to take the vocabulary size from")
        self.config = ModelConfig(
            arch=LLAMA_CPP_BITNET_ARCH, name="", n_vocab=int(n_vocab), dim=dim,
            n_layers=n_layers, n_heads=n_heads,
            n_kv_heads=integer("attention.head_count_kv", n_heads), head_dim=head_dim,
            ffn_dim=integer("feed_forward_length"), n_ctx_train=integer("context_length"),
            # llama.cpp's own default when a file has no freq_base
            rope_theta=number("rope.freq_base", 10000.0),
            norm_eps=number("attention.layer_norm_rms_epsilon"),
            head_type="", tied="output.weight" not in reader.tensors,
        )
        if self.config.n_heads % self.config.n_kv_heads:
            raise ModelFormatError(f"{path}: head_count_kv does not divide head_count")
        self.name = name or meta.get("general.name") or Path(path).stem
        self.tokenizer = _tokenizer_from_reader(reader)
        self._check_tensors()

    def _check_tensors(self) -> None:
        path, tensors = self.reader.path, self.reader.tensors
        expected = expected_tensors(self.config)
        allowed = {
            "proj": (GGMLType.TQ2_0, GGMLType.TQ1_0, GGMLType.F32, GGMLType.F16, GGMLType.BF16),
            "norm": (GGMLType.F32, GGMLType.F16, GGMLType.BF16),
            "head": STORABLE_HEAD_TYPES + (GGMLType.BF16,),
        }
        scale_names = set()
        for name, (_, shape) in expected.items():
            info = tensors.get(name)
            if info is None:
                raise ModelFormatError(f"{path}: missing tensor {name}")
            kind = name.split(".")[-2]
            group = "proj" if kind in LAYER_PROJECTIONS else "head" if name in (
                "token_embd.weight", "output.weight") else "norm"
            if info.ggml_type not in allowed[group]:
                raise ModelFormatError(
                    f"{path}: tensor {name} has type {info.type_name}, expected one of "
                    f"{'/'.join(t.name for t in allowed[group])}")
            if info.shape != shape:
                raise ModelFormatError(f"{path}: tensor {name} has shape {list(info.shape)}, "
                                       f"expected {list(shape)} from the metadata")
            if group == "proj":
                scale_name = name[: -len("weight")] + "scale"
                if scale_name in tensors:
                    s = tensors[scale_name]
                    if s.n_elements != 1 or s.ggml_type not in (GGMLType.F32, GGMLType.F16):
                        raise ModelFormatError(f"{path}: {scale_name} must be one F32 value")
                    scale_names.add(scale_name)
        extra = [n for n in tensors if n not in expected and n not in scale_names]
        if extra:
            raise ModelFormatError(f"{path}: unexpected tensors {extra[:5]}")

    def projection(self, name: str) -> tuple[np.ndarray, float]:
        info = self.reader.tensors[name]
        rows, cols = info.shape
        what = f"{self.reader.path}: {name}"
        data = self.reader.tensor_bytes(name)
        if info.ggml_type in (GGMLType.TQ2_0, GGMLType.TQ1_0):
            decode = tq2_0_to_ternary if info.ggml_type == GGMLType.TQ2_0 else tq1_0_to_ternary
            ternary, block_scales = decode(data, rows, cols, name=what)
            scale = single_scale(ternary, block_scales, name=what)
        else:
            ternary, scale = ternary_from_values(dequantize(info.ggml_type, data, rows, cols), name=what)
        scale_name = name[: -len("weight")] + "scale"
        if scale_name in self.reader.tensors:
            s = self.reader.tensors[scale_name]
            factor = float(dequantize(s.ggml_type, self.reader.tensor_bytes(scale_name), 1, 1)[0, 0])
            if not math.isfinite(factor) or factor == 0:
                raise ModelFormatError(f"{self.reader.path}: {scale_name} is {factor}")
            scale *= factor
            if scale < 0:
                ternary, scale = -ternary, -scale
        return ternary, scale

    def norm(self, name: str) -> np.ndarray:
        info = self.reader.tensors[name]
        return dequantize(info.ggml_type, self.reader.tensor_bytes(name), 1, info.n_elements)[0]

    def matrix(self, name: str):
        info = self.reader.tensors[name]
        return info.ggml_type, self.reader.tensor_bytes(name)

    def close(self) -> None:
        self.reader.close()


class EdgeRuntimeSource(Source):
    """One of our own files (validated by open_model_file)."""

    def __init__(self, path: str, name: str | None):
        self.model = open_model_file(path)
        self.reader = self.model.reader
        self.config = self.model.config
        self.name = name or self.config.name
        self.tokenizer = _tokenizer_from_reader(self.reader)

    def projection(self, name: str) -> tuple[np.ndarray, float]:
        info = self.reader.tensors[name]
        rows, cols = info.shape
        return unpack_ternary(info.ggml_type, self.reader.tensor_bytes(name), rows, cols,
                              name=f"{self.reader.path}: {name}")

    def raw_projection(self, name: str, ggml_type: GGMLType):
        if self.reader.tensors[name].ggml_type != ggml_type:
            return None
        return self.reader.tensor_bytes(name)

    def norm(self, name: str) -> np.ndarray:
        return self.reader.tensor_array(name)

    def matrix(self, name: str):
        info = self.reader.tensors[name]
        return info.ggml_type, self.reader.tensor_bytes(name)

    def close(self) -> None:
        self.model.close()


def open_source(path: str, name: str | None = None) -> Source:
    p = Path(path)
    if p.is_dir():
        return HFSource(p, name)
    if not p.exists():
        raise EdgeRuntimeError(f"{path}: no such file or directory")
    reader = GGUFReader(p)
    arch = reader.metadata.get("general.architecture")
    if arch == LLAMA_CPP_BITNET_ARCH:
        try:
            return LlamaCppBitnetSource(reader, name)
        except BaseException:
            reader.close()
            raise
    reader.close()
    if arch == ARCH:
        return EdgeRuntimeSource(path, name)
    raise ModelFormatError(f"{path}: general.architecture is {arch!r}; convert reads "
                           f"'{LLAMA_CPP_BITNET_ARCH}' (llama.cpp) and '{ARCH}' GGUF files or a "
                           f"Hugging Face BitNet directory")
