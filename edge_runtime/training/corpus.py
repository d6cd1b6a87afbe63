"""Seeded generator of home/IoT assistant conversations for training the embedded model.

Nothing is downloaded: every example is built from the word lists and templates in this file.

Reply kinds
-----------
- ``command``: a device command; the reply is one compact JSON object, e.g.
  ``{"device":"light","room":"kitchen","action":"on"}`` (keys always in the order device, room,
  action, value, scene; no spaces).
- ``query``: a question about a device state; the reply is a command with ``"action":"query"``,
  e.g. "is the garage door open?" -> ``{"device":"garage_door","room":"garage","action":"query"}``.
- ``scene``: ``{"device":"scene","room":"home","action":"activate","scene":"movie_night"}``.
- ``chat``: greetings, thanks, "what can you do?" -> a fixed plain-text reply per intent.
- ``refusal``: requests outside the home (order a pizza) or for devices we cannot control
  (the oven) -> a plain-text apology.

Vocabulary (the enums of ``COMMAND_SCHEMA``)
--------------------------------------------
- devices: light, thermostat, fan, blinds, window, garage_door, door_lock, tv, speaker, heater,
  air_conditioner, coffee_maker, sprinkler, scene.
- rooms: kitchen, living_room, bedroom, bathroom, office, dining_room, hallway, garage, basement,
  garden, kids_room, guest_room, laundry_room, entrance, porch, patio, attic, and ``home`` for the
  whole house (all the lights; the thermostat or a scene when no room is named).
- actions: on, off, set, open, close, lock, unlock, query, activate.
- ``value`` (integer, only with ``set``): light brightness 5..100 %, thermostat 15..28 degrees,
  air conditioner 16..28 degrees, fan level 1..5, blinds 0..100 % open, speaker volume 0..100.
- ``scene`` (only with ``activate``): movie_night, morning, bedtime, away, dinner, party, reading,
  relax.
- Some devices fix their room: the garage door is in the garage, the coffee maker in the kitchen,
  the sprinklers in the garden, the front door lock at the entrance, the back door lock on the patio.

Splits
------
``train`` and ``heldout`` share the vocabulary above (a model cannot learn a word it never saw)
but use disjoint sentence frames, disjoint ways of naming a device in a room, and disjoint polite
wrappers, so a held-out request is a phrasing the model never met in training. Training text
also gets filler words (real ones like "really", and made-up ones like "kitoose") dropped
between the words of a frame, so the model learns to pick out device, room and action instead of
memorising frames; no held-out-only word is ever used as filler, and held-out text is never
noised.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

SPLITS = ("train", "heldout")

ROOMS = {
    "kitchen": ["kitchen"],
    "living_room": ["living room", "lounge"],
    "bedroom": ["bedroom"],
    "bathroom": ["bathroom"],
    "office": ["office", "study"],
    "dining_room": ["dining room"],
    "hallway": ["hallway", "hall"],
    "garage": ["garage"],
    "basement": ["basement"],
    "garden": ["garden", "backyard"],
    "kids_room": ["kids room", "nursery"],
    "guest_room": ["guest room"],
    "laundry_room": ["laundry room"],
    "entrance": ["entrance", "entryway"],
    "porch": ["porch"],
    "patio": ["patio", "deck"],
    "attic": ["attic"],
}
HOME = "home"

SCENES = {
    "movie_night": ["movie night", "movie mode", "cinema mode"],
    "morning": ["morning mode", "morning routine", "wake up mode"],
    "bedtime": ["bedtime", "night mode", "sleep mode"],
    "away": ["away mode", "vacation mode"],
    "dinner": ["dinner mode", "dinner time"],
    "party": ["party mode", "party time"],
    "reading": ["reading mode", "reading time"],
    "relax": ["relax mode", "chill mode"],
}


@dataclass(frozen=True)
class Device:
    """One controllable device: its spoken names, the rooms it can be in, what it can do."""

    key: str
    names: tuple[str, ...]  # singular spoken names
    plurals: tuple[str, ...]  # plural spoken names ("lights"), may be empty
    rooms: tuple[str, ...]
    actions: tuple[str, ...]  # besides "query", which every device answers
    value_kind: str | None = None  # key of VALUE_RANGES when the device takes "set"
    fixed_room: str | None = None  # the device has one place; naming it names the room
    whole_house: bool = False  # "all the lights" -> room "home"


_INDOOR = ("kitchen", "living_room", "bedroom", "bathroom", "office", "dining_room", "hallway",
           "basement", "kids_room", "guest_room", "laundry_room", "attic")
_LIVING = ("living_room", "bedroom", "office", "kids_room", "guest_room", "dining_room", "kitchen")

DEVICES = {
    d.key: d
    for d in (
        Device("light", ("light", "lamp", "ceiling light"), ("lights", "lamps"),
               _INDOOR + ("garage", "garden", "entrance", "porch", "patio"),
               ("on", "off", "set"), "brightness", whole_house=True),
        Device("thermostat", ("thermostat", "heating"), (),
               ("living_room", "bedroom", "office", "kids_room", "guest_room", "basement"),
               ("set",), "temperature", whole_house=True),
        Device("fan", ("fan", "ceiling fan"), ("fans",),
               ("living_room", "bedroom", "office", "kids_room", "guest_room", "attic", "bathroom",
                "kitchen", "basement"),
               ("on", "off", "set"), "fan_level"),
        Device("blinds", ("blinds", "shades", "curtains"), (),
               _LIVING + ("bathroom",), ("open", "close", "set"), "percent_open", whole_house=True),
        Device("window", ("window",), ("windows",),
               _LIVING + ("bathroom", "attic", "hallway"), ("open", "close"), whole_house=True),
        Device("garage_door", ("garage door",), (), ("garage",), ("open", "close"),
               fixed_room="garage"),
        Device("door_lock", ("front door",), (), ("entrance",), ("lock", "unlock"),
               fixed_room="entrance"),
        Device("tv", ("tv", "television"), (),
               ("living_room", "bedroom", "kitchen", "basement", "guest_room"), ("on", "off")),
        Device("speaker", ("speaker", "sound system"), ("speakers",),
               ("kitchen", "living_room", "bedroom", "office", "bathroom", "patio", "garage",
                "basement"),
               ("on", "off", "set"), "volume"),
        Device("heater", ("heater", "space heater", "radiator"), (),
               ("bathroom", "garage", "basement", "office", "bedroom", "patio"), ("on", "off")),
        Device("air_conditioner", ("air conditioner", "ac", "air conditioning"), (),
               ("living_room", "bedroom", "office", "kids_room", "guest_room"),
               ("on", "off", "set"), "cooling", whole_house=True),
        Device("coffee_maker", ("coffee maker", "coffee machine"), (), ("kitchen",), ("on", "off"),
               fixed_room="kitchen"),
        Device("sprinkler", ("sprinkler",), ("sprinklers",), ("garden",), ("on", "off"),
               fixed_room="garden"),
    )
}
# The back door names the same lock device in another place.
_BACK_DOOR = ("back door", "patio")

VALUE_RANGES = {
    # kind: (first, last, step, unit words usable after the number)
    "brightness": (5, 100, 5),
    "temperature": (15, 28, 1),
    "cooling": (16, 28, 1),
    "fan_level": (1, 5, 1),
    "percent_open": (0, 100, 10),
    "volume": (0, 100, 5),
}
_LEVEL_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}

ACTIONS = ("on", "off", "set", "open", "close", "lock", "unlock", "query", "activate")

COMMAND_SCHEMA = {
    "type": "object",
    "properties": {
        "device": {"type": "string", "enum": sorted(DEVICES) + ["scene"]},
        "room": {"type": "string", "enum": sorted(ROOMS) + [HOME]},
        "action": {"type": "string", "enum": list(ACTIONS)},
        "value": {"type": "integer"},
        "scene": {"type": "string", "enum": sorted(SCENES)},
    },
    "required": ["device", "room", "action"],
}
_KEY_ORDER = ("device", "room", "action", "value", "scene")

SYSTEM_PROMPTS = (
    "You are a home assistant. Reply to device commands with JSON.",
    "You control the devices in this home. Answer commands with a JSON command.",
    "You are a helpful smart home assistant.",
)

CHAT_REPLIES = {
    "greeting": "Hello! How can I help at home?",
    "thanks": "You're welcome!",
    "identity": "I'm a small home assistant that runs on this device.",
    "capabilities": ("I can switch lights and devices on and off, set the thermostat, fans, blinds "
                     "and volume, run scenes, and tell you if doors and windows are open."),
    "how_are_you": "I'm fine, thanks. Ready to help with your home.",
    "bye": "Goodbye!",
}
REFUSAL_REPLY = "Sorry, I can't help with that. I can only control devices in your home."
UNSUPPORTED_DEVICES = ("oven", "dishwasher", "washing machine", "dryer", "fridge", "microwave",
                       "car", "toaster", "kettle", "printer", "computer", "stove", "robot vacuum")


def unsupported_reply(thing: str) -> str:
    return f"Sorry, I can't control the {thing}."


@dataclass
class Example:
    """One conversation to learn from or to evaluate on.

    ``messages`` is the prompt: an optional system message, optional earlier turns, and the user
    turn the reply answers. ``reply`` is the assistant's answer to that last user turn.
    ``command`` is the expected command dict for command/query/scene replies, else None.
    ``template`` names the sentence frame the last user turn was built from (split/kind/index).
    """

    messages: list[dict]
    reply: str
    kind: str
    command: dict | None = None
    template: str = ""
    meta: dict = field(default_factory=dict)


def command_json(command: dict) -> str:
    """The reply text of a command: compact JSON with keys in schema order."""
    ordered = {k: command[k] for k in _KEY_ORDER if k in command}
    return json.dumps(ordered, separators=(",", ":"))


def parse_command(reply: str) -> dict | None:
    """The command dict in a reply, or None when the reply is not one JSON object."""
    try:
        parsed = json.loads(reply)
    except (json.JSONDecodeError, TypeError):
        return None
    return parsed if isinstance(parsed, dict) else None


# ----------------------------------------------------------------------------------------------
# Split-specific word choices. Every list below has a train and a heldout version that share no
# entry; the generator never mixes them.

# How a device is named together with its room. {the} is "the" or "" (then the phrase starts
# with the room); {dev} is the device name, {room} the room name.
_OBJECT_FORMS = {
    "train": ("the {room} {dev}", "the {dev} in the {room}", "{room} {dev}",
              "the {dev} inside the {room}", "the {room} {dev}"),
    "heldout": ("my {room} {dev}", "the {dev} in my {room}", "the {dev} of the {room}"),
}
# Whole-house forms; {devs} is the plural (or the singular when there is no plural).
_HOUSE_FORMS = {
    "train": ("all the {devs}", "all {devs}", "every {dev} in the house", "the {devs} everywhere",
              "the whole house {devs}"),
    "heldout": ("all of the {devs}", "the {devs} in the whole house", "each {dev} in the house"),
}
# Devices with a fixed room are named alone, or with the room in front.
_FIXED_FORMS = {
    "train": ("the {dev}", "{dev}", "the {dev}"),
    "heldout": ("my {dev}", "our {dev}"),
}
# Fixed-room devices whose room may also be said ("the kitchen coffee maker"); not the garage
# door ("the garage garage door") nor the door lock, whose name already says where it is.
_FIXED_WITH_ROOM = {"train": "the {room} {dev}", "heldout": "the {dev} in our {room}"}

_PREFIXES = {
    "train": ("", "", "", "", "", "please ", "hey, ", "ok ", "um ", "hey assistant, ", "quick, ",
              "yo ", "so ", "hi, ", "assistant, ", "okay ", "right, ", "hey home, ", "now ",
              "listen, ", "oh, ", "hey there, ", "good morning, ", "sorry, ", "one more thing, ",
              "and ", "also, "),
    "heldout": ("kindly ", "alright, ", "hello assistant, ", "excuse me, ", "well "),
}
_SUFFIXES = {
    "train": ("", "", "", "", "", " please", " now", " thanks", " for me", " quickly", " asap",
              " right now", " thank you", " if possible", " real quick", " again",
              " please and thanks", " now please", " for me please", " thanks a lot",
              " if you would", " soon", " when possible", " ok", " immediately", " by the way",
              " mate", " sir", " quickly please"),
    "heldout": (" if you can", " when you get a chance", " at once", " cheers", " straight away"),
}

# Verb lexicon shared by both splits: (contiguous phrase, verb, particle). particle "" means the
# verb has no separable particle.
_VERBS = {
    "on": (("turn on", "turn", "on"), ("switch on", "switch", "on"), ("power on", "power", "on"),
           ("enable", "enable", "")),
    "off": (("turn off", "turn", "off"), ("switch off", "switch", "off"), ("shut off", "shut", "off"),
            ("power off", "power", "off"), ("disable", "disable", ""), ("kill", "kill", "")),
    "open": (("open", "open", ""), ("open up", "open", "up")),
    "close": (("close", "close", ""), ("shut", "shut", "")),
    "lock": (("lock", "lock", ""), ("lock up", "lock", "up")),
    "unlock": (("unlock", "unlock", ""),),
}
_STATES = {"on": "on", "off": "off", "open": "open", "close": "closed", "lock": "locked",
           "unlock": "unlocked"}

# Frames for on/off/open/close/lock/unlock. {act} contiguous verb phrase, {verb} {prt} split
# verb, {state} the resulting state word, {obj} the object phrase, {is} is/are.
_ACTION_FRAMES = {
    "train": (
        "{act} {obj}",
        "{act} {obj}",
        "{verb} {obj} {prt}",
        "can you {act} {obj}",
        "could you {act} {obj}",
        "{obj} {state}",
        "I want {obj} {state}",
        "set {obj} to {state}",
        "please {verb} {obj} {prt}",
        "go ahead and {act} {obj}",
        "time to {act} {obj}",
        "I need {obj} {state}",
        "{obj}, {state}",
        "let's {act} {obj}",
        "{act} {obj} please",
        "you can {act} {obj}",
        "need you to {act} {obj}",
        "{obj} {state} now",
        "have {obj} {state}",
        "{obj} to {state}",
        "can I get {obj} {state}",
        "is it possible to {act} {obj}",
        "I want {obj} to be {state}",
        "keep {obj} {state}",
        "leave {obj} {state}",
        "{obj} {state} please",
        "hey could you {verb} {obj} {prt}",
        "{act} {obj}, thanks",
        "want {obj} {state}",
        "would it be possible to {act} {obj}",
        "ensure {obj} {is} {state}",
        "see that {obj} {is} {state}",
        "{obj} must be {state}",
        "let {obj} be {state}",
        "I need {obj} to be {state}",
        "{obj} has to be {state}",
        "{obj} {state}, thanks",
        "would love {obj} {state}",
    ),
    "heldout": (
        "would you {act} {obj}",
        "{obj} needs to be {state}",
        "make sure {obj} {is} {state}",
        "I'd like {obj} {state}",
        "{obj} should be {state}",
        "get {obj} {state}",
        "{obj}: {state}",
        "mind if you {act} {obj}",
    ),
}

# "set" frames per value kind. {val} is the number (or a level word), {obj} the object phrase.
_SET_FRAMES = {
    "brightness": {
        "train": ("set {obj} to {val} percent", "dim {obj} to {val}%", "{obj} to {val} percent",
                  "put {obj} at {val} percent", "set {obj} brightness to {val}",
                  "brightness {val} for {obj}", "can you dim {obj} to {val} percent",
                  "{obj} at {val}%", "adjust {obj} to {val} percent"),
        "heldout": ("change {obj} to {val} percent brightness", "I want {obj} at {val}%",
                    "make {obj} {val} percent bright", "{obj} brightness should be {val}"),
    },
    "temperature": {
        "train": ("set {obj} to {val}", "set {obj} to {val} degrees", "{obj} to {val} degrees",
                  "put {obj} at {val}", "can you set {obj} to {val} degrees",
                  "{obj} {val} degrees", "set {obj} at {val} please", "adjust {obj} to {val}"),
        "heldout": ("change {obj} to {val} degrees", "I'd like {obj} on {val} degrees",
                    "{obj} should be at {val}", "make {obj} {val} degrees"),
    },
    "cooling": {
        "train": ("set {obj} to {val}", "set {obj} to {val} degrees", "{obj} to {val} degrees",
                  "put {obj} on {val}", "cool with {obj} at {val} degrees",
                  "{obj} at {val} degrees", "adjust {obj} to {val}"),
        "heldout": ("change {obj} to {val} degrees", "I'd like {obj} on {val}",
                    "{obj} should be at {val} degrees"),
    },
    "fan_level": {
        "train": ("set {obj} to level {val}", "{obj} speed {val}", "put {obj} on {val}",
                  "set {obj} to speed {val}", "{obj} to level {val}", "turn {obj} to {val}",
                  "can you put {obj} on level {val}", "adjust {obj} to level {val}"),
        "heldout": ("change {obj} to speed {val}", "I want {obj} at level {val}",
                    "{obj} should run at speed {val}", "make {obj} level {val}"),
    },
    "percent_open": {
        "train": ("set {obj} to {val} percent", "open {obj} to {val}%", "{obj} at {val} percent",
                  "put {obj} at {val}%", "can you set {obj} to {val} percent",
                  "{obj} to {val} percent open", "adjust {obj} to {val}%"),
        "heldout": ("move {obj} to {val} percent", "I want {obj} {val}% open",
                    "{obj} should be {val} percent open", "change {obj} to {val}%"),
    },
    "volume": {
        "train": ("set {obj} volume to {val}", "volume {val} on {obj}", "turn {obj} to {val}",
                  "{obj} volume {val}", "can you set the volume of {obj} to {val}",
                  "put {obj} at volume {val}", "adjust {obj} volume to {val}"),
        "heldout": ("change the volume of {obj} to {val}", "I'd like {obj} at volume {val}",
                    "make {obj} volume {val}"),
    },
}
# Blinds also go halfway, which means 50 % open.
_HALFWAY_FRAMES = {
    "train": ("open {obj} halfway", "close {obj} halfway", "{obj} halfway"),
    "heldout": ("put {obj} halfway", "move {obj} halfway"),
}

_QUERY_FRAMES = {
    "switch": {
        "train": ("{is} {obj} on", "{is} {obj} off", "did I leave {obj} on", "check if {obj} {is} on",
                  "{obj} status", "{is} {obj} running", "{is} {obj} still on",
                  "any idea if {obj} {is} on", "{is} {obj} on right now", "let me know if {obj} {is} on"),
        "heldout": ("can you tell me if {obj} {is} on", "what's the status of {obj}",
                    "{was} {obj} left on", "{is} {obj} switched on"),
    },
    "openable": {
        "train": ("{is} {obj} open", "{is} {obj} closed", "did I close {obj}", "check {obj}",
                  "did I leave {obj} open", "{is} {obj} still open", "any idea if {obj} {is} open",
                  "let me know whether {obj} {is} open"),
        "heldout": ("tell me whether {obj} {is} closed", "{was} {obj} left open",
                    "can you check whether {obj} {is} open"),
    },
    "lockable": {
        "train": ("is {obj} locked", "did I lock {obj}", "is {obj} unlocked", "check {obj}",
                  "is {obj} still unlocked", "let me know if {obj} is locked"),
        "heldout": ("tell me if {obj} is locked", "was {obj} left unlocked",
                    "can you check whether {obj} is locked"),
    },
    "temperature": {
        "train": ("what is the temperature in the {room}", "how warm is it in the {room}",
                  "what's {obj} set to", "how cold is the {room}", "temperature in the {room}",
                  "let me know the temperature in the {room}"),
        "heldout": ("tell me the temperature in the {room}", "what temperature is it in the {room}",
                    "how hot is the {room}"),
    },
}

_SCENE_FRAMES = {
    "train": ("start {scene}", "activate {scene}", "{scene} please", "set the scene to {scene}",
              "switch to {scene}", "run {scene} in the {room}", "{scene} in the {room}",
              "it's {scene}", "time for {scene}", "start {scene} in the {room}"),
    "heldout": ("begin {scene}", "let's do {scene}", "put the house in {scene}",
                "can we have {scene} in the {room}", "I'm ready for {scene}"),
}

_CHAT_PHRASES = {
    "train": {
        "greeting": ("hello", "hi", "hey", "hi there", "good evening", "hello there"),
        "thanks": ("thanks", "thank you", "thanks a lot", "great, thanks", "perfect, thank you"),
        "identity": ("who are you", "what are you", "what is your name", "are you a robot"),
        "capabilities": ("what can you do", "help", "what can I ask you", "how do I use you"),
        "how_are_you": ("how are you", "how are you doing", "how's it going"),
        "bye": ("bye", "goodbye", "see you later", "that's all"),
    },
    "heldout": {
        "greeting": ("greetings", "hey there, assistant"),
        "thanks": ("much appreciated", "thank you very much"),
        "identity": ("tell me about yourself", "what kind of assistant are you"),
        "capabilities": ("what are you able to do", "what do you know how to do"),
        "how_are_you": ("how have you been", "are you doing well"),
        "bye": ("catch you later", "that will be all"),
    },
}

# No "my", "our", "me" or "tell" in the training requests: the training commands and questions have
# none either, so the word would become a cue for refusing.
_OUT_OF_SCOPE = {
    "train": ("order a pizza", "what's the weather tomorrow", "send an email to the boss",
              "call mom", "book a flight to paris", "what's the news today",
              "set an alarm for 7", "add a reminder to buy milk", "got any jokes",
              "what is the capital of france", "how far is the moon", "write a poem",
              "translate hello into spanish", "what time is it", "buy more coffee",
              "play a song by queen", "what's two plus two", "who is the president",
              "find a restaurant nearby", "read a story", "track the package",
              "add eggs to the shopping list", "open the inbox", "what's on the calendar"),
    "heldout": ("order me a taxi", "what will the weather be on friday", "text my sister",
                "find a recipe for lasagna", "who won the game last night", "schedule a meeting",
                "how tall is mount everest", "sing me something", "check my messages",
                "what's the price of bitcoin"),
}
_UNSUPPORTED_FRAMES = {
    "train": ("turn on the {thing}", "turn off the {thing}", "switch on the {thing}",
              "start the {thing}", "is the {thing} on", "open the {thing}",
              "turn on the {room} {thing}", "set the {thing} to 200"),
    "heldout": ("would you turn on my {thing}", "get the {thing} running", "is my {thing} done",
                "power up the {thing}"),
}

# A general English vocabulary: common words of everyday speech, none of them specific to this
# corpus. The words that no sentence table of either split uses are training filler (see
# ``_noise_word``): real words the model must learn to look past.
GENERAL_WORDS = tuple("""
a about above across after afternoon again against ago ahead air all almost alone along already
also always am among an and angry animal another answer any anyone anything anyway apple are area
arm around arrive as ask at aunt autumn away baby back bad bag ball bank base be beach bean bear
beautiful because become bed been before begin behind believe below best better between big bike
bird birthday bit black blue board boat body book born both bottle bottom box boy bread break
breakfast bring brother brown build bus busy but buy by cake call calm came can cannot cap card
care careful carry case cat catch cause chair chance change cheap check cheers cheese child
choose city class clean clear clever clock cloud coat cold colour come common cook cool corner
could count country course cousin cow cup cut dad dance dark date daughter day dear decide deep
did different difficult dinner do doctor does dog doing done down draw dream dress drink drive
drop dry during each ear early earth easy eat egg eight either else end enjoy enough even evening
ever every everyone everything exactly example eye face fact fair fall family far farm fast father
feel feet few field fill film find fine finger finish first fish five floor flower fly follow food
foot for forget fork four free fresh friend from front fruit full fun funny game gave gift girl
give glad glass go gold gone good got great green grey ground group grow guess had hair half hand
happen happy hard has hat have he head hear heart heavy hello help her here high hill him his hold
holiday horse hot hour how hundred hungry hurry idea if important in inside instead is island it
its job join juice jump keep key kind king knee knew know lady lake large last late later laugh
learn least leave left leg less lesson let letter life lift like line lion list listen little
live long look lose lost lot loud love low lunch made make man many map mark market may me mean
meat meet middle might milk mind minute miss moment money month moon more most mother mountain
mouth move much music must name near neck need never new next nice night nine no noise none noon
nose not note nothing notice number of often oil old once one only or orange other our out over
own page paint pair paper parent park part party pass past pay pen pencil people perhaps person
pick picture piece pink place plan plant play pocket point poor possible pretty price problem
pull push put queen question quiet quite rain reach read ready reason red remember rest rice rich
ride river road rock room round rule run sad safe said salt same sand save saw say school sea
season second see seem sell send seven shape share she sheep ship shirt shoe shop short should
show side simple since sing sister sit six sky sleep slow small smile snow so soft some someone
something sometimes son song soon sorry sound soup south speak special spend spoon spring square
stand star station stay step still stone story straight street strong student such sugar summer
sun sure sweet swim table take talk tall tea teacher team tell ten than that the their them then
there these they thing think third this those though three through throw tired to today together
told tomorrow tonight took top touch town toy train tree trip true try turn twelve twenty two
uncle under understand until upon us use usual very village visit voice wait walk wall want warm
was wash watch water way we wear weather week well went were what wheel when where whether which
while white who whole why wide wife wild will wind winter wish with without woman wonder wood word
work world worry would write wrong yard year yellow yes yesterday yet you young your
""".split())

# Train-only filler: real words that carry no command, and made-up words from these syllables.
_FILLER_WORDS = ("really", "just", "actually", "basically", "maybe", "totally", "uh", "er",
                 "hmm", "I guess", "then", "also", "again", "too", "ok", "right",
                 "quickly", "honestly", "anyway", "guys", "dear", "buddy", "lol", "pls")
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "gl")
# Made-up words that begin with a word that matters ("onsa", "offeru", "lockibo"): a word the
# tokenizer never saw falls apart into pieces, and the first piece can be " on" or " off" (as in
# " once" -> " on" + "ce"). Filler built like this teaches that such a piece, followed by more of
# the same word, is not the command word.
_MEANINGFUL_STARTS = ("on", "off", "open", "clos", "shut", "lock", "unlock", "up", "set", "turn")
_VOWELS = ("a", "e", "i", "o", "u", "oo", "ee")


def _words_of_tables() -> set[str]:
    """Every word any split's tables or vocabulary use: made-up filler must be none of them."""
    words: set[str] = set()

    def collect(value):
        if isinstance(value, str):
            words.update(w.strip(",.:?!'") for w in value.lower().replace("{", " ").replace("}", " ").split())
        elif isinstance(value, dict):
            for key, item in value.items():
                collect(key)
                collect(item)
        elif isinstance(value, (tuple, list)):
            for item in value:
                collect(item)
        elif isinstance(value, Device):
            collect(value.names + value.plurals)

    for value in list(globals().values()):
        if value is GENERAL_WORDS:
            continue
        if isinstance(value, (dict, tuple)):
            collect(value)
    return words


