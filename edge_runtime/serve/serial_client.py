"""`edge-runtime ask-serial`: ask one question of a board running `edge-runtime serve serial`
and print the streamed answer.

Exit codes: 0 the answer arrived whole (finish_reason stop or length); 1 it did not (error reply,
cancelled, no reply within --timeout, damaged lines, the port failed); 2 usage error.
"""
import json
import os
import sys
import time

from edge_runtime.serve import options
from edge_runtime.serve.protocol import E_BAD_CRC, E_BAD_REQUEST, E_DUPLICATE, E_LINE_TOO_LONG
from edge_runtime.serve.serial_framing import (FramingError, LineReader, LineTooLong, decode_json_line,
                                               encode_json_line)

DEFAULT_TIMEOUT_S = 120.0     # a big model on a small board can think for a while before its first token
RESENDS = 2                   # times a request the service reports as damaged is sent again
READ_SLICE_S = 0.1
CLIENT_MAX_LINE = 1 << 20     # the final line repeats the whole answer


class ClientError(Exception):
    """Printed as one line; exit code 1."""


def add_client_arguments(p):
    p.description = ("Ask a question of a board running `edge-runtime serve serial` and print the "
                     "streamed answer. Exit code 0 when it arrived whole, 1 otherwise, 2 on usage errors.")
    p.add_argument("question", nargs="?", help="the question (one line in --text mode)")
    p.add_argument("--port", required=True, metavar="DEV", help="serial device, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=options.int_in(50, 12_000_000), default=115200,
                   help="baud rate, 50..12000000 (default 115200)")
    p.add_argument("--crc", action="store_true", help="send a CRC-32 and check the one on every reply line")
    p.add_argument("--timeout", type=options.float_in(0, 86400, low_inclusive=False), default=DEFAULT_TIMEOUT_S,
                   metavar="S", help=f"seconds to wait for the next reply line, (0, 86400] "
                                     f"(default {DEFAULT_TIMEOUT_S:.0f})")
    p.add_argument("--text", action="store_true", help="the service runs in --text mode")
    p.add_argument("--ping", action="store_true", help="print the service's status instead of asking")
    p.add_argument("--raw", action="store_true", help="send the question as a raw prompt, not a chat message")
    p.add_argument("--system", default=None, help="system message (chat)")
    p.add_argument("-n", "--max-tokens", type=options.limit_type("max_tokens"), default=None,
                   help="maximum tokens to generate, 1..65536 (the service may cap it lower)")
    p.add_argument("--temp", type=options.request_field_type("temperature"), default=None,
                   help=f"temperature, {options.field_range('temperature')} (0 = greedy)")
    p.add_argument("--seed", type=options.request_field_type("seed"), default=None,
                   help=f"sampling seed, {options.field_range('seed')}")
    p.add_argument("--rtscts", action="store_true", help="hardware flow control (RTS/CTS)")
    p.add_argument("--xonxoff", action="store_true", help="software flow control (XON/XOFF)")


def _fail(message):
    print(f"edge-runtime ask-serial: error: {message}", file=sys.stderr)
    return 1


def client_main(args):
    if not args.ping and not args.question:
        print("edge-runtime ask-serial: error: give a question (or --ping)", file=sys.stderr)
        return 2
    if args.text and ("\n" in (args.question or "") or "\r" in (args.question or "") or args.ping):
        print("edge-runtime ask-serial: error: --text sends one line: no line breaks, no --ping", file=sys.stderr)
        return 2
    import serial

    try:
        port = serial.Serial(args.port, args.baud, timeout=READ_SLICE_S, rtscts=args.rtscts, xonxoff=args.xonxoff)
    except (serial.SerialException, OSError, ValueError) as exc:
        return _fail(f"cannot open {args.port}: {exc}")
    link = _Link(port)
    try:
        port.reset_input_buffer()
        if args.text:
            return _ask_text(link, args)
        if args.ping:
            return _ping(link, args)
        return _ask_json(link, args)
    except ClientError as exc:
        return _fail(str(exc))
    except serial.SerialException as exc:
        return _fail(f"{args.port}: {exc}")
    finally:
        port.close()


