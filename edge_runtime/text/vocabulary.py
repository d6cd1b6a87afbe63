"""The vocabulary and merge tables of a byte-level BPE tokenizer, held as flat arrays.

A Llama-3 vocabulary has 128,256 tokens and 280,147 merges. Held as dicts of Python strings and
ints, the tables cost about 70 MiB for the life of a model; as arrays they cost about 7 MiB:

    token bytes   one bytes blob and offsets (n + 1,): token i is blob[offsets[i]:offsets[i + 1]]
    token types   bytes (n,): the GGUF token type of each token
    normal index  an open-addressing hash table (2^k >= 2n slots,) int32 of normal token ids keyed by
                  the token's bytes (the first id of equal bytes), probed linearly; -1 is empty
    merges        per left id: starts (n + 1,) into rights (m,), sorted within each left id, and
                  packed (m,) = rank * n + merged id, so packed values order by rank

Python's `array` is used rather than numpy for the tables the encoder reads one element at a
time: indexing it returns a plain int without building a numpy scalar.
"""

from __future__ import annotations

import array
import bisect
import re

import numpy as np

__all__ = ["BYTE_TO_CHAR", "CHAR_TO_BYTE", "MergeTable", "TokenType", "Vocabulary", "byte_level_to_bytes"]


class TokenType:
    """GGUF `tokenizer.ggml.token_type` values."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


KNOWN_TOKEN_TYPES = frozenset(range(1, 7))
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


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


BYTE_TO_CHAR = _byte_level_alphabet()
CHAR_TO_BYTE = {ch: b for b, ch in enumerate(BYTE_TO_CHAR)}

# str.translate then latin-1 turns byte-level text into its bytes in C. Characters below U+0144
# that are not in the alphabet become U+0100 (never encodable in latin-1, as translate does not
# re-map its output), and characters above are left alone (not encodable either), so any
# character outside the alphabet makes the encode fail.
_TO_LATIN1 = {cp: 0x100 for cp in range(0x144)}
_TO_LATIN1.update({ord(ch): b for b, ch in enumerate(BYTE_TO_CHAR)})


def _byte_level_raw(text: str) -> bytes | None:
    try:
        return text.translate(_TO_LATIN1).encode("latin-1")
    except UnicodeEncodeError:
        return None


def byte_level_to_bytes(text: str, token_id: int) -> bytes:
    raw = _byte_level_raw(text)
    if raw is None:
        bad = next(ch for ch in text if ch not in CHAR_TO_BYTE)
        raise ValueError(
            f"token {token_id} {text!r}: character {bad!r} is not in the byte-level "
            "alphabet; a normal token of a gpt2-style vocabulary must be byte-level encoded"
        )
    return raw


# ---------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------


class Vocabulary:
    """Bytes and types of every token, and the index of normal tokens by their bytes.

    Also collected while the tokens are read: the texts matched as whole tokens (control, unknown
    and user-defined ones), the control ids, and the normal token of each of the 256 bytes."""

    __slots__ = ("n", "blob", "offsets", "types", "index", "mask", "special_id_of_text",
                 "user_defined_texts", "control_ids", "byte_ids", "build_index")

    def __init__(self, tokens, token_types):
        if len(tokens) != len(token_types):
            raise ValueError(
                f"tokenizer: {len(tokens)} tokens but {len(token_types)} token types; "
                "expected one type per token"
            )
        if not len(tokens):
            raise ValueError("tokenizer: the token list is empty")
        n = self.n = len(tokens)
        raws: list[bytes] = []
        types = bytearray(n)
        normal_ids = []
        self.special_id_of_text: dict[str, int] = {}
        self.user_defined_texts: list[str] = []
        control_ids = []
        for token_id, (text, token_type) in enumerate(zip(tokens, token_types)):
            if not isinstance(text, str):
                raise ValueError(f"token {token_id}: expected a str, got {type(text).__name__}")
            if token_type not in KNOWN_TOKEN_TYPES:
                raise ValueError(
                    f"token {token_id} {text!r}: unknown token type {token_type!r}; "
                    "expected 1 (normal), 2 (unknown), 3 (control), 4 (user-defined), "
                    "5 (unused) or 6 (byte)"
                )
            types[token_id] = token_type
            if token_type == TokenType.NORMAL:
                raw = byte_level_to_bytes(text, token_id)
                normal_ids.append(token_id)
            elif token_type == TokenType.BYTE:
                match = _BYTE_TOKEN.fullmatch(text)
                if match is None:
                    raise ValueError(f"token {token_id} {text!r}: a byte token must be spelled <0xXX>")
                raw = bytes([int(match.group(1), 16)])
            else:
                raw = text.encode("utf-8", "surrogatepass")
                if token_type == TokenType.CONTROL:
                    control_ids.append(token_id)
                if text and token_type in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED):
                    self.special_id_of_text.setdefault(text, token_id)
                    if token_type == TokenType.USER_DEFINED:
                        self.user_defined_texts.append(text)
            raws.append(raw)
        self.types = bytes(types)
        self.control_ids = frozenset(control_ids)

        lengths = np.fromiter(map(len, raws), dtype=np.int64, count=n)
        ends = np.cumsum(lengths)
        self.blob = b"".join(raws)
        self.offsets = array.array("I" if len(self.blob) < 1 << 32 else "q", [0])
        self.offsets.frombytes(ends.astype(np.uint32 if self.offsets.typecode == "I" else np.int64).tobytes())

        # bytes -> first normal id: a dict while the tables are built (MergeTable looks up 840k
        # pieces of Llama-3's merges in it), dropped by drop_build_index() once they are
        by_bytes: dict[bytes, int] = {}
        for token_id in normal_ids:
            by_bytes.setdefault(raws[token_id], token_id)
        del raws
        self.build_index = by_bytes
        size = 1 << max(4, (2 * len(by_bytes)).bit_length())
        mask = self.mask = size - 1
        index = self.index = array.array("i", [-1]) * size
        for raw, token_id in by_bytes.items():
            slot = hash(raw) & mask
            while index[slot] >= 0:
                slot = (slot + 1) & mask
            index[slot] = token_id

        self.byte_ids = []
        for b in range(256):
            token_id = self.lookup(bytes([b]))
            if token_id < 0:
                raise ValueError(
                    f"tokenizer: no normal token for byte 0x{b:02X} "
                    f"(byte-level {BYTE_TO_CHAR[b]!r}); a byte-level BPE vocabulary needs all 256"
                )
            self.byte_ids.append(token_id)

    def drop_build_index(self) -> None:
        self.build_index = None

    def token_bytes(self, token_id: int) -> bytes:
        off = self.offsets
        return self.blob[off[token_id]:off[token_id + 1]]

    def lookup(self, raw: bytes) -> int:
        """The id of the normal token whose bytes are `raw`, or -1."""
        index, mask, off, blob = self.index, self.mask, self.offsets, self.blob
        slot = hash(raw) & mask
        while True:
            token_id = index[slot]
            if token_id < 0 or blob[off[token_id]:off[token_id + 1]] == raw:
                return token_id
            slot = (slot + 1) & mask

    def lookup_text(self, text: str) -> int:
        """The id of the normal token spelled `text` in the byte-level alphabet, or -1."""
        raw = _byte_level_raw(text)
        return -1 if raw is None else self.lookup(raw)

    @property
    def nbytes(self) -> int:
        """Bytes held by the tables (not counting the small special-token dicts)."""
        return (len(self.blob) + self.offsets.itemsize * len(self.offsets) + len(self.types)
                + self.index.itemsize * len(self.index))


# ---------------------------------------------------------------------------
# Merges
# ---------------------------------------------------------------------------


class MergeTable:
    """Pair (left id, right id) -> packed rank * n + merged id, for BPE by rank."""

    __slots__ = ("n", "starts", "rights", "packed")

    def __init__(self, vocab: Vocabulary, pairs):
        n = self.n = vocab.n
        count = len(pairs)
        # (left * n + right) and (rank * n + merged) of every merge, in rank order
        keys, values = array.array("q", bytes(8 * count)), array.array("q", bytes(8 * count))
        table = _TO_LATIN1
        get = vocab.build_index.get if vocab.build_index is not None else None
        if get is None:
            def get(raw, default):
                token_id = vocab.lookup(raw)
                return default if token_id < 0 else token_id
        for rank, (left, right) in enumerate(pairs):
            try:
                left_raw = left.translate(table).encode("latin-1")
                right_raw = right.translate(table).encode("latin-1")
            except UnicodeEncodeError:
                left_id = right_id = merged_id = -1
            else:
                left_id, right_id = get(left_raw, -1), get(right_raw, -1)
                merged_id = get(left_raw + right_raw, -1)
            if left_id < 0 or right_id < 0 or merged_id < 0:
                left_id, right_id = vocab.lookup_text(left), vocab.lookup_text(right)
                merged_id = vocab.lookup_text(left + right) if left_id >= 0 and right_id >= 0 else -1
                missing = next(t for t, i in ((left, left_id), (right, right_id), (left + right, merged_id))
                               if i < 0)
                raise ValueError(
                    f"merge {rank} {left!r} {right!r}: {missing!r} is not a normal token of the vocabulary"
                )
            keys[rank] = left_id * n + right_id
            values[rank] = rank * n + merged_id
        key_a = np.frombuffer(keys, dtype=np.int64) if count else np.zeros(0, np.int64)
        order = np.argsort(key_a, kind="stable")  # equal pairs stay in rank order
        key_s = key_a[order]
        # a pair listed twice takes its later rank, as the reference does: keep the last of a run
        keep = np.ones(count, dtype=bool)
        keep[:-1] = key_s[1:] != key_s[:-1]
        order, key_s = order[keep], key_s[keep]
        packed_s = np.frombuffer(values, dtype=np.int64)[order] if count else np.zeros(0, np.int64)
        del key_a, keys, values, order, keep
        left_s = key_s // n
        starts = np.searchsorted(left_s, np.arange(n + 1, dtype=np.int64))
        right_s = key_s - left_s * n
        self.starts = _as_array("i", starts)
        self.rights = _as_array("i", right_s)
        self.packed = _as_array("q", packed_s)

    def get(self, left: int, right: int, _bisect=bisect.bisect_left):
        """Packed rank * n + merged id of the pair, or None if it does not merge."""
        lo = self.starts[left]
        hi = self.starts[left + 1]
        if lo == hi:
            return None
        i = _bisect(self.rights, right, lo, hi)
        if i < hi and self.rights[i] == right:
            return self.packed[i]
        return None

    def __len__(self) -> int:
        return len(self.rights)

    @property
    def nbytes(self) -> int:
        return sum(a.itemsize * len(a) for a in (self.starts, self.rights, self.packed))


def _as_array(typecode: str, values: np.ndarray) -> array.array:
    out = array.array(typecode)
    out.frombytes(np.ascontiguousarray(values, dtype={"i": np.int32, "q": np.int64}[typecode]).tobytes())
    return out
