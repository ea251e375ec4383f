"""How a simulated patient's physiology becomes recorded values.

Three sources, as on a real unit:

* ``monitor``: bedside-monitor numerics on a regular clock (1 Hz, or one a minute),
  heart rate, pulse rate, SpO2, respiratory rate and, with an arterial line, arterial
  pressures; measurement noise is autocorrelated over tens of seconds.
* ``chart``: nurse rounds about hourly with jitter, more often when the patient is
  sicker; each round records some of the vitals (temperature and GCS every few hours,
  urine output as the volume since the previous record), with items left out at random.
* ``lab``: panels every 4 to 12 hours (chemistry, blood count, blood gas with lactate).

Values are rounded as devices and charts record them and clipped into the concept's
plausible range; only injected artefacts (:mod:`bedside.replay.artefacts`) leave it.
Observations travel as :class:`Observations`, four parallel arrays in long form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from bedside.replay.physiology import (
    HOUR_US,
    LABS,
    MINUTE_US,
    Patient,
    ar1,
    expected_lab,
    expected_vitals,
)
from bedside.schemas.concepts import load_concepts

MONITOR, CHART, LAB = 0, 1, 2
SOURCE_NAMES: Final = ("monitor", "chart", "lab")

ARTERIAL_BP: Final = ("arterial_systolic_bp", "arterial_mean_bp", "arterial_diastolic_bp")
NONINVASIVE_BP: Final = (
    "noninvasive_systolic_bp",
    "noninvasive_mean_bp",
    "noninvasive_diastolic_bp",
)
#: Every concept the simulator records, and the resolution it is recorded at.
RESOLUTION: Final = {
    "heart_rate": 1.0,
    "pulse_rate": 1.0,
    "spo2": 1.0,
    "respiratory_rate": 1.0,
    **dict.fromkeys(ARTERIAL_BP, 1.0),
    **dict.fromkeys(NONINVASIVE_BP, 1.0),
    "temperature": 0.1,
    "fio2": 0.05,
    "mechanical_ventilation": 1.0,
    "gcs": 1.0,
    "urine_output": 5.0,
    "lactate": 0.1,
    "creatinine": 0.01,
    "bun": 1.0,
    "potassium": 0.1,
    "sodium": 1.0,
    "bicarbonate": 1.0,
    "ph": 0.01,
    "paco2": 1.0,
    "pao2": 1.0,
    "wbc": 0.1,
    "platelets": 1.0,
    "hematocrit": 0.1,
    "glucose": 1.0,
}
CODES: Final = tuple(RESOLUTION)
CODE_INDEX: Final = {code: index for index, code in enumerate(CODES)}

#: Measurement noise of one charted value (standard deviation, in the vital's unit).
CHART_NOISE: Final = {
    "heart_rate": 3.0,
    "respiratory_rate": 2.0,
    "spo2": 1.0,
    "mean_bp": 3.0,
    "pulse_pressure": 3.0,
    "temperature": 0.15,
    "fio2": 0.03,
    "gcs": 0.7,
}
#: Monitor noise: standard deviation and correlation time (seconds) of each channel.
MONITOR_NOISE: Final = {
    "heart_rate": (2.0, 20.0),
    "pulse_rate": (1.5, 5.0),  # added to heart rate: the oximeter counts its own pulse
    "spo2": (0.7, 20.0),
    "respiratory_rate": (2.0, 20.0),
    "mean_bp": (2.0, 20.0),
    "pulse_pressure": (1.5, 20.0),
}


@dataclass(frozen=True, eq=False)
class Observations:
    """Recorded values in long form: one entry per (time, code, source)."""

    time_us: np.ndarray  # int64, microseconds since the Unix epoch (UTC)
    code: np.ndarray  # int16 index into CODES
    value: np.ndarray  # float64
    source: np.ndarray  # int8: MONITOR, CHART or LAB

    def __len__(self) -> int:
        return int(self.time_us.size)

    @staticmethod
    def empty() -> Observations:
        return Observations(
            np.empty(0, np.int64), np.empty(0, np.int16), np.empty(0), np.empty(0, np.int8)
        )

    @staticmethod
    def wide(time_us: np.ndarray, values: dict[str, np.ndarray], source: int) -> Observations:
        """From one time axis and a column per code; NaN means not recorded."""
        columns = list(values)
        value = np.concatenate([values[c] for c in columns]) if columns else np.empty(0)
        observations = Observations(
            time_us=np.tile(time_us, len(columns)).astype(np.int64),
            code=np.repeat([CODE_INDEX[c] for c in columns], time_us.size).astype(np.int16),
            value=value.astype(np.float64),
            source=np.full(value.size, source, np.int8),
        )
        return observations.where(~np.isnan(value))

    @staticmethod
    def concat(parts: Sequence[Observations]) -> Observations:
        if not parts:
            return Observations.empty()
        return Observations(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS)
        )

    def where(self, mask: np.ndarray) -> Observations:
        return Observations(*(getattr(self, name)[mask] for name in _FIELDS))

    def sorted(self) -> Observations:
        """By time, then source, then code: the order messages and events are written in."""
        return self.where(np.lexsort((self.code, self.source, self.time_us)))

    def between(self, start_us: int, end_us: int) -> Observations:
        """Entries with ``start_us <= time < end_us``; the entries must be sorted by time."""
        first, last = np.searchsorted(self.time_us, [start_us, end_us])
        return Observations(*(getattr(self, name)[first:last] for name in _FIELDS))


_FIELDS: Final = ("time_us", "code", "value", "source")


def record(code: str, value: np.ndarray) -> np.ndarray:
    """Round to the code's recorded resolution and clip into its plausible range."""
    low, high = load_concepts()[code].plausible
    return np.clip(rounded(code, value), low, high)


