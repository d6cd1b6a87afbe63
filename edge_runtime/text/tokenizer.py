"""Byte-level BPE tokenizer for the Llama-3 vocabulary (the one BitNet b1.58 2B4T uses).

Token ids are identical to Hugging Face `tokenizers` on the same tokenizer.json:

1. the text is cut at special tokens (control tokens only when `special=True`);
2. each piece is split into words by the Llama-3 pre-tokenizer pattern
       (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}
       | ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+
   implemented here as a hand-written scanner over character classes;
3. a word that is itself a vocabulary entry becomes that token ("ignore_merges");
   any other word starts as its UTF-8 bytes and adjacent pairs are merged by rank,
   lowest rank first and leftmost first among equal ranks.
"""

from __future__ import annotations

import codecs
import functools
import heapq
import json
import lzma
import operator
import os
import re
import unicodedata
from collections.abc import Sequence
from typing import Iterable

from edge_runtime.formats.gguf import StringArray

__all__ = [
    "LLAMA3_PRETOKENIZER_PATTERN",
    "InvalidUTF8Error",
    "StreamDecoder",
    "Tokenizer",
    "TokenType",
    "pretokenize",
]

LLAMA3_PRETOKENIZER_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# GGUF spellings of the Llama-3 pre-tokenizer (llama.cpp treats them alike).
_LLAMA3_PRE_NAMES = ("llama-bpe", "llama3", "llama-v3")


class TokenType:
    """GGUF `tokenizer.ggml.token_type` values."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


_KNOWN_TOKEN_TYPES = frozenset(range(1, 7))


class InvalidUTF8Error(ValueError):
    """Input bytes are not valid UTF-8; `offset` is the first bad byte."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


# ---------------------------------------------------------------------------
# Character classes of the pre-tokenizer pattern
# ---------------------------------------------------------------------------

_LETTER, _NUMBER, _OTHER, _SPACE, _NEWLINE = 1, 2, 3, 4, 5  # _SPACE and _NEWLINE are both \s

# \s of the reference regex engine (Oniguruma, Unicode mode) is the Unicode White_Space
# property, not Python's str.isspace (which also accepts U+001C..U+001F).
_WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# The reference engine classifies with Unicode 16.0 tables; Python 3.11's unicodedata
# is Unicode 14.0. These are the \p{L} and \p{N} code points assigned in Unicode
# 15.0-16.0, consulted only for code points the running unicodedata calls unassigned.
_LETTERS_AFTER_UNICODE_14 = (
    (0x1C89, 0x1C8A), (0xA7CB, 0xA7CD), (0xA7DA, 0xA7DC), (0x105C0, 0x105F3),
    (0x10D4A, 0x10D65), (0x10D6F, 0x10D85), (0x10EC2, 0x10EC4), (0x1123F, 0x11240),
    (0x11380, 0x11389), (0x1138B, 0x1138B), (0x1138E, 0x1138E), (0x11390, 0x113B5),
    (0x113B7, 0x113B7), (0x113D1, 0x113D1), (0x113D3, 0x113D3), (0x11BC0, 0x11BE0),
    (0x11F02, 0x11F02), (0x11F04, 0x11F10), (0x11F12, 0x11F33), (0x1342F, 0x1342F),
    (0x13441, 0x13446), (0x13460, 0x143FA), (0x16100, 0x1611D), (0x16D40, 0x16D6C),
    (0x18CFF, 0x18CFF), (0x1B132, 0x1B132), (0x1B155, 0x1B155), (0x1DF25, 0x1DF2A),
    (0x1E030, 0x1E06D), (0x1E4D0, 0x1E4EB), (0x1E5D0, 0x1E5ED), (0x1E5F0, 0x1E5F0),
    (0x2B739, 0x2B739), (0x2EBF0, 0x2EE5D), (0x31350, 0x323AF),
)
_NUMBERS_AFTER_UNICODE_14 = (
    (0x10D40, 0x10D49), (0x116D0, 0x116E3), (0x11BF0, 0x11BF9), (0x11F50, 0x11F59),
    (0x16130, 0x16139), (0x16D70, 0x16D79), (0x1CCF0, 0x1CCF9), (0x1D2C0, 0x1D2D3),
    (0x1E4F0, 0x1E4F9), (0x1E5F1, 0x1E5FA),
)