_KIND_WEIGHTS = (("command", 50), ("set", 14), ("query", 14), ("scene", 8), ("chat", 7),
                 ("refusal", 7))


# ----------------------------------------------------------------------------------------------
# Building one example.

def _pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


def _object_phrase(rng: random.Random, split: str, device: Device, room: str,
                   noise: float) -> tuple[str, bool]:
    """How the user names ``device`` in ``room``; returns (phrase, plural)."""
    plural = bool(device.plurals) and (room == HOME or rng.random() < 0.25)
    name = _pick(rng, device.plurals) if plural else _pick(rng, device.names)
    if device.key == "blinds":
        plural = True
    if room == HOME:
        form = _noisy(rng, _pick(rng, _HOUSE_FORMS[split]), noise)
        single = _pick(rng, device.names)
        if device.key == "blinds":
            single = single[:-1]  # "every blind in the house"
        return form.format(devs=name, dev=single), plural and "{devs}" in form
    if device.fixed_room is not None:
        if device.key == "door_lock" and room == _BACK_DOOR[1]:
            name = _BACK_DOOR[0]
        form = _pick(rng, _FIXED_FORMS[split])
        if device.key in ("coffee_maker", "sprinkler") and rng.random() < 0.3:
            form = _FIXED_WITH_ROOM[split]
        form = _noisy(rng, form, noise)
        return form.format(dev=name, room=_pick(rng, ROOMS[room])), plural
    form = _noisy(rng, _pick(rng, _OBJECT_FORMS[split]), noise)
    return form.format(dev=name, room=_pick(rng, ROOMS[room])), plural


