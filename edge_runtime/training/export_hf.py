"""Write a Hugging Face BitNet checkpoint from one of our GGUF files (the reverse of `convert`), so
transformers can run exactly the weights the runtime runs. Test/dev tooling: needs torch,
transformers and safetensors.

Projections are stored packed (uint8, transformers' layout) with a `weight_scale` that
AutoBitLinear (offline) multiplies by; embeddings and norms as f32.
"""
import json
import os

import numpy as np

from edge_runtime.formats.sources import HF_NORMS, HF_PROJECTIONS
from edge_runtime.formats.gguf import dequantize, unpack_i2s
from edge_runtime.formats.model_file import open_model_file


def gguf_to_hf_dir(gguf_path, out_dir):
    import torch
    from safetensors.torch import save_file
    from transformers.integrations.bitnet import pack_weights

    mf = open_model_file(gguf_path)
    c, r = mf.config, mf.reader
    os.makedirs(out_dir, exist_ok=True)

    def f32(name):
        info = r.tensors[name]
        rows = info.shape[0] if len(info.shape) > 1 else 1
        return torch.from_numpy(np.array(dequantize(info.ggml_type, r.tensor_bytes(name), rows, info.shape[-1]),
                                         dtype=np.float32).reshape(info.shape))

    state = {"model.embed_tokens.weight": f32("token_embd.weight"), "model.norm.weight": f32("output_norm.weight")}
    for l in range(c.n_layers):
        for gg, hf in HF_NORMS.items():
            state[f"model.layers.{l}.{hf}.weight"] = f32(f"blk.{l}.{gg}.weight")
        for gg, hf in HF_PROJECTIONS.items():
            name = f"blk.{l}.{gg}.weight"
            info = r.tensors[name]
            ternary, scale = unpack_i2s(r.tensor_bytes(name), info.shape[0], info.shape[1])
            state[f"model.layers.{l}.{hf}.weight"] = pack_weights(torch.from_numpy(ternary.astype(np.float32)))
            state[f"model.layers.{l}.{hf}.weight_scale"] = torch.tensor([scale], dtype=torch.float32)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(out_dir, "model.safetensors"),
              metadata={"format": "pt"})
    meta = mf.tokenizer_metadata or {}
    config = {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "vocab_size": c.n_vocab,
        "hidden_size": c.dim, "intermediate_size": c.ffn_dim, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads, "hidden_act": "relu2",
        "max_position_embeddings": c.n_ctx_train, "rms_norm_eps": float(c.norm_eps),
        "rope_theta": float(c.rope_theta), "tie_word_embeddings": True, "torch_dtype": "float32",
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"), "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "offline"},
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    mf.close()
    return str(out_dir)
