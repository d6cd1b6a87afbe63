"""Board configurations: reading device_configs/*.toml, detecting the board, CPU pinning (the
memory guard is edge_runtime.board.memory).

A board file is TOML (read with the standard library's `tomllib`). Its fields; the commented
original is device_configs/raspberry-pi-5.toml:

  name              board id: lower-case letters, digits, - and _ (built-in files are <name>.toml)
  description       free text for `edge-runtime info`                           (default "")
  threads           kernel worker threads, 0 = one per CPU the process may use (0..1024)
  cpu_affinity      CPU ids to pin to, [] = no pinning; threads <= its length   (default [])
  kernel            expected kernel variant: neon, neon_dot, avx2, avx512vnni, amx, scalar, auto
  n_ctx             default context length in tokens (16..131072)
  kv_cache_type     KV-cache element type: "f16"                                 (default "f16")
  use_mmap          map the model file                                           (default true)
  use_mlock         lock the model pages in RAM                                  (default false)
  memory_budget_mb  MiB the process may use (model + KV + scratch); the unit's MemoryMax=
  thermal_limit_c   SoC temperature limit in deg C (40..120)                     (default 85)
  serve             server the deployed service runs: "mqtt", "serial" or "wyoming" (default "mqtt")
  [match]           detection rules, all optional: android (bool), device_tree_compatible,
                    device_tree_model (substrings), cpu_parts (exact set of "0x..." part ids),
                    arch (aarch64/armv7l/x86_64), hwcaps (required CPU features)
  [serial]          port ("" or an absolute device path), baud (50..4000000), text (bool)
  [mqtt]            broker ("HOST:PORT"), prefix (topic root, no wildcards), group (shared-
                    subscription group, "" = none), keepalive (seconds, 1..65535)
  [wyoming]         uri ("tcp://HOST:PORT" or "unix:///PATH"), model_role ("chat": the deployed
                    model answers what is not a home command, the embedded model interprets;
                    "intent": the deployed model interprets), broker ("" or "HOST:PORT" whose
                    Home Assistant discovery configs ground names)

Every problem in a file (TOML syntax, unknown key, wrong type, value out of range, missing
required key) raises ValueError naming the file, the key, the value and what was expected.

Detection (`detect_board`) reads files under a root directory, "/" on a real machine: Android's
system partition, /proc/device-tree/{compatible,model}, and the "CPU part" and "Features"/"flags"
lines of /proc/cpuinfo. The first rule kind that matches any board decides:
android > device tree (compatible before model; the longest matching pattern) > exact CPU-part
set > arch + hwcaps.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from edge_runtime.board.memory import MIB

KERNEL_VARIANTS = ("neon", "neon_dot", "avx2", "avx512vnni", "amx", "scalar", "auto")
KERNEL_HELP = "force a kernel variant: " + ", ".join(v for v in KERNEL_VARIANTS if v != "auto")
KV_CACHE_BYTES_PER_ELEMENT = {"f16": 2}
SERVE_MODES = ("mqtt", "serial", "wyoming")
WYOMING_MODEL_ROLES = ("chat", "intent")
ARCHITECTURES = ("aarch64", "armv7l", "x86_64")

# "CPU part" ids of Arm-designed cores (implementer 0x41), for readable detection reasons.
ARM_CPU_PART_NAMES = {
    "0xc07": "Cortex-A7", "0xc09": "Cortex-A9", "0xc0f": "Cortex-A15",
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2", "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3", "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
}

# The CPU feature each kernel variant needs, per architecture, as /proc/cpuinfo names it.
_KERNEL_REQUIRED_FEATURE = {
    ("neon_dot", "aarch64"): "asimddp",
    ("neon", "aarch64"): "asimd",
    ("neon", "armv7l"): "neon",
    ("avx2", "x86_64"): "avx2",
    ("avx512vnni", "x86_64"): "avx512_vnni",
    ("amx", "x86_64"): "amx_int8",
}

_ANDROID_MARKERS = ("system/build.prop", "system/bin/linker64", "system/bin/linker")

class BoardDetectionError(ValueError):
    """No board config matches the machine."""


@dataclass(frozen=True)
class MatchRules:
    android: bool = False
    device_tree_compatible: tuple[str, ...] = ()
    device_tree_model: tuple[str, ...] = ()
    cpu_parts: frozenset[str] = frozenset()
    arch: tuple[str, ...] = ()
    hwcaps: tuple[str, ...] = ()


@dataclass(frozen=True)
class SerialDefaults:
    port: str = ""
    baud: int = 115200
    text: bool = False


@dataclass(frozen=True)
class MqttDefaults:
    broker: str = "localhost:1883"
    prefix: str = "edge"
    group: str = ""
    keepalive: int = 60

    @property
    def host(self) -> str:
        return self.broker.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.broker.rsplit(":", 1)[1])


@dataclass(frozen=True)
class WyomingDefaults:
    uri: str = "tcp://0.0.0.0:10700"
    model_role: str = "chat"
    broker: str = ""


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    threads: int
    kernel: str
    n_ctx: int
    memory_budget_mb: int
    description: str = ""
    cpu_affinity: tuple[int, ...] = ()
    kv_cache_type: str = "f16"
    use_mmap: bool = True
    use_mlock: bool = False
    thermal_limit_c: int = 85
    serve: str = "mqtt"
    match: MatchRules = MatchRules()
    serial: SerialDefaults = SerialDefaults()
    mqtt: MqttDefaults = MqttDefaults()
    wyoming: WyomingDefaults = WyomingDefaults()
    source: Path | None = None

    @property
    def memory_budget_bytes(self) -> int:
        return self.memory_budget_mb * MIB

    @property
    def kv_bytes_per_element(self) -> int:
        return KV_CACHE_BYTES_PER_ELEMENT[self.kv_cache_type]


# ---------------------------------------------------------------------------------------------
# Validation. Each checker returns the converted value or raises _Invalid(expectation).

class _Invalid(Exception):
    pass


_REQUIRED = object()


def _check_int(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if type(value) is not int or not low <= value <= high:
            raise _Invalid(f"an integer from {low} to {high}")
        return value
    return check


def _check_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _Invalid("true or false")
    return value


def _check_choice(options: Iterable[str]) -> Callable[[Any], str]:
    options = tuple(options)

    def check(value: Any) -> str:
        if value not in options or type(value) is not str:
            raise _Invalid("one of " + ", ".join(f'"{o}"' for o in options))
        return value
    return check


def _check_pattern(pattern: str, expectation: str) -> Callable[[Any], str]:
    compiled = re.compile(pattern)

    def check(value: Any) -> str:
        if type(value) is not str or not compiled.fullmatch(value):
            raise _Invalid(expectation)
        return value
    return check


def _check_text(value: Any) -> str:
    if type(value) is not str or "\n" in value:
        raise _Invalid("a one-line string")
    return value


def _check_list(item: Callable[[Any], Any], expectation: str, unique: bool = False
                ) -> Callable[[Any], tuple]:
    def check(value: Any) -> tuple:
        if type(value) is not list:
            raise _Invalid(f"a list of {expectation}")
        try:
            items = tuple(item(v) for v in value)
        except _Invalid:
            raise _Invalid(f"a list of {expectation}") from None
        if unique and len(set(items)) != len(items):
            raise _Invalid(f"a list of {expectation} without repeats")
        return items
    return check


def _check_cpu_parts(value: Any) -> frozenset[str]:
    part = _check_pattern(r"0[xX][0-9a-fA-F]{3}", "")
    parts = _check_list(part, 'CPU part ids like "0xd0b"', unique=True)(value)
    return frozenset(p.lower() for p in parts)


_check_broker = _check_pattern(
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}"
    r"|[1-9]\d{0,3})",
    '"HOST:PORT" with a port from 1 to 65535')

_MATCH_FIELDS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "android": (False, _check_bool),
    "device_tree_compatible": ((), _check_list(
        _check_pattern(r"[^\x00\n]+", ""), "non-empty strings")),
    "device_tree_model": ((), _check_list(_check_pattern(r"[^\x00\n]+", ""), "non-empty strings")),
    "cpu_parts": (frozenset(), _check_cpu_parts),
    "arch": ((), _check_list(_check_choice(ARCHITECTURES), "one of " + ", ".join(ARCHITECTURES),
                             unique=True)),
    "hwcaps": ((), _check_list(_check_pattern(r"[a-z0-9_]+", ""),
                               "CPU feature names like \"asimddp\"", unique=True)),
}

_SERIAL_FIELDS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "port": ("", _check_pattern(r"|/\S+", '"" or an absolute device path like "/dev/ttyUSB0"')),
    "baud": (115200, _check_int(50, 4_000_000)),
    "text": (False, _check_bool),
}

_MQTT_FIELDS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "broker": ("localhost:1883", _check_broker),
    "prefix": ("edge", _check_pattern(
        r"[^/+#\s\x00](?:[^+#\s\x00]*[^/+#\s\x00])?",
        "a topic prefix without spaces or wildcards (+, #), not starting or ending with /")),
    "group": ("", _check_pattern(r"[A-Za-z0-9_.-]*", "\"\" or letters, digits, '_', '.', '-'")),
    "keepalive": (60, _check_int(1, 65535)),
}

_TOP_FIELDS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "name": (_REQUIRED, _check_pattern(r"[a-z0-9][a-z0-9_-]{0,63}",
                                       "lower-case letters, digits, '-' and '_' (at most 64)")),
    "description": ("", _check_text),
    "threads": (_REQUIRED, _check_int(0, 1024)),
    "cpu_affinity": ((), _check_list(_check_int(0, 4095), "CPU ids from 0 to 4095", unique=True)),
    "kernel": (_REQUIRED, _check_choice(KERNEL_VARIANTS)),
    "n_ctx": (_REQUIRED, _check_int(16, 131072)),
    "kv_cache_type": ("f16", _check_choice(KV_CACHE_BYTES_PER_ELEMENT)),
    "use_mmap": (True, _check_bool),
    "use_mlock": (False, _check_bool),
    "memory_budget_mb": (_REQUIRED, _check_int(64, 1024 * 1024)),
    "thermal_limit_c": (85, _check_int(40, 120)),
    "serve": ("mqtt", _check_choice(SERVE_MODES)),
}

def _check_optional_broker(value: Any) -> str:
    if value == "":
        return value
    try:
        return _check_broker(value)
    except _Invalid:
        raise _Invalid('"" or "HOST:PORT" with a port from 1 to 65535') from None


_WYOMING_FIELDS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "uri": ("tcp://0.0.0.0:10700", _check_pattern(
        r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}"
        r"|[1-9]\d{0,3})|unix:///\S+",
        '"tcp://HOST:PORT" with a port from 1 to 65535, or "unix:///PATH"')),
    "model_role": ("chat", _check_choice(WYOMING_MODEL_ROLES)),
    "broker": ("", _check_optional_broker),
}

_SECTIONS = {"match": _MATCH_FIELDS, "serial": _SERIAL_FIELDS, "mqtt": _MQTT_FIELDS, "wyoming": _WYOMING_FIELDS}


def _read_table(path: Path, table: Mapping[str, Any], fields: Mapping[str, tuple[Any, Callable]],
                prefix: str) -> dict[str, Any]:
    """Validate one TOML table against its field specs; missing optional keys get defaults."""
    sections = () if prefix else tuple(_SECTIONS)
    for key in table:
        if key not in fields and key not in sections:
            known = ", ".join(list(fields) + [f"[{s}]" for s in sections])
            raise ValueError(f"{path}: unknown key '{prefix}{key}' (known keys: {known})")
    values: dict[str, Any] = {}
    for key, (default, check) in fields.items():
        if key not in table:
            if default is _REQUIRED:
                try:
                    check(None)
                except _Invalid as invalid:
                    raise ValueError(f"{path}: missing key '{prefix}{key}': expected {invalid}"
                                     ) from None
            values[key] = default
            continue
        try:
            values[key] = check(table[key])
        except _Invalid as invalid:
            raise ValueError(f"{path}: key '{prefix}{key}' = {table[key]!r}: expected {invalid}"
                             ) from None
    return values


def parse_device_config(document: Mapping[str, Any], path: Path | str) -> DeviceConfig:
    """Validate an already-parsed TOML document; `path` is only used in error messages."""
    path = Path(path)
    values = _read_table(path, document, _TOP_FIELDS, "")
    sections = {}
    for section, fields in _SECTIONS.items():
        table = document.get(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"{path}: key '{section}' = {table!r}: expected a table [{section}]")
        sections[section] = _read_table(path, table, fields, f"{section}.")
    if values["cpu_affinity"] and values["threads"] > len(values["cpu_affinity"]):
        raise ValueError(
            f"{path}: key 'threads' = {values['threads']}: expected at most "
            f"{len(values['cpu_affinity'])}, the number of CPUs in cpu_affinity "
            f"{list(values['cpu_affinity'])} (more threads than pinned cores only adds contention)")
    return DeviceConfig(
        **values,
        match=MatchRules(**sections["match"]),
        serial=SerialDefaults(**sections["serial"]),
        mqtt=MqttDefaults(**sections["mqtt"]),
        wyoming=WyomingDefaults(**sections["wyoming"]),
        source=path,
    )


def load_device_config(path: str | os.PathLike) -> DeviceConfig:
    """Read and validate one board file; any problem is a ValueError naming file, key and value."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            document = tomllib.load(stream)
    except FileNotFoundError:
        raise ValueError(f"{path}: board config file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, expected a board config .toml file") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not valid UTF-8 TOML: {error}") from None
    return parse_device_config(document, path)


