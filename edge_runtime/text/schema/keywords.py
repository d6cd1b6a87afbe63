"""One schema object's own assertion keywords as a Conj, and the keywords that are refused."""

from __future__ import annotations

import math

from edge_runtime.text.schema.compile import (
    ANNOTATIONS, Bound, Conj, Multiple, ObjPart, SchemaError, SUPPORTED, TYPE_BITS, T_ALL,
    decimal_of, escape_pointer, json_equal, json_type, prune, supported_formats)

_REFUSED = {
    "contains": "'contains' is not supported",
    "dependentSchemas": "'dependentSchemas' is not supported",
    "$dynamicRef": "'$dynamicRef' is not supported",
    "$recursiveRef": "'$recursiveRef' (draft 2019-09) is not supported",
    "dependencies": "'dependencies' (draft 7) is not supported; use dependentRequired",
    "additionalItems": "'additionalItems' (draft 7) is not supported; use prefixItems/items",
}


def _trivially_true(value) -> bool:
    return value is True or value == {}


def check_unsupported(compiler, schema: dict, pointer: str) -> None:
    for key, value in schema.items():
        if key in ANNOTATIONS or key not in SUPPORTED:
            continue
        if key in _REFUSED:
            if key == "dependentSchemas" and isinstance(value, dict) and all(
                    _trivially_true(v) for v in value.values()):
                continue
            raise SchemaError(pointer, key, _REFUSED[key])
        if key == "if" and ("then" in schema or "else" in schema):
            raise SchemaError(pointer, "if", "'if'/'then'/'else' is not supported")
        if key in ("unevaluatedProperties", "unevaluatedItems") and not _trivially_true(value):
            raise SchemaError(pointer, key, f"'{key}' other than true is not supported")
        if key == "uniqueItems":
            if not isinstance(value, bool):
                raise SchemaError(pointer, key, f"expected a boolean, got {value!r}")
            if value:
                raise SchemaError(pointer, key, "uniqueItems: true is not supported")
        if key == "propertyNames" and not (_trivially_true(value) or value is False):
            raise SchemaError(pointer, key, "'propertyNames' other than true/false is not "
                              "supported")


def _count(schema, key, pointer):
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SchemaError(pointer, key, f"expected a non-negative integer, got {value!r}")
    return value


