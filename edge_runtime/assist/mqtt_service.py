"""The assistant over MQTT: `serve mqtt --assist`.

    request  <prefix>/<device-id>/assist        {"id": "a1", "text": "turn off the landing light"}
    confirm  <prefix>/<device-id>/assist        {"id": "a1", "confirm": true}
    reply    <prefix>/<device-id>/assist/reply/<id>   (or the MQTT 5 Response Topic, if it lies under
             <prefix>/reply/)

A reply is one JSON object: ``{"id", "result": {...action call...}, "published": [...], "executed": bool}``,
or ``{"id", "error": {"code", "message"}}``. A result flagged ``"confirm": true`` is held, not executed, and
its reply says ``"pending": true``; a confirm with the same id within CONFIRM_TIMEOUT_S executes it
(from the same reply topic only), after that it is ``confirmation_expired``. Every request gets exactly
one reply; interpretation runs on a worker thread, never on the MQTT network thread.
"""

from __future__ import annotations

import json
import logging
import re
import socket

from edge_runtime.assist.desk import (CONFIRM_TIMEOUT_S, E_BAD_REQUEST, E_INTERNAL, AssistDesk, BadAssistRequest,
                                      error_body, usable_id)
from edge_runtime.assist.desk import parse as parse_object

log = logging.getLogger("edge_runtime.assist")

MAX_PAYLOAD_BYTES = 4096
E_BAD_RESPONSE_TOPIC = "bad_response_topic"


def parse(payload: bytes) -> dict:
    """An MQTT assist payload, decoded and validated (BadAssistRequest names what is wrong)."""
    return parse_object(_decode(payload))


def _decode(payload: bytes):
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadAssistRequest(E_BAD_REQUEST, f"request over {MAX_PAYLOAD_BYTES} bytes")
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadAssistRequest(E_BAD_REQUEST, "request is not a JSON object") from None


class AssistService:
    """Serves one Assistant on an MQTT connection (a paho Client the caller connects and loops)."""

    def __init__(self, assistant, client, prefix: str, device_id: str, confirm_timeout: float = CONFIRM_TIMEOUT_S):
        self.assistant = assistant
        self.client = client
        self.prefix = prefix
        self.device_id = device_id
        self.topic = f"{prefix}/{device_id}/assist"
        self.desk = AssistDesk(assistant, confirm_timeout=confirm_timeout)

    # -- wiring ----------------------------------------------------------------------------------
    def start(self):
        self.client.message_callback_add(self.topic, self._on_message)
        self.client.subscribe(self.topic, qos=1)
        self.desk.start()

    def stop(self, timeout: float = 10.0):
        self.desk.stop(timeout)

    def _reply_topic(self, msg, rid):
        props = getattr(msg, "properties", None)
        rt = getattr(props, "ResponseTopic", None) if props is not None else None
        if rt:
            if rt.startswith(f"{self.prefix}/reply/") and not any(c in rt for c in "+#") and "\x00" not in rt:
                return rt, None
            return f"{self.topic}/reply/{rid}", f"Response Topic {rt!r} is outside {self.prefix}/reply/"
        return f"{self.topic}/reply/{rid}", None

    def _send(self, topic, body):
        try:
            self.client.publish(topic, json.dumps(body, ensure_ascii=False), qos=1, retain=False)
        except (ValueError, TypeError) as exc:      # never silence: say so on the same topic
            log.error("assist reply to %s failed: %s", topic, exc)
            self.client.publish(topic, json.dumps(error_body(body.get("id"), E_INTERNAL,
                                                             "the reply could not be encoded")), qos=1)

    def _on_message(self, client, userdata, msg):
        try:
            obj = _decode(msg.payload)
        except BadAssistRequest as exc:
            self._send(f"{self.topic}/reply/error", error_body(None, exc.code, str(exc)))
            return
        rid = usable_id(obj)
        topic, refused = self._reply_topic(msg, rid or "error")
        if refused:
            self._send(topic, error_body(rid, E_BAD_RESPONSE_TOPIC, refused))
            return
        # the reply topic is the requester's key: only it may confirm what it asked for
        self.desk.submit(obj, topic, lambda body: self._send(topic, body))


class Running:
    """An AssistService on its own MQTT 5 connection, with the Home it acts on; `close()` ends both."""

    def __init__(self, host, port, prefix, device_id, *, username=None, password=None, tls_ca=None,
                 tls_cert=None, tls_key=None, discovery_prefix="homeassistant", model=None, threads=1):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from edge_runtime.assist.assistant import Assistant
        from edge_runtime.assist.home import Home

        broker = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.home = Home.from_broker(broker, username=username, password=password, tls_ca=tls_ca,
                                     tls_cert=tls_cert, tls_key=tls_key, prefix=discovery_prefix)
        self.assistant = Assistant(self.home, model=model, n_threads=threads)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-assist-{device_id}",
                             protocol=mqtt.MQTTv5)
        if username is not None:
            client.username_pw_set(username, password)
        if tls_ca or tls_cert:
            client.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key)
        self.service = AssistService(self.assistant, client, prefix, device_id)
        client.message_callback_add(self.service.topic, self.service._on_message)

        def on_connect(c, userdata, flags, reason_code, properties):
            if not reason_code.is_failure:
                c.subscribe(self.service.topic, qos=1)     # again after every reconnect
                log.info("assistant listening on %s (%d entities)", self.service.topic, len(self.home))

        client.on_connect = on_connect
        client.reconnect_delay_set(0.5, 30)
        client.connect(host, port, 30)
        self.client = client
        self.service.desk.start()
        client.loop_start()

    def close(self):
        self.service.stop()
        self.client.loop_stop()
        self.client.disconnect()
        self.assistant.close()
        self.home.close()


_BROKER_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?")


def parse_broker(text, tls=False):
    """"HOST[:PORT]" or "[IPv6][:PORT]" -> (host, port); the port defaults to 1883 (8883 with TLS)."""
    match = _BROKER_RE.fullmatch(text or "")
    port = int(match.group(2)) if match and match.group(2) else (8883 if tls else 1883)
    if not match or not 1 <= port <= 65535:
        raise ValueError(f"broker {text!r}: expected HOST:PORT with a port from 1 to 65535 "
                         f"(e.g. localhost:1883 or [::1]:1883)")
    return match.group(1).strip("[]"), port


def start_from_serve_args(args):
    """`serve mqtt --assist`: the assistant beside the generation service, on the same broker and prefix."""
    tls = bool(getattr(args, "tls_ca", None) or getattr(args, "tls_cert", None))
    host, port = parse_broker(getattr(args, "broker", None) or "localhost", tls)
    device = getattr(args, "device_id", None) or socket.gethostname().split(".")[0]
    prefix = getattr(args, "prefix", None) or "edge"
    return Running(host, port, prefix, device, username=getattr(args, "username", None),
                   password=getattr(args, "password", None), tls_ca=getattr(args, "tls_ca", None),
                   tls_cert=getattr(args, "tls_cert", None), tls_key=getattr(args, "tls_key", None),
                   discovery_prefix=getattr(args, "discovery_prefix", "homeassistant"))
