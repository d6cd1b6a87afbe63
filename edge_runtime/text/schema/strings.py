"""JSON strings in their canonical form, with length, pattern and format constraints.

Canonical form (what Python's ``json.dumps(ensure_ascii=False)`` writes): characters are raw
UTF-8 except ``\\"``, ``\\\\``, the short escapes ``\\b \\f \\n \\r \\t`` and ``\\u00XX``
(lower-case hex) for the other control characters; no ``\\/``, no other ``\\u`` escapes.
So each string has exactly one text, which keeps property names comparable byte by byte.

The lexer works on the text; each character, once decoded, goes as UTF-8 to the pattern and
format automata. A frame is ``(K_STR, spec, substate, count, automaton_states)``, where the
count of characters is kept only up to the largest length bound.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from edge_runtime.text.schema.regex import ByteDfa

K_STR = 2
INF = 1 << 30
STAY, POP = 0, 1

(CHAR, C1, C2, C3, E0, ED, F0, F4, ESC, U0, U1, U2, U3A, U3B) = range(14)
N_SUBS = 14
CLOSE = "close"
# fewest bytes that finish the character in progress, and the byte that starts them
PENDING = (0, 1, 2, 3, 2, 2, 3, 3, 1, 4, 3, 2, 1, 1)
PENDING_BYTE = (None, 0x80, 0x80, 0x80, 0xA0, 0x80, 0x90, 0x80, 0x6E, 0x30, 0x30, 0x30, 0x30,
                0x30)
_SHORT_ESCAPES = {0x22: 0x22, 0x5C: 0x5C, 0x62: 0x08, 0x66: 0x0C, 0x6E: 0x0A, 0x72: 0x0D,
                  0x74: 0x09}
_LOWER_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdef"}
_HAS_SHORT_FORM = frozenset({0x08, 0x09, 0x0A, 0x0C, 0x0D})


def _lead(byte: int):
    if 0x20 <= byte < 0x80:
        return CHAR
    if 0xC2 <= byte <= 0xDF:
        return C1
    if byte == 0xE0:
        return E0
    if byte == 0xED:
        return ED
    if 0xE1 <= byte <= 0xEF:
        return C2
    if byte == 0xF0:
        return F0
    if 0xF1 <= byte <= 0xF3:
        return C3
    if byte == 0xF4:
        return F4
    return None


def _lex_entry(sub: int, b: int):
    """(substate, decoded bytes, starts a character) after byte b, CLOSE, or None."""
    if sub == CHAR:
        if b == 0x22:
            return CLOSE
        if b == 0x5C:
            return (ESC, b"", True)
        nxt = _lead(b)
        return None if nxt is None else (nxt, bytes((b,)), True)
    if sub in (C1, C2, C3):
        return ({C1: CHAR, C2: C1, C3: C2}[sub], bytes((b,)), False) if 0x80 <= b <= 0xBF else None
    ranges = {E0: (0xA0, 0xBF, C1), ED: (0x80, 0x9F, C1), F0: (0x90, 0xBF, C2),
              F4: (0x80, 0x8F, C2)}
    if sub in ranges:
        lo, hi, nxt = ranges[sub]
        return (nxt, bytes((b,)), False) if lo <= b <= hi else None
    if sub == ESC:
        if b in _SHORT_ESCAPES:
            return (CHAR, bytes((_SHORT_ESCAPES[b],)), False)
        return (U0, b"", False) if b == 0x75 else None
    if sub in (U0, U1):
        return (sub + 1, b"", False) if b == 0x30 else None
    if sub == U2:
        return {0x30: (U3A, b"", False), 0x31: (U3B, b"", False)}.get(b)
    value = _LOWER_HEX.get(b)
    if value is None:
        return None
    value += 16 if sub == U3B else 0
    return None if value in _HAS_SHORT_FORM else (CHAR, bytes((value,)), False)


LEX = tuple(tuple(_lex_entry(sub, b) for b in range(256)) for sub in range(N_SUBS))


def _classes(sub: int):
    """Bytes that the lexer treats alike in a substate (same next substate, same character
    start), when what they decode to does not matter: [(representative, bytes), ...]."""
    groups: dict = {}
    for b in range(256):
        r = LEX[sub][b]
        if r is None:
            continue
        key = r if r is CLOSE else (r[0], r[2])
        groups.setdefault(key, []).append(b)
    return tuple((bs[0], bytes(bs)) for bs in groups.values())


LEX_CLASSES = tuple(_classes(sub) for sub in range(N_SUBS))
# CLASS_OF[sub][byte]: the bytes of byte's class (just the byte when it is invalid there)
CLASS_OF = tuple(tuple(next((m for _, m in LEX_CLASSES[sub] if b in m), bytes((b,)))
                       for b in range(256)) for sub in range(N_SUBS))


def canonical_text(text: str) -> bytes:
    """The canonical JSON text of a string, quotes included (ValueError on lone surrogates)."""
    import json

    try:
        return json.dumps(text, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{text!r} is not valid Unicode text (lone surrogate)") from None


def feed(dfas, states: tuple, data: bytes) -> Optional[tuple]:
    """Automaton states after the decoded bytes ``data``; None if one of them dies."""
    if not data or not dfas:
        return states
    out = []
    for dfa, s in zip(dfas, states):
        for b in data:
            s = dfa.step(s, b)
            if not s:
                return None
        out.append(s)
    return tuple(out)


def _walk(dfa, s: int, data: bytes) -> int:
    for b in data:
        s = dfa.raw_step(s, b) if s else 0
    return s


class StrSpec:
    def __init__(self, min_length: int, max_length: Optional[int], dfas: tuple, pad: bytes):
        self.min_length = min_length
        self.max_length = max_length
        self.dfas: tuple[ByteDfa, ...] = dfas
        self.cap = max_length if max_length is not None else min_length
        self.plain = not dfas
        self.pad = pad
        self.initial_states = tuple(d.start for d in dfas)
        self._succ: dict = {}
        self._min: dict = {}
        self._parts: dict = {}

    def initial(self, sid: int) -> tuple:
        return (K_STR, sid, CHAR, 0, self.initial_states)

    def partition(self, sub: int, states: tuple) -> dict:
        """byte -> the bytes that take the lexer and every automaton to the same states from
        (sub, states) (so they lead to the same frame)."""
        key = (sub, states)
        hit = self._parts.get(key)
        if hit is None:
            groups: dict = {}
            for b in range(256):
                r = LEX[sub][b]
                kind = r if r is None or r is CLOSE else (r[0], r[2])
                targets = ()
                if r is not None and r is not CLOSE and r[1]:
                    targets = tuple(_walk(d, s, r[1]) for d, s in zip(self.dfas, states))
                elif r is not None and r is not CLOSE and not r[1]:
                    targets = ("pending",) + (b,) * (sub >= ESC)
                groups.setdefault((kind, targets), []).append(b)
            hit = {}
            for members in groups.values():
                m = bytes(members)
                for b in members:
                    hit[b] = m
            self._parts[key] = hit
        return hit

    def can_close(self, count: int, states: tuple) -> bool:
        return count >= self.min_length and all(d.accepting(s) for d, s in zip(self.dfas, states))

    def step(self, frame, byte: int):
        _, sid, sub, count, states = frame
        r = LEX[sub][byte]
        if r is None:
            return ()
        if r is CLOSE:
            return ((POP,),) if self.can_close(count, states) else ()
        nsub, decoded, starts = r
        if starts:
            if self.max_length is not None and count >= self.max_length:
                return ()
            if self.cap:
                count = min(count + 1, self.cap)
        if decoded and self.dfas:
            states = feed(self.dfas, states, decoded)
            if states is None:
                return ()
        return ((STAY, (K_STR, sid, nsub, count, states)),)

    def min_bytes(self, frame) -> tuple[int, Optional[int]]:
        """(fewest bytes that close the string, the first of them)."""
        _, _, sub, count, states = frame
        if self.plain:
            pend = PENDING[sub]
            pad = max(0, self.min_length - count)
            if pend:
                return pend + pad + 1, PENDING_BYTE[sub]
            if pad:
                return pad + 1, self.pad[count % len(self.pad)]
            return 1, 0x22
        key = (sub, count, states)
        hit = self._min.get(key)
        if hit is None:
            hit = self._search(sub, count, states)
            self._min[key] = hit
        return hit

    def _successors(self, sub: int, states: tuple):
        key = (sub, states)
        hit = self._succ.get(key)
        if hit is None:
            close = False
            groups: dict = {}
            for b in range(256):
                r = LEX[sub][b]
                if r is None:
                    continue
                if r is CLOSE:
                    close = True
                    continue
                nsub, decoded, starts = r
                ns = feed(self.dfas, states, decoded)
                if ns is None:
                    continue
                groups.setdefault((nsub, ns, starts), b)
            close = close and all(d.accepting(s) for d, s in zip(self.dfas, states))
            hit = (close, tuple((k[0], k[1], k[2], b) for k, b in groups.items()))
            self._succ[key] = hit
        return hit

    def _search(self, sub: int, count: int, states: tuple) -> tuple[int, Optional[int]]:
        start = (sub, count, states)
        seen = {start}
        queue = deque([(start, 0, None)])
        while queue:
            (s, c, st), depth, first = queue.popleft()
            close, succ = self._successors(s, st)
            if close and c >= self.min_length:
                return depth + 1, (0x22 if first is None else first)
            for nsub, ns, starts, b in succ:
                nc = c
                if starts:
                    if self.max_length is not None and c >= self.max_length:
                        continue
                    if self.cap:
                        nc = min(c + 1, self.cap)
                node = (nsub, nc, ns)
                if node not in seen:
                    seen.add(node)
                    queue.append((node, depth + 1, b if first is None else first))
        return INF, None
