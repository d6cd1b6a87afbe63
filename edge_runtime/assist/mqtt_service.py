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
import queue
import re
import socket
import threading
import time

from edge_runtime.assist.actions import ActionError, ConfirmationRequired

log = logging.getLogger("edge_runtime.assist")

CONFIRM_TIMEOUT_S = 30.0
MAX_ID_CHARS = 64
MAX_TEXT_CHARS = 500
MAX_PAYLOAD_BYTES = 4096
MAX_QUEUE = 16


class _Bad(ValueError):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def parse(payload: bytes) -> dict:
    """A request or a confirmation, validated; _Bad names what is wrong."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _Bad("bad_request", f"request over {MAX_PAYLOAD_BYTES} bytes")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Bad("bad_request", "request is not a JSON object") from None
    if not isinstance(obj, dict):
        raise _Bad("bad_request", "request is not a JSON object")
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS or not rid.isprintable() \
            or any(c in rid for c in "/+#"):
        raise _Bad("bad_request", f"\"id\" must be a printable string of 1..{MAX_ID_CHARS} characters "
                                  "without / + #")
    for key, value in obj.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _Bad("bad_request", f"{key!r} is not valid UTF-8 text") from None
    unknown = set(obj) - {"id", "text", "confirm"}
    if unknown:
        raise _Bad("bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    if "confirm" in obj:
        if obj["confirm"] is not True or "text" in obj:
            raise _Bad("bad_request", "a confirmation is {\"id\": ..., \"confirm\": true}")
        return {"id": rid, "confirm": True}
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _Bad("bad_request", "\"text\" must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise _Bad("bad_request", f"\"text\" is over {MAX_TEXT_CHARS} characters")
    return {"id": rid, "text": text}


class AssistService:
    """Serves one Assistant on an MQTT connection (a paho Client the caller connects and loops)."""

    def __init__(self, assistant, client, prefix: str, device_id: str, confirm_timeout: float = CONFIRM_TIMEOUT_S):
        self.assistant = assistant
        self.client = client
        self.prefix = prefix
        self.device_id = device_id
        self.topic = f"{prefix}/{device_id}/assist"
        self.confirm_timeout = confirm_timeout
        self._pending: dict = {}            # (reply topic, id) -> (result, deadline)
        self._jobs: queue.Queue = queue.Queue(maxsize=MAX_QUEUE)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="assist", daemon=True)

    # -- wiring ----------------------------------------------------------------------------------
    def start(self):
        self.client.message_callback_add(self.topic, self._on_message)
        self.client.subscribe(self.topic, qos=1)
        self._worker.start()

    def stop(self, timeout: float = 10.0):
        self._stop.set()
        self._jobs.put(None)
        self._worker.join(timeout)

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
            self.client.publish(topic, json.dumps({"id": body.get("id"), "error": {
                "code": "internal", "message": "the reply could not be encoded"}}), qos=1)

    def _on_message(self, client, userdata, msg):
        try:
            req = parse(msg.payload)
        except _Bad as exc:
            rid = None
            try:
                obj = json.loads(msg.payload)
                rid = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) \
                    and 0 < len(obj["id"]) <= MAX_ID_CHARS and obj["id"].isprintable() \
                    and not any(c in obj["id"] for c in "/+#") else None
            except (ValueError, RecursionError, UnicodeDecodeError):
                pass
            self._send(f"{self.topic}/reply/{rid or 'error'}", {"id": rid, "error": {"code": exc.code,
                                                                                      "message": str(exc)}})
            return
        topic, refused = self._reply_topic(msg, req["id"])
        if refused:
            self._send(topic, {"id": req["id"], "error": {"code": "bad_response_topic", "message": refused}})
            return
        try:
            self._jobs.put_nowait((req, topic))
        except queue.Full:
            self._send(topic, {"id": req["id"], "error": {"code": "busy", "message": "too many requests queued"}})

    # -- the worker --------------------------------------------------------------------------------
    def _run(self):
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            req, topic = job
            try:
                body = self._confirm(req, topic) if req.get("confirm") else self._handle(req, topic)
            except Exception as exc:  # one reply, whatever happened
                log.exception("assist request %s failed", req["id"])
                body = {"id": req["id"], "error": {"code": "internal", "message": str(exc)[:200]}}
            self._send(topic, body)

    def _handle(self, req, topic):
        now = time.monotonic()
        self._pending = {k: v for k, v in self._pending.items() if v[1] > now}
        result = self.assistant.interpret(req["text"])
        if result.get("action") in (None, "query"):
            return {"id": req["id"], "result": result, "published": [], "executed": False}
        if result.get("confirm"):
            self._pending[(topic, req["id"])] = (result, now + self.confirm_timeout)
            return {"id": req["id"], "result": result, "published": [], "executed": False, "pending": True,
                    "confirm_within_s": self.confirm_timeout}
        return self._execute(req["id"], result, confirmed=False)

    def _confirm(self, req, topic):
        held = self._pending.pop((topic, req["id"]), None)
        if held is None:
            return {"id": req["id"], "error": {"code": "nothing_to_confirm",
                                               "message": "no action waits for confirmation under this id"}}
        result, deadline = held
        if time.monotonic() > deadline:
            return {"id": req["id"], "error": {"code": "confirmation_expired",
                                               "message": f"confirmations are accepted for {self.confirm_timeout:g} s"}}
        return self._execute(req["id"], result, confirmed=True)

    def _execute(self, rid, result, confirmed):
        try:
            published = self.assistant.execute(result, confirmed=confirmed)
        except (ActionError, ConfirmationRequired) as exc:
            return {"id": rid, "result": result, "error": {"code": "action_failed", "message": str(exc)}}
        return {"id": rid, "result": result, "published": published, "executed": True}


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
        self.service._worker.start()
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
