"""The CLI finds `kubemam local` and `kubemam demo` through the `kubemam.commands` entry points that
kubemam-local registers, and says how to install it when it is not there."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from kubemam import cli


def test_kubemam_local_registers_local_and_demo() -> None:
    registered = {e.name: e.value for e in importlib.metadata.entry_points(group=cli.COMMAND_GROUP)}
    assert registered == {"local": "kubemam_local.commands:add_local", "demo": "kubemam_local.commands:add_demo"}
    args = cli.build_parser().parse_args(["local", "up", "--state-dir", "/tmp/x"])
    assert args.func.__module__ == "kubemam_local.commands" and args.state_dir == "/tmp/x"
    demo = cli.build_parser().parse_args(["demo", "--master-size", "640x360", "--master-seconds", "10"])
    assert demo.func.__module__ == "kubemam_local.commands" and demo.master_size == (640, 360)


@pytest.mark.parametrize("argv", [["local", "up"], ["local", "--state-dir", "/tmp/x", "down"], ["local", "-h"],
                                  ["demo"], ["demo", "--watch", "60"]])
def test_without_kubemam_local_the_dev_commands_say_how_to_install_it(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kubemam {argv[0]}: the development cluster is a separate distribution, kubemam-local")
    assert "pip install -e operator/local" in err


def test_without_kubemam_local_other_commands_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
    parser = cli.build_parser()
    assert {"crds", "run", "worker", "report", "status", "describe", "local", "demo"} <= set(
        parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", "--no-such-flag"])
    assert exit_.value.code == 2


def test_a_plugin_that_fails_to_load_costs_only_its_own_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    broken = importlib.metadata.EntryPoint("local", "kubemam_no_such_module:add", cli.COMMAND_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [broken])
    assert cli.main(["local", "up"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kubemam local: kubemam_no_such_module:add") and "failed to load" in err
    assert cli.build_parser().parse_args(["crds", "--check"]).check


def test_the_product_does_not_import_the_dev_cluster() -> None:
    """Importing the CLI and parsing a worker command loads no module of kubemam_local but the light
    commands module the entry point names (which imports only the standard library)."""
    import subprocess

    code = ("import sys; from kubemam import cli; cli.build_parser().parse_args(['worker', 'ingest']); "
            "print(sorted(m for m in sys.modules if m.startswith('kubemam_local')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['kubemam_local', 'kubemam_local.commands']"
