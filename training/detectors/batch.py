"""Flag anomalous values of a canonical events table, vectorised.

The rule-based detectors here are the online ones (:mod:`bedside.training.detectors`)
written for whole tables with polars and numpy, from the same rules
(:mod:`bedside.training.detectors.rules`): on the same events they flag the same values
with the same kinds as a bed running them sample by sample (the tests check it). How
events become samples: per stay in time order, the values at one time form one sample,
and a concept repeated at one time starts a new sample
(:func:`~bedside.training.detectors.bed.samples`).

>>> from datetime import datetime, UTC
>>> events = pl.DataFrame({
...     "stay_id": [1, 1, 1], "time": [datetime(2026, 1, 1, tzinfo=UTC)] * 3,
...     "code": ["heart_rate", "temperature", "fio2"], "numeric_value": [82.0, 98.6, 0.4]})
>>> flag_events(events).select("code", "anomalous", "anomaly_kind").rows()
[('heart_rate', False, None), ('temperature', True, 'unit_error'), ('fio2', False, None)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from bedside.schemas.concepts import load_concepts
from bedside.training.detectors.base import DetectorError
from bedside.training.detectors.rules import (
    FLATLINE_REPEATS,
    HAMPEL_K,
    HAMPEL_MIN_PERIODS,
    HAMPEL_MIN_SCALE,
    HAMPEL_WINDOW,
    MAD_TO_SD,
    PRESSURE_TRIPLETS,
    SENSOR_OFF,
    SENSOR_OFF_BELOW,
    STEP_RUN,
    unit_error_rules,
)

ROW = "_row"
#: Detectors :func:`flag_events` knows, in the order it applies them by default.
BATCH_DETECTORS = (
    "plausibility",
    "flatline",
    "robust_spike",
    "consistency",
    "multivariate",
    "isolation_forest",
)
#: Rows of robust-spike windows computed at once (bounds memory on large tables).
_CHUNK = 250_000


# --- per-row verdicts of the value rules --------------------------------------------


def _ranges() -> pl.DataFrame:
    concepts = load_concepts()
    return pl.DataFrame(
        {
            "code": list(concepts),
            "_low": [c.plausible[0] for c in concepts.values()],
            "_high": [c.plausible[1] for c in concepts.values()],
        }
    )


def _unit_rules() -> pl.DataFrame:
    rules = unit_error_rules()
    return pl.DataFrame(
        {
            "code": [r.concept for r in rules],
            "_rule_low": [r.low for r in rules],
            "_rule_high": [r.high for r in rules],
        }
    )


def value_verdicts(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (with ``_row``, ``code``, ``numeric_value``) plus ``_plausibility``
    (``unit_error``, ``implausible`` or null), ``_sensor_off`` and ``_signal`` (usable by
    the signal detectors): :func:`rules.check_value`, :func:`rules.sensor_off` and
    :func:`rules.is_signal` for every row at once."""
    value = pl.col("numeric_value")
    unit_rows = (
        frame.select(ROW, "code", "numeric_value")
        .join(_unit_rules(), on="code")
        .filter(value.is_between(pl.col("_rule_low"), pl.col("_rule_high")))
        .select(ROW)
        .unique()
        .with_columns(_unit=pl.lit(True))
    )
    judged = (
        frame.join(_ranges(), on="code", how="left", maintain_order="left")
        .join(unit_rows, on=ROW, how="left", maintain_order="left")
        .with_columns(
            _plausibility=pl.when(pl.col("_unit").fill_null(False))
            .then(pl.lit("unit_error"))
            .when(
                pl.col("_low").is_not_null()
                & ~(value.is_between(pl.col("_low"), pl.col("_high")) & value.is_not_nan())
            )
            .then(pl.lit("implausible")),
            _sensor_off=pl.col("code").is_in(list(SENSOR_OFF)) & (value.abs() < SENSOR_OFF_BELOW),
        )
        .with_columns(_signal=pl.col("_plausibility").is_null() & ~pl.col("_sensor_off"))
    )
    return judged.drop("_low", "_high", "_unit")


