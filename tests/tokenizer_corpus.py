"""Deterministic corpus of strings that stress the Llama-3 tokenizer.

`build_corpus(seed, size)` always returns the same list for the same arguments. It mixes
hand-picked edge cases with seeded random strings from every category the pre-tokenizer
pattern distinguishes: letters of many scripts, numbers, punctuation, whitespace runs
(including the Unicode spaces and line breaks), contractions, emoji sequences, code,
and random valid UTF-8 from all planes.
"""

from __future__ import annotations

import random

EDGE_CASES = [
    "",
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    "a",
    "Hello world",
    "Hello, world!",
    " leading space",
    "trailing space ",
    "two  spaces",
    "three   spaces then text",
    "line one\nline two\n\nline four",
    "windows\r\nline\r\n\r\nbreaks",
    "mixed \r\n \n\t\n  end",
    "   \n   indented after newline",
    "tab\tseparated\tvalues\t",
    "\t\tdouble tab",
    " \t \t mixed blanks",
    "ends with newline\n",
    "ends with spaces   ",
    "ends with blank lines\n\n\n",
    "It's, you're, we've, I'm, they'll, he'd, don't",
    "IT'S, YOU'RE, WE'VE, I'M, THEY'LL, HE'D, DON'T",
    "It'S mixed 'Ll 'lL 'Re 'rE 'Ve 'vE 'M 'D 'T",
    "'s 't 're 've 'm 'll 'd at word starts",
    "'sam 'tom 'reed 'very 'mom 'llama 'dog",
    "rock'n'roll o'clock y'all ma'am",
    "long s: '\u017f and 'ſtreet",
    "curly \u2019s and \u2018quotes\u2019 are not contractions",
    "''s '''ll ''",
    "12345678901234567890",
    "1 22 333 4444 55555 666666",
    "3.14159 2,718 1e10 0x1F 0b1010 1_000_000",
    "\u0661\u0662\u0663\u0664\u0665 Arabic-Indic digits",
    "\uff11\uff12\uff13\uff14 fullwidth digits",
    "x\u00b2 + y\u00b3 = z\u00b9\u2070 superscripts",
    "\u2160\u2161\u2162\u2163 roman numerals and \u3007\u3021\u3022",
    "\u00bd \u00bc \u2153 fractions",
    "!!!???...,,,;;;:::",
    "wow!!! really??? ok...",
    " !leading punctuation",
    "(parens) [brackets] {braces} <angles>",
    "\"double\" 'single' `back`",
    "email@example.com https://example.org/path?q=1&r=2#frag",
    "C:\\Windows\\System32\\drivers",
    "--flag=value -x -vvv --",
    "a.b.c.d e-f-g h_i_j",
    "\u00e9t\u00e9 \u00e7a \u00fcber stra\u00dfe",
    "e\u0301te\u0301 (combining acute)",
    "\u0915\u094d\u0937 \u0928\u092e\u0938\u094d\u0924\u0947",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0393\u03b5\u03b9\u03b1 \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",
    "\U0001f600\U0001f601\U0001f602",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
    "\U0001f44d\U0001f3fd thumbs with skin tone",
    "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5 flags",
    "\u2764\ufe0f heart with variation selector",
    "\U0001f3f3\ufe0f\u200d\U0001f308 rainbow flag",
    "\u00a0non-breaking\u00a0space",
    "ideographic\u3000space",
    "em\u2003space and thin\u2009space",
    "line\u2028separator and para\u2029graph",
    "next\x85line",
    "vertical\x0btab and form\x0cfeed",
    "file\x1cgroup\x1drecord\x1eunit\x1fseparators are not spaces",
    "zero\u200bwidth\u200cnon\u200djoiner",
    "soft\u00adhyphen",
    "bidi \u202eoverride\u202c marks",
    "\ufeffbyte order mark",
    "replacement \ufffd char",
    "nonchar \ufffe \uffff",
    "private \ue000\uf8ff \U000f0000 \U0010fffd",
    "tags \U000e0001\U000e0041\U000e007f",
    "\U00020000\U0002a6d6 CJK ext B",
    "\U0001d400\U0001d401 math bold",
    "Unicode 15/16 letters \U000105c0\U000105c1 \U00011380 \U0001e4d0 and digits \U0001e4f0\U0001e4f1",
    "<|eot_id|>",
    "<|begin_of_text|>Hello<|eot_id|>",
    "text before <|start_header_id|>user<|end_header_id|> after",
    "<|reserved_special_token_10|><|reserved_special_token_1|>",
    "<|eot_id",
    "<|not_a_token|>",
    "a" * 300,
    " " * 200,
    "\n" * 50,
    "=" * 120,
    "0123456789" * 20,
    "\U0001f600" * 40,
    "x\u0301" * 30,
]

