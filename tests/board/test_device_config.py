"""Board configs: the shipped TOMLs, validation errors, detection on fake /proc trees, the memory
guard and CPU pinning."""

import os
import platform
from pathlib import Path

import pytest

from edge_runtime.board.device_config import (
    BoardDetectionError, DeviceConfig, apply_affinity, builtin_configs, detect_board, effective_threads,
    find_config, load_builtin_configs, load_device_config, read_board_facts, select_config,
)
from edge_runtime.board.memory import MemoryBudgetError, kv_cache_bytes, memory_guard, read_mem_available

REPO = Path(__file__).resolve().parents[2]
EXPECTED_BOARDS = {"raspberry-pi-5", "raspberry-pi-4", "raspberry-pi-3", "raspberry-pi-zero-2-w", "rk3588",
                   "jetson-orin-nano", "android-termux", "generic-x86_64", "generic-arm"}

# BitNet b1.58 2B4T (shared/FACTS.md)
MODEL_2B4T_BYTES = 1_187_000_000
LAYERS_2B4T, KV_HEADS_2B4T, HEAD_DIM_2B4T = 30, 5, 128
SCRATCH_BYTES = 64 * 1024 * 1024
GIB = 1024 ** 3


# --------------------------------------------------------------------------------- shipped files

def test_every_shipped_toml_loads_and_is_named_after_its_file():
    paths = builtin_configs()
    assert set(paths) == EXPECTED_BOARDS
    for name, path in paths.items():
        config = load_device_config(path)
        assert config.name == name == path.stem
        assert config.source == path
        assert config.kv_cache_type == "f16"


def test_shipped_tomls_spell_out_every_field():
    # The files double as documentation: no field may silently fall back to a default.
    import tomllib
    top = {"name", "description", "threads", "cpu_affinity", "kernel", "n_ctx", "kv_cache_type",
           "use_mmap", "use_mlock", "memory_budget_mb", "prompt_cache_mb", "thermal_limit_c", "serve", "match",
           "serial", "mqtt", "wyoming"}
    for path in builtin_configs().values():
        document = tomllib.loads(path.read_text())
        assert set(document) == top, path
        assert set(document["serial"]) == {"port", "baud", "text"}, path
        assert set(document["mqtt"]) == {"broker", "prefix", "group", "keepalive"}, path
        assert set(document["wyoming"]) == {"uri", "model_role", "broker"}, path


def test_board_specific_values():
    configs = load_builtin_configs()
    assert configs["rk3588"].cpu_affinity == (4, 5, 6, 7)
    assert configs["rk3588"].threads == 4
    assert configs["raspberry-pi-5"].kernel == "neon_dot"
    assert configs["raspberry-pi-4"].kernel == "neon"
    assert configs["raspberry-pi-3"].kernel == "neon"
    assert "too small for 2B4T" in configs["raspberry-pi-zero-2-w"].description
    assert "tq1 + q4_0" in configs["raspberry-pi-3"].description
    assert configs["jetson-orin-nano"].threads == 6
    assert configs["generic-x86_64"].kernel == "auto"
    assert configs["raspberry-pi-5"].mqtt.host == "localhost"
    assert configs["raspberry-pi-5"].mqtt.port == 1883


def test_find_config_by_name_and_by_path(tmp_path):
    assert find_config("raspberry-pi-4").name == "raspberry-pi-4"
    assert find_config(REPO / "device_configs" / "rk3588.toml").name == "rk3588"
    with pytest.raises(ValueError, match="not a file and not a built-in board.*raspberry-pi-5"):
        find_config("raspberry-pi-9")
    with pytest.raises(ValueError, match="board config file not found"):
        find_config(tmp_path / "missing.toml")


# --------------------------------------------------------------------------------- invalid files

VALID = """\
name = "test-board"
threads = 4
cpu_affinity = [4, 5, 6, 7]
kernel = "neon_dot"
n_ctx = 2048
memory_budget_mb = 1024

[serial]
port = "/dev/ttyUSB0"
baud = 115200

[mqtt]
broker = "localhost:1883"
prefix = "edge-runtime"

[match]
cpu_parts = ["0xd0b"]
"""


def _edit(old, new):
    assert old in VALID
    return VALID.replace(old, new, 1)


