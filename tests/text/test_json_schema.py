"""JsonSchema: compiling, the accepted language, and the pieces under it (regex subset, numbers,
strings, formats), with jsonschema as the oracle. Token masks: test_json_schema_masks.py."""

import json
import lzma
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import edge_runtime
from edge_runtime.text.schema import (
    BudgetError, JsonSchema, SchemaError, canonical_json, check_schema, validate)
from edge_runtime.text.schema.formats import format_dfa
from edge_runtime.text.schema.regex import RegexError, compile_search

jsonschema = pytest.importorskip("jsonschema")
FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER
TOKENIZER_PATH = Path(__file__).resolve().parents[1] / "data" / "llama3-tokenizer.json.xz"


def gpt2_unicode_to_byte() -> dict:
    """Inverse of the byte-level BPE table: printable Latin-1 bytes map to themselves, the
    other 68 bytes to U+0100 onwards, in byte order."""
    printable = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + shifted)] = byte
            shifted += 1
    return table


def load_llama3():
    """(tokenizers.Tokenizer, token bytes per id, special ids) of the Llama-3 fixture."""
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_str(lzma.open(TOKENIZER_PATH).read().decode("utf-8"))
    to_byte = gpt2_unicode_to_byte()
    token_bytes = [b""] * tokenizer.get_vocab_size(with_added_tokens=True)
    for text, token_id in tokenizer.get_vocab(with_added_tokens=False).items():
        token_bytes[token_id] = bytes(to_byte[ch] for ch in text)
    return tokenizer, token_bytes, set(tokenizer.get_added_tokens_decoder())


def oracle_valid(schema, value) -> bool:
    return jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER).is_valid(value)


# -- public API ---------------------------------------------------------------------------------

def test_public_class_compiles_caches_and_answers():
    assert edge_runtime.JsonSchema is JsonSchema
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    compiled = JsonSchema(schema)
    assert compiled.accepts('{"a":1}') and compiled.accepts(b'{"a":-20,"b":[true]}')
    assert not compiled.accepts('{"a":1.5}') and not compiled.accepts('{}')
    assert not compiled.accepts('{"a": 1}')             # no insignificant whitespace
    assert not compiled.accepts('{"a":1,"a":2}')        # names are unique
    # the cache is keyed by canonical JSON: key order and object identity do not matter
    same = JsonSchema({"required": ["a"], "properties": {"a": {"type": "integer"}},
                       "type": "object"})
    assert same._shared is compiled._shared
    assert JsonSchema(compiled)._shared is compiled._shared
    with pytest.raises(TypeError):
        compiled.accepts(12)
    check_schema(schema)
    assert validate({"a": 3}, schema) == [] and validate({"a": "x"}, schema) != []


def test_annotations_are_ignored():
    plain = {"type": "object", "properties": {"t": {"type": "number", "maximum": 3}}}
    annotated = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                 "$id": "https://example.com/reading.json", "title": "reading",
                 "description": "a reading", "$comment": "x", "deprecated": False,
                 "examples": [{"t": 1}], "default": {"t": 2}, "readOnly": True,
                 "writeOnly": False, "type": "object",
                 "properties": {"t": {"type": "number", "maximum": 3, "title": "t",
                                      "default": 99, "contentMediaType": "text/plain"}},
                 "x-vendor-extension": {"anything": True}, "discriminator": "kind"}
    for doc in ['{"t":3}', '{"t":3.5}', '{}', '{"t":"x"}', '{"u":null}']:
        assert JsonSchema(plain).accepts(doc) == JsonSchema(annotated).accepts(doc), doc


