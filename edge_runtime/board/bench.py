"""`edge-runtime bench`: prompt and decode speed, time to first token, peak RSS, kernel variant.

Runs the engine directly on random token ids (speed does not depend on the text), repeats, and
reports medians. `--random 2b4t` writes a 2B4T-shaped model with random ternary weights once into
a cache directory and benchmarks it, so the real model's speed can be measured without it
(`--layers N` makes a shallower one for a quick run). `--case long-prompt` and `--case concurrency`
measure the prompt cache and batched decode (edge_runtime/board/bench_serving.py).
"""
import json
import os
import statistics
import sys
import time

import numpy as np

from edge_runtime.board.device_config import KERNEL_HELP


def add_arguments(p):
    p.add_argument("-m", "--model", default=None, help="model file (GGUF)")
    p.add_argument("--random", choices=["2b4t", "tiny"], default=None,
                   help="benchmark a random-weight model of this shape (generated once, cached)")
    p.add_argument("--head", choices=["f16", "q8_0", "q4_0"], default="q8_0", help="head type of --random")
    p.add_argument("--body", choices=["i2_s", "tq1"], default="i2_s",
                   help="projection type of --random: i2_s (2 bits) or tq1 (1.6 bits, the same trits)")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/edge-runtime"),
                   help="where --random models are kept")
    p.add_argument("-t", "--threads", type=int, default=None)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ctx", type=int, default=None, help="context size (default prompt + gen tokens)")
    p.add_argument("--kernel", default=None, help=KERNEL_HELP)
    p.add_argument("--mlock", action="store_true")
    p.add_argument("--cold", action="store_true",
                   help="first drop the model file from the page cache (POSIX_FADV_DONTNEED) and report "
                        "the time from load to the first token separately (cold_ttft_ms)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--layers", type=int, default=None, help="layers of the --random model (default: the shape's)")
    p.add_argument("--case", choices=["speed", "long-prompt", "concurrency"], default="speed",
                   help="speed: prompt/decode tok/s (default); long-prompt: time to first token with the "
                        "prompt cache (cold, warm, after a restart); concurrency: aggregate tok/s of "
                        "simultaneous requests")
    p.add_argument("--system-tokens", type=int, default=1500, help="system prompt length of --case long-prompt")
    p.add_argument("--question-tokens", type=int, default=12, help="question length of the serving cases")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4],
                   help="simultaneous requests of --case concurrency (default 1 2 4)")
    p.add_argument("--via", choices=["model", "mqtt"], default="model",
                   help="--case concurrency: call the Model from threads (model), or send the requests "
                        "at once through a broker to `serve mqtt --slots N` (mqtt)")
    p.add_argument("--broker", default=None, metavar="HOST:PORT",
                   help="--via mqtt: the broker (default: start `mosquitto` from PATH on a free loopback port)")
    p.add_argument("--tokenizer", default=None, metavar="TOKENIZER_JSON",
                   help="--random: store this tokenizer.json (.xz allowed) in the file, so that it can be "
                        "served (--via mqtt); the vocabulary then follows it (Llama-3's for 2B4T)")
    p.add_argument("--llama-model", default=None, metavar="GGUF",
                   help="a llama.cpp file of the same weights (edge-runtime convert --to tq2_0): runs the "
                        "serving cases on llama-cpp-python too, where it has the feature")


def random_model_path(shape, head, cache_dir, body="i2_s", layers=None, tokenizer=None):
    """The cached random model of a shape, head and body (and --layers, and a tokenizer.json to
    store in it); a tq1 body is the i2_s file's trits."""
    from edge_runtime.formats.random_model import write_random_model

    os.makedirs(cache_dir, exist_ok=True)
    suffix = f"-{layers}l" if layers else ""
    if tokenizer:
        import hashlib

        with open(tokenizer, "rb") as f:
            suffix += "-tok" + hashlib.sha256(f.read()).hexdigest()[:12]
    path = os.path.join(cache_dir, f"random-{shape}-{head}{suffix}.gguf")
    if not os.path.exists(path):
        print(f"writing {path} (once)...", file=sys.stderr)
        tok = None
        if tokenizer:
            from edge_runtime.text.tokenizer import Tokenizer

            tok = Tokenizer.from_tokenizer_json(tokenizer)
        write_random_model(path + ".part", shape=shape, head=head, seed=1, tokenizer=tok,
                           **({"n_layers": layers} if layers else {}))
        os.replace(path + ".part", path)
    if body == "i2_s":
        return path
    from edge_runtime.formats.convert import write_model
    from edge_runtime.formats.gguf import GGMLType
    from edge_runtime.formats.sources import open_source

    tq1 = os.path.join(cache_dir, f"random-{shape}-tq1-{head}{suffix}.gguf")
    if not os.path.exists(tq1):
        print(f"writing {tq1} (once)...", file=sys.stderr)
        source = open_source(path)
        try:
            write_model(source, tq1, to="tq1", head=GGMLType[head.upper()])
        finally:
            source.close()
    return tq1