INVALID_CASES = [
    # (case id, TOML text, fragments the message must contain)
    ("syntax", VALID + "threads = = 4\n", ["not valid TOML"]),
    ("unknown-top-key", _edit("threads = 4", "threads = 4\nthread = 4"),
     ["unknown key 'thread'", "known keys"]),
    ("unknown-section", VALID + "[gpio]\npin = 4\n", ["unknown key 'gpio'"]),
    ("unknown-section-key", _edit('prefix = "edge-runtime"', 'brokr = "x:1"'),
     ["unknown key 'mqtt.brokr'"]),
    ("threads-string", _edit("threads = 4", 'threads = "4"'),
     ["key 'threads' = '4'", "an integer from 0 to 1024"]),
    ("threads-bool", _edit("threads = 4", "threads = true"),
     ["key 'threads' = True", "an integer"]),
    ("threads-negative", _edit("threads = 4", "threads = -1"), ["key 'threads' = -1"]),
    ("threads-more-than-pinned", _edit("threads = 4", "threads = 8"),
     ["key 'threads' = 8", "at most 4", "cpu_affinity"]),
    ("kernel-misspelt", _edit('kernel = "neon_dot"', 'kernel = "neon-dot"'),
     ["key 'kernel' = 'neon-dot'", '"neon", "neon_dot", "avx2", "avx512vnni", "amx", "scalar", "auto"']),
    ("n_ctx-too-small", _edit("n_ctx = 2048", "n_ctx = 8"),
     ["key 'n_ctx' = 8", "from 16 to 131072"]),
    ("kv-type", _edit("n_ctx = 2048", 'n_ctx = 2048\nkv_cache_type = "q8_0"'),
     ["key 'kv_cache_type' = 'q8_0'", '"f16"']),
    ("affinity-repeat", _edit("[4, 5, 6, 7]", "[4, 4, 5, 6]"),
     ["key 'cpu_affinity' = [4, 4, 5, 6]", "without repeats"]),
    ("affinity-string", _edit("cpu_affinity = [4, 5, 6, 7]", 'cpu_affinity = "4-7"'),
     ["key 'cpu_affinity' = '4-7'", "a list of CPU ids"]),
    ("budget-zero", _edit("memory_budget_mb = 1024", "memory_budget_mb = 0"),
     ["key 'memory_budget_mb' = 0", "from 64 to"]),
    ("thermal-absurd", _edit("n_ctx = 2048", "n_ctx = 2048\nthermal_limit_c = 200"),
     ["key 'thermal_limit_c' = 200", "from 40 to 120"]),
    ("mlock-string", _edit("n_ctx = 2048", 'n_ctx = 2048\nuse_mlock = "yes"'),
     ["key 'use_mlock' = 'yes'", "true or false"]),
    ("serve-unknown", _edit("n_ctx = 2048", 'n_ctx = 2048\nserve = "http"'),
     ["key 'serve' = 'http'", '"mqtt", "serial"']),
    ("missing-name", _edit('name = "test-board"\n', ""), ["missing key 'name'"]),
    ("missing-budget", _edit("memory_budget_mb = 1024\n", ""), ["missing key 'memory_budget_mb'"]),
    ("name-uppercase", _edit('"test-board"', '"Test Board"'), ["key 'name' = 'Test Board'"]),
    ("baud-float", _edit("baud = 115200", "baud = 115200.0"),
     ["key 'serial.baud' = 115200.0", "an integer from 50"]),
    ("serial-relative-port", _edit('port = "/dev/ttyUSB0"', 'port = "ttyUSB0"'),
     ["key 'serial.port' = 'ttyUSB0'", "absolute device path"]),
    ("serial-not-a-table", _edit('[serial]\nport = "/dev/ttyUSB0"\nbaud = 115200\n', "")
     .replace('name = "test-board"', 'name = "test-board"\nserial = 5'),
     ["key 'serial' = 5", "a table [serial]"]),
    ("broker-no-port", _edit('broker = "localhost:1883"', 'broker = "localhost"'),
     ["key 'mqtt.broker' = 'localhost'", '"HOST:PORT"']),
    ("broker-port-range", _edit('broker = "localhost:1883"', 'broker = "localhost:70000"'),
     ["key 'mqtt.broker' = 'localhost:70000'", "1 to 65535"]),
    ("prefix-wildcard", _edit('prefix = "edge-runtime"', 'prefix = "edge/#"'),
     ["key 'mqtt.prefix' = 'edge/#'", "wildcards"]),
    ("keepalive-zero", _edit('prefix = "edge-runtime"', 'prefix = "e"\nkeepalive = 0'),
     ["key 'mqtt.keepalive' = 0", "from 1 to 65535"]),
    ("cpu-part-format", _edit('cpu_parts = ["0xd0b"]', 'cpu_parts = ["d0b"]'),
     ["key 'match.cpu_parts' = ['d0b']", '"0xd0b"']),
    ("arch-unknown", _edit('cpu_parts = ["0xd0b"]', 'arch = ["riscv64"]'),
     ["key 'match.arch' = ['riscv64']", "aarch64, armv7l, x86_64"]),
]


