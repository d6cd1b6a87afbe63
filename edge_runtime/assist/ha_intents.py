"""The assistant's slots as Home Assistant intents: what the Wyoming conversation agent sends to HA.

Home Assistant executes an intent on its own entities; the agent only names it, with slots as the
user said them::

    ha_intent({"intent": "close", "name": "garage door", "area": None, "value": None, "mode": None})
    # HaIntent("HassTurnOff", {"name": "garage door", "domain": "cover"}, "Closing the garage door.")

HA gives its generic intents a per-domain meaning (HassTurnOn opens a cover and locks a lock,
HassTurnOff closes and unlocks), so the verb of the request is kept in a ``domain`` slot: an
``open`` can only reach covers, a ``lock`` only locks. A plain on/off that names no kind of device
gets the domains HA's own English sentences allow for "turn on {name}" (``TURN_DOMAINS``) — never a
lock, so "turn off the front door" cannot unlock anything.

Targets (``target_of``): a name made only of kind words ("the lights", "all fans") becomes a
``domain``; a plural light/fan/switch/plug/lock word after other words ("kitchen lights") becomes an
``area`` plus ``domain``; anything else is a ``name`` (HA matches it against its entity names and
aliases). ``slots_from_words`` fills the slot contract from the request's words when no model answers
in it: the intent from ``rules``, the spans by taking away the verbs, fillers, numbers and attribute
words (``device_phrase``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_runtime.assist import lexicon

# the domains HA's English "turn on/off {name}" sentences may act on (requires_context)
TURN_DOMAINS = ("light", "switch", "fan", "media_player", "input_boolean", "climate")
_TURNABLE = frozenset({"light", "switch", "fan", "climate"})       # kinds our words name that on/off reach

# slot intent -> (HA intent, the domain the verb fixes, the slot the value goes in)
INTENT_MAP = {
    "turn_on": ("HassTurnOn", None, None),
    "turn_off": ("HassTurnOff", None, None),
    "open": ("HassTurnOn", "cover", None),
    "close": ("HassTurnOff", "cover", None),
    "lock": ("HassTurnOn", "lock", None),
    "unlock": ("HassTurnOff", "lock", None),
    "stop": ("HassStopMoving", "cover", None),
    "brightness": ("HassLightSet", None, "brightness"),
    "position": ("HassSetPosition", "cover", "position"),
    "fan_speed": ("HassFanSetSpeed", None, "percentage"),
    "temperature": ("HassClimateSetTemperature", None, "temperature"),
    "query": ("HassGetState", None, None),
}
PERCENT_SLOTS = frozenset({"brightness", "position", "percentage"})
# intents whose handler fixes the domain itself (a domain slot would only be noise)
_OWN_DOMAIN = frozenset({"HassLightSet", "HassFanSetSpeed", "HassClimateSetTemperature", "HassClimateGetTemperature"})

# words that mean "all of that kind" and words that never name anything
ALL_WORDS = frozenset({"all", "every", "each", "any", "both", "everything"})
DETERMINERS = frozenset({"the", "a", "an", "my", "our", "your", "this", "that", "these", "those", "of", "and",
                         "single", "some", "its", "their"})
PRONOUNS = frozenset({"it", "them", "that", "this", "those", "these", "they", "one", "same"})
_KIND_WORDS = frozenset(w for ws in lexicon.DOMAIN_WORDS.values() for w in ws)
# HA's own generic device words (expansion rule <light>, "fan[s]", "switch[es]", list cover_classes):
# said without a name they mean every such device (in the area)
GENERIC_WORDS = {"light": ("light", "lights", "lighting", "lamp", "lamps"), "fan": ("fan", "fans"),
                 "switch": ("switch", "switches"), "lock": ("lock", "locks")}
COVER_CLASSES = {"awning": ("awning", "awnings"), "blind": ("blind", "blinds"), "curtain": ("curtain", "curtains"),
                 "garage": ("garage door", "garage doors", "garage"), "door": ("door", "doors"),
                 "gate": ("gate", "gates"), "shade": ("shade", "shades"), "shutter": ("shutter", "shutters"),
                 "window": ("window", "windows")}
# the state words of HA's questions (on_off_states, cover_states, lock_states)
STATE_WORDS = {"on": "on", "off": "off", "open": "open", "closed": "closed", "shut": "closed", "opening": "opening",
               "closing": "closing", "locked": "locked", "unlocked": "unlocked"}
_TEMPERATURE_QUESTION = frozenset({"temperature", "temp", "hot", "cold", "warm", "cool", "degrees"})


@dataclass(frozen=True)
class HaIntent:
    """One Home Assistant intent: its name, its slots (in the order HA lists them) and a short reply."""

    name: str
    slots: dict = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class Refusal:
    """No intent: why, in words for the user (sent as not-recognized)."""

    text: str
    reason: str


@dataclass(frozen=True)
class Target:
    name: str | None = None
    area: str | None = None
    kinds: tuple = ()          # the device kinds the head word names, in DOMAIN_WORDS order
    generic: bool = False      # no name: every device of the kind (in the area) is meant
    device_class: str | None = None
    said: str | None = None    # the kind words as said ("lighting"), for a home that names a device so
    every: bool = False        # "all", "every", "everywhere" was said: never one device of that name


def _clean(span) -> list[str]:
    ws = lexicon.normalize(span).split() if span else []
    while ws and (ws[0] in DETERMINERS or ws[0] in ALL_WORDS):
        ws = ws[1:]
    while ws and (ws[-1] in DETERMINERS or ws[-1] in ALL_WORDS):
        ws = ws[:-1]
    return ws


def _kinds(word: str) -> tuple:
    return tuple(d for d, ws in lexicon.DOMAIN_WORDS.items() if word in ws or word.rstrip("s") in ws)


def _generic_kind(ws: list[str]):
    """(domain, device_class) when the words are one of HA's generic device words, else None."""
    text = " ".join(ws)
    for domain, words in GENERIC_WORDS.items():
        if text in words:
            return domain, None
    for cls, words in COVER_CLASSES.items():
        if text in words:
            return "cover", cls
    return None


