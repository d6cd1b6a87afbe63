"""Random homes for the training corpus: areas, devices, their spoken names, and discovery configs.

A home is a handful of areas and a mix of devices (lights, switches, fans, covers, locks, climate,
sensors) named the way people name them: a device word ("lamp", "blinds"), often with a modifier
("reading lamp", "Emma's lamp", "kitchen light"). Names and areas come from word pools split in two:

- ``train`` homes draw areas and modifiers from the training pools, plus made-up words built from
  syllables, so a model learns to copy whatever word the request uses rather than memorize names;
- ``heldout`` homes draw from pools disjoint from the training ones (no area word, modifier or
  made-up syllable pattern of a held-out home is ever a name or area in training).

The device words themselves (light, lamp, blinds, thermostat ...) are the language of the domain and
are shared. ``Home.discovery_configs()`` writes the home as Home Assistant MQTT discovery configs, so
the assistant can be run on it end to end.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import lru_cache

SPLITS = ("train", "heldout")

AREAS = {
    "train": (
        "kitchen", "living room", "bedroom", "bathroom", "office", "dining room", "hallway", "garage",
        "basement", "garden", "nursery", "guest room", "laundry room", "porch", "patio", "attic", "study",
        "den", "pantry", "family room", "master bedroom", "kids room", "entrance", "back yard", "front yard",
        "shed", "toilet", "closet", "balcony", "terrace", "studio", "wine cellar", "games room", "tv room",
        "sitting room", "boiler room", "stairwell", "corridor", "spare room", "music room", "craft room",
        "home office", "dressing room", "ensuite", "car port", "driveway", "pool house", "summer house",
        "upstairs hall", "downstairs toilet", "reading room", "tool room", "server room", "greenhouse",
    ),
    "heldout": (
        "lounge", "landing", "conservatory", "utility room", "cellar", "loft", "playroom", "sunroom",
        "mudroom", "workshop", "gym", "library", "veranda", "foyer", "annex", "snug", "scullery",
        "parlour", "granny flat", "man cave", "box room", "still room", "keeping room", "west wing",
    ),
}

# modifiers that make a device name ("reading lamp", "corner light"); disjoint between the splits
MODIFIERS = {
    "train": (
        "reading", "desk", "ceiling", "bedside", "corner", "floor", "wall", "table", "main", "big", "small",
        "left", "right", "night", "accent", "mood", "cabinet", "counter", "island", "mirror", "vanity",
        "window", "door", "porch", "patio", "stair", "hall", "sofa", "couch", "bookshelf", "piano", "bar",
        "aquarium", "fish tank", "christmas", "fairy", "garden", "pool", "path", "driveway", "security",
        "side", "front", "back", "north", "south", "upper", "lower", "tall", "round", "blue", "red", "green",
        "white", "old", "new", "guest", "kids", "baby", "master", "emma's", "jack's", "mia's", "noah's",
        "grandma's", "dad's", "mom's", "leo's", "sophie's", "workbench", "laundry", "closet", "pantry",
        "dining", "office", "kitchen", "bedroom", "bathroom", "garage", "shed", "attic", "basement",
    ),
    "heldout": (
        "lounge", "landing", "alcove", "arch", "fireplace", "mantel", "sideboard", "dresser", "easel",
        "globe", "lantern", "orchid", "terrarium", "bay", "east", "west", "middle", "tiny", "giant",
        "amber", "silver", "golden", "purple", "olivia's", "ethan's", "ava's", "liam's", "grandpa's",
        "oscar's", "chloe's", "cellar", "loft", "conservatory", "utility", "gym", "library", "foyer",
        "veranda", "snug", "hobby", "sewing", "pottery", "trellis", "pergola", "gazebo", "wardrobe",
    ),
}

# made-up words: train and heldout use disjoint syllable sets, so no made-up held-out word can occur
SYLLABLES = {
    "train": ("ka", "lo", "mi", "ra", "ven", "tor", "bel", "sa", "dun", "fi", "gor", "pel", "zan", "qui",
              "bro", "tal", "nex", "vo", "ril", "sha", "mon", "ter", "ix", "ba", "dre", "wil", "cro", "ny"),
    "heldout": ("ule", "oth", "yam", "eek", "aph", "uzz", "oj", "eeb", "uch", "aix"),
}

# device words per domain: (singular, plural or None); the language of the domain, shared by both splits
DEVICE_WORDS = {
    "light": (("light", "lights"), ("lamp", "lamps"), ("bulb", "bulbs"), ("led strip", "led strips"),
              ("spotlight", "spotlights"), ("chandelier", None), ("sconce", "sconces"), ("pendant", None),
              ("downlight", "downlights"), ("strip", None), ("lighting", None), ("light strip", None)),
    "switch": (("plug", "plugs"), ("socket", None), ("outlet", None), ("kettle", None), ("coffee machine", None),
               ("coffee maker", None), ("heater", None), ("dehumidifier", None), ("humidifier", None),
               ("printer", None), ("tv", None), ("television", None), ("speaker", None), ("amplifier", None),
               ("fountain", None), ("pump", None), ("sprinkler", "sprinklers"), ("washing machine", None),
               ("dishwasher", None), ("air purifier", None), ("electric blanket", None), ("monitor", None),
               ("router", None), ("radio", None), ("toaster", None), ("switch", None), ("power strip", None),
               ("towel rail", None), ("pond filter", None), ("irrigation", None)),
    "fan": (("fan", "fans"), ("ceiling fan", None), ("extractor fan", None), ("extractor", None),
            ("desk fan", None), ("tower fan", None), ("ventilation", None), ("exhaust fan", None)),
    "cover": (("blinds", None), ("blind", None), ("shades", None), ("shade", None), ("shutter", "shutters"),
              ("curtains", None), ("curtain", None), ("awning", None), ("garage door", None),
              ("gate", None), ("skylight", None), ("window", "windows"), ("roller shutter", None),
              ("drapes", None), ("louvres", None), ("roof window", None), ("cover", None)),
    "lock": (("lock", None), ("door lock", None), ("front door", None), ("back door", None),
             ("side gate", None), ("deadbolt", None), ("door", None), ("patio door", None),
             ("gate lock", None), ("smart lock", None), ("garden gate", None), ("cellar door", None)),
    "climate": (("thermostat", None), ("heating", None), ("ac", None), ("air conditioner", None),
                ("heat pump", None), ("radiator", None), ("air conditioning", None), ("climate", None),
                ("boiler", None), ("underfloor heating", None), ("hvac", None), ("mini split", None)),
    "sensor": (("temperature", None), ("humidity", None), ("temperature sensor", None),
               ("humidity sensor", None), ("thermometer", None), ("power meter", None)),
    "binary_sensor": (("motion sensor", None), ("door sensor", None), ("window sensor", None),
                      ("leak sensor", None), ("smoke detector", None), ("contact sensor", None)),
}

# how often each domain appears in a home, and which cover device classes a cover word implies
DOMAIN_WEIGHTS = {"light": 6, "switch": 3, "fan": 1.5, "cover": 2.5, "lock": 1.2, "climate": 1.2, "sensor": 1,
                  "binary_sensor": 0.8}
COVER_CLASSES = {"blinds": "blind", "blind": "blind", "shades": "shade", "shade": "shade", "shutter": "shutter",
                 "curtains": "curtain", "curtain": "curtain", "awning": "awning", "garage door": "garage",
                 "gate": "gate", "skylight": "window", "window": "window", "roller shutter": "shutter",
                 "drapes": "curtain", "louvres": "shutter", "roof window": "window", "cover": None}
HVAC_MODES = ("off", "heat", "cool", "auto", "heat_cool", "dry", "fan_only")


@dataclass
class Device:
    """One entity of a home: its domain, its name as shown and spoken, its area (or None)."""

    domain: str
    name: str                     # lowercase spoken name, e.g. "reading lamp"
    noun: str                     # the device word in it, e.g. "lamp"
    plural: str | None            # the device word's plural, when the name is just that word
    area: str | None
    device_class: str | None = None
    features: tuple = ()          # brightness, position, percentage, modes
    modes: tuple = ()
    object_id: str = ""

    @property
    def title(self) -> str:
        return " ".join(w[:1].upper() + w[1:] for w in self.name.split())


@dataclass
class RandomHome:
    """A generated home: its split, areas and devices."""

    split: str
    seed: int
    areas: list[str]
    devices: list[Device] = field(default_factory=list)

    def of_domain(self, *domains: str) -> list[Device]:
        return [d for d in self.devices if d.domain in domains]

    def names(self) -> list[str]:
        return sorted({d.name for d in self.devices})

    def discovery_configs(self, prefix: str = "homeassistant") -> dict:
        """The home as {discovery topic: config}, the way MQTT devices announce themselves."""
        out = {}
        for d in self.devices:
            base = f"home/{d.object_id}"
            cfg = {"name": None, "unique_id": d.object_id, "object_id": d.object_id,
                   "device": {"identifiers": [d.object_id], "name": d.title}}
            if d.area:
                cfg["device"]["suggested_area"] = " ".join(w.capitalize() for w in d.area.split())
            if d.domain in ("light", "switch", "fan", "lock"):
                cfg["command_topic"] = base + "/set"
                cfg["state_topic"] = base + "/state"
            if d.domain == "light" and "brightness" in d.features:
                cfg["brightness_command_topic"] = base + "/brightness/set"
            if d.domain == "fan" and "percentage" in d.features:
                cfg["percentage_command_topic"] = base + "/percentage/set"
            if d.domain == "cover":
                cfg["command_topic"] = base + "/set"
                cfg["state_topic"] = base + "/state"
                if d.device_class:
                    cfg["device_class"] = d.device_class
                if "position" in d.features:
                    cfg["set_position_topic"] = base + "/position/set"
                    cfg["position_topic"] = base + "/position"
            if d.domain == "climate":
                cfg["temperature_command_topic"] = base + "/temperature/set"
                cfg["mode_command_topic"] = base + "/mode/set"
                cfg["modes"] = list(d.modes)
                cfg["min_temp"], cfg["max_temp"] = 7, 35
            if d.domain in ("sensor", "binary_sensor"):
                cfg["state_topic"] = base + "/state"
                if d.device_class:
                    cfg["device_class"] = d.device_class
                if d.domain == "sensor" and d.device_class == "temperature":
                    cfg["unit_of_measurement"] = "°C"
            out[f"{prefix}/{d.domain}/{d.object_id}/config"] = cfg
        return out


def made_up_word(rng: random.Random, split: str) -> str:
    syl = SYLLABLES[split]
    return "".join(rng.choice(syl) for _ in range(rng.choice((2, 2, 3))))


def _area(rng: random.Random, split: str) -> str:
    if split == "train" and rng.random() < 0.25:
        word = made_up_word(rng, split)
        return rng.choice((word, word + " room", word + " " + rng.choice(("hall", "wing", "suite", "den"))))
    if split == "heldout" and rng.random() < 0.1:
        return made_up_word(rng, split) + rng.choice(("", " room"))
    return rng.choice(AREAS[split])


def _modifier(rng: random.Random, split: str) -> str:
    if rng.random() < (0.3 if split == "train" else 0.15):
        word = made_up_word(rng, split)
        return word + ("'s" if rng.random() < 0.2 else "")
    return rng.choice(MODIFIERS[split])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "device"


def device_name(rng: random.Random, split: str, domain: str, area: str | None) -> tuple[str, str, str | None]:
    """(name, noun, plural) of a new device of this domain."""
    noun, plural = rng.choice(DEVICE_WORDS[domain])
    r = rng.random()
    if r < 0.25:
        return noun, noun, plural                              # "lamp"
    if r < 0.4 and area:
        return f"{area} {noun}", noun, None                    # "kitchen lamp": the area is in the name
    if r < 0.5 and domain in ("light", "switch", "fan") and rng.random() < 0.5:
        return made_up_word(rng, split), noun, None            # a bare made-up name ("kalomi")
    mod = _modifier(rng, split)
    if rng.random() < 0.12:
        mod = f"{mod} {_modifier(rng, split)}"
    return f"{mod} {noun}", noun, None


@lru_cache(maxsize=64)
def random_home(split: str, seed: int, min_devices: int = 6, max_devices: int = 18,
                complete: bool = False) -> RandomHome:
    """A home drawn from the split's pools; the same (split, seed) gives the same home. A
    ``complete`` home has at least one device of every controllable domain."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    rng = random.Random(f"home/{split}/{seed}")
    areas: list[str] = []
    for _ in range(rng.randint(3, 8)):
        a = _area(rng, split)
        if a not in areas:
            areas.append(a)
    home = RandomHome(split, seed, areas)
    domains = list(DOMAIN_WEIGHTS)
    weights = [DOMAIN_WEIGHTS[d] for d in domains]
    used_ids: set[str] = set()
    used_names: set[tuple] = set()
    for _ in range(rng.randint(min_devices, max_devices) * 3):
        if len(home.devices) >= max_devices:
            break
        domain = rng.choices(domains, weights)[0]
        area = rng.choice(areas) if rng.random() < 0.9 else None
        name, noun, plural = device_name(rng, split, domain, area)
        if (name, area) in used_names or (domain == "lock" and any(x.name == name for x in home.devices)):
            continue
        used_names.add((name, area))
        oid = _slug((area + " " if area and not name.startswith(area) else "") + name)
        while oid in used_ids:
            oid += "_2"
        used_ids.add(oid)
        d = Device(domain, name, noun, plural, area, object_id=oid)
        if domain == "light":
            d.features = ("brightness",) if rng.random() < 0.8 else ()
        elif domain == "fan":
            d.features = ("percentage",) if rng.random() < 0.85 else ()
        elif domain == "cover":
            d.device_class = COVER_CLASSES.get(noun)
            d.features = ("position",) if rng.random() < 0.7 else ()
        elif domain == "climate":
            d.modes = tuple(m for m in HVAC_MODES if m in ("off", "heat") or rng.random() < 0.5)
        elif domain == "sensor":
            d.device_class = "humidity" if "humidity" in name else "power" if "power" in name else "temperature"
        elif domain == "binary_sensor":
            d.device_class = {"motion": "motion", "door": "door", "window": "window", "leak": "moisture",
                              "smoke": "smoke"}.get(name.split()[-2] if len(name.split()) > 1 else "", "opening")
        home.devices.append(d)
    needed = ("light", "switch", "fan", "cover", "lock", "climate") if complete else ("light",)
    for domain in needed:
        if home.of_domain(domain):
            continue
        area = rng.choice(areas)
        name, noun, plural = device_name(rng, split, domain, area)
        oid = _slug(area + " " + name) + f"_{len(home.devices)}"
        d = Device(domain, name, noun, plural, area, object_id=oid)
        d.features = {"light": ("brightness",), "fan": ("percentage",), "cover": ("position",)}.get(domain, ())
        d.device_class = COVER_CLASSES.get(noun) if domain == "cover" else None
        d.modes = ("off", "heat", "cool", "auto") if domain == "climate" else ()
        home.devices.append(d)
    return home


def absent_device(rng: random.Random, home: RandomHome, domain: str) -> Device:
    """A device of the home's split that the home does not have (for "no such device" requests)."""
    names = {d.name for d in home.devices}
    for _ in range(50):
        area = rng.choice(home.areas) if rng.random() < 0.5 else None
        name, noun, plural = device_name(rng, home.split, domain, None)
        if name not in names and not any(n.split()[-1] == name.split()[-1] for n in names):
            return Device(domain, name, noun, plural, area)
    return Device(domain, "sauna heater", "heater", None, None)
