"""`edge-runtime serve serial`: answer prompts arriving on a serial port (UART, USB adapter, pty).

JSON mode (default): one JSON object per line, replies in the shapes of edge_runtime.serve.service:
    {"id": 7, "prompt": "...", ...options}   ->  {"id": 7, "seq": n, "text": "..."} ... then
                                                 {"id": 7, "done": true, "text", "finish_reason", ...}
    {"cancel": 7}                            ->  {"cancel": 7, "ok": true} (then the final "cancelled" line)
    {"ping": 1}                              ->  {"pong": 1, ...status, "serial": {...}}
    {"hello": 1}                             ->  {"hello": 1, "session": "3.1"}: a new id namespace
Text mode (--text): a line in, the answer out, ended by an empty line; Ctrl-C cancels.
Framing, CRC and line limits: edge_runtime.serve.serial_framing.

Threads: the main thread reads the port, a writer thread drains an Outbox to it, the service's
worker generates. Reading never waits on writing, so a cancel is seen while a reply crawls out
at 9600 baud; when the link lags, streamed text is merged into fewer, longer chunk lines instead
of queuing one line per token. If the port goes away (adapter unplugged) the running reply is
cancelled and the port is reopened when it comes back.

Duplicate requests: an id is remembered per (port session, hello epoch). Reopening the port or
sending {"hello": ...} starts a fresh namespace, so a microcontroller that reboots and counts ids
from 1 again is not refused.
"""
import argparse
import collections
import dataclasses
import logging
import os
import select
import signal
import stat
import sys
import threading
import time

from edge_runtime.serve.serial_framing import (
    E_BAD_REQUEST, E_LINE_TOO_LONG, ETX, FramingError, LineReader, LineTooLong, TextRenderer,
    clean_text_line, decode_json_line, encode_json_line)
from edge_runtime.board.device_config import KERNEL_HELP
from edge_runtime.serve.service import GenerationService, Limits, RequestError, error_reply, parse_request

log = logging.getLogger("edge_runtime.serve.serial")

DEFAULT_BAUD = 115200
DEFAULT_MAX_LINE = 65536      # bytes; a prompt at the service's 16384-character limit fits as JSON
CHUNK_CHARS = 256             # most text in one chunk line when pieces are merged on a slow link
CONTROL_QUEUE = 64            # unsent pongs/acks/errors held; beyond this they are dropped
NOISE_REPLIES_PER_S = 4.0     # error lines answering noise; more noise is counted, not answered
READ_SIZE = 4096
POLL_S = 0.2                  # blocked loops look at their stop flags this often
DRAIN_S = 3.0                 # at shutdown, time for the writer to send the final lines
REOPEN_MAX_S = 2.0            # cap of the backoff between attempts to reopen a vanished port
ERRNO_FATAL = {"ENOTTY"}      # open errors that waiting will not fix
STAT_KEYS = ("bytes_in", "bytes_out", "lines_in", "lines_out", "requests", "noise_lines", "noise_unanswered",
             "lines_too_long")


@dataclasses.dataclass
class SerialContext:
    reply_key: object             # (port session, hello epoch): the service's duplicate namespace
    crc: bool                     # replies carry a crc member


class ReplyStream:
    """What is still to be written for one request: merged text, then its final line."""

    __slots__ = ("id", "crc", "streaming", "pending", "pending_chars", "sent_chars", "seq", "final",
                 "cancelled", "renderer")

    def __init__(self, request_id, crc, streaming, renderer=None):
        self.id = request_id
        self.crc = crc
        self.streaming = streaming
        self.pending = []             # text pieces generated, not yet written
        self.pending_chars = 0
        self.sent_chars = 0
        self.seq = 0                  # the next chunk line's seq: 0, 1, 2 ... without gaps
        self.final = None
        self.cancelled = False        # unsent text dropped; the final says "cancelled"
        self.renderer = renderer      # text mode only


