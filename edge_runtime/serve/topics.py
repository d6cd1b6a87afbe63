"""MQTT conventions of the service: the board's topics, where replies may be published (the reply
namespace), and the payload encoding.

Topics (prefix "edge", device id = hostname by default):
  <prefix>/<device>/request           requests (QoS 1)
  <prefix>/<device>/cancel            {"id"}: stop the requester's request
  <prefix>/<device>/response/<id>     default replies
  <prefix>/<device>/errors            error replies to requests that have no reply topic (no usable id)
  <prefix>/<device>/status, /metrics  retained
  <prefix>/fleet/request, /cancel     with a group: requests shared by the group's boards
  <prefix>/fleet/response/<id>        default replies to group requests; <prefix>/fleet/errors likewise
  <prefix>/fleet/claim                boards of a group announce which one answers a request

Reply namespace. The board publishes replies only (a) on its default reply topics above and (b) on
an MQTT 5 Response Topic that matches one of the reply-namespace filters — by default only
`<prefix>/reply/#` — and lies outside the board's own topic tree (`<prefix>/<device>/...`,
`<prefix>/fleet/...`). A refused Response Topic is answered bad_request on the default reply topic.
"""
import dataclasses
import hashlib
import json
import re

from edge_runtime.serve.protocol import E_BAD_REQUEST, E_TOO_LARGE, RequestError, unsafe_char, usable_id

FLEET = "fleet"
REPLY = "reply"
RESERVED_DEVICE_IDS = (FLEET, REPLY)
ID_SCAN_BYTES = 4096             # how far into an undecodable payload an "id" is looked for

_TOPIC_LEVEL_RE = re.compile(r"[^/+#$\s\x00][^/+#\s\x00]{0,127}")
PREFIX_RE = re.compile(r"[^/+#$\s\x00](?:[^+#\s\x00]{0,126}[^/+#\s\x00])?")
_GROUP_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def topic_matches(topic_filter, topic):
    """Whether an MQTT topic name matches a topic filter (+ one level, # the rest, the parent too)."""
    flt, name = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(flt):
        if level == "#":
            return True
        if i >= len(name):
            return False
        if level != "+" and level != name[i]:
            return False
    return len(flt) == len(name)


def check_filter(text, option="--reply-namespace"):
    """A topic filter usable as a reply namespace, else ValueError."""
    levels = (text or "").split("/")
    ok = bool(text) and not text.startswith("$") and "\x00" not in text and not any(c.isspace() for c in text)
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
            ok = False
    if not ok:
        raise ValueError(f"{option} {text!r}: expected an MQTT topic filter (levels separated by /, + for one "
                         f"level, # last for the rest), not starting with $ and without spaces")
    return text


