"""The MQTT server: connects a GenerationService to a broker (subscriptions, requests, replies,
cancels, fleet claims, status, metrics). Topics and the reply namespace: edge_runtime.serve.topics;
request and reply shapes: edge_runtime.serve.protocol; the command line: edge_runtime.serve.mqtt_cli.

Every request message gets exactly one final reply: on its MQTT 5 Response Topic when that lies in
the reply namespace, else on the default reply topic <prefix>/<device>/response/<id>, else (no
usable id) on <prefix>/<device>/errors. A request with a Response Topic is answered with one
complete message unless it asks "stream": true; without one, replies stream by default.

Threads: paho's network thread runs the callbacks (decode, validate, queue: never blocking), the
service's worker thread generates and publishes replies, the main thread publishes metrics, serves
fleet requests whose claim is overdue and handles SIGTERM. The session is persistent
(clean_session=False / MQTT 5 session expiry) and final replies are QoS 1, so a reply produced while
the broker is away waits in paho's outgoing queue and is sent after the reconnect.
"""
import dataclasses
import functools
import json
import logging
import ssl
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.serve.fleet import FleetClaims, claim_key
from edge_runtime.serve.ha_discovery import DEFAULT_HA_PREFIX, ha_discovery_messages
from edge_runtime.serve.protocol import (E_BAD_REQUEST, E_DUPLICATE, E_SHUTDOWN, RequestError, encode_reply, error_reply,
                                         parse_request, usable_id)
from edge_runtime.serve.service import GenerationService
from edge_runtime.serve.topics import Topics, decode_payload, fingerprint

log = logging.getLogger("edge_runtime.serve.mqtt")

DEFAULT_KEEPALIVE_S = 60
DEFAULT_MAX_PAYLOAD_BYTES = 128 * 1024
DEFAULT_METRICS_INTERVAL_S = 30.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 30.0
UNREACHABLE_HINT_AFTER = 3       # failed first connects before the plain "cannot reach" message
UNREACHABLE_HINT_EVERY = 20      # ... repeated this often while it goes on
SESSION_EXPIRY_S = 3600          # MQTT 5: the broker keeps subscriptions and queued requests this long
OUTGOING_QUEUE_LIMIT = 1000      # QoS 1 messages paho may hold while the broker is away
SHUTDOWN_FLUSH_S = 5.0
FATAL_CONNACK = {132: "unsupported protocol version", 133: "client identifier not valid",
                 134: "bad user name or password", 135: "not authorized", 138: "banned",
                 140: "bad authentication method"}


class MqttServeError(EdgeRuntimeError):
    """The broker refused us for a reason retrying cannot fix (login, TLS, subscription)."""


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


