"""A small, safe evaluator for the Jinja templates that device firmware puts in discovery configs.

Supported: literal text with `{{ expression }}` blocks (whitespace control `{{-`/`-}}`, comments
`{# #}`); expressions over `value`, `value_json` and caller-given variables with `.name`,
`['key']`, `[index]`, `[a:b]`, literals (numbers, strings, lists, true/false/none), `+ - * / // %`,
`~`, comparisons, `in`, `not in`, `and`/`or`/`not`, `a if cond else b`, `is [not] defined|none|
number|string|...`, filters (int, float, round, lower, upper, default/d, string, trim, title,
capitalize, replace, abs, length/count, first, last, join, bool, to_json/tojson, from_json, min, max),
the globals float(), int(), bool(), round(), abs(), min(), max(), and the string methods lower,
upper, strip, split, replace, startswith, endswith, title, capitalize.

Nothing is evaluated as Python: the expression is parsed here and walked over plain JSON values,
so a template can never reach an attribute, a module or a builtin outside that list. Statements
(`{% if %}`, loops) are not supported. The filters behave as Home Assistant's versions of them
(`int`/`float`/`round` accept strings, fail without a default on bad input, `round` with no
precision gives an int) and a render is stripped of surrounding whitespace, as Home Assistant does.
"""
import functools
import json
import logging
import re

from edge_runtime.assist.template_functions import (FILTERS, GLOBALS, MAX_OUTPUT_CHARS, STR_METHODS, TESTS,
                                                     UNDEFINED_AWARE, TemplateError, Undefined, UndefinedError,
                                                     is_number, to_text, undefined)

log = logging.getLogger("edge_runtime.assist.templates")

MAX_TEMPLATE_CHARS = 8192
MAX_DEPTH = 48
__all__ = ["Template", "TemplateError", "UndefinedError", "Unsupported", "compile_template", "is_supported",
           "payload_variables", "render_command", "render_value"]


# ---------------------------------------------------------------------------------------------
# Tokens

