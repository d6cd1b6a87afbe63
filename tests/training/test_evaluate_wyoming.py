"""The held-out Wyoming evaluation scores what Home Assistant would receive: the right intent with its
slots and numbers, no intent for what HA has none for, and unlocks held for a "yes" first. It runs the
real service over TCP with the wyoming package's client."""
import json

from edge_runtime.assist.ha_intents import HaIntent
from edge_runtime.training import evaluate_wyoming as ew


def entities(**slots):
    return [{"name": k, "value": v} for k, v in slots.items()]


def test_the_scorer_wants_the_intent_its_slots_and_its_numbers():
    want = HaIntent("HassLightSet", {"name": "landing light", "brightness": 40}, "")
    assert ew.event_right("intent", {"name": "HassLightSet", "entities": entities(name="the landing light",
                                                                                   brightness=40)}, want)
    assert not ew.event_right("intent", {"name": "HassLightSet", "entities": entities(name="landing light",
                                                                                       brightness=41)}, want)
    assert not ew.event_right("intent", {"name": "HassTurnOn", "entities": entities(name="landing light")}, want)
    assert not ew.event_right("intent", {"name": "HassLightSet", "entities": entities(name="hall light",
                                                                                       brightness=40)}, want)
    # a name may carry one extra word (HA's own matching forgives no more)
    assert not ew.event_right("intent", {"name": "HassLightSet", "entities": entities(
        name="landing light please now", brightness=40)}, want)
    assert not ew.event_right("not-recognized", {}, want)
    assert ew.event_right("not-recognized", {}, None) and ew.event_right("handled", {}, None)
    assert not ew.event_right("intent", {"name": "HassTurnOn", "entities": []}, None)


def test_a_run_through_the_real_service(capsys):
    assert ew.main(["--per-kind", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["requests"] == 22 and 0 <= summary["right"] <= 22
    assert summary["guarded_not_asked"] == 0
    assert set(summary["by_kind"]) >= {"on_off", "lock", "out_of_scope", "missing"}


def test_a_temperature_question_may_come_back_as_has_own_intent():
    want = HaIntent("HassGetState", {"name": "temperature", "area": "annex"}, "")
    assert ew.event_right("intent", {"name": "HassClimateGetTemperature", "entities": entities(area="annex")}, want)
    assert not ew.event_right("intent", {"name": "HassClimateGetTemperature", "entities": entities(area="loft")},
                              want)
