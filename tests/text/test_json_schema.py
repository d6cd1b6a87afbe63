"""Tests for edge_runtime.text.json_schema against the real Llama-3 vocabulary (128,256 tokens)."""

import codecs
import itertools
import json
import lzma
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.text.json_schema import JsonSchemaConstraint, check_schema, validate
from edge_runtime.text.sampling import Sampler, SamplingParams

TESTS_DIR = Path(__file__).resolve().parents[1]
LLAMA3_TOKENIZER = TESTS_DIR / "data" / "llama3-tokenizer.json.xz"  # in the repository: never skipped
EOS_IDS = {128001, 128009}


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


@pytest.fixture(scope="module")
def llama3():
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_str(lzma.open(LLAMA3_TOKENIZER).read().decode("utf-8"))
    n_vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    to_byte = gpt2_unicode_to_byte()
    token_bytes = [b""] * n_vocab
    for text, token_id in tokenizer.get_vocab(with_added_tokens=False).items():
        token_bytes[token_id] = bytes(to_byte[ch] for ch in text)
    special = set(tokenizer.get_added_tokens_decoder())
    return tokenizer, token_bytes, special


def make_constraint(schema, llama3):
    _, token_bytes, special = llama3
    return JsonSchemaConstraint(schema, token_bytes, EOS_IDS, special_ids=special)


def token_id(llama3, text: bytes) -> int:
    return llama3[1].index(text)


def feed(constraint, llama3, *pieces: bytes):
    """Advance by the tokens whose bytes are exactly ``pieces``."""
    for piece in pieces:
        constraint.advance(token_id(llama3, piece))


def feed_text(constraint, llama3, text: str):
    """Advance by the tokens the Llama-3 tokenizer makes of ``text``."""
    for token in llama3[0].encode(text, add_special_tokens=False).ids:
        constraint.advance(token)


# -- schemas ----------------------------------------------------------------------------------

IOT_COMMAND = {
    "type": "object",
    "properties": {
        "device": {"type": "string",
                   "enum": ["light", "fan", "thermostat", "blinds", "heater", "door lock"]},
        "room": {"enum": ["kitchen", "living room", "bedroom", "garage", "bathroom"]},
        "action": {"type": "string", "enum": ["on", "off", "set", "toggle", "open", "close"]},
        "value": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["device", "room", "action"],
}

NESTED_STATUS = {
    "type": "object",
    "properties": {
        "device": {"type": "object", "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 16},
            "kind": {"enum": ["sensor", "switch", "dimmer"]},
        }, "required": ["id", "kind"]},
        "state": {"type": "object", "properties": {
            "on": {"type": "boolean"},
            "brightness": {"type": "integer", "minimum": 0, "maximum": 255},
            "mode": {"enum": ["auto", "manual", None, 3]},
        }, "required": ["on"]},
        "uptime_s": {"type": "integer", "minimum": 0},
    },
    "required": ["device", "state", "uptime_s"],
}

BATCH_WITH_ARRAYS = {
    "type": "object",
    "properties": {
        "commands": {"type": "array", "minItems": 1, "maxItems": 4, "items": {
            "type": "object",
            "properties": {
                "device": {"enum": ["light", "fan", "blinds"]},
                "level": {"type": "number", "minimum": -10, "maximum": 40.5},
            },
            "required": ["device", "level"],
        }},
        "tags": {"type": "array", "maxItems": 3,
                 "items": {"type": "string", "maxLength": 12}},
    },
    "required": ["commands"],
}

SENSOR_READING = {
    "title": "reading",
    "type": "object",
    "properties": {
        "sensor": {"type": "string", "maxLength": 24, "description": "free text"},
        "temperature": {"type": "number", "minimum": -40, "maximum": 85},
        "humidity": {"type": "number", "minimum": 0, "maximum": 100},
        "ok": {"type": "boolean"},
        "error": {"type": "null"},
        "unit": {"const": "C"},
        "samples": {"type": "array", "minItems": 2, "maxItems": 3,
                    "items": {"type": "integer", "minimum": -5, "maximum": 5}},
    },
    "required": ["sensor", "temperature", "humidity", "ok", "unit", "samples"],
}

SCHEMAS = {"iot_command": IOT_COMMAND, "nested_status": NESTED_STATUS,
           "batch_with_arrays": BATCH_WITH_ARRAYS, "sensor_reading": SENSOR_READING}
TOKEN_BUDGET = 400
mask_times_ms: list = []


