"""A compiled schema as frames the automaton runs: nodes, value dispatch, fewest-byte costs.

A *node* is a set of schema locations whose conjunction applies to one value; its
alternatives are Conj ids. A value starts as a ``(K_VAL, conj)`` frame, which the first byte
turns into an object, array, string, number or literal frame. Every frame answers three
questions (``step``, ``min_bytes`` and the first byte of that shortest completion), and the
costs of whole nodes come from a fixpoint over the node graph (recursion makes it cyclic).
"""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from typing import Optional

from edge_runtime.text.schema.compile import (
    T_ARR, T_BOOL, T_INT, T_NULL, T_NUM, T_OBJ, T_STR, CompiledSchema, SchemaError, format_dfa,
    json_equal)
from edge_runtime.text.schema.numbers import K_NUM, NumSpec
from edge_runtime.text.schema.objects import (
    K_ARR, K_LIT, K_OBJ, ArrSpec, LitTrie, ObjSpec, last_name)
from edge_runtime.text.schema.strings import K_STR, StrSpec, canonical_text

K_VAL = 0
INF = 1 << 30
STAY, POP, POP_FEED, PUSH, PUSH_FEED = 0, 1, 2, 3, 4
_NUMBER_START = frozenset(b"-0123456789")
_MAX_NODES = 20000
# object phases OPEN, COLON, AFTER, NEXT: the only bytes they take
_OBJ_BYTES = {0: frozenset(b'"}'), 2: frozenset(b":"), 3: frozenset(b",}"), 4: frozenset(b'"')}


