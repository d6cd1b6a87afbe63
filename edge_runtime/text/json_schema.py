"""JSON-schema constrained decoding: which tokens may come next so the output validates.

Supported schema subset (anything else is a ValueError naming the keyword and where it is):

- ``{"type": "object", "properties": {...}, "required": [...], "additionalProperties": bool}``;
  only the listed properties are generated, in schema order; optional ones may be skipped;
- ``{"type": "array", "items": {...}, "minItems": n, "maxItems": m}``;
- ``{"type": "string", "minLength": n, "maxLength": m}``;
- ``{"type": "integer" | "number", "minimum": a, "maximum": b}``;
- ``{"type": "boolean"}``, ``{"type": "null"}``;
- ``enum`` / ``const`` of strings, numbers, booleans and null (with or without ``type``);
- annotations (title, description, default, examples, $schema, $id, $comment) are ignored.

Generated text is compact JSON (no whitespace). Strings are any UTF-8 text (no lone
surrogates), control characters only as escapes. Integers have at most 12 digits (more
only when a bound needs them), numbers add at most 6 fraction digits and no exponent.

How the mask is made fast enough for a 128k vocabulary in numpy:

- The schema has no recursion, so the set of valid outputs is a regular language. Its
  deterministic byte automaton is built lazily: a state is an immutable parser stack, each
  (state, byte) transition is computed once by Python code and stored in a dense
  ``int32[state, 256]`` table.
- The vocabulary is stored column by column (byte j of every token longer than j, tokens
  sorted by length). The mask for a state runs every token through the table at once, one
  numpy gather per byte position. A token is allowed when all of its bytes are accepted,
  however many grammar steps it spans (``"},"``).
- Inside a string, tokens of plain text (most of the vocabulary) only add characters:
  their character counts are precomputed once, so one comparison against maxLength
  decides them and only the few tokens with quotes, escapes or odd bytes are walked.
- Masks are cached per automaton state (states recur: "expecting the value of property X"),
  and the automaton and cache are shared by every constraint with the same schema and
  vocabulary. The automaton is rebuilt if it grows past _MAX_AUTOMATON_STATES.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from fractions import Fraction
from typing import Any, Iterable, Optional, Sequence

import numpy as np

__all__ = ["JsonSchemaConstraint", "validate", "check_schema"]

DEFAULT_MAX_INT_DIGITS = 12
MAX_FRACTION_DIGITS = 6
_MASK_CACHE_ENTRIES = 512        # packed masks: 16 KB each for a 128k vocabulary
_MAX_AUTOMATON_STATES = 1 << 15  # table rows of 1 KB: rebuild the automaton beyond 32 MB
_SHARED_TABLES_ENTRIES = 8

_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id",
                          "$comment"})
_KEYWORDS_BY_TYPE = {
    "object": {"type", "properties", "required", "additionalProperties"},
    "array": {"type", "items", "minItems", "maxItems"},
    "string": {"type", "enum", "const", "minLength", "maxLength"},
    "integer": {"type", "enum", "const", "minimum", "maximum"},
    "number": {"type", "enum", "const", "minimum", "maximum"},
    "boolean": {"type", "enum", "const"},
    "null": {"type", "enum", "const"},
}


# ---------------------------------------------------------------------------------------
# Schema checking and compilation into nodes
# ---------------------------------------------------------------------------------------

_OBJECT, _ARRAY, _STRING, _NUMBER, _LITERAL = range(5)


class _ObjectNode:
    kind = _OBJECT

    def __init__(self, names, children, required):
        self.names = names
        self.children = children
        n = len(names)
        keys = [json.dumps(name, ensure_ascii=False).encode("utf-8") + b":" for name in names]
        # After property `last` (-1: none yet), the next key may be any later property up
        # to and including the first required one (properties keep schema order).
        # key_tables[last + 1] maps every prefix of an allowed `"key":` to the property
        # index it completes, or -1 for a proper prefix.
        self.key_tables = []
        self.closable = []
        for last in range(-1, n):
            table: dict[bytes, int] = {}
            for idx in range(last + 1, n):
                key = keys[idx]
                for cut in range(1, len(key)):
                    table.setdefault(key[:cut], -1)
                table[key] = idx
                if required[idx]:
                    break
            self.key_tables.append(table)
            self.closable.append(not any(required[last + 1:]))


class _ArrayNode:
    kind = _ARRAY

    def __init__(self, item, min_items, max_items):
        self.item = item
        self.min_items = min_items
        self.max_items = max_items


class _StringNode:
    kind = _STRING

    def __init__(self, min_length, max_length):
        self.min_length = min_length
        self.max_length = max_length
        # Characters are only counted as far as a bound needs (keeps states few); None: no
        # counting at all.
        if max_length is not None:
            self.count_cap = max_length
        else:
            self.count_cap = min_length or None


class _NumberNode:
    kind = _NUMBER

    def __init__(self, integer, minimum, maximum):
        self.integer = integer
        self.minimum = minimum          # Fraction or None
        self.maximum = maximum
        self.max_frac_digits = 0 if integer else MAX_FRACTION_DIGITS
        # Range checks count in grid units (1 for integers, 10^-6 for numbers) so that they
        # are exact integer arithmetic.
        self.scale = 10 ** self.max_frac_digits
        digits = DEFAULT_MAX_INT_DIGITS
        # A range far from zero needs as many digits as its nearest end.
        if minimum is not None and minimum > 0:
            digits = max(digits, len(str(math.ceil(minimum))))
        if maximum is not None and maximum < 0:
            digits = max(digits, len(str(-math.floor(maximum))))
        self.max_int_digits = digits
        # Allowed magnitudes in grid units, per sign: (lowest, highest or None).
        self.positive_range = (
            0 if minimum is None else max(0, math.ceil(minimum * self.scale)),
            None if maximum is None else math.floor(maximum * self.scale))
        self.negative_range = (
            0 if maximum is None else max(0, math.ceil(-maximum * self.scale)),
            None if minimum is None else math.floor(-minimum * self.scale))


class _LiteralNode:
    kind = _LITERAL

    def __init__(self, literals):
        self.literals = frozenset(literals)
        self.proper_prefixes = frozenset(lit[:cut] for lit in literals
                                         for cut in range(1, len(lit)))


def _json_type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_finite_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


class _SchemaCompiler:
    """Checks a schema against the supported subset and turns it into a list of nodes."""

    def __init__(self):
        self.nodes: list = []

    def add(self, node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def compile(self, schema, path: str) -> int:
        if not isinstance(schema, dict):
            raise ValueError(f"JSON schema at {path}: expected an object (dict), got "
                             f"{_json_type_name(schema)} {schema!r}")
        for key in schema:
            if not isinstance(key, str):
                raise ValueError(f"JSON schema at {path}: keyword {key!r} is not a string")
        kind = schema.get("type")
        if kind is None:
            unsupported = set(schema) - _ANNOTATIONS - {"enum", "const"}
            if unsupported:
                raise ValueError(f"JSON schema at {path}: unsupported keyword "
                                 f"{sorted(unsupported)[0]!r} (or missing 'type')")
            if "enum" not in schema and "const" not in schema:
                raise ValueError(f"JSON schema at {path}: needs 'type', 'enum' or 'const'")
            return self.add(_LiteralNode(self.literals(schema, path, None)))
        if not isinstance(kind, str) or kind not in _KEYWORDS_BY_TYPE:
            raise ValueError(f"JSON schema at {path}: unsupported type {kind!r}; expected one of "
                             f"{sorted(_KEYWORDS_BY_TYPE)}")
        unsupported = set(schema) - _ANNOTATIONS - _KEYWORDS_BY_TYPE[kind]
        if unsupported:
            raise ValueError(f"JSON schema at {path}: unsupported keyword "
                             f"{sorted(unsupported)[0]!r} for type {kind!r}")
        if kind == "object":
            return self.compile_object(schema, path)
        if kind == "array":
            return self.compile_array(schema, path)
        if kind == "string":
            min_length, max_length = self.count_range(schema, path, "minLength", "maxLength")
            node = _StringNode(min_length, max_length)
        elif kind in ("integer", "number"):
            node = self.compile_number(schema, path, kind == "integer")
        elif kind == "boolean":
            node = _LiteralNode([b"true", b"false"])
        else:
            node = _LiteralNode([b"null"])
        if "enum" in schema or "const" in schema:
            return self.add(_LiteralNode(self.literals(schema, path, kind)))
        return self.add(node)

    def compile_object(self, schema, path) -> int:
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError(f"JSON schema at {path}.properties: expected an object, got "
                             f"{_json_type_name(properties)}")
        required = schema.get("required", [])
        if (not isinstance(required, list) or not all(isinstance(r, str) for r in required)
                or len(set(required)) != len(required)):
            raise ValueError(f"JSON schema at {path}.required: expected a list of distinct "
                             f"property names, got {required!r}")
        for name in required:
            if name not in properties:
                raise ValueError(f"JSON schema at {path}.required: {name!r} is not in 'properties' "
                                 "(only listed properties can be generated)")
        additional = schema.get("additionalProperties", False)
        if not isinstance(additional, bool):
            raise ValueError(f"JSON schema at {path}.additionalProperties: only true/false is "
                             f"supported, got {additional!r}")
        names = tuple(properties)
        for name in names:
            if not isinstance(name, str):
                raise ValueError(f"JSON schema at {path}.properties: property name {name!r} is "
                                 "not a string")
            _utf8_json(name, f"{path}.properties")
        children = tuple(self.compile(properties[name], f"{path}.properties.{name}")
                         for name in names)
        return self.add(_ObjectNode(names, children, tuple(n in required for n in names)))

    def compile_array(self, schema, path) -> int:
        if "items" not in schema:
            raise ValueError(f"JSON schema at {path}: an array needs 'items'")
        if not isinstance(schema["items"], dict):
            raise ValueError(f"JSON schema at {path}.items: only a single schema (object) is "
                             f"supported, got {_json_type_name(schema['items'])}")
        min_items, max_items = self.count_range(schema, path, "minItems", "maxItems")
        item = self.compile(schema["items"], f"{path}.items")
        return self.add(_ArrayNode(item, min_items, max_items))

    def compile_number(self, schema, path, integer) -> _NumberNode:
        bounds = []
        for keyword in ("minimum", "maximum"):
            value = schema.get(keyword)
            if value is not None and not _is_finite_number(value):
                raise ValueError(f"JSON schema at {path}.{keyword}: expected a finite number, "
                                 f"got {value!r}")
            bounds.append(None if value is None else Fraction(value))
        minimum, maximum = bounds
        if minimum is not None and maximum is not None and minimum > maximum:
            raise ValueError(f"JSON schema at {path}: minimum {schema['minimum']!r} > maximum "
                             f"{schema['maximum']!r}")
        node = _NumberNode(integer, minimum, maximum)
        if _number_check(node, False, "", None) < 0 and _number_check(node, True, "", None) < 0:
            raise ValueError(f"JSON schema at {path}: no {'integer' if integer else 'number'} "
                             f"with at most {MAX_FRACTION_DIGITS if not integer else 0} fraction "
                             f"digits lies in [{schema.get('minimum')}, {schema.get('maximum')}]")
        return node

    @staticmethod
    def count_range(schema, path, low_key, high_key) -> tuple[int, Optional[int]]:
        low = schema.get(low_key, 0)
        high = schema.get(high_key)
        if not _is_count(low):
            raise ValueError(f"JSON schema at {path}.{low_key}: expected a non-negative integer, "
                             f"got {low!r}")
        if high is not None and not _is_count(high):
            raise ValueError(f"JSON schema at {path}.{high_key}: expected a non-negative integer, "
                             f"got {high!r}")
        if high is not None and low > high:
            raise ValueError(f"JSON schema at {path}: {low_key} {low} > {high_key} {high}")
        return low, high

    @staticmethod
    def literals(schema, path, kind) -> list[bytes]:
        if "enum" in schema and "const" in schema:
            raise ValueError(f"JSON schema at {path}: use either 'enum' or 'const', not both")
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise ValueError(f"JSON schema at {path}.enum: expected a non-empty list, got "
                                 f"{values!r}")
            where = f"{path}.enum"
        else:
            values = [schema["const"]]
            where = f"{path}.const"
        rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
        literals = []
        for value in values:
            if not (value is None or isinstance(value, (str, bool)) or _is_finite_number(value)):
                raise ValueError(f"JSON schema at {where}: unsupported value {value!r}; expected "
                                 "strings, finite numbers, booleans or null")
            if kind is not None:
                problems = validate(value, rest)
                if problems:
                    raise ValueError(f"JSON schema at {where}: value {value!r} does not match the "
                                     f"rest of the schema ({problems[0]})")
            text = _utf8_json(value, where)
            if text not in literals:
                literals.append(text)
        return literals


def _utf8_json(value, where: str) -> bytes:
    """Compact JSON text of a scalar, as the generator writes it (raw UTF-8, no \\u)."""
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"JSON schema at {where}: {value!r} is not valid Unicode text "
                         "(lone surrogate)") from None


def _compile(schema) -> tuple[list, int]:
    compiler = _SchemaCompiler()
    root = compiler.compile(schema, "$")
    return compiler.nodes, root


def check_schema(schema: dict) -> None:
    """Raise ValueError if ``schema`` is outside the supported subset."""
    _compile(schema)


# ---------------------------------------------------------------------------------------
# Byte-level parser: immutable frames and the step function
# ---------------------------------------------------------------------------------------
# A parser state is a tuple of frames (outermost first); () means "document finished".
# Frame layouts (first field is always the node id):
#   object : (node, phase, last_property, key_prefix)
#   array  : (node, phase, item_count)
#   string : (node, substate, char_count)        substate -1: before the opening quote
#   number : (node, negative, int_digits, frac_digits_or_None, value_free)
#   literal: (node, prefix)

_START, _OPEN, _NEXT, _AFTER = range(4)           # object / array phases

# Step results: what the frame did with the byte.
_STAY, _PUSH, _PUSH_FEED, _POP, _POP_FEED = range(5)

# String substates: UTF-8 continuation needs and escape progress.
(_S_CHAR, _S_CONT1, _S_CONT2, _S_CONT3, _S_AFTER_E0, _S_AFTER_ED, _S_AFTER_F0, _S_AFTER_F4,
 _S_ESCAPE, _S_HEX0, _S_HEX1, _S_HEX1_SURROGATE, _S_HEX2, _S_HEX3) = range(14)

_HEX = frozenset(b"0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = frozenset(b'"\\/bfnrt')
_DIGITS = frozenset(b"0123456789")


def _utf8_lead(byte: int) -> int:
    """Substate after a byte that starts a character, or -1 if it cannot start one."""
    if 0x20 <= byte < 0x80:
        return _S_CHAR
    if 0xC2 <= byte <= 0xDF:
        return _S_CONT1
    if byte == 0xE0:
        return _S_AFTER_E0       # excludes overlong forms: next byte A0..BF
    if byte == 0xED:
        return _S_AFTER_ED       # excludes UTF-16 surrogates: next byte 80..9F
    if 0xE1 <= byte <= 0xEF:
        return _S_CONT2
    if byte == 0xF0:
        return _S_AFTER_F0       # next byte 90..BF
    if 0xF1 <= byte <= 0xF3:
        return _S_CONT3
    if byte == 0xF4:
        return _S_AFTER_F4       # stays <= U+10FFFF: next byte 80..8F
    return -1


def _string_inner_step(sub: int, byte: int) -> int:
    """Substate after ``byte`` in the middle of a character or escape, or -1."""
    if sub == _S_CONT1:
        return _S_CHAR if 0x80 <= byte <= 0xBF else -1
    if sub == _S_CONT2:
        return _S_CONT1 if 0x80 <= byte <= 0xBF else -1
    if sub == _S_CONT3:
        return _S_CONT2 if 0x80 <= byte <= 0xBF else -1
    if sub == _S_AFTER_E0:
        return _S_CONT1 if 0xA0 <= byte <= 0xBF else -1
    if sub == _S_AFTER_ED:
        return _S_CONT1 if 0x80 <= byte <= 0x9F else -1
    if sub == _S_AFTER_F0:
        return _S_CONT2 if 0x90 <= byte <= 0xBF else -1
    if sub == _S_AFTER_F4:
        return _S_CONT2 if 0x80 <= byte <= 0x8F else -1
    if sub == _S_ESCAPE:
        if byte in _SIMPLE_ESCAPES:
            return _S_CHAR
        return _S_HEX0 if byte == 0x75 else -1          # \u
    if sub == _S_HEX0:
        if byte in (0x64, 0x44):                          # \uD... : keep out of D800..DFFF
            return _S_HEX1_SURROGATE
        return _S_HEX1 if byte in _HEX else -1
    if sub == _S_HEX1_SURROGATE:
        return _S_HEX2 if 0x30 <= byte <= 0x37 else -1
    if sub == _S_HEX1:
        return _S_HEX2 if byte in _HEX else -1
    if sub == _S_HEX2:
        return _S_HEX3 if byte in _HEX else -1
    if sub == _S_HEX3:
        return _S_CHAR if byte in _HEX else -1
    return -1


def _number_spans(node: _NumberNode, negative: bool, int_digits: str,
                  frac_digits: Optional[str]) -> list[tuple[int, int]]:
    """Magnitudes (grid units) that completions of a number prefix can reach.

    E.g. integer prefix "12" with room for two more digits reaches [12, 13) ∪ [120, 130)
    ∪ [1200, 1300); every grid point inside a span is reachable.
    """
    scale = node.scale
    if frac_digits is None:
        if int_digits == "":
            smallest = 1 if (negative and node.integer) else 0      # no bare "-0"
            return [(smallest, 10 ** node.max_int_digits * scale - 1)]
        if int_digits == "0":
            return [(0, scale - 1)]
        value = int(int_digits)
        return [(value * 10 ** k * scale, (value + 1) * 10 ** k * scale - 1)
                for k in range(node.max_int_digits - len(int_digits) + 1)]
    unit = 10 ** (node.max_frac_digits - len(frac_digits))
    start = int(int_digits) * scale + (int(frac_digits) * unit if frac_digits else 0)
    return [(start, start + unit - 1)]


def _number_check(node: _NumberNode, negative: bool, int_digits: str,
                  frac_digits: Optional[str]) -> int:
    """-1: no completion of the prefix is in range; 1: every completion is; 0: some are."""
    low, high = node.negative_range if negative else node.positive_range
    spans = _number_spans(node, negative, int_digits, frac_digits)
    if spans[0][0] >= low and (high is None or spans[-1][1] <= high):
        return 1
    for start, end in spans:
        if max(start, low) <= (end if high is None else min(end, high)):
            return 0
    return -1


def _number_shape(negative: bool, int_digits: str, frac_digits: Optional[str]) -> tuple:
    """A number prefix reduced to what the grammar still needs once its value is free."""
    if int_digits not in ("", "0"):
        int_digits = "1" * len(int_digits)
    if frac_digits:
        frac_digits = "0" * len(frac_digits)
    return negative, int_digits, frac_digits


def _number_complete(node: _NumberNode, frame) -> bool:
    _, negative, int_digits, frac_digits, free = frame
    if int_digits == "" or frac_digits == "":
        return False
    if negative and int_digits == "0" and frac_digits is None:
        return False                                      # no bare "-0"
    if free:
        return True
    low, high = node.negative_range if negative else node.positive_range
    magnitude = int(int_digits) * node.scale
    if frac_digits:
        magnitude += int(frac_digits) * 10 ** (node.max_frac_digits - len(frac_digits))
    return magnitude >= low and (high is None or magnitude <= high)


def _initial_frame(nodes, node_id: int) -> tuple:
    kind = nodes[node_id].kind
    if kind == _OBJECT:
        return (node_id, _START, -1, b"")
    if kind == _ARRAY:
        return (node_id, _START, 0)
    if kind == _STRING:
        return (node_id, -1, 0)
    if kind == _NUMBER:
        return (node_id, False, "", None, False)
    return (node_id, b"")


def _frame_step(nodes, frame: tuple, byte: int):
    """What one frame does with one byte: (action, ...) or None when the byte is invalid."""
    node = nodes[frame[0]]
    kind = node.kind

    if kind == _STRING:
        _, sub, count = frame
        if sub == -1:
            return (_STAY, (frame[0], _S_CHAR, 0)) if byte == 0x22 else None
        if sub != _S_CHAR:
            nxt = _string_inner_step(sub, byte)
            return None if nxt < 0 else (_STAY, (frame[0], nxt, count))
        if byte == 0x22:
            return (_POP,) if count >= node.min_length else None
        nxt = _S_ESCAPE if byte == 0x5C else _utf8_lead(byte)
        if nxt < 0:
            return None
        if node.count_cap is not None:
            if node.max_length is not None and count >= node.max_length:
                return None
            count = min(count + 1, node.count_cap)
        return (_STAY, (frame[0], nxt, count))

    if kind == _LITERAL:
        prefix = frame[1]
        extended = prefix + bytes((byte,))
        if extended in node.proper_prefixes:
            return (_STAY, (frame[0], extended))
        if extended in node.literals:
            return (_POP,)
        if prefix in node.literals:
            return (_POP_FEED,)
        return None

    if kind == _NUMBER:
        _, negative, int_digits, frac_digits, free = frame
        candidate = None
        if byte in _DIGITS:
            digit = chr(byte)
            if frac_digits is None:
                if int_digits != "0" and len(int_digits) < node.max_int_digits and not (
                        negative and node.integer and int_digits == "" and digit == "0"):
                    candidate = (negative, int_digits + digit, None)
            elif len(frac_digits) < node.max_frac_digits:
                candidate = (negative, int_digits, frac_digits + digit)
        elif byte == 0x2D:                                               # '-'
            if not negative and int_digits == "":
                candidate = (True, "", None)
        elif byte == 0x2E:                                               # '.'
            if not node.integer and int_digits != "" and frac_digits is None:
                candidate = (negative, int_digits, "")
        if candidate is not None:
            # A sign change ('-') starts the range check afresh.
            verdict = 1 if (free and byte != 0x2D) else _number_check(node, *candidate)
            if verdict < 0:
                return None
            if verdict > 0:          # every completion fits: forget the digits' values
                return (_STAY, (frame[0],) + _number_shape(*candidate) + (True,))
            return (_STAY, (frame[0],) + candidate + (False,))
        return (_POP_FEED,) if _number_complete(node, frame) else None

    if kind == _OBJECT:
        node_id, phase, last, key_prefix = frame
        if phase == _START:
            return (_STAY, (node_id, _OPEN, -1, b"")) if byte == 0x7B else None
        if phase == _AFTER:
            if byte == 0x2C and node.key_tables[last + 1]:                # ','
                return (_STAY, (node_id, _NEXT, last, b""))
            if byte == 0x7D and node.closable[last + 1]:                  # '}'
                return (_POP,)
            return None
        if phase == _OPEN and byte == 0x7D and key_prefix == b"":
            return (_POP,) if node.closable[0] else None
        extended = key_prefix + bytes((byte,))
        target = node.key_tables[last + 1].get(extended)
        if target is None:
            return None
        if target < 0:
            return (_STAY, (node_id, phase, last, extended))
        child = _initial_frame(nodes, node.children[target])
        return (_PUSH, (node_id, _AFTER, target, b""), child)

    # array
    node_id, phase, count = frame
    if phase == _START:
        return (_STAY, (node_id, _OPEN, 0)) if byte == 0x5B else None
    if phase == _AFTER:
        if byte == 0x2C and (node.max_items is None or count < node.max_items):
            return (_STAY, (node_id, _NEXT, count))
        if byte == 0x5D and count >= node.min_items:
            return (_POP,)
        return None
    if phase == _OPEN:
        if byte == 0x5D:
            return (_POP,) if node.min_items == 0 else None
        if node.max_items == 0:
            return None
    count += 1
    if node.max_items is None:
        count = min(count, node.min_items)     # only "reached minItems yet?" matters
    return (_PUSH_FEED, (node_id, _AFTER, count), _initial_frame(nodes, node.item))


def _parser_step(nodes, stack: tuple, byte: int) -> Optional[tuple]:
    """The parser state after ``byte``, or None if the byte cannot come next."""
    while stack:
        result = _frame_step(nodes, stack[-1], byte)
        if result is None:
            return None
        action = result[0]
        if action == _STAY:
            return stack[:-1] + (result[1],)
        if action == _PUSH:
            return stack[:-1] + result[1:]
        if action == _POP:
            return stack[:-1]
        if action == _PUSH_FEED:
            stack = stack[:-1] + result[1:]          # the new child must take this byte
        else:                                        # _POP_FEED: the parent takes it
            stack = stack[:-1]
    return None


def _parser_accepting(nodes, stack: tuple) -> bool:
    """True when the bytes so far are a complete document (the end may come now)."""
    if not stack:
        return True
    if len(stack) > 1:
        return False
    frame = stack[0]
    node = nodes[frame[0]]
    if node.kind == _NUMBER:
        return _number_complete(node, frame)
    if node.kind == _LITERAL:
        return frame[1] in node.literals
    return False


# ---------------------------------------------------------------------------------------
# Lazily built automaton and vectorized token walk
# ---------------------------------------------------------------------------------------

# Transition table entries: _UNKNOWN (not computed yet), _DEAD (state 0, a sink whose
# every transition leads back to itself), or the id of a live state.
_UNKNOWN = -1
_DEAD = 0
# The vocabulary walk stops carrying dead tokens along once fewer than this share lives.
_SPARSE_WALK_BELOW = 0.25


class _Automaton:
    """Deterministic byte automaton of a schema, grown on demand (dense transition table)."""

    def __init__(self, nodes, root: int):
        self.nodes = nodes
        self.stacks: list[Optional[tuple]] = [None]       # state 0: the dead sink
        self.ids: dict[tuple, int] = {}
        self.accepting: list[bool] = [False]
        self.table = np.full((256, 256), _UNKNOWN, dtype=np.int32)
        self.table[_DEAD] = _DEAD
        self.initial = self.state_id((_initial_frame(nodes, root),))

    def state_id(self, stack: tuple) -> int:
        sid = self.ids.get(stack)
        if sid is None:
            sid = len(self.stacks)
            self.ids[stack] = sid
            self.stacks.append(stack)
            self.accepting.append(_parser_accepting(self.nodes, stack))
            if sid >= self.table.shape[0]:
                grown = np.full((2 * self.table.shape[0], 256), _UNKNOWN, dtype=np.int32)
                grown[:self.table.shape[0]] = self.table
                self.table = grown
        return sid

    def compute(self, sid: int, byte: int) -> int:
        stack = _parser_step(self.nodes, self.stacks[sid], byte)
        target = _DEAD if stack is None else self.state_id(stack)
        self.table[sid, byte] = target
        return target

    def step(self, sid: int, byte: int) -> int:
        target = int(self.table[sid, byte])
        return self.compute(sid, byte) if target == _UNKNOWN else target

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Targets of the transitions ``keys = state * 256 + byte``, computing unknown ones."""
        targets = self.table.reshape(-1)[keys]
        unknown = targets < 0
        if unknown.any():
            for key in np.unique(keys[unknown]).tolist():
                self.compute(key >> 8, key & 0xFF)
            targets = self.table.reshape(-1)[keys]
        return targets


