"""Names every part of deploy shares: the unit name, limits, input checks and the error/result types."""

from __future__ import annotations

import re
from dataclasses import dataclass


UNIT_NAME = "edge-runtime.service"
DEFAULT_SERVICE_USER = "edge-runtime"
SSH_CONNECT_TIMEOUT_S = 10
REMOTE_COMMAND_TIMEOUT_S = 1800  # an upload of a 1.2 GB model over slow Wi-Fi, or pip on a Pi 3

_HOST_RE = re.compile(r"(?:[A-Za-z0-9._][A-Za-z0-9._-]*@)?"
                      r"(?:[A-Za-z0-9][A-Za-z0-9._-]*|\[?[0-9A-Fa-f:.]+\]?)")
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_ROOT_RE = re.compile(r"/[A-Za-z0-9._/+-]*")
_WHEEL_RE = re.compile(r"(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.+!]+)(?:-\d[^-]*)?"
                       r"-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl")
_FILE_NAME_RE = re.compile(r"[A-Za-z0-9._+-]+")
# Exit status the remote script uses when the service is not active after a restart.
_EXIT_NOT_ACTIVE = 42


class DeployError(RuntimeError):
    """A deployment step failed; the message says which and why."""


@dataclass
class DeployResult:
    host: str
    release: str
    board: str
    steps: list[str]
    dry_run: bool
    active: bool | None  # None for a dry run

    @property
    def changed(self) -> bool:
        return bool(self.steps) and not self.dry_run
