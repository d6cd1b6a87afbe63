"""Numbers: which digits may come next so that the number meets its bounds and multiples.

Generated numbers are ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?`` (no exponent, no ``-0``):

- integers (``type: integer``, or any number written without a fraction) have at most 15
  digits, more only when a bound needs them; they parse to exact integers;
- a number with a fraction part has at most 15 significant digits in all. Decimals that
  short round-trip through IEEE doubles, so comparing them with a bound as written gives the
  same answer as comparing their doubles (what validators in most languages do);
- ``multipleOf`` holds exactly (decimal arithmetic); for a non-integral ``multipleOf`` written
  as a float the double quotient must also be integral, the check validators that divide
  doubles make (0.3 is not a multiple of 0.1 for them).

Without ``multipleOf`` a frame only keeps what the future depends on (so states recur
across documents): ``(K_NUM, spec, negative, int_shape, frac_shape, (c_lo, c_hi), ())``,
the shapes being the digit counts and each c how the digits so far compare (-1, 0, +1) with
the bound's digits at the same places, as in a digit-by-digit comparison. With
``multipleOf`` the digits themselves are kept: ``(K_NUM, spec, negative, int_digits,
frac_digits|None, free, residues)``; while some completions are out of bounds the digits are
kept, once every completion is in bounds (``free``) only their count and the value modulo
each multiple matter.
"""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction
from typing import Optional

from edge_runtime.text.schema.compile import T_NUM, Conj

K_NUM = 3
MAX_DIGITS = 15
_POW10 = [10 ** k for k in range(400)]
INF = 1 << 30
_DIGITS = frozenset(b"0123456789")
STAY, POP, POP_FEED = 0, 1, 2