@dataclasses.dataclass(frozen=True)
class ReplyRoute:
    """Where the replies of one request go; `reply_key` scopes its id (duplicates, cancels)."""
    topic: str
    correlation_data: bytes = None
    request_id: object = None
    kind: str = "default"                   # "default", "response_topic" or "errors"

    @property
    def reply_key(self):
        return self.topic


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
        self.claims = FleetClaims(self.topics.device)
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
        """Open the first connection, retrying with capped backoff while the broker is unreachable;
        after a few failures, say plainly which address is unreachable and how to stop."""
        s = self.settings
        delay, failures = RECONNECT_MIN_S, 0
        while not self._stop.is_set():
            try:
                if self.v5:
                    self.client.connect(s.host, s.port, s.keepalive, clean_start=False,
                                        properties=self._connect_properties())
                else:
                    self.client.connect(s.host, s.port, s.keepalive)
                if failures >= UNREACHABLE_HINT_AFTER:
                    log.info("broker %s reachable after %d failed attempts", s.broker, failures)
                return True
            except ssl.SSLError as exc:
                raise MqttServeError(f"TLS connection to broker {s.broker} failed: "
                                     f"{getattr(exc, 'verify_message', None) or exc.reason or exc}") from None
            except OSError as exc:
                failures += 1
                reason = exc.strerror or str(exc) or type(exc).__name__
                if failures == UNREACHABLE_HINT_AFTER or (failures > UNREACHABLE_HINT_AFTER and
                                                           failures % UNREACHABLE_HINT_EVERY == 0):
                    log.error("cannot reach the MQTT broker at %s (%s) after %d attempts: is the broker running "
                              "there, and is --broker HOST:PORT (or the board config's [mqtt] broker) right? "
                              "Still retrying, every %.0f s at most; stop with Ctrl-C or SIGTERM.",
                              s.broker, reason, failures, RECONNECT_MAX_S)
                elif failures < UNREACHABLE_HINT_AFTER:
                    log.warning("broker %s unreachable (%s); retrying in %.1f s", s.broker, reason, delay)
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
        log.info("connected to broker %s (MQTT %s, session present: %s); requests on %s%s; replies to Response "
                 "Topics under %s", self.settings.broker, self.settings.mqtt_version, flags.session_present,
                 self.topics.request,
                 f" and $share/{self.topics.group}/{self.topics.fleet_request}" if self.topics.group else "",
                 ", ".join(self.topics.namespace))
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
        topic, t = msg.topic, self.topics
        if topic == t.request:
            self.handle_request(msg, fleet=False)
        elif topic == t.fleet_request and t.group:
            self.handle_request(msg, fleet=True)
        elif topic in (t.cancel, t.fleet_cancel):
            self.handle_cancel(msg, fleet=topic == t.fleet_cancel)
        elif topic == t.fleet_claim and t.group:
            self.handle_claim(msg)
        elif self.settings.ha_discovery and topic == f"{self.settings.ha_prefix}/status":
            if msg.payload.strip() == b"online":
                log.info("Home Assistant is online: republishing discovery")
                self.publish_ha_discovery()
        else:
            log.debug("ignoring a message on %s (a subscription left in the persistent session)", topic)

    def _properties(self, msg):
        props = msg.properties if self.v5 else None
        if props is None:
            return None, None
        return getattr(props, "ResponseTopic", None), getattr(props, "CorrelationData", None)

    def _route(self, msg, request_id, fleet):
        """(ReplyRoute, problem or None) of a request message: its Response Topic when allowed, else
        the default reply topic of its id, else the errors topic."""
        response_topic, correlation = self._properties(msg)
        problem = None
        if response_topic is not None:
            problem = self.topics.check_response_topic(response_topic)
            if problem is None:
                return ReplyRoute(response_topic, correlation, request_id, "response_topic"), None
        topic = self.topics.response(request_id, fleet) if request_id is not None else None
        if topic is not None:
            return ReplyRoute(topic, correlation, request_id, "default"), problem
        return ReplyRoute(self.topics.errors(fleet), correlation, request_id, "errors"), problem

    def handle_request(self, msg, fleet):
        response_topic, correlation = self._properties(msg)
        try:
            obj = decode_payload(msg.payload, self.settings.max_payload_bytes)
            req = parse_request(obj, self.service.limits, stream_default=response_topic is None)
        except RequestError as err:
            return self._refuse(msg, fleet, err.request_id, err.code, err.message)
        route, problem = self._route(msg, req.id, fleet)
        if problem is None and route.kind == "errors":
            problem = (f"id {req.id!r} cannot be a topic level (it holds +, #, a control character or a "
                       f"noncharacter): use another id or an MQTT 5 Response Topic")
        if problem is not None:
            return self._refuse(msg, fleet, req.id, E_BAD_REQUEST, problem)
        req.context = route
        req.fingerprint = fingerprint(msg.payload, correlation)
        if fleet:
            return self._claim(req)
        self._submit(req, msg.topic)

    def _submit(self, req, topic):
        route = req.context
        try:
            self.service.submit(req, functools.partial(self._publish_chunk, route),
                                functools.partial(self._publish_final, route))
        except RequestError as err:
            if err.code == E_DUPLICATE and err.same_request:
                # a QoS 1 redelivery or a client's retry of the very same request: the first copy is answered
                log.info("request %r on %s: a repeat of a request already received, ignored", req.id, topic)
                return
            log.info("request %r on %s refused: %s: %s", req.id, topic, err.code, err.message)
            return self._publish_final(route, error_reply(req.id, err.code, err.message))
        log.info("request %r queued (reply to %s, queue depth %d)", req.id, route.topic, self.service.queue_depth)

    def _refuse(self, msg, fleet, request_id, code, message):
        route, problem = self._route(msg, request_id, fleet)
        if problem is not None and problem not in message:
            message = f"{message}; also: {problem}"
        log.info("request %r on %s refused: %s: %s (reply on %s)", request_id, msg.topic, code, message, route.topic)
        self._publish_final(route, error_reply(request_id, code, message))

    def handle_cancel(self, msg, fleet):
        """Cancel the request of the same requester: same id and same reply topic (the cancel's own
        MQTT 5 Response Topic, else the id's default reply topic)."""
        try:
            obj = decode_payload(msg.payload, self.settings.max_payload_bytes)
        except RequestError as err:
            log.warning("cancel on %s ignored: %s", msg.topic, err.message)
            return
        rid = usable_id(obj.get("id")) if isinstance(obj, dict) else None
        if rid is None:
            log.warning("cancel on %s ignored: expected {\"id\": <request id>}", msg.topic)
            return
        response_topic, _ = self._properties(msg)
        reply_key = response_topic if response_topic is not None else self.topics.response(rid, fleet)
        if self.service.cancel(rid, reply_key):
            log.info("cancel %r (reply topic %s): stopping it", rid, reply_key)
        else:
            log.info("cancel %r (reply topic %s) ignored: no request with this id and reply topic is running or "
                     "queued here (only the requester, naming the same reply topic, may cancel)", rid, reply_key)

    # -- fleet -----------------------------------------------------------------------------
    def _claim(self, req):
        route = req.context
        decision = self.claims.propose(claim_key(route.topic, req.id), req.fingerprint.hex(), req)
        if decision[0] == "claim":
            self.client.publish(self.topics.fleet_claim, encode_reply(decision[1]), qos=1)
            return
        self._lost(req, decision[1], decision[2])

    def _lost(self, req, device, same):
        if same:
            log.info("fleet request %r: a repeat of a request claimed by %s, not answered again", req.id, device)
            return
        message = (f"request id {req.id!r} is already in use on reply topic {req.context.topic} by another fleet "
                   f"request (claimed by {device}); send a fresh id")
        log.info("fleet request %r refused: %s: %s", req.id, E_DUPLICATE, message)
        self._publish_final(req.context, error_reply(req.id, E_DUPLICATE, message))

    def handle_claim(self, msg):
        try:
            outcome = self.claims.on_claim(json.loads(msg.payload))
        except ValueError as exc:
            log.warning("ignoring a malformed claim on %s: %s", msg.topic, exc)
            return
        if outcome is None:
            return
        req = outcome[0]
        if outcome[1] == "serve":
            self._submit(req, self.topics.fleet_request)
        else:
            self._lost(req, outcome[2], outcome[3])

    def serve_overdue_claims(self):
        for req in self.claims.overdue():
            log.warning("fleet request %r: the claim did not come back within %.0f s; serving it here",
                        req.id, self.claims.wait_s)
            self._submit(req, self.topics.fleet_request)

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
            self.client.publish(route.topic, encode_reply(chunk), qos=0, properties=self._reply_properties(route))

    def _publish_final(self, route, final):
        final = {**final, "device": self.topics.device}
        info = self.client.publish(route.topic, encode_reply(final), qos=1, properties=self._reply_properties(route))
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            log.error("reply to %r lost: %d replies already wait for the broker", route.request_id,
                      OUTGOING_QUEUE_LIMIT)
            return
        self._track(info, route.topic)
        queued = "; broker unreachable: reply queued for delivery after reconnect" \
            if info.rc == mqtt.MQTT_ERR_NO_CONN else ""
        if "error" in final:
            log.info("request %r answered with error %s on %s%s", route.request_id, final["error"]["code"],
                     route.topic, queued)
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
        self.client.publish(self.topics.metrics, encode_reply(self.metrics()), qos=0, retain=True)

    def publish_ha_discovery(self):
        from edge_runtime import __version__

        for topic, cfg in ha_discovery_messages(self.topics, self.settings.ha_prefix, self.service.model.name,
                                                __version__):
            self.client.publish(topic, encode_reply(cfg), qos=1, retain=True)

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
            if self.claims.waiting:
                guarded(self.serve_overdue_claims)()
            if interval and time.monotonic() >= next_metrics:
                next_metrics = time.monotonic() + interval
                if self.connected.is_set():
                    guarded(self.publish_metrics)()

    def _shutdown(self):
        self._stopping = True
        self.service.stop(cancel_running=True, timeout=10.0)
        if self.client is None:
            return
        for req in self.claims.drain():  # fleet requests still waiting for their claim: answered too
            self._publish_final(req.context, error_reply(req.id, E_SHUTDOWN, "the service is shutting down"))
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
