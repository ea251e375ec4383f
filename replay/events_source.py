"""Canonical events and simulated wards as feeds.

``events DIR`` replays the output of ``bedside data convert ...`` or ``bedside data
simulate`` (``DIR/events.parquet`` and ``DIR/stays.parquet``): each stay gets a bed
(``bed-0001``, ... in order of admission) and all stays are time-aligned, admitted
together at the ward's start (the earliest admission keeps its recorded time). A stay
publishes ``Admit`` with its static covariates, one ``Vitals`` per instant and source
(``source`` is the source code without the variable: ``physionet2012``,
``simulator//monitor``), and leaves at its ICU discharge: ``Death`` when it died in the
ICU (as :func:`bedside.training.cohorts.in_icu_death` counts it), ``Discharge``
otherwise, at the last event when the discharge time is unknown. Events outside
admission to discharge, and codes the concept dictionary does not know (kept by
``--keep-unmapped`` conversions), are left out and reported once.

``simulate`` wraps :func:`bedside.replay.simulator.simulate_ward`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import polars as pl

from bedside.replay.simulator import SIMULATION_START, simulate_ward
from bedside.replay.ward import Draft, Feed, ReplayError, ReplayWarning, Timed, to_us
from bedside.schemas.concepts import load_concepts
from bedside.schemas.messages import Admit, Death, Discharge, Vitals
from bedside.schemas.tables import ICU_TYPES, STAYS, conform
from bedside.training.cohorts import in_icu_death

_ADMIT, _VALUES, _LEAVE = 0, 1, 2
_MAX_SOURCE: Final = 64


def events_feed(directory: Path, stays: int | None = None) -> Feed:
    """The stays of a canonical data folder as one time-aligned ward (see the module)."""
    events_path, stays_path = directory / "events.parquet", directory / "stays.parquet"
    for path in (events_path, stays_path):
        if not path.is_file():
            raise ReplayError(f"{path}: missing; give the output folder of `bedside data ...`")
    table = conform(pl.read_parquet(stays_path), STAYS).sort("admit_time", "stay_id")
    if stays is not None:
        table = table.head(stays)
    if table.height == 0:
        raise ReplayError(f"{stays_path}: no stays to replay")
    anchor = table["admit_time"].min()
    width = max(4, len(str(table.height)))
    known = list(load_concepts())
    events = (
        pl.scan_parquet(events_path)
        .join(table.lazy().select("stay_id", "admit_time"), on="stay_id", how="inner")
        .collect()
    )
    unmapped = events.filter(~pl.col("code").is_in(known))
    if unmapped.height:
        counts = unmapped.group_by("code").len().sort("len", descending=True)
        listed = ", ".join(f"{code} ({n})" for code, n in counts.head(8).iter_rows())
        warnings.warn(
            ReplayWarning(
                f"{unmapped.height} events with {counts.height} codes not in the concept "
                f"dictionary are not replayed: {listed}{', ...' if counts.height > 8 else ''}"
            ),
            stacklevel=2,
        )
    events = events.filter(pl.col("code").is_in(known) & pl.col("numeric_value").is_finite())
    last = events.group_by("stay_id").agg(last_event=pl.col("time").max())
    table = (
        table.join(last, on="stay_id", how="left")
        .join(in_icu_death(table), on="stay_id", how="left")
        .with_columns(
            bed=pl.format("bed-{}", pl.int_range(1, pl.len() + 1).cast(pl.String).str.zfill(width)),
            end=pl.coalesce("discharge_time", "last_event", "admit_time"),
        )
    )
    outside = events.join(table.select("stay_id", "end"), on="stay_id").filter(
        (pl.col("time") < pl.col("admit_time")) | (pl.col("time") > pl.col("end"))
    )
    if outside.height:
        warnings.warn(
            ReplayWarning(
                f"{outside.height} events before admission or after discharge are not replayed"
            ),
            stacklevel=2,
        )
    rows = _rows(events, table, anchor)
    end_us = to_us(anchor) + int(rows["due"].max())

    def read(since_us: int) -> Iterator[Timed]:
        start = since_us - to_us(anchor)
        wanted = rows.filter((pl.col("order") == _ADMIT) | (pl.col("due") >= start))
        return _messages(wanted, table, to_us(anchor))

    return Feed(start_us=to_us(anchor), end_us=end_us, read=read)


def _rows(events: pl.DataFrame, table: pl.DataFrame, anchor: object) -> pl.DataFrame:
    """One row per message: due (µs after the ward start), bed index, kind and values."""
    index = table.select("stay_id", "admit_time", "end", bed_index=pl.int_range(pl.len()))
    since_admit = (pl.col("time") - pl.col("admit_time")).dt.total_microseconds()
    values = (
        events.join(index, on="stay_id")
        .filter((pl.col("time") >= pl.col("admit_time")) & (pl.col("time") <= pl.col("end")))
        .with_columns(
            due=since_admit,
            source=pl.col("source_code")
            .str.replace(r"/+[^/]*$", "")
            .fill_null("events")
            .str.slice(0, _MAX_SOURCE),
        )
        .sort("due", "bed_index", "source", "code")
        .group_by("due", "bed_index", "source", maintain_order=True)
        .agg("code", "numeric_value")
        .with_columns(order=pl.lit(_VALUES))
    )
    stays = index.with_columns(leave=(pl.col("end") - pl.col("admit_time")).dt.total_microseconds())
    admits = stays.select("bed_index", due=pl.lit(0, pl.Int64), order=pl.lit(_ADMIT))
    leaves = stays.select("bed_index", due=pl.col("leave"), order=pl.lit(_LEAVE))
    return pl.concat([values, admits, leaves], how="diagonal_relaxed").sort(
        "due", "bed_index", "order", maintain_order=True
    )


def _messages(rows: pl.DataFrame, table: pl.DataFrame, anchor_us: int) -> Iterator[Timed]:
    stays = table.to_dicts()
    for due, bed_index, source, codes, values, order in rows.select(
        "due", "bed_index", "source", "code", "numeric_value", "order"
    ).iter_rows():
        stay = stays[bed_index]
        # Each stay is moved to start at the ward's start: its own times are kept relative.
        moment = anchor_us + due
        fields = {"bed": stay["bed"], "stay_id": str(stay["stay_id"])}
        if order == _VALUES:
            values = dict(zip(codes, values, strict=True))
            yield moment, Draft(Vitals, moment, {**fields, "source": source, "values": values})
        elif order == _ADMIT:
            yield moment, Draft(Admit, moment, {**fields, **_covariates(stay)})
        else:
            leave = Death if stay["in_icu_death"] == 1 else Discharge
            yield moment, Draft(leave, moment, fields)


def _covariates(stay: dict[str, object]) -> dict[str, object]:
    """The stay's static covariates that an ``Admit`` accepts (others are left out)."""
    bounds = {"age": (0, 130), "weight_kg": (0, 400), "height_cm": (0, 250)}
    found: dict[str, object] = {}
    for name, (low, high) in bounds.items():
        value = stay.get(name)
        if isinstance(value, float) and math.isfinite(value) and low < value <= high:
            found[name] = value
    if stay.get("sex") in ("F", "M"):
        found["sex"] = stay["sex"]
    if stay.get("icu_type") in ICU_TYPES:
        found["icu_type"] = stay["icu_type"]
    return found


def simulated_feed(
    beds: int, hours: float, seed: int, monitor_hz: float, los_scale: float = 1.0
) -> Feed:
    """A simulated ward of ``beds`` beds for ``hours`` hours (the simulator's messages)."""
    start_us = to_us(SIMULATION_START)

    def read(since_us: int) -> Iterator[Timed]:
        for message in simulate_ward(beds, hours, seed, monitor_hz, los_scale=los_scale):
            draft = Draft.of(message)
            yield draft.time_us, draft

    return Feed(
        start_us=start_us,
        end_us=start_us + round(hours * 3_600_000_000),
        read=read,
    )
