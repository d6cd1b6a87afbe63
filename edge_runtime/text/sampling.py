"""Token sampler: turns one row of logits into the next token id.

Pipeline, in the order llama.cpp applies it (every stage works on a copy; the caller's
logits are never modified):

1. penalties over the last ``repeat_last_n`` tokens of ``history`` (0 disables, -1 = all):
   - repeat penalty: a positive logit is divided by ``repeat_penalty``, a negative one
     multiplied by it (so the token always becomes less likely when the penalty is > 1);
   - OpenAI-style: ``logit -= frequency_penalty * count + presence_penalty * (count > 0)``;
2. tokens where ``allowed`` is False are dropped, as if their logit were -inf
   (grammar / JSON-schema constraints);
3. ``temperature == 0``: greedy argmax, the lowest id wins ties;
4. otherwise top-k (``top_k <= 0`` keeps every token) → softmax of ``logit / temperature``
   → top-p (smallest prefix of the sorted distribution with mass ≥ ``top_p``) → min-p
   (drop tokens with probability < ``min_p`` × the best probability) → one draw from a
   ``numpy.random.Generator(PCG64(seed))``.

With the same seed, the same logits and the same history give the same token sequence.
Only the top candidates are ever sorted; the full vocabulary goes through argpartition.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# Candidates looked at first when top-k is disabled; doubled until top-p is satisfied.
_UNLIMITED_TOP_K_FIRST_WINDOW = 1024


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; defaults match llama.cpp / llama-cpp-python."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        def real_field(name: str) -> float:
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(float(value)):
                raise ValueError(f"SamplingParams.{name}: expected a finite number, got {value!r}")
            return float(value)

        def int_field(name: str) -> int:
            value = getattr(self, name)
            if not _is_int(value):
                raise ValueError(f"SamplingParams.{name}: expected an integer, got {value!r}")
            return int(value)

        temperature = real_field("temperature")
        if temperature < 0:
            raise ValueError(
                f"SamplingParams.temperature: expected >= 0 (0 means greedy), got {temperature!r}")
        top_k = int_field("top_k")
        if top_k < 0:
            raise ValueError(f"SamplingParams.top_k: expected >= 0 (0 disables it), got {top_k!r}")
        top_p = real_field("top_p")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p: expected a value in (0, 1], got {top_p!r}")
        min_p = real_field("min_p")
        if not 0.0 <= min_p <= 1.0:
            raise ValueError(f"SamplingParams.min_p: expected a value in [0, 1], got {min_p!r}")
        repeat_penalty = real_field("repeat_penalty")
        if repeat_penalty <= 0:
            raise ValueError("SamplingParams.repeat_penalty: expected > 0 (1 disables it), "
                             f"got {repeat_penalty!r}")
        repeat_last_n = int_field("repeat_last_n")
        if repeat_last_n < -1:
            raise ValueError(
                "SamplingParams.repeat_last_n: expected -1 (whole history), 0 (off) or a positive "
                f"count, got {repeat_last_n!r}")
        real_field("presence_penalty")
        real_field("frequency_penalty")
        if self.seed is not None:
            seed = int_field("seed")
            if not 0 <= seed < 2**64:
                raise ValueError(
                    f"SamplingParams.seed: expected None or 0 <= seed < 2**64, got {seed!r}")


class SamplingError(RuntimeError):
    """No token can be drawn (every token is masked out, or the logits are NaN/+inf)."""


class Sampler:
    """Draws token ids from logits according to ``SamplingParams``; holds the PRNG state."""

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        if not isinstance(params, SamplingParams):
            raise TypeError(
                f"Sampler: params must be a SamplingParams, got {type(params).__name__}")
        if not _is_int(n_vocab) or n_vocab <= 0:
            raise ValueError(f"Sampler: n_vocab must be a positive integer, got {n_vocab!r}")
        self.params = params
        self.n_vocab = int(n_vocab)
        self.reseed(params.seed)

    def reseed(self, seed: Optional[int] = None) -> None:
        """Restart the PRNG (a new random seed when ``seed`` is None)."""
        if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**64):
            raise ValueError(f"Sampler.reseed: expected None or 0 <= seed < 2**64, got {seed!r}")
        self.seed = int(seed) if seed is not None else int.from_bytes(os.urandom(8), "little")
        self._rng = np.random.Generator(np.random.PCG64(self.seed))

    # -- stages -------------------------------------------------------------------------

    def _check_inputs(self, logits, allowed) -> None:
        if not isinstance(logits, np.ndarray):
            raise ValueError("Sampler.sample: logits must be a float numpy array, got "
                             f"{type(logits).__name__}")
        if logits.dtype.kind != "f":
            raise ValueError("Sampler.sample: logits must be a float numpy array, got dtype "
                             f"{logits.dtype}")
        if logits.shape != (self.n_vocab,):
            raise ValueError(f"Sampler.sample: logits shape {logits.shape} does not match "
                             f"n_vocab ({self.n_vocab},)")
        if allowed is not None:
            if not isinstance(allowed, np.ndarray) or allowed.dtype != np.bool_:
                raise ValueError("Sampler.sample: allowed must be a numpy bool array or None")
            if allowed.shape != (self.n_vocab,):
                raise ValueError(f"Sampler.sample: allowed shape {allowed.shape} does not match "
                                 f"n_vocab ({self.n_vocab},)")

    def _penalized_logits(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """Copy of the logits (float32) with the history penalties applied."""
        p = self.params
        scores = np.array(logits, dtype=np.float32, copy=True)
        last_n = p.repeat_last_n
        penalties_active = (p.repeat_penalty != 1.0 or p.presence_penalty != 0.0
                            or p.frequency_penalty != 0.0)
        if last_n == 0 or not penalties_active or len(history) == 0:
            return scores
        if not isinstance(history, (list, tuple, np.ndarray)):
            history = list(history)
        window = history if last_n == -1 else history[-last_n:]
        window_ids = np.asarray(window)
        if window_ids.ndim != 1 or window_ids.dtype.kind not in "iu":
            raise ValueError("Sampler.sample: history must be a sequence of integer token ids")
        if window_ids.size and (window_ids.min() < 0 or window_ids.max() >= self.n_vocab):
            bad = window_ids[(window_ids < 0) | (window_ids >= self.n_vocab)][0]
            raise ValueError(
                f"Sampler.sample: history token id {int(bad)} outside [0, {self.n_vocab})")
        ids, counts = np.unique(window_ids, return_counts=True)
        values = scores[ids]
        if p.repeat_penalty != 1.0:
            values = np.where(values > 0, values / np.float32(p.repeat_penalty),
                              values * np.float32(p.repeat_penalty))
        if p.frequency_penalty != 0.0 or p.presence_penalty != 0.0:
            values = values - (counts * p.frequency_penalty + p.presence_penalty).astype(np.float32)
        scores[ids] = values
        return scores

    def _candidates(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Top-k candidates sorted best first (lowest id on ties).

        Returns (ids, weights, total): ``weights = exp((score - best) / T)`` of the returned
        ids and ``total`` the same sum over every top-k candidate, so ``weights / total``
        are the softmax probabilities even when only a window of them is returned.
        """
        p = self.params
        n = scores.shape[0]
        best = float(scores.max())
        if 0 < p.top_k < n:
            ids = self._top_k_ids(scores, p.top_k)
            total = None
        else:
            ids, total = self._nucleus_window(scores, best)
        if p.top_p < 1.0 or p.min_p > 0.0 or ids.shape[0] <= p.top_k:
            ids = ids[np.lexsort((ids, -scores[ids].astype(np.float64)))]
        weights = np.exp((scores[ids].astype(np.float64) - best) / p.temperature)
        return ids, weights, float(weights.sum()) if total is None else total

    @staticmethod
    def _top_k_ids(scores: np.ndarray, k: int) -> np.ndarray:
        """The k best finite ids; among tokens tied at the cut the lowest ids are taken."""
        n = scores.shape[0]
        ids = np.argpartition(scores, n - k)[n - k:]
        edge = scores[ids].min()
        above = np.count_nonzero(scores[ids] > edge)
        if np.count_nonzero(scores == edge) > k - above:
            # argpartition picks arbitrary members of a tie: take the lowest ids instead.
            tied = np.flatnonzero(scores == edge)[:k - above]
            ids = np.concatenate([ids[scores[ids] > edge], tied])
        return ids[np.isfinite(scores[ids])]

    def _nucleus_window(self, scores: np.ndarray, best: float) -> tuple[np.ndarray, float]:
        """Without top-k: a block of best tokens that surely holds every token top-p/min-p keep.

        Grows by doubling instead of sorting the whole vocabulary. Returns the block and the
        softmax denominator over all finite scores.
        """
        p = self.params
        n = scores.shape[0]
        all_weights = np.exp((scores.astype(np.float64) - best) / p.temperature)
        total = float(all_weights.sum())
        window = _UNLIMITED_TOP_K_FIRST_WINDOW
        while window < n and (p.top_p < 1.0 or p.min_p > 0.0):
            ids = np.argpartition(scores, n - window)[n - window:]
            weakest = float(scores[ids].min())
            covered = float(all_weights[ids].sum()) / total
            weakest_weight = math.exp((weakest - best) / p.temperature)
            # Enough when the block holds the nucleus, or when its weakest member already
            # fails min-p (everything outside is weaker still) -- and no token outside ties
            # with the weakest one, so the cut does not depend on argpartition's choice.
            if ((covered >= p.top_p or weakest_weight < p.min_p)
                    and np.count_nonzero(scores >= weakest) == window):
                return ids, total
            window *= 2
        return np.flatnonzero(np.isfinite(scores)), total

    def sample(self, logits: np.ndarray, history: Sequence[int] = (),
               allowed: Optional[np.ndarray] = None) -> int:
        """Next token id for ``logits`` (shape (n_vocab,)), never one where ``allowed`` is False."""
        self._check_inputs(logits, allowed)
        p = self.params
        scores = self._penalized_logits(logits, history)
        # Disallowed tokens leave the pool (same as a -inf logit); working on the allowed
        # ids only also keeps argpartition fast when a grammar allows a handful of tokens.
        pool = None
        if allowed is not None:
            pool = np.flatnonzero(allowed)
            if pool.shape[0] == self.n_vocab:
                pool = None
            else:
                scores = scores[pool]
        best = scores.max() if scores.shape[0] else -np.inf   # NaN propagates through max
        if np.isnan(best):
            raise SamplingError("Sampler.sample: logits contain NaN")
        if best == np.inf:
            raise SamplingError("Sampler.sample: logits contain +inf")
        if best == -np.inf:
            raise SamplingError(
                "Sampler.sample: no token can be sampled (every token is masked out or -inf)")
        # pool is ascending, so "lowest index" below is also "lowest token id".
        token = self._draw(scores) if p.temperature > 0.0 else int(np.argmax(scores))
        return token if pool is None else int(pool[token])

    def _draw(self, scores: np.ndarray) -> int:
        """Index into ``scores`` drawn after top-k, temperature, top-p and min-p."""
        p = self.params
        ids, weights, total = self._candidates(scores)
        probs = weights / total
        keep = probs.shape[0]
        if p.top_p < 1.0:
            cumulative = np.cumsum(probs)
            keep = min(keep, int(np.searchsorted(cumulative, p.top_p, side="left")) + 1)
        if p.min_p > 0.0:
            keep = min(keep, int(np.count_nonzero(probs >= p.min_p * probs[0])))
        # Weights that underflowed to 0 are not candidates (they could otherwise be picked
        # by rounding at the very end of the cumulative sum).
        ids, weights = ids[:keep], weights[:keep]
        positive = weights > 0.0
        if not positive.all():
            ids, weights = ids[positive], weights[positive]
        cumulative = np.cumsum(weights)
        target = self._rng.random() * cumulative[-1]
        chosen = min(int(np.searchsorted(cumulative, target, side="right")), ids.shape[0] - 1)
        return int(ids[chosen])
