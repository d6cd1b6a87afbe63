"""`edge-runtime serve serial` and `ask-serial` over real ttys.

The service runs as a real subprocess (`python -m edge_runtime serve serial ...`) on the slave of a
pty pair, reached through a symlink (so the "device" can vanish and come back); the test plays
the microcontroller on the master. The Outbox (write queue) is also tested in-process.
"""
import json
import os
import re
import signal
import termios
import time
import zlib

import pytest
from conftest import tiny_tokenizer
from serial_harness import (CRC_LINE, LONG_SCHEMA, Expected, NullModem, Pty, Server, assert_answered, ask,  # noqa: F401
                            check_stream, collect, json_service, run_client, slow_model_path, tiny_expected,
                            wait_ready)

from edge_runtime import JsonSchema
from edge_runtime.serve.serial_framing import TextRenderer, encode_json_line
from edge_runtime.serve.serial_outbox import CHUNK_CHARS, Outbox

# ---------------------------------------------------------------------------------------------
# JSON mode

def test_json_round_trip(json_service, tiny_expected):
    server, pty = json_service
    chunks, final, _ = ask(pty, 1)
    assert final["finish_reason"] == "length" and final["usage"]["completion_tokens"] == 20
    assert final["text"] == tiny_expected.completion("hello", 20) and final["text"]
    assert len(chunks) >= 1
    check_stream(chunks, final)
    assert set(final) >= {"id", "done", "text", "finish_reason", "usage", "timings"}
    # chat messages and string ids work the same way
    pty.send(encode_json_line({"id": "chat-1", "messages": [{"role": "user", "content": "hi"}],
                               "max_tokens": 8, "temperature": 0}))
    chunks, final, _ = collect(pty, "chat-1")
    assert final["text"] == tiny_expected.chat("hi", 8)[0]
    check_stream(chunks, final)


def test_json_round_trip_with_crc(json_service, tiny_expected):
    server, pty = json_service
    pty.send(encode_json_line({"id": 2, "prompt": "hello", "max_tokens": 20, "temperature": 0}, crc=True))
    lines = pty.lines(lambda line: b'"done":true' in line and line.startswith(b'{"id":2,'))
    mine = [line for line in lines if line.startswith(b'{"id":2,')]
    for line in mine:  # every reply line carries a CRC-32 of the bytes before ',"crc"'
        match = CRC_LINE.match(line)
        assert match, line
        assert int(match.group(2), 16) == zlib.crc32(match.group(1))
    msgs = [json.loads(line) for line in mine]
    final = msgs[-1]
    assert final["text"] == tiny_expected.completion("hello", 20)
    assert all(m.pop("crc") for m in msgs)
    check_stream(msgs[:-1], final)
    # replies carry a CRC when the line they answer had one
    pty.send(encode_json_line({"ping": 5}, crc=True) + encode_json_line({"ping": 6}))
    lines = pty.lines(lambda line: line.startswith(b'{"pong":6'))
    assert CRC_LINE.match([line for line in lines if line.startswith(b'{"pong":5')][-1])
    assert not CRC_LINE.match(lines[-1]) and json.loads(lines[-1])["serial"]["crc"] is False


def test_ping_reports_status(json_service):
    server, pty = json_service
    pty.send(b'{"ping": {"t": 12}}\n')
    pong = pty.messages(lambda m: "pong" in m and m["pong"] == {"t": 12})[-1]
    for key in ("model", "kernel", "busy", "queue_depth", "served", "rss_bytes", "uptime_s"):
        assert key in pong
    assert pong["serial"]["mode"] == "json" and pong["serial"]["port"] == pty.link
    assert pong["serial"]["session"] == "1.0" and pong["serial"]["reopens"] == 0
    pty.send(b'{"ping": 1, "extra": 2}\n')
    err = pty.messages(lambda m: m.get("finish_reason") == "error")[-1]
    assert err["id"] is None and "extra" in err["error"]["message"]


