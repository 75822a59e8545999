"""The fault suite (`make faults`; also part of `make test`): every scenario runs on a real local cluster,
so each is marked integration (and faults, to select them: `pytest -m faults`)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.faults)
            if item.name != "test_modes":  # the proxy's own test needs no cluster
                item.add_marker(pytest.mark.integration)