# ---------------------------------------------------------------------------------------------
# Built-in configs. An installed wheel carries them as edge_runtime/device_configs/*.toml; a
# source checkout has them in the top-level device_configs/.

def builtin_config_dir() -> Path:
    package_dir = Path(__file__).resolve().parents[1]
    candidates = (package_dir / "device_configs", package_dir.parent / "device_configs")
    for candidate in candidates:
        if any(candidate.glob("*.toml")):
            return candidate
    raise FileNotFoundError(
        "no built-in board configs found (looked in "
        + ", ".join(str(c) for c in candidates) + "): edge-runtime was installed without them")


def builtin_configs() -> dict[str, Path]:
    """Board name -> path of its shipped TOML file."""
    return {p.stem: p for p in sorted(builtin_config_dir().glob("*.toml"))}


def load_builtin_configs() -> dict[str, DeviceConfig]:
    return {name: load_device_config(path) for name, path in builtin_configs().items()}


def find_config(spec: str | os.PathLike) -> DeviceConfig:
    """A board name of a built-in config ("raspberry-pi-5") or a path to a TOML file."""
    text = os.fspath(spec)
    builtins = builtin_configs()
    if text in builtins:
        return load_device_config(builtins[text])
    if text.endswith(".toml") or os.sep in text or os.path.exists(text):
        return load_device_config(text)
    raise ValueError(f"board config '{text}': not a file and not a built-in board "
                     f"(built-in: {', '.join(builtins)})")


