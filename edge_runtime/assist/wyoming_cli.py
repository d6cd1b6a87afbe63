"""`edge-runtime serve wyoming`: the board as Home Assistant's conversation agent over Wyoming.

    edge-runtime serve wyoming --uri tcp://0.0.0.0:10700
    edge-runtime serve wyoming --uri tcp://0.0.0.0:10700 --chat-model ggml-model-i2_s.gguf --broker localhost:1883

``info`` names an intent program (the assistant: requests -> Home Assistant intents) and, with
--chat-model, a handle program (short answers to what is not a home command). Home Assistant's
``wyoming`` integration adds such a service as a conversation agent; each request it sends (a
``transcript``) gets one event back (conversation.py says which):

    {"type": "intent", "data": {"name": "HassTurnOff", "entities": [{"name": "area", "value": "kitchen"},
     {"name": "domain", "value": "light"}], "text": "Turning off the kitchen lights.", "context": {...}}}

The context a request carries (HA's conversation_id, satellite_id, device_id) comes back on the
reply. --home / --broker ground names in the home's registry; without them the slots are the
user's words and Home Assistant matches them against its own entity names and aliases.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from edge_runtime.serve.options import add_model_arguments, configure_logging, find_board, load_model, int_in

log = logging.getLogger("edge_runtime.assist")

PROGRAM = "edge-runtime"
URL = ""                                # no public home page to name


def add_arguments(p):
    from edge_runtime.serve.wyoming import DEFAULT_URI

    p.add_argument("--uri", default=None,
                   help=f"where to listen: tcp://HOST:PORT or unix:///PATH (default: board config or {DEFAULT_URI})")
    add_model_arguments(p)
    p.add_argument("--chat-model", default=None,
                   help="a chat model (GGUF) that answers what is not a home command (the handle program); "
                        "without it such requests are not recognized")
    p.add_argument("--chat-max-tokens", type=int_in(1, 512), default=48,
                   help="longest chat answer in tokens (default 48)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--home", default=None, help="a JSON file {discovery topic: config} to ground names in")
    src.add_argument("--broker", default=None,
                     help="HOST:PORT of the MQTT broker whose Home Assistant discovery configs ground names")
    p.add_argument("--discovery-prefix", default="homeassistant", help="discovery prefix (default homeassistant)")
    p.add_argument("--username", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--tls-ca", default=None, help="CA file: connect to the broker with TLS")
    p.add_argument("--tls-cert", default=None)
    p.add_argument("--tls-key", default=None)


def _model_name(model) -> str:
    return os.path.splitext(os.path.basename(getattr(model, "path", None) or "model"))[0]


def build_info(intent_model, chat_model=None):
    """The `info` event's programs: the intent program, and the handle program when a chat model
    answers (listed as not installed otherwise, so Home Assistant does not pick it)."""
    from wyoming.info import Attribution, HandleModel, HandleProgram, Info, IntentModel, IntentProgram

    from edge_runtime import __version__
    from edge_runtime.assist.conversation import LANGUAGES

    by = Attribution(name=PROGRAM, url=URL)
    intent = IntentProgram(
        name=PROGRAM, attribution=by, installed=True, version=__version__,
        description="Home commands in words -> Home Assistant intents (BitNet b1.58 on the board)",
        models=[IntentModel(name=_model_name(intent_model), attribution=by, installed=True, version=__version__,
                            description="slot model and lexicon", languages=list(LANGUAGES))])
    handle = HandleProgram(
        name=f"{PROGRAM}-chat", attribution=by, installed=chat_model is not None, version=__version__,
        description="Short answers to what is not a home command",
        models=[HandleModel(name=_model_name(chat_model) if chat_model else "none", attribution=by,
                            installed=chat_model is not None, version=__version__, description="chat model",
                            languages=list(LANGUAGES))],
        supports_handled_streaming=False, supports_home_control=False)
    return Info(intent=[intent], handle=[handle])


def reply_event(reply):
    """A conversation.Reply as the Wyoming event Home Assistant reads."""
    from wyoming.handle import Handled, NotHandled
    from wyoming.intent import Entity, Intent, NotRecognized

    if reply.kind == "intent":
        entities = [Entity(name=k, value=v) for k, v in reply.slots.items()]
        return Intent(name=reply.name, entities=entities, text=reply.text or None, context=reply.context).event()
    cls = {"not-recognized": NotRecognized, "handled": Handled, "not-handled": NotHandled}[reply.kind]
    return cls(text=reply.text, context=reply.context).event()


def _home(args):
    from edge_runtime.assist.home import Home

    if args.home:
        return Home.from_file(args.home, prefix=args.discovery_prefix)
    if args.broker:
        return Home.from_broker(args.broker, username=args.username, password=args.password, tls_ca=args.tls_ca,
                                tls_cert=args.tls_cert, tls_key=args.tls_key, prefix=args.discovery_prefix)
    return None


def main(args) -> int:
    try:
        import wyoming  # noqa: F401  (the protocol library; only this service needs it)
    except ImportError:
        raise ValueError("serve wyoming needs the 'wyoming' package: pip install 'edge-runtime[wyoming]'") from None
    from edge_runtime.assist.assistant import MAX_TEXT_CHARS, Assistant
    from edge_runtime.assist.conversation import ChatAnswers, ConversationAgent
    from edge_runtime.serve.wyoming import DEFAULT_URI, WyomingService, parse_uri

    configure_logging(getattr(args, "debug", False))
    board = find_board(args)
    wy = getattr(board, "wyoming", None)
    uri = args.uri or (wy.uri if wy is not None else DEFAULT_URI)
    parse_uri(uri)                                  # a bad URI is an error before any model loads
    if args.broker is None and args.home is None and wy is not None and wy.broker:
        args.broker = wy.broker
    home = _home(args)
    model = chat_model = None
    try:
        model = load_model(args, board)
        if args.chat_model:
            chat_model = load_model(argparse.Namespace(**{**vars(args), "model": args.chat_model}), board)
        assistant = Assistant(home, model=model, n_threads=args.threads or 1)
        chat = ChatAnswers(chat_model, max_tokens=args.chat_max_tokens) if chat_model else None
        agent = ConversationAgent(assistant, home, chat)
        service = WyomingService(build_info(model, chat_model),
                                 lambda text, context, language: reply_event(agent.respond(text, context, language)),
                                 max_text_chars=MAX_TEXT_CHARS)
        asyncio.run(service.run(uri))
    finally:
        for m in (chat_model, model):
            if m is not None:
                m.close()
        if home is not None:
            home.close()
    return 0
