"""The words of a request: normalization, numbers, and which intents its verbs permit.

``normalize`` turns what a person (or a speech recognizer) wrote into lowercase words with numbers
as digits: "Dim the landing light to forty-five %" -> ``dim the landing light to 45 percent``.
Training and run time both use it, so the model sees one spelling of every number.

``permitted_intents`` is the safety rule: it decides, from the request's words alone and before any
model runs, which intents the reply may take. An intent whose opposite the request asks for (lock vs
unlock, open vs close, on vs off) is never in the set, an unlock needs an unlock word, a negated verb
permits neither side, and a question permits only a query. The resolver checks the final action
against the same set again, so an opposite action cannot come out of any model.
"""

from __future__ import annotations

import re
import unicodedata

from edge_runtime.assist.slots import INTENTS, MODES

_UNITS = {"zero": 0, "oh": None, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
          "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
          "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_FRACTIONS = {"half": 50, "halfway": 50, "quarter": 25, "third": 33, "thirds": 67}

# speech-recognition and typing slips that change meaning, fixed before anything else looks
_SLIPS = {"lite": "light", "lites": "lights", "lihgt": "light", "ligth": "light", "lamps": "lamps",
          "thermostate": "thermostat", "thermastat": "thermostat", "blines": "blinds", "blind": "blind",
          "lok": "lock", "unlok": "unlock", "un-lock": "unlock", "garag": "garage", "percents": "percent",
          "pct": "percent", "procent": "percent", "degree": "degrees", "celsius": "degrees", "fahrenheit": "degrees",
          "ok": "okay", "pls": "please", "plz": "please", "dont": "don't", "doesnt": "doesn't", "isnt": "isn't",
          "whats": "what's", "hows": "how's", "turnoff": "turn off", "turnon": "turn on", "switchoff": "switch off",
          "switchon": "switch on", "of": "of"}

NEGATIONS = frozenset({"don't", "do not", "never", "not", "no longer", "doesn't", "isn't", "without"})

# cue phrases per polarity; matched as whole word sequences on the normalized text
CUES = {
    "on": ("on", "start", "enable", "activate", "light up", "illuminate", "power up", "fire up", "brighten"),
    "off": ("off", "disable", "deactivate", "kill", "cut the power", "power down", "shut down", "extinguish",
            "stop", "halt", "douse"),
    "open": ("open", "raise", "lift", "roll up", "pull up", "draw back", "let in", "opening", "opened"),
    "close": ("close", "shut", "lower", "roll down", "pull down", "closing", "closed"),
    # a state word after the device ("get the door locked", "i need the door unlocked") asks for it too
    "lock": ("lock", "secure", "bolt", "latch", "relock", "locked", "locking", "bolted", "secured"),
    "unlock": ("unlock", "unbolt", "unlatch", "unsecure", "release the lock", "unlocked", "unlocking",
               "unbolted"),
}

# the three contradicting pairs: an intent is barred when the request asks for its opposite
OPPOSITES = {"turn_on": "off", "turn_off": "on", "open": "close", "close": "open", "lock": "unlock",
             "unlock": "lock"}
INTENT_CUE = {"turn_on": "on", "turn_off": "off", "open": "open", "close": "close", "lock": "lock",
              "unlock": "unlock"}

VALUE_INTENTS = ("brightness", "position", "fan_speed", "temperature")

QUESTION_STARTS = frozenset({"is", "are", "was", "were", "what", "what's", "which", "how", "how's", "does",
                             "do", "did", "has", "have", "who", "where", "why", "when", "whats", "tell", "check",
                             "any", "some"})     # "any lights on upstairs", "some fans off in the loft"
COMMAND_QUESTION_STARTS = frozenset({"can", "could", "would", "will", "please", "would you", "kindly"})

MODE_WORDS = {"heat": ("heat", "heating", "warm", "warming"), "cool": ("cool", "cooling", "air conditioning"),
              "auto": ("auto", "automatic"), "heat_cool": ("heat cool", "heat and cool", "heat/cool"),
              "dry": ("dry", "dehumidify", "dehumidifying"), "fan_only": ("fan only", "fan mode"),
              "off": ("off",)}

# words that say which kind of device is meant
DOMAIN_WORDS = {
    "light": ("light", "lights", "lamp", "lamps", "bulb", "bulbs", "chandelier", "sconce", "sconces",
              "lighting", "led", "leds", "strip", "strips", "spotlight", "spotlights", "spots", "downlight",
              "downlights", "pendant", "pendants", "lantern", "lanterns", "fairy"),
    "switch": ("switch", "plug", "socket", "outlet", "relay", "power"),
    "fan": ("fan", "fans", "ventilator", "ventilation", "extractor"),
    "cover": ("blind", "blinds", "shade", "shades", "shutter", "shutters", "curtain", "curtains", "awning",
              "garage", "gate", "gates", "door", "doors", "window", "windows", "cover", "covers", "roller",
              "louvre", "louvres", "drapes", "skylight", "skylights", "awnings"),
    "lock": ("lock", "locks", "deadbolt", "deadbolts", "latch", "door", "doors"),
    "climate": ("thermostat", "heating", "heater", "heat", "ac", "air", "conditioner", "conditioning",
                "climate", "hvac", "radiator", "temperature", "temp", "boiler", "heatpump"),
    "sensor": ("sensor", "temperature", "temp", "humidity", "reading", "level", "battery", "power", "energy"),
    "binary_sensor": ("sensor", "motion", "contact", "window", "door", "occupancy", "leak", "smoke"),
}


def _number_words(words: list[str]) -> list[str]:
    """Number words to digits: "twenty one and a half" -> "21.5", "forty five" -> "45"."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        value = None
        j = i
        if w in _TENS:
            value = _TENS[w]
            j = i + 1
            if j < len(words) and words[j] in _UNITS and _UNITS[words[j]] and _UNITS[words[j]] < 10:
                value += _UNITS[words[j]]
                j += 1
        elif w in _UNITS and _UNITS[w] is not None:
            value = _UNITS[w]
            j = i + 1
        elif re.fullmatch(r"\d+(\.\d+)?", w):
            value = float(w)
            j = i + 1
        if value is not None:
            if j < len(words) and words[j] == "hundred":
                value = value * 100
                j += 1
                if j + 1 < len(words) and words[j] == "and" and (words[j + 1] in _UNITS or words[j + 1] in _TENS):
                    rest = _number_words(words[j + 1:j + 3])
                    if rest and re.fullmatch(r"\d+", rest[0]):
                        value += int(rest[0])
                        j += 1 + (2 if len(rest) == 1 and len(words[j + 1:j + 3]) == 2 else 1)
            if j + 2 < len(words) and words[j:j + 3] == ["and", "a", "half"]:
                value += 0.5
                j += 3
            elif j + 1 < len(words) and words[j] == "point" and words[j + 1] in _UNITS and _UNITS[words[j + 1]] is not None \
                    and _UNITS[words[j + 1]] < 10:
                value += _UNITS[words[j + 1]] / 10
                j += 2
            elif j + 1 < len(words) and words[j] == "point" and re.fullmatch(r"\d", words[j + 1]):
                value += int(words[j + 1]) / 10
                j += 2
            out.append(_fmt(value))
            i = j
            continue
        out.append(w)
        i += 1
    return out


def _fmt(value: float) -> str:
    value = round(float(value), 2)
    return str(int(value)) if value.is_integer() else repr(value)


def _fractions(words: list[str]) -> list[str]:
    """"half" / "halfway" / "a quarter" / "three quarters" -> a percent, where a share is meant."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("three", "3") and i + 1 < len(words) and words[i + 1] in ("quarters", "quarter"):
            out += ["75", "percent"]
            i += 2
            continue
        if w in ("two", "2") and i + 1 < len(words) and words[i + 1] == "thirds":
            out += ["67", "percent"]
            i += 2
            continue
        if w in ("half", "halfway") or (w in ("quarter", "third") and out and out[-1] in ("a", "one", "1")):
            if w in ("quarter", "third") and out[-1] in ("a", "one", "1"):
                out.pop()
            out += [str(_FRACTIONS[w]), "percent"]
            i += 1
            if i < len(words) and words[i] == "way":
                i += 1
            continue
        out.append(w)
        i += 1
    return out


def normalize(text: str) -> str:
    """The canonical spelling of a request: lowercase words, numbers as digits, no punctuation."""
    t = unicodedata.normalize("NFKC", str(text)).lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'")
    t = re.sub(r"(\d),(\d{3})", r"\1\2", t)
    t = re.sub(r"(\d)\s*%", r"\1 percent ", t).replace("%", " percent ")
    t = re.sub(r"°\s*[cf]?\b|º", " degrees ", t)
    t = re.sub(r"(\d)\s*(c|f)\b", r"\1 degrees", t)
    t = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", t)
    t = re.sub(r"[^\w\s'.]", " ", t)
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)
    t = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", t)
    words = []
    for w in t.split():
        words += _SLIPS.get(w, w).split()
    # "turn of the light": a recognizer's "of" after turn/switch is "off" unless "of" is followed by a noun phrase
    fixed = []
    for k, w in enumerate(words):
        if w == "of" and k > 0 and words[k - 1] in ("turn", "switch", "turned", "switched"):
            w = "off"
        fixed.append(w)
    words = _fractions(_number_words(fixed))
    return " ".join(words)


