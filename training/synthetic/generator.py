"""The one API both generators follow, how they are saved, and how they are found again.

A generator is fitted on a :class:`~bedside.training.synthetic.data.StaySet` within a
budget of seconds and steps, and samples stays conditioned on outcome (in-hospital
death) and ICU type. A saved generator is a folder:

* ``generator.json``: ``{"kind", "config", "encoding", "training"}`` (the encoding holds
  the training quantiles of every variable; see :mod:`~bedside.training.synthetic.encoding`);
* ``weights.pt``: the torch ``state_dict``, read back with ``torch.load(...,
  weights_only=True)`` (no pickle of code);
* ``training_curves.json`` and ``training_curves.png``: the losses as training went.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from bedside.errors import BedsideError
from bedside.training.synthetic.data import StaySet
from bedside.training.synthetic.encoding import Encoding

#: kind -> "module:Class"; imported only when used.
GENERATORS: dict[str, str] = {
    "gan": "bedside.training.synthetic.gan.model:ConditionalGan",
    "lm": "bedside.training.synthetic.lm.model:TokenLanguageModel",
}
CONFIG_FILE = "generator.json"
WEIGHTS_FILE = "weights.pt"
CURVES_FILE = "training_curves.json"
CURVES_PLOT = "training_curves.png"


class GeneratorError(BedsideError, ValueError):
    """A folder that holds no generator, or a generator asked for what it cannot do."""


class Generator(Protocol):
    kind: str
    encoding: Encoding
    training: dict[str, Any]
    history: list[dict[str, Any]]

    def fit(self, stays: StaySet, *, max_seconds: float, max_steps: int, seed: int) -> Self: ...

    def sample(
        self,
        n: int,
        *,
        seed: int,
        death_share: float | None = None,
        conditions: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> StaySet: ...

    def round_trip(self, stays: StaySet, *, seed: int) -> StaySet:
        """``stays`` (on the generator's grid) through its encoding and decoding, without
        its model: what a generator with a perfect model would sample for them."""
        ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Self: ...


def generator_class(kind: str) -> Any:
    if kind not in GENERATORS:
        raise GeneratorError(f"unknown generator {kind!r}; known: {', '.join(GENERATORS)}")
    module, _, name = GENERATORS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def settings(kind: str, pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` settings of a generator's configuration (``bedside synth train
    --set``), each typed as its default; an unknown key or a value of the wrong type is
    a :class:`GeneratorError` that names the known keys.

    >>> settings("lm", ["bins=64", "balance_outcomes=false"])
    {'bins': 64, 'balance_outcomes': False}
    """
    defaults = asdict(generator_class(kind)().config)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or key not in defaults:
            raise GeneratorError(
                f"--set {pair!r}: expected KEY=VALUE, KEY one of {', '.join(defaults)}"
            )
        default, text = defaults[key], text.strip()
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                out[key] = text.lower() in ("true", "1")
            else:
                out[key] = type(default)(text)
        except ValueError:
            raise GeneratorError(
                f"--set {key}: expected {type(default).__name__}, got {text!r}"
            ) from None
        if isinstance(out[key], int | float) and not isinstance(out[key], bool) and out[key] < 0:
            raise GeneratorError(f"--set {key}: {text} is negative")
    return out


def load_generator(directory: Path) -> Generator:
    path = directory / CONFIG_FILE
    if not path.exists():
        raise GeneratorError(f"{directory}: no {CONFIG_FILE}; not a generator folder")
    kind = json.loads(path.read_text())["kind"]
    generator: Generator = generator_class(kind).load(directory)
    return generator


def write_config(directory: Path, kind: str, config: dict[str, Any], generator: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "kind": kind,
        "config": config,
        "training": generator.training,
        "encoding": generator.encoding.to_dict(),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(document, indent=1) + "\n")


def load_weights(network: Any, directory: Path) -> None:
    """Load ``directory``'s weights into ``network`` without unpickling; weights of other
    shapes (an earlier version's layers) are refused with a clear error."""
    import torch

    state = torch.load(directory / WEIGHTS_FILE, weights_only=True, map_location="cpu")
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise GeneratorError(
            f"{directory}: its weights do not fit this version's generator (an earlier "
            "bedside trained it); train it again with `bedside synth train`"
        ) from error


def read_config(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / CONFIG_FILE).read_text())
    return data


def save_curves(directory: Path, history: list[dict[str, Any]], title: str) -> None:
    """The training records as JSON, and every numeric series but step and time as a PNG."""
    from matplotlib.figure import Figure

    directory.mkdir(parents=True, exist_ok=True)
    (directory / CURVES_FILE).write_text(json.dumps(history, indent=1) + "\n")
    series = sorted(
        {
            key
            for record in history
            for key, value in record.items()
            if isinstance(value, int | float) and key not in ("step", "seconds", "epoch")
        }
    )
    figure = Figure(figsize=(3.2 * max(len(series), 1), 2.8))
    axes = figure.subplots(1, max(len(series), 1), squeeze=False)[0]
    for ax, key in zip(axes, series, strict=False):
        points = [(r["step"], r[key]) for r in history if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), lw=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(directory / CURVES_PLOT, dpi=100)
