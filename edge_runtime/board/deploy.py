"""Deploy edge-runtime to a board over SSH and run it as a hardened systemd service.

Only the `ssh` and `scp` client binaries are used (OpenSSH), through subprocess. The board needs
python3 with venv (Debian: python3-venv), sha256sum, flock, useradd and systemd; no compiler and
no internet: the wheel and its dependency wheels are copied over and installed with
`pip install --no-index --find-links`.

Layout on the board (ROOT is "/" on a real board; `install_root` relocates it, for tests):

  ROOT/opt/edge-runtime/<release>/           venv/, board.toml, edge-runtime.service, model.path,
                                             release.json (written last: its presence = complete)
  ROOT/opt/edge-runtime/current  -> <release>   the release the service runs (switched atomically)
  ROOT/opt/edge-runtime/previous -> <release>   the release before it, for rollback
  ROOT/opt/edge-runtime/models/<sha256>/<file>  model files by content, shared between releases
  ROOT/etc/systemd/system/edge-runtime.service  the installed unit (a copy of current's)

A release is named <version>-<12 hex digits> where the digits hash everything that went into it
(wheel, dependency wheels, board config, model, unit), so deploying the same inputs twice finds
the release already there and changes nothing; any other input makes a new release and keeps
the running one as `previous`. Older releases and models no release refers to are removed.

Every systemctl call on the board goes through the SYSTEMCTL shell variable (`systemctl=`
argument, default "systemctl"): tests point it at a recording script because the test
machine has no systemd.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from edge_runtime.board.device_config import (
    DeviceConfig, find_config,
)
from edge_runtime.board.deploy_base import (
    DEFAULT_SERVICE_USER, DeployError, DeployResult, UNIT_NAME, _EXIT_NOT_ACTIVE, _ROOT_RE, _USER_RE,
)
from edge_runtime.board.remote import (
    BoardState, Remote, WheelFile, _PROBE_SCRIPT, _check_file, _detect_remote_board, _parse_probe,
    _sha256_file, _shell_assignments,
)
from edge_runtime.board.systemd_unit import (
    render_unit,
)


@dataclass
class _Step:
    title: str
    script: str
    restarts: bool = True  # whether this change needs the service restarted


@dataclass
class _Paths:
    root: str

    def _join(self, *parts: str) -> str:
        return "/" + "/".join(p.strip("/") for p in (self.root, *parts) if p.strip("/"))

    @property
    def opt(self) -> str:
        return self._join("opt/edge-runtime")

    @property
    def unit_dir(self) -> str:
        return self._join("etc/systemd/system")


@dataclass
class _Settings:
    remote: Remote
    paths: _Paths
    service_user: str
    systemctl: str
    python: str
    settle_seconds: float
    log: Callable[[str], None]

    def variables(self, **extra: str) -> str:
        return _shell_assignments({
            "OPT": self.paths.opt, "UNIT_DIR": self.paths.unit_dir, "UNIT_NAME": UNIT_NAME,
            "SYSTEMCTL": self.systemctl, "PYTHON": self.python,
            "SERVICE_USER": self.service_user, "SETTLE": f"{self.settle_seconds:g}", **extra})

    def probe(self) -> BoardState:
        script = self.variables() + _PROBE_SCRIPT
        return _parse_probe(self.remote.run_script(script, "inspecting the board").stdout)


_APPLY_HEADER = r"""
set -eu
fail() { echo "$*" >&2; exit 1; }
mkdir -p "$OPT"
exec 9>"$OPT/.lock"
flock -n 9 || fail "another deploy is running on this board ($OPT/.lock is held)"
if [ -n "${STAGE:-}" ]; then
    trap 'rm -rf "$STAGE"' EXIT
    (cd "$STAGE" && sha256sum -c --quiet SHA256SUMS) || fail "uploaded files are damaged"