class _Link:
    """Lines from the port, with an inactivity timeout."""

    def __init__(self, port):
        self.port = port
        self.lines = LineReader(CLIENT_MAX_LINE)
        self.ready = []

    def send(self, data):
        self.port.write(data)
        self.port.flush()

    def next_line(self, timeout):
        """The next line (bytes) or LineTooLong; None after `timeout` seconds without one."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if time.monotonic() >= deadline:
                return None
            data = self.port.read(max(1, self.port.in_waiting))
            if data:
                self.ready.extend(self.lines.feed(data))
        return self.ready.pop(0)


def _request(args, request_id):
    msg = {"id": request_id}
    if args.raw:
        msg["prompt"] = args.question
    else:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        msg["messages"] = messages + [{"role": "user", "content": args.question}]
    for key, value in (("max_tokens", args.max_tokens), ("temperature", args.temp), ("seed", args.seed)):
        if value is not None:
            msg[key] = value
    return msg


def _decode(line, crc):
    """A reply line as a dict; None for empty or damaged lines (counted by the caller)."""
    try:
        decoded = decode_json_line(line, require_crc=crc)
    except FramingError:
        return False
    return decoded[0] if decoded else None


def _ping(link, args):
    link.send(b"\n" + encode_json_line({"ping": 1}, args.crc))
    while True:
        line = link.next_line(args.timeout)
        if line is None:
            raise ClientError(f"no pong from {args.port} within {args.timeout:g} s (is the service running, "
                              f"in JSON mode, at {args.baud} baud?)")
        if isinstance(line, LineTooLong):
            continue
        msg = _decode(line, args.crc)
        if isinstance(msg, dict) and msg.get("pong") == 1:
            print(json.dumps(msg, indent=2))
            return 0


def _ask_json(link, args):
    request_id = "ask-" + os.urandom(4).hex()
    request = encode_json_line(_request(args, request_id), args.crc)
    # the leading newline ends whatever partial line noise left in the service's buffer
    link.send(b"\n" + request)
    out = sys.stdout
    resends, expected_seq, damaged, answered = 0, 0, 0, False
    try:
        while True:
            line = link.next_line(args.timeout)
            if line is None:
                raise ClientError(f"no reply from {args.port} within {args.timeout:g} s")
            if isinstance(line, LineTooLong):
                damaged += 1
                continue
            msg = _decode(line, args.crc)
            if msg is False:
                damaged += 1
                continue
            if not isinstance(msg, dict):
                continue
            rid = msg.get("id")
            error = msg.get("error") if isinstance(msg.get("error"), dict) else {}
            if rid is None and error and not answered:
                # the service could not read a line: most likely our request, damaged on the wire
                if error.get("code") in (E_BAD_CRC, E_BAD_REQUEST, E_LINE_TOO_LONG) and resends < RESENDS:
                    resends += 1
                    print(f"edge-runtime ask-serial: the service reports a damaged line "
                          f"({error.get('message')}); sending again", file=sys.stderr)
                    link.send(b"\n" + request)
                continue
            if rid != request_id:
                continue
            if "seq" in msg and "done" not in msg:
                answered = True
                seq = msg.get("seq")
                if isinstance(seq, int) and seq > expected_seq:
                    damaged += seq - expected_seq
                expected_seq = (seq + 1) if isinstance(seq, int) else expected_seq + 1
                out.write(str(msg.get("text", "")))
                out.flush()
                continue
            if not msg.get("done"):
                continue
            if error.get("code") == E_DUPLICATE:
                continue  # our resend arrived after the original, which is being answered
            return _final(msg, answered, damaged, out)
    except KeyboardInterrupt:
        link.send(encode_json_line({"cancel": request_id}, args.crc))
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            line = link.next_line(0.2)
            msg = _decode(line, args.crc) if isinstance(line, bytes) else None
            if isinstance(msg, dict) and msg.get("id") == request_id and msg.get("done"):
                break
        out.write("\n")
        print("edge-runtime ask-serial: cancelled", file=sys.stderr)
        return 1


def _final(msg, answered, damaged, out):
    reason = msg.get("finish_reason")
    if reason == "error":
        error = msg.get("error") or {}
        raise ClientError(f"{error.get('code', 'error')}: {error.get('message', '')}")
    if not answered:
        out.write(str(msg.get("text", "")))
    out.write("\n")
    out.flush()
    if damaged:
        raise ClientError(f"{damaged} reply line(s) were lost or damaged on the wire: the answer above is incomplete")
    if reason not in ("stop", "length"):
        raise ClientError(f"the answer ended early: {reason}")
    return 0


def _ask_text(link, args):
    link.send(args.question.encode("utf-8") + b"\r\n")
    lines = []
    try:
        while True:
            line = link.next_line(args.timeout)
            if line is None:
                raise ClientError(f"no end of answer from {args.port} within {args.timeout:g} s")
            if isinstance(line, LineTooLong):
                continue
            if line == b"":
                break
            text = line.decode("utf-8", "replace")
            lines.append(text)
            print(text, flush=True)
    except KeyboardInterrupt:
        link.send(b"\x03")
        print("edge-runtime ask-serial: cancelled", file=sys.stderr)
        return 1
    last = lines[-1] if lines else ""
    if last == "[cancelled]" or last.startswith("[error: "):
        raise ClientError(f"the answer ended early: {last[1:-1]}")
    return 0
