"""The regular-expression subset of ``pattern`` / ``patternProperties``, as byte automata.

JSON Schema patterns are ECMA-262 regexes matched anywhere in the string (search, not full
match). Validators written in other languages run them with their own engines, Python's
``re`` among them, and the engines disagree at the edges. The subset here is chosen so that
every string it matches is matched by both ECMA-262 and Python's ``re.search``:

- literals, ``.`` (any character but ``\\n``, ``\\r``, U+2028, U+2029), classes ``[a-z_]``
  and ``[^...]`` with ranges, groups ``(...)``, ``(?:...)``, ``(?<name>...)``, alternation,
  quantifiers ``* + ? {n} {n,} {n,m}`` (lazy forms too: they match the same strings);
- ``^`` at the start and ``$`` at the end of a top-level alternative (``$`` is the end of the
  string only, never before a final newline);
- escapes ``\\t \\n \\r \\f \\v \\0 \\xHH \\uHHHH``, escaped punctuation, and the shorthands
  ``\\d`` = [0-9], ``\\w`` = [A-Za-z0-9_], ``\\s`` = [ \\t\\n\\v\\f\\r]. Their negations
  ``\\D \\W \\S`` (and negated classes holding a shorthand) match ASCII characters only: the
  engines' Unicode tables differ beyond ASCII.

Anything else (look-around, back-references, ``\\b``, ``\\p{..}``, inline flags, anchors in
the middle) is a RegexError naming the construct.

A pattern becomes a byte-level NFA over the UTF-8 encoding of the string's characters, then a
DFA built lazily by subset construction. ``ByteDfa`` state 0 is the dead state.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

INF = 1 << 30
MAX_CODE_POINT = 0x10FFFF
_MAX_NFA_STATES = 60000
_MAX_REPEAT = 1000


class RegexError(ValueError):
    """A pattern outside the supported subset, or malformed."""


# ---------------------------------------------------------------------------------------
# Character sets: sorted, disjoint, inclusive code point ranges (no surrogates)
# ---------------------------------------------------------------------------------------

def _normalize(ranges):
    out = []
    for lo, hi in sorted(ranges):
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    # surrogates never occur in the text (the JSON layer keeps strings valid Unicode)
    cut = []
    for lo, hi in out:
        if lo <= 0xDFFF and hi >= 0xD800:
            if lo < 0xD800:
                cut.append((lo, 0xD7FF))
            if hi > 0xDFFF:
                cut.append((0xE000, hi))
        else:
            cut.append((lo, hi))
    return tuple(cut)


def _complement(ranges):
    out, start = [], 0
    for lo, hi in ranges:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODE_POINT:
        out.append((start, MAX_CODE_POINT))
    return _normalize(out)


def _intersect(a, b):
    out = []
    for lo1, hi1 in a:
        for lo2, hi2 in b:
            lo, hi = max(lo1, lo2), min(hi1, hi2)
            if lo <= hi:
                out.append((lo, hi))
    return _normalize(out)


def _chars(text):
    return _normalize((ord(c), ord(c)) for c in text)


ANY = _normalize([(0, MAX_CODE_POINT)])
ASCII = ((0, 0x7F),)
DIGIT = ((0x30, 0x39),)
WORD = _normalize([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
SPACE = _normalize([(0x09, 0x0D), (0x20, 0x20)])
DOT = _complement(_chars("\n\r\u2028\u2029"))
_SHORTHANDS = {"d": DIGIT, "w": WORD, "s": SPACE}


# ---------------------------------------------------------------------------------------
# Parser: pattern text -> tree
# ---------------------------------------------------------------------------------------
# Tree nodes: ("set", ranges), ("cat", [nodes]), ("alt", [nodes]), ("rep", node, lo, hi|None)

_EMPTY = ("cat", [])


class _Parser:
    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 0

    def error(self, what: str):
        raise RegexError(f"pattern {self.p!r}: {what} (at offset {self.i})")

    def peek(self, k=0) -> Optional[str]:
        j = self.i + k
        return self.p[j] if j < len(self.p) else None

    def take(self) -> str:
        c = self.p[self.i]
        self.i += 1
        return c

    def parse(self):
        """Top level: a list of (anchored_start, node, anchored_end) alternatives."""
        alternatives = []
        while True:
            start = self.peek() == "^"
            if start:
                self.i += 1
            items = self.sequence(top=True)
            end = False
            if self.peek() == "$":
                self.i += 1
                end = True
            alternatives.append((start, ("cat", items), end))
            if self.peek() is None:
                return alternatives
            if self.peek() == "|":
                self.i += 1
                continue
            if self.peek() == "$":
                self.error("'$' is only supported at the end of an alternative")
            self.error(f"unexpected {self.peek()!r}")

    def alternation(self):
        branches = [("cat", self.sequence(top=False))]
        while self.peek() == "|":
            self.i += 1
            branches.append(("cat", self.sequence(top=False)))
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self, top: bool):
        items = []
        while True:
            c = self.peek()
            if c is None or c == "|" or c == ")":
                if c == ")" and top:
                    self.error("unbalanced ')'")
                return items
            if c == "$":
                if top:
                    return items       # the caller checks that it ends the alternative
                self.error("'$' inside a group is not supported")
            if c == "^":
                self.error("'^' is only supported at the start of an alternative")
            atom = self.atom()
            items.append(self.quantified(atom))

    def quantified(self, atom):
        c = self.peek()
        if c in ("*", "+", "?"):
            self.i += 1
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif c == "{" and self.brace_quantifier() is not None:
            lo, hi = self.brace_quantifier(consume=True)
        else:
            return atom
        if self.peek() == "?":
            self.i += 1                   # lazy: the same set of matched strings
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self.brace_quantifier()):
            self.error("a quantifier cannot follow a quantifier")
        if hi is not None and hi < lo:
            self.error(f"quantifier {{{lo},{hi}}}: the maximum is below the minimum")
        if lo > _MAX_REPEAT or (hi is not None and hi > _MAX_REPEAT):
            self.error(f"repetition counts above {_MAX_REPEAT} are not supported")
        return ("rep", atom, lo, hi)

    def brace_quantifier(self, consume=False):
        """(lo, hi) if the text at the cursor is {n}, {n,} or {n,m}; else None (a literal '{')."""
        j = self.i + 1
        p = self.p
        k = j
        while k < len(p) and p[k].isdigit() and p[k].isascii():
            k += 1
        if k == j:
            return None
        lo = int(p[j:k])
        hi = lo
        if k < len(p) and p[k] == ",":
            m = k + 1
            while m < len(p) and p[m].isdigit() and p[m].isascii():
                m += 1
            hi = int(p[k + 1:m]) if m > k + 1 else None
            k = m
        if k >= len(p) or p[k] != "}":
            return None
        if consume:
            self.i = k + 1
        return lo, hi

    def atom(self):
        c = self.take()
        if c == "(":
            if self.peek() == "?":
                if self.p.startswith("?:", self.i):
                    self.i += 2
                elif self.p.startswith("?<", self.i) and self.peek(2) not in ("=", "!"):
                    close = self.p.find(">", self.i)
                    name = self.p[self.i + 2:close] if close > 0 else ""
                    if not name or not (name[0].isalpha() or name[0] in "_$") or not all(
                            ch.isalnum() or ch in "_$" for ch in name):
                        self.error("malformed group name")
                    self.i = close + 1
                else:
                    self.error("look-around, inline flags and other '(?' groups are not "
                               "supported")
            node = self.alternation()
            if self.peek() != ")":
                self.error("missing ')'")
            self.i += 1
            return node
        if c == "[":
            return ("set", self.char_class())
        if c == ".":
            return ("set", DOT)
        if c == "\\":
            return ("set", self.escape(in_class=False))
        if c in "*+?":
            self.error(f"nothing to repeat before {c!r}")
        if c == "{" and self.brace_quantifier_at(self.i - 1):
            self.error("nothing to repeat before '{'")
        return ("set", _chars(c))

    def brace_quantifier_at(self, j):
        saved = self.i
        self.i = j
        try:
            return self.brace_quantifier() is not None
        finally:
            self.i = saved

    def escape(self, in_class: bool):
        if self.peek() is None:
            self.error("pattern ends with a backslash")
        c = self.take()
        if c in _SHORTHANDS:
            return _SHORTHANDS[c]
        if c in "DWS":
            # negated shorthands: ASCII only (the engines' Unicode tables differ)
            return _intersect(_complement(_SHORTHANDS[c.lower()]), ASCII)
        simple = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
        if c in simple:
            return _chars(simple[c])
        if c == "b" and in_class:
            return _chars("\b")
        if c == "0" and not (self.peek() or "").isdigit():
            return _chars("\0")
        if c == "x":
            return _chars(chr(self.hex_digits(2)))
        if c == "u":
            if self.peek() == "{":
                self.error("\\u{...} escapes are not supported")
            value = self.hex_digits(4)
            if 0xD800 <= value <= 0xDFFF:
                self.error("surrogate escapes are not supported")
            return _chars(chr(value))
        if c.isdigit():
            self.error("back-references and octal escapes are not supported")
        if c in "bB":
            self.error("word boundaries (\\b, \\B) are not supported")
        if c in "pP":
            self.error("Unicode property escapes (\\p, \\P) are not supported")
        if c.isascii() and c.isalnum():
            self.error(f"the escape \\{c} is not supported")
        return _chars(c)

    def hex_digits(self, n):
        text = self.p[self.i:self.i + n]
        if len(text) != n or not all(ch in "0123456789abcdefABCDEF" for ch in text):
            self.error(f"expected {n} hex digits")
        self.i += n
        return int(text, 16)

    def char_class(self):
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        if self.peek() == "]":
            self.error("empty classes '[]' and '[^]' are not supported (the engines differ)")
        ranges = []
        shorthand = False
        while True:
            c = self.peek()
            if c is None:
                self.error("missing ']'")
            if c == "]":
                self.i += 1
                break
            if c == "[" and self.peek(1) in (":", "=", "."):
                self.error("POSIX classes are not supported")
            low = self.class_atom()
            if isinstance(low, tuple) and len(low) and isinstance(low[0], tuple):
                ranges.extend(low)
                shorthand = True
                continue
            if self.peek() == "-" and self.peek(1) not in ("]", None):
                self.i += 1
                high = self.class_atom()
                if not isinstance(high, int):
                    self.error("a class range cannot end in a shorthand")
                if high < low:
                    self.error("class range out of order")
                ranges.append((low, high))
            else:
                ranges.append((low, low))
        result = _normalize(ranges)
        if negated:
            result = _complement(result)
            if shorthand:
                result = _intersect(result, ASCII)
        return result

    def class_atom(self):
        """A code point, or a tuple of ranges for a shorthand escape."""
        c = self.take()
        if c == "\\":
            if self.peek() in tuple("dDwWsS"):
                return self.escape(in_class=True)
            ranges = self.escape(in_class=True)
            return ranges[0][0]
        return ord(c)


# ---------------------------------------------------------------------------------------
# UTF-8 byte sequences of code point ranges
# ---------------------------------------------------------------------------------------

def _encode(cp: int) -> bytes:
    return chr(cp).encode("utf-8")


def utf8_sequences(lo: int, hi: int):
    """Lists of (byte_lo, byte_hi) per position whose products encode exactly [lo, hi]."""
    out = []
    stack = [(lo, hi)]
    while stack:
        lo, hi = stack.pop()
        if lo > hi:
            continue
        split = False
        for boundary in (0x7F, 0x7FF, 0xFFFF):
            if lo <= boundary < hi:
                stack.append((boundary + 1, hi))
                stack.append((lo, boundary))
                split = True
                break
        if split:
            continue
        if hi < 0x80:
            out.append([(lo, hi)])
            continue
        n = len(_encode(lo))
        for i in range(1, n):
            m = (1 << (6 * i)) - 1
            if lo & ~m != hi & ~m:
                if lo & m:
                    stack.append(((lo | m) + 1, hi))
                    stack.append((lo, lo | m))
                    split = True
                    break
                if hi & m != m:
                    stack.append((hi & ~m, hi))
                    stack.append((lo, (hi & ~m) - 1))
                    split = True
                    break
        if split:
            continue
        out.append(list(zip(_encode(lo), _encode(hi))))
    return out


# ---------------------------------------------------------------------------------------
# NFA over bytes
# ---------------------------------------------------------------------------------------

class _Nfa:
    def __init__(self):
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple]] = []     # (byte_lo, byte_hi, target)

    def state(self) -> int:
        if len(self.eps) >= _MAX_NFA_STATES:
            raise RegexError(f"pattern too large (more than {_MAX_NFA_STATES} automaton states)")
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def charset(self, ranges, start: int, end: int) -> None:
        for lo, hi in ranges:
            for seq in utf8_sequences(lo, hi):
                cur = start
                for k, (blo, bhi) in enumerate(seq):
                    nxt = end if k == len(seq) - 1 else self.state()
                    self.edges[cur].append((blo, bhi, nxt))
                    cur = nxt

    def build(self, node, start: int, end: int) -> None:
        kind = node[0]
        if kind == "set":
            self.charset(node[1], start, end)
        elif kind == "cat":
            cur = start
            for k, item in enumerate(node[1]):
                nxt = end if k == len(node[1]) - 1 else self.state()
                self.build(item, cur, nxt)
                cur = nxt
            if not node[1]:
                self.eps[start].append(end)
        elif kind == "alt":
            for branch in node[1]:
                self.build(branch, start, end)
        else:                                           # rep
            _, inner, lo, hi = node
            cur = start
            for _ in range(lo):
                nxt = self.state()
                self.build(inner, cur, nxt)
                cur = nxt
            if hi is None:
                loop = self.state()
                self.eps[cur].append(loop)
                body_end = self.state()
                self.build(inner, loop, body_end)
                self.eps[body_end].append(loop)
                self.eps[loop].append(end)
            else:
                for _ in range(hi - lo):
                    nxt = self.state()
                    self.eps[cur].append(end)
                    self.build(inner, cur, nxt)
                    cur = nxt
                self.eps[cur].append(end)


def _build_nfa(alternatives, search: bool):
    nfa = _Nfa()
    start, accept = nfa.state(), nfa.state()
    for anchored_start, node, anchored_end in alternatives:
        a, b = nfa.state(), nfa.state()
        if search and not anchored_start:
            nfa.build(("rep", ("set", ANY), 0, None), start, a)
        else:
            nfa.eps[start].append(a)
        nfa.build(node, a, b)
        if search and not anchored_end:
            nfa.build(("rep", ("set", ANY), 0, None), b, accept)
        else:
            nfa.eps[b].append(accept)
    return nfa, start, accept


# ---------------------------------------------------------------------------------------
# Lazy DFA
# ---------------------------------------------------------------------------------------

class ByteDfa:
    """Deterministic automaton over UTF-8 bytes, built on demand. State 0 is dead.

    ``step(s, b)`` is the state after byte b, ``accepting(s)`` whether the bytes so far are
    a match, ``dist(s)`` the fewest bytes to a match (INF when none: such states are turned
    into 0 by ``step``).
    """

    def __init__(self, nfa: _Nfa, start: int, accept: int, source: str):
        self.source = source
        self._nfa = nfa
        self._accept = accept
        self._closure_cache: dict[int, frozenset] = {}
        self._sets: list[Optional[frozenset]] = [None]
        self._ids: dict[frozenset, int] = {}
        self._trans: list[Optional[list]] = [None]
        self._dist: list[int] = [INF]
        self._classes: dict[int, list] = {}
        self.start = self._intern(self._closure([start]))
        if self.dist(self.start) >= INF:
            raise RegexError(f"pattern {source!r} matches no string")

    def _closure(self, states) -> frozenset:
        seen = set()
        todo = list(states)
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            todo.extend(self._nfa.eps[s])
        return frozenset(seen)

    def _intern(self, nset: frozenset) -> int:
        if not nset:
            return 0
        sid = self._ids.get(nset)
        if sid is None:
            sid = len(self._sets)
            self._ids[nset] = sid
            self._sets.append(nset)
            self._trans.append(None)
            self._dist.append(-1)
        return sid

    def _row(self, sid: int) -> list:
        row = self._trans[sid]
        if row is None:
            targets: list[set] = [set() for _ in range(256)]
            for s in self._sets[sid]:
                for lo, hi, t in self._nfa.edges[s]:
                    for b in range(lo, hi + 1):
                        targets[b].add(t)
            row = [0] * 256
            for b in range(256):
                if targets[b]:
                    key = frozenset(targets[b])
                    closed = self._closure_cache.get(key)
                    if closed is None:
                        closed = self._closure(key)
                        self._closure_cache[key] = closed
                    row[b] = self._intern(closed)
            self._trans[sid] = row
        return row

    def raw_step(self, sid: int, byte: int) -> int:
        return self._row(sid)[byte] if sid else 0

    def step(self, sid: int, byte: int) -> int:
        """Next state, or 0 when the match can no longer succeed."""
        if not sid:
            return 0
        t = self._row(sid)[byte]
        return t if t and self.dist(t) < INF else 0

    def accepting(self, sid: int) -> bool:
        return bool(sid) and self._accept in self._sets[sid]

    def dist(self, sid: int) -> int:
        """Fewest bytes from ``sid`` to a match (INF if none)."""
        if not sid:
            return INF
        d = self._dist[sid]
        if d >= 0:
            return d
        # BFS forward to the nearest accepting state; distances along the way are upper
        # bounds only, so only the start gets its exact value.
        if self.accepting(sid):
            self._dist[sid] = 0
            return 0
        seen = {sid}
        frontier = [sid]
        depth = 0
        while frontier:
            depth += 1
            nxt = []
            for s in frontier:
                for t in set(self._row(s)):
                    if t and t not in seen:
                        if self.accepting(t):
                            self._dist[sid] = depth
                            return depth
                        seen.add(t)
                        nxt.append(t)
            frontier = nxt
        self._dist[sid] = INF
        return INF

    def matches(self, data: bytes) -> bool:
        s = self.start
        for b in data:
            s = self.raw_step(s, b)
            if not s:
                return False
        return self.accepting(s)

    def shortest_match(self, sid: Optional[int] = None) -> Optional[bytes]:
        """The shortest byte string (smallest bytes first) leading from ``sid`` to a match."""
        sid = self.start if sid is None else sid
        if self.dist(sid) >= INF:
            return None
        out = bytearray()
        while not self.accepting(sid):
            want = self.dist(sid) - 1
            for b in range(256):
                t = self.step(sid, b)
                if t and self.dist(t) == want:
                    out.append(b)
                    sid = t
                    break
        return bytes(out)


def parse(pattern: str):
    if not isinstance(pattern, str):
        raise RegexError(f"pattern must be a string, got {type(pattern).__name__}")
    return _Parser(pattern).parse()


def compile_search(pattern: str) -> ByteDfa:
    """DFA accepting the UTF-8 strings in which ``pattern`` finds a match."""
    nfa, start, accept = _build_nfa(parse(pattern), search=True)
    return ByteDfa(nfa, start, accept, pattern)


def compile_full(pattern: str) -> ByteDfa:
    """DFA accepting the strings ``pattern`` matches as a whole (formats)."""
    nfa, start, accept = _build_nfa(parse(pattern), search=False)
    return ByteDfa(nfa, start, accept, pattern)
