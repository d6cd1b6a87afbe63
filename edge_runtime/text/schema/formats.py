"""The ``format`` values that constrain generation, each as a regular language.

Each language is a subset of what the common validators accept (Python's ``jsonschema`` with
its format checker, which uses ``datetime``, ``ipaddress``, ``uuid`` and
``rfc3339-validator``), so generated text passes them:

- ``date``: ``YYYY-MM-DD`` (RFC 3339 full-date), year 0001-9999, day within the month,
  29 February in leap years only;
- ``time``: ``HH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`` (RFC 3339 full-time), upper-case Z, no
  leap second;
- ``date-time``: date ``T`` time (upper-case T);
- ``uuid``: 8-4-4-4-12 hex digits (either case);
- ``email``: dot-atom local part ``@`` a dot-separated host name (letters, digits, inner
  hyphens); no quoted local parts, no address literals;
- ``ipv4``: dotted quad, 0-255, no leading zeros;
- ``ipv6``: eight groups of 1-4 hex digits or the ``::`` shortened forms; no embedded IPv4,
  no zone index.
"""

from __future__ import annotations

from edge_runtime.text.schema.regex import ByteDfa, compile_full

_YEAR = r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9][0-9]|[1-9][0-9][0-9][0-9])"
_LEAP_YEAR = r"([0-9][0-9](0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_DATE = (rf"({_YEAR}-(0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])"
         rf"|{_YEAR}-(0[469]|11)-(0[1-9]|[12][0-9]|30)"
         rf"|{_YEAR}-02-(0[1-9]|1[0-9]|2[0-8])"
         rf"|{_LEAP_YEAR}-02-29)")
_TIME = (r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
         r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join([
    rf"({_H}:){{7}}{_H}",
    rf"({_H}:){{1,7}}:",
    rf"({_H}:){{1,6}}:{_H}",
    rf"({_H}:){{1,5}}(:{_H}){{1,2}}",
    rf"({_H}:){{1,4}}(:{_H}){{1,3}}",
    rf"({_H}:){{1,3}}(:{_H}){{1,4}}",
    rf"({_H}:){{1,2}}(:{_H}){{1,5}}",
    rf"{_H}:(:{_H}){{1,6}}",
    rf":((:{_H}){{1,7}}|:)",
])

PATTERNS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": rf"{_DATE}T{_TIME}",
    "uuid": r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
    "email": rf"{_ATOM}(\.{_ATOM})*@{_LABEL}(\.{_LABEL})*",
    "ipv4": rf"{_OCTET}(\.{_OCTET}){{3}}",
    "ipv6": _IPV6,
}

_compiled: dict[str, ByteDfa] = {}


def format_dfa(name: str) -> ByteDfa:
    """The automaton of a supported format (KeyError for others)."""
    dfa = _compiled.get(name)
    if dfa is None:
        dfa = compile_full(PATTERNS[name])
        _compiled[name] = dfa
    return dfa