def literal_texts(value) -> list[bytes]:
    """Canonical texts of a value; an integral number also as ``N.0``."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return [compact_json(value)]
    if isinstance(value, (int, float)):
        if float(value).is_integer() and abs(value) < 1e16:
            return [str(int(value)).encode(), f"{int(value)}.0".encode()]
        return [repr(float(value)).encode()]
    return [compact_json(value)]


def compact_json(value) -> bytes:
    if isinstance(value, bool) or value is None:
        return json.dumps(value).encode()
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return (str(int(value)) if value.is_integer() and abs(value) < 1e16
                else repr(value)).encode()
    if isinstance(value, str):
        return canonical_text(value)
    if isinstance(value, list):
        return b"[" + b",".join(compact_json(v) for v in value) + b"]"
    return b"{" + b",".join(canonical_text(k) + b":" + compact_json(v)
                            for k, v in value.items()) + b"}"


class Program:
    """Frames of one compiled schema, for one choice of padding characters."""

    def __init__(self, compiled: CompiledSchema, pad: bytes = b" "):
        self.compiled = compiled
        self.pad = pad
        self.final = False
        self.conjs: list = []
        self._conj_ids: dict[int, int] = {}
        self.nodes: dict[frozenset, int] = {}
        self.node_alts: list[tuple] = []
        self.node_min: list[int] = []
        self.node_pi: list[Optional[int]] = []
        self.conj_min: list[int] = []
        self.conj_pi: list[Optional[int]] = []
        self.dispatch: list[tuple] = []          # per conj: (lit, obj, arr, str, num)
        self.lits: list[LitTrie] = []
        self.objs: list[ObjSpec] = []
        self.arrs: list[ArrSpec] = []
        self.strs: list[StrSpec] = []
        self.nums: list[NumSpec] = []
        self._pending: list[int] = []
        self._first_bytes: dict = {}
        self._building = False
        self.root = self.node(frozenset({compiled.root_location}))
        self._settle()
        # False when no document satisfies the schema (or none this runtime can write)
        self.satisfiable = self.node_min[self.root] < INF

    # -- graph construction ------------------------------------------------------------------

    def key_content(self, name: str) -> bytes:
        try:
            return canonical_text(name)[1:-1]
        except ValueError as exc:
            raise SchemaError("#", "properties", str(exc)) from None

    def node(self, locations: frozenset) -> int:
        nid = self.nodes.get(locations)
        if nid is not None:
            return nid
        if len(self.node_alts) >= _MAX_NODES:
            raise SchemaError("#", None, f"the schema expands to more than {_MAX_NODES} "
                              "subschema combinations")
        nid = len(self.node_alts)
        self.nodes[locations] = nid
        self.node_alts.append(())
        self.node_min.append(INF)
        self.node_pi.append(None)
        alts = tuple(self.conj(c) for c in self.compiled.dnf(locations))
        self.node_alts[nid] = alts
        self._pending.append(nid)
        if self.final and not self._building:
            self._settle()
        return nid

    def conj(self, conj) -> int:
        cid = self._conj_ids.get(id(conj))
        if cid is not None and self.conjs[cid] is conj:
            return cid
        cid = len(self.conjs)
        self._conj_ids[id(conj)] = cid
        self.conjs.append(conj)
        self.conj_min.append(INF)
        self.conj_pi.append(None)
        self.dispatch.append((None, None, None, None, None))
        self.dispatch[cid] = self._build_dispatch(conj)
        return cid

    def _build_dispatch(self, conj):
        if conj.literals is not None:
            rest = replace(conj, literals=None)
            texts = []
            check = None
            for value in conj.literals:
                if _is_number(value):
                    if number_literal_ok(conj, value):
                        texts += [t for t in literal_texts(value) if t not in texts]
                    continue
                for text in literal_texts(value):
                    if check is None:
                        check = self.conj(rest)
                    if self.raw_accepts(check, text) and text not in texts:
                        texts.append(text)
            return (self._trie(texts), None, None, None, None)
        lit_texts = []
        if conj.types & T_BOOL:
            lit_texts += [b"true", b"false"]
        if conj.types & T_NULL:
            lit_texts.append(b"null")
        lit = self._trie(lit_texts) if lit_texts else None
        obj = arr = string = num = None
        if conj.types & T_OBJ:
            obj = len(self.objs)
            self.objs.append(None)
            self.objs[obj] = ObjSpec(self, conj, obj)
        if conj.types & T_ARR:
            arr = len(self.arrs)
            self.arrs.append(None)
            self.arrs[arr] = ArrSpec(self, conj, arr)
        if conj.types & T_STR:
            dfas = tuple(self.compiled.regexes[p] for p in conj.patterns)
            dfas += tuple(format_dfa(f) for f in conj.formats)
            string = len(self.strs)
            self.strs.append(StrSpec(conj.min_length, conj.max_length, dfas, self.pad))
        if conj.types & (T_INT | T_NUM):
            num = len(self.nums)
            self.nums.append(NumSpec(conj))
        return (lit, obj, arr, string, num)

    def _trie(self, texts) -> int:
        tid = len(self.lits)
        self.lits.append(LitTrie(texts, tid))
        return tid

    # -- costs -------------------------------------------------------------------------------

    def _settle(self) -> None:
        """Fixpoint of the fewest-byte costs over every node (values only ever decrease)."""
        self._building = True
        self.final = False
        try:
            while True:
                changed = False
                for cid in range(len(self.conjs)):
                    cost, first = self._conj_cost(cid)
                    if cost < self.conj_min[cid]:
                        self.conj_min[cid], self.conj_pi[cid] = cost, first
                        changed = True
                for nid, alts in enumerate(self.node_alts):
                    for cid in alts:
                        if self.conj_min[cid] < self.node_min[nid]:
                            self.node_min[nid] = self.conj_min[cid]
                            self.node_pi[nid] = self.conj_pi[cid]
                            changed = True
                if not changed:
                    break
        finally:
            self._building = False
        self._pending.clear()
        self.final = True

    def _conj_cost(self, cid: int):
        lit, obj, arr, string, num = self.dispatch[cid]
        best = (INF, None)
        if lit is not None:
            best = min(best, (self.lits[lit].rest[0], self.lits[lit].pi[0]), key=_cost)
        if obj is not None:
            rest, _ = self.objs[obj].after_cost(0, 0, frozenset(), 0)
            best = min(best, (1 + rest, 0x7B), key=_cost)
        if arr is not None:
            spec = self.arrs[arr]
            rest, _ = spec.min_bytes(spec.initial())
            best = min(best, (1 + rest, 0x5B), key=_cost)
        if string is not None:
            spec = self.strs[string]
            rest, _ = spec.min_bytes(spec.initial(string))
            best = min(best, (1 + rest, 0x22), key=_cost)
        if num is not None:
            spec = self.nums[num]
            best = min(best, spec.min_bytes(spec.initial(num)), key=_cost)
        return (best[0], best[1]) if best[0] < INF else (INF, None)

    # -- frames --------------------------------------------------------------------------------

    def initial_frames(self, nid: int) -> list[tuple]:
        return [(K_VAL, cid) for cid in self.node_alts[nid]]

    def step(self, frame, byte: int):
        kind = frame[0]
        if kind == K_VAL:
            return self._value_step(frame[1], byte)
        if kind == K_STR:
            return self.strs[frame[1]].step(frame, byte)
        if kind == K_OBJ:
            return self.objs[frame[1]].step(frame, byte)
        if kind == K_ARR:
            return self.arrs[frame[1]].step(frame, byte)
        if kind == K_NUM:
            return self.nums[frame[1]].step(frame, byte)
        return self.lits[frame[1]].step(frame, byte)

    def _value_step(self, cid: int, byte: int):
        lit, obj, arr, string, num = self.dispatch[cid]
        if byte == 0x7B and obj is not None:
            return ((STAY, self.objs[obj].initial()),)
        if byte == 0x5B and arr is not None:
            return ((STAY, self.arrs[arr].initial()),)
        if byte == 0x22 and string is not None:
            return ((STAY, self.strs[string].initial(string)),)
        if byte in _NUMBER_START and num is not None:
            spec = self.nums[num]
            return spec.step(spec.initial(num), byte)
        if lit is not None:
            return tuple(a for a in self.lits[lit].step((K_LIT, lit, 0), byte) if a[0] == STAY)
        return ()

    def live_bytes(self, frame):
        """Bytes outside which the frame surely takes nothing (None: not known cheaply)."""
        kind = frame[0]
        if kind == K_VAL:
            return self.conj_first_bytes(frame[1])
        if kind == K_OBJ:
            return _OBJ_BYTES.get(frame[2])
        if kind == K_ARR:
            phase = frame[2]
            if phase == 3:
                return b",]"
            first = self.node_first_bytes(self.arrs[frame[1]].item(frame[3]))
            return first | {0x5D} if phase == 0 else first
        if kind == K_NUM:
            return None if self.nums[frame[1]].complete(frame) else _NUMBER_START | {0x2E}
        if kind == K_LIT:
            trie = self.lits[frame[1]]
            return None if trie.terminal[frame[2]] else frozenset(trie.children[frame[2]])
        return None

    def conj_first_bytes(self, cid: int) -> frozenset:
        hit = self._first_bytes.get(("c", cid))
        if hit is None:
            lit, obj, arr, string, num = self.dispatch[cid]
            out = set()
            if lit is not None:
                out |= set(self.lits[lit].children[0])
            if obj is not None:
                out.add(0x7B)
            if arr is not None:
                out.add(0x5B)
            if string is not None:
                out.add(0x22)
            if num is not None:
                out |= _NUMBER_START
            hit = frozenset(out)
            self._first_bytes[("c", cid)] = hit
        return hit

    def node_first_bytes(self, nid: int) -> frozenset:
        hit = self._first_bytes.get(("n", nid))
        if hit is None:
            hit = frozenset().union(*(self.conj_first_bytes(c) for c in self.node_alts[nid]))
            self._first_bytes[("n", nid)] = hit
        return hit

    def min_bytes(self, frame) -> tuple[int, Optional[int]]:
        kind = frame[0]
        if kind == K_VAL:
            return self.conj_min[frame[1]], self.conj_pi[frame[1]]
        if kind == K_STR:
            return self.strs[frame[1]].min_bytes(frame)
        if kind == K_OBJ:
            return self.objs[frame[1]].min_bytes(frame)
        if kind == K_ARR:
            return self.arrs[frame[1]].min_bytes(frame)
        if kind == K_NUM:
            return self.nums[frame[1]].min_bytes(frame)
        return self.lits[frame[1]].min_bytes(frame)

    # -- plain acceptance (no costs): literal filtering -----------------------------------------

    def raw_accepts(self, cid: int, text: bytes) -> bool:
        """Whether ``text`` is a value of conj ``cid`` (stacks as nested tuples, no pruning)."""
        stacks = {((K_VAL, cid), None)}
        doc = bytearray()
        for byte in text:
            nxt = set()
            for stack in stacks:
                self._raw_step(stack, byte, nxt)
            if not nxt:
                return False
            doc.append(byte)
            stacks = {self._raw_fix(s, doc) for s in nxt}
        return any(s is None or self._raw_can_end(s) for s in stacks)

    @staticmethod
    def _raw_fix(stack, doc):
        if stack is not None and stack[0][0] == K_OBJ and None in stack[0][5]:
            return (ObjSpec.fix_name(stack[0], last_name(doc)), stack[1])
        return stack

    def _raw_step(self, stack, byte: int, out: set) -> None:
        if stack is None:
            return
        frame, parent = stack
        for action in self.step(frame, byte):
            kind = action[0]
            if kind == STAY:
                out.add((action[1], parent))
            elif kind == POP:
                out.add(parent)
            elif kind == POP_FEED:
                self._raw_step(parent, byte, out)
            else:
                base = (action[1], parent)
                for f in self.initial_frames(action[2]):
                    if kind == PUSH:
                        out.add((f, base))
                    else:
                        self._raw_step((f, base), byte, out)

    def _raw_can_end(self, stack) -> bool:
        frame, parent = stack
        if parent is not None:
            return False
        kind = frame[0]
        if kind == K_NUM:
            return self.nums[frame[1]].complete(frame)
        if kind == K_LIT:
            return self.lits[frame[1]].terminal[frame[2]]
        return False


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number_literal_ok(conj, value) -> bool:
    """Whether a number in enum/const meets the rest of its schema, compared the way Python's
    jsonschema compares (exact int/float comparisons, multipleOf by double division)."""
    if not conj.types & (T_INT | T_NUM):
        return False
    if not conj.types & T_NUM and not float(value).is_integer():
        return False
    lo, hi = conj.lower, conj.upper
    if lo is not None and (value < lo.raw or (lo.exclusive and value == lo.raw)):
        return False
    if hi is not None and (value > hi.raw or (hi.exclusive and value == hi.raw)):
        return False
    for m in conj.multiples:
        d = m.raw
        if isinstance(d, float):
            try:
                q = value / d
                if int(q) != q:
                    return False
            except OverflowError:
                if (Fraction(value) / Fraction(d)).denominator != 1:
                    return False
        elif value % d:
            return False
    return True


def _cost(pair):
    return pair[0]


__all__ = ["Program", "K_VAL", "K_LIT", "K_STR", "K_NUM", "K_OBJ", "K_ARR", "INF", "STAY", "POP",
           "POP_FEED", "PUSH", "PUSH_FEED", "literal_texts", "compact_json", "json_equal"]
