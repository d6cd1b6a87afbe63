"""The systemd unit that runs the service on a board: the serve command line and a hardened unit file."""

from __future__ import annotations

import re

from edge_runtime.board.device_config import (
    DeviceConfig,
)
from edge_runtime.board.deploy_base import (
    DEFAULT_SERVICE_USER, _USER_RE,
)

def _systemd_quote(word: str) -> str:
    """One ExecStart argument: '%' and '$' are systemd specifiers; quote anything with spaces."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not re.search(r"[\s\"'\\;]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serve_command(config: DeviceConfig, *, executable: str, model_path: str,
                  config_path: str) -> list[str]:
    """The `edge-runtime serve ...` command line the service runs for this board config."""
    if config.serve == "wyoming":
        # the deployed model either answers non-commands (the embedded model interprets) or interprets
        role = "--chat-model" if config.wyoming.model_role == "chat" else "--model"
        command = [executable, "serve", "wyoming", role, model_path, "--config", config_path,
                   "--uri", config.wyoming.uri]
        if config.wyoming.broker:
            command += ["--broker", config.wyoming.broker]
        return command
    command = [executable, "serve", config.serve, "--model", model_path, "--config", config_path]
    if config.serve == "mqtt":
        command += ["--broker", config.mqtt.broker, "--prefix", config.mqtt.prefix]
        if config.mqtt.group:
            command += ["--group", config.mqtt.group]
    else:
        if not config.serial.port:
            raise ValueError(f"{config.source or config.name}: serve = \"serial\" needs "
                             f"[serial] port, which is empty")
        command += ["--port", config.serial.port, "--baud", str(config.serial.baud)]
        if config.serial.text:
            command.append("--text")
    return command


def render_unit(config: DeviceConfig, *, executable: str, model_path: str, config_path: str,
                service_user: str = DEFAULT_SERVICE_USER) -> str:
    """The hardened systemd unit that runs `edge-runtime serve` for `config` (pure function)."""
    if not _USER_RE.fullmatch(service_user):
        raise ValueError(f"service user {service_user!r}: expected a system user name "
                         f"(lower-case letters, digits, '_', '-'; at most 32)")
    command = serve_command(config, executable=executable, model_path=model_path,
                            config_path=config_path)
    lines = [
        "# Written by `edge-runtime deploy`; a new deploy replaces it.",
        "[Unit]",
        f"Description=edge-runtime language model service ({config.name}, {config.serve})",
    ]
    if config.serve in ("mqtt", "wyoming"):
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += [
        "",
        "[Service]",
        "Type=simple",
        f"User={service_user}",
        f"Group={service_user}",
        "ExecStart=" + " ".join(_systemd_quote(word) for word in command),
        "Restart=on-failure",
        "RestartSec=5",
        "Environment=PYTHONUNBUFFERED=1",
        "Environment=PYTHONDONTWRITEBYTECODE=1",
        "StateDirectory=edge-runtime",
        # The whole process, mapped model pages included, must stay inside the board's budget;
        # past it the kernel reclaims and then kills this service, not the rest of the board.
        f"MemoryMax={config.memory_budget_mb}M",
        "MemorySwapMax=0",
    ]
    if config.use_mlock:
        lines.append(f"LimitMEMLOCK={config.memory_budget_mb}M")
    if config.cpu_affinity:
        lines.append("CPUAffinity=" + " ".join(str(cpu) for cpu in config.cpu_affinity))
    lines += [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
    ]
    if config.serve == "serial":
        lines.append("SupplementaryGroups=dialout")
    else:
        lines.append("PrivateDevices=yes")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)
