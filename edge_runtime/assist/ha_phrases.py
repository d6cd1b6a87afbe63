"""The slot contract from a request's own words, for when no model answers in it.

The intent, value and mode come from ``rules.slots_from_words`` (bounded by the permitted intents, so
the words still decide the polarity). The name and area spans come from ``device_phrase``, which
takes away what is not the device: politeness and fillers at the ends, the verbs, the value with its
unit, attribute words ("brightness", "speed"), question openings and state words; what follows an
area preposition ("in", "at", "throughout", "on the", and a question's words after its state word)
is the area.

    device_phrase("please turn off the lamp in the study", "turn_off")   # ("lamp", "study")
    device_phrase("set the brightness of the lounge to 40%", "brightness")  # (None, "lounge")
"""

from __future__ import annotations

import re

from edge_runtime.assist import lexicon, rules

_LEAD = ("please", "hey", "okay", "ok", "hi", "so", "now", "and", "also", "just", "kindly", "go ahead and",
         "can you", "could you", "would you", "will you", "would you mind", "can i ask you to",
         "i want you to", "i would like you to", "i'd like you to", "i need you to", "i want", "i'd like",
         "i would like", "i need", "i'd like to", "let's", "lets", "quickly", "assistant", "then", "get",
         "can i", "could i", "can we", "could we", "may i")
_TRAIL = ("please", "now", "for me", "thanks", "thank you", "right now", "again", "immediately", "asap",
          "right away", "at once", "quickly", "ok", "okay", "and thanks", "and thank you", "thanks a lot",
          "thank you very much", "many thanks", "cheers", "for us", "for the guests", "for our guests",
          "for a bit", "for a while", "for now", "for the night", "tonight", "if that's okay", "if that's ok",
          "if you can", "if possible", "when you can", "if you don't mind", "would you", "could you",
          "will you", "yeah", "where it is", "where they are", "right there")
# things an assistant is asked about that are not devices of the home (other intents or apps own them)
# ("radio", "alarm" or "music" can name a plug or a siren, so they are not here)
_NOT_DEVICES = frozenset({"list", "lists", "email", "emails", "inbox", "message", "messages", "volume", "song",
                          "songs", "playlist", "podcast", "timer", "timers", "reminder", "reminders", "calendar",
                          "appointment", "weather", "forecast", "news", "recipe", "joke", "app", "browser", "website"})
# "what does a thermostat do": a question about a kind of thing, not about a device's state
_GENERAL_QUESTION = re.compile(r"^(what|how) (does|do|did|is|are)( an?| the)? .*\b(do|does|mean|means|work|works|"
                               r"cost|costs)$")
# "any lights on", "some of the gates unlocked": a state question without its verb
_STATE_QUESTION_LEAD = ("any", "any of", "some", "some of", "are any", "are some")
# hesitations a speech recogniser writes down; never part of a name
_HESITATIONS = frozenset({"uh", "uhh", "uhm", "um", "umm", "er", "erm", "err", "hmm", "ah"})
# the leads before "get the back door locked", whose "get" is part of the pattern
_LEAD_KEEPING_GET = tuple(p for p in _LEAD if p != "get")
# "get the back door locked", "the side gate needs locking": the state a device should end in
_RESULT_WORDS = {"locked": "lock", "unlocked": "unlock", "opened": "open", "open": "open", "closed": "close",
                 "shut": "close", "locking": "lock", "unlocking": "unlock", "opening": "open", "closing": "close",
                 "shutting": "close"}
_RESULT_PAIRS = {("turned", "on"): "turn_on", ("turned", "off"): "turn_off", ("switched", "on"): "turn_on",
                 ("switched", "off"): "turn_off", ("turning", "on"): "turn_on", ("turning", "off"): "turn_off",
                 ("switching", "on"): "turn_on", ("switching", "off"): "turn_off"}
