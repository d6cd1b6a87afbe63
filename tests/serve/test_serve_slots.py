"""`serve mqtt --slots N --prompt-cache DIR` against a real Mosquitto broker: requests published
together are answered together with the text each gets alone, and a restarted service answers a
known system prompt warm from the cache directory."""
import threading

import pytest
from mqtt_harness import Peer, Service, broker, requires_mosquitto, wait_online  # noqa: F401

from edge_runtime.model.model import Model
from edge_runtime.model.prompt_cache import SUFFIX

pytestmark = requires_mosquitto

SYSTEM = "You run the house. Devices: " + ", ".join(f"lamp {i} in room {i}" for i in range(24)) + "."
QUESTIONS = ["lamp 3 on", "is lamp 7 on", "all lamps off", "dim lamp 12"]


def body(i, question):
    return {"id": f"q{i}", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            "max_tokens": 12, "temperature": 0, "stream": False}


def expected_texts(path):
    with Model(path, n_ctx=512, n_threads=1) as m:
        out = []
        for q in QUESTIONS:
            m.reset()
            r = m.create_chat_completion(body(0, q)["messages"], max_tokens=12, temperature=0.0)
            out.append(r["choices"][0]["message"]["content"])
        return out


def ask_all(peer, device):
    for i, _ in enumerate(QUESTIONS):
        peer.subscribe(f"edge/{device}/response/q{i}")
    sent = threading.Barrier(len(QUESTIONS))

    def send(i, q):
        sent.wait()
        peer.publish(f"edge/{device}/request", body(i, q))

    threads = [threading.Thread(target=send, args=(i, q)) for i, q in enumerate(QUESTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [peer.final(f"edge/{device}/response/q{i}") for i in range(len(QUESTIONS))]


def test_slots_answer_together_and_prompt_cache_survives_a_restart(tiny_chat_model_path, broker, tmp_path):
    expected = expected_texts(tiny_chat_model_path)
    cache_dir = tmp_path / "cache"
    for run in range(2):
        svc = Service(str(tmp_path), tiny_chat_model_path, broker.port, f"slots{run}", "--slots", "4",
                      "--prompt-cache", str(cache_dir), "--cache-mb", "64", "--ctx", "512", threads=("-t", "2"))
        peer = Peer(broker.port)
        try:
            wait_online(peer, svc)
            finals = ask_all(peer, f"slots{run}")
        finally:
            peer.close()
            svc.stop()
        assert [f["text"] for f in finals] == expected, [f.get("error") for f in finals]
        assert all(f["finish_reason"] in ("stop", "length") for f in finals)
        evaluated = [f["timings"]["prompt_tokens_evaluated"] for f in finals]
        total = [f["usage"]["prompt_tokens"] for f in finals]
        if run == 1:  # restarted: every request starts from the snapshot of the system prompt
            assert all(e < t // 2 for e, t in zip(evaluated, total)), (evaluated, total)
        assert list(cache_dir.glob("*" + SUFFIX))


def test_slots_and_cache_options_are_range_checked(tmp_path):
    import subprocess
    import sys

    from conftest import subprocess_env

    for args, needle in ((["--slots", "0"], "--slots"), (["--slots", "65"], "--slots"),
                         (["--cache-mb", "-1"], "--cache-mb")):
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "mqtt", *args], capture_output=True,
                           text=True, env=subprocess_env(), cwd=tmp_path, timeout=60)
        assert r.returncode == 2 and needle in r.stderr, r.stderr
