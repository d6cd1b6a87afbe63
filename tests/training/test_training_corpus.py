"""The training corpus: random homes, Home Assistant's templates, our families, the slot convention,
determinism, and the split between training and held-out data."""

import random
import re

import jsonschema
import pytest

from edge_runtime.assist import lexicon, slots
from edge_runtime.training import corpus, homes, paraphrase, spoken, templates


def _rows(examples):
    return [(e.text, e.normalized, e.reply, e.kind, e.family) for e in examples]


def test_generate_is_deterministic_per_seed_and_grows_without_reshuffling():
    for split in corpus.SPLITS:
        first = corpus.generate(split, 120, 11)
        assert _rows(first) == _rows(corpus.generate(split, 120, 11))
        assert _rows(first) != _rows(corpus.generate(split, 120, 12))
    assert _rows(corpus.generate("train", 40, 3)) == _rows(corpus.generate("train", 70, 3))[:40]


@pytest.mark.parametrize("split", corpus.SPLITS)
def test_every_reply_parses_and_fits_its_own_schema(split):
    for ex in corpus.generate(split, 600, 5):
        parsed = slots.parse_slots(ex.reply)
        assert parsed == ex.slots, ex
        assert ex.reply == slots.slot_json(parsed) and " " not in ex.reply.replace(ex.slots["name"] or "", "") \
            .replace(ex.slots["area"] or "", "")
        jsonschema.validate(parsed, ex.schema())
        assert ex.normalized == lexicon.normalize(ex.text)
        assert ex.slots["intent"] in lexicon.permitted_intents(ex.text, ex.normalized), ex
        words = ex.normalized.split()
        for key in ("name", "area"):
            if ex.slots[key] is not None:
                assert ex.slots[key] in slots.spans(words), (key, ex)
        if ex.slots["intent"] == "none":
            assert [ex.slots[k] for k in ("name", "area", "value", "mode")] == [None] * 4
        if ex.slots["intent"] in lexicon.VALUE_INTENTS:
            assert ex.slots["value"] in lexicon.numbers_in(ex.normalized)
        else:
            assert ex.slots["value"] is None
        assert (ex.slots["mode"] is not None) == (ex.slots["intent"] == "hvac_mode")


def test_every_kind_and_both_sources_occur():
    train = corpus.generate("train", 1500, 0)
    assert {e.kind for e in train} == set(corpus.KINDS) - {"missing"}
    assert {e.family.split("/")[0] for e in train} == {"ha", "ours"}
    heldout = corpus.generate("heldout", 220, 0, kinds=corpus.KINDS)
    assert [e.kind for e in heldout[:11]] == list(corpus.KINDS)
    assert all(e.missing for e in heldout if e.kind == "missing")
    for e in heldout:
        if e.missing:   # the home really lacks it, and the request still names it
            assert e.device.name not in {d.name for d in e.home.devices}
            assert e.slots["name"] is not None


def test_splits_share_no_home_words_families_or_requests():
    train_areas = set(homes.AREAS["train"]) | set(homes.MODIFIERS["train"])
    held_areas = set(homes.AREAS["heldout"]) | set(homes.MODIFIERS["heldout"])
    assert not train_areas & held_areas
    assert not set(homes.SYLLABLES["train"]) & set(homes.SYLLABLES["heldout"])
    for table in (paraphrase.OUT_OF_SCOPE, paraphrase.FILLERS):
        assert not set(table["train"]) & set(table["heldout"])
    for where in ("before", "after"):
        assert not set(paraphrase.WRAPPERS["train"][where]) & set(paraphrase.WRAPPERS["heldout"][where])
    train = corpus.generate("train", 3000, 2)
    heldout = corpus.generate("heldout", 600, 2, kinds=corpus.KINDS)
    assert not {e.family for e in train} & {e.family for e in heldout if e.family != "ours/out_of_scope"}
    train_names = {d.name for e in train for d in e.home.devices} | {a for e in train for a in e.home.areas}
    held_names = {d.name for e in heldout for d in e.home.devices} | {a for e in heldout for a in e.home.areas}
    # held-out names and areas: none of their modifier/area words was a name or area word in training
    device_words = {w for pairs in homes.DEVICE_WORDS.values() for pair in pairs for p in pair if p
                    for w in p.split()}
    train_words = {w for n in train_names for w in n.split()} - device_words - {"room", "hall", "wing", "suite", "den"}
    held_words = {w for n in held_names for w in n.split()} - device_words - {"room", "hall", "wing", "suite", "den"}
    assert not train_words & held_words, sorted(train_words & held_words)[:10]
    assert not {e.normalized for e in train} & {e.normalized for e in heldout if e.kind != "out_of_scope"}


def test_home_assistant_templates_are_loaded_and_split_by_family():
    everything = templates.templates("en")
    families = {t.family for t in everything}
    assert len(families) == len(everything) > 300
    intents = {t.ha_intent for t in everything}
    assert {"HassTurnOn", "HassTurnOff", "HassLightSet", "HassSetPosition", "HassClimateSetTemperature",
            "HassFanSetSpeed", "HassGetState"} <= intents
    train, held = templates.templates_for("train"), templates.templates_for("heldout")
    assert len(train) + len(held) == len(everything)
    assert 0.1 < len(held) / len(everything) < 0.3
    for name in ("HassTurnOn", "HassTurnOff", "HassLightSet", "HassGetState"):
        assert any(t.ha_intent == name for t in train) and any(t.ha_intent == name for t in held)


