"""Grounding: from the words a request used to the entities of one home.

The model copies spans ("landing light", "kitchen"); this module decides which entities they mean.
Names are compared word by word after normalization, forgiving what people and recognizers drop or
slip: plurals, one letter in a word of four or more, two in a word of seven or more, compounds
written apart ("night stand" / "nightstand"). A generic device word ("lights", "blinds") with an
area means every such entity in that area; "all the lights" without one means all of the home's.
Anything ambiguous or absent resolves to nothing: the assistant answers, it never guesses a device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from edge_runtime.assist import lexicon

# which entity domains each intent may act on
INTENT_DOMAINS = {
    "turn_on": ("light", "switch", "fan", "climate"),
    "turn_off": ("light", "switch", "fan", "climate"),
    "open": ("cover",), "close": ("cover",), "stop": ("cover", "fan", "light", "switch"),
    "lock": ("lock",), "unlock": ("lock",),
    "brightness": ("light",), "position": ("cover",), "fan_speed": ("fan",),
    "temperature": ("climate",), "hvac_mode": ("climate",),
    "query": ("light", "switch", "fan", "cover", "lock", "climate", "sensor", "binary_sensor",
              "alarm_control_panel"),
}

STOPWORDS = frozenset({"the", "a", "an", "my", "our", "your", "in", "on", "of", "at", "to", "please", "all",
                       "every", "both", "and", "this", "that", "these", "those", "its", "it", "is", "are",
                       "upstairs", "downstairs", "room", "s", "'s"})
ALL_WORDS = frozenset({"all", "every", "everything", "both", "each", "anything", "everywhere", "house"})


def words(text: str) -> list[str]:
    return list(_words(text))


@lru_cache(maxsize=8192)
def _words(text: str) -> tuple:
    return tuple(w for w in lexicon.normalize(text).replace("'s", "").split() if w not in STOPWORDS)


def _stem(w: str) -> str:
    for suffix in ("ies", "es", "s"):
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            return w[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return w


def _edit_distance(a: str, b: str, limit: int) -> int:
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        if min(cur) > limit:
            return limit + 1
        prev = cur
    return prev[-1]


@lru_cache(maxsize=65536)
def word_match(a: str, b: str) -> bool:
    if a == b or _stem(a) == _stem(b):
        return True
    if a.isdigit() or b.isdigit():
        return False
    n = min(len(a), len(b))
    limit = 2 if n >= 7 else 1 if n >= 4 else 0
    return limit > 0 and _edit_distance(_stem(a), _stem(b), limit) <= limit


def _joined(ws: list[str]) -> list[str]:
    """Words with adjacent pairs also offered joined ("night stand" -> "nightstand")."""
    return ws + [ws[i] + ws[i + 1] for i in range(len(ws) - 1)]


def coverage(name_words: list[str], said: list[str]) -> float:
    """The share of a name's words found among the words said (0..1)."""
    if not name_words:
        return 0.0
    pool = _joined(said)
    hit = sum(1 for w in name_words if any(word_match(w, s) for s in pool))
    joined_name = "".join(name_words)
    if hit < len(name_words) and any(word_match(joined_name, s) for s in pool):
        return 1.0
    return hit / len(name_words)


def extra(said: list[str], name_words: list[str]) -> int:
    """Words said that the name does not explain (fewer is a tighter match)."""
    pool = _joined(name_words)
    return sum(1 for s in said if not any(word_match(s, w) for w in pool))


@dataclass
class Target:
    entities: list            # the Entity records meant (several for an area-wide command)
    problem: str | None = None  # why nothing was found, for the reply
    group: bool = False       # every device of a kind (no name matched), rather than named ones


def _generic(said: list[str]) -> bool:
    """All the words said are device-kind words ("lights", "the blinds", "all lamps")."""
    kinds = {w for ws in lexicon.DOMAIN_WORDS.values() for w in ws}
    rest = [w for w in said if w not in ALL_WORDS]
    return bool(rest) and all(w in kinds or _stem(w) in kinds for w in rest)


def _domains_of(said: list[str], domains) -> list[str]:
    named = lexicon.domains_named(said) | lexicon.domains_named([_stem(w) for w in said])
    return [d for d in domains if d in named] or list(domains)


def _area_matches(home, said: list[str]):
    """Areas of the home the words name, best first (a full match only)."""
    out = []
    for area in home.areas():
        aw = words(area)
        if aw and coverage(aw, said) == 1.0:
            out.append((len(aw), area))
    return [a for _, a in sorted(out, reverse=True)]


_CUE_WORDS = frozenset(w for phrases in lexicon.CUES.values() for p in phrases for w in p.split())
_VERB_WORDS = _CUE_WORDS | {"turn", "switch", "set", "make", "put", "dim", "change", "adjust", "get", "can",
                            "could", "would", "you", "i", "me", "want", "need", "like", "percent", "degrees",
                            "to", "up", "down", "mode", "speed", "brightness", "position", "level"}


