"""Framing of the serial protocol, as pure functions and small state machines (no I/O).

Lines. A message is one line of UTF-8 ended by "\\n", "\\r\\n" or a lone "\\r" (what a terminal
sends for Enter). `LineReader` cuts a byte stream into lines, never holding more than `max_line`
bytes: a longer line is reported once (`LineTooLong`) as soon as it passes the limit, and its
remaining bytes are dropped up to the next line end, where reading resynchronizes.

JSON lines. `decode_json_line` turns one line into a JSON object or raises `FramingError` with a
stable code. NULs, spaces and tabs around the line are ignored; bytes before the first "{" (noise
that arrived before the message on the same line) are skipped, so a message still gets through
when garbage precedes it.

CRC-32. An optional integrity check that a microcontroller can compute while it writes the line,
without building the JSON twice. The "crc" member is the LAST member of the object, written
exactly as

    ,"crc":"XXXXXXXX"}          (18 bytes: 8 hex digits, either case, then the closing brace)

and the checksum is CRC-32 (IEEE 802.3, as zlib/Ethernet/PNG: reflected polynomial 0xEDB88320,
initial value 0xFFFFFFFF, final XOR 0xFFFFFFFF; CRC of "123456789" is CBF43926) over the bytes
from the object's opening "{" up to, not including, the comma of ',"crc"'. Example:

    {"id":7,"prompt":"hi","crc":"<crc32 of the 22 bytes {"id":7,"prompt":"hi">"}

A receiver checks the last 18 bytes of the line and the CRC of everything before them.
"""
import json
import re
import zlib

from edge_runtime.serve.protocol import E_BAD_CRC, E_BAD_REQUEST, dumps


CRC_FIELD = "crc"
CRC_SUFFIX_LEN = 18                # len(',"crc":"XXXXXXXX"}')
_CRC_SUFFIX = re.compile(rb',"crc":"([0-9A-Fa-f]{8})"}\Z')
_PADDING = b"\x00 \t"              # ignored around a line: NULs from line breaks/resets, stray blanks
_MAX_START_CANDIDATES = 8          # "{" positions tried when noise precedes the message


