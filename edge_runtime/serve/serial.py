"""The serial server: answers prompts arriving on a serial port (UART, USB adapter, pty).

JSON mode (default): one JSON object per line, replies in the shapes of edge_runtime.serve.protocol:
    {"id": 7, "messages": [...], ...options}  ->  {"id": 7, "seq": n, "text": "..."} ... then
                                                  {"id": 7, "done": true, "text", "finish_reason", ...}
    {"cancel": 7}                             ->  {"cancel": 7, "ok": true} (then the final "cancelled" line)
    {"ping": 1}                               ->  {"pong": 1, ...status, "serial": {...}}
    {"hello": 1}                              ->  {"hello": 1, "session": "3.1"}: a new id namespace
Text mode (--text): a line in, the answer out, ended by an empty line; Ctrl-C cancels.
Framing, CRC and line limits: edge_runtime.serve.serial_framing; the write queue:
edge_runtime.serve.serial_outbox; the command line: edge_runtime.serve.serial_cli.

Every line that is not empty gets a reply: a request exactly one final line, whatever it holds
(a request that fails to parse is answered bad_request, one whose reply could not be encoded
internal), so neither the reader nor the writer thread ever dies of an input.

Threads: the main thread reads the port, a writer thread drains an Outbox to it, the service's
worker generates. Reading never waits on writing, so a cancel is seen while a reply crawls out
at 9600 baud; when the link lags, streamed text is merged into fewer, longer chunk lines instead
of queuing one line per token. If the port goes away (adapter unplugged) the running reply is
cancelled and the port is reopened when it comes back.

Duplicate requests: an id is remembered per (port session, hello epoch). Reopening the port or
sending {"hello": ...} starts a fresh namespace, so a microcontroller that reboots and counts ids
from 1 again is not refused.
"""
import collections
import dataclasses
import logging
import os
import select
import stat
import threading
import time

from edge_runtime.serve.protocol import (E_BAD_REQUEST, E_LINE_TOO_LONG, E_NOT_FOUND, RequestError,
                                         cancelled_reply, check_structure, encoding_failed_reply, error_reply,
                                         parse_request)
from edge_runtime.serve.serial_framing import (ETX, FramingError, LineReader, LineTooLong, TextRenderer,
                                               clean_text_line, decode_json_line, encode_json_line)
from edge_runtime.serve.serial_outbox import NoiseLimiter, Outbox

log = logging.getLogger("edge_runtime.serve.serial")

DEFAULT_BAUD = 115200
DEFAULT_MAX_LINE = 65536      # bytes; a prompt at the service's 16384-character limit fits as JSON
READ_SIZE = 4096
POLL_S = 0.2                  # blocked loops look at their stop flags this often
DRAIN_S = 3.0                 # at shutdown, time for the writer to send the final lines
REOPEN_MAX_S = 2.0            # cap of the backoff between attempts to reopen a vanished port
ERRNO_FATAL = {"ENOTTY"}      # open errors that waiting will not fix
STAT_KEYS = ("bytes_in", "bytes_out", "lines_in", "lines_out", "requests", "noise_lines", "noise_unanswered",
             "lines_too_long", "encode_failures")


@dataclasses.dataclass
class SerialContext:
    reply_key: object             # (port session, hello epoch): the service's duplicate namespace
    crc: bool                     # replies carry a crc member


