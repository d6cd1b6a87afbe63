"""JSON Schema constrained output: compiled schemas and the per-request decoding constraint.

``JsonSchema(schema)`` compiles a draft 2020-12 schema (SchemaError naming the keyword and its
JSON pointer when it cannot); ``JsonSchemaConstraint`` follows one generated document and says
which tokens may come next. What is generated: see docs in compile.py (keywords), strings.py,
numbers.py, objects.py (canonical forms) and formats.py. In short, the output is compact JSON
(no whitespace), strings in the canonical escaping of ``json.dumps(ensure_ascii=False)``,
numbers without exponent and with at most 15 significant digits when they have a fraction,
object properties in any order, each once; ``accepts`` answers for exactly that language.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from typing import Any, Iterable, Optional

import numpy as np

from edge_runtime.text import _mask
from edge_runtime.text.schema.automaton import DEAD, MAX_STATES, Automaton, AutomatonFull
from edge_runtime.text.schema.compile import CompiledSchema, SchemaError
from edge_runtime.text.schema.objects import last_name
from edge_runtime.text.schema.program import Program, compact_json
from edge_runtime.text.schema.tables import NEED_INF, SchemaTables, vocabulary_for

__all__ = ["JsonSchema", "JsonSchemaConstraint", "SchemaError", "BudgetError", "AutomatonFull",
           "check_schema", "validate", "canonical_json"]

_CACHE_ENTRIES = 64


class BudgetError(ValueError):
    """max_tokens (or the context left) is below the fewest tokens of a valid document."""


def _check_json(value, where: str, depth: int = 0) -> None:
    if depth > 128:
        raise SchemaError(where, None, "the schema is nested more than 128 levels deep")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise SchemaError(where, None, f"object key {k!r} is not a string")
            _check_json(v, where, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_json(v, where, depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(where, None, f"{value!r} is not a JSON number")
    elif not (value is None or isinstance(value, (bool, int, str))):
        raise SchemaError(where, None, f"{value!r} ({type(value).__name__}) is not a JSON value")


class _Shared:
    """Everything compiled from one schema text, shared by all JsonSchema objects for it."""

    def __init__(self, schema):
        try:
            self.compiled = CompiledSchema(schema)
            self.programs: dict[bytes, Program] = {}
            self.automata: dict[bytes, Automaton] = {}
            self.tables: dict[tuple, SchemaTables] = {}
            self.lock = threading.Lock()
            self.satisfiable = self.program(b" ").satisfiable
        except RecursionError:
            raise SchemaError("#", None, "the schema is nested too deeply") from None

    def program(self, pad: bytes) -> Program:
        prog = self.programs.get(pad)
        if prog is None:
            prog = Program(self.compiled, pad)
            self.programs[pad] = prog
        return prog

    def automaton(self, pad: bytes) -> Automaton:
        with self.lock:
            a = self.automata.get(pad)
            if a is None or a.n_states > MAX_STATES * 3 // 4:
                a = Automaton(self.program(pad))
                self.automata[pad] = a
                for key in [k for k in self.tables if k[0] == pad]:
                    del self.tables[key]
            return a

    def tables_for(self, vocab) -> SchemaTables:
        a = self.automaton(vocab.pad)
        with self.lock:
            key = (vocab.pad, vocab.digest)
            t = self.tables.get(key)
            if t is None or t.automaton is not a:
                t = SchemaTables(a, vocab)
                self.tables[key] = t
            return t


_cache: "OrderedDict[str, _Shared]" = OrderedDict()
_cache_lock = threading.Lock()


def _shared(schema) -> _Shared:
    _check_json(schema, "#")
    try:
        key = json.dumps(schema, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise SchemaError("#", None, f"not a JSON document: {exc}") from None
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    shared = _Shared(schema)
    with _cache_lock:
        shared = _cache.setdefault(key, shared)
        while len(_cache) > _CACHE_ENTRIES:
            _cache.popitem(last=False)
    return shared


class JsonSchema:
    """A compiled JSON schema (draft 2020-12).

    Raises SchemaError (a ValueError) naming the keyword and JSON pointer of anything it
    cannot compile. Compiled schemas are cached by their canonical JSON text, and so are the
    automaton and token tables built for them.
    """

    def __init__(self, schema: Any):
        if isinstance(schema, JsonSchema):
            self.schema, self._shared = schema.schema, schema._shared
            return
        if not isinstance(schema, (dict, bool)):
            raise SchemaError("#", None, f"a schema must be an object or a boolean, got "
                              f"{type(schema).__name__}")
        self._shared = _shared(schema)
        self.schema = schema

    @property
    def satisfiable(self) -> bool:
        """False when no document this runtime can write satisfies the schema."""
        return self._shared.satisfiable

    def accepts(self, text) -> bool:
        """True if ``text`` (str or bytes) is a complete document this schema's constraint can
        generate (compact JSON in the canonical form described in the module docs)."""
        if isinstance(text, str):
            try:
                text = text.encode("utf-8")
            except UnicodeEncodeError:
                return False
        if not isinstance(text, (bytes, bytearray)):
            raise TypeError(f"JsonSchema.accepts: expected str or bytes, got "
                            f"{type(text).__name__}")
        return self._shared.automaton(b" ").accepts(bytes(text))

    def __repr__(self) -> str:
        text = json.dumps(self.schema)
        return f"JsonSchema({text[:60] + '...' if len(text) > 60 else text})"


def check_schema(schema) -> None:
    """Raise SchemaError if ``schema`` cannot be compiled."""
    JsonSchema(schema)


def canonical_json(value) -> bytes:
    """The text the generator writes for ``value`` (integral numbers as integers)."""
    return compact_json(value)


def validate(instance, schema) -> list[str]:
    """[] if the canonical text of ``instance`` is accepted by ``schema``, else one message."""
    compiled = JsonSchema(schema)
    text = canonical_json(instance)
    if compiled.accepts(text):
        return []
    return [f"{text[:80]!r} is not accepted by the schema"]


class JsonSchemaConstraint:
    """Follows one generated document and tells which tokens keep it valid and finishable.

    ``token_bytes[i]`` are the bytes of token i; tokens with empty bytes and ``special_ids``
    are never allowed; ``eos_ids`` exactly when the document is complete. Per step::

        allowed = constraint.allowed_mask(remaining)   # remaining: tokens left, this one too
        token = sampler.sample(logits, history, allowed)
        constraint.advance(token)
    """

    def __init__(self, schema, token_bytes, eos_ids: Iterable[int],
                 special_ids: Iterable[int] = ()):
        self.schema = schema if isinstance(schema, JsonSchema) else JsonSchema(schema)
        if not isinstance(token_bytes, (list, tuple)) or not token_bytes:
            raise ValueError("JsonSchemaConstraint: token_bytes must be a non-empty list of bytes")
        n_vocab = len(token_bytes)
        eos = self._check_ids("eos_ids", eos_ids, n_vocab)
        if not eos:
            raise ValueError("JsonSchemaConstraint: eos_ids must name at least one token")
        special = self._check_ids("special_ids", special_ids, n_vocab)
        if not self.schema.satisfiable:
            raise SchemaError("#", None, "no JSON document satisfies this schema (or none this "
                              "runtime can write)")
        self._vocab = vocabulary_for(token_bytes, eos, special)
        self._tables = self.schema._shared.tables_for(self._vocab)
        self._automaton = self._tables.automaton
        self.n_vocab = n_vocab
        self.eos_ids = frozenset(eos)
        self._forbidden = frozenset(special) - self.eos_ids
        self._token_bytes = token_bytes
        self.reset()

    @staticmethod
    def _check_ids(name, ids, n_vocab) -> tuple:
        try:
            values = sorted(set(ids))
        except TypeError:
            raise ValueError(f"JsonSchemaConstraint: {name} must be a collection of token ids, "
                             f"got {ids!r}") from None
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or not 0 <= value < n_vocab:
                raise ValueError(f"JsonSchemaConstraint: {name} entry {value!r} is not a token id "
                                 f"in [0, {n_vocab})")
        return tuple(int(v) for v in values)

    def reset(self) -> None:
        """Start a new document (the shared tables are kept)."""
        self._state = self._automaton.initial
        self._doc = bytearray()
        self._ended = False

    @property
    def output(self) -> bytes:
        return bytes(self._doc)

    def min_tokens(self) -> int:
        """Tokens that surely finish the document from here (a large number if none can)."""
        return 0 if self._ended else self._tables.need(self._state)

    def check_budget(self, max_tokens: int) -> None:
        """BudgetError when ``max_tokens`` cannot hold the shortest document left."""
        need = self.min_tokens()
        if need > max_tokens:
            shortest = "no token sequence" if need >= NEED_INF else f"{need} tokens"
            raise BudgetError(f"json_schema: the shortest valid document needs {shortest}, "
                              f"but only {max_tokens} may be generated (raise max_tokens, or the "
                              "context size when the prompt leaves less)")

    def allowed_bitmask(self, remaining: Optional[int] = None) -> np.ndarray:
        """uint32 words, bit i of word i // 32 set for every allowed token (read-only)."""
        if self._ended:
            return self._vocab.eos_words
        return self._tables.mask(self._state, remaining)

    def allowed_mask(self, remaining: Optional[int] = None) -> np.ndarray:
        """Bool array (n_vocab,): True for every token that may come next, given that
        ``remaining`` tokens (this one included) may still be generated (None: no limit)."""
        return _mask.mask_to_bool(self.allowed_bitmask(remaining), self.n_vocab)

    def is_complete(self) -> bool:
        """True when the output is a complete valid document (an end token may follow)."""
        return self._ended or self._automaton.accepting(self._state)

    def advance(self, token_id: int) -> None:
        """Consume one generated token; ValueError if it is not allowed here."""
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)) \
                or not 0 <= token_id < self.n_vocab:
            raise ValueError(f"JsonSchemaConstraint.advance: {token_id!r} is not a token id in "
                             f"[0, {self.n_vocab})")
        token_id = int(token_id)
        tail = bytes(self._doc[-40:])
        if token_id in self.eos_ids:
            if not self.is_complete():
                raise ValueError(f"JsonSchemaConstraint.advance: end token {token_id} before the "
                                 f"JSON document is complete (output ends with {tail!r})")
            self._ended = True
            return
        token = self._token_bytes[token_id]
        state = DEAD
        doc = bytearray(self._doc)
        if not (self._ended or token_id in self._forbidden or not token):
            state = self._feed(token, doc)
        if state == DEAD:
            raise ValueError(f"JsonSchemaConstraint.advance: token {token_id} ({token!r}) is not "
                             f"allowed after {tail!r} by the JSON schema")
        self._state = state
        self._doc = doc

    def _feed(self, data: bytes, doc: bytearray) -> int:
        a = self._automaton
        sid = self._state
        for byte in data:
            sid = a.step(sid, byte)
            if sid == DEAD:
                return DEAD
            doc.append(byte)
            if a.fix[sid]:
                real = a.fixed(sid, last_name(doc))
                # keep the stricter state (no new names in that object) if the real one would
                # need more tokens than were budgeted for
                if self._tables.need(real) <= self._tables.need(sid):
                    sid = real
        return sid
