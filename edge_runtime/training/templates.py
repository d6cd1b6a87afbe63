"""Requests sampled from Home Assistant's own English sentence templates (home-assistant-intents).

The templates (Apache-2.0 data of the ``home-assistant-intents`` package) are parsed by ``hassil``
(``Intents.from_dict``); this module walks a parsed template at random — one alternative per choice,
a random order for each permutation — and fills ``{name}`` and ``{area}`` from a random home. It keeps
the text in *segments* that remember which slot produced them, so the expected slots of every sample
are known exactly.

Home Assistant's intents map to ours per domain (HassTurnOn on a cover is ``open``, on a lock
``lock``; HassTurnOff on a lock is ``unlock``; HassLightSet with a number is ``brightness`` ...).
Intents that our home cannot serve (timers, weather, shopping lists, media, broadcasts) become
out-of-scope requests (intent ``none``). Templates that need a context we do not have (floors, colors,
color temperature, scenes, scripts, buttons, valves, vacuums, lawn mowers) are not used.

A *family* is one sentence template: ``ha/<Intent>/<block>/<sentence>``. ``FAMILY_SPLIT`` sends a fixed
share of families to the held-out split only, so a held-out request comes from a template that was
never sampled for training.
"""

from __future__ import annotations

import json
import os
import random
import zlib
from dataclasses import dataclass
from functools import lru_cache

from edge_runtime.training.homes import RandomHome
from edge_runtime.training.spoken import Segment, say_number

HELDOUT_SHARE = 0.2            # share of template families kept for the held-out split only

# rules and lists whose words name the device kind (they become the name when no {name} is said)
DEVICE_RULES = frozenset({"light", "lockable", "temp"})
DEVICE_LISTS = frozenset({"cover_classes"})
LIGHT_NOUNS = ("light", "lights", "lighting", "lamp", "lamps")
GENERIC_DEVICE_WORDS = frozenset({"fan", "fans", "switch", "switches"})

# HA intent -> how it maps: a fixed intent, or per domain of the device the request names
INTENT_MAP = {
    "HassTurnOn": {"light": "turn_on", "switch": "turn_on", "fan": "turn_on", "climate": "turn_on",
                   "cover": "open", "lock": "lock"},
    "HassTurnOff": {"light": "turn_off", "switch": "turn_off", "fan": "turn_off", "climate": "turn_off",
                    "cover": "close", "lock": "unlock"},
    "HassLightSet": "brightness", "HassSetPosition": "position", "HassClimateSetTemperature": "temperature",
    "HassFanSetSpeed": "fan_speed", "HassGetState": "query", "HassClimateGetTemperature": "query",
}
OUT_OF_SCOPE_INTENTS = ("HassGetWeather", "HassStartTimer", "HassCancelTimer", "HassTimerStatus",
                        "HassGetCurrentTime", "HassGetCurrentDate", "HassShoppingListAddItem",
                        "HassListAddItem", "HassMediaPause", "HassMediaUnpause", "HassMediaNext",
                        "HassMediaPrevious", "HassSetVolume", "HassSetVolumeRelative", "HassMediaPlayerMute",
                        "HassMediaPlayerUnmute", "HassPauseTimer", "HassUnpauseTimer", "HassNevermind",
                        "HassIncreaseTimer", "HassDecreaseTimer", "HassCancelAllTimers", "HassMediaSearchAndPlay")
# how often each Home Assistant intent is drawn (each out-of-scope intent: OUT_OF_SCOPE_WEIGHT)
INTENT_WEIGHTS = {"HassTurnOn": 10, "HassTurnOff": 10, "HassLightSet": 4, "HassSetPosition": 3,
                  "HassClimateSetTemperature": 3, "HassFanSetSpeed": 3, "HassGetState": 6,
                  "HassClimateGetTemperature": 1.5}
OUT_OF_SCOPE_WEIGHT = 0.25
SKIP_COMBINATIONS = ("floor", "color", "temperature_only_light", "scene", "script", "button")
VALUE_LISTS = {"brightness": "brightness", "position": "position", "fan_speed": "fan_speed",
               "temperature": "temperature"}

WILDCARD_FILL = {
    "message": ("dinner is ready", "time to go", "the car is here", "come downstairs"),
    "search_query": ("some jazz", "the news", "my workout playlist", "the beatles", "a podcast"),
    "shopping_list_item": ("milk", "eggs", "bread", "coffee beans", "batteries", "light bulbs"),
    "todo_list_item": ("call the plumber", "pay the bills", "water the plants"),
    "timer_name": ("pasta", "pizza", "laundry", "tea"), "timer_command": ("turn off the oven",),
    "zone": ("home", "work", "school"),
}
OUT_OF_SCOPE_NAMES = ("tv", "speaker", "music", "radio", "shopping list", "todo list", "kitchen speaker",
                      "living room tv", "sound bar", "groceries")


@dataclass
class Sample:
    """One request as segments, with what it asks."""

    segments: list
    intent: str
    family: str
    value: float | None = None
    mode: str | None = None
    device: object = None        # the homes.Device named, if any
    here: bool = False           # the template relies on the satellite's own area ("in here")