def words_of(normalized: str) -> list[str]:
    return normalized.split()


def numbers_in(normalized: str) -> list[float]:
    return [float(w) for w in normalized.split() if re.fullmatch(r"\d+(\.\d+)?", w)]


def has_phrase(words: list[str], phrase: str) -> bool:
    p = phrase.split()
    n = len(p)
    return any(words[i:i + n] == p for i in range(len(words) - n + 1))


_ON_VERBS = frozenset({"turn", "switch", "put", "flip", "power", "turned", "switched", "click", "keep", "leave", "bring",
                       "get", "come", "go", "back", "it", "them", "everything", "all"})
_DETERMINERS = frozenset({"the", "a", "an", "my", "our", "your", "this", "that", "top", "its", "their", "his", "her"})
_PRONOUN_BE = frozenset({"i'm", "we're", "you're", "he's", "she's", "they're", "im"})
_LOCK_NOUN_BEFORE = frozenset({"the", "a", "an", "door", "front", "back", "side", "smart", "my", "our", "garage",
                               "gate", "patio", "this", "that", "bike", "main", "entry", "cellar", "shed", "deck"})


def _is_cue(words: list[str], i: int, word: str) -> bool:
    """Whether words[i] (== word) is used as the verb-like cue rather than as a noun or preposition."""
    before = words[i - 1] if i else None
    after = words[i + 1] if i + 1 < len(words) else None
    if word == "on":      # "turn on the lamp" / "lamp on" are cues; "the lamp on the desk" is a place
        return before in _ON_VERBS or after not in _DETERMINERS
    if word == "off" and before in _PRONOUN_BE:     # "i'm off to work" says where someone goes
        return False
    if word == "shut":    # "shut off" / "shut down" are off, not close
        return after not in ("off", "down")
    if word in ("lock", "latch", "bolt"):   # "lock the door" is a cue, "the front door lock" a noun
        return before not in _LOCK_NOUN_BEFORE
    return True


