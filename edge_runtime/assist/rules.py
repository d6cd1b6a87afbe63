"""Slots from the lexicon alone: the assistant's answer when a model gives no slot reply.

A model that does not follow the slot contract (a general chat model, a file trained for something
else) returns text that ``slots.parse_slots`` rejects; rather than failing, the assistant reads the
intent from the request's own cue words and leaves the names to the resolver, which then matches the
whole request against the registry. The permitted set still bounds the result.
"""

from __future__ import annotations

from edge_runtime.assist import lexicon

_KIND_WORDS = {d: set(ws) for d, ws in lexicon.DOMAIN_WORDS.items()}
_DIM = {"dim", "brighten", "brightness", "bright", "dimmer"}


def slots_from_words(normalized: str, permitted: set) -> dict:
    words = normalized.split()
    cues = lexicon.cues_in(words)
    has_number = bool(lexicon.numbers_in(normalized))
    kinds = lexicon.domains_named(words)
    intent = "none"

    def ok(i):
        return i in permitted

    if permitted <= {"query", "none"}:
        intent = "query" if kinds or len(words) > 2 else "none"
    elif has_number and ok("temperature") and ("degrees" in words or ("climate" in kinds and "percent" not in words)):
        intent = "temperature"
    elif has_number and ok("brightness") and (_DIM & set(words) or ("light" in kinds and "percent" in words)):
        intent = "brightness"
    elif has_number and ok("position") and "cover" in kinds:
        intent = "position"
    elif has_number and ok("fan_speed") and "fan" in kinds:
        intent = "fan_speed"
    elif ok("hvac_mode") and lexicon.mode_asked(words):
        intent = "hvac_mode"
    else:
        for cue, i in (("unlock", "unlock"), ("lock", "lock"), ("open", "open"), ("close", "close")):
            if cue in cues and ok(i):
                intent = i
                break
        else:
            # "stop" acts by the entity found: a cover stops, a light or fan goes off (assistant.ACTIONS)
            if "off" in cues and {"stop", "halt"} & set(words) and ok("stop"):
                intent = "stop"
            elif "off" in cues and ok("turn_off"):
                intent = "turn_off"
            elif "on" in cues and ok("turn_on"):
                intent = "turn_on"
    value = None
    if intent in lexicon.VALUE_INTENTS:
        value = lexicon.numbers_in(normalized)[-1]
    mode = None
    if intent == "hvac_mode":
        mode = lexicon.mode_asked(words)
    return {"intent": intent, "name": None, "area": None, "value": value, "mode": mode}
