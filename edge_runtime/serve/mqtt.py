"""`edge-runtime serve mqtt`: answer prompts published on an MQTT broker.

Topics (prefix "edge", device id = hostname by default):
  <prefix>/<device>/request          requests (QoS 1), JSON: {"id", "prompt"|"messages", options...}
  <prefix>/<device>/cancel           {"id"}: stop that request within one token
  <prefix>/<device>/response/<id>    replies (chunks QoS 0, the final reply QoS 1); an MQTT 5 request's
                                     Response Topic replaces it, and its Correlation Data is echoed
  <prefix>/<device>/status           retained "online"; "offline" is the Last Will
  <prefix>/<device>/metrics          retained JSON, every --metrics-interval seconds
  <prefix>/fleet/request, /cancel    with --group G: requests shared among the group
                                     ($share/G/<prefix>/fleet/request), replies on <prefix>/fleet/response/<id>
Reply shapes and error codes are those of edge_runtime.serve.service; the final reply adds "device".

Threads: paho's network thread runs the callbacks (decode, validate, queue: never blocking), the
service's worker thread generates and publishes replies, the main thread publishes metrics and
handles SIGTERM. The session is persistent (clean_session=False / MQTT 5 session expiry) and
final replies are QoS 1, so a reply produced while the broker is away waits in paho's outgoing
queue and is sent after the reconnect.
"""
import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import signal
import socket
import ssl
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.board.device_config import KERNEL_HELP
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.serve.service import (E_BAD_REQUEST, E_DUPLICATE, E_TOO_LARGE, GenerationService, Limits,
                                  RequestError, error_reply, parse_request)

log = logging.getLogger("edge_runtime.serve.mqtt")

DEFAULT_PREFIX = "edge"
DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
DEFAULT_KEEPALIVE_S = 60
DEFAULT_MAX_PAYLOAD_BYTES = 128 * 1024
DEFAULT_METRICS_INTERVAL_S = 30.0
DEFAULT_HA_PREFIX = "homeassistant"
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 30.0
SESSION_EXPIRY_S = 3600          # MQTT 5: the broker keeps subscriptions and queued requests this long
OUTGOING_QUEUE_LIMIT = 1000      # QoS 1 messages paho may hold while the broker is away
ID_SCAN_BYTES = 4096             # how far into an undecodable payload an "id" is looked for
SHUTDOWN_FLUSH_S = 5.0
FATAL_CONNACK = {132: "unsupported protocol version", 133: "client identifier not valid",
                 134: "bad user name or password", 135: "not authorized", 138: "banned",
                 140: "bad authentication method"}


class MqttServeError(EdgeRuntimeError):
    """The broker refused us for a reason retrying cannot fix (login, TLS, subscription)."""


# ---------------------------------------------------------------------------------------------
# Settings and topics

_TOPIC_LEVEL_RE = re.compile(r"[^/+#$\s\x00][^/+#\s\x00]{0,127}")
_PREFIX_RE = re.compile(r"[^/+#$\s\x00](?:[^+#\s\x00]{0,126}[^/+#\s\x00])?")
_GROUP_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BROKER_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?")


def parse_broker(text, tls=False):
    """"HOST[:PORT]" or "[IPv6][:PORT]" -> (host, port); the port defaults to 1883 (8883 with TLS)."""
    match = _BROKER_RE.fullmatch(text or "")
    port = int(match.group(2)) if match and match.group(2) else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
    if not match or not 1 <= port <= 65535:
        raise ValueError(f"--broker {text!r}: expected HOST:PORT with a port from 1 to 65535 "
                         f"(e.g. localhost:1883 or [::1]:1883)")
    return match.group(1).strip("[]"), port