class FramingError(ValueError):
    """A line that is not a valid message. `code` is one of the E_* codes of edge_runtime.serve.protocol."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class LineTooLong:
    """Event from LineReader: a line passed `limit` bytes; its bytes are dropped up to the next line end."""

    __slots__ = ("limit",)

    def __init__(self, limit):
        self.limit = limit

    def __repr__(self):
        return f"LineTooLong({self.limit})"


class LineReader:
    """Cuts bytes into lines (bytes, terminator removed), memory bounded by `max_line`."""

    def __init__(self, max_line):
        if not isinstance(max_line, int) or max_line < 16:
            raise ValueError(f"max_line must be an integer >= 16, got {max_line!r}")
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False     # inside an over-long line: drop bytes until its end
        self._after_cr = False       # the last byte seen was "\r": a following "\n" is the same line end
        self.discarded_bytes = 0     # total bytes dropped from over-long lines (for statistics)

    def reset(self):
        """Forget the partial line (after the port was reopened, or Ctrl-C in text mode)."""
        self._buf.clear()
        self._discarding = False
        self._after_cr = False

    @property
    def pending(self):
        """Bytes of the current partial line held."""
        return len(self._buf)

    def feed(self, data):
        """Returns the complete lines (bytes) and LineTooLong events found in `data`, in order."""
        events = []
        pos, end = 0, len(data)
        if self._after_cr and end and data[0] == 0x0A:
            pos = 1
        self._after_cr = False
        while pos < end:
            nl, cr = data.find(b"\n", pos), data.find(b"\r", pos)
            stop = min(i for i in (nl, cr, end) if i >= 0)
            self._take(data, pos, stop, events)
            if stop == end:
                break
            if self._discarding:
                self._discarding = False
            else:
                events.append(bytes(self._buf))
            self._buf.clear()
            pos = stop + 1
            if data[stop] == 0x0D:
                if pos < end and data[pos] == 0x0A:
                    pos += 1
                elif pos == end:
                    self._after_cr = True
        return events

    def _take(self, data, start, stop, events):
        """Appends data[start:stop] (no line end inside) to the partial line, within the limit."""
        n = stop - start
        if self._discarding:
            self.discarded_bytes += n
            return
        room = self.max_line - len(self._buf)
        if n <= room:
            self._buf += data[start:stop]
            return
        self.discarded_bytes += len(self._buf) + n
        self._buf.clear()
        self._discarding = True
        events.append(LineTooLong(self.max_line))


def crc32_hex(data):
    """CRC-32 (IEEE) of `data` as 8 upper-case hex digits."""
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08X}"


def add_crc(line):
    """A compact JSON object line (b'{...}', at least one member) with the crc member appended."""
    if len(line) < 3 or line[:1] != b"{" or line[-1:] != b"}":
        raise ValueError(f"add_crc needs a JSON object with at least one member, got {line[:40]!r}")
    covered = line[:-1]
    return covered + b',"crc":"' + crc32_hex(covered).encode("ascii") + b'"}'


def encode_json_line(obj, crc=False):
    """One message as a line: compact JSON (UTF-8, control characters escaped), optional crc, "\\n"."""
    line = dumps(obj).encode("utf-8")
    if crc:
        line = add_crc(line)
    return line + b"\n"


def _strip_crc(candidate):
    """(line without its crc member, True) when it ends with a correct one, (candidate, False) when
    it has none. A wrong CRC raises FramingError."""
    match = _CRC_SUFFIX.search(candidate)
    if match is None:
        return candidate, False
    covered = candidate[:-CRC_SUFFIX_LEN]
    want, got = match.group(1).decode("ascii").upper(), crc32_hex(covered)
    if want != got:
        raise FramingError(E_BAD_CRC, f"CRC-32 mismatch: the line says {want}, its {len(covered)} "
                                      f"covered bytes give {got}")
    return covered + b"}", True


def _decode_candidate(candidate, require_crc):
    body, had_crc = _strip_crc(candidate)
    if require_crc and not had_crc:
        raise FramingError(E_BAD_CRC, 'this service requires a CRC: end every line with '
                                      ',"crc":"XXXXXXXX"} (CRC-32 of the bytes before the comma)')
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FramingError(E_BAD_REQUEST, f"not valid UTF-8 at byte {exc.start} of the message") from None
    try:
        obj = json.loads(text)
    except RecursionError:
        raise FramingError(E_BAD_REQUEST, "JSON nested too deeply") from None
    except ValueError as exc:
        raise FramingError(E_BAD_REQUEST, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FramingError(E_BAD_REQUEST, f"a message must be a JSON object, got {type(obj).__name__}")
    if CRC_FIELD in obj:
        raise FramingError(E_BAD_CRC, 'a "crc" member must be the last one, written exactly as '
                                      ',"crc":"XXXXXXXX"} with 8 hex digits')
    return obj, had_crc


def decode_json_line(line, require_crc=False):
    """One received line -> (message dict, whether it carried a valid CRC), or None for an empty
    line. Raises FramingError for anything else."""
    line = bytes(line).strip(_PADDING)
    if not line:
        return None
    starts, pos = [], line.find(b"{")
    while pos >= 0 and len(starts) < _MAX_START_CANDIDATES:
        starts.append(pos)
        pos = line.find(b"{", pos + 1)
    if not starts:
        raise FramingError(E_BAD_REQUEST, f"not a JSON object: no '{{' in the {len(line)}-byte line")
    first_error = None
    for start in starts:
        try:
            return _decode_candidate(line[start:], require_crc)
        except FramingError as exc:
            if first_error is None:
                first_error = exc
    raise first_error


# ---------------------------------------------------------------------------------------------
# Text mode

ETX = 0x03          # Ctrl-C: cancels the answer being streamed
END_OF_ANSWER = "\r\n"   # the empty line that ends every answer


def clean_text_line(line):
    """A line typed at a terminal -> the text to answer, or None to skip it.

    Backspace (0x08) and DEL (0x7F) erase the character before them; NULs and blanks around the
    line are dropped. Raises FramingError for invalid UTF-8 or other control characters (noise,
    a wrong baud rate)."""
    line = bytes(line).strip(_PADDING)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FramingError(E_BAD_REQUEST, f"not valid UTF-8 at byte {exc.start}: check the baud rate") from None
    chars = []
    for ch in text:
        if ch in "\b\x7f":
            if chars:
                chars.pop()
        elif ch == "\t":
            chars.append(" ")
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            raise FramingError(E_BAD_REQUEST, f"control character 0x{ord(ch):02X} in the line: check the baud rate")
        else:
            chars.append(ch)
    text = "".join(chars).strip()
    return text or None


class TextRenderer:
    """Turns an answer's streamed text into terminal output that never contains an empty line, so
    that an empty line can end the answer: line breaks become "\\r\\n", runs of them collapse into
    one, a leading one is dropped, "\\r" and other control characters become "?" (they would move
    the cursor or change the terminal's state)."""

    def __init__(self):
        self.at_line_start = True

    def feed(self, text):
        out = []
        for ch in text:
            if ch == "\n":
                if not self.at_line_start:
                    out.append("\r\n")
                    self.at_line_start = True
                continue
            if ch == "\t":
                out.append(ch)
            elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
                out.append("?")
            else:
                out.append(ch)
            self.at_line_start = False
        return "".join(out)

    def end(self, note=None):
        """What closes the answer: the end of its last line, an optional "[note]" line, the empty line."""
        out = "" if self.at_line_start else "\r\n"
        if note:
            out += f"[{self.feed(note)}]\r\n"
        self.at_line_start = True
        return out + END_OF_ANSWER