def test_bad_requests_get_an_error_with_their_id(json_service):
    server, pty = json_service
    pty.send(b'{"id": 40, "prompt": "x", "max_tokens": 999999}\n')
    final = collect(pty, 40)[1]
    assert final["finish_reason"] == "error" and final["error"]["code"] == "bad_request"
    assert "max_tokens" in final["error"]["message"]
    pty.send(b'{"id": 41, "prompt": "x", "bogus": 1}\n')
    assert "bogus" in collect(pty, 41)[1]["error"]["message"]


def test_duplicate_id_then_hello_starts_a_new_namespace(json_service, tiny_expected):
    server, pty = json_service
    assert_answered(pty, tiny_expected, 50)
    pty.send(encode_json_line({"id": 50, "prompt": "hello", "max_tokens": 20, "temperature": 0}))
    final = collect(pty, 50)[1]
    assert final["error"]["code"] == "duplicate"
    pty.send(b'{"hello": "boot"}\n')
    hello = pty.messages(lambda m: m.get("hello") == "boot")[-1]
    assert hello["session"] == "1.1"
    assert_answered(pty, tiny_expected, 50)


def test_cancel_running_and_queued_requests(json_service):
    server, pty = json_service
    long_request = {"prompt": "hello", "max_tokens": 1000, "json_schema": LONG_SCHEMA}
    pty.send(encode_json_line({"id": 60, **long_request}) + encode_json_line({"id": 61, **long_request}))
    first = [json.loads(line) for line in pty.lines(lambda line: line.startswith(b'{"id":60,"seq":0'))]
    pty.send(b'{"cancel": 61}\n{"cancel": 60}\n')
    msgs = first + pty.messages(lambda m: m.get("id") == 61 and m.get("done"))
    acks = {m["cancel"]: m for m in msgs if "cancel" in m}
    assert acks[60]["ok"] is True and acks[61]["ok"] is True
    finals = {m["id"]: m for m in msgs if m.get("done")}
    assert finals[60]["finish_reason"] == "cancelled"
    assert finals[60]["usage"]["completion_tokens"] < 1000
    assert finals[61]["finish_reason"] == "cancelled" and finals[61]["text"] == ""
    check_stream([m for m in msgs if m.get("id") == 60 and "seq" in m], finals[60])
    pty.send(b'{"cancel": 60}\n{"cancel": true}\n')
    msgs = pty.messages(lambda m: m.get("cancel") is True)
    assert msgs[-2] == {"cancel": 60, "ok": False, "error": {"code": "not_found", "message": msgs[-2]["error"]["message"]}}
    assert msgs[-1]["ok"] is False and msgs[-1]["error"]["code"] == "bad_request"


NOISE = [
    ("nul bytes", b"\x00" * 64 + b"\n" + b"\x00\x00", None),
    ("truncated json", b'{"id": 70, "prompt": "hel\n', "bad_request"),
    ("invalid utf-8", b'{"id": 71, "prompt": "\xff\xfe\xc3"}\n', "bad_request"),
    ("bad crc", b'{"id":72,"prompt":"hello","crc":"DEADBEEF"}\n', "bad_crc"),
    ("not an object", b"[1, 2, 3]\n", "bad_request"),
    ("one megabyte line", b'{"id": 73, "prompt": "' + b"A" * (1 << 20) + b'"}\n', "line_too_long"),
    ("garbage glued to the request", b"\xf8\x80\x13\x11~~", None),
    ("random bytes", bytes(__import__("random").Random(7).randrange(256) for _ in range(3000)) + b"\n", None),
]


@pytest.mark.parametrize("name, noise, code", NOISE, ids=[n[0] for n in NOISE])
def test_noise_battery_then_a_valid_request(json_service, tiny_expected, name, noise, code):
    server, pty = json_service
    rid = 100 + [n[0] for n in NOISE].index(name)
    pty.send(noise)
    others = assert_answered(pty, tiny_expected, rid)
    errors = [m for m in others if m.get("finish_reason") == "error"]
    if code is not None:
        assert [e["error"]["code"] for e in errors] == [code], errors
        assert errors[0]["id"] is None
    if name == "one megabyte line":
        assert "65536" in errors[0]["error"]["message"]
    assert server.proc.poll() is None


