"""Every kernel variant against the same case table (tests/kernel_cases.py): natively on x86
(scalar, avx2, auto, and avx512vnni / amx where the CPU has them) and under qemu-aarch64 on Cortex-A53/A72 (Armv8.0, no sdot) and Cortex-A76
(dotprod) models, through tests/kernel_driver.c.

Integer results and quantized activations are compared bit for bit with the numpy reference;
float head outputs within kernel_cases.FLOAT_RTOL of sum(|term|) (bit for bit where every f32
step is exact). The scalar variant's run checks the C reference itself against numpy.
"""
from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import kernel_cases as kc

from edge_runtime.engine import build_flags

REPO = Path(__file__).resolve().parents[2]
KERNEL_DIR = REPO / "neon_kernels"
ENGINE_CSRC = REPO / "edge_runtime" / "engine" / "csrc"
DRIVER_SOURCE = REPO / "tests" / "kernel_driver.c"
# The kernels, with the engine's dispatch table and fp16 conversion (no forward pass, no thread pool).
KERNEL_SOURCES = [ENGINE_CSRC / "er_dispatch.c", ENGINE_CSRC / "er_fp16.c"] + [KERNEL_DIR / name for name in (
    "i2s_ref.c", "head_ref.c",
    "i2s_avx2.c", "head_avx2.c", "i2s_avx512vnni.c", "i2s_amx.c", "head_avx512vnni.c", "head_amx.c",
    "i2s_neon.c", "head_neon.c", "i2s_neon_dot.c", "head_neon_dot.c",
    "tq1_ref.c", "tq1_avx2.c", "tq1_avx512vnni.c", "tq1_neon.c", "tq1_neon_dot.c",
)]
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
RUN_TIMEOUT_S = 120

CASES = kc.build_cases()


def _host_flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


def _host_has_avx2() -> bool:
    return {"avx2", "fma", "f16c"} <= _host_flags()


