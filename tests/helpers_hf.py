"""Builders for tiny Hugging Face BitNet checkpoints, and the transformers reference model.

Test-only: needs torch, transformers (with accelerate, which transformers requires to load any
BitNet-quantized checkpoint) and safetensors.

Checkpoint kinds (what `edge-runtime convert` must accept):
- "masters": float master weights, ternarized per tensor at load/convert time. With
  quantization="none" config.json has no quantization_config (like the -bf16 release); with
  quantization="online" it declares AutoBitLinear online quantization (a QAT checkpoint).
- "packed": uint8 projections of shape [out/4, in] (transformers' own `pack_weights`) plus a
  `weight_scale` per projection, with quantization_config linear_class "bitlinear" (output
  DIVIDED by weight_scale, the released 2B4T format) or "autobitlinear" (output MULTIPLIED).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
ONLINE_QUANTIZATION = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                       "quantization_mode": "online"}


def _torch_dtype(dtype):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def make_tiny_bitnet_dir(
    path,
    *,
    kind: str = "packed",
    linear_class: str = "bitlinear",
    quantization: str = "none",
    seed: int = 0,
    vocab: int = 300,
    hidden: int = 256,
    ffn: int = 384,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    tie_word_embeddings: bool = True,
    dtype: str = "float32",
    max_position_embeddings: int = 512,
    rope_theta: float = 500000.0,
    rms_norm_eps: float = 1e-5,
    bos_token_id: int = 1,
    eos_token_id: int | list[int] = 2,
    tokenizer_json=None,
    shards: int = 1,
) -> str:
    """Write a random BitNetForCausalLM checkpoint to `path` (created) and return it as str.

    kind: "packed" or "masters"; linear_class (packed only): "bitlinear" or "autobitlinear";
    quantization (masters only): "none" or "online". Norm weights are random around 1 and each
    projection gets its own magnitude, so a swapped, transposed or mis-scaled tensor changes the
    output. tokenizer_json: a path to a tokenizer.json, its text, or a dict; copied into the dir.
    shards > 1 splits the weights over several safetensors files with an index, as large repos do.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations.bitnet import pack_weights

    if kind not in ("packed", "masters"):
        raise ValueError(f"kind must be 'packed' or 'masters', got {kind!r}")
    if linear_class not in ("bitlinear", "autobitlinear"):
        raise ValueError(f"linear_class must be 'bitlinear' or 'autobitlinear', got {linear_class!r}")
    if quantization not in ("none", "online"):
        raise ValueError(f"quantization must be 'none' or 'online', got {quantization!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch_dtype = _torch_dtype(dtype)

    config = BitNetConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        tie_word_embeddings=tie_word_embeddings, max_position_embeddings=max_position_embeddings,
        rms_norm_eps=rms_norm_eps, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
    )
    torch.manual_seed(seed)
    model = BitNetForCausalLM(config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn(param.shape, generator=generator))
            elif any(name.endswith(p + ".weight") for p in PROJECTIONS):
                param.mul_(0.5 + 1.5 * torch.rand((), generator=generator))
            elif name.endswith("embed_tokens.weight") or name == "lm_head.weight":
                param.copy_(torch.randn(param.shape, generator=generator))
    state = {k: v.detach().to(torch_dtype).contiguous() for k, v in model.state_dict().items()}
    if tie_word_embeddings:
        state.pop("lm_head.weight", None)

    config_dict = config.to_dict()
    config_dict["dtype"] = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if kind == "masters" and quantization == "online":
        config_dict["quantization_config"] = dict(ONLINE_QUANTIZATION)
    if kind == "packed":
        for name in list(state):
            if not any(name.endswith(p + ".weight") for p in PROJECTIONS):
                continue
            master = state[name].float()
            scale = master.abs().mean().clamp(min=1e-5)
            ternary = (master / scale).round().clamp(-1, 1)
            state[name] = pack_weights(ternary.clone())
            weight_scale = 1.0 / scale if linear_class == "bitlinear" else scale
            state[name[: -len("weight")] + "weight_scale"] = weight_scale.reshape(1).to(torch_dtype)
        config_dict["quantization_config"] = {
            "quant_method": "bitnet", "linear_class": linear_class, "quantization_mode": "offline",
        }

    names = sorted(state)
    if shards <= 1:
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i in range(shards):
            file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: state[k] for k in names[i::shards]}
            save_file(part, str(path / file), metadata={"format": "pt"})
            weight_map.update({k: file for k in part})
        (path / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    (path / "config.json").write_text(json.dumps(config_dict, indent=2))

    if tokenizer_json is not None:
        if isinstance(tokenizer_json, dict):
            text = json.dumps(tokenizer_json)
        elif isinstance(tokenizer_json, (str, os.PathLike)) and os.path.isfile(tokenizer_json):
            text = Path(tokenizer_json).read_text(encoding="utf-8")
        else:
            text = str(tokenizer_json)
        (path / "tokenizer.json").write_text(text, encoding="utf-8")
    return str(path)


# Llama 3's pre-tokenizer split (the "llama-bpe" pre-tokenizer in GGUF terms).
LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TINY_SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>")
TINY_CORPUS = (
    "The quick brown fox jumps over the lazy dog. ",
    "User: what is a ternary weight? Assistant: one of -1, 0 or +1, times a scale.",
    "Raspberry Pi 5 boards run small language models at 4.6 tokens per second.",
    "int main(void) { return 0; } // 123 4567 89",
    "naïve café, Grüße, 東京, emoji 🙂 and tabs\tand\nnewlines",
)


def make_tiny_tokenizer_json(n_tokens: int = 300, special_tokens=TINY_SPECIAL_TOKENS) -> dict:
    """A deterministic byte-level BPE tokenizer in Llama 3's style (its split regex, byte-level
    alphabet, special tokens appended after the learned vocabulary), with exactly `n_tokens`
    ids: the specials take the last ids. Returns the tokenizer.json content as a dict."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_tokens - len(special_tokens), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(TINY_CORPUS) * 20, trainer)
    learned = tok.get_vocab_size()
    if learned > n_tokens - len(special_tokens):
        raise ValueError(f"the corpus gave {learned} tokens, more than {n_tokens}")
    tok.add_special_tokens(list(special_tokens))
    data = json.loads(tok.to_str())
    # Pad the learned vocabulary so the specials land on the last ids, as in Llama 3.
    vocab = data["model"]["vocab"]
    first_special = n_tokens - len(special_tokens)
    for i in range(learned, first_special):
        vocab[f"<|reserved_{i}|>"] = i
    for offset, entry in enumerate(data["added_tokens"]):
        entry["id"] = first_special + offset
    return data


def load_reference(path, *, dtype=None):
    """The transformers model for a checkpoint dir, in eval mode.

    A masters dir without quantization_config is loaded with AutoBitLinear online quantization
    (per-tensor absmean ternary weights, per-token int8 activations), i.e. as the ternary model
    it is; plain `from_pretrained` would run it as an unquantized float model instead.
    torch.compile is switched off process-wide: BitNet's layers are decorated with it, compiling
    costs ~10 s per new shape on CPU, and the eager ops compute the same values.
    dtype: None keeps the checkpoint's dtype; "float32" etc. loads in that dtype.
    """
    import torch
    import torch._dynamo
    from transformers import AutoConfig, BitNetForCausalLM

    torch._dynamo.config.disable = True
    config = AutoConfig.from_pretrained(str(path))
    if getattr(config, "quantization_config", None) is None:
        config.quantization_config = dict(ONLINE_QUANTIZATION)
    kwargs = {"config": config}
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype)
    model = BitNetForCausalLM.from_pretrained(str(path), **kwargs)
    return model.eval()


def effective_projection_weights(model) -> dict[str, "object"]:
    """What the reference multiplies each input by, per projection, as float32 (out, in):
    BitLinear: unpacked ternary / weight_scale; AutoBitLinear offline: weight * weight_scale;
    AutoBitLinear online: the ternarized master. Keys are GGUF names (blk.N.attn_q.weight ...)."""
    import torch
    from transformers.integrations.bitnet import AutoBitLinear, BitLinear, WeightQuant

    gguf_names = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    out = {}
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            for hf, gg in gguf_names.items():
                module = layer.get_submodule(hf)
                if isinstance(module, BitLinear):
                    # the same unpacking transformers runs in forward (eager)
                    from transformers.integrations.bitnet import unpack_weights

                    ternary = unpack_weights(module.weight, dtype=torch.float32)
                    weight = ternary / module.weight_scale.float()
                elif isinstance(module, AutoBitLinear) and module.online_quant:
                    weight = WeightQuant.apply(module.weight).float()
                elif isinstance(module, AutoBitLinear):
                    weight = module.weight.float() * module.weight_scale.float()
                else:
                    raise TypeError(f"layer {i} {hf} is {type(module).__name__}, not a BitNet linear")
                out[f"blk.{i}.{gg}.weight"] = weight.numpy()
    return out
