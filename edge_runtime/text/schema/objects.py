"""Objects, arrays and literal sets as automaton frames.

Objects take their properties in any order, each name once. A frame is
``(K_OBJ, spec, phase, seen, n, extras, a, b, c)``: ``seen`` is a bit set over the names the
schema knows (properties, required, dependentRequired), ``n`` the number of properties so far
(kept up to the largest of minProperties/maxProperties), ``extras`` the other names used so far
(their canonical text). While a name is being read (phase KEY) ``a`` is the lexer substate,
``b`` the name's text so far while it can still become a known, a used or a short name (else
None) and ``c`` the states of the patternProperties automata. After the closing quote
(phase COLON) ``a`` is the node of the value.

A name that is none of those is only known once its quote closes. The shared automaton cannot
hold arbitrary names, so it records ``None`` in ``extras`` and forbids any further new name in
that object; the runner that follows one document (accepts / the generation constraint) then
puts the real name in its place (see automaton.py), which keeps names unique.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from edge_runtime.text.schema.strings import CLOSE, LEX, LEX_CLASSES, CHAR

K_LIT, K_OBJ, K_ARR = 1, 4, 5
INF = 1 << 30
STAY, POP, POP_FEED, PUSH, PUSH_FEED = 0, 1, 2, 3, 4
OPEN, KEY, COLON, AFTER, NEXT = range(5)
_QUOTE, _COLON, _COMMA, _LBRACE, _RBRACE, _LBRACKET, _RBRACKET = b'":,{}[]'
# short names the automaton always tracks, so minProperties can be met with distinct names
_SHORT_NAMES = [b""] + [bytes((c,)) for c in b"abcdefghijklmnopqrstuvwxyz0123456789"]


def _key_feed(dfas, states: tuple, data: bytes) -> tuple:
    """Pattern automata states after decoded name bytes (0 stays 0: that pattern failed)."""
    if not data or not dfas:
        return states
    out = []
    for dfa, s in zip(dfas, states):
        for b in data:
            s = dfa.raw_step(s, b) if s else 0
        out.append(s)
    return tuple(out)


def last_name(doc) -> bytes:
    """Text of the property name whose closing quote ends ``doc``."""
    j = len(doc) - 2
    while j >= 0:
        if doc[j] == 0x22:
            slashes = 0
            while j - 1 - slashes >= 0 and doc[j - 1 - slashes] == 0x5C:
                slashes += 1
            if slashes % 2 == 0:
                return bytes(doc[j + 1:-1])
        j -= 1
    raise AssertionError("no opening quote before a property name")


def _decode(content: bytes) -> bytes:
    import json

    return json.loads(b'"' + content + b'"').encode("utf-8")


class ObjSpec:
    def __init__(self, prog, conj, oid: int):
        self.prog = prog
        self.oid = oid
        compiled = prog.compiled
        names = []
        for part in conj.obj_parts:
            for name, _ in part.props:
                if name not in names:
                    names.append(name)
        for name in sorted(conj.required):
            if name not in names:
                names.append(name)
        for name, deps in conj.dep_required:
            for n in [name] + sorted(deps):
                if n not in names:
                    names.append(n)
        self.names = names
        self.contents = [prog.key_content(n) for n in names]
        self.index = {c: i for i, c in enumerate(self.contents)}
        self.nodes = [prog.node(compiled.value_locations(conj.obj_parts, n)) for n in names]
        self.required = sum(1 << self.index[prog.key_content(n)] for n in conj.required)
        self.deps = [(self.index[prog.key_content(a)],
                      sum(1 << self.index[prog.key_content(d)] for d in deps))
                     for a, deps in conj.dep_required]
        self.min_props = conj.min_props
        self.max_props = conj.max_props
        self.cap_n = max(conj.min_props, conj.max_props or 0)
        patterns = []
        for part in conj.obj_parts:
            for pattern, _ in part.patterns:
                if pattern not in patterns:
                    patterns.append(pattern)
        self.dfas = tuple(compiled.regexes[p] for p in patterns)
        self.part_rules = [([(patterns.index(p), locs) for p, locs in part.patterns],
                            part.additional) for part in conj.obj_parts]
        self.initial_pstates = tuple(d.start for d in self.dfas)
        self._combos: dict[int, int] = {}
        candidates = [c for c in _SHORT_NAMES if c not in self.index]
        for dfa in self.dfas:
            match = dfa.shortest_match()
            if match is not None:
                try:
                    content = prog.key_content(match.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue
                if content not in self.index and content not in candidates:
                    candidates.append(content)
        self.candidates = candidates
        self.candidate_nodes = [self.combo(_key_feed(self.dfas, self.initial_pstates,
                                                     _decode(c))) for c in candidates]
        # names followed byte by byte: the known ones, and the short ones minProperties may
        # need (only then: each followed prefix is a state of its own)
        followed = self.contents + (candidates if conj.min_props else [])
        self.tracked = {c[:k] for c in followed for k in range(len(c) + 1)}
        self._next_bytes: dict[bytes, frozenset] = {}
        for t in self.tracked:
            if t:
                self._next_bytes.setdefault(t[:-1], set()).add(t[-1])
        self._next_bytes = {k: frozenset(v) for k, v in self._next_bytes.items()}
        self._extras_possible = None
        self._fills = None
        self._after: dict = {}
        self._key_min: dict = {}

    def initial(self) -> tuple:
        return (K_OBJ, self.oid, OPEN, 0, 0, frozenset(), None, None, None)

    def combo(self, pstates: tuple) -> int:
        """Node of the value of a name that is not known, given its pattern automata states."""
        mask = 0
        for k, (dfa, s) in enumerate(zip(self.dfas, pstates)):
            if s and dfa.accepting(s):
                mask |= 1 << k
        nid = self._combos.get(mask)
        if nid is None:
            locs = frozenset()
            for rules, additional in self.part_rules:
                matched = [l for k, l in rules if mask >> k & 1]
                if matched:
                    for l in matched:
                        locs |= l
                else:
                    locs |= additional
            nid = self.prog.node(locs)
            self._combos[mask] = nid
        return nid

    def _grow_name(self, prefix, byte: int, extras):
        """The name bytes followed so far after one more byte; None once no name followed (known,
        candidate or an extra of this object) starts with them."""
        if prefix is None:
            return None
        prefix += bytes((byte,))
        if prefix in self.tracked or any(e is not None and e.startswith(prefix) for e in extras):
            return prefix
        return None

    # -- steps -----------------------------------------------------------------------------

    def closable(self, seen: int, n: int) -> bool:
        if self.required & ~seen or n < self.min_props:
            return False
        return all(not (seen >> i & 1) or not (mask & ~seen) for i, mask in self.deps)

    def step(self, frame, byte: int):
        _, oid, phase, seen, n, extras, a, b, c = frame
        if phase == KEY:
            r = LEX[a][byte]
            if r is None:
                return ()
            if r is CLOSE:
                return self._close_key(frame)
            nsub, decoded, _ = r
            return ((STAY, (K_OBJ, oid, KEY, seen, n, extras, nsub, self._grow_name(b, byte, extras),
                            _key_feed(self.dfas, c, decoded))),)
        if byte == _QUOTE and phase in (OPEN, NEXT):
            return ((STAY, (K_OBJ, oid, KEY, seen, n, extras, CHAR, b"", self.initial_pstates)),)
        if byte == _RBRACE and phase in (OPEN, AFTER):
            return ((POP,),) if self.closable(seen, n) else ()
        if byte == _COMMA and phase == AFTER:
            if self.max_props is not None and n >= self.max_props:
                return ()
            return ((STAY, (K_OBJ, oid, NEXT, seen, n, extras, None, None, None)),)
        if byte == _COLON and phase == COLON:
            return ((PUSH, (K_OBJ, oid, AFTER, seen, n, extras, None, None, None), a),)
        return ()

    def _close_key(self, frame):
        _, oid, _, seen, n, extras, _, prefix, pstates = frame
        if self.max_props is not None and n >= self.max_props:
            return ()
        i = self.index.get(prefix) if prefix is not None else None
        if i is not None:
            if seen >> i & 1:
                return ()
            node, seen = self.nodes[i], seen | (1 << i)
        else:
            if None in extras or (prefix is not None and prefix in extras):
                return ()
            node = self.combo(pstates)
            extras = extras | {prefix}
        return ((STAY, (K_OBJ, oid, COLON, seen, min(n + 1, self.cap_n), extras, node, None,
                        None)),)

    @staticmethod
    def fix_name(frame, content: bytes) -> tuple:
        """The frame with the unknown name (None) replaced by ``content``."""
        extras = (frame[5] - {None}) | {content}
        return frame[:5] + (frozenset(extras),) + frame[6:]

    # -- fewest bytes to the end -------------------------------------------------------------

    def kcost(self, i: int) -> int:
        return len(self.contents[i]) + 3 + self.prog.node_min[self.nodes[i]]

    def _fill_options(self):
        """(cost, kind, index) of single properties that can be added, cheapest first."""
        if self._fills is None or not self.prog.final:
            opts = [(self.kcost(i), 0, i) for i in range(len(self.names))]
            opts += [(len(c) + 3 + self.prog.node_min[nd], 1, j)
                     for j, (c, nd) in enumerate(zip(self.candidates, self.candidate_nodes))]
            opts = sorted(o for o in opts if o[0] < INF)
            if not self.prog.final:
                return opts
            self._fills = opts
        return self._fills

    def after_cost(self, seen: int, n: int, extras: frozenset, phase: int):
        """(fewest bytes to close the object from a state between properties, first byte)."""
        key = (seen, n, extras, phase)
        if self.prog.final:
            hit = self._after.get(key)
            if hit is not None:
                return hit
        have = seen | self.required
        changed = True
        while changed:
            changed = False
            for i, mask in self.deps:
                if have >> i & 1 and mask & ~have:
                    have |= mask
                    changed = True
        missing = have & ~seen
        cost = 0
        m = 0
        i = 0
        bits = missing
        while bits:
            if bits & 1:
                cost += self.kcost(i)
                m += 1
            bits >>= 1
            i += 1
        k = max(0, self.min_props - n - m)
        if phase == NEXT and m + k == 0:
            k = 1
        total = m + k
        if k:
            dep_of = {i: mask for i, mask in self.deps}
            for c, kind, idx in self._fill_options():
                if not k:
                    break
                if kind == 0:
                    if have >> idx & 1 or dep_of.get(idx, 0) & ~have:
                        continue
                elif None in extras or self.candidates[idx] in extras:
                    continue
                cost += c
                k -= 1
            if k:
                cost = INF
        if self.max_props is not None and n + total > self.max_props:
            cost = INF
        if cost < INF:
            cost += (total - 1 if phase in (OPEN, NEXT) else total) if total else 0
            cost += 1
        first = {OPEN: _QUOTE if total else _RBRACE, AFTER: _COMMA if total else _RBRACE,
                 NEXT: _QUOTE}[phase]
        result = (min(cost, INF), first if cost < INF else None)
        if self.prog.final:
            self._after[key] = result
        return result

    def min_bytes(self, frame):
        _, _, phase, seen, n, extras, a, b, c = frame
        if phase == COLON:
            rest, _ = self.after_cost(seen, n, extras, AFTER)
            return min(INF, 1 + self.prog.node_min[a] + rest), _COLON
        if phase != KEY:
            return self.after_cost(seen, n, extras, phase)
        hit = self._key_min.get(frame)
        if hit is None:
            hit = self._key_search(frame)
            if self.prog.final:
                self._key_min[frame] = hit
        return hit

    def _key_search(self, frame):
        """Fewest bytes to the end of the object from inside a name: over the known names that
        extend it, and over new names (a breadth-first search on the name's lexer states)."""
        _, oid, _, seen, n, extras, sub, prefix, pstates = frame
        node_min = self.prog.node_min
        best = (INF, None)
        if self.max_props is not None and n >= self.max_props:
            return best
        if prefix is not None:
            for i, content in enumerate(self.contents):
                if seen >> i & 1 or not content.startswith(prefix):
                    continue
                rest_key = len(content) - len(prefix)
                after, _ = self.after_cost(seen | (1 << i), min(n + 1, self.cap_n), extras, AFTER)
                cost = rest_key + 2 + node_min[self.nodes[i]] + after
                if cost < best[0]:
                    best = (cost, content[len(prefix)] if rest_key else _QUOTE)
        if None in extras or not self.extras_possible():
            return best
        n1 = min(n + 1, self.cap_n)
        lower = 3 + self.after_cost(seen, n1, extras, AFTER)[0]
        start = (sub, prefix, pstates)
        seen_states = {start}
        queue = deque([(start, 0, None)])
        while queue:
            (s, p, ps), depth, first = queue.popleft()
            if depth + lower >= best[0]:
                break
            if s == CHAR and not (p is not None and (p in self.index or p in extras)):
                after, _ = self.after_cost(seen, n1, extras | {p}, AFTER)
                cost = depth + 2 + node_min[self.combo(ps)] + after
                if cost < best[0]:
                    best = (cost, _QUOTE if first is None else first)
            for byte in self._branch_bytes(s, p, extras):
                r = LEX[s][byte]
                if r is None or r is CLOSE:
                    continue
                nsub, decoded, _ = r
                state = (nsub, self._grow_name(p, byte, extras), _key_feed(self.dfas, ps, decoded))
                if state not in seen_states:
                    seen_states.add(state)
                    queue.append((state, depth + 1, byte if first is None else first))
        return best


    def tracked_next(self, prefix: bytes, extras) -> bytes:
        """Bytes after which a name with this text is still followed byte by byte."""
        out = set(self._next_bytes.get(prefix, ()))
        for e in extras:
            if e is not None and len(e) > len(prefix) and e.startswith(prefix):
                out.add(e[len(prefix)])
        return bytes(sorted(out))

    def _branch_bytes(self, sub: int, prefix, extras):
        """Bytes worth trying from a name lexer state: with patterns every byte; else the
        bytes that keep the name tracked plus one byte per lexer class."""
        if self.dfas:
            return range(256)
        out = {rep for rep, _ in LEX_CLASSES[sub]}
        if prefix is not None:
            out |= self._next_bytes.get(prefix, frozenset())
            for e in extras:
                if e is not None and len(e) > len(prefix) and e.startswith(prefix):
                    out.add(e[len(prefix)])
        return sorted(out)

    def extras_possible(self) -> bool:
        """Whether some name outside the known ones can have a value (not additionalProperties
        false without patterns)."""
        if self.dfas:
            return True
        if self._extras_possible is None or not self.prog.final:
            possible = self.prog.node_min[self.combo(())] < INF
            if not self.prog.final:
                return possible
            self._extras_possible = possible
        return self._extras_possible


class ArrSpec:
    def __init__(self, prog, conj, aid: int):
        self.prog = prog
        self.aid = aid
        self.prefix = [prog.node(locs) for locs in conj.prefix]
        self.items = prog.node(conj.items)
        self.min_items = conj.min_items
        self.max_items = conj.max_items
        self.cap = max(len(self.prefix), conj.min_items, conj.max_items or 0)

    def initial(self) -> tuple:
        return (K_ARR, self.aid, OPEN, 0)

    def item(self, index: int) -> int:
        return self.prefix[index] if index < len(self.prefix) else self.items

    def step(self, frame, byte: int):
        _, aid, phase, index = frame
        if phase == AFTER:
            if byte == _COMMA and (self.max_items is None or index < self.max_items):
                return ((STAY, (K_ARR, aid, NEXT, index)),)
            if byte == _RBRACKET and index >= self.min_items:
                return ((POP,),)
            return ()
        if phase == OPEN and byte == _RBRACKET:
            return ((POP,),) if self.min_items == 0 else ()
        if phase == OPEN and self.max_items == 0:
            return ()
        return ((PUSH_FEED, (K_ARR, aid, AFTER, min(index + 1, self.cap)), self.item(index)),)

    def min_bytes(self, frame):
        _, _, phase, index = frame
        node_min = self.prog.node_min
        m = max(0, self.min_items - index)
        if phase == NEXT:
            m = max(1, m)
        elif m == 0:
            return 1, _RBRACKET
        cost = sum(node_min[self.item(min(i, self.cap))] for i in range(index, index + m))
        cost += m - 1 + 1 if phase != AFTER else m + 1
        if cost >= INF:
            return INF, None
        first = _COMMA if phase == AFTER else self.prog.node_pi[self.item(index)]
        return cost, first


class LitTrie:
    """A finite set of literal texts (enum, const, true/false/null)."""

    def __init__(self, texts, tid: int):
        self.tid = tid
        self.children: list[dict] = [{}]
        self.terminal = [False]
        for text in texts:
            node = 0
            for b in text:
                nxt = self.children[node].get(b)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][b] = nxt
                    self.children.append({})
                    self.terminal.append(False)
                node = nxt
            self.terminal[node] = True
        # fewest bytes to a terminal, children before parents (ids grow downwards)
        self.rest = [INF] * len(self.children)
        self.pi: list[Optional[int]] = [None] * len(self.children)
        for node in range(len(self.children) - 1, -1, -1):
            if self.terminal[node]:
                self.rest[node] = 0
            for b in sorted(self.children[node]):
                child = self.children[node][b]
                if self.rest[child] + 1 < self.rest[node]:
                    self.rest[node] = self.rest[child] + 1
                    self.pi[node] = b

    def step(self, frame, byte: int):
        node = frame[2]
        child = self.children[node].get(byte)
        out = []
        if child is not None:
            out.append((STAY, (K_LIT, self.tid, child)))
        if self.terminal[node]:
            out.append((POP_FEED,))
        return out

    def min_bytes(self, frame):
        node = frame[2]
        return self.rest[node], self.pi[node]
