"""KV slots and the paths that evaluate tokens on them.

A slot is one KV sequence of the engine with the tokens whose rows it holds. A request takes a
slot, fills it with its prompt (reusing the slot's own rows, then the prompt cache's, for the
longest shared prefix) and decodes on it.

With one slot the request thread calls the engine itself (`DirectPath`). With several, one
engine thread (`Batcher`) runs the steps of every active request together: each step takes the
next token of every decoding request plus a chunk of at most one waiting prompt, so N decoding
requests share one pass over the weights and a long prompt, prefilled in chunks taken in turn,
does not stall the others. Tokens of one sequence never depend on the batch they ride in: the
per-token arithmetic is the same as a single request's.
"""
import collections
import threading
import time

from edge_runtime.errors import ModelClosedError
from edge_runtime.model.prompt_cache import common_prefix

# Decoding requests the engine thread waits for before a step without them (seconds): a request
# that is still sampling or handing its text to a transport joins the next step instead.
GATHER_S = 0.004


class Slot:
    __slots__ = ("seq", "tokens", "busy", "used", "cancel", "thread", "last_eval_tokens")

    def __init__(self, seq):
        self.seq = seq
        self.tokens = []          # tokens whose K/V rows are at positions 0..len-1 of this sequence
        self.busy = False
        self.used = 0.0
        self.cancel = threading.Event()
        self.thread = None        # ident of the thread of the request running on it
        self.last_eval_tokens = 0


class SlotTable:
    """Hands out free slots: the one whose cached tokens share the longest prefix with the
    prompt, else the least recently used."""

    def __init__(self, n):
        self.slots = [Slot(i) for i in range(n)]
        self._cond = threading.Condition()

    def acquire(self, tokens):
        with self._cond:
            while True:
                free = [s for s in self.slots if not s.busy]
                if free:
                    best = max(free, key=lambda s: (common_prefix(s.tokens, tokens), -s.used))
                    best.busy = True
                    best.cancel.clear()
                    best.thread = threading.get_ident()
                    return best
                self._cond.wait()

    def release(self, slot):
        with self._cond:
            slot.busy = False
            slot.thread = None
            slot.used = time.monotonic()
            self._cond.notify()

    def running(self):
        return [s for s in self.slots if s.busy]


def prefill(model, slot, tokens, run):
    """Evaluate tokens on slot reusing the longest prefix held by the slot or the prompt cache;
    returns the last token's logits. `run(tokens, pos)` evaluates new tokens at pos.."""
    cache = model.prompt_cache
    if cache is None:
        return _prefill(model, slot, tokens, run, None)
    with cache.demand():
        return _prefill(model, slot, tokens, run, cache)


def _prefill(model, slot, tokens, run, cache):
    common = common_prefix(slot.tokens, tokens)
    if cache is not None:
        n, k, v = cache.lookup(tokens)
        n = min(n, len(tokens))
        if n > common:
            model._path.exclusive(lambda: model._engine.kv_write(slot.seq, k, v, n))
            common = n
    if common == len(tokens):
        common -= 1  # the last token must be run again to get its logits
    slot.tokens = list(tokens[:common])
    slot.last_eval_tokens = len(tokens) - common
    logits = run(tokens[common:], common)
    slot.tokens = list(tokens)
    if cache is not None and cache.wants(tokens):
        k, v = model._path.exclusive(lambda: model._engine.kv_read(slot.seq, len(tokens)))
        cache.store(tokens, k, v)
    return logits


class DirectPath:
    """One slot: the request thread runs the engine (the model lock is held around a request)."""

    def __init__(self, engine):
        self.engine = engine

    def prefill(self, slot, tokens, pos):
        return self.engine.eval(tokens, pos, seq=slot.seq)

    def decode(self, slot, token, pos):
        return self.engine.eval([token], pos, seq=slot.seq)

    def exclusive(self, fn):
        return fn()

    def leave(self, slot):
        pass

    def close(self):
        pass


class _Work:
    __slots__ = ("slot", "tokens", "pos", "done", "logits", "error")

    def __init__(self, slot, tokens, pos):
        self.slot, self.tokens, self.pos = slot, list(tokens), pos
        self.done = threading.Event()
        self.logits = self.error = None


