"""Token masks of JsonSchemaConstraint over the real Llama-3 vocabulary (128,256 tokens): exact
against brute force, budgets that never strand a document, shared tables, and generated
documents (pydantic models, recursive and random schemas) that jsonschema accepts."""

import copy
import enum
import itertools
import json
from typing import Literal, Optional, Union

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edge_runtime.text.sampling import Sampler, SamplingParams
from edge_runtime.text.schema import BudgetError, JsonSchema, JsonSchemaConstraint
from edge_runtime.text.schema.tables import SchemaTables, vocabulary_for
from test_json_schema import load_llama3, oracle_valid

EOS = {128001, 128009}


_LLAMA3 = []


def llama3_vocab():
    if not _LLAMA3:
        _LLAMA3.append(load_llama3())
    return _LLAMA3[0]


@pytest.fixture(scope="module")
def llama3():
    return llama3_vocab()


def make(schema, llama3):
    return JsonSchemaConstraint(schema, llama3[1], EOS, llama3[2])


def tid(llama3, text: bytes) -> int:
    return llama3[1].index(text)


def feed(c, llama3, *pieces: bytes):
    for piece in pieces:
        c.advance(tid(llama3, piece))


def allowed(mask) -> set:
    return set(np.flatnonzero(mask).tolist())


def generate(c, n_vocab, seed, budget, temperature=1.0):
    """Random logits; returns the document. Fails if the budget is not kept."""
    c.reset()
    rng = np.random.default_rng(seed)
    sampler = Sampler(SamplingParams(seed=seed, temperature=temperature, top_k=0, top_p=1.0,
                                     min_p=0.0), n_vocab)
    for step in range(budget):
        mask = c.allowed_mask(budget - step)
        assert mask.any(), (seed, c.output)
        token = sampler.sample(rng.standard_normal(n_vocab, dtype=np.float32) * 4, (), mask)
        if token in EOS:
            return c.output
        c.advance(token)
        if c.is_complete() and allowed(c.allowed_mask(budget - step - 1)) <= EOS:
            return c.output
    assert c.is_complete(), (seed, c.output)
    return c.output


# -- exact masks ---------------------------------------------------------------------------------

FINITE = {"type": "object", "additionalProperties": False, "required": ["device", "rooms"],
          "properties": {"device": {"enum": ["light", "fan", "fancoil"]},
                         "on": {"type": "boolean"},
                         "level": {"type": "integer", "minimum": 0, "maximum": 4},
                         "rooms": {"type": "array", "maxItems": 2, "items": {"enum": ["a", 7]}}}}


def finite_documents():
    """Every document of FINITE: properties in any order, an integral enum number also as N.0."""
    values = {"device": ['"light"', '"fan"', '"fancoil"'], "on": ["true", "false"],
              "level": [str(i) for i in range(5)],
              "rooms": ["[" + ",".join(c) + "]" for n in range(3)
                        for c in itertools.product(['"a"', "7", "7.0"], repeat=n)]}
    docs = set()
    for extra in itertools.chain.from_iterable(itertools.combinations(["on", "level"], k)
                                               for k in range(3)):
        names = ["device", "rooms", *extra]
        for order in itertools.permutations(names):
            for combo in itertools.product(*(values[n] for n in order)):
                docs.add("{" + ",".join(f'"{n}":{v}' for n, v in zip(order, combo)) + "}")
    return [d.encode() for d in docs]


def test_masks_equal_brute_force_over_all_documents(llama3):
    _, token_bytes, special = llama3
    documents = finite_documents()
    assert len(documents) > 5000
    prefixes = {}
    for doc in documents:
        for cut in range(len(doc) + 1):
            prefixes.setdefault(doc[:cut], []).append(doc)
    c = make(FINITE, llama3)
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(6):
        c.reset()
        sampler = Sampler(SamplingParams(seed=seed), len(token_bytes))
        while True:
            mask = c.allowed_mask()
            out = c.output
            rests = {d[len(out):] for d in prefixes[out]}
            starts = {r[:k] for r in rests for k in range(1, min(len(r), 128) + 1)}
            want = {i for i, t in enumerate(token_bytes) if t in starts and i not in special}
            if b"" in rests:
                want |= EOS
            assert allowed(mask) == want, (out, sorted(allowed(mask) ^ want)[:8])
            checked += 1
            token = sampler.sample(rng.standard_normal(len(token_bytes), dtype=np.float32), (),
                                   mask)
            if token in EOS:
                break
            c.advance(token)
        assert c.output in documents
    assert checked > 40