ENGLISH_WORDS = (
    "the of and to in is was that for on with as by at from this have not are be but or "
    "an which they you one we all there their been has would more if will when who so no "
    "time people year way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force "
    "education tokenizer runtime ternary quantization inference Raspberry board kernel thread "
    "memory bandwidth embedding attention transformer antidisestablishmentarianism "
    "supercalifragilistic pneumonoultramicroscopic"
).split()

CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "n't"]

SCRIPT_RANGES = {
    "cjk": [(0x4E00, 0x9FFF), (0x3040, 0x309F), (0x30A0, 0x30FF), (0xAC00, 0xD7A3)],
    "arabic": [(0x0621, 0x064A), (0x0660, 0x0669), (0x064B, 0x0652)],
    "cyrillic": [(0x0410, 0x044F), (0x0450, 0x045F)],
    "devanagari": [(0x0905, 0x0939), (0x093E, 0x094D), (0x0966, 0x096F)],
    "thai": [(0x0E01, 0x0E3A), (0x0E40, 0x0E4E), (0x0E50, 0x0E59)],
    "hebrew": [(0x05D0, 0x05EA), (0x0591, 0x05C7)],
    "greek": [(0x0391, 0x03A9), (0x03B1, 0x03C9)],
}
SCRIPT_PHRASES = [
    "\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\u6211\u4eec\u5728\u6811\u8393\u6d3e\u4e0a\u8fd0\u884c\u6a21\u578b",
    "\u6771\u4eac\u3068\u4eac\u90fd\u306f\u65e5\u672c\u306e\u90fd\u5e02\u3067\u3059\u3002",
    "\u0627\u0644\u0633\u0644\u0627\u0645 \u0639\u0644\u064a\u0643\u0645\u060c \u0643\u064a\u0641 \u062d\u0627\u0644\u0643\u061f",
    "\u041c\u043e\u0441\u043a\u0432\u0430 \u2014 \u0441\u0442\u043e\u043b\u0438\u0446\u0430 \u0420\u043e\u0441\u0441\u0438\u0438.",
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e \u092c\u0939\u0941\u0924 \u0938\u0941\u0902\u0926\u0930 \u0939\u0948\u0964",
    "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e44\u0e21\u0e48\u0e21\u0e35\u0e0a\u0e48\u0e2d\u0e07\u0e27\u0e48\u0e32\u0e07",
    "\ud55c\uad6d\uc5b4\ub294 \uc544\ub984\ub2f5\uc2b5\ub2c8\ub2e4.",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03ba\u03b1\u03b9 \u03c6\u03b9\u03bb\u03bf\u03c3\u03bf\u03c6\u03af\u03b1",
    "\u05e2\u05d1\u05e8\u05d9\u05ea \u05e0\u05db\u05ea\u05d1\u05ea \u05de\u05d9\u05de\u05d9\u05df \u05dc\u05e9\u05de\u05d0\u05dc",
    "T\u00f4i c\u00f3 nhi\u1ec1u vi\u1ec7c ph\u1ea3i l\u00e0m, \u0111i\u1ec1u \u0111\u00f3 h\u1ee3p l\u00fd.",
    "Jeho d\u016fm je velk\u00fd a \u0161t\u011bst\u00ed p\u0159ich\u00e1z\u00ed.",
]