@pytest.mark.parametrize("schema, keyword, pointer", [
    ({"type": "foo"}, "type", "#"),
    ({"properties": {"a": {"minLength": -1}}}, "minLength", "#/properties/a"),
    ({"items": [{"type": "string"}]}, "items", "#"),
    ({"properties": {"x": {"format": "hostname"}}}, "format", "#/properties/x"),
    ({"$defs": {"d": {"minimum": "3"}}, "$ref": "#/$defs/d"}, "minimum", "#/$defs/d"),
    ({"multipleOf": 0}, "multipleOf", "#"),
    ({"if": {"type": "string"}, "then": {"minLength": 2}}, "if", "#"),
    ({"dependencies": {"a": ["b"]}}, "dependencies", "#"),
    ({"prefixItems": [{}], "unevaluatedItems": False}, "unevaluatedItems", "#"),
    ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "$ref", "#/properties/a"),
    ({"patternProperties": {"\\p{L}": {}}}, "patternProperties", "#"),
    ({"not": {"minimum": 3}}, "not", "#"),
])
def test_unsupported_or_bad_keywords_are_named(schema, keyword, pointer):
    with pytest.raises(SchemaError) as info:
        JsonSchema(schema)
    assert isinstance(info.value, ValueError)
    assert (info.value.keyword, info.value.pointer) == (keyword, pointer), str(info.value)


def test_bad_schema_values_are_errors():
    for schema in ["string", 3, None, [{}], {"enum": [float("nan")]}, {1: {}}]:
        with pytest.raises(SchemaError):
            JsonSchema(schema)
    assert JsonSchema(True).accepts("[1,{}]") and not JsonSchema(False).accepts("1")
    assert not JsonSchema(False).satisfiable and JsonSchema({}).satisfiable
    assert issubclass(BudgetError, ValueError) and issubclass(SchemaError, ValueError)


# -- semantics of 2020-12 keywords (jsonschema decides) ---------------------------------------