def find(home, intent: str, name: str | None, area: str | None, text: str) -> Target:
    """The entities a request means, or a Target with no entities and the reason."""
    domains = INTENT_DOMAINS.get(intent, ())
    pool = [e for e in home if e.domain in domains and (intent == "query" or e.controllable)]
    if not pool:
        return Target([], "no_domain")
    name_w = words(name) if name else []
    area_w = words(area) if area else []
    all_w = words(text)
    areas = _area_matches(home, area_w) if area_w else []
    if area_w and not areas:
        return Target([], "no_area")
    if not name_w:
        # a verb-like word stays when it is a word of this home's names ("light", "back", "lock", "power"
        # are cue words too); numbers stay: a name may hold one ("relay 2"), a value is only an extra word
        named = _name_words(home)
        name_w = [w for w in words(command_clause(text)) if w not in _VERB_WORDS or w in named or _stem(w) in named]
        if areas:
            name_w = [w for w in name_w if not any(word_match(w, a) for a in area_w)]
        phrase = _device_phrase(home, lexicon.normalize(text).split())
    else:
        phrase = None
    found = _attempt(pool, name_w, area_w, areas, domains, all_w, phrase)
    inner = _area_matches(home, name_w) if not areas else []
    if found.entities and not found.problem and not (found.group and inner):
        return found
    if not areas:
        # the area said inside the name ("the kitchen light"): try it as an area
        for a in inner:
            aw = words(a)
            rest = [w for w in name_w if not any(word_match(w, x) for x in aw)]
            again = _attempt(pool, rest, aw, [a], domains, all_w, phrase)
            if again.entities and not again.problem:
                return again
        if inner and found.group and not _names_an_area_word(found.entities, name_w, inner):
            return Target([], "no_device")  # a kind in an area said: never the kind elsewhere
    return found


def _names_an_area_word(entities, said, areas) -> bool:
    """Whether the words that named an area are also words of the entities' own names (a "Garden
    Light" in the hall is named by "garden", whatever area is called Garden)."""
    aw = [w for a in areas for w in words(a)]
    return any(word_match(w, x) for e in entities for label in (e.name or "", e.friendly_name or "")
               for x in _words(label) for w in aw if any(word_match(w, s) for s in said))


_CLAUSE_BREAK = re.compile(r"[,;:!?]|\s(?:so|then)\s", re.IGNORECASE)


def command_clause(text: str) -> str:
    """The request without a leading clause ("we're leaving now so dim the hall to 20" -> "dim the
    hall to 20"; "I'm off to work, the brightness of the snug to 75"): the words after the last
    clause break that still leaves two words or more, else the whole request."""
    for m in reversed(list(_CLAUSE_BREAK.finditer(text))):
        rest = text[m.end():]
        if len(rest.split()) >= 2:
            return rest
    return text


_NOUN_BEFORE = frozenset({"the", "a", "an", "my", "our", "your", "this", "that", "these", "those", "every", "each",
                          "all", "any", "some", "and", "both", "their"})


def _device_phrase(home, ws: list[str]) -> list[str]:
    """The words of a request that say what kind of device it means: each device word with the words
    just before it that modify it ("every my foyer light" -> foyer light; "we're leaving now so
    deactivate each lights" -> lights). A leading clause or a filler is not part of it, so it
    does not stop a generic request from meaning every device of that kind."""
    kinds = {w for ws_ in lexicon.DOMAIN_WORDS.values() for w in ws_}
    named = _name_words(home)
    out = []
    for k, w in enumerate(ws):
        if not (w in kinds or _stem(w) in kinds):
            continue
        if w in _VERB_WORDS and w not in named and not (k and ws[k - 1] in _NOUN_BEFORE):
            continue        # "switch off the lamp": a verb; "every switch", "the power" are nouns
        j, mods = k - 1, []
        while j >= 0:
            m = ws[j][:-2] if ws[j].endswith("'s") else ws[j]
            if m in ALL_WORDS or m.replace(".", "").isdigit() or (m in _FUNCTION_WORDS and m not in named):
                break
            mods.insert(0, m)
            j -= 1
        out += mods + [w]
    return out


# cover words that name one kind of cover: a generic "shade" is not a garage door
_COVER_CLASS_WORDS = {"blind": "blind", "blinds": "blind", "shade": "shade", "shades": "shade", "shutter": "shutter",
                      "shutters": "shutter", "curtain": "curtain", "curtains": "curtain", "drapes": "curtain",
                      "awning": "awning", "awnings": "awning", "garage": "garage", "gate": "gate", "gates": "gate",
                      "window": "window", "windows": "window", "skylight": "window", "skylights": "window",
                      "door": "door", "doors": "door"}