def test_service_memory_stays_small_after_the_noise(json_service, tiny_chat_model_path):
    """The whole service process, after the noise battery (megabyte lines, floods), within the
    memory budget: the model file + its run state (KV cache, scratch) + 64 MiB."""
    server, pty = json_service
    pty.send(b'{"ping": "mem"}\n')
    pong = pty.messages(lambda m: m.get("pong") == "mem")[-1]
    assert pong["serial"]["lines_too_long"] >= 1
    budget = os.path.getsize(tiny_chat_model_path) + pong["state_bytes"] + 64 * 2**20
    print(f"serial service RSS {pong['rss_bytes'] / 2**20:.1f} MiB, budget {budget / 2**20:.1f} MiB")
    assert pong["rss_bytes"] <= budget
    assert pong["serial"]["outbox_lines"] == 0


def test_slow_reader_gets_merged_chunks(json_service):
    """The reader drains slowly: the pty fills, writes block, and the text of many tokens is merged
    into fewer chunk lines instead of one queued line per token."""
    server, pty = json_service
    pty.send(encode_json_line({"id": 80, "prompt": "hello", "max_tokens": 1000, "json_schema": LONG_SCHEMA}))
    time.sleep(1.5)  # generation (well under a second) ends while the link is blocked
    raw = b""
    while not re.search(rb'\{"id":80,"done":true[^\n]*\n', raw):
        piece = pty.read_some(2.0, limit=4096)
        assert piece, "reply stalled"
        raw += piece
        time.sleep(0.01)
    pty.buf = raw[raw.rindex(b"\n") + 1:]
    msgs = [json.loads(line) for line in raw.split(b"\n") if line.startswith(b'{"id":80')]
    chunks, final = msgs[:-1], msgs[-1]
    # the schema's document is finished within the budget (hundreds of tokens for 2000 characters)
    assert final["finish_reason"] == "stop" and final["usage"]["completion_tokens"] <= 1000
    assert JsonSchema(LONG_SCHEMA).accepts(final["text"]), final["text"][-80:]
    check_stream(chunks, final)
    assert len(chunks) < final["usage"]["completion_tokens"]  # merged
    assert max(len(c["text"]) for c in chunks) <= CHUNK_CHARS
    pty.send(b'{"ping": "after-slow"}\n')
    pong = pty.messages(lambda m: m.get("pong") == "after-slow")[-1]
    assert pong["serial"]["outbox_peak_lines"] <= 4


@pytest.mark.parametrize("kind", ["regular file", "/dev/null"])
def test_service_rejects_a_port_that_is_not_a_tty(tmp_path, tiny_chat_model_path, kind):
    port = tmp_path / "not-a-tty"
    if kind == "/dev/null":
        port = "/dev/null"
    else:
        port.write_text("x")
    server = Server(str(tmp_path), tiny_chat_model_path, port)
    assert server.proc.wait(30) == 1
    server.stop()
    log = server.log()
    assert "Traceback" not in log
    assert ("not a character device" if kind == "regular file" else "Inappropriate ioctl") in log


def test_usage_errors_exit_2(tmp_path, tiny_chat_model_path):
    server = Server(str(tmp_path), tiny_chat_model_path, None)  # no --port, no --config
    assert server.proc.wait(30) == 2
    server.stop()
    assert "--port" in server.log()


# ---------------------------------------------------------------------------------------------
# CRC required, flow control, slow link, port loss, SIGTERM