def rounded(code: str, value: np.ndarray) -> np.ndarray:
    """Round to the resolution the code is recorded at (0.05 for FiO2, 5 mL for urine)."""
    step = RESOLUTION[code]
    decimals = max(0, int(-np.floor(np.log10(step))) + 1)
    return np.round(np.round(np.asarray(value) / step) * step, decimals)


def blood_pressure(
    mean_bp: np.ndarray, pulse_pressure: np.ndarray, codes: tuple[str, str, str]
) -> dict[str, np.ndarray]:
    """Systolic, mean and diastolic from mean and pulse pressure: sys > mean > dia."""
    mean_bp = np.clip(mean_bp, 30, 160)
    pulse_pressure = np.clip(pulse_pressure, 15, np.minimum(100, 3 * (mean_bp - 15)))
    systolic, mean, diastolic = codes
    return {
        systolic: record(systolic, mean_bp + 2 * pulse_pressure / 3),
        mean: record(mean, mean_bp),
        diastolic: record(diastolic, mean_bp - pulse_pressure / 3),
    }


def noise_free(patient: Patient, codes: Sequence[str], time_us: int) -> dict[str, float]:
    """What perfect sensors would record for vital ``codes`` at ``time_us`` (stuck values)."""
    vitals = expected_vitals(patient, patient.hours(np.array([time_us])))
    values = vitals | {"pulse_rate": vitals["heart_rate"]}
    for pressures in (ARTERIAL_BP, NONINVASIVE_BP):
        values |= blood_pressure(vitals["mean_bp"], vitals["pulse_pressure"], pressures)
    return {code: float(record(code, values[code])[0]) for code in codes}


def monitor_codes(patient: Patient) -> tuple[str, ...]:
    """The numerics a bedside monitor shows for this patient."""
    codes = ("heart_rate", "pulse_rate", "spo2", "respiratory_rate")
    return codes + ARTERIAL_BP if patient.arterial_line else codes


