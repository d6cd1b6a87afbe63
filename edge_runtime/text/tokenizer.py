"""Byte-level BPE tokenizer for the Llama-3 vocabulary (the one BitNet b1.58 2B4T uses).

Token ids are identical to Hugging Face `tokenizers` on the same tokenizer.json:

1. the text is cut at special tokens (control tokens only when `special=True`);
2. each piece is split into words by the Llama-3 pre-tokenizer pattern (text/pretokenizer.py);
3. a word that is itself a vocabulary entry becomes that token ("ignore_merges");
   any other word starts as its UTF-8 bytes and adjacent pairs are merged by rank,
   lowest rank first and leftmost first among equal ranks.

The vocabulary and merges live in flat arrays (text/vocabulary.py), so a 128k vocabulary costs
a few MiB. Everything a file's tokenizer metadata can get wrong is found when it is built.
"""

from __future__ import annotations

import codecs
import functools
import heapq
import operator
import os
import re
from collections.abc import Sequence
from typing import Iterable

from edge_runtime.formats.gguf import StringArray
from edge_runtime.text.pretokenizer import LLAMA3_PRETOKENIZER_PATTERN, LLAMA3_PRE_NAMES, pretokenize
from edge_runtime.text.tokenizer_json import read_tokenizer_json, split_merge
from edge_runtime.text.vocabulary import BYTE_TO_CHAR as _BYTE_TO_CHAR
from edge_runtime.text.vocabulary import MergeTable, TokenType, Vocabulary

__all__ = [
    "LLAMA3_PRETOKENIZER_PATTERN",
    "InvalidUTF8Error",
    "StreamDecoder",
    "Tokenizer",
    "TokenType",
    "pretokenize",
]

# Words are cached with their ids; longer ones (whitespace runs, blobs) are rare and would pin
# memory. 16k entries hold the words of ordinary text in about 3 MiB.
_WORD_CACHE_SIZE = 1 << 14
_WORD_CACHE_MAX_CHARS = 64


