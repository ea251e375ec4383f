"""The rule-based detectors: their rules, the Hampel filter against a batch oracle on
every prefix, and the vectorised batch path against the online detectors."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.replay.simulator import simulate_cohort
from bedside.training.detectors import (
    DETECTORS,
    DetectorError,
    Flatline,
    Plausibility,
    RobustSpike,
    flag_events,
)
from bedside.training.detectors.batch import hampel_scores
from bedside.training.detectors.bed import run_online_rows
from bedside.training.detectors.inject import ARTEFACT_KINDS, inject
from bedside.training.detectors.rules import (
    FLATLINE_REPEATS,
    HAMPEL_K,
    HAMPEL_MIN_PERIODS,
    HAMPEL_MIN_SCALE,
    HAMPEL_WINDOW,
    MAD_TO_SD,
    check_value,
    is_signal,
    sensor_off,
    unit_error_rules,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
CONCEPTS = ["heart_rate", "temperature", "fio2", "spo2", "arterial_mean_bp", "glucose", "ph"]
values = st.floats(min_value=-50, max_value=1000, allow_nan=False) | st.sampled_from(
    [0.0, 0.3, 0.95, 21.0, 37.0, 98.6, 310.0, 733.0, math.nan]
)


# --- plausibility ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concept", "value", "kind", "looks_like"),
    [
        ("temperature", 98.6, "unit_error", "°F"),
        ("temperature", 310.0, "unit_error", "K"),
        ("fio2", 40.0, "unit_error", "%"),
        ("spo2", 0.97, "unit_error", "a fraction"),
        ("glucose", 6.1, "unit_error", "mmol/L"),
        ("creatinine", 88.0, "unit_error", "µmol/L"),
        ("ph", 733.0, "unit_error", "pH × 100"),
        ("heart_rate", 350.0, "implausible", None),
        ("temperature", -17.8, "implausible", None),
        ("weight", 0.0, "implausible", None),
    ],
)
def test_plausibility_names_the_kind(
    concept: str, value: float, kind: str, looks_like: str | None
) -> None:
    (finding,) = Plausibility().explain_one({concept: value})
    assert (finding.concept, finding.kind) == (concept, kind)
    if looks_like is not None:
        assert f"looks like {looks_like} (" in finding.detail


def test_plausible_values_and_unknown_concepts_pass() -> None:
    detector = Plausibility()
    sample = {"heart_rate": 0.0, "temperature": 36.6, "fio2": 0.21, "x//unmapped": 5.0}
    assert detector.explain_one(sample) == []
    assert detector.score_signals(sample) == {
        "heart_rate": 0.0,
        "temperature": 0.0,
        "fio2": 0.0,
    }


def test_dictionary_unit_rules_only_cover_implausible_values() -> None:
    from bedside.schemas.concepts import load_concepts

    concepts = load_concepts()
    extra = {"spo2", "sao2", "ph"}
    for rule in unit_error_rules():
        if rule.concept in extra or rule.unit == "K":
            continue
        low, high = concepts[rule.concept].plausible
        assert rule.high < low or rule.low > high, rule
        assert low <= rule.corrected(rule.low) + 1e-9 and rule.corrected(rule.high) <= high + 1e-9


@pytest.mark.parametrize(
    ("pressures", "blamed"),
    [
        ((60.0, 85.0, 70.0), {"arterial_systolic_bp"}),  # the mean sides with the diastolic
        ((100.0, 70.0, 120.0), {"arterial_diastolic_bp"}),  # the mean sides with the systolic
        ((100.0, 110.0, 120.0), {"arterial_systolic_bp", "arterial_diastolic_bp"}),
        ((120.0, 130.0, 60.0), {"arterial_mean_bp"}),
        ((120.0, 80.0, 60.0), set()),
        ((0.0, 0.0, 0.0), set()),  # zeros are the sensor off, not an inversion
    ],
)
def test_pressure_order(pressures: tuple[float, float, float], blamed: set[str]) -> None:
    sample = dict(
        zip(
            ("arterial_systolic_bp", "arterial_mean_bp", "arterial_diastolic_bp"),
            pressures,
            strict=True,
        )
    )
    assert {f.concept for f in Plausibility().explain_one(sample)} == blamed


@given(st.sampled_from(CONCEPTS), values)
def test_is_signal_is_the_absence_of_every_value_rule(concept: str, value: float) -> None:
    expected = check_value(concept, value) is None and sensor_off(concept, value) is None
    assert is_signal(concept, value) == expected


# --- flatline and sensor off ---------------------------------------------------------


def test_flatline_flags_from_the_nth_repeat_and_skips_unusable_readings() -> None:
    repeats = FLATLINE_REPEATS["arterial_mean_bp"]
    detector = Flatline()
    kinds = []
    for reading in [70.0] * (repeats - 1) + [0.0, -5.0, 70.0, 70.0, 71.0]:
        kinds.append([f.kind for f in detector.process_one({"arterial_mean_bp": reading})])
    assert kinds[: repeats - 1] == [[]] * (repeats - 1)
    assert kinds[repeats - 1 :] == [["sensor_off"], [], ["flatline"], ["flatline"], []]


def test_spo2_at_its_ceiling_is_not_a_flatline() -> None:
    detector = Flatline()
    assert all(not detector.process_one({"spo2": 100.0}) for _ in range(200))


# --- robust spike: Hampel against a batch oracle --------------------------------------


def oracle(previous: list[float], value: float, floor: float) -> float | None:
    """The Hampel score, straight from the definition."""
    window = previous[-HAMPEL_WINDOW:]
    if len(window) < HAMPEL_MIN_PERIODS:
        return None
    median = statistics.median(window)
    mad = statistics.median([abs(v - median) for v in window])
    return abs(value - median) / (HAMPEL_K * max(MAD_TO_SD * mad, floor))


readings = st.lists(
    st.floats(min_value=20, max_value=250, allow_nan=False).map(lambda v: round(v, 1))
    | st.sampled_from([0.0, 80.0, 80.0, 400.0]),
    min_size=1,
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(readings)
def test_hampel_matches_the_oracle_on_every_prefix(series: list[float]) -> None:
    detector = RobustSpike()
    floor = HAMPEL_MIN_SCALE["arterial_mean_bp"]
    usable: list[float] = []
    for value in series:
        scores = detector.score_signals({"arterial_mean_bp": value})
        if not is_signal("arterial_mean_bp", value):
            assert scores == {}
        else:
            expected = oracle(usable, value, floor)
            assert scores["arterial_mean_bp"] == pytest.approx(
                0.0 if expected is None else expected, rel=1e-12, abs=1e-12
            )
            usable.append(value)
        detector.learn_one({"arterial_mean_bp": value})


@settings(max_examples=25, deadline=None)
@given(st.lists(readings, min_size=1, max_size=4))
def test_vectorised_hampel_equals_the_oracle(groups: list[list[float]]) -> None:
    series = [v for group in groups for v in group]
    starts = np.concatenate(
        [np.full(len(g), sum(map(len, groups[:i]))) for i, g in enumerate(groups)]
    )
    floors = np.full(len(series), 3.0)
    scores, _ = hampel_scores(np.array(series), starts.astype(int), floors)
    position = 0
    for group in groups:
        for index, value in enumerate(group):
            expected = oracle(group[:index], value, 3.0)
            got = scores[position]
            assert (math.isnan(got) and expected is None) or got == pytest.approx(
                expected, rel=1e-12
            )
            position += 1


def test_a_level_change_becomes_a_step() -> None:
    detector = RobustSpike()
    for minute in range(20):
        detector.learn_one({"heart_rate": 80.0 + minute % 3})
    kinds = [[f.kind for f in detector.process_one({"heart_rate": 130.0})] for _ in range(6)]
    assert kinds[:3] == [["spike"]] * 3
    assert ["step"] in kinds[3:]


# --- the batch path is the online detectors, vectorised ---------------------------------


@cache
def corrupted_cohort() -> pl.DataFrame:
    events, _, _ = simulate_cohort(stays=3, hours=6, seed=11, monitor_hz=1 / 60)
    for kind in ("unit_error", "spike", "drift", "flatline"):
        events, _ = inject(events, kind, seed=5, spacing=80)
        events = events.drop("_id", "injected")
    # A few duplicated readings (same stay, time and concept), as real charts have.
    return pl.concat([events, events.filter(pl.col("code") == "arterial_mean_bp").head(5)])


@pytest.mark.parametrize("name", ["plausibility", "flatline", "robust_spike"])
def test_batch_flags_exactly_what_the_online_detector_flags(name: str) -> None:
    events = corrupted_cohort()
    flagged = flag_events(events, detectors=(name,))
    batch = {
        (row, kind)
        for row, (anomalous, kind) in enumerate(
            flagged.select("anomalous", "anomaly_kind").iter_rows()
        )
        if anomalous
    }
    online = {(row, finding.kind) for row, finding in run_online_rows(events, detectors=(name,))}
    assert batch == online
    assert batch, "the corrupted cohort should give the detector something to flag"


def test_flag_events_keeps_rows_and_adds_three_columns() -> None:
    events = corrupted_cohort().sample(fraction=1.0, shuffle=True, seed=1)
    flagged = flag_events(events, detectors=("plausibility",))
    assert flagged.columns == [*events.columns, "anomalous", "anomaly_detector", "anomaly_kind"]
    assert flagged.drop("anomalous", "anomaly_detector", "anomaly_kind").equals(events)
    assert flagged.schema["anomalous"] == pl.Boolean
    flags = flagged.filter("anomalous")
    assert set(flags["anomaly_detector"]) == {"plausibility"}
    assert flagged.filter(~pl.col("anomalous"))["anomaly_kind"].null_count() == (
        flagged.height - flags.height
    )


def test_the_first_listed_detector_is_credited() -> None:
    time = START
    events = pl.DataFrame(
        {
            "stay_id": [1],
            "time": [time],
            "code": ["temperature"],
            "numeric_value": [0.0],
        }
    )
    assert flag_events(events, ("flatline", "plausibility"))["anomaly_kind"].to_list() == [
        "sensor_off"
    ]
    assert flag_events(events, ("plausibility", "flatline"))["anomaly_kind"].to_list() == [
        "implausible"
    ]


def test_flag_events_on_empty_events_and_unknown_detectors() -> None:
    empty = pl.DataFrame(
        schema={
            "stay_id": pl.Int64,
            "time": pl.Datetime("us", "UTC"),
            "code": pl.String,
            "numeric_value": pl.Float64,
        }
    )
    assert flag_events(empty, ("plausibility", "flatline", "robust_spike")).height == 0
    with pytest.raises(DetectorError, match="unknown detectors"):
        flag_events(empty, ("nonsense",))
    with pytest.raises(DetectorError, match="needs a model folder"):
        flag_events(empty, ("isolation_forest",))


@pytest.mark.parametrize("kind", ARTEFACT_KINDS)
def test_injection_labels_exactly_what_it_changed(kind: str) -> None:
    events, _, _ = simulate_cohort(stays=2, hours=6, seed=3, monitor_hz=1 / 60)
    corrupted, truth = inject(events, kind, seed=1, spacing=60)
    original = events.with_row_index("_id").select("_id", original="numeric_value")
    joined = corrupted.join(original, on="_id")
    changed = joined.filter(pl.col("numeric_value") != pl.col("original"))
    if kind == "dropout":
        assert events.height - corrupted.height == truth["readings"].sum() > 0
        assert changed.height == 0
    else:
        assert (
            changed.height
            == corrupted["injected"].is_not_null().sum()
            == truth["readings"].sum()
            > 0
        )
    assert set(truth["kind"]) == {kind}


def test_every_registered_detector_is_documented_with_examples() -> None:
    import doctest

    for detector in DETECTORS.values():
        examples = doctest.DocTestFinder().find(detector)[0].examples
        assert examples, f"{detector.__name__} has no >>> example"


def test_times_are_not_needed_in_order_across_stays() -> None:
    rows = [
        (2, START + timedelta(minutes=1), "heart_rate", 80.0),
        (1, START, "temperature", 98.6),
        (2, START, "heart_rate", 81.0),
    ]
    events = pl.DataFrame(rows, schema=["stay_id", "time", "code", "numeric_value"], orient="row")
    assert flag_events(events)["anomalous"].to_list() == [False, True, False]
