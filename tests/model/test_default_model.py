"""The embedded home-assistant model that ships inside the package: it loads with no -m, fills the
slot contract (edge_runtime.assist.slots) for fixed and held-out commands through the runtime, under
the same constraint the assistant uses, over the assist CLI and over MQTT; and the runtime computes
what the reference computes on the same weights."""
import json
import os
import subprocess
import sys

import pytest

from conftest import subprocess_env
from edge_runtime.assist import lexicon, slots
from edge_runtime.model.model import Model, default_model_path
from edge_runtime.training import evaluate_assist


# The shipped file predates the slot contract (edge_runtime/assist/slots.py): until the retrained model
# lands these must fail (strict), and the assistant reads intents from the lexicon instead.
_PREDATES_CONTRACT = pytest.mark.xfail(strict=True, reason="the shipped model predates the slot contract")


@pytest.fixture(scope="module")
def model():
    assert default_model_path() is not None, "the package must ship its default model"
    with Model(n_threads=1, n_ctx=512) as m:
        yield m


def ask(model, text):
    norm = lexicon.normalize(text)
    schema = slots.slot_schema(norm.split(), lexicon.numbers_in(norm), lexicon.permitted_intents(text, norm))
    out = model.create_chat_completion(slots.messages(norm), json_schema=schema, temperature=0.0, max_tokens=64,
                                       repeat_penalty=1.0)
    return slots.parse_slots(out["choices"][0]["message"]["content"])


def test_shipped_model_is_small_bitnet_with_its_own_vocabulary(model):
    assert os.path.getsize(default_model_path()) <= 16 * 2**20
    c = model.config
    assert c.arch == "bitnet-b1.58" and c.n_heads > c.n_kv_heads   # the 2B4T family: GQA, ternary layers
    assert 1000 <= c.n_vocab <= 16000
    assert model.tokenizer.eot_id is not None


@pytest.mark.parametrize("text, want", [
    ("turn off the landing light", {"intent": "turn_off", "name": "landing light"}),
    ("open the garage", {"intent": "open", "name": "garage"}),
    ("lock the side gate", {"intent": "lock", "name": "side gate"}),
    ("dim the kitchen to 40%", {"intent": "brightness", "name": "kitchen", "value": 40}),
    ("set the fan to half", {"intent": "fan_speed", "name": "fan", "value": 50}),
    ("make it 21 degrees in the lounge", {"intent": "temperature", "area": "lounge", "value": 21}),
    ("is the front door locked", {"intent": "query", "name": "front door"}),
    ("turn off the light in the kitchen", {"intent": "turn_off", "name": "light", "area": "kitchen"}),
    ("I'm heading out, shut the side gate", {"intent": "close", "name": "side gate"}),
    ("please switch the hall lamp on", {"intent": "turn_on", "name": "hall lamp"}),
    ("set the bedroom thermostat to twenty one and a half degrees",
     {"intent": "temperature", "name": "bedroom thermostat", "value": 21.5}),
    ("order a pizza", {"intent": "none"}),
])
@_PREDATES_CONTRACT
def test_fixed_commands_through_the_runtime(model, text, want):
    assert ask(model, text) == {k: want.get(k) for k in slots.SLOT_KEYS}


@_PREDATES_CONTRACT
def test_heldout_accuracy_through_the_runtime(model):
    # issue 17's bar: >= 95% of held-out requests (homes, names and phrasings never seen in training)
    # with every slot right, and never the opposite intent
    examples = evaluate_assist.heldout(12, seed=5)
    rows = evaluate_assist.run_slots(model, examples)
    right = sum(r["ok"] for r in rows)
    misses = [(ex.text, ex.reply, r["got"]) for ex, r in zip(examples, rows) if not r["ok"]]
    assert right / len(rows) >= 0.95, misses[:10]
    assert sum(r["opposite"] for r in rows) == 0


HOME = {
    "homeassistant/light/landing/config": {"name": None, "command_topic": "landing/set", "state_topic": "landing/state",
                                           "brightness_command_topic": "landing/brightness/set",
                                           "device": {"identifiers": ["landing"], "name": "Landing Light",
                                                      "suggested_area": "Landing"}},
    "homeassistant/lock/side_gate/config": {"name": None, "command_topic": "gate/set", "state_topic": "gate/state",
                                            "device": {"identifiers": ["gate"], "name": "Side Gate",
                                                       "suggested_area": "Garden"}},
}


@pytest.mark.parametrize("text, action, entity", [
    ("dim the landing light to forty percent", "light.turn_on", "light.landing"),
    ("could you lock the side gate", "lock.lock", "lock.side_gate"),
    ("what's the weather tomorrow", None, None),
])
def test_assist_cli_with_the_embedded_model(tmp_path, text, action, entity):
    home = tmp_path / "home.json"
    home.write_text(json.dumps(HOME))
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "assist", "--home", str(home), "--dry-run", "-p", text],
                       capture_output=True, text=True, cwd=str(tmp_path), env=subprocess_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["action"] == action, result
    if entity:
        assert result["entity_id"] == entity


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
    for ex in evaluate_assist.heldout(1, seed=7):
        ids = encode_chat(tok, ex.messages)
        seq = list(ids)
        with torch.no_grad():
            for _ in range(64):
                nxt = int(ref(torch.tensor([seq])).logits[0, -1].argmax())
                if nxt in end:
                    break
                seq.append(nxt)
        want = tok.decode(seq[len(ids):]).decode()
        out = model.create_chat_completion(ex.messages, max_tokens=64, temperature=0.0, repeat_penalty=1.0)
        assert out["choices"][0]["message"]["content"] == want


@_PREDATES_CONTRACT
def test_mqtt_sample_of_heldout_commands(tmp_path):
    """A sample of held-out requests through `edge-runtime serve mqtt` with no -m, constrained per request."""
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
        examples = evaluate_assist.heldout(2, seed=3)
        right = 0
        for i, ex in enumerate(examples):
            topic = f"edge/home/response/{i}"
            peer.subscribe(topic)
            peer.publish("edge/home/request", {"id": i, "messages": ex.messages, "temperature": 0,
                                               "repeat_penalty": 1.0, "json_schema": ex.schema()})
            final = peer.final(topic)
            right += evaluate_assist.slots_right(slots.parse_slots(final["text"]), ex.slots)
        assert right / len(examples) >= 0.85, right
    finally:
        peer.close()
        proc.terminate()
        proc.wait(30)
        broker.stop()
