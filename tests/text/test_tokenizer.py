"""The Llama-3 tokenizer against Hugging Face `tokenizers` (the reference), plus the 2B4T chat format."""

import lzma
import os
import random
import time

import pytest
from tokenizers import Tokenizer as ReferenceTokenizer
from tokenizers import Regex
from tokenizers import pre_tokenizers

from edge_runtime.text.chat_format import encode_chat, render_chat_text
from edge_runtime.text.tokenizer import (
    LLAMA3_PRETOKENIZER_PATTERN,
    InvalidUTF8Error,
    Tokenizer,
    TokenType,
    pretokenize,
)
from tokenizer_corpus import EDGE_CASES, build_corpus, build_long_prompt

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "llama3-tokenizer.json.xz")

BOS, EOS, EOT = 128000, 128001, 128009


@pytest.fixture(scope="module")
def fixture_json() -> str:
    with lzma.open(FIXTURE, "rt", encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_tokenizer_json(FIXTURE)


@pytest.fixture(scope="module")
def reference(fixture_json) -> ReferenceTokenizer:
    """Reference with special tokens recognised in text (our special=True)."""
    return ReferenceTokenizer.from_str(fixture_json)


@pytest.fixture(scope="module")
def reference_plain(fixture_json) -> ReferenceTokenizer:
    """Reference with special tokens encoded as text (our special=False)."""
    ref = ReferenceTokenizer.from_str(fixture_json)
    ref.encode_special_tokens = True
    return ref


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return build_corpus()


def reference_ids(ref, texts):
    return [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)]


