"""The embedded home-assistant model that ships inside the package: it loads with no -m, it answers
held-out device commands (phrasings never seen in training) through the runtime, over the CLI and
over MQTT, and the runtime computes what the reference computes on the same weights."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env
from edge_runtime.model.model import Model, default_model_path
from edge_runtime.training import corpus
from edge_runtime.training.evaluate_runtime import FIELDS, evaluate, heldout_commands


@pytest.fixture(scope="module")
def model():
    assert default_model_path() is not None, "the package must ship its default model"
    with Model(n_threads=1, n_ctx=512) as m:
        yield m


def test_shipped_model_is_small_bitnet_with_its_own_vocabulary(model):
    import os

    assert os.path.getsize(default_model_path()) <= 10 * 2**20
    c = model.config
    assert c.arch == "bitnet-b1.58" and c.n_heads > c.n_kv_heads  # the 2B4T family: GQA, ternary layers
    assert 1000 <= c.n_vocab <= 16000
    assert model.tokenizer.eot_id is not None


def test_heldout_accuracy_through_the_runtime(model):
    # issue 8's bar: >= 90% right with the constraint, >= 95% JSON without it; the shipped model
    # measures 91.3% / 99.3% (seed 1, 300 commands)
    result = evaluate(model, heldout_commands(300, seed=1))
    assert result["n"] == 300
    assert result["constrained_accuracy"] >= 0.90, result
    assert result["unconstrained_json_rate"] >= 0.95, result


def test_cli_run_without_a_model_path(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "--chat", "-p", "turn on the kitchen light",
                        "--temp", "0", "-n", "40", "-t", "1"], capture_output=True, text=True, cwd=str(tmp_path),
                       env=subprocess_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"device": "light", "room": "kitchen", "action": "on"}


def test_runtime_matches_the_reference_on_the_same_weights(model, tmp_path):
    """Rebuild a transformers BitNet (AutoBitLinear, as trained) from the shipped file's weights and
    compare greedy replies token for token on held-out prompts."""
    torch = pytest.importorskip("torch")
    from helpers_hf import load_reference

    from edge_runtime.text.chat_format import encode_chat
    from edge_runtime.training.export_hf import gguf_to_hf_dir

    ref = load_reference(gguf_to_hf_dir(default_model_path(), tmp_path / "hf"), dtype="float32")
    tok = model.tokenizer
    end = {tok.eos_id, tok.eot_id}
    for ex in heldout_commands(12, seed=7):
        ids = encode_chat(tok, ex.messages)
        seq = list(ids)
        with torch.no_grad():
            for _ in range(40):
                nxt = int(ref(torch.tensor([seq])).logits[0, -1].argmax())
                if nxt in end:
                    break
                seq.append(nxt)
        want = tok.decode(seq[len(ids):]).decode()
        out = model.create_chat_completion(ex.messages, max_tokens=40, temperature=0.0, repeat_penalty=1.0)
        assert out["choices"][0]["message"]["content"] == want


def test_mqtt_sample_of_heldout_commands(tmp_path):
    """A sample of held-out commands through `edge-runtime serve mqtt` with no -m."""
    from test_serve_mqtt import Broker, Peer

    broker = Broker(str(tmp_path / "broker")).start()
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", "mqtt", "--broker",
                             f"127.0.0.1:{broker.port}", "--device-id", "home", "-t", "1"], cwd=str(tmp_path),
                            env=subprocess_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    peer = Peer(broker.port)
    try:
        peer.subscribe("edge/home/status")
        peer.wait_for(lambda m: m.topic == "edge/home/status" and m.payload == b"online", what="online")
        examples = heldout_commands(30, seed=3)
        right = 0
        for i, ex in enumerate(examples):
            topic = f"edge/home/response/{i}"
            peer.subscribe(topic)
            peer.publish("edge/home/request", {"id": i, "messages": ex.messages, "temperature": 0,
                                               "repeat_penalty": 1.0, "json_schema": corpus.COMMAND_SCHEMA})
            final = peer.final(topic)
            got = corpus.parse_command(final["text"]) or {}
            right += all(got.get(f) == ex.command.get(f) for f in FIELDS)
        assert right / len(examples) >= 0.80, right
    finally:
        peer.close()
        proc.terminate()
        proc.wait(30)
        broker.stop()
