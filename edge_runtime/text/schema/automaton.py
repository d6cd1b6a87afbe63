"""The schema as a deterministic byte automaton over parser stacks, built on demand.

Recursion makes JSON Schema context-free, so a parser state is a *stack* of frames (see
program.py); alternatives that start alike (``anyOf`` of two object shapes) run side by side,
so an automaton state is a *set* of stacks. Stacks are interned (frame, parent) pairs, states
interned sets; transitions live in the C table (``_mask.Dfa``) that the mask walk reads, and
are computed here the first time anything asks for them.

Every stack carries the fewest bytes that finish the document from it (the sum over its
frames), a state the least of its stacks, and the first byte of that shortest completion. A
stack that cannot finish is dropped, so every state the automaton reaches can still end in a
valid document, and following those first bytes always gets there.
"""

from __future__ import annotations

import threading
from typing import Iterable, Optional

from edge_runtime.text import _mask
from edge_runtime.text.schema.objects import ObjSpec, last_name
from edge_runtime.text.schema.program import (
    INF, K_LIT, K_NUM, K_OBJ, K_STR, POP, POP_FEED, PUSH, PUSH_FEED, STAY, Program)
from edge_runtime.text.schema.strings import CHAR, CLASS_OF

DEAD = 0
_NUMBER_BYTES = frozenset(b"0123456789.-")
MAX_STATES = 200_000


class AutomatonFull(RuntimeError):
    """The automaton grew past MAX_STATES states (a pathological schema or document)."""


