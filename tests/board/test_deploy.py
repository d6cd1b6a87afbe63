"""Deploying to a board: the unit file, and the whole deploy / upgrade / rollback cycle end to end
against a real OpenSSH server on a loopback port.

The "board" is this machine seen through sshd: a throw-away host key and client key, logging in
as the current user (root in CI). Everything is installed under a scratch install root. The only
stand-in is systemctl (there is no systemd in the container): a recording script that keeps
enabled/active state in files, passed to deploy() as `systemctl=`.
"""

import argparse
import base64
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from edge_runtime.board.deploy import (
    add_arguments, deploy, main, rollback,
)
from edge_runtime.board.deploy_base import (
    DeployError,
)
from edge_runtime.board.systemd_unit import (
    render_unit, serve_command,
)
from edge_runtime.board.device_config import DeviceConfig, SerialDefaults, find_config, load_device_config

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
REQUIRED_HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "Restart": "on-failure",
}

# ------------------------------------------------------------------------------- unit parsing


def parse_unit(text):
    """{section: {key: [values]}} of a systemd unit file."""
    sections, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a unit line: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def assert_hardened(text, *, memory_max, user):
    service = parse_unit(text)["Service"]
    for key, value in REQUIRED_HARDENING.items():
        assert service[key] == [value], key
    assert service["MemoryMax"] == [memory_max]
    assert service["User"] == [user]
    assert service["CapabilityBoundingSet"] == [""]
    assert parse_unit(text)["Install"]["WantedBy"] == ["multi-user.target"]


def systemd_analyze_verify(unit_path):
    """Warnings systemd-analyze prints about this unit (empty list when it is clean)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_path)],
                            capture_output=True, text=True, timeout=60)
    about_unit = [line for line in (result.stdout + result.stderr).splitlines()
                  if unit_path.name in line]
    assert result.returncode == 0, result.stderr
    return about_unit


# ------------------------------------------------------------------------------- render_unit

def test_render_unit_mqtt_is_hardened_and_verifies(tmp_path):
    config = find_config("raspberry-pi-5")
    text = render_unit(config, executable=sys.executable, model_path="/opt/m/model.gguf",
                       config_path="/opt/edge-runtime/current/board.toml")
    assert_hardened(text, memory_max="3072M", user="edge-runtime")
    service = parse_unit(text)["Service"]
    assert service["ExecStart"] == [
        f"{sys.executable} serve mqtt --model /opt/m/model.gguf --config "
        f"/opt/edge-runtime/current/board.toml --broker localhost:1883 --prefix edge"]
    assert "CPUAffinity" not in service and "LimitMEMLOCK" not in service
    assert service["PrivateDevices"] == ["yes"]
    assert parse_unit(text)["Unit"]["After"] == ["network-online.target"]
    unit = tmp_path / "edge-runtime.service"
    unit.write_text(text)
    assert systemd_analyze_verify(unit) == []


def test_render_unit_pins_rk3588_to_the_a76_cores(tmp_path):
    text = render_unit(find_config("rk3588"), executable=sys.executable, model_path="/m",
                       config_path="/c", service_user="llm")
    service = parse_unit(text)["Service"]
    assert service["CPUAffinity"] == ["4 5 6 7"]
    assert_hardened(text, memory_max="4096M", user="llm")
    unit = tmp_path / "edge-runtime.service"
    unit.write_text(text)
    assert systemd_analyze_verify(unit) == []


def test_render_unit_serial_with_mlock_and_awkward_paths(tmp_path):
    zero = find_config("raspberry-pi-zero-2-w")  # serves serial
    config = DeviceConfig(**{**zero.__dict__, "use_mlock": True,
                             "serial": SerialDefaults("/dev/ttyAMA0", 57600, True)})
    odd_dir = tmp_path / "with space and 100%"
    odd_dir.mkdir()
    executable = odd_dir / "edge-runtime"
    executable.symlink_to(sys.executable)
    text = render_unit(config, executable=str(executable), model_path="/models/a $b.gguf",
                       config_path="/c.toml")
    service = parse_unit(text)["Service"]
    assert service["ExecStart"] == [
        f'"{str(odd_dir).replace("%", "%%")}/edge-runtime" serve serial --model '
        f'"/models/a $$b.gguf" --config /c.toml --port /dev/ttyAMA0 --baud 57600 --text']
    assert service["LimitMEMLOCK"] == ["384M"]
    assert service["SupplementaryGroups"] == ["dialout"]
    assert "PrivateDevices" not in service
    assert "After" not in parse_unit(text)["Unit"]
    unit = tmp_path / "edge-runtime.service"
    unit.write_text(text)
    assert systemd_analyze_verify(unit) == []


def test_render_unit_refuses_bad_inputs():
    termux = find_config("android-termux")
    serial_termux = DeviceConfig(**{**termux.__dict__, "serve": "serial"})
    with pytest.raises(ValueError, match="needs \\[serial\\] port"):
        serve_command(serial_termux, executable="/x", model_path="/m", config_path="/c")
    with pytest.raises(ValueError, match="service user 'Bad User'"):
        render_unit(termux, executable="/x", model_path="/m", config_path="/c",
                    service_user="Bad User")


# ------------------------------------------------------------------------------- test wheels

def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(directory, distribution, version, files, *, requires=(), scripts=None,
                tag="py3-none-any"):
    """A real wheel made with zipfile: `files` maps archive paths to source text."""
    dist_info = f"{distribution}-{version}.dist-info"
    contents = {path: text.encode() for path, text in files.items()}
    contents[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()
    contents[f"{dist_info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: edge-runtime-tests\n"
                                      f"Root-Is-Purelib: true\nTag: {tag}\n").encode()
    if scripts:
        contents[f"{dist_info}/entry_points.txt"] = ("[console_scripts]\n" + "".join(
            f"{name} = {target}\n" for name, target in scripts.items())).encode()
    record = [_record_line(name, data) for name, data in contents.items()]
    contents[f"{dist_info}/RECORD"] = ("\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n"
                                       ).encode()
    path = Path(directory) / f"{distribution}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return path


# The package these wheels install prints its version and the dependency's marker, so the test
# can tell which release a venv holds and that the dependency came from the wheelhouse.
APP_SOURCE = """\
import sys
import ert_test_dependency

