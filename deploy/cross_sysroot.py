"""Debian packages of a foreign architecture, unpacked into a directory: the Python headers and
build configuration that a cross-built extension needs, and (with --runtime) a Python 3.11
interpreter that runs under qemu-user for checking the result:

    qemu-aarch64 -L ROOT ROOT/usr/bin/python3.11 ...

The packages come from the machine's own apt sources (Debian 12, like Raspberry Pi OS bookworm),
so the foreign architecture must be enabled once, as root:

    dpkg --add-architecture arm64 && apt-get update

Nothing is installed into the system: `apt-get download` fetches the .deb files and `dpkg -x`
unpacks them. A directory that already holds the requested set is reused as it is.

usage: python3 deploy/cross_sysroot.py [--arch aarch64|armv7l] [--runtime] DIR
"""

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Arch:
    name: str       # what `uname -m` says on the board
    debian: str     # Debian architecture
    triplet: str    # GNU triplet: cross compiler prefix and multiarch directory
    qemu: str       # qemu-user binary that runs it


ARCHES = {
    "aarch64": Arch("aarch64", "arm64", "aarch64-linux-gnu", "qemu-aarch64"),
    "armv7l": Arch("armv7l", "armhf", "arm-linux-gnueabihf", "qemu-arm"),
}

PYTHON = "python3.11"
# Python.h, the multiarch pyconfig.h and the _sysconfigdata module with the target's compiler
# settings and extension suffix (-stdlib holds a link to it, -minimal the file).
BUILD_PACKAGES = ("libpython3.11-dev", "libpython3.11-stdlib", "libpython3.11-minimal")
# The interpreter and the shared libraries it and the manylinux numpy wheel load.
RUNTIME_PACKAGES = BUILD_PACKAGES + (
    "python3.11-minimal", "libc6", "zlib1g", "libexpat1", "libffi8",
    "libssl3", "libbz2-1.0", "liblzma5", "libuuid1", "libcrypt1", "libgcc-s1", "libstdc++6",
)
# Architecture-independent: pip itself, run from its wheel by the target interpreter.
ARCH_ALL_PACKAGES = ("python3-pip-whl",)
# The package index has no numpy wheels for 32-bit ARM: there the board uses Debian's numpy
# (deploy --system-site-packages), and so does the runtime root.
RUNTIME_EXTRA_PACKAGES = {
    "armv7l": ("python3-numpy", "libblas3", "liblapack3", "libgfortran5"),
}


class SysrootError(RuntimeError):
    pass


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise SysrootError(f"{command[0]}: not found (this needs a Debian machine)") from None


def enabled_architectures() -> set[str]:
    native = _run(["dpkg", "--print-architecture"]).stdout.split()
    foreign = _run(["dpkg", "--print-foreign-architectures"]).stdout.split()
    return set(native) | set(foreign)


def ensure_sysroot(arch: str, directory: str | Path, runtime: bool = False) -> Path:
    """Unpack the packages for `arch` under DIRECTORY/root (reused when already complete);
    returns that root."""
    if arch not in ARCHES:
        raise SysrootError(f"architecture {arch!r}: expected one of {', '.join(ARCHES)}")
    target = ARCHES[arch]
    directory = Path(directory)
    root = directory / "root"
    wanted = [f"{p}:{target.debian}" for p in (RUNTIME_PACKAGES if runtime else BUILD_PACKAGES)]
    if runtime:
        wanted += [f"{p}:{target.debian}" for p in RUNTIME_EXTRA_PACKAGES.get(arch, ())]
        wanted += list(ARCH_ALL_PACKAGES)
    marker = directory / "packages.json"
    if marker.exists() and set(wanted) <= set(json.loads(marker.read_text())):
        return root

    if target.debian not in enabled_architectures():
        raise SysrootError(
            f"Debian architecture {target.debian} is not enabled on this machine; as root run: "
            f"dpkg --add-architecture {target.debian} && apt-get update")
    debs = directory / "debs"
    shutil.rmtree(directory, ignore_errors=True)
    debs.mkdir(parents=True)
    fetched = _run(["apt-get", "download", *wanted], cwd=debs)
    if fetched.returncode != 0:
        raise SysrootError(f"apt-get download failed: {fetched.stderr.strip()[-500:]}")
    for deb in sorted(debs.glob("*.deb")):
        unpacked = _run(["dpkg", "-x", str(deb), str(root)])
        if unpacked.returncode != 0:
            raise SysrootError(f"dpkg -x {deb.name} failed: {unpacked.stderr.strip()}")
    _link_alternatives(root / "usr/lib" / target.triplet)
    marker.write_text(json.dumps(sorted(wanted)))
    return root


def _link_alternatives(library_dir: Path) -> None:
    """libblas3 and liblapack3 put their libraries in blas/ and lapack/ and leave the
    libblas.so.3 link to update-alternatives in their install scripts, which dpkg -x does not
    run: make those links."""
    for provider in ("blas", "lapack"):
        for library in sorted((library_dir / provider).glob("lib*.so.*")):
            link = library_dir / library.name
            if not link.exists():
                link.symlink_to(Path(provider, library.name))


def sysconfigdata_name(arch: str) -> str:
    return f"_sysconfigdata__linux_{ARCHES[arch].triplet}"


def pip_wheel(root: Path) -> Path:
    """pip's own wheel inside the runtime root; `python pip.whl/pip install ...` runs pip."""
    found = sorted((root / "usr/share/python-wheels").glob("pip-*.whl"))
    if not found:
        raise SysrootError(f"no pip wheel under {root}/usr/share/python-wheels")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="aarch64", choices=sorted(ARCHES))
    parser.add_argument("--runtime", action="store_true",
                        help="also unpack the interpreter and libraries to run under qemu-user")
    parser.add_argument("directory")
    args = parser.parse_args(argv)
    try:
        root = ensure_sysroot(args.arch, args.directory, args.runtime)
    except SysrootError as error:
        print(f"cross_sysroot: error: {error}", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
