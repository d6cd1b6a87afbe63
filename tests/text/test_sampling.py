"""Tests for edge_runtime.text.sampling: determinism, each pipeline stage, masks, distribution."""

import time
from collections import deque

import numpy as np
import pytest

from edge_runtime.text.sampling import Sampler, SamplingError, SamplingParams

LLAMA3_VOCAB = 128256
# Every truncation and penalty off: the pure softmax at the given temperature.
PLAIN = dict(top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)


def draw_support(params: SamplingParams, logits, n_draws=3000, history=(), allowed=None):
    sampler = Sampler(params, logits.shape[0])
    return {sampler.sample(logits, history, allowed) for _ in range(n_draws)}


def logits_from_probs(probs):
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


# -- parameters ---------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")),
    ("top_k", -1), ("top_k", 2.5), ("top_k", True),
    ("top_p", 0.0), ("top_p", 1.01), ("top_p", -0.5),
    ("min_p", -0.01), ("min_p", 1.5),
    ("repeat_penalty", 0.0), ("repeat_penalty", -1.0),
    ("repeat_last_n", -2), ("repeat_last_n", 3.0),
    ("presence_penalty", float("nan")), ("frequency_penalty", "1"),
    ("seed", -1), ("seed", 2**64), ("seed", 1.5),
])
def test_params_reject_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_params_defaults_match_llama_cpp():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty, p.repeat_last_n) == \
        (0.8, 40, 0.95, 0.05, 1.1, 64)
    assert (p.presence_penalty, p.frequency_penalty, p.seed) == (0.0, 0.0, None)


def test_sampler_rejects_bad_inputs():
    sampler = Sampler(SamplingParams(seed=1), 8)
    good = np.zeros(8, dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        sampler.sample(np.zeros(9, dtype=np.float32))
    with pytest.raises(ValueError, match="float"):
        sampler.sample(np.zeros(8, dtype=np.int32))
    with pytest.raises(ValueError, match="float"):
        sampler.sample([0.0] * 8)
    with pytest.raises(ValueError, match="allowed"):
        sampler.sample(good, allowed=np.ones(8, dtype=np.int8))
    with pytest.raises(ValueError, match="allowed shape"):
        sampler.sample(good, allowed=np.ones(7, dtype=bool))
    with pytest.raises(ValueError, match="history token id 8"):
        sampler.sample(good, history=[1, 8])
    with pytest.raises(SamplingError, match="NaN"):
        sampler.sample(np.array([0, 1, np.nan, 0, 0, 0, 0, 0], dtype=np.float32))
    with pytest.raises(ValueError, match="n_vocab"):
        Sampler(SamplingParams(), 0)


# -- determinism and greedy ------------------------------------------------------------------

def run_sequence(params, n_vocab, steps, logits_seed=7):
    sampler = Sampler(params, n_vocab)
    rng = np.random.default_rng(logits_seed)
    history = []
    for _ in range(steps):
        logits = rng.standard_normal(n_vocab).astype(np.float32) * 2
        history.append(sampler.sample(logits, history))
    return history


def test_same_seed_same_sequence_and_other_seed_differs():
    a = run_sequence(SamplingParams(seed=1234), 5000, 60)
    b = run_sequence(SamplingParams(seed=1234), 5000, 60)
    c = run_sequence(SamplingParams(seed=1235), 5000, 60)
    assert a == b
    assert a != c


def test_reseed_restarts_the_sequence():
    logits = np.random.default_rng(0).standard_normal(500).astype(np.float32)
    sampler = Sampler(SamplingParams(seed=99, **PLAIN), 500)
    first = [sampler.sample(logits) for _ in range(30)]
    sampler.reseed(99)
    assert [sampler.sample(logits) for _ in range(30)] == first


def test_unseeded_samplers_draw_their_own_seed():
    assert Sampler(SamplingParams(), 10).seed != Sampler(SamplingParams(), 10).seed


def test_greedy_is_argmax_and_lowest_id_wins_ties():
    sampler = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0), 6)
    assert sampler.sample(np.array([0.1, 3.0, -2, 3.0, 1, 3.0], dtype=np.float32)) == 1
    rng = np.random.default_rng(3)
    for _ in range(50):
        logits = rng.standard_normal(6).astype(np.float32)
        assert sampler.sample(logits) == int(np.argmax(logits))


