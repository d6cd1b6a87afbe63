"""`edge-runtime assist` end to end: retained discovery configs on a real Mosquitto, the command, and
the payloads on the wire as a separate subscriber sees them."""
import json
import subprocess
import sys
import time

import pytest
from assist_broker import Wire, _free_port, start_broker, stop_broker
from conftest import subprocess_env

@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    started = start_broker(tmp_path_factory)
    yield started[0]
    stop_broker(started)


def assist(port, text, *extra):
    done = subprocess.run([sys.executable, "-m", "edge_runtime", "assist", "--broker", f"127.0.0.1:{port}",
                           "--settle", "0.5", "-p", text, *extra], capture_output=True, text=True,
                          env=subprocess_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("text, topic, payload", [
    ("turn off the landing light", "z2m/landing/set", {"state": "OFF"}),
    ("dim the landing light to 40 percent", "z2m/landing/set", {"state": "ON", "brightness": 102}),
    ("start the coffee machine", "k/coffee/set", "ON"),
    ("set the desk fan to half", "o/fan/pct", "50"),
    ("I'm heading out, shut the garage door", "g/door/set", "CLOSE"),
    ("lower the bedroom blinds to 20 percent", "b/blinds/pos", "20"),
    ("please lock the side gate", "gate/set", "LOCK"),
    ("make it 21.5 degrees in the lounge", "l/temp/set", "21.5"),
])
def test_assist_publishes_the_home_assistant_payload(broker, text, topic, payload):
    wire = Wire(broker)
    try:
        out = assist(broker, text)
        assert out["executed"] is True, out
        deadline = time.time() + 5
        while time.time() < deadline and not any(m[0] == topic for m in wire.messages):
            time.sleep(0.05)
    finally:
        wire.close()
    got = [m for m in wire.messages if m[0] == topic]
    assert got, (out, wire.messages)
    t, body, qos, retain = got[-1]
    assert qos == 1 and retain is False
    assert (json.loads(body) if isinstance(payload, dict) else body) == payload, (out, wire.messages)
    assert [p["topic"] for p in out["published"]][-1] == topic


def test_an_unlock_waits_for_yes(broker):
    wire = Wire(broker)
    try:
        held = assist(broker, "unlock the side gate")
        assert held["action"] == "lock.unlock" and held["confirm"] is True and held["executed"] is False
        assert held["published"] == []
        time.sleep(0.5)
        assert not [m for m in wire.messages if m[0] == "gate/set"]
        done = assist(broker, "unlock the side gate", "--yes")
        assert done["executed"] is True
        deadline = time.time() + 5
        while time.time() < deadline and not [m for m in wire.messages if m[0] == "gate/set"]:
            time.sleep(0.05)
        assert [m[1] for m in wire.messages if m[0] == "gate/set"] == ["UNLOCK"]
    finally:
        wire.close()


def test_a_question_is_answered_from_the_retained_state(broker):
    out = assist(broker, "is the side gate locked?")
    assert out["action"] == "query" and out["entity_id"] == "lock.side_gate"
    assert "locked" in out["reply"].lower() and out["published"] == []


def test_a_missing_device_and_a_dry_run_publish_nothing(broker):
    wire = Wire(broker)
    try:
        missing = assist(broker, "turn off the porch light")
        dry = assist(broker, "turn off the landing light", "--dry-run")
        time.sleep(0.5)
    finally:
        wire.close()
    assert missing["action"] is None and missing["published"] == []
    assert dry["action"] == "light.turn_off" and dry["executed"] is False
    assert wire.messages == []


def test_an_unreachable_broker_is_one_clear_line():
    port = _free_port()
    done = subprocess.run([sys.executable, "-m", "edge_runtime", "assist", "--broker", f"127.0.0.1:{port}",
                           "-p", "turn off the light"], capture_output=True, text=True, env=subprocess_env(),
                          timeout=60)
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