def test_mask_and_advance_agree(llama3):
    _, token_bytes, _ = llama3
    schema = {"type": "object", "properties": {"id": {"type": "string", "maxLength": 16},
                                               "n": {"type": "number"}}, "required": ["id"]}
    c = make(schema, llama3)
    feed(c, llama3, b'{"', b'id', b'":"')
    mask = c.allowed_mask()
    rng = np.random.default_rng(1)
    for token in rng.choice(len(token_bytes), 500, replace=False).tolist():
        trial = make(schema, llama3)
        feed(trial, llama3, b'{"', b'id', b'":"')
        try:
            trial.advance(token)
            ok = True
        except ValueError:
            ok = False
        # the mask may only be stricter where the budget or a dead end forbids; here neither
        assert ok == mask[token], (token, token_bytes[token])


def test_string_fast_path_equals_the_full_walk(llama3):
    """The plain-text shortcut inside strings gives exactly the trie-walk mask."""
    schema = {"type": "object", "additionalProperties": False, "required": ["a"],
              "properties": {"a": {"type": "string", "minLength": 2, "maxLength": 6},
                             "b": {"type": "string"}}}
    c = make(schema, llama3)
    tables = c._tables
    slow_vocab = copy.copy(tables.vocab)
    slow_vocab.all_bytes = False               # disables the shortcut
    slow = SchemaTables(tables.automaton, slow_vocab)
    feed(c, llama3, b'{"', b'a', b'":"')
    checked = 0
    for piece in [b'', b'x', b'\xc3', b'\xa9', b'ab', b'c', b'\\', b'n', b'"', b',"', b'b',
                  b'":"', b'hello', b' world']:
        if piece:
            feed(c, llama3, piece)
        for remaining in (None, 40, 6, 3):
            fast_mask = tables.mask(c._state, remaining)
            np.testing.assert_array_equal(fast_mask, slow.mask(c._state, remaining),
                                          err_msg=repr((c.output, remaining)))
            checked += int(sum(bin(int(w)).count("1") for w in fast_mask[:64]))
    assert tables.automaton.fast[c._state] is not None
    assert checked > 100


def test_free_string_mask_is_the_utf8_rule(llama3):
    """Inside an unbounded string a token without quote or backslash is allowed iff it is the
    start of UTF-8 text without control characters."""
    import codecs

    _, token_bytes, special = llama3
    c = make({"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"],
              "additionalProperties": False}, llama3)
    feed(c, llama3, b'{"', b's', b'":"')
    mask = c.allowed_mask()
    for i, t in enumerate(token_bytes):
        if not t or i in special or b'"' in t or b"\\" in t:
            continue
        try:
            text = codecs.getincrementaldecoder("utf-8")().decode(t, final=False)
            want = all(ord(ch) >= 0x20 for ch in text)
        except UnicodeDecodeError:
            want = False
        assert mask[i] == want, (i, t)
    assert mask[tid(llama3, b'"}')] and mask[tid(llama3, b'"')]
    assert not mask[tid(llama3, b'",')]                  # no other property may follow


def test_tokens_spanning_grammar_steps_and_numbers(llama3):
    schema = {"type": "object", "additionalProperties": False, "required": ["device", "action"],
              "properties": {"device": {"enum": ["light", "fan"]},
                             "action": {"enum": ["on", "off"]},
                             "value": {"type": "integer", "minimum": 0, "maximum": 100}}}
    c = make(schema, llama3)
    assert c.allowed_mask()[tid(llama3, b'{"')]
    feed(c, llama3, b'{"')
    mask = c.allowed_mask()
    assert mask[tid(llama3, b'device')] and mask[tid(llama3, b'value')]
    assert not mask[tid(llama3, b'room')]
    feed(c, llama3, b'value', b'":')
    mask = c.allowed_mask()
    assert mask[tid(llama3, b'100')] and mask[tid(llama3, b'42')]
    assert not mask[tid(llama3, b'101')] and not mask[tid(llama3, b'007')]
    assert not mask[tid(llama3, b'-')]
    feed(c, llama3, b'10')
    mask = c.allowed_mask()
    assert mask[tid(llama3, b'0')] and not mask[tid(llama3, b'1')]
    assert mask[tid(llama3, b',"')] and not mask[tid(llama3, b'}')]   # device, action missing
    feed(c, llama3, b',"', b'action', b'":"', b'on', b'","', b'device', b'":"', b'fan', b'"}')
    assert c.is_complete() and allowed(c.allowed_mask()) == EOS
    assert json.loads(c.output) == {"value": 10, "action": "on", "device": "fan"}