def test_top_k_1_equals_greedy():
    rng = np.random.default_rng(11)
    greedy = Sampler(SamplingParams(temperature=0.0, seed=0), 20000)
    top1 = Sampler(SamplingParams(temperature=1.3, top_k=1, seed=5), 20000)
    for _ in range(40):
        logits = rng.standard_normal(20000).astype(np.float32)
        history = rng.integers(0, 20000, 30).tolist()
        assert top1.sample(logits, history) == greedy.sample(logits, history)
    tied = np.zeros(20000, dtype=np.float32)
    tied[[17, 5, 900]] = 4.0
    assert top1.sample(tied) == greedy.sample(tied) == 5


# -- truncation stages on hand-made distributions ---------------------------------------------

PROBS = [0.5, 0.3, 0.15, 0.05]


@pytest.mark.parametrize("top_p, expected", [
    (0.45, {0}), (0.75, {0, 1}), (0.81, {0, 1, 2}), (0.96, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3}),
])
def test_top_p_keeps_smallest_prefix_reaching_the_mass(top_p, expected):
    params = SamplingParams(temperature=1.0, seed=2, **{**PLAIN, "top_p": top_p})
    assert draw_support(params, logits_from_probs(PROBS)) == expected


@pytest.mark.parametrize("min_p, expected", [
    (0.0, {0, 1, 2, 3}), (0.09, {0, 1, 2, 3}), (0.2, {0, 1, 2}), (0.5, {0, 1}), (0.7, {0}),
])
def test_min_p_drops_tokens_below_fraction_of_best(min_p, expected):
    params = SamplingParams(temperature=1.0, seed=3, **{**PLAIN, "min_p": min_p})
    assert draw_support(params, logits_from_probs(PROBS)) == expected


def test_top_k_then_top_p_then_min_p_compose():
    probs = [0.3, 0.25, 0.2, 0.1, 0.08, 0.07]
    logits = logits_from_probs(probs)
    base = dict(temperature=1.0, repeat_penalty=1.0, seed=4)
    assert draw_support(SamplingParams(top_k=3, top_p=1.0, min_p=0.0, **base), logits) == {0, 1, 2}
    # top-p over the top-3 renormalised: 0.3/0.75=0.4, 0.25/0.75 -> 0.733 >= 0.7 keeps {0, 1}
    assert draw_support(SamplingParams(top_k=3, top_p=0.7, min_p=0.0, **base), logits) == {0, 1}
    # min-p after top-p: 0.25/0.3 = 0.83 < 0.9 drops token 1
    assert draw_support(SamplingParams(top_k=3, top_p=0.7, min_p=0.9, **base), logits) == {0}


def test_temperature_applies_before_top_p():
    # At T=1 the best token holds 0.5 of the mass; at T=0.2 it holds 0.5^5 / sum(p^5) = 0.93,
    # so top-p 0.9 keeps it alone.
    logits = logits_from_probs(PROBS)
    hot = SamplingParams(temperature=1.0, seed=5, **{**PLAIN, "top_p": 0.9})
    cold = SamplingParams(temperature=0.2, seed=5, **{**PLAIN, "top_p": 0.9})
    assert draw_support(hot, logits) == {0, 1, 2}
    assert draw_support(cold, logits) == {0}


# -- penalties ------------------------------------------------------------------------------

def penalized(params, logits, history):
    return Sampler(params, len(logits))._penalized_logits(np.asarray(logits, np.float32), history)


def test_repeat_penalty_divides_positive_and_multiplies_negative():
    params = SamplingParams(repeat_penalty=1.25, repeat_last_n=64)
    out = penalized(params, [2.0, -2.0, 1.0, -1.0], [0, 1, 0])
    np.testing.assert_allclose(out, [1.6, -2.5, 1.0, -1.0], rtol=1e-6)


def test_repeat_penalty_changes_the_greedy_choice():
    logits = np.array([2.0, 1.9, -1.0, -1.05], dtype=np.float32)
    greedy = dict(temperature=0.0, repeat_penalty=1.1)
    assert Sampler(SamplingParams(**greedy), 4).sample(logits, [0]) == 1      # 2/1.1 < 1.9
    assert Sampler(SamplingParams(**greedy), 4).sample(logits, [0, 1]) == 0   # 1.818 > 1.727
    negative = np.array([-1.0, -1.05], dtype=np.float32)
    assert Sampler(SamplingParams(**greedy), 2).sample(negative, [0]) == 1    # -1.1 < -1.05


def test_presence_and_frequency_penalties_openai_style():
    params = SamplingParams(repeat_penalty=1.0, presence_penalty=0.5, frequency_penalty=0.2)
    # token 0: 1 - 3*0.2 - 0.5; token 2: 0.5 - 0.2 - 0.5; token 1 unseen
    for history in ([0, 0, 0, 2], (0, 0, 0, 2), np.array([0, 0, 0, 2]), deque([0, 0, 0, 2])):
        out = penalized(params, [1.0, 0.0, 0.5], history)
        np.testing.assert_allclose(out, [-0.1, 0.0, -0.2], atol=1e-6)