fi
"""

_STEP_CREATE_USER = r"""
id -u "$SERVICE_USER" >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin "$SERVICE_USER"
"""

_STEP_MODEL = r"""
mkdir -p "$OPT/models/$MODEL_SHA"
mv "$STAGE/model/$MODEL_NAME" "$OPT/models/$MODEL_SHA/.$MODEL_NAME.tmp"
chmod 0644 "$OPT/models/$MODEL_SHA/.$MODEL_NAME.tmp"
mv "$OPT/models/$MODEL_SHA/.$MODEL_NAME.tmp" "$OPT/models/$MODEL_SHA/$MODEL_NAME"
chmod 0755 "$OPT/models" "$OPT/models/$MODEL_SHA"
"""

# The venv is built in place (its scripts carry absolute paths); release.json goes in last, so a
# release interrupted half-way has none and is rebuilt from scratch next time.
_STEP_RELEASE = r"""
rm -rf "$OPT/$RELEASE"
mkdir -p "$OPT/$RELEASE"
"$PYTHON" -m venv $VENV_FLAGS "$OPT/$RELEASE/venv"
PIP_NO_INPUT=1 "$OPT/$RELEASE/venv/bin/python" -m pip install --quiet --no-index --no-cache-dir \
    --disable-pip-version-check --find-links "$STAGE/wheels" "$STAGE/wheels/$WHEEL" >&2 \
    || fail "pip install of $WHEEL failed (missing dependency wheels? pass --wheelhouse DIR)"
cp "$STAGE/board.toml" "$STAGE/$UNIT_NAME" "$STAGE/model.path" "$OPT/$RELEASE/"
chmod -R u+rwX,go+rX,go-w "$OPT/$RELEASE"
mv "$STAGE/release.json" "$OPT/$RELEASE/release.json"
"""

_STEP_SWITCH = r"""
old=$(readlink "$OPT/current" 2>/dev/null || true)
if [ -n "$old" ] && [ "$old" != "$RELEASE" ]; then
    ln -sfn "$old" "$OPT/.previous.new" && mv -T "$OPT/.previous.new" "$OPT/previous"
fi
ln -sfn "$RELEASE" "$OPT/.current.new" && mv -T "$OPT/.current.new" "$OPT/current"
"""

_STEP_ROLLBACK_SWITCH = r"""
old=$(readlink "$OPT/current")
ln -sfn "$RELEASE" "$OPT/.current.new" && mv -T "$OPT/.current.new" "$OPT/current"
ln -sfn "$old" "$OPT/.previous.new" && mv -T "$OPT/.previous.new" "$OPT/previous"
"""

_STEP_UNIT = r"""
mkdir -p "$UNIT_DIR"
cp "$OPT/current/$UNIT_NAME" "$UNIT_DIR/.$UNIT_NAME.tmp"
chmod 0644 "$UNIT_DIR/.$UNIT_NAME.tmp"
mv "$UNIT_DIR/.$UNIT_NAME.tmp" "$UNIT_DIR/$UNIT_NAME"
$SYSTEMCTL daemon-reload
"""

_STEP_ENABLE = r"""
$SYSTEMCTL enable "$UNIT_NAME" >&2
"""

_STEP_RESTART = r"""
$SYSTEMCTL restart "$UNIT_NAME"
"""

_STEP_PRUNE = r"""
keep_current=$(readlink "$OPT/current" 2>/dev/null || true)
keep_previous=$(readlink "$OPT/previous" 2>/dev/null || true)
for dir in "$OPT"/*/; do
    name=$(basename "$dir")
    [ -d "$dir" ] && [ ! -L "$OPT/$name" ] || continue
    case "$name" in models|"$keep_current"|"$keep_previous") continue ;; esac
    rm -rf "$OPT/$name"
done
keep_models=$(cat "$OPT/current/model.path" "$OPT/previous/model.path" 2>/dev/null || true)
for dir in "$OPT"/models/*/; do
    [ -d "$dir" ] || continue
    sha=$(basename "$dir")
    case "$keep_models" in *"models/$sha/"*) ;; *) rm -rf "$OPT/models/$sha" ;; esac
done
find "$OPT" -maxdepth 1 -name '.upload.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
"""

_CHECK_ACTIVE = r"""
sleep "$SETTLE"
waited=0
state=$($SYSTEMCTL is-active "$UNIT_NAME" 2>/dev/null || true)
while [ "$state" = activating ] || [ "$state" = reloading ]; do
    [ "$waited" -ge 60 ] && break
    sleep 1; waited=$((waited + 1))
    state=$($SYSTEMCTL is-active "$UNIT_NAME" 2>/dev/null || true)
done
if [ "$state" != active ]; then
    echo "$UNIT_NAME is '${state:-unknown}' after the restart" >&2
    exit 42