def test_multibyte_characters_split_across_tokens(llama3):
    _, token_bytes, _ = llama3
    c = make({"type": "string", "maxLength": 3}, llama3)
    feed(c, llama3, b'"')
    partial = next(i for i, t in enumerate(token_bytes)
                   if len(t) == 2 and 0xE1 <= t[0] <= 0xEC and 0x80 <= t[1] <= 0xBF)
    assert c.allowed_mask()[partial]
    c.advance(partial)
    nxt = np.flatnonzero(c.allowed_mask())
    assert nxt.size and all(0x80 <= token_bytes[i][0] <= 0xBF for i in nxt)
    c.advance(next(i for i in nxt if len(token_bytes[i]) == 1))
    feed(c, llama3, b'ab')
    mask = c.allowed_mask()
    assert not mask[tid(llama3, b'c')] and mask[tid(llama3, b'"')]
    feed(c, llama3, b'"')
    assert len(json.loads(c.output)) == 3


def test_advance_rejects_forbidden_tokens(llama3):
    c = make({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
             llama3)
    with pytest.raises(ValueError, match=r"token 58 \(b'\['\) is not allowed after b''"):
        c.advance(tid(llama3, b'['))
    with pytest.raises(ValueError, match="end token"):
        c.advance(128009)
    with pytest.raises(ValueError, match="not allowed"):
        c.advance(128000)
    with pytest.raises(ValueError, match="not a token id"):
        c.advance(len(llama3[1]))
    feed(c, llama3, b'{"')
    assert c.output == b'{"'


def test_constructor_checks_its_arguments(llama3):
    _, token_bytes, _ = llama3
    with pytest.raises(ValueError, match="eos_ids"):
        JsonSchemaConstraint({}, token_bytes, set())
    with pytest.raises(ValueError, match="eos_ids entry 999999"):
        JsonSchemaConstraint({}, token_bytes, {999999})
    with pytest.raises(ValueError, match=r"token_bytes\[1\]"):
        JsonSchemaConstraint({}, [b"a", "b"], {0})
    with pytest.raises(ValueError, match="no JSON document"):
        JsonSchemaConstraint(False, token_bytes, EOS)


def test_tables_are_shared_across_requests_and_equal_vocabularies(llama3):
    _, token_bytes, special = llama3
    schema = {"type": "array", "items": {"type": "integer"}}
    a, b = make(schema, llama3), make(dict(schema), llama3)
    assert a._tables is b._tables
    other_list = list(token_bytes)              # another model with the same vocabulary
    c = JsonSchemaConstraint(schema, other_list, EOS, special)
    assert c._tables is a._tables
    assert vocabulary_for(other_list, EOS, special) is a._vocab
    a.allowed_bitmask()
    assert len(a._tables._masks) >= 1 and b.allowed_bitmask() is a.allowed_bitmask()


# -- budgets -------------------------------------------------------------------------------------

BUDGET_SCHEMAS = [
    {"type": "object", "properties": {"note": {"type": "string", "minLength": 40, "maxLength": 60},
                                      "n": {"type": "integer", "minimum": 1000}},
     "required": ["note", "n"]},
    {"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "string", "format": "uuid"}}, "required": ["id"]}, "minItems": 2},
    {"type": "object", "minProperties": 3, "additionalProperties": {"type": "boolean"}},
    {"$defs": {"t": {"type": "object", "properties": {"k": {"type": "array", "items":
                                                            {"$ref": "#/$defs/t"}}}}},
     "$ref": "#/$defs/t"},
]


@pytest.mark.parametrize("schema", BUDGET_SCHEMAS)
def test_tight_budgets_always_finish(schema, llama3):
    c = make(schema, llama3)
    need = c.min_tokens()
    assert 0 < need < 200
    for extra in range(0, 8, 2):
        for seed in range(6):
            doc = generate(c, len(llama3[1]), seed * 31 + extra, need + extra)
            assert oracle_valid(schema, json.loads(doc)), doc
    with pytest.raises(BudgetError, match=f"needs {need} tokens, but only {need - 1}"):
        c.reset()
        c.check_budget(need - 1)
    c.check_budget(need)


@settings(database=None, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(BUDGET_SCHEMAS) - 1), extra=st.integers(0, 30),
       seed=st.integers(0, 2 ** 32 - 1))
def test_any_budget_at_or_above_the_need_finishes(index, extra, seed):
    llama3 = llama3_vocab()
    schema = BUDGET_SCHEMAS[index]
    c = make(schema, llama3)
    doc = generate(c, len(llama3[1]), seed, c.min_tokens() + extra)
    assert oracle_valid(schema, json.loads(doc))


# -- generated documents -------------------------------------------------------------------------

def pydantic_schemas():
    pydantic = pytest.importorskip("pydantic")
    from pydantic import BaseModel, Field

    class Color(str, enum.Enum):
        red = "red"
        green = "green"

    class Address(BaseModel):
        street: str = Field(max_length=40)
        zip: Optional[str] = Field(default=None, pattern=r"^[0-9]{5}$")

    class Cat(BaseModel):
        kind: Literal["cat"]
        lives: int = Field(ge=0, le=9)

    class Dog(BaseModel):
        kind: Literal["dog"]
        good: bool = True

    class Person(BaseModel):
        name: str
        age: Optional[int] = Field(default=None, ge=0)
        color: Color = Color.red
        tags: list[str] = Field(default_factory=list, max_length=4)
        address: Address
        pets: list[Union[Cat, Dog]] = Field(default_factory=list, max_length=3)
        pet: Union[Cat, Dog] = Field(discriminator="kind")
        scores: dict[str, float] = Field(default_factory=dict)

    class Tree(BaseModel):
        label: str
        children: list["Tree"] = Field(default_factory=list, max_length=3)

    return [(Person, Person.model_json_schema()), (Tree, Tree.model_json_schema()),
            (Address, Address.model_json_schema())], pydantic


def test_pydantic_models_compile_and_generate_valid_instances(llama3):
    models, pydantic = pydantic_schemas()
    for model, schema in models:
        c = make(schema, llama3)
        for seed in range(4):
            doc = generate(c, len(llama3[1]), seed, c.min_tokens() + 80)
            assert oracle_valid(schema, json.loads(doc)), doc
            model.model_validate_json(doc)             # and pydantic agrees


RECURSIVE = [
    {"$defs": {"json": {"anyOf": [{"type": ["null", "boolean", "number", "string"]},
                                  {"type": "array", "items": {"$ref": "#/$defs/json"}},
                                  {"type": "object",
                                   "additionalProperties": {"$ref": "#/$defs/json"}}]}},
     "$ref": "#/$defs/json"},
    {"$defs": {"even": {"type": "array", "items": {"$ref": "#/$defs/odd"}, "maxItems": 1},
               "odd": {"type": "array", "items": {"$ref": "#/$defs/even"}, "minItems": 1,
                       "maxItems": 1}},
     "$ref": "#/$defs/even"},
]


@pytest.mark.parametrize("schema", RECURSIVE)
def test_recursive_schemas_generate_valid_documents(schema, llama3):
    c = make(schema, llama3)
    compiled = JsonSchema(schema)
    for seed in range(8):
        doc = generate(c, len(llama3[1]), seed, 60)
        assert oracle_valid(schema, json.loads(doc)) and compiled.accepts(doc), doc
    if "even" in schema["$defs"]:
        assert compiled.accepts("[[[]]]") and not compiled.accepts("[[]]")
        assert not compiled.accepts("[[[[]]]]")


def leaf_schemas():
    return st.one_of(
        st.just({"type": "boolean"}), st.just({"type": "null"}), st.just({}),
        st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
                  st.integers(-500, 500), st.integers(0, 2000)),
        st.builds(lambda m: {"type": "number", "multipleOf": m}, st.sampled_from([0.5, 0.1, 3])),
        st.builds(lambda a, b: {"type": "string", "minLength": a, "maxLength": a + b},
                  st.integers(0, 6), st.integers(0, 20)),
        st.sampled_from([{"type": "string", "format": f} for f in
                         ["date", "time", "date-time", "uuid", "email", "ipv4", "ipv6"]]),
        st.just({"type": "string", "pattern": "^[a-z]{2,4}-[0-9]+$"}),
        st.lists(st.one_of(st.integers(-9, 99), st.text(max_size=4), st.none()), min_size=1,
                 max_size=4, unique_by=lambda v: (type(v).__name__, v)).map(lambda v: {"enum": v}),
    )


