"""Per-vocabulary tables: token tries, string fast-path masks, token budgets, cached masks.

Budgets. ``need(state)`` is the number of tokens that surely finish the document from a
state: follow the automaton's shortest completion (its first bytes, state after state) and
tokenize it as well as the vocabulary allows, token boundaries anywhere:
``need(s) = min over tokens t that start the completion of 1 + need(s after t)``.
By construction one of those tokens lowers the need by one, so if a token is only allowed
when ``need(state after it) <= tokens left after it``, generation can always finish in time.
The figure is exact for the completion it follows (the shortest in bytes), an upper bound on
the true fewest tokens.

Masks. A mask is the set of tokens whose bytes the automaton accepts and whose end state
still fits the budget; the C walk over the token trie computes it, calling back for
transitions and budgets not known yet. Masks are cached per state together with the largest
budget among their tokens, so a cached mask serves every request with at least that much
budget left. Inside a string with no pattern, the tokens that are plain text (no quote, no
backslash) only add characters: a precomputed mask per character count covers them and only
the ~1.7k tokens with a quote or backslash are walked.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from edge_runtime.text import _mask
from edge_runtime.text.schema.automaton import DEAD, Automaton
from edge_runtime.text.schema.strings import CHAR, CLOSE, ESC, LEX

NEED_INF = _mask.NEED_INF
_MASK_CACHE = 1024            # 16 KB each for a 128k vocabulary
_BUDGET_CACHE = 64
_CHAIN_LIMIT = 1 << 20


class Vocabulary:
    """Token tables of one vocabulary, shared by every schema and request."""

    def __init__(self, token_bytes, eos_ids, special_ids):
        if not isinstance(token_bytes, (list, tuple)) or not token_bytes:
            raise ValueError("JsonSchemaConstraint: token_bytes must be a non-empty list of bytes")
        n = len(token_bytes)
        for i, t in enumerate(token_bytes):
            if not isinstance(t, bytes):
                raise ValueError(f"JsonSchemaConstraint: token_bytes[{i}] is {type(t).__name__}, "
                                 "expected bytes")
        self.token_bytes = token_bytes
        self.n_vocab = n
        self.eos_ids = tuple(sorted(eos_ids))
        self.special_ids = tuple(sorted(special_ids))
        excluded = set(self.eos_ids) | set(self.special_ids)
        allowed = [i for i, t in enumerate(token_bytes) if t and i not in excluded and len(t) < 256]
        self.max_token_len = max((len(token_bytes[i]) for i in allowed), default=1)
        self.trie = _mask.Trie(token_bytes, allowed, n)
        self.n_words = (n + 31) // 32
        self.eos_words = np.zeros(self.n_words, dtype=np.uint32)
        for i in self.eos_ids:
            self.eos_words[i >> 5] |= np.uint32(1 << (i & 31))
        singles = {token_bytes[i] for i in allowed if len(token_bytes[i]) == 1}
        self.all_bytes = len(singles) == 256
        chars = np.full(n, -1, dtype=np.int64)      # plain text tokens: their characters
        quote_chars = np.full(n, -1, dtype=np.int64)  # quote-first tokens: characters before it
        rests = [b""] * n
        backslash = []
        for i in allowed:
            t = token_bytes[i]
            sub, count = CHAR, 0
            for k, b in enumerate(t):
                r = LEX[sub][b]
                if r is CLOSE:
                    if sub == CHAR:
                        quote_chars[i] = count
                        rests[i] = t[k + 1:]
                    count = -1
                    break
                if r is not None and r[0] == ESC:
                    backslash.append(i)
                    count = -1
                    break
                if r is None:
                    count = -1
                    break
                sub, count = r[0], count + (1 if r[2] else 0)
            if count > 0:
                chars[i] = count
        self.backslash_trie = _mask.Trie(token_bytes, backslash, n)
        self.rest_trie = _mask.Trie(rests, [i for i in allowed if rests[i]], n)
        self.max_chars = int(chars.max()) if chars.max() > 0 else 0
        self.plain_upto = self._cumulative(chars, self.max_chars)
        self.max_quote_chars = int(quote_chars.max()) if quote_chars.max() >= 0 else 0
        self.quote_upto = self._cumulative(quote_chars, self.max_quote_chars)
        empty = np.array([i for i in allowed if quote_chars[i] >= 0 and not rests[i]], np.int64)
        self.quote_empty = np.zeros(self.n_words, dtype=np.uint32)
        np.bitwise_or.at(self.quote_empty, empty >> 5,
                         np.uint32(1) << (empty & 31).astype(np.uint32))
        plain = [token_bytes[i] for i in allowed
                 if all(0x20 <= b < 0x7F and b not in (0x22, 0x5C) for b in token_bytes[i])]
        # padding for strings that must grow (minLength): the longest plain ASCII token
        self.pad = max(plain, key=lambda t: (len(t), t.count(b" "), t), default=b" ")
        h = hashlib.blake2b(digest_size=16)
        h.update(np.fromiter((len(t) for t in token_bytes), dtype=np.int64, count=n).tobytes())
        h.update(b"".join(token_bytes))
        h.update(repr((self.eos_ids, self.special_ids)).encode())
        self.digest = h.hexdigest()


    def _cumulative(self, counts: np.ndarray, top: int) -> np.ndarray:
        """Row k: bit mask of the tokens whose count is in 0..k (-1: not counted)."""
        rows = np.zeros((top + 1, self.n_words), dtype=np.uint32)
        ids = np.flatnonzero(counts >= 0)
        np.bitwise_or.at(rows, (counts[ids], ids >> 5),
                         np.uint32(1) << (ids & 31).astype(np.uint32))
        return np.bitwise_or.accumulate(rows, axis=0)


_vocab_lock = threading.Lock()
_vocab_by_id: "OrderedDict[tuple, tuple]" = OrderedDict()
_vocab_by_digest: "OrderedDict[str, Vocabulary]" = OrderedDict()


def vocabulary_for(token_bytes, eos_ids, special_ids) -> Vocabulary:
    """The shared Vocabulary for a token list (found by identity, then by content)."""
    eos = tuple(sorted(set(eos_ids)))
    special = tuple(sorted(set(special_ids)))
    key = (id(token_bytes), eos, special)
    with _vocab_lock:
        hit = _vocab_by_id.get(key)
        if hit is not None and hit[0] is token_bytes:
            _vocab_by_id.move_to_end(key)
            return hit[1]
    vocab = Vocabulary(token_bytes, eos, special)
    with _vocab_lock:
        vocab = _vocab_by_digest.setdefault(vocab.digest, vocab)
        _vocab_by_digest.move_to_end(vocab.digest)
        while len(_vocab_by_digest) > 4:
            _vocab_by_digest.popitem(last=False)
        _vocab_by_id[key] = (token_bytes, vocab)
        while len(_vocab_by_id) > 8:
            _vocab_by_id.popitem(last=False)
    return vocab


class SchemaTables:
    """One automaton seen through one vocabulary: budgets and cached masks."""

    def __init__(self, automaton: Automaton, vocab: Vocabulary):
        self.automaton = automaton
        self.vocab = vocab
        self.needs = _mask.IntVec()
        self._masks: OrderedDict = OrderedDict()
        self._budgeted: OrderedDict = OrderedDict()
        self._closed: dict = {}
        self._resolve = self._resolver

    def _resolver(self, op: int, state: int, byte: int) -> int:
        return self.automaton.step(state, byte) if op == 0 else self.need(state)

    def need(self, sid: int) -> int:
        """Tokens that surely finish the document from state ``sid`` (NEED_INF: none)."""
        v = self.needs.get(sid)
        if v >= 0:
            return v
        a = self.automaton
        with a.lock:
            chain = []
            s = sid
            while True:
                if a.min[s] == 0:
                    self.needs.set(s, 0)
                    break
                if s != sid and self.needs.get(s) >= 0:
                    break
                chain.append(s)
                if len(chain) > _CHAIN_LIMIT:
                    s = DEAD
                    break
                s = a.step(s, a.pi[s])
                if s == DEAD:
                    break
            if s == DEAD:           # cannot happen with consistent costs; be safe
                for c in chain:
                    self.needs.set(c, NEED_INF)
                return NEED_INF
            width = self.vocab.max_token_len
            seq = chain + [s]
            t = s
            for _ in range(width):
                if a.min[t] == 0:
                    break
                t = a.step(t, a.pi[t])
                seq.append(t)
            witness = bytes(a.pi[x] for x in seq[:-1])
            prefix_ends = self.vocab.trie.prefix_ends
            for i in range(len(chain) - 1, -1, -1):
                best = NEED_INF
                for k in prefix_ends(witness[i:i + width]):
                    nk = self.needs.get(seq[i + k])
                    if 0 <= nk < NEED_INF and nk + 1 < best:
                        best = nk + 1
                self.needs.set(chain[i], best)
            return self.needs.get(sid)

    # -- masks ---------------------------------------------------------------------------------

    def mask(self, sid: int, remaining=None) -> np.ndarray:
        """uint32 bit mask of the tokens allowed in state ``sid`` when ``remaining`` tokens
        (this one included) may still be generated; None: no limit. Read-only, shared."""
        v = self.vocab
        a = self.automaton
        if sid == DEAD:
            return np.zeros(v.n_words, dtype=np.uint32)
        if remaining is not None and remaining <= 0:
            return v.eos_words.copy() if a.min[sid] == 0 else np.zeros(v.n_words, np.uint32)
        budget = None if remaining is None else remaining - 1
        with a.lock:
            entry = self._masks.get(sid)
            if entry is None:
                entry = self._compute(sid, None)
                self._masks[sid] = entry
                if len(self._masks) > _MASK_CACHE:
                    self._masks.popitem(last=False)
            else:
                self._masks.move_to_end(sid)
            words, threshold = entry
            if budget is None or budget >= threshold:
                return words
            key = (sid, budget)
            hit = self._budgeted.get(key)
            if hit is None:
                hit = self._compute(sid, budget)[0]
                self._budgeted[key] = hit
                if len(self._budgeted) > _BUDGET_CACHE:
                    self._budgeted.popitem(last=False)
            return hit

    def _compute(self, sid: int, budget):
        v = self.vocab
        a = self.automaton
        words = np.zeros(v.n_words, dtype=np.uint32)
        limit = NEED_INF - 1 if budget is None else budget
        fast = a.fast[sid]
        if fast is not None and v.all_bytes and limit >= a.min[sid] + 3:
            left, required, closed = fast
            if left != 0:
                words[:] = v.plain_upto[v.max_chars if left < 0 else min(left, v.max_chars)]
            accepted, high_closed = self._closed_mask(closed, budget)
            if left < 0 or left >= required:
                quoted = accepted & v.quote_upto[v.max_quote_chars if left < 0
                                                 else min(left, v.max_quote_chars)]
                if required:
                    quoted &= ~v.quote_upto[min(required - 1, v.max_quote_chars)]
                words |= quoted
            high = _mask.walk(v.backslash_trie, a.dfa, self.needs, sid, limit, words,
                              self._resolve)
            threshold = max(high, high_closed, a.min[sid] + 3)
        else:
            threshold = _mask.walk(v.trie, a.dfa, self.needs, sid, limit, words, self._resolve)
        if a.min[sid] == 0:
            words |= v.eos_words
        words.setflags(write=False)
        return words, threshold

    def _closed_mask(self, closed: int, budget):
        """Tokens that close a plain string and continue from state ``closed``, as the bits of
        the quote-first tokens whose rest (after the quote) fits; plus the largest budget."""
        entry = self._closed.get(closed)
        if entry is None or (budget is not None and budget < entry[1]):
            v = self.vocab
            limit = NEED_INF - 1 if budget is None else budget
            words = np.zeros(v.n_words, dtype=np.uint32)
            high = -1
            if closed != DEAD:
                need = self.need(closed)
                if need <= limit:
                    words |= v.quote_empty
                    high = need
                high = max(high, _mask.walk(v.rest_trie, self.automaton.dfa, self.needs, closed,
                                            limit, words, self._resolve))
            if budget is not None:
                return words, high
            entry = (words, high)
            self._closed[closed] = entry
        return entry
