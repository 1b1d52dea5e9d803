"""Shared test setup: the model most tests simulate, and markers that let a developer skip the expensive groups locally
(``pytest -m "not ray and not slow"``). CI runs everything; the markers only select."""

import pytest

MODEL = "qwen/qwen2.5-7b-instruct"

# Modules whose tests start a Ray instance (each start costs a few seconds of wall time).
RAY_MODULES = {"test_cluster", "test_samplers", "test_search_driver", "test_search_e2e",
               "test_search_report", "test_search_resume", "test_search_robust", "test_search_signals"}
# Modules dominated by long simulations or many subprocesses.
SLOW_MODULES = {"test_fast_path", "test_bad_inputs", "test_memory", "test_go_parity", "test_cluster"}


def pytest_configure(config):
    config.addinivalue_line("markers", "ray: starts a local Ray instance")
    config.addinivalue_line("markers", "slow: long simulations or many subprocesses")
    config.addinivalue_line("markers", "browser: drives headless chromium")


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in RAY_MODULES:
            item.add_marker(pytest.mark.ray)
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if "chromium" in item.name or "browser" in item.name:
            item.add_marker(pytest.mark.browser)