fi
"""


def _run_plan(settings: _Settings, state: BoardState, steps: list[_Step], variables: dict,
              check_active: bool) -> None:
    script = settings.variables(**variables) + _APPLY_HEADER
    for step in steps:
        script += f"echo {shlex.quote('==> ' + step.title)}\n" + step.script
    if check_active:
        script += _CHECK_ACTIVE
    try:
        settings.remote.run_script(script, "deploy", sudo=state.uid != 0)
    except DeployError as error:
        if f"(exit {_EXIT_NOT_ACTIVE})" in str(error):
            raise DeployError(
                f"{UNIT_NAME} did not come up on {settings.remote.host}: "
                f"{str(error).split(': ', 1)[-1]}; see `journalctl -u {UNIT_NAME}` on the board, "
                f"and `edge-runtime deploy --rollback` returns to the previous release") from None
        raise


def _print_plan(settings: _Settings, steps: list[_Step], header: str) -> None:
    settings.log(header)
    for step in steps:
        settings.log(f"  - {step.title}")


def _settings(host, port, identity, ssh_options, install_root, service_user, systemctl, python,
              settle_seconds, log) -> _Settings:
    if not _ROOT_RE.fullmatch(str(install_root)):
        raise DeployError(f"install root {install_root!r}: expected an absolute path of letters, "
                          f"digits and . _ + - /")
    if not _USER_RE.fullmatch(service_user):
        raise DeployError(f"service user {service_user!r}: expected a system user name "
                          f"(lower-case letters, digits, '_', '-'; at most 32)")
    return _Settings(Remote(host, port, identity, tuple(ssh_options)), _Paths(str(install_root)),
                     service_user, systemctl, python, settle_seconds, log or print)


def _choose_wheel(wheel: str | os.PathLike | None, state: BoardState) -> WheelFile:
    if wheel is not None:
        chosen = WheelFile.parse(_check_file(Path(wheel), "wheel"))
        if chosen.name != "edge_runtime":
            raise DeployError(f"wheel {chosen.path}: this is {chosen.name}, not edge_runtime")
    else:
        candidates = [WheelFile.parse(p) for p in Path("dist").glob("edge_runtime-*.whl")]
        candidates = [c for c in candidates if c.runs_on(state.machine, state.python_version)]
        if not candidates:
            raise DeployError(f"no wheel given and none in {Path('dist').resolve()} for "
                              f"{state.machine} / Python {state.python_version}: pass --wheel FILE")
        chosen = max(candidates, key=lambda c: c.path.stat().st_mtime)
    if not chosen.runs_on(state.machine, state.python_version):
        raise DeployError(
            f"wheel {chosen.path.name} does not run on the board ({state.machine}, Python "
            f"{state.python_version}): build one for that machine (deploy/build_wheel.sh)")
    return chosen


def _resolve_board(config: str | os.PathLike | DeviceConfig | None, state: BoardState,
                   host: str) -> tuple[DeviceConfig, str, bytes]:
    """The board config to ship, why it was chosen, and its file's bytes."""
    try:
        if isinstance(config, DeviceConfig):
            board, reason = config, "given"
        elif config is not None:
            board, reason = find_config(config), f"given: {config}"
        else:
            board, reason = _detect_remote_board(state)
    except ValueError as error:
        raise DeployError(f"{host}: {error}" if config is None else str(error)) from None
    if board.source is None or not Path(board.source).is_file():
        raise DeployError(f"board config {board.name}: has no file to copy to the board")
    return board, reason, Path(board.source).read_bytes()


def _resolve_model(model: str | os.PathLike | None, state: BoardState, host: str
                   ) -> tuple[Path | None, str, str]:
    """(local file or None when the board's current model stays, sha256, file name)."""
    if model is not None:
        model_path = _check_file(Path(model), "model")
        return model_path, _sha256_file(model_path), model_path.name
    manifest = state.releases.get(state.current or "")
    if manifest is None:
        raise DeployError(f"{host} has no model yet: pass --model FILE")
    sha, name = manifest["model_sha256"], manifest["model_name"]
    if f"{sha}/{name}" not in state.models:
        raise DeployError(f"the current release's model models/{sha}/{name} is missing on "
                          f"{host}: pass --model FILE")
    return None, sha, name