def test_required_crc(tmp_path, tiny_chat_model_path, tiny_expected):
    pty = Pty(tmp_path / "ttyCRC")
    server = Server(str(tmp_path), tiny_chat_model_path, pty.link, "--crc", "--rtscts")
    try:
        wait_ready(server, pty, crc=True)
        pty.send(b'{"id": 1, "prompt": "hello"}\n')
        err = pty.messages(lambda m: m.get("finish_reason") == "error")[-1]
        assert err["error"]["code"] == "bad_crc" and "requires" in err["error"]["message"]
        pty.send(encode_json_line({"id": 2, "prompt": "hello", "max_tokens": 20, "temperature": 0}, crc=True))
        lines = pty.lines(lambda line: line.startswith(b'{"id":2,"done"'))
        assert all(CRC_LINE.match(line) for line in lines)
        assert json.loads(lines[-1])["text"] == tiny_expected.completion("hello", 20)
    finally:
        server.stop()
        pty.close()


@pytest.fixture(scope="module")
def slower_model_path(tmp_path_factory):
    """The slow model's shape with 32 layers: about 4 ms a token here, so 1000 tokens take seconds
    on an idle machine and the cancel below lands long before the last one."""
    from edge_runtime.formats.random_model import write_random_model

    return write_random_model(str(tmp_path_factory.mktemp("slower") / "slower.gguf"), shape="tiny",
                              tokenizer=tiny_tokenizer(), dim=768, n_layers=32, n_heads=6, n_kv_heads=2,
                              ffn_dim=2048, name="random-slower")


def test_slow_link_xoff_cancel_and_bounded_queue(tmp_path, slower_model_path):
    """9600 baud with XON/XOFF: the test plays a slow receiver that stops the link. While the
    writer is blocked, generation goes on (merged, not queued per token) and a cancel is read."""
    pty = Pty(tmp_path / "ttySLOW")
    server = Server(str(tmp_path), slower_model_path, pty.link, "--baud", "9600", "--xonxoff")
    try:
        wait_ready(server, pty)
        assert termios.tcgetattr(pty.slave)[4] == termios.B9600  # the service set the line speed
        pty.send(encode_json_line({"id": 1, "prompt": "hello", "max_tokens": 1000, "json_schema": LONG_SCHEMA}))
        first = pty.lines(lambda line: line.startswith(b'{"id":1,"seq":0'), timeout=30)
        pty.send(b"\x13")  # XOFF: the receiver's buffer is full
        time.sleep(0.2)
        while piece := pty.read_some(0.3):  # what was already in flight
            pty.buf += piece
        time.sleep(1.0)
        assert pty.read_some(0.2) == b"", "output went on after XOFF"
        pty.send(b'{"cancel": 1}\n')  # read by the service although its writer is blocked
        time.sleep(0.5)
        pty.send(b'{"ping": "slow"}\n')
        pty.send(b"\x11")  # XON; then read at about 9600 baud (960 bytes/s)
        deadline = time.monotonic() + 30
        ends = (rb'\{"id":1,"done":true[^\n]*\n', rb'\{"pong":"slow"[^\n]*\n')  # in either order
        while not all(re.search(end, pty.buf) for end in ends):
            assert time.monotonic() < deadline, pty.buf[-300:]
            pty.buf += pty.read_some(0.2, limit=96)
            time.sleep(0.1)
        lines, pty.buf = pty.buf.split(b"\n"), b""
        msgs = [json.loads(line) for line in first + lines if line]
        final = [m for m in msgs if m.get("id") == 1 and m.get("done")][-1]
        ack = [m for m in msgs if m.get("cancel") == 1][-1]
        pong = [m for m in msgs if m.get("pong") == "slow"][-1]
        assert ack["ok"] is True
        assert final["finish_reason"] == "cancelled"
        # the cancel stopped generation early: far from the 1000 tokens asked for
        assert 0 < final["usage"]["completion_tokens"] < 900
        chunks = [m for m in msgs if m.get("id") == 1 and "seq" in m]
        check_stream(chunks, final)
        # generation went on while the link was stopped, its text held as one merged, then dropped,
        # pending piece: one reply stream and a few control lines, however many tokens came meanwhile
        assert final["usage"]["completion_tokens"] >= len(chunks) + 50
        assert pong["serial"]["outbox_peak_lines"] <= 4
        assert pong["serial"]["outbox_peak_pending_chars"] > 0 and pong["serial"]["outbox_pending_chars"] == 0
        assert pong["serial"]["baud"] == 9600
    finally:
        server.stop()
        pty.close()