SEMANTICS = [
    ({"type": ["string", "null"], "maxLength": 2}, ['"ab"', 'null', '"abc"', '1']),
    ({"type": "string", "maxLength": 0}, ['""', '"a"', '"\\n"']),
    ({"enum": [1, "a", None, [1, 2], {"k": True}]},
     ['1', '1.0', '"a"', 'null', '[1,2]', '{"k":true}', 'true', '2']),
    ({"const": 0}, ['0', '0.0', 'false', '-0']),
    ({"properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "integer"}},
     ['{"a":"x","b":2}', '{"b":"x"}', '{"a":1}', '[]', '3']),
    ({"patternProperties": {"^x-": {"type": "boolean"}}, "additionalProperties": False},
     ['{"x-a":true}', '{"y":true}', '{"x-a":1}', '{}']),
    ({"prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
     ['[1,"a"]', '[1]', '[1,"a",2]', '["a"]', '[]']),
    ({"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 3},
     ['[1,2]', '[1,2,3,4]', '[1]', '[1,"x"]']),
    ({"anyOf": [{"type": "integer", "minimum": 10}, {"type": "string"}]},
     ['10', '9', '"s"', 'null']),
    ({"allOf": [{"properties": {"a": {"type": "integer"}}}, {"required": ["a"]}]},
     ['{"a":1}', '{}', '{"a":"1"}']),
    ({"oneOf": [{"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}},
                 "required": ["kind"]},
                {"type": "object", "properties": {"kind": {"const": "b"}}, "required": ["kind"]}]},
     ['{"kind":"a","x":1}', '{"kind":"b","x":"y"}', '{"kind":"c"}', '{"x":1}']),
    ({"type": "object", "minProperties": 2, "maxProperties": 3},
     ['{"a":1,"b":2}', '{"a":1}', '{"a":1,"b":2,"c":3,"d":4}', '{"":0,"b":[]}']),
    ({"dependentRequired": {"a": ["b"]}}, ['{"a":1,"b":2}', '{"a":1}', '{"b":1}']),
    ({"type": "number", "exclusiveMinimum": 0.1, "maximum": 2.5},
     ['0.1', '0.10000000000001', '2.5', '2.50', '2.51', '1']),
    ({"type": "integer", "multipleOf": 3, "minimum": -7}, ['-6', '-9', '9', '10', '3.0']),
    ({"type": "number", "multipleOf": 0.1}, ['0.3', '0.5', '1', '0.25', '10.1']),
    ({"type": "string", "pattern": "^[a-z]+[0-9]?$", "minLength": 2},
     ['"ab"', '"ab1"', '"a"', '"ab12"', '"AB"']),
    ({"$defs": {"node": {"type": "object", "properties": {
        "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}}, "required": ["next"]}},
      "$ref": "#/$defs/node"},
     ['{"next":null}', '{"next":{"next":{"next":null}}}', '{"next":{}}', '{}']),
    ({"$id": "https://example.com/root.json", "$defs": {"s": {"$anchor": "str", "type": "string"}},
      "items": {"$ref": "#str"}}, ['["a"]', '[1]']),
    ({"type": "string", "format": "date"}, ['"2024-02-29"', '"2023-02-29"', '"2024-13-01"']),
]


@pytest.mark.parametrize("schema, docs", SEMANTICS)
def test_accepts_agrees_with_jsonschema(schema, docs):
    """Never accepts an invalid document; accepts every valid one written canonically."""
    compiled = JsonSchema(schema)
    for doc in docs:
        value = json.loads(doc)
        valid = oracle_valid(schema, value)
        got = compiled.accepts(doc)
        if got:
            assert valid, (schema, doc)
        elif valid:
            assert doc.encode() != canonical_json(value), (schema, doc)


def test_property_order_is_free_and_names_are_unique():
    schema = {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a", "b"],
              "additionalProperties": {"type": "integer"}}
    s = JsonSchema(schema)
    assert s.accepts('{"a":1,"b":2}') and s.accepts('{"b":2,"a":1}')
    assert s.accepts('{"x":1,"b":2,"y":3,"a":1}')
    assert not s.accepts('{"a":1,"b":2,"x":1,"x":2}')
    assert not s.accepts('{"a":1,"b":2,"b":2}')
    assert s.accepts('{"a":1,"b":2,"q\\"":1,"q":2}')     # different names
    assert not s.accepts('{"a":1,"b":2,"\\u0061":1}')    # not the canonical text of "a"


def test_canonical_strings():
    s = JsonSchema({"type": "string"})
    for doc, ok in [('"\\n\\t\\"\\\\"', True), ('"\\u001f\\u0000"', True), ('"é€😀"', True),
                    ('"\\u00e9"', False), ('"\\/"', False), ('"\\u000a"', False),
                    ('"\\u001F"', False), ('"\x01"', False), ('"\x7f"', True)]:
        assert s.accepts(doc) == ok, doc
        if ok:
            assert canonical_json(json.loads(doc)) == doc.encode()
    assert not s.accepts(b'"\xed\xa0\x80"')             # a UTF-8 encoded surrogate
    assert not s.accepts(b'"\xc0\xaf"')                 # overlong
    counted = JsonSchema({"type": "string", "minLength": 2, "maxLength": 3})
    assert counted.accepts('"é😀"') and counted.accepts('"\\n\\u0001x"')
    assert not counted.accepts('"😀"') and not counted.accepts('"abcd"')


def test_numbers_are_written_one_way():
    n = JsonSchema({"type": "number"})
    for doc, ok in [("0", True), ("-0", False), ("-0.5", True), ("01", False), ("1e5", False),
                    ("1.", False), (".5", False), ("123456789012345", True),
                    ("1234567890123456", False), ("0.123456789012345", True),
                    ("1.234567890123456", False), ("1.50", True)]:
        assert n.accepts(doc) == ok, doc
    i = JsonSchema({"type": "integer", "minimum": 10 ** 20})
    assert i.accepts(str(10 ** 20 + 7)) and not i.accepts("1.0")


@settings(database=None, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(low=st.integers(-10 ** 6, 10 ** 6), span=st.integers(0, 10 ** 4),
       mult=st.sampled_from([None, 1, 3, 7, 0.5, 0.25, 0.1, 0.01, 2.5]),
       excl=st.booleans(), value=st.one_of(st.integers(-2 * 10 ** 6, 2 * 10 ** 6),
                                           st.floats(-2e6, 2e6, allow_nan=False)))
def test_number_constraints_match_jsonschema(low, span, mult, excl, value):
    schema = {"type": "number", "minimum": low / 100, ("exclusiveMaximum" if excl else "maximum"):
              (low + span) / 100}
    if mult is not None:
        schema["multipleOf"] = mult
    text = canonical_json(value)
    valid = oracle_valid(schema, json.loads(text))
    if JsonSchema(schema).accepts(text):
        assert valid, (schema, text)
    elif valid and b"e" not in text and len(text.replace(b"-", b"").replace(b".", b"")) <= 15:
        # a valid number the generator can write must be accepted, except multiples that only
        # decimal arithmetic sees (0.3 of 0.1: the double quotient is not integral)
        assert mult is not None and isinstance(mult, float), (schema, text)


# -- the regex subset ---------------------------------------------------------------------------

PATTERNS = ["^a*$", "abc", "^[a-z0-9_]{2,5}$", "colou?r", "^(foo|bar)+baz$", "[^aeiou]{3}",
            "^\\d+(\\.\\d{1,2})?$", "\\w+@\\w+", "^\\S+$", "\\W", "x{2,}$", "^[\\-+]?[0-9]+$",
            "é.+", "^(?:[A-F]|[0-9]){4}$", "a|^b|c$", "^.$", "[\\s]", "\\D\\D"]
ALPHABET = "abcfoouzrx019_-+.@ \néÉ\t٣😀AF"


@settings(database=None, max_examples=400, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), text=st.text(alphabet=ALPHABET, max_size=8))
def test_regex_subset_is_within_python_re(pattern, text):
    """What the automaton matches, Python's re.search (jsonschema's engine) matches too."""
    ours = compile_search(pattern).matches(text.encode("utf-8"))
    if ours:
        assert re.search(pattern, text), (pattern, text)
    # where both engines agree exactly (no shorthand, no anchors-before-newline case), equal
    if not re.search(r"\\[dDwWsS]|\$", pattern) and "\n" not in text:
        assert ours == bool(re.search(pattern, text)), (pattern, text)


@pytest.mark.parametrize("pattern", ["(?=x)", "(?!x)", "(?<=x)", "\\1", "\\b", "\\p{L}",
                                     "a^", "(a$)", "[]", "[^]", "a**", "(?i)a", "\\A", "(", "[a"])
def test_regex_outside_the_subset_is_refused(pattern):
    with pytest.raises(RegexError):
        compile_search(pattern)


# -- formats -----------------------------------------------------------------------------------

FORMAT_SAMPLES = {
    "date": ["2024-02-29", "2023-02-29", "1900-02-29", "2000-02-29", "0000-01-01", "2024-04-31",
             "2024-1-01"],
    "time": ["23:59:59Z", "00:00:00.5+02:00", "24:00:00Z", "12:00:00", "12:00:00z"],
    "date-time": ["2024-06-01T12:30:00Z", "2024-06-01 12:30:00Z", "2024-06-31T00:00:00Z"],
    "uuid": ["3f2b8c1e-9a4d-4e7f-b2c1-0d9e8f7a6b5c", "3F2B8C1E-9A4D-4E7F-B2C1-0D9E8F7A6B5C",
             "3f2b8c1e9a4d4e7fb2c10d9e8f7a6b5c", "{3f2b8c1e-9a4d-4e7f-b2c1-0d9e8f7a6b5c}"],
    "email": ["a@b", "joe.bloggs@example.com", ".a@b.c", "a..b@c", "a@-b.com", "a b@c"],
    "ipv4": ["0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3"],
    "ipv6": ["::", "::1", "1:2:3:4:5:6:7:8", "1::2::3", "12345::", "fe80::1%eth0"],
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_SAMPLES))
def test_formats_are_subsets_of_the_checkers(fmt):
    schema = {"type": "string", "format": fmt}
    compiled = JsonSchema(schema)
    accepted = 0
    for sample in FORMAT_SAMPLES[fmt]:
        if compiled.accepts(json.dumps(sample)):
            accepted += 1
            assert oracle_valid(schema, sample), (fmt, sample)
    assert accepted >= 1
    shortest = format_dfa(fmt).shortest_match().decode()
    assert oracle_valid(schema, shortest), (fmt, shortest)


@settings(database=None, max_examples=200, deadline=None)
@given(fmt=st.sampled_from(sorted(FORMAT_SAMPLES)),
       text=st.text(alphabet="0123456789abcdefABCDEF:.-@TZ+", min_size=1, max_size=40))
def test_format_acceptance_is_sound(fmt, text):
    if format_dfa(fmt).matches(text.encode()):
        assert oracle_valid({"format": fmt}, text), (fmt, text)
