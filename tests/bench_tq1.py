"""Benchmark of the 1.6-bit TQ1_S body against the 2-bit I2_S one (the same trits).

1. On the 2B4T-shaped random model (written once, cached): file size, bytes read per decoded token
   (every token reads the whole body and the whole head) and decode tok/s at --threads, for the
   i2_s and tq1 bodies with q8_0 and q4_0 heads.
2. The llvm-mca static estimate of the NEON GEMVs on Cortex-A53/A72/A76, measured as
   the peers are measured: the kernel compiled with aarch64-linux-gnu-gcc
   -O3 -mcpu=X, its innermost chunk loop fed to llvm-mca-19 -mcpu=X (L1-resident, a lower bound),
   reported per 256 weights — and what that means per board: the GEMV keeps up with the board's
   memory if 4 cores run 256 weights in no more cycles than the memory takes to deliver their
   bytes.

    python tests/bench_tq1.py [--threads 2] [--gen-tokens 32] [--repeats 3] [--skip-speed] [--skip-mca]

Figures are printed, never asserted: speed depends on the machine and its load.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CROSS_CC = "aarch64-linux-gnu-gcc"
MCA_CANDIDATES = ("llvm-mca-19", "llvm-mca")
# (core, kernel file, GEMV function); the I2_S GEMVs are measured the same way for comparison
MCA_KERNELS = [
    ("cortex-a53", "tq1_neon.c", "er_tq1_gemv_neon"), ("cortex-a53", "i2s_neon.c", "er_i2s_gemv_neon"),
    ("cortex-a72", "tq1_neon.c", "er_tq1_gemv_neon"), ("cortex-a72", "i2s_neon.c", "er_i2s_gemv_neon"),
    ("cortex-a76", "tq1_neon_dot.c", "er_tq1_gemv_neon_dot"), ("cortex-a76", "i2s_neon_dot.c", "er_i2s_gemv_neon_dot"),
]
# weights per multiply instruction: smull/smlal(2) take 8 int8 lanes, sdot 16
WEIGHTS_PER_OP = {"smlal": 8, "smlal2": 8, "smull": 8, "smull2": 8, "sdot": 16}
# board: (core, GHz, practical GB/s, cores); FACTS.md for the Pi 4/5 bandwidth, ~2 GB/s assumed for a Pi 3
BOARDS = [("Raspberry Pi 5", "cortex-a76", 2.4, 10.0, 4), ("Raspberry Pi 4", "cortex-a72", 1.8, 5.0, 4),
          ("Raspberry Pi 3 B+", "cortex-a53", 1.4, 2.0, 4)]
CONFIGS = [("i2_s", "q8_0"), ("tq1", "q8_0"), ("i2_s", "q4_0"), ("tq1", "q4_0")]


# ---- sizes and speed ------------------------------------------------------------------------

def file_figures(path):
    from edge_runtime.formats.gguf import GGMLType
    from edge_runtime.formats.model_file import open_model_file

    with open_model_file(path) as mf:
        t = mf.reader.tensors
        body = sum(i.nbytes for i in t.values() if i.ggml_type in (GGMLType.I2_S, GGMLType.TQ1_S))
        weights = sum(i.n_elements for i in t.values() if i.ggml_type in (GGMLType.I2_S, GGMLType.TQ1_S))
        head = t["output.weight" if "output.weight" in t else "token_embd.weight"].nbytes
        return {"file": os.path.getsize(path), "body": body, "head": head, "weights": weights,
                "per_token": body + head}


def speed(path, threads, gen_tokens, repeats):
    from edge_runtime.board.bench import run_bench
    from edge_runtime.model.model import Model

    with Model(path, n_threads=threads, n_ctx=16 + gen_tokens + 1) as model:
        r = run_bench(model, 16, gen_tokens, repeats)
        return model.kernel, r["decode_tok_s"]


def speed_table(args):
    from edge_runtime.board.bench import random_model_path

    rows = []
    for body, head in CONFIGS:
        path = random_model_path("2b4t", head, args.cache_dir, body)
        f = file_figures(path)
        kernel, tok_s = (None, None) if args.skip_speed else speed(path, args.threads, args.gen_tokens, args.repeats)
        rows.append((body, head, f, kernel, tok_s))
    base = rows[0]
    print(f"\n2B4T-shaped random model, decode at {args.threads} threads ({args.gen_tokens} tokens, "
          f"median of {args.repeats})")
    print(f"{'body':<6}{'head':<6}{'file MB':>9}{'body MB':>9}{'bits/w':>8}{'MB/token':>10}{'bytes x':>9}"
          f"{'tok/s':>8}{'speed x':>9}  kernel")
    for body, head, f, kernel, tok_s in rows:
        ratio = base[2]["per_token"] / f["per_token"]
        sp = f"{tok_s:8.2f}{tok_s / base[4]:9.2f}" if tok_s else f"{'-':>8}{'-':>9}"
        print(f"{body:<6}{head:<6}{f['file'] / 1e6:9.1f}{f['body'] / 1e6:9.1f}{8 * f['body'] / f['weights']:8.3f}"
              f"{f['per_token'] / 1e6:10.1f}{ratio:9.2f}{sp}  {kernel or '-'}")
    return rows


# ---- llvm-mca -------------------------------------------------------------------------------

def innermost_loop(asm: str, function: str) -> list[str]:
    """The innermost loop of `function` with the most weights per iteration: the lines from a
    label to the backward branch that returns to it, with no other loop inside."""
    lines = asm.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(function + ":"))
    end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(".size\t" + function))
    body = lines[start:end]
    labels = {l.rstrip(":"): i for i, l in enumerate(body) if re.match(r"^\.L\w+:$", l)}
    loops = []
    for j, l in enumerate(body):
        m = re.match(r"^\s+(b|b\.?(?:eq|ne|cs|cc|hs|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)|cbn?z|tbn?z)\s+.*?(\.L\w+)\s*$", l)
        if m and m.group(2) in labels and labels[m.group(2)] < j:
            loops.append((labels[m.group(2)], j))
    inner = [(i, j) for i, j in loops if not any(i <= a and b < j for a, b in loops if (a, b) != (i, j))]

    def weights(span):
        i, j = span
        return sum(WEIGHTS_PER_OP.get(l.split()[0], 0) for l in body[i:j + 1] if l.startswith("\t") and l.split())

    i, j = max(inner, key=weights)
    loop = [l for l in body[i:j + 1] if not l.strip().startswith((".p2align", ".loc", ".cfi"))]
    # GNU as takes a byte immediate written as a sign-extended 64-bit value; llvm-mca wants 0..255
    loop = [re.sub(r"(movi\s+v\d+\.(?:8|16)b, )0xffffffffffffff([0-9a-f]{2})\b", r"\g<1>0x\2", l) for l in loop]
    return loop, weights((i, j))


def mca_cycles(mca, cpu, src, function, workdir):
    asm_path = Path(workdir) / f"{function}-{cpu}.s"
    subprocess.run([CROSS_CC, "-O3", "-std=c11", f"-mcpu={cpu}", "-I", str(REPO / "neon_kernels"), "-S",
                    str(REPO / "neon_kernels" / src), "-o", str(asm_path)], check=True)
    loop, weights = innermost_loop(asm_path.read_text(), function)
    loop_path = Path(workdir) / f"{function}-{cpu}-loop.s"
    loop_path.write_text("\n".join(loop) + "\n")
    out = subprocess.run([mca, f"-mcpu={cpu}", "-mtriple=aarch64", "-iterations=300", str(loop_path)],
                         capture_output=True, text=True, check=True).stdout
    iterations = int(re.search(r"Iterations:\s+(\d+)", out).group(1))
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1))
    return cycles / iterations * 256 / weights, len(loop) - 1, weights


def mca_table(body_bits_per_weight):
    mca = next((shutil.which(m) for m in MCA_CANDIDATES if shutil.which(m)), None)
    if mca is None or shutil.which(CROSS_CC) is None:
        print(f"\nllvm-mca table skipped: needs {CROSS_CC} and llvm-mca (Debian: llvm-19)")
        return {}
    version = subprocess.run([mca, "--version"], capture_output=True, text=True).stdout
    version = re.search(r"version ([\d.]+)", version).group(1)
    print(f"\nllvm-mca {version} static estimate, innermost GEMV loop ({CROSS_CC} -O3 -mcpu=X), "
          f"L1-resident: cycles per 256 weights")
    print(f"{'core':<12}{'kernel':<24}{'insns':>7}{'weights':>9}{'cyc/256':>9}")
    result = {}
    with tempfile.TemporaryDirectory() as work:
        for cpu, src, function in MCA_KERNELS:
            cyc, n_insns, weights = mca_cycles(mca, cpu, src, function, work)
            result[(cpu, function)] = cyc
            print(f"{cpu:<12}{function:<24}{n_insns:>7}{weights:>9}{cyc:9.1f}")
    print("\nper board (4 cores; memory bound when the cores need fewer cycles than the bytes take to arrive)")
    print(f"{'board':<18}{'GHz':>5}{'GB/s':>6}{'body':>6}{'budget':>8}{'kernel':>8}  verdict")
    for board, cpu, ghz, gbs, cores in BOARDS:
        for body, function, bits in (("tq1", "er_tq1_gemv_neon", body_bits_per_weight["tq1"]),
                                     ("i2_s", "er_i2s_gemv_neon", body_bits_per_weight["i2_s"])):
            if cpu == "cortex-a76":
                function += "_dot"
            # cycles per 256 weights per core for which 4 cores exactly keep up with memory
            budget = cores * ghz * 1e9 * (256 * bits / 8) / (gbs * 1e9)
            cyc = result[(cpu, function)]
            verdict = "memory-bound" if cyc <= budget else f"compute-bound ({cyc / budget:.2f}x the budget)"
            print(f"{board:<18}{ghz:5.1f}{gbs:6.1f}{body:>6}{budget:8.1f}{cyc:8.1f}  {verdict}")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/edge-runtime"))
    p.add_argument("--skip-speed", action="store_true", help="sizes only, no decode timing")
    p.add_argument("--skip-mca", action="store_true")
    args = p.parse_args(argv)
    rows = speed_table(args)
    bits = {body: 8 * f["body"] / f["weights"] for body, _, f, _, _ in rows}
    if not args.skip_mca:
        mca_table(bits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