def test_penalty_window_is_the_last_repeat_last_n_tokens():
    logits = [1.0, 1.0, 1.0]
    history = [0, 1, 1]
    freq = dict(repeat_penalty=1.0, frequency_penalty=1.0)
    for last_n, expected in [(2, [1.0, -1.0, 1.0]), (-1, [0.0, -1.0, 1.0]), (0, [1.0, 1.0, 1.0])]:
        out = penalized(SamplingParams(repeat_last_n=last_n, **freq), logits, history)
        np.testing.assert_allclose(out, expected)


def test_caller_logits_are_not_modified():
    rng = np.random.default_rng(8)
    logits = rng.standard_normal(1000).astype(np.float32)
    before = logits.copy()
    allowed = rng.random(1000) > 0.5
    sampler = Sampler(SamplingParams(seed=1, presence_penalty=0.3, frequency_penalty=0.1), 1000)
    for _ in range(20):
        sampler.sample(logits, rng.integers(0, 1000, 100).tolist(), allowed)
    np.testing.assert_array_equal(logits, before)


# -- masks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    SamplingParams(seed=1), SamplingParams(seed=2, temperature=0.0),
    SamplingParams(seed=3, **PLAIN), SamplingParams(seed=4, top_k=0, top_p=0.5),
])
def test_masked_tokens_are_never_returned(params):
    rng = np.random.default_rng(21)
    n = 3000
    sampler = Sampler(params, n)
    for _ in range(100):
        logits = rng.standard_normal(n).astype(np.float32)
        allowed = rng.random(n) < 0.02
        logits[~allowed] += 10.0          # the forbidden tokens are the likely ones
        token = sampler.sample(logits, (), allowed)
        assert allowed[token]


def test_everything_masked_is_a_clear_error():
    sampler = Sampler(SamplingParams(seed=1), 5)
    with pytest.raises(SamplingError, match="masked"):
        sampler.sample(np.zeros(5, np.float32), (), np.zeros(5, dtype=bool))
    minus_inf = np.full(5, -np.inf, dtype=np.float32)
    with pytest.raises(SamplingError, match="masked"):
        sampler.sample(minus_inf)


def test_single_allowed_token_is_returned():
    sampler = Sampler(SamplingParams(seed=1), 50)
    allowed = np.zeros(50, dtype=bool)
    allowed[33] = True
    assert sampler.sample(np.random.default_rng(0).standard_normal(50).astype(np.float32),
                          (), allowed) == 33


# -- the empirical distribution ---------------------------------------------------------------

CHI2_DF4_P001 = 18.47     # chi-square critical value, 4 degrees of freedom, p = 0.001
CHI2_DF2_P001 = 13.82


