"""JSON Schema (draft 2020-12) to a normal form the automaton can run.

Every schema location becomes a disjunction of ``Conj`` records; a Conj holds, per JSON type,
the constraints an instance of that type must meet (a type left out is not allowed), plus an
optional finite set of allowed values (enum/const). Subschemas of properties and items are kept
as *sets of locations* whose conjunction applies: ``allOf`` and ``$ref`` next to other keywords
merge here (intersection), ``anyOf`` is a disjunction, ``oneOf`` a disjunction whose branches
must be provably exclusive. Recursion through ``$ref`` is fine as long as it passes through a
property or item (a ``$ref`` cycle that consumes no input is an error, as in the spec).

Keywords that constrain values but are not supported raise SchemaError naming the keyword and
its JSON pointer; annotations are ignored. Unknown keywords outside the 2020-12 vocabularies
are annotations by the spec and are ignored too, except the draft-7 keywords whose meaning
changed (``dependencies``, ``additionalItems``, array-form ``items``), which are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Optional
from urllib.parse import unquote, urldefrag, urljoin

from edge_runtime.text.schema.formats import PATTERNS as FORMAT_PATTERNS, format_dfa
from edge_runtime.text.schema.regex import ByteDfa, RegexError, compile_search

T_NULL, T_BOOL, T_INT, T_NUM, T_STR, T_ARR, T_OBJ = (1 << k for k in range(7))
T_ALL = (1 << 7) - 1
TYPE_BITS = {"null": T_NULL, "boolean": T_BOOL, "integer": T_INT, "number": T_INT | T_NUM,
             "string": T_STR, "array": T_ARR, "object": T_OBJ}
DEFAULT_BASE = "https://edge-runtime.invalid/schema.json"

ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
    "$comment", "$schema", "$id", "$anchor", "$dynamicAnchor", "$vocabulary", "$defs",
    "definitions", "contentMediaType", "contentEncoding", "contentSchema",
})
SUPPORTED = frozenset({
    "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "format", "items", "prefixItems",
    "maxItems", "minItems", "uniqueItems", "maxContains", "minContains", "properties",
    "patternProperties", "additionalProperties", "required", "maxProperties", "minProperties",
    "dependentRequired", "propertyNames", "$ref", "allOf", "anyOf", "oneOf", "not", "if",
    "then", "else", "unevaluatedProperties", "unevaluatedItems", "contains",
    "dependentSchemas", "$dynamicRef", "$recursiveRef", "$recursiveAnchor", "dependencies",
    "additionalItems",
})
_SINGLE = ("items", "additionalProperties", "not", "propertyNames", "contains", "if", "then",
           "else", "unevaluatedItems", "unevaluatedProperties", "additionalItems",
           "contentSchema")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")


class SchemaError(ValueError):
    """A schema this runtime cannot compile; names the keyword and its JSON pointer."""

    def __init__(self, pointer: str, keyword: Optional[str], message: str):
        self.pointer = pointer or "#"
        self.keyword = keyword
        where = f"JSON schema at {self.pointer}"
        if keyword is not None:
            where += f", keyword {keyword!r}"
        super().__init__(f"{where}: {message}")


def join_uri(base: str, ref: str) -> str:
    """urljoin that also handles non-hierarchical bases (urn:...)."""
    if ":" in ref.split("/", 1)[0] and not ref.startswith("#"):
        return ref
    if ref.startswith("#") or ref == "":
        return urldefrag(base)[0] + ref
    return urljoin(base, ref)


# bool before int: True is an int to Python, a boolean to JSON
_JSON_TYPES = ((type(None), "null"), (bool, "boolean"), (int, "integer"), (float, "number"),
               (str, "string"), (list, "array"), (dict, "object"))


def json_type(value) -> str:
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def json_equal(a, b) -> bool:
    """Equality as JSON Schema defines it: 1 == 1.0, true != 1, objects ignore key order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


