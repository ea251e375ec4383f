"""Recording artefacts injected into a simulated stay, with their ground truth.

Each artefact hits one sensor over an interval, and every recorded value of the
sensor's concepts inside the interval (monitor numerics and charted values alike,
since nurses chart what the monitor shows) is changed the same way:

==============  ===============================================================
kind            what the recorded values become
==============  ===============================================================
spike           multiplied by one factor for 1 to 3 samples (double counting,
                motion, a flush), or one mistyped charted value
flatline        stuck at the value the sensor read when it froze
dropout         missing: the monitor is disconnected, every numeric is gone
arterial_zero   0 on all three arterial pressures: the line is open to air
                while it is zeroed, flushed or sampled
sensor_off      0 for SpO2 and pulse rate: the oximeter probe is off
==============  ===============================================================

The ground truth has one row per affected concept (``stay_id, code, start, end,
kind``), its interval shrunk to the first and last affected value, so that a detector
can be scored against exactly what is in the events. Artefacts of one concept never
overlap, and every one affects at least one recorded value (a flatline, two).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import polars as pl

from bedside.replay.charting import (
    ARTERIAL_BP,
    CODE_INDEX,
    NONINVASIVE_BP,
    MonitorClock,
    Observations,
    monitor_codes,
    noise_free,
    rounded,
)
from bedside.replay.physiology import MINUTE_US, Patient
from bedside.schemas.tables import TIME

ArtefactKind = Literal["spike", "flatline", "dropout", "arterial_zero", "sensor_off"]

#: The devices artefacts hit, and the concepts each one records.
SENSORS: Final = {
    "ecg": ("heart_rate",),
    "pleth": ("spo2", "pulse_rate"),
    "respiration": ("respiratory_rate",),
    "arterial_line": ARTERIAL_BP,
    "cuff": NONINVASIVE_BP,
    "thermometer": ("temperature",),
}
MONITOR_SENSORS: Final = ("ecg", "pleth", "respiration", "arterial_line")


@dataclass(frozen=True)
class IntervalRule:
    """How often an interval artefact happens on one sensor, and for how long."""

    sensors: tuple[str, ...]  # "monitor" = the whole monitor at once
    per_hour: float
    median_minutes: float
    log_sd: float


INTERVALS: Final[dict[ArtefactKind, IntervalRule]] = {
    "dropout": IntervalRule(("monitor",), 1 / 24, 10.0, 0.7),
    "flatline": IntervalRule(MONITOR_SENSORS, 1 / 24, 20.0, 0.9),
    "arterial_zero": IntervalRule(("arterial_line",), 1 / 6, 3.0, 0.5),
    "sensor_off": IntervalRule(("pleth",), 1 / 8, 4.0, 0.8),
}
#: Spikes per hour on each monitored sensor, and the chance a charted value is one.
MONITOR_SPIKES_PER_HOUR: Final = 0.5
CHART_SPIKE_CHANCE: Final = 0.004


@dataclass(frozen=True)
class Artefact:
    """One artefact on one concept: recorded values in ``[start_us, end_us]`` are changed.

    ``value`` is what they read instead (the stuck value, 0, or None when missing);
    a spike multiplies them by ``factor``.
    """

    stay_id: int
    code: str
    start_us: int
    end_us: int
    kind: ArtefactKind
    value: float | None = None
    factor: float = 1.0


class _Timeline:
    """When each concept of one stay is recorded: monitor ticks and chart times."""

    def __init__(self, patient: Patient, charted: Observations, clock: MonitorClock | None) -> None:
        self.patient = patient
        self.clock = clock
        self.monitored = set(monitor_codes(patient)) if clock else set()
        self.charted = {
            code: charted.time_us[charted.code == index] for code, index in CODE_INDEX.items()
        }

    def span(self, code: str, start_us: int, end_us: int) -> tuple[int, int, int]:
        """First and last recording time of ``code`` in ``[start_us, end_us]``, and a count."""
        times = self.charted[code]
        low = int(np.searchsorted(times, start_us, side="left"))
        high = int(np.searchsorted(times, end_us, side="right"))
        firsts, lasts, count = list(times[low:high][:1]), list(times[low:high][-1:]), high - low
        if code in self.monitored and self.clock is not None:
            ticks_from = self.clock.index(max(start_us, self.patient.admit_us))
            ticks_to = self.clock.index(min(end_us + 1, self.patient.horizon_us))
            if ticks_to > ticks_from:
                firsts.append(self.clock.origin_us + ticks_from * self.clock.period_us)
                lasts.append(self.clock.origin_us + (ticks_to - 1) * self.clock.period_us)
                count += ticks_to - ticks_from
        if not count:
            return 0, 0, 0
        return int(min(firsts)), int(max(lasts)), count


def plan_artefacts(
    patient: Patient,
    charted: Observations,
    clock: MonitorClock | None,
    rng: np.random.Generator,
) -> list[Artefact]:
    """Draw the artefacts of one observed stay, sorted by start."""
    timeline = _Timeline(patient, charted, clock)
    taken: dict[str, list[tuple[int, int]]] = defaultdict(list)
    planned: list[Artefact] = []
    sensors = [s for s in SENSORS if s != "arterial_line" or patient.arterial_line]
    stay_us = patient.horizon_us - patient.admit_us

    def place(
        kind: ArtefactKind, codes: Iterable[str], start: int, end: int, factor: float
    ) -> None:
        spans = {code: timeline.span(code, start, end) for code in codes}
        needed = 2 if kind == "flatline" else 1
        spans = {code: span for code, span in spans.items() if span[2] >= needed}
        clash = any(
            first <= other_end and other_start <= last
            for code, (first, last, _) in spans.items()
            for other_start, other_end in taken[code]
        )
        if clash:
            return
        if kind == "flatline":
            # The sensor freezes at what it read when it froze.
            values: dict[str, float | None] = {}
            for first in {first for first, _, _ in spans.values()}:
                codes = [code for code, span in spans.items() if span[0] == first]
                values |= noise_free(patient, codes, first)
        else:
            zero = 0.0 if kind in ("arterial_zero", "sensor_off") else None
            values = dict.fromkeys(spans, zero)
        for code, (first, last, _) in spans.items():
            taken[code].append((first, last))
            planned.append(Artefact(patient.stay_id, code, first, last, kind, values[code], factor))

    for kind, rule in INTERVALS.items():
        for sensor in rule.sensors:
            if sensor != "monitor" and sensor not in sensors:
                continue
            codes = monitor_codes(patient) if sensor == "monitor" else SENSORS[sensor]
            for _ in range(rng.poisson(rule.per_hour * patient.horizon_h)):
                start = patient.admit_us + int(rng.uniform(0, stay_us))
                minutes = rule.median_minutes * np.exp(rule.log_sd * rng.normal())
                place(kind, codes, start, start + int(minutes * MINUTE_US), 1.0)

    for sensor in sensors:
        codes = SENSORS[sensor]
        if clock is not None and sensor in MONITOR_SENSORS:
            ticks = clock.index(patient.horizon_us) - clock.index(patient.admit_us)
            for _ in range(rng.poisson(MONITOR_SPIKES_PER_HOUR * patient.horizon_h)):
                first = clock.origin_us + clock.period_us * (
                    clock.index(patient.admit_us) + int(rng.integers(max(ticks, 1)))
                )
                length = int(rng.integers(1, 4))
                last = first + (length - 1) * clock.period_us
                place("spike", codes, first, last, _spike_factor(rng, sensor))
        charted_times = np.unique(np.concatenate([timeline.charted[c] for c in codes]))
        for time_us in charted_times[rng.random(charted_times.size) < CHART_SPIKE_CHANCE]:
            place("spike", codes, int(time_us), int(time_us), _spike_factor(rng, sensor))
    return sorted(planned, key=lambda a: (a.start_us, a.code))


def _spike_factor(rng: np.random.Generator, sensor: str) -> float:
    """Spikes go up or down by 35 to 80%; an oximeter only ever under-reads."""
    size = rng.uniform(0.35, 0.8)
    up = sensor != "pleth" and rng.random() < 0.5
    return float(1 + size if up else 1 - size)


def apply_artefacts(observations: Observations, artefacts: Sequence[Artefact]) -> Observations:
    """The observations as the artefacts leave them."""
    if not artefacts or not len(observations):
        return observations
    earliest, latest = observations.time_us.min(), observations.time_us.max()
    value = observations.value.copy()
    keep = np.ones(value.size, bool)
    for artefact in artefacts:
        if artefact.end_us < earliest or artefact.start_us > latest:
            continue
        hit = (
            (observations.code == CODE_INDEX[artefact.code])
            & (observations.time_us >= artefact.start_us)
            & (observations.time_us <= artefact.end_us)
        )
        if artefact.kind == "dropout":
            keep &= ~hit
        elif artefact.kind == "spike":
            value[hit] = rounded(artefact.code, value[hit] * artefact.factor)
        else:
            value[hit] = artefact.value
    changed = Observations(observations.time_us, observations.code, value, observations.source)
    return changed.where(keep)


def artefacts_frame(artefacts: Iterable[Artefact]) -> pl.DataFrame:
    """The ground-truth table (``ARTEFACTS``) of some artefacts."""
    rows = [(a.stay_id, a.code, a.start_us, a.end_us, a.kind) for a in artefacts]
    frame = pl.DataFrame(
        rows,
        schema={
            "stay_id": pl.Int64,
            "code": pl.String,
            "start": pl.Int64,
            "end": pl.Int64,
            "kind": pl.String,
        },
        orient="row",
    )
    return frame.with_columns(pl.col("start", "end").cast(TIME)).sort("stay_id", "start", "code")
