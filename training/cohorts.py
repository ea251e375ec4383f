"""Cohorts and labels: who is predicted for, when, and what counts as the outcome.

Training builds its targets here and the engine takes its horizons from here, so a
"24 h risk" means the same thing offline and at the bedside.

Times are measured in hours from the *prediction time*: ``prediction_time_h`` hours
after ICU admission (48 h for the PhysioNet 2012 protocol; the engine predicts at
every scoring tick). A stay's follow-up ends at hospital discharge, or
``follow_up_days`` after it when deaths after discharge are known (death-registry
linkage, e.g. MIMIC-IV's ``dod`` covers one year); deaths after the end of follow-up
are not events (counting them while censoring survivors at discharge would bias the
curves).

>>> import polars as pl
>>> from datetime import datetime, timedelta, UTC
>>> t0 = datetime(2030, 1, 1, tzinfo=UTC)
>>> stays = pl.DataFrame({
...     "stay_id": [1, 2, 3],
...     "admit_time": [t0, t0, t0],
...     "discharge_time": [t0 + timedelta(days=3), None, t0 + timedelta(days=2)],
...     "hospital_discharge_time": [t0 + timedelta(days=10), t0 + timedelta(days=4),
...                                 t0 + timedelta(days=2)],
...     "death_time": [None, t0 + timedelta(days=4), t0 + timedelta(days=2)],
...     "in_hospital_death": [0, 1, 1],
... })
>>> surv = survival_targets(stays, Task(prediction_time_h=48))
>>> surv.select("stay_id", "event", "time_h").rows()
[(1, 0, 192.0), (2, 1, 48.0), (3, 1, 0.0)]
>>> horizon_labels(surv, (24.0, 72.0)).rows()
[(1, 0, 0), (2, 0, 1), (3, 1, 1)]
>>> in_icu_death(stays)["in_icu_death"].to_list()
[0, None, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

#: Horizons of the rolling risk the engine emits (hours): a day, three days, a week, 30 days.
DEFAULT_HORIZONS_H: tuple[float, ...] = (24.0, 72.0, 168.0, 720.0)


@dataclass(frozen=True)
class Task:
    """When predictions are made and what they predict."""

    prediction_time_h: float = 48.0
    horizons_h: tuple[float, ...] = DEFAULT_HORIZONS_H
    follow_up_days: float | None = None
    min_age: float | None = None
    alive_at_prediction: bool = False

    def __post_init__(self) -> None:
        if self.prediction_time_h < 0:
            raise ValueError("prediction_time_h must be >= 0")
        if not self.horizons_h or any(h <= 0 for h in self.horizons_h):
            raise ValueError("horizons_h must be positive")
        if list(self.horizons_h) != sorted(self.horizons_h):
            raise ValueError("horizons_h must be increasing")


def _hours(since: pl.Expr, until: pl.Expr) -> pl.Expr:
    return (until - since).dt.total_microseconds() / 3.6e9


def _prediction_time(task: Task) -> pl.Expr:
    return pl.col("admit_time") + pl.duration(microseconds=round(task.prediction_time_h * 3.6e9))


def survival_targets(stays: pl.DataFrame, task: Task) -> pl.DataFrame:
    """Time to death or censoring, in hours from the prediction time, for every stay.

    Columns: ``stay_id``, ``event`` (1 = died within follow-up), ``time_h`` (to death,
    or to the end of follow-up; clipped at 0 for deaths before the prediction time),
    ``follow_up_end`` (null when neither hospital nor ICU discharge is known).
    """
    prediction = _prediction_time(task)
    end = pl.coalesce("hospital_discharge_time", "discharge_time")
    if task.follow_up_days is not None:
        end = end + pl.duration(days=task.follow_up_days)
    known_death = pl.col("death_time").is_not_null()
    in_hospital = pl.col("in_hospital_death") == 1
    within = known_death & (pl.col("death_time") <= end)
    if task.follow_up_days is None:
        # Follow-up ends at hospital discharge: the source's in-hospital flag decides.
        died = pl.coalesce(in_hospital, within).fill_null(False)
    else:
        died = (within | in_hospital).fill_null(False)
    stop = pl.when(died & known_death).then(pl.col("death_time")).otherwise(end)
    return stays.select(
        "stay_id",
        event=died.cast(pl.Int8),
        time_h=_hours(prediction, stop).clip(lower_bound=0.0),
        follow_up_end=end,
    )


def horizon_labels(targets: pl.DataFrame, horizons_h: tuple[float, ...]) -> pl.DataFrame:
    """Death within each horizon: 1, 0, or null when follow-up ended before the horizon."""
    columns = {}
    for horizon in horizons_h:
        within = (pl.col("event") == 1) & (pl.col("time_h") <= horizon)
        known = within | (pl.col("time_h") >= horizon)
        columns[f"death_{horizon:g}h"] = pl.when(within).then(1).when(known).then(0).cast(pl.Int8)
    return targets.select("stay_id", **columns)


def in_icu_death(stays: pl.DataFrame) -> pl.DataFrame:
    """Death before leaving the ICU: null when the ICU discharge time is unknown."""
    died = pl.col("death_time").is_not_null() & (pl.col("death_time") <= pl.col("discharge_time"))
    return stays.select(
        "stay_id",
        in_icu_death=pl.when(pl.col("discharge_time").is_not_null()).then(died).cast(pl.Int8),
    )


def select_cohort(stays: pl.DataFrame, task: Task) -> tuple[pl.DataFrame, dict[str, int]]:
    """Stays eligible for the task, and how many each criterion excluded (in order)."""
    excluded: dict[str, int] = {}
    kept = stays
    if task.min_age is not None:
        before = kept.height
        kept = kept.filter(pl.col("age") >= task.min_age)
        excluded[f"age < {task.min_age:g} or unknown"] = before - kept.height
    if task.alive_at_prediction:
        before = kept.height
        alive = pl.col("death_time").is_null() | (pl.col("death_time") > _prediction_time(task))
        kept = kept.filter(alive)
        excluded[f"died before {task.prediction_time_h:g} h"] = before - kept.height
    return kept, excluded
