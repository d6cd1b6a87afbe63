"""`edge-runtime bench --case long-prompt | concurrency`: what a served board sees.

long-prompt: two system prompts of --system-tokens random ids, each followed by a --question-tokens
question, used alternately with a prompt cache directory: time to first token of a bare question,
of each system prompt cold, warm, and after a restart (a new Model on the same directory), the
cache's size, and whether the greedy tokens equal the uncached ones. With --llama-model (a
llama.cpp GGUF of the same weights) and llama-cpp-python installed, the same sequence on
llama.cpp with its LlamaDiskCache.

concurrency: 1, 2, 4 ... requests of a short prompt each decoding --gen-tokens tokens at once on a
model with as many slots as the largest count: aggregate tok/s. llama-cpp-python's Llama runs one
sequence at a time, so its figure is the one-request rate for every count. With --via mqtt the
requests go through a real broker to a `serve mqtt --slots N` process instead (the model file must
carry a tokenizer: --random 2b4t --tokenizer tokenizer.json).

Figures are printed, never asserted. Token ids are random (speed does not depend on the text).
"""
import os
import shutil
import statistics
import tempfile
import threading
import time

import numpy as np


def _prompts(n_vocab, system_tokens, question_tokens, seed=0):
    rng = np.random.default_rng(seed)
    ids = lambda n: [int(t) for t in rng.integers(1, n_vocab, size=n)]  # noqa: E731
    systems = [ids(system_tokens), ids(system_tokens)]
    questions = [ids(question_tokens) for _ in range(6)]
    return systems, questions


def long_prompt_case(path, args, n_threads, kernel):
    """TTFT (ms) of the long-prompt sequence on edge-runtime (and llama.cpp when asked)."""
    from edge_runtime.model.model import Model
    from edge_runtime.model.slots import greedy_tokens

    gen = max(1, min(args.gen_tokens, 16))
    n_ctx = args.system_tokens + args.question_tokens + gen + 8
    cache_dir = tempfile.mkdtemp(prefix="edge-runtime-bench-cache-")
    cache_mb = 2 * 2 * n_ctx * 76_800 / 2**20 + 64  # two 2B4T-sized snapshots and room
    out = {"system_tokens": args.system_tokens, "question_tokens": args.question_tokens}
    try:
        with Model(path, n_threads=n_threads, n_ctx=n_ctx, kernel=kernel) as plain:
            systems, qs = _prompts(plain.n_vocab, args.system_tokens, args.question_tokens)
            seqs = [systems[0] + qs[1], systems[1] + qs[2], systems[0] + qs[3], systems[1] + qs[4],
                    systems[0] + qs[5]]
            uncached = []
            for s in seqs:
                plain.reset()
                uncached.append(greedy_tokens(plain, s, gen)[0])
            plain.reset()
            out["bare_question_ttft_ms"] = greedy_tokens(plain, qs[0], gen)[1] * 1e3
        got = []
        with Model(path, n_threads=n_threads, n_ctx=n_ctx, kernel=kernel, prompt_cache=cache_dir,
                   cache_mb=cache_mb) as m:
            for name, s in zip(("cold_a", "cold_b", "warm_a", "warm_b"), seqs[:4]):
                ids, ttft, _ = greedy_tokens(m, s, gen)
                got.append(ids)
                out[f"{name}_ttft_ms"] = ttft * 1e3
            m.prompt_cache.flush()
            out["cache_mib"] = m.prompt_cache.used_bytes / 2**20
        out["cache_dir_mib"] = sum(os.path.getsize(os.path.join(cache_dir, f)) for f in os.listdir(cache_dir)) / 2**20
        # a restart, the request sent at once (it waits for the read of its snapshot), then one sent
        # once the snapshots found at start are in memory
        for key, wait in (("restart_a", False), ("restart_a_preloaded", True)):
            t0 = time.perf_counter()
            with Model(path, n_threads=n_threads, n_ctx=n_ctx, kernel=kernel, prompt_cache=cache_dir,
                       cache_mb=cache_mb) as m:
                out[f"{key}_load_ms"] = (time.perf_counter() - t0) * 1e3
                if wait:
                    m.prompt_cache.preloaded.wait()
                    out[f"{key}_after_ms"] = (time.perf_counter() - t0) * 1e3
                ids, ttft, _ = greedy_tokens(m, seqs[4], gen)
                got.append(ids)
                out[f"{key}_ttft_ms"] = ttft * 1e3
        out["tokens_identical_to_uncached"] = got == uncached + [uncached[4]]
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    if getattr(args, "llama_model", None):
        out["llama_cpp"] = _llama_long_prompt(args, n_threads, n_ctx, systems, qs, gen)
    return out