@lru_cache(maxsize=4)
def load_intents(language: str = "en"):
    """Home Assistant's parsed templates for one language (hassil ``Intents``)."""
    import home_assistant_intents
    from hassil import Intents

    path = os.path.join(os.path.dirname(home_assistant_intents.__file__), "data", f"{language}.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: home-assistant-intents has no data for language {language!r}")
    with open(path, encoding="utf-8") as handle:
        return Intents.from_dict(json.load(handle))


def family_split(family: str) -> str:
    """'heldout' for a fixed share of families (by a hash of the name), else 'train'."""
    return "heldout" if zlib.crc32(family.encode()) % 1000 < HELDOUT_SHARE * 1000 else "train"


def _block_domains(data) -> tuple:
    out = []
    for source in (data.slots, data.requires_context):
        value = source.get("domain") if isinstance(source, dict) else None
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, (list, tuple, set)):
            out += list(value)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Template:
    family: str
    ha_intent: str
    sentence: object            # hassil Sentence
    domains: tuple
    lists: frozenset            # list names it references
    rules: dict                 # expansion rules (global + block)
    here: bool


@lru_cache(maxsize=4)
def templates(language: str = "en") -> tuple:
    """Every usable template of the language, with its family name."""
    intents = load_intents(language)
    wanted = set(INTENT_MAP) | set(OUT_OF_SCOPE_INTENTS)
    out = []
    for ha_intent, intent in intents.intents.items():
        if ha_intent not in wanted:
            continue
        for b, data in enumerate(intent.data):
            combo = str((data.metadata or {}).get("slot_combination", ""))
            domains = _block_domains(data)
            if any(s in combo for s in SKIP_COMBINATIONS) or "valve" in domains or "person" in domains:
                continue
            if ha_intent == "HassLightSet" and "brightness" not in combo:
                continue
            rules = {**intents.expansion_rules, **data.expansion_rules}
            here = isinstance(data.requires_context.get("area"), dict)
            for s, sentence in enumerate(data.sentences):
                lists = frozenset(sentence.expression.list_names(rules)) if hasattr(
                    sentence.expression, "list_names") else frozenset()
                if lists & {"floor", "color", "color_temperature", "color_temperature_names", "brightness_level"}:
                    continue
                out.append(Template(f"ha/{ha_intent}/{b}/{s}", ha_intent, sentence, domains, lists, rules, here))
    return tuple(out)


@lru_cache(maxsize=8)
def _by_intent(split: str, language: str) -> dict:
    out: dict = {}
    for t in templates_for(split, language):
        out.setdefault(t.ha_intent, []).append(t)
    return out


def templates_for(split: str, language: str = "en") -> tuple:
    if split == "train":
        return tuple(t for t in templates(language) if family_split(t.family) == "train")
    return tuple(t for t in templates(language) if family_split(t.family) == "heldout")


class _Walker:
    """Random expansion of one hassil expression into segments."""

    def __init__(self, rng, template: Template, fill: dict, intents):
        self.rng, self.template, self.fill, self.intents = rng, template, fill, intents
        self.segments: list[Segment] = []
        self.depth = 0                 # how many expansion rules deep the walk is

    def emit(self, text: str, role=None):
        if not text:
            return
        last = self.segments[-1] if self.segments else None
        if last is not None and last.role is not None and (role == last.role or (
                role is None and not text[0].isspace() and not last.text[-1].isspace())):
            last.text += text          # one slot's pieces, and a suffix glued to it ("fan" + "s"), stay one
            return
        self.segments.append(Segment(text, role))

    def walk(self, expr, role=None):
        from hassil.expression import Alternative, ListReference, Permutation, RuleReference, Sequence, TextChunk

        if isinstance(expr, TextChunk):
            text = expr.original_text
            if role is None and self.depth == 0 and text.strip() in GENERIC_DEVICE_WORDS:
                lead = text[: len(text) - len(text.lstrip())]
                self.emit(lead)
                self.emit(text.strip(), "device")
                self.emit(text[len(text.rstrip()):])
            else:
                self.emit(text, role)
        elif isinstance(expr, Alternative):
            self.walk(self.rng.choice(expr.items), role)
        elif isinstance(expr, Permutation):
            items = list(expr.items)
            self.rng.shuffle(items)
            for item in items:
                self.emit(" ")
                self.walk(item, role)
            self.emit(" ")
        elif isinstance(expr, Sequence):
            for item in expr.items:
                self.walk(item, role)
        elif isinstance(expr, RuleReference):
            body = self.template.rules[expr.rule_name].expression
            if expr.rule_name in DEVICE_RULES and role is None:
                forced = self.fill.get("light_noun") if expr.rule_name == "light" else None
                if forced:
                    self.emit(forced, "device")
                else:
                    self.walk(body, "device")
            else:
                self.depth += 1
                self.walk(body, role)
                self.depth -= 1
        elif isinstance(expr, ListReference):
            self.list_value(expr, role)
        else:
            raise ValueError(f"{self.template.family}: unexpected template expression {expr!r}")

    def list_value(self, ref, role):
        from hassil.intents import RangeSlotList, TextSlotList

        name = ref.list_name
        if name in ("name", "area"):
            self.emit(self.fill[name], name)
            return
        if "list:" + name in self.fill:        # a list the caller filled: (text, role)
            text, slot_role = self.fill["list:" + name]
            self.emit(text, slot_role)
            return
        if name in WILDCARD_FILL:
            self.emit(self.rng.choice(WILDCARD_FILL[name]))
            return
        slot_list = self.intents.slot_lists.get(name)
        if isinstance(slot_list, RangeSlotList):
            number = self.fill.get("value")
            if number is None:
                lo, hi = slot_list.start, slot_list.stop
                number = self.rng.randint(max(lo, 1), min(hi, 60))
            self.emit(say_number(self.rng, number, words_rate=self.fill.get("words_rate", 0.15)), "value")
            return
        if isinstance(slot_list, TextSlotList):
            value = self.rng.choice(slot_list.values)
            self.walk(value.text_in, "device" if name in DEVICE_LISTS and role is None else role)
            return
        raise ValueError(f"{self.template.family}: no values for list {{{name}}}")


