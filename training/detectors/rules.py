"""The rules of the rule-based detectors, in one place.

The online detectors (:class:`~bedside.training.detectors.plausibility.Plausibility`,
:class:`~bedside.training.detectors.robust_spike.RobustSpike`,
:class:`~bedside.training.detectors.flatline.Flatline`) and the vectorised batch path
(:func:`~bedside.training.detectors.batch.flag_events`) read every threshold from here,
so that a value flagged offline is flagged the same way at the bedside.

Ranges come from the concept dictionary; unit errors from its alternative units
(``omop_units``: the conversions a warehouse applies), plus a few that no warehouse
converts but charts and devices get wrong (``EXTRA_UNIT_ERRORS``).

>>> check_value("temperature", 98.6)
('unit_error', 1.0, 'temperature 98.6 looks like °F (37 °C)')
>>> check_value("heart_rate", 350.0)
('implausible', 1.167, 'heart_rate 350 outside plausible 0–300 bpm')
>>> sensor_off("spo2", 0.0)
('sensor_off', 1.0, 'spo2 reads 0: oximeter probe off or no pulse signal')
>>> check_value("heart_rate", 82.0) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal

from bedside.schemas.concepts import load_concepts

AnomalyKind = Literal[
    "implausible", "unit_error", "spike", "step", "flatline", "sensor_off", "multivariate"
]

# --- plausibility ------------------------------------------------------------------

#: Names of the OMOP units the concept dictionary converts from (its ``omop_units``).
UNIT_NAMES: Final = {
    9289: "°F",
    8554: "%",
    8739: "lb",
    9327: "in",
    9330: "in",
    8753: "mmol/L",
    8749: "µmol/L",
    8840: "mg/dL",
    8636: "g/L",
}

#: Unit errors the dictionary has no conversion for: (concept, unit, scale, offset, low,
#: high) means a raw value in [low, high] is ``scale * value + offset`` in the right unit.
#: These ranges lie inside the plausible range, but no living patient has them.
EXTRA_UNIT_ERRORS: Final = (
    ("spo2", "a fraction", 100.0, 0.0, 0.5, 1.0),
    ("sao2", "a fraction", 100.0, 0.0, 0.5, 1.0),
    ("temperature", "K", 1.0, -273.15, 298.15, 318.15),
    ("ph", "pH × 100", 0.01, 0.0, 650.0, 800.0),
)


@dataclass(frozen=True)
class UnitErrorRule:
    """Raw values of ``concept`` in ``[low, high]`` are in ``unit``; ``scale * v + offset``
    converts them."""

    concept: str
    unit: str
    scale: float
    offset: float
    low: float
    high: float

    def corrected(self, value: float) -> float:
        return self.scale * value + self.offset


@cache
def unit_error_rules() -> tuple[UnitErrorRule, ...]:
    """Every unit-error rule: the dictionary's alternative units, then the extra ones.

    A dictionary unit gives the raw values that are implausible as they are but
    plausible once converted (98.6 in a °C channel is 37 °C).
    """
    concepts = load_concepts()
    rules = []
    for concept in concepts.values():
        low, high = concept.plausible
        for unit_id, conversion in concept.omop_units.items():
            scale, offset = conversion.scale, conversion.offset
            raw_low, raw_high = sorted(((low - offset) / scale, (high - offset) / scale))
            # Only the part of the raw range that is implausible in the canonical unit.
            if raw_high > high:
                raw_low = max(raw_low, math.nextafter(high, math.inf))
            elif raw_low < low:
                raw_high = min(raw_high, math.nextafter(low, -math.inf))
            else:
                continue
            if raw_low <= raw_high:
                name = UNIT_NAMES.get(unit_id, f"OMOP unit {unit_id}")
                rules.append(UnitErrorRule(concept.name, name, scale, offset, raw_low, raw_high))
    rules.extend(UnitErrorRule(*extra) for extra in EXTRA_UNIT_ERRORS)
    return tuple(rules)


@cache
def _unit_rules_by_concept() -> dict[str, tuple[UnitErrorRule, ...]]:
    by_concept: dict[str, list[UnitErrorRule]] = {}
    for rule in unit_error_rules():
        by_concept.setdefault(rule.concept, []).append(rule)
    return {concept: tuple(rules) for concept, rules in by_concept.items()}


#: The three pressures of one sensor, (systolic, mean, diastolic): the diastolic cannot
#: exceed the systolic and the mean lies between them.
PRESSURE_TRIPLETS: Final = (
    ("arterial_systolic_bp", "arterial_mean_bp", "arterial_diastolic_bp"),
    ("noninvasive_systolic_bp", "noninvasive_mean_bp", "noninvasive_diastolic_bp"),
    ("pulmonary_systolic_pressure", "pulmonary_mean_pressure", "pulmonary_diastolic_pressure"),
)

# --- sensor off and flatline -------------------------------------------------------

#: Concepts that read 0 when their sensor is off (an arterial line open to air while it
#: is zeroed or flushed, an oximeter probe off the finger, ECG leads off), and what a 0
#: means. A heart rate or respiratory rate of 0 can also be an asystole or an apnoea:
#: the detail says so, and the finding goes out as an anomaly, not as a silent repair.
SENSOR_OFF_MEANING: Final = {
    **dict.fromkeys(PRESSURE_TRIPLETS[0], "arterial line open to air (zeroing, flush, sampling)"),
    **dict.fromkeys(PRESSURE_TRIPLETS[1], "no cuff measurement"),
    **dict.fromkeys(PRESSURE_TRIPLETS[2], "pulmonary artery line open to air or not connected"),
    "spo2": "oximeter probe off or no pulse signal",
    "pulse_rate": "oximeter probe off or no pulse signal",
    "cardiac_output": "no cardiac output measurement",
    "temperature": "temperature probe not connected",
    "heart_rate": "ECG leads off, or asystole: check the patient",
    "respiratory_rate": "no impedance respiration signal, or apnoea: check the patient",
}
SENSOR_OFF: Final = frozenset(SENSOR_OFF_MEANING)
#: A reading below this (in the concept's unit) is a zero.
SENSOR_OFF_BELOW: Final = 0.5

#: Consecutive identical readings that make a flatline (the first reading counts): only
#: for signals that vary from one reading to the next when the sensor works. SpO2 (it
#: sits at 100 for hours) and respiratory rate (the set rate under controlled
#: ventilation) are left out: a stable value is normal for them.
FLATLINE_REPEATS: Final = {
    "heart_rate": 15,
    "pulse_rate": 12,
    "arterial_systolic_bp": 6,
    "arterial_mean_bp": 6,
    "arterial_diastolic_bp": 6,
    "pulmonary_systolic_pressure": 8,
    "pulmonary_mean_pressure": 8,
    "pulmonary_diastolic_pressure": 8,
    "central_venous_pressure": 10,
    "cardiac_output": 10,
}

# --- robust spike (Hampel filter) --------------------------------------------------

#: Previous readings of a signal the median and MAD are taken over.
HAMPEL_WINDOW: Final = 9
#: Fewest previous readings before a signal is judged.
HAMPEL_MIN_PERIODS: Final = 5
#: A reading is a spike when it is more than this many robust standard deviations
#: (1.4826 MAD) from the median of the previous readings.
HAMPEL_K: Final = 4.0
#: A MAD of 0 (a steady integer signal) would make any change a spike: the robust
#: standard deviation is at least this, in the concept's unit.
HAMPEL_MIN_SCALE: Final = {
    "heart_rate": 4.0,
    "pulse_rate": 4.0,
    "spo2": 1.5,
    "respiratory_rate": 3.0,
    "arterial_systolic_bp": 6.0,
    "arterial_mean_bp": 4.0,
    "arterial_diastolic_bp": 4.0,
    "noninvasive_systolic_bp": 6.0,
    "noninvasive_mean_bp": 4.0,
    "noninvasive_diastolic_bp": 4.0,
    "pulmonary_systolic_pressure": 3.0,
    "pulmonary_mean_pressure": 2.5,
    "pulmonary_diastolic_pressure": 2.5,
    "central_venous_pressure": 2.0,
    "temperature": 0.3,
    "cardiac_output": 0.4,
}
#: Consecutive outliers on the same side that make a step change rather than a spike
#: (spikes last one to three readings).
STEP_RUN: Final = 4
#: 1 / Φ⁻¹(3/4): the MAD of a normal sample times this is its standard deviation.
MAD_TO_SD: Final = 1.4826


# --- the checks ----------------------------------------------------------------------

Check = tuple[AnomalyKind, float, str]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


@cache
def _value_rules() -> dict[str, tuple[float, float, bool, tuple[tuple[float, float], ...]]]:
    """concept -> (plausible low, high, reads 0 when off, raw ranges of its unit errors):
    what :func:`signals` checks each value against, looked up once per concept."""
    by_concept = _unit_rules_by_concept()
    return {
        name: (
            *concept.plausible,
            name in SENSOR_OFF,
            tuple((rule.low, rule.high) for rule in by_concept.get(name, ())),
        )
        for name, concept in load_concepts().items()
    }


def unit_error(concept: str, value: float) -> UnitErrorRule | None:
    """The unit-error rule a value matches, if any."""
    for rule in _unit_rules_by_concept().get(concept, ()):
        if rule.low <= value <= rule.high:
            return rule
    return None


def is_sensor_off(concept: str, value: float) -> bool:
    return concept in SENSOR_OFF and -SENSOR_OFF_BELOW < value < SENSOR_OFF_BELOW


def implausibility(concept: str, value: float) -> float:
    """0 inside the plausible range; outside, 1 + the distance in range widths."""
    low, high = load_concepts()[concept].plausible
    if low <= value <= high:
        return 0.0
    if not math.isfinite(value):
        return math.inf
    return 1.0 + max(low - value, value - high) / (high - low)


def check_value(concept: str, value: float) -> Check | None:
    """The plausibility verdict on one value alone: (kind, score, detail) or None.

    A unit error first (a value plausible only in another unit), then a value outside
    the plausible range. Sensor-off zeros are a separate rule (:func:`sensor_off`).
    """
    rule = unit_error(concept, value)
    if rule is not None:
        corrected = rule.corrected(value)
        unit = load_concepts()[concept].unit
        return (
            "unit_error",
            1.0,
            (f"{concept} {_fmt(value)} looks like {rule.unit} ({_fmt(corrected)} {unit})"),
        )
    score = implausibility(concept, value)
    if score:
        known = load_concepts()[concept]
        low, high = known.plausible
        return (
            "implausible",
            round(score, 3),
            (f"{concept} {_fmt(value)} outside plausible {_fmt(low)}–{_fmt(high)} {known.unit}"),
        )
    return None


def sensor_off(concept: str, value: float) -> Check | None:
    """A zero from a sensor that reads 0 only when it is off: (kind, score, detail) or None."""
    if is_sensor_off(concept, value):
        return "sensor_off", 1.0, f"{concept} reads 0: {SENSOR_OFF_MEANING[concept]}"
    return None


def signals(x: dict[str, float]) -> dict[str, float]:
    """The usable readings of a sample: plausible, in the right unit, not a sensor-off zero.

    The signal detectors (spike, flatline, consistency, multivariate) look only at these;
    the others are neither scored nor learned, as if they had not been recorded. The
    same as keeping the known concepts whose ``check_value(...)`` and ``sensor_off(...)``
    are None, faster: a bed finds them once per sample for all its detectors.

    >>> signals({"heart_rate": 82.0, "spo2": 0.0, "temperature": 98.6, "unknown": 1.0})
    {'heart_rate': 82.0}
    """
    rules = _value_rules()
    usable = {}
    for concept, value in x.items():
        rule = rules.get(concept)
        if rule is None:
            continue
        low, high, reads_zero_when_off, unit_ranges = rule
        if not low <= value <= high:  # False for NaN too
            continue
        if reads_zero_when_off and -SENSOR_OFF_BELOW < value < SENSOR_OFF_BELOW:
            continue
        for raw_low, raw_high in unit_ranges:
            if raw_low <= value <= raw_high:
                break
        else:
            usable[concept] = value
    return usable


def is_signal(concept: str, value: float) -> bool:
    """True for a usable reading (see :func:`signals`)."""
    return bool(signals({concept: value}))


def pressure_order(values: dict[str, float]) -> dict[str, str]:
    """Pressures of one sample that break the order diastolic <= mean <= systolic.

    Returns concept -> detail. Values that are not usable signals are not compared.

    >>> pressure_order({"arterial_systolic_bp": 60.0, "arterial_mean_bp": 85.0,
    ...                 "arterial_diastolic_bp": 70.0})
    {'arterial_systolic_bp': 'diastolic 70 above systolic 60'}
    """
    return pressure_order_of_signals(signals(values))


def pressure_order_of_signals(usable: dict[str, float]) -> dict[str, str]:
    """:func:`pressure_order` of values that are all usable (:func:`signals`)."""
    broken: dict[str, str] = {}
    for systolic, mean, diastolic in PRESSURE_TRIPLETS:
        sys_value = usable.get(systolic)
        mean_value = usable.get(mean)
        dia_value = usable.get(diastolic)
        if sys_value is not None and dia_value is not None and dia_value > sys_value:
            detail = f"diastolic {_fmt(dia_value)} above systolic {_fmt(sys_value)}"
            # The mean sides with the one that is right: above both, the systolic is
            # too low; below both, the diastolic too high; in between, either.
            if mean_value is None or sys_value < mean_value < dia_value:
                broken[systolic] = broken[diastolic] = detail
            elif mean_value >= dia_value:
                broken[systolic] = detail
            else:
                broken[diastolic] = detail
        elif mean_value is not None and (
            (sys_value is not None and mean_value > sys_value)
            or (dia_value is not None and mean_value < dia_value)
        ):
            low = "?" if dia_value is None else _fmt(dia_value)
            high = "?" if sys_value is None else _fmt(sys_value)
            broken[mean] = f"mean {_fmt(mean_value)} outside diastolic–systolic {low}–{high}"
    return broken


# --- multivariate (online Half-Space Trees, offline Isolation Forest) --------------

#: The vitals the multivariate detectors look at together, and the usual range each is
#: scaled from (to [0, 1]; values outside it still count, at the edge of the trees).
MULTIVARIATE_LIMITS: Final = {
    "heart_rate": (30.0, 180.0),
    "pulse_rate": (30.0, 180.0),
    "spo2": (70.0, 100.0),
    "respiratory_rate": (4.0, 45.0),
    "arterial_systolic_bp": (60.0, 220.0),
    "arterial_mean_bp": (40.0, 150.0),
    "arterial_diastolic_bp": (25.0, 120.0),
    "noninvasive_systolic_bp": (60.0, 220.0),
    "noninvasive_mean_bp": (40.0, 150.0),
    "noninvasive_diastolic_bp": (25.0, 120.0),
    "central_venous_pressure": (-5.0, 30.0),
    "temperature": (34.0, 41.0),
}


# --- consistency between vitals ------------------------------------------------------


def _mean_residual(systolic: float, mean: float, diastolic: float) -> float:
    return mean - (diastolic + (systolic - diastolic) / 3)


def _difference(first: float, second: float) -> float:
    return first - second


@dataclass(frozen=True)
class Relation:
    """Vitals that measure related things, and a residual that stays steady for a bed
    while their sensors work (``floor``: its least robust standard deviation)."""

    name: str
    concepts: tuple[str, ...]
    residual: Callable[..., float]
    floor: float
    meaning: str


#: The relations :class:`~bedside.training.detectors.consistency.Consistency` watches:
#: two sensors of one rate, and the systolic, mean and diastolic of one pressure
#: (a drifting or damped transducer changes one of them against the others).
RELATIONS: Final = (
    Relation(
        "pulse_deficit",
        ("heart_rate", "pulse_rate"),
        _difference,
        4.0,
        "heart rate (ECG) − pulse rate (oximeter)",
    ),
    Relation(
        "arterial_mean_offset",
        PRESSURE_TRIPLETS[0],
        _mean_residual,
        3.0,
        "arterial mean − (diastolic + pulse pressure / 3)",
    ),
    Relation(
        "arterial_pulse_pressure",
        PRESSURE_TRIPLETS[0][::2],
        _difference,
        5.0,
        "arterial systolic − diastolic",
    ),
    Relation(
        "noninvasive_mean_offset",
        PRESSURE_TRIPLETS[1],
        _mean_residual,
        3.0,
        "cuff mean − (diastolic + pulse pressure / 3)",
    ),
    Relation(
        "pulmonary_mean_offset",
        PRESSURE_TRIPLETS[2],
        _mean_residual,
        2.0,
        "pulmonary mean − (diastolic + pulse pressure / 3)",
    ),
    Relation(
        "pulmonary_pulse_pressure",
        PRESSURE_TRIPLETS[2][::2],
        _difference,
        3.0,
        "pulmonary systolic − diastolic",
    ),
    Relation(
        "arterial_cuff_difference",
        ("arterial_mean_bp", "noninvasive_mean_bp"),
        _difference,
        6.0,
        "arterial mean − cuff mean",
    ),
)
