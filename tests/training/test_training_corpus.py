"""The training corpus generator and a smoke run of the tiny-model trainer."""

import json
import re

import pytest

from edge_runtime.training import corpus

COMMAND_LIKE = ("command", "query", "scene")


def schema_errors(instance, schema, path="$"):
    """Errors of ``instance`` against the schema subset we use: object/properties/required,
    string, integer, enum. Keys outside ``properties`` count as errors."""
    errors = []
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(instance, dict):
            return [f"{path}: expected an object, got {instance!r}"]
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: missing required {key!r}")
        for key, value in instance.items():
            if key not in properties:
                errors.append(f"{path}: unexpected key {key!r}")
            else:
                errors += schema_errors(value, properties[key], f"{path}.{key}")
        return errors
    if kind == "string" and not isinstance(instance, str):
        errors.append(f"{path}: expected a string, got {instance!r}")
    if kind == "integer" and (not isinstance(instance, int) or isinstance(instance, bool)):
        errors.append(f"{path}: expected an integer, got {instance!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    return errors


def test_schema_check_rejects_bad_commands():
    schema = corpus.COMMAND_SCHEMA
    assert schema_errors({"device": "light", "room": "kitchen", "action": "on"}, schema) == []
    assert schema_errors({"device": "oven", "room": "kitchen", "action": "on"}, schema)
    assert schema_errors({"device": "light", "room": "kitchen"}, schema)
    assert schema_errors({"device": "fan", "room": "office", "action": "set", "value": "3"}, schema)
    assert schema_errors({"device": "fan", "room": "office", "action": "on", "colour": "red"}, schema)
    assert schema_errors([], schema)


def _as_tuples(examples):
    return [(json.dumps(e.messages), e.reply, e.kind, json.dumps(e.command), e.template)
            for e in examples]


def test_generate_is_deterministic_per_seed():
    for split in corpus.SPLITS:
        first = corpus.generate(split, 300, 11)
        assert _as_tuples(first) == _as_tuples(corpus.generate(split, 300, 11))
        assert _as_tuples(first) != _as_tuples(corpus.generate(split, 300, 12))
    # a longer list starts with the shorter one, so a training run can grow without reshuffling
    assert _as_tuples(corpus.generate("train", 50, 3)) == _as_tuples(corpus.generate("train", 80, 3))[:50]


def test_generate_covers_every_kind_and_device():
    examples = corpus.generate("train", 4000, 0)
    kinds = {e.kind for e in examples}
    assert kinds == {"command", "query", "scene", "chat", "refusal"}
    devices = {e.command["device"] for e in examples if e.command}
    assert devices == set(corpus.COMMAND_SCHEMA["properties"]["device"]["enum"])
    assert any(m["role"] == "system" for e in examples for m in e.messages)
    assert any(m["role"] == "assistant" for e in examples for m in e.messages)
    heldout_kinds = {e.kind for e in corpus.generate("heldout", 2000, 0)}
    assert heldout_kinds == kinds


def test_heldout_phrasings_never_appear_in_training():
    train_users = {m["content"].lower() for e in corpus.generate("train", 40000, 0)
                   for m in e.messages if m["role"] == "user"}
    heldout = corpus.generate("heldout", 3000, 0)
    leaked = [e.messages[-1]["content"] for e in heldout if e.messages[-1]["content"].lower() in train_users]
    assert leaked == []
    assert all(e.template.startswith("heldout/") for e in heldout)
    assert not {e.template for e in heldout} & {e.template for e in corpus.generate("train", 3000, 0)}


def test_split_word_tables_share_no_entry():
    tables = [(name, value) for name, value in vars(corpus).items()
              if isinstance(value, dict) and set(value) == set(corpus.SPLITS)]
    nested = [(f"{name}.{key}", sub) for name, value in vars(corpus).items() if isinstance(value, dict)
              for key, sub in value.items() if isinstance(sub, dict) and set(sub) == set(corpus.SPLITS)]
    assert len(tables) >= 8 and len(nested) >= 6
    for name, table in tables + nested:
        train, heldout = table["train"], table["heldout"]
        if isinstance(train, dict):  # chat phrases: intent -> phrases
            train = [p for phrases in train.values() for p in phrases]
            heldout = [p for phrases in heldout.values() for p in phrases]
        elif isinstance(train, str):
            train, heldout = [train], [heldout]
        shared = {p for p in heldout if p.strip()} & set(train)
        assert not shared, f"{name} shares {shared}"


def _split_tables():
    for name, value in vars(corpus).items():
        if isinstance(value, dict) and set(value) == set(corpus.SPLITS):
            yield value
        elif isinstance(value, dict):
            yield from (sub for sub in value.values() if isinstance(sub, dict) and set(sub) == set(corpus.SPLITS))


def _words(value):
    """Lower-case words of a table's strings, without the {slot} names."""
    if isinstance(value, str):
        return set(re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", value.lower())))
    items = value.values() if isinstance(value, dict) else value
    return set().union(set(), *(_words(v) for v in items))


def test_training_text_never_uses_a_heldout_only_word():
    tables = list(_split_tables())
    shared = _words([list(corpus.ROOMS.values()), list(corpus.SCENES.values()), corpus.SYSTEM_PROMPTS,
                     [d.names + d.plurals for d in corpus.DEVICES.values()], list(corpus._VERBS.values()),
                     list(corpus._STATES.values()), corpus.UNSUPPORTED_DEVICES, ["back door"]])
    heldout_only = _words([t["heldout"] for t in tables]) - _words([t["train"] for t in tables]) - shared
    assert {"kindly", "alright", "cheers", "straight"} <= heldout_only
    train_words = set()
    for example in corpus.generate("train", 20000, 4, noise_rate=1.0):
        for message in example.messages:
            if message["role"] == "user":
                train_words |= set(re.findall(r"[a-z]+", message["content"].lower()))
    assert not train_words & heldout_only, train_words & heldout_only
    # held-out text is never noised: each of its words comes from a held-out table or the vocabulary
    allowed = _words([t["heldout"] for t in tables]) | shared | {"one", "two", "three", "four", "five", "were",
                                                                  "blind", "shade", "curtain"}
    heldout_words = {w for e in corpus.generate("heldout", 3000, 4, noise_rate=1.0) for m in e.messages
                     if m["role"] == "user" for w in re.findall(r"[a-z]+", m["content"].lower())}
    assert heldout_words <= allowed, heldout_words - allowed


@pytest.mark.parametrize("split", corpus.SPLITS)
def test_command_replies_are_schema_valid_json(split):
    for example in corpus.generate(split, 3000, 5):
        if example.kind in COMMAND_LIKE:
            parsed = json.loads(example.reply)
            assert schema_errors(parsed, corpus.COMMAND_SCHEMA) == [], example.reply
            assert parsed == example.command
            assert example.reply == corpus.command_json(example.command)
            assert " " not in example.reply
            assert list(parsed)[:3] == ["device", "room", "action"]
            assert ("value" in parsed) == (parsed["action"] == "set")
            assert ("scene" in parsed) == (parsed["action"] == "activate")
        else:
            assert example.command is None
            assert corpus.parse_command(example.reply) is None
            assert example.reply.strip() == example.reply and example.reply


def test_values_stay_in_their_ranges():
    limits = {"light": (5, 100), "thermostat": (15, 28), "air_conditioner": (16, 28), "fan": (1, 5),
              "blinds": (0, 100), "speaker": (0, 100)}
    for example in corpus.generate("train", 3000, 9, kinds=("set",)):
        low, high = limits[example.command["device"]]
        assert low <= example.command["value"] <= high, example


def test_labels_agree_with_the_words_of_the_request():
    level_words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    for split in corpus.SPLITS:
        for example in corpus.generate(split, 4000, 1, kinds=("command", "set", "query"), system_rate=0,
                                       history_rate=0):
            text = example.messages[-1]["content"].lower()
            command = example.command
            device = corpus.DEVICES[command["device"]]
            names = device.names + device.plurals + {
                "door_lock": ("back door",), "thermostat": ("temperature", "warm", "cold", "hot")}.get(device.key, ())
            assert any(name.rstrip("s") in text for name in names), (text, command)
            if command["room"] != corpus.HOME and device.fixed_room is None:
                assert any(name in text for name in corpus.ROOMS[command["room"]]), (text, command)
            if command["action"] == "set":
                value = command["value"]
                said = {str(value), level_words.get(value), "halfway" if value == 50 else None} - {None}
                assert said & set(re.findall(r"[a-z0-9]+", text)), (text, command)


def test_render_text_matches_chat_format():
    text = corpus.render_text([{"role": "system", "content": "S "}, {"role": "user", "content": "hi"}], "Yo")
    assert text == "<|begin_of_text|>System: S<|eot_id|>User: hi<|eot_id|>Assistant: Yo<|eot_id|>"


@pytest.mark.parametrize("args, field", [(("dev", 3, 0), "split"), (("train", -1, 0), "n"),
                                         (("train", 2.0, 0), "n"), (("train", 3, "x"), "seed")])
def test_generate_rejects_bad_arguments(args, field):
    with pytest.raises(ValueError, match=field):
        corpus.generate(*args)
    with pytest.raises(ValueError, match="kinds"):
        corpus.generate("train", 3, 0, kinds=("command", "weather"))


def test_train_tiny_smoke_produces_loadable_checkpoint(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load BitNet checkpoints")
    # transformers wraps the BitNet quantizers in torch.compile; compiling them cold takes longer
    # than this whole run, so the smoke test runs the same functions eagerly.
    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    from safetensors import safe_open
    from tokenizers import Tokenizer
    from transformers import BitNetForCausalLM

    from edge_runtime.training import train_tiny

    out = tmp_path / "tiny"
    log = tmp_path / "train.log"
    status = train_tiny.main(["--out", str(out), "--seed", "3", "--steps", "4", "--batch", "4",
                              "--hidden", "128", "--ffn", "256", "--layers", "1", "--vocab", "400",
                              "--tokenizer-examples", "1500", "--eval-n", "4", "--warmup", "2",
                              "--log", str(log)])
    assert status == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "training_summary.json"} <= {p.name for p in out.iterdir()}
    assert "reload: " in log.read_text()

    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                             "quantization_mode": "offline"}
    assert config["tie_word_embeddings"] is True and config["hidden_act"] == "relu2"
    assert config["rope_parameters"]["rope_theta"] == 500000.0 and config["rms_norm_eps"] == 1e-5

    with safe_open(str(out / "model.safetensors"), "pt") as tensors:
        names = set(tensors.keys())
        q = tensors.get_tensor("model.layers.0.self_attn.q_proj.weight")
        scale = tensors.get_tensor("model.layers.0.self_attn.q_proj.weight_scale")
        embed = tensors.get_tensor("model.embed_tokens.weight")
    assert "lm_head.weight" not in names
    assert q.dtype == torch.uint8 and tuple(q.shape) == (128 // 4, 128)
    assert scale.dtype == torch.float32 and scale.shape == (1,) and float(scale) > 0
    assert embed.dtype == torch.float32
    # every 2-bit code is 0, 1 or 2 (ternary + 1), never 3
    for shift in (0, 2, 4, 6):
        assert int(((q >> shift) & 3).max()) <= 2

    model = BitNetForCausalLM.from_pretrained(str(out)).eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    eot = tokenizer.token_to_id("<|eot_id|>")
    assert eot is not None and tokenizer.token_to_id("<|begin_of_text|>") == config["bos_token_id"]
    ids = tokenizer.encode("User: turn on the kitchen light").ids
    assert ids[0] == config["bos_token_id"]
    assert tokenizer.decode(ids[1:]) == "User: turn on the kitchen light"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), config["vocab_size"]) and torch.isfinite(logits).all()

    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["reload"]["same_greedy"] == summary["reload"]["prompts"] > 0


def test_train_tiny_rejects_bad_settings(tmp_path, capsys):
    from edge_runtime.training import train_tiny

    with pytest.raises(SystemExit) as stop:
        train_tiny.main(["--out", str(tmp_path), "--steps", "0"])
    assert stop.value.code == 2 and "--steps 0" in capsys.readouterr().err
    status = train_tiny.main(["--out", str(tmp_path), "--steps", "1", "--hidden", "200", "--ffn", "256",
                              "--layers", "1", "--vocab", "300", "--tokenizer-examples", "300"])
    assert status == 1 and "--hidden 200" in capsys.readouterr().err
