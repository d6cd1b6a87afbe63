"""Per-token mask cost of JSON-schema constrained decoding, beside llguidance (not a test).

    python tests/bench_json_schema.py [--repeats 3] [--decode [--threads N]] [--suite]

For each schema three compact documents are tokenized with the Llama-3 tokenizer (128,256
tokens, tests/data/llama3-tokenizer.json.xz) and followed token by token; at every position
the token mask is computed as a bit mask over the vocabulary, by edge-runtime
(``JsonSchemaConstraint.allowed_bitmask``) and by llguidance (``fill_next_token_bitmask``,
whitespace-free JSON like ours). Printed per schema: mean / median / p95 microseconds per
token, for the first document (cold: a schema never seen, tables being built) and for the
other documents and repeats (warm: a service answering further requests with that schema). llguidance is a bench-only
dependency (pip install llguidance).

``--decode`` also writes a 2B4T-shaped random model with the Llama-3 tokenizer (about 1.2 GB
in a temporary directory) and reports Python's share of a constrained decode step: the time
in the constraint and the sampler over the whole step.

``--suite`` counts the JSON-Schema-Test-Suite groups (draft 2020-12, tests/text/data) whose
schema compiles, by edge-runtime and by llguidance (a matcher over the Llama-3 vocabulary
without error).
"""
import argparse
import json
import lzma
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "text"))  # the suite and the vocabulary loader of the tests
TOKENIZER = os.path.join(HERE, "data", "llama3-tokenizer.json.xz")
EOS = (128001, 128009)