class _VocabIndex:
    """Token bytes stored column by column for vectorized walks.

    Non-empty tokens are ordered by length, longest first (``order``), so the tokens longer
    than j are exactly ``order[:longer_than[j]]`` and ``columns[j]`` holds their byte j.
    """

    def __init__(self, token_bytes: Sequence[bytes]):
        for index, token in enumerate(token_bytes):
            if not isinstance(token, bytes):
                raise ValueError(f"JsonSchemaConstraint: token_bytes[{index}] is "
                                 f"{type(token).__name__}, expected bytes")
        self.n_vocab = len(token_bytes)
        lengths = np.fromiter((len(t) for t in token_bytes), dtype=np.int64, count=self.n_vocab)
        order = np.argsort(-lengths, kind="stable")
        order = order[lengths[order] > 0]
        self.order = order
        ordered_lengths = lengths[order]
        joined = np.frombuffer(b"".join(token_bytes[i] for i in order.tolist()), dtype=np.uint8)
        starts = np.zeros(order.shape[0], dtype=np.int64)
        np.cumsum(ordered_lengths[:-1], out=starts[1:])
        max_length = int(ordered_lengths[0]) if order.size else 0
        # longer_than[j] = number of tokens with length > j (lengths are descending).
        self.longer_than = [int(np.count_nonzero(ordered_lengths > j))
                            for j in range(max_length + 1)]
        self.columns = [joined[starts[:self.longer_than[j]] + j].astype(np.int32)
                        for j in range(max_length)]
        self._plain_text = None

    def plain_text_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """Tokens that are plain string content, for the string fast path.

        Returns (chars, others): ``chars[k]`` is the number of characters token ``order[k]``
        starts when it is valid UTF-8 text without quote, backslash or control bytes
        (possibly ending inside a character), else -1; ``others`` are the ascending
        positions of the remaining tokens. Computed on first use.
        """
        if self._plain_text is None:
            dead = 8
            # Substates 0..7 are _S_CHAR and the UTF-8 continuation substates.
            table = np.full((9, 256), dead, dtype=np.int8)
            for byte in range(256):
                if byte not in (0x22, 0x5C) and _utf8_lead(byte) >= 0:
                    table[_S_CHAR, byte] = _utf8_lead(byte)
                for sub in range(_S_CONT1, _S_AFTER_F4 + 1):
                    nxt = _string_inner_step(sub, byte)
                    if nxt >= 0:
                        table[sub, byte] = nxt
            subs = np.zeros(self.order.shape[0], dtype=np.int8)
            chars = np.zeros(self.order.shape[0], dtype=np.int32)
            for j, column in enumerate(self.columns):
                count = self.longer_than[j]
                current = subs[:count]
                chars[:count] += current == _S_CHAR
                subs[:count] = table[current, column]
            chars[subs == dead] = -1
            self._plain_text = (chars, np.flatnonzero(subs == dead))
        return self._plain_text

    def walk(self, automaton: _Automaton, sid: int, string_fast_path: bool = True) -> np.ndarray:
        """Bool mask over the vocabulary: tokens whose every byte is accepted from ``sid``."""
        frame = automaton.stacks[sid][-1]
        node = automaton.nodes[frame[0]]
        if string_fast_path and node.kind == _STRING and frame[1] == _S_CHAR:
            # Inside a string at a character boundary, plain text tokens only add to the
            # character count: one comparison decides them all. The rest (quotes that close
            # the string, escapes, invalid bytes) take the byte walk.
            chars, others = self.plain_text_tokens()
            allowed = chars >= 0
            if node.max_length is not None:
                allowed &= chars <= node.max_length - frame[2]
            allowed[others] = self._walk_final_states(automaton, sid, others)[others] > _DEAD
            return self._unsort(allowed)
        return self._unsort(self._walk_final_states(automaton, sid, None) > _DEAD)

    def _walk_final_states(self, automaton: _Automaton, sid: int,
                           subset: Optional[np.ndarray]) -> np.ndarray:
        """End state of every token (of ``subset`` positions, or all) started in ``sid``.

        Dense phase: every token longer than j goes through column j (dead ones sit in the
        sink state), which needs no compaction -- right when nearly every token lives.
        Sparse phase (once few live, or from the start for a subset): only the living ones.
        """
        final = np.zeros(self.order.shape[0], dtype=np.int32)
        alive = subset                                       # None: dense phase
        states = None
        for j, column in enumerate(self.columns):
            if alive is not None:
                column = column[alive]
            states = automaton.lookup((states * 256 if j else sid * 256) + column)
            longer = self.longer_than[j + 1]
            if alive is None:
                final[longer:self.longer_than[j]] = states[longer:]
                states = states[:longer]
                if np.count_nonzero(states) < _SPARSE_WALK_BELOW * states.shape[0]:
                    alive = np.flatnonzero(states)
                    states = states[alive]
            else:
                keep = states > _DEAD
                alive = alive[keep]
                states = states[keep]
                # alive is ascending: tokens of length j + 1 are the tail at or past `longer`
                split = int(np.searchsorted(alive, longer))
                final[alive[split:]] = states[split:]
                alive = alive[:split]
                states = states[:split]
            if states.shape[0] == 0:
                break
        return final

    def _unsort(self, allowed_sorted: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.n_vocab, dtype=bool)
        mask[self.order[allowed_sorted]] = True
        return mask


