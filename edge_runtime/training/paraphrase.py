"""Our own request families, beyond Home Assistant's templates: how people actually talk to a home.

Each family is a handful of templates in hassil's template syntax (``(a|b)`` alternatives, ``[x]``
optional, ``{name}`` / ``{area}`` / ``{value}`` / ``{fraction}`` / ``{mode}`` slots), parsed by hassil and
expanded by the same random walk as Home Assistant's (``templates._Walker``). A family belongs to one
split: the held-out families are phrasings the model never saw in training.

Around a command, ``wrap`` adds what people add: politeness and filler ("could you", "uh",
"thanks"), a leading clause ("I'm heading out, shut the side gate"); held-out wrappers are disjoint
from the training ones. Number words and fractions come through ``{value}`` and ``{fraction}``; the
speech-recognition slips are applied later, to the raw text (``spoken.slip``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from edge_runtime.training.spoken import Segment

ON_OFF = ("light", "switch", "fan", "climate")


@dataclass(frozen=True)
class Family:
    name: str
    split: str                 # train or heldout
    intent: str
    domains: tuple             # device domains the {name} may come from ((): no device)
    texts: tuple               # templates


def _f(name, split, intent, domains, *texts):
    return Family(name, split, intent, tuple(domains), tuple(texts))


FAMILIES = (
    # -- on / off ------------------------------------------------------------------------------
    _f("on.verbs", "train", "turn_on", ON_OFF, "(turn|switch|flip) on [the] {name}", "(turn|switch) [the] {name} on",
       "(start|power up|fire up|activate|enable) [the] {name}", "[the] {name} on", "put [the] {name} on",
       "(turn|switch) on [the] {name} in the {area}", "[the] {name} in the {area} on"),
    _f("off.verbs", "train", "turn_off", ON_OFF, "(turn|switch|flip) off [the] {name}", "(turn|switch) [the] {name} off",
       "(kill|shut off|shut down|power down|disable|deactivate) [the] {name}", "[the] {name} off",
       "(turn|switch) off [the] {name} in the {area}", "cut the power to [the] {name}"),
    _f("on.want", "heldout", "turn_on", ON_OFF, "i need [the] {name} on", "can i get [the] {name} on",
       "{name} on now", "i'd like [the] {name} on in the {area}", "bring [the] {name} on"),
    _f("off.want", "heldout", "turn_off", ON_OFF, "[the] {name} can go off now", "i want [the] {name} off",
       "{name} off now", "get [the] {name} off in the {area}", "power off [the] {name}"),
    # -- covers ------------------------------------------------------------------------------------
    _f("open.verbs", "train", "open", ("cover",), "(open|raise|lift|roll up|pull up) [the] {name}",
       "open up [the] {name}", "(open|raise) [the] {name} in the {area}", "[the] {name} up [please]"),
    _f("close.verbs", "train", "close", ("cover",), "(close|shut|lower|roll down|pull down) [the] {name}",
       "(close|shut) [the] {name} in the {area}", "[the] {name} down [please]", "close up [the] {name}"),
    _f("open.want", "heldout", "open", ("cover",), "i want [the] {name} open", "get [the] {name} open",
       "let's open [the] {name} in the {area}", "{name} open please"),
    _f("close.want", "heldout", "close", ("cover",), "i want [the] {name} shut", "shut [the] {name} in the {area} please",
       "lower down [the] {name}", "{name} closed now"),
    _f("stop.verbs", "train", "stop", ("cover",), "(stop|halt) [the] {name}", "stop [the] {name} in the {area}"),
    _f("stop.want", "heldout", "stop", ("cover",), "stop [the] {name} right there", "halt [the] {name} where it is"),
    # -- locks -------------------------------------------------------------------------------------
    _f("lock.verbs", "train", "lock", ("lock",), "(lock|secure|bolt) [the] {name}", "lock up [the] {name}",
       "make sure [the] {name} is locked", "lock [the] {name} in the {area}"),
    _f("unlock.verbs", "train", "unlock", ("lock",), "(unlock|unbolt|unlatch) [the] {name}",
       "unlock [the] {name} in the {area}"),
    _f("lock.want", "heldout", "lock", ("lock",), "[the] {name} (needs|should) (locking|to be locked)",
       "get [the] {name} locked", "relock [the] {name}"),
    _f("unlock.want", "heldout", "unlock", ("lock",), "unlock [the] {name} for the guests", "i need [the] {name} unlocked"),
    # -- brightness --------------------------------------------------------------------------------
    _f("brightness.set", "train", "brightness", ("light",), "(set|dim|brighten|turn) [the] {name} to {value} percent",
       "[the] {name} to {value}%", "dim [the] {name} to {value}", "set [the] brightness of [the] {name} to {value} percent",
       "make [the] {name} {value} percent", "(dim|set) [the] {name} in the {area} to {value} percent",
       "{name} (at|to) {fraction}", "dim [the] {name} [down] to {fraction}"),
    _f("brightness.want", "heldout", "brightness", ("light",), "put [the] {name} at {value} percent brightness",
       "i'd like [the] {name} at {value}%", "{name} brightness {value}", "lower [the] {name} to {value} percent",
       "bring [the] {name} down to {fraction} brightness"),
    # -- position ---------------------------------------------------------------------------------
    _f("position.set", "train", "position", ("cover",), "(set|open|close|raise|lower|move) [the] {name} to {value} percent",
       "[the] {name} to {value}%", "open [the] {name} {fraction}", "set [the] {name} position to {value}",
       "(open|close) [the] {name} in the {area} to {value} percent", "move [the] {name} to {fraction}"),
    _f("position.want", "heldout", "position", ("cover",), "put [the] {name} at {value} percent open",
       "{name} {fraction} open please", "i want [the] {name} {value} percent open", "raise [the] {name} to {fraction}"),
    # -- temperature ------------------------------------------------------------------------------
    _f("temperature.set", "train", "temperature", ("climate",), "set [the] {name} to {value} degrees",
       "(make it|heat it to|warm it up to|cool it down to) {value} degrees in the {area}",
       "set the temperature in the {area} to {value}", "[the] {name} to {value}",
       "(turn|put) [the] {name} (up|down) to {value} degrees", "set [the] {name} to {value}"),
    _f("temperature.want", "heldout", "temperature", ("climate",), "i'd like it at {value} degrees in the {area}",
       "bump [the] {name} up to {value}", "can you make it {value} degrees in the {area}",
       "change [the] {name} to {value} degrees"),
    # -- fan speed --------------------------------------------------------------------------------
    _f("fan.set", "train", "fan_speed", ("fan",), "set [the] {name} [speed] to {value} percent", "[the] {name} to {fraction}",
       "(turn|put) [the] {name} to {value}%", "set [the] {name} in the {area} to {value} percent",
       "[the] {name} speed {value}"),
    _f("fan.want", "heldout", "fan_speed", ("fan",), "run [the] {name} at {value} percent", "i want [the] {name} at {fraction} speed",
       "{name} to {value} percent please"),
    # -- hvac mode --------------------------------------------------------------------------------
    _f("mode.set", "train", "hvac_mode", ("climate",), "(set|switch|put|change) [the] {name} to {mode} [mode]",
       "put [the] {name} in {mode} mode", "{mode} mode on [the] {name}"),
    _f("mode.want", "heldout", "hvac_mode", ("climate",), "i want [the] {name} on {mode}", "{name} {mode} mode please"),
    # -- questions ---------------------------------------------------------------------------------
    _f("query.state", "train", "query", ("light", "switch", "fan", "cover", "lock", "climate", "binary_sensor"),
       "is [the] {name} (on|off|open|closed|locked|unlocked)", "are [the] {name} (on|off|open|closed)",
       "is [the] {name} in the {area} (on|off|open|locked)", "what's [the] {name} set to",
       "tell me if [the] {name} is (on|open|locked)", "check [whether|if] [the] {name} is (locked|open|on)",
       "what is the state of [the] {name}", "how is [the] {name}"),
    _f("query.temperature", "train", "query", ("sensor", "climate"), "what's the {name} in the {area}",
       "what is [the] {name} reading", "how (warm|cold) is it in the {area}"),
    _f("query.left", "heldout", "query", ("light", "switch", "fan", "cover", "lock", "climate", "binary_sensor"),
       "did i leave [the] {name} (on|open|unlocked)", "is [the] {name} still (on|open|unlocked)",
       "do you know if [the] {name} is (on|locked|open)", "what's the status of [the] {name}",
       "have i locked [the] {name}", "is anything on in the {area}"),
    # -- negated (nothing to do) ----------------------------------------------------------------
    _f("negated", "train", "none", ON_OFF + ("cover", "lock"), "(don't|do not|never) (turn on|turn off|open|close|unlock) [the] {name}",
       "don't (lock|open|close) [the] {name} yet"),
    _f("negated.want", "heldout", "none", ON_OFF + ("cover", "lock"), "please don't (switch off|open|unlock) [the] {name}"),
)

OUT_OF_SCOPE = {
    "train": (
        "order a pizza", "what's the weather like tomorrow", "tell me a joke", "book a table for two",
        "call mom", "send a text to dad", "what's two plus two", "how tall is mount everest",
        "who won the game last night", "remind me to buy milk", "what time is it in tokyo",
        "translate hello into french", "how do i change a light bulb", "buy new light bulbs",
        "order a new thermostat", "what's the best fan to buy", "who invented the light bulb",
        "sing me a song", "good morning", "thank you", "what can you do", "read me the news",
        "open netflix", "close my browser tabs", "open a bank account", "what's on my calendar",
        "how much is a plane ticket to rome", "find me a recipe for lasagna", "what's the capital of peru",
        "lock in my order", "spell necessary", "play the next episode", "how are you today",
        "set my alarm for seven", "what movies are on tonight", "turn the page", "start a new email",
        "is it going to rain today", "how many calories in an apple", "open the pod bay doors hal",
        "order twenty five rolls of toilet paper", "schedule a meeting at three", "who are you",
    ),
    "heldout": (
        "order some sushi", "what's the forecast for the weekend", "tell me a story", "call the dentist",
        "what's nine times seven", "who wrote hamlet", "book me a taxi to the airport",
        "how do i fix a dripping tap", "buy a new lamp online", "what does a thermostat do",
        "play my favourite podcast", "good night", "what's the news today", "open my email",
        "how far away is the moon", "email my boss that i'm late", "what's the score of the match",
        "find a plumber near me", "how old is the universe", "add a dentist appointment for friday",
    ),
}

WRAPPERS = {
    "train": {
        "before": ("please ", "hey, ", "okay ", "could you ", "can you ", "would you ", "i want you to ",
                   "kindly ", "hey home, ", "uh ", "um, ", "right, ", "so ", "alright ", "quick one, ",
                   "i'm heading out, ", "it's getting late, ", "the baby is sleeping so ", "we're going to bed, ",
                   "it's way too bright in here, ", "guests are coming, ", "i'm home, ", "before i leave, ",
                   "since it's sunny, ", "it's freezing in here, ", "movie time, ", "ok google ", "computer, "),
        "after": (" please", " thanks", " thank you", " for me", " right now", " now", " if you can",
                  " asap", " cheers", " would you", " okay", " thx"),
    },
    "heldout": {
        "before": ("would you kindly ", "hey there, ", "excuse me, ", "er, ", "listen, ", "i'm off to work, ",
                   "it's getting dark, ", "dinner's ready, ", "we're leaving now so ", "when you get a sec, ",
                   "the dog's asleep, "),
        "after": (" when you can", " thanks a lot", " if that's okay", " please and thanks", " quickly"),
    },
}
FILLERS = {"train": ("uh", "um", "like", "erm"), "heldout": ("uhh", "hmm")}

FRACTIONS = (("half", 50), ("halfway", 50), ("a quarter", 25), ("three quarters", 75), ("a third", 33),
             ("two thirds", 67), ("half way", 50))
MODE_TEXT = {"heat": ("heat", "heating"), "cool": ("cool", "cooling"), "auto": ("auto", "automatic"),
             "heat_cool": ("heat cool", "heat and cool"), "dry": ("dry", "dehumidify"), "fan_only": ("fan only",)}


@lru_cache(maxsize=2)
def parsed(split: str) -> tuple:
    """(family, hassil Sentence) pairs of one split."""
    from hassil import parse_sentence

    return tuple((f, parse_sentence(t, keep_text=True)) for f in FAMILIES if f.split == split for t in f.texts)


def families(split: str) -> tuple:
    return tuple(f for f in FAMILIES if f.split == split)


def wrap(rng: random.Random, split: str, segments: list[Segment], rate: float) -> list[Segment]:
    """Politeness, filler and a leading clause around a command (each with probability ``rate``)."""
    w = WRAPPERS[split]
    out = list(segments)
    if rng.random() < rate:
        out.insert(0, Segment(rng.choice(w["before"])))
    if rng.random() < rate * 0.6:
        out.append(Segment(rng.choice(w["after"])))
    if rng.random() < rate * 0.3:
        spots = [k for k, s in enumerate(out) if s.role is None and s.text.strip() and " " in s.text.strip()]
        if spots:
            k = rng.choice(spots)
            words = out[k].text.split(" ")
            i = rng.randrange(1, len(words))
            words.insert(i, rng.choice(FILLERS[split]))
            out[k] = Segment(" ".join(words), None)
    return out


def out_of_scope(rng: random.Random, split: str) -> list[Segment]:
    return [Segment(rng.choice(OUT_OF_SCOPE[split]))]
