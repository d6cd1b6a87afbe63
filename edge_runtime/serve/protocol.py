"""The request/reply protocol every transport (MQTT, serial) speaks: error codes, request parsing
and validation, the shapes and the encoding of replies. One definition, used by all transports.

Reply shapes:
- chunk: {"id", "seq", "text"} while streaming;
- final: {"id", "done": true, "text", "finish_reason": "stop"|"length"|"cancelled"|"error",
  "usage", "timings"}, plus "error": {"code", "message"} when finish_reason is "error".

`parse_request` turns a decoded JSON value into a GenerationRequest or raises RequestError; it
never raises anything else (an unexpected failure while parsing is a bad_request naming it), so a
transport always has an error reply to send. A request is refused at parse time when any of its
strings cannot be encoded as UTF-8 (a lone surrogate such as "\\ud800" from a JSON escape): every
reply the service sends for an accepted request can then be encoded.
"""
import dataclasses
import json
import logging
import math
import re
import time

log = logging.getLogger("edge_runtime.serve.protocol")

# error codes (stable: clients switch on them)
E_BAD_REQUEST = "bad_request"        # not UTF-8 / JSON / an object, wrong types, unknown fields, bad values
E_TOO_LARGE = "too_large"            # prompt or payload over the limit
E_BUSY = "busy"                      # the queue is full
E_DUPLICATE = "duplicate"            # the id is in use on this reply topic / serial session
E_CONTEXT = "context_overflow"       # the prompt does not fit the context window
E_INTERNAL = "internal"              # an unexpected failure (logged)
E_SHUTDOWN = "shutting_down"         # the service is stopping
E_NOT_FOUND = "not_found"            # serial: a cancel for an id that is not queued, running or being sent
E_BAD_CRC = "bad_crc"                # serial: a line whose CRC-32 does not match (or is missing with --crc)
E_LINE_TOO_LONG = "line_too_long"    # serial: a line over --max-line

MAX_ID_CHARS = 128
ID_MIN, ID_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_DEPTH = 64                       # nesting of arrays/objects in a request (json_schema included)
MAX_STOP_STRINGS = 8
ROLES = ("system", "user", "assistant")

# numeric request fields: (type, low, high, low_inclusive). max_tokens' high is the service's cap.
NUMBER_RANGES = {
    "max_tokens": (int, 1, None, True),
    "temperature": (float, 0.0, 10.0, True),
    "top_k": (int, 0, 1 << 20, True),
    "top_p": (float, 0.0, 1.0, False),
    "min_p": (float, 0.0, 1.0, True),
    "repeat_penalty": (float, 0.0, 10.0, False),
    "presence_penalty": (float, -2.0, 2.0, True),
    "frequency_penalty": (float, -2.0, 2.0, True),
    "seed": (int, 0, 2 ** 64 - 1, True),
}
OTHER_OPTIONS = {"stop": (str, list), "json_schema": dict, "stream": bool}
OPTIONS = (*NUMBER_RANGES, *OTHER_OPTIONS)


def range_text(name, high=None):
    """How a field's range reads in messages and help texts, e.g. "(0, 1]"."""
    typ, lo, hi, lo_inclusive = NUMBER_RANGES[name]
    hi = hi if high is None else high
    if typ is int:
        return f"{lo}..{hi}"
    return f"{'[' if lo_inclusive else '('}{lo:g}, {hi:g}]"


def in_range(name, value, high=None):
    """Whether `value` (already of the right type) lies in the field's range; NaN never does."""
    typ, lo, hi, lo_inclusive = NUMBER_RANGES[name]
    hi = hi if high is None else high
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (lo <= value if lo_inclusive else lo < value) and value <= hi