def _llama(args, n_threads, n_ctx):
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    return Llama(model_path=args.llama_model, n_threads=n_threads, n_threads_batch=n_threads, n_ctx=n_ctx,
                 n_batch=512, verbose=False)


def _llama_long_prompt(args, n_threads, n_ctx, systems, qs, gen):
    """The same sequence on llama.cpp with llama-cpp-python's LlamaDiskCache."""
    try:
        from llama_cpp import LlamaDiskCache
    except ImportError:
        return "llama-cpp-python is not installed"
    cache_dir = tempfile.mkdtemp(prefix="llama-cpp-bench-cache-")

    def ttft(llm, tokens):
        t0 = time.perf_counter()
        llm.create_completion(tokens, max_tokens=1, temperature=0.0)
        return (time.perf_counter() - t0) * 1e3

    res = {}
    try:
        llm = _llama(args, n_threads, n_ctx)
        res["bare_question_ttft_ms"] = ttft(llm, qs[0])
        llm.set_cache(LlamaDiskCache(cache_dir, capacity_bytes=8 << 30))
        for name, s in zip(("cold_a", "cold_b", "warm_a", "warm_b"),
                           (systems[0] + qs[1], systems[1] + qs[2], systems[0] + qs[3], systems[1] + qs[4])):
            res[f"{name}_ttft_ms"] = ttft(llm, s)
        del llm
        llm = _llama(args, n_threads, n_ctx)
        llm.set_cache(LlamaDiskCache(cache_dir, capacity_bytes=8 << 30))
        res["restart_a_ttft_ms"] = ttft(llm, systems[0] + qs[5])
        del llm
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return res


def concurrency_case(path, args, n_threads, kernel):
    """Aggregate decode tok/s of N simultaneous requests, N in args.concurrency."""
    from edge_runtime.model.model import Model
    from edge_runtime.model.slots import greedy_tokens

    counts = sorted(set(args.concurrency))
    gen = args.gen_tokens
    n_ctx = args.question_tokens + gen + 8
    out = {"gen_tokens": gen, "slots": max(counts), "aggregate_tok_s": {}}
    with Model(path, n_threads=n_threads, n_ctx=n_ctx, kernel=kernel, slots=max(counts)) as m:
        _, qs = _prompts(m.n_vocab, 1, args.question_tokens, seed=1)
        qs = qs * 2
        greedy_tokens(m, qs[0], 2)  # warm-up: page the weights in
        for n in counts:
            rates = []
            for _ in range(max(1, args.repeats)):
                start = threading.Barrier(n + 1)
                done = []

                def run(i):
                    start.wait()
                    done.append(greedy_tokens(m, qs[i], gen))

                threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
                for t in threads:
                    t.start()
                start.wait()
                t0 = time.perf_counter()
                for t in threads:
                    t.join()
                rates.append(n * gen / (time.perf_counter() - t0))
            out["aggregate_tok_s"][n] = statistics.median(rates)
    one = out["aggregate_tok_s"][counts[0]] / counts[0]
    out["speedup_vs_one"] = {n: r / one for n, r in out["aggregate_tok_s"].items()}
    if getattr(args, "llama_model", None):
        llm = _llama(args, n_threads, n_ctx)
        if llm is None:
            out["llama_cpp"] = "llama-cpp-python is not installed"
        else:
            llm.create_completion(qs[0], max_tokens=2, temperature=0.0)
            t0 = time.perf_counter()
            r = llm.create_completion(qs[1], max_tokens=gen, temperature=0.0)
            rate = r["usage"]["completion_tokens"] / (time.perf_counter() - t0)
            out["llama_cpp"] = {"one_request_tok_s": rate,
                                "note": "one sequence per Llama: N requests are served one after another"}
            del llm
    return out


def print_case(name, res):
    print(f"[{name}]")
    for k, v in res.items():
        if isinstance(v, dict):
            print(f"  {k}:")
            for k2, v2 in v.items():
                print(f"    {k2:<28} {v2:.1f}" if isinstance(v2, float) else f"    {k2:<28} {v2}")
        else:
            print(f"  {k:<30} {v:.1f}" if isinstance(v, float) else f"  {k:<30} {v}")