def chi_square(counts, probs, n):
    expected = np.asarray(probs) * n
    return float(((np.asarray(counts) - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("seed", [1, 2])
def test_draws_follow_the_tempered_softmax(seed):
    logits = np.array([1.0, 0.2, -0.5, 0.7, 0.0], dtype=np.float32)
    temperature = 0.7
    probs = np.exp(logits / temperature)
    probs /= probs.sum()
    sampler = Sampler(SamplingParams(temperature=temperature, seed=seed, **PLAIN), 5)
    n = 20000
    counts = np.bincount([sampler.sample(logits) for _ in range(n)], minlength=5)
    assert chi_square(counts, probs, n) < CHI2_DF4_P001


def test_draws_follow_the_renormalised_top_k():
    logits = np.array([1.0, 0.2, -0.5, 0.7, 0.0], dtype=np.float32)
    sampler = Sampler(SamplingParams(temperature=1.0, seed=9, top_k=3, top_p=1.0, min_p=0.0,
                                     repeat_penalty=1.0), 5)
    n = 15000
    counts = np.bincount([sampler.sample(logits) for _ in range(n)], minlength=5)
    assert counts[2] == counts[4] == 0          # the two lowest logits are cut by top-k 3
    kept = np.exp(logits[[0, 1, 3]])
    assert chi_square(counts[[0, 1, 3]], kept / kept.sum(), n) < CHI2_DF2_P001


# -- large vocabulary: exactness of the windowed path and speed -------------------------------

def reference_sample(scores, params, u):
    """Full-sort implementation of the documented pipeline, for one uniform draw ``u``."""
    ids = np.flatnonzero(np.isfinite(scores))
    ids = ids[np.lexsort((ids, -scores[ids].astype(np.float64)))]
    if params.top_k > 0:
        ids = ids[:params.top_k]
    best = float(scores[ids[0]])
    weights = np.exp((scores[ids].astype(np.float64) - best) / params.temperature)
    probs = weights / weights.sum()
    keep = len(ids)
    if params.top_p < 1.0:
        keep = min(keep, int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1)
    if params.min_p > 0.0:
        keep = min(keep, int(np.count_nonzero(probs >= params.min_p * probs[0])))
    weights = weights[:keep]
    ids = ids[:keep][weights > 0]
    cumulative = np.cumsum(weights[weights > 0])
    return int(ids[min(int(np.searchsorted(cumulative, u * cumulative[-1], side="right")),
                       len(ids) - 1)])


@pytest.mark.parametrize("top_k, top_p, min_p", [(0, 0.9, 0.0), (0, 0.999, 0.01), (0, 1.0, 0.2),
                                                 (40, 0.95, 0.05), (0, 0.6, 0.0)])
def test_large_vocab_matches_full_sort_reference(top_k, top_p, min_p):
    params = SamplingParams(temperature=0.9, top_k=top_k, top_p=top_p, min_p=min_p,
                            repeat_penalty=1.0, seed=77)
    sampler = Sampler(params, LLAMA3_VOCAB)
    uniforms = np.random.Generator(np.random.PCG64(77))
    rng = np.random.default_rng(5)
    for step in range(16):
        # From flat (a nucleus of many thousand tokens) to peaked (a few); every other step
        # rounded so that many tokens tie, also across the edge of the sampler's window.
        logits = rng.standard_normal(LLAMA3_VOCAB) * (0.5 + (step // 2) * 0.8)
        if step % 2:
            logits = np.round(logits, 1)
        logits = logits.astype(np.float32)
        allowed = rng.random(LLAMA3_VOCAB) < 0.9
        scores = np.where(allowed, logits, -np.inf).astype(np.float32)
        assert sampler.sample(logits, (), allowed) == reference_sample(scores, params,
                                                                       uniforms.random())


def test_nucleus_cut_inside_a_tie_takes_the_lowest_ids():
    # 600 tokens at 5.0 hold 45% of the mass; top-p 0.5 then needs ~185 of the 2000 tokens
    # tied at 4.0 -- the documented order says the lowest ids among them.
    rng = np.random.default_rng(12)
    logits = np.full(LLAMA3_VOCAB, -10.0, dtype=np.float32)
    chosen = rng.permutation(LLAMA3_VOCAB)[:2600]
    logits[chosen[:600]] = 5.0
    logits[chosen[600:]] = 4.0
    params = SamplingParams(temperature=1.0, top_k=0, top_p=0.5, min_p=0.0, repeat_penalty=1.0,
                            seed=3)
    sampler = Sampler(params, LLAMA3_VOCAB)
    uniforms = np.random.Generator(np.random.PCG64(3))
    drawn = [sampler.sample(logits) for _ in range(200)]
    assert drawn == [reference_sample(logits, params, uniforms.random()) for _ in range(200)]


def test_sampling_128k_vocab_never_sorts_the_vocabulary(monkeypatch):
    """What keeps sampling a 128k vocabulary cheap: top-k by partition, the nucleus in a window that
    doubles, so no sort ever sees more than a small block of the vocabulary. The time per token is
    printed, not asserted."""
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(LLAMA3_VOCAB) * 3).astype(np.float32)
    history = rng.integers(0, LLAMA3_VOCAB, 64).tolist()
    allowed = np.ones(LLAMA3_VOCAB, dtype=bool)
    allowed[::7] = False
    sorted_sizes = []
    for name in ("sort", "argsort", "lexsort"):
        real = getattr(np, name)

        def recording(a, *args, _real=real, **kw):
            sorted_sizes.append(len(a[0]) if isinstance(a, tuple) else np.asarray(a).shape[-1])
            return _real(a, *args, **kw)

        monkeypatch.setattr(np, name, recording)
    for params in (SamplingParams(seed=1), SamplingParams(seed=1, top_k=0)):
        sampler = Sampler(params, LLAMA3_VOCAB)
        sorted_sizes.clear()
        start = time.perf_counter()
        for _ in range(20):
            sampler.sample(logits, history, allowed)
        per_token_ms = (time.perf_counter() - start) / 20 * 1e3
        print(f"top_k={params.top_k}: {per_token_ms:.2f} ms per token, largest sort {max(sorted_sizes)} values")
        assert sorted_sizes, "the sampler sorts its candidates (lowest id first on ties)"
        assert max(sorted_sizes) <= LLAMA3_VOCAB // 16, sorted_sizes