def target_of(name, area) -> Target:
    """What the spans point at: a named device, or every device of a kind (in an area)."""
    raw = lexicon.normalize(name).split() if name else []
    every = any(w in ALL_WORDS for w in raw)
    nw = [w for w in _clean(name) if w not in ALL_WORDS]
    if all(w in PRONOUNS for w in nw):
        nw = []                # "make it 19 degrees in the bedroom": "it" names nothing
    aw = _clean(area)
    area_text = " ".join(aw) or None
    if not nw:
        return Target(None, area_text, (), True)
    g = _generic_kind(nw)
    if g and (g[1] is None or area_text or nw[-1].endswith("s")):
        return Target(None, area_text, (g[0],), True, g[1], " ".join(nw), every)
    if g:
        # one cover said alone ("the garage door") is a device HA knows by that name, not all of them
        return Target(" ".join(nw), None, ("cover",), False)
    if area_text is None and nw[-1].endswith("s"):
        # a plural generic word after other words: every such device there ("kitchen lights")
        for used in (2, 1):
            g = _generic_kind(nw[-used:]) if len(nw) > used else None
            if g:
                return Target(None, " ".join(nw[:-used]), (g[0],), True, g[1], " ".join(nw[-used:]), every)
    return Target(" ".join(nw), area_text, _kinds(nw[-1]), False)


def _number(v):
    return int(v) if float(v).is_integer() else round(float(v), 2)


def _label(t: Target, domain) -> str:
    if t.name:
        where = f" in the {t.area}" if t.area else ""
        return f"the {t.name}{where}"
    if t.device_class:
        kind = COVER_CLASSES[t.device_class][-1] if t.device_class != "garage" else "garage doors"
        return f"the {t.area} {kind}" if t.area else f"the {kind}"
    kind = {"light": "lights", "switch": "switches", "fan": "fans", "cover": "covers", "lock": "locks",
            "climate": "thermostats"}.get(domain if isinstance(domain, str) else "", "devices")
    return f"the {t.area} {kind}" if t.area else f"the {kind}"