class PortSession:
    """One open of the port: the reader (caller's thread), the writer thread, the Outbox."""

    def __init__(self, server, ser, number):
        self.server = server
        self.ser = ser
        self.fd = ser.fileno()
        self.number = number
        self.epoch = 0
        self.outbox = Outbox()
        self.lines = LineReader(server.max_line)
        self.noise = NoiseLimiter()
        self.last_crc = server.require_crc     # the last readable line had a CRC: so do error replies
        self.lost = threading.Event()          # the port failed (read or write)
        self.abort_writes = threading.Event()  # give up writing (shutdown drain took too long)
        self.lost_reason = ""
        # every key exists from the start: the writer thread updates counts while a ping reads them
        self.stats = collections.Counter({key: 0 for key in STAT_KEYS})
        self._writer = threading.Thread(target=self._write_loop, name=f"serial-writer-{number}", daemon=True)

    # -- reading ------------------------------------------------------------------------------
    def run(self, stop):
        """Read and answer until `stop` is set or the port fails."""
        self._writer.start()
        while not stop.is_set() and not self.lost.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], POLL_S)
                if not ready:
                    continue
                data = os.read(self.fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                self._fail(f"read failed: {exc.strerror or exc}")
                break
            if not data:
                # readable with no data: the device went away (USB unplugged, pty master closed)
                self._fail("device reports readiness to read but returned no data (disconnected?)")
                break
            self.stats["bytes_in"] += len(data)
            if self.server.text:
                self._feed_text(data)
            else:
                self._feed(data, self._on_json_line)

    def _fail(self, reason):
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()

    def _feed(self, data, on_line):
        for event in self.lines.feed(data):
            if isinstance(event, LineTooLong):
                self.stats["lines_too_long"] += 1
                self._noise(E_LINE_TOO_LONG, f"line longer than {event.limit} bytes: discarded up to "
                                             f"the next line end")
            elif event.strip(b"\x00 \t"):
                self.stats["lines_in"] += 1
                try:
                    on_line(event)
                except Exception:  # a bug in handling one line must not end the service
                    log.exception("failed to handle a line of %d bytes", len(event))

    def _noise(self, code, message):
        self.stats["noise_lines"] += 1
        if self.noise.allow():
            log.warning("noise on %s: %s", self.server.port, message)
            self.outbox.put_control(error_reply(None, code, message), self.last_crc)
        else:
            self.stats["noise_unanswered"] += 1

    # -- JSON mode ----------------------------------------------------------------------------
    def _on_json_line(self, raw):
        try:
            decoded = decode_json_line(raw, self.server.require_crc)
        except FramingError as exc:
            self._noise(exc.code, exc.message)
            return
        if decoded is None:
            return
        msg, used_crc = decoded
        # the replies to a line carry a CRC when it had one (always with --crc)
        crc = self.last_crc = used_crc or self.server.require_crc
        try:
            self._dispatch(msg, crc)
        except Exception as exc:  # a bug in handling one message: it still gets its reply
            log.exception("failed to handle a message of %d bytes", len(raw))
            self.outbox.put_control(error_reply(None, E_BAD_REQUEST, f"the message could not be handled "
                                                                     f"({type(exc).__name__})"), crc)

    def _dispatch(self, msg, crc):
        for verb, handler in (("ping", self._on_ping), ("cancel", self._on_cancel), ("hello", self._on_hello)):
            if verb in msg:
                extra = sorted(set(msg) - {verb})
                problem = check_structure(msg)  # the value is echoed: it must encode
                if extra:
                    problem = f"a \"{verb}\" message has no other fields, got {', '.join(extra)}"
                if problem is not None:
                    self.outbox.put_control(error_reply(None, E_BAD_REQUEST, problem), crc)
                else:
                    handler(msg[verb], crc)
                return
        for verb, handler in self.server.verbs.items():
            if verb in msg:
                outbox = self.outbox
                handler(msg, self.reply_key, lambda body: outbox.put_control(body, crc))
                return
        self._submit(msg, crc)

    def _on_ping(self, value, crc):
        self.outbox.put_control({"pong": value, **self.server.status(self)}, crc)

    def _on_hello(self, value, crc):
        self.epoch += 1
        self.outbox.put_control({"hello": value, "session": f"{self.number}.{self.epoch}"}, crc)

    def _on_cancel(self, request_id, crc):
        if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
            self.outbox.put_control({"cancel": request_id, "ok": False, "error": {
                "code": E_BAD_REQUEST, "message": "\"cancel\" takes a request id (string or integer)"}}, crc)
            return
        found = self._cancel(request_id)
        reply = {"cancel": request_id, "ok": found}
        if not found:
            reply["error"] = {"code": E_NOT_FOUND,
                              "message": f"no request {request_id!r} is queued, running or being sent"}
        self.outbox.put_control(reply, crc)

    @property
    def reply_key(self):
        return (self.number, self.epoch)

    def _cancel(self, request_id):
        """Cancel a request of this session and hello epoch (the requester's namespace)."""
        streams = self.outbox.open_streams(request_id, self.reply_key)
        for stream in streams:
            self.outbox.cancel_stream(stream)
        found = self.server.service.cancel(request_id, self.reply_key)
        if found or streams:
            log.info("request %r cancelled", request_id)
        return bool(found or streams)

    def _submit(self, msg, crc, renderer=None):
        context = SerialContext(reply_key=self.reply_key, crc=crc)
        try:
            req = parse_request(msg, self.server.limits, context)
        except RequestError as exc:
            self.outbox.put_control(error_reply(exc.request_id, exc.code, exc.message), crc)
            return
        stream = self.outbox.open_stream(req.id, crc, req.stream, renderer, context.reply_key)
        outbox = self.outbox
        try:
            self.server.service.submit(req, on_chunk=lambda chunk: outbox.add_text(stream, chunk["text"]),
                                       on_done=lambda final: outbox.finish(stream, final))
        except RequestError as exc:
            outbox.discard_stream(stream)
            outbox.put_control(error_reply(req.id, exc.code, exc.message), crc)
            return
        self.stats["requests"] += 1

    # -- text mode ----------------------------------------------------------------------------
    def _feed_text(self, data):
        # Ctrl-C drops the line being typed and cancels what is being answered
        parts = data.split(bytes([ETX]))
        self._feed(parts[0], self._on_text_line)
        for part in parts[1:]:
            self.lines.reset()
            for stream in self.outbox.open_streams():
                self.outbox.cancel_stream(stream)
                self.server.service.cancel(stream.id, stream.key)
            self._feed(part, self._on_text_line)

    def _on_text_line(self, raw):
        try:
            text = clean_text_line(raw)
        except FramingError as exc:
            self._noise(exc.code, exc.message)
            return
        if text is None:
            return
        self.server.text_requests += 1
        msg = {"id": f"text-{self.server.text_requests}", "messages": [{"role": "user", "content": text}]}
        msg.update(self.server.text_options)
        self._submit(msg, False, renderer=TextRenderer())

    # -- writing ------------------------------------------------------------------------------
    def _encode(self, item):
        kind, subject = item[0], item[1]
        if not self.server.text:
            if kind == "control":
                return encode_json_line(subject, item[2])
            if kind == "chunk":
                return encode_json_line({"id": subject.id, "seq": item[3], "text": item[2]}, subject.crc)
            return encode_json_line(item[2], subject.crc)
        if kind == "control":
            error = subject.get("error") if isinstance(subject, dict) else None
            note = f"error: {error['message']}" if error else None
            return TextRenderer().end(note).encode("utf-8") if note else b""
        if kind == "chunk":
            return subject.renderer.feed(item[2]).encode("utf-8")
        final = item[2]
        reason = final.get("finish_reason")
        note = None
        if reason == "cancelled":
            note = "cancelled"
        elif reason == "error":
            note = f"error: {final.get('error', {}).get('message', 'unknown')}"
        return subject.renderer.end(note).encode("utf-8")

    def _encode_or_error(self, item):
        """The bytes of one item; an item that cannot be encoded becomes an error line (a final) or
        is dropped (a chunk: its final then fails the same way and reports it), never an exception."""
        try:
            return self._encode(item)
        except Exception as exc:
            self.stats["encode_failures"] += 1
            kind, subject = item[0], item[1]
            log.error("a %s line could not be encoded (%s: %s)", kind, type(exc).__name__, exc)
            if kind == "chunk":
                return b""
            failed = encoding_failed_reply(item[2] if kind == "final" else subject, exc)
            if kind == "final" and isinstance(subject.id, (str, int)):
                failed["id"] = subject.id
            crc = subject.crc if kind == "final" else item[2]
            if self.server.text:
                return TextRenderer().end(f"error: {failed['error']['message']}").encode("utf-8")
            return encode_json_line(failed, crc)

    def _write_loop(self):
        try:
            while not self.lost.is_set() and not self.abort_writes.is_set():
                item = self.outbox.take(POLL_S)
                if item is None:
                    if self.outbox.closed and self.outbox.empty():
                        return
                    continue
                if item[0] == "final":
                    final = item[2]
                    log.info("request %r: %s, %s tokens", final.get("id"), final.get("finish_reason"),
                             (final.get("usage") or {}).get("completion_tokens", 0))
                data = self._encode_or_error(item)
                if data:
                    self._write_all(data)
                    self.stats["lines_out"] += 1
        except OSError as exc:
            self._fail(f"write failed: {exc.strerror or exc}")
        except Exception:
            log.exception("serial writer failed")
            self._fail("writer failed")

    def _write_all(self, data):
        """Write every byte, waiting for the link (flow control, a slow baud) in short slices."""
        view = memoryview(data)
        while view:
            if self.lost.is_set() or self.abort_writes.is_set():
                return
            _, ready, _ = select.select([], [self.fd], [], POLL_S)
            if not ready:
                continue
            try:
                n = os.write(self.fd, view)
            except (BlockingIOError, InterruptedError):
                continue
            self.stats["bytes_out"] += n
            view = view[n:]

    # -- ending -------------------------------------------------------------------------------
    def abandon(self):
        """The port is gone: stop its requests (nobody can read their replies), close it."""
        streams = self.outbox.open_streams()
        self.outbox.close()
        for stream in streams:
            self.outbox.cancel_stream(stream)
            self.server.service.cancel(stream.id, stream.key)
        self.abort_writes.set()
        self._writer.join(2 * POLL_S + 1.0)
        _close_quietly(self.ser)

    def shutdown(self, service):
        """SIGTERM: cancel the running reply, answer the queued ones, send the finals, close."""
        for stream in self.outbox.open_streams():
            self.outbox.cancel_stream(stream)
        service.stop(cancel_running=True, timeout=10.0)
        for stream in self.outbox.open_streams():
            if stream.final is None:  # the worker did not answer in time
                self.outbox.finish(stream, cancelled_reply(stream.id))
        self.outbox.close()
        self._writer.join(DRAIN_S)
        if self._writer.is_alive():
            log.warning("could not send the last replies within %.0f s (link blocked?)", DRAIN_S)
            self.abort_writes.set()
            self._writer.join(2 * POLL_S + 1.0)
        _close_quietly(self.ser)


def _close_quietly(ser):
    try:
        ser.close()
    except Exception as exc:  # closing a vanished device may fail; it is closed either way
        log.debug("closing the port: %s", exc)


class SerialServer:
    """Opens the port (waiting for it to exist), serves it, reopens it when it vanishes."""

    def __init__(self, service, port, baud=DEFAULT_BAUD, *, text=False, rtscts=False, xonxoff=False,
                 max_line=DEFAULT_MAX_LINE, require_crc=False, text_options=None, limits=None,
                 reopen_max_s=REOPEN_MAX_S, verbs=None):
        self.service = service
        # more request kinds beside generation, e.g. {"assist": handler, "confirm": handler}: a JSON
        # line holding one of these keys goes to handler(msg, requester_key, reply), which calls
        # reply(body) exactly once, from any thread
        self.verbs = dict(verbs or {})
        self.port = port
        self.baud = baud
        self.text = text
        self.rtscts = rtscts
        self.xonxoff = xonxoff
        self.max_line = max_line
        self.require_crc = require_crc
        self.text_options = dict(text_options or {})
        self.limits = limits or service.limits
        self.reopen_max_s = reopen_max_s
        self.sessions = 0
        self.text_requests = 0
        self.session = None
        self.totals = collections.Counter()

    def open_port(self):
        import serial

        try:
            mode = os.stat(self.port).st_mode
        except OSError:
            mode = None  # absent for now: the open below says why, and we wait for it
        if mode is not None and not stat.S_ISCHR(mode):
            raise ValueError(f"--port {self.port}: not a character device (a serial port is /dev/tty*)")
        return serial.Serial(port=self.port, baudrate=self.baud, rtscts=self.rtscts, xonxoff=self.xonxoff,
                             timeout=0, write_timeout=None, exclusive=True)

    def status(self, session):
        out = session.outbox
        stats = self.totals + session.stats
        serial_status = {"port": self.port, "baud": self.baud, "mode": "text" if self.text else "json",
                         "session": f"{session.number}.{session.epoch}", "reopens": max(0, self.sessions - 1),
                         "crc": session.last_crc, "max_line": self.max_line,
                         "outbox_lines": out.lines, "outbox_pending_chars": out.pending_chars,
                         "outbox_peak_lines": out.peak_lines, "outbox_peak_pending_chars": out.peak_pending_chars,
                         "dropped_lines": out.dropped_lines}
        for key in STAT_KEYS:
            serial_status[key] = stats.get(key, 0)
        return {**self.service.status(), "serial": serial_status}

    def run(self, stop):
        """Serve until `stop` is set; then cancel the running reply, send the finals, close. Returns 0."""
        delay, waiting_since = 0.1, None
        while not stop.is_set():
            try:
                ser = self.open_port()
            except ValueError:
                self.service.stop(cancel_running=True, timeout=10.0)
                raise
            except Exception as exc:  # serial.SerialException or OSError: absent, busy, no permission
                if _errno_name(_open_errno(exc)) in ERRNO_FATAL:
                    self.service.stop(cancel_running=True, timeout=10.0)
                    raise OSError(f"--port {self.port}: {exc}") from None
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    log.warning("waiting for serial port %s (%s)", self.port, exc)
                stop.wait(delay)
                delay = min(delay * 2, self.reopen_max_s)
                continue
            self.sessions += 1
            if waiting_since is not None:
                log.info("serial port %s is back after %.1f s", self.port, time.monotonic() - waiting_since)
            delay, waiting_since = 0.1, None
            log.info("serving %s at %d baud, %s mode%s%s (session %d)", self.port, self.baud,
                     "text" if self.text else "JSON", ", RTS/CTS" if self.rtscts else "",
                     ", XON/XOFF" if self.xonxoff else "", self.sessions)
            session = PortSession(self, ser, self.sessions)
            self.session = session
            opened = time.monotonic()
            session.run(stop)
            if stop.is_set():
                log.info("stopping: cancelling the running reply and closing %s", self.port)
                session.shutdown(self.service)
                self.totals += session.stats
                return 0
            log.warning("lost serial port %s: %s; waiting for it to come back", self.port, session.lost_reason)
            session.abandon()
            self.totals += session.stats
            self.session = None
            waiting_since = time.monotonic()
            if time.monotonic() - opened < 5.0:
                # a port that opens but fails at once (a flaky adapter): back off instead of spinning
                stop.wait(delay)
                delay = min(delay * 2, self.reopen_max_s)
        self.service.stop(cancel_running=True, timeout=10.0)
        return 0


def _open_errno(exc):
    """The errno behind a failed open; pyserial keeps a termios failure only as the context."""
    number = getattr(exc, "errno", None)
    context = exc.__context__
    if number is None and context is not None and context.args and isinstance(context.args[0], int):
        number = context.args[0]
    return number


def _errno_name(number):
    import errno

    return errno.errorcode.get(number, "") if isinstance(number, int) else ""
