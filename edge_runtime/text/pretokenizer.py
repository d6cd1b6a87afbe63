"""The Llama-3 pre-tokenizer: text cut into the words that byte-level BPE then merges.

The reference splits with the regex

    (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}
    | ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+

(Oniguruma, Unicode mode). Python's `re` has no \\p{L}, so this is a hand-written scanner over
character classes that gives the same words for every code point.
"""

from __future__ import annotations

import unicodedata

__all__ = ["LLAMA3_PRETOKENIZER_PATTERN", "pretokenize"]

LLAMA3_PRETOKENIZER_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# GGUF spellings of the Llama-3 pre-tokenizer (llama.cpp treats them alike).
LLAMA3_PRE_NAMES = ("llama-bpe", "llama3", "llama-v3")


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
