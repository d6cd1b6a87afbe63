"""`serve serial --assist`: {"id", "assist": TEXT} lines on a real pty act on the home (published on a
real Mosquitto with --broker, described only with --home); an unlock waits for a confirmation from the
same port session; every line gets one reply and generation requests still work beside them."""
import json
import time
from pathlib import Path

import pytest
from assist_broker import Wire, start_broker, stop_broker
from serial_harness import Pty, Server, wait_ready

from edge_runtime.serve.serial_framing import encode_json_line

HOME_FILE = Path(__file__).parent / "data" / "home_mixed.json"


def reply_to(pty, rid, timeout=60.0):
    return pty.messages(lambda m: m.get("id") == rid and ("result" in m or "error" in m or "finish_reason" in m),
                        timeout)[-1]


def send(pty, obj):
    pty.send(encode_json_line(obj))


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    started = start_broker(tmp_path_factory)
    yield started[0]
    stop_broker(started)


@pytest.fixture(scope="module")
def on_broker(tmp_path_factory, broker, tiny_chat_model_path):
    cwd = tmp_path_factory.mktemp("serial-assist")
    pty = Pty(cwd / "ttyASSIST")
    server = Server(str(cwd), tiny_chat_model_path, pty.link, "--assist", "--broker", f"127.0.0.1:{broker}")
    try:
        wait_ready(server, pty)
        yield server, pty, broker
    finally:
        server.stop()
        pty.close()


@pytest.fixture(scope="module")
def on_file(tmp_path_factory, tiny_chat_model_path):
    cwd = tmp_path_factory.mktemp("serial-assist-file")
    pty = Pty(cwd / "ttyASSISTF")
    server = Server(str(cwd), tiny_chat_model_path, pty.link, "--assist", "--home", str(HOME_FILE))
    try:
        wait_ready(server, pty)
        yield server, pty
    finally:
        server.stop()
        pty.close()


def test_an_assist_line_publishes_the_home_assistant_payload(on_broker):
    server, pty, port = on_broker
    wire = Wire(port)
    try:
        send(pty, {"id": "s1", "assist": "please lock the side gate"})
        out = reply_to(pty, "s1")
        deadline = time.time() + 5
        while time.time() < deadline and not any(m[0] == "gate/set" for m in wire.messages):
            time.sleep(0.05)
    finally:
        wire.close()
    assert out["result"]["action"] == "lock.lock" and out["result"]["entity_id"] == "lock.side_gate", out
    assert out["executed"] is True and [p["topic"] for p in out["published"]] == ["gate/set"]
    assert [(t, body, qos, retain) for t, body, qos, retain in wire.messages if t == "gate/set"] == \
        [("gate/set", "LOCK", 1, False)]


def test_an_unlock_waits_for_a_confirmation_from_the_same_session(on_broker):
    server, pty, port = on_broker
    wire = Wire(port)
    try:
        send(pty, {"id": "u1", "assist": "unlock the side gate"})
        held = reply_to(pty, "u1")
        assert held["result"]["action"] == "lock.unlock" and held["pending"] is True and held["executed"] is False
        time.sleep(0.5)
        assert not [m for m in wire.messages if m[0] == "gate/set"], "nothing is published before the confirmation"
        # a new hello epoch is another requester: it cannot confirm what the previous one asked for
        send(pty, {"hello": "other"})
        pty.messages(lambda m: m.get("hello") == "other")
        send(pty, {"id": "u1", "confirm": True})
        refused = reply_to(pty, "u1")
        assert refused["error"]["code"] == "nothing_to_confirm"
        send(pty, {"id": "u2", "assist": "unlock the side gate"})
        assert reply_to(pty, "u2")["pending"] is True
        send(pty, {"id": "u2", "confirm": True})
        done = reply_to(pty, "u2")
        deadline = time.time() + 5
        while time.time() < deadline and not any(m[0] == "gate/set" for m in wire.messages):
            time.sleep(0.05)
    finally:
        wire.close()
    assert done["executed"] is True and done["result"]["action"] == "lock.unlock"
    assert [(t, body) for t, body, _, _ in wire.messages if t == "gate/set"] == [("gate/set", "UNLOCK")]


def test_generation_requests_still_work_beside_assist_lines(on_broker):
    server, pty, port = on_broker

    def final(m):
        return m.get("id") in ("g1", "a9") and ("finish_reason" in m or "result" in m or "error" in m)

    send(pty, {"id": "g1", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "stream": False})
    send(pty, {"id": "a9", "assist": "order a pizza"})
    got = {}
    deadline = time.time() + 60
    while len(got) < 2 and time.time() < deadline:
        m = pty.messages(final, 60)[-1]
        assert m["id"] not in got, f"two final replies for {m['id']}"
        got[m["id"]] = m
    assert got["g1"]["finish_reason"] in ("stop", "length"), got
    assert got["a9"]["result"]["action"] is None and got["a9"]["executed"] is False, got


@pytest.mark.parametrize("line, code", [
    ({"id": "b1", "assist": ""}, "bad_request"),
    ({"id": "b2", "assist": "turn on the lights", "extra": 1}, "bad_request"),
    ({"id": "b3", "assist": "x" * 600}, "bad_request"),
    ({"id": "b4", "confirm": False}, "bad_request"),
    ({"id": "b5", "confirm": True}, "nothing_to_confirm"),
])
def test_malformed_assist_lines_get_one_error_each(on_file, line, code):
    server, pty = on_file
    send(pty, line)
    out = reply_to(pty, line["id"])
    assert out["error"]["code"] == code, out


def test_with_a_home_file_nothing_is_published(on_file):
    server, pty = on_file
    send(pty, {"id": "f1", "assist": "turn off the landing light"})
    out = reply_to(pty, "f1")
    assert out["result"]["action"] == "light.turn_off" and out["result"]["entity_id"] == "light.landing", out
    assert out["executed"] is False
    assert [p["topic"] for p in out["published"]] == ["z2m/landing/set"]   # what would be published
    assert json.loads(out["published"][0]["payload"]) == {"state": "OFF"}