class Outbox:
    """Lines waiting for the writer, bounded: at most `max_control` single lines (pongs, acks,
    errors), and one ReplyStream per accepted request whose text grows only with what the model
    generated (capped by max_tokens). Replies are written whole, in order of arrival; single lines
    go first."""

    def __init__(self, max_control=CONTROL_QUEUE, chunk_chars=CHUNK_CHARS):
        self._cond = threading.Condition()
        self._control = collections.deque()
        self._streams = collections.deque()
        self.max_control = max_control
        self.chunk_chars = chunk_chars
        self.closed = False
        self.dropped_lines = 0
        self.peak_lines = 0
        self.peak_pending_chars = 0
        self._pending_chars = 0

    def _note_peak(self):
        self.peak_lines = max(self.peak_lines, len(self._control) + len(self._streams))
        self.peak_pending_chars = max(self.peak_pending_chars, self._pending_chars)

    def put_control(self, msg, crc=False):
        """Queue one line; False (and counted) when the queue is full or closed."""
        with self._cond:
            if self.closed or len(self._control) >= self.max_control:
                self.dropped_lines += 1
                return False
            self._control.append((msg, crc))
            self._note_peak()
            self._cond.notify()
            return True

    def open_stream(self, request_id, crc, streaming, renderer=None):
        stream = ReplyStream(request_id, crc, streaming, renderer)
        with self._cond:
            self._streams.append(stream)
            self._note_peak()
        return stream

    def discard_stream(self, stream):
        with self._cond:
            if stream in self._streams:
                self._streams.remove(stream)
                self._pending_chars -= stream.pending_chars

    def add_text(self, stream, text):
        with self._cond:
            if self.closed or stream.cancelled or not text:
                return
            stream.pending.append(text)
            stream.pending_chars += len(text)
            self._pending_chars += len(text)
            self._note_peak()
            self._cond.notify()

    def finish(self, stream, final):
        with self._cond:
            stream.final = final
            self._cond.notify()

    def cancel_stream(self, stream):
        """Drop the stream's unsent text; its final will say cancelled."""
        with self._cond:
            stream.cancelled = True
            self._pending_chars -= stream.pending_chars
            stream.pending, stream.pending_chars = [], 0

    def open_streams(self, request_id=None):
        """Streams whose final line is not written yet (all, or those of one request id)."""
        with self._cond:
            return [s for s in self._streams if request_id is None or _same_id(s.id, request_id)]

    @property
    def pending_chars(self):
        return self._pending_chars

    @property
    def lines(self):
        return len(self._control) + len(self._streams)

    def close(self):
        """No more input; take() returns None once everything queued is written."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def empty(self):
        with self._cond:
            return not self._control and not self._streams

    def take(self, timeout):
        """The next thing to write: ("control", msg, crc), ("chunk", stream, text, seq) or
        ("final", stream, final); None if nothing came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._control:
                    msg, crc = self._control.popleft()
                    return ("control", msg, crc)
                if self._streams:
                    stream = self._streams[0]
                    if stream.pending_chars:
                        text = "".join(stream.pending)
                        piece, rest = text[:self.chunk_chars], text[self.chunk_chars:]
                        stream.pending = [rest] if rest else []
                        stream.pending_chars = len(rest)
                        self._pending_chars -= len(piece)
                        seq, stream.seq = stream.seq, stream.seq + 1
                        stream.sent_chars += len(piece)
                        return ("chunk", stream, piece, seq)
                    if stream.final is not None:
                        self._streams.popleft()
                        return ("final", stream, _final_as_sent(stream))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)


def _same_id(a, b):
    return type(a) is type(b) and a == b


def _final_as_sent(stream):
    """The final reply, after a cancel of a reply whose text was not all sent: finish_reason
    "cancelled" and the text that was sent, so the chunks always add up to the final text."""
    final = stream.final
    if not stream.cancelled or final.get("finish_reason") == "error":
        return final
    final = dict(final, finish_reason="cancelled")
    if stream.streaming:
        final["text"] = final.get("text", "")[:stream.sent_chars]
    return final


class NoiseLimiter:
    """Token bucket: how many noise lines get an error reply (the rest are only counted), so a
    wrong baud rate cannot flood the link with error lines."""

    def __init__(self, rate=NOISE_REPLIES_PER_S, burst=8):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), time.monotonic()

    def allow(self):
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


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
        for verb, handler in (("ping", self._on_ping), ("cancel", self._on_cancel), ("hello", self._on_hello)):
            if verb in msg:
                extra = sorted(set(msg) - {verb})
                if extra:
                    self.outbox.put_control(error_reply(None, E_BAD_REQUEST, f"a \"{verb}\" message has "
                                                        f"no other fields, got {', '.join(extra)}"), crc)
                else:
                    handler(msg[verb], crc)
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
            reply["error"] = {"code": "not_found",
                              "message": f"no request {request_id!r} is queued, running or being sent"}
        self.outbox.put_control(reply, crc)

    def _cancel(self, request_id):
        streams = self.outbox.open_streams(request_id)
        for stream in streams:
            self.outbox.cancel_stream(stream)
        found = self.server.service.cancel(request_id)
        if found or streams:
            log.info("request %r cancelled", request_id)
        return bool(found or streams)

    def _submit(self, msg, crc, renderer=None):
        context = SerialContext(reply_key=(self.number, self.epoch), crc=crc)
        try:
            req = parse_request(msg, self.server.limits, context)
        except RequestError as exc:
            self.outbox.put_control(error_reply(exc.request_id, exc.code, exc.message), crc)
            return
        stream = self.outbox.open_stream(req.id, crc, req.stream, renderer)
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
                self.server.service.cancel(stream.id)
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
                data = self._encode(item)
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
            self.server.service.cancel(stream.id)
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
                self.outbox.finish(stream, {"id": stream.id, "done": True, "text": "", "finish_reason": "cancelled",
                                            "usage": {}, "timings": {}})
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
                 reopen_max_s=REOPEN_MAX_S):
        self.service = service
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