def _deploy_steps(state: BoardState, release: str, service_user: str, paths: _Paths,
                  unit_sha: str, model_step: str | None, release_step: str | None
                  ) -> list[_Step]:
    """Only what differs from the board's state: an up-to-date board gets an empty plan."""
    steps: list[_Step] = []
    if not state.user_exists:
        steps.append(_Step(f"create service user {service_user}", _STEP_CREATE_USER))
    if model_step:
        steps.append(_Step(model_step, _STEP_MODEL))
    if release_step:
        steps.append(_Step(release_step, _STEP_RELEASE))
    if state.current != release:
        steps.append(_Step(f"switch current: {state.current or '(none)'} -> {release}"
                           + (f", keeping {state.current} for rollback" if state.current else ""),
                           _STEP_SWITCH))
    if state.unit_sha256 != unit_sha:
        steps.append(_Step(f"install {paths.unit_dir}/{UNIT_NAME} and daemon-reload", _STEP_UNIT))
    if state.enabled != "enabled":
        steps.append(_Step(f"enable {UNIT_NAME}", _STEP_ENABLE))
    if steps or state.active != "active":
        steps.append(_Step(f"restart {UNIT_NAME} and check that it is active", _STEP_RESTART))
    # After the switch `previous` is the release running now, unless that one is redeployed.
    keep = {release, state.current if state.current != release else state.previous}
    stale = sorted(state.release_dirs - keep)
    if stale:
        steps.append(_Step(f"remove old releases: {', '.join(stale)}", _STEP_PRUNE,
                           restarts=False))
    return steps


def deploy(host: str, *, wheel: str | os.PathLike | None = None,
           model: str | os.PathLike | None = None,
           config: str | os.PathLike | DeviceConfig | None = None, port: int = 22,
           identity: str | None = None, dry_run: bool = False,
           service_user: str = DEFAULT_SERVICE_USER,
           wheelhouse: str | os.PathLike | None = None, system_site_packages: bool = False,
           install_root: str = "/", systemctl: str = "systemctl", python: str = "python3",
           ssh_options: Sequence[str] = (), settle_seconds: float = 3.0,
           log: Callable[[str], None] | None = None) -> DeployResult:
    """Install `wheel` (+ `model`, board `config`) on `host` as a systemd service and start it.

    `config` is a board name, a TOML path or a DeviceConfig; None detects the board remotely.
    `model` None keeps the model of the running release. `wheel` None takes the newest
    dist/edge_runtime-*.whl that runs on the board. `wheelhouse` is a directory of dependency
    wheels (numpy, paho-mqtt, pyserial for the board); `system_site_packages` lets the venv use
    the board's Debian packages instead. Raises DeployError with the failing step.
    """
    settings = _settings(host, port, identity, ssh_options, install_root, service_user,
                         systemctl, python, settle_seconds, log)
    state = settings.probe()
    if state.python_version == "none":
        raise DeployError(f"{python} not found on {host}: install Python 3 on the board")
    if not state.has_venv:
        raise DeployError(f"{python} on {host} cannot create venvs: install python3-venv")

    chosen_wheel = _choose_wheel(wheel, state)
    extra_wheels = []
    if wheelhouse is not None:
        if not Path(wheelhouse).is_dir():
            raise DeployError(f"wheelhouse {wheelhouse}: not a directory")
        extra_wheels = sorted(p for p in Path(wheelhouse).glob("*.whl")
                              if p.name != chosen_wheel.path.name)

    board, board_reason, config_bytes = _resolve_board(config, state, host)
    paths = settings.paths
    model_path, model_sha, model_name = _resolve_model(model, state, host)
    model_rel = f"models/{model_sha}/{model_name}"
    unit_text = render_unit(
        board, executable=f"{paths.opt}/current/venv/bin/edge-runtime",
        model_path=f"{paths.opt}/{model_rel}", config_path=f"{paths.opt}/current/board.toml",
        service_user=service_user)
    unit_sha = hashlib.sha256(unit_text.encode()).hexdigest()
    wheel_shas = {p.name: _sha256_file(p) for p in [chosen_wheel.path, *extra_wheels]}
    identity_text = json.dumps([wheel_shas, hashlib.sha256(config_bytes).hexdigest(), model_sha,
                                unit_sha, system_site_packages], sort_keys=True)
    release = f"{chosen_wheel.version}-{hashlib.sha256(identity_text.encode()).hexdigest()[:12]}"
    manifest = {
        "release": release, "version": chosen_wheel.version, "wheel": chosen_wheel.path.name,
        "wheels": wheel_shas, "board": board.name, "model_name": model_name,
        "model_sha256": model_sha, "unit_sha256": unit_sha,
        "system_site_packages": system_site_packages,
    }

    uploads_model = model_path is not None and f"{model_sha}/{model_name}" not in state.models
    builds_release = release not in state.releases
    steps = _deploy_steps(state, release, service_user, paths, unit_sha,
                          model_step=f"install model {model_name} as {model_rel}"
                          if uploads_model else None,
                          release_step=f"install release {release} (venv with "
                          f"{chosen_wheel.path.name} + {len(extra_wheels)} dependency wheels, "
                          f"offline)" if builds_release else None)

    result = DeployResult(host, release, board.name, [s.title for s in steps], dry_run, None)
    settings.log(f"board {host}: {state.machine}, Python {state.python_version}, config "
                 f"{board.name} ({board_reason})")
    if not steps:
        settings.log(f"no changes: release {release} is current and {UNIT_NAME} is active")
        result.active = True
        return result
    if dry_run:
        _print_plan(settings, steps, f"plan (dry run, nothing changed) for release {release}:")
        return result
    _print_plan(settings, steps, f"deploying release {release}:")

    variables = {"RELEASE": release, "WHEEL": chosen_wheel.path.name, "MODEL_SHA": model_sha,
                 "MODEL_NAME": model_name,
                 "VENV_FLAGS": "--system-site-packages" if system_site_packages else ""}
    with tempfile.TemporaryDirectory(prefix="edge-runtime-deploy-") as scratch:
        if builds_release or uploads_model:
            stage = _upload(settings, state, scratch, builds_release, uploads_model,
                            [chosen_wheel.path, *extra_wheels], wheel_shas, config_bytes,
                            unit_text, manifest, model_rel, model_path, model_sha)
            variables["STAGE"] = stage
        _run_plan(settings, state, steps, variables,
                  check_active=any(s.restarts for s in steps))
    result.active = True
    settings.log(f"deployed release {release}: {UNIT_NAME} is active on {host}")
    return result


