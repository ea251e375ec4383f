"""Windows: a stay's values on a regular time grid, the one definition training and
engine share.

A :class:`Grid` is a list of concepts and ``steps`` steps of ``step_minutes`` each,
counted from a window start (ICU admission offline; *now minus the window length* in
the engine). Step ``k`` holds the mean of the values whose offset from the start
``t`` satisfies ``k * step <= t < (k + 1) * step``; values before the start or at or
after its end are outside the window; a step with no value is NaN (missing). Offline
(:func:`stay_windows`) and online (:func:`window`) both go through :func:`_bin`, so
the same values give the same window.

:data:`PHYSIONET_2012` is the protocol of ``../shared/BASELINES.md``: 48 hourly steps
of the 35 time-varying variables of the PhysioNet/CinC 2012 challenge (the 37 minus
mechanical ventilation and weight), in the baseline's order. With stays anchored at
admission, step ``h`` holds the mean of the values charted ``HH:MM`` with ``HH == h``,
and values at 48:00 fall outside.

>>> grid = Grid(concepts=("heart_rate", "spo2"), step_minutes=60, steps=3)
>>> window(grid, offsets_min=[5, 50, 70, 190], concepts=["heart_rate", "heart_rate", "spo2",
...        "spo2"], values=[80, 90, 97, 99])
array([[85., nan],
       [nan, 97.],
       [nan, nan]], dtype=float32)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl

from bedside.schemas.concepts import load_concepts


@dataclass(frozen=True)
class Grid:
    """The time grid and the variables of a window."""

    concepts: tuple[str, ...]
    step_minutes: float = 60.0
    steps: int = 48

    def __post_init__(self) -> None:
        if self.step_minutes <= 0 or self.steps < 1:
            raise ValueError("a grid needs step_minutes > 0 and steps >= 1")
        if len(set(self.concepts)) != len(self.concepts) or not self.concepts:
            raise ValueError("a grid needs distinct concepts")
        known = load_concepts()
        unknown = [c for c in self.concepts if c not in known]
        if unknown:
            raise ValueError(f"unknown concepts {unknown}")

    @property
    def minutes(self) -> float:
        """Length of the window."""
        return self.step_minutes * self.steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "concepts": list(self.concepts),
            "step_minutes": self.step_minutes,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        return cls(
            concepts=tuple(data["concepts"]),
            step_minutes=float(data["step_minutes"]),
            steps=int(data["steps"]),
        )


#: The 35 variables of the PhysioNet 2012 imputation protocol, in the baseline's order.
PHYSIONET_2012_VARIABLES = (
    *("DiasABP", "HR", "Na", "Lactate", "NIDiasABP", "PaO2", "WBC", "pH", "Albumin", "ALT"),
    *("Glucose", "SaO2", "Temp", "AST", "Bilirubin", "HCO3", "BUN", "RespRate", "Mg", "HCT"),
    *("SysABP", "FiO2", "K", "GCS", "Cholesterol", "NISysABP", "TroponinT", "MAP"),
    *("TroponinI", "PaCO2", "Platelets", "Urine", "NIMAP", "Creatinine", "ALP"),
)


def _physionet_grid() -> Grid:
    concepts = load_concepts()
    names = []
    for parameter in PHYSIONET_2012_VARIABLES:
        found = concepts.from_source("physionet2012", parameter)
        assert found is not None, parameter
        names.append(found[0].name)
    return Grid(concepts=tuple(names), step_minutes=60.0, steps=48)


PHYSIONET_2012: Grid = _physionet_grid()


def _bin(
    rows: np.ndarray,
    steps: np.ndarray,
    variables: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int, int],
) -> np.ndarray:
    """Mean of the values falling in each (row, step, variable) cell; NaN where none."""
    sums = np.zeros(shape, dtype=np.float64)
    counts = np.zeros(shape, dtype=np.int64)
    np.add.at(sums, (rows, steps, variables), values)
    np.add.at(counts, (rows, steps, variables), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan).astype(np.float32)


def _steps(offsets_min: np.ndarray, grid: Grid) -> np.ndarray:
    return np.floor(offsets_min / grid.step_minutes).astype(np.int64)


def window(
    grid: Grid,
    offsets_min: Sequence[float] | np.ndarray,
    concepts: Sequence[str],
    values: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """One window (steps x variables) from values at offsets (minutes) from its start.

    Values of concepts not in the grid, and outside the window, are ignored.
    """
    offsets = np.asarray(offsets_min, dtype=np.float64)
    numbers = np.asarray(values, dtype=np.float64)
    index = {name: i for i, name in enumerate(grid.concepts)}
    variables = np.array([index.get(c, -1) for c in concepts], dtype=np.int64)
    steps = _steps(offsets, grid)
    keep = (variables >= 0) & (steps >= 0) & (steps < grid.steps) & np.isfinite(numbers)
    shape = (1, grid.steps, len(grid.concepts))
    rows = np.zeros(int(keep.sum()), dtype=np.int64)
    return _bin(rows, steps[keep], variables[keep], numbers[keep], shape)[0]


@dataclass(frozen=True)
class Windows:
    """Windows of many stays: ``values[i]`` is the window of ``stay_ids[i]``."""

    grid: Grid
    stay_ids: np.ndarray  # int64, shape (n,)
    values: np.ndarray  # float32, shape (n, steps, variables), NaN = missing

    @property
    def mask(self) -> np.ndarray:
        """True where a value was observed."""
        return ~np.isnan(self.values)


def stay_windows(events: pl.DataFrame, stays: pl.DataFrame, grid: Grid) -> Windows:
    """The first window of every stay, starting at ICU admission (the offline case).

    Every stay of ``stays`` gets a window, in ``stay_id`` order, even one without events.
    """
    stays = stays.select("stay_id", "admit_time").sort("stay_id")
    codes = pl.DataFrame(
        {"code": list(grid.concepts), "variable": np.arange(len(grid.concepts))},
        schema={"code": pl.String, "variable": pl.Int64},
    )
    rows = (
        events.lazy()
        .select("stay_id", "time", "code", "numeric_value")
        .join(codes.lazy(), on="code", how="inner")
        .join(stays.lazy().with_row_index("row"), on="stay_id", how="inner")
        .select(
            pl.col("row").cast(pl.Int64),
            "variable",
            offset=(pl.col("time") - pl.col("admit_time")).dt.total_microseconds() / 6e7,
            value=pl.col("numeric_value"),
        )
        .collect()
    )
    offsets = rows["offset"].to_numpy()
    values = rows["value"].to_numpy()
    steps = _steps(offsets, grid)
    keep = (steps >= 0) & (steps < grid.steps) & np.isfinite(values)
    shape = (stays.height, grid.steps, len(grid.concepts))
    tensor = _bin(
        rows["row"].to_numpy()[keep],
        steps[keep],
        rows["variable"].to_numpy()[keep],
        values[keep],
        shape,
    )
    return Windows(grid=grid, stay_ids=stays["stay_id"].to_numpy(), values=tensor)


@dataclass(frozen=True)
class Standardiser:
    """Per-variable mean and standard deviation (ddof 0) of observed training values."""

    concepts: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, windows: Windows) -> Standardiser:
        values = windows.values.reshape(-1, windows.values.shape[-1]).astype(np.float64)
        observed = ~np.isnan(values)
        if not observed.any(axis=0).all():
            empty = [
                c
                for c, seen in zip(windows.grid.concepts, observed.any(axis=0), strict=True)
                if not seen
            ]
            raise ValueError(f"no training values for {empty}")
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        std = np.where(std > 0, std, 1.0)
        return cls(concepts=windows.grid.concepts, mean=mean, std=std)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return (values * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "concepts": list(self.concepts),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            concepts=tuple(data["concepts"]),
            mean=np.asarray(data["mean"], dtype=np.float64),
            std=np.asarray(data["std"], dtype=np.float64),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Self:
        return cls.from_dict(json.loads(path.read_text()))