class _SharedTables:
    """Automaton, vocabulary index and mask cache shared by constraints on the same inputs.

    Callers hold parser stacks, not state ids, so the automaton can be rebuilt from scratch
    when it grows past _MAX_AUTOMATON_STATES (long bounded strings inside arrays would
    otherwise keep adding states; each costs a 1 KB table row).
    """

    def __init__(self, nodes, root, vocab: _VocabIndex, eos_ids: tuple, special_ids: tuple):
        self.nodes = nodes
        self.root = root
        self.automaton = _Automaton(nodes, root)
        self.initial_stack = self.automaton.stacks[self.automaton.initial]
        self.vocab = vocab
        self.eos_ids = np.array(eos_ids, dtype=np.int64)
        self.excluded_ids = np.array(sorted(set(special_ids) | set(eos_ids)), dtype=np.int64)
        self.masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def _state_id(self, stack: tuple) -> int:
        if len(self.automaton.stacks) > _MAX_AUTOMATON_STATES:
            self.automaton = _Automaton(self.nodes, self.root)
            self.masks.clear()
        return self.automaton.state_id(stack)

    def mask(self, stack: tuple) -> np.ndarray:
        """Allowed tokens after the parser state ``stack``."""
        with self.lock:
            sid = self._state_id(stack)
            packed = self.masks.get(sid)
            if packed is not None:
                self.masks.move_to_end(sid)
                return np.unpackbits(packed, count=self.vocab.n_vocab).view(bool)
            if stack:
                mask = self.vocab.walk(self.automaton, sid)
                mask[self.excluded_ids] = False
            else:
                mask = np.zeros(self.vocab.n_vocab, dtype=bool)
            if self.automaton.accepting[sid]:
                mask[self.eos_ids] = True
            if self._reusable(stack):
                self.masks[sid] = np.packbits(mask)
                if len(self.masks) > _MASK_CACHE_ENTRIES:
                    self.masks.popitem(last=False)
            return mask

    def _reusable(self, stack: tuple) -> bool:
        """False for states inside a length-bounded string: each character count is its own
        state, rarely met twice, and the string fast path makes them cheap anyway."""
        if not stack:
            return True
        node = self.nodes[stack[-1][0]]
        return not (node.kind == _STRING and node.count_cap is not None and stack[-1][1] >= 0)

    def advance(self, stack: tuple, token: bytes) -> Optional[tuple]:
        """Parser state after ``token``, or None if some byte of it is not allowed."""
        with self.lock:
            sid = self._state_id(stack)
            for byte in token:
                sid = self.automaton.step(sid, byte)
                if sid == _DEAD:
                    return None
            return self.automaton.stacks[sid]


