"""The Wyoming protocol server: Home Assistant's voice services talk to the board over it.

Wyoming is JSON lines over TCP (or a Unix socket): a header line ``{"type", "data"?, "data_length"?,
"payload_length"?}``, then ``data_length`` bytes of JSON merged into ``data``, then
``payload_length`` bytes of payload. The ``wyoming`` package (the library Home Assistant uses)
defines the events; it is imported only by this service.

What this server does with what arrives (one task per connection, several connections at once):

- ``describe`` -> ``info`` (the service's programs);
- ``transcript`` / ``recognize`` -> one reply event from ``respond(text, context, language)``, run
  on a worker thread so other connections keep being answered;
- ``ping`` -> ``pong``; any other event type is dropped, as the protocol asks of servers;
- anything malformed -> an ``error`` event (codes in ERROR_CODES), and the connection reads on: a
  header line that is not JSON, too long (MAX_LINE_BYTES), data that is not a JSON object or over
  MAX_DATA_BYTES, a text that is not a string or over ``max_text_chars``, a context that is not an
  object. Only a payload over MAX_PAYLOAD_BYTES, which cannot be skipped cheaply, ends the
  connection (after its error event). Past MAX_CONNECTIONS a new client gets ``busy`` and is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from urllib.parse import urlparse

log = logging.getLogger("edge_runtime.serve")

MAX_LINE_BYTES = 64 * 1024
MAX_DATA_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
MAX_CONNECTIONS = 64
DEFAULT_URI = "tcp://0.0.0.0:10700"
ERROR_CODES = {
    "bad_event": "the event is not a Wyoming event (a JSON object header with a string \"type\")",
    "too_large": "a header line, data or payload over the size limits",
    "bad_request": "a transcript/recognize event whose fields have the wrong types",
    "text_too_long": "a transcript/recognize text over the service's limit",
    "busy": "the service has MAX_CONNECTIONS clients already",
    "internal": "the service failed on the request (logged on the board)",
}
TEXT_EVENTS = ("transcript", "recognize")


class BadEvent(Exception):
    def __init__(self, code, text, fatal=False):
        super().__init__(text)
        self.code = code
        self.fatal = fatal


def parse_uri(uri: str):
    """("tcp", host, port) or ("unix", path, None); ValueError for anything else."""
    parsed = urlparse(uri or "")
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise ValueError(f"--uri {uri!r}: expected tcp://HOST:PORT with a port from 0 to 65535 "
                             f"(e.g. {DEFAULT_URI})")
        return "tcp", parsed.hostname, port
    if parsed.scheme == "unix" and parsed.path:
        return "unix", parsed.path, None
    raise ValueError(f"--uri {uri!r}: expected tcp://HOST:PORT or unix:///PATH")


async def _discard(reader, n: int):
    while n > 0:
        chunk = await reader.read(min(n, 65536))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(chunk)


async def _discard_line(reader):
    """Skip the rest of an over-long line, through its newline."""
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as exc:
            await _discard(reader, exc.consumed)


def _length(header, key, limit):
    n = header.get(key)
    if n is None:
        return 0
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BadEvent("bad_event", f"\"{key}\" must be a non-negative integer, got {n!r}")
    return n


async def read_event(reader):
    """The next event as (type, data), None at the end of the stream; BadEvent for a malformed
    one, after which the stream is positioned at the next event (unless .fatal)."""
    from wyoming.event import Event

    line = b""
    while not line.strip():                     # blank lines between events are skipped
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise BadEvent("bad_event", "the stream ended inside an event header", fatal=True) from None
            return None
        except asyncio.LimitOverrunError:
            await _discard_line(reader)
            raise BadEvent("too_large", f"event header line over {MAX_LINE_BYTES} bytes") from None
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        raise BadEvent("bad_event", "event header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str) or not header["type"]:
        raise BadEvent("bad_event", "event header must be a JSON object with a string \"type\"")
    data = header.get("data")
    if data is None:
        data = {}
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    problem = None
    if not isinstance(data, dict):
        problem = BadEvent("bad_event", "event \"data\" must be a JSON object")
    if data_length > MAX_DATA_BYTES:
        await _discard(reader, data_length)
        problem = problem or BadEvent("too_large", f"event data over {MAX_DATA_BYTES} bytes")
    elif data_length:
        raw = await reader.readexactly(data_length)
        try:
            extra = json.loads(raw)
        except (ValueError, RecursionError):
            extra = None
        if not isinstance(extra, dict):
            problem = problem or BadEvent("bad_event", "event data is not a JSON object")
        elif problem is None:
            data = {**data, **extra}
    if payload_length > MAX_PAYLOAD_BYTES:
        raise BadEvent("too_large", f"event payload over {MAX_PAYLOAD_BYTES} bytes", fatal=True)
    payload = await reader.readexactly(payload_length) if payload_length else None
    if problem is not None:
        raise problem
    return Event(type=header["type"], data=data, payload=payload)


def _text_request(event, max_text_chars):
    data = event.data
    text = data.get("text")
    if not isinstance(text, str):
        raise BadEvent("bad_request", f"{event.type}: \"text\" must be a string")
    if len(text) > max_text_chars:
        raise BadEvent("text_too_long", f"{event.type}: \"text\" is over {max_text_chars} characters")
    context = data.get("context")
    if context is not None and not isinstance(context, dict):
        raise BadEvent("bad_request", f"{event.type}: \"context\" must be an object")
    language = data.get("language")
    if language is not None and not isinstance(language, str):
        raise BadEvent("bad_request", f"{event.type}: \"language\" must be a string")
    return text, context, language


class WyomingService:
    """Serves `info` (a wyoming.info.Info) and `respond(text, context, language) -> wyoming Event`."""

    def __init__(self, info, respond, max_text_chars: int):
        self.info = info
        self.respond = respond
        self.max_text_chars = max_text_chars
        self._connections = set()
        self.address = None

    async def _write(self, writer, event):
        from wyoming.event import async_write_event

        await async_write_event(event, writer)

    async def _error(self, writer, code, text):
        from wyoming.error import Error

        await self._write(writer, Error(text=text, code=code).event())

    async def _answer(self, event):
        from wyoming.ping import Pong

        if event.type == "describe":
            return self.info.event()
        if event.type == "ping":
            return Pong(text=event.data.get("text") if isinstance(event.data.get("text"), str) else None).event()
        if event.type in TEXT_EVENTS:
            text, context, language = _text_request(event, self.max_text_chars)
            return await asyncio.to_thread(self.respond, text, context, language)
        log.debug("dropping a %r event", event.type)
        return None

    async def connection(self, reader, writer):
        peer = writer.get_extra_info("peername") or "unix"
        if len(self._connections) >= MAX_CONNECTIONS:
            try:
                await self._error(writer, "busy", f"the service already has {MAX_CONNECTIONS} clients")
            finally:
                writer.close()
            return
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            while True:
                try:
                    event = await read_event(reader)
                    if event is None:
                        break
                    reply = await self._answer(event)
                except BadEvent as exc:
                    log.info("%s: %s (%s)", peer, exc, exc.code)
                    await self._error(writer, exc.code, str(exc))
                    if exc.fatal:
                        break
                    continue
                except (ConnectionError, asyncio.IncompleteReadError):
                    break
                except Exception as exc:        # one request failing is that request's error event
                    log.exception("%s: request failed", peer)
                    await self._error(writer, "internal", f"the service failed: {type(exc).__name__}")
                    continue
                if reply is not None:
                    await self._write(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass                                # the client went away; nothing to tell it
        finally:
            self._connections.discard(task)
            writer.close()

    async def run(self, uri: str, stop: asyncio.Event | None = None):
        """Serve until SIGTERM/SIGINT (or `stop` is set)."""
        kind, where, port = parse_uri(uri)
        if kind == "tcp":
            server = await asyncio.start_server(self.connection, where, port, limit=MAX_LINE_BYTES)
            host, bound = server.sockets[0].getsockname()[:2]
            self.address = f"tcp://{host}:{bound}"
        else:
            if os.path.exists(where):
                os.unlink(where)
            server = await asyncio.start_unix_server(self.connection, where, limit=MAX_LINE_BYTES)
            self.address = f"unix://{where}"
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("wyoming: listening on %s", self.address)
        try:
            await stop.wait()
            log.info("wyoming: shutting down")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await server.wait_closed()
            if kind == "unix" and os.path.exists(where):
                os.unlink(where)