def test_port_vanishes_and_comes_back(tmp_path, tiny_chat_model_path, tiny_expected):
    link = tmp_path / "ttyUSB-edge"
    pty = Pty(link)
    server = Server(str(tmp_path), tiny_chat_model_path, link)
    try:
        wait_ready(server, pty)
        pty.send(encode_json_line({"id": 1, "prompt": "hello", "max_tokens": 1000, "json_schema": LONG_SCHEMA}))
        pty.lines(lambda line: line.startswith(b'{"id":1,"seq":0'))
        pty.close()  # unplugged: the master goes away and so does the device node
        server.wait_log("lost serial port")
        time.sleep(0.5)
        assert server.proc.poll() is None
        pty = Pty(link)  # plugged back in (a different pty behind the same name)
        pong = wait_ready(server, pty)
        assert pong["serial"]["session"] == "2.0" and pong["serial"]["reopens"] == 1
        assert pong["busy"] is False  # the reply nobody could read was cancelled
        assert_answered(pty, tiny_expected, 1)  # a new session: the id may be reused
        assert "is back" in server.log()
    finally:
        server.stop()
        pty.close()


def test_sigterm_cancels_the_running_reply_and_exits_0(tmp_path, slow_model_path):
    pty = Pty(tmp_path / "ttyTERM")
    server = Server(str(tmp_path), slow_model_path, pty.link)
    try:
        wait_ready(server, pty)
        long_request = {"prompt": "hello", "max_tokens": 1000, "json_schema": LONG_SCHEMA}
        pty.send(encode_json_line({"id": 1, **long_request}) + encode_json_line({"id": 2, **long_request}))
        pty.lines(lambda line: line.startswith(b'{"id":1,"seq":0'), timeout=30)
        server.proc.send_signal(signal.SIGTERM)
        msgs = pty.messages(lambda m: m.get("done") and m.get("id") == 1)
        finals = {m["id"]: m for m in msgs if m.get("done")}
        assert finals[1]["finish_reason"] == "cancelled"
        if 2 not in finals:
            finals[2] = pty.messages(lambda m: m.get("done") and m.get("id") == 2)[-1]
        assert finals[2]["error"]["code"] == "shutting_down"
        assert server.proc.wait(15) == 0
        log = server.log()
        assert "Traceback" not in log and "stopped" in log
    finally:
        server.stop()
        pty.close()


def test_sigterm_while_waiting_for_the_port(tmp_path, tiny_chat_model_path):
    server = Server(str(tmp_path), tiny_chat_model_path, tmp_path / "ttyNOWHERE")
    try:
        server.wait_log("waiting for serial port", timeout=30)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# text mode (configured through a board config, as the deploy tooling runs it)

def board_config(path, port, baud=115200, text=True, budget_mb=2048, n_ctx=2048):
    path.write_text(f"""
name = "test-board"
threads = 1
kernel = "auto"
n_ctx = {n_ctx}
memory_budget_mb = {budget_mb}
serve = "serial"

[serial]
port = "{port}"
baud = {baud}
text = {"true" if text else "false"}
""")
    return path


