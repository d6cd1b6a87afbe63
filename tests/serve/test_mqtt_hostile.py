"""`serve mqtt` against hostile and careless clients, on a real Mosquitto: malformed requests (each
gets exactly one final reply), Response Topics outside the reply namespace (refused visibly,
nothing published there: a `#` subscriber watches every topic), cancels by others, reused ids,
fleet duplicates, an unreachable broker, the README's examples with the default model."""
import json
import random
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
from mqtt_harness import (LONG, Peer, Service, _subprocess_env, broker, free_port,  # noqa: F401
                          requires_mosquitto, response_topic, slow_model_path, wait_online)

from edge_runtime import JsonSchema

pytestmark = requires_mosquitto

DUT = "dut"
HOSTILE_TOPICS = [
    "homeassistant/light/x/config",
    "zigbee2mqtt/bridge/request/permit_join",
    "homeassistant/lock/gate/set",
    "edge/otherdev/request",                # another device's request topic
    "edge/dut/response/victim-1",           # another client's reply stream
    "edge/dut/request",
    "edge/fleet/response/someone",
    "edge/replyish/x",
    "clients/kitchen/inbox",
    "",
    "edge/reply/+",
]


@pytest.fixture(scope="module")
def watcher(broker):
    """Subscribed to # before the service starts: sees every message published on the broker."""
    w = Peer(broker.port)
    w.subscribe("#")
    yield w
    w.close()


@pytest.fixture(scope="module")
def dut(broker, watcher, slow_model_path, tmp_path_factory):
    svc = Service(str(tmp_path_factory.mktemp("dut")), slow_model_path, broker.port, DUT,
                  "--queue-size", "2", "--max-payload-bytes", "65536", "--reply-namespace", "apps/+/inbox",
                  "--metrics-interval", "0")
    p = Peer(broker.port)
    wait_online(p, svc)
    p.close()
    yield svc
    svc.stop()


@pytest.fixture
def peer(broker):
    p = Peer(broker.port)
    yield p
    p.close()


def finals_on(peer, prefix):
    return [json.loads(m.payload) for m in list(peer.messages)
            if m.topic.startswith(prefix) and b'"done":true' in m.payload]


def allowed(topic):
    """Every topic the board may publish on (with --reply-namespace apps/+/inbox)."""
    return (topic in ("edge/dut/status", "edge/dut/metrics", "edge/dut/errors")
            or topic.startswith("edge/dut/response/") or topic.startswith("edge/reply/")
            or re.fullmatch(r"apps/[^/]+/inbox", topic) is not None)


# ---------------------------------------------------------------------------------------------
# Reply namespace

