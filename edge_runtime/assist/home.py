"""The home registry: entities announced by Home Assistant MQTT discovery, with their live state.

    home = Home.from_broker("localhost:1883")   # retained configs + retained states, then live updates
    home = Home.from_file("home.json")          # {topic: payload} as retained on a broker
    home.entities["light.landing"].state        # "on"

Entity ids are `<component>.<object_id>` (the config's `default_entity_id`/`object_id` when given,
else the topic's object id), slugified; when two configs claim one id, the later one gets `_2`
(then `_3`, ...), and an entity keeps its id while its config changes.

Threads: paho's network thread applies messages under the registry lock; `entities` is a snapshot
dict replaced on every registry change, so readers on other threads never see it half-updated.
Callbacks registered with `on_change` run on that thread; an exception in one is logged.
"""
import json
import logging
import os
import ssl
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.assist import discovery, entities, states
from edge_runtime.errors import EdgeRuntimeError

log = logging.getLogger("edge_runtime.assist.home")

DEFAULT_PREFIX = "homeassistant"
CONNECT_TIMEOUT_S = 10.0
SETTLE_LIMIT_S = 30.0           # longest from_broker waits for retained messages to stop arriving
PUBLISH_TIMEOUT_S = 10.0
PAYLOAD_CACHE_LIMIT = 20000     # last payload per state topic, fed to entities that start listening late
KEEPALIVE_S = 30


class BrokerUnavailable(ConnectionError):
    """The MQTT broker could not be reached or refused the connection; the message names it."""


class PublishError(EdgeRuntimeError):
    """A command could not be published (no broker for this home, not connected, not acknowledged)."""


def _is_wildcard(topic_filter):
    return "+" in topic_filter or "#" in topic_filter