_vocab_cache: OrderedDict = OrderedDict()
_tables_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def _shared_tables(schema, nodes, root, token_bytes, eos_ids, special_ids) -> _SharedTables:
    vocab_key = tuple(token_bytes)
    with _cache_lock:
        entry = _vocab_cache.get(vocab_key)
        if entry is None:
            entry = _VocabIndex(vocab_key)
            _vocab_cache[vocab_key] = entry
            while len(_vocab_cache) > 2:
                _vocab_cache.popitem(last=False)
        _vocab_cache.move_to_end(vocab_key)
        # Property order matters (it is the generation order): no sort_keys.
        key = (json.dumps(schema, default=repr), id(entry), eos_ids, special_ids)
        tables = _tables_cache.get(key)
        if tables is None or tables.vocab is not entry:
            tables = _SharedTables(nodes, root, entry, eos_ids, special_ids)
            _tables_cache[key] = tables
            while len(_tables_cache) > _SHARED_TABLES_ENTRIES:
                _tables_cache.popitem(last=False)
        _tables_cache.move_to_end(key)
        return tables


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------

class JsonSchemaConstraint:
    """Tracks generated tokens and tells which tokens keep the output valid for ``schema``.

    ``token_bytes[i]`` are the bytes token i decodes to. Tokens with empty bytes and
    ``special_ids`` are never allowed; ``eos_ids`` are allowed exactly when the output is a
    complete document. Usage per step::

        token = sampler.sample(logits, history, allowed=constraint.allowed_mask())
        constraint.advance(token)
    """

    def __init__(self, schema: dict, token_bytes: Sequence[bytes], eos_ids: Iterable[int],
                 special_ids: Iterable[int] = ()):
        nodes, root = _compile(schema)
        if not isinstance(token_bytes, (list, tuple)) or not token_bytes:
            raise ValueError("JsonSchemaConstraint: token_bytes must be a non-empty list of bytes")
        n_vocab = len(token_bytes)
        eos = self._check_ids("eos_ids", eos_ids, n_vocab)
        if not eos:
            raise ValueError("JsonSchemaConstraint: eos_ids must name at least one token")
        special = self._check_ids("special_ids", special_ids, n_vocab)
        self.schema = schema
        self.n_vocab = n_vocab
        self.eos_ids = frozenset(eos)
        self._token_bytes = token_bytes
        self._tables = _shared_tables(schema, nodes, root, token_bytes, eos, special)
        self._forbidden = frozenset(special) - self.eos_ids
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
        """Start a new document (the shared caches are kept)."""
        self._stack = self._tables.initial_stack
        self._output = bytearray()
        self._ended = False

    @property
    def output(self) -> bytes:
        """The document bytes produced so far."""
        return bytes(self._output)

    def allowed_mask(self) -> np.ndarray:
        """Bool array (n_vocab,): True for every token that may come next."""
        if self._ended:
            mask = np.zeros(self.n_vocab, dtype=bool)
            mask[list(self.eos_ids)] = True
            return mask
        return self._tables.mask(self._stack)

    def is_complete(self) -> bool:
        """True when the output is a complete, valid document (an end token may follow).

        For a top-level number more digits may still be allowed.
        """
        return self._ended or _parser_accepting(self._tables.nodes, self._stack)

    def advance(self, token_id: int) -> None:
        """Consume one generated token; ValueError if it is not allowed here."""
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)) \
                or not 0 <= token_id < self.n_vocab:
            raise ValueError(f"JsonSchemaConstraint.advance: {token_id!r} is not a token id in "
                             f"[0, {self.n_vocab})")
        token_id = int(token_id)
        tail = bytes(self._output[-40:])
        if token_id in self.eos_ids:
            if not self.is_complete():
                raise ValueError(f"JsonSchemaConstraint.advance: end token {token_id} before the "
                                 f"JSON document is complete (output ends with {tail!r})")
            self._ended = True
            return
        token = self._token_bytes[token_id]
        stack = None
        if not (self._ended or token_id in self._forbidden or not token):
            stack = self._tables.advance(self._stack, token)
        if stack is None:
            raise ValueError(f"JsonSchemaConstraint.advance: token {token_id} ({token!r}) is not "
                             f"allowed after {tail!r} by the JSON schema")
        self._stack = stack
        self._output += token


