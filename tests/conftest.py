"""Shared test setup: the `slow` marker, and the path of this directory for fixtures."""
import os

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests (still run in CI)")


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


import pytest  # noqa: E402


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
