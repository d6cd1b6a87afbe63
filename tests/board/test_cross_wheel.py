"""The wheels cross-built on x86_64 by deploy/build_wheel.py (aarch64, and 32-bit armv7l): their
tags and contents, an offline install by the target's own pip under qemu-user, the kernel chosen
on each core, and greedy tokens identical to this machine's build.

Debian's python3.11 and libraries for the target are unpacked (not installed) by
deploy/cross_sysroot.py and run with `qemu-aarch64 -L ROOT` (`qemu-arm` for armv7l); QEMU_CPU
picks the core: cortex-a53 and cortex-a72 lack dotprod, cortex-a76 has it. Needs the cross
compilers (gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf), qemu-user, the foreign architectures
enabled in dpkg (dpkg --add-architecture arm64; likewise armhf; then apt-get update) and, once per
machine, the package index for the aarch64 dependency wheels. Downloads and unpacked packages are
cached in $EDGE_RUNTIME_CROSS_CACHE (default ~/.cache/edge-runtime).
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy"))
from build_wheel import (  # noqa: E402
    BuildError, build_wheel, check_wheel, download_wheelhouse, elf_machine,
)
from cross_sysroot import (  # noqa: E402
    SysrootError, enabled_architectures, ensure_sysroot, pip_wheel,
)

CACHE = Path(os.environ.get("EDGE_RUNTIME_CROSS_CACHE",
                            Path.home() / ".cache" / "edge-runtime"))
PROMPT_TOKENS = [1, 17, 42]
GREEDY_STEPS = 12

# Run by the target interpreter and, in-process, by this one: greedy decoding through the
# public Model API, printing the kernel it ran and the tokens.
GREEDY_SCRIPT = """\
import json, sys
import numpy as np
from edge_runtime.model.model import Model

def greedy(path, prompt, steps, kernel=None):
    model = Model(path, n_threads=1, n_ctx=64, kernel=kernel)
    tokens = list(prompt)
    for _ in range(steps):
        tokens.append(int(np.argmax(model.eval_logits(tokens, all_logits=False))))
    return model.kernel, tokens

if __name__ == "__main__":
    kernel, tokens = greedy(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps({"kernel": kernel, "tokens": tokens}))
"""


# The prompt cache and batched decode on the target: greedy tokens cold, warm, after a restart
# from the cache directory, and of three requests decoding at once on a model with three slots.
CACHE_SCRIPT = """\
import json, sys, tempfile, threading
from edge_runtime.model.model import Model
from edge_runtime.model.slots import greedy_tokens

def run(path, prompts, steps):
    out = {}
    out["single"] = []
    with Model(path, n_threads=1, n_ctx=128) as m:
        for p in prompts:
            m.reset()
            out["single"].append(greedy_tokens(m, p, steps)[0])
    d = tempfile.mkdtemp()
    with Model(path, n_threads=1, n_ctx=128, prompt_cache=d) as m:
        out["cached"] = [greedy_tokens(m, p, steps)[0] for p in prompts + prompts]
    with Model(path, n_threads=1, n_ctx=128, prompt_cache=d) as m:
        out["restart"] = [greedy_tokens(m, p, steps)[0] for p in prompts]
    with Model(path, n_threads=1, n_ctx=128, slots=3) as m:
        res = [None] * len(prompts)
        def one(i):
            res[i] = greedy_tokens(m, prompts[i], steps)[0]
        ts = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
        [t.start() for t in ts]
        [t.join() for t in ts]
        out["batched"] = res
        out["kernel"] = m.kernel
    return out

if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))))
"""
CACHE_PROMPTS = [[1 + (7 * i) % 500 for i in range(40)], [3 + (11 * i) % 500 for i in range(44)],
                 [1 + (7 * i) % 500 for i in range(36)] + [9, 9, 9]]
# Run by the target interpreter: the logits of two files (every prompt position, then decode
# steps) on each kernel variant named, as hex digests.
LOGITS_SCRIPT = """\
import hashlib, json, sys
from edge_runtime.model.model import Model

def digest(path, tokens, kernel):
    h = hashlib.sha256()
    with Model(path, n_threads=2, n_ctx=64, kernel=kernel) as model:
        h.update(model.eval_logits(tokens).tobytes())
        for i, t in enumerate(tokens[:3]):
            h.update(model._engine.eval([t], len(tokens) + i).tobytes())
        return model.kernel, h.hexdigest()

if __name__ == "__main__":
    tokens = json.loads(sys.argv[3])
    out = {}
    for kernel in sys.argv[4].split(","):
        out[kernel] = [digest(path, tokens, kernel) for path in sys.argv[1:3]]
    print(json.dumps(out))
