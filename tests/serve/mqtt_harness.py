"""What the MQTT tests share: a real Mosquitto broker on a free loopback port, the service as a
real subprocess (`python -m edge_runtime serve mqtt ...`), and a paho peer that records what
crossed the wire. Fixtures defined here are imported by the test modules that use them."""
import json
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

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
# in CI a missing broker fails the run (Broker.start raises); elsewhere the tests skip
requires_mosquitto = pytest.mark.skipif(MOSQUITTO is None and os.environ.get("CI") != "true",
                                        reason="mosquitto is not installed")

TIMEOUT = 30.0
# constrained to a long string, generation cannot end early (no EOS before 2000 characters, about
# 670 tokens of the tiny tokenizer: the shortest document fits the budget, so it is not refused)
LONG = {"json_schema": {"type": "string", "minLength": 2000, "maxLength": 5000}, "max_tokens": 1024}


def response_topic(topic, correlation=None):
    """MQTT 5 PUBLISH properties naming a Response Topic (and Correlation Data)."""
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = topic
    if correlation is not None:
        props.CorrelationData = correlation
    return props


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
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (needed by the MQTT tests; apt-get install mosquitto)")
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
        model_args = ["-m", str(model)] if model is not None else []   # None: the packaged model
        self.argv = [sys.executable, "-m", "edge_runtime", "serve", "mqtt", *model_args, *threads, *broker,
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

    def wait_count(self, topic, n, timeout=TIMEOUT):
        """The messages on `topic` once there are at least `n` of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len([m for m in self.messages if m.topic == topic]) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {n} messages on {topic}: "
                                         f"{[m.payload[:120] for m in self.messages if m.topic == topic]}")
                self._cond.wait(min(left, 0.2))
            return [m for m in self.messages if m.topic == topic]

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
