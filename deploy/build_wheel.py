"""Build an edge-runtime wheel for an ARM board on an x86_64 Debian machine.

    python3 deploy/build_wheel.py --arch aarch64 --out dist/

makes dist/edge_runtime-<version>-cp311-cp311-linux_aarch64.whl for CPython 3.11 (Raspberry Pi
OS / Debian bookworm, 64-bit), with every kernel variant the target can run compiled in and
picked at run time. `--arch armv7l` makes the 32-bit (armhf) wheel.

How: the project's own setup.py runs under this machine's Python (which needs setuptools, wheel
and Cython), but with the TARGET's build configuration. Python reads its compiler settings,
extension suffix and platform tag from a `_sysconfigdata` module; Debian's module for the target
(from libpython3.11-stdlib:<arch>) names the Debian cross compiler, so pointing
_PYTHON_SYSCONFIGDATA_NAME at it and _PYTHON_HOST_PLATFORM at the target turns the ordinary build
into a cross build. The target's Python headers come from libpython3.11-dev:<arch>, unpacked by
deploy/cross_sysroot.py. The source tree is copied first, so nothing is written into it.

Needs: gcc-aarch64-linux-gnu (or gcc-arm-linux-gnueabihf), and the Debian architecture enabled
(dpkg --add-architecture arm64 && apt-get update). For the board's dependencies, see
--wheelhouse: it downloads numpy, paho-mqtt and pyserial wheels for the target from the package
index, for `edge-runtime deploy --wheelhouse`.
"""

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cross_sysroot import ARCHES, SysrootError, ensure_sysroot, sysconfigdata_name  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SOURCE_ITEMS = ("setup.py", "pyproject.toml", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE",
                "edge_runtime", "neon_kernels", "device_configs")
IGNORED = shutil.ignore_patterns("*.so", "*.o", "*.pyc", "__pycache__", "*.egg-info", "build")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-runtime"
# ELF e_machine of each target, to check what the compiler produced.
ELF_MACHINE = {"aarch64": 183, "armv7l": 40}
# The board's runtime dependencies (pyproject.toml), as wheels for the target.
RUNTIME_DEPENDENCIES = ("numpy", "paho-mqtt", "pyserial")
MANYLINUX_PLATFORMS = {
    "aarch64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "linux_aarch64"),
    "armv7l": ("manylinux_2_31_armv7l", "linux_armv7l"),
}


class BuildError(RuntimeError):
    pass


def elf_machine(data: bytes) -> int:
    if data[:4] != b"\x7fELF":
        raise BuildError("not an ELF file")
    byte_order = "<" if data[5] == 1 else ">"
    return struct.unpack_from(byte_order + "H", data, 18)[0]


def check_wheel(wheel: Path, arch: str) -> list[str]:
    """The compiled modules inside `wheel`; BuildError unless all are ELF files for `arch`."""
    if not wheel.name.endswith(f"-linux_{arch}.whl"):
        raise BuildError(f"{wheel.name}: expected a linux_{arch} platform tag")
    with zipfile.ZipFile(wheel) as archive:
        modules = [n for n in archive.namelist() if n.endswith(".so")]
        if not modules:
            raise BuildError(f"{wheel.name}: holds no compiled module")
        for name in modules:
            if not name.endswith(f"-{ARCHES[arch].triplet}.so"):
                raise BuildError(f"{wheel.name}: {name} has the wrong extension suffix")
            machine = elf_machine(archive.read(name))
            if machine != ELF_MACHINE[arch]:
                raise BuildError(f"{wheel.name}: {name} is ELF machine {machine}, expected "
                                 f"{ELF_MACHINE[arch]} ({arch})")
    return modules


def _copy_source(destination: Path) -> None:
    for item in SOURCE_ITEMS:
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, destination / item, ignore=IGNORED)
        elif source.is_file():
            shutil.copy2(source, destination / item)


def build_wheel(arch: str, out: Path, cache: Path = DEFAULT_CACHE) -> Path:
    """Cross-build the wheel for `arch` into `out`; returns its path."""
    if arch not in ARCHES:
        raise BuildError(f"architecture {arch!r}: expected one of {', '.join(ARCHES)}")
    target = ARCHES[arch]
    compiler = f"{target.triplet}-gcc"
    if shutil.which(compiler) is None:
        raise BuildError(f"{compiler} not found: apt-get install gcc-{target.triplet}")
    try:
        root = ensure_sysroot(arch, cache / f"sysroot-{arch}")
    except SysrootError as error:
        raise BuildError(str(error)) from None
    sysconfig_module = root / "usr/lib/python3.11" / f"{sysconfigdata_name(arch)}.py"
    if not sysconfig_module.is_file():
        raise BuildError(f"{sysconfig_module}: missing from libpython3.11-stdlib:{target.debian}")

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"edge-runtime-{arch}-") as scratch:
        source = Path(scratch, "src")
        source.mkdir()
        _copy_source(source)
        config_dir = Path(scratch, "target-sysconfig")
        config_dir.mkdir()
        shutil.copy(sysconfig_module, config_dir)
        environment = {
            **os.environ,
            "_PYTHON_HOST_PLATFORM": f"linux-{arch}",
            "_PYTHON_SYSCONFIGDATA_NAME": sysconfigdata_name(arch),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(config_dir),
                                                        os.environ.get("PYTHONPATH")])),
            "CC": compiler,
            "LDSHARED": f"{compiler} -shared",
            # The target's headers first; -g0 drops the debug info Debian's flags ask for.
            "CFLAGS": f"-g0 -I{root}/usr/include/python3.11 -I{root}/usr/include",
            "LDFLAGS": "",
        }
        hook = ("import sys; from setuptools import build_meta; "
                "print(build_meta.build_wheel(sys.argv[1]))")
        built = subprocess.run([sys.executable, "-c", hook, str(out.resolve())], cwd=source,
                               env=environment, capture_output=True, text=True)
        if built.returncode != 0:
            log = (built.stdout + built.stderr).strip().splitlines()
            raise BuildError("the cross build failed:\n" + "\n".join(log[-25:]))
        wheel = out / built.stdout.strip().splitlines()[-1]
    check_wheel(wheel, arch)
    return wheel


def download_wheelhouse(arch: str, directory: Path, python_version: str = "311") -> list[Path]:
    """The runtime dependencies as wheels for the target, from the package index (needs the
    network once; the board then installs from these files alone)."""
    directory.mkdir(parents=True, exist_ok=True)
    platforms = [item for p in MANYLINUX_PLATFORMS[arch] for item in ("--platform", p)]
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
         "--implementation", "cp", "--python-version", python_version, *platforms,
         "--dest", str(directory), *RUNTIME_DEPENDENCIES], capture_output=True, text=True)
    if fetched.returncode != 0:
        raise BuildError(f"pip download of {', '.join(RUNTIME_DEPENDENCIES)} failed: "
                         f"{fetched.stderr.strip()[-500:]}")
    return sorted(directory.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="aarch64", choices=sorted(ARCHES))
    parser.add_argument("--out", default="dist", help="directory for the wheel (default dist/)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE),
                        help=f"where the unpacked target packages are kept (default {DEFAULT_CACHE})")
    parser.add_argument("--wheelhouse", metavar="DIR",
                        help="also download the dependency wheels for the target into DIR")
    args = parser.parse_args(argv)
    try:
        wheel = build_wheel(args.arch, Path(args.out), Path(args.cache))
        print(wheel)
        if args.wheelhouse:
            for path in download_wheelhouse(args.arch, Path(args.wheelhouse)):
                print(path)
    except BuildError as error:
        print(f"build_wheel: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
