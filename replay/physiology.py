"""The simulated patient: who they are, how sick they are, and what their body does.

One latent *severity* process drives every vital sign and lab, so they move together
the way they do at the bedside: when severity rises, heart rate, respiratory rate and
lactate go up, blood pressure, SpO2, urine output and GCS go down. Severity is

    severity(t) = severity at admission            (age, ICU type, chance)
                + course(t)                        (survivors recover, the dying drift up)
                + slow wander(t)                   (Ornstein-Uhlenbeck, hours)
                + episodes(t)                      (transient deteriorations that resolve)
                + terminal decline(t)              (the hours before death; sudden in some)

in standard units (0 = a typical ICU patient, +3 = shocked). Outcomes are drawn first
(death depends on age, ICU type and admission severity), then the trajectory is drawn
given the outcome; each vital adds its own slow wander and a circadian rhythm.

This module only says what the body does (``expected_vitals``, ``expected_lab``);
how values are measured, charted and corrupted lives in :mod:`bedside.replay.charting`
and :mod:`bedside.replay.artefacts`.

>>> import numpy as np
>>> patient = draw_patient(np.random.SeedSequence(7), stay_id=1, admit_us=0, horizon_h=24)
>>> patient.icu_type in ICU_MIX, 18 <= patient.age <= 95
(True, True)
>>> vitals = expected_vitals(patient, np.array([0.0, 12.0]))
>>> bool(np.all(vitals["mean_bp"] > 0))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np

HOUR_US: Final = 3_600_000_000
MINUTE_US: Final = 60_000_000

#: Spacing of the slow latent processes (severity, wanders), in hours.
GRID_H: Final = 5 / 60

#: Share of admissions by ICU type, and how each shifts severity and mortality.
ICU_MIX: Final = {
    "coronary": 0.14,
    "cardiac_surgery": 0.18,
    "medical": 0.36,
    "surgical": 0.22,
    "neuro": 0.07,
    "other": 0.03,
}
ICU_SEVERITY: Final = {
    "coronary": 0.0,
    "cardiac_surgery": -0.6,
    "medical": 0.35,
    "surgical": 0.0,
    "neuro": 0.2,
    "other": 0.0,
}
ICU_MORTALITY_LOGIT: Final = {
    "coronary": 0.0,
    "cardiac_surgery": -0.9,
    "medical": 0.3,
    "surgical": -0.1,
    "neuro": 0.5,
    "other": 0.0,
}
#: Intercepts of the mortality models (in the ICU, on the ward after it); together they
#: give about 12% in-hospital deaths over the ICU mix.
MORTALITY_INTERCEPT: Final = -2.95
POST_ICU_MORTALITY_INTERCEPT: Final = -4.0

#: Slow per-vital wander around the severity-driven value: standard deviation, in the
#: vital's unit (log units for the SpO2 deficit), with a 45-minute time constant.
WANDER_SD: Final = {
    "heart_rate": 4.0,
    "mean_bp": 4.0,
    "pulse_pressure": 3.0,
    "respiratory_rate": 1.5,
    "spo2_deficit": 0.2,
    "temperature": 0.15,
}
WANDER_TAU_H: Final = 0.75


@dataclass(frozen=True)
class LabModel:
    """How one lab depends on severity: ``median * exp(gain * s)`` or ``median + gain * s``.

    ``spread`` is the between-patient spread of the patient's own set point (log units
    for ``scale="log"``), ``lag_h`` delays the response (kidneys answer in hours), and
    ``noise`` is the analytic error of one measurement, in the same units as ``spread``.
    """

    median: float
    spread: float
    scale: Literal["log", "linear"]
    gain: float
    lag_h: float
    noise: float


LABS: Final = {
    "lactate": LabModel(1.1, 0.25, "log", 0.30, 0.0, 0.08),
    "creatinine": LabModel(0.9, 0.35, "log", 0.12, 6.0, 0.05),
    "bun": LabModel(18.0, 0.40, "log", 0.12, 6.0, 0.05),
    "potassium": LabModel(4.1, 0.30, "linear", 0.12, 0.0, 0.15),
    "sodium": LabModel(139.0, 3.0, "linear", 0.0, 0.0, 1.0),
    "bicarbonate": LabModel(24.0, 2.5, "linear", -1.3, 0.0, 1.0),
    "ph": LabModel(7.40, 0.03, "linear", -0.025, 0.0, 0.02),
    "paco2": LabModel(40.0, 4.0, "linear", 0.8, 0.0, 3.0),
    # pao2 is the P/F ratio times the FiO2 at the time of the gas.
    "pao2": LabModel(420.0, 0.20, "log", -0.25, 0.0, 0.10),
    "wbc": LabModel(10.0, 0.35, "log", 0.12, 3.0, 0.08),
    "platelets": LabModel(210.0, 0.35, "log", -0.12, 6.0, 0.06),
    "hematocrit": LabModel(31.0, 4.0, "linear", -0.4, 0.0, 0.8),
    "glucose": LabModel(130.0, 0.20, "log", 0.05, 0.0, 0.15),
}


@dataclass(frozen=True, eq=False)
class Patient:
    """One simulated ICU stay: covariates, outcome and the drawn physiological course.

    Times are hours since ICU admission (``t_h``); ``end_h`` is when the ICU stay ends,
    by discharge or by death (``dies``), and ``hospital_end_h`` when the hospital stay
    ends, by discharge or by a death on the ward (``dies_after_icu``). The course is
    drawn on a 5-minute grid up to ``horizon_h`` (the part of the stay that will be
    observed) and interpolated in between.
    """

    stay_id: int
    admit_us: int
    age: float
    sex: Literal["F", "M"]
    height_cm: float
    weight_kg: float
    icu_type: str
    severity_at_admission: float
    arterial_line: bool
    ventilated: bool
    dies: bool
    end_h: float
    dies_after_icu: bool
    hospital_end_h: float
    horizon_h: float
    set_points: dict[str, float] = field(repr=False)
    severity_grid: np.ndarray = field(repr=False)
    wander_grid: dict[str, np.ndarray] = field(repr=False)

    @property
    def end_us(self) -> int:
        return self.admit_us + round(self.end_h * HOUR_US)

    @property
    def horizon_us(self) -> int:
        return self.admit_us + round(self.horizon_h * HOUR_US)

    def severity(self, t_h: np.ndarray) -> np.ndarray:
        return _on_grid(self.severity_grid, t_h)

    def severity_at(self, t_h: float) -> float:
        """Severity at one time, to the nearest grid point (for scheduling decisions)."""
        return float(self.severity_grid[min(round(t_h / GRID_H), self.severity_grid.size - 1)])

    def wander(self, name: str, t_h: np.ndarray) -> np.ndarray:
        return _on_grid(self.wander_grid[name], t_h)

    def hours(self, time_us: np.ndarray) -> np.ndarray:
        return (np.asarray(time_us) - self.admit_us) / HOUR_US


def _grid_times(size: int) -> np.ndarray:
    return np.arange(size) * GRID_H


def _on_grid(grid: np.ndarray, t_h: np.ndarray) -> np.ndarray:
    """Linear interpolation of a latent path at hours ``t_h`` (held flat past its ends)."""
    x = np.clip(np.asarray(t_h, dtype=np.float64) / GRID_H, 0, grid.size - 1)
    i = np.minimum(x.astype(np.int64), grid.size - 2)
    return grid[i] + (x - i) * (grid[i + 1] - grid[i])


def draw_patient(
    seeds: np.random.SeedSequence,
    stay_id: int,
    admit_us: int,
    horizon_h: float,
    los_scale: float = 1.0,
) -> Patient:
    """Draw one patient; the same seeds give the same patient.

    ``horizon_h`` bounds the part of the stay whose course is drawn (the stay may last
    longer); ``los_scale`` shortens or lengthens every stay (0.1 for a fast demo ward).
    """
    covariates, course = (np.random.default_rng(s) for s in seeds.spawn(2))
    rng = covariates
    icu_type = str(rng.choice(list(ICU_MIX), p=list(ICU_MIX.values())))
    age = float(np.round(np.clip(rng.normal(64, 17), 18, 95)))
    sex: Literal["F", "M"] = "M" if rng.random() < 0.56 else "F"
    height_cm = float(np.round(rng.normal(176, 7) if sex == "M" else rng.normal(163, 7), 1))
    bmi = float(np.exp(rng.normal(np.log(27), 0.18)))
    weight_kg = round(bmi * (height_cm / 100) ** 2, 1)

    severity = ICU_SEVERITY[icu_type] + 0.015 * (age - 64) + rng.normal()
    logit = (
        MORTALITY_INTERCEPT + 1.25 * severity + 0.03 * (age - 64) + ICU_MORTALITY_LOGIT[icu_type]
    )
    dies = bool(rng.random() < _sigmoid(logit))
    if dies:
        # Sicker patients die sooner; about a third of ICU deaths fall in the first 48 h.
        end_h = max(2.0, 84 * np.exp(-0.3 * severity + 0.9 * rng.normal()))
    else:
        end_h = max(10.0, 60 * np.exp(0.15 * severity + 0.7 * rng.normal()))
    end_h = min(end_h, 60 * 24)
    # Survivors of the ICU spend days on a ward; a few of them die there.
    ward_h = 0.0 if dies else 24 * np.exp(rng.normal(np.log(5), 0.8))
    dies_after_icu = not dies and bool(
        rng.random() < _sigmoid(POST_ICU_MORTALITY_INTERCEPT + 0.9 * severity + 0.03 * (age - 64))
    )
    end_h, hospital_end_h = float(end_h * los_scale), float((end_h + ward_h) * los_scale)
    surgery = icu_type in ("cardiac_surgery", "surgical")
    arterial_line = bool(rng.random() < _sigmoid(0.2 + 0.8 * severity + 1.8 * surgery))
    ventilated = bool(
        rng.random() < _sigmoid(-0.7 + 0.8 * severity + 1.2 * (icu_type == "cardiac_surgery"))
    )
    set_points = _draw_set_points(rng, age, icu_type, ventilated)
    horizon_h = float(min(horizon_h, end_h))
    grid = _draw_severity(course, severity, dies, end_h, horizon_h)
    wander = {name: _ou(course, grid.size, sd, WANDER_TAU_H) for name, sd in WANDER_SD.items()}
    return Patient(
        stay_id=stay_id,
        admit_us=admit_us,
        age=age,
        sex=sex,
        height_cm=height_cm,
        weight_kg=weight_kg,
        icu_type=icu_type,
        severity_at_admission=float(severity),
        arterial_line=arterial_line,
        ventilated=ventilated,
        dies=dies,
        end_h=end_h,
        dies_after_icu=dies_after_icu,
        hospital_end_h=hospital_end_h,
        horizon_h=horizon_h,
        set_points=set_points,
        severity_grid=grid,
        wander_grid=wander,
    )


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def _draw_set_points(
    rng: np.random.Generator, age: float, icu_type: str, ventilated: bool
) -> dict[str, float]:
    """The patient's own normal: where each vital and lab sits at severity 0."""
    older = age - 64
    points = {
        "heart_rate": rng.normal(84 - 0.1 * older, 9),
        "mean_bp": rng.normal(80 + 0.05 * older - 4 * (icu_type == "cardiac_surgery"), 7),
        "pulse_pressure": float(np.clip(rng.normal(50 + 0.4 * older, 9), 25, 90)),
        "respiratory_rate": rng.normal(18, 3),
        "spo2_deficit": float(np.exp(rng.normal(np.log(2.5), 0.4))),
        "temperature": rng.normal(36.9, 0.3),
        # Sedation of ventilated patients and brain injury lower the GCS.
        "gcs_deficit": (rng.uniform(5, 11) if ventilated else rng.exponential(1.0))
        + 3 * (icu_type == "neuro"),
        "urine_ml_per_kg_h": float(np.exp(rng.normal(np.log(0.9), 0.3))),
    }
    for name, lab in LABS.items():
        if lab.scale == "log":
            median = lab.median * np.exp(0.006 * older * (name in ("creatinine", "bun")))
            points[name] = float(median * np.exp(rng.normal(0, lab.spread)))
        else:
            points[name] = float(rng.normal(lab.median, lab.spread))
    return {name: float(value) for name, value in points.items()}