EMOJI = [
    "\U0001f600", "\U0001f680", "\U0001f4a1", "\u2705", "\u2728", "\U0001f525", "\U0001f916",
    "\U0001f44b\U0001f3fb", "\U0001f469\u200d\U0001f4bb", "\U0001f9d1\U0001f3fe\u200d\U0001f52c",
    "\U0001f468\u200d\U0001f469\u200d\U0001f466", "\U0001f3f4\u200d\u2620\ufe0f",
    "\U0001f1e9\U0001f1ea", "\u263a\ufe0f", "\U0001f44d\U0001f3ff", "\u0031\ufe0f\u20e3",
]

CODE_SNIPPETS = [
    "def quantize(x, eps=1e-5):\n    s = 127.0 / max(abs(x).max(), eps)\n    return (x * s).round().clip(-128, 127), s\n",
    "for (int i = 0; i < n; ++i) {\n\tacc += w[i] * x[i];\n}\n",
    "#include <stdint.h>\nstatic inline int32_t dot(const int8_t *a, const int8_t *b, int n);\n",
    '{"role": "user", "content": "hi", "n": [1, 2, 3], "ok": true, "x": null}',
    "<div class=\"main\"><p>Hello &amp; welcome</p></div>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "if [ -f \"$HOME/.bashrc\" ]; then\n  . \"$HOME/.bashrc\"\nfi\n",
    "fn main() -> Result<(), Box<dyn Error>> {\n    println!(\"{}\", 42);\n    Ok(())\n}\n",
    "const f = async (a, b) => { await g(a ?? b); return a?.c || [] };",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares\r\n",
    "class Foo(Bar):\n    '''Docstring.'''\n\n    def __init__(self):\n        super().__init__()\n",
    "    \n        \n\t\t\n",
    "a+=1;b-=2;c*=3;d/=4;e%=5;f<<=1;g>>=2;h&=3;i|=4;j^=5;",
    "printf(\"%d %s %5.2f\\n\", n, str, val);",
]

WHITESPACE_PIECES = [
    " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n", " \n", "\t\n", "\n ", "\u00a0", "\u3000",
    "\u2003", "\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\u202f", "\u205f", "\u1680", "\x1c",
]

PUNCTUATION = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + [
    "\u00a1", "\u00bf", "\u2014", "\u2013", "\u2026", "\u00ab", "\u00bb", "\u201c", "\u201d",
    "\u3001", "\u3002", "\uff01", "\u060c", "\u0964", "\u00a7", "\u00b6", "\u20ac", "\u00a3",
]

# Weighted code point ranges for random valid UTF-8 (surrogates excluded).
RANDOM_RANGES = [
    (0x20, 0x7E, 20), (0x00, 0x1F, 2), (0x7F, 0xFF, 6), (0x100, 0x24F, 4), (0x300, 0x36F, 6),
    (0x370, 0x1FFF, 8), (0x2000, 0x2BFF, 6), (0x3000, 0x9FFF, 8), (0xA000, 0xD7FF, 4),
    (0xE000, 0xFFFF, 3), (0x10000, 0x1FFFF, 8), (0x20000, 0x3FFFF, 4), (0xE0000, 0xE01EF, 2),
    (0xF0000, 0x10FFFF, 2),
]


def _random_code_point(rng: random.Random) -> str:
    total = sum(w for _, _, w in RANDOM_RANGES)
    pick = rng.uniform(0, total)
    for lo, hi, w in RANDOM_RANGES:
        if pick <= w:
            return chr(rng.randint(lo, hi))
        pick -= w
    return chr(rng.randint(0x20, 0x7E))


def _english(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(1, 30)):
        word = rng.choice(ENGLISH_WORDS)
        style = rng.random()
        if style < 0.1:
            word = word.upper()
        elif style < 0.3:
            word = word.capitalize()
        if rng.random() < 0.1:
            word += rng.choice(CONTRACTIONS if rng.random() < 0.7 else [c.upper() for c in CONTRACTIONS])
        if rng.random() < 0.15:
            word += rng.choice(",.;:!?")
        words.append(word)
    return " ".join(words)


def _script_text(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return " ".join(rng.choice(SCRIPT_PHRASES) for _ in range(rng.randint(1, 3)))
    ranges = SCRIPT_RANGES[rng.choice(sorted(SCRIPT_RANGES))]
    out = []
    for _ in range(rng.randint(1, 40)):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
        if rng.random() < 0.15:
            out.append(rng.choice([" ", " ", "\n", ", ", ". ", "1", "23"]))
    return "".join(out)


def _emoji_text(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 12)):
        out.append(rng.choice(EMOJI))
        if rng.random() < 0.4:
            out.append(rng.choice([" ", "", "!", " ok ", "\n", "\u200d"]))
    return "".join(out)


def _digits(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 8)):
        run = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20)))
        out.append(run)
        out.append(rng.choice([" ", ".", ",", "-", "", "a", " x ", "\u0663", "\u00b2", "\n"]))
    return "".join(out)


