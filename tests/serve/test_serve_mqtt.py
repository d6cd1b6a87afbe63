"""`edge-runtime serve mqtt` against a real Mosquitto broker on a free loopback port.

The service runs as a real subprocess (`python -m edge_runtime serve mqtt ...`, cwd in a temp dir);
a paho client in the test plays the other devices and asserts on what crossed the wire.
"""
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from conftest import subprocess_env
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import edge_runtime
from edge_runtime.serve import mqtt as serve_mqtt
from edge_runtime.serve.service import GenerationService, Limits

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

TIMEOUT = 30.0
# constrained to a long string, generation cannot end before max_tokens (no early EOS)
LONG = {"json_schema": {"type": "string", "minLength": 4000, "maxLength": 5000}, "max_tokens": 1024}


# ---------------------------------------------------------------------------------------------
# A broker, a service process and a test peer

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:<free port> with a generated config; restartable on the same port."""

    def __init__(self, workdir, listener_extra="", persistence=False, anonymous=True):
        self.port = free_port()
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", *filter(None, listener_extra.splitlines()),
                 f"allow_anonymous {'true' if anonymous else 'false'}", f"user {_user()}",
                 "log_dest stderr", "log_type error", "log_type warning", "log_type notice"]
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/",
                      "autosave_on_changes true", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        self.conf = os.path.join(workdir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None
        self.log = open(os.path.join(workdir, "mosquitto.log"), "ab")

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.read_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.read_log()}")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def read_log(self):
        with open(os.path.join(self.dir, "mosquitto.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]


def _user():
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _subprocess_env():
    return subprocess_env()


class Service:
    """`python -m edge_runtime serve mqtt ...` with its stderr collected line by line."""

    def __init__(self, cwd, model, port, device, *extra, threads=("-t", "1")):
        self.device = device
        broker = ["--broker", f"127.0.0.1:{port}"] if port is not None else []
        self.argv = [sys.executable, "-m", "edge_runtime", "serve", "mqtt", "-m", str(model), *threads, *broker,
                     "--device-id", device, "--metrics-interval", "1", *extra]
        self.proc = subprocess.Popen(self.argv, cwd=cwd, env=_subprocess_env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def stderr(self):
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_log(self, pattern, timeout=TIMEOUT):
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no log line matching {pattern!r} (exit code {self.proc.poll()});\n"
                                         f"stderr:\n{chr(10).join(self.lines)}")
                self._cond.wait(min(left, 0.2))

    def wait_exit(self, timeout=TIMEOUT):
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)


class Peer:
    """A paho client in the test: records every message it receives."""

    def __init__(self, port, version="5", client_id="", persistent=False, tls=None, login=None):
        self.v5 = version == "5"
        protocol = mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol, clean_session=None if self.v5 else not persistent)
        if tls:
            self.client.tls_set(**tls)
        if login:
            self.client.username_pw_set(*login)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.messages = []
        self._cond = threading.Condition()
        self._subacks = set()
        self._connected = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        props = None
        if self.v5 and persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
        if self.v5:
            self.client.connect("127.0.0.1", port, 30, clean_start=not persistent, properties=props)
        else:
            self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        assert self._connected.wait(TIMEOUT), "test peer could not connect"

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:  # the SUBACK may arrive before subscribe() has returned the mid
            self._subacks.add(mid)
            self._cond.notify_all()

    def subscribe(self, topic, qos=1):
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._subacks, TIMEOUT), f"no SUBACK for {topic}"

    def publish(self, topic, payload, qos=1, retain=False, properties=None):
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(TIMEOUT)

    def on_topic(self, topic):
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate, timeout=TIMEOUT, what="a message"):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if predicate(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:120]) for m in self.messages[-20:]]
                    raise AssertionError(f"timed out waiting for {what}; last messages: {seen}")
                self._cond.wait(min(left, 0.2))

    def final(self, topic, timeout=TIMEOUT):
        """The final reply on `topic` (decoded)."""
        msg = self.wait_for(lambda m: m.topic == topic and b'"done":true' in m.payload, timeout,
                            f"a final reply on {topic}")
        return json.loads(msg.payload)

    def chunks(self, topic):
        return [json.loads(m.payload) for m in self.on_topic(topic) if b'"done":true' not in m.payload]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_online(peer, service, prefix="edge"):
    """Once the retained status is online, the service's subscriptions are active (sent before it)."""
    status = f"{prefix}/{service.device}/status"
    peer.subscribe(status)
    service.wait_for_log(r"connected to broker")
    peer.wait_for(lambda m: m.topic == status and m.payload == b"online", what=f"online on {status}")