def _in_ranges(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def _classify(ch: str) -> int:
    if ch in _WHITE_SPACE:
        return _NEWLINE if ch in "\r\n" else _SPACE
    major = unicodedata.category(ch)
    if major == "Cn":
        cp = ord(ch)
        if _in_ranges(cp, _LETTERS_AFTER_UNICODE_14):
            return _LETTER
        if _in_ranges(cp, _NUMBERS_AFTER_UNICODE_14):
            return _NUMBER
        return _OTHER
    if major[0] == "L":
        return _LETTER
    if major[0] == "N":
        return _NUMBER
    return _OTHER


class _CharClassCache(dict):
    # Only planes 0-1 (scripts in common use, emoji) are remembered, so text that walks
    # through all of Unicode cannot grow the cache past ~130k entries.
    def __missing__(self, ch: str) -> int:
        cls = _classify(ch)
        if ch < "\U00020000":
            self[ch] = cls
        return cls


_CHAR_CLASS = _CharClassCache()

# `(?i:...)` folds case with Unicode rules: besides ASCII, U+017F LONG S folds to "s".
_CONTRACTION_FOLD = {
    "s": "s", "S": "s", "\u017f": "s", "t": "t", "T": "t", "m": "m", "M": "m",
    "d": "d", "D": "d", "r": "r", "R": "r", "v": "v", "V": "v", "l": "l", "L": "l",
    "e": "e", "E": "e",
}


def pretokenize(text: str) -> list[str]:
    """Split `text` into words exactly as the Llama-3 pre-tokenizer pattern does.

    The alternatives are tried in pattern order at each position; the whitespace
    branch resolves the backtracking of `\\s*[\\r\\n]+` (whitespace up to the last
    line break of the run) and `\\s+(?!\\S)` (the run minus its last character when
    more text follows) in closed form.
    """
    classes = list(map(_CHAR_CLASS.__getitem__, text))
    fold = _CONTRACTION_FOLD
    n = len(text)
    words = []
    i = 0
    while i < n:
        cls = classes[i]
        # (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if text[i] == "'" and i + 1 < n:
            first = fold.get(text[i + 1])
            if first is not None:
                if first in "stmd":
                    words.append(text[i:i + 2])
                    i += 2
                    continue
                if i + 2 < n:
                    second = fold.get(text[i + 2])
                    if (second == "e" and first in "rv") or (second == "l" and first == "l"):
                        words.append(text[i:i + 3])
                        i += 3
                        continue
        # [^\r\n\p{L}\p{N}]?\p{L}+
        if cls == _LETTER or (
            cls != _NEWLINE and cls != _NUMBER and i + 1 < n and classes[i + 1] == _LETTER
        ):
            j = i + 1
            while j < n and classes[j] == _LETTER:
                j += 1
        elif cls == _NUMBER:  # \p{N}{1,3}
            j = i + 1
            limit = min(i + 3, n)
            while j < limit and classes[j] == _NUMBER:
                j += 1
        # ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        elif cls == _OTHER or (text[i] == " " and i + 1 < n and classes[i + 1] == _OTHER):
            j = i + 1
            while j < n and classes[j] == _OTHER:
                j += 1
            while j < n and classes[j] == _NEWLINE:
                j += 1
        else:  # \s*[\r\n]+ | \s+(?!\S) | \s+
            j = i
            last_newline = -1
            while j < n and classes[j] >= _SPACE:
                if classes[j] == _NEWLINE:
                    last_newline = j
                j += 1
            if last_newline >= 0:
                j = last_newline + 1
            elif j < n and j - i >= 2:
                j -= 1
        words.append(text[i:j])
        i = j
    return words


# ---------------------------------------------------------------------------
# Byte-level alphabet: every byte has a printable stand-in character
# ---------------------------------------------------------------------------


def _byte_level_alphabet() -> list[str]:
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    alphabet = [""] * 256
    for b in printable:
        alphabet[b] = chr(b)
    extra = 0
    for b in range(256):
        if not alphabet[b]:
            alphabet[b] = chr(256 + extra)
            extra += 1
    return alphabet


_BYTE_TO_CHAR = _byte_level_alphabet()
_CHAR_TO_BYTE = {ch: b for b, ch in enumerate(_BYTE_TO_CHAR)}


def _byte_level_to_bytes(text: str, token_id: int) -> bytes:
    try:
        return bytes(map(_CHAR_TO_BYTE.__getitem__, text))
    except KeyError as exc:
        raise ValueError(
            f"token {token_id} {text!r}: character {exc.args[0]!r} is not in the byte-level "
            "alphabet; a normal token of a gpt2-style vocabulary must be byte-level encoded"
        ) from None


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")

_WORD_CACHE_SIZE = 1 << 16
_WORD_CACHE_MAX_CHARS = 64  # longer words (whitespace runs, blobs) are rare and would pin memory


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


class Tokenizer:
    """Llama-3 byte-level BPE. Build with `from_gguf_metadata` or `from_tokenizer_json`."""

    def __init__(
        self,
        tokens: list[str],
        merges: list[tuple[str, str]],
        token_types: list[int],
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
        eot_id: int | None = None,
        ignore_merges: bool = True,
    ):
        if len(tokens) != len(token_types):
            raise ValueError(
                f"tokenizer: {len(tokens)} tokens but {len(token_types)} token types; "
                "expected one type per token"
            )
        if not tokens:
            raise ValueError("tokenizer: the token list is empty")
        # A GGUF vocabulary stays in the file's mapping (decoded on access); a list is copied.
        self._tokens = tokens if isinstance(tokens, StringArray) else list(tokens)
        self._token_types = list(token_types)
        self._merges = merges if isinstance(merges, _MergePairs) else list(merges)
        self._ignore_merges = ignore_merges

        self._id_to_bytes: list[bytes] = []
        normal_id_of_text: dict[str, int] = {}
        self._word_to_id: dict[str, int] = {}
        # Texts matched as whole tokens: user-defined ones in any text, control (and
        # unknown) ones only with special=True.
        self._special_id_of_text: dict[str, int] = {}
        user_defined_texts = []
        control_ids = set()
        for token_id, (text, token_type) in enumerate(zip(tokens, token_types)):
            if not isinstance(text, str):
                raise ValueError(f"token {token_id}: expected a str, got {type(text).__name__}")
            if token_type not in _KNOWN_TOKEN_TYPES:
                raise ValueError(
                    f"token {token_id} {text!r}: unknown token type {token_type!r}; "
                    "expected 1 (normal), 2 (unknown), 3 (control), 4 (user-defined), "
                    "5 (unused) or 6 (byte)"
                )
            if token_type == TokenType.NORMAL:
                raw = _byte_level_to_bytes(text, token_id)
                normal_id_of_text.setdefault(text, token_id)
                try:
                    self._word_to_id.setdefault(raw.decode("utf-8"), token_id)
                except UnicodeDecodeError:
                    pass  # a partial UTF-8 sequence can never be a whole word
            elif token_type == TokenType.BYTE:
                match = _BYTE_TOKEN.fullmatch(text)
                if match is None:
                    raise ValueError(
                        f"token {token_id} {text!r}: a byte token must be spelled <0xXX>"
                    )
                raw = bytes([int(match.group(1), 16)])
            else:
                raw = text.encode("utf-8", "surrogatepass")
                if token_type == TokenType.CONTROL:
                    control_ids.add(token_id)
                if text and token_type in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED):
                    self._special_id_of_text.setdefault(text, token_id)
                    if token_type == TokenType.USER_DEFINED:
                        user_defined_texts.append(text)
            self._id_to_bytes.append(raw)
        self._control_ids = frozenset(control_ids)

        self._byte_ids = []
        for b in range(256):
            token_id = normal_id_of_text.get(_BYTE_TO_CHAR[b])
            if token_id is None:
                raise ValueError(
                    f"tokenizer: no normal token for byte 0x{b:02X} "
                    f"(byte-level {_BYTE_TO_CHAR[b]!r}); a byte-level BPE vocabulary needs all 256"
                )
            self._byte_ids.append(token_id)

        # Pair (left, right) -> rank and merged id, keyed and valued as packed ints:
        # key = left * n + right, value = rank * n + merged (so values order by rank).
        n = len(tokens)
        self._pack = n
        self._merge_ranks: dict[int, int] = {}
        for rank, (left, right) in enumerate(self._merges):
            left_id = normal_id_of_text.get(left)
            right_id = normal_id_of_text.get(right)
            merged_id = normal_id_of_text.get(left + right)
            if left_id is None or right_id is None or merged_id is None:
                missing = [t for t, i in ((left, left_id), (right, right_id), (left + right, merged_id)) if i is None]
                raise ValueError(
                    f"merge {rank} {left!r} {right!r}: {missing[0]!r} is not a normal token "
                    "of the vocabulary"
                )
            # A repeated pair takes its later rank, as the reference does.
            self._merge_ranks[left_id * n + right_id] = rank * n + merged_id

        self._special_splitter = _literal_splitter(self._special_id_of_text)
        self._user_defined_splitter = _literal_splitter(user_defined_texts)

        self.bos_id = self._resolve_id("bos", bos_id, "<|begin_of_text|>")
        self.eos_id = self._resolve_id("eos", eos_id, "<|end_of_text|>")
        self.eot_id = self._resolve_id("eot", eot_id, "<|eot_id|>")
        self._end_of_generation_ids = frozenset(
            i for i in (self.eos_id, self.eot_id) if i is not None
        )
        self._bpe_cached = functools.lru_cache(maxsize=_WORD_CACHE_SIZE)(self._bpe)

    # -- constructors --------------------------------------------------------

    @classmethod
    def from_gguf_metadata(
        cls,
        tokens: list[str],
        merges: list[str],
        token_types: list[int],
        pre: str = "llama-bpe",
        bos_id: int | None = None,
        eos_id: int | None = None,
        eot_id: int | None = None,
    ) -> "Tokenizer":
        """Build from GGUF `tokenizer.ggml.tokens` / `.merges` / `.token_type` / `.pre`."""
        if pre not in _LLAMA3_PRE_NAMES:
            raise ValueError(
                f"tokenizer.ggml.pre = {pre!r}: unsupported pre-tokenizer; "
                f"expected one of {', '.join(_LLAMA3_PRE_NAMES)}"
            )
        for key, value in (("tokens", tokens), ("merges", merges), ("token_type", token_types)):
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise ValueError(f"tokenizer.ggml.{key}: expected a list, got {type(value).__name__}")
        pairs = _MergePairs(merges)  # split (and checked) as the merge table is built
        types = []
        for index, token_type in enumerate(token_types):
            try:
                types.append(operator.index(token_type))
            except TypeError:
                raise ValueError(
                    f"tokenizer.ggml.token_type[{index}] = {token_type!r}; expected an integer"
                ) from None
        return cls(
            tokens, pairs, types,
            bos_id=bos_id, eos_id=eos_id, eot_id=eot_id, ignore_merges=True,
        )

    @classmethod
    def from_tokenizer_json(
        cls,
        path_or_dict: str | os.PathLike | dict,
        bos_id: int | None = None,
        eos_id: int | None = None,
        eot_id: int | None = None,
    ) -> "Tokenizer":
        """Build from a Hugging Face tokenizer.json (a path, `.xz` allowed, or the parsed dict)."""
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
        return cls._from_tokenizer_spec(spec, source, bos_id, eos_id, eot_id)

    @classmethod
    def _from_tokenizer_spec(cls, spec, source, bos_id, eos_id, eot_id) -> "Tokenizer":
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
                pairs.append(_split_merge(merge, index, f"{source}: model.merges"))
            elif isinstance(merge, list) and len(merge) == 2 and all(isinstance(p, str) for p in merge):
                pairs.append((merge[0], merge[1]))
            else:
                raise ValueError(f"{source}: model.merges[{index}] = {merge!r}; expected 'a b' or [a, b]")
        return cls(
            [texts[i] for i in range(n)], pairs, [types[i] for i in range(n)],
            bos_id=bos_id, eos_id=eos_id, eot_id=eot_id,
            ignore_merges=bool(model.get("ignore_merges", False)),
        )

    def to_gguf_metadata(self) -> dict:
        """The GGUF tokenizer keys (gpt2 model, llama-bpe pre-tokenizer) for a converter."""
        if not self._ignore_merges:
            raise ValueError(
                "tokenizer: ignore_merges is false, which the GGUF 'llama-bpe' pre-tokenizer "
                "cannot express; the converted model would tokenize differently"
            )
        metadata = {
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": "llama-bpe",
            "tokenizer.ggml.tokens": list(self._tokens),
            "tokenizer.ggml.merges": [f"{a} {b}" for a, b in self._merges],
            "tokenizer.ggml.token_type": list(self._token_types),
        }
        for key, value in (("bos", self.bos_id), ("eos", self.eos_id), ("eot", self.eot_id)):
            if value is not None:
                metadata[f"tokenizer.ggml.{key}_token_id"] = value
        return metadata

    # -- properties -----------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return len(self._tokens)

    def token_text(self, token_id: int) -> str:
        """The token as stored in the vocabulary (byte-level spelling for normal tokens)."""
        return self._tokens[self._check_id(token_id)]

    def token_type(self, token_id: int) -> int:
        return self._token_types[self._check_id(token_id)]

    def token_bytes(self, token_id: int) -> bytes:
        return self._id_to_bytes[self._check_id(token_id)]

    def is_control(self, token_id: int) -> bool:
        return token_id in self._control_ids

    def is_end_of_generation(self, token_id: int) -> bool:
        return token_id in self._end_of_generation_ids

    def special_token_id(self, text: str) -> int:
        """Id of a control / user-defined token given its text, e.g. '<|eot_id|>'."""
        token_id = self._special_id_of_text.get(text)
        if token_id is None:
            raise ValueError(f"tokenizer: no control or user-defined token {text!r}")
        return token_id

    # -- encoding ---------------------------------------------------------------

    def encode(self, text: str | bytes, add_bos: bool = False, special: bool = False) -> list[int]:
        """Token ids of `text`.

        special=True: control tokens written in the text (e.g. '<|eot_id|>') become single
        tokens; special=False: they are tokenized as plain text. User-defined tokens are
        matched either way.
        """
        text = _as_text(text)
        ids: list[int] = []
        if add_bos:
            if self.bos_id is None:
                raise ValueError("tokenizer: add_bos=True but the tokenizer has no bos token")
            ids.append(self.bos_id)
        splitter = self._special_splitter if special else self._user_defined_splitter
        if splitter is None:
            self._encode_plain(text, ids)
            return ids
        start = 0
        for match in splitter.finditer(text):
            if match.start() > start:
                self._encode_plain(text[start:match.start()], ids)
            ids.append(self._special_id_of_text[match.group()])
            start = match.end()
        if start < len(text):
            self._encode_plain(text[start:], ids)
        return ids

    def _encode_plain(self, text: str, ids: list[int]) -> None:
        word_to_id = self._word_to_id if self._ignore_merges else {}
        bpe_cached = self._bpe_cached
        for word in pretokenize(text):
            token_id = word_to_id.get(word)
            if token_id is not None:
                ids.append(token_id)
            elif len(word) <= _WORD_CACHE_MAX_CHARS:
                ids.extend(bpe_cached(word))
            else:
                ids.extend(self._bpe(word))

    def _bpe(self, word: str) -> tuple[int, ...]:
        """Merge the bytes of `word` pair by pair: lowest rank first, then leftmost."""
        byte_ids = self._byte_ids
        symbols = [byte_ids[b] for b in word.encode("utf-8")]
        count = len(symbols)
        if count < 2:
            return tuple(symbols)
        n = self._pack
        ranks = self._merge_ranks
        following = list(range(1, count + 1))
        following[-1] = -1
        preceding = list(range(-1, count - 1))
        heap = []
        for pos in range(count - 1):
            packed = ranks.get(symbols[pos] * n + symbols[pos + 1])
            if packed is not None:
                heap.append((packed, pos))
        heapq.heapify(heap)
        while heap:
            packed, pos = heapq.heappop(heap)
            left = symbols[pos]
            right_pos = following[pos]
            if left < 0 or right_pos < 0:
                continue
            # Skip an entry made stale by an earlier merge of either symbol.
            if ranks.get(left * n + symbols[right_pos]) != packed:
                continue
            merged = packed % n
            symbols[pos] = merged
            symbols[right_pos] = -1
            after = following[right_pos]
            following[pos] = after
            if after >= 0:
                preceding[after] = pos
                packed_right = ranks.get(merged * n + symbols[after])
                if packed_right is not None:
                    heapq.heappush(heap, (packed_right, pos))
            before = preceding[pos]
            if before >= 0:
                packed_left = ranks.get(symbols[before] * n + merged)
                if packed_left is not None:
                    heapq.heappush(heap, (packed_left, before))
        return tuple(s for s in symbols if s >= 0)

    # -- decoding ---------------------------------------------------------------

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        """Concatenated bytes of `ids`; skip_special drops control tokens."""
        table = self._id_to_bytes
        check = self._check_id
        control = self._control_ids
        if skip_special:
            return b"".join([table[check(i)] for i in ids if i not in control])
        return b"".join([table[check(i)] for i in ids])

    def stream_decoder(self, skip_special: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, skip_special=skip_special)

    # -- helpers -----------------------------------------------------------------

    def _check_id(self, token_id) -> int:
        try:
            index = operator.index(token_id)
        except TypeError:
            raise ValueError(f"token id {token_id!r} is not an integer") from None
        if not 0 <= index < len(self._tokens):
            raise ValueError(f"token id {index} is out of range 0..{len(self._tokens) - 1}")
        return index

    def _resolve_id(self, name: str, explicit: int | None, default_text: str) -> int | None:
        if explicit is None:
            return self._special_id_of_text.get(default_text)
        try:
            return self._check_id(explicit)
        except ValueError as exc:
            raise ValueError(f"tokenizer: {name}_id: {exc}") from None