def assert_same_ids(ours, theirs, texts, label):
    mismatches = [(t, a, b) for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not mismatches, (
        f"{label}: {len(mismatches)} of {len(texts)} strings differ; first: "
        f"{mismatches[0][0]!r:.200}\n ours {mismatches[0][1]!s:.400}\n ref  {mismatches[0][2]!s:.400}"
    )


# -- parity with the reference ---------------------------------------------------------------


def test_corpus_is_large_and_deterministic(corpus):
    assert len(corpus) >= 2000
    assert build_corpus() == corpus
    assert build_corpus(seed=99) != corpus


def test_corpus_matches_reference_special_false(tok, reference_plain, corpus):
    ours = [tok.encode(s) for s in corpus]
    assert_same_ids(ours, reference_ids(reference_plain, corpus), corpus, "special=False")


def test_corpus_matches_reference_special_true(tok, reference, corpus):
    ours = [tok.encode(s, special=True) for s in corpus]
    assert_same_ids(ours, reference_ids(reference, corpus), corpus, "special=True")


def test_bytes_input_equals_str_input(tok, corpus):
    for s in corpus[:300]:
        assert tok.encode(s.encode("utf-8")) == tok.encode(s)


def test_every_code_point_pretokenizes_like_reference():
    """Each code point in contexts that tell letter / number / space / line break / other apart."""
    split = pre_tokenizers.Split(Regex(LLAMA3_PRETOKENIZER_PATTERN), "isolated")
    code_points = [cp for cp in range(0x40000) if not 0xD800 <= cp < 0xE000]
    code_points += list(range(0xE0000, 0xE0200))
    code_points += random.Random(5).sample(range(0x40000, 0xE0000), 2000)
    code_points += random.Random(6).sample(range(0xF0000, 0x110000), 2000)
    chunk = 512
    for start in range(0, len(code_points), chunk):
        text = "".join(
            f"a{c}1{c}!{c} {c}{c}x'{c}y\n" for c in map(chr, code_points[start:start + chunk])
        )
        theirs = [piece for piece, _ in split.pre_tokenize_str(text)]
        ours = pretokenize(text)
        if ours != theirs:
            first = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
            pytest.fail(
                f"code points from U+{code_points[start]:04X}: word {first} ours {ours[first]!r} "
                f"ref {theirs[first]!r}"
            )


def test_contractions_fold_case_like_reference(tok, reference_plain):
    texts = [
        f"{stem}'{tail}{end}"
        for stem in ("it", "", " ", "1")
        for tail in ("s", "S", "\u017f", "t", "T", "re", "RE", "Re", "rE", "ve", "VE", "m", "M",
                     "ll", "LL", "Ll", "lL", "d", "D", "r", "l", "v", "\u212a", "\u0131")
        for end in ("", "x", "xy", " ", "'")
    ]
    split = pre_tokenizers.Split(Regex(LLAMA3_PRETOKENIZER_PATTERN), "isolated")
    for text in texts:
        assert pretokenize(text) == [piece for piece, _ in split.pre_tokenize_str(text)], repr(text)
    ours = [tok.encode(s) for s in texts]
    assert_same_ids(ours, reference_ids(reference_plain, texts), texts, "contractions")


def test_long_words_and_runs_match_reference(tok, reference_plain):
    rng = random.Random(3)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    texts = [
        " " * 5000 + "x",
        "\t" * 777,
        "\n" * 1000 + " a",
        "".join(rng.choice(letters) for _ in range(3000)),
        "".join(rng.choice("\u4e00\u4e01\u4e02\u4e03\u4e8c\u4e09") for _ in range(1500)),
        "\U0001f600\u200d" * 500,
        "-=" * 1000,
        "9" * 4001,
    ]
    ours = [tok.encode(s) for s in texts]
    assert_same_ids(ours, reference_ids(reference_plain, texts), texts, "long runs")


def test_ignore_merges_flag_matches_reference(fixture_json, tok, reference_plain):
    """Llama-3 has vocabulary words that merging alone would split; the flag keeps them whole."""
    import json

    words = [" vi\u1ec7c", " h\u1ee3p", " nhi\u1ec1u", " \u0111i\u1ec1u", " jeho"]
    text = "T\u00f4i c\u00f3" + "".join(words) + "."
    assert all(len(tok.encode(w)) == 1 for w in words)
    assert tok.encode(text) == reference_plain.encode(text, add_special_tokens=False).ids

    spec = json.loads(fixture_json)
    spec["model"]["ignore_merges"] = False
    merging = Tokenizer.from_tokenizer_json(spec)
    merging_reference = ReferenceTokenizer.from_str(json.dumps(spec))
    assert all(len(merging.encode(w)) > 1 for w in words)
    assert merging.encode(text) == merging_reference.encode(text, add_special_tokens=False).ids
    with pytest.raises(ValueError, match="ignore_merges"):
        merging.to_gguf_metadata()


# -- special tokens ---------------------------------------------------------------------------


def test_special_ids_and_vocab(tok):
    assert tok.n_vocab == 128256
    assert (tok.bos_id, tok.eos_id, tok.eot_id) == (BOS, EOS, EOT)
    assert tok.token_bytes(EOT) == b"<|eot_id|>"
    assert tok.token_type(EOT) == TokenType.CONTROL
    assert tok.is_end_of_generation(EOT) and tok.is_end_of_generation(EOS)
    assert not tok.is_end_of_generation(BOS) and not tok.is_end_of_generation(13)
    assert tok.special_token_id("<|start_header_id|>") == 128006


def test_special_tokens_in_text(tok, reference, reference_plain):
    text = "<|begin_of_text|>User: hi<|eot_id|><|eot_id|>x<|reserved_special_token_250|>"
    as_control = tok.encode(text, special=True)
    assert as_control[0] == BOS and as_control[-1] == 128255
    assert as_control.count(EOT) == 2
    assert as_control == reference.encode(text, add_special_tokens=False).ids
    as_text = tok.encode(text, special=False)
    assert not set(as_text) & {BOS, EOT, 128255}
    assert as_text == reference_plain.encode(text, add_special_tokens=False).ids
    assert tok.decode(as_text) == tok.decode(as_control) == text.encode()
    assert tok.encode("<|eot_id|>", special=True) == [EOT]
    assert len(tok.encode("<|eot_id|>")) > 1


def test_add_bos(tok):
    assert tok.encode("Hello", add_bos=True) == [BOS] + tok.encode("Hello")
    assert tok.encode("", add_bos=True) == [BOS]
    assert tok.encode("") == []


def test_user_defined_tokens_match_in_any_mode(tok):
    metadata = tok.to_gguf_metadata()
    types = list(metadata["tokenizer.ggml.token_type"])
    marker = metadata["tokenizer.ggml.tokens"].index("<|reserved_special_token_5|>")
    types[marker] = TokenType.USER_DEFINED
    custom = Tokenizer.from_gguf_metadata(
        metadata["tokenizer.ggml.tokens"], metadata["tokenizer.ggml.merges"], types
    )
    text = "a<|reserved_special_token_5|>b<|eot_id|>"
    plain = custom.encode(text, special=False)
    assert marker in plain and EOT not in plain
    assert custom.encode(text, special=True)[-1] == EOT


# -- decoding ---------------------------------------------------------------------------------


def test_round_trip(tok, corpus):
    for s in corpus:
        assert tok.decode(tok.encode(s)) == s.encode("utf-8"), repr(s)
        assert tok.decode(tok.encode(s, special=True)) == s.encode("utf-8"), repr(s)


def test_decode_skip_special(tok):
    ids = tok.encode("<|begin_of_text|>Hi<|eot_id|>", special=True)
    assert tok.decode(ids, skip_special=True) == b"Hi"


def test_token_bytes(tok):
    (the,) = tok.encode(" the")
    assert tok.token_bytes(the) == b" the"
    assert tok.token_bytes(220) == b" "


def test_stream_decoder_yields_only_complete_text(tok, corpus):
    multibyte = [s for s in corpus if any(ord(c) > 0x7F for c in s)]
    assert len(multibyte) > 300
    held_back = 0
    for s in multibyte:
        decoder = tok.stream_decoder()
        pieces = []
        for token_id in tok.encode(s):
            piece = decoder.feed(token_id)
            piece.encode("utf-8")  # raises on a lone surrogate, i.e. a split character
            held_back += piece == ""
            pieces.append(piece)
        pieces.append(decoder.flush())
        assert "".join(pieces) == s
    assert held_back > 0  # some tokens do end inside a character


def test_stream_decoder_holds_back_and_flushes(tok):
    emoji = "\U0001f600"  # 4 bytes: split over several byte tokens
    ids = tok.encode(emoji)
    assert len(ids) > 1
    decoder = tok.stream_decoder()
    assert [decoder.feed(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert decoder.feed(ids[-1]) == emoji
    decoder.feed(ids[0])
    assert decoder.flush() == "\ufffd"
    assert decoder.flush() == ""
    skipping = tok.stream_decoder(skip_special=True)
    assert skipping.feed(EOT) == "" and skipping.feed(tok.encode("ok")[0]) == "ok"


def test_decode_rejects_bad_ids(tok):
    with pytest.raises(ValueError, match="128256"):
        tok.decode([1, 128256])
    with pytest.raises(ValueError, match="-1"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="not an integer"):
        tok.decode(["7"])
    with pytest.raises(ValueError, match="999999"):
        tok.token_bytes(999999)


@pytest.mark.parametrize(
    "data, offset",
    [
        (b"abc\xff", 3),
        (b"\xe4\xbd", 0),
        (b"ok \xc0\xaf", 3),
        (b"12\xed\xa0\x80", 2),
        (b"\xf0\x9f\x98\x80 then \x80", 10),
    ],
)
def test_invalid_utf8_names_offset(tok, data, offset):
    with pytest.raises(InvalidUTF8Error, match=f"offset {offset}") as info:
        tok.encode(data)
    assert info.value.offset == offset
    assert isinstance(info.value, ValueError)


def test_lone_surrogate_in_str_rejected(tok):
    with pytest.raises(ValueError, match="offset 2"):
        tok.encode("ab\ud800c")


# -- GGUF metadata ----------------------------------------------------------------------------


def test_gguf_metadata_round_trip(tok, corpus):
    metadata = tok.to_gguf_metadata()
    assert metadata["tokenizer.ggml.model"] == "gpt2"
    assert metadata["tokenizer.ggml.pre"] == "llama-bpe"
    assert len(metadata["tokenizer.ggml.tokens"]) == 128256
    assert len(metadata["tokenizer.ggml.merges"]) == 280147
    assert metadata["tokenizer.ggml.merges"][0] == "\u0120 \u0120"
    types = metadata["tokenizer.ggml.token_type"]
    assert set(types[:128000]) == {TokenType.NORMAL} and set(types[128000:]) == {TokenType.CONTROL}
    assert (metadata["tokenizer.ggml.bos_token_id"], metadata["tokenizer.ggml.eos_token_id"],
            metadata["tokenizer.ggml.eot_token_id"]) == (BOS, EOS, EOT)

    rebuilt = Tokenizer.from_gguf_metadata(
        metadata["tokenizer.ggml.tokens"],
        metadata["tokenizer.ggml.merges"],
        metadata["tokenizer.ggml.token_type"],
        pre=metadata["tokenizer.ggml.pre"],
        bos_id=metadata["tokenizer.ggml.bos_token_id"],
        eos_id=metadata["tokenizer.ggml.eos_token_id"],
        eot_id=metadata["tokenizer.ggml.eot_token_id"],
    )
    assert rebuilt.to_gguf_metadata() == metadata
    for s in corpus[::3]:
        assert rebuilt.encode(s) == tok.encode(s), repr(s)
        assert rebuilt.encode(s, special=True) == tok.encode(s, special=True), repr(s)
    assert all(rebuilt.token_bytes(i) == tok.token_bytes(i) for i in range(tok.n_vocab))


def test_gguf_metadata_ids_default_from_token_text(tok):
    metadata = tok.to_gguf_metadata()
    rebuilt = Tokenizer.from_gguf_metadata(
        metadata["tokenizer.ggml.tokens"], metadata["tokenizer.ggml.merges"],
        metadata["tokenizer.ggml.token_type"], eos_id=EOT,
    )
    assert (rebuilt.bos_id, rebuilt.eos_id, rebuilt.eot_id) == (BOS, EOT, EOT)


def _small_vocab():
    """A 260-token byte-level vocabulary: the 256 bytes, two merges, two control tokens."""
    from edge_runtime.text.tokenizer import _BYTE_TO_CHAR

    tokens = list(_BYTE_TO_CHAR) + ["ab", "abc", "<|begin_of_text|>", "<|eot_id|>"]
    types = [TokenType.NORMAL] * 258 + [TokenType.CONTROL] * 2
    return tokens, ["a b", "ab c"], types


def test_small_gguf_vocabulary():
    tokens, merges, types = _small_vocab()
    small = Tokenizer.from_gguf_metadata(tokens, merges, types)
    assert small.encode("abc abd") == [257, 32, 256, 100]
    assert small.decode(small.encode("abc abd")) == b"abc abd"
    assert (small.bos_id, small.eos_id, small.eot_id) == (258, None, 259)
    assert small.is_end_of_generation(259) and not small.is_end_of_generation(258)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t, m, y: (t, m, y[:-1]), "259 token types"),
        (lambda t, m, y: (t, m + ["x yz"], y), "'yz' is not a normal token"),
        (lambda t, m, y: (t, m + ["a  b"], y), "two tokens separated by one space"),
        (lambda t, m, y: (t, m, y[:-1] + [9]), "unknown token type 9"),
        (lambda t, m, y: (t[1:] + ["zz"], m, y), "no normal token for byte 0x00"),
        (lambda t, m, y: (t[:5] + ["\u4e00"] + t[6:], m, y), "not in the byte-level alphabet"),
        (lambda t, m, y: (t, m, y[:32] + [TokenType.BYTE] + y[33:]), "<0xXX>"),
        (lambda t, m, y: (t, m, y[:-1] + ["3"]), r"token_type\[259\] = '3'; expected an integer"),
        (lambda t, m, y: (None, m, y), "tokenizer.ggml.tokens: expected a list, got NoneType"),
        (lambda t, m, y: (t[:-1] + [b"<|eot_id|>"], m, y), "token 259: expected a str, got bytes"),
    ],
)
def test_bad_gguf_metadata_rejected(change, message):
    tokens, merges, types = change(*_small_vocab())
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_gguf_metadata(tokens, merges, types)


