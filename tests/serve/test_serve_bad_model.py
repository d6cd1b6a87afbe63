"""A model file that cannot serve keeps both services from starting: one clear line on stderr, a
non-zero exit, and over MQTT no `online` status (so clients are never told a broken board is up)."""
import shutil
import struct
import subprocess
import sys
import time

import pytest
from conftest import subprocess_env
from mqtt_harness import Broker, Peer, requires_mosquitto
from serial_harness import Pty

from edge_runtime.formats.random_model import write_random_model
from edge_runtime.model.model import default_model_path


def bad_eos_model(tmp_path):
    """The packaged model with eos id 4096 (one past its 4096-token vocabulary)."""
    path = tmp_path / "eos4096.gguf"
    shutil.copy(default_model_path(), path)
    data = bytearray(path.read_bytes())
    key = b"tokenizer.ggml.eos_token_id"
    at = data.find(struct.pack("<Q", len(key)) + key) + 8 + len(key)
    assert struct.unpack_from("<I", data, at)[0] == 4  # u32
    struct.pack_into("<I", data, at + 4, 4096)
    path.write_bytes(data)
    return path


def no_tokenizer_model(tmp_path):
    return write_random_model(str(tmp_path / "no-tokenizer.gguf"), shape="tiny")


def check_refused(proc_result, path, what):
    err = proc_result.stderr.decode("utf-8", "replace").strip().splitlines()
    assert proc_result.returncode == 1, (proc_result.returncode, err)
    assert len(err) == 1, err
    assert err[0].startswith("edge-runtime: error: ") and str(path) in err[0] and what in err[0], err
    assert "Traceback" not in err[0]


@requires_mosquitto
@pytest.mark.parametrize("make, what", [(bad_eos_model, "eos"), (no_tokenizer_model, "no tokenizer")])
def test_mqtt_service_refuses_a_bad_model_and_never_reports_online(tmp_path, make, what):
    path = make(tmp_path)
    broker = Broker(str(tmp_path / "broker")).start()
    peer = Peer(broker.port)
    try:
        peer.subscribe("#")
        result = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "mqtt", "-m", str(path), "-t", "1",
                                 "--broker", f"127.0.0.1:{broker.port}", "--device-id", "dut"],
                                env=subprocess_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        check_refused(result, path, what)
        time.sleep(0.3)
        assert not [m for m in peer.messages if m.topic.startswith("edge/")], [m.topic for m in peer.messages]
    finally:
        peer.close()
        broker.stop()


@pytest.mark.parametrize("make, what", [(bad_eos_model, "eos"), (no_tokenizer_model, "no tokenizer")])
def test_serial_service_refuses_a_bad_model(tmp_path, make, what):
    path = make(tmp_path)
    pty = Pty(tmp_path / "ttyEDGE0")
    try:
        result = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "serial", "--model", str(path),
                                 "-t", "1", "--port", pty.link], env=subprocess_env(), stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=60)
        check_refused(result, path, what)
        assert pty.read_some(0.2) == b""  # nothing was ever written to the line
    finally:
        pty.close()