# ---------------------------------------------------------------------------------------------
# Board detection

@dataclass(frozen=True)
class BoardFacts:
    """What detection reads from a machine (or from a fake tree under `root`)."""
    device_tree_model: str | None
    device_tree_compatible: tuple[str, ...]
    cpu_parts: frozenset[str]
    features: frozenset[str]
    arch: str | None
    android_marker: str | None


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _arch_from_cpuinfo(fields: Mapping[str, set[str]], features: frozenset[str]) -> str | None:
    if "flags" in fields:
        return "x86_64" if "lm" in features else None
    if "asimd" in features or "8" in fields.get("CPU architecture", set()) and "fp" in features:
        return "aarch64"
    if "neon" in features or "vfp" in features or "7" in fields.get("CPU architecture", set()):
        return "armv7l"
    return None


def read_board_facts(root: str | os.PathLike = "/") -> BoardFacts:
    root = Path(root)
    model_bytes = _read_bytes(root / "proc/device-tree/model")
    model = model_bytes.rstrip(b"\x00\n").decode("utf-8", "replace") if model_bytes else None
    compatible_bytes = _read_bytes(root / "proc/device-tree/compatible") or b""
    compatible = tuple(e.decode("utf-8", "replace") for e in compatible_bytes.split(b"\x00") if e)

    cpuinfo = (_read_bytes(root / "proc/cpuinfo") or b"").decode("utf-8", "replace")
    fields: dict[str, set[str]] = {}
    features: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        fields.setdefault(key, set()).add(value)
        if key in ("Features", "flags"):
            features.update(value.split())
    parts = frozenset(p.lower() for p in fields.get("CPU part", set())
                      if re.fullmatch(r"0[xX][0-9a-fA-F]+", p))
    frozen_features = frozenset(features)

    android_marker = next((m for m in _ANDROID_MARKERS if os.path.exists(root / m)), None)
    return BoardFacts(model, compatible, parts, frozen_features,
                      _arch_from_cpuinfo(fields, frozen_features), android_marker)