class StreamDecoder:
    """Turns generated ids into text, holding back an incomplete UTF-8 sequence."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """Text completed by this token ('' while a multi-byte character is unfinished)."""
        if self._skip_special and self._tokenizer.is_control(token_id):
            return ""
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """Whatever is held back, undecodable bytes replaced by U+FFFD; resets the decoder."""
        return self._utf8.decode(b"", final=True)


# ---------------------------------------------------------------------------
# Module helpers
# ---------------------------------------------------------------------------


def _as_text(text: str | bytes) -> str:
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidUTF8Error(
                f"input is not valid UTF-8: byte 0x{exc.object[exc.start]:02X} at byte offset "
                f"{exc.start} ({exc.reason})",
                exc.start,
            ) from None
    if not isinstance(text, str):
        raise ValueError(f"input must be str or bytes, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidUTF8Error(
            f"input has an unpaired surrogate U+{ord(text[exc.start]):04X} at character "
            f"offset {exc.start}; it cannot be encoded as UTF-8",
            exc.start,
        ) from None
    return text


def _literal_splitter(texts: Iterable[str]):
    """Leftmost-longest matcher over literal token texts (None if there are none)."""
    ordered = sorted(set(texts), key=len, reverse=True)
    if not ordered:
        return None
    return re.compile("|".join(map(re.escape, ordered)))


class _MergePairs(Sequence):
    """GGUF merges ("left right" strings) seen as (left, right) pairs, split on access. The
    tokenizer keeps only its rank table; holding 280k pairs as tuples of Python strings would
    cost about 50 MiB for the life of the model."""

    __slots__ = ("_merges",)

    def __init__(self, merges):
        self._merges = merges

    def __len__(self) -> int:
        return len(self._merges)

    def __iter__(self):
        for index, merge in enumerate(self._merges):
            yield _split_merge(merge, index, "tokenizer.ggml.merges")

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = range(len(self))[operator.index(index)]  # negative indices, IndexError
        return _split_merge(self._merges[i], i, "tokenizer.ggml.merges")


def _split_merge(merge, index: int, where: str) -> tuple[str, str]:
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
