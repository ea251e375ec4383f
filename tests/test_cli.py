"""The console entry point: fast help, lazy imports, one clear line for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bedside.cli import build_parser, main

HEAVY = ("torch", "bytewax", "river", "sklearn", "polars", "wfdb", "sqlalchemy")


def test_help_imports_no_heavy_package() -> None:
    code = (
        "import sys\n"
        "from bedside.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "usage: bedside" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "convert", "physionet2012", "--help"],
        ["data", "convert", "mimic-iv", "--help"],
        ["data", "convert", "meds", "--help"],
        ["data", "convert", "omop", "--help"],
        ["data", "simulate", "--help"],
        ["schemas", "export", "--help"],
        ["bench", "convert", "--help"],
        ["demo", "--help"],
    ],
)
def test_every_subcommand_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert "usage: bedside" in capsys.readouterr().out


def test_every_handler_resolves() -> None:
    import importlib

    parser = build_parser()
    targets = set()
    stack = [parser]
    while stack:
        current = stack.pop()
        if current.get_default("handler"):
            targets.add(current.get_default("handler"))
        for action in current._actions:
            if action.choices and isinstance(action.choices, dict):
                stack.extend(action.choices.values())
    assert len(targets) >= 5
    for target in targets:
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_missing_input_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["data", "convert", "physionet2012", str(tmp_path / "nope"), "--out", str(tmp_path)]
    )
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bedside: error:") and "nope" in err[0]