def _pick_room(rng: random.Random, device: Device, allow_home: bool) -> str:
    if device.key == "door_lock":
        return _pick(rng, ("entrance", _BACK_DOOR[1]))
    if allow_home and device.whole_house and rng.random() < 0.15:
        return HOME
    return _pick(rng, device.rooms)


def _tidy(text: str) -> str:
    return " ".join(text.split()).replace(" ,", ",")


def _finish(rng: random.Random, split: str, core: str, question: bool, wrap: bool = True) -> str:
    """Wrap a core request in a polite prefix/suffix, then vary case and end punctuation."""
    text = _tidy(_pick(rng, _PREFIXES[split]) + core + _pick(rng, _SUFFIXES[split]) if wrap else core)
    roll = rng.random()
    if roll < 0.35:
        text = text[0].upper() + text[1:]
    elif roll < 0.5:
        text = text.lower()
    ending = rng.random()
    if question and ending < 0.7:
        text += "?"
    elif ending < 0.2:
        text += "."
    elif ending < 0.27:
        text += "!"
    return text


def _noise_word(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:
        return _pick(rng, _FILLER_WORDS)
    if roll < 0.55:
        return _pick(rng, _GENERAL_FILLER)
    if roll < 0.7:
        while True:
            word = _pick(rng, _MEANINGFUL_STARTS) + "".join(
                _pick(rng, _VOWELS) + _pick(rng, _ONSETS) for _ in range(rng.randint(1, 2)))
            word = word[:-1] if rng.random() < 0.5 else word
            if word not in _KNOWN_WORDS and word not in GENERAL_WORDS:
                return word
    while True:
        word = "".join(_pick(rng, _ONSETS) + _pick(rng, _VOWELS) for _ in range(rng.randint(2, 3)))
        if word not in _KNOWN_WORDS:
            return word


def _noisy(rng: random.Random, template: str, rate: float) -> str:
    """``template`` with, at probability ``rate``, one or two filler words put between its
    words (never inside a {slot}, so device and room names stay whole)."""
    if rate <= 0.0 or rng.random() >= rate:
        return template
    words = template.split(" ")
    for _ in range(rng.randint(1, 2)):
        words.insert(rng.randint(0, len(words)), _noise_word(rng))
    return " ".join(words)


def _frame(rng: random.Random, frames: tuple[str, ...], split: str, kind: str, noise: float):
    index = rng.randrange(len(frames))
    return _noisy(rng, frames[index], noise), f"{split}/{kind}/{index}"


def _action_example(rng: random.Random, split: str, noise: float) -> Example:
    device = _pick(rng, [d for d in DEVICES.values() if set(d.actions) - {"set"}])
    action = _pick(rng, [a for a in device.actions if a != "set"])
    room = _pick_room(rng, device, allow_home=True)
    obj, plural = _object_phrase(rng, split, device, room, noise)
    act, verb, prt = _pick(rng, _VERBS[action])
    frame, template = _frame(rng, _ACTION_FRAMES[split], split, "action", noise)
    core = frame.format(act=act, verb=verb, prt=prt, state=_STATES[action], obj=obj,
                        **{"is": "are" if plural else "is"})
    command = {"device": device.key, "room": room, "action": action}
    return Example([{"role": "user", "content": _finish(rng, split, core, False)}],
                   command_json(command), "command", command, template)


def _value_text(rng: random.Random, kind: str, value: int) -> str:
    if kind == "fan_level" and rng.random() < 0.3:
        return _LEVEL_WORDS[value]
    return str(value)


def _set_example(rng: random.Random, split: str, noise: float) -> Example:
    device = _pick(rng, [d for d in DEVICES.values() if d.value_kind is not None])
    room = _pick_room(rng, device, allow_home=True)
    if device.key == "thermostat" and rng.random() < 0.3:
        room = HOME
    if room == HOME and device.key in ("thermostat", "air_conditioner"):
        obj = _pick(rng, ("the " + _pick(rng, device.names), _pick(rng, device.names)))
    else:
        obj, _ = _object_phrase(rng, split, device, room, noise)
    first, last, step = VALUE_RANGES[device.value_kind]
    if device.value_kind == "percent_open" and rng.random() < 0.12:
        value = 50
        frame, template = _frame(rng, _HALFWAY_FRAMES[split], split, "halfway", noise)
        core = frame.format(obj=obj)
    else:
        value = rng.randrange(first, last + 1, step)
        frame, template = _frame(rng, _SET_FRAMES[device.value_kind][split], split,
                                 "set_" + device.value_kind, noise)
        core = frame.format(obj=obj, val=_value_text(rng, device.value_kind, value))
    command = {"device": device.key, "room": room, "action": "set", "value": value}
    return Example([{"role": "user", "content": _finish(rng, split, core, False)}],
                   command_json(command), "command", command, template)


def _query_example(rng: random.Random, split: str, noise: float) -> Example:
    device = _pick(rng, list(DEVICES.values()))
    if device.key == "thermostat":
        group = "temperature"
        room = _pick(rng, device.rooms)
    elif "open" in device.actions:
        group = "openable"
        room = _pick_room(rng, device, allow_home=False)
    elif "lock" in device.actions:
        group = "lockable"
        room = _pick_room(rng, device, allow_home=False)
    else:
        group = "switch"
        room = _pick_room(rng, device, allow_home=False)
    obj, plural = _object_phrase(rng, split, device, room, noise)
    frame, template = _frame(rng, _QUERY_FRAMES[group][split], split, "query_" + group, noise)
    core = frame.format(obj=obj, room=_pick(rng, ROOMS[room]), **{"is": "are" if plural else "is"},
                        was="were" if plural else "was")
    command = {"device": device.key, "room": room, "action": "query"}
    return Example([{"role": "user", "content": _finish(rng, split, core, True)}],
                   command_json(command), "query", command, template)


def _scene_example(rng: random.Random, split: str, noise: float) -> Example:
    scene = _pick(rng, sorted(SCENES))
    frame, template = _frame(rng, _SCENE_FRAMES[split], split, "scene", noise)
    room = _pick(rng, ("living_room", "bedroom", "kitchen", "dining_room", "office", "patio",
                       "garden", "basement")) if "{room}" in frame else HOME
    core = frame.format(scene=_pick(rng, SCENES[scene]),
                        room=_pick(rng, ROOMS[room]) if room != HOME else "")
    command = {"device": "scene", "room": room, "action": "activate", "scene": scene}
    return Example([{"role": "user", "content": _finish(rng, split, core, False)}],
                   command_json(command), "scene", command, template)


def _chat_example(rng: random.Random, split: str, noise: float) -> Example:
    intents = _CHAT_PHRASES[split]
    intent = _pick(rng, sorted(intents))
    index = rng.randrange(len(intents[intent]))
    core = _noisy(rng, intents[intent][index], noise)
    question = intent in ("identity", "capabilities", "how_are_you") and core != "help"
    return Example([{"role": "user", "content": _finish(rng, split, core, question, wrap=False)}],
                   CHAT_REPLIES[intent], "chat", None, f"{split}/chat_{intent}/{index}",
                   {"intent": intent})


def _refusal_example(rng: random.Random, split: str, noise: float) -> Example:
    if rng.random() < 0.5:
        index = rng.randrange(len(_OUT_OF_SCOPE[split]))
        core = _noisy(rng, _OUT_OF_SCOPE[split][index], noise)
        return Example([{"role": "user", "content": _finish(rng, split, core, False)}],
                       REFUSAL_REPLY, "refusal", None, f"{split}/out_of_scope/{index}")
    thing = _pick(rng, UNSUPPORTED_DEVICES)
    frame, template = _frame(rng, _UNSUPPORTED_FRAMES[split], split, "unsupported", noise)
    core = frame.format(thing=thing, room=_pick(rng, ("kitchen", "garage", "basement")))
    return Example([{"role": "user", "content": _finish(rng, split, core, frame.startswith("is"))}],
                   unsupported_reply(thing), "refusal", None, template, {"thing": thing})


_BUILDERS = {
    "command": _action_example,
    "set": _set_example,
    "query": _query_example,
    "scene": _scene_example,
    "chat": _chat_example,
    "refusal": _refusal_example,
}


def _one_turn(rng: random.Random, split: str, kinds: tuple[str, ...] | None, noise: float) -> Example:
    table = [(k, w) for k, w in _KIND_WEIGHTS if kinds is None or k in kinds]
    roll = rng.random() * sum(w for _, w in table)
    for kind, weight in table:
        roll -= weight
        if roll < 0:
            return _BUILDERS[kind](rng, split, noise)
    return _BUILDERS[table[-1][0]](rng, split, noise)


def generate(split: str, n: int, seed: int, kinds: tuple[str, ...] | None = None,
             system_rate: float = 0.25, history_rate: float = 0.15,
             noise_rate: float = 0.35) -> list[Example]:
    """``n`` examples of ``split`` ("train" or "heldout"), the same list for the same arguments.

    ``kinds`` restricts the reply kinds of the last turn: any of "command" (on/off/open/...),
    "set" (values), "query", "scene", "chat", "refusal"; ``None`` mixes them all. With
    ``system_rate`` an example starts with a system prompt; with ``history_rate`` it carries one
    earlier exchange of the same split before the user turn being answered. With ``noise_rate``
    (train split only; held-out text is never noised) a sentence frame or object phrase gets
    filler words inserted between its words, so the model learns to look past words it does
    not know instead of memorising frames.
    """
    if split not in SPLITS:
        raise ValueError(f"corpus split {split!r} is not one of {SPLITS}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"corpus size n={n!r}: expected an integer >= 0")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"corpus seed={seed!r}: expected an integer")
    if kinds is not None:
        unknown = set(kinds) - set(_BUILDERS)
        if unknown or not kinds:
            raise ValueError(f"corpus kinds={kinds!r}: expected a non-empty subset of {sorted(_BUILDERS)}")
        kinds = tuple(kinds)
    for name, rate in (("system_rate", system_rate), ("history_rate", history_rate),
                       ("noise_rate", noise_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"corpus {name}={rate!r}: expected a probability in [0, 1]")
    rng = random.Random(seed * len(SPLITS) + SPLITS.index(split))
    noise = noise_rate if split == "train" else 0.0
    examples = []
    for _ in range(n):
        example = _one_turn(rng, split, kinds, noise)
        prefix: list[dict] = []
        if rng.random() < system_rate:
            prefix.append({"role": "system", "content": _pick(rng, SYSTEM_PROMPTS)})
        if rng.random() < history_rate:
            earlier = _one_turn(rng, split, None, noise)
            prefix += [earlier.messages[-1], {"role": "assistant", "content": earlier.reply}]
        example.messages = prefix + example.messages
        examples.append(example)
    return examples


def render_text(messages: list[dict], reply: str | None = None) -> str:
    """The conversation as one chat-format string (2B4T style), ending with the reply if given."""
    parts = [f"{m['role'].capitalize()}: {m['content'].strip()}<|eot_id|>" for m in messages]
    parts.append("Assistant: " if reply is None else f"Assistant: {reply}<|eot_id|>")
    return "<|begin_of_text|>" + "".join(parts)


_KNOWN_WORDS = _words_of_tables()
# General words no sentence table of either split uses: safe filler, never a held-out word.
_GENERAL_FILLER = tuple(w for w in GENERAL_WORDS if w not in _KNOWN_WORDS)