def _guarded(func):
    def run(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception:      # a bug in one handler must not kill paho's network thread
            log.exception("error in MQTT handler %s", func.__name__)
    return run


class Home:
    """Entities from Home Assistant MQTT discovery configs; see the module docstring."""

    def __init__(self, prefix=DEFAULT_PREFIX):
        self.prefix = prefix
        self.version = 0
        self._lock = threading.RLock()
        self._entities = {}        # entity_id -> Entity; replaced, never mutated
        self._by_key = {}          # discovery key -> entity_id
        self._base_id = {}         # discovery key -> the entity id it asked for
        self._topic_keys = {}      # discovery topic -> keys it announced
        self._routes = {}          # state topic filter -> [(entity_id, role)]
        self._payloads = {}        # state topic -> last payload (bytes)
        self._callbacks = []
        self._client = None
        self.broker = None
        self._connected = threading.Event()
        self._connect_error = None
        self._closing = False
        self._pending_subs = set()
        self._discovery_subscribed = threading.Event()
        self._discovery_mid = None
        self._last_message = time.monotonic()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_configs(cls, configs, prefix=None):
        """A home from {topic: payload}: discovery topics (ending in /config) with a config object,
        its JSON text or "" (nothing); any other topic is a retained state payload. Configs that
        cannot be used are skipped with a warning. `prefix` None takes each topic's first level."""
        if not isinstance(configs, dict):
            raise ValueError(f"expected a mapping of discovery topic to config, got {type(configs).__name__}")
        home = cls(prefix)
        state_items = []
        for topic, payload in configs.items():
            if isinstance(topic, str) and topic.endswith("/config"):
                home.feed(topic, payload)
            else:
                state_items.append((topic, payload))
        for topic, payload in state_items:
            if not isinstance(topic, str) or not topic:
                log.warning("skipping state entry with a key that is not a topic: %r", topic)
                continue
            if not isinstance(payload, (str, bytes)):
                payload = json.dumps(payload)
            home.feed(topic, payload)
        return home

    @classmethod
    def from_file(cls, path, prefix=None):
        """A home from a JSON file holding {topic: payload}, as `from_configs` takes it."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise EdgeRuntimeError(f"home file {os.fspath(path)!r} does not exist") from None
        except OSError as exc:
            raise EdgeRuntimeError(f"home file {os.fspath(path)!r} cannot be read: {exc.strerror or exc}") from None
        try:
            configs = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"home file {os.fspath(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(configs, dict):
            raise ValueError(f"home file {os.fspath(path)!r}: expected a JSON object of "
                             f"{{discovery topic: config}}, got {type(configs).__name__}")
        return cls.from_configs(configs, prefix=prefix)

    @classmethod
    def from_broker(cls, broker, username=None, password=None, tls_ca=None, tls_cert=None, tls_key=None,
                    tls_insecure=False, prefix=DEFAULT_PREFIX, client_id=None, settle=1.0):
        """Connect to `broker` ("HOST[:PORT]"), collect the retained discovery configs and states
        (until `settle` seconds pass without a message, at most SETTLE_LIMIT_S), then keep following
        additions, changes, removals and state changes until `close()`."""
        from edge_runtime.assist.mqtt_service import parse_broker

        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "+#") or prefix.endswith("/"):
            raise ValueError(f"discovery prefix {prefix!r}: expected a topic prefix without wildcards "
                             f"or a trailing /")
        host, port = parse_broker(broker, tls=bool(tls_ca or tls_cert or tls_insecure))
        home = cls(prefix)
        home._connect(host, port, username, password, tls_ca, tls_cert, tls_key, tls_insecure, client_id)
        try:
            home._settle(max(0.0, float(settle)))
        except BaseException:
            home.close()
            raise
        return home

    # -- MQTT connection ---------------------------------------------------------------------
    def _connect(self, host, port, username, password, tls_ca, tls_cert, tls_key, tls_insecure, client_id):
        self.broker = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"edge-assist-{uuid.uuid4().hex[:12]}",
                             clean_session=True, protocol=mqtt.MQTTv311)
        if username is not None:
            client.username_pw_set(username, password)
        if tls_ca or tls_cert or tls_insecure:
            try:
                client.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key,
                               cert_reqs=ssl.CERT_NONE if tls_insecure else ssl.CERT_REQUIRED)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise BrokerUnavailable(f"TLS setup for MQTT broker {self.broker} failed "
                                        f"(tls_ca={tls_ca!r}, tls_cert={tls_cert!r}, tls_key={tls_key!r}): {exc}") from None
            if tls_insecure:
                client.tls_insecure_set(True)
        client.connect_timeout = CONNECT_TIMEOUT_S / 2
        client.reconnect_delay_set(0.5, 30)
        client.on_connect = _guarded(self._on_connect)
        client.on_disconnect = _guarded(self._on_disconnect)
        client.on_message = _guarded(self._on_message)
        client.on_subscribe = _guarded(self._on_subscribe)
        try:
            client.connect(host, port, KEEPALIVE_S)
        except ssl.SSLError as exc:
            raise BrokerUnavailable(f"TLS connection to MQTT broker {self.broker} failed: "
                                    f"{getattr(exc, 'verify_message', None) or exc.reason or exc}") from None
        except OSError as exc:
            raise BrokerUnavailable(f"cannot reach MQTT broker {self.broker}: {exc.strerror or exc}") from None
        self._client = client
        client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S) or self._connect_error:
            why = self._connect_error or f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
            self.close()
            raise BrokerUnavailable(f"MQTT broker {self.broker} refused the connection: {why}")

    def _settle(self, settle):
        start = time.monotonic()
        deadline = start + SETTLE_LIMIT_S
        while True:
            now = time.monotonic()
            with self._lock:
                pending = bool(self._pending_subs)
            quiet = now - max(self._last_message, start) >= settle
            if self._discovery_subscribed.is_set() and not pending and quiet:
                return
            if now >= deadline:
                log.warning("retained messages from %s still arriving after %.0f s; continuing with %d entities",
                            self.broker, SETTLE_LIMIT_S, len(self._entities))
                return
            time.sleep(min(0.02, max(settle / 4, 0.001)))

    def _subscribe(self, filters):
        client = self._client
        if client is None or not filters or not self._connected.is_set():
            return None
        rc, mid = client.subscribe([(f, 0) for f in filters])
        if rc == mqtt.MQTT_ERR_SUCCESS:
            with self._lock:
                self._pending_subs.add(mid)
            return mid
        log.warning("subscribing to %d topics on %s failed: %s", len(filters), self.broker, mqtt.error_string(rc))
        return None

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._connect_error = str(reason_code)
            self._connected.set()           # wakes _connect, which reports the refusal and closes
            return
        self._connect_error = None
        log.info("connected to MQTT broker %s; discovery under %s/", self.broker, self.prefix)
        self._connected.set()
        with self._lock:
            state_filters = list(self._routes)
        self._last_message = time.monotonic()
        mid = self._subscribe([f"{self.prefix}/+/+/config", f"{self.prefix}/+/+/+/config"])
        self._discovery_mid = mid
        self._subscribe(state_filters)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._lock:
            self._pending_subs.discard(mid)
        if any(rc.is_failure for rc in reason_codes):
            log.warning("MQTT broker %s refused a subscription (%s); check its ACL", self.broker,
                        ", ".join(str(rc) for rc in reason_codes))
        if mid is not None and mid == self._discovery_mid:
            self._discovery_subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()
        if not self._closing and self._connect_error is None:
            log.warning("lost the connection to MQTT broker %s (%s); reconnecting", self.broker, reason_code)

    def _on_message(self, client, userdata, msg):
        self._last_message = time.monotonic()
        self.feed(msg.topic, msg.payload)

    def close(self):
        """Disconnect from the broker (if any); the registry stays readable. Idempotent."""
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        try:
            client.disconnect()
        finally:
            client.loop_stop()
        self._connected.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def connected(self):
        return self._client is not None and self._connected.is_set() and self._connect_error is None

    def publish(self, topic, payload, qos=1, retain=False, timeout=PUBLISH_TIMEOUT_S):
        """Publish and wait (at most `timeout` s) until the broker has it (PUBACK for QoS 1)."""
        client = self._client
        if client is None:
            raise PublishError("this home has no MQTT broker to publish to (it was loaded from a file or "
                               "configs, or closed); connect with Home.from_broker, or use dry_run")
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        info = client.publish(topic, data, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise PublishError(f"publishing to {topic!r} on MQTT broker {self.broker} failed: "
                               f"{mqtt.error_string(info.rc)}")
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise PublishError(f"publishing to {topic!r} on MQTT broker {self.broker} failed: {exc}") from None
        if not info.is_published():
            raise PublishError(f"MQTT broker {self.broker} did not acknowledge the message on {topic!r} "
                               f"within {timeout:.0f} s")

    # -- registry ------------------------------------------------------------------------------
    @property
    def entities(self):
        """{entity_id: Entity} in discovery order (a snapshot; do not modify it)."""
        return self._entities

    def get(self, entity_id):
        return self._entities.get(entity_id)

    def __len__(self):
        return len(self._entities)

    def __iter__(self):
        """The Entity records, in discovery order."""
        return iter(list(self._entities.values()))

    def __contains__(self, entity_id):
        return entity_id in self._entities

    def areas(self):
        """Sorted unique areas (`device.suggested_area`) of the entities."""
        return sorted({e.area for e in self._entities.values() if e.area}, key=str.casefold)

    def in_area(self, area, domain=None):
        """Entities whose area is `area` (case-insensitive), optionally of one domain."""
        wanted = str(area).casefold()
        return [e for e in self._entities.values()
                if e.area and e.area.casefold() == wanted and (domain is None or e.domain == domain)]

    def on_change(self, callback):
        """Call `callback(kind, entity)` on every change: kind "added", "changed" or "removed"
        (these also bump `version`) or "state". Returns a function that unregisters it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def _emit(self, events):
        for kind, entity in events:
            for callback in list(self._callbacks):
                try:
                    callback(kind, entity)
                except Exception:
                    log.exception("home on_change callback %r failed", callback)

    # -- applying messages -----------------------------------------------------------------------
    def feed(self, topic, payload):
        """Apply one message: a discovery config (topic under the prefix, ending in /config) or a
        state payload on a topic entities listen on."""
        if topic.endswith("/config") and (self.prefix is None or topic.startswith(self.prefix + "/")):
            events = self._apply_discovery(topic, payload)
        else:
            events = self._apply_state(topic, payload)
        self._emit(events)

    def _apply_discovery(self, topic, payload):
        try:
            found = discovery.read_message(topic, payload, self.prefix)
        except discovery.DiscoveryError as exc:
            log.warning("skipping discovery message: %s", exc)
            return []
        events, new_filters, old_filters = [], set(), set()
        with self._lock:
            before = set(self._routes)
            old_keys = self._topic_keys.get(topic, set())
            kept = set()
            for item in found:
                if item.config is None:
                    events += self._remove(item.key)
                    continue
                try:
                    entity = entities.build_entity(item.component, item.object_id, item.config,
                                                   discovery_topic=topic, discovery_key=item.key)
                except entities.ConfigError as exc:
                    log.warning("skipping discovery config: %s", exc)
                    if item.key in self._by_key:
                        kept.add(item.key)     # a bad update leaves the entity as it was
                    continue
                events += self._upsert(item, entity)
                kept.add(item.key)
            for key in old_keys - kept:
                events += self._remove(key)
            if kept:
                self._topic_keys[topic] = kept
            else:
                self._topic_keys.pop(topic, None)
            after = set(self._routes)
            new_filters, old_filters = after - before, before - after
        if old_filters and self._client is not None and self._connected.is_set():
            self._client.unsubscribe(sorted(old_filters))
        self._subscribe(sorted(new_filters))
        return events

    def _allocate_id(self, domain, base, key):
        candidate, n = f"{domain}.{base}", 1
        while candidate in self._entities and self._by_key.get(key) != candidate:
            n += 1
            candidate = f"{domain}.{base}_{n}"
        return candidate

    def _upsert(self, item, entity):
        events = []
        base = entities.requested_object_id(entity.config, entity.domain) or entities.slugify(item.object_id)
        wanted = f"{entity.domain}.{base}"
        current = self._by_key.get(item.key)
        if current is not None:
            old = self._entities[current]
            if old.config == entity.config and old.domain == entity.domain:
                return []          # unchanged: keep the entity and its state, as Home Assistant does
            if self._base_id[item.key] != wanted:
                events += self._remove(item.key)
                current = None
        entity_id = current or self._allocate_id(entity.domain, base, item.key)
        entity.entity_id, entity.object_id = entity_id, entity_id.split(".", 1)[1]
        if entity.unsupported_templates:
            log.info("%s: templates %s are beyond this evaluator; their values stay unknown",
                     entity_id, ", ".join(entity.unsupported_templates))
        if current is not None:
            self._drop_routes(entity_id)
        snapshot = dict(self._entities)
        snapshot[entity_id] = entity
        self._entities = snapshot
        self._by_key[item.key] = entity_id
        self._base_id[item.key] = wanted
        for topic_filter, role in states.subscriptions(entity):
            self._routes.setdefault(topic_filter, []).append((entity_id, role))
            for topic, payload in self._cached(topic_filter):
                states.apply(entity, role, payload)
        self.version += 1
        events.append(("changed" if current is not None else "added", entity))
        log.debug("%s %s from %s", "updated" if current else "added", entity_id, item.key)
        return events

    def _cached(self, topic_filter):
        if not _is_wildcard(topic_filter):
            return [(topic_filter, self._payloads[topic_filter])] if topic_filter in self._payloads else []
        return [(t, p) for t, p in self._payloads.items() if mqtt.topic_matches_sub(topic_filter, t)]

    def _drop_routes(self, entity_id):
        for topic_filter in list(self._routes):
            remaining = [r for r in self._routes[topic_filter] if r[0] != entity_id]
            if remaining:
                self._routes[topic_filter] = remaining
            else:
                del self._routes[topic_filter]

    def _remove(self, key):
        entity_id = self._by_key.pop(key, None)
        self._base_id.pop(key, None)
        if entity_id is None:
            return []
        snapshot = dict(self._entities)
        entity = snapshot.pop(entity_id)
        self._entities = snapshot
        self._drop_routes(entity_id)
        self.version += 1
        log.debug("removed %s (%s)", entity_id, key)
        return [("removed", entity)]

    def _apply_state(self, topic, payload):
        if not isinstance(payload, (str, bytes, bytearray)):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        events = []
        with self._lock:
            if topic not in self._payloads and len(self._payloads) >= PAYLOAD_CACHE_LIMIT:
                self._payloads.pop(next(iter(self._payloads)))
            self._payloads[topic] = bytes(payload)
            routes = list(self._routes.get(topic, ()))
            for topic_filter in self._routes:
                if _is_wildcard(topic_filter) and mqtt.topic_matches_sub(topic_filter, topic):
                    routes += self._routes[topic_filter]
            for entity_id, role in routes:
                entity = self._entities.get(entity_id)
                if entity is not None and states.apply(entity, role, payload):
                    events.append(("state", entity))
        return events