def test_board_memory_budget_is_enforced(tmp_path, slow_model_path):
    # the slow model's KV cache alone is 64 MiB at 8192 tokens: over the smallest budget. Asked for
    # with --ctx, that context is refused; taken from the board, it is halved until the load fits
    config = board_config(tmp_path / "small-board.toml", tmp_path / "ttyX", budget_mb=64, n_ctx=8192)
    server = Server(str(tmp_path), slow_model_path, None, "--config", config, "--ctx", "8192")
    assert server.proc.wait(30) == 1
    server.stop()
    assert "refusing to load" in server.log() and "Traceback" not in server.log()
    assert "n_ctx 8192" in server.log()
    server = Server(str(tmp_path), slow_model_path, None, "--config", config)
    try:
        deadline = time.monotonic() + 60
        while "trying 4096" not in server.log():
            assert time.monotonic() < deadline and server.proc.poll() in (None, 1), server.log()
            time.sleep(0.1)
        assert "n_ctx 8192 does not fit the memory" in server.log()
    finally:
        server.stop()
    assert "Traceback" not in server.log()


@pytest.fixture(scope="module")
def slow_expected(slow_model_path):
    return Expected(slow_model_path)


def read_answer(pty, timeout=30.0):
    """Text-mode output up to and including the empty line that ends an answer."""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in pty.buf and not pty.buf.startswith(b"\r\n"):
        assert time.monotonic() < deadline, pty.buf[-300:]
        pty.buf += pty.read_some(0.3)
    end = 2 if pty.buf.startswith(b"\r\n") else pty.buf.index(b"\r\n\r\n") + 4
    answer, pty.buf = pty.buf[:end], pty.buf[end:]
    return answer.decode("utf-8")


def test_text_mode_round_trip_noise_and_ctrl_c(tmp_path, slow_model_path, slow_expected):
    pty = Pty(tmp_path / "ttyTEXT")
    config = board_config(tmp_path / "board.toml", pty.link, baud=57600)
    server = Server(str(tmp_path), slow_model_path, None, "--config", config, "--temp", "0", "-n", "1000")
    try:
        deadline = time.monotonic() + 60
        server.wait_log("text mode", timeout=60)
        assert termios.tcgetattr(pty.slave)[4] == termios.B57600
        for question in ("serial", "ping me"):
            pty.send(question.encode() + b"\r")  # Enter at a terminal sends CR
            answer = read_answer(pty)
            content, _ = slow_expected.chat(question, 1000)
            renderer = TextRenderer()
            assert answer == renderer.feed(content) + renderer.end()
        # noise: an error line, then the next question is answered
        pty.send(b"\xff\xfe\xfd\r\n")
        assert read_answer(pty).startswith("[error: not valid UTF-8")
        # Ctrl-C while a long answer streams
        content, tokens = slow_expected.chat("2+2", 300)  # the first 300 tokens of the answer
        assert tokens == 300, "precondition: a long greedy answer"
        pty.send(b"2+2\r\n")
        while len(pty.buf) < 10:
            pty.buf += pty.read_some(0.5)
            assert time.monotonic() < deadline
        pty.send(b"\x03")
        answer = read_answer(pty)
        assert answer.endswith("[cancelled]\r\n\r\n")
        streamed = answer[:-len("[cancelled]\r\n\r\n")]
        assert TextRenderer().feed(content).startswith(streamed.rstrip("\r\n"))
        assert len(streamed) < len(TextRenderer().feed(content))
    finally:
        server.stop()
        pty.close()


def test_ask_serial_client(tmp_path, tiny_chat_model_path, tiny_expected):
    cable = NullModem(tmp_path / "ttyBOARD", tmp_path / "ttyHOST")
    server = Server(str(tmp_path), tiny_chat_model_path, cable.a.link)
    try:
        server.wait_log("JSON mode", timeout=60)
        ping = run_client(tmp_path, "--port", cable.b.link, "--ping", "--timeout", "10")
        assert ping.returncode == 0, ping.stderr
        assert json.loads(ping.stdout)["pong"] == 1
        for extra in ([], ["--crc"]):
            out = run_client(tmp_path, "--port", cable.b.link, "--raw", "--temp", "0", "-n", "20", *extra, "hello")
            assert out.returncode == 0, out.stderr
            assert out.stdout == tiny_expected.completion("hello", 20) + "\n"
        chat = run_client(tmp_path, "--port", cable.b.link, "--temp", "0", "-n", "8", "hi")
        assert chat.returncode == 0 and chat.stdout == tiny_expected.chat("hi", 8)[0] + "\n"
        bad = run_client(tmp_path, "--port", cable.b.link, "-n", "5000", "hello")  # over the service's cap of 1024
        assert bad.returncode == 1 and "max_tokens" in bad.stderr
    finally:
        server.stop()
        cable.close()


