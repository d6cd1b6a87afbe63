"""Text generation through Model on a tiny random-weight model with a real BPE tokenizer: sampling
with seeds, stop strings, limits, streaming, chat KV reuse, context overflow, JSON-constrained output.
The model's text is noise; what is tested is the machinery around it."""
import json

import numpy as np
import pytest

from edge_runtime.text.chat_format import ROLE_HEADERS
from edge_runtime.text.json_schema import validate
from edge_runtime.model.model import ContextOverflowError, Model

COMMAND_SCHEMA = {
    "type": "object",
    "properties": {
        "device": {"type": "string", "enum": ["light", "fan", "thermostat", "blinds", "garage_door"]},
        "room": {"type": "string", "enum": ["kitchen", "living room", "bedroom", "garage"]},
        "action": {"type": "string", "enum": ["on", "off", "set", "query"]},
        "value": {"type": "integer", "minimum": 0, "maximum": 100},
        "confirm": {"type": "boolean"},
    },
    "required": ["device", "room", "action"],
}


@pytest.fixture(scope="module")
def model(tiny_chat_model_path):
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=1) as m:
        yield m


def text_of(out):
    return out["choices"][0]["text"]


def test_same_seed_same_text_and_seeds_differ(model):
    a = model.create_completion("Hello", max_tokens=24, temperature=0.9, seed=7)
    b = model.create_completion("Hello", max_tokens=24, temperature=0.9, seed=7)
    assert text_of(a) == text_of(b)
    others = {text_of(model.create_completion("Hello", max_tokens=24, temperature=0.9, seed=s)) for s in range(8, 12)}
    assert len(others | {text_of(a)}) > 1


def test_greedy_follows_argmax_of_the_logits(model):
    prompt = model.tokenize(b"The quick brown fox")
    out = model.create_completion(prompt, max_tokens=12, temperature=0.0, repeat_penalty=1.0)
    seq = list(prompt)
    expected = []
    end = {model.tokenizer.eos_id, model.tokenizer.eot_id}
    for _ in range(12):
        nxt = int(np.argmax(model.eval_logits(seq)[-1]))
        if nxt in end:
            break
        expected.append(nxt)
        seq.append(nxt)
    assert text_of(out) == model.detokenize(expected).decode("utf-8", errors="replace")


def test_max_tokens_and_usage(model):
    out = model.create_completion("Once", max_tokens=5, temperature=0.0, repeat_penalty=1.0, stop=None)
    usage = out["usage"]
    assert usage["prompt_tokens"] == len(model.tokenize(b"Once"))
    assert usage["completion_tokens"] <= 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if out["choices"][0]["finish_reason"] == "length":
        assert usage["completion_tokens"] == 5
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    t = out["timings"]
    assert t["prompt_tok_s"] > 0 and "decode_tok_s" in t and "ttft_ms" in t


def test_stop_string_cuts_the_text(model):
    base = None
    for seed in range(20):
        full = text_of(model.create_completion("Hi", max_tokens=40, temperature=1.0, seed=seed, min_p=0.0))
        if len(full) >= 12:
            base, used = full, seed
            break
    assert base is not None
    stop = base[6:9]
    want = base[: base.index(stop)]
    out = model.create_completion("Hi", max_tokens=40, temperature=1.0, seed=used, min_p=0.0, stop=[stop, "\x00never"])
    assert text_of(out) == want
    assert out["choices"][0]["finish_reason"] == "stop"