def test_bad_gguf_pre_and_ids_rejected():
    tokens, merges, types = _small_vocab()
    with pytest.raises(ValueError, match="tokenizer.ggml.pre = 'gpt-2'"):
        Tokenizer.from_gguf_metadata(tokens, merges, types, pre="gpt-2")
    with pytest.raises(ValueError, match="eos_id"):
        Tokenizer.from_gguf_metadata(tokens, merges, types, eos_id=999)


def test_byte_tokens_decode():
    tokens, merges, types = _small_vocab()
    tokens[258], types[258] = "<0x0A>", TokenType.BYTE
    small = Tokenizer.from_gguf_metadata(tokens, merges, types)
    assert small.token_bytes(258) == b"\n"


# -- tokenizer.json variants ------------------------------------------------------------------


def test_tokenizer_json_from_dict_with_list_merges(fixture_json, tok):
    import json

    spec = json.loads(fixture_json)
    spec["model"]["merges"] = [m.split(" ") for m in spec["model"]["merges"]]
    from_dict = Tokenizer.from_tokenizer_json(spec)
    text = "Dict-loaded tokenizers agree, don't they? 12345 \u4f60\u597d"
    assert from_dict.encode(text) == tok.encode(text)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex="\\s+"), "Llama-3"),
        (lambda s: s.update(normalizer={"type": "NFC"}), "normalizer"),
        (lambda s: s["model"].update(type="WordPiece"), "expected 'BPE'"),
        (lambda s: s["added_tokens"][0].update(lstrip=True), "lstrip"),
        (lambda s: s["added_tokens"][3].update(id=200000), "id 128003 is missing"),
    ],
)
def test_bad_tokenizer_json_rejected(fixture_json, edit, message):
    import json

    spec = json.loads(fixture_json)
    edit(spec)
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_tokenizer_json(spec)


