"""Registry-grounded replies, for a model large enough to read the home (2B4T and its kind).

The small embedded model copies spans (edge_runtime.assist.slots) and the resolver grounds them. A
large model instead sees the home's entity list in its system prompt and answers with an entity id
directly::

    {"intent":"brightness","entity_id":"light.landing","value":40,"mode":null}

and its reply is confined by ``registry_schema``, built from the registry per request: an ``anyOf``
with one branch per permitted intent and the entities that intent can act on (an unlock branch
exists only when the request's words permit unlocking; a brightness branch names only lights that
dim), values confined to the numbers the request contains and, per climate entity, to its
min_temp..max_temp, HVAC modes to those the entity has and the request names. Whatever such a model
samples names a real entity, with an intent the words permit, and a number the user said.
"""

from __future__ import annotations

import json

from edge_runtime.assist import lexicon
from edge_runtime.assist.resolve import INTENT_DOMAINS

KEYS = ("intent", "entity_id", "value", "mode")
PERCENT_INTENTS = {"brightness": "brightness", "position": "position", "fan_speed": "percentage"}
MAX_LISTED = 400        # entities listed in the prompt (a home's device list is typically 1-3k tokens)


def system_prompt(home) -> str:
    lines = ["You control a home. Answer with one JSON object: the intent, the entity_id it acts on, "
             "the number and the HVAC mode the request gives (null when it gives none). Devices:"]
    for e in list(home)[:MAX_LISTED]:
        lines.append(f"- {e.entity_id}: {e.name or e.friendly_name or e.object_id}"
                     + (f" (area {e.area})" if e.area else ""))
    return "\n".join(lines)


def messages(home, normalized_text: str) -> list[dict]:
    return [{"role": "system", "content": system_prompt(home)}, {"role": "user", "content": normalized_text}]


def _numbers(numbers, low=None, high=None):
    out = sorted({int(n) if float(n).is_integer() else float(n) for n in numbers
                  if (low is None or n >= low) and (high is None or n <= high)})
    return out


def _branch(intent, ids, value=None, mode=None):
    return {"type": "object",
            "properties": {"intent": {"const": intent}, "entity_id": {"enum": ids},
                           "value": value if value is not None else {"const": None},
                           "mode": mode if mode is not None else {"const": None}},
            "required": list(KEYS), "additionalProperties": False}


def registry_schema(home, permitted, numbers, modes_said=()) -> dict:
    """The schema of a grounded reply to one request (see the module docstring)."""
    permitted = set(permitted)
    entities = list(home)
    branches = [{"type": "object", "properties": {"intent": {"const": "none"}, "entity_id": {"const": None},
                                                  "value": {"const": None}, "mode": {"const": None}},
                 "required": list(KEYS), "additionalProperties": False}]
    for intent in sorted(permitted - {"none"}):
        domains = INTENT_DOMAINS.get(intent, ())
        targets = [e for e in entities if e.domain in domains]
        if intent in PERCENT_INTENTS:
            targets = [e for e in targets if e.supports(PERCENT_INTENTS[intent])]
            said = _numbers(numbers, 0, 100)
            if targets and said:
                branches.append(_branch(intent, [e.entity_id for e in targets], {"enum": said}))
        elif intent == "temperature":
            for e in targets:       # each thermostat's own range
                said = _numbers(numbers, e.min_temp, e.max_temp)
                if said:
                    branches.append(_branch(intent, [e.entity_id], {"enum": said}))
        elif intent == "hvac_mode":
            for e in targets:
                allowed = [m for m in e.modes if m in set(modes_said)]
                if allowed:
                    branches.append(_branch(intent, [e.entity_id], mode={"enum": allowed}))
        elif targets:
            branches.append(_branch(intent, [e.entity_id for e in targets]))
    return {"anyOf": branches}


def parse_reply(text: str) -> dict | None:
    try:
        obj = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("intent"), str):
        return None
    return {k: obj.get(k) for k in KEYS}


def modes_in(normalized_text: str) -> list[str]:
    return sorted(lexicon.modes_in(lexicon.words_of(normalized_text)))