class NumSpec:
    def __init__(self, conj: Conj):
        self.int_only = not conj.types & T_NUM
        self.lower = conj.lower
        self.upper = conj.upper
        self.multiples = tuple(m.value for m in conj.multiples)
        self.float_checks = tuple(m.float_value for m in conj.multiples
                                  if m.float_value is not None)
        self.fmax = 0 if self.int_only else MAX_DIGITS
        self.grid = 10 ** self.fmax
        digits = MAX_DIGITS
        if self.lower is not None and self.lower.value > 0:
            digits = max(digits, len(str(math.ceil(self.lower.value))))
        if self.upper is not None and self.upper.value < 0:
            digits = max(digits, len(str(math.ceil(-self.upper.value))))
        self.max_int_digits = digits
        g = self.grid
        lo, hi = self.lower, self.upper
        # Allowed magnitudes in grid units (inclusive; None: unbounded), per sign.
        pos_lo, pos_hi, neg_lo, neg_hi = 0, None, 1, None
        if lo is not None:
            x = lo.value * g
            pos_lo = max(0, math.floor(x) + 1 if lo.exclusive else math.ceil(x))
            neg_hi = (math.ceil(-x) - 1) if lo.exclusive else math.floor(-x)
        if hi is not None:
            x = hi.value * g
            pos_hi = (math.ceil(x) - 1) if hi.exclusive else math.floor(x)
            neg_lo = max(1, math.floor(-x) + 1 if hi.exclusive else math.ceil(-x))
        self.ranges = ((pos_lo, pos_hi), (neg_lo, neg_hi))
        self.moduli = tuple(_modulus(m, g) for m in self.multiples)
        self.lcm = 1
        for k in self.moduli:
            self.lcm = _lcm(self.lcm, k)
        self.collapsible = not self.multiples
        self.abstract = not self.multiples
        # per sign, per bound (lower, upper): (integer digits, their count, fraction digits)
        self.sign_ok = tuple(hi is None or hi >= lo for lo, hi in self.ranges)
        self.bound_digits = tuple(tuple(None if b is None or not ok else self._digits(b)
                                        for b in r) for r, ok in zip(self.ranges, self.sign_ok))
        self._min: dict = {}
        self._verdicts: dict = {}

    def _digits(self, b: int):
        whole = b // self.grid
        text = str(whole) if whole else ""
        return text, len(text), str(b % self.grid).zfill(self.fmax) if self.fmax else ""

    def initial(self, nid: int) -> tuple:
        if self.abstract:
            return (K_NUM, nid, False, "", None, (0, 0), ())
        return (K_NUM, nid, False, "", None, False, ())

    # -- value sets ------------------------------------------------------------------------

    def frac_cap(self, ip: str) -> int:
        return min(self.fmax, MAX_DIGITS - (0 if ip == "0" else len(ip)))

    def spans(self, neg: bool, ip: str, fp: Optional[str]):
        """Magnitudes (grid units) the completions of a prefix can reach: intervals (a, b, g)
        whose reachable points are the multiples of g (the fraction digit cap), ascending;
        those entirely above the upper bound are left out."""
        g = self.grid
        hi = self.ranges[1 if neg else 0][1]
        if fp is None:
            if ip == "":
                return [(1 if neg else 0, _POW10[self.max_int_digits] * g - 1, 1)]
            if ip == "0":
                if neg and self.int_only:
                    return []
                return [(1 if neg else 0, g - 1, _POW10[self.fmax - self.frac_cap("0")])]
            v = int(ip)
            n = len(ip)
            out = []
            for k in range(self.max_int_digits - n + 1):
                a = v * _POW10[k] * g
                if hi is not None and a > hi and out:
                    break
                cap = max(0, min(self.fmax, MAX_DIGITS - n - k))
                out.append((a, (v + 1) * _POW10[k] * g - 1, _POW10[self.fmax - cap]))
            return out
        unit = _POW10[self.fmax - len(fp)]
        start = int(ip) * g + (int(fp) * unit if fp else 0)
        return [(start, start + unit - 1, _POW10[self.fmax - self.frac_cap(ip)])]

    def verdict(self, neg: bool, ip: str, fp: Optional[str]) -> int:
        """-1: no completion is in bounds (and a multiple); 1: every completion is in bounds;
        0: some are."""
        key = (neg, ip, fp)
        hit = self._verdicts.get(key)
        if hit is not None:
            return hit
        lo, hi = self.ranges[1 if neg else 0]
        spans = self.spans(neg, ip, fp)
        if not spans or (hi is not None and hi < lo):
            result = -1
        else:
            top = (int(ip) + 1) * _POW10[self.max_int_digits - len(ip)] * self.grid - 1 \
                if fp is None and ip not in ("", "0") else spans[-1][1]
            inside = spans[0][0] >= lo and (hi is None or top <= hi)
            if inside and not self.moduli:
                result = 1
            else:
                result = -1
                for a, b, gran in spans:
                    a, b = max(a, lo), (b if hi is None else min(b, hi))
                    step = gran if self.lcm == 1 else _lcm(gran, self.lcm)
                    if a <= b and (b // step) * step >= a:
                        result = 1 if inside else 0
                        break
        if len(self._verdicts) > 1 << 16:
            self._verdicts.clear()
        self._verdicts[key] = result
        return result

    def residues(self, ip: str, fp: Optional[str]) -> tuple:
        value = int(ip or "0") * self.grid
        if fp:
            value += int(fp) * 10 ** (self.fmax - len(fp))
        return tuple(value % k for k in self.moduli)

    def complete(self, frame) -> bool:
        if self.abstract:
            return self._a_complete(frame)
        _, _, neg, ip, fp, free, res = frame
        if ip == "" or fp == "":
            return False
        if free:
            if neg and ip == "0" and not fp:
                return False
            return all(r == 0 for r in res) and not self.float_checks
        value = Fraction(int(ip)) + (Fraction(int(fp), 10 ** len(fp)) if fp else 0)
        if neg:
            if value == 0 and fp is None:
                return False                     # no "-0"
            value = -value
        if self.lower is not None and (value < self.lower.value or (
                self.lower.exclusive and value == self.lower.value)):
            return False
        if self.upper is not None and (value > self.upper.value or (
                self.upper.exclusive and value == self.upper.value)):
            return False
        for m in self.multiples:
            if (value / m).denominator != 1:
                return False
        if self.float_checks:
            text = ("-" if neg else "") + ip + ("." + fp if fp is not None else "")
            number = int(text) if fp is None else float(text)
            for f in self.float_checks:
                q = number / f
                if not math.isfinite(q) or int(q) != q:
                    return False
        return True

    # -- steps -----------------------------------------------------------------------------

    def step(self, frame, byte: int):
        if self.abstract:
            return self._a_step(frame, byte)
        _, nid, neg, ip, fp, free, res = frame
        if byte == 0x2D:                                               # '-'
            if neg or ip != "":
                return ()
            return ((STAY, (K_NUM, nid, True, "", None, False, ())),)
        if byte in _DIGITS:
            d = byte - 0x30
            if fp is None:
                if ip == "0" or len(ip) >= self.max_int_digits:
                    return ()
                new_ip, new_fp = ip + chr(byte), None
                if free:
                    res = tuple((10 * r + d * self.grid) % k for r, k in zip(res, self.moduli))
            else:
                if len(fp) >= self.frac_cap(ip):
                    return ()
                new_ip, new_fp = ip, fp + chr(byte)
                if free:
                    unit = 10 ** (self.fmax - len(fp) - 1)
                    res = tuple((r + d * unit) % k for r, k in zip(res, self.moduli))
        elif byte == 0x2E:                                             # '.'
            if self.int_only or fp is not None or ip == "":
                return ()
            new_ip, new_fp = ip, ""
        else:
            return ((POP_FEED,),) if self.complete(frame) else ()
        if free:
            return ((STAY, (K_NUM, nid, neg, _shape_int(new_ip), _shape_frac(new_fp), True,
                            res)),)
        v = self.verdict(neg, new_ip, new_fp)
        if v < 0:
            return ()
        if v > 0 and self.collapsible:
            return ((STAY, (K_NUM, nid, neg, _shape_int(new_ip), _shape_frac(new_fp), True,
                            self.residues(new_ip, new_fp))),)
        return ((STAY, (K_NUM, nid, neg, new_ip, new_fp, False, ())),)

    def min_bytes(self, frame) -> tuple[int, Optional[int]]:
        """(fewest bytes that complete the number, the first of them); (0, None) if complete."""
        key = frame[2:]
        hit = self._min.get(key)
        if hit is None:
            if self.complete(frame):
                hit = (0, None)
            elif self.abstract or frame[5]:
                hit = self._free_search(frame)
            else:
                hit = self._search(frame[2], frame[3], frame[4])
            self._min[key] = hit
        return hit

    def _free_search(self, frame):
        """Breadth-first search over the (few) abstract states for the shortest completion."""
        seen = {frame[2:]}
        queue = deque([(frame, None, 0)])
        while queue:
            f, first, depth = queue.popleft()
            for b in b"0123456789.":
                for action in self.step(f, b):
                    nxt = action[1]
                    if nxt[2:] in seen:
                        continue
                    seen.add(nxt[2:])
                    fb = b if first is None else first
                    if self.complete(nxt):
                        return depth + 1, fb
                    queue.append((nxt, fb, depth + 1))
        return INF, None

    # -- digit-by-digit comparison with the bounds (no multipleOf) ----------------------------

    def _a_step(self, frame, byte: int):
        _, nid, neg, ip, fp, flags, _ = frame
        if byte == 0x2D:
            if neg or ip != "" or not self.sign_ok[1]:
                return ()
            return ((STAY, (K_NUM, nid, True, "", None, (0, 0), ())),)
        if not self.sign_ok[1 if neg else 0]:
            return ()
        bounds = self.bound_digits[1 if neg else 0]
        if byte in _DIGITS:
            d = byte - 0x30
            if fp is None:
                if ip == "0" or len(ip) >= self.max_int_digits:
                    return ()
                if ip == "" and d == 0:
                    return ((STAY, (K_NUM, nid, neg, "0", None, flags, ())),)
                n = len(ip) + 1
                new = []
                for c, bd in zip(flags, bounds):
                    if bd is not None:
                        if n > bd[1]:
                            c = 1
                        elif c == 0:
                            c = _sign(d - int(bd[0][n - 1]))
                    new.append(c)
                return ((STAY, (K_NUM, nid, neg, "1" * n, None, tuple(new), ())),)
            if len(fp) >= self.frac_cap(ip):
                return ()
            j = len(fp)
            new = []
            for c, bd in zip(flags, bounds):
                if bd is not None and c == 0:
                    c = _sign(d - int(bd[2][j]))
                new.append(c)
            return ((STAY, (K_NUM, nid, neg, ip, fp + "0", tuple(new), ())),)
        if byte == 0x2E:
            if self.int_only or fp is not None or ip == "":
                return ()
            n = 0 if ip == "0" else len(ip)
            new = []
            for c, bd in zip(flags, bounds):
                if bd is not None:
                    c = -1 if n < bd[1] else 1 if n > bd[1] else c
                new.append(c)
            return ((STAY, (K_NUM, nid, neg, ip, "", tuple(new), ())),)
        return ((POP_FEED,),) if self._a_complete(frame) else ()

    def _a_complete(self, frame) -> bool:
        _, _, neg, ip, fp, flags, _ = frame
        if ip == "" or fp == "" or not self.sign_ok[1 if neg else 0]:
            return False
        n = 0 if ip == "0" else len(ip)
        (lo, hi) = self.bound_digits[1 if neg else 0]
        results = []
        for c, bd in ((flags[0], lo), (flags[1], hi)):
            if bd is None:
                results.append(None)
                continue
            if fp is None:
                c = -1 if n < bd[1] else 1 if n > bd[1] else c
            if c == 0:
                rest = bd[2][len(fp or ""):]
                c = -1 if rest.strip("0") else 0
            results.append(c)
        return (results[0] is None or results[0] >= 0) and (results[1] is None or results[1] <= 0)

    def _options(self, neg: bool, ip: str, fp: Optional[str]):
        """Ways to complete a prefix: (added bytes, lowest, highest magnitude, granularity,
        fraction digits or None)."""
        g, fmax = self.grid, self.fmax
        out = []
        if fp is not None:
            f0 = len(fp)
            start = int(ip) * g + (int(fp) * 10 ** (fmax - f0) if fp else 0)
            for f in range(0 if f0 else 1, self.frac_cap(ip) - f0 + 1):
                out.append((f, start, start + 10 ** (fmax - f0) - 1, 10 ** (fmax - f0 - f), f0 + f))
            return out
        if ip == "":
            for n in range(1, self.max_int_digits + 1):
                low = (1 if neg else 0) if n == 1 else 10 ** (n - 1)
                out.append((n, low * g, (10 ** n - 1) * g, max(g, 1), None))
                if not self.int_only:
                    for f in range(1, min(fmax, MAX_DIGITS - n) + 1):
                        out.append((n + 1 + f, (0 if n == 1 else low) * g, 10 ** n * g - 1,
                                    10 ** (fmax - f), f))
            return sorted(out, key=lambda o: o[0])
        v = int(ip)
        for k in range(self.max_int_digits - len(ip) + 1):
            if ip == "0" and k:
                break
            base = v * 10 ** k
            out.append((k, base * g, (base + 10 ** k - 1) * g, g, None))
            if not self.int_only:
                cap = self.frac_cap("0") if ip == "0" else min(fmax, MAX_DIGITS - len(ip) - k)
                for f in range(1, cap + 1):
                    out.append((k + 1 + f, base * g, (v + 1) * 10 ** k * g - 1,
                                10 ** (fmax - f), f))
        return sorted(out, key=lambda o: o[0])

    def _search(self, neg: bool, ip: str, fp: Optional[str]):
        """Shortest completion by arithmetic: the smallest value of each completion shape that
        is in bounds and a multiple (the double check is tried on a few candidates)."""
        lo, hi = self.ranges[1 if neg else 0]
        prefix = ("-" if neg else "") + ip + ("." + fp if fp is not None else "")
        for cost, a, b, gran, frac in self._options(neg, ip, fp):
            a, b = max(a, lo), (b if hi is None else min(b, hi))
            if a > b:
                continue
            step = _lcm(gran, self.lcm)
            value = -(-a // step) * step
            for _ in range(64):
                if value > b:
                    break
                text = self._render(neg, value, frac)
                if text.startswith(prefix) and self._doubles_agree(text):
                    return cost, (ord(text[len(prefix)]) if cost else None)
                value += step
        return INF, None

    def _render(self, neg: bool, value: int, frac: Optional[int]) -> str:
        g = self.grid
        text = ("-" if neg else "") + str(value // g)
        if frac is not None:
            text += "." + str(value % g).zfill(self.fmax)[:frac]
        return text

    def _doubles_agree(self, text: str) -> bool:
        if text in ("-0",):
            return False
        if not self.float_checks:
            return True
        number = float(text) if "." in text else int(text)
        for f in self.float_checks:
            q = number / f
            if not math.isfinite(q) or int(q) != q:
                return False
        return True


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _shape_int(ip: str) -> str:
    return ip if ip in ("", "0") else "1" * len(ip)


def _shape_frac(fp: Optional[str]) -> Optional[str]:
    return None if fp is None else "0" * len(fp)


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _modulus(m: Fraction, grid: int) -> int:
    """K such that a value V/grid is a multiple of m exactly when K divides V."""
    a, b = m.numerator, m.denominator
    return grid * a // math.gcd(grid * a, b)
