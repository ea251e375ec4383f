"""Stays as the generators see them, and the two formats synthetic stays are written in.

A :class:`StaySet` is ``n`` stays on a :class:`~bedside.training.windows.Grid` (by
default :data:`~bedside.training.windows.PHYSIONET_2012`, 48 hourly steps): the raw
window of each stay (canonical units, NaN = missing; values outside the concept's
plausible range dropped as recording errors, as the survival models do), its static
covariates, its outcome times in days from ICU admission, and in-hospital death.
Training reads one from canonical folders (:func:`read_stay_set`); a generator returns
one; :func:`write_canonical` and :func:`write_physionet2012` write it out.

Writing places the values of step ``k`` at ``k`` steps plus a whole number of minutes
(seeded, one per stay and step, as values drawn together share their time) after an
admission at :data:`~bedside.schemas.tables.TIME_ANCHOR`, so the windows of the written
stays are the generated windows again. Synthetic stays get ids from
:data:`SYNTHETIC_ID_BASE` + 1 on, apart from the PhysioNet (~130,000-165,000) and
MIMIC-IV (30-40 million) ids they may be combined with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from bedside.schemas.concepts import load_concepts
from bedside.schemas.tables import STAYS, TIME, TIME_ANCHOR, conform
from bedside.training.data.canonical import (
    ConversionReport,
    EventsWriter,
    write_report,
    write_stays,
)
from bedside.training.data.physionet2012 import ICU_TYPES as PHYSIONET_ICU_TYPES
from bedside.training.data.physionet2012 import OUTCOME_COLUMNS
from bedside.training.survival.data import read_folders
from bedside.training.survival.inputs import plausible_ranges
from bedside.training.windows import Grid, stay_windows

#: Numeric columns of the stays table that the generators learn (days from ICU admission
#: for the outcome times); ``sex`` and ``icu_type`` are categories, ``in_hospital_death``
#: the outcome they are conditioned on.
NUMERIC_STATICS = (
    "age",
    "height_cm",
    "weight_kg",
    "los_days",
    "hospital_los_days",
    "survival_days",
)
SYNTHETIC_ID_BASE = 90_000_000
#: The ``source_code`` system of synthetic events: ``synthetic//heart_rate``.
SOURCE_SYSTEM = "synthetic"
STATIC_SCHEMA = {
    **{c: pl.Float64 for c in NUMERIC_STATICS},
    "sex": pl.String,
    "icu_type": pl.String,
}


@dataclass(frozen=True)
class StaySet:
    """Windows, static covariates and outcome of ``n`` stays, row ``i`` of each together."""

    grid: Grid
    values: np.ndarray  # (n, steps, variables) float64, raw units, NaN = missing
    statics: pl.DataFrame  # n rows of the STATIC_SCHEMA columns; null = unknown
    death: np.ndarray  # (n,) int64, 1 = in-hospital death

    def __post_init__(self) -> None:
        n = self.values.shape[0]
        if self.values.shape[1:] != (self.grid.steps, len(self.grid.concepts)):
            raise ValueError(f"values {self.values.shape} do not fit the grid")
        if self.statics.height != n or self.death.shape != (n,):
            raise ValueError("values, statics and death must describe the same stays")

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def mask(self) -> np.ndarray:
        return ~np.isnan(self.values)

    def take(self, rows: np.ndarray) -> StaySet:
        rows = np.asarray(rows, dtype=np.int64)
        return StaySet(self.grid, self.values[rows], self.statics[rows], self.death[rows])

    def on_grid(self, grid: Grid) -> StaySet:
        """The same stays on another grid with the same steps (absent concepts missing)."""
        if (grid.steps, grid.step_minutes) != (self.grid.steps, self.grid.step_minutes):
            raise ValueError("grids differ in their steps")
        values = np.full((len(self), grid.steps, len(grid.concepts)), np.nan)
        for j, concept in enumerate(grid.concepts):
            if concept in self.grid.concepts:
                values[:, :, j] = self.values[:, :, self.grid.concepts.index(concept)]
        return StaySet(grid, values, self.statics, self.death)

    @staticmethod
    def concat(parts: Sequence[StaySet]) -> StaySet:
        return StaySet(
            parts[0].grid,
            np.concatenate([p.values for p in parts]),
            pl.concat([p.statics for p in parts]),
            np.concatenate([p.death for p in parts]),
        )


def drop_implausible(values: np.ndarray, grid: Grid) -> np.ndarray:
    """Values outside each concept's plausible range become missing."""
    ranges = np.asarray(plausible_ranges(grid.concepts), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = (values < ranges[:, 0]) | (values > ranges[:, 1])
    return np.where(bad, np.nan, values)


def stay_set(events: pl.DataFrame, stays: pl.DataFrame, grid: Grid) -> StaySet:
    """The stays with a known in-hospital outcome, in ``stay_id`` order."""
    known = stays.filter(pl.col("in_hospital_death").is_not_null()).sort("stay_id")
    if known.height == 0:
        raise ValueError("no stay has a known in-hospital outcome")
    windows = stay_windows(events, known, grid)
    statics = known.select(pl.col(c).cast(t) for c, t in STATIC_SCHEMA.items())
    return StaySet(
        grid=grid,
        values=drop_implausible(windows.values.astype(np.float64), grid),
        statics=statics,
        death=known["in_hospital_death"].cast(pl.Int64).to_numpy(),
    )


def read_stay_set(folders: Sequence[Path], grid: Grid) -> StaySet:
    events, stays = read_folders(folders)
    return stay_set(events, stays, grid)


def consistent_outcomes(statics: pl.DataFrame, death: np.ndarray) -> pl.DataFrame:
    """Outcome columns that agree with the outcome: a death generated without a survival
    time gets its hospital (else ICU) length of stay as one."""
    died = pl.Series(death == 1)
    return statics.with_columns(
        survival_days=pl.when(died)
        .then(pl.coalesce("survival_days", "hospital_los_days", "los_days"))
        .otherwise(pl.col("survival_days"))
    )


# --- writing ---------------------------------------------------------------------------


def stay_ids(n: int) -> np.ndarray:
    return SYNTHETIC_ID_BASE + 1 + np.arange(n, dtype=np.int64)


def value_rows(stays: StaySet, seed: int) -> pl.DataFrame:
    """One row per observed value: stay row, minutes since admission, concept, value."""
    rows, steps, variables = np.nonzero(stays.mask)
    rng = np.random.default_rng(seed)
    whole_minutes = max(int(stays.grid.step_minutes), 1)
    minute = rng.integers(0, whole_minutes, size=(len(stays), stays.grid.steps))
    minutes = np.floor(steps * stays.grid.step_minutes).astype(np.int64) + minute[rows, steps]
    return pl.DataFrame(
        {
            "row": rows.astype(np.int64),
            "minutes": minutes,
            "variable": variables.astype(np.int64),
            "code": np.asarray(stays.grid.concepts)[variables],
            "value": stays.values[rows, steps, variables],
        }
    ).sort("row", "minutes", "variable")


def canonical_tables(
    stays: StaySet, source: str, seed: int, ids: np.ndarray | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The canonical events and stays tables of synthetic stays (``source`` names them)."""
    ids = stay_ids(len(stays)) if ids is None else ids
    values = value_rows(stays, seed)
    values = values.with_columns(stay_id=pl.Series(ids[values["row"].to_numpy()]))
    events = values.select(
        subject_id=pl.col("stay_id"),
        stay_id=pl.col("stay_id"),
        time=pl.lit(TIME_ANCHOR) + pl.duration(minutes=pl.col("minutes")),
        code=pl.col("code"),
        numeric_value=pl.col("value"),
        source_code=pl.lit(f"{SOURCE_SYSTEM}//") + pl.col("code"),
    )
    anchor = pl.lit(TIME_ANCHOR, TIME)

    def at(days: str) -> pl.Expr:
        return anchor + pl.duration(microseconds=(pl.col(days) * 8.64e10).round().cast(pl.Int64))

    table = stays.statics.with_columns(
        stay_id=pl.Series(ids),
        in_hospital_death=pl.Series(stays.death).cast(pl.Int8),
    ).select(
        "stay_id",
        subject_id=pl.col("stay_id"),
        source=pl.lit(source),
        admit_time=anchor,
        discharge_time=at("los_days"),
        hospital_discharge_time=at("hospital_los_days"),
        age="age",
        sex="sex",
        height_cm="height_cm",
        weight_kg="weight_kg",
        icu_type="icu_type",
        in_hospital_death="in_hospital_death",
        death_time=at("survival_days"),
        survival_days="survival_days",
        los_days="los_days",
        hospital_los_days="hospital_los_days",
    )
    return events, conform(table, STAYS)


def write_canonical(stays: StaySet, out: Path, source: str, seed: int) -> ConversionReport:
    """``out/events.parquet``, ``out/stays.parquet`` and ``out/conversion_report.json``."""
    events, table = canonical_tables(stays, source, seed)
    report = ConversionReport(source=source)
    report.rows_read = events.height
    with EventsWriter(out, report) as writer:
        writer.write(events)
    write_stays(out, table, report)
    write_report(out, report)
    return report


def _number(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "-1"
    return f"{value:.6g}"


def write_physionet2012(
    stays: StaySet, out: Path, seed: int, set_name: str = "synthetic"
) -> tuple[Path, Path]:
    """The challenge's layout: ``out/set-<name>/<RecordID>.txt`` (descriptors at 00:00, then
    ``HH:MM,Parameter,Value`` rows) and ``out/Outcomes-<name>.txt``. The challenge gives
    length of stay and survival in whole days, and -1 for unknown; SAPS-I and SOFA are
    not generated (-1)."""
    concepts = load_concepts()
    parameters = [concepts[c].physionet2012[0] for c in stays.grid.concepts]
    missing = [c for c in stays.grid.concepts if not concepts[c].physionet2012]
    if missing:
        raise ValueError(f"concepts without a PhysioNet 2012 parameter: {missing}")
    icu_codes = {name: code for code, name in PHYSIONET_ICU_TYPES.items()}
    set_dir = out / f"set-{set_name}"
    set_dir.mkdir(parents=True, exist_ok=True)
    ids = stay_ids(len(stays))
    values = value_rows(stays, seed)
    by_row = values.partition_by("row", as_dict=True, include_key=False)
    outcomes = [",".join(OUTCOME_COLUMNS)]
    for i, row in enumerate(stays.statics.iter_rows(named=True)):
        sex = {"F": 0, "M": 1}.get(row["sex"], -1)
        icu = icu_codes.get(row["icu_type"], -1)
        lines = [
            "Time,Parameter,Value",
            f"00:00,RecordID,{ids[i]}",
            f"00:00,Age,{_number(row['age'])}",
            f"00:00,Gender,{sex}",
            f"00:00,Height,{_number(row['height_cm'])}",
            f"00:00,ICUType,{icu}",
            f"00:00,Weight,{_number(row['weight_kg'])}",
        ]
        frame = by_row.get((i,))
        if frame is not None:
            for minutes, variable, value in frame.select("minutes", "variable", "value").rows():
                lines.append(
                    f"{minutes // 60:02d}:{minutes % 60:02d},{parameters[variable]},{value:.6g}"
                )
        (set_dir / f"{ids[i]}.txt").write_text("\n".join(lines) + "\n")
        los = row["hospital_los_days"]
        survival = row["survival_days"]
        outcomes.append(f"{ids[i]},-1,-1,{_days(los)},{_days(survival)},{int(stays.death[i])}")
    outcomes_path = out / f"Outcomes-{set_name}.txt"
    outcomes_path.write_text("\n".join(outcomes) + "\n")
    return set_dir, outcomes_path


def _days(value: float | None) -> int:
    if value is None or not np.isfinite(value):
        return -1
    return max(round(value), 0)
