"""Shared test setup: the `slow` marker, the path of this directory for fixtures, and the rule that
in CI nothing skips for a missing tool.

With CI=true (set by .ci/run) a skipped test or module is reported as a FAILURE: qemu, torch,
mosquitto and the cross compilers are installed there, so their absence is a broken run, not a
reason to pass. Only skips whose reason starts with HARDWARE ("hardware: ...") stay skips: a CPU
feature or a kernel grant the machine does not have is not something .ci/run can install.
"""
import os
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
# the shared harness modules of each layer's tests (serial_harness, assist_broker, ...) import by name
# whichever test files are collected
for _layer in sorted(os.listdir(TESTS_DIR)):
    if os.path.isfile(os.path.join(TESTS_DIR, _layer, "__init__.py")):
        continue
    if os.path.isdir(os.path.join(TESTS_DIR, _layer)) and _layer not in ("data", "__pycache__"):
        if os.path.join(TESTS_DIR, _layer) not in sys.path:
            sys.path.append(os.path.join(TESTS_DIR, _layer))


CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
HARDWARE = "hardware:"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests (still run in CI)")


def _skip_reason(report) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2])
    return str(lr)


def _fail_skip_in_ci(report):
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if HARDWARE not in reason:
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, where every tool is installed: {reason}"


import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


def tiny_tokenizer(n_tokens=300):
    """A small Llama-3-style byte-level BPE (specials <|begin_of_text|>, <|end_of_text|>, <|eot_id|>
    on the last three ids), as an edge_runtime Tokenizer."""
    from helpers_hf import make_tiny_tokenizer_json

    from edge_runtime.text.tokenizer import Tokenizer

    return Tokenizer.from_tokenizer_json(make_tiny_tokenizer_json(n_tokens), bos_id=n_tokens - 3,
                                         eos_id=n_tokens - 2, eot_id=n_tokens - 1)


def write_tiny_chat_model(path, seed=0, head="q8_0"):
    """A random-weight tiny model WITH a tokenizer: runs every text path (generation, chat, serving)
    in milliseconds per token. Its text is noise; tests assert on protocol and mechanics."""
    from edge_runtime.formats.random_model import write_random_model

    return write_random_model(str(path), shape="tiny", head=head, seed=seed, tokenizer=tiny_tokenizer())


@pytest.fixture(scope="session")
def tiny_chat_model_path(tmp_path_factory):
    return write_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat") / "tiny-chat.gguf")


def subprocess_env(**extra):
    """Environment for `python -m edge_runtime ...` subprocesses: they import the same edge_runtime
    as this test process (the installed package in CI, the in-place build in a source tree)."""
    import edge_runtime

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(edge_runtime.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
