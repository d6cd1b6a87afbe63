"""The transport-free pieces of serving: request parsing and validation, reply encoding, the
service's admission (queue 0), duplicate ids and cancels by reply key, topic filters, fleet claims."""
import json
import math
import threading

import pytest

from edge_runtime.serve.fleet import FleetClaims, claim_key
from edge_runtime.serve.protocol import (MAX_DEPTH, NUMBER_RANGES, GenerationRequest, Limits, RequestError,
                                         check_structure, dumps, encode_reply, parse_request, usable_id)
from edge_runtime.serve.topics import topic_matches


def refused(obj, limits=Limits()):
    with pytest.raises(RequestError) as info:
        parse_request(obj, limits)
    return info.value


def test_every_numeric_field_has_a_range_checked_at_parse_time():
    outside = {"max_tokens": [0, 1025], "temperature": [-0.1, 10.5, math.nan, math.inf], "top_k": [-1, 1 << 21],
               "top_p": [0, 1.01], "min_p": [-0.01, 1.5], "repeat_penalty": [0, 11],
               "presence_penalty": [-1e308, 2.5, math.nan], "frequency_penalty": [-2.01, math.inf],
               "seed": [-1, 2 ** 64]}
    assert set(outside) == set(NUMBER_RANGES)
    for field, values in outside.items():
        for value in values:
            err = refused({"id": 1, "prompt": "x", field: value})
            assert err.code == "bad_request" and err.request_id == 1 and field in err.message, (field, value)
    inside = {"max_tokens": 1024, "temperature": 0, "top_k": 0, "top_p": 1, "min_p": 0, "repeat_penalty": 10,
              "presence_penalty": -2, "frequency_penalty": 2, "seed": 2 ** 64 - 1}
    req = parse_request({"id": 1, "prompt": "x", **inside})
    assert req.options == inside
    for field in ("top_k", "seed", "max_tokens"):
        assert "integer" in refused({"id": 1, "prompt": "x", field: 1.5}).message


def test_lone_surrogates_anywhere_are_refused_and_the_id_is_kept_when_usable():
    err = refused({"id": "\ud800", "prompt": "hi"})
    assert err.request_id is None and "lone surrogate" in err.message and "\\ud800" in err.message
    for where in ({"prompt": "a\udc00"}, {"messages": [{"role": "user", "content": "\ud83d"}]},
                  {"prompt": "x", "stop": ["\udfff"]},
                  {"prompt": "x", "json_schema": {"type": "object", "properties": {"\ud800": {}}}}):
        err = refused({"id": "s1", **where})
        assert err.request_id == "s1" and "lone surrogate" in err.message, where
    assert usable_id("\ud800") is None and usable_id("ok") == "ok" and usable_id(2 ** 63) is None


def test_nesting_is_bounded_without_recursion():
    deep = {}
    for _ in range(100000):   # far deeper than the interpreter's recursion limit
        deep = {"not": deep}
    err = refused({"id": 3, "prompt": "x", "json_schema": deep})
    assert err.request_id == 3 and f"more than {MAX_DEPTH} levels" in err.message
    assert check_structure({"a": [[[1]]]}) is None


def test_stream_default_is_the_transports_choice():
    assert parse_request({"id": 1, "prompt": "x"}).stream is True
    assert parse_request({"id": 1, "prompt": "x"}, stream_default=False).stream is False
    assert parse_request({"id": 1, "prompt": "x", "stream": True}, stream_default=False).stream is True


def test_replies_always_encode():
    good = encode_reply({"id": 1, "text": "caf\u00e9 \u0085 \ufffe"})
    assert json.loads(good)["text"] == "caf\u00e9 \u0085 \ufffe" and b"\\u0085" in good and b"\\ufffe" in good
    bad = json.loads(encode_reply({"id": 9, "done": True, "text": "x\ud800"}))
    assert bad["id"] == 9 and bad["error"]["code"] == "internal"
    nan = json.loads(encode_reply({"id": "n", "timings": {"x": math.nan}}))
    assert nan["error"]["code"] == "internal"
    assert dumps({"t": "\U0001fffe"}) == '{"t":"\\ud83f\\udffe"}'