SCHEMAS = {
    "iot command": (
        {"type": "object", "properties": {
            "device": {"type": "string", "enum": ["light", "fan", "thermostat", "blinds"]},
            "room": {"type": "string", "enum": ["kitchen", "living room", "bedroom", "garage"]},
            "action": {"type": "string", "enum": ["on", "off", "set"]},
            "value": {"type": "integer", "minimum": 0, "maximum": 100}},
         "required": ["device", "room", "action"], "additionalProperties": False},
        [{"device": "thermostat", "room": "living room", "action": "set", "value": 21},
         {"device": "light", "room": "kitchen", "action": "on"},
         {"device": "blinds", "room": "bedroom", "action": "set", "value": 100}]),
    "free text (maxLength 400)": (
        {"type": "object", "properties": {"note": {"type": "string", "maxLength": 400}},
         "required": ["note"], "additionalProperties": False},
        [{"note": "The kitchen light was left on overnight again; the motion sensor in the hall "
                  "saw nobody after 23:10, so an automation could switch it off after ten "
                  "minutes without movement. The fan in the bedroom runs at level 3."},
         {"note": "Garage door opened at 07:42 and closed at 07:45. Nobody home since; the "
                  "heating is in eco mode until 17:30, then comfort, 21.5 degrees."},
         {"note": "Battery of the front door sensor at 12% — replace it this week (CR2032)."}]),
    "pydantic model": (
        {"$defs": {"Address": {"type": "object", "properties": {
            "street": {"type": "string"}, "city": {"type": "string"},
            "zip": {"anyOf": [{"type": "string", "pattern": "^[0-9]{5}$"}, {"type": "null"}]}},
            "required": ["street", "city"]}},
         "type": "object", "properties": {
            "name": {"type": "string", "maxLength": 64},
            "age": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
            "email": {"type": "string", "format": "email"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
            "address": {"$ref": "#/$defs/Address"}},
         "required": ["name", "email", "address"]},
        [{"name": "Ada Lovelace", "age": 36, "email": "ada@example.org",
          "tags": ["math", "engines"], "address": {"street": "12 St James's Square",
                                                  "city": "London", "zip": None}},
         {"name": "Alan Turing", "age": None, "email": "alan@bletchley.uk", "tags": [],
          "address": {"street": "Hollymeade", "city": "Wilmslow", "zip": "12345"}},
         {"name": "Grace Hopper", "email": "grace@navy.mil",
          "address": {"street": "Arlington", "city": "Virginia"}}]),
    "numbers array": (
        {"type": "array", "items": {"type": "number", "minimum": -50, "maximum": 50},
         "minItems": 1, "maxItems": 32},
        [[12.5, -3.25, 0, 41, 7.125, -49.5, 3.14159, 22, 18.75, -0.5, 9],
         [1, 2, 3, -44.25, 17.5, 0.001, 33],
         [-7.75, 48, 19.5, 5, -12.125, 0.5]]),
    "recursive tree": (
        {"type": "object", "properties": {
            "name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
         "required": ["name"], "additionalProperties": False},
        [{"name": "home", "children": [{"name": "kitchen", "children": [{"name": "fridge"}]},
                                       {"name": "garage", "children": []}]},
         {"name": "office", "children": [{"name": "desk"}, {"name": "lamp", "children": [
             {"name": "bulb"}]}]},
         {"name": "garden"}]),
    "formats": (
        {"type": "object", "properties": {
            "id": {"type": "string", "format": "uuid"},
            "at": {"type": "string", "format": "date-time"},
            "ip": {"type": "string", "format": "ipv4"}},
         "required": ["id", "at", "ip"], "additionalProperties": False},
        [{"id": "3f2b8c1e-9a4d-4e7f-b2c1-0d9e8f7a6b5c", "at": "2024-06-01T12:30:00Z",
          "ip": "192.168.1.20"},
         {"id": "00000000-1111-2222-3333-444444444444", "at": "1999-12-31T23:59:59.999+01:00",
          "ip": "10.0.0.1"},
         {"id": "ABCDEF01-2345-6789-abcd-ef0123456789", "at": "2030-02-28T00:00:00Z",
          "ip": "255.255.255.0"}]),
}


def load_vocab():
    """(tokenizer JSON text, tokenizers.Tokenizer, token bytes per id, special ids): Llama-3."""
    from test_json_schema import load_llama3

    return (lzma.open(TOKENIZER).read().decode("utf-8"),) + load_llama3()


def stats(times_us):
    times_us = sorted(times_us)
    p95 = times_us[min(len(times_us) - 1, int(0.95 * len(times_us)))]
    return f"{statistics.mean(times_us):8.1f} {statistics.median(times_us):8.1f} {p95:8.1f}"


def runs(documents, repeats):
    """(run number, tokens): the first document, then every document ``repeats`` times."""
    yield 0, documents[0]
    for r in range(repeats):
        for k, tokens in enumerate(documents):
            if r or k:
                yield 1, tokens


def bench_ours(schema, documents, token_bytes, special, repeats):
    from edge_runtime.text.schema import JsonSchemaConstraint

    cold, warm = [], []
    for run, tokens in runs(documents, repeats):
        c = JsonSchemaConstraint(schema, token_bytes, EOS, special)
        budget = 4 * len(tokens) + 64
        for k, t in enumerate(tokens):
            t0 = time.perf_counter()
            mask = c.allowed_bitmask(budget - k)
            dt = (time.perf_counter() - t0) * 1e6
            assert mask[t >> 5] >> (t & 31) & 1, (k, token_bytes[t])
            (cold if run == 0 else warm).append(dt)
            c.advance(t)
        assert c.is_complete()
    return cold, warm


def bench_llguidance(schema, documents, ll_tokenizer, repeats):
    import llguidance
    import llguidance.numpy as lnp

    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        schema, defaults={"whitespace_flexible": False})
    cold, warm = [], []
    for run, tokens in runs(documents, repeats):
        m = llguidance.LLMatcher(ll_tokenizer, grammar)
        if m.is_error():
            raise RuntimeError(m.get_error())
        bitmask = lnp.allocate_token_bitmask(1, ll_tokenizer.vocab_size)
        for t in tokens:
            t0 = time.perf_counter()
            lnp.fill_next_token_bitmask(m, bitmask)
            dt = (time.perf_counter() - t0) * 1e6
            (cold if run == 0 else warm).append(dt)
            if not m.consume_token(t):
                raise RuntimeError(f"llguidance refused token {t}: {m.get_error()}")
    return cold, warm


def decode_share(text, token_bytes, special, threads):
    """Python's share of constrained decode steps on a 2B4T-shaped random model."""
    from edge_runtime.formats.random_model import write_random_model
    from edge_runtime.model.model import Model
    from edge_runtime.text.sampling import Sampler, SamplingParams
    from edge_runtime.text.schema import JsonSchemaConstraint
    from edge_runtime.text.tokenizer import Tokenizer

    schema = SCHEMAS["free text (maxLength 400)"][0]
    tokenizer = Tokenizer.from_tokenizer_json(json.loads(text), bos_id=128000, eos_id=128001,
                                              eot_id=128009)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "2b4t-shaped.gguf")
        print("writing a 2B4T-shaped random model ...", flush=True)
        write_random_model(path, shape="2b4t", head="q8_0", tokenizer=tokenizer)
        with Model(path, n_ctx=256, n_threads=threads) as m:
            c = JsonSchemaConstraint(schema, token_bytes, EOS, special)
            sampler = Sampler(SamplingParams(seed=0, temperature=1.0), m.n_vocab)
            logits = m._engine.eval([128000, 1, 2, 3], 0)
            out = np.empty(m.n_vocab, dtype=np.float32)
            engine_s = python_s = 0.0
            n = 0
            for pos in range(4, 68):
                t0 = time.perf_counter()
                allowed = c.allowed_mask(300)
                token = sampler.sample(logits, [], allowed)
                if token in EOS:
                    break
                c.advance(token)
                t1 = time.perf_counter()
                logits = m._engine.eval([token], pos, out=out)
                t2 = time.perf_counter()
                if pos > 8:
                    python_s += t1 - t0
                    engine_s += t2 - t1
                    n += 1
        print(f"decode steps: {n}; engine {1e3 * engine_s / n:.1f} ms/token, constraint + sampler "
              f"{1e3 * python_s / n:.2f} ms/token: Python share "
              f"{100 * python_s / (python_s + engine_s):.2f}%")