_NEEDS = frozenset({"needs", "need", "wants", "want", "should", "must", "can"})
_NEEDS_FILLER = ("to be", "to get", "be", "get", "go", "to")
# "everywhere": the whole home, which is what no area means
_WHOLE_HOME = ("all over", "everywhere", "every area", "every room", "each room", "each area", "whole house",
               "whole home", "whole apartment", "whole flat", "entire house", "entire home", "entire apartment",
               "entire flat", "each and every floor", "every floor", "all floors", "the house", "the home",
               "in the house", "in the home", "throughout the house", "throughout the home", "all around",
               "across the house", "around the house")
_QUANTIFIERS = ("each and every", "every single", "all of", "any of", "some of", "each of", "one of", "none of",
                "all", "any", "some", "every", "each", "both", "single", "there", "is", "are")
_EVERY = ("all", "every", "each", "both", "any")
_QUESTION_LEAD = ("is there", "are there", "is", "are", "was", "were", "what is", "what's", "whats", "what",
                  "how is", "how's", "hows", "how", "tell me", "check", "do you know", "can you tell me",
                  "could you tell me", "which", "how many", "does", "do", "has", "have", "the state of",
                  "the status of", "state of", "status of", "the value of", "value of", "current", "the current",
                  "reading of", "the reading of", "if", "whether", "did i leave", "did we leave", "have i left",
                  "have we left", "did someone leave", "did anyone leave")
_QUESTION_FILLER = frozenset({"still", "currently", "right", "now", "yet", "moment", "is", "are", "left", "set",
                              "here", "it", "hot", "cold", "warm", "cool", "securely", "at", "the", "there"})
STATE_WORDS = frozenset({"on", "off", "open", "closed", "shut", "opening", "closing", "locked", "unlocked"})
_VERBS = ("turn on", "turn off", "switch on", "switch off", "power on", "power off", "power up", "power down",
          "shut off", "shut down", "roll up", "roll down", "pull up", "pull down", "draw back", "light up",
          "fire up", "cut the power to", "cut the power", "turn", "switch", "set", "dim", "brighten", "open",
          "close", "shut", "lock", "unlock", "stop", "halt", "raise", "lower", "lift", "make", "put", "change",
          "adjust", "start", "activate", "deactivate", "enable", "disable", "kill", "increase", "decrease",
          "bring", "get", "secure", "unsecure", "bolt", "unbolt", "latch", "unlatch", "relock", "extinguish",
          "douse", "illuminate", "keep", "leave", "flip", "reduce", "drop", "boost", "crank", "move",
          "needs", "need", "locking", "unlocking", "opening", "closing", "on", "off", "out")
# single-word verbs that are also nouns ("the orchid switch", "the door lock"): a verb only where a
# verb stands — first, after another verb, or before on/off/up/down or a determiner
_NOUN_VERBS = frozenset({"switch", "lock", "latch", "bolt", "set", "shut", "light", "power", "stop", "drop",
                         "lift", "start", "make", "keep", "move", "on", "off", "out", "open", "close"})
_VALUE_UNITS = frozenset({"percent", "percentage", "degrees", "degree", "celsius", "fahrenheit"})
_VALUE_LEADS = frozenset({"to", "at", "by", "for", "of", "on"})
_ATTRIBUTES = frozenset({"brightness", "speed", "position", "level", "temperature", "temp", "setpoint",
                         "target", "percentage", "dimmer", "intensity"})
_AREA_PREPS = frozenset({"in", "inside", "at", "across", "around", "throughout", "on", "of", "within"})
_DETERMINERS = frozenset({"the", "a", "an", "my", "our", "your", "this", "that", "these", "those"})
_NOT_AREA = frozenset({"here", "there", "house", "home", "everywhere", "over"})
_FOLLOW_VERB = frozenset({"on", "off", "up", "down", "out"}) | _DETERMINERS
_ON_OFF_VERBS = frozenset({"turn", "switch", "change", "bring", "put", "flip", "click", "set", "get"})


