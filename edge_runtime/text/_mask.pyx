# cython: boundscheck=False, wraparound=False, language_level=3
"""Token masks in C: the automaton's transition table, token tries and the trie walk.

The Python side (edge_runtime.text.schema) owns the automaton; the walk calls back into it for
every transition or budget figure it has not computed yet, so the table fills as it is used.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t

import numpy as np

cdef extern from "er_mask.h":
    ctypedef struct er_dfa:
        int32_t *table
        int32_t *fallback
        uint8_t *own
        int32_t n_states
        int32_t cap
    ctypedef struct er_ivec:
        int32_t *v
        int32_t n
        int32_t cap
    ctypedef struct er_trie:
        int32_t n_nodes
        int32_t n_vocab
    ctypedef int32_t (*er_resolve_fn)(void *ctx, int op, int32_t state, int32_t byte) noexcept
    int ER_UNKNOWN
    int32_t ER_NEED_INF
    int ER_CALLBACK_ERROR
    int er_dfa_init(er_dfa *d, int32_t cap)
    int32_t er_dfa_add_state(er_dfa *d)
    void er_dfa_free(er_dfa *d)
    int er_ivec_resize(er_ivec *v, int32_t n, int32_t fill)
    void er_ivec_free(er_ivec *v)
    int er_trie_build(er_trie *t, const uint8_t *data, const int64_t *offsets, const int32_t *ids,
                      int32_t n_tokens, int32_t n_vocab)
    void er_trie_free(er_trie *t)
    int32_t er_trie_prefix_ends(const er_trie *t, const uint8_t *s, int32_t n, int32_t *out)
    int er_mask_walk(const er_trie *t, er_dfa *d, er_ivec *need, int32_t start, int32_t budget,
                     uint32_t *mask, int32_t *max_need, er_resolve_fn resolve, void *ctx) nogil
    void er_mask_or(uint32_t *dst, const uint32_t *src, int32_t n_words)
    void er_mask_to_bool(const uint32_t *mask, int32_t n, uint8_t *out)

UNKNOWN = ER_UNKNOWN
NEED_INF = ER_NEED_INF


cdef class Dfa:
    """Transition table: state * 256 + byte -> state (0 dead, -1 not computed yet)."""
    cdef er_dfa d

    def __cinit__(self, int32_t cap=256):
        if er_dfa_init(&self.d, cap) != 0:
            raise MemoryError("automaton table")

    def __dealloc__(self):
        er_dfa_free(&self.d)

    def add_state(self):
        cdef int32_t s = er_dfa_add_state(&self.d)
        if s < 0:
            raise MemoryError("automaton table")
        return s

    @property
    def n_states(self):
        return self.d.n_states

    def get(self, int32_t s, int b):
        """The transition, -1 if unknown (a fallback state's row is not consulted)."""
        if s < 0 or s >= self.d.n_states or b < 0 or b > 255:
            raise IndexError(f"transition ({s}, {b}) out of range")
        return self.d.table[<size_t>s * 256 + b]

    def set_fallback(self, int32_t s, int32_t fallback, const uint8_t[::1] own):
        """Bytes outside ``own`` take ``fallback``'s transitions (own: 32-byte bit set)."""
        if s < 0 or s >= self.d.n_states or fallback < 0 or fallback >= self.d.n_states or \
                own.shape[0] != 32:
            raise IndexError(f"fallback {s} -> {fallback} out of range")
        cdef int k
        for k in range(32):
            self.d.own[<size_t>s * 32 + k] = own[k]
        self.d.fallback[s] = fallback

    def set(self, int32_t s, int b, int32_t target):
        if s < 0 or s >= self.d.n_states or b < 0 or b > 255 or target < -1 or \
                target >= self.d.n_states:
            raise IndexError(f"transition ({s}, {b}) -> {target} out of range")
        self.d.table[<size_t>s * 256 + b] = target


    def set_many(self, int32_t s, const uint8_t[::1] members, int32_t target):
        """Set the transitions of state s on every byte in ``members`` to ``target``."""
        if s < 0 or s >= self.d.n_states or target < -1 or target >= self.d.n_states:
            raise IndexError(f"transition ({s}, *) -> {target} out of range")
        cdef Py_ssize_t k
        cdef int32_t *row = self.d.table + <size_t>s * 256
        for k in range(members.shape[0]):
            row[members[k]] = target

    def fill_unknown(self, int32_t s, int32_t target):
        """Set every transition of state s not computed yet to ``target``."""
        if s < 0 or s >= self.d.n_states or target < -1 or target >= self.d.n_states:
            raise IndexError(f"transition ({s}, *) -> {target} out of range")
        cdef int b
        cdef int32_t *row = self.d.table + <size_t>s * 256
        for b in range(256):
            if row[b] == ER_UNKNOWN:
                row[b] = target


cdef class IntVec:
    """A growable int32 array (budget figures per automaton state); -1 means unknown."""
    cdef er_ivec v

    def __dealloc__(self):
        er_ivec_free(&self.v)

    def __len__(self):
        return self.v.n

    def get(self, int32_t i):
        return self.v.v[i] if 0 <= i < self.v.n else ER_UNKNOWN

    def set(self, int32_t i, int32_t value):
        if i < 0:
            raise IndexError(i)
        if i >= self.v.n and er_ivec_resize(&self.v, i + 1, ER_UNKNOWN) != 0:
            raise MemoryError("int vector")
        self.v.v[i] = value


cdef class Trie:
    """The tokens with the given ids (non-empty byte strings) as a depth-first trie."""
    cdef er_trie t
    cdef readonly int32_t n_tokens

    def __cinit__(self, token_bytes, ids, int32_t n_vocab):
        ids = sorted(ids, key=token_bytes.__getitem__)
        data = b"".join([token_bytes[i] for i in ids])
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        lengths = np.array([len(token_bytes[i]) for i in ids], dtype=np.int64)
        if len(ids) and (lengths.min() < 1 or lengths.max() > 255):
            raise ValueError("trie tokens must be 1..255 bytes long")
        np.cumsum(lengths, out=offsets[1:])
        cdef const uint8_t[::1] dv = np.frombuffer(data or b"\0", dtype=np.uint8)
        cdef const int64_t[::1] ov = offsets
        cdef const int32_t[::1] iv = np.asarray(ids if len(ids) else [0], dtype=np.int32)
        if er_trie_build(&self.t, &dv[0], &ov[0], &iv[0], len(ids), n_vocab) != 0:
            raise MemoryError("token trie")
        self.n_tokens = len(ids)

    def __dealloc__(self):
        er_trie_free(&self.t)

    @property
    def n_nodes(self):
        return self.t.n_nodes

    def prefix_ends(self, bytes s):
        """Lengths k such that s[:k] is a token, ascending."""
        cdef int32_t n = len(s)
        if n == 0:
            return []
        out = np.empty(n, dtype=np.int32)
        cdef int32_t[::1] o = out
        cdef const uint8_t *p = s
        cdef int32_t count = er_trie_prefix_ends(&self.t, p, n, &o[0])
        return out[:count].tolist()


cdef int32_t _resolve(void *ctx, int op, int32_t state, int32_t byte) noexcept with gil:
    cdef object box = <object>ctx
    try:
        return box[0](op, state, byte)
    except BaseException as exc:
        box[1] = exc
        return ER_CALLBACK_ERROR


def walk(Trie trie, Dfa dfa, IntVec need, int32_t start, int32_t budget, uint32_t[::1] mask,
         resolver):
    """OR into ``mask`` the tokens allowed from state ``start`` within ``budget``; returns the
    largest budget figure among them (-1 if none). ``resolver(op, state, byte)`` computes a
    missing transition (op 0) or budget figure (op 1)."""
    if mask.shape[0] * 32 < trie.t.n_vocab:
        raise ValueError("mask too small for the vocabulary")
    if start <= 0 or start >= dfa.d.n_states:
        raise ValueError(f"walk from invalid state {start}")
    box = [resolver, None]
    cdef void *ctx = <void *>box
    cdef int32_t max_need = -1
    cdef int rc
    with nogil:
        rc = er_mask_walk(&trie.t, &dfa.d, &need.v, start, budget, &mask[0], &max_need,
                          _resolve, ctx)
    if rc != 0:
        raise box[1]
    return max_need


def mask_or(uint32_t[::1] dst, const uint32_t[::1] src):
    if src.shape[0] != dst.shape[0]:
        raise ValueError("mask sizes differ")
    er_mask_or(&dst[0], &src[0], dst.shape[0])


def mask_to_bool(const uint32_t[::1] mask, int32_t n):
    if mask.shape[0] * 32 < n:
        raise ValueError("mask too small")
    out = np.empty(n, dtype=np.bool_)
    cdef uint8_t[::1] o = out.view(np.uint8)
    er_mask_to_bool(&mask[0], n, &o[0])
    return out