_VERB_TEXT = {"turn_on": "Turning on", "turn_off": "Turning off", "open": "Opening", "close": "Closing",
              "lock": "Locking", "unlock": "Unlocking", "stop": "Stopping"}


def ha_intent(slots: dict, normalized: str = "") -> HaIntent | Refusal:
    """The Home Assistant intent for one slot answer (``slots.SLOT_KEYS``). ``normalized`` (the
    request, lexicon-normalized) is read only for a question's state and temperature words."""
    intent = slots.get("intent")
    if intent in (None, "none"):
        return Refusal("Sorry, that isn't something I can do in the home.", "not_a_command")
    if intent == "hvac_mode":
        return Refusal("Home Assistant has no voice intent for heating and cooling modes; "
                       "set the mode in the app.", "no_ha_intent")
    if intent not in INTENT_MAP:
        return Refusal("Sorry, I didn't understand that.", "unknown_intent")
    ha_name, domain, value_slot = INTENT_MAP[intent]
    t = target_of(slots.get("name"), slots.get("area"))
    device_class = t.device_class
    words = normalized.split()
    state = None
    if intent in ("turn_on", "turn_off") and not (t.name or t.area or t.kinds):
        # "turn it off": no device, no kind, no area; never every on/off device in the home
        return Refusal("Which device do you mean?", "no_target")
    if intent in ("turn_on", "turn_off"):
        named = [k for k in t.kinds if k in _TURNABLE]
        if t.kinds and not named:
            if "lock" in t.kinds and intent == "turn_on":
                domain = "lock"                                  # "turn on the door lock" locks it
            else:
                said = "lock or unlock" if "lock" in t.kinds else "open or close" if "cover" in t.kinds \
                    else "name the device"
                return Refusal(f"Please say {said} for that.", "ambiguous_verb")
        elif t.generic and len(named) == 1:
            domain = named[0]
        else:
            # a name may be any on/off device ("the desk lamp" can be a switch): HA's own list, no locks
            domain = list(TURN_DOMAINS)
    elif intent == "stop":
        if t.kinds and "cover" not in t.kinds:
            named = [k for k in t.kinds if k in _TURNABLE]
            if not named:
                return Refusal("I can only stop something that moves, like a cover.", "ambiguous_verb")
            ha_name, domain = "HassTurnOff", named[0]          # "stop the fan" switches it off
        elif not t.kinds:
            domain = None                                      # HA's stop reaches covers and valves
    elif intent in ("lock", "unlock"):
        device_class = None                                    # "lock the doors": the locks, by any class
    elif intent == "query":
        states = [STATE_WORDS[w] for i, w in enumerate(words) if w in STATE_WORDS and (w not in ("on", "off") or i)]
        state = states[-1] if states else None
        if state is None and _TEMPERATURE_QUESTION & set(words) and "sensor" not in t.kinds and (
                t.generic or "climate" in t.kinds):
            ha_name, device_class = "HassClimateGetTemperature", None
        elif t.generic:
            if state in ("locked", "unlocked"):
                domain, device_class = "lock", None
            else:
                domain = next((k for k in t.kinds if k != "binary_sensor"), None)
            if domain is None and t.area is None:
                return Refusal("Which device do you mean?", "no_target")
        elif not t.name:
            return Refusal("Which device do you mean?", "no_target")
    out: dict = {}
    if t.name:
        out["name"] = t.name
    if t.area:
        out["area"] = t.area
    if intent == "query" and state in ("locked", "unlocked") and not domain:
        domain = "lock"                                        # HA's own "is {name} locked" sentences
    if domain and ha_name not in _OWN_DOMAIN and (t.generic or intent != "query" or domain == "lock"):
        out["domain"] = domain
    if device_class and ha_name not in _OWN_DOMAIN:
        out["device_class"] = device_class
    if state:
        out["state"] = state
    if value_slot:
        value = slots.get("value")
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return Refusal("What value should I set?", "no_value")
        if value_slot in PERCENT_SLOTS and not 0 <= value <= 100:
            return Refusal(f"{_number(value)} is not a percentage.", "bad_value")
        if value_slot == "temperature" and not -50 <= value <= 120:
            return Refusal(f"{_number(value)} degrees is not a temperature I can set.", "bad_value")
        out[value_slot] = _number(value)
    return HaIntent(ha_name, out, _reply(ha_name, intent, t, out))