_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>//|==|!=|<=|>=|[-+*/%~<>()\[\].,|:])
""", re.VERBOSE | re.DOTALL)

_KEYWORDS = {"and", "or", "not", "if", "else", "in", "is", "true", "false", "none", "True", "False", "None"}
_LITERALS = {"true": True, "True": True, "false": False, "False": False, "none": None, "None": None}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}


def _unquote(text):
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body, flags=re.DOTALL)


def _tokenize(source):
    tokens, pos = [], 0
    while pos < len(source):
        match = _TOKEN_RE.match(source, pos)
        if not match:
            raise TemplateError(f"unexpected character {source[pos]!r} at {pos} in {source!r}")
        pos = match.end()
        kind = match.lastgroup
        text = match.group()
        if kind == "ws":
            continue
        if kind == "num":
            tokens.append(("lit", float(text) if any(c in text for c in ".eE") else int(text)))
        elif kind == "str":
            tokens.append(("lit", _unquote(text)))
        elif kind == "name" and text in _KEYWORDS:
            tokens.append(("kw", text))
        else:
            tokens.append((kind, text))
    tokens.append(("end", None))
    return tokens


# ---------------------------------------------------------------------------------------------
# Parser: Jinja precedence (conditional < or < and < not < comparison < + - ~ < * / // % < unary
# minus < filters < postfix (.name, [key], call)). Nodes are tuples (kind, ...).

class _Parser:
    def __init__(self, source):
        self.source = source
        self.tokens = _tokenize(source)
        self.pos = 0
        self.depth = 0

    def peek(self, kind=None, text=None):
        tok = self.tokens[self.pos]
        if kind is not None and tok[0] != kind:
            return False
        if text is not None and tok[1] != text:
            return False
        return tok

    def take(self, kind=None, text=None):
        tok = self.peek(kind, text)
        if not tok:
            got = self.tokens[self.pos][1]
            raise TemplateError(f"expected {text or kind}, got {got!r} in {self.source!r}")
        self.pos += 1
        return tok

    def accept(self, kind, text=None):
        if self.peek(kind, text):
            self.pos += 1
            return True
        return False

    def parse(self):
        node = self.expr()
        self.take("end")
        return node

    def expr(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TemplateError(f"expression nested too deeply in {self.source!r}")
        node = self.or_expr()
        if self.accept("kw", "if"):
            cond = self.or_expr()
            other = self.expr() if self.accept("kw", "else") else ("lit", undefined("else branch"))
            node = ("cond", cond, node, other)
        self.depth -= 1
        return node

    def or_expr(self):
        node = self.and_expr()
        while self.accept("kw", "or"):
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self):
        node = self.not_expr()
        while self.accept("kw", "and"):
            node = ("and", node, self.not_expr())
        return node

    def not_expr(self):
        if self.accept("kw", "not"):
            return ("not", self.not_expr())
        return self.comparison()

    def comparison(self):
        node = self.additive()
        while True:
            tok = self.peek()
            if tok[0] == "op" and tok[1] in ("==", "!=", "<", "<=", ">", ">="):
                self.pos += 1
                node = ("cmp", tok[1], node, self.additive())
            elif self.accept("kw", "in"):
                node = ("in", node, self.additive())
            elif self.peek("kw", "not") and self.tokens[self.pos + 1] == ("kw", "in"):
                self.pos += 2
                node = ("not", ("in", node, self.additive()))
            elif self.accept("kw", "is"):
                negate = self.accept("kw", "not")
                tok = self.take()
                name = tok[1].lower() if tok[0] in ("name", "kw") else None
                if name not in TESTS:
                    raise TemplateError(f"unsupported test 'is {name}' in {self.source!r}")
                node = ("test", name, node)
                if negate:
                    node = ("not", node)
            else:
                return node

    def additive(self):
        node = self.multiplicative()
        while self.peek("op") and self.peek()[1] in ("+", "-", "~"):
            op = self.take()[1]
            node = ("bin", op, node, self.multiplicative())
        return node

    def multiplicative(self):
        node = self.unary()
        while self.peek("op") and self.peek()[1] in ("*", "/", "//", "%"):
            op = self.take()[1]
            node = ("bin", op, node, self.unary())
        return node

    def unary(self):
        if self.accept("op", "-"):
            node = ("neg", self.unary_operand())
        elif self.accept("op", "+"):
            node = self.unary_operand()
        else:
            node = self.postfix()
        return self.filters(node)

    def unary_operand(self):
        if self.peek("op", "-") or self.peek("op", "+"):
            sign = self.take()[1]
            inner = self.unary_operand()
            return ("neg", inner) if sign == "-" else inner
        return self.postfix()

    def filters(self, node):
        while self.accept("op", "|"):
            name = self.take("name")[1]
            if name not in FILTERS:
                raise TemplateError(f"unsupported filter '{name}' in {self.source!r}")
            args = self.call_args() if self.peek("op", "(") else []
            node = ("filter", name, node, args)
        return node

    def call_args(self):
        self.take("op", "(")
        args = []
        while not self.accept("op", ")"):
            if args:
                self.take("op", ",")
            if self.peek("name") and self.tokens[self.pos + 1] == ("op", "="):
                raise TemplateError(f"keyword arguments are not supported in {self.source!r}")
            args.append(self.expr())
        return args

    def postfix(self):
        node = self.primary()
        while True:
            if self.accept("op", "."):
                tok = self.take()
                if tok[0] not in ("name", "kw"):
                    raise TemplateError(f"expected a name after '.', got {tok[1]!r} in {self.source!r}")
                node = ("attr", node, tok[1])
            elif self.accept("op", "["):
                node = self.subscript(node)
            elif self.peek("op", "("):
                node = ("call", node, self.call_args())
            else:
                return node

    def subscript(self, node):
        start = stop = None
        if not self.peek("op", ":"):
            start = self.expr()
            if self.accept("op", "]"):
                return ("item", node, start)
        self.take("op", ":")
        if not self.peek("op", "]"):
            stop = self.expr()
        self.take("op", "]")
        return ("slice", node, start, stop)

    def primary(self):
        tok = self.take()
        if tok[0] == "lit":
            return ("lit", tok[1])
        if tok[0] == "kw" and tok[1] in _LITERALS:
            return ("lit", _LITERALS[tok[1]])
        if tok[0] == "name":
            return ("name", tok[1])
        if tok == ("op", "("):
            node = self.expr()
            self.take("op", ")")
            return node
        if tok == ("op", "["):
            items = []
            while not self.accept("op", "]"):
                if items:
                    self.take("op", ",")
                items.append(self.expr())
            return ("list", items)
        raise TemplateError(f"unexpected {tok[1]!r} in {self.source!r}")


# ---------------------------------------------------------------------------------------------
# Evaluation

class _Method:
    __slots__ = ("func", "target")

    def __init__(self, func, target):
        self.func, self.target = func, target


def _attr(obj, name):
    if isinstance(obj, dict):
        return obj[name] if name in obj else undefined(name)
    if isinstance(obj, str) and name in STR_METHODS:
        return _Method(STR_METHODS[name], obj)
    return undefined(name)


def _item(obj, key):
    if isinstance(obj, dict):
        try:
            return obj[key] if key in obj else undefined(repr(key))
        except TypeError:
            return undefined(repr(key))
    if isinstance(obj, (list, str)) and isinstance(key, int) and not isinstance(key, bool):
        return obj[key] if -len(obj) <= key < len(obj) else undefined(f"[{key}]")
    if isinstance(key, str):
        return _attr(obj, key)
    return undefined(f"[{key!r}]")


def _arith(op, a, b):
    if op == "~":
        return to_text(a) + to_text(b)
    for v in (a, b):
        if isinstance(v, Undefined):
            raise UndefinedError(f"{v.what} is undefined")
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        if len(a) + len(b) > MAX_OUTPUT_CHARS:
            raise TemplateError("string result too long")
        return a + b
    if op == "+" and isinstance(a, list) and isinstance(b, list):
        return a + b
    if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        raise TemplateError(f"cannot apply {op!r} to {a!r} and {b!r}")
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        if op == "//":
            return a // b
        return a % b
    except ZeroDivisionError:
        raise TemplateError("division by zero") from None


_CMP = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _call(func, args, name):
    try:
        return func(*args)
    except TemplateError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise TemplateError(f"{name}: {exc}") from None


def _eval(node, env):
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "name":
        return env[node[1]] if node[1] in env else undefined(node[1])
    if kind == "attr":
        return _attr(_eval(node[1], env), node[2])
    if kind == "item":
        return _item(_eval(node[1], env), _eval(node[2], env))
    if kind == "slice":
        obj = _eval(node[1], env)
        bounds = [None if n is None else _eval(n, env) for n in node[2:]]
        if not isinstance(obj, (list, str)) or not all(b is None or isinstance(b, int) for b in bounds):
            raise TemplateError(f"cannot slice {obj!r}")
        return obj[bounds[0]:bounds[1]]
    if kind == "list":
        return [_eval(n, env) for n in node[1]]
    if kind == "cond":
        return _eval(node[2], env) if _eval(node[1], env) else _eval(node[3], env)
    if kind == "or":
        left = _eval(node[1], env)
        return left if left else _eval(node[2], env)
    if kind == "and":
        left = _eval(node[1], env)
        return _eval(node[2], env) if left else left
    if kind == "not":
        return not _eval(node[1], env)
    if kind == "neg":
        value = _eval(node[1], env)
        if not is_number(value):
            raise TemplateError(f"cannot negate {value!r}")
        return -value
    if kind == "bin":
        return _arith(node[1], _eval(node[2], env), _eval(node[3], env))
    if kind == "cmp":
        a, b = _eval(node[2], env), _eval(node[3], env)
        if node[1] in ("==", "!="):
            return _CMP[node[1]](a, b)
        if isinstance(a, Undefined) or isinstance(b, Undefined):
            raise UndefinedError("comparison with an undefined value")
        try:
            return _CMP[node[1]](a, b)
        except TypeError:
            raise TemplateError(f"cannot compare {a!r} {node[1]} {b!r}") from None
    if kind == "in":
        item, container = _eval(node[1], env), _eval(node[2], env)
        if isinstance(container, Undefined):
            return False
        if isinstance(container, str):
            return isinstance(item, str) and item in container
        if isinstance(container, (list, dict)):
            try:
                return item in container
            except TypeError:
                return False
        raise TemplateError(f"'in' needs a string, list or mapping, got {container!r}")
    if kind == "test":
        if node[1] not in TESTS:
            raise TemplateError(f"unsupported test 'is {node[1]}'")
        return TESTS[node[1]](_eval(node[2], env))
    if kind == "filter":
        name = node[1]
        if name not in FILTERS:
            raise TemplateError(f"unsupported filter '{name}'")
        value = _eval(node[2], env)
        args = [_eval(a, env) for a in node[3]]
        if isinstance(value, Undefined) and name not in UNDEFINED_AWARE:
            return value
        return _call(FILTERS[name], [value, *args], name)
    if kind == "call":
        target = node[1]
        args = [_eval(a, env) for a in node[2]]
        if target[0] == "name" and target[1] in GLOBALS and target[1] not in env:
            return _call(GLOBALS[target[1]], args, target[1])
        method = _eval(target, env)
        if isinstance(method, _Method):
            return _call(method.func, [method.target, *args], "method")
        raise TemplateError(f"{method!r} is not callable")
    raise TemplateError(f"unknown node {kind}")


def _render(value):
    if isinstance(value, Undefined):
        raise UndefinedError(f"{value.what} is undefined")
    if isinstance(value, _Method):
        raise TemplateError("a method was rendered without calling it")
    if isinstance(value, str):
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------
# Templates: literal text and {{ }} blocks

_BLOCK_RE = re.compile(r"\{\{(-?)(.*?)(-?)\}\}|\{#.*?#\}|\{%", re.DOTALL)


class Template:
    """A parsed template; `render(variables)` returns its text or raises TemplateError."""

    def __init__(self, source):
        if not isinstance(source, str):
            raise TemplateError(f"a template must be a string, got {source!r}")
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateError(f"template longer than {MAX_TEMPLATE_CHARS} characters")
        self.source = source
        self.parts = []          # str literals and parsed expression nodes
        pos, strip_next = 0, False
        for match in _BLOCK_RE.finditer(source):
            text = source[pos:match.start()]
            if strip_next:
                text = text.lstrip()
            if match.group() == "{%":
                raise TemplateError(f"statements ({{% ... %}}) are not supported: {source!r}")
            if match.group().startswith("{#"):
                self._literal(text)
                pos, strip_next = match.end(), False
                continue
            if match.group(1):
                text = text.rstrip()
            self._literal(text)
            self.parts.append(_Parser(match.group(2)).parse())
            pos, strip_next = match.end(), bool(match.group(3))
        tail = source[pos:]
        self._literal(tail.lstrip() if strip_next else tail)
        if "{{" in "".join(p for p in self.parts if isinstance(p, str)):
            raise TemplateError(f"unterminated '{{{{' in {source!r}")

    def _literal(self, text):
        if text:
            self.parts.append(text)

    @property
    def is_static(self):
        return all(isinstance(p, str) for p in self.parts)

    def render(self, variables):
        out = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else _render(_eval(part, variables)))
        text = "".join(out)
        if len(text) > MAX_OUTPUT_CHARS:
            raise TemplateError("template output too long")
        return text.strip()


@functools.lru_cache(maxsize=1024)
def _compile(source):
    try:
        return Template(source), None
    except TemplateError as exc:
        return None, str(exc)
    except RecursionError:
        return None, f"template nested too deeply: {source[:80]!r}"


def compile_template(source):
    """The parsed Template for `source` (cached); raises TemplateError when it is unsupported."""
    template, error = _compile(source)
    if template is None:
        raise TemplateError(error)
    return template


def is_supported(source):
    return _compile(source)[0] is not None if isinstance(source, str) else False


def payload_variables(payload):
    """`value` and `value_json` for an incoming payload (str), as Home Assistant provides them."""
    try:
        value_json = json.loads(payload)
    except (TypeError, ValueError, RecursionError):
        value_json = undefined("value_json (the payload is not JSON)")
    return {"value": payload, "value_json": value_json}


class Unsupported(TemplateError):
    """The template cannot be evaluated here at all (as opposed to failing for one message)."""


def render_value(source, payload, variables=None):
    """Render a state template for one message: the text, or None when the template produced
    nothing usable for it (empty, an undefined key, bad input to a filter). Raises Unsupported when the
    template itself is outside what this evaluator supports."""
    template, error = _compile(source) if isinstance(source, str) else (None, f"not a string: {source!r}")
    if template is None:
        raise Unsupported(error)
    env = payload_variables(payload)
    if variables:
        env.update(variables)
    try:
        return template.render(env) or None
    except TemplateError as exc:
        log.debug("template %r gave nothing for payload %r: %s", source, payload[:200], exc)
        return None
    except RecursionError:
        log.debug("template %r: payload %r nested too deeply", source, payload[:200])
        return None


def render_command(source, variables):
    """Render a command template with `variables`; raises TemplateError with the reason."""
    template = compile_template(source)
    try:
        return template.render(dict(variables))
    except RecursionError:
        raise TemplateError(f"template {source!r} nested too deeply") from None