def cues_in(words: list[str]) -> set[str]:
    """The polarities the request's verbs ask for ("on", "off", "open", ...)."""
    found = set()
    for polarity, phrases in CUES.items():
        for phrase in phrases:
            p = phrase.split()
            n = len(p)
            for i in range(len(words) - n + 1):
                if words[i:i + n] == p and (n > 1 or _is_cue(words, i, p[0])):
                    found.add(polarity)
                    break
            if polarity in found:
                break
    return found


def negated(words: list[str]) -> bool:
    return any(has_phrase(words, n) for n in NEGATIONS)


def is_question(raw_text: str, words: list[str]) -> bool:
    """A question about a state (not a command phrased as a question, like "can you open the gate")."""
    if not words:
        return False
    if words[0] in COMMAND_QUESTION_STARTS or has_phrase(words[:2], "would you"):
        return False
    return words[0] in QUESTION_STARTS or (str(raw_text).rstrip().endswith("?") and not cues_in(words))


def modes_in(words: list[str]) -> set[str]:
    return {mode for mode, phrases in MODE_WORDS.items() if any(has_phrase(words, p) for p in phrases)}


_MODE_BEFORE = frozenset({"to", "on", "in", "into", "onto", "at", "for"})


def mode_asked(words: list[str]) -> str | None:
    """The HVAC mode a request asks for, or None when it names no mode as one.

    The longest mode phrase wins where phrases overlap ("heat and cool" is heat_cool, not heat); a
    mode counts when it follows "to/on/in/into" or precedes "mode" ("put the ac on cool", "dry mode
    on the boiler"), so "turn on the heating" names a device, not a mode."""
    found = []
    i = 0
    while i < len(words):
        best = None
        for mode, phrases in MODE_WORDS.items():
            for p in phrases:
                n = len(p.split())
                if words[i:i + n] == p.split() and (best is None or n > best[1]):
                    best = (mode, n)
        if best is None:
            i += 1
            continue
        mode, n = best
        before = words[i - 1] if i else None
        after = words[i + n] if i + n < len(words) else None
        if before in _MODE_BEFORE or after == "mode":
            found.append(mode)
        i += n
    return found[-1] if found else None


def permitted_intents(raw_text: str, normalized: str | None = None) -> set[str]:
    """The intents a reply to this request may take. The rules:

    - a question permits only ``query`` and ``none``;
    - an intent of a contradicting pair is barred when the request has a cue for its opposite;
    - a negated request bars both sides of every pair it has a cue for;
    - ``unlock`` needs an unlock cue (never inferred), and is barred when "lock" also appears bare;
    - the value intents need a number, ``hvac_mode`` needs a mode word;
    - ``none`` is always permitted.
    """
    normalized = normalize(raw_text) if normalized is None else normalized
    words = words_of(normalized)
    if is_question(raw_text, words):
        return {"query", "none"}
    cues = cues_in(words)
    neg = negated(words)
    allowed = set(INTENTS)
    for intent, own in INTENT_CUE.items():
        opposite = OPPOSITES[intent]
        if opposite in cues:
            allowed.discard(intent)
        if neg and (own in cues or opposite in cues):
            allowed.discard(intent)
    if "unlock" not in cues:
        allowed.discard("unlock")
    if neg:
        allowed -= set(VALUE_INTENTS) | {"hvac_mode", "stop"}
    if not numbers_in(normalized):
        allowed -= set(VALUE_INTENTS)
    if not modes_in(words):
        allowed.discard("hvac_mode")
    allowed.add("none")
    return allowed


def domains_named(words: list[str]) -> set[str]:
    """The device kinds the request's words name ("lights" -> light, "blinds" -> cover)."""
    return {d for d, ws in DOMAIN_WORDS.items() if any(w in ws for w in words)}


assert set(MODE_WORDS) == set(MODES)
