"""Home Assistant MQTT discovery messages: topic parsing, payload decoding, `~` and abbreviations.

Topics are `<prefix>/<component>/[<node_id>/]<object_id>/config`. A payload is one JSON object per
entity, or (device discovery, `<prefix>/device/<id>/config`) a device with its entities under
`components` (`cmps`). An empty payload removes what the topic announced.
"""
import dataclasses
import json
import re

from edge_runtime.assist.abbreviations import expand

TOPIC_BASE = "~"
# as Home Assistant matches the part after the prefix
TOPIC_RE = re.compile(r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config")
COMPONENT_ID_RE = re.compile(r"[a-zA-Z0-9_-]+")
# options a device-discovery payload shares with all of its components unless a component sets them
SHARED_OPTIONS = ("availability", "availability_mode", "availability_template", "availability_topic",
                  "command_topic", "encoding", "payload_available", "payload_not_available", "qos",
                  "state_topic", TOPIC_BASE)
MAX_PAYLOAD_BYTES = 256 * 1024


class DiscoveryError(ValueError):
    """A discovery message that cannot be used; the message names the topic and the reason."""


@dataclasses.dataclass
class Discovered:
    key: str                # stable identity of the announced entity (topic, plus component id)
    topic: str
    component: str
    object_id: str
    node_id: str = None
    config: dict = None     # None: the entity is removed


def parse_topic(topic, prefix=None):
    """(prefix, component, node_id, object_id) of a discovery topic, or None if it is not one.
    Without `prefix` the first topic level is taken as the prefix."""
    if not isinstance(topic, str):
        return None
    if prefix is None:
        prefix, sep, rest = topic.partition("/")
        if not sep:
            return None
    else:
        if not topic.startswith(prefix + "/"):
            return None
        rest = topic[len(prefix) + 1:]
    match = TOPIC_RE.fullmatch(rest)
    if not match:
        return None
    return prefix, match.group("component"), match.group("node_id"), match.group("object_id")


def decode_payload(topic, payload):
    """The JSON object of a discovery payload; None for an empty payload (a removal)."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return json.loads(json.dumps(payload))        # a private deep copy, JSON types only
    if isinstance(payload, (bytes, bytearray)):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise DiscoveryError(f"{topic}: payload of {len(payload)} bytes is larger than {MAX_PAYLOAD_BYTES}")
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DiscoveryError(f"{topic}: payload is not UTF-8 ({exc})") from None
    if not isinstance(payload, str):
        raise DiscoveryError(f"{topic}: expected a JSON object, got {type(payload).__name__}")
    if payload == "":
        return None
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise DiscoveryError(f"{topic}: payload is not JSON ({exc}): {payload[:120]!r}") from None
    if not isinstance(value, dict):
        raise DiscoveryError(f"{topic}: expected a JSON object, got {type(value).__name__}: {payload[:120]!r}")
    return value


def substitute_base(config):
    """Apply and remove the `~` base topic the way Home Assistant does: in every option whose key
    ends with "topic", a value starting with `~` gets base + rest, a value ending with `~` gets
    rest + base (both tests look at the original value, so "~x~" becomes "~x" + base), and the
    same for the `topic` of each availability entry."""
    base = config.pop(TOPIC_BASE)
    base = "" if base is None else str(base)
    for key, value in list(config.items()):
        if isinstance(value, str) and value and key.endswith("topic"):
            if value[0] == TOPIC_BASE:
                config[key] = f"{base}{value[1:]}"
            if value[-1] == TOPIC_BASE:
                config[key] = f"{value[:-1]}{base}"
    availability = config.get("availability")
    if availability:
        for item in availability if isinstance(availability, list) else [availability]:
            if not isinstance(item, dict):
                continue
            topic = str(item.get("topic"))
            if not topic:
                continue
            if topic[0] == TOPIC_BASE:
                item["topic"] = f"{base}{topic[1:]}"
            if topic[-1] == TOPIC_BASE:
                item["topic"] = f"{topic[:-1]}{base}"
    return config


def normalize(config):
    """Full keys and `~` substituted, in place."""
    expand(config)
    if TOPIC_BASE in config:
        substitute_base(config)
    return config


def read_message(topic, payload, prefix=None):
    """What one discovery message announces: a list of Discovered (config None = removed).
    Raises DiscoveryError for a topic or payload that cannot be used."""
    parsed = parse_topic(topic, prefix)
    if parsed is None:
        raise DiscoveryError(f"{topic!r} is not a discovery topic "
                             f"(<prefix>/<component>/[<node_id>/]<object_id>/config, ids of [a-zA-Z0-9_-])")
    _, component, node_id, object_id = parsed
    config = decode_payload(topic, payload)
    if component != "device":
        if config is not None:
            normalize(config)
        return [Discovered(topic, topic, component, object_id, node_id, config)]
    if config is None:
        return []       # the caller removes everything this topic announced
    expand(config)
    components = config.get("components")
    if not isinstance(components, dict) or not components:
        raise DiscoveryError(f"{topic}: a device discovery payload needs a 'components' (cmps) object")
    if not isinstance(config.get("device"), dict):
        raise DiscoveryError(f"{topic}: a device discovery payload needs a 'device' (dev) object")
    found = []
    for comp_id, comp in components.items():
        if not COMPONENT_ID_RE.fullmatch(str(comp_id)) or not isinstance(comp, dict):
            raise DiscoveryError(f"{topic}: component {comp_id!r} must be an object under an id of [a-zA-Z0-9_-]")
        comp = expand(dict(comp))
        platform = comp.pop("platform", None)
        if not isinstance(platform, str) or not re.fullmatch(r"\w+", platform):
            raise DiscoveryError(f"{topic}: component {comp_id!r} needs a 'platform' (p), got {platform!r}")
        key = f"{topic}#{comp_id}"
        if not comp:                        # {"p": "sensor"} alone removes the component
            found.append(Discovered(key, topic, platform, str(comp_id), node_id, None))
            continue
        merged = {k: config[k] for k in SHARED_OPTIONS if k in config and k not in comp}
        merged.update(comp)
        merged["device"] = json.loads(json.dumps(config["device"]))
        if "origin" in config:
            merged["origin"] = config["origin"]
        if TOPIC_BASE in merged:
            substitute_base(merged)
        found.append(Discovered(key, topic, platform, str(comp_id), node_id, merged))
    return found
