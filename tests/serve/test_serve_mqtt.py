"""`edge-runtime serve mqtt` against a real Mosquitto broker on a free loopback port.

The service runs as a real subprocess (`python -m edge_runtime serve mqtt ...`, cwd in a temp dir);
a paho client in the test plays the other devices and asserts on what crossed the wire.
"""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from mqtt_harness import (LONG, TIMEOUT, Broker, Peer, Service, _subprocess_env, ask, broker, check_stream,  # noqa: F401
                          peer, requires_mosquitto, response_topic, slow_model_path, wait_online)

from edge_runtime import JsonSchema
from edge_runtime.serve import ha_discovery, mqtt as serve_mqtt, mqtt_cli, topics as serve_topics
from edge_runtime.serve.protocol import Limits
from edge_runtime.serve.service import GenerationService

pytestmark = requires_mosquitto


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
    inbox = "edge/reply/kitchen/inbox"
    props = response_topic(inbox, b"\x00corr-42\xff")
    final = ask(peer, {"id": 42, "prompt": "Hi", "max_tokens": 10, "stream": True}, properties=props,
                reply_topic=inbox)
    assert final["id"] == 42 and final["finish_reason"] in ("stop", "length")
    replies = peer.on_topic(inbox)
    assert len(replies) >= 2, "stream: true streams to a Response Topic too"
    assert all(m.properties.CorrelationData == b"\x00corr-42\xff" for m in replies)
    check_stream(peer, inbox, final)
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
    # (payload, id of the error reply (None: no usable id, answered on edge/board1/errors), code, words)
    (b"this is not json", None, "bad_request", "not JSON"),
    (b'{"prompt": "no id here"}', None, "bad_request", "needs an \"id\""),
    (b'[1, 2, 3]', None, "bad_request", "JSON object"),
    (b'{"id": ["x"], "prompt": "id of the wrong type"}', None, "bad_request", "\"id\""),
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


def test_malformed_requests_each_get_one_error_reply_and_service_keeps_serving(served, peer):
    peer.subscribe("edge/board1/response/#")
    peer.subscribe("edge/board1/errors")
    for payload, _, _, _ in MALFORMED:
        peer.publish("edge/board1/request", payload)
    for _, rid, code, words in MALFORMED:
        if rid is None:
            continue
        reply = peer.final(f"edge/board1/response/{rid}")
        assert reply["id"] == rid and reply["finish_reason"] == "error", reply
        assert reply["error"]["code"] == code and words in reply["error"]["message"], reply
    anonymous = [words for _, rid, _, words in MALFORMED if rid is None]
    errors = [json.loads(m.payload) for m in peer.wait_count("edge/board1/errors", len(anonymous))]
    assert len(errors) == len(anonymous), errors
    for words, reply in zip(anonymous, errors):  # QoS 1 from one publisher: in order
        assert reply["id"] is None and reply["error"]["code"] == "bad_request" and words in reply["error"]["message"]
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
    served.wait_for_log(r"'dup-1'.*a repeat of a request already received, ignored")
    time.sleep(0.5)
    assert len([m for m in peer.on_topic(topic) if b'"done":true' in m.payload]) == 1
    # the same id on another MQTT 5 Response Topic is another client's request
    final = ask(peer, body, properties=response_topic("edge/reply/other/inbox"), reply_topic="edge/reply/other/inbox")
    assert final["id"] == "dup-1" and final["finish_reason"] in ("stop", "length")


def test_bad_response_topic_and_unroutable_id(served, peer):
    final = ask(peer, {"id": "loop-1", "prompt": "x", "max_tokens": 2}, properties=response_topic("edge/board1/request"))
    assert final["error"]["code"] == "bad_request" and "own topics" in final["error"]["message"]
    peer.subscribe("edge/board1/errors")
    peer.publish("edge/board1/request", {"id": "a+b", "prompt": "x"})
    reply = json.loads(peer.wait_for(lambda m: m.topic == "edge/board1/errors" and b"a+b" in m.payload).payload)
    assert reply["id"] == "a+b" and "topic level" in reply["error"]["message"]


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
    expected = {f"homeassistant/sensor/edge_runtime_board1/{key}/config" for key, *_ in ha_discovery.HA_SENSORS}
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
        svc.wait_for_log(r"'survivor' done: stop.*queued for delivery after reconnect")
        broker.start()
        final = peer.final(topic, timeout=45)
        # the schema's document is finished within the budget: complete, at least 2000 characters
        assert final["finish_reason"] == "stop" and final["usage"]["completion_tokens"] <= 700
        assert JsonSchema(LONG["json_schema"]).accepts(final["text"]), final["text"][-80:]
        svc.wait_for_log(r"lost the connection")
        svc.wait_for_log(r"connected to broker .*session present: True")
        time.sleep(0.5)
        finals = [m for m in peer.on_topic(topic) if b'"done":true' in m.payload]
        assert len(finals) == 1, "exactly one final reply, delivered once after the reconnect"
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


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None and os.environ.get("CI") != "true",
                    reason="mosquitto_passwd is not installed")
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