def test_topic_filters():
    assert topic_matches("edge/reply/#", "edge/reply") and topic_matches("edge/reply/#", "edge/reply/a/b")
    assert topic_matches("a/+/c", "a/b/c") and not topic_matches("a/+/c", "a/b/c/d")
    assert not topic_matches("edge/reply/#", "edge/replyx") and topic_matches("#", "anything/at/all")


def test_fleet_claims_first_claim_wins_everywhere():
    clock = [0.0]
    a, b = (FleetClaims(d, wait_s=5, window_s=600, clock=lambda: clock[0]) for d in ("a", "b"))
    key = claim_key("edge/fleet/response/j1", "j1")
    kind, claim_a = a.propose(key, "fp1", "req-at-a")
    assert kind == "claim"
    kind, claim_b = b.propose(key, "fp1", "req-at-b")
    assert kind == "claim"
    # the broker delivers a's claim first to both boards, then b's
    for board in (a, b):
        outcomes = [board.on_claim(claim_a), board.on_claim(claim_b)]
        if board is a:
            assert outcomes == [("req-at-a", "serve"), None]
        else:
            assert outcomes == [("req-at-b", "lost", "a", True), None]
    assert b.propose(key, "fp2", "later")[0:3] == ("claimed", "a", False)     # another request, same id
    assert b.propose(key, "fp1", "retry")[0:3] == ("claimed", "a", True)      # the same request again
    clock[0] = 601.0
    assert b.propose(key, "fp1", "much later")[0] == "claim", "claims are remembered for the window only"
    clock[0] = 607.0
    assert b.overdue() == ["much later"] and b.waiting == 0
    with pytest.raises(ValueError):
        a.on_claim({"key": "nope"})


# ---------------------------------------------------------------------------------------------
# the service, on a real (tiny) model

# no end before 2000 characters (about 670 tiny-tokenizer tokens, within the budget)
LONG = {"json_schema": {"type": "string", "minLength": 2000, "maxLength": 5000}, "max_tokens": 1000}


class Ctx:
    def __init__(self, key):
        self.reply_key = key


def _request(rid, key, **options):
    req = parse_request({"id": rid, "prompt": "hello", **options})
    req.context = Ctx(key)
    return req


@pytest.fixture(scope="module")
def tiny_model(tiny_chat_model_path):
    from edge_runtime.model.model import Model

    model = Model(tiny_chat_model_path, n_threads=1)
    yield model
    model.close()


def test_queue_0_refuses_while_one_runs_and_cancel_needs_the_reply_key(tiny_model):
    from edge_runtime.serve.service import GenerationService

    service = GenerationService(tiny_model, Limits(queue_size=0)).start()
    started, finals = threading.Event(), {}
    done = {rid: threading.Event() for rid in ("r1", "r3")}

    def on_done(final):
        finals[final["id"]] = final
        done[final["id"]].set()

    try:
        service.submit(_request("r1", "client-a", **LONG), lambda chunk: started.set(), on_done)
        assert started.wait(30)
        with pytest.raises(RequestError) as info:
            service.submit(_request("r2", "client-a", max_tokens=2), print, print)
        assert info.value.code == "busy"
        assert service.cancel("r1", "client-b") is False, "another client's key does not cancel"
        assert service.cancel("r1", "client-a") is True
        assert done["r1"].wait(30) and finals["r1"]["finish_reason"] == "cancelled"
        # the slot is free again; the same id on another reply key is another request
        service.submit(_request("r1", "client-b", max_tokens=2), lambda c: None, lambda f: None)
        with pytest.raises(RequestError) as info:
            service.submit(_request("r1", "client-a", max_tokens=2), print, print)
        assert info.value.code == "duplicate" and not info.value.same_request
    finally:
        assert service.stop(timeout=30)


def test_duplicate_of_the_same_request_is_flagged(tiny_model):
    from edge_runtime.serve.service import GenerationService

    service = GenerationService(tiny_model, Limits()).start()
    try:
        first = _request("d1", "k", max_tokens=2)
        first.fingerprint = b"same"
        got = threading.Event()
        service.submit(first, lambda c: None, lambda f: got.set())
        again = _request("d1", "k", max_tokens=2)
        again.fingerprint = b"same"
        with pytest.raises(RequestError) as info:
            service.submit(again, print, print)
        assert info.value.same_request is True
        assert got.wait(30)
    finally:
        service.stop(timeout=30)
    assert isinstance(first, GenerationRequest)
