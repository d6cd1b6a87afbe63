"""`serve serial` against hostile and careless input over real ptys: every line that is not empty
gets exactly one terminal reply (a final, a pong, a hello or a cancel ack) and the port session
survives; replies that cannot be encoded become error lines; `--queue 0` means no waiting; every
numeric option has a range."""
import json
import random
import subprocess
import sys
import threading
import time

import pytest
from conftest import subprocess_env
from serial_harness import LONG_SCHEMA, Pty, Server, slow_model_path, wait_ready  # noqa: F401

from edge_runtime.serve.serial_framing import encode_json_line

NOISE_GAP_S = 0.3   # the service answers at most ~4 unreadable lines per second (README: Noise)


def deep(depth):
    """A json_schema nested `depth` levels (each one a "not")."""
    return b'{"not":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


HANDWRITTEN = [
    # (line, id of the reply or None, words in its error message)
    (b'{"id":5001,"prompt":"x","json_schema":' + deep(900) + b"}", 5001, "nests more"),
    (b'{"id":"\\ud800","prompt":"hi"}', None, "lone surrogate"),
    (b'{"id":5002,"prompt":"hi \\udc00"}', 5002, "lone surrogate"),
    (b'{"id":5003,"messages":[{"role":"user","content":"\\ud83d"}]}', 5003, "lone surrogate"),
    (b'{"id":5004,"prompt":"x","stop":"\\udfff"}', 5004, "lone surrogate"),
    (b'{"ping":"\\ud800"}', None, "lone surrogate"),
    (b'{"hello":"\\udbff"}', None, "lone surrogate"),
    (b'{"cancel":"\\ud800"}', None, "lone surrogate"),
    (b'{"ping":' + b"[" * 899 + b"1" + b"]" * 899 + b"}", None, "nests more"),
    (b'{"id":5005,"prompt":"x","json_schema":' + b"[" * 5000 + b"]" * 5000 + b"}", None, "nested too deeply"),
    (b'{"id":5006,"prompt":"x","presence_penalty":-1e308}', 5006, "presence_penalty"),
    (b'{"id":5007,"prompt":"x","frequency_penalty":NaN}', 5007, "frequency_penalty"),
    (b'{"id":5008,"prompt":"x","temperature":-Infinity}', 5008, "temperature"),
    (b'{"id":5009,"prompt":"x","top_p":0}', 5009, "top_p"),
    (b'{"id":5010,"prompt":"x","seed":-1}', 5010, "seed"),
    (b'{"id":5011,"prompt":"x","max_tokens":0}', 5011, "max_tokens"),
    (b'{"id":5012,"prompt":"x","top_k":1.5}', 5012, "top_k"),
    (b'{"id":5013,"prompt":"x","max_tokens":5,"json_schema":{"type":"string","minLength":100}}', 5013,
     "shortest valid document needs"),
    (b'{"id":123456789012345678901234567890,"prompt":"x"}', None, "integer from"),
]


def terminal(msg):
    """A reply that ends the handling of one line."""
    return bool(msg.get("done")) or "pong" in msg or "hello" in msg or "cancel" in msg


def mutations(n, seed=11):
    base = encode_json_line({"id": 77, "messages": [{"role": "user", "content": "turn on the light"}],
                             "max_tokens": 2, "temperature": 0})[:-1]
    rng, out = random.Random(seed), {}
    while len(out) < n:
        b = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op, pos = rng.randrange(4), rng.randrange(len(b))
            if op == 0:
                b[pos] = rng.choice([c for c in range(256) if c not in (0x0A, 0x0D)])
            elif op == 1:
                del b[pos]
            elif op == 2:
                b.insert(pos, rng.choice(b'{}[]",:\\\x00\xc3\xed'))
            else:
                del b[pos:]
        line = bytes(b)
        if line != base and line.strip(b"\x00 \t"):
            out[line] = None
    return list(out)


@pytest.fixture(scope="module")
def hostile_service(tmp_path_factory, tiny_chat_model_path):
    cwd = tmp_path_factory.mktemp("hostile-serial")
    pty = Pty(cwd / "ttyHOSTILE")
    server = Server(str(cwd), tiny_chat_model_path, pty.link)
    try:
        wait_ready(server, pty)
        yield server, pty
    finally:
        server.stop()
        pty.close()


