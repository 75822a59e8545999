"""The package worker finds kubemam-encrypt by configuration only: KUBEMAM_ENCRYPT, else PATH, else
a StepError that says so; it never builds it (the dev cluster does, and is not the product)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubemam.worker import package
from kubemam.worker.contract import StepError


def _tool(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "kubemam-encrypt"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    return tool


def test_the_variable_first_then_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configured, on_path = _tool(tmp_path / "configured"), _tool(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.setenv("KUBEMAM_ENCRYPT", str(configured))
    assert package._encryptor() == str(configured)
    monkeypatch.delenv("KUBEMAM_ENCRYPT")
    assert package._encryptor() == str(on_path)


def test_nowhere_is_a_step_error_in_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEMAM_ENCRYPT", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StepError, match="needs kubemam-encrypt.*KUBEMAM_ENCRYPT.*PATH"):
        package._encryptor()
    monkeypatch.setenv("KUBEMAM_ENCRYPT", str(tmp_path / "missing"))
    with pytest.raises(StepError, match="is not an executable file"):
        package._encryptor()