@pytest.mark.skipif(shutil.which("openssl") is None and os.environ.get("CI") != "true",
                    reason="openssl is not installed")
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


def test_command_line_errors_are_one_line_and_exit_2(tmp_path):
    cases = [
        (["--broker", "localhost:99999"], "--broker"),
        (["--password", "x"], "needs --username"),
        (["--device-id", "a/b"], "--device-id"),
        (["--prefix", "edge/#"], "--prefix"),
        (["--group", "bad group"], "--group"),
        (["--tls-ca", str(tmp_path / "missing.pem")], "no such file"),
        (["--config", "no-such-board"], "no-such-board"),
    ]
    for extra, words in cases:
        # settings are checked before the model is loaded: the model path is never opened
        proc = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "mqtt", "-m", "unused.gguf",
                               "--device-id", "x", *extra], cwd=tmp_path, env=_subprocess_env(),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (extra, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and lines[0].startswith("edge-runtime serve mqtt: error:"), \
            (extra, lines)


# ---------------------------------------------------------------------------------------------
# In process

def test_an_exception_in_a_handler_is_logged_and_serving_goes_on(tiny_chat_model_path, broker, caplog):
    from edge_runtime.model.model import Model

    model = Model(tiny_chat_model_path, n_threads=1)
    service = GenerationService(model, Limits()).start()
    topics = serve_topics.Topics("edge", "inproc")
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
    assert mqtt_cli.parse_broker("example.org:1884") == ("example.org", 1884)
    assert mqtt_cli.parse_broker("example.org") == ("example.org", 1883)
    assert mqtt_cli.parse_broker("example.org", tls=True) == ("example.org", 8883)
    assert mqtt_cli.parse_broker("[::1]:1883") == ("::1", 1883)
    for bad in ("", "host:0", "host:70000", "ho st:1883", "host:port"):
        with pytest.raises(ValueError, match="--broker"):
            mqtt_cli.parse_broker(bad)


def test_salvage_id_from_undecodable_payloads():
    assert serve_topics.salvage_id(b'{"id": "abc", "prompt": "\xff') == "abc"
    assert serve_topics.salvage_id(b'{"prompt": "x", "id": 17, ') == 17
    assert serve_topics.salvage_id(b'{"id": "a\\"b", "prompt"') == 'a"b'
    assert serve_topics.salvage_id(b'{"prompt": "say \\"id\\": \\"no\\""') is None
    assert serve_topics.salvage_id(b'{"id": true}') is None
    assert serve_topics.salvage_id(b'{"id": "' + b"x" * 200 + b'"}') is None
    assert serve_topics.salvage_id(b"garbage") is None


def test_topics_and_response_topic_rules():
    t = serve_topics.check_topics("edge", "pi5", "kitchen")
    assert t.response("q1") == "edge/pi5/response/q1" and t.response(7, fleet=True) == "edge/fleet/response/7"
    assert t.response("a#") is None
    assert ("$share/kitchen/edge/fleet/request", 1) in t.subscriptions()
    assert ("edge/fleet/claim", 1) in t.subscriptions()
    for good in ("edge/reply/app", "edge/reply/app/inbox/1"):
        assert t.check_response_topic(good) is None, good
    for bad in ("", "app/+", "$SYS/x", "app/inbox", "edge/pi5/request", "edge/pi5/status", "edge/pi5/response/q1",
                "edge/fleet/response/q1", "edge/other/request", "edge/replyx/a", "homeassistant/light/x/config"):
        assert t.check_response_topic(bad) is not None, bad
    wide = serve_topics.check_topics("edge", "pi5", None, ["edge/reply/#", "apps/+/inbox"])
    assert wide.check_response_topic("apps/kitchen/inbox") is None
    assert wide.check_response_topic("apps/kitchen/inbox/x") is not None
    assert serve_topics.check_topics("edge", "pi5", None, ["#"]).check_response_topic("edge/pi5/metrics") is not None
    for bad in ("a/#/b", "a+", "$SYS/#", "", "a b"):
        with pytest.raises(ValueError, match="--reply-namespace"):
            serve_topics.check_filter(bad)
    for prefix, device, group in (("", "d", None), ("/edge", "d", None), ("edge", "fleet", None),
                                  ("edge", "reply", None),
                                  ("edge", "d+", None), ("edge", "d", "a/b"), ("$edge", "d", None)):
        with pytest.raises(ValueError):
            serve_topics.check_topics(prefix, device, group)
