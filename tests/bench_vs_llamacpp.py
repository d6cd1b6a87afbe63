"""Side-by-side speed of edge-runtime and llama.cpp on the SAME ternary weights (not a test, not in CI).

    python tests/bench_vs_llamacpp.py [--threads 1 2] [--prompt-tokens 128] [--gen-tokens 32] [--repeats 3]
                                      [--body i2_s|tq1] [--head q8_0|q4_0]

A 2B4T-shaped model with random ternary weights and a q8_0 head is written once (our I2_S file).
With `--body i2_s` (default) it runs as it is and is exported with `edge-runtime convert --to tq2_0`
for llama.cpp (architecture `bitnet`, TQ2_0 projections); with `--body tq1` our side is its
`convert --to tq1` file (1.6-bit TQ1_S) and llama.cpp's its `--to tq1_0` export (1.69-bit TQ1_0),
both with the `--head` type. Both runtimes are timed alternately, each run in its own
process: prompt tok/s (one batch of random tokens), decode tok/s (one token at a time), peak RSS.
Prints medians and ratios. Needs `pip install llama-cpp-python` (builds llama.cpp from source).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

RUNNER = r"""
import json, resource, sys, time
import numpy as np
kind, path, threads, n_prompt, n_gen = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(0)
n_vocab = 128256
prompt = [int(t) for t in rng.integers(0, n_vocab, size=n_prompt)]
gen = [int(t) for t in rng.integers(0, n_vocab, size=n_gen)]
if kind == "edge":
    from edge_runtime.model.model import Model
    m = Model(path, n_threads=threads, n_ctx=n_prompt + n_gen + 8, n_batch=n_prompt)
    ev = lambda toks, pos: m._engine.eval(toks, pos)
    state_bytes = m.state_bytes
else:
    from llama_cpp import Llama
    m = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=n_prompt + n_gen + 8,
              n_batch=n_prompt, verbose=False)
    ev = lambda toks, pos: m.eval(toks)
    state_bytes = None
t0 = time.perf_counter(); ev(prompt, 0); t1 = time.perf_counter()
for i, t in enumerate(gen):
    ev([t], n_prompt + i)
t2 = time.perf_counter()
print(json.dumps({"prompt_tok_s": n_prompt / (t1 - t0), "decode_tok_s": n_gen / (t2 - t1),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "state_mib": state_bytes / 2**20 if state_bytes is not None else None}))
"""


def run_one(kind, path, threads, n_prompt, n_gen):
    out = subprocess.run([sys.executable, "-c", RUNNER, kind, path, str(threads), str(n_prompt), str(n_gen)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--body", choices=("i2_s", "tq1"), default="i2_s")
    p.add_argument("--head", choices=("q8_0", "q4_0"), default="q8_0")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/edge-runtime"))
    args = p.parse_args()

    from edge_runtime.formats.random_model import write_random_model
    from edge_runtime.text.tokenizer import Tokenizer

    # llama.cpp refuses a file without a vocabulary: both files carry the real Llama-3 tokenizer
    os.makedirs(args.cache_dir, exist_ok=True)
    ours = os.path.join(args.cache_dir, "random-2b4t-q8_0-llama3vocab.gguf")
    if not os.path.exists(ours):
        tok = Tokenizer.from_tokenizer_json(os.path.join(HERE, "data", "llama3-tokenizer.json.xz"),
                                            bos_id=128000, eos_id=128001, eot_id=128009)
        write_random_model(ours, shape="2b4t", head="q8_0", seed=1, tokenizer=tok)
    source = ours
    if args.body == "tq1" or args.head != "q8_0":
        ours = os.path.join(args.cache_dir, f"random-2b4t-{args.body}-{args.head}-llama3vocab.gguf")
        if not os.path.exists(ours):
            subprocess.run([sys.executable, "-m", "edge_runtime", "convert", source, "--to", args.body, "--head",
                            args.head, "-o", ours], check=True)
    theirs_body = "tq1_0" if args.body == "tq1" else "tq2_0"
    theirs = os.path.join(args.cache_dir, f"random-2b4t-{args.head}-llama3vocab-{theirs_body}.gguf")
    if not os.path.exists(theirs):
        subprocess.run([sys.executable, "-m", "edge_runtime", "convert", source, "--to", theirs_body, "--head",
                        args.head, "-o", theirs], check=True)
    print(f"edge-runtime: {ours} ({os.path.getsize(ours) / 2**20:.0f} MiB)")
    print(f"llama.cpp:    {theirs} ({os.path.getsize(theirs) / 2**20:.0f} MiB)")
    for t in args.threads:
        res = {"edge": [], "llama": []}
        for _ in range(args.repeats):  # alternate, so drift in machine load hits both alike
            for kind, path in (("edge", ours), ("llama", theirs)):
                res[kind].append(run_one(kind, path, t, args.prompt_tokens, args.gen_tokens))
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("prompt_tok_s", "decode_tok_s", "peak_rss_mib")}
               for k, v in res.items()}
        print(f"threads {t}: prompt {args.prompt_tokens} tok, decode {args.gen_tokens} tok, {args.head} head, "
              f"median of {args.repeats}")
        for k in ("edge", "llama"):
            print(f"  {k:<6} prompt {med[k]['prompt_tok_s']:8.2f} tok/s   decode {med[k]['decode_tok_s']:7.2f} tok/s"
                  f"   peak RSS {med[k]['peak_rss_mib']:7.1f} MiB")
        file_mib = os.path.getsize(ours) / 2**20
        state_mib = res["edge"][0]["state_mib"]
        print(f"  edge RSS budget: file {file_mib:.1f} + KV cache and scratch {state_mib:.1f} + 64 MiB = "
              f"{file_mib + state_mib + 64:.1f} MiB (peak {med['edge']['peak_rss_mib']:.1f} MiB)")
        print(f"  ratio  prompt {med['edge']['prompt_tok_s'] / med['llama']['prompt_tok_s']:8.2f}x        "
              f"decode {med['edge']['decode_tok_s'] / med['llama']['decode_tok_s']:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
