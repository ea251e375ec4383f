"""Every ``>>>`` example in the package's docstrings runs and gives what it shows."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "bedside.schemas.concepts",
    "bedside.schemas.messages",
    "bedside.training.cohorts",
    "bedside.training.windows",
    "bedside.training.imputation.protocol",
    "bedside.training.data.mimic_iv",
    "bedside.training.data.omop",
    "bedside.replay.physiology",
    "bedside.replay.simulator",
    "bedside.engine.settings",
    "bedside.engine.alerts",
    "bedside.training.registry",
    "bedside.training.survival.bench",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
