"""What the serial tests share: a pty pair the service opens through a symlink (so the "device"
can vanish and come back), the service as a real subprocess, greedy answers computed in-process,
and two ptys joined like a null-modem cable for the ask-serial client."""
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import tty

import pytest
from conftest import subprocess_env, tiny_tokenizer

from edge_runtime.serve.serial_framing import encode_json_line

# a reply of hundreds of tokens: "a" holds at least 2000 characters (about 680 tiny-tokenizer tokens,
# so the shortest document fits max_tokens 1000)
LONG_SCHEMA = {"type": "object", "properties": {"a": {"type": "string", "minLength": 2000, "maxLength": 4000}},
               "required": ["a"]}
CRC_LINE = re.compile(rb'^(\{.*),"crc":"([0-9A-F]{8})"\}$')


# ---------------------------------------------------------------------------------------------
# helpers: a pty the service opens through a symlink, the service process, expected answers

class Pty:
    """A pty pair; `link` (a symlink to the slave) is the service's --port. The test talks on the master."""

    def __init__(self, link):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo or line editing before the service configures the port
        self.link = str(link)
        if os.path.lexists(self.link):
            os.unlink(self.link)
        os.symlink(os.ttyname(self.slave), self.link)
        self.buf = b""
        self.closed = False

    def send(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def read_some(self, timeout, limit=65536):
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.master, limit)
        except OSError:
            return b""

    def lines(self, until, timeout=15.0):
        """Raw reply lines (without "\\n") until `until(line)` is true; fails after `timeout`."""
        out, deadline = [], time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                out.append(line)
                if until(line):
                    return out
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; lines so far: {out[-5:]!r}, partial: {self.buf[:200]!r}")
            self.buf += self.read_some(min(left, 0.5))

    def messages(self, until, timeout=15.0):
        """Decoded reply objects until `until(msg)` is true."""
        return [json.loads(line) for line in self.lines(lambda line: until(json.loads(line)), timeout)]

    def close(self):
        if not self.closed:
            self.closed = True
            os.close(self.master)
            os.close(self.slave)
            if os.path.lexists(self.link):
                os.unlink(self.link)


class Server:
    """`edge-runtime serve serial` as a subprocess, run from `cwd`, importing the edge_runtime under test."""

    def __init__(self, cwd, model, port, *args):
        self.cwd = cwd
        self.err_path = os.path.join(cwd, f"serve-serial-{time.monotonic_ns()}.err")
        self.err = open(self.err_path, "wb")
        cmd = [sys.executable, "-m", "edge_runtime", "serve", "serial", "--model", str(model), "-t", "1"]
        if port is not None:
            cmd += ["--port", str(port)]
        self.proc = subprocess.Popen(cmd + [str(a) for a in args], cwd=cwd, env=subprocess_env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)

    def log(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text, timeout=10.0):
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.proc.poll() is None, f"service exited {self.proc.returncode}:\n{self.log()}"
            assert time.monotonic() < deadline, f"{text!r} not logged:\n{self.log()}"
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


def wait_ready(server, pty, timeout=60.0, crc=False):
    """Ping until the service answers (it opens the port once the model is loaded); the pong."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, f"service exited {server.proc.returncode}:\n{server.log()}"
        pty.send(encode_json_line({"ping": "ready"}, crc))
        try:
            found = pty.messages(lambda m: m.get("pong") == "ready", timeout=0.3)
            return found[-1]
        except AssertionError:
            continue
    raise AssertionError(f"service never answered a ping:\n{server.log()}")


def collect(pty, rid, timeout=20.0):
    """(chunk messages, final message, other messages) of request `rid`."""
    msgs = pty.messages(lambda m: m.get("id") == rid and m.get("done"), timeout)
    chunks = [m for m in msgs if m.get("id") == rid and "seq" in m]
    return chunks, msgs[-1], [m for m in msgs if m.get("id") != rid]


def check_stream(chunks, final):
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert "".join(c["text"] for c in chunks) == final["text"]


def write_slow_model(path):
    """Same tokenizer as the tiny model, ~7 ms per token on one thread: long enough to cancel."""
    from edge_runtime.formats.random_model import write_random_model

    return write_random_model(str(path), shape="tiny", tokenizer=tiny_tokenizer(), dim=768, n_layers=8,
                              n_heads=6, n_kv_heads=2, ffn_dim=2048, name="random-slow")


@pytest.fixture(scope="module")
def slow_model_path(tmp_path_factory):
    return write_slow_model(tmp_path_factory.mktemp("slow-model") / "slow.gguf")


class Expected:
    """Greedy answers computed in this process with the same model file: what the service must send."""

    def __init__(self, path):
        from edge_runtime.model.model import Model

        self.model = Model(path, n_threads=1)
        self.cache = {}

    def completion(self, prompt, max_tokens):
        key = ("p", prompt, max_tokens)
        if key not in self.cache:
            out = self.model.create_completion(prompt, max_tokens=max_tokens, temperature=0)
            self.cache[key] = out["choices"][0]["text"]
        return self.cache[key]

    def chat(self, question, max_tokens):
        key = ("c", question, max_tokens)
        if key not in self.cache:
            out = self.model.create_chat_completion([{"role": "user", "content": question}],
                                                    max_tokens=max_tokens, temperature=0)
            self.cache[key] = (out["choices"][0]["message"]["content"], out["usage"]["completion_tokens"])
        return self.cache[key]


@pytest.fixture(scope="module")
def tiny_expected(tiny_chat_model_path):
    return Expected(tiny_chat_model_path)


@pytest.fixture(scope="module")
def json_service(tmp_path_factory, tiny_chat_model_path):
    """One JSON-mode service on the tiny model, shared by the round-trip and noise tests."""
    cwd = tmp_path_factory.mktemp("json-service")
    pty = Pty(cwd / "ttyEDGE0")
    server = Server(str(cwd), tiny_chat_model_path, pty.link)
    try:
        wait_ready(server, pty)
        yield server, pty
    finally:
        server.stop()
        pty.close()


def ask(pty, rid, prompt="hello", max_tokens=20, crc=False, **options):
    pty.send(encode_json_line({"id": rid, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                               **options}, crc))
    return collect(pty, rid)


def assert_answered(pty, expected, rid, prompt="hello", max_tokens=20, crc=False):
    chunks, final, others = ask(pty, rid, prompt, max_tokens, crc)
    assert final["finish_reason"] in ("stop", "length"), final
    assert final["text"] == expected.completion(prompt, max_tokens)
    check_stream(chunks, final)
    return others


# ---------------------------------------------------------------------------------------------
# the ask-serial client against the real service, over two ptys joined like a null-modem cable

class NullModem:
    """Two ptys whose masters are joined: the service opens one slave, the client the other."""

    def __init__(self, link_a, link_b):
        self.a, self.b = Pty(link_a), Pty(link_b)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        pairs = {self.a.master: self.b.master, self.b.master: self.a.master}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(pairs), [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    continue
                view = memoryview(data)
                while view:
                    view = view[os.write(pairs[fd], view):]

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.a.close()
        self.b.close()


def run_client(cwd, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "edge_runtime", "ask-serial", *[str(a) for a in args]],
                          cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
