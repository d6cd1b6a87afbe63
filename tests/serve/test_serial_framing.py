"""Serial framing: line cutting with a length limit and resync, the CRC-32 member, JSON line
decoding, text-mode input cleaning and output rendering. Pure functions: no ports here."""
import json
import random
import re
import zlib

import pytest

from edge_runtime.serve.serial_framing import (
    CRC_SUFFIX_LEN, E_BAD_CRC, E_BAD_REQUEST, END_OF_ANSWER, FramingError, LineReader, LineTooLong,
    TextRenderer, add_crc, clean_text_line, crc32_hex, decode_json_line, encode_json_line)


def feed_all(reader, data, step):
    events = []
    for i in range(0, len(data), step):
        events += reader.feed(data[i:i + step])
    return events


# -- LineReader ---------------------------------------------------------------------------------

@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_line_ends_lf_crlf_and_lone_cr_in_any_chunking(step):
    data = b"one\ntwo\r\nthree\rfour\r\n\nfive"
    events = feed_all(LineReader(64), data, step)
    assert events == [b"one", b"two", b"three", b"four", b"", ]
    reader = LineReader(64)
    feed_all(reader, data, step)
    assert reader.pending == 4  # "five" waits for its line end
    assert reader.feed(b"\n") == [b"five"]


def test_cr_then_lf_in_the_next_read_is_one_line_end():
    reader = LineReader(64)
    assert reader.feed(b"abc\r") == [b"abc"]
    assert reader.feed(b"\ndef\n") == [b"def"]
    # but a CR followed later by other bytes does not swallow a later LF
    assert reader.feed(b"x\r") == [b"x"]
    assert reader.feed(b"y\n\n") == [b"y", b""]


@pytest.mark.parametrize("step", [1, 100, 4096, 1 << 20])
def test_over_long_line_reported_once_memory_bounded_then_resync(step):
    limit = 1024
    reader = LineReader(limit)
    events, peak = [], 0
    data = b'{"id":1}\n' + b"A" * (1 << 20) + b'\n{"id":2}\n'
    for i in range(0, len(data), step):
        events += reader.feed(data[i:i + step])
        peak = max(peak, reader.pending)
    assert peak <= limit
    assert events[0] == b'{"id":1}'
    assert isinstance(events[1], LineTooLong) and events[1].limit == limit
    assert events[2:] == [b'{"id":2}']
    assert reader.discarded_bytes == 1 << 20


def test_line_exactly_at_the_limit_passes_one_more_byte_does_not():
    reader = LineReader(16)
    assert reader.feed(b"x" * 16 + b"\n") == [b"x" * 16]
    events = reader.feed(b"y" * 17 + b"\nok\n")
    assert isinstance(events[0], LineTooLong) and events[1:] == [b"ok"]


def test_reset_drops_the_partial_line():
    reader = LineReader(64)
    reader.feed(b"half a li")
    reader.reset()
    assert reader.feed(b"ne\n") == [b"ne"]


def test_bad_limit_is_refused():
    with pytest.raises(ValueError, match="max_line"):
        LineReader(0)


# -- CRC ----------------------------------------------------------------------------------------

def test_crc32_is_the_ieee_check_value():
    assert crc32_hex(b"123456789") == "CBF43926"


def test_add_crc_covers_the_bytes_before_the_comma():
    line = b'{"id":7,"prompt":"hi"}'
    framed = add_crc(line)
    assert framed == b'{"id":7,"prompt":"hi","crc":"%s"}' % crc32_hex(b'{"id":7,"prompt":"hi"').encode()
    assert len(framed) - len(line) == CRC_SUFFIX_LEN - 1
    assert json.loads(framed)["crc"] == f"{zlib.crc32(framed[:-CRC_SUFFIX_LEN]):08X}"
    with pytest.raises(ValueError):
        add_crc(b"{}")


def test_encode_then_decode_with_and_without_crc():
    msg = {"id": "a", "prompt": "é ü 漢字 \n\t\x00 \x11\x13", "max_tokens": 3}
    for crc in (False, True):
        line = encode_json_line(msg, crc)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        # control characters (XON/XOFF included) never appear raw: they are JSON escapes
        assert not re.search(rb"[\x00-\x1f]", line[:-1])
        assert decode_json_line(line[:-1]) == (msg, crc)


def test_lower_case_crc_digits_are_accepted():
    line = b'{"ping":1}'
    crc = crc32_hex(b'{"ping":1').lower().encode()
    assert decode_json_line(b'{"ping":1,"crc":"' + crc + b'"}') == ({"ping": 1}, True)
    assert decode_json_line(line) == ({"ping": 1}, False)


def test_damaged_line_fails_its_crc():
    line = encode_json_line({"id": 3, "prompt": "hello world"}, crc=True)[:-1]
    damaged = line.replace(b"world", b"wprld")
    with pytest.raises(FramingError) as exc:
        decode_json_line(damaged)
    assert exc.value.code == E_BAD_CRC and "mismatch" in exc.value.message