HOST_HAS_AVX512VNNI = {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= _host_flags()


def _os_grants_amx() -> bool:
    """Linux hands the AMX tile state to a process that asks (arch_prctl ARCH_REQ_XCOMP_PERM,
    from 5.16 on); the amx variant is offered only then."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(158, 0x1023, 18) == 0  # SYS_arch_prctl, XFEATURE_XTILEDATA
    except (OSError, AttributeError):
        return False


HOST_HAS_AMX = (HOST_HAS_AVX512VNNI and {"amx_tile", "amx_int8"} <= _host_flags()
                and platform.machine() == "x86_64" and _os_grants_amx())
IS_X86 = platform.machine() in ("x86_64", "AMD64")

# (config id, qemu cpu or None for native, EDGE_RUNTIME_KERNEL, variant the driver must report)
NATIVE_CONFIGS = [
    ("x86-scalar", None, "scalar", "scalar"),
    ("x86-avx2", None, "avx2", "avx2"),
    ("x86-auto", None, "auto", "amx" if HOST_HAS_AMX else "avx512vnni" if HOST_HAS_AVX512VNNI else "avx2"),
]
if HOST_HAS_AVX512VNNI:
    NATIVE_CONFIGS.append(("x86-avx512vnni", None, "avx512vnni", "avx512vnni"))
if HOST_HAS_AMX:
    NATIVE_CONFIGS.append(("x86-amx", None, "amx", "amx"))
ARM_CONFIGS = [
    ("a53-auto", "cortex-a53", "auto", "neon"),
    ("a72-auto", "cortex-a72", "auto", "neon"),
    ("a76-auto", "cortex-a76", "auto", "neon_dot"),
    ("a76-neon", "cortex-a76", "neon", "neon"),
    ("a76-scalar", "cortex-a76", "scalar", "scalar"),
]
CONFIGS = NATIVE_CONFIGS + ARM_CONFIGS


# the extension's own flags (setup.py), so the driver runs the kernels as they ship
DRIVER_FLAGS = [*build_flags.PYTHON_BUILD_FLAGS, *build_flags.C_FLAGS, "-Wall", "-Wextra"]


def driver_command(compiler: str, out: Path, extra: list[str]) -> list[str]:
    return [compiler, *DRIVER_FLAGS, "-I", str(KERNEL_DIR), *map(str, KERNEL_SOURCES), str(DRIVER_SOURCE),
            "-o", str(out), *extra, "-lm"]


def _compile(compiler: str, out: Path, extra: list[str]) -> Path:
    cmd = driver_command(compiler, out, extra)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"building the kernel driver failed:\n{' '.join(cmd)}\n{proc.stderr}")
    return out


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kernel_driver")


@pytest.fixture(scope="session")
def native_driver(build_dir) -> Path:
    if not IS_X86:
        pytest.skip(f"hardware: the native configurations are x86-64 ones; this host is {platform.machine()}")
    if not _host_has_avx2():
        pytest.skip("hardware: this x86-64 CPU lacks AVX2/FMA/F16C, so the avx2 variant cannot run here")
    return _compile("gcc", build_dir / "kernel_driver_x86", [])


@pytest.fixture(scope="session")
def arm_driver(build_dir) -> Path:
    missing = [tool for tool in (CROSS_CC, QEMU) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: gcc-aarch64-linux-gnu, qemu-user)")
    return _compile(CROSS_CC, build_dir / "kernel_driver_aarch64", ["-static"])


@pytest.fixture(scope="session")
def case_file(build_dir) -> Path:
    path = build_dir / "cases.bin"
    path.write_bytes(kc.encode_cases(CASES))
    return path


def _command(driver: Path, cpu: str | None, *args: str) -> list[str]:
    return ([QEMU, "-cpu", cpu] if cpu else []) + [str(driver), *args]


def _run(driver: Path, cpu: str | None, kernel: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EDGE_RUNTIME_KERNEL=kernel)
    return subprocess.run(_command(driver, cpu, *args), env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


_results_cache: dict[str, tuple[str, list[tuple[int, bytes]] | str]] = {}


def _results(config: tuple, request, case_file: Path, build_dir: Path):
    """Run the whole table once per configuration; later cases reuse the decoded results."""
    cid, cpu, kernel, _ = config
    if cid not in _results_cache:
        driver = request.getfixturevalue("arm_driver" if cpu else "native_driver")
        out = build_dir / f"results-{cid}.bin"
        proc = _run(driver, cpu, kernel, str(case_file), str(out))
        if proc.returncode != 0:
            _results_cache[cid] = (proc.stdout, f"driver exited {proc.returncode}: {proc.stderr.strip()}")
        else:
            _results_cache[cid] = (proc.stdout, kc.decode_results(out.read_bytes()))
    return _results_cache[cid]


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_driver_selects_variant(config, request, case_file, build_dir):
    stdout, results = _results(config, request, case_file, build_dir)
    assert not isinstance(results, str), results
    assert stdout.splitlines()[0] == f"kernel: {config[3]}"
    assert len(results) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_case_matches_reference(config, case, request, case_file, build_dir):
    _, results = _results(config, request, case_file, build_dir)
    assert not isinstance(results, str), results
    op, payload = results[CASES.index(case)]
    assert op == case.op
    errors = kc.check_result(case, payload)
    assert not errors, f"{config[0]} {kc.OP_NAMES[case.op]} '{case.name}':\n" + "\n".join(errors)


# ---- variants that must be refused, cleanly (exit 2, a message, no SIGILL) -------------------

REFUSALS = [
    ("a72-neon_dot", "cortex-a72", "neon_dot", "cannot run on this CPU"),
    ("a53-neon_dot", "cortex-a53", "neon_dot", "cannot run on this CPU"),
    ("a76-avx2", "cortex-a76", "avx2", "not built for this architecture"),
    ("a76-avx512vnni", "cortex-a76", "avx512vnni", "not built for this architecture"),
    ("a76-amx", "cortex-a76", "amx", "not built for this architecture"),
    ("a76-unknown", "cortex-a76", "sve9", "unknown kernel variant 'sve9'"),
]
NATIVE_REFUSALS = [
    ("x86-neon", None, "neon", "not built for this architecture"),
    ("x86-neon_dot", None, "neon_dot", "not built for this architecture"),
]


ALL_REFUSALS = REFUSALS + NATIVE_REFUSALS


@pytest.mark.parametrize("refusal", ALL_REFUSALS, ids=[r[0] for r in ALL_REFUSALS])
def test_unrunnable_variant_is_refused(refusal, request, case_file, build_dir):
    _, cpu, kernel, message = refusal
    driver = request.getfixturevalue("arm_driver" if cpu else "native_driver")
    proc = _run(driver, cpu, kernel, str(case_file), str(build_dir / "refused.bin"))
    assert proc.returncode == 2, f"exit {proc.returncode} (SIGILL is -4 or 132): {proc.stderr}"
    assert message in proc.stderr and f"EDGE_RUNTIME_KERNEL={kernel}" in proc.stderr, proc.stderr


def test_driver_rejects_malformed_case_file(native_driver, build_dir):
    bad = build_dir / "bad_cases.bin"
    bad.write_bytes(kc.CASES_HEADER.pack(kc.OP_I2S_GEMV, 3, 100, 0, 0, 0, 0, 0))  # k % 128 != 0
    proc = _run(native_driver, None, "scalar", str(bad), str(build_dir / "bad.bin"))
    assert proc.returncode == 1 and "case 0: i2s_gemv needs rows >= 1, k % 128 == 0" in proc.stderr
    bad.write_bytes(CASES[0].encode()[:-3])
    proc = _run(native_driver, None, "scalar", str(bad), str(build_dir / "bad.bin"))
    assert proc.returncode == 1 and "ends inside this case's inputs" in proc.stderr


def test_plain_neon_objects_have_no_sdot(build_dir):
    """The Armv8.0 path must not contain dotprod instructions anywhere (a Pi 4 would SIGILL)."""
    if shutil.which(CROSS_CC) is None or shutil.which("aarch64-linux-gnu-objdump") is None:
        pytest.skip(f"{CROSS_CC} / aarch64-linux-gnu-objdump not installed (Debian: gcc-aarch64-linux-gnu)")
    plain = [p for p in KERNEL_SOURCES if "_dot" not in p.name]
    for src in plain:
        obj = build_dir / f"{src.stem}.aarch64.o"
        subprocess.run([CROSS_CC, "-O2", "-I", str(KERNEL_DIR), "-c", str(src), "-o", str(obj)], check=True)
        asm = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(obj)], capture_output=True, text=True,
                             check=True).stdout
        assert "sdot" not in asm and "udot" not in asm, f"{src.name} contains dot-product instructions"


# ---- the numpy reference itself, against the layout and rounding rules of er_kernels.h --------

def test_reference_i2s_layout_matches_header():
    # weight 128 + 32 * m + j lives in byte 32 + j at bits (6 - 2m)
    for m in range(4):
        codes = np.ones((1, 256), np.uint8)
        codes[0, 128 + 32 * m + 5] = 2
        packed = kc.pack_i2s(codes)
        expected = np.full(64, 0x55, np.uint8)
        expected[32 + 5] = 0x55 + (1 << (6 - 2 * m))
        np.testing.assert_array_equal(packed[0], expected)
    codes = np.array([[0, 1, 2, 3] * 32])
    q = np.arange(128, dtype=np.int8) - 64
    assert kc.ternary_matmul(codes, q)[0] == sum((c - 1) * int(v) for c, v in zip(codes[0], q))


def test_reference_tq1_layout_matches_header():
    # every one of the 243 five-code tuples survives pack -> unpack, and weight 160c + 32p + j
    # lives in byte 32c + j of the row
    digits = np.array(np.unravel_index(np.arange(243), (3,) * 5)).T  # (243, 5), most significant first
    codes = np.repeat(digits[:, :, None], 32, axis=2).reshape(243, 160).astype(np.uint8)
    packed = kc.pack_tq1(codes)
    assert packed.shape == (243, 32) and len(set(packed[:, 0].tolist())) == 243
    np.testing.assert_array_equal(kc.unpack_tq1(packed, 160), codes)
    codes = np.ones((1, 384), np.uint8)
    codes[0, 160 + 32 * 3 + 7] = 2  # chunk 1, strip 3, byte 7: v = 2 * 3^1 + 1 * (81 + 27 + 9 + 1)
    packed = kc.pack_tq1(codes)
    assert packed.shape == (1, 96) and packed[0, 32 + 7] == (256 * (2 * 3 + 118) + 242) // 243
    assert np.all(np.delete(packed[0], 32 + 7)[:63] == (256 * 121 + 242) // 243)
    np.testing.assert_array_equal(kc.unpack_tq1(packed, 384), codes)


def test_reference_quantizers_round_half_to_even():
    s, q = kc.quantize_row_i8(np.array([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -127.0], np.float32))
    assert s == np.float32(1.0)
    assert q.tolist() == [127, 0, 2, 2, 0, -2, -127]
    s, q = kc.quantize_row_i8(np.zeros(3, np.float32))
    assert s == np.float32(127.0) / np.float32(1e-5) and q.tolist() == [0, 0, 0]
    blocks = kc.quantize_row_q8_0(np.concatenate([[127.0, 2.5, -3.5], np.zeros(29)]).astype(np.float32))
    assert blocks["d"][0] == 0x3C00 and blocks["qs"][0][:3].tolist() == [127, 2, -4]


def test_reference_q4_0_nibble_order():
    w = np.zeros((1, 1), kc.BLOCK_Q4_0)
    w["qs"][0, 0, 0] = 0x9A  # weight 0 = 0xA - 8 = 2, weight 16 = 0x9 - 8 = 1
    values = kc.q4_0_values(w)[0, 0]
    assert values[0] == 2 and values[16] == 1 and values[1] == -8


def test_fp16_conversions_agree_with_ieee_for_every_half():
    """The branch-free fp16 -> f32 (used by the KV cache and heads) on all 65536 bit patterns,
    and f32 -> fp16 round-half-even on every half and on the midpoints between neighbours."""
    from edge_runtime.engine import _engine

    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    got = _engine.fp16_to_fp32(halves)
    want = halves.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    assert np.isnan(got[nan]).all()
    assert np.array_equal(np.signbit(got), np.signbit(want))

    finite = want[~nan & np.isfinite(want)]
    assert np.array_equal(_engine.fp32_to_fp16(finite), finite.astype(np.float16).view(np.uint16))
    ordered = np.unique(finite.astype(np.float64))
    midpoints = ((ordered[:-1] + ordered[1:]) / 2).astype(np.float32)
    assert np.array_equal(_engine.fp32_to_fp16(midpoints), midpoints.astype(np.float16).view(np.uint16))


def test_driver_is_built_with_the_shipped_flags(tmp_path):
    """The driver compiles the kernels as setup.py does (-O3, -ffp-contract=off, ...), and the flags
    it adds for the Python build's configuration are the ones that configuration really has."""
    import sysconfig

    cmd = driver_command("gcc", tmp_path / "driver", [])
    for flag in build_flags.C_FLAGS + build_flags.PYTHON_BUILD_FLAGS:
        assert flag in cmd, flag
    assert cmd.index("-O3") < len(cmd) and "-O2" not in cmd
    assert 'FLAGS["C_FLAGS"]' in (REPO / "setup.py").read_text()  # setup.py builds with the same list
    python_cflags = (sysconfig.get_config_var("CFLAGS") or "").split()
    assert set(build_flags.PYTHON_BUILD_FLAGS) <= set(python_cflags), python_cflags