def grow(children):
    names = st.sampled_from(["a", "b", "id", "x-y", "é", "long_name"])
    return st.one_of(
        st.builds(lambda it, lo: {"type": "array", "items": it, "minItems": lo, "maxItems": lo + 3},
                  children, st.integers(0, 2)),
        st.builds(lambda props, req, extra: {
            "type": "object", "properties": props, "required": sorted(set(req) & set(props)),
            **({} if extra is None else {"additionalProperties": extra})},
            st.dictionaries(names, children, max_size=3), st.lists(names, max_size=3),
            st.sampled_from([None, False, {"type": "integer"}])),
        st.builds(lambda a, b: {"anyOf": [a, b]}, children, children),
        st.builds(lambda a: {"anyOf": [a, {"type": "null"}]}, children),
    )


@settings(database=None, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=st.recursive(leaf_schemas(), grow, max_leaves=6), seed=st.integers(0, 10 ** 6))
def test_random_schemas_generate_documents_jsonschema_accepts(schema, seed):
    llama3 = llama3_vocab()
    compiled = JsonSchema(schema)
    if not compiled.satisfiable:
        return
    c = make(compiled, llama3)
    doc = generate(c, len(llama3[1]), seed, c.min_tokens() + 40)
    assert oracle_valid(schema, json.loads(doc)), (schema, doc)
    assert compiled.accepts(doc)
