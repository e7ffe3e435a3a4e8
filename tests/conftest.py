"""Suite-wide switches: tests marked ``long`` run only when PORTRAIT4D_LONG_TESTS=1."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PORTRAIT4D_LONG_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="long test (over 5 min on 2 CPU cores): set PORTRAIT4D_LONG_TESTS=1 to run it")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
