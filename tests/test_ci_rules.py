"""In CI a missing tool fails the run: tests/conftest.py turns skips into failures when CI=true."""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(tmp_path, ci, module_skip=False):
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n"
        "def test_tool():\n    pytest.skip('mosquitto not installed')\n"
        "def test_cpu():\n    pytest.skip('hardware: no AMX tile state')\n"
        "@pytest.mark.skipif(True, reason='qemu-aarch64 missing')\ndef test_mark():\n    pass\n")
    if module_skip:
        (tmp_path / "test_module.py").write_text("import pytest\npytest.importorskip('no_such_module_here')\n")
    env = dict(os.environ, CI="true" if ci else "")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    return done.returncode, done.stdout


def test_skips_fail_in_ci_except_hardware(tmp_path):
    rc, out = _run(tmp_path, ci=True)
    assert rc == 1, out
    assert "FAILED" in out and "test_tool" in out and "test_mark" in out, out
    # a skipif mark skips at setup, so it is reported as an error; both make the run fail
    assert "1 failed" in out and "1 error" in out and "1 skipped" in out, out  # the hardware one stays a skip


def test_a_module_skipped_at_import_fails_in_ci(tmp_path):
    rc, out = _run(tmp_path, ci=True, module_skip=True)
    assert rc != 0 and "skipped in CI" in out, out


def test_skips_stay_skips_on_a_laptop(tmp_path):
    rc, out = _run(tmp_path, ci=False, module_skip=True)
    assert rc == 0, out
    assert "failed" not in out, out


def test_tests_find_their_fixtures_inside_tests():
    """A fixture outside the repository (a sibling `shared/` directory, an absolute path on one
    machine) is missing in every other checkout; fixtures live in tests/data."""
    import re

    outside = re.compile(r"""(/work/|\.\./shared|parent\s*/\s*["']shared["']|["']shared["']\s*/\s*["']fixtures)""")
    offenders = []
    for root, _, files in os.walk(HERE):
        for name in files:
            if name.endswith(".py") and name != "test_ci_rules.py":
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    for number, line in enumerate(f, 1):
                        if outside.search(line):
                            offenders.append(f"{os.path.relpath(path, HERE)}:{number}: {line.strip()}")
    assert not offenders, offenders
