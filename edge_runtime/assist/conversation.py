"""The assistant as Home Assistant's conversation agent: one request in words -> what HA should do.

    agent = ConversationAgent(Assistant(None))            # no home: slots as the user said them
    agent.respond("turn off the kitchen lights", {"conversation_id": "01J..."})
    # Reply(kind="intent", name="HassTurnOff", slots={"area": "kitchen", "domain": "light"},
    #       text="Turning off the kitchen lights.", context={"conversation_id": "01J..."})

The kinds of reply are the Wyoming events the service sends (edge_runtime/assist/wyoming_cli.py):

- ``intent``: a Home Assistant intent (ha_intents.py) for HA to carry out on its own entities;
- ``not-recognized``: a request for the home that cannot be mapped (no value, a verb that does not
  fit the device, ...), with the reason in words;
- ``handled``: a non-command answered by the chat model (the handle program), or a declined
  confirmation;
- ``not-handled``: an action that waits for a confirmation.

Home Assistant's own Assist carries out an unlock or a garage-door opening at once. This agent
does not: like ``actions.needs_confirmation`` it asks first, and holds the intent for
CONFIRM_TIMEOUT_S under the conversation (HA's ``conversation_id``, else the satellite or device id
it passes in the context). "yes" within that time sends the held intent; "no" drops it; anything
else drops it and is a request of its own.

A non-command is never turned into an intent: words without a home verb, and questions that name
no kind of device, no state and no device of the home, go to the chat model or are not recognized.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from edge_runtime.assist import ha_intents, ha_phrases, lexicon
from edge_runtime.assist.actions import GUARDED_COVER_CLASSES
from edge_runtime.assist.desk import CONFIRM_TIMEOUT_S

log = logging.getLogger("edge_runtime.assist")

LANGUAGES = ("en",)
MAX_PENDING = 256                       # held confirmations; the oldest goes first past this
CONTEXT_KEYS = ("conversation_id", "satellite_id", "device_id")
YES = frozenset({"yes", "yes please", "yeah", "yep", "confirm", "confirmed", "i confirm", "do it", "yes do it",
                 "go ahead", "yes go ahead", "please do", "sure", "okay", "okay do it", "affirmative"})
NO = frozenset({"no", "nope", "no thanks", "no thank you", "cancel", "don't", "do not", "stop", "leave it",
                "never mind", "nevermind", "forget it"})
NEVERMIND = frozenset({"never mind", "nevermind", "cancel", "forget it", "cancel that", "forget about it"})
_NEGATED_STARTS = frozenset({"do", "don't", "never", "please", "not", "no"})
_GUARDED_WORDS = frozenset({"garage", "garages", "gate", "gates"})
NOT_FOR_THE_HOME = "Sorry, I can only help with the devices in your home."
CHAT_SYSTEM_PROMPT = "You are a helpful voice assistant. Answer in one or two short sentences."


@dataclass(frozen=True)
class Reply:
    kind: str                            # "intent", "not-recognized", "handled" or "not-handled"
    text: str = ""
    name: str | None = None              # the HA intent (kind "intent")
    slots: dict = field(default_factory=dict)
    context: dict | None = None


class ChatAnswers:
    """The handle program: a short answer from a chat model for what is not a home command."""

    def __init__(self, model, max_tokens: int = 48, max_chars: int = 400):
        self.model = model
        self.max_tokens = max_tokens
        self.max_chars = max_chars
        self._lock = threading.Lock()

    def answer(self, text: str) -> str:
        messages = [{"role": "system", "content": CHAT_SYSTEM_PROMPT}, {"role": "user", "content": text}]
        with self._lock:
            out = self.model.create_chat_completion(messages, max_tokens=self.max_tokens, temperature=0.0)
        reply = " ".join(out["choices"][0]["message"]["content"].split())
        if len(reply) > self.max_chars:
            reply = reply[: self.max_chars].rsplit(" ", 1)[0] + "..."
        return reply


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _domains(slots) -> set:
    d = slots.get("domain")
    return set(d) if isinstance(d, list) else {d} if d else set()


def guarded(ha: ha_intents.HaIntent, home=None) -> bool:
    """Whether Home Assistant would unlock something or open a garage door or gate with this
    intent (the rule of actions.needs_confirmation, read off the intent and, with a home, the
    entities it names)."""
    s = ha.slots
    domains = _domains(s)
    if ha.name == "HassTurnOff" and "lock" in domains:
        return True
    opens = (ha.name == "HassTurnOn" and "cover" in domains) or (
        ha.name == "HassSetPosition" and _number(s.get("position")) and s["position"] > 0)
    if not opens:
        return False
    if s.get("device_class") in GUARDED_COVER_CLASSES:
        return True
    said = " ".join(str(s.get(k) or "") for k in ("name", "area")).casefold().split()
    if _GUARDED_WORDS & set(said):
        return True
    if home is None:
        return False
    name, area = str(s.get("name") or "").casefold(), str(s.get("area") or "").casefold()
    for e in home:
        if e.domain != "cover" or e.device_class not in GUARDED_COVER_CLASSES:
            continue
        names = {n.casefold() for n in (e.friendly_name, e.name) if n}
        if (name and name in names) or (not name and area and (e.area or "").casefold() == area):
            return True
    return False


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


class ConversationAgent:
    """Requests -> Replies for one assistant (and optionally a home to ground names in and a chat
    model for everything else). Thread-safe: the Wyoming service calls it from worker threads."""

    def __init__(self, assistant, home=None, chat: ChatAnswers | None = None, *,
                 confirm_timeout: float = CONFIRM_TIMEOUT_S, clock=time.monotonic):
        self.assistant = assistant
        self.home = home
        self.chat = chat
        self.confirm_timeout = confirm_timeout
        self._clock = clock
        self._pending: dict = {}           # (context key, value) -> (HaIntent, deadline)
        self._lock = threading.Lock()

    # -- confirmations held per conversation ---------------------------------------------------
    @staticmethod
    def _keys(context) -> list:
        if not isinstance(context, dict):
            return []
        return [(k, context[k]) for k in CONTEXT_KEYS if isinstance(context.get(k), str) and context[k]]

    def _hold(self, keys, ha):
        deadline = self._clock() + self.confirm_timeout
        with self._lock:
            for key in keys:
                self._pending.pop(key, None)
                self._pending[key] = (ha, deadline)
            while len(self._pending) > MAX_PENDING:
                self._pending.pop(next(iter(self._pending)))

    def _take(self, keys):
        """The intent held for this conversation (and forget it under every key), or None."""
        now = self._clock()
        with self._lock:
            found = None
            for key in keys:
                held = self._pending.get(key)
                if held is not None and found is None and held[1] >= now:
                    found = held[0]
            if found is not None:
                for key in [k for k, (ha, _) in self._pending.items() if ha is found]:
                    del self._pending[key]
            for key in [k for k, (_, deadline) in self._pending.items() if deadline < now]:
                del self._pending[key]
        return found

    # -- the slots ------------------------------------------------------------------------------
    def slots(self, text: str, normalized: str, permitted: set) -> dict:
        """The slot answer: the model's when it follows the contract and agrees with the verbs,
        else the one read from the request's words."""
        words = ha_phrases.slots_from_words(normalized, permitted)
        clauses = ha_phrases.command_clauses(text)
        if len(clauses) > 1:
            # "dinner's ready, lock the back door", "I'm off to work, get the gate locked": the command
            # is the last clause that reads as one, and it names the device in its own words
            for clause in clauses:
                alone = ha_phrases.slots_from_words(lexicon.normalize(clause), permitted)
                if alone["intent"] != "none":
                    words = alone
                    break
        if not getattr(self.assistant, "follows_contract", False):
            return words
        got = self.assistant.slots_for(text, normalized, permitted)
        if got is None or got["intent"] not in permitted:
            return words
        cue = lexicon.INTENT_CUE.get(got["intent"])
        if cue is not None and cue not in lexicon.cues_in(lexicon.words_of(normalized)):
            return words                   # a pair intent needs its own verb in the request
        if got["intent"] == "none" and words["intent"] != "none":
            return words
        return got

    # -- one request ----------------------------------------------------------------------------
    def respond(self, text: str, context: dict | None = None, language: str | None = None) -> Reply:
        ctx = dict(context) if isinstance(context, dict) else None
        if language and language.split("-")[0].split("_")[0].lower() not in LANGUAGES:
            return Reply("not-recognized", f"Sorry, I only understand {', '.join(LANGUAGES)}.", context=ctx)
        normalized = lexicon.normalize(text)
        keys = self._keys(ctx)
        held = self._take(keys)
        if held is not None:
            if normalized in YES:
                return Reply("intent", held.text, held.name, dict(held.slots), ctx)
            if normalized in NO:
                return Reply("handled", "Okay, I'll leave it.", context=ctx)
        if not normalized.strip():
            return Reply("not-recognized", "I didn't catch a request.", context=ctx)
        if normalized in NEVERMIND:
            return Reply("intent", "Okay.", "HassNevermind", {}, ctx)
        words = lexicon.words_of(normalized)
        if words[0] in _NEGATED_STARTS and lexicon.negated(words):
            return self._not_a_command(text, ctx)      # "do not open the garage": nothing to do
        permitted = lexicon.permitted_intents(text, normalized)
        got = self.slots(text, normalized, permitted)
        if got["intent"] == "none":
            return self._not_a_command(text, ctx)
        if self.home is not None and len(self.home):
            ha = ha_intents.grounded(self.home, got, normalized, text)
        else:
            ha = ha_intents.ha_intent(got, normalized)
        if isinstance(ha, ha_intents.Refusal):
            if ha.reason == "not_a_command":
                return self._not_a_command(text, ctx)
            return Reply("not-recognized", ha.text, context=ctx)
        if ha.name in ("HassGetState", "HassClimateGetTemperature") and not self._about_the_home(ha, got, normalized):
            return self._not_a_command(text, ctx)
        if guarded(ha, self.home):
            self._hold(keys, ha)
            if not keys:
                return Reply("not-handled", f"I won't do that without a confirmation, and this request "
                                            f"carries no conversation to confirm in: {_lower_first(ha.text)}",
                             context=ctx)
            return Reply("not-handled", f"Please confirm: {_lower_first(ha.text)} Say yes to go ahead.",
                         context=dict(ctx or {}, confirm=True))
        return Reply("intent", ha.text, ha.name, dict(ha.slots), ctx)

    def _about_the_home(self, ha, got, normalized) -> bool:
        """A question is for the home when it asks about a state, a temperature, a kind of device
        or a device the home has; "what is the capital of France" is none of these."""
        if "state" in ha.slots or ha.name == "HassClimateGetTemperature":
            return True
        if ha.slots.get("domain") or ha.slots.get("device_class"):
            return True
        words = lexicon.words_of(lexicon.normalize(" ".join(str(got.get(k) or "") for k in ("name", "area"))))
        if lexicon.domains_named(words) or lexicon.domains_named([w.rstrip("s") for w in words]):
            return True
        if self.home is None:
            return False
        said = {str(ha.slots.get(k) or "").casefold() for k in ("name", "area")} - {""}
        known = {n.casefold() for e in self.home for n in (e.friendly_name, e.name, e.area) if n}
        return bool(said & known)

    def _not_a_command(self, text, ctx) -> Reply:
        if self.chat is None:
            return Reply("not-recognized", NOT_FOR_THE_HOME, context=ctx)
        try:
            answer = self.chat.answer(text)
        except Exception:                   # the chat model failing is a reply too, never silence
            log.exception("the chat model failed on a request")
            return Reply("not-handled", "Sorry, I couldn't answer that.", context=ctx)
        if not answer:
            return Reply("not-recognized", NOT_FOR_THE_HOME, context=ctx)
        return Reply("handled", answer, context=ctx)
