"""The word-level reading behind `serve wyoming` (edge_runtime.assist.ha_phrases) ends on every input:
a verb word that reads as a noun ("the purple lock", "the orchid switch") is kept and the reading
moves on. "relock purple lock please" used to spin forever in the verb pass, so the service never
answered that request."""
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.assist import ha_phrases, lexicon
from edge_runtime.assist.ha_intents import INTENT_MAP

VOCAB = sorted({w for p in ha_phrases._VERBS for w in p.split()} | set(ha_phrases._NOUN_VERBS)
               | {"the", "purple", "lock", "door", "lamp", "on", "desk", "please", "garage", "all", "50", "percent"})


def finishes(fn, *args, timeout=10.0):
    """fn(*args) in a thread; the result, or AssertionError if it has not returned in timeout s."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    t.join(timeout)
    assert out, f"{fn.__name__}{args!r} did not return within {timeout} s"
    return out[0]


def test_a_verb_word_read_as_a_noun_is_kept_and_the_reading_goes_on():
    assert finishes(ha_phrases._drop_verbs, "relock purple lock please".split()) == ["purple", "lock", "please"]
    assert finishes(ha_phrases._drop_verbs, "the lamp on the desk".split()) == ["the", "lamp", "on", "the", "desk"]
    normalized = lexicon.normalize("dinner's ready, relock purple lock please and thanks")
    got = finishes(ha_phrases.slots_from_words, normalized, set(INTENT_MAP))
    assert got["intent"] == "lock" and "purple" in (got["name"] or "")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=12))
def test_every_word_sequence_is_read_to_its_end(words):
    kept = finishes(ha_phrases._drop_verbs, list(words), timeout=5.0)
    assert len(kept) <= len(words) and all(w in words for w in kept)
    for intent in ("turn_on", "lock", "position"):
        finishes(ha_phrases.device_phrase, " ".join(words), intent, timeout=5.0)


PERMITTED = set(INTENT_MAP) | {"hvac_mode"}


def read(text):
    return finishes(ha_phrases.slots_from_words, lexicon.normalize(text), PERMITTED)


def test_the_state_a_device_should_end_in_names_the_action_and_never_its_opposite():
    cases = {"get the back door locked": ("lock", "back door"),
             "get the back door unlocked": ("unlock", "back door"),
             "the side gate needs locking thanks a lot": ("lock", "side gate"),
             "the side gate needs unlocking": ("unlock", "side gate"),
             "the front door needs to be locked": ("lock", "front door"),
             "the porch blind should be closed": ("close", "porch blind"),
             "get the lights turned off": ("turn_off", "lights"),
             "the heater needs turning on": ("turn_on", "heater")}
    for text, (intent, name) in cases.items():
        got = read(text)
        assert (got["intent"], got["name"]) == (intent, name), (text, got)


def test_a_heating_or_cooling_mode_is_not_an_on_off():
    assert read("i want the ac on heating")["intent"] == "hvac_mode"
    assert read("set the thermostat to auto") == dict(read("set the thermostat to auto"), intent="hvac_mode",
                                                       mode="auto")
    assert read("turn on the heating")["intent"] == "turn_on"
    assert read("turn the heating on")["intent"] == "turn_on"


def test_an_opening_to_a_percentage_is_a_position_and_a_light_keeps_its_brightness():
    got = read("put the bay skylight at eighty seven percent open")
    assert (got["intent"], got["name"], got["value"]) == ("position", "bay skylight", 87)
    assert read("turn on the desk lamp at 40 percent")["intent"] != "position"


def test_hesitations_and_trailing_courtesies_are_not_names():
    got = read("shut the west blind in the library please thanks a uhh lot")
    assert (got["intent"], got["name"], got["area"]) == ("close", "west blind", "library")
    assert read("unlock the smart lock for the guests")["name"] == "smart lock"


def test_the_command_is_the_last_clause_that_is_one():
    assert ha_phrases.command_clauses("dinner's ready, relock the purple lock") == ["relock the purple lock",
                                                                                    "dinner's ready"]
    assert ha_phrases.command_clauses("lock the door") == ["lock the door"]
    assert ha_phrases.command_clauses("we're leaving now so power off the heat pump") == [
        "power off the heat pump", "we're leaving now"]
    assert read("can i get the porch lamp on")["name"] == "porch lamp"


def test_what_is_not_a_device_or_not_about_one_is_no_command():
    for text in ("put light bulbs on the list", "open my email", "set the volume to 30 percent",
                 "what does a thermostat do", "how does the heat pump work"):
        assert read(text)["intent"] == "none", text
    assert read("turn on the radio")["intent"] == "turn_on"  # a plug may be called that


def test_a_state_question_without_its_verb_is_a_question():
    for text in ("any annex fan off", "some of my snug lights off", "some library gate unlocked"):
        assert read(text)["intent"] == "query", text
    assert read("turn the annex fan off")["intent"] == "turn_off"