@dataclass(frozen=True)
class MonitorClock:
    """Monitor ticks at ``origin_us + k * period_us``; shared by every bed of a ward."""

    origin_us: int
    period_us: int

    @staticmethod
    def at(origin_us: int, hz: float) -> MonitorClock:
        return MonitorClock(origin_us, max(1, round(1e6 / hz)))

    def index(self, time_us: int) -> int:
        """Index of the first tick at or after ``time_us``."""
        return -((self.origin_us - time_us) // self.period_us)

    def ticks(self, start_us: int, end_us: int) -> np.ndarray:
        """Tick times with ``start_us <= t < end_us``."""
        first, last = self.index(start_us), self.index(end_us)
        return self.origin_us + np.arange(first, max(first, last), dtype=np.int64) * self.period_us


class MonitorFeed:
    """A patient's monitor numerics, read window by window in time order.

    The noise of each channel is an AR(1) process whose state carries over from one
    window to the next, so reading in windows of any size gives the same values (up to
    floating-point rounding, far below the resolution values are recorded at).
    """

    def __init__(self, patient: Patient, clock: MonitorClock, rng: np.random.Generator) -> None:
        self.patient = patient
        self.clock = clock
        self._rng = rng
        seconds = clock.period_us / 1e6
        self._sd = np.array([sd for sd, _ in MONITOR_NOISE.values()])
        self._a = np.array([np.exp(-seconds / tau) for _, tau in MONITOR_NOISE.values()])
        self._state = rng.normal(0, self._sd)
        self._read_until: int | None = None

    def read(self, start_us: int, end_us: int) -> Observations:
        """Numerics at the ticks in ``[start_us, end_us)`` within the observed stay."""
        if self._read_until is not None and start_us < self._read_until:
            raise ValueError("monitor windows must be read in time order without overlap")
        self._read_until = end_us
        start_us = max(start_us, self.patient.admit_us)
        end_us = min(end_us, self.patient.horizon_us)
        if end_us <= start_us:
            return Observations.empty()
        times = self.clock.ticks(start_us, end_us)
        if times.size == 0:
            return Observations.empty()
        noise = self._ar1(times.size)
        channel = dict(zip(MONITOR_NOISE, noise, strict=True))
        vitals = expected_vitals(self.patient, self.patient.hours(times))
        heart_rate = vitals["heart_rate"] + channel["heart_rate"]
        values = {
            "heart_rate": record("heart_rate", heart_rate),
            "pulse_rate": record("pulse_rate", heart_rate + channel["pulse_rate"]),
            "spo2": record("spo2", vitals["spo2"] + channel["spo2"]),
            "respiratory_rate": record(
                "respiratory_rate", vitals["respiratory_rate"] + channel["respiratory_rate"]
            ),
        }
        if self.patient.arterial_line:
            values |= blood_pressure(
                vitals["mean_bp"] + channel["mean_bp"],
                vitals["pulse_pressure"] + channel["pulse_pressure"],
                ARTERIAL_BP,
            )
        return Observations.wide(times, values, MONITOR)

    def _ar1(self, size: int) -> np.ndarray:
        """``size`` further steps of every channel's AR(1) noise, shape (channels, size)."""
        shocks = self._rng.standard_normal((size, self._sd.size)).T
        paths = ar1(shocks * (self._sd * np.sqrt(1 - self._a**2))[:, None], self._a, self._state)
        self._state = paths[:, -1].copy()
        return paths


def chart_stay(patient: Patient, rng: np.random.Generator) -> Observations:
    """Every nurse-charted value and lab of the observed stay, sorted by time."""
    return Observations.concat([_nurse_rounds(patient, rng), _labs(patient, rng)]).sorted()


def _round_times(patient: Patient, rng: np.random.Generator) -> np.ndarray:
    """Nurse rounds: about hourly, down to every 20 minutes when the patient is very sick."""
    times, t_h = [], rng.uniform(0, 0.5)
    while t_h < patient.horizon_h:
        times.append(t_h)
        sickness = max(patient.severity_at(t_h), 0.0)
        t_h += rng.gamma(4.0, 1 / (4 * (1 + 0.7 * sickness)))
    return _on_the_minute(patient, np.array(times))


def _on_the_minute(patient: Patient, t_h: np.ndarray) -> np.ndarray:
    """Chart times are kept to the minute; several on the same minute are one."""
    time_us = patient.admit_us + np.round(t_h * HOUR_US / MINUTE_US).astype(np.int64) * MINUTE_US
    return np.unique(time_us[time_us < patient.horizon_us])


def _nurse_rounds(patient: Patient, rng: np.random.Generator) -> Observations:
    times = _round_times(patient, rng)
    n = times.size
    t_h = patient.hours(times)
    vitals = expected_vitals(patient, t_h)

    def sometimes(values: np.ndarray, chance: float) -> np.ndarray:
        return np.where(rng.random(n) < chance, values, np.nan)

    def noisy(name: str) -> np.ndarray:
        return vitals[name] + rng.normal(0, CHART_NOISE[name], n)

    values = {
        "heart_rate": sometimes(record("heart_rate", noisy("heart_rate")), 0.93),
        "respiratory_rate": sometimes(record("respiratory_rate", noisy("respiratory_rate")), 0.9),
        "spo2": sometimes(record("spo2", noisy("spo2")), 0.93),
        "temperature": sometimes(record("temperature", noisy("temperature")), 0.3),
        "gcs": sometimes(record("gcs", noisy("gcs")), 0.5 if patient.icu_type == "neuro" else 0.25),
        "fio2": sometimes(record("fio2", noisy("fio2")), 0.9 if patient.ventilated else 0.15),
    }
    if patient.ventilated:
        values["mechanical_ventilation"] = sometimes(np.ones(n), 0.5)
    # With an arterial line, pressures are charted from it and the cuff is used now and
    # then; without one, the cuff is used every round. Cuffs read a little high.
    if patient.arterial_line:
        devices = [(ARTERIAL_BP, 0.93, 0.0), (NONINVASIVE_BP, 0.15, 2.0)]
    else:
        devices = [(NONINVASIVE_BP, 0.93, 2.0)]
    for codes, chance, bias in devices:
        pressures = blood_pressure(noisy("mean_bp") + bias, noisy("pulse_pressure"), codes)
        taken = rng.random(n) < chance
        values |= {code: np.where(taken, v, np.nan) for code, v in pressures.items()}
    values["urine_output"] = _urine(patient, times, vitals["urine_ml_per_h"], rng)
    return Observations.wide(times, values, CHART)


def _urine(
    patient: Patient, times: np.ndarray, rate_ml_h: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Volume since the previous urine record (or since admission), at some rounds."""
    measured = rng.random(times.size) < 0.85
    previous = np.concatenate([[patient.admit_us], times[measured][:-1]])
    hours = np.maximum((times[measured] - previous) / HOUR_US, 0.25)
    volume = rate_ml_h[measured] * hours * np.exp(rng.normal(0, 0.3, hours.size))
    urine = np.full(times.size, np.nan)
    urine[measured] = record("urine_output", volume)
    return urine


#: Lab panels and the chance each is part of a draw.
PANELS: Final = {
    "chemistry": ("sodium", "potassium", "bicarbonate", "bun", "creatinine", "glucose"),
    "blood_count": ("wbc", "platelets", "hematocrit"),
    "blood_gas": ("ph", "pao2", "paco2", "lactate"),
}


def _labs(patient: Patient, rng: np.random.Generator) -> Observations:
    """Lab draws: one soon after admission, then every 4 to 12 hours, sooner when sicker."""
    draws, t_h = [], rng.uniform(0.2, 1.5)
    while t_h < patient.horizon_h:
        draws.append(t_h)
        sickness = max(patient.severity_at(t_h), 0.0)
        t_h += rng.uniform(4, 12) / (1 + 0.3 * sickness)
    times = _on_the_minute(patient, np.array(draws))
    n = times.size
    t_h = patient.hours(times)
    gas_chance = 0.8 if patient.arterial_line else 0.2
    ordered = {
        "chemistry": rng.random(n) < 0.9,
        "blood_count": rng.random(n) < 0.75,
        "blood_gas": rng.random(n) < gas_chance,
    }
    values = {}
    for panel, names in PANELS.items():
        for name in names:
            lab = LABS[name]
            expected = expected_lab(patient, name, t_h)
            if lab.scale == "log":
                measured = expected * np.exp(rng.normal(0, lab.noise, n))
            else:
                measured = expected + rng.normal(0, lab.noise, n)
            taken = ordered[panel]
            if name == "lactate":
                # Without a blood gas, a venous lactate is sometimes sent on its own.
                taken = taken | (rng.random(n) < 0.3)
            values[name] = np.where(taken, record(name, measured), np.nan)
    return Observations.wide(times, values, LAB)