# ---------------------------------------------------------------------------------------------
# Fixtures

@pytest.fixture(scope="module")
def slow_model_path(tmp_path_factory):
    """A random tiny-vocabulary model big enough (~300 tok/s at one thread) for a request to be
    cancelled, queued behind or outlive a broker restart."""
    from conftest import tiny_tokenizer

    from edge_runtime.formats.random_model import write_random_model

    path = tmp_path_factory.mktemp("slow-model") / "slow.gguf"
    return write_random_model(str(path), shape="tiny", tokenizer=tiny_tokenizer(), seed=1, dim=512, n_layers=8,
                              ffn_dim=1024)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(str(tmp_path_factory.mktemp("broker"))).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def served(broker, slow_model_path, tmp_path_factory):
    """One service shared by the protocol tests: queue of 1, small limits, Home Assistant discovery."""
    svc = Service(str(tmp_path_factory.mktemp("svc")), slow_model_path, broker.port, "board1",
                  "--queue-size", "1", "--max-prompt-chars", "1000", "--max-payload-bytes", "8192",
                  "--ha-discovery")
    peer = Peer(broker.port)
    wait_online(peer, svc)
    peer.close()
    yield svc
    svc.stop()


@pytest.fixture
def peer(broker):
    p = Peer(broker.port)
    yield p
    p.close()


def ask(peer, body, device="board1", properties=None, reply_topic=None):
    """Subscribe to the reply topic, publish the request, return the final reply."""
    topic = reply_topic or f"edge/{device}/response/{body['id']}"
    peer.subscribe(topic)
    peer.publish(f"edge/{device}/request", body, properties=properties)
    return peer.final(topic)


def check_stream(peer, topic, final):
    chunks = peer.chunks(topic)
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert all(c["id"] == final["id"] and set(c) == {"id", "seq", "text"} for c in chunks)
    assert "".join(c["text"] for c in chunks) == final["text"]
    return chunks


# ---------------------------------------------------------------------------------------------
# Protocol

def test_round_trip_mqtt311_streams_chunks_then_final(served, broker):
    peer = Peer(broker.port, version="3.1.1")
    try:
        final = ask(peer, {"id": "rt-311", "prompt": "Hello there", "max_tokens": 12, "seed": 3})
        assert final["done"] is True and final["id"] == "rt-311" and final["device"] == "board1"
        assert final["finish_reason"] in ("stop", "length") and "error" not in final
        assert final["usage"]["completion_tokens"] >= 1 and final["usage"]["prompt_tokens"] >= 1
        assert "decode_tok_s" in final["timings"]
        chunks = check_stream(peer, "edge/board1/response/rt-311", final)
        assert chunks, "a streamed request yields chunks before the final reply"
    finally:
        peer.close()


def test_round_trip_mqtt5_response_topic_and_correlation_data(served, peer):
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "clients/kitchen/inbox"
    props.CorrelationData = b"\x00corr-42\xff"
    final = ask(peer, {"id": 42, "prompt": "Hi", "max_tokens": 10}, properties=props,
                reply_topic="clients/kitchen/inbox")
    assert final["id"] == 42 and final["finish_reason"] in ("stop", "length")
    replies = peer.on_topic("clients/kitchen/inbox")
    assert len(replies) >= 2
    assert all(m.properties.CorrelationData == b"\x00corr-42\xff" for m in replies)
    check_stream(peer, "clients/kitchen/inbox", final)
    time.sleep(0.3)
    assert not peer.on_topic("edge/board1/response/42"), "replies go only to the Response Topic"