@pytest.mark.parametrize("text, fragments", [c[1:] for c in INVALID_CASES],
                         ids=[c[0] for c in INVALID_CASES])
def test_invalid_config_is_refused_with_file_key_value_and_expectation(tmp_path, text, fragments):
    path = tmp_path / "board.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        load_device_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message


def test_the_valid_base_of_the_battery_loads(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(VALID)
    config = load_device_config(path)
    assert config.cpu_affinity == (4, 5, 6, 7)
    assert config.serve == "mqtt" and config.use_mmap and not config.use_mlock
    assert config.match.cpu_parts == {"0xd0b"}


def test_unreadable_inputs(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        load_device_config(tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"name = \"\xff\xfe\"\n")
    with pytest.raises(ValueError, match=f"{binary}: not valid"):
        load_device_config(binary)


# --------------------------------------------------------------------------------- detection

def _arm_cpuinfo(parts, features, architecture="8", extra=""):
    blocks = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\n"
              f"CPU implementer\t: 0x41\nCPU architecture: {architecture}\nCPU variant\t: 0x4\n"
              f"CPU part\t: {part}\nCPU revision\t: 1\n" for i, part in enumerate(parts)]
    return "\n".join(blocks) + "\n" + extra


ARMV8_FEATURES = "fp asimd evtstrm crc32 cpuid"
ARMV82_FEATURES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                   "asimdrdm lrcpc dcpop asimddp")
ARMV7_FEATURES = ("half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae "
                  "evtstrm crc32")
X86_CPUINFO = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) "
               "i7-10510U\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca "
               "cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx lm constant_tsc pni ssse3 "
               "fma cx16 sse4_1 sse4_2 movbe popcnt avx f16c avx2 bmi1 bmi2\n")