def generate(constraint, n_vocab, seed, budget=TOKEN_BUDGET, params=None):
    """Drive the constraint with random logits; returns (output bytes, tokens used)."""
    constraint.reset()
    rng = np.random.default_rng(seed)
    # Random logits per step: a random window of one long normal draw (cheap to slice).
    noise = rng.standard_normal(2 * n_vocab, dtype=np.float32) * 3
    sampler = Sampler(params or SamplingParams(seed=seed), n_vocab)
    history = []
    for step in range(budget):
        start = time.perf_counter()
        allowed = constraint.allowed_mask()
        mask_times_ms.append((time.perf_counter() - start) * 1e3)
        offset = int(rng.integers(n_vocab))
        token = sampler.sample(noise[offset:offset + n_vocab], history, allowed)
        history.append(token)
        constraint.advance(token)
        if token in EOS_IDS:
            return constraint.output, step + 1
    raise AssertionError(f"seed {seed}: no end of document within {budget} tokens: "
                         f"{constraint.output[:200]!r}")


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_random_logits_always_give_valid_json(name, llama3):
    schema = SCHEMAS[name]
    constraint = make_constraint(schema, llama3)
    lengths = []
    for seed in range(50):
        output, n_tokens = generate(constraint, len(llama3[1]), seed)
        document = json.loads(output)
        assert validate(document, schema) == [], (seed, output)
        assert constraint.is_complete()
        lengths.append(n_tokens)
    times = np.array(mask_times_ms)
    print(f"{name}: {np.mean(lengths):.1f} tokens per document; mask "
          f"mean {times.mean():.2f} ms, p95 {np.percentile(times, 95):.1f} ms, "
          f"max {times.max():.1f} ms")


def test_greedy_and_low_temperature_terminate(llama3):
    constraint = make_constraint(BATCH_WITH_ARRAYS, llama3)
    for params in (SamplingParams(temperature=0.0), SamplingParams(temperature=0.3, seed=4)):
        output, _ = generate(constraint, len(llama3[1]), 4, params=params)
        assert validate(json.loads(output), BATCH_WITH_ARRAYS) == []


def test_top_level_scalars_and_arrays(llama3):
    schemas = [
        {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5},
         "maxItems": 5},
        {"type": "integer", "minimum": 10, "maximum": 99},
        {"type": "number", "minimum": -1, "maximum": 1},
        {"type": "string", "maxLength": 8},
        {"enum": [1, 10, 100, "x"]},
        {"type": "boolean"},
    ]
    for schema in schemas:
        constraint = make_constraint(schema, llama3)
        for seed in range(8):
            output, _ = generate(constraint, len(llama3[1]), seed)
            assert validate(json.loads(output), schema) == [], (schema, output)


# -- masks checked against an independent enumeration of every valid document ----------------

def finite_documents(schema):
    """Every compact document of a finite schema, properties in schema order."""
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return [json.dumps(v, ensure_ascii=False) for v in values]
    kind = schema["type"]
    if kind == "integer":
        return [str(i) for i in range(schema["minimum"], schema["maximum"] + 1)]
    if kind == "boolean":
        return ["true", "false"]
    if kind == "null":
        return ["null"]
    if kind == "array":
        items = finite_documents(schema["items"])
        out = []
        for n in range(schema.get("minItems", 0), schema["maxItems"] + 1):
            out += ["[" + ",".join(combo) + "]" for combo in itertools.product(items, repeat=n)]
        return out
    assert kind == "object"
    required = set(schema.get("required", []))
    choices = []
    for name, sub in schema["properties"].items():
        pairs = [json.dumps(name) + ":" + doc for doc in finite_documents(sub)]
        choices.append(pairs if name in required else pairs + [None])
    return ["{" + ",".join(p for p in combo if p is not None) + "}"
            for combo in itertools.product(*choices)]


FINITE_SCHEMA = {
    "type": "object",
    "properties": {
        "device": {"type": "string", "enum": ["light", "fan", "fancoil"]},
        "on": {"type": "boolean"},
        "level": {"type": "integer", "minimum": 0, "maximum": 30},
        "rooms": {"type": "array", "maxItems": 2, "items": {"enum": ["a", "b", 7]}},
        "note": {"type": "null"},
    },
    "required": ["device", "rooms"],
}