def test_home_assistant_intents_map_per_domain():
    # a cover's HassTurnOn opens it, a lock's locks it, and HassTurnOff on a lock unlocks
    assert templates.INTENT_MAP["HassTurnOn"]["cover"] == "open"
    assert templates.INTENT_MAP["HassTurnOn"]["lock"] == "lock"
    assert templates.INTENT_MAP["HassTurnOff"]["lock"] == "unlock"
    home = homes.random_home("train", 5, complete=True)
    rng = random.Random(0)
    seen = set()
    for _ in range(400):
        s = templates.sample(rng, "train", home, ha_intents=("HassTurnOn", "HassTurnOff"))
        if s is None or s.device is None:
            continue
        seen.add((s.device.domain, s.intent))
        assert s.intent == templates.INTENT_MAP[s.family.split("/")[1]][s.device.domain]
    assert ("cover", "open") in seen and ("light", "turn_off") in seen


def _seg(*parts):
    return [spoken.Segment(t, r) for t, r in parts]


@pytest.mark.parametrize("parts, intent, value, want", [
    ((("turn off the ", None), ("light", "device"), (" in the ", None), ("kitchen", "area")), "turn_off", None,
     {"intent": "turn_off", "name": "light", "area": "kitchen"}),
    ((("turn off the ", None), ("kitchen", "area"), (" ", None), ("lights", "device")), "turn_off", None,
     {"intent": "turn_off", "name": "kitchen lights"}),
    ((("switch on the ", None), ("reading", "name"), (" ", None), ("lamp", "device")), "turn_on", None,
     {"intent": "turn_on", "name": "reading lamp"}),
    ((("set the ", None), ("lounge", "area"), (" to ", None), ("forty five", "value"), ("%", None)), "brightness", 45,
     {"intent": "brightness", "name": "lounge", "value": 45.0}),
    ((("make it ", None), ("21", "value"), (" degrees in the ", None), ("lounge", "area")), "temperature", 21,
     {"intent": "temperature", "area": "lounge", "value": 21.0}),
    ((("I'm heading out, shut the ", None), ("side gate", "name")), "close", None,
     {"intent": "close", "name": "side gate"}),
    ((("order a pizza", None),), "none", None, {"intent": "none"}),
])
def test_the_naming_convention(parts, intent, value, want):
    raw, norm, got = spoken.realize(_seg(*parts), intent, value)
    assert got == want, (raw, norm)


def test_number_words_and_slips_reach_the_model_normalized():
    assert spoken.number_words(45) == "forty five"
    assert spoken.number_words(21.5) == "twenty one and a half"
    assert spoken.number_words(100) == "one hundred"
    for n in (0, 7, 13, 20, 45, 99, 100, 21.5):
        assert lexicon.numbers_in(lexicon.normalize("to " + spoken.number_words(n))) == [float(n)]
    rng = random.Random(1)
    slipped = spoken.slip(rng, _seg(("turn off the ", None), ("landing", "name"), (" light", None)), 1.0)
    text = "".join(s.text for s in slipped)
    assert text != "turn off the landing light"
    assert lexicon.normalize(text).startswith("turn off")


def test_homes_write_discovery_configs_the_registry_reads():
    from edge_runtime.assist.home import Home

    home = homes.random_home("heldout", 3, complete=True)
    registry = Home.from_configs(home.discovery_configs())
    ids = {e.entity_id for e in registry}
    assert ids == {f"{d.domain}.{d.object_id}" for d in home.devices}
    for d in home.devices:
        e = registry.get(f"{d.domain}.{d.object_id}")
        assert re.sub(r"\s+", " ", e.name.lower()) == d.name
        assert (e.area or "").lower() == (d.area or "")
    assert {d.domain for d in home.devices} >= {"light", "switch", "fan", "cover", "lock", "climate"}


@pytest.mark.parametrize("args, field", [(("dev", 3, 0), "split"), (("train", -1, 0), "n")])
def test_generate_rejects_bad_arguments(args, field):
    with pytest.raises(ValueError, match=field):
        corpus.generate(*args)
    with pytest.raises(ValueError, match="kind"):
        corpus.generate("train", 3, 0, kinds=("on_off", "weather"))


def test_value_requests_name_devices_that_have_the_feature():
    # a held-out request to dim a light without a brightness topic would score a correct refusal as a miss
    seen = 0
    for kind in ("brightness", "position", "fan_speed"):
        for i in range(30):
            ex = corpus.example("heldout", 4, i, kind=kind)
            domain, feature = corpus.FEATURE_OF_INTENT[ex.slots["intent"]] if ex.slots["intent"] in \
                corpus.FEATURE_OF_INTENT else (None, None)
            if ex.missing or feature is None:
                continue
            if ex.device is not None:
                assert feature in ex.device.features, (ex.text, ex.device)
            else:
                assert any(d.domain == domain and feature in d.features and d.area == ex.slots["area"]
                           for d in ex.home.devices), ex.text
            seen += 1
    assert seen >= 60


def test_cut_requests_spell_the_same_text_and_are_reproducible():
    pytest.importorskip("tokenizers")
    from edge_runtime.training import train_tiny

    examples = corpus.generate("train", 200, 4)
    encoder = train_tiny.ChatEncoder(train_tiny.build_tokenizer(examples, 400))
    decode = encoder.tokenizer.decode
    cut_any = False
    for ex in examples[:60]:
        plain, learn = encoder.example(ex)
        a, learn_a = encoder.example(ex, cut=(random.Random(9), 0.5))
        b, _ = encoder.example(ex, cut=(random.Random(9), 0.5))
        assert a == b                                    # the same generator state, the same ids
        assert decode(a) == decode(plain)                # the same text, only in other pieces
        # the reply (what is learned) is never cut: it is the canonical slot JSON's own ids
        assert [t for t, m in zip(a, learn_a) if m] == [t for t, m in zip(plain, learn) if m]
        assert encoder.example(ex, cut=(random.Random(9), 0.0))[0] == plain
        cut_any |= a != plain
    assert cut_any