"""


@dataclass(frozen=True)
class Target:
    arch: str
    compiler: str
    qemu: str
    debian: str
    cores: tuple            # (QEMU_CPU, kernel the build must pick on it)
    deps_from_index: bool   # numpy from the package index, else Debian's numpy in the root


TARGETS = {
    "aarch64": Target("aarch64", "aarch64-linux-gnu-gcc", "qemu-aarch64", "arm64",
                      (("cortex-a53", "neon"), ("cortex-a72", "neon"),
                       ("cortex-a76", "neon_dot")), True),
    # 32-bit builds carry the scalar kernels only; the index has no numpy wheels for armv7l.
    "armv7l": Target("armv7l", "arm-linux-gnueabihf-gcc", "qemu-arm", "armhf",
                     (("cortex-a7", "scalar"), ("cortex-a15", "scalar")), False),
}


def _missing_tools(target):
    missing = [tool for tool in (target.compiler, target.qemu, "dpkg", "apt-get")
               if shutil.which(tool) is None]
    if not missing and target.debian not in enabled_architectures():
        missing.append(f"the {target.debian} dpkg architecture (dpkg --add-architecture "
                       f"{target.debian} && apt-get update)")
    return missing


# ------------------------------------------------------------------------------- fast checks

def test_elf_machine_reads_the_header():
    with open(sys.executable, "rb") as stream:
        header = stream.read(64)
    assert elf_machine(header) == {"x86_64": 62, "aarch64": 183}.get(os.uname().machine,
                                                                    elf_machine(header))
    with pytest.raises(BuildError, match="not an ELF file"):
        elf_machine(b"#!/bin/sh\n" + bytes(60))


def test_check_wheel_refuses_a_wheel_for_another_machine(tmp_path):
    wheel = tmp_path / "edge_runtime-0.1.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        with open(sys.executable, "rb") as stream:
            archive.writestr("edge_runtime/engine/_engine.cpython-311-aarch64-linux-gnu.so",
                             stream.read(4096))
    with pytest.raises(BuildError, match="expected a linux_aarch64 platform tag"):
        check_wheel(wheel, "aarch64")
    renamed = wheel.rename(tmp_path / "edge_runtime-0.1.0-cp311-cp311-linux_aarch64.whl")
    if os.uname().machine != "aarch64":
        with pytest.raises(BuildError, match="expected 183 \\(aarch64\\)"):
            check_wheel(renamed, "aarch64")


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(BuildError, match="architecture 'riscv64': expected one of aarch64"):
        build_wheel("riscv64", tmp_path)
    with pytest.raises(SysrootError, match="architecture 'riscv64'"):
        ensure_sysroot("riscv64", tmp_path)


# ------------------------------------------------------------------------------- the real build

@pytest.fixture(scope="module", params=sorted(TARGETS))
def target(request, tmp_path_factory):
    """The wheel for one architecture, built here and installed offline (--no-index) by that
    architecture's own pip, running under qemu-user."""
    target = TARGETS[request.param]
    missing = _missing_tools(target)
    if missing:
        pytest.skip(f"cross tools for {target.arch} missing: {missing}")
    wheel = build_wheel(target.arch, tmp_path_factory.mktemp(f"dist-{target.arch}"), CACHE)
    root = ensure_sysroot(target.arch, CACHE / f"runtime-{target.arch}", runtime=True)
    site = tmp_path_factory.mktemp(f"site-{target.arch}")
    pip = [str(pip_wheel(root) / "pip"), "install", "--quiet", "--no-index", "--no-cache-dir",
           "--no-compile", "--disable-pip-version-check", "--target", str(site)]
    if target.deps_from_index:
        wheelhouse = CACHE / f"wheelhouse-{target.arch}"
        if not any(wheelhouse.glob("numpy-*.whl")):
            download_wheelhouse(target.arch, wheelhouse)
        pip += ["--find-links", str(wheelhouse)]
    else:
        pip.append("--no-deps")
    installed = _run_target(target, root, target.cores[0][0], [*pip, str(wheel)], site=None,
                            timeout=900)
    assert installed.returncode == 0, installed.stderr
    return {"target": target, "wheel": wheel, "root": root, "site": site}


def _run_target(target, root, cpu, arguments, site, timeout=300):
    environment = {"PATH": os.environ["PATH"], "QEMU_CPU": cpu, "PYTHONNOUSERSITE": "1",
                   "HOME": os.environ.get("HOME", "/root")}
    if site is not None:
        environment["PYTHONPATH"] = str(site)
    # cwd: `python -c` puts the working directory first on sys.path, and a source checkout
    # there would shadow the installed wheel.
    return subprocess.run([target.qemu, "-L", str(root), str(root / "usr/bin/python3.11"),
                           *arguments], capture_output=True, text=True, env=environment,
                          timeout=timeout, cwd=root)