def test_ask_serial_client_text_mode_and_failures(tmp_path, slow_model_path, slow_expected):
    cable = NullModem(tmp_path / "ttyBOARD", tmp_path / "ttyHOST")
    server = Server(str(tmp_path), slow_model_path, cable.a.link, "--text", "--temp", "0", "-n", "1000")
    try:
        server.wait_log("text mode", timeout=60)
        out = run_client(tmp_path, "--port", cable.b.link, "--text", "serial")
        assert out.returncode == 0, out.stderr
        content, _ = slow_expected.chat("serial", 1000)
        renderer = TextRenderer()
        rendered = renderer.feed(content) + renderer.end()
        assert out.stdout == rendered[:-2].replace("\r\n", "\n")
    finally:
        server.stop()
    # nobody answers: exit 1 after the timeout; usage errors: exit 2
    out = run_client(tmp_path, "--port", cable.b.link, "--timeout", "1", "hello")
    assert out.returncode == 1 and "no reply" in out.stderr
    assert run_client(tmp_path, "--port", cable.b.link).returncode == 2
    assert run_client(tmp_path, "--port", tmp_path / "missing", "hi").returncode == 1
    cable.close()


# ---------------------------------------------------------------------------------------------
# the write queue, in-process

def test_outbox_merges_text_and_keeps_seq_and_order():
    box = Outbox(max_control=3, chunk_chars=10)
    stream = box.open_stream(7, crc=False, streaming=True)
    for i in range(100):
        box.add_text(stream, str(i % 10))
    assert box.put_control({"pong": 1})
    box.finish(stream, {"id": 7, "done": True, "text": "".join(str(i % 10) for i in range(100)),
                        "finish_reason": "length"})
    items = []
    while (item := box.take(0.01)) is not None:
        items.append(item)
    assert items[0] == ("control", {"pong": 1}, False)  # single lines first
    chunks = [i for i in items if i[0] == "chunk"]
    assert [c[3] for c in chunks] == list(range(10)) and all(len(c[2]) == 10 for c in chunks)
    assert items[-1][0] == "final" and "".join(c[2] for c in chunks) == items[-1][2]["text"]
    assert box.peak_lines == 2 and box.pending_chars == 0


def test_outbox_bounds_control_lines_and_cancel_trims_the_final():
    box = Outbox(max_control=2, chunk_chars=4)
    assert box.put_control({"a": 1}) and box.put_control({"a": 2})
    assert not box.put_control({"a": 3}) and box.dropped_lines == 1
    first = box.open_stream(1, crc=True, streaming=True)
    second = box.open_stream(2, crc=False, streaming=True)
    box.add_text(second, "later")  # waits: replies are written whole, in order
    box.add_text(first, "abcdefgh")
    box.take(0.01), box.take(0.01)
    assert box.take(0.01) == ("chunk", first, "abcd", 0)
    box.cancel_stream(first)
    box.add_text(first, "ignored")
    box.finish(first, {"id": 1, "done": True, "text": "abcdefghXYZ", "finish_reason": "length"})
    kind, stream, final = box.take(0.01)
    assert kind == "final" and final["finish_reason"] == "cancelled" and final["text"] == "abcd"
    assert box.take(0.01) == ("chunk", second, "late", 0)
    box.close()
    assert box.take(0.01) == ("chunk", second, "r", 1)
    box.finish(second, {"id": 2, "done": True, "text": "later", "finish_reason": "stop"})
    assert box.take(0.01)[2]["finish_reason"] == "stop" and box.empty()
