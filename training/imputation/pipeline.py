"""A trained imputation model: window grid, standardiser and imputer, saved together.

Training (``bedside train imputer``) writes it, ``bedside impute`` and the engine load
it: raw windows in the concepts' units go in, filled windows in the same units come
out, observed values unchanged. A model folder holds::

    model.json   {"format": 1, "grid": ..., "standardiser": ..., "kind": ...,
                  "untrained_concepts": [...], "training": {fingerprint of the data}}
    imputer/     the imputer's own saved folder (imputer.json and its weights)

Nothing is pickled. Grid variables without a single training value ("untrained", e.g.
labs a simulated cohort never draws) are standardised with mean 0 and std 1 and their
imputations mean nothing; they are listed so that users of the model leave them out.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bedside.errors import BedsideError
from bedside.training.imputation.base import Imputer, imputer_class, load_imputer
from bedside.training.windows import PHYSIONET_2012, Grid, Standardiser, Windows

#: Window grids selectable by name (``--grid``).
GRIDS: Mapping[str, Grid] = {"physionet2012": PHYSIONET_2012}

MODEL_FORMAT = 1


class ImputationError(BedsideError, ValueError):
    """Imputation cannot run on this input: missing data, model or optional package."""


def read_canonical(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The events and stays tables of a canonical data folder."""
    missing = [n for n in ("events.parquet", "stays.parquet") if not (folder / n).exists()]
    if missing:
        raise ImputationError(
            f"{folder}: not a canonical data folder (no {' or '.join(missing)}); "
            "write one with `bedside data convert` or `bedside data simulate`"
        )
    return pl.read_parquet(folder / "events.parquet"), pl.read_parquet(folder / "stays.parquet")


def concatenate(parts: list[Windows]) -> Windows:
    """Windows of several data folders as one batch; a stay may appear only once."""
    stay_ids = np.concatenate([w.stay_ids for w in parts])
    unique, counts = np.unique(stay_ids, return_counts=True)
    if (counts > 1).any():
        repeated = unique[counts > 1]
        raise ImputationError(
            f"{repeated.size} stay ids appear in more than one data folder "
            f"(e.g. {', '.join(map(str, repeated[:5]))})"
        )
    return Windows(
        grid=parts[0].grid,
        stay_ids=stay_ids,
        values=np.concatenate([w.values for w in parts]),
    )


def fit_standardiser(windows: Windows) -> tuple[Standardiser, tuple[str, ...]]:
    """Standardiser of the observed values, and the grid variables that had none.

    Variables without training values get mean 0 and std 1 (see the module docstring).
    """
    grid = windows.grid
    seen = (~np.isnan(windows.values)).any(axis=(0, 1))
    if seen.all():
        return Standardiser.fit(windows), ()
    if not seen.any():
        raise ImputationError("no value of any grid variable in the training data")
    sub_grid = Grid(
        concepts=tuple(c for c, s in zip(grid.concepts, seen, strict=True) if s),
        step_minutes=grid.step_minutes,
        steps=grid.steps,
    )
    partial = Standardiser.fit(Windows(sub_grid, windows.stay_ids, windows.values[..., seen]))
    mean, std = np.zeros(seen.size), np.ones(seen.size)
    mean[seen], std[seen] = partial.mean, partial.std
    untrained = tuple(c for c, s in zip(grid.concepts, seen, strict=True) if not s)
    return Standardiser(concepts=grid.concepts, mean=mean, std=std), untrained


def build_imputer(kind: str, seed: int, max_minutes: float | None = None) -> Imputer:
    """An unfitted imputer of ``kind``, given the seed and time budget it accepts."""
    try:
        cls = imputer_class(kind)
    except ImportError as error:
        raise ImputationError(f"the {kind} imputer is not available here ({error})") from error
    accepted = inspect.signature(cls).parameters
    options: dict[str, Any] = {}
    if "seed" in accepted:
        options["seed"] = seed
    if "max_minutes" in accepted and max_minutes is not None:
        options["max_minutes"] = max_minutes
    return cls(**options)


@dataclass(frozen=True)
class ImputationModel:
    """What ``bedside train imputer`` writes: everything needed to fill raw windows."""

    grid: Grid
    standardiser: Standardiser
    imputer: Imputer
    untrained: tuple[str, ...] = ()
    #: Where the training windows came from (folders, stay count and hash, seed, ...).
    training: dict[str, Any] = field(default_factory=dict)

    def impute(self, values: np.ndarray) -> np.ndarray:
        """Fill raw windows (one ``(steps, variables)`` or a batch); observed values kept."""
        filled = self.standardiser.inverse(self.imputer.impute(self.standardiser.transform(values)))
        return np.where(np.isnan(values), filled, values).astype(np.float32)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.imputer.save(directory / "imputer")
        description = {
            "format": MODEL_FORMAT,
            "grid": self.grid.to_dict(),
            "standardiser": self.standardiser.to_dict(),
            "kind": self.imputer.kind,
            "imputer": "imputer",
            "untrained_concepts": list(self.untrained),
            "training": self.training,
        }
        (directory / "model.json").write_text(json.dumps(description, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> ImputationModel:
        path = directory / "model.json"
        if not path.exists():
            raise ImputationError(
                f"{directory}: not an imputation model (no model.json); "
                "write one with `bedside train imputer`"
            )
        description = json.loads(path.read_text())
        if description.get("format") != MODEL_FORMAT:
            raise ImputationError(
                f"{path}: model format {description.get('format')!r}, "
                f"this version reads {MODEL_FORMAT}"
            )
        try:
            imputer = load_imputer(directory / description["imputer"])
        except ImportError as error:
            raise ImputationError(
                f"{directory}: its {description['kind']} imputer is not available here ({error})"
            ) from error
        return cls(
            grid=Grid.from_dict(description["grid"]),
            standardiser=Standardiser.from_dict(description["standardiser"]),
            imputer=imputer,
            untrained=tuple(description["untrained_concepts"]),
            training=description["training"],
        )
