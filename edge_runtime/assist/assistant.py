"""The assistant: a request in words -> a Home Assistant action call on this home's entities.

    a = Assistant(home)                                  # the embedded model
    r = a.interpret("dim the landing light to 40 percent")
    # {"action": "light.turn_on", "entity_id": "light.landing", "data": {"brightness_pct": 40}, "reply": "..."}
    a.execute(r)                                         # publishes what Home Assistant would

How one request goes (each step can only narrow what the next may do):

1. ``lexicon.normalize`` spells the request canonically; ``lexicon.permitted_intents`` decides from its
   verbs alone which intents the reply may take (never the opposite of what was asked).
2. The model fills the slots (slots.py), constrained by a JSON Schema built for this request: the
   intent is one of the permitted ones, the name and area are spans of the request that could name
   something in this home (``resolve.name_spans`` / ``area_spans``), the value one of its numbers. It
   cannot name an entity, invent a number or flip a verb.
   ``plan_slots`` then orders the readings to try: the lexicon's intent first where the words decide
   (a polarity verb, no number, no mode), the model's first where they do not; a number's meaning
   (brightness, position, fan speed, temperature) follows the entity found.
3. ``resolve.locate`` grounds each reading: every entity is scored against the whole request, the
   model's spans only settle what the request leaves open; nothing found or ambiguous -> no action.
4. The intent and the entity's domain give the action (``ACTIONS``); the action is checked against the
   permitted intents once more, and the data against the entity's ranges.
5. Unlocking, opening a garage door or gate, and disarming carry ``"confirm": true``;
   ``execute`` refuses them without confirmation.
"""

from __future__ import annotations

import logging
import threading

from edge_runtime.assist import grounded, lexicon, resolve, rules, slots
from edge_runtime.assist.actions import execute as _execute
from edge_runtime.assist.actions import needs_confirmation
from edge_runtime.assist.states import describe

MAX_TEXT_CHARS = 500
log = logging.getLogger("edge_runtime.assist")

# requests whose slots any model that follows the contract gets right; checked once per model
_PROBES = (("turn off the kitchen light", {"intent": "turn_off", "name": "kitchen light"}),
           ("lock the front door", {"intent": "lock", "name": "front door"}),
           ("set the bedroom fan to 30 percent", {"intent": "fan_speed", "name": "bedroom fan", "value": 30}))

GROUNDINGS = ("auto", "slots", "registry", "words")
LARGE_MODEL_DIM = 1024      # a model this wide reads the home's entity list (edge_runtime.assist.grounded)

# (intent, domain) -> the Home Assistant action; anything absent is not something that intent does
ACTIONS = {
    ("turn_on", "light"): "light.turn_on", ("turn_off", "light"): "light.turn_off",
    ("turn_on", "switch"): "switch.turn_on", ("turn_off", "switch"): "switch.turn_off",
    ("turn_on", "fan"): "fan.turn_on", ("turn_off", "fan"): "fan.turn_off",
    ("turn_on", "climate"): "climate.turn_on", ("turn_off", "climate"): "climate.turn_off",
    ("stop", "fan"): "fan.turn_off", ("stop", "light"): "light.turn_off", ("stop", "switch"): "switch.turn_off",
    ("open", "cover"): "cover.open_cover", ("close", "cover"): "cover.close_cover",
    ("stop", "cover"): "cover.stop_cover", ("position", "cover"): "cover.set_cover_position",
    ("lock", "lock"): "lock.lock", ("unlock", "lock"): "lock.unlock",
    ("brightness", "light"): "light.turn_on", ("fan_speed", "fan"): "fan.set_percentage",
    ("temperature", "climate"): "climate.set_temperature", ("hvac_mode", "climate"): "climate.set_hvac_mode",
}