# Runs as root (through sudo for a non-root login); the login user then owns the directory so
# that scp, which runs as that user, can fill it.
_MAKE_STAGE = r"""
set -eu
mkdir -p "$OPT"
stage=$(mktemp -d "$OPT/.upload.XXXXXX")
mkdir "$stage/wheels" "$stage/model"
chown -R "${SUDO_UID:-$(id -u)}:${SUDO_GID:-$(id -g)}" "$stage"
echo "$stage"
"""


def _upload(settings: _Settings, state: BoardState, scratch: str, builds_release: bool,
            uploads_model: bool, wheels: list[Path], wheel_shas: dict[str, str],
            config_bytes: bytes, unit_text: str, manifest: dict, model_rel: str,
            model_path: Path | None, model_sha: str) -> str:
    """Copy what the plan needs into a fresh staging directory on the board; returns its path.
    SHA256SUMS goes along and the apply script checks it before using anything."""
    made = settings.remote.run_script(settings.variables() + _MAKE_STAGE, "preparing the upload",
                                      sudo=state.uid != 0)
    stage = made.stdout.strip().splitlines()[-1]
    local = Path(scratch)
    small_files, sums = [], []
    if builds_release:
        (local / "board.toml").write_bytes(config_bytes)
        (local / UNIT_NAME).write_text(unit_text)
        (local / "model.path").write_text(model_rel + "\n")
        (local / "release.json").write_text(json.dumps(manifest, sort_keys=True) + "\n")
        small_files = [local / "board.toml", local / UNIT_NAME, local / "model.path",
                       local / "release.json"]
        sums += [f"{_sha256_file(p)}  {p.name}" for p in small_files]
        sums += [f"{sha}  wheels/{name}" for name, sha in wheel_shas.items()]
    if uploads_model:
        sums.append(f"{model_sha}  model/{model_path.name}")
    (local / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    settings.remote.upload([*small_files, local / "SHA256SUMS"], stage)
    if builds_release:
        settings.remote.upload(wheels, stage + "/wheels")
    if uploads_model:
        settings.log(f"uploading {model_path.name} ({model_path.stat().st_size / 2**20:.1f} MiB)")
        settings.remote.upload([model_path], stage + "/model")
    return stage


def rollback(host: str, *, port: int = 22, identity: str | None = None, dry_run: bool = False,
             service_user: str = DEFAULT_SERVICE_USER, install_root: str = "/",
             systemctl: str = "systemctl", python: str = "python3",
             ssh_options: Sequence[str] = (), settle_seconds: float = 3.0,
             log: Callable[[str], None] | None = None) -> DeployResult:
    """Swap `current` and `previous` on `host`, reinstall that release's unit and restart.
    Rolling back twice returns to where it started."""
    settings = _settings(host, port, identity, ssh_options, install_root, service_user,
                         systemctl, python, settle_seconds, log)
    state = settings.probe()
    if not state.previous or state.previous not in state.releases:
        raise DeployError(f"nothing to roll back to on {host}: no complete previous release "
                          f"(current: {state.current or 'none'})")
    target = state.releases[state.previous]
    steps = [_Step(f"switch current: {state.current} -> {state.previous}, keeping "
                   f"{state.current} as previous", _STEP_ROLLBACK_SWITCH)]
    if state.unit_sha256 != target.get("unit_sha256"):
        steps.append(_Step(f"install {settings.paths.unit_dir}/{UNIT_NAME} and daemon-reload",
                           _STEP_UNIT))
    steps.append(_Step(f"restart {UNIT_NAME} and check that it is active", _STEP_RESTART))
    result = DeployResult(host, state.previous, target.get("board", "?"),
                          [s.title for s in steps], dry_run, None)
    if dry_run:
        _print_plan(settings, steps, f"rollback plan (dry run, nothing changed):")
        return result
    _print_plan(settings, steps, f"rolling back to release {state.previous}:")
    _run_plan(settings, state, steps, {"RELEASE": state.previous}, check_active=True)
    result.active = True
    settings.log(f"rolled back to release {state.previous}: {UNIT_NAME} is active on {host}")
    return result


# ---------------------------------------------------------------------------------------------
# CLI: `edge-runtime deploy`

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="the board: HOST or USER@HOST")
    parser.add_argument("--port", type=int, default=22, help="SSH port (default 22)")
    parser.add_argument("-i", "--identity", help="SSH private key file")
    parser.add_argument("--wheel", help="edge_runtime wheel for the board "
                        "(default: the newest matching dist/edge_runtime-*.whl)")
    parser.add_argument("--wheelhouse", help="directory of dependency wheels for the board")
    parser.add_argument("--system-site-packages", action="store_true",
                        help="let the venv use the board's Debian Python packages")
    parser.add_argument("-m", "--model", help="model file (default: keep the deployed one)")
    parser.add_argument("--config", help="board config: a name or a .toml file "
                        "(default: detect the board)")
    parser.add_argument("--service-user", default=DEFAULT_SERVICE_USER,
                        help="unprivileged user the service runs as "
                        f"(default {DEFAULT_SERVICE_USER})")
    parser.add_argument("--rollback", action="store_true",
                        help="switch back to the previous release instead of deploying")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("-o", "--ssh-option", action="append", default=[], metavar="OPTION",
                        help="extra ssh/scp -o option, e.g. -o StrictHostKeyChecking=accept-new")
    parser.add_argument("--install-root", default="/",
                        help="prefix for every path on the board (default /; for tests)")
    parser.add_argument("--systemctl", default="systemctl",
                        help="systemctl command on the board (default systemctl; for tests)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait after the restart before checking the service")


def main(args: argparse.Namespace) -> int:
    ssh_options = [item for option in args.ssh_option for item in ("-o", option)]
    common = dict(port=args.port, identity=args.identity, dry_run=args.dry_run,
                  service_user=args.service_user, install_root=args.install_root,
                  systemctl=args.systemctl, ssh_options=ssh_options, settle_seconds=args.settle)
    try:
        if args.rollback:
            rollback(args.host, **common)
        else:
            deploy(args.host, wheel=args.wheel, model=args.model, config=args.config,
                   wheelhouse=args.wheelhouse, system_site_packages=args.system_site_packages,
                   **common)
    except (DeployError, ValueError) as error:
        if getattr(args, "debug", False):
            raise
        print(f"edge-runtime deploy: error: {error}", file=sys.stderr)
        return 1
    return 0
