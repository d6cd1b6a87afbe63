"""Batched decode: requests running at once on a Model with several slots decode together in one
pass over the weights (a long prompt prefilled in chunks between their steps), and each one's
greedy text is identical to its single-request text, on every kernel variant."""
import threading
import time

import numpy as np
import pytest

from edge_runtime.engine import _engine
from edge_runtime.model.model import Model

PROMPTS = [
    "Turn on the kitchen light please",
    "What is the temperature in the living room right now, and is the heating on?",
    "Close the garage door",
    # long: prefilled in chunks while the others decode
    " ".join(["The porch lock, the hall fan and the bedroom blinds report their state every minute."] * 6),
]


def single_texts(path, kernel, prompts, max_tokens=16, **kw):
    with Model(path, n_ctx=512, n_threads=1, kernel=kernel, **kw) as m:
        out = []
        for p in prompts:
            m.reset()
            out.append(m.create_completion(p, max_tokens=max_tokens, temperature=0.0)["choices"][0]["text"])
        return out


def concurrent(model, prompts, max_tokens=16, barrier=True, late=None):
    """Each prompt on its own thread at once: (texts, finish reasons). `late` (an index) starts
    that prompt only once the engine thread has run two steps, so the others are decoding by then."""
    texts, finishes = [None] * len(prompts), [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def run(i):
        if barrier:
            start.wait()
        if i == late:
            deadline = time.monotonic() + 30
            while model._path.steps < 2:
                assert time.monotonic() < deadline
                time.sleep(0.0005)
        out = model.create_completion(prompts[i], max_tokens=max_tokens, temperature=0.0)
        texts[i], finishes[i] = out["choices"][0]["text"], out["choices"][0]["finish_reason"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return texts, finishes


@pytest.mark.parametrize("kernel", _engine.available_kernels())
def test_batched_greedy_text_equals_single_request_text(tiny_chat_model_path, kernel):
    expected = single_texts(tiny_chat_model_path, kernel, PROMPTS, max_tokens=48)
    assert len(set(expected)) > 1
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=2, kernel=kernel, slots=4, prefill_chunk=8) as m:
        # the long prompt comes while the others decode, as a long request does on a busy board
        texts, _ = concurrent(m, PROMPTS, max_tokens=48, late=len(PROMPTS) - 1)
        assert texts == expected
        n_tokens = sum(len(m.tokenize(t.encode(), add_bos=False)) for t in texts)
        # the requests shared steps: fewer engine passes than tokens decoded plus prompt chunks
        assert m._path.steps < n_tokens
        # the long prompt went in chunks of at most 8 tokens beside the others' decode steps
        assert m._path.mixed_steps >= 3 and 1 <= m._path.max_mixed_prompt <= 8
        # again, warm slots: still identical
        texts, _ = concurrent(m, PROMPTS[::-1], max_tokens=48)
        assert texts == expected[::-1]


def test_more_requests_than_slots_wait_and_stay_exact(tiny_chat_model_path):
    prompts = PROMPTS + ["Is the pond pump running", "Open the bedroom blinds halfway"]
    expected = single_texts(tiny_chat_model_path, None, prompts)
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=2, slots=2) as m:
        texts, _ = concurrent(m, prompts)
    assert texts == expected


def test_batched_with_prompt_cache_and_restart(tiny_chat_model_path, tmp_path):
    system = "You are the house assistant for the devices listed here: " + ", ".join(
        f"light {i} in room {i}" for i in range(20))
    prompts = [f"{system}\nUser: {q}\nAssistant:" for q in ("lights on", "fan off", "lock up", "status")]
    expected = single_texts(tiny_chat_model_path, None, prompts)
    for _ in range(2):  # the second model starts from the snapshots of the first
        with Model(tiny_chat_model_path, n_ctx=512, n_threads=2, slots=4, prompt_cache=tmp_path) as m:
            texts, _ = concurrent(m, prompts)
            m.prompt_cache.flush()
        assert texts == expected


def test_cancelling_one_request_leaves_the_others_exact(tiny_chat_model_path):
    expected = single_texts(tiny_chat_model_path, None, PROMPTS[:2], max_tokens=40)
    with Model(tiny_chat_model_path, n_ctx=512, n_threads=1, slots=3) as m:
        victim = {}

        def long_one():
            victim["thread"] = threading.get_ident()
            out = m.create_completion("count slowly: one two three", max_tokens=400, temperature=0.0)
            victim["finish"] = out["choices"][0]["finish_reason"]
            victim["tokens"] = out["usage"]["completion_tokens"]

        t = threading.Thread(target=long_one)
        t.start()
        texts, _ = concurrent(m, PROMPTS[:2], max_tokens=40, barrier=False)
        assert m.cancel(thread=victim["thread"])
        t.join(60)
        assert victim["finish"] == "cancelled" and victim["tokens"] < 400
        assert texts == expected
        assert not m.cancel(thread=victim["thread"])  # nothing runs there any more


def test_eval_multi_matches_single_sequence_logits_and_checks_its_input(tiny_chat_model_path):
    rng = np.random.default_rng(0)
    a, b = list(rng.integers(0, 300, 20)), list(rng.integers(0, 300, 7))
    for kernel in _engine.available_kernels():
        with Model(tiny_chat_model_path, n_ctx=64, n_threads=2, kernel=kernel, slots=2) as m:
            eng = m._engine
            ref_a = eng.eval(a, 0, all_logits=True, seq=0)
            ref_b = eng.eval(b, 0, all_logits=True, seq=1)
            # a's last 5 tokens, decode-style, mixed with the whole of b as a prompt chunk
            tokens = a[15:] + b
            pos = list(range(15, 20)) + list(range(7))
            seq = [0] * 5 + [1] * 7
            got = eng.eval_multi(tokens, pos, seq, [0, 4, 5, 11])
            np.testing.assert_array_equal(got[0], ref_a[15], err_msg=kernel)
            np.testing.assert_array_equal(got[1], ref_a[19], err_msg=kernel)
            np.testing.assert_array_equal(got[2], ref_b[0], err_msg=kernel)
            np.testing.assert_array_equal(got[3], ref_b[6], err_msg=kernel)
            with pytest.raises(ValueError, match="both write sequence 0 position 3"):
                eng.eval_multi([1, 2], [3, 3], [0, 0], [])
            with pytest.raises(ValueError, match="sequence 2"):
                eng.eval_multi([1], [0], [2], [0])
            with pytest.raises(ValueError, match="row 3"):
                eng.eval_multi([1, 2], [0, 1], [0, 0], [3])
            with pytest.raises(ValueError, match="outside the vocabulary"):
                eng.eval_multi([100000], [0], [0], [0])
            with pytest.raises(ValueError, match="equally long"):
                eng.eval_multi([1, 2], [0], [0, 0], [0])
    with pytest.raises(ValueError, match="slots must be"):
        Model(tiny_chat_model_path, n_ctx=64, slots=0)