# ---------------------------------------------------------------------------------------
# Validator for the same subset
# ---------------------------------------------------------------------------------------

def _json_equal(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _type_matches(value, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, (list, tuple))
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return kind == "number" or isinstance(value, int) or value.is_integer()


def _validate_node(value, schema: dict, path: str, errors: list) -> None:
    kind = schema.get("type")
    if kind is not None and not _type_matches(value, kind):
        errors.append(f"{path}: expected {kind}, got {_json_type_name(value)} {value!r}")
        return
    if "enum" in schema and not any(_json_equal(value, option) for option in schema["enum"]):
        errors.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and not _json_equal(value, schema["const"]):
        errors.append(f"{path}: {value!r} is not the constant {schema['const']!r}")
    if kind == "string":
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: string of {len(value)} characters is shorter than minLength "
                          f"{schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: string of {len(value)} characters is longer than maxLength "
                          f"{schema['maxLength']}")
    elif kind in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value!r} is less than minimum {schema['minimum']!r}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value!r} is greater than maximum {schema['maximum']!r}")
    elif kind == "array":
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: {len(value)} items, fewer than minItems {schema['minItems']}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: {len(value)} items, more than maxItems {schema['maxItems']}")
        for index, item in enumerate(value):
            _validate_node(item, schema["items"], f"{path}[{index}]", errors)
    elif kind == "object":
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: missing required property {name!r}")
        for name, item in value.items():
            if name in properties:
                _validate_node(item, properties[name], f"{path}.{name}", errors)
            elif not schema.get("additionalProperties", False):
                errors.append(f"{path}: property {name!r} is not allowed by the schema")


def validate(instance: Any, schema: dict) -> list[str]:
    """Errors of ``instance`` against ``schema`` (empty list: valid).

    ``schema`` must be in the supported subset (ValueError otherwise). As in generation,
    properties not listed in an object schema are errors unless additionalProperties is true.
    """
    _compile(schema)
    errors: list[str] = []
    _validate_node(instance, schema, "$", errors)
    return errors