class InvalidUTF8Error(ValueError):
    """Input bytes are not valid UTF-8; `offset` is the first bad byte."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


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
        vocab = Vocabulary(tokens, token_types)
        # A GGUF vocabulary stays in the file's mapping (decoded on access); a list is copied.
        self._tokens = tokens if isinstance(tokens, StringArray) else list(tokens)
        self._merges = merges if isinstance(merges, _MergePairs) else list(merges)
        self._ignore_merges = ignore_merges
        self._vocab = vocab
        self._n = vocab.n
        self._blob, self._offsets, self._types = vocab.blob, vocab.offsets, vocab.types
        self._byte_ids = vocab.byte_ids
        self._control_ids = vocab.control_ids
        # Texts matched as whole tokens: user-defined ones in any text, control (and
        # unknown) ones only with special=True.
        self._special_id_of_text = vocab.special_id_of_text
        self._merge_table = MergeTable(vocab, self._merges)
        vocab.drop_build_index()
        self._special_splitter = _literal_splitter(self._special_id_of_text)
        self._user_defined_splitter = _literal_splitter(vocab.user_defined_texts)

        self.bos_id = self._resolve_id("bos", bos_id, "<|begin_of_text|>")
        self.eos_id = self._resolve_id("eos", eos_id, "<|end_of_text|>")
        self.eot_id = self._resolve_id("eot", eot_id, "<|eot_id|>")
        self._end_of_generation_ids = frozenset(
            i for i in (self.eos_id, self.eot_id) if i is not None
        )
        self._bpe_cached = functools.lru_cache(maxsize=_WORD_CACHE_SIZE)(self._encode_word)

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
        model: str = "gpt2",
    ) -> "Tokenizer":
        """Build from GGUF `tokenizer.ggml.tokens` / `.merges` / `.token_type` / `.pre` / `.model`."""
        if model != "gpt2":
            raise ValueError(
                f"tokenizer.ggml.model = {model!r}: unsupported tokenizer; expected 'gpt2' (byte-level BPE)"
            )
        if pre not in LLAMA3_PRE_NAMES:
            raise ValueError(
                f"tokenizer.ggml.pre = {pre!r}: unsupported pre-tokenizer; "
                f"expected one of {', '.join(LLAMA3_PRE_NAMES)}"
            )
        for key, value in (("tokens", tokens), ("merges", merges), ("token_type", token_types)):
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise ValueError(f"tokenizer.ggml.{key}: expected a list, got {type(value).__name__}")
        types = []
        for index, token_type in enumerate(token_types):
            try:
                types.append(operator.index(token_type))
            except TypeError:
                raise ValueError(
                    f"tokenizer.ggml.token_type[{index}] = {token_type!r}; expected an integer"
                ) from None
        for name, value in (("bos", bos_id), ("eos", eos_id), ("eot", eot_id)):
            if value is not None and (isinstance(value, bool) or not hasattr(value, "__index__")):
                raise ValueError(f"tokenizer.ggml.{name}_token_id = {value!r}; expected an integer")
        return cls(
            tokens, _MergePairs(merges), types,  # merges are split (and checked) as the table is built
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
        tokens, pairs, types, ignore_merges = read_tokenizer_json(path_or_dict)
        return cls(tokens, pairs, types, bos_id=bos_id, eos_id=eos_id, eot_id=eot_id,
                   ignore_merges=ignore_merges)

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
            "tokenizer.ggml.token_type": list(self._types),
        }
        for key, value in (("bos", self.bos_id), ("eos", self.eos_id), ("eot", self.eot_id)):
            if value is not None:
                metadata[f"tokenizer.ggml.{key}_token_id"] = value
        return metadata

    # -- properties -----------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return self._n

    @property
    def table_nbytes(self) -> int:
        """Bytes held by the vocabulary and merge tables."""
        return self._vocab.nbytes + self._merge_table.nbytes

    def token_text(self, token_id: int) -> str:
        """The token as stored in the vocabulary (byte-level spelling for normal tokens)."""
        return self._tokens[self._check_id(token_id)]

    def token_type(self, token_id: int) -> int:
        return self._types[self._check_id(token_id)]

    def token_bytes(self, token_id: int) -> bytes:
        i = self._check_id(token_id)
        return self._blob[self._offsets[i]:self._offsets[i + 1]]

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
        cached, encode_word = self._bpe_cached, self._encode_word
        for word in pretokenize(text):
            ids.extend(cached(word) if len(word) <= _WORD_CACHE_MAX_CHARS else encode_word(word))

    def _encode_word(self, word: str) -> tuple[int, ...]:
        raw = word.encode("utf-8")
        if self._ignore_merges:
            token_id = self._vocab.lookup(raw)
            if token_id >= 0:
                return (token_id,)
        return self._bpe(raw)

    def _bpe(self, raw: bytes) -> tuple[int, ...]:
        """Merge the bytes of a word pair by pair: lowest rank first, then leftmost."""
        byte_ids = self._byte_ids
        symbols = [byte_ids[b] for b in raw]
        count = len(symbols)
        if count < 2:
            return tuple(symbols)
        n = self._n
        rank_of = self._merge_table.get
        following = list(range(1, count + 1))
        following[-1] = -1
        preceding = list(range(-1, count - 1))
        heap = []
        for pos in range(count - 1):
            packed = rank_of(symbols[pos], symbols[pos + 1])
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
            if rank_of(left, symbols[right_pos]) != packed:
                continue
            merged = packed % n
            symbols[pos] = merged
            symbols[right_pos] = -1
            after = following[right_pos]
            following[pos] = after
            if after >= 0:
                preceding[after] = pos
                packed_right = rank_of(merged, symbols[after])
                if packed_right is not None:
                    heapq.heappush(heap, (packed_right, pos))
            before = preceding[pos]
            if before >= 0:
                packed_left = rank_of(symbols[before], merged)
                if packed_left is not None:
                    heapq.heappush(heap, (packed_left, before))
        return tuple(s for s in symbols if s >= 0)

    # -- decoding ---------------------------------------------------------------

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        """Concatenated bytes of `ids`; skip_special drops control tokens."""
        blob, off = self._blob, self._offsets
        checked = map(self._check_id, ids)
        if skip_special:
            control = self._control_ids
            return b"".join([blob[off[i]:off[i + 1]] for i in checked if i not in control])
        return b"".join([blob[off[i]:off[i + 1]] for i in checked])

    def stream_decoder(self, skip_special: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, skip_special=skip_special)

    # -- helpers -----------------------------------------------------------------

    def _check_id(self, token_id) -> int:
        try:
            index = operator.index(token_id)
        except TypeError:
            raise ValueError(f"token id {token_id!r} is not an integer") from None
        if not 0 <= index < self._n:
            raise ValueError(f"token id {index} is out of range 0..{self._n - 1}")
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
            yield split_merge(merge, index, "tokenizer.ggml.merges")

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = range(len(self))[operator.index(index)]  # negative indices, IndexError
        return split_merge(self._merges[i], i, "tokenizer.ggml.merges")
