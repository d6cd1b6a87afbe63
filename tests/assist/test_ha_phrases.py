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