# ---------------------------------------------------------------------------------------
# The normal form
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bound:
    # The bound as written (shortest repr of a double); decimals of at most 15 significant
    # digits compare with it as their doubles compare with the double (see numbers.py).
    value: Fraction
    exclusive: bool
    raw: Any = field(default=None, compare=False)     # the number as given in the schema


@dataclass(frozen=True)
class Multiple:
    value: Fraction               # exact decimal value as written
    float_value: Optional[float]  # set for a non-integral float: also check the double quotient
    raw: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class ObjPart:
    """One conjunct's property rules: names -> location sets, patterns, the rest."""
    props: tuple                  # ((name, frozenset), ...)
    patterns: tuple               # ((pattern, frozenset), ...)
    additional: frozenset


@dataclass(frozen=True)
class Conj:
    types: int = T_ALL
    literals: Optional[tuple] = None          # allowed values (enum/const), JSON-equal unique
    lower: Optional[Bound] = None
    upper: Optional[Bound] = None
    multiples: tuple = ()
    min_length: int = 0
    max_length: Optional[int] = None
    patterns: tuple = ()                      # pattern source strings
    formats: tuple = ()
    prefix: tuple = ()                        # frozensets of locations
    items: frozenset = frozenset()
    min_items: int = 0
    max_items: Optional[int] = None
    obj_parts: tuple = ()
    required: frozenset = frozenset()
    min_props: int = 0
    max_props: Optional[int] = None
    dep_required: tuple = ()                  # ((name, frozenset of names), ...)
    pointer: str = field(default="#", compare=False)


ANY_CONJ = Conj()


def _min_bound(a: Optional[Bound], b: Optional[Bound]) -> Optional[Bound]:
    """The tighter upper bound."""
    if a is None or b is None:
        return a or b
    if a.value != b.value:
        return a if a.value < b.value else b
    return a if a.exclusive else b


def _max_bound(a: Optional[Bound], b: Optional[Bound]) -> Optional[Bound]:
    """The tighter lower bound."""
    if a is None or b is None:
        return a or b
    if a.value != b.value:
        return a if a.value > b.value else b
    return a if a.exclusive else b


def _opt_min(a, b):
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


def intersect(a: Conj, b: Conj) -> Optional[Conj]:
    """The conjunction of two Conj records, or None when it is plainly empty."""
    types = a.types & b.types
    literals = a.literals
    if b.literals is not None:
        literals = b.literals if literals is None else tuple(
            v for v in literals if any(json_equal(v, w) for w in b.literals))
    n = max(len(a.prefix), len(b.prefix))
    prefix = tuple((a.prefix[i] if i < len(a.prefix) else a.items)
                   | (b.prefix[i] if i < len(b.prefix) else b.items) for i in range(n))
    c = Conj(types=types, literals=literals, lower=_max_bound(a.lower, b.lower),
             upper=_min_bound(a.upper, b.upper), multiples=a.multiples + b.multiples,
             min_length=max(a.min_length, b.min_length),
             max_length=_opt_min(a.max_length, b.max_length),
             patterns=a.patterns + tuple(p for p in b.patterns if p not in a.patterns),
             formats=a.formats + tuple(f for f in b.formats if f not in a.formats),
             prefix=prefix, items=a.items | b.items, min_items=max(a.min_items, b.min_items),
             max_items=_opt_min(a.max_items, b.max_items),
             obj_parts=a.obj_parts + tuple(p for p in b.obj_parts if p not in a.obj_parts),
             required=a.required | b.required, min_props=max(a.min_props, b.min_props),
             max_props=_opt_min(a.max_props, b.max_props),
             dep_required=a.dep_required + b.dep_required,
             pointer=a.pointer if a.pointer != "#" else b.pointer)
    return prune(c)