def test_unreadable_tokenizer_json_names_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        Tokenizer.from_tokenizer_json(bad)


# -- chat format ------------------------------------------------------------------------------


def test_chat_format_tokens(tok):
    messages = [
        {"role": "system", "content": "  You are a helpful assistant.\n"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "\tAnd <|eot_id|> in text? "},
    ]
    expected = [BOS]
    expected += tok.encode("System: ") + tok.encode("You are a helpful assistant.") + [EOT]
    expected += tok.encode("User: ") + tok.encode("What is 2+2?") + [EOT]
    expected += tok.encode("Assistant: ") + tok.encode("4") + [EOT]
    expected += tok.encode("User: ") + tok.encode("And <|eot_id|> in text?") + [EOT]
    expected += tok.encode("Assistant: ")
    ids = encode_chat(tok, messages)
    assert ids == expected
    assert ids.count(EOT) == 4  # the typed <|eot_id|> stays plain text
    assert encode_chat(tok, messages, add_generation_prompt=False) == expected[: -len(tok.encode("Assistant: "))]


def test_chat_header_is_tokenized_apart_from_content(tok):
    ids = encode_chat(tok, [{"role": "user", "content": "Hello"}], add_generation_prompt=False)
    header = tok.encode("User: ")
    assert tok.decode([header[-1]]) == b" "  # the header keeps its own trailing-space token
    assert ids[1:-1] == header + tok.encode("Hello")
    assert ids[1:-1] != tok.encode("User: Hello")