def test_every_line_gets_exactly_one_reply_and_the_session_survives(hostile_service, record_property):
    server, pty = hostile_service
    for line, rid, words in HANDWRITTEN:
        pty.send(line + b"\n")
        msgs = pty.messages(terminal, timeout=20)
        reply = msgs[-1]
        assert reply.get("finish_reason") == "error" or reply.get("ok") is False, (line[:60], reply)
        assert reply.get("id") == rid and words in reply["error"]["message"], (line[:60], reply)
        time.sleep(NOISE_GAP_S)
    fuzz = mutations(40)
    answered = 0
    for line in fuzz:
        pty.send(line + b"\n")
        pty.messages(terminal, timeout=20)
        answered += 1
        time.sleep(NOISE_GAP_S)
    # one more line: if any line above had drawn a second terminal reply, it would show up here first
    pty.send(b'{"ping":"end"}\n')
    extra = [m for m in pty.messages(lambda m: m.get("pong") == "end", timeout=20)[:-1] if terminal(m)]
    assert extra == [], f"lines answered twice: {extra}"
    pty.send(b'{"ping":"session"}\n')
    status = pty.messages(lambda m: m.get("pong") == "session")[-1]["serial"]
    sent = len(HANDWRITTEN) + len(fuzz)
    record_property("serial_malformed_sent", sent)
    record_property("serial_malformed_answered", len(HANDWRITTEN) + answered)
    print(f"serial battery: {sent} malformed lines sent, {len(HANDWRITTEN) + answered} answered once each")
    assert status["session"] == "1.0" and status["reopens"] == 0, "the port session was never torn down"
    assert status["noise_unanswered"] == 0
    assert server.proc.poll() is None and "Traceback" not in server.log()


def test_queue_0_means_no_request_waits(tmp_path, slow_model_path):
    pty = Pty(tmp_path / "ttyQ0")
    server = Server(str(tmp_path), slow_model_path, pty.link, "--queue", "0")
    try:
        wait_ready(server, pty)
        pty.send(encode_json_line({"id": 1, "prompt": "hello", "max_tokens": 1000, "json_schema": LONG_SCHEMA}))
        pty.lines(lambda line: line.startswith(b'{"id":1,"seq":0'), timeout=30)
        pty.send(encode_json_line({"id": 2, "prompt": "hello", "max_tokens": 4}))
        busy = pty.messages(lambda m: m.get("id") == 2 and m.get("done"))[-1]
        assert busy["finish_reason"] == "error" and busy["error"]["code"] == "busy"
        pty.send(b'{"cancel": 1}\n')
        assert pty.messages(lambda m: m.get("id") == 1 and m.get("done"))[-1]["finish_reason"] == "cancelled"
    finally:
        server.stop()
        pty.close()


def test_a_reply_that_cannot_be_encoded_becomes_an_error_line_and_the_writer_lives(tmp_path, tiny_chat_model_path):
    from edge_runtime.model.model import Model
    from edge_runtime.serve.serial import SerialServer
    from edge_runtime.serve.service import GenerationService

    model = Model(tiny_chat_model_path, n_threads=1)
    service = GenerationService(model).start()
    pty = Pty(tmp_path / "ttyENC")
    server = SerialServer(service, pty.link)
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while server.session is None:
            assert time.monotonic() < deadline, "the server never opened the port"
            time.sleep(0.05)
        pty.send(b'{"ping":"up"}\n')
        pty.messages(lambda m: m.get("pong") == "up")
        outbox = server.session.outbox
        stream = outbox.open_stream(9001, False, True)
        outbox.add_text(stream, "half \ud800")   # what a buggy generator could hand over
        outbox.finish(stream, {"id": 9001, "done": True, "text": "half \ud800", "finish_reason": "stop",
                               "usage": {}, "timings": {}})
        outbox.put_control({"pong": "\udfff"})
        msgs = pty.messages(lambda m: m.get("id") == 9001 and m.get("done"))
        final = msgs[-1]
        assert final["finish_reason"] == "error" and final["error"]["code"] == "internal", final
        if not [m for m in msgs if m.get("id") is None and m.get("finish_reason") == "error"]:
            pty.messages(lambda m: m.get("id") is None and m.get("finish_reason") == "error")
        pty.send(b'{"ping":"still"}\n')
        pong = pty.messages(lambda m: m.get("pong") == "still")[-1]
        assert pong["serial"]["session"] == "1.0" and pong["serial"]["reopens"] == 0
    finally:
        stop.set()
        thread.join(20)
        model.close()
        pty.close()
    assert not thread.is_alive()


@pytest.mark.parametrize("command, extra", [
    ("serve serial", ["--queue", "-1"]),
    ("serve serial", ["--queue", "10001"]),
    ("serve serial", ["--temp", "11"]),
    ("serve serial", ["--temp", "nan"]),
    ("serve serial", ["--seed", "-1"]),
    ("serve serial", ["--baud", "0"]),
    ("serve serial", ["--max-line", "10"]),
    ("serve serial", ["-n", "0"]),
    ("serve serial", ["-t", "0"]),
    ("ask-serial", ["--timeout", "0", "q"]),
    ("ask-serial", ["--temp", "-1", "q"]),
    ("ask-serial", ["--seed", "18446744073709551616", "q"]),
])
def test_out_of_range_options_are_usage_errors(command, extra, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", *command.split(), "--port", str(tmp_path / "none"),
                           *extra], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, (extra, proc.stderr)
    assert extra[0] in proc.stderr and "Traceback" not in proc.stderr
