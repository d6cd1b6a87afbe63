"""The functions a template can call: Home Assistant's filters and tests, the few globals, and
the undefined value a missing name or key evaluates to. Only plain JSON values ever reach them."""
import json
import math

MAX_OUTPUT_CHARS = 65536


class TemplateError(ValueError):
    """The template uses syntax this evaluator does not support, or failed to render."""


class UndefinedError(TemplateError):
    """The template rendered a name or key that is not there (e.g. a JSON key missing from a message)."""


class Undefined:
    __slots__ = ("what",)

    def __init__(self, what):
        self.what = what

    def __bool__(self):
        return False

    def __eq__(self, other):
        return isinstance(other, Undefined)

    def __hash__(self):
        return 0

    def __repr__(self):
        return f"Undefined({self.what})"


def undefined(what):
    return Undefined(what)


# ---------------------------------------------------------------------------------------------
# Filters, tests, globals

def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _no_default(name, value):
    raise TemplateError(f"{name} got invalid input {value!r} and no default was given")


def _f_int(value, default=Undefined, base=10):
    try:
        return int(value, base) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return _no_default("int", value) if default is Undefined else default


def _f_float(value, default=Undefined):
    try:
        return float(value)
    except (TypeError, ValueError):
        return _no_default("float", value) if default is Undefined else default


def _f_round(value, precision=0, method="common", default=Undefined):
    try:
        precision = int(precision)
        multiplier = float(10 ** precision)
        if method == "ceil":
            result = math.ceil(float(value) * multiplier) / multiplier
        elif method == "floor":
            result = math.floor(float(value) * multiplier) / multiplier
        elif method == "half":
            result = round(float(value) * 2) / 2
        else:
            result = round(float(value), precision)
        return int(result) if precision == 0 else result
    except (TypeError, ValueError, OverflowError):
        return _no_default("round", value) if default is Undefined else default


_TRUE_WORDS = {"true", "yes", "on", "enable", "1"}
_FALSE_WORDS = {"false", "no", "off", "disable", "0"}


def _f_bool(value, default=Undefined):
    if isinstance(value, bool):
        return value
    if is_number(value):
        return value != 0
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return _no_default("bool", value) if default is Undefined else default


def _f_default(value, default_value="", boolean=False):
    if isinstance(value, Undefined) or (boolean and not value):
        return default_value
    return value


def to_text(value):
    """A value as rendered text; an undefined value cannot be rendered."""
    if isinstance(value, Undefined):
        raise UndefinedError(f"{value.what} is undefined")
    if isinstance(value, str):
        return value
    if not isinstance(value, (int, float, bool, list, dict, type(None))):
        raise TemplateError(f"cannot render {value!r}")
    return str(value)



def _sequence(value, name):
    if isinstance(value, (str, list, dict)):
        return value
    raise TemplateError(f"{name} expects a string, list or mapping, got {value!r}")


def _f_first(value):
    seq = list(_sequence(value, "first"))
    return seq[0] if seq else undefined("first of an empty sequence")


def _f_last(value):
    seq = list(_sequence(value, "last"))
    return seq[-1] if seq else undefined("last of an empty sequence")


def _f_join(value, sep=""):
    return str(sep).join(to_text(v) for v in _sequence(value, "join"))


def _f_from_json(value):
    try:
        return json.loads(value)
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"from_json got invalid JSON: {exc}") from None


def _f_min(*args):
    items = args[0] if len(args) == 1 else list(args)
    try:
        return min(_sequence(items, "min"))
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"min: {exc}") from None


def _f_max(*args):
    items = args[0] if len(args) == 1 else list(args)
    try:
        return max(_sequence(items, "max"))
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"max: {exc}") from None


def _f_abs(value):
    if not is_number(value):
        raise TemplateError(f"abs expects a number, got {value!r}")
    return abs(value)


def _f_replace(value, old, new, count=None):
    return to_text(value).replace(to_text(old), to_text(new), -1 if count is None else int(count))


FILTERS = {
    "int": _f_int, "float": _f_float, "round": _f_round, "bool": _f_bool,
    "default": _f_default, "d": _f_default,
    "lower": lambda v: to_text(v).lower(), "upper": lambda v: to_text(v).upper(),
    "string": to_text, "trim": lambda v, chars=None: to_text(v).strip(chars),
    "title": lambda v: to_text(v).title(), "capitalize": lambda v: to_text(v).capitalize(),
    "replace": _f_replace, "abs": _f_abs,
    "length": lambda v: len(_sequence(v, "length")), "count": lambda v: len(_sequence(v, "count")),
    "first": _f_first, "last": _f_last, "join": _f_join,
    "to_json": lambda v: json.dumps(v), "tojson": lambda v: json.dumps(v), "from_json": _f_from_json,
    "min": _f_min, "max": _f_max,
}

# Filters that look at an undefined input instead of passing it through.
UNDEFINED_AWARE = {"default", "d"}

GLOBALS = {"float": _f_float, "int": _f_int, "bool": _f_bool, "round": _f_round, "abs": _f_abs,
           "min": _f_min, "max": _f_max}

TESTS = {
    "defined": lambda v: not isinstance(v, Undefined),
    "undefined": lambda v: isinstance(v, Undefined),
    "none": lambda v: v is None,
    "number": is_number,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "string": lambda v: isinstance(v, str),
    "mapping": lambda v: isinstance(v, dict),
    "iterable": lambda v: isinstance(v, (str, list, dict)),
    "sequence": lambda v: isinstance(v, (str, list, dict)),
    "boolean": lambda v: isinstance(v, bool),
    "true": lambda v: v is True,
    "false": lambda v: v is False,
    "even": lambda v: is_number(v) and v % 2 == 0,
    "odd": lambda v: is_number(v) and v % 2 == 1,
}

STR_METHODS = {
    "lower": lambda s: s.lower(), "upper": lambda s: s.upper(), "title": lambda s: s.title(),
    "capitalize": lambda s: s.capitalize(),
    "strip": lambda s, chars=None: s.strip(chars), "lstrip": lambda s, chars=None: s.lstrip(chars),
    "rstrip": lambda s, chars=None: s.rstrip(chars),
    "split": lambda s, sep=None, maxsplit=-1: s.split(sep, int(maxsplit)),
    "replace": lambda s, old, new, count=-1: s.replace(old, new, int(count)),
    "startswith": lambda s, prefix: s.startswith(prefix), "endswith": lambda s, suffix: s.endswith(suffix),
}