def _draw_severity(
    rng: np.random.Generator, at_admission: float, dies: bool, end_h: float, horizon_h: float
) -> np.ndarray:
    t = _grid_times(int(np.ceil(horizon_h / GRID_H)) + 2)
    if dies:
        course = rng.uniform(0.0, 0.5) * t / end_h
        # Most deaths follow a decline of hours to a day and a half; one in five is sudden.
        warning_h = rng.uniform(1, 4) if rng.random() < 0.2 else rng.uniform(8, 36)
        closeness = np.clip(1 - (end_h - t) / warning_h, 0, 1)
        course = course + rng.uniform(2.0, 3.5) * closeness**1.5
    else:
        course = -rng.uniform(0.3, 1.5) * np.minimum(t / end_h, 1)
    episodes = np.zeros_like(t)
    for _ in range(rng.poisson(horizon_h / 60)):
        centre, width = rng.uniform(0, horizon_h), rng.uniform(1, 4)
        episodes += rng.uniform(0.8, 2.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    return at_admission + course + episodes + _ou(rng, t.size, 0.45, 6.0)


def _ou(rng: np.random.Generator, size: int, sd: float, tau_h: float) -> np.ndarray:
    """A stationary Ornstein-Uhlenbeck path on the latent grid."""
    a = np.exp(-GRID_H / tau_h)
    shocks = rng.normal(0, sd * np.sqrt(1 - a**2), size)
    return ar1(shocks[None, :], np.array([a]), np.array([rng.normal(0, sd)]))[0]


def ar1(shocks: np.ndarray, a: np.ndarray, before: np.ndarray) -> np.ndarray:
    """``x[c, i] = a[c] * x[c, i - 1] + shocks[c, i]`` for every channel ``c``, from
    ``x[c, -1] = before[c]``, without a Python loop over samples.

    A prefix scan: after the pass with step ``s`` each value holds the sum over its last
    ``2 s`` shocks, so ``log2(n)`` array operations do it, all with factors ``<= 1``.

    >>> ar1(np.array([[1.0, 0.0, 0.0, 2.0]]), np.array([0.5]), np.array([4.0])).tolist()
    [[3.0, 1.5, 0.75, 2.375]]
    """
    path = np.array(shocks, dtype=np.float64)
    size = path.shape[1]
    step, power = 1, a[:, None].astype(np.float64)
    while step < size:
        path[:, step:] = path[:, step:] + power * path[:, :-step]
        step, power = 2 * step, power * power
    return path + before[:, None] * a[:, None] ** np.arange(1, size + 1)


def circadian(time_us: np.ndarray) -> np.ndarray:
    """+1 at 16:00 UTC, -1 at 04:00: heart rate, pressure and temperature peak afternoons."""
    clock_h = (np.asarray(time_us) / HOUR_US) % 24
    return np.cos(2 * np.pi * (clock_h - 16) / 24)


def expected_vitals(patient: Patient, t_h: np.ndarray) -> dict[str, np.ndarray]:
    """Noise-free vitals at hours ``t_h`` since admission, before measurement.

    Blood pressure is given as mean pressure and pulse pressure, from which systolic
    (mean + 2/3 pulse pressure) and diastolic (mean - 1/3) follow, so sys > mean > dia.
    """
    p = patient.set_points
    s = patient.severity(t_h)
    day = circadian(patient.admit_us + t_h * HOUR_US)
    mean_bp = np.clip(p["mean_bp"] - 6 * s + 4 * day + patient.wander("mean_bp", t_h), 30, 160)
    pulse_pressure = p["pulse_pressure"] - 3 * s + patient.wander("pulse_pressure", t_h)
    spo2_deficit = p["spo2_deficit"] * np.exp(0.35 * s + patient.wander("spo2_deficit", t_h))
    if patient.ventilated:
        fio2 = 0.35 + 0.08 * np.maximum(s, 0)
    else:
        fio2 = 0.21 + 0.04 * np.maximum(s + 0.5, 0)
    return {
        "heart_rate": np.clip(
            p["heart_rate"] + 9 * s + 4 * day + patient.wander("heart_rate", t_h), 35, 200
        ),
        "mean_bp": mean_bp,
        # At least 15 mmHg and never so wide that diastolic falls under 15.
        "pulse_pressure": np.clip(pulse_pressure, 15, np.minimum(100, 3 * (mean_bp - 15))),
        "respiratory_rate": np.clip(
            p["respiratory_rate"] + 2.5 * s + day + patient.wander("respiratory_rate", t_h), 6, 50
        ),
        "spo2": np.clip(100 - spo2_deficit, 60, 100),
        "temperature": np.clip(
            p["temperature"] + 0.2 * s + 0.25 * day + patient.wander("temperature", t_h), 33, 41.5
        ),
        "fio2": np.clip(fio2, 0.21, 1.0),
        "gcs": np.clip(15 - p["gcs_deficit"] - 1.5 * np.maximum(s - 0.5, 0), 3, 15),
        "urine_ml_per_h": p["urine_ml_per_kg_h"] * patient.weight_kg * np.exp(-0.45 * s),
    }


def expected_lab(patient: Patient, name: str, t_h: np.ndarray) -> np.ndarray:
    """Noise-free value of lab ``name`` at hours ``t_h`` since admission."""
    lab = LABS[name]
    s = patient.severity(np.maximum(np.asarray(t_h) - lab.lag_h, 0))
    point = patient.set_points[name]
    value = point * np.exp(lab.gain * s) if lab.scale == "log" else point + lab.gain * s
    if name == "pao2":
        value = value * expected_vitals(patient, t_h)["fio2"]
    return np.asarray(value)
