"""A small, fast run of the trainer: the checkpoint it writes converts with `edge-runtime convert` and
answers in the slot contract through the runtime."""
import json
import subprocess
import sys

import jsonschema
import pytest

from conftest import subprocess_env
from edge_runtime.assist import lexicon, slots


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load BitNet checkpoints")
    from edge_runtime.training import train_tiny

    root = tmp_path_factory.mktemp("smoke")
    out, log = root / "tiny", root / "train.log"
    status = train_tiny.main(["--out", str(out), "--seed", "3", "--steps", "12", "--batch", "8",
                              "--hidden", "128", "--ffn", "256", "--layers", "1", "--heads", "2", "--kv-heads", "1",
                              "--vocab", "400", "--tokenizer-examples", "96", "--eval-n", "11", "--warmup", "2",
                              "--log", str(log)])
    assert status == 0
    return out, log


def test_checkpoint_is_a_packed_bitnet_that_reloads_exactly(trained):
    import torch
    from safetensors import safe_open

    out, log = trained
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "training_summary.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                             "quantization_mode": "offline"}
    assert config["tie_word_embeddings"] is True and config["hidden_act"] == "relu2"
    with safe_open(str(out / "model.safetensors"), "pt") as tensors:
        names = set(tensors.keys())
        q = tensors.get_tensor("model.layers.0.self_attn.q_proj.weight")
        scale = tensors.get_tensor("model.layers.0.self_attn.q_proj.weight_scale")
    assert "lm_head.weight" not in names
    assert q.dtype == torch.uint8 and tuple(q.shape) == (128 // 4, 128)
    assert scale.shape == (1,) and float(scale) > 0
    for shift in (0, 2, 4, 6):           # every 2-bit code is ternary + 1: never 3
        assert int(((q >> shift) & 3).max()) <= 2
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["reload"]["same_greedy"] == summary["reload"]["prompts"] > 0
    assert summary["metrics"]["heldout"]["n"] == 11
    text = log.read_text()
    assert "corpus: 96 training examples" in text and "heldout (greedy, unconstrained)" in text


def test_checkpoint_converts_and_answers_in_the_slot_contract_through_the_runtime(trained, tmp_path):
    from edge_runtime.model.model import Model

    out, _ = trained
    gguf = tmp_path / "smoke.gguf"
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "convert", str(out), "-o", str(gguf), "--head", "f16",
                        "--name", "smoke"], capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    text = "dim the landing light to forty five percent"
    norm = lexicon.normalize(text)
    schema = slots.slot_schema(norm.split(), lexicon.numbers_in(norm), lexicon.permitted_intents(text, norm))
    with Model(str(gguf), n_threads=1, n_ctx=256) as model:
        assert model.config.n_vocab <= 400 and model.config.n_layers == 1
        reply = model.create_chat_completion(slots.messages(norm), json_schema=schema, temperature=0.0,
                                             max_tokens=160, repeat_penalty=1.0)["choices"][0]["message"]["content"]
    got = slots.parse_slots(reply)
    assert got is not None, reply
    jsonschema.validate(got, schema)
    assert got["intent"] not in ("turn_off", "close", "unlock")   # the constraint alone bars the opposite


def test_train_tiny_rejects_bad_settings(tmp_path, capsys):
    pytest.importorskip("torch")
    from edge_runtime.training import train_tiny

    with pytest.raises(SystemExit) as stop:
        train_tiny.main(["--out", str(tmp_path), "--steps", "0"])
    assert stop.value.code == 2 and "--steps 0" in capsys.readouterr().err
    status = train_tiny.main(["--out", str(tmp_path), "--steps", "1", "--batch", "2", "--hidden", "200",
                              "--ffn", "256", "--layers", "1", "--vocab", "300", "--tokenizer-examples", "2"])
    assert status == 1 and "--hidden 200" in capsys.readouterr().err