def prune(c: Conj) -> Optional[Conj]:
    """Drop the types whose constraints contradict each other; None if nothing is left."""
    types = c.types
    if c.lower is not None and c.upper is not None and (
            c.lower.value > c.upper.value
            or (c.lower.value == c.upper.value and (c.lower.exclusive or c.upper.exclusive))):
        types &= ~(T_INT | T_NUM)
    if c.max_length is not None and c.min_length > c.max_length:
        types &= ~T_STR
    if c.max_items is not None and c.min_items > c.max_items:
        types &= ~T_ARR
    if (c.max_props is not None and c.min_props > c.max_props) or (
            c.max_props is not None and len(c.required) > c.max_props):
        types &= ~T_OBJ
    if c.literals is not None:
        literals = tuple(v for v in c.literals if _literal_type_bits(v) & types)
        if not literals:
            return None
        if literals != c.literals:
            c = replace(c, literals=literals)
    if not types:
        return None
    return c if types == c.types else replace(c, types=types)


def _literal_type_bits(value) -> int:
    t = json_type(value)
    if t == "number":
        return T_INT | T_NUM if float(value).is_integer() else T_NUM
    if t == "integer":
        return T_INT | T_NUM
    return TYPE_BITS[t]


# ---------------------------------------------------------------------------------------
# The compiler
# ---------------------------------------------------------------------------------------

