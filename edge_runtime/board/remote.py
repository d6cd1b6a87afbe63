"""Deploy's view of the board: the SSH transport (ssh/scp through subprocess), local input files and
their hashes, and the probe of what is installed on the board."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edge_runtime.board.device_config import (
    DeviceConfig, detect_board, load_builtin_configs,
)
from edge_runtime.board.deploy_base import (
    DeployError, REMOTE_COMMAND_TIMEOUT_S, SSH_CONNECT_TIMEOUT_S, _FILE_NAME_RE, _HOST_RE,
    _WHEEL_RE,
)

def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WheelFile:
    path: Path
    name: str
    version: str
    python_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]

    @classmethod
    def parse(cls, path: Path) -> "WheelFile":
        match = _WHEEL_RE.fullmatch(path.name)
        if not match:
            raise DeployError(f"wheel {path}: the file name is not "
                              f"NAME-VERSION-PYTHON-ABI-PLATFORM.whl")
        return cls(path, match["name"].lower().replace(".", "_"), match["version"],
                   tuple(match["python"].split(".")), tuple(match["platform"].split(".")))

    def runs_on(self, machine: str, python_version: str) -> bool:
        minor = python_version.split(".")[1] if "." in python_version else ""
        python_ok = any(tag in ("py3", f"py3{minor}", f"cp3{minor}") for tag in self.python_tags)
        platform_ok = any(tag == "any" or tag.endswith("_" + machine) for tag in self.platform_tags)
        return python_ok and platform_ok


def _check_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DeployError(f"{what} {path}: no such file")
    if not _FILE_NAME_RE.fullmatch(path.name):
        raise DeployError(f"{what} {path}: expected a file name of letters, digits and . _ + -")
    return path


# ---------------------------------------------------------------------------------------------
# SSH transport

@dataclass(frozen=True)
class Remote:
    host: str
    port: int = 22
    identity: str | None = None
    ssh_options: tuple[str, ...] = ()

    def __post_init__(self):
        if not _HOST_RE.fullmatch(self.host):
            raise DeployError(f"host {self.host!r}: expected HOST or USER@HOST")
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise DeployError(f"port {self.port!r}: expected an integer from 1 to 65535")
        if self.identity is not None and not os.path.isfile(self.identity):
            raise DeployError(f"identity file {self.identity}: no such file")

    def _common_options(self) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}"]
        if self.identity:
            options += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        return options + list(self.ssh_options)

    def ssh_command(self, remote_command: str) -> list[str]:
        return ["ssh", "-p", str(self.port), *self._common_options(), self.host, remote_command]

    def scp_command(self, files: Sequence[Path], remote_path: str) -> list[str]:
        user, at, address = self.host.rpartition("@")
        if ":" in address and not address.startswith("["):
            address = f"[{address}]"
        target = f"{user}{at}{address}:{remote_path}"
        return ["scp", "-q", "-P", str(self.port), *self._common_options(),
                *[str(f) for f in files], target]

    def _run(self, command: list[str], what: str, stdin: str | None,
             timeout: float) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(command, input=stdin, capture_output=True, text=True,
                                    timeout=timeout)
        except FileNotFoundError:
            raise DeployError(f"{command[0]}: not found; install the OpenSSH client") from None
        except subprocess.TimeoutExpired:
            raise DeployError(f"{what} on {self.host}: no answer within {timeout:.0f} s") from None
        if result.returncode == 255:
            raise DeployError(f"cannot reach {self.host} port {self.port} over ssh: "
                              f"{_last_lines(result.stderr, 1) or 'ssh exited with status 255'}")
        return result

    def run_script(self, script: str, what: str, *, sudo: bool = False,
                   timeout: float = REMOTE_COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run a POSIX sh script on the board (from stdin); DeployError names `what` on failure."""
        shell = "sudo -n sh -s" if sudo else "sh -s"
        result = self._run(self.ssh_command(shell), what, script, timeout)
        if result.returncode != 0:
            raise DeployError(f"{what} failed on {self.host} (exit {result.returncode}): "
                              f"{_last_lines(result.stderr, 6) or _last_lines(result.stdout, 6)}")
        return result

    def upload(self, files: Sequence[Path], remote_dir: str) -> None:
        result = self._run(self.scp_command(files, remote_dir + "/"), "upload", None,
                           REMOTE_COMMAND_TIMEOUT_S)
        if result.returncode != 0:
            raise DeployError(f"upload to {self.host}:{remote_dir} failed "
                              f"(exit {result.returncode}): {_last_lines(result.stderr, 3)}")