def _reply(ha_name: str, intent: str, t: Target, out: dict) -> str:
    """A short reply; HA speaks it when its own handler gives none. Questions are HA templates over
    the state HA matched (``state``, ``query.matched``), rendered by HA's wyoming integration."""
    what = _label(t, out.get("domain"))
    if ha_name == "HassGetState":
        if "state" in out:
            return ("{% if query.matched %}Yes{% else %}No{% endif %}"
                    "{% if state %}, {{ state.name }} is {{ state.state }}{% endif %}.")
        return "{% if state %}{{ state.name }} is {{ state.state }}.{% else %}I couldn't find that.{% endif %}"
    if ha_name == "HassClimateGetTemperature":
        return ("{% if state and state.attributes.current_temperature is not none %}"
                "It is {{ state.attributes.current_temperature }} degrees.{% else %}I don't know.{% endif %}")
    if "brightness" in out:
        return f"Setting {what} to {out['brightness']}%."
    if "position" in out:
        return f"Setting {what} to {out['position']}% open."
    if "percentage" in out:
        return f"Setting {what} to {out['percentage']}%."
    if "temperature" in out:
        return f"Setting {what} to {out['temperature']} degrees."
    verb = _VERB_TEXT.get(intent if ha_name != "HassTurnOff" or intent != "stop" else "turn_off", "Doing that for")
    return f"{verb} {what}."


# -- grounding in a home -------------------------------------------------------------------------

def _spoken_name(entity) -> str:
    return entity.friendly_name or entity.name or entity.entity_id


def _key(words) -> tuple:
    """Words compared the way people say them: without determiners, plural or not."""
    from edge_runtime.assist.resolve import _stem

    return tuple(_stem(w) for w in words if w not in DETERMINERS)


def _names_of(e) -> set:
    return {_key(lexicon.normalize(n).split()) for n in (e.friendly_name, e.name) if n}


def _home_area(home, words) -> str | None:
    key = _key(words)
    return next((a for a in home.areas() if _key(lexicon.normalize(a).split()) == key), None) if key else None


def _kind_of(e, domain, device_class) -> bool:
    return e.domain == domain and (device_class is None or e.device_class == device_class)


def ground_target(home, t: Target, domains, locks: bool = False) -> tuple[list, str | None, bool]:
    """The entities of ``home`` the target means, as Home Assistant would match them — a name
    exactly (plural-insensitive), an area by the home's spelling, a kind by domain and device class —
    the home's area when the target is a whole area, and whether a device name matched.
    ([], None, False) when the home has no such thing. ``locks``: a kind word means the locks
    ("is the garage door locked")."""
    pool = [e for e in home if e.domain in domains]
    area = _home_area(home, _clean(t.area)) if t.area else None
    if t.area and area is None:
        return [], None, False
    in_area = [e for e in pool if area is None or (e.area or "").casefold() == area.casefold()]
    if t.generic:
        if not t.kinds:
            return [], None, False
        said = _key(_clean(t.said))
        single = not t.every and not t.area and t.said and not t.said.endswith("s")
        named = [e for e in in_area if single and said in _names_of(e)]
        if named:
            return named, None, True
        group = [e for e in in_area if (_kind_of(e, "lock", None) if locks else
                                        _kind_of(e, t.kinds[0], t.device_class))]
        return group, area, False
    nw = _clean(t.name)
    exact = [e for e in in_area if _key(nw) in _names_of(e)]
    if exact:
        return exact, None, True
    if area is None:
        # the area said inside the name: "box room lamp" in a home with a "Box Room"
        for n in (3, 2, 1):
            head = _home_area(home, nw[:n]) if len(nw) > n else None
            if head is None:
                continue
            rest = nw[n:]
            here = [e for e in pool if (e.area or "").casefold() == head.casefold()]
            named = [e for e in here if _key(rest) in _names_of(e)]
            if named:
                return named, None, True
            g = _generic_kind(rest)
            if g:
                g = ("lock", None) if locks else g
                return [e for e in here if _kind_of(e, g[0], g[1])], head, False
    return [], None, False


