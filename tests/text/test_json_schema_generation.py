"""Constrained generation end to end with the tiny chat model: sampling at temperature 1 always
ends "stop" with a document jsonschema accepts, whatever the budget, and a budget below the
shortest document is refused before any work."""

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edge_runtime.model.model import Model
from edge_runtime.text.schema import BudgetError, JsonSchema
from test_json_schema import oracle_valid

SCHEMAS = [
    {"type": "object", "properties": {
        "device": {"type": "string", "enum": ["light", "fan", "thermostat"]},
        "room": {"type": "string", "maxLength": 12},
        "value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 100}, {"type": "null"}]}},
     "required": ["device", "room"]},
    {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 4},
    {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"],
     "additionalProperties": False},
    {"$defs": {"n": {"type": "object", "properties": {"v": {"type": "number"},
                                                      "next": {"$ref": "#/$defs/n"}},
                     "required": ["v"]}}, "$ref": "#/$defs/n"},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"},
                                      "ip": {"type": "string", "format": "ipv4"}},
     "required": ["when", "ip"], "additionalProperties": False},
]


@pytest.fixture(scope="module")
def model(tiny_chat_model_path):
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=1) as m:
        yield m


@settings(database=None, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(SCHEMAS) - 1), seed=st.integers(0, 2 ** 31),
       extra=st.integers(0, 60), chat=st.booleans())
def test_sampling_always_stops_with_a_valid_document(model, index, seed, extra, chat):
    schema = SCHEMAS[index]
    compiled = JsonSchema(schema)
    probe = model.create_completion("x", max_tokens=400, temperature=1.0, seed=seed,
                                    json_schema=compiled)
    assert probe["choices"][0]["finish_reason"] == "stop"
    # the same again with a budget just above the fewest tokens the schema needs
    from edge_runtime.text.schema import JsonSchemaConstraint

    tok = model.tokenizer
    need = JsonSchemaConstraint(compiled, [tok.token_bytes(i) for i in range(model.n_vocab)],
                                model._end_ids(),
                                [i for i in range(model.n_vocab) if tok.is_control(i)]).min_tokens()
    kw = dict(max_tokens=need + extra, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed,
              json_schema=schema)
    if chat:
        out = model.create_chat_completion([{"role": "user", "content": "report"}], **kw)
        text, finish = out["choices"][0]["message"]["content"], out["choices"][0]["finish_reason"]
    else:
        out = model.create_completion("status:", **kw)
        text, finish = out["choices"][0]["text"], out["choices"][0]["finish_reason"]
    assert finish == "stop", (schema, text)
    assert out["usage"]["completion_tokens"] <= need + extra
    document = json.loads(text)
    assert oracle_valid(schema, document), (schema, text)
    assert compiled.accepts(text)
    assert oracle_valid(schema, json.loads(probe["choices"][0]["text"]))


def test_streaming_under_a_schema_ends_stop(model):
    schema = SCHEMAS[0]
    chunks = list(model.create_completion("x", max_tokens=64, temperature=1.0, seed=3,
                                          json_schema=schema, stream=True))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert oracle_valid(schema, json.loads(text))


def test_a_budget_below_the_shortest_document_is_refused_up_front(model):
    schema = {"type": "object", "properties": {"note": {"type": "string", "minLength": 200}},
              "required": ["note"]}
    with pytest.raises(BudgetError, match="shortest valid document needs"):
        model.create_completion("x", max_tokens=10, json_schema=schema)
    with pytest.raises(BudgetError):
        list(model.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=10,
                                          json_schema=schema, stream=True))
    # the context left counts too
    with Model(model.path, n_ctx=40, n_threads=1) as small:
        with pytest.raises(BudgetError):
            small.create_completion("x", max_tokens=400, json_schema=schema)
    out = model.create_completion("x", max_tokens=400, seed=1, json_schema=schema)
    assert out["choices"][0]["finish_reason"] == "stop"
    assert len(json.loads(out["choices"][0]["text"])["note"]) >= 200