def test_crc_member_not_last_or_malformed_is_refused():
    for line in (b'{"crc":"CBF43926","id":1}', b'{"id":1,"crc":12345678}', b'{"id":1,"crc":"XYZ"}',
                 b'{"id":1, "crc":"CBF43926"}'):
        with pytest.raises(FramingError) as exc:
            decode_json_line(line)
        assert exc.value.code == E_BAD_CRC, line


def test_required_crc_missing():
    with pytest.raises(FramingError) as exc:
        decode_json_line(b'{"ping":1}', require_crc=True)
    assert exc.value.code == E_BAD_CRC and "requires" in exc.value.message
    assert decode_json_line(encode_json_line({"ping": 1}, True)[:-1], require_crc=True) == ({"ping": 1}, True)


def test_nested_object_ending_like_a_crc_is_not_taken_for_one():
    line = b'{"id":1,"json_schema":{"type":"string","crc":"00000000"}}'
    assert decode_json_line(line) == (json.loads(line), False)


# -- decode_json_line: noise ------------------------------------------------------------------------

def test_empty_blank_and_nul_lines_are_skipped():
    for line in (b"", b"   ", b"\x00\x00\x00", b"\t \x00"):
        assert decode_json_line(line) is None


def test_garbage_before_the_message_is_skipped():
    good = encode_json_line({"id": 5, "prompt": "x"}, crc=True)[:-1]
    for junk in (b"\xff\xfe\x00", b"noise {broken ", b"{{{", b"\x13\x11"):
        assert decode_json_line(junk + good) == ({"id": 5, "prompt": "x"}, True)


@pytest.mark.parametrize("line, words", [
    (b'{"id":1,"prompt":"trunc', "JSON"),
    (b'{"id":1,"prompt":"\xff\xfe"}', "UTF-8"),
    (b"[1,2,3]", "no '{'"),
    (b'"{just a string}"', "JSON"),
    (b"\x00\x01\x02binary", "no '{'"),
])
def test_bad_lines_raise_bad_request_naming_the_problem(line, words):
    with pytest.raises(FramingError) as exc:
        decode_json_line(line)
    assert exc.value.code == E_BAD_REQUEST and words in exc.value.message


def test_random_noise_only_ever_raises_framing_error():
    rng = random.Random(5)
    alphabet = b'{}[]":,\\ \x00\xff\xc3abc123crc'
    for _ in range(3000):
        n = rng.randrange(0, 80)
        line = bytes(rng.choice(alphabet) if rng.random() < 0.7 else rng.randrange(256) for _ in range(n))
        try:
            result = decode_json_line(line)
        except FramingError as exc:
            assert exc.code in (E_BAD_REQUEST, E_BAD_CRC)
            continue
        assert result is None or isinstance(result[0], dict)


# -- text mode --------------------------------------------------------------------------------------

def test_clean_text_line():
    assert clean_text_line(b"  what is 2+2?\x00 ") == "what is 2+2?"
    assert clean_text_line(b"helo\x08lo\x7f\x7fp") == "help"
    assert clean_text_line(b"abc\x08\x08\x08\x08x") == "x"
    assert clean_text_line(b"tab\there") == "tab here"
    assert clean_text_line(b"\x00 \t") is None
    assert clean_text_line(b"x\x08") is None
    assert clean_text_line("héllo".encode()) == "héllo"
    for bad, words in ((b"\xff\xfe", "UTF-8"), (b"abc\x1b[2J", "0x1B"), (b"a\x02b", "0x02")):
        with pytest.raises(FramingError) as exc:
            clean_text_line(bad)
        assert exc.value.code == E_BAD_REQUEST and words in exc.value.message


def test_backspace_edits():
    assert clean_text_line(b"helo\x08lo") == "hello"
    assert clean_text_line(b"ab\x7fc") == "ac"


def render(pieces, note=None):
    r = TextRenderer()
    return "".join(r.feed(p) for p in pieces) + r.end(note)


def test_text_rendering_ends_with_the_only_empty_line():
    rng = random.Random(1)
    alphabet = "ab \n\n\r\t\x07é"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(3, len(text) + 1)))
        pieces = [text[i:j] for i, j in zip([0] + cuts, cuts + [len(text)])]
        note = rng.choice([None, "cancelled"])
        out = render(pieces, note)
        assert out.endswith(END_OF_ANSWER)
        lines = out.split("\r\n")
        # lines[-1] is what follows the final CRLF (nothing); the one before is the empty end marker
        assert lines[-1] == "" and lines[-2] == "" and all(lines[:-2]), repr(out)
        assert "\n" not in out.replace("\r\n", "") and "\r" not in out.replace("\r\n", "")
        assert out == render([text], note)  # the same whatever the chunking


def test_text_rendering_examples():
    assert render(["\n\nHello", "\n", "\n", "world\n"]) == "Hello\r\nworld\r\n\r\n"
    assert render(["a\x1b[2Jb"]) == "a?[2Jb\r\n\r\n"
    assert render([]) == "\r\n"
    assert render(["partial"], "cancelled") == "partial\r\n[cancelled]\r\n\r\n"
