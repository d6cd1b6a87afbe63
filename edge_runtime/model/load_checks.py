"""What Model() checks at load, beyond the file's structure (formats/model_file.py): the tokenizer
the file carries, and the float weights that are cheap to read in full. A file that passes cannot
fail later for a reason of its own, so a service that starts can answer every request.

Cost on a 2B4T-shaped file: the tokenizer (128256 tokens, 280k merges) is built once, as the
first request would build it anyway; the norms are 0.44 M floats. The embedding/head matrix is not
scanned: at 657 MB it would read the whole head from storage before the first request (seconds
from an SD card); a non-finite value there shows as non-finite logits, reported at generation as
a model error (NonFiniteLogitsError), never as the client's fault.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.errors import ModelFormatError
from edge_runtime.formats.gguf import GGMLType

TOKENIZER_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")


def build_tokenizer(model_file):
    """The file's tokenizer, checked against the model (None when the file carries none): every
    error is a ModelFormatError naming the file and the metadata key."""
    from edge_runtime.text.tokenizer import Tokenizer

    path, meta, n_vocab = model_file.path, model_file.tokenizer_metadata, model_file.config.n_vocab
    if "tokenizer.ggml.tokens" not in meta:
        return None
    try:
        tok = Tokenizer.from_gguf_metadata(
            tokens=meta["tokenizer.ggml.tokens"], merges=meta.get("tokenizer.ggml.merges", []),
            token_types=meta.get("tokenizer.ggml.token_type"), pre=meta.get("tokenizer.ggml.pre", "llama-bpe"),
            bos_id=meta.get("tokenizer.ggml.bos_token_id"), eos_id=meta.get("tokenizer.ggml.eos_token_id"),
            eot_id=meta.get("tokenizer.ggml.eot_token_id"), model=meta.get("tokenizer.ggml.model", "gpt2"))
    except (ValueError, TypeError) as exc:
        raise ModelFormatError(f"{path}: tokenizer metadata: {exc}") from None
    if tok.n_vocab != n_vocab:
        # an id the model can sample must be one the tokenizer can decode, and the reverse
        raise ModelFormatError(
            f"{path}: the tokenizer has {tok.n_vocab} tokens (tokenizer.ggml.tokens) but the model's "
            f"vocabulary (token_embd rows) is {n_vocab}; they must be equal")
    return tok


def check_finite_norms(model_file):
    """Every F32 tensor (the RMSNorm weights) holds finite values; a NaN there makes every
    logit NaN."""
    reader = model_file.reader
    for name, info in reader.tensors.items():
        if info.ggml_type != GGMLType.F32 or len(info.shape) != 1:
            continue
        values = np.frombuffer(reader.buffer, np.float32, info.n_elements, info.offset)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ModelFormatError(
                f"{model_file.path}: tensor {name} holds {bad.size} non-finite values (first at index "
                f"{int(bad[0])}: {float(values[bad[0]])}); expected finite norm weights")