def _code(rng: random.Random) -> str:
    snippet = rng.choice(CODE_SNIPPETS)
    if rng.random() < 0.3:
        snippet = snippet.replace("\n", "\r\n")
    if rng.random() < 0.3:
        snippet = snippet.replace("    ", "\t")
    if rng.random() < 0.3:
        snippet = " " * rng.randint(1, 8) + snippet
    return snippet


def _whitespace(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 12)):
        out.append(rng.choice(WHITESPACE_PIECES) * rng.randint(1, 4))
        if rng.random() < 0.6:
            out.append(rng.choice(["a", "word", "!", "1", "'s", "\u4e00", "x.y", "\U0001f600"]))
    return "".join(out)


def _contractions(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 10)):
        stem = rng.choice(["it", "IT", "you", "We", "they", "", " ", "x", "1", "!"])
        tail = rng.choice(["s", "S", "t", "T", "re", "RE", "rE", "ve", "VE", "m", "M", "ll", "LL",
                           "lL", "d", "D", "\u017f", "x", "", "sam", "LLama"])
        out.append(stem + "'" + tail + rng.choice(["", " ", ".", "'"]))
    return "".join(out)


def _punctuation(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 10)):
        out.append("".join(rng.choice(PUNCTUATION) for _ in range(rng.randint(1, 6))))
        out.append(rng.choice(["", " ", "\n", "\r\n", "word", "9", " x"]))
    return "".join(out)


def _random_utf8(rng: random.Random) -> str:
    return "".join(_random_code_point(rng) for _ in range(rng.randint(1, 40)))


def _special_markers(rng: random.Random) -> str:
    markers = ["<|eot_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
               "<|end_header_id|>", "<|reserved_special_token_3|>", "<|eot_id", "|>", "<|"]
    out = []
    for _ in range(rng.randint(1, 6)):
        out.append(rng.choice(markers))
        out.append(rng.choice(["", " ", "\n", "hi", " there ", "User: ", "1"]))
    return "".join(out)


def _mixed(rng: random.Random) -> str:
    makers = [_english, _script_text, _emoji_text, _digits, _whitespace, _punctuation, _random_utf8]
    return "".join(rng.choice(makers)(rng) for _ in range(rng.randint(2, 4)))


GENERATORS = [
    (_english, 5), (_script_text, 4), (_emoji_text, 2), (_digits, 2), (_code, 2),
    (_whitespace, 3), (_contractions, 2), (_punctuation, 2), (_random_utf8, 4),
    (_special_markers, 1), (_mixed, 3),
]


def build_corpus(seed: int = 1234, size: int = 2400) -> list[str]:
    """The edge cases followed by `size - len(EDGE_CASES)` seeded random strings."""
    rng = random.Random(seed)
    makers = [maker for maker, weight in GENERATORS for _ in range(weight)]
    corpus = list(EDGE_CASES)
    while len(corpus) < size:
        corpus.append(rng.choice(makers)(rng))
    return corpus


def build_long_prompt(seed: int = 7, n_paragraphs: int = 70) -> str:
    """English prose interleaved with code, the shape of a long chat prompt."""
    rng = random.Random(seed)
    parts = []
    for index in range(n_paragraphs):
        if index % 4 == 3:
            parts.append("```\n" + _code(rng) + "```")
        else:
            parts.append(". ".join(_english(rng) for _ in range(3)) + ".")
    return "\n\n".join(parts)
