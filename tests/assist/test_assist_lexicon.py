"""The lexicon: normalization, numbers, and the rule that bars the opposite of what was asked."""
import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.assist import lexicon, slots


@pytest.mark.parametrize("text, want", [
    ("Dim the landing light to forty-five %", "dim the landing light to 45 percent"),
    ("set the thermostat to twenty one and a half degrees", "set the thermostat to 21.5 degrees"),
    ("open the blinds halfway", "open the blinds 50 percent"),
    ("raise the shutter to three quarters", "raise the shutter to 75 percent"),
    ("Turn of the lite!", "turn off the light"),
    ("make it 21°C in the lounge", "make it 21 degrees in the lounge"),
    ("fan to a quarter", "fan to 25 percent"),
    ("set it to one hundred percent", "set it to 100 percent"),
    ("heat to 19.5", "heat to 19.5"),
])
def test_normalize(text, want):
    assert lexicon.normalize(text) == want


def test_numbers():
    assert lexicon.numbers_in(lexicon.normalize("between twenty and 30.5 percent")) == [20.0, 30.5]


OPPOSITE = {"lock": "unlock", "unlock": "lock", "open": "close", "close": "open", "turn_on": "turn_off",
            "turn_off": "turn_on"}


@pytest.mark.parametrize("text, asked", [
    ("lock the side gate", "lock"), ("please lock the front door lock", "lock"),
    ("secure the back door", "lock"), ("unlock the front door", "unlock"),
    ("open the garage", "open"), ("I'm heading out, shut the side gate", "close"),
    ("raise the shutter", "open"), ("lower the bedroom blinds", "close"),
    ("turn off the lamp on the desk", "turn_off"), ("switch the hall light on", "turn_on"),
    ("kill the kitchen lights", "turn_off"), ("lights on in the kitchen", "turn_on"),
    ("could you close the garage door", "close"), ("shut off the fan", "turn_off"),
])
def test_the_opposite_is_never_permitted(text, asked):
    permitted = lexicon.permitted_intents(text)
    assert OPPOSITE[asked] not in permitted, (text, sorted(permitted))
    assert asked in permitted


@pytest.mark.parametrize("text", ["is the front door locked?", "is the garage door open",
                                  "what's the temperature in the kitchen", "are the lights on upstairs"])
def test_a_question_permits_only_a_query(text):
    assert lexicon.permitted_intents(text) == {"query", "none"}


@pytest.mark.parametrize("text", ["don't unlock the door", "do not open the garage", "never turn off the fan"])
def test_a_negated_verb_permits_neither_side(text):
    permitted = lexicon.permitted_intents(text)
    for pair in (("lock", "unlock"), ("open", "close"), ("turn_on", "turn_off")):
        cues = lexicon.cues_in(lexicon.normalize(text).split())
        if {lexicon.INTENT_CUE[p] for p in pair} & cues:
            assert not set(pair) & permitted, (text, sorted(permitted))


def test_unlock_needs_an_unlock_word():
    for text in ("let me in the front door", "the front door please", "open up the front door lock"):
        assert "unlock" not in lexicon.permitted_intents(text), text


def test_value_intents_need_a_number_and_modes_a_mode_word():
    assert not set(lexicon.VALUE_INTENTS) & lexicon.permitted_intents("dim the lights")
    assert "brightness" in lexicon.permitted_intents("dim the lights to 30 percent")
    assert "hvac_mode" not in lexicon.permitted_intents("set the thermostat to 20")
    assert "hvac_mode" in lexicon.permitted_intents("put the thermostat in cooling mode")


_VERBS = {"lock": ["lock", "secure", "bolt"], "unlock": ["unlock", "unbolt"], "open": ["open", "raise", "lift"],
          "close": ["close", "shut", "lower"], "turn_on": ["turn on", "switch on", "start"],
          "turn_off": ["turn off", "switch off", "kill", "stop"]}
_NOUNS = ["the side gate", "the front door lock", "the garage door", "the lamp on the desk", "my bedroom blinds",
          "the patio light", "the fan in the office", "all the lights"]
_WRAP = ["{}", "please {}", "could you {}", "{} please", "I'm heading out, {}", "hey, {} now", "ok so {} thanks"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_VERBS)), st.data())
def test_property_no_sentence_permits_the_opposite_of_its_verb(asked, data):
    verb = data.draw(st.sampled_from(_VERBS[asked]))
    noun = data.draw(st.sampled_from(_NOUNS))
    wrap = data.draw(st.sampled_from(_WRAP))
    text = wrap.format(f"{verb} {noun}")
    assert OPPOSITE[asked] not in lexicon.permitted_intents(text), text


def test_slot_schema_admits_only_copies():
    text = "dim the landing light to 40 percent"
    norm = lexicon.normalize(text)
    schema = slots.slot_schema(norm.split(), lexicon.numbers_in(norm), lexicon.permitted_intents(text, norm))
    ok = slots.slot_json({"intent": "brightness", "name": "landing light", "value": 40})
    jsonschema.validate(json.loads(ok), schema)
    for bad in ({"intent": "brightness", "name": "porch light", "value": 40},
                {"intent": "brightness", "name": "landing light", "value": 45},
                {"intent": "query", "name": "landing", "area": "kitchen"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(json.loads(slots.slot_json(bad)), schema)
    lock = "lock the side gate"
    schema = slots.slot_schema(lock.split(), [], lexicon.permitted_intents(lock))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(slots.slot_json({"intent": "unlock", "name": "side gate"})), schema)


def test_slot_json_round_trip():
    s = {"intent": "temperature", "name": "thermostat", "area": "lounge", "value": 21.5, "mode": None}
    assert slots.parse_slots(slots.slot_json(s)) == s
    assert slots.slot_json({"intent": "none"}) == '{"intent":"none","name":null,"area":null,"value":null,"mode":null}'
    assert slots.parse_slots('{"intent":"explode"}') is None
    assert slots.parse_slots("not json") is None


@pytest.mark.parametrize("text, asked", [
    ("get the side gate locked", "lock"), ("the front door needs locking", "lock"),
    ("i need the patio door unlocked", "unlock"), ("the garage door closed now please", "close"),
    ("i want the blinds opened", "open"),
])
def test_a_state_word_after_the_device_asks_for_that_state(text, asked):
    permitted = lexicon.permitted_intents(text)
    assert asked in permitted and OPPOSITE[asked] not in permitted, sorted(permitted)


@pytest.mark.parametrize("text, mode", [
    ("i want the thermostat on heat", "heat"), ("put the boiler in heat and cool mode", "heat_cool"),
    ("switch the heating to cool", "cool"), ("dry mode on the ac please", "dry"), ("set the hvac to off", "off"),
    ("turn on the heating", None), ("turn the heating off", None), ("it's cooling down, close the blinds", None),
])
def test_the_mode_asked_is_the_one_said_as_a_mode(text, mode):
    assert lexicon.mode_asked(lexicon.normalize(text).split()) == mode
