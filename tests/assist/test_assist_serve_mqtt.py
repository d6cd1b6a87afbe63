"""`serve mqtt --assist`: requests on <prefix>/<device-id>/assist act on the home; an unlock waits for a
follow-up confirmation; every request gets one reply; nothing leaves the documented reply topics."""
import json
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from assist_broker import Wire, start_broker, stop_broker
from conftest import subprocess_env
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    started = start_broker(tmp_path_factory)
    port = started[0]
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", "mqtt", "--broker", f"127.0.0.1:{port}",
                             "--device-id", "dut", "--assist"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=subprocess_env())
    client = Requester(port)
    deadline = time.time() + 60
    while time.time() < deadline:     # ready once the assistant answers
        try:
            client.ask({"id": "warmup", "text": "order a pizza"}, timeout=2)
            break
        except AssertionError:
            assert proc.poll() is None, proc.stdout.read()
    yield port, client, proc
    client.close()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    stop_broker(started)


class Requester:
    def __init__(self, port):
        self.replies = {}
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        ready = threading.Event()
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.loop_start()
        self.c.subscribe([("edge/dut/assist/reply/#", 1), ("edge/reply/me/#", 1)])
        assert ready.wait(5)

    def _on(self, client, userdata, msg):
        body = json.loads(msg.payload)
        with self.cond:
            self.replies.setdefault(body.get("id"), []).append((msg.topic, body))
            self.cond.notify_all()

    def ask(self, obj, timeout=30, response_topic=None, raw=None):
        rid = obj.get("id") if isinstance(obj, dict) else None
        with self.cond:
            self.replies.pop(rid, None)
        props = None
        if response_topic:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
        self.c.publish("edge/dut/assist", raw if raw is not None else json.dumps(obj), qos=1, properties=props)
        with self.cond:
            assert self.cond.wait_for(lambda: rid in self.replies, timeout), f"no reply to {obj!r}"
            time.sleep(0.2)     # a second reply would arrive now
            got = self.replies[rid]
        assert len(got) == 1, got
        return got[0]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_a_command_acts_and_replies_once(served):
    port, client, _ = served
    wire = Wire(port)
    try:
        topic, body = client.ask({"id": "a1", "text": "turn off the landing light"})
        time.sleep(0.3)
    finally:
        wire.close()
    assert topic == "edge/dut/assist/reply/a1"
    assert body["executed"] is True and body["result"]["action"] == "light.turn_off"
    assert [(t, json.loads(p)) for t, p, q, r in wire.messages] == [("z2m/landing/set", {"state": "OFF"})]
    assert body["published"][0]["topic"] == "z2m/landing/set"


def test_an_unlock_waits_for_the_confirmation(served):
    port, client, _ = served
    wire = Wire(port)
    try:
        _, held = client.ask({"id": "u1", "text": "unlock the side gate"})
        assert held["pending"] is True and held["executed"] is False and held["result"]["confirm"] is True
        time.sleep(0.3)
        assert not [m for m in wire.messages if m[0] == "gate/set"]
        _, done = client.ask({"id": "u1", "confirm": True})
        assert done["executed"] is True
        time.sleep(0.3)
        assert [m[1] for m in wire.messages if m[0] == "gate/set"] == ["UNLOCK"]
        _, again = client.ask({"id": "u1", "confirm": True})
        assert again["error"]["code"] == "nothing_to_confirm"
    finally:
        wire.close()


def test_response_topic_inside_the_namespace_only(served):
    _, client, _ = served
    topic, body = client.ask({"id": "r1", "text": "is the side gate locked?"}, response_topic="edge/reply/me/1")
    assert topic == "edge/reply/me/1" and body["result"]["action"] == "query"
    topic, body = client.ask({"id": "r2", "text": "turn off the landing light"},
                             response_topic="homeassistant/light/x/config")
    assert topic == "edge/dut/assist/reply/r2" and body["error"]["code"] == "bad_response_topic"


@pytest.mark.parametrize("raw, rid", [
    (b"not json", None), (b"[1,2]", None), (json.dumps({"id": "m1"}).encode(), "m1"),
    (json.dumps({"id": "m2", "text": 5}).encode(), "m2"), (json.dumps({"id": "m3", "text": "x" * 600}).encode(), "m3"),
    (json.dumps({"id": "m4", "text": "hi", "extra": 1}).encode(), "m4"), (b'{"id":"\\ud800","text":"hi"}', None),
    (json.dumps({"id": "m5", "confirm": "yes"}).encode(), "m5"), (b"[" * 900 + b"]" * 900, None),
])
def test_malformed_requests_get_one_error(served, raw, rid):
    _, client, _ = served
    topic, body = client.ask({"id": rid}, raw=raw)
    assert body["error"]["code"] == "bad_request", body
    assert topic == f"edge/dut/assist/reply/{rid or 'error'}"