@dataclasses.dataclass(frozen=True)
class Topics:
    prefix: str
    device: str
    group: str = None
    reply_namespace: tuple = None      # topic filters for Response Topics; None = (<prefix>/reply/#,)

    def _dev(self, leaf):
        return f"{self.prefix}/{self.device}/{leaf}"

    request = property(lambda self: self._dev("request"))
    cancel = property(lambda self: self._dev("cancel"))
    status = property(lambda self: self._dev("status"))
    metrics = property(lambda self: self._dev("metrics"))
    fleet_request = property(lambda self: f"{self.prefix}/{FLEET}/request")
    fleet_cancel = property(lambda self: f"{self.prefix}/{FLEET}/cancel")
    fleet_claim = property(lambda self: f"{self.prefix}/{FLEET}/claim")

    @property
    def namespace(self):
        return self.reply_namespace or (f"{self.prefix}/{REPLY}/#",)

    def errors(self, fleet=False):
        return f"{self.prefix}/{FLEET if fleet else self.device}/errors"

    def response(self, request_id, fleet=False):
        """The default reply topic of a request, or None when the id cannot be a topic name (a
        wildcard, or a character brokers refuse in topics: controls, noncharacters)."""
        rid = str(request_id)
        if any(c in rid for c in "+#") or unsafe_char(rid) is not None:
            return None
        return f"{self.prefix}/{FLEET if fleet else self.device}/response/{rid}"

    def subscriptions(self):
        """(topic filter, QoS) pairs this device listens on."""
        subs = [(self.request, 1), (self.cancel, 1)]
        if self.group:
            subs += [(f"$share/{self.group}/{self.fleet_request}", 1), (self.fleet_cancel, 1),
                     (self.fleet_claim, 1)]
        return subs

    def own_tree(self, topic):
        """Whether `topic` lies in the board's own topic tree (its and the fleet's topics, the default
        reply topics of every request)."""
        return any(topic == root or topic.startswith(root + "/")
                   for root in (f"{self.prefix}/{self.device}", f"{self.prefix}/{FLEET}"))

    def check_response_topic(self, topic):
        """None when an MQTT 5 Response Topic may carry replies, else why not (for the requester)."""
        if not topic or any(c in topic for c in "+#") or unsafe_char(topic) is not None:
            return f"Response Topic {topic!r} must be a non-empty topic name without wildcards or control characters"
        if topic.startswith("$"):
            return f"Response Topic {topic!r} must not be a $ system topic"
        if self.own_tree(topic):
            return (f"Response Topic {topic!r} is in this board's own topics ({self.prefix}/{self.device}/..., "
                    f"{self.prefix}/{FLEET}/...): requests, cancels, status and other requests' replies")
        if not any(topic_matches(f, topic) for f in self.namespace):
            return (f"Response Topic {topic!r} is outside the reply namespace {', '.join(self.namespace)} "
                    f"(the board's --reply-namespace)")
        return None


def check_topics(prefix, device, group=None, reply_namespace=None):
    if not PREFIX_RE.fullmatch(prefix or ""):
        raise ValueError(f"--prefix {prefix!r}: expected a topic prefix without spaces, wildcards (+, #) "
                         f"or a leading $, not starting or ending with /")
    if not _TOPIC_LEVEL_RE.fullmatch(device or "") or device in RESERVED_DEVICE_IDS:
        raise ValueError(f"--device-id {device!r}: expected one topic level (1-128 characters, no /, +, #, "
                         f"spaces or leading $), and not a reserved name ({', '.join(RESERVED_DEVICE_IDS)})")
    if group is not None and not _GROUP_RE.fullmatch(group):
        raise ValueError(f"--group {group!r}: expected 1-64 letters, digits, '_', '.', '-'")
    namespace = tuple(check_filter(f) for f in reply_namespace) if reply_namespace else None
    return Topics(prefix, device, group or None, namespace)


# ---------------------------------------------------------------------------------------------
# payloads

_ID_RE = re.compile(r'(?:^|[{,])\s*"id"\s*:\s*("(?:[^"\\\x00-\x1f]|\\.){1,600}"|-?\d{1,19}(?![\d.eE]))')


def salvage_id(payload: bytes):
    """The request id of a payload that did not decode, when its first bytes show one."""
    head = payload[:ID_SCAN_BYTES].decode("utf-8", "replace")
    match = _ID_RE.search(head)
    if not match:
        return None
    try:
        return usable_id(json.loads(match.group(1)))
    except ValueError:
        return None


def decode_payload(payload: bytes, max_bytes: int):
    """bytes -> the decoded JSON value; RequestError (carrying the id where one shows) otherwise."""
    if len(payload) > max_bytes:
        raise RequestError(E_TOO_LARGE, f"payload of {len(payload)} bytes is over the limit of {max_bytes} bytes",
                           salvage_id(payload))
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(E_BAD_REQUEST, f"payload is not valid UTF-8 (byte 0x{payload[exc.start]:02x} at "
                                          f"offset {exc.start})", salvage_id(payload)) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestError(E_BAD_REQUEST, "payload JSON is nested too deeply", salvage_id(payload)) from None
    except ValueError as exc:
        raise RequestError(E_BAD_REQUEST, f"payload is not JSON: {exc}", salvage_id(payload)) from None


def fingerprint(payload: bytes, correlation_data=None):
    """What makes two deliveries the same request: its bytes and its Correlation Data."""
    h = hashlib.sha256(payload)
    h.update(b"\x00" + (correlation_data or b""))
    return h.digest()[:16]

