"""The official JSON-Schema-Test-Suite (draft 2020-12) against JsonSchema, with jsonschema as
the oracle.

For every group whose schema compiles: no instance that is invalid (by the suite or by
jsonschema with format checking) is accepted; at most 2% of the valid instances are rejected
(the generator writes a canonical subset of JSON: see edge_runtime.text.schema); and documents
generated from the schema with random logits over the Llama-3 vocabulary all validate.
Instances are written as the generator writes them: compact, integral numbers as integers.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.text.schema import JsonSchema, JsonSchemaConstraint, SchemaError, canonical_json
from edge_runtime.text.sampling import Sampler, SamplingParams

jsonschema = pytest.importorskip("jsonschema")

SUITE = Path(__file__).resolve().parent / "data" / "json-schema-test-suite" / "draft2020-12"
FORMATS = ["date", "time", "date-time", "uuid", "email", "ipv4", "ipv6"]
FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER


def load_groups(paths):
    groups = []
    for path in sorted(paths):
        for k, group in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            groups.append((f"{path.stem}[{k}] {group['description']}", group))
    return groups


MAIN = load_groups(SUITE.glob("*.json"))
OPTIONAL_FORMATS = load_groups(SUITE / "optional" / "format" / f"{f}.json" for f in FORMATS)


def instance_text(value):
    try:
        return canonical_json(value)
    except ValueError:             # e.g. a lone surrogate: not writable as UTF-8
        return None


def compile_groups(groups):
    compiled, refused = [], []
    for name, group in groups:
        try:
            compiled.append((name, group, JsonSchema(group["schema"])))
        except SchemaError as exc:
            assert exc.keyword is None or isinstance(exc.keyword, str)
            assert exc.pointer.startswith("#")
            refused.append((name, str(exc)))
    return compiled, refused


@pytest.fixture(scope="module")
def main_suite():
    return compile_groups(MAIN)


def check_instances(compiled):
    """(accepted invalid, rejected valid, number of valid) over every test instance."""
    accepted_invalid, rejected_valid, n_valid = [], [], 0
    for name, group, schema in compiled:
        oracle = jsonschema.Draft202012Validator(group["schema"], format_checker=FORMAT_CHECKER)
        for test in group["tests"]:
            text = instance_text(test["data"])
            if text is None:
                continue
            valid = test["valid"] and oracle.is_valid(test["data"])
            got = schema.accepts(text)
            if got and not valid:
                accepted_invalid.append((name, test["description"], text))
            if valid:
                n_valid += 1
                if not got:
                    rejected_valid.append((name, test["description"], text))
    return accepted_invalid, rejected_valid, n_valid


def test_suite_coverage(main_suite):
    compiled, refused = main_suite
    print(f"\nJSON-Schema-Test-Suite draft 2020-12: {len(compiled)} of {len(MAIN)} groups compile")
    assert len(compiled) >= 150, refused[:20]
    # every refusal names what it refuses
    for name, message in refused:
        assert message.startswith("JSON schema at #"), (name, message)


def test_suite_soundness_and_completeness(main_suite):
    compiled, _ = main_suite
    accepted_invalid, rejected_valid, n_valid = check_instances(compiled)
    print(f"\naccepted invalid: {len(accepted_invalid)}; rejected valid: {len(rejected_valid)} of "
          f"{n_valid} ({100 * len(rejected_valid) / n_valid:.2f}%)")
    assert accepted_invalid == []
    assert len(rejected_valid) <= 0.02 * n_valid, rejected_valid


def test_format_suite_soundness():
    """optional/format tests with format assertion on: nothing invalid is accepted."""
    compiled, refused = compile_groups(OPTIONAL_FORMATS)
    assert not refused
    accepted_invalid, rejected_valid, n_valid = check_instances(compiled)
    print(f"\nformats: accepted invalid {len(accepted_invalid)}; rejected valid "
          f"{len(rejected_valid)} of {n_valid}")
    assert accepted_invalid == []
    # the documented subsets still take the plain cases
    assert len(rejected_valid) < n_valid / 4


def test_refusals_name_keyword_and_pointer():
    cases = [
        ({"properties": {"a": {"uniqueItems": True}}}, "uniqueItems", "#/properties/a"),
        ({"$defs": {"x": {"format": "uri"}}, "items": {"$ref": "#/$defs/x"}}, "format",
         "#/$defs/x"),
        ({"anyOf": [{"contains": {}}]}, "contains", "#/anyOf/0"),
        ({"$ref": "https://example.com/other.json"}, "$ref", "#"),
        ({"properties": {"p": {"pattern": "(?=a)"}}}, "pattern", "#/properties/p"),
        ({"oneOf": [{"type": "integer"}, {"minimum": 2}]}, "oneOf", "#"),
        ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
         "$ref", "#/$defs/"),
    ]
    for schema, keyword, pointer in cases:
        with pytest.raises(SchemaError) as info:
            JsonSchema(schema)
        assert info.value.keyword == keyword, (schema, str(info.value))
        assert info.value.pointer.startswith(pointer), (schema, str(info.value))
        assert keyword in str(info.value) and info.value.pointer in str(info.value)


@pytest.fixture(scope="module")
def llama3_vocab():
    from test_json_schema import load_llama3

    return load_llama3()


def generate(constraint, n_vocab, eos, seed, budget):
    constraint.reset()
    rng = np.random.default_rng(seed)
    sampler = Sampler(SamplingParams(seed=seed, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),
                      n_vocab)
    for step in range(budget):
        logits = rng.standard_normal(n_vocab, dtype=np.float32) * 4
        token = sampler.sample(logits, (), constraint.allowed_mask(budget - step))
        if token in eos:
            return constraint.output
        constraint.advance(token)
        if constraint.is_complete() and constraint.allowed_mask(budget - step - 1).sum() == len(eos):
            return constraint.output
    assert constraint.is_complete(), constraint.output
    return constraint.output


@pytest.mark.slow
def test_generated_documents_validate(main_suite, llama3_vocab):
    """Random sampling under every compiled, satisfiable suite schema gives valid documents."""
    _, token_bytes, special = llama3_vocab
    eos = {128001, 128009}
    compiled, _ = main_suite
    checked = 0
    for name, group, schema in compiled:
        if not schema.satisfiable:
            continue
        oracle = jsonschema.Draft202012Validator(group["schema"], format_checker=FORMAT_CHECKER)
        constraint = JsonSchemaConstraint(schema, token_bytes, eos, special)
        budget = max(24, constraint.min_tokens() + 16)
        for seed in range(3):
            text = generate(constraint, len(token_bytes), eos, seed, budget)
            document = json.loads(text)
            assert oracle.is_valid(document), (name, text)
            assert schema.accepts(text), (name, text)
            checked += 1
    print(f"\n{checked} generated documents validate")
    assert checked > 300
