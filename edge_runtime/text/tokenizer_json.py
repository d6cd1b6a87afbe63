"""Reading a Hugging Face tokenizer.json (the Llama-3 byte-level BPE only) into the token list,
merge pairs and token types the tokenizer is built from."""

from __future__ import annotations

import json
import lzma
import os

from edge_runtime.text.pretokenizer import LLAMA3_PRETOKENIZER_PATTERN
from edge_runtime.text.vocabulary import TokenType

__all__ = ["read_tokenizer_json", "split_merge"]


def read_tokenizer_json(path_or_dict) -> tuple[list[str], list[tuple[str, str]], list[int], bool]:
    """(tokens, merge pairs, token types, ignore_merges) of a tokenizer.json: a path (`.xz`
    allowed) or the parsed dict. ValueError names the file and the field that is wrong."""
    if isinstance(path_or_dict, dict):
        source, spec = "tokenizer.json", path_or_dict
    else:
        source = os.fspath(path_or_dict)
        opener = lzma.open if source.endswith(".xz") else open
        try:
            with opener(source, "rb") as f:
                spec = json.loads(f.read().decode("utf-8"))
        except (OSError, lzma.LZMAError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{source}: cannot read tokenizer JSON: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise ValueError(f"{source}: expected a tokenizer.json object with a 'model' field")
    model = spec["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{source}: model.type = {model.get('type')!r}; expected 'BPE'")
    if spec.get("normalizer") is not None:
        raise ValueError(f"{source}: normalizer = {spec['normalizer']!r}; expected null")
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get(
        "end_of_word_suffix"
    ):
        raise ValueError(
            f"{source}: model uses byte_fallback / subword prefixes; expected plain byte-level BPE"
        )
    _check_llama3_pre_tokenizer(spec.get("pre_tokenizer"), source)

    vocab = model.get("vocab")
    if not isinstance(vocab, dict):
        raise ValueError(f"{source}: model.vocab must be an object of token -> id")
    texts: dict[int, str] = {}
    types: dict[int, int] = {}
    for text, token_id in vocab.items():
        if not isinstance(token_id, int) or token_id < 0 or token_id in texts:
            raise ValueError(f"{source}: model.vocab[{text!r}] = {token_id!r}; expected a unique id >= 0")
        texts[token_id] = text
        types[token_id] = TokenType.NORMAL
    added_tokens = spec.get("added_tokens") or []
    if not isinstance(added_tokens, list) or not all(isinstance(a, dict) for a in added_tokens):
        raise ValueError(f"{source}: added_tokens must be a list of objects")
    for index, added in enumerate(added_tokens):
        where = f"{source}: added_tokens[{index}]"
        token_id, content = added.get("id"), added.get("content")
        if not isinstance(token_id, int) or token_id < 0 or not isinstance(content, str):
            raise ValueError(f"{where}: expected an integer 'id' and a string 'content'")
        for flag in ("lstrip", "rstrip", "single_word"):
            if added.get(flag):
                raise ValueError(f"{where} {content!r}: {flag}=true is not supported")
        if token_id in texts and texts[token_id] != content:
            raise ValueError(f"{where}: id {token_id} is already {texts[token_id]!r}, not {content!r}")
        texts[token_id] = content
        types[token_id] = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
    n = len(texts)
    if sorted(texts) != list(range(n)):
        gap = next(i for i in range(n) if i not in texts)
        raise ValueError(f"{source}: token ids are not contiguous; id {gap} is missing")

    merges = model.get("merges")
    if not isinstance(merges, list):
        raise ValueError(f"{source}: model.merges must be a list")
    pairs = []
    for index, merge in enumerate(merges):
        if isinstance(merge, str):
            pairs.append(split_merge(merge, index, f"{source}: model.merges"))
        elif isinstance(merge, list) and len(merge) == 2 and all(isinstance(p, str) for p in merge):
            pairs.append((merge[0], merge[1]))
        else:
            raise ValueError(f"{source}: model.merges[{index}] = {merge!r}; expected 'a b' or [a, b]")
    return ([texts[i] for i in range(n)], pairs, [types[i] for i in range(n)],
            bool(model.get("ignore_merges", False)))


def split_merge(merge, index: int, where: str) -> tuple[str, str]:
    if not isinstance(merge, str):
        raise ValueError(f"{where}[{index}] = {merge!r}; expected a string 'left right'")
    parts = merge.split(" ")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{where}[{index}] = {merge!r}; expected two tokens separated by one space")
    return parts[0], parts[1]


def _check_llama3_pre_tokenizer(pre_tokenizer, source: str) -> None:
    steps = []
    if isinstance(pre_tokenizer, dict):
        steps = pre_tokenizer.get("pretokenizers", []) if pre_tokenizer.get("type") == "Sequence" else [pre_tokenizer]
    split = [s for s in steps if s.get("type") == "Split"]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    ok = (
        len(steps) == 2
        and len(split) == 1
        and len(byte_level) == 1
        and steps[0] is split[0]
        and (split[0].get("pattern") or {}).get("Regex") == LLAMA3_PRETOKENIZER_PATTERN
        and split[0].get("behavior") == "Isolated"
        and not split[0].get("invert")
        and not byte_level[0].get("use_regex", True)
        and not byte_level[0].get("add_prefix_space", False)
    )
    if not ok:
        raise ValueError(
            f"{source}: pre_tokenizer is not the Llama-3 one (Split on the Llama-3 pattern, "
            "Isolated, then ByteLevel without regex or prefix space); only that is supported"
        )