class Batcher:
    """The engine thread of a model with several slots (see the module docstring). `chunk` is the
    prompt tokens a step takes while others decode (from one or more waiting prompts, in turn);
    with nobody decoding, prompts go in batches of n_batch."""

    def __init__(self, engine, n_batch, chunk):
        self.engine = engine
        self.n_batch = n_batch
        self.chunk = max(1, min(chunk, n_batch))
        self._cond = threading.Condition()
        self._decode = {}                        # seq -> _Work of one token
        self._prefill = collections.deque()      # _Work with prompt tokens left, taken in turn
        self._decoding = set()                   # seqs expected back with their next token
        self._exclusive = collections.deque()    # _Work whose tokens are a callable run alone
        self._stop = False
        self.steps = 0                 # engine passes
        self.mixed_steps = 0           # ... that carried decode tokens and prompt tokens together
        self.max_mixed_prompt = 0      # most prompt tokens one of those carried (<= chunk)
        self._thread = threading.Thread(target=self._loop, name="edge-runtime-batch", daemon=True)
        self._thread.start()

    # -- request side ----------------------------------------------------------------------------
    def _wait(self, work):
        with self._cond:
            if self._stop:
                raise ModelClosedError("the model is closed")
            if len(work.tokens) == 1 and work.slot.seq in self._decoding:
                self._decode[work.slot.seq] = work
            else:
                self._prefill.append(work)
            self._cond.notify_all()
        work.done.wait()
        if work.error is not None:
            raise work.error
        return work.logits

    def prefill(self, slot, tokens, pos):
        with self._cond:
            self._decoding.discard(slot.seq)
        logits = self._wait(_Work(slot, tokens, pos))
        with self._cond:
            self._decoding.add(slot.seq)
        return logits

    def decode(self, slot, token, pos):
        return self._wait(_Work(slot, [token], pos))

    def exclusive(self, fn):
        """fn() on the engine thread between two steps (the engine is not re-entrant)."""
        work = _Work(None, (), 0)
        work.tokens = fn
        with self._cond:
            if self._stop:
                raise ModelClosedError("the model is closed")
            self._exclusive.append(work)
            self._cond.notify_all()
        work.done.wait()
        if work.error is not None:
            raise work.error
        return work.logits

    def leave(self, slot):
        """The request on slot is over: steps no longer wait for it."""
        with self._cond:
            self._decoding.discard(slot.seq)
            self._cond.notify_all()

    def close(self):
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(30.0)

    # -- engine thread ---------------------------------------------------------------------------
    def _take(self):
        """The next step's work: (decodes, [(prompt work, tokens taken)], 0) with every waiting
        decode and prompt tokens up to the step's budget; ([], work, -1) for an exclusive call;
        nothing at close."""
        with self._cond:
            while not self._stop and not self._decode and not self._prefill and not self._exclusive:
                self._cond.wait()
            if self._exclusive and not self._stop:
                return [], self._exclusive.popleft(), -1
            deadline = time.monotonic() + GATHER_S
            while not self._stop and self._decoding - set(self._decode):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._stop:
                return [], [], 0
            decodes = list(self._decode.values())
            self._decode.clear()
            # prompt tokens of this step: all the batch has room for when nobody decodes, else a chunk
            budget = self.n_batch - len(decodes)
            if decodes or self._decoding:
                budget = min(budget, self.chunk)
            parts = []
            while self._prefill and budget > 0:
                work = self._prefill.popleft()
                if work.slot.cancel.is_set():
                    work.error = InterruptedError("generation cancelled")
                    work.done.set()
                    continue
                n = min(len(work.tokens), budget)
                parts.append((work, n))
                budget -= n
            return decodes, parts, 0

    def _loop(self):
        while True:
            decodes, parts, mode = self._take()
            if mode == -1:
                try:
                    parts.logits = parts.tokens()
                except Exception as exc:
                    parts.error = exc
                parts.done.set()
                continue
            if not decodes and not parts:
                with self._cond:
                    if self._stop:
                        self._fail_all(ModelClosedError("the model is closed"))
                        return
                continue
            tokens, positions, seqs = [], [], []
            for w in decodes:
                tokens.append(w.tokens[0])
                positions.append(w.pos)
                seqs.append(w.slot.seq)
            want = list(range(len(decodes)))
            finished = []  # (work, row of its logits) of prompts whose last token is in this step
            for work, n in parts:
                tokens += work.tokens[:n]
                positions += range(work.pos, work.pos + n)
                seqs += [work.slot.seq] * n
                if n == len(work.tokens):
                    finished.append((work, len(want)))
                    want.append(len(tokens) - 1)
            try:
                logits = self.engine.eval_multi(tokens, positions, seqs, want)
                error = None
            except Exception as exc:  # delivered to every request of the step
                logits, error = None, exc
            self.steps += 1
            if decodes and parts:
                self.mixed_steps += 1
                self.max_mixed_prompt = max(self.max_mixed_prompt, len(tokens) - len(decodes))
            for i, w in enumerate(decodes):
                w.logits, w.error = (logits[i] if error is None else None), error
                w.done.set()
            done = {id(w): row for w, row in finished}
            for work, n in parts:
                if error is not None or id(work) in done:
                    work.logits, work.error = (logits[done[id(work)]] if error is None else None), error
                    work.done.set()
                else:
                    work.tokens = work.tokens[n:]
                    work.pos += n
                    with self._cond:
                        self._prefill.append(work)  # behind the other waiting prompts: they take turns

    def _fail_all(self, error):
        for w in list(self._decode.values()) + list(self._prefill) + list(self._exclusive):
            w.error = error
            w.done.set()
        self._decode.clear()
        self._prefill.clear()
        self._exclusive.clear()


def greedy_tokens(model, tokens, max_tokens):
    """The greedy continuation of token ids on a free slot, with the prompt cache, without a
    tokenizer or end tokens (benchmarks): (ids, ttft_s, total_s). Concurrent calls on a model with
    several slots are batched like requests."""
    import numpy as np

    tokens = [int(t) for t in tokens]
    model._check_fits(len(tokens), max_tokens)
    lock = model._lock if model.slots == 1 else threading.Lock()
    with lock:
        slot = model._slots.acquire(tokens)
        path = model._path
        try:
            t0 = time.perf_counter()
            logits = prefill(model, slot, tokens, lambda toks, pos: path.prefill(slot, toks, pos))
            out = [int(np.argmax(logits))]
            ttft = time.perf_counter() - t0
            while len(out) < max_tokens:
                logits = path.decode(slot, out[-1], len(slot.tokens))
                slot.tokens.append(out[-1])
                out.append(int(np.argmax(logits)))
            return out, ttft, time.perf_counter() - t0
        finally:
            path.leave(slot)
            model._slots.release(slot)