# the domains each slot intent's HA intent can act on (a target outside them is not grounded)
_GROUND_DOMAINS = {"turn_on": _TURNABLE | {"lock"}, "turn_off": _TURNABLE, "open": {"cover"}, "close": {"cover"},
                   "stop": {"cover", "fan", "light", "switch"}, "lock": {"lock"}, "unlock": {"lock"},
                   "brightness": {"light"}, "position": {"cover"}, "fan_speed": {"fan"}, "temperature": {"climate"},
                   "query": {"light", "switch", "fan", "cover", "lock", "climate", "sensor", "binary_sensor"}}


def grounded(home, slots: dict, normalized: str, text: str = "") -> HaIntent | Refusal:
    """``ha_intent`` with the target checked against a home registry (MQTT discovery): a device the
    home knows goes by the name Home Assistant shows for it, a whole-area command by the home's
    spelling of the area. A target the home does not know stays as said: Home Assistant may have
    devices this registry lacks."""
    base = ha_intent(slots, normalized)
    if isinstance(base, Refusal) or home is None or not len(home):
        return base
    intent = slots["intent"]
    t = target_of(slots.get("name"), slots.get("area"))
    domains = _GROUND_DOMAINS.get(intent, set())
    if base.name == "HassClimateGetTemperature":
        domains = {"climate"}
    if isinstance(base.slots.get("domain"), str):
        domains = domains & {base.slots["domain"]}
    locks = base.slots.get("state") in ("locked", "unlocked")
    if locks:
        domains = {"lock"}
    entities, area, by_name = ground_target(home, t, domains, locks)
    if not entities and t.name and not t.area and intent != "query":
        # one slot copied too much or too little: the resolver's forgiving match, when it is sure
        from edge_runtime.assist import resolve

        found = resolve.find(home, intent if intent in resolve.INTENT_DOMAINS else "query", t.name, None,
                             text or normalized)
        if len(found.entities) == 1 and not found.problem and found.entities[0].domain in domains:
            entities, by_name = list(found.entities), True
    if not entities:
        return base
    kinds = sorted({e.domain for e in entities})
    if len(kinds) != 1:
        return base
    domain = kinds[0]
    keep = {k: v for k, v in base.slots.items() if k not in ("name", "area", "domain", "device_class")}
    if len(entities) == 1 and by_name:
        target = {"name": _spoken_name(entities[0])}
    elif not by_name:
        target = {"area": area} if area else {}
        if t.device_class and not locks:
            target["device_class"] = t.device_class
    else:
        names = sorted({_spoken_name(e) + (f" in the {e.area}" if e.area else "") for e in entities})
        return Refusal("Which one do you mean: " + " or ".join([", ".join(names[:-1]), names[-1]] if len(
            names) > 1 else names) + "?", "ambiguous")
    if base.name not in _OWN_DOMAIN:
        target["domain"] = domain
    if base.name == "HassClimateSetTemperature":
        for e in entities:
            if not e.min_temp <= keep["temperature"] <= e.max_temp:
                return Refusal(f"The {_spoken_name(e)} takes {_number(e.min_temp)} to {_number(e.max_temp)} "
                               "degrees.", "bad_value")
    out = {**target, **keep}
    shown = Target(out.get("name"), out.get("area"), (domain,), "name" not in out, out.get("device_class"))
    return HaIntent(base.name, out, _reply(base.name, intent, shown, out))
