"""Shared test setup: the `slow` marker, and the path of this directory for fixtures."""
import os

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests (still run in CI)")