def test_stream_concatenates_to_the_same_text(model):
    full = model.create_completion("Stream", max_tokens=30, temperature=0.8, seed=3)
    chunks = list(model.create_completion("Stream", max_tokens=30, temperature=0.8, seed=3, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == text_of(full)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == full["usage"]


def test_chat_shapes_and_stream(model):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    out = model.create_chat_completion(msgs, max_tokens=8, seed=1)
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["role"] == "assistant"
    chunks = list(model.create_chat_completion(msgs, max_tokens=8, seed=1, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == out["choices"][0]["message"]["content"]
    with pytest.raises(ValueError):
        model.create_chat_completion([{"role": "robot", "content": "x"}])


def test_second_chat_turn_evaluates_only_the_new_tokens(model):
    tok = model.tokenizer
    msgs = [{"role": "user", "content": "turn the fan on"}]
    model.reset()
    first = model.create_chat_completion(msgs, max_tokens=60, seed=2, json_schema=COMMAND_SCHEMA)
    assert first["choices"][0]["finish_reason"] == "stop"
    assert model.last_eval_tokens == first["usage"]["prompt_tokens"]  # a new conversation: all of it
    msgs += [first["choices"][0]["message"], {"role": "user", "content": "and the light"}]
    model.create_chat_completion(msgs, max_tokens=4, seed=2)
    new_tokens = ([tok.eot_id] + tok.encode(ROLE_HEADERS["user"]) + tok.encode("and the light") + [tok.eot_id]
                  + tok.encode(ROLE_HEADERS["assistant"]))
    # a JSON reply stops as soon as the document is complete, without a forward pass for its last
    # token: that one token of the old reply may be evaluated with the new turn
    assert len(new_tokens) <= model.last_eval_tokens <= len(new_tokens) + 1


def test_context_overflow_is_an_error_unless_truncation_is_asked(tiny_chat_model_path):
    with Model(tiny_chat_model_path, n_ctx=32, n_threads=1) as m:
        long_prompt = "word " * 100
        with pytest.raises(ContextOverflowError, match="does not fit the context of 32"):
            m.create_completion(long_prompt, max_tokens=4)
        out = m.create_completion(long_prompt, max_tokens=4, truncate=True, seed=0)
        assert out["usage"]["prompt_tokens"] < 32
        # generation that reaches the end of the context stops with "length"
        out = m.create_completion("hi", max_tokens=100, temperature=0.0, repeat_penalty=1.0)
        assert out["usage"]["total_tokens"] <= 33


def test_json_schema_output_always_parses_and_validates(model):
    bad = []
    for seed in range(50):
        out = model.create_completion("command:", max_tokens=80, temperature=1.0, seed=seed,
                                      json_schema=COMMAND_SCHEMA)
        text = text_of(out)
        try:
            errors = validate(json.loads(text), COMMAND_SCHEMA)
        except ValueError as exc:
            errors = [str(exc)]
        if errors or out["choices"][0]["finish_reason"] != "stop":
            bad.append((seed, text, errors))
    assert not bad, bad[:3]


def test_bad_arguments_are_clear_errors(model):
    with pytest.raises(ValueError, match="max_tokens"):
        model.create_completion("x", max_tokens=-1)
    with pytest.raises(ValueError):
        model.create_completion("x", temperature=-1.0)
    with pytest.raises(TypeError, match="prompt must be"):
        model.create_completion(12345)
    with pytest.raises(ValueError, match="empty"):
        model.create_completion([])
    with pytest.raises(ValueError, match="UTF-8|utf-8|offset"):
        model.tokenize(b"\xff\xfe bad")


def test_cancel_from_another_thread_stops_within_a_token(model):
    import threading

    schema = {"type": "object", "properties": {"note": {"type": "string", "maxLength": 400}}, "required": ["note"]}
    stream = model.create_completion("x", max_tokens=400, seed=1, json_schema=schema, stream=True)
    n = 0
    for chunk in stream:
        n += 1
        if n == 5:
            threading.Thread(target=model.cancel).start()
        if chunk["choices"][0]["finish_reason"] is not None:
            assert chunk["choices"][0]["finish_reason"] == "cancelled"
            break
    assert n < 20
    # the next request is not affected
    assert model.create_completion("y", max_tokens=3, seed=1)["choices"][0]["finish_reason"] in ("length", "stop")
