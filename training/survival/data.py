"""Stays, windows and targets for the survival models, from canonical data folders.

A :class:`Cohort` is what training and evaluation read: every stay of the folders (in
``stay_id`` order), its raw window on the model's grid (:func:`stay_windows`, the code
the engine's :func:`~bedside.training.windows.window` shares), its static covariates,
in-hospital death, and the survival target of :func:`~bedside.training.cohorts.survival_targets`
with the prediction time at the end of the window and ``follow_up_days`` of follow-up
after hospital discharge (PhysioNet 2012 and MIMIC-IV know deaths after discharge).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bedside.errors import BedsideError
from bedside.training.cohorts import Task, survival_targets
from bedside.training.survival.likelihood import interval_targets
from bedside.training.windows import Grid, stay_windows

#: Follow-up after hospital discharge in which deaths count (the grid reaches 30 days).
FOLLOW_UP_DAYS = 30.0


class CohortError(BedsideError, ValueError):
    """Data that cannot be used (no stays, clashing stay ids, no outcome)."""


def read_folders(folders: Sequence[Path]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events and stays of canonical folders, concatenated; stay ids must not clash."""
    events, stays = [], []
    for folder in folders:
        for name in ("events.parquet", "stays.parquet"):
            if not (folder / name).exists():
                raise FileNotFoundError(f"{folder / name}: not a canonical data folder")
        events.append(
            pl.read_parquet(
                folder / "events.parquet", columns=["stay_id", "time", "code", "numeric_value"]
            )
        )
        stays.append(pl.read_parquet(folder / "stays.parquet"))
    all_stays = pl.concat(stays, how="vertical_relaxed")
    if all_stays["stay_id"].n_unique() != all_stays.height:
        raise CohortError(f"stay ids repeat across {', '.join(map(str, folders))}")
    if all_stays.height == 0:
        raise CohortError("no stays in the data")
    return pl.concat(events, how="vertical_relaxed"), all_stays


def fingerprint(folders: Sequence[Path], stays: pl.DataFrame) -> dict[str, Any]:
    """What a model was trained on: folders, counts and a hash of the stay ids."""
    ids = np.sort(stays["stay_id"].to_numpy()).astype("<i8")
    return {
        "folders": [str(Path(f).resolve()) for f in folders],
        "n_stays": int(stays.height),
        "n_deaths": int(stays["in_hospital_death"].fill_null(0).sum()),
        "stay_ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
    }


@dataclass(frozen=True)
class Cohort:
    """Stays with their windows and targets, all in ``stay_id`` order."""

    stays: pl.DataFrame
    windows: np.ndarray  # (n, T, D) raw values, NaN = missing
    stay_ids: np.ndarray
    mortality: np.ndarray  # (n,) 0/1 in-hospital death
    time_h: np.ndarray  # (n,) hours from the prediction time to death or censoring; NaN unknown
    event: np.ndarray  # (n,) 0/1 death within follow-up

    def __len__(self) -> int:
        return int(self.stay_ids.size)

    def take(self, rows: np.ndarray) -> Cohort:
        return Cohort(
            stays=self.stays[rows],
            windows=self.windows[rows],
            stay_ids=self.stay_ids[rows],
            mortality=self.mortality[rows],
            time_h=self.time_h[rows],
            event=self.event[rows],
        )

    def intervals(self, ends_h: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        return interval_targets(self.time_h, self.event, ends_h)


def build_cohort(
    events: pl.DataFrame,
    stays: pl.DataFrame,
    grid: Grid,
    follow_up_days: float | None = FOLLOW_UP_DAYS,
) -> Cohort:
    """Windows and targets of every stay with a known in-hospital outcome."""
    known = stays.filter(pl.col("in_hospital_death").is_not_null()).sort("stay_id")
    if known.height == 0:
        raise CohortError("no stay has a known in-hospital outcome")
    windows = stay_windows(events, known, grid)
    task = Task(prediction_time_h=grid.minutes / 60.0, follow_up_days=follow_up_days)
    targets = survival_targets(known, task)
    return Cohort(
        stays=known,
        windows=windows.values,
        stay_ids=windows.stay_ids,
        mortality=known["in_hospital_death"].cast(pl.Int64).to_numpy(),
        time_h=targets["time_h"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
        event=targets["event"].cast(pl.Int64).to_numpy(),
    )