def expected_mask(documents, prefix: bytes, token_bytes, special):
    """A token is allowed iff prefix + token starts some valid document."""
    rest_prefixes = set()
    complete = False
    for doc in documents:
        if doc.startswith(prefix):
            rest = doc[len(prefix):]
            complete |= rest == b""
            rest_prefixes.update(rest[:cut] for cut in range(1, len(rest) + 1))
    mask = np.array([bool(t) and i not in special and t in rest_prefixes
                     for i, t in enumerate(token_bytes)])
    for eos in EOS_IDS:
        mask[eos] = complete
    return mask


def test_masks_equal_brute_force_over_all_documents(llama3):
    _, token_bytes, special = llama3
    documents = [d.encode() for d in finite_documents(FINITE_SCHEMA)]
    assert len(documents) > 5000
    constraint = make_constraint(FINITE_SCHEMA, llama3)
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(4):
        constraint.reset()
        sampler = Sampler(SamplingParams(seed=seed), len(token_bytes))
        while True:
            mask = constraint.allowed_mask()
            want = expected_mask(documents, constraint.output, token_bytes, special)
            wrong = np.flatnonzero(mask != want)
            assert wrong.size == 0, (constraint.output, [(i, token_bytes[i], bool(mask[i]))
                                                         for i in wrong[:8]])
            checked += 1
            token = sampler.sample(rng.standard_normal(len(token_bytes), dtype=np.float32),
                                   (), mask)
            constraint.advance(token)
            if token in EOS_IDS:
                break
        assert constraint.output in documents
    assert checked > 20


def test_free_string_mask_equals_utf8_rule(llama3):
    """Inside an unbounded string: a token without quote or backslash is allowed iff it is
    the start of valid UTF-8 text without control characters."""
    _, token_bytes, special = llama3
    constraint = make_constraint({"type": "object", "properties": {"s": {"type": "string"}},
                                  "required": ["s"]}, llama3)
    feed(constraint, llama3, b'{"', b's', b'":"')
    mask = constraint.allowed_mask()
    for i, token in enumerate(token_bytes):
        if not token or i in special or b'"' in token or b"\\" in token:
            continue
        try:
            text = codecs.getincrementaldecoder("utf-8")().decode(token, final=False)
            want = all(ord(ch) >= 0x20 for ch in text)
        except UnicodeDecodeError:
            want = False
        assert mask[i] == want, (i, token)
    # the string may close with a token that also closes the object
    assert mask[token_id(llama3, b'"}')] and mask[token_id(llama3, b'"')]
    assert not mask[token_id(llama3, b'",')]           # no other property to follow


# -- token boundaries ---------------------------------------------------------------------

def test_tokens_spanning_several_grammar_steps(llama3):
    constraint = make_constraint(IOT_COMMAND, llama3)
    mask = constraint.allowed_mask()
    assert mask[token_id(llama3, b'{"')] and mask[token_id(llama3, b'{')]
    feed(constraint, llama3, b'{"', b'device', b'":"', b'light')
    mask = constraint.allowed_mask()
    assert mask[token_id(llama3, b'","')]               # closes the value, opens the next key
    assert mask[token_id(llama3, b'"')] and not mask[token_id(llama3, b'"}')]  # room required
    feed(constraint, llama3, b'","', b'room', b'":"')
    feed_text(constraint, llama3, 'kitchen')
    feed(constraint, llama3, b'","', b'action', b'":"', b'on')
    mask = constraint.allowed_mask()
    assert mask[token_id(llama3, b'"}')]                # value is optional
    assert mask[token_id(llama3, b'","')]
    feed(constraint, llama3, b'","', b'value', b'":')
    mask = constraint.allowed_mask()
    assert mask[token_id(llama3, b'100')] and mask[token_id(llama3, b'42')]
    assert not mask[token_id(llama3, b'101')] and not mask[token_id(llama3, b'007')]
    assert not mask[token_id(llama3, b'-')]
    feed(constraint, llama3, b'10')
    mask = constraint.allowed_mask()
    assert mask[token_id(llama3, b'0')] and not mask[token_id(llama3, b'1')]
    assert mask[token_id(llama3, b'}')] and not constraint.is_complete()
    feed(constraint, llama3, b'}')
    assert constraint.is_complete()
    mask = constraint.allowed_mask()
    assert set(np.flatnonzero(mask).tolist()) == EOS_IDS
    assert json.loads(constraint.output) == {"device": "light", "room": "kitchen", "action": "on",
                                             "value": 10}