# --- detectors: each returns (_row, kind) of the rows it flags ------------------------


def _plausibility(frame: pl.DataFrame) -> pl.DataFrame:
    by_value = frame.filter(pl.col("_plausibility").is_not_null()).select(ROW, kind="_plausibility")
    return pl.concat([by_value, _pressure_order(frame)]).unique(ROW, keep="first")


def _pressure_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows breaking diastolic <= mean <= systolic within one sample (rules.pressure_order)."""
    parts = []
    for systolic, mean, diastolic in PRESSURE_TRIPLETS:
        rows = frame.filter(pl.col("code").is_in([systolic, mean, diastolic]) & pl.col("_signal"))
        if rows.is_empty():
            continue
        wide = rows.pivot(
            on="code",
            index=["stay_id", "time", "_nth"],
            values=["numeric_value", ROW],
            aggregate_function="first",
        )
        for name in (systolic, mean, diastolic):
            for prefix in ("numeric_value", ROW):
                column = f"{prefix}_{name}"
                if column not in wide.columns:
                    wide = wide.with_columns(pl.lit(None, pl.Float64).alias(column))
        sys_v = pl.col(f"numeric_value_{systolic}")
        mean_v = pl.col(f"numeric_value_{mean}")
        dia_v = pl.col(f"numeric_value_{diastolic}")
        inverted = (dia_v > sys_v).fill_null(False)
        # As rules.pressure_order: the mean sides with the pressure that is right.
        either = mean_v.is_null() | ((sys_v < mean_v) & (mean_v < dia_v))
        sys_wrong = inverted & (either | (mean_v >= dia_v)).fill_null(False)
        dia_wrong = inverted & (either | (mean_v <= sys_v)).fill_null(False)
        mean_out = ~inverted & (
            (mean_v > sys_v).fill_null(False) | (mean_v < dia_v).fill_null(False)
        )
        for name, broken in ((systolic, sys_wrong), (diastolic, dia_wrong), (mean, mean_out)):
            parts.append(
                wide.filter(broken)
                .select(pl.col(f"{ROW}_{name}").cast(pl.UInt32).alias(ROW))
                .drop_nulls()
            )
    if not parts:
        return pl.DataFrame(schema={ROW: pl.UInt32, "kind": pl.String})
    return pl.concat(parts).with_columns(kind=pl.lit("implausible"))


def position_in_runs(*columns: str) -> pl.Expr:
    """0, 1, 2, ... along each run of rows with equal ``columns`` (a sorted frame's groups),
    without a group-by: much faster than ``int_range(...).over(...)`` on many groups."""
    change = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift()) for c in columns])
    index = pl.int_range(pl.len(), dtype=pl.UInt32)
    return index - pl.when(change).then(index).forward_fill()


def _signal_series(frame: pl.DataFrame, codes: Sequence[str]) -> pl.DataFrame:
    """Usable readings of some concepts, each concept of each stay in reading order, with
    ``_position`` (0, 1, ... within the stay's concept)."""
    return (
        frame.filter(pl.col("code").is_in(list(codes)) & pl.col("_signal"))
        .sort("stay_id", "code", "time", ROW)
        .with_columns(_position=position_in_runs("stay_id", "code"))
    )


def _flatline(frame: pl.DataFrame) -> pl.DataFrame:
    off = frame.filter(pl.col("_sensor_off")).select(ROW, kind=pl.lit("sensor_off"))
    repeats = pl.DataFrame(
        {"code": list(FLATLINE_REPEATS), "_repeats": list(FLATLINE_REPEATS.values())}
    )
    series = _signal_series(frame, list(FLATLINE_REPEATS)).with_columns(
        # -0.0 and 0.0 are one reading, as they are equal online.
        _value=pl.col("numeric_value") + 0.0
    )
    stuck = (
        series.with_columns(_length=position_in_runs("stay_id", "code", "_value") + 1)
        .join(repeats, on="code")
        .filter(pl.col("_length") >= pl.col("_repeats"))
        .select(ROW, kind=pl.lit("flatline"))
    )
    return pl.concat([off, stuck])


def hampel_scores(values: np.ndarray, starts: np.ndarray, floors: np.ndarray) -> np.ndarray:
    """Hampel score of each reading against the previous ``HAMPEL_WINDOW`` of its series
    (NaN when fewer than ``HAMPEL_MIN_PERIODS``); ``starts[i]`` is the index where the
    series of reading ``i`` begins. Same arithmetic as :func:`robust_spike.hampel`."""
    n = values.size
    scores = np.full(n, np.nan)
    medians = np.full(n, np.nan)
    width = HAMPEL_WINDOW
    padded = np.concatenate([np.full(width, np.nan), values])
    for low in range(0, n, _CHUNK):
        high = min(n, low + _CHUNK)
        index = np.arange(low, high)
        # Row i's window holds readings i - width .. i - 1, from its own series only.
        window = np.lib.stride_tricks.sliding_window_view(padded[low : high + width - 1], width)
        window = window.copy()
        first = index[:, None] - width + np.arange(width)[None, :]
        window[first < starts[low:high, None]] = np.nan
        count = np.minimum(index - starts[low:high], width)
        judged = count >= HAMPEL_MIN_PERIODS
        ordered = np.sort(window[judged], axis=1)  # NaNs last
        counts = count[judged]
        rows = np.arange(ordered.shape[0])
        lo, hi = (counts - 1) // 2, counts // 2
        median = (ordered[rows, lo] + ordered[rows, hi]) / 2
        deviation = np.sort(np.abs(window[judged] - median[:, None]), axis=1)
        mad = (deviation[rows, lo] + deviation[rows, hi]) / 2
        scale = np.maximum(MAD_TO_SD * mad, floors[low:high][judged])
        at = index[judged]
        scores[at] = np.abs(values[at] - median) / (HAMPEL_K * scale)
        medians[at] = median
    return np.stack([scores, medians])


def _robust_spike(frame: pl.DataFrame) -> pl.DataFrame:
    series = _signal_series(frame, list(HAMPEL_MIN_SCALE))
    if series.is_empty():
        return pl.DataFrame(schema={ROW: pl.UInt32, "kind": pl.String})
    values = series["numeric_value"].to_numpy()
    starts = np.arange(series.height) - series["_position"].to_numpy()
    floors = series["code"].replace_strict(HAMPEL_MIN_SCALE, return_dtype=pl.Float64).to_numpy()
    scores, medians = hampel_scores(values, starts, floors)
    side = np.where(scores >= 1.0, np.sign(values - medians), 0).astype(np.int8)
    flagged = (
        series.select(ROW, "stay_id", "code")
        .with_columns(_side=pl.Series(side))
        .with_columns(_length=position_in_runs("stay_id", "code", "_side") + 1)
        .filter(pl.col("_side") != 0)
    )
    return flagged.select(
        ROW,
        kind=pl.when(pl.col("_length") >= STEP_RUN).then(pl.lit("step")).otherwise(pl.lit("spike")),
    )


def online_flags(
    frame: pl.DataFrame, names: Sequence[str], model_dir: Path | None = None
) -> dict[str, pl.DataFrame]:
    """``(_row, kind)`` flagged by online-only detectors, each run as a bed runs it: all
    online detectors over each stay, sample by sample (not vectorised: ~15 µs a value)."""
    from bedside.training.detectors.bed import run_online_rows

    rows: dict[str, list[tuple[int, str]]] = {name: [] for name in names}
    if not names:
        return {}
    for row, finding in run_online_rows(frame, model_dir=model_dir):
        if finding.detector in rows:
            rows[finding.detector].append((row, finding.kind))
    return {
        name: pl.DataFrame(found, schema={ROW: pl.UInt32, "kind": pl.String}, orient="row")
        .unique(ROW, keep="first")
        .sort(ROW)
        for name, found in rows.items()
    }


def _isolation_forest(frame: pl.DataFrame, model_dir: Path | None) -> pl.DataFrame:
    from bedside.training.detectors.isolation_forest import OfflineIsolationForest

    if model_dir is None:
        raise DetectorError("the isolation_forest detector needs a model folder (--model)")
    return OfflineIsolationForest.load(model_dir).flag_rows(frame)


_RULES: dict[str, Callable[[pl.DataFrame], pl.DataFrame]] = {
    "plausibility": _plausibility,
    "flatline": _flatline,
    "robust_spike": _robust_spike,
}
#: Detectors that only exist online; the batch path runs them stay by stay.
ONLINE_ONLY = ("consistency", "multivariate")


def prepare(events: pl.DataFrame) -> pl.DataFrame:
    """``events`` with ``_row`` (its row number), ``_nth`` (which sample of its stay and
    time a repeated concept goes to) and the per-value verdicts."""
    # Sorting by (stay, time) first, then by one integer key per (stay, time, code), is
    # several times faster than sorting or grouping by the three columns.
    by_time = events.with_row_index(ROW).sort("stay_id", "time", ROW)
    keyed = by_time.with_columns(
        _key=(position_in_runs("stay_id", "time") == 0).cum_sum().cast(pl.UInt64) * 65_536
        + pl.col("code").cast(pl.Categorical).to_physical().cast(pl.UInt64)
    ).sort("_key", maintain_order=True)
    frame = keyed.with_columns(_nth=position_in_runs("_key")).drop("_key").sort(ROW)
    return value_verdicts(frame)


def flag_events(
    events: pl.DataFrame,
    detectors: Sequence[str] = ("plausibility",),
    model_dir: Path | None = None,
) -> pl.DataFrame:
    """``events`` with ``anomalous`` (bool), ``anomaly_detector`` and ``anomaly_kind``.

    ``detectors`` are names from :data:`BATCH_DETECTORS`; a value several flag is
    credited to the first of them. ``plausibility``, ``flatline`` and ``robust_spike``
    are vectorised (1-3 s for the 1.7 million events of PhysioNet 2012 set A);
    ``consistency`` and ``multivariate`` run online, stay by stay, as a bed runs them
    (after the others, on the values they leave); ``isolation_forest`` needs
    the folder written by ``bedside train detectors`` (``model_dir``). Rows keep their
    order; events need ``stay_id``, ``time``, ``code`` and ``numeric_value``.
    """
    unknown = [name for name in detectors if name not in BATCH_DETECTORS]
    if unknown:
        raise DetectorError(f"unknown detectors {unknown}; known: {list(BATCH_DETECTORS)}")
    frame = prepare(events)
    names = list(dict.fromkeys(detectors))
    online = online_flags(frame, [n for n in names if n in ONLINE_ONLY], model_dir)
    verdicts = []
    for order, name in enumerate(names):
        if name == "isolation_forest":
            flagged = _isolation_forest(frame, model_dir)
        elif name in online:
            flagged = online[name]
        else:
            flagged = _RULES[name](frame)
        verdicts.append(
            flagged.select(
                pl.col(ROW).cast(pl.UInt32),
                pl.lit(order, pl.Int32).alias("_order"),
                pl.lit(name).alias("anomaly_detector"),
                pl.col("kind").cast(pl.String).alias("anomaly_kind"),
            )
        )
    columns = list(events.columns)
    if not verdicts:
        return events.with_columns(
            anomalous=pl.lit(False),
            anomaly_detector=pl.lit(None, pl.String),
            anomaly_kind=pl.lit(None, pl.String),
        )
    first = pl.concat(verdicts).sort("_order", ROW).unique(ROW, keep="first").drop("_order")
    flagged_frame = (
        frame.select(ROW, *columns)
        .join(first, on=ROW, how="left", maintain_order="left")
        .with_columns(anomalous=pl.col("anomaly_detector").is_not_null())
    )
    return flagged_frame.select(*columns, "anomalous", "anomaly_detector", "anomaly_kind")