__version__ = "{version}"


def main():
    print(__version__, ert_test_dependency.MARKER, " ".join(sys.argv[1:]))
"""


def build_app_wheel(directory, version):
    return build_wheel(directory, "edge_runtime", version,
                       {"edge_runtime/__init__.py": APP_SOURCE.format(version=version)},
                       requires=["ert-test-dependency"],
                       scripts={"edge-runtime": "edge_runtime:main"})


# ------------------------------------------------------------------------------- the board

RECORDING_SYSTEMCTL = """\
#!/bin/sh
# Stand-in for systemctl on a machine without systemd: records every call and keeps the unit's
# enabled/active state as files. A file named fail-start makes `restart` leave the unit failed.
state="$(dirname "$0")/state"
mkdir -p "$state"
echo "$*" >> "$state/calls.log"
case "$1" in
    daemon-reload) ;;
    enable) touch "$state/enabled" ;;
    restart)
        if [ -e "$state/fail-start" ]; then rm -f "$state/active"; echo failed > "$state/why"
        else touch "$state/active"; fi ;;
    is-enabled)
        if [ -e "$state/enabled" ]; then echo enabled; else echo disabled; exit 1; fi ;;
    is-active)
        if [ -e "$state/active" ]; then echo active
        elif [ -e "$state/why" ]; then cat "$state/why"; exit 3
        else echo inactive; exit 3; fi ;;
    *) echo "unexpected systemctl call: $*" >&2; exit 1 ;;
