"""The serial writer's queue: what is still to be written to the port, bounded, in order.

Single lines (pongs, acks, errors) go first, at most `max_control` of them; every accepted request
has one ReplyStream whose text grows only with what the model generated and is merged into chunk
lines of up to `chunk_chars` when the link is slower than generation. `NoiseLimiter` caps how many
noise lines get an error reply.
"""
import collections
import threading
import time

CHUNK_CHARS = 256             # most text in one chunk line when pieces are merged on a slow link
CONTROL_QUEUE = 64            # unsent pongs/acks/errors held; beyond this they are dropped
NOISE_REPLIES_PER_S = 4.0     # error lines answering noise; more noise is counted, not answered


class ReplyStream:
    """What is still to be written for one request: merged text, then its final line."""

    __slots__ = ("id", "key", "crc", "streaming", "pending", "pending_chars", "sent_chars", "seq", "final",
                 "cancelled", "renderer")

    def __init__(self, request_id, crc, streaming, renderer=None, key=None):
        self.id = request_id
        self.key = key                # the request's reply key (port session, hello epoch)
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

    def open_stream(self, request_id, crc, streaming, renderer=None, key=None):
        stream = ReplyStream(request_id, crc, streaming, renderer, key)
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

    def open_streams(self, request_id=None, key=None):
        """Streams whose final line is not written yet (all, or those of one request id and key)."""
        with self._cond:
            return [s for s in self._streams
                    if request_id is None or (_same_id(s.id, request_id) and s.key == key)]

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
