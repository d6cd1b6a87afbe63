"""Model.close() from another thread while a generation runs: the generation stops with
ModelClosedError (an EdgeRuntimeError), the engine's state is freed only once its C call has
returned, and nothing crashes. The races run in a child process so a use-after-free is a failed
test, not a dead pytest."""
import json
import subprocess
import sys
import threading
import time

import pytest
from conftest import subprocess_env, tiny_tokenizer

from edge_runtime.errors import EdgeRuntimeError, ModelClosedError
from edge_runtime.formats.random_model import write_random_model
from edge_runtime.model.model import Model

# constrained to a long string, the generation cannot end before max_tokens
LONG = dict(json_schema={"type": "string", "minLength": 4000, "maxLength": 5000}, max_tokens=1500, temperature=0)


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("close") / "slow.gguf"
    return write_random_model(str(path), shape="tiny", tokenizer=tiny_tokenizer(), seed=3, dim=512, n_layers=8,
                              ffn_dim=1024)


def generate_in_thread(model, **kw):
    result = {}

    def run():
        try:
            n = 0
            for chunk in model.create_completion("hello", stream=True, **kw):
                n += 1
                result["chunks"] = n
            result["done"] = True
        except BaseException as exc:  # noqa: B036 - the test inspects whatever escaped
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, result


def test_close_during_a_generation_raises_model_closed_in_the_generating_thread(slow_model):
    model = Model(slow_model, n_ctx=2048, n_threads=1)
    t, result = generate_in_thread(model, **LONG)
    deadline = time.monotonic() + 30
    while result.get("chunks", 0) < 5:
        assert time.monotonic() < deadline and t.is_alive(), result
        time.sleep(0.005)
    t0 = time.monotonic()
    model.close()
    t.join(10)
    assert not t.is_alive()
    print(f"close() returned and the generation ended {1e3 * (time.monotonic() - t0):.1f} ms after the call")
    assert isinstance(result.get("error"), ModelClosedError), result
    assert isinstance(result["error"], EdgeRuntimeError) and "closed" in str(result["error"])
    assert "done" not in result


def test_close_during_batched_generations_raises_model_closed_in_every_generating_thread(slow_model):
    model = Model(slow_model, n_ctx=2048, n_threads=1, slots=2)
    runs = [generate_in_thread(model, **LONG) for _ in range(2)]
    deadline = time.monotonic() + 60
    while any(r.get("chunks", 0) < 5 for _, r in runs):
        assert time.monotonic() < deadline and all(t.is_alive() for t, _ in runs), runs
        time.sleep(0.005)
    model.close()
    for t, result in runs:
        t.join(10)
        assert not t.is_alive()
        assert isinstance(result.get("error"), ModelClosedError), result
        assert "done" not in result
    with pytest.raises(ModelClosedError):
        model.create_completion("hello", max_tokens=2)


def test_close_during_the_prompt_eval_raises_model_closed(slow_model):
    model = Model(slow_model, n_ctx=2048, n_threads=1)
    errors = []

    def run():
        try:
            model.eval_logits([i % 290 for i in range(1500)], all_logits=False)
        except BaseException as exc:  # noqa: B036
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.05)  # well inside a 1500-token prompt (seconds at one thread)
    model.close()
    t.join(10)
    assert not t.is_alive() and len(errors) == 1
    assert isinstance(errors[0], ModelClosedError), errors


def test_every_call_after_close_is_model_closed(tiny_chat_model_path):
    model = Model(tiny_chat_model_path, n_ctx=128, n_threads=1)
    model.close()
    model.close()  # twice is fine
    model.cancel()  # a no-op, never a crash
    with pytest.raises(ModelClosedError):
        model.create_completion("hi", max_tokens=2)
    with pytest.raises(ModelClosedError):
        model.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=2)
    with pytest.raises(ModelClosedError):
        model.eval_logits([1, 2, 3])
    assert model.state_bytes == 0


RACE = r"""
import json, random, sys, threading, time
from edge_runtime.errors import ModelClosedError
from edge_runtime.model.model import Model
path, rounds = sys.argv[1], int(sys.argv[2])
rng = random.Random(4)
outcomes = {}
for i in range(rounds):
    model = Model(path, n_ctx=512, n_threads=1 + i % 2)
    result = []
    def run():
        try:
            for chunk in model.create_completion("hi", stream=True, max_tokens=400, temperature=0,
                                                 json_schema={"type": "string", "minLength": 1000}):
                finish = chunk["choices"][0]["finish_reason"]
            result.append(f"done: {finish}" + (" (cancel raced)" if i % 3 == 0 else ""))
        except ModelClosedError:
            result.append("ModelClosedError")
        except BaseException as exc:
            result.append(f"{type(exc).__name__}: {exc}")
    def cancels():  # cancel() racing close(): reads the engine while it is being freed
        for _ in range(200):
            model.cancel()
    t = threading.Thread(target=run); t.start()
    c = threading.Thread(target=cancels) if i % 3 == 0 else None
    time.sleep(rng.uniform(0.0, 0.05))
    if c: c.start()
    model.close()
    t.join(30)
    if c: c.join(30)
    out = result[0] if result else "hung"
    outcomes[out] = outcomes.get(out, 0) + 1
print(json.dumps(outcomes))
"""


def test_closing_at_random_moments_never_crashes(slow_model):
    proc = subprocess.run([sys.executable, "-c", RACE, str(slow_model), "30"], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    outcomes = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"30 closes at random moments: {outcomes}")
    # a generation the close caught ends with ModelClosedError; one that had not started is refused
    # at its first call with the same error; nothing else is allowed
    # (a cancel() that lands first ends it as cancelled, as it should)
    assert set(outcomes) <= {"ModelClosedError", "done: cancelled (cancel raced)"}, outcomes
    assert outcomes.get("ModelClosedError", 0) >= 15, outcomes