_WAYS_IN = frozenset({"garage", "gate", "door"})
# light words that name one kind of fitting: a generic "chandelier" means only chandeliers
_FITTING_WORDS = frozenset({"chandelier", "chandeliers", "sconce", "sconces", "pendant", "pendants", "spotlight",
                            "spotlights", "spots", "downlight", "downlights", "strip", "strips", "led", "leds",
                            "lantern", "lanterns", "fairy"})


def _kind_fits(entity, head) -> bool:
    """Whether an entity is of the fitting the head noun names ("the chandeliers" are not every light)."""
    if not head or head[0] not in _FITTING_WORDS:
        return True
    return any(word_match(head[0], w) for label in (entity.name, entity.friendly_name) for w in _words(label or ""))


def _class_fits(entity, content) -> bool:
    """Whether a cover's device class agrees with the cover word said (an unclassed cover always does).

    Window coverings (blinds, shades, shutters, curtains, awnings, windows) stand in for each other;
    a way in (garage door, gate, door) is only meant when one is said, and is never a window covering."""
    if entity.domain != "cover" or not entity.device_class:
        return True
    said = {_COVER_CLASS_WORDS[w] for w in content if w in _COVER_CLASS_WORDS}
    if not said:
        return True
    return (entity.device_class in _WAYS_IN) == bool(said & _WAYS_IN)


def _attempt(pool, said, area_w, areas, domains, all_w, phrase=None) -> Target:
    """Entities named by the words ``said``; with ``phrase`` (the request's device phrase,
    ``_device_phrase``) a generic request is read from that phrase rather than from every word said."""
    def in_area(e):
        return not areas or e.area in areas

    query = "sensor" in domains          # a question may be about every device of a kind

    candidates = []
    for e in pool:
        if not in_area(e):
            continue
        best = None
        for label in {e.name or "", e.friendly_name or ""}:
            lw = words(label)
            if not lw:
                continue
            # the area said apart from the name ("the light in the kitchen" for "Kitchen Light") also counts
            cov = max(coverage(lw, said), coverage(lw, said + area_w) if areas else 0.0)
            score = (cov, -extra(said, lw), len(lw))
            best = score if best is None or score > best else best
        if best and best[0] == 1.0:
            candidates.append((best, e))
    # a value said names nothing, and "everything" / "anything" in an area means the area's devices
    content = [w for w in said if not w.replace(".", "").isdigit() and w not in _FUNCTION_WORDS]
    if phrase is not None:
        # (a temperature or mode for a room with no device word is for the room's climate)
        content = [w for w in phrase if w in content and not any(word_match(w, a) for a in area_w)] or (
            [] if areas and (all(w in ALL_WORDS for w in content) or set(domains) == {"climate"}) else content)
    generic = _generic(content)
    if areas and content and all(w in ALL_WORDS for w in content):
        content = []
    if candidates:
        candidates.sort(key=lambda c: c[0], reverse=True)
        top = candidates[0][0]
        tied = [e for s, e in candidates if s[:2] == top[:2]]
        if len(tied) == 1:
            return Target(tied)
        if not generic:
            # several equally named: all of them only when the request says so, otherwise ask
            if any(w in ALL_WORDS for w in all_w):
                return Target(tied)
            return Target(tied, "ambiguous")
    if generic or not content:
        # the head noun (the last device word) says the kind: a "lantern extractor" is a fan
        head = [w for w in content if lexicon.domains_named([w, _stem(w)])][-1:]
        named_kinds = lexicon.domains_named(head + [_stem(w) for w in head])
        if named_kinds and not named_kinds & set(domains):
            return Target([], "no_device")      # "the door" is no light, whatever the verb
        kinds = _domains_of(head or content, domains)
        group = [e for e in pool if e.domain in kinds and in_area(e) and _class_fits(e, content)
                 and _kind_fits(e, head)]
        if group and (areas or len(group) == 1 or any(w in ALL_WORDS for w in all_w) or query):
            return Target(group, group=True)
        if len(group) > 1:
            return Target(group, "ambiguous")
    return Target([], "no_device")


# -- the request's own spans, as the slot schema offers them ------------------------------------------

_FILLER_WORDS = frozenset({"now", "for", "still", "just", "right", "there", "here", "again", "thanks", "thank",
                           "okay", "hey", "uh", "um", "uhh", "hmm", "er", "erm", "when", "if", "with", "so",
                           "then", "too", "quickly", "sec", "like", "where", "let's", "let", "bring",
                           "some", "any", "many", "much", "how", "what", "what's", "which", "who", "whether",
                           "did", "do", "does", "was", "were", "has", "have", "had", "leave", "left", "keep",
                           "know", "tell", "check", "status", "state", "increase", "decrease", "reduce",
                           "bump", "run", "across", "around", "throughout", "from", "by", "into", "onto",
                           "house", "home", "place", "everywhere", "our", "my", "i'd", "i'm", "i've", "it's",
                           "we're", "you're", "that's", "there's", "we'd", "i'll", "current", "currently"})