def _strip(ws: list[str], phrases, at_start: bool) -> list[str]:
    ordered = sorted(phrases, key=lambda p: -len(p.split()))
    changed = True
    while changed and ws:
        changed = False
        for p in ordered:
            pw = p.split()
            n = len(pw)
            if at_start and ws[:n] == pw:
                ws, changed = ws[n:], True
                break
            if not at_start and len(ws) >= n and ws[-n:] == pw:
                ws, changed = ws[:-n], True
                break
    return ws


def _remove(ws: list[str], phrases) -> list[str]:
    """``ws`` without any occurrence of the phrases (longest first)."""
    ordered = [p.split() for p in sorted(phrases, key=lambda p: -len(p.split()))]
    out: list[str] = []
    i = 0
    while i < len(ws):
        for pw in ordered:
            if ws[i:i + len(pw)] == pw:
                i += len(pw)
                break
        else:
            out.append(ws[i])
            i += 1
    return out


def _drop_values(ws: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(ws):
        w = ws[i]
        if re.fullmatch(r"\d+(\.\d+)?", w):
            while out and out[-1] in _VALUE_LEADS:
                out.pop()
            i += 1
            while i < len(ws) and ws[i] in _VALUE_UNITS | {"open", "closed", "up", "down"}:
                i += 1
            continue
        if w not in _VALUE_UNITS:
            out.append(w)
        i += 1
    return out


def _drop_verbs(ws: list[str]) -> list[str]:
    ordered = sorted(_VERBS, key=lambda p: -len(p.split()))
    out: list[str] = []
    dropped_last = False
    i = 0
    while i < len(ws):
        verb = 0  # words of the verb phrase starting at i (0: ws[i] is kept)
        for p in ordered:
            pw = p.split()
            n = len(pw)
            if ws[i:i + n] != pw:
                continue
            if n == 1 and pw[0] in _NOUN_VERBS:
                after = ws[i + 1] if i + 1 < len(ws) else None
                if pw[0] in ("on", "off", "out"):
                    if pw[0] == "on" and not lexicon._is_cue(ws, i, "on"):
                        break                         # "the lamp on the desk": a place
                elif not (not out or dropped_last or after in _FOLLOW_VERB or
                          (after is None and out[-1] in _DETERMINERS)):
                    break                             # "the orchid switch", "the gate lock": a noun
            verb = n
            break
        if verb:
            i += verb
            dropped_last = True
        else:
            out.append(ws[i])
            dropped_last = False
            i += 1
    return out


def _drop_attributes(ws: list[str]) -> list[str]:
    """Attribute words and their "of"/"for" ("the brightness of the lounge" -> "in the lounge")."""
    out: list[str] = []
    i = 0
    while i < len(ws):
        if ws[i] in _ATTRIBUTES:
            while out and out[-1] in _DETERMINERS:
                out.pop()
            i += 1
            if i < len(ws) and ws[i] in ("of", "for"):
                out.append("of")                      # what follows is the target, maybe an area
                i += 1
            continue
        out.append(ws[i])
        i += 1
    return out


def _trim(ws: list[str]) -> list[str]:
    while ws and (ws[0] in _DETERMINERS or ws[0] in ("of", "and", "to")):
        ws = ws[1:]
    while ws and (ws[-1] in _DETERMINERS or ws[-1] in _AREA_PREPS or ws[-1] in ("is", "are", "to", "and")):
        ws = ws[:-1]
    return ws


def _split_area(ws: list[str]) -> tuple[list[str], list[str]]:
    """The device words and the area words ("lamp in the study" -> lamp / study; "in the lounge" ->
    - / lounge)."""
    for i in range(len(ws) - 1, -1, -1):
        w = ws[i]
        if w not in _AREA_PREPS:
            continue
        rest = _trim(ws[i + 1:])
        if not rest or rest[0] in _NOT_AREA or any(x in _AREA_PREPS for x in rest):
            continue
        if w == "on" and i > 0 and lexicon._is_cue(ws, i, "on"):
            continue
        device = ws[:i]
        if i == 0 or not _trim(device):
            # "(brightness) of the lounge": a kind word or a name the user made is a device, else an area
            if w == "of" and rest[-1] in _GENERIC_HEADS:
                return rest, []
            return [], rest
        return device, rest
    return ws, []


_GENERIC_HEADS = frozenset(w for ws in lexicon.DOMAIN_WORDS.values() for w in ws)


def device_phrase(normalized: str, intent: str) -> tuple[str | None, str | None]:
    """The (name, area) spans of a request, taken from its own words."""
    ws = [w for w in normalized.split() if w not in _HESITATIONS]
    ws = _strip(_strip(ws, _LEAD, True), _TRAIL, False)
    every = any(ws[i:i + len(p.split())] == p.split() for p in _WHOLE_HOME + _EVERY for i in range(len(ws)))
    ws = _remove(ws, _WHOLE_HOME)
    area_after_state: list[str] = []
    if intent == "query":
        ws = _strip(ws, _QUESTION_LEAD, True)
        ws = _strip(ws, _QUANTIFIERS, True)
        # "is the lamp on in the study" / "which gate is unlocked the scullery": after the state, the area
        states = [i for i, w in enumerate(ws) if w in STATE_WORDS]
        if states:
            k = states[-1]
            tail = [w for w in ws[k + 1:] if w not in _QUESTION_FILLER]
            area_after_state = _trim([w for w in tail if w not in _AREA_PREPS])
            ws = ws[:k]
        ws = [w for w in ws if w not in _QUESTION_FILLER and w not in STATE_WORDS]
    ws = _drop_values(ws)
    if intent != "query":
        ws = _drop_verbs(ws)
    ws = _drop_attributes(ws)
    ws = _strip(_strip(ws, _LEAD, True), _TRAIL, False)
    ws = _remove(ws, ("each and every", "every single", "all of", "any of", "some of", "each of"))
    ws = [w for w in ws if w not in ("here", "over", "up", "down", "turned", "switched", "turning", "switching")]
    if intent != "query":
        while ws and ws[-1] in _RESULT_WORDS:  # "get the garage door open": the state it should end in
            ws = ws[:-1]
    device, area = _split_area(ws)
    if area_after_state and not area:
        area = area_after_state
    device = _trim([w for w in device if w not in ("all", "every", "each", "any", "some", "both")])
    device = [w for w in device if w not in _DETERMINERS]
    if every and device:
        device = ["all"] + device           # kept for the mapping: every such device, not one so named
    return (" ".join(device) or None), (" ".join(area) or None)


_CLAUSE_BREAK = re.compile(r"\s*[,;:]\s+|\s+-\s+|\s+so\s+|\s+and then\s+", re.IGNORECASE)


def command_clauses(text: str) -> list[str]:
    """The request's clauses from the last to the first ("dinner's ready, lock the back door" ->
    ["lock the back door", "dinner's ready"]); one clause for a request without a break."""
    return [c for c in reversed(_CLAUSE_BREAK.split(text.strip())) if c]


def _result_request(words: list[str], permitted: set):
    """("lock", ["the", "back", "door"]) for "get the back door locked" or "the back door needs
    locking": the intent named by the state word itself (so never its opposite) and the words of
    the device; None for anything else."""
    ws = _strip(_strip(words, _LEAD_KEEPING_GET, True), _TRAIL, False)
    if len(ws) < 3:
        return None
    intent, device = None, None
    if ws[0] == "get":
        if tuple(ws[-2:]) in _RESULT_PAIRS:
            intent, device = _RESULT_PAIRS[tuple(ws[-2:])], ws[1:-2]
        elif ws[-1] in _RESULT_WORDS and ws[-1] != "open":
            intent, device = _RESULT_WORDS[ws[-1]], ws[1:-1]
    else:
        k = next((i for i, w in enumerate(ws) if w in _NEEDS), None)
        if k is not None and 0 < k < len(ws) - 1:
            rest = _strip(ws[k + 1:], _NEEDS_FILLER, True)
            if len(rest) == 1 and rest[0] in _RESULT_WORDS and not rest[0].endswith("ing") and rest[0] != "open":
                rest = [rest[0]]                      # "needs to be locked", "should be shut"
                intent = _RESULT_WORDS[rest[0]]
            if intent is not None:
                pass
            elif rest[:2] and tuple(rest[:2]) in _RESULT_PAIRS and len(rest) == 2:
                intent = _RESULT_PAIRS[tuple(rest[:2])]
            elif len(rest) == 1 and rest[0] in _RESULT_WORDS and rest[0].endswith("ing"):
                intent = _RESULT_WORDS[rest[0]]
            device = ws[:k]
    if intent is None or intent not in permitted or not device:
        return None
    return intent, device


def _mode_request(words: list[str], permitted: set):
    """(mode, device words) for a request that ends in "on/to <a heating or cooling mode>"."""
    if "hvac_mode" not in permitted:
        return None
    ws = _strip(words, _TRAIL, False)
    for mode, phrases in lexicon.MODE_WORDS.items():
        if mode == "off":
            continue
        for p in phrases:
            pw = p.split()
            n = len(pw)
            if len(ws) > n + 1 and ws[-n:] == pw and ws[-n - 1] in ("on", "to", "in", "into"):
                return mode, ws[:-n - 1]
    return None


def slots_from_words(normalized: str, permitted: set) -> dict:
    """The slot contract filled from the request's words alone (no model)."""
    got = rules.slots_from_words(normalized, permitted)
    words = normalized.split()
    if _NOT_DEVICES & set(words) or _GENERAL_QUESTION.match(" ".join(words)):
        return dict(got, intent="none", name=None, area=None, value=None, mode=None)
    if ("query" in permitted and got["intent"] in ("turn_on", "turn_off", "lock", "unlock", "open", "close", "none")
            and any(words[:len(p.split())] == p.split() for p in _STATE_QUESTION_LEAD)
            and any(w in STATE_WORDS for w in words)):
        got = dict(got, intent="query", value=None, mode=None)  # asked, not commanded
    if got["intent"] == "open" and "position" in permitted and "percent" in words:
        values = lexicon.numbers_in(normalized)
        if len(values) == 1 and 0 <= values[0] <= 100:
            # "put the skylight at 40 percent open": a position, not a plain opening
            got = dict(got, intent="position", value=values[0])
    mode = _mode_request(words, permitted) if got["intent"] in ("turn_on", "none") else None
    if mode is not None:
        # "the ac on heating", "the thermostat to auto": a heating/cooling mode, not an on/off
        name, area = device_phrase(" ".join(mode[1]), "hvac_mode")
        return dict(got, intent="hvac_mode", name=name, area=area, value=None, mode=mode[0])
    if got["intent"] in ("none", "lock", "unlock", "open", "close", "turn_on", "turn_off"):
        # the lexicon reads "locked" / "closed" as cues too: the same intent, the device words from here
        result = _result_request(words, permitted)
        if result is not None and got["intent"] in ("none", result[0]):
            intent, device = result
            name, area = device_phrase(" ".join(device), intent)
            return dict(got, intent=intent, name=name, area=area)
    if got["intent"] == "none" and _ON_OFF_VERBS & set(words):
        # "bring on the fan", "change off the lights": HA's <turn> verbs with a bare on/off
        if "off" in words or "out" in words:
            got = dict(got, intent="turn_off") if "turn_off" in permitted else got
        elif "on" in words:
            got = dict(got, intent="turn_on") if "turn_on" in permitted else got
    if got["intent"] == "none":
        return got
    name, area = device_phrase(normalized, got["intent"])
    return dict(got, name=name, area=area)
