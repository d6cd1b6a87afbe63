"""The training and held-out corpora of the embedded model: requests on random homes -> slot replies.

Every example is a request to one random home (``homes``) and the reply the model must give: the
canonical ``slots.slot_json`` of the slots it asks for (``edge_runtime.assist.slots`` has the contract
and the naming convention). The model reads ``slots.messages(lexicon.normalize(text))``.

Where requests come from:

- Home Assistant's own English sentence templates (``templates``: home-assistant-intents, sampled
  with hassil), ``{name}``/``{area}`` filled from the home;
- our own families (``paraphrase``): appliance verbs, wants and questions, number words and
  fractions, HVAC modes, negations, out-of-scope requests; politeness, filler and leading clauses
  around commands; speech-recognition slips on the raw text (``spoken.slip``).

Kinds (``KINDS``): on/off, open/close, lock/unlock, brightness, position, temperature, fan speed,
hvac mode, query, out of scope, and ``missing`` — a command for a device the home does not have
(the model still copies its name; the assistant finds nothing and does nothing).

Splits: ``train`` and ``heldout`` use disjoint homes (disjoint name and area vocabularies, see
``homes``), disjoint template families (Home Assistant's and ours) and disjoint wrappers. Held-out
text is never slipped or filled with filler beyond its own families' words; a ``noise`` held-out
set (``generate(..., noisy=True)``) applies the held-out wrappers and slips for the "natural
commands" figure.

Every example is checked before it is kept: its reply parses with ``slots.parse_slots``, satisfies
``slots.slot_schema`` for its own text, and its intent is one that ``lexicon.permitted_intents``
allows for the raw text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from edge_runtime.assist import lexicon, slots
from edge_runtime.training import homes, paraphrase, spoken, templates

SPLITS = homes.SPLITS
KINDS = ("on_off", "open_close", "lock", "brightness", "position", "temperature", "fan_speed", "hvac_mode",
         "query", "out_of_scope", "missing")
KIND_OF_INTENT = {"turn_on": "on_off", "turn_off": "on_off", "open": "open_close", "close": "open_close",
                  "stop": "open_close", "lock": "lock", "unlock": "lock", "brightness": "brightness",
                  "position": "position", "temperature": "temperature", "fan_speed": "fan_speed",
                  "hvac_mode": "hvac_mode", "query": "query", "none": "out_of_scope"}
# how often each kind is drawn for training (held-out sets draw kinds evenly)
TRAIN_KIND_WEIGHTS = {"on_off": 5, "open_close": 2.5, "lock": 1.5, "brightness": 2, "position": 1.5,
                      "temperature": 1.5, "fan_speed": 1.2, "hvac_mode": 1, "query": 3, "out_of_scope": 1.6,
                      "missing": 0.0}
# Home Assistant intents that can give each kind
HA_INTENTS_OF_KIND = {
    "on_off": ("HassTurnOn", "HassTurnOff"), "open_close": ("HassTurnOn", "HassTurnOff", "HassSetPosition"),
    "lock": ("HassTurnOn", "HassTurnOff"), "brightness": ("HassLightSet",), "position": ("HassSetPosition",),
    "temperature": ("HassClimateSetTemperature",), "fan_speed": ("HassFanSetSpeed",),
    "query": ("HassGetState", "HassClimateGetTemperature"), "out_of_scope": templates.OUT_OF_SCOPE_INTENTS,
    "hvac_mode": (),
}
HA_SHARE = 0.5                   # share of examples from Home Assistant's templates (where the kind has them)
EXAMPLES_PER_HOME = 16


@dataclass
class Example:
    text: str                    # the request as said (raw)
    normalized: str              # lexicon.normalize(text): what the model reads
    slots: dict                  # the expected slots (every key of slots.SLOT_KEYS)
    kind: str
    family: str                  # ha/<Intent>/<block>/<sentence> or ours/<family>
    home: homes.RandomHome
    device: object = None        # the homes.Device the request names, if any
    missing: bool = False        # the device is not in the home

    @property
    def messages(self) -> list[dict]:
        return slots.messages(self.normalized)

    @property
    def reply(self) -> str:
        return slots.slot_json(self.slots)

    def schema(self) -> dict:
        return slots.slot_schema(self.normalized.split(), lexicon.numbers_in(self.normalized),
                                 lexicon.permitted_intents(self.text, self.normalized))


def _ours(rng: random.Random, split: str, kind: str, home: homes.RandomHome, words_rate: float):
    """A sample from one of our families of this kind, or None."""
    pool = [(f, s) for f, s in paraphrase.parsed(split) if KIND_OF_INTENT[f.intent] == kind]
    if not pool:
        return None
    family, sentence = rng.choice(pool)
    text = sentence.text or ""
    fill: dict = {"words_rate": words_rate}
    device = None
    if "{name}" in text or "{area}" in text:
        candidates = [d for d in home.devices if d.domain in family.domains]
        if "{area}" in text and "{name}" in text:
            candidates = [d for d in candidates if d.area and not d.name.startswith(d.area)]
        elif "{area}" in text:
            candidates = [d for d in candidates if d.area]
        if not candidates:
            return None
        device = rng.choice(candidates)
        fill["name"] = device.name if device.plural is None or rng.random() < 0.6 else device.plural
        fill["area"] = device.area
    value = mode = None
    if family.intent in lexicon.VALUE_INTENTS:
        if "{fraction}" in text:
            phrase, value = rng.choice(paraphrase.FRACTIONS)
            fill["list:fraction"] = (phrase, "value")
        else:
            value = templates._value_for(rng, family.intent)
            fill["value"] = value
            fill["list:value"] = (spoken.say_number(rng, value, words_rate), "value")
    if family.intent == "hvac_mode":
        mode = rng.choice([m for m in (device.modes if device else ()) if m != "off"] or ["heat"])
        fill["list:mode"] = (rng.choice(paraphrase.MODE_TEXT[mode]), None)
    t = templates.Template("ours/" + family.name, "", sentence, family.domains, frozenset(), {}, False)
    walker = templates._Walker(rng, t, fill, templates.load_intents())
    walker.walk(sentence.expression)
    return walker.segments, family.intent, t.family, value, mode, device


def _ha(rng: random.Random, split: str, kind: str, home: homes.RandomHome, words_rate: float):
    names = HA_INTENTS_OF_KIND.get(kind, ())
    if not names:
        return None
    for _ in range(8):
        got = templates.sample(rng, split, home, words_rate=words_rate, ha_intents=names)
        if got is not None and KIND_OF_INTENT[got.intent] == kind and not got.here:
            return got.segments, got.intent, got.family, got.value, None, got.device
    return None


def _with_absent(rng: random.Random, home: homes.RandomHome, kind: str) -> homes.RandomHome:
    """A view of the home holding one device it does not have, for a 'missing' request."""
    domain = {"on_off": rng.choice(("light", "switch", "fan")), "open_close": "cover", "lock": "lock",
              "brightness": "light", "position": "cover", "temperature": "climate", "fan_speed": "fan",
              "hvac_mode": "climate", "query": rng.choice(("light", "cover", "lock", "switch"))}[kind]
    absent = homes.absent_device(rng, home, domain)
    if absent.area is None:
        absent.area = rng.choice(home.areas)
    absent.features = ("brightness", "position", "percentage")
    absent.modes = ("heat", "cool")
    return homes.RandomHome(home.split, home.seed, home.areas, [absent])


FEATURE_OF_INTENT = {"brightness": ("light", "brightness"), "position": ("cover", "position"),
                     "fan_speed": ("fan", "percentage")}


def _capable(home: homes.RandomHome, intent: str, device, area) -> bool:
    """Whether the device named (or, for a whole-area request, some device of the area) has the
    feature a value intent sets: a light without a brightness topic cannot be dimmed."""
    if intent not in FEATURE_OF_INTENT:
        return True
    domain, feature = FEATURE_OF_INTENT[intent]
    if device is not None:
        return feature in device.features
    return any(d.domain == domain and feature in d.features and (area is None or d.area == area)
               for d in home.devices)


def valid(ex: Example) -> bool:
    """The reply parses, fits the request's own schema, and its intent is permitted for the raw text."""
    import jsonschema

    parsed = slots.parse_slots(ex.reply)
    if parsed is None or parsed != ex.slots:
        return False
    try:
        jsonschema.validate(parsed, ex.schema())
    except jsonschema.ValidationError:
        return False
    return True