# ---------------------------------------------------------------------------------------------
# command line

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_arguments(p):
    p.description = ("Answer prompts arriving on a serial port: newline-delimited JSON (or plain text "
                     "with --text). The port is waited for and reopened if it vanishes; SIGTERM "
                     "cancels the running reply and exits 0.")
    p.add_argument("-m", "--model", default=None, help="model file (GGUF); default: the packaged model")
    p.add_argument("--config", default=None, metavar="FILE|NAME",
                   help="board config (device_configs/*.toml or a built-in name): its [serial] section "
                        "and threads/n_ctx/cpu_affinity/mmap/mlock are the defaults, memory_budget_mb the limit")
    p.add_argument("--port", default=None, metavar="DEV", help="serial device, e.g. /dev/ttyUSB0, /dev/serial0")
    p.add_argument("--baud", type=_positive_int, default=None, help=f"baud rate (default {DEFAULT_BAUD})")
    p.add_argument("--text", action="store_true", default=None,
                   help="plain-text mode for a terminal: a line in, the answer out, ended by an empty line")
    p.add_argument("--rtscts", action="store_true", help="hardware flow control (RTS/CTS)")
    p.add_argument("--xonxoff", action="store_true", help="software flow control (XON/XOFF)")
    p.add_argument("--crc", action="store_true",
                   help="require a CRC-32 on every JSON line (replies always carry one)")
    p.add_argument("--max-line", type=_positive_int, default=DEFAULT_MAX_LINE, metavar="BYTES",
                   help=f"longest accepted line; longer ones are discarded (default {DEFAULT_MAX_LINE})")
    p.add_argument("-n", "--max-tokens", type=_positive_int, default=None,
                   help="max_tokens of requests that do not say (default 256)")
    p.add_argument("--max-request-tokens", type=_positive_int, default=None,
                   help="largest max_tokens a request may ask for (default 1024)")
    p.add_argument("--queue", type=int, default=None, help="requests waiting behind the running one (default 4)")
    p.add_argument("--temp", type=float, default=None, help="temperature of text-mode requests (default 0.8)")
    p.add_argument("-t", "--threads", type=_positive_int, default=None, help="threads (default: board config or big cores)")
    p.add_argument("--ctx", type=_positive_int, default=None, help="context size in tokens (default: board config or 2048)")
    p.add_argument("--kernel", default=None, help=KERNEL_HELP)
    p.add_argument("--mlock", action="store_true", default=None, help="lock the model in RAM")
    p.add_argument("--no-mmap", action="store_true", default=None, help="read the model into memory")
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _usage_error(message):
    print(f"edge-runtime serve serial: error: {message}", file=sys.stderr)
    return 2


def _load_model(args, config):
    from edge_runtime.serve.service import load_model_for_board

    return load_model_for_board(args.model, config, threads=args.threads, n_ctx=args.ctx, no_mmap=args.no_mmap,
                                mlock=args.mlock, kernel=args.kernel, seed=args.seed)


def main(args):
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = None
    if args.config:
        from edge_runtime.board.device_config import find_config

        config = find_config(args.config)
    port = args.port or (config.serial.port if config else None)
    if not port:
        return _usage_error("no serial port: give --port DEV (or a --config whose [serial] port is set)")
    baud = args.baud or (config.serial.baud if config else DEFAULT_BAUD)
    text = bool(args.text) or bool(config and config.serial.text)
    if args.max_line < 64:
        return _usage_error(f"--max-line {args.max_line}: expected at least 64 bytes")
    if args.queue is not None and args.queue < 0:
        return _usage_error(f"--queue {args.queue}: expected 0 or more")
    defaults = Limits()
    limits = Limits(max_tokens=args.max_request_tokens or defaults.max_tokens,
                    default_max_tokens=args.max_tokens or defaults.default_max_tokens,
                    queue_size=defaults.queue_size if args.queue is None else args.queue)
    if limits.default_max_tokens > limits.max_tokens:
        return _usage_error(f"--max-tokens {limits.default_max_tokens} is above --max-request-tokens "
                            f"{limits.max_tokens}")
    text_options = {} if args.temp is None else {"temperature": args.temp}

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    model = None
    try:
        model = _load_model(args, config)
        service = GenerationService(model, limits).start()
        log.info("model %s loaded (%d threads, kernel %s)", model.name, model.n_threads, model.kernel)
        server = SerialServer(service, port, baud, text=text, rtscts=args.rtscts, xonxoff=args.xonxoff,
                              max_line=args.max_line, require_crc=args.crc, text_options=text_options,
                              limits=limits)
        rc = server.run(stop)
        log.info("stopped")
        return rc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if model is not None:
            model.close()


# the client lives in its own module; the CLI finds it here
from edge_runtime.serve.serial_client import add_client_arguments, client_main  # noqa: E402,F401