esac
"""


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("deploying creates a system user and needs root (CI runs as root)")
    for tool in (SSHD, "ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian: openssh-server, openssh-client)")
    work = tmp_path_factory.mktemp("sshd")
    _keygen(work / "host_key")
    _keygen(work / "client_key")
    shutil.copy(work / "client_key.pub", work / "authorized_keys")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    user = pwd.getpwuid(os.geteuid()).pw_name

    process = port = None
    for _attempt in range(3):
        port = _free_port()
        (work / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work}/host_key\n"
            f"PidFile {work}/sshd.pid\nAuthorizedKeysFile {work}/authorized_keys\n"
            f"AllowUsers {user}\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
            f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPrintMotd no\nLogLevel ERROR\n"
            f"Subsystem sftp /usr/lib/openssh/sftp-server\n")
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(work / "sshd_config")],
                                   stdout=subprocess.DEVNULL, stderr=open(work / "sshd.log", "w"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        if process.poll() is None:
            break
    else:
        pytest.fail(f"sshd did not start: {(work / 'sshd.log').read_text()}")

    host_key = (work / "host_key.pub").read_text().split()
    (work / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    options = ("-F", "/dev/null", "-o", f"UserKnownHostsFile={work}/known_hosts",
               "-o", "StrictHostKeyChecking=yes")
    yield {"host": f"{user}@127.0.0.1", "port": port, "identity": str(work / "client_key"),
           "ssh_options": options}
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def board(sshd, tmp_path):
    """A scratch install root on the board, its recording systemctl and a unique service user."""
    root = tmp_path / "board"
    root.mkdir()
    tools = tmp_path / "tools"
    tools.mkdir()
    systemctl = tools / "systemctl"
    systemctl.write_text(RECORDING_SYSTEMCTL)
    systemctl.chmod(0o755)
    service_user = f"ert-test-{os.getpid() % 100000}"
    logged = []
    options = dict(port=sshd["port"], identity=sshd["identity"],
                   ssh_options=sshd["ssh_options"], install_root=str(root),
                   systemctl=str(systemctl), service_user=service_user, settle_seconds=0,
                   log=logged.append)
    yield {"host": sshd["host"], "root": root, "opt": root / "opt/edge-runtime",
           "state": tools / "state", "options": options, "log": logged, "user": service_user}
    subprocess.run(["userdel", service_user], capture_output=True)


@pytest.fixture
def artifacts(tmp_path):
    """Wheels 0.1.0 / 0.2.0 / 0.3.0 of the app, a wheelhouse with its dependency, a model file."""
    wheels = tmp_path / "wheels"
    wheelhouse = tmp_path / "wheelhouse"
    wheels.mkdir()
    wheelhouse.mkdir()
    build_wheel(wheelhouse, "ert_test_dependency", "1.0",
                {"ert_test_dependency.py": 'MARKER = "dependency-from-wheelhouse"\n'})
    model = tmp_path / "tiny-model.gguf"
    model.write_bytes(b"GGUF" + os.urandom(4096))
    return {"v1": build_app_wheel(wheels, "0.1.0"), "v2": build_app_wheel(wheels, "0.2.0"),
            "v3": build_app_wheel(wheels, "0.3.0"), "wheelhouse": wheelhouse, "model": model}


def _calls(board):
    log = board["state"] / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def _run_installed(board):
    """What the deployed `edge-runtime` prints: its version and the dependency marker."""
    executable = board["opt"] / "current/venv/bin/edge-runtime"
    return subprocess.run([str(executable), "--probe"], capture_output=True, text=True,
                          check=True).stdout.split()


# ------------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_deploy_upgrade_rollback_cycle(board, artifacts):
    opt, options = board["opt"], board["options"]

    # 1. First deploy, board detected remotely (no --config).
    first = deploy(board["host"], wheel=artifacts["v1"], model=artifacts["model"],
                   wheelhouse=artifacts["wheelhouse"], **options)
    assert first.changed and first.active
    assert [s.split()[0] for s in first.steps] == [
        "create", "install", "install", "switch", "install", "enable", "restart"]
    if os.uname().machine == "x86_64":
        assert first.board == "generic-x86_64"
    assert (opt / "current").resolve() == opt / first.release
    assert _run_installed(board) == ["0.1.0", "dependency-from-wheelhouse", "--probe"]
    model_sha = hashlib.sha256(artifacts["model"].read_bytes()).hexdigest()
    deployed_model = opt / "models" / model_sha / "tiny-model.gguf"
    assert deployed_model.read_bytes() == artifacts["model"].read_bytes()
    assert oct(deployed_model.stat().st_mode & 0o777) == "0o644"

    service_user = pwd.getpwnam(board["user"])
    assert service_user.pw_shell == "/usr/sbin/nologin"
    assert service_user.pw_uid != 0
    # The service user can read its code but not change it.
    release_dir = opt / first.release
    assert release_dir.stat().st_uid == 0 and not release_dir.stat().st_mode & 0o022

    unit_path = board["root"] / "etc/systemd/system/edge-runtime.service"
    unit_text = unit_path.read_text()
    assert unit_text == (release_dir / "edge-runtime.service").read_text()
    budget = find_config(first.board).memory_budget_mb
    assert_hardened(unit_text, memory_max=f"{budget}M", user=board["user"])
    exec_start = parse_unit(unit_text)["Service"]["ExecStart"][0].split()
    assert exec_start[:3] == [f"{opt}/current/venv/bin/edge-runtime", "serve", "mqtt"]
    assert exec_start[exec_start.index("--model") + 1] == str(deployed_model)
    assert systemd_analyze_verify(unit_path) == []
    assert load_device_config(opt / "current/board.toml").name == first.board
    assert _calls(board)[-4:] == ["daemon-reload", "enable edge-runtime.service",
                                  "restart edge-runtime.service",
                                  "is-active edge-runtime.service"]

    # 2. The same inputs again: nothing to do, nothing restarted.
    calls_before = len(_calls(board))
    mtime_before = release_dir.stat().st_mtime_ns
    board["log"].clear()
    second = deploy(board["host"], wheel=artifacts["v1"], model=artifacts["model"],
                    wheelhouse=artifacts["wheelhouse"], **options)
    assert second.steps == [] and not second.changed and second.release == first.release
    assert any(line.startswith("no changes") for line in board["log"])
    assert [c.split()[0] for c in _calls(board)[calls_before:]] == ["is-enabled", "is-active"]
    assert release_dir.stat().st_mtime_ns == mtime_before

    # 3. Upgrade the wheel only: the model stays, the old release is kept for rollback.
    upgrade = deploy(board["host"], wheel=artifacts["v2"], wheelhouse=artifacts["wheelhouse"],
                     config="generic-x86_64" if first.board == "generic-x86_64" else first.board,
                     **options)
    assert upgrade.release.startswith("0.2.0-") and upgrade.release != first.release
    assert not any("model" in step.split()[1] for step in upgrade.steps)
    assert any("keeping " + first.release in step for step in upgrade.steps)
    assert (opt / "current").resolve() == opt / upgrade.release
    assert (opt / "previous").resolve() == opt / first.release
    assert _run_installed(board) == ["0.2.0", "dependency-from-wheelhouse", "--probe"]
    assert _calls(board)[-2:] == ["restart edge-runtime.service", "is-active edge-runtime.service"]

    # 4. Roll back, and roll back again to return.
    back = rollback(board["host"], **options)
    assert back.release == first.release
    assert (opt / "current").resolve() == opt / first.release
    assert (opt / "previous").resolve() == opt / upgrade.release
    assert _run_installed(board)[0] == "0.1.0"
    assert _calls(board)[-2:] == ["restart edge-runtime.service", "is-active edge-runtime.service"]
    rollback(board["host"], **options)
    assert _run_installed(board)[0] == "0.2.0"

    # 5. A third release: only current and previous are kept.
    third = deploy(board["host"], wheel=artifacts["v3"], wheelhouse=artifacts["wheelhouse"],
                   config=upgrade.board, **options)
    assert any(step.startswith("remove old releases: " + first.release) for step in third.steps)
    assert sorted(p.name for p in opt.iterdir() if not p.name.startswith(".")) == sorted(
        ["current", "previous", "models", upgrade.release, third.release])
    assert deployed_model.exists()  # still referenced by both kept releases
    assert _run_installed(board)[0] == "0.3.0"

    # 6. The service dies: the next deploy restarts it, and says so when it does not come up.
    (board["state"] / "active").unlink()
    (board["state"] / "fail-start").touch()
    with pytest.raises(DeployError, match="did not come up.*'failed'.*journalctl.*--rollback"):
        deploy(board["host"], wheel=artifacts["v3"], wheelhouse=artifacts["wheelhouse"],
               config=upgrade.board, **options)
    assert _calls(board)[-2:] == ["restart edge-runtime.service", "is-active edge-runtime.service"]


def test_dry_run_changes_nothing(board, artifacts, tmp_path, monkeypatch):
    # Without --wheel the newest dist/edge_runtime-*.whl that runs on the board is taken.
    (tmp_path / "dist").mkdir()
    shutil.copy(artifacts["v1"], tmp_path / "dist")
    arm_only = tmp_path / "dist/edge_runtime-0.9.0-cp311-cp311-linux_aarch64.whl"
    shutil.copy(artifacts["v2"], arm_only)
    monkeypatch.chdir(tmp_path)
    result = deploy(board["host"], model=artifacts["model"], config="raspberry-pi-5",
                    dry_run=True, **board["options"])
    expected_version = "0.9.0" if os.uname().machine == "aarch64" else "0.1.0"
    assert result.release.startswith(expected_version + "-")
    assert result.dry_run and not result.changed and result.active is None
    assert result.board == "raspberry-pi-5"
    assert any(line.startswith("plan (dry run") for line in board["log"])
    assert any("install release 0.1.0-" in line for line in board["log"])
    assert not (board["root"] / "opt").exists()
    assert not (board["root"] / "etc").exists()
    assert [c.split()[0] for c in _calls(board)] == ["is-enabled", "is-active"]


@pytest.mark.slow
def test_missing_dependency_wheel_names_the_fix(board, artifacts):
    with pytest.raises(DeployError, match="pip install of edge_runtime-0.1.0.*--wheelhouse"):
        deploy(board["host"], wheel=artifacts["v1"], model=artifacts["model"],
               config="generic-x86_64", **board["options"])
    assert not (board["opt"] / "current").exists()


def test_refusals_before_anything_is_copied(board, artifacts, tmp_path):
    options = board["options"]
    arm_wheel = tmp_path / "edge_runtime-0.1.0-cp311-cp311-linux_aarch64.whl"
    shutil.copy(artifacts["v1"], arm_wheel)
    machine = os.uname().machine
    if machine != "aarch64":
        with pytest.raises(DeployError, match=f"does not run on the board \\({machine}, Python"):
            deploy(board["host"], wheel=arm_wheel, model=artifacts["model"], **options)
    with pytest.raises(DeployError, match="has no model yet: pass --model"):
        deploy(board["host"], wheel=artifacts["v1"], config="generic-x86_64", **options)
    with pytest.raises(DeployError, match="nothing to roll back to"):
        rollback(board["host"], **options)
    with pytest.raises(DeployError, match="not a file and not a built-in board"):
        deploy(board["host"], wheel=artifacts["v1"], model=artifacts["model"],
               config="raspberry-pi-9", **options)
    assert not (board["root"] / "opt").exists()


def test_unreachable_board_is_a_clear_error(board, artifacts):
    options = {**board["options"], "port": _free_port()}
    with pytest.raises(DeployError, match=r"cannot reach .*127\.0\.0\.1 port \d+ over ssh: .*"
                                          r"Connection refused"):
        deploy(board["host"], wheel=artifacts["v1"], model=artifacts["model"], **options)
    with pytest.raises(DeployError, match="cannot reach root@no-such-board.invalid port 22"):
        deploy("root@no-such-board.invalid", wheel=artifacts["v1"],
               **{**board["options"], "port": 22})
    with pytest.raises(DeployError, match="host '-oProxyCommand=x': expected HOST or USER@HOST"):
        deploy("-oProxyCommand=x", wheel=artifacts["v1"], **board["options"])


def test_cli_main(board, artifacts, capsys):
    parser = argparse.ArgumentParser(prog="edge-runtime deploy")
    add_arguments(parser)
    opts = board["options"]
    common = ["--host", board["host"], "--port", str(opts["port"]), "-i", opts["identity"],
              "--install-root", opts["install_root"], "--systemctl", opts["systemctl"],
              "--service-user", opts["service_user"],
              "-o", "UserKnownHostsFile=" + opts["ssh_options"][3].split("=", 1)[1],
              "-o", "StrictHostKeyChecking=yes"]
    args = parser.parse_args(common + ["--wheel", str(artifacts["v1"]), "--model",
                                       str(artifacts["model"]), "--config", "rk3588",
                                       "--dry-run"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "config rk3588 (given: rk3588)" in out and "plan (dry run" in out

    assert main(parser.parse_args(common + ["--rollback"])) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge-runtime deploy: error: nothing to roll back to")
    assert err.count("\n") == 1