def _last_lines(text: str, count: int) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-count:] if line.strip())


# ---------------------------------------------------------------------------------------------
# What is on the board

@dataclass
class BoardState:
    uid: int
    machine: str
    python_version: str
    has_venv: bool
    user_exists: bool
    current: str | None
    previous: str | None
    releases: dict[str, dict]        # complete releases: name -> release.json
    release_dirs: set[str]           # every directory under opt/edge-runtime except models
    models: set[str]                 # "<sha256>/<file>"
    unit_sha256: str | None
    enabled: str
    active: str
    proc_files: dict[str, bytes]     # for board detection: "proc/cpuinfo" -> contents


_PROBE_SCRIPT = r"""
set -u
echo "uid	$(id -u)"
echo "machine	$(uname -m)"
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
echo "python	${version:-none}"
# Debian ships ensurepip, which venv needs, in python3-venv.
if "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then echo "venv	yes"
else echo "venv	no"; fi
if id -u "$SERVICE_USER" >/dev/null 2>&1; then echo "user	yes"; else echo "user	no"; fi
echo "current	$(readlink "$OPT/current" 2>/dev/null || true)"
echo "previous	$(readlink "$OPT/previous" 2>/dev/null || true)"
for dir in "$OPT"/*/; do
    name=$(basename "$dir")
    [ -d "$dir" ] && [ ! -L "$OPT/$name" ] && [ "$name" != models ] || continue
    echo "dir	$name"
    if [ -f "$dir/release.json" ]; then echo "release	$name	$(cat "$dir/release.json")"; fi
done
for file in "$OPT"/models/*/*; do
    [ -f "$file" ] && echo "model	$(basename "$(dirname "$file")")/$(basename "$file")"
done
if [ -f "$UNIT_DIR/$UNIT_NAME" ]; then
    echo "unit	$(sha256sum < "$UNIT_DIR/$UNIT_NAME" | cut -d' ' -f1)"
fi
echo "enabled	$($SYSTEMCTL is-enabled "$UNIT_NAME" 2>/dev/null || true)"
echo "active	$($SYSTEMCTL is-active "$UNIT_NAME" 2>/dev/null || true)"
for file in proc/device-tree/model proc/device-tree/compatible proc/cpuinfo \
            system/build.prop system/bin/linker64; do
    if [ -r "/$file" ]; then echo "file	$file	$(base64 < "/$file" | tr -d '\n')"; fi
done
"""


def _shell_assignments(values: dict[str, str]) -> str:
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def _parse_probe(output: str) -> BoardState:
    import base64
    fields: dict[str, str] = {}
    releases: dict[str, dict] = {}
    release_dirs: set[str] = set()
    models: set[str] = set()
    proc_files: dict[str, bytes] = {}
    for line in output.splitlines():
        key, _, value = line.partition("\t")
        if key == "release":
            name, _, text = value.partition("\t")
            try:
                releases[name] = json.loads(text)
            except json.JSONDecodeError:
                pass  # a damaged release is treated as incomplete and rebuilt or pruned
        elif key == "dir":
            release_dirs.add(value)
        elif key == "model":
            models.add(value)
        elif key == "file":
            name, _, encoded = value.partition("\t")
            proc_files[name] = base64.b64decode(encoded)
        else:
            fields[key] = value
    if "uid" not in fields:
        raise DeployError(f"unexpected answer from the board's shell: {output[:200]!r}")
    return BoardState(
        uid=int(fields["uid"]), machine=fields.get("machine", ""),
        python_version=fields.get("python", "none"), has_venv=fields.get("venv") == "yes",
        user_exists=fields.get("user") == "yes",
        current=fields.get("current") or None, previous=fields.get("previous") or None,
        releases=releases, release_dirs=release_dirs, models=models,
        unit_sha256=fields.get("unit"), enabled=fields.get("enabled", ""),
        active=fields.get("active", ""), proc_files=proc_files)


def _detect_remote_board(state: BoardState) -> tuple[DeviceConfig, str]:
    configs = load_builtin_configs()
    with tempfile.TemporaryDirectory(prefix="edge-runtime-board-") as root:
        for name, content in state.proc_files.items():
            path = Path(root, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        name, reason = detect_board(root, configs)
    return configs[name], reason