def test_multibyte_characters_split_across_tokens(llama3):
    _, token_bytes, _ = llama3
    constraint = make_constraint({"type": "string", "maxLength": 3}, llama3)
    feed(constraint, llama3, b'"')
    # a token holding only the first two bytes of a three-byte character
    partial = next(i for i, t in enumerate(token_bytes)
                   if len(t) == 2 and 0xE1 <= t[0] <= 0xEC and 0x80 <= t[1] <= 0xBF)
    assert constraint.allowed_mask()[partial]
    constraint.advance(partial)
    allowed = np.flatnonzero(constraint.allowed_mask())
    assert allowed.size > 0
    for i in allowed:
        assert 0x80 <= token_bytes[i][0] <= 0xBF, token_bytes[i]
    assert not constraint.allowed_mask()[token_id(llama3, b'"')]
    # finishing the character counts one; two more fit, then only the closing quote
    constraint.advance(next(i for i in allowed if len(token_bytes[i]) == 1))
    feed(constraint, llama3, b'ab')
    mask = constraint.allowed_mask()
    assert not mask[token_id(llama3, b'c')] and mask[token_id(llama3, b'"')]
    feed(constraint, llama3, b'"')
    text = json.loads(constraint.output)
    assert len(text) == 3 and text.endswith("ab")


def test_escapes_in_strings(llama3):
    constraint = make_constraint({"type": "string"}, llama3)
    feed(constraint, llama3, b'"', b'\\')
    mask = constraint.allowed_mask()
    assert mask[token_id(llama3, b'n')] and mask[token_id(llama3, b'"')]
    assert mask[token_id(llama3, b'u')] and not mask[token_id(llama3, b'x')]
    feed(constraint, llama3, b'u')
    mask = constraint.allowed_mask()
    assert mask[token_id(llama3, b'00')] and mask[token_id(llama3, b'd')]
    assert not mask[token_id(llama3, b'dc')] and not mask[token_id(llama3, b'DA')]  # surrogates
    assert mask[token_id(llama3, b'800')] and not mask[token_id(llama3, b'x')]
    feed(constraint, llama3, b'd')
    mask = constraint.allowed_mask()
    assert mask[token_id(llama3, b'7')] and not mask[token_id(llama3, b'8')]
    feed(constraint, llama3, b'7', b'ff', b'\\n', b'"')
    assert json.loads(constraint.output) == "\ud7ff\n"
    raw_control = make_constraint({"type": "string"}, llama3)
    feed(raw_control, llama3, b'"')
    assert not raw_control.allowed_mask()[token_id(llama3, b'\n')]


def test_number_enum_prefixes_and_top_level_end(llama3):
    constraint = make_constraint({"enum": [1, 10, 100]}, llama3)
    feed(constraint, llama3, b'1')
    assert constraint.is_complete()
    mask = constraint.allowed_mask()
    assert all(mask[e] for e in EOS_IDS) and mask[token_id(llama3, b'0')]
    assert mask[token_id(llama3, b'00')] and not mask[token_id(llama3, b'000')]
    feed(constraint, llama3, b'00')
    assert set(np.flatnonzero(constraint.allowed_mask()).tolist()) == EOS_IDS
    number = make_constraint({"type": "integer"}, llama3)
    feed(number, llama3, b'123')
    assert number.is_complete() and number.allowed_mask()[token_id(llama3, b'456')]
    feed(number, llama3, b'456', b'789', b'012')
    assert set(np.flatnonzero(number.allowed_mask()).tolist()) == EOS_IDS   # 12 digits max


