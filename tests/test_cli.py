"""The `edge-runtime` command line through a real subprocess: run, chat, info, bench, and the error
paths (one line on stderr, exit 1 for runtime errors, 2 for usage errors, no traceback)."""
import json
import os
import subprocess
import sys

import pytest
from conftest import subprocess_env



def cli(*args, stdin=None, cwd=None, env_extra=None, timeout=120):
    env = subprocess_env(**(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture
def here(tmp_path):
    return str(tmp_path)


def test_help_for_every_command(here):
    top = cli("--help", cwd=here)
    assert top.returncode == 0
    for cmd in ("run", "chat", "info", "bench", "convert", "serve"):
        assert cmd in top.stdout
        r = cli(cmd, "--help", cwd=here)
        assert r.returncode == 0, r.stderr
        assert "usage:" in r.stdout


def test_run_streams_text_and_is_reproducible(tiny_chat_model_path, here):
    args = ("run", "-m", tiny_chat_model_path, "-p", "Hello", "-n", "16", "--seed", "5", "-t", "1")
    a, b = cli(*args, cwd=here), cli(*args, cwd=here)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.strip()


def test_run_with_json_schema_and_chat(tiny_chat_model_path, tmp_path):
    schema = {"type": "object", "properties": {"device": {"type": "string", "enum": ["light", "fan"]},
                                               "on": {"type": "boolean"}}, "required": ["device", "on"]}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    r = cli("run", "-m", tiny_chat_model_path, "-p", "turn on the light", "--chat", "--system", "You are a home",
            "--json-schema", str(path), "-n", "40", "--seed", "1", "-t", "1", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["device"] in ("light", "fan") and isinstance(obj["on"], bool)


def test_chat_reads_turns_from_stdin(tiny_chat_model_path, here):
    r = cli("chat", "-m", tiny_chat_model_path, "-n", "6", "--seed", "2", "-t", "1", stdin="hello\nagain\n", cwd=here)
    assert r.returncode == 0, r.stderr
    assert len([line for line in r.stdout.splitlines()]) >= 2


def test_info_text_and_json(tiny_chat_model_path, here):
    r = cli("info", tiny_chat_model_path, "--json", "--ctx", "1024", cwd=here)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["architecture"] == "bitnet-b1.58"
    assert info["tensor_types"]["I2_S"] == 2 * 7
    assert info["kv_cache_bytes"] == info["n_layers"] * 2 * 1024 * info["n_kv_heads"] * info["head_dim"] * 2
    assert info["kernel"] in info["kernels_available"]
    t = cli("info", tiny_chat_model_path, cwd=here)
    assert t.returncode == 0 and "architecture" in t.stdout and "kernel" in t.stdout


def test_kernel_env_is_reported_and_refused(tiny_chat_model_path, here):
    r = cli("info", tiny_chat_model_path, "--json", cwd=here, env_extra={"EDGE_RUNTIME_KERNEL": "scalar"})
    assert json.loads(r.stdout)["kernel"] == "scalar"
    r = cli("run", "-m", tiny_chat_model_path, "-p", "x", "-n", "2", cwd=here,
            env_extra={"EDGE_RUNTIME_KERNEL": "neon_dot" if sys.platform and os.uname().machine == "x86_64" else "avx2"})
    assert r.returncode == 1
    assert "kernel" in r.stderr and "Traceback" not in r.stderr


def test_bench_json(tiny_chat_model_path, here):
    r = cli("bench", "-m", tiny_chat_model_path, "--prompt-tokens", "16", "--gen-tokens", "8", "--repeats", "2",
            "-t", "1", "--json", cwd=here)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["prompt_tok_s"] > 0 and out["decode_tok_s"] > 0 and out["peak_rss_bytes"] > 0
    assert out["kernel"]
    assert "cold_ttft_ms" not in out


def test_bench_cold_reports_first_token_time_from_storage(tiny_chat_model_path, here):
    r = cli("bench", "-m", tiny_chat_model_path, "--prompt-tokens", "8", "--gen-tokens", "2", "--repeats", "1",
            "-t", "1", "--cold", "--json", cwd=here)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # load + first prompt, so never less than the load alone
    assert out["cold_ttft_ms"] >= out["load_ms"] > 0


@pytest.mark.parametrize("via", ["model", "mqtt"])
def test_bench_concurrency_case(tiny_chat_model_path, here, via):
    """The concurrency case runs 1 and 2 simultaneous requests, in-process or through a real broker
    and a `serve mqtt --slots 2` process, and reports every count; speed is printed, not asserted."""
    import shutil

    if via == "mqtt" and not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")):
        pytest.skip("mosquitto is not installed")
    r = cli("bench", "-m", tiny_chat_model_path, "--case", "concurrency", "--via", via, "--concurrency", "1", "2",
            "--gen-tokens", "6", "--repeats", "1", "-t", "1", "--json", cwd=here, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["slots"] == 2 and out["gen_tokens"] == 6
    assert set(out["aggregate_tok_s"]) == {"1", "2"} and all(v > 0 for v in out["aggregate_tok_s"].values())
    assert out["speedup_vs_one"]["1"] == 1.0
    assert (out.get("via") == "mqtt") == (via == "mqtt")


@pytest.mark.parametrize("args,needle", [
    (("run", "-m", "/nonexistent/model.gguf", "-p", "x"), "nonexistent"),
    (("info", "/nonexistent/model.gguf"), "nonexistent"),
    (("run", "-m", "{model}", "-p", "word " * 600, "--ctx", "64"), "does not fit"),
    (("run", "-m", "{model}", "-p", "x", "--json-schema", "/nonexistent.json"), "json-schema"),
    (("run", "-m", "{model}", "-p", "x", "--temp", "-3"), "temperature"),
    (("convert", "/nonexistent-dir", "-o", "{tmp}/out.gguf"), "nonexistent"),
])
def test_runtime_errors_are_one_line_exit_1(tiny_chat_model_path, tmp_path, args, needle):
    args = [a.format(model=tiny_chat_model_path, tmp=tmp_path) for a in args]
    r = cli(*args, cwd=str(tmp_path))
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr


def test_garbage_model_file_is_a_format_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(200))
    r = cli("run", "-m", str(bad), "-p", "x", cwd=str(tmp_path))
    assert r.returncode == 1 and "bad.gguf" in r.stderr and "Traceback" not in r.stderr


def test_usage_errors_exit_2(here):
    assert cli("run", cwd=here).returncode == 2            # missing -p
    assert cli("no-such-command", cwd=here).returncode == 2
    assert cli("run", "-p", "x", "-n", "many", cwd=here).returncode == 2


def test_debug_shows_the_traceback(here):
    r = cli("--debug", "info", "/nonexistent/model.gguf", cwd=here)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_chat_ctrl_c_stops_the_reply_not_the_program(tmp_path):
    """Through a real pty: Ctrl-C (SIGINT) during a long reply ends that reply; the next turn works."""
    import pty
    import select
    import signal
    import time

    from serial_harness import write_slow_model

    # ~7 ms per token: the ~1000-token note cannot finish before the interrupt, however loaded the machine
    slow_model = str(write_slow_model(tmp_path / "slow.gguf"))

    schema = tmp_path / "long.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"note": {"type": "string", "minLength": 3000,
                                                                              "maxLength": 3000}},
                                  "required": ["note"], "additionalProperties": False}))
    env = subprocess_env()
    pid, fd = pty.fork()
    if pid == 0:  # child: the chat program on the pty
        os.chdir(str(tmp_path))
        os.execve(sys.executable, [sys.executable, "-m", "edge_runtime", "chat", "-m", slow_model,
                                   "--json-schema", str(schema), "-n", "3100", "-t", "1", "--seed", "1"], env)

    def read_until(pred, timeout):
        buf, end = b"", time.monotonic() + timeout
        while time.monotonic() < end and not pred(buf):
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    buf += os.read(fd, 65536)
                except OSError:
                    break
        return buf

    try:
        assert b"> " in read_until(lambda b: b"> " in b, 60)
        os.write(fd, b"write a long note\r")
        got = read_until(lambda b: b'{"note":"' in b, 60)
        assert b'{"note":"' in got
        os.kill(pid, signal.SIGINT)
        got = read_until(lambda b: b"[stopped]" in b and b"> " in b.split(b"[stopped]")[-1], 60)
        assert b"[stopped]" in got, got[-300:]
        os.write(fd, b"\x04")  # Ctrl-D at the prompt quits cleanly
        read_until(lambda b: False, 5)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