class Automaton:
    def __init__(self, prog: Program):
        self.prog = prog
        self.lock = threading.RLock()
        self.dfa = _mask.Dfa()
        # stacks: id -> frame, parent id, fewest bytes to the end; id 0 is the empty stack
        self.frames: list = [None]
        self.parents: list[int] = [-1]
        self.smin: list[int] = [0]
        self._stack_ids: dict = {}
        # states: id -> stacks, fewest bytes, first byte, needs a name fix, string fast path
        self.stacks: list[tuple] = [()]
        self.min: list[int] = [INF]
        self.pi: list[Optional[int]] = [None]
        self.fix: list[bool] = [False]
        self.fast: list = [None]
        self.uniform: list = [None]
        self.fallback: list = [None]
        self._state_ids: dict[tuple, int] = {}
        self.dfa.add_state()
        for b in range(256):
            self.dfa.set(DEAD, b, DEAD)
        with self.lock:
            # DEAD when the schema has no document (then nothing is ever accepted)
            self.initial = self._state(self._push(f, 0) for f in prog.initial_frames(prog.root))

    @property
    def n_states(self) -> int:
        return len(self.stacks)

    # -- stacks and states ----------------------------------------------------------------------

    def _push(self, frame, parent: int) -> int:
        key = (frame, parent)
        k = self._stack_ids.get(key)
        if k is None:
            k = len(self.frames)
            self._stack_ids[key] = k
            self.frames.append(frame)
            self.parents.append(parent)
            m, _ = self.prog.min_bytes(frame)
            self.smin.append(min(INF, m + self.smin[parent]))
        return k

    def _stack_pi(self, k: int) -> Optional[int]:
        while k:
            m, first = self.prog.min_bytes(self.frames[k])
            if m > 0:
                return first
            k = self.parents[k]
        return None

    def _state(self, stacks: Iterable[int]) -> int:
        live = tuple(sorted({k for k in stacks if self.smin[k] < INF}))
        if not live:
            return DEAD
        sid = self._state_ids.get(live)
        if sid is not None:
            return sid
        if len(self.stacks) >= MAX_STATES:
            raise AutomatonFull(f"the schema automaton grew past {MAX_STATES} states")
        sid = self.dfa.add_state()
        self._state_ids[live] = sid
        best = min(live, key=lambda k: (self.smin[k], k))
        self.stacks.append(live)
        self.min.append(self.smin[best])
        self.pi.append(self._stack_pi(best))
        self.fix.append(any(self.frames[k] is not None and self.frames[k][0] == K_OBJ
                            and None in self.frames[k][5] for k in live))
        self.fast.append(None)
        self.uniform.append(self._uniform(live))
        self.fallback.append(None)
        if len(live) == 1 and live[0]:
            frame = self.frames[live[0]]
            own = self._own_bytes(frame)
            if own is not None:
                # a complete number or literal: the bytes that end it act as in the parent
                parent = self._state((self.parents[live[0]],))
                bits = bytearray(32)
                for b in own:
                    bits[b >> 3] |= 1 << (b & 7)
                self.dfa.set_fallback(sid, parent, bytes(bits))
                self.fallback[sid] = (parent, own)
            if frame[0] == K_STR and frame[2] == CHAR:
                spec = self.prog.strs[frame[1]]
                if spec.plain:
                    # (chars that may still come or -1, chars still required, state after the
                    # closing quote) for the plain-text shortcut of the mask
                    left = -1 if spec.max_length is None else spec.max_length - frame[3]
                    closed = self._state((self.parents[live[0]],))
                    self.fast[sid] = (left, max(0, spec.min_length - frame[3]), closed)
        return sid

    def _own_bytes(self, frame):
        """The bytes a complete number or literal frame may still take (others end it)."""
        if frame[0] == K_NUM and self.prog.nums[frame[1]].complete(frame):
            return _NUMBER_BYTES
        if frame[0] == K_LIT and self.prog.lits[frame[1]].terminal[frame[2]]:
            return frozenset(self.prog.lits[frame[1]].children[frame[2]])
        return None

    def _uniform(self, live: tuple):
        """(lexer substate, exceptions) when every byte of a lexer class leads to the same
        state, except the bytes listed: a string with no pattern, or a property name (no
        patternProperties) whose exceptions are the bytes that keep it a known name's prefix.
        None otherwise."""
        if len(live) != 1 or not live[0]:
            return None
        frame = self.frames[live[0]]
        if frame[0] == K_STR:
            spec = self.prog.strs[frame[1]]
            if spec.plain:
                return frame[2], b""
            return spec.partition(frame[2], frame[4]), None
        if frame[0] == K_OBJ and frame[2] == 1 and not self.prog.objs[frame[1]].dfas:
            prefix = frame[7]
            if prefix is None:
                return frame[6], b""
            return frame[6], self.prog.objs[frame[1]].tracked_next(prefix, frame[5])
        return None

    # -- transitions ---------------------------------------------------------------------------

    def step(self, sid: int, byte: int) -> int:
        t = self.dfa.get(sid, byte)
        if t >= 0:
            return t
        fallback = self.fallback[sid]
        if fallback is not None and byte not in fallback[1]:
            return self.step(fallback[0], byte)
        with self.lock:
            t = self.dfa.get(sid, byte)
            if t < 0:
                uniform = self.uniform[sid]
                if uniform is not None and uniform[1] is None:
                    # bytes that drive the lexer and the pattern automata alike
                    t = self._compute(sid, byte)
                    self.dfa.set_many(sid, uniform[0][byte], t)
                elif uniform is None or byte in uniform[1]:
                    t = self._compute(sid, byte)
                    self.dfa.set(sid, byte, t)
                else:
                    # every byte of this byte's lexer class goes to the same state
                    sub, exceptions = uniform
                    members = CLASS_OF[sub][byte]
                    if exceptions:
                        members = bytes(b for b in members if b not in exceptions)
                    t = self._compute(sid, byte)
                    self.dfa.set_many(sid, members, t)
        return t

    def _compute(self, sid: int, byte: int) -> int:
        stacks = self.stacks[sid]
        if len(stacks) == 1 and stacks[0]:
            frame = self.frames[stacks[0]]
            if self.fallback[sid] is not None and byte not in self.fallback[sid][1]:
                return self.step(self.fallback[sid][0], byte)
            live = self.prog.live_bytes(frame)
            if live is not None and byte not in live:
                return self._all_dead_but(sid, live)
        out: set = set()
        for k in self.stacks[sid]:
            self._step_stack(k, byte, out)
        return self._state(out)

    def _step_stack(self, k: int, byte: int, out: set) -> None:
        if k == 0:
            return
        frame, parent = self.frames[k], self.parents[k]
        for action in self.prog.step(frame, byte):
            kind = action[0]
            if kind == STAY:
                out.add(self._push(action[1], parent))
            elif kind == POP:
                out.add(parent)
            elif kind == POP_FEED:
                self._step_stack(parent, byte, out)
            else:
                base = self._push(action[1], parent)
                for f in self.prog.initial_frames(action[2]):
                    child = self._push(f, base)
                    if self.smin[child] >= INF:
                        continue
                    if kind == PUSH:
                        out.add(child)
                    else:
                        self._step_stack(child, byte, out)
        return

    def _all_dead_but(self, sid: int, live_bytes) -> int:
        """Mark every transition of ``sid`` dead except those on ``live_bytes`` (computed)."""
        for b in live_bytes:
            if self.dfa.get(sid, b) < 0:
                self.dfa.set(sid, b, self._compute(sid, b))
        self.dfa.fill_unknown(sid, DEAD)
        return DEAD

    def fixed(self, sid: int, content: bytes) -> int:
        """The state with the new property name (None) of each object replaced by ``content``."""
        with self.lock:
            out = []
            for k in self.stacks[sid]:
                frame = self.frames[k]
                if frame is not None and frame[0] == K_OBJ and None in frame[5]:
                    k = self._push(ObjSpec.fix_name(frame, content), self.parents[k])
                out.append(k)
            return self._state(out)

    # -- documents -------------------------------------------------------------------------------

    def feed(self, sid: int, data: bytes, doc: bytearray, fix_names: bool = True) -> int:
        """State after ``data`` (appended to ``doc``), DEAD if a byte is not allowed; new
        property names are put into the state as they close when ``fix_names``."""
        for byte in data:
            if sid == DEAD:
                return DEAD
            sid = self.step(sid, byte)
            if sid == DEAD:
                return DEAD
            doc.append(byte)
            if fix_names and self.fix[sid]:
                sid = self.fixed(sid, last_name(doc))
        return sid

    def accepts(self, text: bytes) -> bool:
        sid = self.feed(self.initial, text, bytearray())
        return sid != DEAD and self.min[sid] == 0

    def accepting(self, sid: int) -> bool:
        return self.min[sid] == 0
