"""Grounding: from the words a request used to the entities of one home.

The model copies spans ("landing light", "kitchen"); this module decides which entities they mean.
Names are compared word by word after normalization, forgiving what people and recognizers drop or
slip: plurals, one letter in a word of four or more, two in a word of seven or more, compounds
written apart ("night stand" / "nightstand"). A generic device word ("lights", "blinds") with an
area means every such entity in that area; "all the lights" without one means all of the home's.
Anything ambiguous or absent resolves to nothing: the assistant answers, it never guesses a device.
"""

from __future__ import annotations

from dataclasses import dataclass

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
ALL_WORDS = frozenset({"all", "every", "everything", "both", "each"})


def words(text: str) -> list[str]:
    return [w for w in lexicon.normalize(text).replace("'s", "").split() if w not in STOPWORDS]


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
        name_w = [w for w in all_w if w not in _VERB_WORDS and not w.replace(".", "").isdigit()]
        if areas:
            name_w = [w for w in name_w if not any(word_match(w, a) for a in area_w)]
    found = _attempt(pool, name_w, area_w, areas, domains, all_w)
    if found.entities and not found.problem:
        return found
    if not areas:
        # the area said inside the name ("the kitchen light"): try it as an area
        inner = _area_matches(home, name_w)
        for a in inner:
            aw = words(a)
            rest = [w for w in name_w if not any(word_match(w, x) for x in aw)]
            again = _attempt(pool, rest, aw, [a], domains, all_w)
            if again.entities and not again.problem:
                return again
    return found


def _attempt(pool, said, area_w, areas, domains, all_w) -> Target:
    def in_area(e):
        return not areas or e.area in areas

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
    generic = _generic(said)
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
    if generic or not said:
        kinds = _domains_of(said, domains)
        group = [e for e in pool if e.domain in kinds and in_area(e)]
        if group and (areas or len(group) == 1 or any(w in ALL_WORDS for w in all_w)):
            return Target(group)
        if len(group) > 1:
            return Target(group, "ambiguous")
    return Target([], "no_device")