class CompiledSchema:
    """Locations of one schema document and their normal forms (built on demand)."""

    def __init__(self, schema: Any):
        self.root = schema
        self.locations: list[tuple[Any, str, str]] = []   # (schema, pointer, base uri)
        self._by_pointer: dict[str, int] = {}
        self._resources: dict[str, str] = {}              # base uri -> pointer
        self._anchors: dict[tuple[str, str], str] = {}
        self._norms: dict[int, tuple] = {}
        self._in_progress: list[int] = []
        self._dnf: dict[frozenset, tuple] = {}
        self.regexes: dict[str, ByteDfa] = {}
        base = DEFAULT_BASE
        if isinstance(schema, dict) and isinstance(schema.get("$id"), str):
            base = urldefrag(join_uri(DEFAULT_BASE, schema["$id"]))[0]
        self._resources[DEFAULT_BASE] = ""
        self._index(schema, "", base)
        self.root_location = self.location("")
        self.dnf(frozenset({self.root_location}))        # surface every error now

    # -- indexing --------------------------------------------------------------------------

    def _index(self, schema, pointer: str, base: str) -> None:
        if not isinstance(schema, dict):
            return
        sid = schema.get("$id")
        if isinstance(sid, str):
            target, fragment = urldefrag(join_uri(base, sid))
            if fragment:
                raise SchemaError("#" + pointer, "$id", f"{sid!r} must not carry a fragment")
            base = target
            self._resources.setdefault(base, pointer)
        for key in ("$anchor", "$dynamicAnchor"):
            anchor = schema.get(key)
            if isinstance(anchor, str):
                self._anchors.setdefault((base, anchor), pointer)
        for key in _SINGLE:
            if key in schema:
                self._index(schema[key], f"{pointer}/{escape_pointer(key)}", base)
        for key in _MAP:
            value = schema.get(key)
            if isinstance(value, dict):
                for name, sub in value.items():
                    self._index(sub, f"{pointer}/{escape_pointer(key)}/{escape_pointer(str(name))}",
                                base)
        for key in _LIST:
            value = schema.get(key)
            if isinstance(value, list):
                for k, sub in enumerate(value):
                    self._index(sub, f"{pointer}/{key}/{k}", base)

    def _base_of(self, pointer: str) -> str:
        """Base URI in force at a pointer (the nearest enclosing $id)."""
        base = DEFAULT_BASE
        node = self.root
        parts = pointer.split("/")[1:] if pointer else []
        if isinstance(node, dict) and isinstance(node.get("$id"), str):
            base = urldefrag(join_uri(base, node["$id"]))[0]
        for part in parts:
            node = self._child(node, part, pointer)
            if isinstance(node, dict) and isinstance(node.get("$id"), str):
                base = urldefrag(join_uri(base, node["$id"]))[0]
        return base

    @staticmethod
    def _child(node, token: str, pointer: str):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            return node[token]
        if isinstance(node, list) and token.isdigit() and int(token) < len(node):
            return node[int(token)]
        raise SchemaError("#" + pointer, "$ref", f"the reference points at nothing ({token!r} "
                          "is missing)")

    def location(self, pointer: str) -> int:
        lid = self._by_pointer.get(pointer)
        if lid is None:
            node = self.root
            for part in (pointer.split("/")[1:] if pointer else []):
                node = self._child(node, part, pointer)
            lid = len(self.locations)
            self._by_pointer[pointer] = lid
            self.locations.append((node, "#" + pointer, self._base_of(pointer)))
        return lid

    def resolve(self, ref: str, base: str, where: str) -> int:
        target, fragment = urldefrag(join_uri(base, ref))
        resource = self._resources.get(target)
        if resource is None:
            raise SchemaError(where, "$ref", f"{ref!r} refers to {target!r}, outside this "
                              "schema (only references within the document are supported)")
        fragment = unquote(fragment)
        if fragment == "" or fragment.startswith("/"):
            try:
                return self.location(resource + fragment)
            except SchemaError:
                raise SchemaError(where, "$ref", f"{ref!r} points at nothing in the document") \
                    from None
        pointer = self._anchors.get((target, fragment))
        if pointer is None:
            raise SchemaError(where, "$ref", f"no $anchor {fragment!r} in {target!r}")
        return self.location(pointer)

    # -- normal forms ----------------------------------------------------------------------

    def dnf(self, locations: frozenset) -> tuple:
        """The alternatives (Conj tuple) of the conjunction of ``locations``."""
        result = self._dnf.get(locations)
        if result is None:
            result = (ANY_CONJ,)
            for lid in sorted(locations):
                result = and_dnf(result, self.norm(lid))
                if not result:
                    break
            self._dnf[locations] = result
        return result

    def norm(self, lid: int) -> tuple:
        result = self._norms.get(lid)
        if result is not None:
            return result
        schema, pointer, base = self.locations[lid]
        if lid in self._in_progress:
            raise SchemaError(pointer, "$ref", "the references loop without passing through a "
                              "property or an item, so no instance can be checked")
        self._in_progress.append(lid)
        try:
            result = self._normalize(schema, pointer, base)
        finally:
            self._in_progress.pop()
        self._norms[lid] = result
        return result

    def _sub(self, pointer: str, *keys) -> int:
        return self.location(pointer[1:] + "".join("/" + escape_pointer(str(k)) for k in keys))

    def _normalize(self, schema, pointer: str, base: str) -> tuple:
        if schema is True:
            return (ANY_CONJ,)
        if schema is False:
            return ()
        if not isinstance(schema, dict):
            raise SchemaError(pointer, None, f"a schema must be an object or a boolean, got "
                              f"{json_type(schema)}")
        for key in schema:
            if not isinstance(key, str):
                raise SchemaError(pointer, None, f"keyword {key!r} is not a string")
        from edge_runtime.text.schema.keywords import own_conj, check_unsupported

        check_unsupported(self, schema, pointer)
        result = own_conj(self, schema, pointer)
        if "$ref" in schema:
            if not isinstance(schema["$ref"], str):
                raise SchemaError(pointer, "$ref", "expected a string")
            result = and_dnf(result, self.norm(self.resolve(schema["$ref"], base, pointer)))
        for key in ("allOf", "anyOf", "oneOf"):
            if key not in schema:
                continue
            branches = schema[key]
            if not isinstance(branches, list) or not branches:
                raise SchemaError(pointer, key, "expected a non-empty array of schemas")
            norms = [self.norm(self._sub(pointer, key, k)) for k in range(len(branches))]
            if key == "allOf":
                for n in norms:
                    result = and_dnf(result, n)
            elif key == "anyOf":
                result = and_dnf(result, tuple(c for n in norms for c in n))
            else:
                result = and_dnf(result, self._one_of(norms, pointer))
        if "not" in schema:
            result = and_dnf(result, self._negate(self.norm(self._sub(pointer, "not")),
                                                  schema["not"], pointer))
        return result

    def _one_of(self, norms: list, pointer: str) -> tuple:
        for i in range(len(norms)):
            for j in range(i + 1, len(norms)):
                for a in norms[i]:
                    for b in norms[j]:
                        if not self.disjoint(a, b, 4):
                            raise SchemaError(pointer, "oneOf", f"alternatives {i} and {j} may "
                                              "both match the same value; only alternatives that "
                                              "provably exclude each other are supported")
        return tuple(c for n in norms for c in n)

    def _negate(self, norm: tuple, raw, pointer: str) -> tuple:
        if not norm:
            return (ANY_CONJ,)
        if len(norm) == 1 and replace(norm[0], types=T_ALL, pointer="#") == ANY_CONJ:
            types = norm[0].types
            if types & T_INT and not types & T_NUM:
                raise SchemaError(pointer, "not", "'not' of 'integer' is not supported")
            rest = T_ALL & ~types
            if rest & (T_INT | T_NUM):
                rest |= T_INT | T_NUM
            return (replace(ANY_CONJ, types=rest, pointer=pointer),) if rest else ()
        raise SchemaError(pointer, "not", "only 'not' of a boolean schema or of 'type' alone is "
                          "supported")

    # -- disjointness (for oneOf) -------------------------------------------------------------

    def disjoint(self, a: Conj, b: Conj, depth: int) -> bool:
        """True when no value can satisfy both a and b (a sound, incomplete test)."""
        c = intersect(a, b)
        if c is None:
            return True
        if depth <= 0:
            return False
        types = c.types
        if types & T_OBJ and self._objects_disjoint(a, b, depth):
            types &= ~T_OBJ
        if types & T_STR and c.literals is None:
            pass
        return types == 0

    def _objects_disjoint(self, a: Conj, b: Conj, depth: int) -> bool:
        for name in a.required | b.required:
            va = self.dnf(self.value_locations(a.obj_parts, name))
            vb = self.dnf(self.value_locations(b.obj_parts, name))
            if not va or not vb:
                return True
            if all(self.disjoint(x, y, depth - 1) for x in va for y in vb):
                return True
        return False

    def regex(self, pattern: str, pointer: str, keyword: str) -> ByteDfa:
        dfa = self.regexes.get(pattern)
        if dfa is None:
            try:
                dfa = compile_search(pattern)
            except RegexError as exc:
                raise SchemaError(pointer, keyword, str(exc)) from None
            self.regexes[pattern] = dfa
        return dfa

    def value_locations(self, parts: tuple, name: str) -> frozenset:
        """Locations whose conjunction governs the value of property ``name``."""
        key = name.encode("utf-8")
        out = frozenset()
        for part in parts:
            own = dict(part.props).get(name)
            matched = [locs for pattern, locs in part.patterns
                       if self.regexes[pattern].matches(key)]
            if own is not None:
                out |= own
            if matched:
                for locs in matched:
                    out |= locs
            elif own is None:
                out |= part.additional
        return out


def and_dnf(a: tuple, b: tuple) -> tuple:
    if not a or not b:
        return ()
    out = []
    for x in a:
        for y in b:
            c = y if x is ANY_CONJ else x if y is ANY_CONJ else intersect(x, y)
            if c is not None and not any(c is o for o in out):
                out.append(c)
    return tuple(out)


def decimal_of(value, pointer: str, keyword: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise SchemaError(pointer, keyword, f"expected a finite number, got {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    # the number as written (shortest repr); beyond 2**53 the double's own value
    return Fraction(repr(value)) if abs(value) < 2.0 ** 53 else Fraction(value)


def supported_formats() -> tuple:
    return tuple(sorted(FORMAT_PATTERNS))


__all__ = ["SchemaError", "CompiledSchema", "Conj", "ObjPart", "Bound", "Multiple", "json_equal",
           "json_type", "format_dfa", "T_NULL", "T_BOOL", "T_INT", "T_NUM", "T_STR", "T_ARR",
           "T_OBJ", "T_ALL", "decimal_of", "supported_formats"]