def describe_cpu_parts(parts: Iterable[str]) -> str:
    named = [f"{p} ({ARM_CPU_PART_NAMES[p]})" if p in ARM_CPU_PART_NAMES else p
             for p in sorted(parts)]
    return "{" + ", ".join(named) + "}"


def _kernel_note(config: DeviceConfig, facts: BoardFacts) -> str:
    feature = _KERNEL_REQUIRED_FEATURE.get((config.kernel, facts.arch or ""))
    if feature and facts.features and feature not in facts.features:
        return (f"; warning: the config expects kernel {config.kernel} but the CPU features in "
                f"/proc/cpuinfo lack '{feature}'")
    return ""


def match_board(facts: BoardFacts, configs: Mapping[str, DeviceConfig]) -> tuple[str, str] | None:
    """The best matching config name and why, or None."""
    if facts.android_marker:
        for name, config in configs.items():
            if config.match.android:
                return name, f"Android system partition found (/{facts.android_marker})"

    best: tuple[int, int, str, str] | None = None
    for name, config in configs.items():
        candidates = [(pattern, 1, "compatible", entry)
                      for pattern in config.match.device_tree_compatible
                      for entry in facts.device_tree_compatible if pattern in entry]
        if facts.device_tree_model:
            candidates += [(pattern, 0, "model", facts.device_tree_model)
                           for pattern in config.match.device_tree_model
                           if pattern.lower() in facts.device_tree_model.lower()]
        for pattern, preference, source, value in candidates:
            rank = (preference, len(pattern))
            if best is None or rank > best[:2]:
                best = (*rank, name, f"device-tree {source} '{value}' contains '{pattern}'")
    if best is not None:
        return best[2], best[3]

    if facts.cpu_parts:
        for name, config in configs.items():
            if config.match.cpu_parts and config.match.cpu_parts == facts.cpu_parts:
                return name, (f"CPU parts {describe_cpu_parts(facts.cpu_parts)} in /proc/cpuinfo "
                              f"(no device-tree match)")

    if facts.arch:
        for name, config in configs.items():
            if facts.arch in config.match.arch and set(config.match.hwcaps) <= facts.features:
                return name, (f"architecture {facts.arch} from /proc/cpuinfo, no more specific "
                              f"board matched")
    return None