@dataclasses.dataclass(frozen=True)
class Topics:
    prefix: str
    device: str
    group: str = None

    @property
    def request(self):
        return f"{self.prefix}/{self.device}/request"

    @property
    def cancel(self):
        return f"{self.prefix}/{self.device}/cancel"

    @property
    def status(self):
        return f"{self.prefix}/{self.device}/status"

    @property
    def metrics(self):
        return f"{self.prefix}/{self.device}/metrics"

    @property
    def fleet_request(self):
        return f"{self.prefix}/fleet/request"

    @property
    def fleet_cancel(self):
        return f"{self.prefix}/fleet/cancel"

    def response(self, request_id, fleet=False):
        """The default reply topic of a request, or None when the id cannot be a topic level."""
        rid = str(request_id)
        if any(c in rid for c in "+#\x00"):
            return None
        return f"{self.prefix}/{'fleet' if fleet else self.device}/response/{rid}"

    def subscriptions(self):
        """(topic filter, QoS) pairs this device listens on."""
        subs = [(self.request, 1), (self.cancel, 1)]
        if self.group:
            subs += [(f"$share/{self.group}/{self.fleet_request}", 1), (self.fleet_cancel, 1)]
        return subs

    def own_topics(self):
        return {self.request, self.cancel, self.status, self.metrics, self.fleet_request, self.fleet_cancel}


def check_topics(prefix, device, group):
    if not _PREFIX_RE.fullmatch(prefix or ""):
        raise ValueError(f"--prefix {prefix!r}: expected a topic prefix without spaces, wildcards (+, #) "
                         f"or a leading $, not starting or ending with /")
    if not _TOPIC_LEVEL_RE.fullmatch(device or "") or device == "fleet":
        raise ValueError(f"--device-id {device!r}: expected one topic level (1-128 characters, no /, +, #, "
                         f"spaces or leading $), and not the reserved name 'fleet'")
    if group is not None and not _GROUP_RE.fullmatch(group):
        raise ValueError(f"--group {group!r}: expected 1-64 letters, digits, '_', '.', '-'")
    return Topics(prefix, device, group or None)