def _value_for(rng, intent: str):
    if intent == "temperature":
        return rng.randint(15, 28) + (0.5 if rng.random() < 0.15 else 0)
    if intent in ("brightness", "position", "fan_speed"):
        return rng.choice((rng.randint(1, 100), rng.choice((10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100))))
    return None


def _pick(rng, template: Template, home: RandomHome):
    """(intent, device, fill) for this template on this home, or None when the home cannot fill it."""
    t = template
    fill: dict = {}
    if t.ha_intent in OUT_OF_SCOPE_INTENTS:
        if "name" in t.lists:
            fill["name"] = rng.choice(OUT_OF_SCOPE_NAMES)
        if "area" in t.lists:
            fill["area"] = rng.choice(home.areas)
        return "none", None, fill
    mapped = INTENT_MAP[t.ha_intent]
    domains = [d for d in (t.domains or ("light", "switch", "fan", "cover", "lock", "climate"))]
    if t.ha_intent == "HassClimateGetTemperature":
        domains = ["climate", "temperature"]
    if t.ha_intent == "HassClimateSetTemperature":
        domains = ["climate"]
    device = None
    if "name" in t.lists:
        pool = [d for d in home.devices if (d.domain in domains or d.device_class in domains)
                and (d.area or "area" not in t.lists)]
        light_split = "<light>" in (t.sentence.text or "") and "{name}" in (t.sentence.text or "")
        if light_split:
            pool = [d for d in pool if d.domain == "light" and d.noun in LIGHT_NOUNS and d.name != d.noun]
        if not pool:
            return None
        device = rng.choice(pool)
        if light_split:
            fill["name"] = device.name[: -len(device.noun)].strip()
            fill["light_noun"] = device.noun
        else:
            fill["name"] = device.name
        if "area" in t.lists:
            fill["area"] = device.area
    elif "area" in t.lists:
        want = "light" if t.domains == ("light",) else "fan" if t.domains == ("fan",) else \
            "cover" if t.domains == ("cover",) else None
        if t.ha_intent in ("HassClimateSetTemperature",):
            want = "climate"
        areas = [a for a in home.areas if want is None or home_has(home, want, a)]
        if not areas:
            return None
        fill["area"] = rng.choice(areas)
        device = None
    domain = device.domain if device else (t.domains[0] if t.domains else None)
    if isinstance(mapped, dict):
        intent = mapped.get(domain)
        if intent is None:
            return None
    else:
        intent = mapped
    fill["value"] = _value_for(rng, intent)
    return intent, device, fill


def home_has(home: RandomHome, domain: str, area: str) -> bool:
    return any(d.domain == domain and d.area == area for d in home.devices)


def sample(rng: random.Random, split: str, home: RandomHome, words_rate: float = 0.15,
           language: str = "en", ha_intents=None) -> Sample | None:
    """One request from a random template of the split's families (of ``ha_intents`` when given),
    filled from this home."""
    by_intent = _by_intent(split, language)
    intents = load_intents(language)
    names = sorted(n for n in by_intent if ha_intents is None or n in ha_intents)
    if not names:
        return None
    weights = [INTENT_WEIGHTS.get(n, OUT_OF_SCOPE_WEIGHT) for n in names]
    for _ in range(20):
        t = rng.choice(by_intent[rng.choices(names, weights)[0]])
        picked = _pick(rng, t, home)
        if picked is None:
            continue
        intent, device, fill = picked
        fill["words_rate"] = words_rate
        walker = _Walker(rng, t, fill, intents)
        walker.walk(t.sentence.expression)
        return Sample(walker.segments, intent, t.family, value=fill.get("value") if intent in VALUE_LISTS else None,
                      device=device, here=t.here)
    return None
