"""The canonical tables every loader writes and every model reads.

``events``: a long, MEDS-style table, one row per measured value, in canonical units::

    subject_id  Int64       the patient
    stay_id     Int64       the ICU stay the value belongs to
    time        Datetime    when it was measured (UTC, microseconds)
    code        String      canonical concept name (``heart_rate``) or, for values kept
                            with ``--keep-unmapped``, ``<system>//<source code>``
    numeric_value Float64   the value in the concept's canonical unit
    source_code String      the code in the source (``physionet2012//HR``)

``stays``: one row per ICU stay with its static covariates and outcomes (see STAYS).
Times are the ICU stay's (admission, discharge) and the hospital admission's end, so
that in-ICU and in-hospital death can both be labelled (:mod:`bedside.training.cohorts`).
Sources without absolute times (PhysioNet 2012) anchor every stay at ``TIME_ANCHOR``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import polars as pl

#: Admission time given to stays whose source only has times since admission.
TIME_ANCHOR: Final = datetime(2000, 1, 1, tzinfo=UTC)

TIME = pl.Datetime("us", "UTC")

EVENTS: Final = pl.Schema(
    {
        "subject_id": pl.Int64(),
        "stay_id": pl.Int64(),
        "time": TIME,
        "code": pl.String(),
        "numeric_value": pl.Float64(),
        "source_code": pl.String(),
    }
)

ICU_TYPES: Final = ("coronary", "cardiac_surgery", "medical", "surgical", "neuro", "other")

STAYS: Final = pl.Schema(
    {
        "stay_id": pl.Int64(),
        "subject_id": pl.Int64(),
        "source": pl.String(),
        "admit_time": TIME,  # ICU admission
        "discharge_time": TIME,  # ICU discharge; null when the source does not say
        "hospital_discharge_time": TIME,  # end of the hospital admission; null when unknown
        "age": pl.Float64(),
        "sex": pl.String(),  # "F", "M" or null
        "height_cm": pl.Float64(),
        "weight_kg": pl.Float64(),
        "icu_type": pl.String(),  # one of ICU_TYPES or null
        "in_hospital_death": pl.Int8(),  # 0/1
        "death_time": TIME,  # null when not known to have died
        "survival_days": pl.Float64(),  # ICU admission to death; null when not known to die
        "los_days": pl.Float64(),  # ICU length of stay; null when unknown
        "hospital_los_days": pl.Float64(),  # ICU admission to hospital discharge
    }
)


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENTS)


def conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Select and cast the columns of a canonical table, in order; fail on missing ones."""
    missing = [name for name in schema if name not in frame.columns]
    if missing:
        raise ValueError(f"table lacks canonical columns {missing}")
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


#: Ground truth of injected artefacts (simulator, fault injection), next to the events as
#: ``artefacts.parquet``: which concept of which stay was corrupted, when, and how.
ARTEFACTS: Final = pl.Schema(
    {
        "stay_id": pl.Int64(),
        "code": pl.String(),
        "start": TIME,
        "end": TIME,
        "kind": pl.String(),  # spike, flatline, dropout, arterial_zero, sensor_off
    }
)