class RequestError(ValueError):
    """A request that cannot be served; `code` is one of the E_* strings above. `same_request` is
    set on a duplicate that repeats the earlier request exactly (a redelivery or a client's retry)."""

    def __init__(self, code, message, request_id=None, same_request=False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.same_request = same_request


@dataclasses.dataclass
class GenerationRequest:
    id: object                      # str or int, echoed in every reply
    prompt: str = None
    messages: list = None
    options: dict = dataclasses.field(default_factory=dict)
    stream: bool = True
    context: object = None          # transport data (e.g. MQTT reply route), untouched by the service
    fingerprint: bytes = None       # what makes two copies of one request equal (transport's choice)
    received: float = dataclasses.field(default_factory=time.monotonic)


@dataclasses.dataclass
class Limits:
    max_prompt_chars: int = 16384
    max_tokens: int = 1024          # cap on a request's max_tokens
    default_max_tokens: int = 256
    queue_size: int = 4             # waiting requests behind the running one; 0 = none wait
    recent_ids: int = 1024          # ids remembered (per reply key) to answer duplicates once


LIMIT_RANGES = {"max_prompt_chars": (1, 1 << 20), "max_tokens": (1, 1 << 16), "queue_size": (0, 10000)}


# ---------------------------------------------------------------------------------------------
# ids and strings

def _encodable(text):
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def usable_id(value):
    """The id when it can be echoed in a reply (a 1-128 character string that encodes as UTF-8, or
    an integer in the signed 64-bit range), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if ID_MIN <= value <= ID_MAX else None
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and _encodable(value):
        return value
    return None


def _id_problem(obj):
    if "id" not in obj:
        return "request needs an \"id\": a non-empty string (<= 128 characters) or an integer"
    value = obj["id"]
    if isinstance(value, str) and value and len(value) <= MAX_ID_CHARS:
        return f"\"id\" {_surrogate_note(value)}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"\"id\" must be an integer from {ID_MIN} to {ID_MAX}, got {value}"
    return (f"\"id\" must be a non-empty string (<= {MAX_ID_CHARS} characters) or an integer, "
            f"got {_describe(value)}")


def _describe(value):
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return type(value).__name__ if value is not None else "null"


def _surrogate_note(text):
    for i, ch in enumerate(text):
        if 0xD800 <= ord(ch) <= 0xDFFF:
            return (f"holds a lone surrogate (\\u{ord(ch):04x} at character {i}), which cannot be encoded as "
                    f"UTF-8; send characters, not halves of a UTF-16 pair")
    return "cannot be encoded as UTF-8"


def _path(where, step, first, depth):
    """Where a nested value sits, for messages; deep paths are cut after a few levels."""
    if not where:
        return first
    if depth >= 6:
        return where if where.endswith("...") else where + "..."
    return where + step


def _show(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_structure(obj, max_depth=MAX_DEPTH):
    """None when `obj` nests at most `max_depth` levels and every string (keys included) encodes as
    UTF-8, else what is wrong, naming where. Iterative: no depth can exhaust the Python stack."""
    stack = [(obj, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return f"{where or 'the request'} {_surrogate_note(value)}"
            continue
        if isinstance(value, (dict, list)):
            if depth >= max_depth:
                return f"{where or 'the request'} nests more than {max_depth} levels of arrays/objects"
            if isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(key, str) and not _encodable(key):
                        return f"a key in {where or 'the request'} {_surrogate_note(key)}"
                    stack.append((item, _path(where, f".{key}", f"\"{key}\"", depth), depth + 1))
            else:
                for i, item in enumerate(value):
                    stack.append((item, _path(where, f"[{i}]", f"[{i}]", depth), depth + 1))
    return None


# ---------------------------------------------------------------------------------------------
# requests

def parse_request(obj, limits: Limits = Limits(), context=None, stream_default=True) -> GenerationRequest:
    """Validate a decoded JSON request. Raises RequestError (with the id when it had a usable one),
    and nothing else."""
    rid = usable_id(obj.get("id")) if isinstance(obj, dict) else None
    try:
        return _parse(obj, rid, limits, context, stream_default)
    except RequestError:
        raise
    except Exception as exc:  # a bug or an input nobody foresaw: still one reply, and the trace in the log
        log.exception("unexpected failure while parsing request %r", rid)
        raise RequestError(E_BAD_REQUEST, f"the request could not be parsed ({type(exc).__name__}: {exc})",
                           rid) from None


def _parse(obj, rid, limits, context, stream_default):
    if not isinstance(obj, dict):
        raise RequestError(E_BAD_REQUEST, f"a request must be a JSON object, got {_describe(obj)}")
    if rid is None:
        raise RequestError(E_BAD_REQUEST, _id_problem(obj))

    def bad(msg):
        return RequestError(E_BAD_REQUEST, msg, rid)

    problem = check_structure(obj)
    if problem is not None:
        raise bad(problem)
    unknown = sorted(set(obj) - {"id", "prompt", "messages"} - set(OPTIONS))
    if unknown:
        raise bad(f"unknown field(s): {', '.join(unknown)}")
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if (prompt is None) == (messages is None):
        raise bad("give exactly one of \"messages\" (a list) or \"prompt\" (a string)")
    size = 0
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt:
            raise bad("\"prompt\" must be a non-empty string")
        size = len(prompt)
    else:
        if not isinstance(messages, list) or not messages:
            raise bad("\"messages\" must be a non-empty list of {\"role\", \"content\"}")
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or set(msg) - {"role", "content"} or msg.get("role") not in ROLES \
                    or not isinstance(msg.get("content"), str):
                raise bad(f"messages[{i}] must be {{\"role\": one of {list(ROLES)}, \"content\": string}}")
            size += len(msg["content"])
    if size > limits.max_prompt_chars:
        raise RequestError(E_TOO_LARGE, f"prompt of {size} characters is over the limit of {limits.max_prompt_chars}",
                           rid)
    options = {}
    for key, (typ, _, _, _) in NUMBER_RANGES.items():
        if key not in obj:
            continue
        val = obj[key]
        ok_type = (int,) if typ is int else (int, float)
        if isinstance(val, bool) or not isinstance(val, ok_type):
            raise bad(f"\"{key}\" must be {'an integer' if typ is int else 'a number'}, got {_describe(val)}")
        high = limits.max_tokens if key == "max_tokens" else None
        if not in_range(key, val, high):
            raise bad(f"\"{key}\" must be in {range_text(key, high)}, got {_show(val)}")
        options[key] = val
    for key, typ in OTHER_OPTIONS.items():
        if key in obj:
            val = obj[key]
            if isinstance(val, bool) and typ is not bool or not isinstance(val, typ):
                raise bad(f"\"{key}\" has the wrong type ({_describe(val)})")
            options[key] = val
    stream = options.pop("stream", stream_default)
    if "stop" in options:
        stop = options["stop"]
        stop = [stop] if isinstance(stop, str) else stop
        if not all(isinstance(s, str) and s for s in stop) or len(stop) > MAX_STOP_STRINGS:
            raise bad(f"\"stop\" must be a string or a list of at most {MAX_STOP_STRINGS} non-empty strings")
        options["stop"] = stop
    options.setdefault("max_tokens", min(limits.default_max_tokens, limits.max_tokens))
    if "json_schema" in options:
        from edge_runtime.text.json_schema import check_schema

        try:
            check_schema(options["json_schema"])
        except (ValueError, RecursionError) as exc:
            raise bad(f"\"json_schema\": {exc}") from None
    return GenerationRequest(id=rid, prompt=prompt, messages=messages, options=options, stream=stream,
                             context=context)


# ---------------------------------------------------------------------------------------------
# replies

def error_reply(request_id, code, message):
    return {"id": request_id, "done": True, "text": "", "finish_reason": "error",
            "error": {"code": code, "message": message}}


def cancelled_reply(request_id, text=""):
    return {"id": request_id, "done": True, "text": text, "finish_reason": "cancelled",
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, "timings": {}}


# Code points a broker may refuse in a UTF-8 string (mosquitto disconnects a client that sends them in a
# topic, and MQTT 5 lets it check payloads marked UTF-8): C0/C1 controls, DEL, and the noncharacters.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff"
                           + "".join(f"{chr(p + 0xfffe)}{chr(p + 0xffff)}" for p in range(0x10000, 0x110000, 0x10000))
                           + "]")


def _escape(match):
    cp = ord(match.group())
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def unsafe_char(text):
    """The first character of `text` a broker may refuse in a topic, else None."""
    match = _UNSAFE_CHARS.search(text)
    return match.group() if match else None


def dumps(obj):
    """Compact JSON text, non-ASCII kept except the characters a broker may refuse (escaped, which
    JSON allows: they can only occur inside strings); raises ValueError/TypeError for what JSON
    cannot hold."""
    return _UNSAFE_CHARS.sub(_escape, json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False))


def encode_reply(obj):
    """A reply as UTF-8 JSON bytes. A reply that cannot be encoded (it should not happen: requests
    are checked at parse time) becomes an `internal` error reply for the same id, never an exception."""
    try:
        return dumps(obj).encode("utf-8")
    except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
        rid = usable_id(obj.get("id")) if isinstance(obj, dict) else None
        log.error("reply to request %r could not be encoded (%s); sending an error instead", rid, exc)
        return dumps(encoding_failed_reply(obj, exc)).encode("utf-8")


def encoding_failed_reply(obj, exc):
    rid = usable_id(obj.get("id")) if isinstance(obj, dict) else None
    return error_reply(rid, E_INTERNAL, f"the reply could not be encoded as JSON/UTF-8 ({type(exc).__name__})")