def test_number_ranges_are_enforced_digit_by_digit(llama3):
    constraint = make_constraint({"type": "number", "minimum": -2.5, "maximum": 3.25}, llama3)
    mask = constraint.allowed_mask()
    assert mask[token_id(llama3, b'3')] and not mask[token_id(llama3, b'4')]
    assert not mask[token_id(llama3, b'10')] and mask[token_id(llama3, b'-')]
    feed(constraint, llama3, b'3', b'.')
    mask = constraint.allowed_mask()
    assert mask[token_id(llama3, b'25')] and mask[token_id(llama3, b'2')]
    assert not mask[token_id(llama3, b'26')] and not mask[token_id(llama3, b'3')]
    negative = make_constraint({"type": "number", "minimum": -2.5, "maximum": 3.25}, llama3)
    feed(negative, llama3, b'-')
    mask = negative.allowed_mask()
    assert mask[token_id(llama3, b'2')] and not mask[token_id(llama3, b'3')]
    feed(negative, llama3, b'2', b'.')
    mask = negative.allowed_mask()
    assert mask[token_id(llama3, b'5')] and mask[token_id(llama3, b'49')]
    assert not mask[token_id(llama3, b'51')]


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("schema, message", [
    ({"type": "string", "pattern": "^a"}, "pattern"),
    ({"type": "foo"}, "foo"),
    ({"type": ["string", "null"]}, "unsupported type"),
    ({"type": "array"}, "items"),
    ({"type": "array", "items": [{"type": "string"}]}, r"\$\.items"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "'b'"),
    ({"type": "object", "properties": {"a": {"type": "string", "format": "email"}}},
     r"\$\.properties\.a.*format"),
    ({"type": "object", "additionalProperties": {"type": "string"}}, "additionalProperties"),
    ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum"),
    ({"type": "integer", "minimum": 0.2, "maximum": 0.8}, "no integer"),
    ({"type": "number", "maximum": float("inf")}, "maximum"),
    ({"type": "string", "maxLength": -1}, "maxLength"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 1.5}, "maxItems"),
    ({"enum": []}, "enum"),
    ({"type": "string", "enum": ["a", 1]}, "value 1"),
    ({"type": "integer", "enum": [1, 200], "maximum": 100}, "200"),
    ({"enum": [[1, 2]]}, "unsupported value"),
    ({"anyOf": [{"type": "string"}]}, "anyOf"),
    ({}, "needs 'type'"),
    ("string", "expected an object"),
])
def test_invalid_schemas_are_rejected_with_the_culprit_named(schema, message, llama3):
    with pytest.raises(ValueError, match=message):
        check_schema(schema)
    with pytest.raises(ValueError, match=message):
        make_constraint(schema, llama3)


def test_advance_rejects_forbidden_tokens(llama3):
    constraint = make_constraint(IOT_COMMAND, llama3)
    with pytest.raises(ValueError, match=r"token 58 \(b'\['\) is not allowed after b''"):
        constraint.advance(token_id(llama3, b'['))
    with pytest.raises(ValueError, match="end token"):
        constraint.advance(128009)
    with pytest.raises(ValueError, match="not allowed"):
        constraint.advance(128000)                        # <|begin_of_text|>
    with pytest.raises(ValueError, match="not a token id"):
        constraint.advance(len(llama3[1]))
    feed(constraint, llama3, b'{"')
    with pytest.raises(ValueError, match="not allowed"):
        constraint.advance(token_id(llama3, b'room'))     # device comes first
    assert constraint.output == b'{"'                     # a rejected token changes nothing


def test_mask_and_advance_agree(llama3):
    _, token_bytes, _ = llama3
    constraint = make_constraint(NESTED_STATUS, llama3)
    feed(constraint, llama3, b'{"', b'device', b'":{"', b'id', b'":"')
    mask = constraint.allowed_mask()
    rng = np.random.default_rng(1)
    trial = make_constraint(NESTED_STATUS, llama3)
    for token in rng.choice(len(token_bytes), 400, replace=False).tolist():
        trial.reset()
        feed(trial, llama3, b'{"', b'device', b'":{"', b'id', b'":"')
        try:
            trial.advance(token)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == mask[token], (token, token_bytes[token])


def test_constructor_checks_its_arguments(llama3):
    _, token_bytes, _ = llama3
    with pytest.raises(ValueError, match="eos_ids"):
        JsonSchemaConstraint(IOT_COMMAND, token_bytes, set())
    with pytest.raises(ValueError, match="eos_ids entry 999999"):
        JsonSchemaConstraint(IOT_COMMAND, token_bytes, {999999})
    with pytest.raises(ValueError, match=r"token_bytes\[1\]"):
        JsonSchemaConstraint(IOT_COMMAND, [b"a", "b"], {0})


# -- validator --------------------------------------------------------------------------------