def evict_from_page_cache(path):
    """Ask the kernel to drop the file's cached pages (clean pages no one has mapped go at once)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run_bench(model, prompt_tokens, gen_tokens, repeats, seed=0):
    """Medians over repeats of prompt tok/s, decode tok/s and time to first token."""
    rng = np.random.default_rng(seed)
    eng = model._engine
    prompt_rates, decode_rates, ttfts = [], [], []
    for _ in range(repeats):
        prompt = rng.integers(0, model.n_vocab, size=prompt_tokens, dtype=np.int32)
        t0 = time.perf_counter()
        logits = eng.eval(prompt, 0)
        t1 = time.perf_counter()
        tok = int(np.argmax(logits))
        ttfts.append((time.perf_counter() - t0) * 1e3)
        pos = prompt_tokens
        t2 = time.perf_counter()
        for _ in range(gen_tokens):
            logits = eng.eval([tok], pos)
            tok = int(np.argmax(logits))
            pos += 1
        t3 = time.perf_counter()
        prompt_rates.append(prompt_tokens / (t1 - t0))
        decode_rates.append(gen_tokens / (t3 - t2) if gen_tokens else 0.0)
    return {
        "prompt_tok_s": statistics.median(prompt_rates),
        "decode_tok_s": statistics.median(decode_rates),
        "ttft_ms": statistics.median(ttfts),
        "prompt_tok_s_all": prompt_rates,
        "decode_tok_s_all": decode_rates,
    }


def main(args):
    from edge_runtime.engine.cpu import peak_rss_bytes
    from edge_runtime.model.model import Model

    if args.random:
        path = random_model_path(args.random, args.head, args.cache_dir, getattr(args, "body", "i2_s"), args.layers,
                                 getattr(args, "tokenizer", None))
    elif args.model:
        path = args.model
    else:
        from edge_runtime.model.model import default_model_path

        path = default_model_path()
        if path is None:
            raise ValueError("give -m MODEL or --random 2b4t")
    if args.case != "speed":
        from edge_runtime.board import bench_serving

        if args.case == "long-prompt":
            case = bench_serving.long_prompt_case
        elif getattr(args, "via", "model") == "mqtt":
            case = bench_serving.concurrency_mqtt_case
        else:
            case = bench_serving.concurrency_case
        res = {"model": path, "case": args.case, **case(path, args, args.threads, args.kernel)}
        if args.json:
            print(json.dumps(res))
        else:
            bench_serving.print_case(args.case, res)
        return 0
    n_ctx = args.ctx or (args.prompt_tokens + args.gen_tokens + 1)
    if args.cold:
        evict_from_page_cache(path)
    t0 = time.perf_counter()
    model = Model(path, n_threads=args.threads, n_ctx=n_ctx, kernel=args.kernel, use_mlock=args.mlock)
    load_ms = (time.perf_counter() - t0) * 1e3
    cold_ttft_ms = None
    if args.cold:
        # load + the first prompt while the weights still come from storage
        prompt = np.random.default_rng(1).integers(0, model.n_vocab, size=args.prompt_tokens, dtype=np.int32)
        model._engine.eval(prompt, 0)
        cold_ttft_ms = (time.perf_counter() - t0) * 1e3
    r = run_bench(model, args.prompt_tokens, args.gen_tokens, args.repeats)
    out = {
        "model": path, "file_bytes": os.path.getsize(path), "kernel": model.kernel, "threads": model.n_threads,
        "n_ctx": n_ctx, "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
        "repeats": args.repeats, "load_ms": round(load_ms, 1),
        "prompt_tok_s": round(r["prompt_tok_s"], 2), "decode_tok_s": round(r["decode_tok_s"], 2),
        "ttft_ms": round(r["ttft_ms"], 1), "peak_rss_bytes": peak_rss_bytes(),
        **({"cold_ttft_ms": round(cold_ttft_ms, 1)} if cold_ttft_ms is not None else {}),
        "state_bytes": model.state_bytes,
    }
    model.close()
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            if k == "peak_rss_bytes" or k == "file_bytes" or k == "state_bytes":
                v = f"{v / 2**20:.1f} MiB"
            print(f"{k:<14} {v}")
    return 0
