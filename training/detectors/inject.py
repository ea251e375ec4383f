"""Known artefacts injected into real canonical events, with their ground truth.

Each kind corrupts stretches of one stay's readings, counted in readings (so the same
rules suit 1/min monitor numerics and hourly charting):

==========  ========================================================================
kind        what the readings become
==========  ========================================================================
spike       1-3 readings of a vital multiplied by 1.35-1.8 or 0.2-0.65 (an oximeter
            only under-reads), as :mod:`bedside.replay.artefacts` simulates them
flatline    8-30 readings of a vital stuck at the reading before them (the sensor
            froze there)
drift       10-40 readings of a pressure or temperature off by 10% growing to 40%
            (a transducer drifting), up or down
dropout     every reading of the stay within the time span of 5-30 readings of its
            most recorded concept removed (a monitor unplugged); the removed rows
            are the ground truth
unit_error  1-3 readings in another unit the concept is known to be confused with
            (°F for °C, % for a fraction, mmol/L for mg/dL, ...: rules.unit_error_rules)
sensor_off  1-5 sample times at which every concept of one sensor reads 0 (an
            arterial line open to air; an oximeter probe off), as the simulator's
            ``arterial_zero`` and ``sensor_off``
==========  ========================================================================

Each eligible series (one concept of one stay; for ``dropout`` and ``sensor_off``, one
stay's sensor) with ``n`` readings gets a Poisson(``n / spacing``) number of artefacts,
at random places that do not overlap; ``spacing`` is 200 readings by default.

>>> from bedside.replay.simulator import simulate_cohort
>>> events, _, _ = simulate_cohort(stays=2, hours=12, seed=1, monitor_hz=1 / 60)
>>> corrupted, truth = inject(events, "spike", seed=1)
>>> corrupted.columns[-2:], sorted(truth["kind"].unique())
(['_id', 'injected'], ['spike'])
>>> int(corrupted["injected"].is_not_null().sum()) == int(truth["readings"].sum())
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import polars as pl

from bedside.replay.artefacts import SENSORS
from bedside.training.detectors.rules import unit_error_rules

ARTEFACT_KINDS: Final = ("spike", "flatline", "drift", "dropout", "unit_error", "sensor_off")

#: Vitals that spikes, flatlines and drifts hit.
SPIKED: Final = (
    "heart_rate",
    "pulse_rate",
    "spo2",
    "respiratory_rate",
    "arterial_systolic_bp",
    "arterial_mean_bp",
    "arterial_diastolic_bp",
    "noninvasive_systolic_bp",
    "noninvasive_mean_bp",
    "noninvasive_diastolic_bp",
    "pulmonary_systolic_pressure",
    "pulmonary_mean_pressure",
    "pulmonary_diastolic_pressure",
    "central_venous_pressure",
    "temperature",
)
FLATLINED: Final = (
    "heart_rate",
    "pulse_rate",
    "spo2",
    "respiratory_rate",
    "arterial_systolic_bp",
    "arterial_mean_bp",
    "arterial_diastolic_bp",
    "pulmonary_systolic_pressure",
    "pulmonary_mean_pressure",
    "pulmonary_diastolic_pressure",
    "central_venous_pressure",
)
DRIFTED: Final = (
    "arterial_systolic_bp",
    "arterial_mean_bp",
    "arterial_diastolic_bp",
    "pulmonary_systolic_pressure",
    "pulmonary_mean_pressure",
    "pulmonary_diastolic_pressure",
    "central_venous_pressure",
    "temperature",
)
#: Sensors whose every concept reads 0 when they are off.
SWITCHED_OFF: Final = ("arterial_line", "pleth")
#: Readings per series per artefact, on average.
SPACING: Final = 200.0

_LENGTHS: Final = {
    "spike": (1, 3),
    "flatline": (8, 30),
    "drift": (10, 40),
    "dropout": (5, 30),
    "unit_error": (1, 3),
    "sensor_off": (1, 5),
}

TRUTH_SCHEMA: Final = pl.Schema(
    {
        "stay_id": pl.Int64(),
        "code": pl.String(),
        "start": pl.Datetime("us", "UTC"),
        "end": pl.Datetime("us", "UTC"),
        "kind": pl.String(),
        "readings": pl.Int64(),
    }
)


def _places(rng: np.random.Generator, n: int, kind: str, spacing: float) -> list[tuple[int, int]]:
    """Non-overlapping ``(first, length)`` stretches in a series of ``n`` readings."""
    low, high = _LENGTHS[kind]
    if n < high + 2:
        return []
    taken = np.zeros(n, bool)
    places = []
    for _ in range(rng.poisson(n / spacing)):
        length = int(rng.integers(low, high + 1))
        first = int(rng.integers(1, n - length))  # never the first reading of a series
        if taken[max(0, first - 1) : first + length + 1].any():
            continue
        taken[first : first + length] = True
        places.append((first, length))
    return places


def _unit_converters(codes: Sequence[str]) -> dict[str, list[tuple[float, float]]]:
    """Per concept, the (scale, offset) that turn a right value into a wrong-unit one."""
    converters: dict[str, list[tuple[float, float]]] = {}
    for rule in unit_error_rules():
        if rule.concept in codes:
            # wrong = (right - offset) / scale, the inverse of the rule's correction.
            converters.setdefault(rule.concept, []).append(
                (1 / rule.scale, -rule.offset / rule.scale)
            )
    return converters


def inject(
    events: pl.DataFrame, kind: str, seed: int, spacing: float = SPACING
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events with artefacts of one kind, and the ground truth.

    Returns the events (sorted by stay, concept, time) with ``_id`` (the row's number
    in ``events``) and ``injected`` (the kind, or null for an untouched value), and a
    truth table: one row per artefact and concept, ``stay_id, code, start, end, kind``
    (as ``schemas.tables.ARTEFACTS``) plus ``readings`` (values changed or removed).
    """
    if kind not in ARTEFACT_KINDS:
        raise ValueError(f"unknown artefact kind {kind!r}; known: {ARTEFACT_KINDS}")
    rng = np.random.default_rng([seed, ARTEFACT_KINDS.index(kind)])
    frame = events.with_row_index("_id").sort("stay_id", "code", "time", "_id")
    original = frame["numeric_value"].to_numpy()
    values = original.copy()
    injected = np.zeros(values.size, bool)
    removed = np.zeros(values.size, bool)
    truth: list[tuple[int, str, object, object, str, int]] = []
    times = frame["time"]
    stay_ids = frame["stay_id"].to_numpy()
    codes = frame["code"].to_numpy()

    series = (
        frame.with_row_index("_at")
        .group_by("stay_id", "code", maintain_order=True)
        .agg(first=pl.col("_at").first(), n=pl.len())
    )

    def record(at: np.ndarray, code: str) -> None:
        truth.append(
            (int(stay_ids[at[0]]), code, times[int(at[0])], times[int(at[-1])], kind, at.size)
        )

    if kind in ("spike", "flatline", "drift", "unit_error"):
        eligible = {"spike": SPIKED, "flatline": FLATLINED, "drift": DRIFTED}.get(kind)
        converters = _unit_converters(list(set(codes))) if kind == "unit_error" else {}
        for _stay, code, first_at, n in series.iter_rows():
            if (eligible is not None and code not in eligible) or (
                kind == "unit_error" and code not in converters
            ):
                continue
            for first, length in _places(rng, n, kind, spacing):
                at = np.arange(first_at + first, first_at + first + length)
                if kind == "spike":
                    size = rng.uniform(0.35, 0.8)
                    up = code not in SENSORS["pleth"] and rng.random() < 0.5
                    values[at] = np.round(values[at] * (1 + size if up else 1 - size), 1)
                elif kind == "flatline":
                    values[at] = values[at[0] - 1]
                elif kind == "drift":
                    sign = 1 if rng.random() < 0.5 else -1
                    ramp = np.linspace(0.1, 0.4, at.size)
                    values[at] = np.round(values[at] * (1 + sign * ramp), 1)
                else:
                    scale, offset = converters[code][int(rng.integers(len(converters[code])))]
                    values[at] = np.round(values[at] * scale + offset, 2)
                changed = at[values[at] != original[at]]
                injected[changed] = True
                if changed.size:
                    record(changed, code)
    elif kind == "sensor_off":
        for sensor in SWITCHED_OFF:
            sensor_codes = set(SENSORS[sensor])
            rows = frame.with_row_index("_at").filter(pl.col("code").is_in(sensor_codes))
            for (_stay,), stay_rows in rows.group_by("stay_id", maintain_order=True):
                sample_times = stay_rows["time"].unique().sort()
                for first, length in _places(rng, sample_times.len(), kind, spacing):
                    span = sample_times.slice(first, length)
                    hit = stay_rows.filter(pl.col("time").is_in(span.implode()))
                    for (code,), code_rows in hit.group_by("code", maintain_order=True):
                        at = code_rows["_at"].to_numpy()
                        values[at] = 0.0
                        injected[at] = True
                        record(at, str(code))
    else:  # dropout
        for (_stay,), stay_rows in frame.with_row_index("_at").group_by(
            "stay_id", maintain_order=True
        ):
            busiest = stay_rows["code"].mode().sort()[0]
            clock = stay_rows.filter(pl.col("code") == busiest)["time"]
            for first, length in _places(rng, clock.len(), kind, spacing):
                start, end = clock[first], clock[first + length - 1]
                gone = stay_rows.filter(pl.col("time").is_between(start, end))
                for (code,), code_rows in gone.group_by("code", maintain_order=True):
                    at = code_rows["_at"].to_numpy()
                    removed[at] = True
                    record(at, str(code))

    corrupted = frame.with_columns(
        numeric_value=pl.Series(values),
        injected=pl.when(pl.Series(injected)).then(pl.lit(kind)).otherwise(pl.lit(None, pl.String)),
    ).filter(~pl.Series(removed))
    order = [c for c in corrupted.columns if c not in ("_id", "injected")]
    truth_frame = pl.DataFrame(truth, schema=TRUTH_SCHEMA, orient="row")
    return corrupted.select(*order, "_id", "injected"), truth_frame