def _start_mosquitto(workdir):
    """mosquitto from PATH on a free loopback port (a config of our own, no persistence)."""
    import socket
    import subprocess

    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if exe is None:
        raise RuntimeError("--via mqtt needs a broker: give --broker HOST:PORT or install mosquitto")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import pwd

    conf = os.path.join(workdir, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                f"user {pwd.getpwuid(os.getuid()).pw_name}\nlog_dest none\n")
    proc = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, "127.0.0.1", port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start listening")


def concurrency_mqtt_case(path, args, n_threads, kernel):
    """Aggregate decode tok/s of N requests published at once to `serve mqtt --slots max(N)`
    through a real broker: from the first publish to the last final reply, completion tokens as
    the replies' usage counts them. The model file must carry a tokenizer (--tokenizer)."""
    import json
    import subprocess
    import sys

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    counts = sorted(set(args.concurrency))
    gen = args.gen_tokens
    n_ctx = args.question_tokens + gen + 96
    workdir = tempfile.mkdtemp(prefix="edge-runtime-bench-mqtt-")
    broker = None
    service = None
    client = None
    out = {"via": "mqtt", "gen_tokens": gen, "slots": max(counts), "aggregate_tok_s": {}}
    try:
        if args.broker:
            host, _, port = args.broker.rpartition(":")
            host, port = host or "127.0.0.1", int(port)
        else:
            broker, host, port = _start_mosquitto(workdir)
        device = f"bench-{os.getpid()}"
        argv = [sys.executable, "-m", "edge_runtime", "serve", "mqtt", "-m", path, "--broker", f"{host}:{port}",
                "--device-id", device, "--slots", str(max(counts)), "--ctx", str(n_ctx), "--metrics-interval", "0",
                "--max-tokens", str(max(gen, 1))]
        if n_threads:
            argv += ["-t", str(n_threads)]
        if kernel:
            argv += ["--kernel", kernel]
        service = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=open(os.path.join(workdir, "serve.log"), "wb"))
        finals = {}
        cond = threading.Condition()
        online = threading.Event()

        def on_message(_c, _u, msg):
            if msg.topic.endswith("/status"):
                if msg.payload == b"online":
                    online.set()
                return
            reply = json.loads(msg.payload)
            if reply.get("done"):
                with cond:
                    finals[reply["id"]] = reply
                    cond.notify_all()

        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.on_message = on_message
        client.connect(host, port)
        client.subscribe([(f"edge/{device}/status", 1), (f"edge/{device}/response/+", 1)])
        client.loop_start()
        deadline = time.monotonic() + 600
        while not online.wait(0.2):
            if service.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(workdir, "serve.log"), "rb") as f:
                    raise RuntimeError("serve mqtt did not come online: " + f.read().decode("utf-8", "replace")[-800:])

        def ask(ids, max_tokens):
            t0 = time.perf_counter()
            for i, rid in enumerate(ids):
                req = {"id": rid, "messages": [{"role": "user", "content": f"request {i}: report the state of "
                                                                         f"sensor {rid} in the north wing"}],
                       "max_tokens": max_tokens, "temperature": 0, "stream": False}
                client.publish(f"edge/{device}/request", json.dumps(req), qos=1)
            with cond:
                if not cond.wait_for(lambda: all(r in finals for r in ids), timeout=900):
                    raise RuntimeError("not every request got its final reply")
            elapsed = time.perf_counter() - t0
            replies = [finals.pop(r) for r in ids]
            bad = [r for r in replies if r.get("finish_reason") == "error"]
            if bad:
                raise RuntimeError(f"a request failed: {bad[0].get('error')}")
            return sum(r["usage"]["completion_tokens"] for r in replies), elapsed

        ask(["warm-up"], 2)  # pages the weights in
        for n in counts:
            rates = []
            for rep in range(max(1, args.repeats)):
                tokens, elapsed = ask([f"c{n}-{rep}-{i}" for i in range(n)], gen)
                rates.append(tokens / elapsed)
            out["aggregate_tok_s"][n] = statistics.median(rates)
    finally:
        if client is not None:
            client.loop_stop()
            client.disconnect()
        for proc in (service, broker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    one = out["aggregate_tok_s"][counts[0]] / counts[0]
    out["speedup_vs_one"] = {n: r / one for n, r in out["aggregate_tok_s"].items()}
    return out