# the intent whose permission an action needs: the final gate between the model and the wire
ACTION_INTENT = {
    "light.turn_off": "turn_off", "switch.turn_on": "turn_on", "switch.turn_off": "turn_off",
    "fan.turn_on": "turn_on", "fan.turn_off": "turn_off", "climate.turn_on": "turn_on",
    "climate.turn_off": "turn_off", "cover.open_cover": "open", "cover.close_cover": "close",
    "cover.stop_cover": "stop", "cover.set_cover_position": "position", "lock.lock": "lock",
    "lock.unlock": "unlock", "fan.set_percentage": "fan_speed", "climate.set_temperature": "temperature",
    "climate.set_hvac_mode": "hvac_mode",
}

_VERBING = {"light.turn_on": "Turning on", "light.turn_off": "Turning off", "switch.turn_on": "Turning on",
            "switch.turn_off": "Turning off", "fan.turn_on": "Turning on", "fan.turn_off": "Turning off",
            "climate.turn_on": "Turning on", "climate.turn_off": "Turning off", "cover.open_cover": "Opening",
            "cover.close_cover": "Closing", "cover.stop_cover": "Stopping", "lock.lock": "Locking",
            "lock.unlock": "Unlocking", "cover.set_cover_position": "Setting", "fan.set_percentage": "Setting",
            "climate.set_temperature": "Setting", "climate.set_hvac_mode": "Setting"}


def _nothing(reply: str, **extra) -> dict:
    return {"action": None, "reply": reply, **extra}


def _label(entities) -> str:
    names = [e.name or e.friendly_name or e.entity_id for e in entities]
    if len(names) == 1:
        return "the " + names[0]
    if len(names) <= 3:
        return "the " + ", ".join(names[:-1]) + " and " + names[-1]
    return f"{len(names)} devices"


def _number(v):
    return int(v) if float(v).is_integer() else round(float(v), 2)


POLARITY_INTENTS = frozenset({"turn_on", "turn_off", "open", "close", "stop", "lock", "unlock"})
SAME_POLARITY = {"turn_on": ("turn_on", "open"), "open": ("open", "turn_on"), "turn_off": ("turn_off", "close", "stop"),
                 "close": ("close", "turn_off"), "stop": ("stop", "turn_off"), "lock": ("lock",), "unlock": ("unlock",)}
PERCENT_INTENTS = ("brightness", "position", "fan_speed")   # one request form; the entity's domain picks


def plan_slots(normalized: str, permitted: set, from_words: dict, from_model: dict | None) -> list[dict]:
    """The slot sets to ground, in order, from the lexicon's reading and the model's.

    The words decide where they can: a polarity verb with no number and no mode ("shut the side
    gate") keeps the lexicon's intent first. Where they cannot (questions vs commands, a number or a
    mode said), the model's intent goes first. A number may set a brightness, a position, a fan
    speed or a temperature: the others (those its unit allows: "percent" no temperature, "degrees"
    only a temperature) follow as fallbacks, so the entity found picks the meaning. The model's name
    and area travel with every plan as evidence; its value and mode are copies from the request (its
    schema allows nothing else). A question the model calls out of scope is answered only
    about a device the request names (``Assistant.interpret``)."""
    ws = lexicon.words_of(normalized)
    numbers = lexicon.numbers_in(normalized)
    model_intent = from_model["intent"] if from_model and from_model["intent"] in permitted else None
    intents = [from_words["intent"]]
    words_decide = (from_words["intent"] in POLARITY_INTENTS and not numbers and not lexicon.mode_asked(ws)) \
        or from_words["intent"] == "hvac_mode"          # a mode said as one ("on heating") is a mode
    if model_intent == "query" and from_words["intent"] not in ("query", "none"):
        words_decide = True         # a command the words read is not answered with a state
    if words_decide and model_intent not in SAME_POLARITY.get(from_words["intent"], (from_words["intent"],)):
        model_intent = None         # after a polarity verb, only a reading of the same polarity
    if model_intent and model_intent != "none" and model_intent not in intents:
        intents = intents + [model_intent] if words_decide else [model_intent] + intents
    # a number's meaning follows the entity found, within what the unit said allows
    family = [] if not numbers else list(PERCENT_INTENTS) if "percent" in ws else ["temperature"] if "degrees" in ws \
        else list(PERCENT_INTENTS) + ["temperature"]
    for word, only in (("brightness", "brightness"), ("speed", "fan_speed"), ("position", "position")):
        if word in ws:
            family = [only]         # the quantity said by name decides
    if any(i in lexicon.VALUE_INTENTS for i in intents):
        intents += [p for p in family if p in permitted and p not in intents]
    elif "percent" in ws and intents[0] in POLARITY_INTENTS:
        # a percentage with a verb but no device word the lexicon knows ("the golden curains at 75 percent
        # open"): the value readings first, the verb's own after
        intents = [p for p in family if p in permitted] + intents
    elif intents == ["none"] and numbers and not lexicon.cues_in(ws):
        # a number with no device word and no verb ("set the lounge to 21", "the skylight to 40 percent"):
        # each value reading its unit allows, the entity found deciding
        intents += [p for p in family if p in permitted]
    # Home Assistant's convention: on/off said of a cover opens/closes it (same polarity, never the other)
    for i, cover in (("turn_off", "close"), ("turn_on", "open")):
        if i in intents and cover in permitted and cover not in intents:
            intents.append(cover)
    intents = [i for i in intents if i != "none"] or ["none"]
    value = from_model.get("value") if from_model and from_model.get("value") is not None else (
        numbers[-1] if numbers else None)
    mode = lexicon.mode_asked(ws) or (from_model or {}).get("mode") or from_words.get("mode")
    name = (from_model or {}).get("name")
    area = (from_model or {}).get("area")
    return [{"intent": i, "name": name, "area": area,
             "value": value if i in lexicon.VALUE_INTENTS else None,
             "mode": mode if i == "hvac_mode" else None} for i in intents if i in permitted]