def _check_literal(value, pointer, key, depth=0):
    if depth > 64:
        raise SchemaError(pointer, key, "value nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise SchemaError(pointer, key, f"{value!r} is not a JSON number")
    if isinstance(value, list):
        for v in value:
            _check_literal(v, pointer, key, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise SchemaError(pointer, key, f"object key {k!r} is not a string")
            _check_literal(v, pointer, key, depth + 1)
    elif not (value is None or isinstance(value, (bool, int, float, str))):
        raise SchemaError(pointer, key, f"{value!r} is not a JSON value")


def own_conj(compiler, schema: dict, pointer: str) -> tuple:
    """The Conj of the assertions written in this schema object itself (no applicators)."""
    fields = {"pointer": pointer}
    types = T_ALL
    if "type" in schema:
        names = schema["type"]
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names:
            raise SchemaError(pointer, "type", f"expected a type name or a list of them, got "
                              f"{schema['type']!r}")
        types = 0
        for name in names:
            if name not in TYPE_BITS:
                raise SchemaError(pointer, "type", f"unknown type {name!r}; expected one of "
                                  f"{sorted(TYPE_BITS)}")
            types |= TYPE_BITS[name]
    fields["types"] = types

    literals = None
    if "enum" in schema:
        values = schema["enum"]
        if not isinstance(values, list):
            raise SchemaError(pointer, "enum", f"expected an array, got {json_type(values)}")
        literals = []
        for v in values:
            _check_literal(v, pointer, "enum")
            if not any(json_equal(v, w) for w in literals):
                literals.append(v)
    if "const" in schema:
        _check_literal(schema["const"], pointer, "const")
        const = [schema["const"]]
        literals = const if literals is None else [v for v in literals
                                                   if json_equal(v, const[0])]
    if literals is not None:
        fields["literals"] = tuple(literals)

    for key, side in (("minimum", "lower"), ("exclusiveMinimum", "lower"),
                      ("maximum", "upper"), ("exclusiveMaximum", "upper")):
        if key in schema:
            bound = Bound(decimal_of(schema[key], pointer, key), key.startswith("exclusive"),
                          schema[key])
            old = fields.get(side)
            if old is None:
                fields[side] = bound
            elif side == "lower":
                fields[side] = bound if (bound.value, bound.exclusive) > (old.value, old.exclusive) \
                    else old
            else:
                fields[side] = bound if (bound.value, not bound.exclusive) < \
                    (old.value, not old.exclusive) else old
    if "multipleOf" in schema:
        raw = schema["multipleOf"]
        value = decimal_of(raw, pointer, "multipleOf")
        if value <= 0:
            raise SchemaError(pointer, "multipleOf", f"expected a number > 0, got {raw!r}")
        is_float = isinstance(raw, float) and value.denominator != 1
        fields["multiples"] = (Multiple(value, raw if is_float else None, raw),)

    for key in ("minLength", "minItems", "minProperties"):
        value = _count(schema, key, pointer)
        if value is not None:
            fields[{"minLength": "min_length", "minItems": "min_items",
                    "minProperties": "min_props"}[key]] = value
    for key in ("maxLength", "maxItems", "maxProperties"):
        value = _count(schema, key, pointer)
        if value is not None:
            fields[{"maxLength": "max_length", "maxItems": "max_items",
                    "maxProperties": "max_props"}[key]] = value
    if schema.get("propertyNames") is False:
        fields["max_props"] = 0
    if "pattern" in schema:
        pattern = schema["pattern"]
        if not isinstance(pattern, str):
            raise SchemaError(pointer, "pattern", f"expected a string, got {json_type(pattern)}")
        compiler.regex(pattern, pointer, "pattern")
        fields["patterns"] = (pattern,)
    if "format" in schema:
        fmt = schema["format"]
        if fmt not in supported_formats():
            raise SchemaError(pointer, "format", f"format {fmt!r} is not supported; supported: "
                              f"{', '.join(supported_formats())}")
        fields["formats"] = (fmt,)

    def sub(*keys):
        return frozenset({compiler.location(pointer[1:] + "".join(
            "/" + escape_pointer(str(k)) for k in keys))})

    if "items" in schema:
        if isinstance(schema["items"], list):
            raise SchemaError(pointer, "items", "an array of schemas is the draft-7 form; "
                              "use prefixItems")
        fields["items"] = sub("items")
    if "prefixItems" in schema:
        value = schema["prefixItems"]
        if not isinstance(value, list) or not value:
            raise SchemaError(pointer, "prefixItems", "expected a non-empty array of schemas")
        fields["prefix"] = tuple(sub("prefixItems", k) for k in range(len(value)))

    props = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    for key, value in (("properties", props), ("patternProperties", patterns)):
        if not isinstance(value, dict):
            raise SchemaError(pointer, key, f"expected an object, got {json_type(value)}")
    if props or patterns or "additionalProperties" in schema:
        for pattern in patterns:
            compiler.regex(pattern, pointer, "patternProperties")
        fields["obj_parts"] = (ObjPart(
            props=tuple((name, sub("properties", name)) for name in props),
            patterns=tuple((pattern, sub("patternProperties", pattern)) for pattern in patterns),
            additional=sub("additionalProperties") if "additionalProperties" in schema
            else frozenset()),)
    if "required" in schema:
        required = schema["required"]
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError(pointer, "required", f"expected an array of strings, got "
                              f"{required!r}")
        fields["required"] = frozenset(required)
    if "dependentRequired" in schema:
        deps = schema["dependentRequired"]
        if not isinstance(deps, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in deps.values()):
            raise SchemaError(pointer, "dependentRequired", "expected an object of string arrays")
        fields["dep_required"] = tuple((k, frozenset(v)) for k, v in deps.items() if v)

    conj = prune(Conj(**fields))
    return () if conj is None else (conj,)