@pytest.mark.slow
def test_wheel_tags_and_contents(target):
    wheel, arch = target["wheel"], target["target"].arch
    assert wheel.name.endswith(f"-cp311-cp311-linux_{arch}.whl")
    modules = check_wheel(wheel, arch)
    triplet = {"aarch64": "aarch64-linux-gnu", "armv7l": "arm-linux-gnueabihf"}[arch]
    assert sorted(modules) == [f"edge_runtime/engine/_engine.cpython-311-{triplet}.so",
                               f"edge_runtime/text/_mask.cpython-311-{triplet}.so"]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    assert "edge-runtime = edge_runtime.cli:main" in entry_points
    shipped_configs = {Path(n).stem for n in names
                       if n.startswith("edge_runtime/device_configs/") and n.endswith(".toml")}
    assert shipped_configs >= {"raspberry-pi-5", "raspberry-pi-4", "raspberry-pi-3", "rk3588"}, (
        "the wheel lacks edge_runtime/device_configs/*.toml: the build must map the top-level "
        "device_configs/ into the package")


@pytest.mark.slow
def test_run_time_dispatch_on_each_core(target):
    for cpu, expected in target["target"].cores:
        result = _run_target(target["target"], target["root"], cpu, [
            "-c", "from edge_runtime.engine import _engine; print(_engine.best_kernel())"],
            target["site"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected, cpu


@pytest.mark.slow
def test_greedy_tokens_identical_to_this_machine(target, tmp_path):
    from edge_runtime.formats.random_model import write_random_model

    model = write_random_model(tmp_path / "tiny.gguf", "tiny", seed=3)
    script = tmp_path / "greedy.py"
    script.write_text(GREEDY_SCRIPT)
    namespace = {}
    exec(compile(GREEDY_SCRIPT, str(script), "exec"), namespace)
    here = {kernel: namespace["greedy"](str(model), PROMPT_TOKENS, GREEDY_STEPS, kernel)
            for kernel in (None, "scalar")}
    assert here[None][1] == here["scalar"][1]
    reference = here["scalar"][1]
    assert len(reference) == len(PROMPT_TOKENS) + GREEDY_STEPS
    assert np.unique(reference[len(PROMPT_TOKENS):]).size > 1  # not a degenerate constant run

    for cpu, expected_kernel in target["target"].cores:
        result = _run_target(target["target"], target["root"], cpu, [
            str(script), str(model), json.dumps(PROMPT_TOKENS), str(GREEDY_STEPS)],
            target["site"])
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["kernel"] == expected_kernel
        assert answer["tokens"] == reference, (cpu, answer["tokens"], reference)


@pytest.mark.slow
def test_prompt_cache_and_batched_decode_identical_on_each_core(target, tmp_path):
    from edge_runtime.formats.random_model import write_random_model

    model = write_random_model(tmp_path / "tiny.gguf", "tiny", seed=3)
    script = tmp_path / "cache.py"
    script.write_text(CACHE_SCRIPT)
    namespace = {}
    exec(compile(CACHE_SCRIPT, str(script), "exec"), namespace)
    here = namespace["run"](str(model), CACHE_PROMPTS, GREEDY_STEPS)
    single = here["single"]
    assert here["cached"] == single + single and here["restart"] == single and here["batched"] == single
    for cpu, expected_kernel in target["target"].cores:
        result = _run_target(target["target"], target["root"], cpu, [
            str(script), str(model), json.dumps(CACHE_PROMPTS), str(GREEDY_STEPS)], target["site"])
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["kernel"] == expected_kernel
        for key in ("single", "cached", "restart", "batched"):
            assert answer[key] == here[key], (cpu, key)
def test_tq1_logits_bit_identical_to_i2s_on_each_core(target, tmp_path):
    """The 1.6-bit body on every ARM kernel variant: the same logits bits as the 2-bit file."""
    from edge_runtime.formats import convert
    from edge_runtime.formats.random_model import write_random_model

    import argparse
    i2s = write_random_model(tmp_path / "i2s.gguf", "tiny", seed=5)
    tq1 = tmp_path / "tq1.gguf"
    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    assert convert.main(parser.parse_args([str(i2s), "-o", str(tq1), "--to", "tq1"])) == 0
    script = tmp_path / "logits.py"
    script.write_text(LOGITS_SCRIPT)
    variants = {"cortex-a53": "auto,scalar", "cortex-a72": "auto", "cortex-a76": "auto,neon",
                "cortex-a7": "auto", "cortex-a15": "auto"}
    for cpu, expected_kernel in target["target"].cores:
        result = _run_target(target["target"], target["root"], cpu, [
            str(script), str(i2s), str(tq1), json.dumps(PROMPT_TOKENS + [9, 300, 4]), variants[cpu]],
            target["site"])
        assert result.returncode == 0, result.stderr
        for kernel, ((k_i2s, d_i2s), (k_tq1, d_tq1)) in json.loads(result.stdout).items():
            assert k_i2s == k_tq1 == (expected_kernel if kernel == "auto" else kernel), (cpu, kernel)
            assert d_i2s == d_tq1, (cpu, kernel)