def test_validate_reports_each_problem():
    good = {"device": "fan", "room": "garage", "action": "set", "value": 100}
    assert validate(good, IOT_COMMAND) == []
    assert validate({**good, "value": 100.0}, IOT_COMMAND) == []     # integral float
    cases = [
        ({**good, "value": 101}, "maximum"),
        ({**good, "value": True}, "expected integer"),
        ({**good, "value": 1.5}, "expected integer"),
        ({**good, "device": "oven"}, "not one of"),
        ({"device": "fan", "room": "garage"}, "missing required property 'action'"),
        ({**good, "colour": "red"}, "'colour' is not allowed"),
        ([good], "expected object"),
    ]
    for instance, message in cases:
        errors = validate(instance, IOT_COMMAND)
        assert len(errors) == 1 and message in errors[0], (instance, errors)
    reading = {"sensor": "x" * 25, "temperature": -41, "humidity": 50, "ok": 1, "unit": "F",
               "samples": [6]}
    errors = validate(reading, SENSOR_READING)
    for message in ("longer than maxLength", "less than minimum", "expected boolean",
                    "not the constant", "fewer than minItems", "greater than maximum"):
        assert any(message in e for e in errors), (message, errors)
    assert validate({"mode": 3.0}, {"type": "object", "properties": {"mode": {"enum": [3]}}}) == []
    assert validate(True, {"enum": [1]}) != []
    with pytest.raises(ValueError, match="pattern"):
        validate("x", {"type": "string", "pattern": "x"})


def test_mask_speed_on_free_text(llama3):
    """Free-text strings need a full vocabulary walk per token (no cache hit)."""
    schema = {"type": "object", "properties": {"note": {"type": "string", "maxLength": 400}},
              "required": ["note"]}
    constraint = make_constraint(schema, llama3)
    feed(constraint, llama3, b'{"', b'note', b'":"')
    words = [b'hello', b' world', b',', b' the', b' kitchen', b' light', b' is', b' on']
    times = []
    for word in words * 3:
        start = time.perf_counter()
        mask = constraint.allowed_mask()
        times.append((time.perf_counter() - start) * 1e3)
        assert mask.sum() > 100000
        feed(constraint, llama3, word)
    warm = np.median(times[len(words):])
    print(f"free-text mask: first {times[0]:.1f} ms, median {warm:.1f} ms")
    assert warm < 40        # ~5 ms here; room for a loaded machine


def test_string_fast_path_equals_the_byte_walk(llama3):
    """The plain-text shortcut inside strings must give exactly the byte-walk mask."""
    schema = {"type": "object", "properties": {
        "a": {"type": "string", "minLength": 2, "maxLength": 6},
        "b": {"type": "string"}}, "required": ["a"]}
    constraint = make_constraint(schema, llama3)
    tables = constraint._tables
    feed(constraint, llama3, b'{"', b'a', b'":"')
    checked = 0
    for piece in [b'', b'x', b'\xc3', b'\xa9', b'ab', b'c', b'\\', b'n', b'"', b',"', b'b',
                  b'":"', b'hello', b' world']:
        if piece:
            feed(constraint, llama3, piece)
        sid = tables.automaton.state_id(constraint._stack)
        fast = tables.vocab.walk(tables.automaton, sid, string_fast_path=True)
        slow = tables.vocab.walk(tables.automaton, sid, string_fast_path=False)
        np.testing.assert_array_equal(fast, slow, err_msg=repr(constraint.output))
        checked += int(fast.sum())
    assert checked > 300000


def test_automaton_rebuild_keeps_generation_valid(llama3, monkeypatch):
    """Past the state limit the shared automaton starts over; documents must not notice."""
    from edge_runtime.text import json_schema as module
    monkeypatch.setattr(module, "_MAX_AUTOMATON_STATES", 40)
    schema = {"type": "array", "minItems": 3, "maxItems": 3, "items": BATCH_WITH_ARRAYS}
    constraint = make_constraint(schema, llama3)
    tables = constraint._tables
    first_automaton = tables.automaton
    for seed in range(3):
        output, _ = generate(constraint, len(llama3[1]), seed)
        assert validate(json.loads(output), schema) == []
    assert tables.automaton is not first_automaton
    assert len(tables.automaton.stacks) < 2000


def test_masks_are_cached_per_reusable_state(llama3):
    constraint = make_constraint({"type": "object", "properties": {"s": {"type": "string"}},
                                  "required": ["s"]}, llama3)
    tables = constraint._tables
    feed(constraint, llama3, b'{"', b's', b'":"', b'hello')
    first = constraint.allowed_mask()
    sid = tables.automaton.state_id(constraint._stack)
    assert sid in tables.masks                    # unbounded string: one state, reused
    feed(constraint, llama3, b' world')
    assert tables.automaton.state_id(constraint._stack) == sid
    np.testing.assert_array_equal(constraint.allowed_mask(), first)
    counted = make_constraint({"type": "string", "maxLength": 50}, llama3)
    feed(counted, llama3, b'"', b'hello')
    counted.allowed_mask()
    # per-character-count states are not cached (fast path instead)
    assert counted._tables.automaton.state_id(counted._stack) not in counted._tables.masks
