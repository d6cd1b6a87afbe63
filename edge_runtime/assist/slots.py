"""What the assistant's model is asked and what it answers: the slot contract.

The model never names an entity id. It reads the (normalized) request and answers one compact JSON
object of slots copied from it::

    {"intent":"brightness","name":"landing light","area":null,"value":40,"mode":null}

- ``intent``: one of INTENTS (the verb of the request, per domain resolved later).
- ``name``: the words of the request that name the device (``"landing light"``, ``"lights"``), or null.
- ``area``: the words of the request that name an area (``"kitchen"``), or null.
- ``value``: a number written in the request (after normalization: digits), or null.
- ``mode``: an HVAC mode (MODES) or null.

Naming convention (the model sees only the request, never the home, so it is decided by the words):

- ``name`` is the whole phrase that names the device, as said, with any area or other modifier in
  front of the device word kept in it: "turn off the kitchen lights" -> name ``kitchen lights``,
  area null; "switch on emma's reading lamp" -> ``emma's reading lamp``. With no device word, the
  generic word is the name ("lights", "blinds", "temperature"); a bare target with no device word
  and no preposition is the name too ("set the lounge to 40%" -> name ``lounge``).
- ``area`` is an area said apart from the name, as a place: "turn off the light in the kitchen" ->
  name ``light``, area ``kitchen``; "make it 21 degrees in the lounge" -> name null, area ``lounge``.
- The resolver tries an area word inside a name as an area too, so "the kitchen light" finds a
  device named "Light" in the Kitchen as well as one named "Kitchen Light".
- ``intent`` ``none`` (out of scope, or a negated request) carries no other slot. A device the home
  lacks is still copied (the resolver answers that it found nothing).

At run time the reply is constrained by a schema built per request (``slot_schema``): ``name`` and
``area`` are enums of the request's own word spans, ``value`` an enum of the numbers it contains, and
``intent`` an enum of the intents the request's verbs permit. So the model can only copy; the resolver
grounds the copies in the home registry. Training (edge_runtime.training) writes replies with
``slot_json`` so both sides agree byte for byte.
"""

from __future__ import annotations

import json

INTENTS = (
    "turn_on", "turn_off",          # light, switch, fan, climate
    "open", "close", "stop",        # cover
    "lock", "unlock",               # lock
    "brightness",                   # light, value = percent
    "position",                     # cover, value = percent open
    "fan_speed",                    # fan, value = percent
    "temperature",                  # climate, value = degrees
    "hvac_mode",                    # climate, mode
    "query",                        # a question about a state
    "none",                         # nothing the home can do
)

MODES = ("off", "heat", "cool", "auto", "heat_cool", "dry", "fan_only")

SLOT_KEYS = ("intent", "name", "area", "value", "mode")

SYSTEM_PROMPT = "Extract the home command slots as JSON."

MAX_SPAN_WORDS = 6


def slot_json(slots: dict) -> str:
    """The canonical reply text: keys in SLOT_KEYS order, absent keys null, no spaces."""
    ordered = {k: slots.get(k) for k in SLOT_KEYS}
    value = ordered["value"]
    if isinstance(value, float) and value.is_integer():
        ordered["value"] = int(value)
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)


def parse_slots(text: str) -> dict | None:
    """The slots of a model reply, or None when it is not a slot object."""
    try:
        obj = json.loads(text)
    except (ValueError, TypeError):
        return None
    if not isinstance(obj, dict) or obj.get("intent") not in INTENTS:
        return None
    out = {k: obj.get(k) for k in SLOT_KEYS}
    for k in ("name", "area", "mode"):
        if out[k] is not None and not isinstance(out[k], str):
            return None
    if out["value"] is not None and (isinstance(out["value"], bool) or not isinstance(out["value"], (int, float))):
        return None
    return out


def messages(normalized_text: str) -> list[dict]:
    """The chat messages the model is given for one request (text already normalized)."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": normalized_text}]


def spans(words: list[str], max_words: int = MAX_SPAN_WORDS) -> list[str]:
    """Every run of 1..max_words consecutive words, in order of first appearance, without repeats."""
    seen, out = set(), []
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + max_words) + 1):
            s = " ".join(words[i:j])
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def slot_schema(words: list[str], numbers: list[float], intents, names=None, areas=None) -> dict:
    """The JSON Schema that confines a reply to copies from this request and to permitted intents.

    ``names`` / ``areas``, when given, narrow the name and area enums further to those spans of the
    request (the assistant passes the spans that could name something in its home,
    ``resolve.name_spans`` / ``resolve.area_spans``); each must be a span of ``words``."""
    span_list = spans(words)
    offered = set(span_list)
    for given in (names, areas):
        bad = [x for x in given or () if x not in offered]
        if bad:
            raise ValueError(f"slot_schema: {bad[0]!r} is not a span of the request {' '.join(words)!r}")
    name_list = span_list if names is None else list(names)
    area_list = span_list if areas is None else list(areas)
    nums = sorted({int(n) if float(n).is_integer() else float(n) for n in numbers})
    return {
        "type": "object",
        "properties": {
            "intent": {"enum": [i for i in INTENTS if i in set(intents)]},
            "name": {"enum": name_list + [None]} if name_list else {"const": None},
            "area": {"enum": area_list + [None]} if area_list else {"const": None},
            "value": {"enum": nums + [None]},
            "mode": {"enum": list(MODES) + [None]},
        },
        "required": list(SLOT_KEYS),
        "additionalProperties": False,
    }