_FUNCTION_WORDS = STOPWORDS | _VERB_WORDS | _FILLER_WORDS


def _name_words(home) -> set:
    """The words of this home's entity names and areas."""
    out = set()
    for e in home:
        for label in (e.name, e.friendly_name, e.area):
            if label:
                out.update(_words(label))
    return out


def vocabulary(home) -> frozenset:
    """Every word that names something in this home: its entities' names, its areas, the device words."""
    return frozenset(_name_words(home) | {w for ws in lexicon.DOMAIN_WORDS.values() for w in ws})


def _known(word: str, vocab: frozenset) -> bool:
    w = word[:-2] if word.endswith("'s") else word
    if w in vocab or _stem(w) in vocab:
        return True
    if w.isdigit() or len(w) < 4:
        return False
    # a slip of a known word (a dropped letter, a homophone's spelling): same first or last letter
    return any(word_match(w, v) for v in vocab if abs(len(v) - len(w)) <= 2 and (v[0] == w[0] or v[-1] == w[-1]))


def name_spans(home, ws: list[str], max_words: int = 6) -> list[str]:
    """The spans of the request that could name a device of this home (or one it lacks).

    A span ends on a word that names something here (a device word, a word of an entity's name or an
    area, allowing for slips) and starts on such a word or on a content word ("porch light" stays
    offered in a home without a porch, so a missing device is still copied and found missing);
    spans that start or end on a verb, a filler or a preposition ("machine off now", "for the guests")
    are not offered."""
    vocab = vocabulary(home)
    named = _name_words(home)
    known = [_known(w, vocab) for w in ws]
    # a verb, filler or preposition may sit inside a span only when this home's names use it
    plain = [w not in _FUNCTION_WORDS or w in named or (w.endswith("'s") and w[:-2] in named) for w in ws]
    out, seen = [], set()
    for i in range(len(ws)):
        if not plain[i] or ws[i].replace(".", "").isdigit():
            continue
        for j in range(i, min(len(ws), i + max_words)):
            if not plain[j]:
                break
            if not known[j]:
                continue
            span = " ".join(ws[i:j + 1])
            if span not in seen:
                seen.add(span)
                out.append(span)
    return out


def area_spans(home, ws: list[str], max_words: int = 4) -> list[str]:
    """The spans of the request that name one of this home's areas (allowing for slips)."""
    areas = [list(_words(a)) for a in home.areas()]
    out = []
    for i in range(len(ws)):
        if ws[i] in STOPWORDS:
            continue
        for j in range(i + 1, min(len(ws), i + max_words) + 1):
            if ws[j - 1] in STOPWORDS and ws[j - 1] != "room":
                continue
            span = " ".join(ws[i:j])
            sw = list(_words(span))
            if sw and span not in out and any(aw and coverage(aw, sw) == 1.0 and extra(sw, aw) == 0 for aw in areas):
                out.append(span)
    return out


# -- the whole request and the model's spans, together ------------------------------------------------

def _ids(target: Target) -> set:
    return {e.entity_id for e in target.entities}


def _said_by_request(entity, all_w: list[str]) -> bool:
    """Whether the request's own words cover one of the entity's names (fuzzily) or its area."""
    for label in (entity.name, entity.friendly_name):
        lw = list(_words(label or ""))
        if lw and coverage(lw, all_w) == 1.0:
            return True
    return False


def locate(home, intent: str, name: str | None, area: str | None, text: str) -> Target:
    """The entities a request means, scored on the whole request, with the model's spans as evidence.

    The whole request is grounded first (every entity's names against every word said). The model's
    name and area then only decide between what the request itself leaves open: they pick among the
    candidates of an ambiguous request, and they are taken alone only when the request's own words
    also name what they found. So a mangled span cannot steer the command to a device the request
    does not name, and a good span settles "which one"."""
    whole = find(home, intent, None, None, text)
    if not (name or area):
        return whole
    said = find(home, intent, name, area, text)
    said_ok = bool(said.entities) and not said.problem
    if whole.entities and not whole.problem:
        return whole
    if said.problem == "no_area":
        return said             # an area said that the home lacks: say so rather than ask which device
    if whole.problem == "ambiguous":
        return said if said_ok and _ids(said) <= _ids(whole) else whole
    all_w = words(text)
    if said_ok and all(_said_by_request(e, all_w) for e in said.entities):
        return said
    return whole
