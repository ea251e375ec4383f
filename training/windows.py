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
import math
from collections.abc import Mapping, Sequence
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


class RollingWindow:
    """A bed's window kept up to date sample by sample: the engine's side of :func:`window`.

    Steps are anchored at the stay's admission (``anchor_s``, seconds since the epoch), as
    offline. While the stay is younger than the window, the window is its first
    ``grid.steps`` steps, exactly as :func:`stay_windows` builds it; after that it rolls
    a whole step at a time, its last step being the one that holds the scoring time.
    Only each step's sum and count are kept (bounded state: ``2 x steps x variables``
    numbers). A value of a step after the window's last one evicts its first step, so the
    caller adds a value only once the windows scored before its time are out (the
    engine holds newer values back until then). :meth:`values` divides the sums in
    float64 and rounds to float32 as :func:`_bin` does, so the same values give the same
    window.

    >>> grid = Grid(concepts=("heart_rate", "spo2"), step_minutes=60, steps=3)
    >>> rolling = RollingWindow(grid, anchor_s=0.0)
    >>> for minute, concept, value in [(5, "heart_rate", 80), (50, "heart_rate", 90),
    ...                                (70, "spo2", 97)]:
    ...     _ = rolling.add(minute * 60.0, concept, value)
    >>> rolling.values(at_s=180 * 60.0)
    array([[85., nan],
           [nan, 97.],
           [nan, nan]], dtype=float32)
    >>> rolling.add(190 * 60.0, "spo2", 99)
    True
    >>> rolling.values(at_s=200 * 60.0)  # rolled by one step: steps 1 to 3
    array([[nan, 97.],
           [nan, nan],
           [nan, 99.]], dtype=float32)
    """

    def __init__(self, grid: Grid, anchor_s: float) -> None:
        self.grid = grid
        self.anchor_s = anchor_s
        self._index = {name: i for i, name in enumerate(grid.concepts)}
        shape = (grid.steps, len(grid.concepts))
        self._sums = np.zeros(shape, dtype=np.float64)
        self._counts = np.zeros(shape, dtype=np.int32)
        #: Which step each ring slot holds (-1: none yet).
        self._held = np.full(grid.steps, -1, dtype=np.int64)

    def step_of(self, time_s: float) -> int:
        """The step (from admission) a time falls in; negative before admission."""
        return math.floor((time_s - self.anchor_s) / (self.grid.step_minutes * 60.0))

    def first_step(self, at_s: float) -> int:
        """The first step of the window scored at ``at_s``."""
        step_s = self.grid.step_minutes * 60.0
        elapsed_steps = int(np.ceil((at_s - self.anchor_s) / step_s))
        return max(0, elapsed_steps - self.grid.steps)

    def add(self, time_s: float, concept: str, value: float) -> bool:
        """Count one value; False (and nothing kept) when outside the grid or too old."""
        variable = self._index.get(concept)
        if variable is None or not np.isfinite(value):
            return False
        slot = self._slot(self.step_of(time_s))
        if slot is None:
            return False
        self._sums[slot, variable] += value
        self._counts[slot, variable] += 1
        return True

    def add_values(self, time_s: float, values: dict[str, float]) -> int:
        """:meth:`add` for the values of one sample; how many were kept."""
        slot = self._slot(self.step_of(time_s))
        if slot is None:
            return 0
        kept = 0
        sums, counts, index = self._sums[slot], self._counts[slot], self._index
        for concept, value in values.items():
            variable = index.get(concept)
            if variable is not None and math.isfinite(value):
                sums[variable] += value
                counts[variable] += 1
                kept += 1
        return kept

    def add_samples(self, samples: Sequence[tuple[float, Mapping[str, float]]]) -> int:
        """:meth:`add_values` of samples ``(time, {concept: value})`` in time order; how
        many values were kept. A run of samples in one step is summed in one pass (the
        engine adds a minute of samples per score), then added to the step's sums: the
        same sums but for the last bits, which the window's float32 values do not keep."""
        kept = 0
        index = self._index
        start = 0
        while start < len(samples):
            step = self.step_of(samples[start][0])
            stop = start + 1
            while stop < len(samples) and self.step_of(samples[stop][0]) == step:
                stop += 1
            run, start = samples[start:stop], stop
            slot = self._slot(step)
            if slot is None:
                continue
            columns: list[int] = []
            values: list[float] = []
            last_keys: tuple[str, ...] = ()
            layout: tuple[int, ...] = ()
            for _, sample in run:
                keys = tuple(sample)
                if keys != last_keys:  # a source sends its concepts in the same order
                    last_keys, layout = keys, tuple(index.get(key, -1) for key in keys)
                columns.extend(layout)
                values.extend(sample.values())
            cells = np.array(columns, np.int64)
            numbers = np.array(values, np.float64)
            keep = (cells >= 0) & np.isfinite(numbers)
            width = len(index)
            self._sums[slot] += np.bincount(cells[keep], numbers[keep], minlength=width)
            self._counts[slot] += np.bincount(cells[keep], minlength=width).astype(np.int32)
            kept += int(keep.sum())
        return kept

    def _slot(self, step: int) -> int | None:
        """The ring slot of ``step``, emptied if it held an older step; None before
        admission or once the ring moved past the step."""
        if step < 0:
            return None
        slot = step % self.grid.steps
        held = self._held[slot]
        if held > step:
            return None
        if held < step:
            self._sums[slot] = 0.0
            self._counts[slot] = 0
            self._held[slot] = step
        return slot

    def _slots(self, at_s: float) -> tuple[np.ndarray, np.ndarray]:
        steps = np.arange(self.first_step(at_s), self.first_step(at_s) + self.grid.steps)
        slots = steps % self.grid.steps
        return slots, self._held[slots] == steps

    def values(self, at_s: float) -> np.ndarray:
        """The window (steps x variables) scored at ``at_s``; NaN = missing."""
        slots, current = self._slots(at_s)
        sums = np.where(current[:, None], self._sums[slots], 0.0)
        counts = np.where(current[:, None], self._counts[slots], 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / counts, np.nan).astype(np.float32)

    def observed_fraction(self, at_s: float) -> float:
        """Share of the elapsed cells of the window (steps up to ``at_s``) holding a value."""
        slots, current = self._slots(at_s)
        step_s = self.grid.step_minutes * 60.0
        elapsed = min(
            self.grid.steps,
            int(np.ceil((at_s - self.anchor_s) / step_s)) - self.first_step(at_s),
        )
        if elapsed <= 0:
            return 0.0
        observed = (self._counts[slots[:elapsed]] > 0) & current[:elapsed, None]
        return float(observed.sum()) / (elapsed * len(self.grid.concepts))