@dataclasses.dataclass
class MqttSettings:
    host: str
    port: int
    topics: Topics
    client_id: str
    mqtt_version: str = "5"                 # "5" or "3.1.1"
    keepalive: int = DEFAULT_KEEPALIVE_S
    username: str = None
    password: str = None
    tls_ca: str = None
    tls_cert: str = None
    tls_key: str = None
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    metrics_interval: float = DEFAULT_METRICS_INTERVAL_S    # 0 = no periodic metrics
    ha_discovery: bool = False
    ha_prefix: str = DEFAULT_HA_PREFIX

    @property
    def tls(self):
        return bool(self.tls_ca or self.tls_cert)

    @property
    def broker(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# ---------------------------------------------------------------------------------------------
# Decoding requests

_ID_RE = re.compile(r'(?:^|[{,])\s*"id"\s*:\s*("(?:[^"\\\x00-\x1f]|\\.){1,600}"|-?\d{1,18}(?![\d.eE]))')


def usable_id(value):
    """The id when it can be echoed (a 1-128 character string or an integer), else None."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    if isinstance(value, str) and not 0 < len(value) <= 128:
        return None
    return value


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


def check_response_topic(topic, topics: Topics):
    """None when an MQTT 5 Response Topic may carry replies, else why not."""
    if not topic or any(c in topic for c in "+#\x00"):
        return f"Response Topic {topic!r} must be a non-empty topic name without wildcards"
    if topic.startswith("$"):
        return f"Response Topic {topic!r} must not be a $ system topic"
    if topic in topics.own_topics():
        return f"Response Topic {topic!r} is one of this service's own topics"
    return None


@dataclasses.dataclass(frozen=True)
class ReplyRoute:
    """Where the replies of one request go; `reply_key` scopes duplicate ids (see service.submit)."""
    topic: str
    correlation_data: bytes = None
    request_id: object = None

    @property
    def reply_key(self):
        return self.topic


# ---------------------------------------------------------------------------------------------
# Home Assistant discovery

HA_SENSORS = [
    # key, name, value template, unit, device class, state class
    ("decode_tok_s", "Decode speed", "{{ value_json.decode_tok_s }}", "tok/s", None, "measurement"),
    ("prompt_tok_s", "Prompt speed", "{{ value_json.prompt_tok_s }}", "tok/s", None, "measurement"),
    ("queue_depth", "Queue depth", "{{ value_json.queue_depth }}", None, None, "measurement"),
    ("served", "Requests served", "{{ value_json.served }}", None, None, "total_increasing"),
    ("rss", "Memory (RSS)", "{{ (value_json.rss_bytes / 1048576) | round(1) }}", "MiB", "data_size", "measurement"),
    ("cpu_temp", "CPU temperature", "{{ value_json.cpu_temp_c }}", "°C", "temperature", "measurement"),
    ("uptime", "Uptime", "{{ value_json.uptime_s }}", "s", "duration", None),
]


def ha_discovery_messages(topics: Topics, ha_prefix, model_name, version):
    """[(config topic, payload dict)] for the metrics sensors and the busy binary sensor."""
    node = "edge_runtime_" + re.sub(r"[^A-Za-z0-9_-]", "_", topics.device)
    device = {"identifiers": [node], "name": f"edge-runtime {topics.device}", "manufacturer": "edge-runtime",
              "model": model_name, "sw_version": version}
    common = {"state_topic": topics.metrics, "availability_topic": topics.status,
              "payload_available": "online", "payload_not_available": "offline", "device": device}
    out = []
    for key, name, template, unit, device_class, state_class in HA_SENSORS:
        cfg = {"name": name, "unique_id": f"{node}_{key}", "value_template": template, **common}
        for field, value in (("unit_of_measurement", unit), ("device_class", device_class),
                             ("state_class", state_class)):
            if value is not None:
                cfg[field] = value
        out.append((f"{ha_prefix}/sensor/{node}/{key}/config", cfg))
    busy = {"name": "Busy", "unique_id": f"{node}_busy", "device_class": "running",
            "value_template": "{{ 'ON' if value_json.busy else 'OFF' }}", **common}
    out.append((f"{ha_prefix}/binary_sensor/{node}/busy/config", busy))
    return out


# ---------------------------------------------------------------------------------------------
# The server

def guarded(handler):
    """Run a callback so that an exception is logged and never reaches paho's loop or the worker."""
    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception:
            log.exception("%s failed; the service keeps running", handler.__name__)
    return run


class MqttServer:
    """Connects `service` to a broker: subscriptions, request handling, replies, status, metrics."""

    def __init__(self, service: GenerationService, settings: MqttSettings):
        self.service = service
        self.settings = settings
        self.topics = settings.topics
        self.v5 = settings.mqtt_version == "5"
        self.client = None
        self.connected = threading.Event()
        self.reconnects = 0
        self._stop = None
        self._fatal = None
        self._stopping = False
        self._ever_connected = False
        self._unacked = {}       # mid -> (MQTTMessageInfo, topic) of QoS 1 replies not yet acknowledged

    # -- connection ------------------------------------------------------------------------
    def _make_client(self):
        s = self.settings
        version = mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=s.client_id,
                             clean_session=None if self.v5 else False, protocol=version)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            try:
                client.tls_set(ca_certs=s.tls_ca, certfile=s.tls_cert, keyfile=s.tls_key)
            except (ssl.SSLError, OSError) as exc:
                raise MqttServeError(f"TLS setup with --tls-ca/--tls-cert/--tls-key failed: {exc}") from None
        client.will_set(self.topics.status, "offline", qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.max_queued_messages_set(OUTGOING_QUEUE_LIMIT)
        client.on_connect = guarded(self._on_connect)
        client.on_disconnect = guarded(self._on_disconnect)
        client.on_message = guarded(self._on_message)
        client.on_subscribe = guarded(self._on_subscribe)
        client.on_publish = guarded(self._on_publish)
        if log.isEnabledFor(logging.DEBUG):
            client.enable_logger(logging.getLogger("edge_runtime.serve.mqtt.paho"))
        return client

    def _connect_properties(self):
        if not self.v5:
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        # the broker drops bigger messages for us instead of making a small board hold them
        props.MaximumPacketSize = 4 * self.settings.max_payload_bytes + 65536
        return props

    def _connect_first(self):
        """Open the first connection, retrying with capped backoff while the broker is unreachable."""
        s = self.settings
        delay = RECONNECT_MIN_S
        while not self._stop.is_set():
            try:
                if self.v5:
                    self.client.connect(s.host, s.port, s.keepalive, clean_start=False,
                                        properties=self._connect_properties())
                else:
                    self.client.connect(s.host, s.port, s.keepalive)
                return True
            except ssl.SSLError as exc:
                raise MqttServeError(f"TLS connection to broker {s.broker} failed: "
                                     f"{getattr(exc, 'verify_message', None) or exc.reason or exc}") from None
            except OSError as exc:
                log.warning("broker %s unreachable (%s); retrying in %.1f s", s.broker, exc.strerror or exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
        return False

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            why = FATAL_CONNACK.get(reason_code.value)
            if why is not None:
                self._fail(f"broker {self.settings.broker} refused the connection: {why}"
                           + (" (check --username and --password/--password-file)" if reason_code.value in (134, 135)
                              else ""))
            else:
                log.warning("broker %s refused the connection (%s); retrying", self.settings.broker, reason_code)
            return
        if self._ever_connected:
            self.reconnects += 1
        log.info("connected to broker %s (MQTT %s, session present: %s); requests on %s%s",
                 self.settings.broker, self.settings.mqtt_version, flags.session_present, self.topics.request,
                 f" and $share/{self.topics.group}/{self.topics.fleet_request}" if self.topics.group else "")
        self._ever_connected = True
        subs = self.topics.subscriptions()
        if self.settings.ha_discovery:
            subs.append((f"{self.settings.ha_prefix}/status", 1))
        client.subscribe(subs)
        client.publish(self.topics.status, "online", qos=1, retain=True)
        self.connected.set()
        self.publish_metrics()
        if self.settings.ha_discovery:
            self.publish_ha_discovery()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        refused = [rc for rc in reason_codes if rc.is_failure]
        if refused:
            self._fail(f"broker {self.settings.broker} refused a subscription ({refused[0]}): check its ACL for "
                       f"{', '.join(t for t, _ in self.topics.subscriptions())}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if not self._stopping and self._fatal is None:
            log.warning("lost the connection to broker %s (%s); reconnecting with backoff up to %.0f s",
                        self.settings.broker, reason_code, RECONNECT_MAX_S)

    def _fail(self, message):
        self._fatal = message
        if self._stop is not None:
            self._stop.set()

    # -- incoming --------------------------------------------------------------------------
    def _on_message(self, client, userdata, msg):
        topic = msg.topic
        if topic == self.topics.request:
            self.handle_request(msg, fleet=False)
        elif topic == self.topics.fleet_request and self.topics.group:
            self.handle_request(msg, fleet=True)
        elif topic in (self.topics.cancel, self.topics.fleet_cancel):
            self.handle_cancel(msg)
        elif self.settings.ha_discovery and topic == f"{self.settings.ha_prefix}/status":
            if msg.payload.strip() == b"online":
                log.info("Home Assistant is online: republishing discovery")
                self.publish_ha_discovery()
        else:
            log.debug("ignoring a message on %s (a subscription left in the persistent session)", topic)

    def _route(self, msg, request_id, fleet):
        """(ReplyRoute or None, problem or None) for a request message."""
        props = msg.properties if self.v5 else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        problem = None
        if response_topic is not None:
            problem = check_response_topic(response_topic, self.topics)
            if problem is None:
                return ReplyRoute(response_topic, correlation, request_id), None
        if request_id is None:
            return None, problem
        topic = self.topics.response(request_id, fleet)
        return (ReplyRoute(topic, correlation, request_id) if topic else None), problem

    def handle_request(self, msg, fleet):
        try:
            req = parse_request(decode_payload(msg.payload, self.settings.max_payload_bytes), self.service.limits)
        except RequestError as err:
            return self._refuse(msg, fleet, err.request_id, err.code, err.message)
        except RecursionError:
            return self._refuse(msg, fleet, salvage_id(msg.payload), E_BAD_REQUEST, "request nested too deeply")
        route, problem = self._route(msg, req.id, fleet)
        if route is None:
            log.warning("request %r on %s: cannot reply (an id with +, # or NUL needs an MQTT 5 Response "
                        "Topic); dropped", req.id, msg.topic)
            return
        if problem is not None:
            return self._publish_final(route, error_reply(req.id, E_BAD_REQUEST, problem))
        req.context = route
        try:
            self.service.submit(req, functools.partial(self._publish_chunk, route),
                                functools.partial(self._publish_final, route))
        except RequestError as err:
            if err.code == E_DUPLICATE:
                # a QoS 1 redelivery or a reused id: the first copy is (being) answered
                log.info("request %r on %s: duplicate id, ignored (%s)", req.id, msg.topic, err.message)
                return
            return self._publish_final(route, error_reply(req.id, err.code, err.message))
        log.info("request %r queued (reply to %s, queue depth %d)", req.id, route.topic, self.service.queue_depth)

    def _refuse(self, msg, fleet, request_id, code, message):
        route, problem = self._route(msg, request_id, fleet)
        if route is None:
            log.warning("bad request on %s without a usable id, no reply possible: %s: %s%s", msg.topic, code,
                        message, f" ({problem})" if problem else "")
            return
        log.info("request %r on %s refused: %s: %s", request_id, msg.topic, code, message)
        self._publish_final(route, error_reply(request_id, code, message))

    def handle_cancel(self, msg):
        try:
            obj = decode_payload(msg.payload, self.settings.max_payload_bytes)
        except RequestError as err:
            log.warning("cancel on %s ignored: %s", msg.topic, err.message)
            return
        rid = usable_id(obj.get("id")) if isinstance(obj, dict) else None
        if rid is None:
            log.warning("cancel on %s ignored: expected {\"id\": <request id>}", msg.topic)
            return
        found = self.service.cancel(rid)
        log.info("cancel %r: %s", rid, "stopping it" if found else "no such request running or queued here")

    # -- outgoing --------------------------------------------------------------------------
    def _reply_properties(self, route):
        if not self.v5:
            return None
        props = Properties(PacketTypes.PUBLISH)
        props.PayloadFormatIndicator = 1
        props.ContentType = "application/json"
        if route.correlation_data is not None:
            props.CorrelationData = route.correlation_data
        return props

    def _publish_chunk(self, route, chunk):
        # chunks are QoS 0 and only useful live; while the broker is away the final reply carries all the text
        if self.connected.is_set():
            self.client.publish(route.topic, json.dumps(chunk, ensure_ascii=False, separators=(",", ":")),
                                qos=0, properties=self._reply_properties(route))

    def _publish_final(self, route, final):
        final = {**final, "device": self.topics.device}
        payload = json.dumps(final, ensure_ascii=False, separators=(",", ":"))
        info = self.client.publish(route.topic, payload, qos=1, properties=self._reply_properties(route))
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            log.error("reply to %r lost: %d replies already wait for the broker", route.request_id,
                      OUTGOING_QUEUE_LIMIT)
            return
        self._track(info, route.topic)
        queued = "; broker unreachable: reply queued for delivery after reconnect" \
            if info.rc == mqtt.MQTT_ERR_NO_CONN else ""
        if "error" in final:
            log.info("request %r answered with error %s%s", route.request_id, final["error"]["code"], queued)
        else:
            log.info("request %r done: %s, %s tokens, %s tok/s%s", route.request_id, final["finish_reason"],
                     (final.get("usage") or {}).get("completion_tokens", 0),
                     (final.get("timings") or {}).get("decode_tok_s", 0), queued)

    def _track(self, info, topic):
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self._unacked[info.mid] = (info, topic)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        entry = self._unacked.pop(mid, None)
        if entry is not None and reason_code.is_failure:
            log.warning("broker refused the reply on %s (%s)", entry[1], reason_code)

    def pending_replies(self):
        """QoS 1 replies not yet acknowledged by the broker."""
        for mid, (info, _) in list(self._unacked.items()):
            # a PUBACK may beat the bookkeeping in _publish_final: paho has then marked the info
            if info.rc == mqtt.MQTT_ERR_SUCCESS and info.is_published():
                self._unacked.pop(mid, None)
        return len(self._unacked)

    def metrics(self):
        from edge_runtime import __version__

        return {**self.service.status(), "device": self.topics.device, "version": __version__,
                "reconnects": self.reconnects, "time": int(time.time())}

    def publish_metrics(self):
        self.client.publish(self.topics.metrics, json.dumps(self.metrics(), separators=(",", ":")), qos=0,
                            retain=True)

    def publish_ha_discovery(self):
        from edge_runtime import __version__

        for topic, cfg in ha_discovery_messages(self.topics, self.settings.ha_prefix, self.service.model.name,
                                                __version__):
            self.client.publish(topic, json.dumps(cfg, ensure_ascii=False, separators=(",", ":")), qos=1,
                                retain=True)

    # -- lifecycle -------------------------------------------------------------------------
    def run(self, stop: threading.Event):
        """Serve until `stop` is set; then cancel the running request, publish offline, disconnect.

        Raises MqttServeError when the broker refuses us for good (login, TLS, subscription)."""
        self._stop = stop
        try:
            self.client = self._make_client()
            if self._connect_first():
                self.client.loop_start()
                self._serve_until(stop)
        finally:
            self._shutdown()
        if self._fatal is not None:
            raise MqttServeError(self._fatal)

    def _serve_until(self, stop):
        interval = self.settings.metrics_interval
        next_metrics = time.monotonic() + (interval or 0)
        while not stop.wait(0.25):
            if interval and time.monotonic() >= next_metrics:
                next_metrics = time.monotonic() + interval
                if self.connected.is_set():
                    guarded(self.publish_metrics)()

    def _shutdown(self):
        self._stopping = True
        self.service.stop(cancel_running=True, timeout=10.0)
        if self.client is None:
            return
        if self._fatal is None and self._ever_connected:
            self._track(self.client.publish(self.topics.status, "offline", qos=1, retain=True), self.topics.status)
            self._flush_replies()
        if self.client.is_connected():
            self.client.disconnect()
        self.client.loop_stop()
        if self._fatal is None and self._ever_connected:
            log.info("stopped: status offline, disconnected")

    def _flush_replies(self):
        """Give QoS 1 replies and the offline status a moment to reach the broker."""
        deadline = time.monotonic() + SHUTDOWN_FLUSH_S
        while self.pending_replies() and time.monotonic() < deadline:
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Command line

def add_arguments(p: argparse.ArgumentParser):
    p.description = ("Answer prompts published on an MQTT broker: requests on <prefix>/<device>/request, "
                     "replies on <prefix>/<device>/response/<id> (see README: MQTT protocol).")
    p.add_argument("-m", "--model", default=None,
                   help="model file (GGUF); required until the package ships a default model")
    p.add_argument("--config", default=None, metavar="BOARD",
                   help="board config name or .toml file: threads, n_ctx and [mqtt] defaults")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: board config or big cores)")
    p.add_argument("--ctx", type=int, default=None, help="context size in tokens (default: board config or 2048)")
    p.add_argument("--kernel", default=None, help=KERNEL_HELP)
    p.add_argument("--mlock", action="store_true", help="lock the model in RAM")
    p.add_argument("--no-mmap", action="store_true", help="read the model into memory instead of mapping it")
    g = p.add_argument_group("broker")
    g.add_argument("--broker", default=None, metavar="HOST:PORT",
                   help="MQTT broker (default: board config or localhost:1883; port 8883 with TLS)")
    g.add_argument("--mqtt-version", choices=("5", "3.1.1"), default="5", help="protocol version (default 5)")
    g.add_argument("--username", default=None)
    g.add_argument("--password", default=None, help="visible in the process list: prefer --password-file")
    g.add_argument("--password-file", default=None, metavar="FILE", help="file whose first line is the password")
    g.add_argument("--tls-ca", default=None, metavar="FILE", help="CA certificate(s) to verify the broker; enables TLS")
    g.add_argument("--tls-cert", default=None, metavar="FILE", help="client certificate (enables TLS)")
    g.add_argument("--tls-key", default=None, metavar="FILE", help="client private key (with --tls-cert)")
    g.add_argument("--keepalive", type=int, default=None, metavar="S", help="keepalive seconds (default 60)")
    t = p.add_argument_group("topics")
    t.add_argument("--device-id", default=None, help="topic level naming this device (default: the hostname)")
    t.add_argument("--prefix", default=None, help=f"topic prefix (default: board config or {DEFAULT_PREFIX!r})")
    t.add_argument("--group", default=None, help="also take requests from $share/GROUP/<prefix>/fleet/request")
    t.add_argument("--metrics-interval", type=float, default=DEFAULT_METRICS_INTERVAL_S, metavar="S",
                   help="seconds between retained metrics (0 = only on connect; default 30)")
    t.add_argument("--ha-discovery", action="store_true", help="publish Home Assistant discovery configs")
    t.add_argument("--ha-prefix", default=DEFAULT_HA_PREFIX, help="Home Assistant discovery prefix")
    lim = p.add_argument_group("limits")
    lim.add_argument("--queue-size", type=int, default=Limits.queue_size,
                     help=f"requests that may wait behind the running one (default {Limits.queue_size})")
    lim.add_argument("--max-prompt-chars", type=int, default=Limits.max_prompt_chars,
                     help=f"longest prompt in characters (default {Limits.max_prompt_chars})")
    lim.add_argument("--max-tokens", type=int, default=Limits.max_tokens,
                     help=f"cap on a request's max_tokens (default {Limits.max_tokens})")
    lim.add_argument("--max-payload-bytes", type=int, default=DEFAULT_MAX_PAYLOAD_BYTES,
                     help=f"largest request payload (default {DEFAULT_MAX_PAYLOAD_BYTES})")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging (with paho's) and tracebacks")


def _read_password(args):
    if args.password is not None and args.password_file is not None:
        raise ValueError("give --password or --password-file, not both")
    if args.password_file is None:
        return args.password
    try:
        with open(args.password_file, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--password-file {args.password_file}: {getattr(exc, 'strerror', None) or exc}") from None
    if not password:
        raise ValueError(f"--password-file {args.password_file}: the first line (the password) is empty")
    return password


def _check_file(option, path):
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"{option} {path}: no such file")


def _positive(option, value, low=1, high=None):
    if value < low or (high is not None and value > high):
        expected = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{option} {value}: expected {expected}")
    return value


def settings_from_args(args, board=None) -> MqttSettings:
    """Every check of the command line that needs no broker and no model."""
    mq = board.mqtt if board is not None else None
    password = _read_password(args)
    if password is not None and args.username is None:
        raise ValueError("--password/--password-file needs --username")
    for option, path in (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        _check_file(option, path)
    if args.tls_key and not args.tls_cert:
        raise ValueError("--tls-key needs --tls-cert")
    tls = bool(args.tls_ca or args.tls_cert)
    host, port = parse_broker(args.broker or (mq.broker if mq else "localhost"), tls)
    device = args.device_id if args.device_id is not None else socket.gethostname().split(".")[0]
    prefix = args.prefix if args.prefix is not None else (mq.prefix if mq else DEFAULT_PREFIX)
    group = args.group if args.group is not None else (mq.group or None if mq else None)
    topics = check_topics(prefix, device, group or None)
    keepalive = args.keepalive if args.keepalive is not None else (mq.keepalive if mq else DEFAULT_KEEPALIVE_S)
    if args.metrics_interval < 0:
        raise ValueError(f"--metrics-interval {args.metrics_interval}: expected seconds >= 0")
    if not _PREFIX_RE.fullmatch(args.ha_prefix):
        raise ValueError(f"--ha-prefix {args.ha_prefix!r}: expected a topic prefix without wildcards")
    return MqttSettings(
        host=host, port=port, topics=topics, client_id=f"edge-runtime-{device}", mqtt_version=args.mqtt_version,
        keepalive=_positive("--keepalive", keepalive, 1, 65535), username=args.username, password=password,
        tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
        max_payload_bytes=_positive("--max-payload-bytes", args.max_payload_bytes, 256),
        metrics_interval=args.metrics_interval, ha_discovery=args.ha_discovery, ha_prefix=args.ha_prefix)


def limits_from_args(args) -> Limits:
    return Limits(max_prompt_chars=_positive("--max-prompt-chars", args.max_prompt_chars),
                  max_tokens=_positive("--max-tokens", args.max_tokens),
                  default_max_tokens=min(Limits.default_max_tokens, args.max_tokens),
                  queue_size=_positive("--queue-size", args.queue_size, 1, 10000))


def load_model(args, board=None):
    from edge_runtime.serve.service import load_model_for_board

    return load_model_for_board(args.model, board, threads=args.threads, n_ctx=args.ctx, no_mmap=args.no_mmap,
                                mlock=args.mlock, kernel=args.kernel)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event):
    """SIGTERM and SIGINT set `stop` (the server then shuts down cleanly) instead of killing us."""
    def handler(signum, frame):
        log.info("%s: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _configure_logging(debug):
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(args) -> int:
    _configure_logging(getattr(args, "debug", False))
    board = None
    if args.config is not None:
        from edge_runtime.board.device_config import find_config

        board = find_config(args.config)
    settings = settings_from_args(args, board)
    limits = limits_from_args(args)
    model = load_model(args, board)
    service = GenerationService(model, limits).start()
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            MqttServer(service, settings).run(stop)  # stops the service on the way out
    finally:
        model.close()
    return 0