def test_render_chat_text(tok):
    messages = [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi"}]
    text = render_chat_text(messages)
    assert text == "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: "
    assert tok.decode(encode_chat(tok, messages)) == text.encode()
    assert render_chat_text(messages, add_generation_prompt=False).endswith("Hi<|eot_id|>")


@pytest.mark.parametrize(
    "messages, message",
    [
        ("hello", "must be a list"),
        ([("user", "hi")], r"messages\[0\] must be a dict"),
        ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], r"messages\[1\]\['role'\] = 'tool'"),
        ([{"content": "hi"}], r"\['role'\] = None"),
        ([{"role": "user", "content": None}], r"\['content'\] must be a string, got NoneType"),
        ([{"role": "user", "content": b"hi"}], "got bytes"),
    ],
)
def test_chat_messages_validated(tok, messages, message):
    with pytest.raises(ValueError, match=message):
        encode_chat(tok, messages)
    with pytest.raises(ValueError, match=message):
        render_chat_text(messages)


# -- speed ------------------------------------------------------------------------------------


def test_encode_speed_long_prompt(tok, reference_plain):
    prompt = build_long_prompt()
    tok._bpe_cached.cache_clear()
    start = time.perf_counter()
    ids = tok.encode(prompt)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    tok.encode(prompt)
    warm = time.perf_counter() - start
    assert 3500 <= len(ids) <= 4500
    assert ids == reference_plain.encode(prompt, add_special_tokens=False).ids
    print(f"\nencode {len(ids)} tokens ({len(prompt)} chars): {cold * 1000:.1f} ms cold cache, "
          f"{warm * 1000:.1f} ms warm")


def test_edge_cases_in_corpus(corpus):
    assert corpus[: len(EDGE_CASES)] == EDGE_CASES