def _fake_root(tmp_path, cpuinfo, model=None, compatible=(), files=()):
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(cpuinfo)
    if model is not None or compatible:
        (root / "proc/device-tree").mkdir()
    if model is not None:
        (root / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    if compatible:
        (root / "proc/device-tree/compatible").write_bytes(
            b"".join(c.encode() + b"\x00" for c in compatible))
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("ro.build.version.release=14\n")
    return root


BOARDS = {
    "pi5": dict(cpuinfo=_arm_cpuinfo(["0xd0b"] * 4, ARMV82_FEATURES,
                                     extra="Revision\t: d04170\nModel\t\t: Raspberry Pi 5\n"),
                model="Raspberry Pi 5 Model B Rev 1.0",
                compatible=("raspberrypi,5-model-b", "brcm,bcm2712")),
    "pi4": dict(cpuinfo=_arm_cpuinfo(["0xd08"] * 4, ARMV8_FEATURES),
                model="Raspberry Pi 4 Model B Rev 1.4",
                compatible=("raspberrypi,4-model-b", "brcm,bcm2711")),
    "zero2w": dict(cpuinfo=_arm_cpuinfo(["0xd03"] * 4, ARMV8_FEATURES),
                   model="Raspberry Pi Zero 2 W Rev 1.0",
                   compatible=("raspberrypi,model-zero-2-w", "brcm,bcm2837")),
    "orangepi5": dict(cpuinfo=_arm_cpuinfo(["0xd05"] * 4 + ["0xd0b"] * 4, ARMV82_FEATURES),
                      model="Orange Pi 5", compatible=("xunlong,orangepi-5", "rockchip,rk3588s")),
    "rock5b": dict(cpuinfo=_arm_cpuinfo(["0xd05"] * 4 + ["0xd0b"] * 4, ARMV82_FEATURES),
                   model="Radxa ROCK 5 Model B", compatible=("radxa,rock-5b", "rockchip,rk3588")),
    "jetson": dict(cpuinfo=_arm_cpuinfo(["0xd42"] * 6, ARMV82_FEATURES),
                   model="NVIDIA Jetson Orin Nano Developer Kit",
                   compatible=("nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005",
                               "nvidia,tegra234")),
    "x86": dict(cpuinfo=X86_CPUINFO),
    "phone": dict(cpuinfo=_arm_cpuinfo(["0xd46"] * 3 + ["0xd4d"] * 4 + ["0xd4e"],
                                       ARMV82_FEATURES + " i8mm"),
                  model="Qualcomm Technologies, Inc. KALAMA", files=("system/build.prop",)),
    # No device tree (ACPI or a stripped /proc): the CPU-part set decides.
    "zero2w-armv7-no-dt": dict(cpuinfo="model name\t: ARMv7 Processor rev 4 (v7l)\n"
                               + _arm_cpuinfo(["0xd03"] * 4, ARMV7_FEATURES, architecture="7")),
    "unknown-a35-board": dict(cpuinfo=_arm_cpuinfo(["0xd04"] * 4, ARMV8_FEATURES),
                              model="Some Vendor A35 Board", compatible=("vendor,a35-board",)),
}

DETECTION_CASES = [
    ("pi5", "raspberry-pi-5", "brcm,bcm2712"),
    ("pi4", "raspberry-pi-4", "brcm,bcm2711"),
    ("zero2w", "raspberry-pi-zero-2-w", "raspberrypi,model-zero-2-w"),
    ("orangepi5", "rk3588", "rockchip,rk3588"),
    ("rock5b", "rk3588", "rockchip,rk3588"),
    ("jetson", "jetson-orin-nano", "nvidia,p3767-0005"),
    ("x86", "generic-x86_64", "architecture x86_64"),
    ("phone", "android-termux", "/system/build.prop"),
    ("zero2w-armv7-no-dt", "raspberry-pi-3", "0xd03 (Cortex-A53)"),
    ("unknown-a35-board", "generic-arm", "architecture aarch64"),
]


@pytest.mark.parametrize("board, expected, reason_fragment", DETECTION_CASES,
                         ids=[c[0] for c in DETECTION_CASES])
def test_detect_board_on_fake_proc_tree(tmp_path, board, expected, reason_fragment):
    root = _fake_root(tmp_path, **BOARDS[board])
    name, reason = detect_board(root)
    assert name == expected, reason
    assert reason_fragment in reason
    assert "warning" not in reason


def test_facts_read_from_the_tree(tmp_path):
    facts = read_board_facts(_fake_root(tmp_path, **BOARDS["orangepi5"]))
    assert facts.device_tree_model == "Orange Pi 5"
    assert facts.device_tree_compatible == ("xunlong,orangepi-5", "rockchip,rk3588s")
    assert facts.cpu_parts == {"0xd05", "0xd0b"}
    assert "asimddp" in facts.features
    assert facts.arch == "aarch64"
    assert facts.android_marker is None


def test_detection_warns_when_the_cpu_lacks_the_expected_kernel(tmp_path):
    # A Pi 5 whose /proc/cpuinfo shows no dotprod (for instance an old kernel).
    root = _fake_root(tmp_path, cpuinfo=_arm_cpuinfo(["0xd0b"] * 4, ARMV8_FEATURES),
                      model="Raspberry Pi 5 Model B Rev 1.0")
    name, reason = detect_board(root)
    assert name == "raspberry-pi-5"
    assert "warning" in reason and "neon_dot" in reason and "'asimddp'" in reason


def test_no_match_is_a_clear_error(tmp_path):
    root = _fake_root(tmp_path, cpuinfo="processor\t: 0\nhart\t\t: 0\nisa\t\t: rv64imafdc\n",
                      model="StarFive VisionFive 2")
    with pytest.raises(BoardDetectionError, match="no board config matches.*VisionFive.*--config"):
        detect_board(root)


def test_empty_tree_is_a_clear_error(tmp_path):
    with pytest.raises(BoardDetectionError, match="architecture: unknown"):
        detect_board(tmp_path)


@pytest.mark.skipif(platform.machine() != "x86_64" or not os.path.exists("/proc/cpuinfo"),
                    reason="hardware: this check reads the real /proc of an x86_64 Linux machine")
def test_detect_this_machine():
    config, reason = select_config()
    assert config.name == "generic-x86_64"
    assert reason.startswith("detected: architecture x86_64")


def test_select_config_given():
    config, reason = select_config("raspberry-pi-5")
    assert config.name == "raspberry-pi-5" and reason == "given: raspberry-pi-5"


# --------------------------------------------------------------------------------- memory guard

def test_kv_cache_size_matches_the_published_arithmetic():
    # 30 layers x 2 x 640 x 2 bytes = 76.8 KB per token at f16.
    assert kv_cache_bytes(1, LAYERS_2B4T, KV_HEADS_2B4T, HEAD_DIM_2B4T) == 76_800
    assert kv_cache_bytes(4096, LAYERS_2B4T, KV_HEADS_2B4T, HEAD_DIM_2B4T) == 314_572_800


def test_memory_guard_refuses_2b4t_on_a_pi_3_with_the_numbers():
    pi3 = find_config("raspberry-pi-3")
    with pytest.raises(MemoryBudgetError) as raised:
        memory_guard(MODEL_2B4T_BYTES, 4096, LAYERS_2B4T, KV_HEADS_2B4T, HEAD_DIM_2B4T,
                     SCRATCH_BYTES, pi3.memory_budget_mb, mem_available_bytes=900 * 1024 ** 2)
    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert "model 1132.0 MiB" in message          # 1,187,000,000 bytes
    assert "KV cache 300.0 MiB" in message         # 314,572,800 bytes at n_ctx 4096
    assert "n_ctx 4096" in message
    assert "scratch 64.0 MiB" in message
    assert "= 1496.0 MiB" in message
    assert "the memory budget 800.0 MiB" in message and "MemAvailable 900.0 MiB" in message


def test_memory_guard_accepts_2b4t_on_a_pi_5_8gb():
    pi5 = find_config("raspberry-pi-5")
    estimate = memory_guard(MODEL_2B4T_BYTES, 4096, LAYERS_2B4T, KV_HEADS_2B4T, HEAD_DIM_2B4T,
                            SCRATCH_BYTES, pi5.memory_budget_mb,
                            mem_available_bytes=7 * GIB)
    assert estimate.total_bytes == MODEL_2B4T_BYTES + 314_572_800 + SCRATCH_BYTES
    assert estimate.budget_bytes == 3072 * 1024 ** 2


def test_memory_guard_refuses_when_the_budget_fits_but_the_machine_has_no_room(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        2000000 kB\nMemFree:          200000 kB\n"
                       "MemAvailable:    1000000 kB\n")
    assert read_mem_available(meminfo) == 1_024_000_000
    with pytest.raises(MemoryBudgetError) as raised:
        memory_guard(MODEL_2B4T_BYTES, 4096, LAYERS_2B4T, KV_HEADS_2B4T, HEAD_DIM_2B4T,
                     SCRATCH_BYTES, 3072, meminfo_path=meminfo)
    assert "exceeds MemAvailable 976.6 MiB" in str(raised.value)
    assert "memory budget" not in str(raised.value).split("exceeds")[1].split("(")[0]


def test_memory_guard_without_meminfo_checks_the_budget_only(tmp_path):
    estimate = memory_guard(100 * 1024 ** 2, 512, 30, 5, 128, 0, 384,
                            meminfo_path=tmp_path / "absent")
    assert estimate.mem_available_bytes is None


def test_memory_guard_rejects_nonsense_arguments():
    with pytest.raises(ValueError, match="n_ctx = -1"):
        memory_guard(1, -1, 30, 5, 128, 0, 384, mem_available_bytes=GIB)
    with pytest.raises(ValueError, match="budget_mb = '384'"):
        memory_guard(1, 16, 30, 5, 128, 0, "384", mem_available_bytes=GIB)


# --------------------------------------------------------------------------------- CPU pinning

def test_apply_affinity_pins_and_refuses_missing_cpus():
    original = os.sched_getaffinity(0)
    first = min(original)
    try:
        assert apply_affinity([]) == original
        assert apply_affinity([first]) == {first}
        assert os.sched_getaffinity(0) == {first}
        os.sched_setaffinity(0, original)
        with pytest.raises(ValueError, match=r"cpu_affinity \[.*4000.*not available"):
            apply_affinity([first, 4000])
        assert os.sched_getaffinity(0) == original
        with pytest.raises(ValueError, match="is not a CPU id"):
            apply_affinity([-1])
    finally:
        os.sched_setaffinity(0, original)


def test_effective_threads():
    configs = load_builtin_configs()
    assert effective_threads(configs["rk3588"]) == 4
    assert effective_threads(configs["generic-x86_64"]) == len(os.sched_getaffinity(0))
    pinned = DeviceConfig(name="x", threads=0, kernel="auto", n_ctx=512, memory_budget_mb=256,
                          cpu_affinity=(2, 3))
    assert effective_threads(pinned) == 2