def test_chat_messages_request_and_stream_false(served, peer):
    final = ask(peer, {"id": "chat-1", "messages": [{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": "What is MQTT?"}],
                       "max_tokens": 8, "temperature": 0, "stream": False})
    assert final["finish_reason"] in ("stop", "length") and final["usage"]["prompt_tokens"] > 5
    assert peer.chunks("edge/board1/response/chat-1") == [], "stream: false sends only the final reply"


def test_cancel_stops_a_running_generation_quickly(served, peer):
    topic = "edge/board1/response/long-1"
    peer.subscribe(topic)
    peer.publish("edge/board1/request", {"id": "long-1", "prompt": "Tell me everything", **LONG})
    peer.wait_for(lambda m: m.topic == topic, what="the first chunk")
    sent = time.monotonic()
    peer.publish("edge/board1/cancel", {"id": "long-1"})
    final = peer.final(topic)
    assert final["finish_reason"] == "cancelled"
    assert time.monotonic() - sent < 3.0, "cancel takes effect within a token, not at max_tokens"
    assert final["usage"]["completion_tokens"] < LONG["max_tokens"]
    check_stream(peer, topic, final)


def test_queue_full_answers_busy_at_once(served, peer):
    # queue size 1: one running, one waiting, the rest refused immediately
    ids = [f"busy-{i}" for i in range(4)]
    for rid in ids:
        peer.subscribe(f"edge/board1/response/{rid}")
    peer.publish("edge/board1/request", {"id": ids[0], "prompt": "first", **LONG})
    peer.wait_for(lambda m: m.topic == f"edge/board1/response/{ids[0]}", what="the first request running")
    started = time.monotonic()
    for rid in ids[1:]:
        peer.publish("edge/board1/request", {"id": rid, "prompt": "more", "max_tokens": 4})
    busy = [peer.final(f"edge/board1/response/{rid}") for rid in ids[2:]]
    assert all(b["finish_reason"] == "error" and b["error"]["code"] == "busy" for b in busy)
    assert time.monotonic() - started < 3.0, "busy is answered immediately, not after the running request"
    assert not [m for m in peer.on_topic(f"edge/board1/response/{ids[1]}")], "the queued one waits"
    peer.publish("edge/board1/cancel", {"id": ids[0]})
    assert peer.final(f"edge/board1/response/{ids[0]}")["finish_reason"] == "cancelled"
    assert peer.final(f"edge/board1/response/{ids[1]}")["finish_reason"] in ("stop", "length")


MALFORMED = [
    # (payload, id the error reply is for or None for "log only", expected code, words in the message)
    (b"this is not json", None, None, "not JSON"),
    (b'{"prompt": "no id here"}', None, None, "needs an \"id\""),
    (b'[1, 2, 3]', None, None, "JSON object"),
    (b'{"id": ["x"], "prompt": "id of the wrong type"}', None, None, "\"id\""),
    (b'{"id": "m-type", "prompt": 5}', "m-type", "bad_request", "prompt"),
    (b'{"id": "m-opt", "prompt": "x", "max_tokens": "ten"}', "m-opt", "bad_request", "max_tokens"),
    (b'{"id": "m-range", "prompt": "x", "temperature": 99}', "m-range", "bad_request", "temperature"),
    (b'{"id": "m-unknown", "prompt": "x", "model_path": "/etc/passwd"}', "m-unknown", "bad_request", "model_path"),
    (b'{"id": "m-both", "prompt": "x", "messages": []}', "m-both", "bad_request", "exactly one"),
    (b'{"id": "m-role", "messages": [{"role": "root", "content": "x"}]}', "m-role", "bad_request", "messages[0]"),
    (json.dumps({"id": "m-long", "prompt": "y" * 1001}).encode(), "m-long", "too_large", "1001"),
    (json.dumps({"id": "m-payload", "prompt": "z", "stop": ["q" * 9000]}).encode(), "m-payload", "too_large",
     "bytes"),
    (b'{"id": "m-utf8", "prompt": "caf\xc3\x28 \xff"}', "m-utf8", "bad_request", "UTF-8"),
    (b'{"id": "m-trunc", "prompt": "unterminated', "m-trunc", "bad_request", "not JSON"),
    (b'{"id": "m-deep", "prompt": "x", "json_schema": ' + b"[" * 3000 + b"]" * 3000 + b"}", "m-deep",
     "bad_request", ""),
]


def test_malformed_requests_get_errors_or_log_lines_and_service_keeps_serving(served, peer):
    peer.subscribe("edge/board1/response/#")
    for payload, _, _, _ in MALFORMED:
        peer.publish("edge/board1/request", payload)
    for _, rid, code, words in MALFORMED:
        if rid is None:
            continue
        reply = peer.final(f"edge/board1/response/{rid}")
        assert reply["id"] == rid and reply["finish_reason"] == "error", reply
        assert reply["error"]["code"] == code and words in reply["error"]["message"], reply
    for _, rid, _, words in MALFORMED:
        if rid is None:
            served.wait_for_log(r"bad request on edge/board1/request without a usable id.*" + re.escape(words))
    final = ask(peer, {"id": "after-bad", "prompt": "still there?", "max_tokens": 4})
    assert final["finish_reason"] in ("stop", "length")
    assert served.proc.poll() is None and "Traceback" not in served.stderr


def test_duplicate_ids_are_answered_once(served, peer):
    topic = "edge/board1/response/dup-1"
    peer.subscribe(topic)
    body = {"id": "dup-1", "prompt": "once", "max_tokens": 6}
    peer.publish("edge/board1/request", body)
    peer.publish("edge/board1/request", body)
    peer.final(topic)
    served.wait_for_log(r"'dup-1'.*duplicate id, ignored")
    time.sleep(0.5)
    assert len([m for m in peer.on_topic(topic) if b'"done":true' in m.payload]) == 1
    # the same id on another MQTT 5 Response Topic is another client's request
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "clients/other/inbox"
    final = ask(peer, body, properties=props, reply_topic="clients/other/inbox")
    assert final["id"] == "dup-1" and final["finish_reason"] in ("stop", "length")


def test_bad_response_topic_and_unroutable_id(served, peer):
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "edge/board1/request"
    final = ask(peer, {"id": "loop-1", "prompt": "x", "max_tokens": 2}, properties=props)
    assert final["error"]["code"] == "bad_request" and "own topics" in final["error"]["message"]
    peer.publish("edge/board1/request", {"id": "a+b", "prompt": "x"})
    served.wait_for_log(r"request 'a\+b'.*cannot reply")


def test_status_online_and_metrics_retained(served, broker):
    late = Peer(broker.port)  # joins after the service: sees the retained messages
    try:
        late.subscribe("edge/board1/status")
        late.subscribe("edge/board1/metrics")
        status = late.wait_for(lambda m: m.topic == "edge/board1/status")
        assert status.payload == b"online" and status.retain
        metrics = late.wait_for(lambda m: m.topic == "edge/board1/metrics")
        assert metrics.retain
        fields = json.loads(metrics.payload)
        for key in ("decode_tok_s", "queue_depth", "rss_bytes", "cpu_temp_c", "uptime_s", "model", "served"):
            assert key in fields, key
        assert fields["device"] == "board1" and fields["rss_bytes"] > 0 and fields["model"]
        # periodic: a later one counts the requests served so far
        late.wait_for(lambda m: m.topic == "edge/board1/metrics" and json.loads(m.payload)["uptime_s"]
                      > fields["uptime_s"], what="a newer metrics message")
    finally:
        late.close()


def test_home_assistant_discovery_and_republish_on_ha_online(served, peer):
    peer.subscribe("homeassistant/#")
    first = peer.wait_for(lambda m: m.topic.endswith("/decode_tok_s/config"))
    assert first.retain
    cfg = json.loads(first.payload)
    assert cfg["state_topic"] == "edge/board1/metrics" and cfg["availability_topic"] == "edge/board1/status"
    assert cfg["unit_of_measurement"] == "tok/s" and cfg["device"]["identifiers"] == ["edge_runtime_board1"]
    expected = {f"homeassistant/sensor/edge_runtime_board1/{key}/config" for key, *_ in serve_mqtt.HA_SENSORS}
    expected.add("homeassistant/binary_sensor/edge_runtime_board1/busy/config")
    for topic in expected:
        peer.wait_for(lambda m: m.topic == topic and m.retain, what=topic)
    peer.publish("homeassistant/status", "online")
    peer.wait_for(lambda m: m.topic == first.topic and not m.retain, what="discovery republished live")


# ---------------------------------------------------------------------------------------------
# Failures and lifecycles

def test_broker_killed_and_restarted_mid_generation_reply_still_arrives(slow_model_path, tmp_path):
    broker = Broker(str(tmp_path / "broker"), persistence=True).start()
    svc = None
    peer = None
    try:
        svc = Service(str(tmp_path), slow_model_path, broker.port, "phoenix")
        # a persistent QoS 1 subscription: the broker keeps it (and what arrives for it) across its restart
        peer = Peer(broker.port, client_id="test-phoenix-listener", persistent=True)
        wait_online(peer, svc)
        topic = "edge/phoenix/response/survivor"
        peer.subscribe(topic)
        time.sleep(0.3)  # the broker saves the subscription to its database
        peer.publish("edge/phoenix/request", {"id": "survivor", "prompt": "outlive the broker",
                                              **LONG, "max_tokens": 700})
        peer.wait_for(lambda m: m.topic == topic, what="the first chunk")
        broker.kill()
        # the reply is produced while the broker is away
        svc.wait_for_log(r"'survivor' done: length.*queued for delivery after reconnect")
        broker.start()
        final = peer.final(topic, timeout=45)
        assert final["finish_reason"] == "length" and final["usage"]["completion_tokens"] == 700
        assert len(final["text"]) >= 700 // 2
        svc.wait_for_log(r"lost the connection")
        svc.wait_for_log(r"connected to broker .*session present: True")
    finally:
        if peer is not None:
            peer.close()
        if svc is not None:
            svc.stop()
        broker.stop()


def test_sigterm_cancels_running_reply_publishes_offline_and_exits_0(slow_model_path, broker, peer, tmp_path):
    svc = Service(str(tmp_path), slow_model_path, broker.port, "termed")
    try:
        wait_online(peer, svc)
        topic = "edge/termed/response/t1"
        peer.subscribe(topic)
        peer.publish("edge/termed/request", {"id": "t1", "prompt": "go", **LONG})
        peer.wait_for(lambda m: m.topic == topic, what="the first chunk")
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.wait_exit() == 0, svc.stderr
        assert peer.final(topic)["finish_reason"] == "cancelled"
        peer.wait_for(lambda m: m.topic == "edge/termed/status" and m.payload == b"offline", what="offline")
        assert "Traceback" not in svc.stderr
    finally:
        svc.stop()


def test_sigkill_leaves_the_last_will_offline(tiny_chat_model_path, broker, peer, tmp_path):
    svc = Service(str(tmp_path), tiny_chat_model_path, broker.port, "killed", "--mqtt-version", "3.1.1")
    try:
        wait_online(peer, svc)
        svc.proc.send_signal(signal.SIGKILL)
        svc.wait_exit()
        peer.wait_for(lambda m: m.topic == "edge/killed/status" and m.payload == b"offline", what="the Last Will")
    finally:
        svc.stop()
    late = Peer(broker.port)
    try:
        late.subscribe("edge/killed/status")
        assert late.wait_for(lambda m: m.topic == "edge/killed/status").payload == b"offline"  # retained
    finally:
        late.close()


def test_three_services_in_a_group_share_30_requests(slow_model_path, broker, peer, tmp_path):
    devices = ["fleet-a", "fleet-b", "fleet-c"]
    services = [Service(str(tmp_path), slow_model_path, broker.port, d, "--group", "g1",
                        "--queue-size", "32") for d in devices]
    try:
        for svc in services:
            wait_online(peer, svc)
        peer.subscribe("edge/fleet/response/#")
        ids = [f"job-{i}" for i in range(30)]
        for rid in ids:
            peer.publish("edge/fleet/request", {"id": rid, "prompt": f"task {rid}", "max_tokens": 4})
        finals = [peer.final(f"edge/fleet/response/{rid}") for rid in ids]
        time.sleep(0.5)  # room for a second answer to show up, if there were one
        answered = [json.loads(m.payload)["id"] for m in peer.messages
                    if m.topic.startswith("edge/fleet/response/") and b'"done":true' in m.payload]
        assert sorted(answered) == sorted(ids), "every request answered exactly once"
        assert all(f["finish_reason"] in ("stop", "length") for f in finals)
        by_device = {d: sum(f["device"] == d for f in finals) for d in devices}
        assert all(n > 0 for n in by_device.values()), by_device
        # a fleet cancel reaches whichever board took the request
        peer.publish("edge/fleet/request", {"id": "fleet-long", "prompt": "long", **LONG})
        peer.wait_for(lambda m: m.topic == "edge/fleet/response/fleet-long", what="the first chunk")
        peer.publish("edge/fleet/cancel", {"id": "fleet-long"})
        assert peer.final("edge/fleet/response/fleet-long")["finish_reason"] == "cancelled"
    finally:
        for svc in services:
            svc.stop()


def test_board_config_supplies_broker_prefix_and_threads(tiny_chat_model_path, broker, peer, tmp_path):
    board = tmp_path / "lab-board.toml"
    board.write_text(f"""name = "lab-board"
threads = 1
kernel = "auto"
n_ctx = 512
memory_budget_mb = 1024

[mqtt]
broker = "127.0.0.1:{broker.port}"
prefix = "lab/boards"
keepalive = 30
""")
    # the deploy tooling's command line, minus --broker and --prefix: both come from the board file
    svc = Service(str(tmp_path), tiny_chat_model_path, None, "cfg1", "--config", str(board), threads=())
    try:
        wait_online(peer, svc, prefix="lab/boards")
        topic = "lab/boards/cfg1/response/c1"
        peer.subscribe(topic)
        peer.publish("lab/boards/cfg1/request", {"id": "c1", "prompt": "hi", "max_tokens": 3})
        assert peer.final(topic)["finish_reason"] in ("stop", "length")
    finally:
        svc.stop()


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_auth_wrong_password_exits_1_right_password_serves(tiny_chat_model_path, tmp_path):
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "board", "s3cret"], check=True,
                   capture_output=True)
    broker = Broker(str(tmp_path / "broker"), listener_extra=f"password_file {passwd}", anonymous=False).start()
    (tmp_path / "wrong").write_text("guess\n")
    (tmp_path / "right").write_text("s3cret\n")
    svc = None
    try:
        refused = Service(str(tmp_path), tiny_chat_model_path, broker.port, "locked", "--username", "board",
                          "--password-file", str(tmp_path / "wrong"))
        assert refused.wait_exit() == 1
        lines = [ln for ln in refused.lines if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("edge-runtime: error: broker 127.0.0.1:"), refused.stderr
        assert "refused the connection: not authorized" in lines[0] or "bad user name or password" in lines[0]

        svc = Service(str(tmp_path), tiny_chat_model_path, broker.port, "unlocked", "--username", "board",
                      "--password-file", str(tmp_path / "right"))
        peer = Peer(broker.port, login=("board", "s3cret"))
        try:
            wait_online(peer, svc)
            final = ask(peer, {"id": "auth-1", "prompt": "hello", "max_tokens": 4}, device="unlocked")
            assert final["finish_reason"] in ("stop", "length")
        finally:
            peer.close()
    finally:
        if svc is not None:
            svc.stop()
        broker.stop()


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_test_pki(d):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA."""
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", "/CN=edge-runtime test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                      ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
                 f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    return {name: str(d / name) for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_with_a_generated_ca_and_client_certificate(tiny_chat_model_path, tmp_path):
    pki = make_test_pki(tmp_path / "pki")
    broker = Broker(str(tmp_path / "broker"), listener_extra=(
        f"cafile {pki['ca.pem']}\ncertfile {pki['server.pem']}\nkeyfile {pki['server.key']}\n"
        "require_certificate true")).start()
    svc = Service(str(tmp_path), tiny_chat_model_path, broker.port, "sealed", "--tls-ca", pki["ca.pem"],
                  "--tls-cert", pki["client.pem"], "--tls-key", pki["client.key"])
    try:
        peer = Peer(broker.port, tls={"ca_certs": pki["ca.pem"], "certfile": pki["client.pem"],
                                      "keyfile": pki["client.key"]})
        try:
            wait_online(peer, svc)
            final = ask(peer, {"id": "tls-1", "prompt": "secret", "max_tokens": 4}, device="sealed")
            assert final["finish_reason"] in ("stop", "length") and final["device"] == "sealed"
        finally:
            peer.close()
    finally:
        svc.stop()
        broker.stop()


def test_tls_with_the_wrong_ca_exits_1_with_one_line(tiny_chat_model_path, tmp_path):
    pki = make_test_pki(tmp_path / "pki")
    other = make_test_pki(tmp_path / "other")
    broker = Broker(str(tmp_path / "broker"), listener_extra=(
        f"cafile {pki['ca.pem']}\ncertfile {pki['server.pem']}\nkeyfile {pki['server.key']}")).start()
    try:
        svc = Service(str(tmp_path), tiny_chat_model_path, broker.port, "mistrust", "--tls-ca", other["ca.pem"])
        assert svc.wait_exit() == 1
        lines = [ln for ln in svc.lines if ln.strip()]
        assert len(lines) == 1 and "TLS connection to broker" in lines[0] and "certificate" in lines[0], svc.stderr
    finally:
        broker.stop()


def test_command_line_errors_are_one_line_and_exit_1(tmp_path):
    cases = [
        (["--broker", "localhost:99999"], "--broker"),
        (["--password", "x"], "needs --username"),
        (["--device-id", "a/b"], "--device-id"),
        (["--prefix", "edge/#"], "--prefix"),
        (["--group", "bad group"], "--group"),
        (["--tls-ca", str(tmp_path / "missing.pem")], "no such file"),
        (["--queue-size", "0"], "--queue-size"),
        (["--config", "no-such-board"], "no-such-board"),
    ]
    for extra, words in cases:
        # settings are checked before the model is loaded: the model path is never opened
        proc = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "mqtt", "-m", "unused.gguf",
                               "--device-id", "x", *extra], cwd=tmp_path, env=_subprocess_env(),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, (extra, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and lines[0].startswith("edge-runtime: error:"), (extra, lines)


# ---------------------------------------------------------------------------------------------
# In process

def test_an_exception_in_a_handler_is_logged_and_serving_goes_on(tiny_chat_model_path, broker, caplog):
    from edge_runtime.model.model import Model

    model = Model(tiny_chat_model_path, n_threads=1)
    service = GenerationService(model, Limits()).start()
    topics = serve_mqtt.Topics("edge", "inproc")
    server = serve_mqtt.MqttServer(service, serve_mqtt.MqttSettings(
        host="127.0.0.1", port=broker.port, topics=topics, client_id="edge-runtime-inproc", metrics_interval=0))
    real_submit = service.submit
    calls = []

    def submit_failing_once(*args, **kwargs):
        calls.append(args[0].id)
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return real_submit(*args, **kwargs)

    service.submit = submit_failing_once
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    peer = Peer(broker.port)
    caplog.set_level(logging.INFO, logger="edge_runtime.serve.mqtt")
    try:
        peer.subscribe("edge/inproc/status")
        thread.start()
        # online is published after the subscriptions: once it is seen, requests reach the server
        peer.wait_for(lambda m: m.topic == "edge/inproc/status" and m.payload == b"online", what="online")
        peer.subscribe("edge/inproc/response/#")
        peer.publish("edge/inproc/request", {"id": "boom", "prompt": "x", "max_tokens": 2})
        final = ask(peer, {"id": "fine", "prompt": "x", "max_tokens": 2}, device="inproc")
        assert final["finish_reason"] in ("stop", "length") and calls == ["boom", "fine"]
        assert any("failed; the service keeps running" in r.getMessage() and r.exc_info
                   and "injected fault" in str(r.exc_info[1]) for r in caplog.records)
    finally:
        stop.set()
        thread.join(TIMEOUT)
        peer.close()
        model.close()
    assert not thread.is_alive()


# ---------------------------------------------------------------------------------------------
# Pure functions

def test_parse_broker():
    assert serve_mqtt.parse_broker("example.org:1884") == ("example.org", 1884)
    assert serve_mqtt.parse_broker("example.org") == ("example.org", 1883)
    assert serve_mqtt.parse_broker("example.org", tls=True) == ("example.org", 8883)
    assert serve_mqtt.parse_broker("[::1]:1883") == ("::1", 1883)
    for bad in ("", "host:0", "host:70000", "ho st:1883", "host:port"):
        with pytest.raises(ValueError, match="--broker"):
            serve_mqtt.parse_broker(bad)


def test_salvage_id_from_undecodable_payloads():
    assert serve_mqtt.salvage_id(b'{"id": "abc", "prompt": "\xff') == "abc"
    assert serve_mqtt.salvage_id(b'{"prompt": "x", "id": 17, ') == 17
    assert serve_mqtt.salvage_id(b'{"id": "a\\"b", "prompt"') == 'a"b'
    assert serve_mqtt.salvage_id(b'{"prompt": "say \\"id\\": \\"no\\""') is None
    assert serve_mqtt.salvage_id(b'{"id": true}') is None
    assert serve_mqtt.salvage_id(b'{"id": "' + b"x" * 200 + b'"}') is None
    assert serve_mqtt.salvage_id(b"garbage") is None


def test_topics_and_response_topic_rules():
    t = serve_mqtt.check_topics("edge", "pi5", "kitchen")
    assert t.response("q1") == "edge/pi5/response/q1" and t.response(7, fleet=True) == "edge/fleet/response/7"
    assert t.response("a#") is None
    assert ("$share/kitchen/edge/fleet/request", 1) in t.subscriptions()
    assert serve_mqtt.check_response_topic("app/inbox", t) is None
    for bad in ("", "app/+", "$SYS/x", "edge/pi5/request", "edge/pi5/status"):
        assert serve_mqtt.check_response_topic(bad, t) is not None
    for prefix, device, group in (("", "d", None), ("/edge", "d", None), ("edge", "fleet", None),
                                  ("edge", "d+", None), ("edge", "d", "a/b"), ("$edge", "d", None)):
        with pytest.raises(ValueError):
            serve_mqtt.check_topics(prefix, device, group)
