"""From a request in segments to its text, its normalized text and the slots it asks for.

A generated request is a list of ``Segment`` s: pieces of text, each remembering the slot that produced
it (``name``, ``area``, ``device`` for a generic device word such as "lights", ``value``, or none).
``realize`` joins them, normalizes the text with the assistant's own ``lexicon.normalize`` and finds
every slot's words in it, then applies the naming convention of ``edge_runtime.assist.slots``:

- ``name`` is the whole phrase that names the device, as said: a name with the area or another
  modifier in front of it stays one span ("the kitchen lights" -> name ``kitchen lights``); with no
  device name, the generic device word is the name ("the lights in the kitchen" -> ``lights``); an
  area said with no device word and no preposition is the name too ("set the kitchen to 40%").
- ``area`` is an area said as a place, after a preposition ("in the kitchen", "of the lounge").

Speech-recognition slips and number words are applied here too, to the raw text (before normalize),
so the model is trained on what the normalizer makes of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from edge_runtime.assist import lexicon, slots

PLACE_WORDS = frozenset({"in", "on", "at", "of", "across", "around", "throughout", "inside", "for", "from"})
PARTICLE_VERBS = frozenset({"turn", "switch", "bring", "change", "put", "flip", "click", "power", "get"})
DETERMINERS = frozenset({"the", "my", "our", "your", "this", "that", "a"})
LIGHT_NOUNS = frozenset({"light", "lights", "lighting", "lamp", "lamps"})

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

# slips a recognizer or a hurried typist makes that the normalizer repairs
REPAIRED_SLIPS = {"light": ("lite",), "lights": ("lites",), "thermostat": ("thermastat", "thermostate"),
                  "blinds": ("blines",), "lock": ("lok",), "unlock": ("unlok", "un-lock"), "garage": ("garag",),
                  "percent": ("pct", "procent", "%"), "please": ("pls", "plz"), "degrees": ("degree",),
                  "off": ("of",)}


@dataclass
class Segment:
    text: str
    role: str | None = None    # name, area, device, value or None


def number_words(n: float) -> str:
    """English words for 0..999 (and halves): 45 -> "forty five", 21.5 -> "twenty one and a half"."""
    whole = int(n)
    half = abs(n - whole - 0.5) < 1e-9
    if not 0 <= whole <= 999:
        raise ValueError(f"number {n}: expected 0..999")
    if whole < 20:
        text = _UNITS[whole]
    elif whole < 100:
        text = _TENS[whole // 10] + ("" if whole % 10 == 0 else " " + _UNITS[whole % 10])
    else:
        rest = whole % 100
        text = _UNITS[whole // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    return text + (" and a half" if half else "")


def say_number(rng: random.Random, n: float, words_rate: float = 0.15) -> str:
    """A number as a person might write or a recognizer transcribe it."""
    if rng.random() < words_rate:
        text = number_words(n)
        return text.replace(" ", "-", 1) if rng.random() < 0.3 and " " in text and "hundred" not in text \
            and "half" not in text else text
    return str(int(n)) if float(n).is_integer() else str(n)


def _drop_letter(rng: random.Random, word: str) -> str:
    """One letter dropped or doubled inside a word of five letters or more."""
    if len(word) < 5 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    return word[:i] + word[i + 1:] if rng.random() < 0.7 else word[:i] + word[i] + word[i:]


def slip(rng: random.Random, segments: list[Segment], rate: float) -> list[Segment]:
    """Speech-recognition and typing slips, applied to the raw text of the segments."""
    out = []
    for seg in segments:
        words = seg.text.split(" ")
        for k, w in enumerate(words):
            low = w.lower()
            if low in REPAIRED_SLIPS and rng.random() < rate:
                if low == "off" and not (k and words[k - 1].lower() in ("turn", "switch")):
                    continue
                words[k] = rng.choice(REPAIRED_SLIPS[low])
            elif seg.role == "name" and rng.random() < rate * 0.5:
                words[k] = _drop_letter(rng, w)
            elif seg.role is None and low in ("the", "my") and rng.random() < rate:
                words[k] = ""
        out.append(Segment(" ".join(words), seg.role))
    return out


def _positions(segments: list[Segment], words: list[str]):
    """Word ranges of each segment in the normalized text, or None when they cannot be aligned."""
    ranges, at = [], 0
    for seg in segments:
        seg_words = lexicon.normalize(seg.text).split()
        n = len(seg_words)
        if words[at:at + n] != seg_words:
            return None
        ranges.append((at, at + n))
        at += n
    return ranges if at == len(words) else None


def _find(words: list[str], part: list[str]):
    n = len(part)
    for i in range(len(words) - n + 1):
        if words[i:i + n] == part:
            return i, i + n
    return None


def _is_place(words: list[str], start: int) -> bool:
    i = start - 1
    while i >= 0 and words[i] in DETERMINERS | {"all", "every", "whole", "entire"}:
        i -= 1
    if i < 0 or words[i] not in PLACE_WORDS:
        return False
    # "turn on the porch": "on" is the verb's particle there, not a place
    return not (words[i] in ("on", "off") and i > 0 and words[i - 1] in PARTICLE_VERBS)


def realize(segments: list[Segment], intent: str, value=None, mode=None):
    """(raw text, normalized text, slots) of a request, or None when its slots cannot be located."""
    raw = " ".join("".join(s.text for s in segments).split())
    norm = lexicon.normalize(raw)
    words = norm.split()
    if not words:
        return None
    if intent == "none":
        return raw, norm, {"intent": "none"}
    ranges = _positions(segments, words)
    spans: dict[str, list] = {"name": [], "area": [], "device": [], "value": []}
    for k, seg in enumerate(segments):
        if seg.role is None:
            continue
        if ranges is not None:
            lo, hi = ranges[k]
        else:
            found = _find(words, lexicon.normalize(seg.text).split())
            if found is None:
                return None
            lo, hi = found
        if seg.role == "device":   # a device rule may carry its own determiner ("the door")
            while lo < hi and words[lo] in DETERMINERS:
                lo += 1
        if lo < hi:
            spans[seg.role].append((lo, hi))
    got = {"intent": intent}
    name = spans["name"][0] if spans["name"] else None
    device = spans["device"][0] if spans["device"] else None
    if name and device and device[0] == name[1] and " ".join(words[device[0]:device[1]]) in LIGHT_NOUNS:
        name = (name[0], device[1])          # "{name} <light>": the light word is part of what was said
    if name is None and device is not None:
        name = device
    area = spans["area"][0] if spans["area"] else None
    if area is not None and name is not None and area[1] == name[0]:
        name, area = (area[0], name[1]), None          # "the kitchen lights": one name
    elif area is not None and name is None and not _is_place(words, area[0]):
        name, area = area, None                        # "set the kitchen to 40%": the target is the name
    if name is not None:
        got["name"] = " ".join(words[name[0]:name[1]])
    if area is not None:
        got["area"] = " ".join(words[area[0]:area[1]])
    if got.get("name") and len(got["name"].split()) > slots.MAX_SPAN_WORDS:
        return None
    if got.get("area") and len(got["area"].split()) > slots.MAX_SPAN_WORDS:
        return None
    if value is not None:
        numbers = lexicon.numbers_in(" ".join(" ".join(words[a:b]) for a, b in spans["value"]))
        if not numbers:
            numbers = [n for n in lexicon.numbers_in(norm) if abs(n - value) < 1e-9]
        if not numbers:
            return None
        got["value"] = numbers[0]
    if mode is not None:
        got["mode"] = mode
    return raw, norm, got
