"""The assistant's request desk, shared by every transport (MQTT, serial): validation, a worker
thread, confirmations held per requester, one reply per request.

A request is ``{"id": ..., <text field>: "turn off the landing light"}`` (the text field is ``text``
on MQTT's assist topic and ``assist`` on a serial line, where it tells an assist request from a
generation request); a confirmation is ``{"id": ..., "confirm": true}``. A reply is one JSON object:
``{"id", "result": {...action call...}, "published": [...], "executed": bool}`` (plus ``"pending":
true`` and ``"confirm_within_s"`` when the action waits for confirmation), or ``{"id", "error":
{"code", "message"}}``. A held action is executed only by a confirmation from the same requester (the
transport's reply key: an MQTT reply topic, a serial port session) within the time limit.

Without a broker (``execute=False``), the desk interprets only: ``published`` lists what would be
published and ``executed`` is false.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from edge_runtime.assist.actions import ActionError, ConfirmationRequired
from edge_runtime.assist.home import PublishError

log = logging.getLogger("edge_runtime.assist")

CONFIRM_TIMEOUT_S = 30.0
MAX_ID_CHARS = 64
MAX_TEXT_CHARS = 500
MAX_QUEUE = 16

# error codes of assist replies
E_BAD_REQUEST = "bad_request"
E_BUSY = "busy"
E_INTERNAL = "internal"
E_NOTHING_TO_CONFIRM = "nothing_to_confirm"
E_CONFIRMATION_EXPIRED = "confirmation_expired"
E_ACTION_FAILED = "action_failed"


class BadAssistRequest(ValueError):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def usable_id(obj):
    """The request's id if it is one a reply may carry back (else None)."""
    rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS and rid.isprintable() \
            and not any(c in rid for c in "/+#"):
        try:
            rid.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return rid
    return None


def parse(obj, text_field: str = "text") -> dict:
    """A request or a confirmation, validated: ``{"id", "text"}`` or ``{"id", "confirm": True}``."""
    if not isinstance(obj, dict):
        raise BadAssistRequest(E_BAD_REQUEST, "request is not a JSON object")
    rid = obj.get("id")
    if usable_id(obj) is None:
        raise BadAssistRequest(E_BAD_REQUEST, f"\"id\" must be a printable string of 1..{MAX_ID_CHARS} "
                                              "characters without / + #")
    for key, value in obj.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadAssistRequest(E_BAD_REQUEST, f"{key!r} is not valid UTF-8 text") from None
    unknown = set(obj) - {"id", text_field, "confirm"}
    if unknown:
        raise BadAssistRequest(E_BAD_REQUEST, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    if "confirm" in obj:
        if obj["confirm"] is not True or text_field in obj:
            raise BadAssistRequest(E_BAD_REQUEST, "a confirmation is {\"id\": ..., \"confirm\": true}")
        return {"id": rid, "confirm": True}
    text = obj.get(text_field)
    if not isinstance(text, str) or not text.strip():
        raise BadAssistRequest(E_BAD_REQUEST, f"\"{text_field}\" must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise BadAssistRequest(E_BAD_REQUEST, f"\"{text_field}\" is over {MAX_TEXT_CHARS} characters")
    return {"id": rid, "text": text}


def error_body(rid, code, message):
    return {"id": rid, "error": {"code": code, "message": message}}


class AssistDesk:
    """Serves one Assistant to any number of requesters; `submit` never blocks and every accepted or
    refused request gets exactly one `reply(body)` call."""

    def __init__(self, assistant, *, execute: bool = True, confirm_timeout: float = CONFIRM_TIMEOUT_S,
                 max_queue: int = MAX_QUEUE):
        self.assistant = assistant
        self.execute = execute
        self.confirm_timeout = confirm_timeout
        self._pending: dict = {}            # (requester key, id) -> (result, deadline)
        self._jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="assist", daemon=True)

    def start(self):
        self._worker.start()
        return self

    def stop(self, timeout: float = 10.0):
        self._stop.set()
        try:
            self._jobs.put_nowait(None)
        except queue.Full:
            pass
        if self._worker.is_alive():
            self._worker.join(timeout)

    def submit(self, obj, key, reply, text_field: str = "text"):
        """Validate `obj` (a decoded JSON value) and queue it; `reply(body)` is called once, from the
        worker thread for a queued request and at once for a refused one."""
        try:
            req = parse(obj, text_field)
        except BadAssistRequest as exc:
            reply(error_body(usable_id(obj), exc.code, str(exc)))
            return
        try:
            self._jobs.put_nowait((req, key, reply))
        except queue.Full:
            reply(error_body(req["id"], E_BUSY, "too many assist requests queued"))

    # -- the worker ----------------------------------------------------------------------------
    def _run(self):
        while True:
            job = self._jobs.get()
            if job is None or self._stop.is_set():
                if job is not None:
                    job[2](error_body(job[0]["id"], E_BUSY, "the assistant is shutting down"))
                return
            req, key, reply = job
            try:
                body = self._confirm(req, key) if req.get("confirm") else self._handle(req, key)
            except Exception as exc:  # one reply, whatever happened
                log.exception("assist request %s failed", req["id"])
                body = error_body(req["id"], E_INTERNAL, str(exc)[:200])
            try:
                reply(body)
            except Exception:
                log.exception("assist reply %s could not be sent", req["id"])

    def _handle(self, req, key):
        now = time.monotonic()
        self._pending = {k: v for k, v in self._pending.items() if v[1] > now}
        result = self.assistant.interpret(req["text"])
        if result.get("action") in (None, "query"):
            return {"id": req["id"], "result": result, "published": [], "executed": False}
        if result.get("confirm"):
            self._pending[(key, req["id"])] = (result, now + self.confirm_timeout)
            return {"id": req["id"], "result": result, "published": [], "executed": False, "pending": True,
                    "confirm_within_s": self.confirm_timeout}
        return self._act(req["id"], result, confirmed=False)

    def _confirm(self, req, key):
        held = self._pending.pop((key, req["id"]), None)
        if held is None:
            return error_body(req["id"], E_NOTHING_TO_CONFIRM, "no action waits for confirmation under this id")
        result, deadline = held
        if time.monotonic() > deadline:
            return error_body(req["id"], E_CONFIRMATION_EXPIRED,
                              f"confirmations are accepted for {self.confirm_timeout:g} s")
        return self._act(req["id"], result, confirmed=True)

    def _act(self, rid, result, confirmed):
        try:
            published = self.assistant.execute(result, confirmed=confirmed, dry_run=not self.execute)
        except (ActionError, ConfirmationRequired, PublishError) as exc:
            return {"id": rid, "result": result, "error": {"code": E_ACTION_FAILED, "message": str(exc)}}
        return {"id": rid, "result": result, "published": published, "executed": self.execute}