def suite_counts(text):
    """Groups of the test suite that compile: edge-runtime's and llguidance's."""
    from test_json_schema_suite import MAIN, compile_groups

    compiled, _ = compile_groups(MAIN)
    line = f"JSON-Schema-Test-Suite draft 2020-12: {len(MAIN)} groups; edge-runtime compiles {len(compiled)}"
    try:
        import llguidance
    except ImportError:
        print(line + " (llguidance not installed)")
        return
    ll_tokenizer = llguidance.LLTokenizer(text, eos_token=128009)
    ll_ok = 0
    for _, group in MAIN:
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                group["schema"], defaults={"whitespace_flexible": False})
            ll_ok += not llguidance.LLMatcher(ll_tokenizer, grammar).is_error()
        except Exception:  # llguidance raises on some schemas instead of reporting them
            pass
    print(f"{line}, llguidance {getattr(llguidance, '__version__', '')} compiles {ll_ok}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="warm documents per schema")
    ap.add_argument("--decode", action="store_true", help="also time decode steps on a "
                    "2B4T-shaped random model (writes ~1.2 GB to a temporary directory)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--suite", action="store_true", help="only count the test-suite groups that compile")
    args = ap.parse_args()
    text, tok, token_bytes, special = load_vocab()
    if args.suite:
        suite_counts(text)
        return
    try:
        import llguidance

        ll_tokenizer = llguidance.LLTokenizer(text, eos_token=128009)
    except ImportError:
        ll_tokenizer = None
        print("llguidance not installed: edge-runtime figures only")
    print(f"vocabulary: {len(token_bytes)} tokens; microseconds per token "
          "(mean, median, p95)")
    print(f"{'schema':28s} {'tokens':>6s}  {'edge-runtime cold':>26s}  {'edge-runtime warm':>26s}"
          f"  {'llguidance cold':>26s}  {'llguidance warm':>26s}")
    for name, (schema, documents) in SCHEMAS.items():
        docs = [tok.encode(json.dumps(d, ensure_ascii=False, separators=(",", ":")),
                           add_special_tokens=False).ids for d in documents]
        cold, warm = bench_ours(schema, docs, token_bytes, special, args.repeats)
        line = f"{name:28s} {sum(map(len, docs)):6d}  {stats(cold):>26s}  {stats(warm):>26s}"
        if ll_tokenizer is not None:
            lcold, lwarm = bench_llguidance(schema, docs, ll_tokenizer, args.repeats)
            line += f"  {stats(lcold):>26s}  {stats(lwarm):>26s}"
        print(line, flush=True)
    if args.decode:
        decode_share(text, token_bytes, special, args.threads)


if __name__ == "__main__":
    main()