class Assistant:
    """Interprets requests against one home, and executes the results on it."""

    def __init__(self, home, model=None, *, n_threads: int = 1, max_tokens: int = 64, grounding: str = "auto"):
        self.home = home
        self._own_model = model is None
        if model is None:
            from edge_runtime.model import Model
            model = Model(None, n_threads=n_threads, n_ctx=512)
        self.model = model
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        if grounding not in GROUNDINGS:
            raise ValueError(f"grounding {grounding!r}: expected one of {', '.join(GROUNDINGS)}")
        self.follows_contract = grounding == "slots" or (grounding == "auto" and self._probe())
        if grounding == "auto":
            # a model that reads the home (2B4T-sized) answers entity ids under the registry schema
            grounding = "slots" if self.follows_contract else (
                "registry" if model.config.dim >= LARGE_MODEL_DIM else "words")
        self.grounding = grounding
        if grounding == "words":
            log.warning("the model does not answer in the slot contract (edge_runtime.assist.slots); "
                        "the assistant reads intents from the request's words alone")

    def _probe(self) -> bool:
        """Whether the model fills the slots of a few fixed requests correctly."""
        for text, want in _PROBES:
            norm = lexicon.normalize(text)
            got = self.slots_for(text, norm, lexicon.permitted_intents(text, norm), home_spans=False)
            if got is None or any(got.get(k) != v for k, v in want.items()):
                return False
        return True

    def close(self):
        if self._own_model:
            self.model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- step 2: the model fills the slots -------------------------------------------------------
    def slots_for(self, text: str, normalized: str, permitted: set, home_spans: bool = True) -> dict | None:
        """The model's slots for one request; with ``home_spans`` its name and area can only be spans
        of the request that could name something in this home (resolve.name_spans / area_spans)."""
        ws = lexicon.words_of(normalized)
        names = resolve.name_spans(self.home, ws) if home_spans else None
        areas = resolve.area_spans(self.home, ws) if home_spans else None
        schema = slots.slot_schema(ws, lexicon.numbers_in(normalized), permitted, names=names, areas=areas)
        with self._lock:
            out = self.model.create_chat_completion(slots.messages(normalized), max_tokens=self.max_tokens,
                                                    temperature=0.0, repeat_penalty=1.0, json_schema=schema)
        return slots.parse_slots(out["choices"][0]["message"]["content"])

    # -- the whole path --------------------------------------------------------------------------
    def interpret(self, text) -> dict:
        if not isinstance(text, str) or not text.strip():
            return _nothing("I didn't catch a request.")
        if len(text) > MAX_TEXT_CHARS:
            return _nothing(f"That request is too long (over {MAX_TEXT_CHARS} characters).")
        normalized = lexicon.normalize(text)
        permitted = lexicon.permitted_intents(text, normalized)
        if self.grounding == "registry":
            return self._interpret_grounded(normalized, permitted)
        from_words = rules.slots_from_words(normalized, permitted)
        got = self.slots_for(text, normalized, permitted) if self.grounding == "slots" else None
        first = None
        doubted = bool(got) and got["intent"] == "none" and permitted <= {"query", "none"}
        for k, plan in enumerate(plan_slots(normalized, permitted, from_words, got)):
            if plan["intent"] == "none":
                first = first or _nothing("Sorry, I can't help with that.")
                continue
            if doubted and resolve.locate(self.home, plan["intent"], None, None, text).group:
                # the model calls the question out of scope and the words name no device, only a
                # kind ("what does a thermostat do"): nothing to answer
                first = first or _nothing("Sorry, I can't help with that.")
                continue
            result = self.ground(text, normalized, permitted, plan)
            if result["action"] is not None or (k == 0 and "candidates" in result):
                return result       # the first reading's ambiguity is asked about, never guessed past
            first = first or result
        return first or _nothing("Sorry, I can't help with that.")

    def ground(self, text: str, normalized: str, permitted: set, got: dict) -> dict:
        """Steps 3-5: the slots, grounded in the home, as an action call (or the reason there is none)."""
        intent = got["intent"]
        if intent not in permitted:
            return _nothing("Sorry, I can't help with that.")
        target = resolve.locate(self.home, intent, got.get("name"), got.get("area"), text)
        said = got.get("name") or got.get("area") or "that"
        if not target.entities:
            if target.problem == "no_area":
                return _nothing(f"I don't know an area called {got.get('area')}.")
            return _nothing(f"I couldn't find {'a device called ' + said if said != 'that' else 'that device'}.")
        if target.problem == "ambiguous":
            return _nothing(f"Which one do you mean: {_label(target.entities)}?",
                            candidates=[e.entity_id for e in target.entities])
        entities = target.entities
        if intent == "query":
            return {"action": "query", "entity_id": self._ids(entities),
                    "reply": " ".join(describe(e) for e in entities)}
        feature = {"brightness": "brightness", "position": "position", "fan_speed": "percentage"}.get(intent)
        if feature and len(entities) > 1 and any(e.supports(feature) for e in entities):
            entities = [e for e in entities if e.supports(feature)]   # an area's dimmable lights, as HA does
        kinds = {e.domain for e in entities}
        if len(kinds) > 1:
            # an area-wide command acts on one kind of device; prefer what the words named
            named = resolve._domains_of(resolve.words(got.get("name") or text), sorted(kinds))
            entities = [e for e in entities if e.domain == named[0]]
        return self._act(intent, entities, got, normalized, permitted)

    def _interpret_grounded(self, normalized, permitted) -> dict:
        """A model that reads the home: its reply names the entity, confined by the registry schema."""
        schema = grounded.registry_schema(self.home, permitted, lexicon.numbers_in(normalized),
                                          grounded.modes_in(normalized))
        with self._lock:
            out = self.model.create_chat_completion(grounded.messages(self.home, normalized),
                                                    max_tokens=self.max_tokens, temperature=0.0,
                                                    repeat_penalty=1.0, json_schema=schema)
        got = grounded.parse_reply(out["choices"][0]["message"]["content"])
        if got is None or got["intent"] not in permitted or got["intent"] == "none":
            return _nothing("Sorry, I can't help with that.")
        entity = self.home.get(got["entity_id"])
        if entity is None:
            return _nothing("I couldn't find that device.")
        if got["intent"] == "query":
            return {"action": "query", "entity_id": entity.entity_id, "reply": describe(entity)}
        return self._act(got["intent"], [entity], got, normalized, permitted)

    def _act(self, intent, entities, got, normalized, permitted) -> dict:
        """The action call for `intent` on `entities`, through the final gate and the confirmation rule."""
        domain = entities[0].domain
        action = ACTIONS.get((intent, domain))
        if action is None:
            return _nothing(f"I can't do that with {_label(entities)}.")
        data, problem = self._data(intent, got, entities, normalized)
        if problem:
            return _nothing(problem)
        # the final gate: the action's own intent must be one the request's words permit
        needed = {ACTION_INTENT.get(action, intent)}
        if action in ("light.turn_on", "fan.set_percentage"):
            needed.add("turn_on")           # never switches something on when the request says off
        if not needed <= permitted:
            return _nothing("Sorry, I can't help with that.")
        result = {"action": action, "entity_id": self._ids(entities)}
        if data:
            result["data"] = data
        result["reply"] = self._reply(action, entities, data)
        if needs_confirmation(self.home, result):
            result["confirm"] = True
            result["reply"] = f"Please confirm: {result['reply'][:1].lower()}{result['reply'][1:]}"
        return result

    @staticmethod
    def _ids(entities):
        return entities[0].entity_id if len(entities) == 1 else [e.entity_id for e in entities]

    def _data(self, intent, got, entities, normalized):
        value = got.get("value")
        if intent in lexicon.VALUE_INTENTS and value is None:
            return None, "What value should I set?"
        if intent in ("brightness", "position", "fan_speed"):
            if not 0 <= value <= 100:
                return None, f"{_number(value)} is not a percentage."
            feature = {"brightness": "brightness", "position": "position", "fan_speed": "percentage"}[intent]
            missing = [e for e in entities if not e.supports(feature)]
            if missing:
                return None, f"{_label(missing)[0].upper()}{_label(missing)[1:]} can't be set to a {feature}."
            key = {"brightness": "brightness_pct", "position": "position", "fan_speed": "percentage"}[intent]
            return {key: _number(value)}, None
        if intent == "temperature":
            for e in entities:
                lo, hi = e.min_temp, e.max_temp
                if not lo <= value <= hi:
                    return None, f"{_label([e])[0].upper()}{_label([e])[1:]} takes {_number(lo)} to {_number(hi)} degrees."
            return {"temperature": _number(value)}, None
        if intent == "hvac_mode":
            ws = lexicon.words_of(normalized)
            mode = lexicon.mode_asked(ws) or got.get("mode")
            if mode not in lexicon.modes_in(ws):
                return None, "Which mode?"      # only a mode the request itself names
            for e in entities:
                if mode not in e.modes:
                    return None, f"{_label([e])[0].upper()}{_label([e])[1:]} has no {mode.replace('_', ' ')} mode."
            return {"hvac_mode": mode}, None
        return None, None

    @staticmethod
    def _reply(action, entities, data) -> str:
        verb = _VERBING.get(action, "Doing")
        what = _label(entities)
        if data and "brightness_pct" in data:
            return f"Setting {what} to {data['brightness_pct']}%."
        if data and "position" in data:
            return f"Setting {what} to {data['position']}% open."
        if data and "percentage" in data:
            return f"Setting {what} to {data['percentage']}%."
        if data and "temperature" in data:
            return f"Setting {what} to {data['temperature']} degrees."
        if data and "hvac_mode" in data:
            return f"Setting {what} to {data['hvac_mode'].replace('_', ' ')} mode."
        return f"{verb} {what}."

    def execute(self, result: dict, confirmed: bool = False, dry_run: bool = False) -> list:
        """Publish what Home Assistant would for this result; a flagged one only when confirmed."""
        return _execute(self.home, result, confirmed=confirmed, dry_run=dry_run)