def test_hostile_response_topics_are_refused_visibly_and_nothing_is_published_there(dut, watcher, peer, broker):
    victim = Peer(broker.port)
    try:
        victim.subscribe("edge/dut/response/victim-1")
        victim.publish("edge/dut/request", {"id": "victim-1", "messages": [{"role": "user", "content": "hi"}],
                                            "max_tokens": 200})
        peer.subscribe("edge/dut/response/#")
        for i, topic in enumerate(HOSTILE_TOPICS):
            body = {"id": f"h-{i}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            peer.publish("edge/dut/request", body, properties=response_topic(topic, f"corr-{i}".encode()))
        for i, topic in enumerate(HOSTILE_TOPICS):
            reply = peer.final(f"edge/dut/response/h-{i}")
            assert reply["finish_reason"] == "error" and reply["error"]["code"] == "bad_request", reply
            assert "Response Topic" in reply["error"]["message"] and repr(topic) in reply["error"]["message"]
            msg = [m for m in peer.on_topic(f"edge/dut/response/h-{i}")][-1]
            assert msg.properties.CorrelationData == f"corr-{i}".encode(), "the requester can match its error"
        victim_final = victim.final("edge/dut/response/victim-1")
        assert victim_final["id"] == "victim-1" and victim_final["finish_reason"] in ("stop", "length")
        # the namespace widened by --reply-namespace apps/+/inbox: allowed there, one level only
        ok = ask_rt(peer, "w-1", "apps/kitchen/inbox")
        assert ok["finish_reason"] in ("stop", "length")
        refused = ask_rt(peer, "w-2", "apps/kitchen/inbox/deeper", expect_error=True)
        assert "outside the reply namespace" in refused["error"]["message"]
        time.sleep(1.0)
        published_by_test = {"edge/dut/request"}
        strays = {m.topic for m in watcher.messages if m.topic not in published_by_test and not allowed(m.topic)}
        assert strays == set(), f"the board published outside its namespace: {strays}"
        for topic in HOSTILE_TOPICS:
            if topic not in ("edge/dut/request", "edge/dut/response/victim-1"):
                assert not [m for m in watcher.messages if m.topic == topic], topic
        assert all(f["id"] == "victim-1" for f in finals_on(victim, "edge/dut/response/victim-1")), \
            "nothing was injected into the victim's reply stream"
    finally:
        victim.close()


def ask_rt(peer, rid, topic, expect_error=False, **extra):
    """A request with a Response Topic; the final reply (on the topic, or on the default one if refused)."""
    where = f"edge/dut/response/{rid}" if expect_error else topic
    peer.subscribe(where)
    peer.publish("edge/dut/request", {"id": rid, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                                      **extra}, properties=response_topic(topic))
    return peer.final(where)


def test_response_topic_gets_one_complete_message_unless_stream_true(dut, peer):
    final = ask_rt(peer, "one-1", "edge/reply/me/one")
    time.sleep(0.5)
    assert len(peer.on_topic("edge/reply/me/one")) == 1, "mosquitto_rr-style clients see the whole answer"
    assert final["text"] and final["finish_reason"] in ("stop", "length")
    ask_rt(peer, "one-2", "edge/reply/me/two", stream=True, max_tokens=12)
    assert len(peer.on_topic("edge/reply/me/two")) >= 2


def test_mosquitto_rr_gets_the_whole_answer(dut, broker):
    proc = subprocess.run(["mosquitto_rr", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "edge/dut/request",
                           "-e", "edge/reply/rr/1", "-W", "30", "-m",
                           '{"id":"rr-1","messages":[{"role":"user","content":"hi"}],"max_tokens":8}'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reply["done"] is True and reply["id"] == "rr-1" and reply["finish_reason"] in ("stop", "length")


# ---------------------------------------------------------------------------------------------
# Cancels and ids

def test_a_cancel_by_anyone_but_the_requester_is_ignored(dut, broker, peer):
    mine = "edge/reply/owner/inbox"
    peer.subscribe(mine)
    peer.publish("edge/dut/request", {"id": "c-1", "prompt": "go", **LONG, "stream": True},
                 properties=response_topic(mine))
    peer.wait_for(lambda m: m.topic == mine, what="the first chunk")
    other = Peer(broker.port)
    try:
        other.publish("edge/dut/cancel", {"id": "c-1"})                                     # no Response Topic
        other.publish("edge/dut/cancel", {"id": "c-1"}, properties=response_topic("edge/reply/thief"))
        dut.wait_for_log(r"cancel 'c-1' \(reply topic edge/reply/thief\) ignored")
        dut.wait_for_log(r"cancel 'c-1' \(reply topic edge/dut/response/c-1\) ignored")
    finally:
        other.close()
    seen = len(peer.on_topic(mine))
    time.sleep(0.5)
    assert not finals_on(peer, mine), "the hostile cancels did not stop the request"
    assert len(peer.on_topic(mine)) > seen, "it is still generating"
    peer.publish("edge/dut/cancel", {"id": "c-1"}, properties=response_topic(mine))
    assert peer.final(mine)["finish_reason"] == "cancelled"


def test_an_id_reused_by_another_request_gets_duplicate_and_a_repeat_is_answered_once(dut, peer):
    topic = "edge/dut/response/reuse-1"
    peer.subscribe(topic)
    first = {"id": "reuse-1", "prompt": "first", **LONG}
    peer.publish("edge/dut/request", first)
    peer.wait_for(lambda m: m.topic == topic, what="the first request running")
    peer.publish("edge/dut/request", first)                                          # a retry: ignored
    peer.publish("edge/dut/request", {"id": "reuse-1", "prompt": "another question", "max_tokens": 4})
    dup = peer.wait_for(lambda m: m.topic == topic and b'"duplicate"' in m.payload, what="the duplicate error")
    reply = json.loads(dup.payload)
    assert reply["finish_reason"] == "error" and "fresh id" in reply["error"]["message"]
    dut.wait_for_log(r"'reuse-1'.*a repeat of a request already received, ignored")
    done = peer.wait_for(lambda m: m.topic == topic and b'"done":true' in m.payload and b'"stop"' in m.payload,
                         what="the first request's own final")
    answer = json.loads(done.payload)  # the whole document, finished within the budget
    assert answer["usage"]["completion_tokens"] <= LONG["max_tokens"]
    assert JsonSchema(LONG["json_schema"]).accepts(answer["text"]), answer["text"][-80:]
    time.sleep(0.5)
    assert len(finals_on(peer, topic)) == 2, "one final per request: the answer and the duplicate error"


# ---------------------------------------------------------------------------------------------
# Malformed requests: every one answered exactly once

def _deep_schema(depth):
    """A json_schema nested `depth` levels (each one a "not")."""
    return b'{"not":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


HANDWRITTEN = [
    (b'{"id":"bad-deep","prompt":"x","json_schema":' + _deep_schema(900) + b"}", "bad-deep", "nest"),
    (b'{"id":"\\ud800","prompt":"hi"}', None, "lone surrogate"),
    (b'{"id":"bad-sur-p","prompt":"hi \\udc00 there"}', "bad-sur-p", "lone surrogate"),
    (b'{"id":"bad-sur-m","messages":[{"role":"user","content":"\\ud83d"}]}', "bad-sur-m", "lone surrogate"),
    (b'{"id":"bad-sur-s","prompt":"x","stop":["\\udfff"]}', "bad-sur-s", "lone surrogate"),
    (b'{"id":"bad-sur-k","prompt":"x","json_schema":{"type":"object","properties":{"\\ud800":{}}}}', "bad-sur-k",
     "lone surrogate"),
    (b'{"id":"bad-pp","prompt":"x","presence_penalty":-1e308}', "bad-pp", "presence_penalty"),
    (b'{"id":"bad-fp","prompt":"x","frequency_penalty":NaN}', "bad-fp", "frequency_penalty"),
    (b'{"id":"bad-temp","prompt":"x","temperature":Infinity}', "bad-temp", "temperature"),
    (b'{"id":"bad-topp","prompt":"x","top_p":0}', "bad-topp", "top_p"),
    (b'{"id":"bad-seed","prompt":"x","seed":-1}', "bad-seed", "seed"),
    (b'{"id":"bad-seed2","prompt":"x","seed":18446744073709551616}', "bad-seed2", "seed"),
    (b'{"id":"bad-mt","prompt":"x","max_tokens":0}', "bad-mt", "max_tokens"),
    # the shortest document (100 characters of string) does not fit in 5 tokens: refused before any token
    (b'{"id":"bad-budget","prompt":"x","max_tokens":5,"json_schema":{"type":"string","minLength":100}}',
     "bad-budget", "shortest valid document needs"),
    (b'{"id":"bad-rp","prompt":"x","repeat_penalty":0}', "bad-rp", "repeat_penalty"),
    (b'{"id":"bad-topk","prompt":"x","top_k":-3}', "bad-topk", "top_k"),
    (b'{"id":99999999999999999999999,"prompt":"x"}', None, "integer from"),
    (b'{"id":"a+b","prompt":"x"}', None, "topic level"),
    (b'{"id":"a\\u0085b","prompt":"x"}', None, "topic level"),    # brokers refuse C1 controls in topics
    ('{"id":"a\ufffeb","prompt":"x"}'.encode(), None, "topic level"),
    (b'{"id":"bad-arr","prompt":"x","json_schema":' + b"[" * 5000 + b"]" * 5000 + b"}", "bad-arr", "nested"),
    (b"\xff\xfe\x00garbage", None, "UTF-8"),
    (b"", None, "not JSON"),
]


def mutations(n, seed=5):
    """`n` distinct corruptions of a valid request: flipped, dropped and inserted bytes, truncations."""
    base = json.dumps({"id": "fz", "messages": [{"role": "user", "content": "turn on the light"}],
                       "max_tokens": 2, "temperature": 0}).encode()
    rng, out = random.Random(seed), {}
    while len(out) < n:
        b = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op, pos = rng.randrange(4), rng.randrange(len(b))
            if op == 0:
                b[pos] = rng.randrange(256)
            elif op == 1:
                del b[pos]
            elif op == 2:
                b.insert(pos, rng.choice(b'{}[]",:\\\x00\xc3\xed'))
            else:
                del b[pos:]
        if bytes(b) != base and bytes(b):
            out[bytes(b)] = None
    return list(out)


def test_every_malformed_request_gets_exactly_one_final_reply(dut, peer, record_property):
    peer.subscribe("edge/dut/response/#")
    peer.subscribe("edge/dut/errors")
    for payload, _, _ in HANDWRITTEN:
        peer.publish("edge/dut/request", payload)
    for payload, rid, words in HANDWRITTEN:
        if rid is not None:
            reply = peer.final(f"edge/dut/response/{rid}")
            assert reply["error"]["code"] == "bad_request" and words in reply["error"]["message"], reply
    anonymous = [words for _, rid, words in HANDWRITTEN if rid is None]
    errors = [json.loads(m.payload) for m in peer.wait_count("edge/dut/errors", len(anonymous))]
    for words, reply in zip(anonymous, errors):
        assert reply["finish_reason"] == "error" and words in reply["error"]["message"], (words, reply)

    fuzz = mutations(200)
    before = len(finals_on(peer, "edge/dut/"))
    for payload in fuzz:
        peer.publish("edge/dut/request", payload)
    deadline = time.monotonic() + 60
    while len(finals_on(peer, "edge/dut/")) < before + len(fuzz) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # room for a second reply to any of them, if there were one
    answered = len(finals_on(peer, "edge/dut/")) - before
    sent = len(HANDWRITTEN) + len(fuzz)
    record_property("mqtt_malformed_sent", sent)
    record_property("mqtt_malformed_answered", len(HANDWRITTEN) + answered)
    print(f"MQTT battery: {sent} malformed requests sent, {len(HANDWRITTEN) + answered} final replies")
    assert answered == len(fuzz), f"{len(fuzz)} corrupted requests, {answered} final replies"
    final = ask_rt(peer, "after-fuzz", "edge/reply/after")
    assert final["finish_reason"] in ("stop", "length")
    assert dut.proc.poll() is None and "Traceback" not in dut.stderr


# ---------------------------------------------------------------------------------------------
# Fleets

def test_fleet_duplicates_are_answered_once(slow_model_path, broker, peer, tmp_path):
    devices = ["dup-a", "dup-b", "dup-c"]
    services = [Service(str(tmp_path), slow_model_path, broker.port, d, "--group", "gdup") for d in devices]
    try:
        for svc in services:
            wait_online(peer, svc)
        peer.subscribe("edge/fleet/response/#")
        ids = [f"twice-{i}" for i in range(6)]
        for rid in ids:
            body = {"id": rid, "prompt": f"task {rid}", "max_tokens": 6}
            peer.publish("edge/fleet/request", body)
            peer.publish("edge/fleet/request", body)    # the same request again: a client's retry
        # the same id, another request: exactly one of the two is answered, the other gets duplicate
        peer.publish("edge/fleet/request", {"id": "clash", "prompt": "one", "max_tokens": 4})
        peer.publish("edge/fleet/request", {"id": "clash", "prompt": "two", "max_tokens": 4})
        for rid in ids + ["clash"]:
            peer.final(f"edge/fleet/response/{rid}")
        time.sleep(1.5)
        for rid in ids:
            finals = finals_on(peer, f"edge/fleet/response/{rid}")
            assert len(finals) == 1 and finals[0]["finish_reason"] in ("stop", "length"), (rid, finals)
        clash = finals_on(peer, "edge/fleet/response/clash")
        reasons = sorted(f["finish_reason"] for f in clash)
        assert len(reasons) == 2 and reasons[0] == "error" and reasons[1] in ("length", "stop"), clash
        assert [f["error"]["code"] for f in clash if "error" in f] == ["duplicate"]
    finally:
        for svc in services:
            svc.stop()


# ---------------------------------------------------------------------------------------------
# Usability

def test_unreachable_broker_is_named_plainly_and_sigterm_exits_0(tiny_chat_model_path, tmp_path):
    port = free_port()  # nothing listens there
    svc = Service(str(tmp_path), tiny_chat_model_path, port, "lonely")
    try:
        line = svc.wait_for_log(r"cannot reach the MQTT broker at 127\.0\.0\.1:%d" % port, timeout=20)
        assert "--broker" in line and "Ctrl-C or SIGTERM" in line and "retrying" in line.lower()
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.wait_exit() == 0, svc.stderr
        assert "Traceback" not in svc.stderr
    finally:
        svc.stop()


def test_help_names_the_default_model():
    out = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "mqtt", "--help"], capture_output=True, text=True,
                         env=_subprocess_env(), timeout=60)
    assert out.returncode == 0
    assert "required until" not in out.stdout and "shipped with the package" in out.stdout
    assert "--reply-namespace" in out.stdout


@pytest.mark.parametrize("extra, words", [
    (["--queue-size", "-1"], "--queue-size"),
    (["--queue-size", "10001"], "--queue-size"),
    (["--metrics-interval", "nan"], "--metrics-interval"),
    (["--keepalive", "0"], "--keepalive"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--max-payload-bytes", "10"], "--max-payload-bytes"),
    (["-t", "0"], "--threads"),
    (["--ctx", "1"], "--ctx"),
    (["--reply-namespace", "a/#/b"], "--reply-namespace"),
])
def test_out_of_range_options_are_usage_errors(extra, words, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "mqtt", "--device-id", "x", *extra],
                          cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, (extra, proc.stderr)
    assert words in proc.stderr and "Traceback" not in proc.stderr


def readme_mosquitto_rr_lines():
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Serving over MQTT"):text.index("## Serving over a serial port")]
    return [line.strip() for line in section.splitlines() if line.strip().startswith("mosquitto_rr ")]


def test_readme_examples_work_with_the_default_model(broker, tmp_path):
    lines = readme_mosquitto_rr_lines()
    assert lines, "README's MQTT section shows a mosquitto_rr request"
    svc = Service(str(tmp_path), None, broker.port, "pi5", threads=("-t", "1"))
    try:
        p = Peer(broker.port)
        try:
            wait_online(p, svc)
        finally:
            p.close()
        for line in lines:
            argv = shlex.split(line.split(" #")[0])
            host = argv.index("-h")
            argv[host + 1:host + 2] = ["127.0.0.1", "-p", str(broker.port)]
            proc = subprocess.run(argv + ["-W", "60"], capture_output=True, text=True, timeout=90)
            assert proc.returncode == 0, (line, proc.stderr)
            reply = json.loads(proc.stdout.strip().splitlines()[-1])
            assert reply["finish_reason"] in ("stop", "length") and "error" not in reply, (line, reply)
            answer = json.loads(reply["text"])   # the embedded model answers device commands in JSON
            assert answer.get("device") and answer.get("action"), (line, answer)
    finally:
        svc.stop()