def example(split: str, seed: int, index: int, kind: str | None = None, noisy: bool | None = None,
            home: homes.RandomHome | None = None) -> Example:
    """Example number ``index`` of a corpus (the same arguments always give the same example)."""
    rng = random.Random(f"corpus/{split}/{seed}/{index}")
    if home is None:
        home = homes.random_home(split, seed * 100003 + index // EXAMPLES_PER_HOME, complete=split != "train")
    if kind is None:
        weights = TRAIN_KIND_WEIGHTS if split == "train" else {k: 1.0 for k in KINDS}
        kind = rng.choices(list(weights), list(weights.values()))[0]
    if noisy is None:
        noisy = split == "train"
    words_rate = 0.3 if noisy else 0.15
    for attempt in range(60):
        want = kind
        view = home
        missing = kind == "missing" or (attempt >= 20 and kind != "out_of_scope")
        if missing:
            if kind == "missing":
                want = rng.choice(("on_off", "open_close", "lock", "brightness", "position", "temperature",
                                   "fan_speed"))
            view = _with_absent(rng, home, want)
        if want == "out_of_scope" and rng.random() < 0.5:
            got = (paraphrase.out_of_scope(rng, split), "none", "ours/out_of_scope", None, None, None)
        elif rng.random() < HA_SHARE:
            got = _ha(rng, split, want, view, words_rate) or _ours(rng, split, want, view, words_rate)
        else:
            got = _ours(rng, split, want, view, words_rate) or _ha(rng, split, want, view, words_rate)
        if got is None:
            continue
        segments, intent, family, value, mode, device = got
        if missing and device is None:
            continue                   # a whole-area request names no device the home could lack
        if noisy:
            if intent not in ("query", "none"):
                segments = paraphrase.wrap(rng, split, segments, 0.45)
            segments = spoken.slip(rng, segments, 0.06)
        realized = spoken.realize(segments, intent, value, mode)
        if realized is None:
            continue
        raw, norm, got_slots = realized
        if missing and not got_slots.get("name"):
            continue                   # the absent device must be named, not just its area
        if not missing and not _capable(home, intent, device, got_slots.get("area")):
            continue                   # a request asks only what the home's device can do
        if rng.random() < 0.3:
            raw = raw[:1].upper() + raw[1:] + rng.choice((".", "!", "", "?" if intent == "query" else "."))
            norm = lexicon.normalize(raw)
            if norm != realized[1]:
                continue
        full = {k: got_slots.get(k) for k in slots.SLOT_KEYS}
        if intent not in lexicon.permitted_intents(raw, norm):
            continue
        ex = Example(raw, norm, full, kind, family, home, device, missing)
        if valid(ex):
            return ex
    raise RuntimeError(f"no valid {kind} example for {split} seed {seed} index {index} after 60 tries")


def generate(split: str, n: int, seed: int, kinds=None, noisy: bool | None = None) -> list[Example]:
    """``n`` examples of a split. With ``kinds``, the kinds cycle through that list (even counts)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"n {n}: expected >= 0")
    for k in kinds or ():
        if k not in KINDS:
            raise ValueError(f"kind {k!r}: expected one of {', '.join(KINDS)}")
    return [example(split, seed, i, kind=(kinds[i % len(kinds)] if kinds else None), noisy=noisy)
            for i in range(n)]