def detect_board(root: str | os.PathLike = "/",
                 configs: Mapping[str, DeviceConfig] | None = None) -> tuple[str, str]:
    """(config name, reason) for the machine whose files are under `root`.

    `configs` defaults to the built-in ones. Raises BoardDetectionError when nothing matches.
    """
    configs = load_builtin_configs() if configs is None else configs
    facts = read_board_facts(root)
    found = match_board(facts, configs)
    if found is None:
        raise BoardDetectionError(
            f"no board config matches this machine (device-tree model: "
            f"{facts.device_tree_model or 'none'}; CPU parts: "
            f"{describe_cpu_parts(facts.cpu_parts) if facts.cpu_parts else 'none'}; architecture: "
            f"{facts.arch or 'unknown'}; read under {root}): pass a config file with --config")
    name, reason = found
    return name, reason + _kernel_note(configs[name], facts)


def select_config(spec: str | os.PathLike | None = None, root: str | os.PathLike = "/"
                  ) -> tuple[DeviceConfig, str]:
    """The config to use and why: `spec` (name or path) when given, else the detected board."""
    if spec is not None:
        config = find_config(spec)
        return config, f"given: {spec}"
    configs = load_builtin_configs()
    name, reason = detect_board(root, configs)
    return configs[name], f"detected: {reason}"


# ---------------------------------------------------------------------------------------------
# CPU pinning

def apply_affinity(cpus: Iterable[int]) -> frozenset[int]:
    """Pin this process to `cpus` (no-op when empty); returns the affinity now in force."""
    wanted = tuple(cpus)
    if not wanted:
        return frozenset(os.sched_getaffinity(0))
    bad = [c for c in wanted if type(c) is not int or c < 0]
    if bad:
        raise ValueError(f"cpu_affinity {list(wanted)}: {bad[0]!r} is not a CPU id (expected "
                         f"integers >= 0)")
    previous = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, wanted)
        pinned = os.sched_getaffinity(0)
    except OSError as error:
        raise ValueError(f"cpu_affinity {list(wanted)}: cannot pin to these CPUs on this machine "
                         f"({error.strerror}); CPUs available to this process: {sorted(previous)}"
                         ) from None
    if pinned != set(wanted):
        # The kernel silently drops CPUs that are offline or outside the cgroup's cpuset.
        os.sched_setaffinity(0, previous)
        missing = sorted(set(wanted) - pinned)
        raise ValueError(f"cpu_affinity {list(wanted)}: CPUs {missing} are not available on this "
                         f"machine; CPUs available to this process: {sorted(previous)}")
    return frozenset(pinned)


def effective_threads(config: DeviceConfig) -> int:
    """threads, with 0 resolved to the number of CPUs the process may run on (or is pinned to)."""
    if config.threads:
        return config.threads
    if config.cpu_affinity:
        return len(config.cpu_affinity)
    return len(os.sched_getaffinity(0))
