"""One conformance test for every registered online detector (River's checks, pickle,
clone, purity, state size, detection on a labelled stream), and the bed bundle."""

from __future__ import annotations

import hashlib
import pickle
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache

import numpy as np
import polars as pl
import pytest
from river.checks import common
from sklearn.metrics import roc_auc_score

from bedside.replay.simulator import simulate_cohort
from bedside.schemas.messages import ANOMALIES_TOPIC, decode, encode
from bedside.training.detectors import DETECTORS, BedDetector, BedDetectors, samples
from bedside.training.detectors.inject import inject

# River's own checks that need no dataset download.
RIVER_CHECKS = [
    common.check_repr,
    common.check_str,
    common.check_tags,
    common.check_clone_same_class,
    common.check_clone_is_idempotent,
    common.check_init_has_default_params_for_tests,
    common.check_init_default_params_are_not_mutable,
    common.check_doc,
    common.check_clone_changes_memory_addresses,
    common.check_mutate_can_be_idempotent,
    common.check_pickling_supports_roundtrip,
    common.check_repr_roundtrips_clone,
    common.check_clone_with_new_params_applies,
    common.check_get_params_matches_signature,
]

#: Which labelled artefacts each detector is for (simulator kinds and injected ones),
#: and the ROC AUC it must reach on them, per value it judges, scored before learning.
TARGETS = {
    "plausibility": ({"unit_error"}, 0.95),
    "flatline": ({"flatline", "arterial_zero", "sensor_off"}, 0.8),
    "robust_spike": ({"spike"}, 0.8),
    "consistency": ({"drift", "spike"}, 0.75),
    "multivariate": ({"spike"}, 0.7),
}
#: Most pickled bytes of one warm detector, and of a bed with all of them.
DETECTOR_BYTES = 25_000
BED_BYTES = 50_000


@cache
def labelled_stream() -> tuple[pl.DataFrame, np.ndarray]:
    """A simulated cohort monitored at 1/min with its artefacts, plus injected unit
    errors and drifts: the events and, per row, the artefact kind ('' when clean)."""
    events, _, truth = simulate_cohort(stays=3, hours=10, seed=7, monitor_hz=1 / 60)
    labels = (
        events.with_row_index("_row")
        .join(truth, left_on=["stay_id", "code"], right_on=["stay_id", "code"], how="left")
        .filter(pl.col("time").is_between(pl.col("start"), pl.col("end")))
        .group_by("_row")
        .agg(pl.col("kind").first())
    )
    events = events.with_row_index("_row").join(labels, on="_row", how="left").drop("_row")
    for kind in ("unit_error", "drift"):
        events, _ = inject(events.drop("_id", strict=False), kind, seed=3, spacing=150)
        events = events.with_columns(kind=pl.coalesce("injected", "kind")).drop("injected")
    events = events.drop("_id").sort("stay_id", "time")
    return events.drop("kind"), events["kind"].fill_null("").to_numpy()


def stream(events: pl.DataFrame) -> Iterator[tuple[int, dict[str, float]]]:
    for stay, _, sample in samples(events):
        yield stay, sample


@pytest.fixture(params=sorted(DETECTORS))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def warm(detector: BedDetector, count: int = 400) -> list[dict[str, float]]:
    """Feed a detector the first samples of the labelled stream; return the next ones."""
    events, _ = labelled_stream()
    first_stay = events.filter(pl.col("stay_id") == events["stay_id"][0])
    sampled = [sample for _, sample in stream(first_stay)]
    for sample in sampled[:count]:
        detector.learn_one(sample)
    return sampled[count:]


@pytest.mark.parametrize("check", RIVER_CHECKS, ids=lambda check: check.__name__)
def test_river_checks(name: str, check: object) -> None:
    check(DETECTORS[name]())  # type: ignore[operator]


def test_registry_names_match_classes(name: str) -> None:
    assert DETECTORS[name].name == name


def test_pickle_round_trip_scores_identically(name: str) -> None:
    detector = DETECTORS[name]()
    rest = warm(detector)
    copy = pickle.loads(pickle.dumps(detector))
    for sample in rest[:120]:
        assert copy.score_signals(sample) == detector.score_signals(sample)
        assert copy.process_one(sample) == detector.process_one(sample)


def test_clone_is_fresh_and_equivalent(name: str) -> None:
    detector = DETECTORS[name]()
    rest = warm(detector)
    fresh, clone = DETECTORS[name](), detector.clone()
    assert clone._get_params() == detector._get_params()
    for sample in rest[:120]:
        assert clone.process_one(sample) == fresh.process_one(sample)


def test_scoring_is_pure(name: str) -> None:
    detector = DETECTORS[name]()
    rest = warm(detector)
    before = pickle.dumps(detector)
    for sample in rest[:50]:
        detector.score_one(sample)
        detector.score_signals(sample)
        detector.explain_one(sample)
    assert pickle.dumps(detector) == before


def test_process_one_is_explain_then_learn(name: str) -> None:
    fused, apart = DETECTORS[name](), DETECTORS[name]()
    for _, sample in list(stream(labelled_stream()[0]))[:400]:
        found = apart.explain_one(sample)
        apart.learn_one(sample)
        assert fused.process_one(sample) == found
    assert pickle.dumps(fused) == pickle.dumps(apart)


def test_findings_are_flagged_scores(name: str) -> None:
    detector = DETECTORS[name]()
    for sample in warm(detector):
        scores = detector.score_signals(sample)
        for finding in detector.explain_one(sample):
            assert finding.detector == name
            assert finding.score >= 1.0
            assert scores[finding.concept] >= 1.0
            assert finding.value == sample[finding.concept]
        detector.learn_one(sample)


def test_warm_state_is_small(name: str) -> None:
    detector = DETECTORS[name]()
    warm(detector, count=600)
    assert len(pickle.dumps(detector)) <= DETECTOR_BYTES


def test_detection_beats_chance_on_a_labelled_stream(name: str) -> None:
    events, labels = labelled_stream()
    targets, least_auc = TARGETS[name]
    row_of = {
        (stay, moment, code): row
        for row, (stay, moment, code) in enumerate(
            events.select("stay_id", "time", "code").iter_rows()
        )
    }
    scores = np.zeros(events.height)
    scored = np.zeros(events.height, bool)
    detector: BedDetector | None = None
    current = None
    for stay, moment, sample in samples(events):
        if stay != current:
            detector, current = DETECTORS[name](), stay
        assert detector is not None
        for concept, score in detector.score_signals(sample).items():
            scores[row_of[(stay, moment, concept)]] = score
            scored[row_of[(stay, moment, concept)]] = True
        detector.learn_one(sample)
    # Over the values the detector judges (it says which), clean or of its kinds.
    target = np.isin(labels, list(targets))
    judged = scored & (target | (labels == ""))
    auc = roc_auc_score(target[judged], scores[judged])
    assert auc >= least_auc, f"{name}: ROC AUC {auc:.3f} on {sorted(targets)}"


def test_a_bed_runs_every_detector_and_stays_small() -> None:
    events, _ = labelled_stream()
    bed = BedDetectors()
    assert list(bed.detectors) == list(DETECTORS)
    kinds = set()
    first = events["stay_id"][0]
    for stay, sample in stream(events):
        if stay != first:
            break
        kinds.update(f.kind for f in bed.process(sample))
    assert {"spike", "sensor_off"} <= kinds
    assert len(pickle.dumps(bed)) <= BED_BYTES


def test_multivariate_detectors_see_only_unflagged_values() -> None:
    bed = BedDetectors()
    for minute in range(40):
        bed.process({"heart_rate": 80.0 + minute % 3, "pulse_rate": 80.0 + minute % 3})
    findings = bed.process({"heart_rate": 240.0, "pulse_rate": 81.0})
    assert [(f.detector, f.kind) for f in findings] == [("robust_spike", "spike")]


def test_findings_become_valid_anomaly_messages() -> None:
    bed = BedDetectors()
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    anomalies = bed.anomalies("icu1-03", moment, {"temperature": 98.6, "spo2": 0.0}, "stay-1")
    assert [a.kind for a in anomalies] == ["unit_error", "sensor_off"]
    for anomaly in anomalies:
        assert decode(ANOMALIES_TOPIC, encode(anomaly)) == anomaly


@pytest.mark.parametrize(
    "module",
    [
        "rules",
        "plausibility",
        "flatline",
        "robust_spike",
        "consistency",
        "half_space_trees",
        "multivariate",
        "bed",
        "batch",
        "inject",
        "isolation_forest",
    ],
)
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    loaded = importlib.import_module(f"bedside.training.detectors.{module}")
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(loaded, optionflags=flags)
    assert result.attempted > 0 and result.failed == 0


# --- what a bed flags is pinned: speed-ups must not change it ---------------------------

#: Monitor vitals at 1 Hz: (concept, usual value, noise amplitude).
VITALS = (
    ("heart_rate", 80.0, 3.0),
    ("spo2", 97.0, 1.0),
    ("respiratory_rate", 16.0, 2.0),
    ("arterial_systolic_bp", 120.0, 4.0),
    ("arterial_diastolic_bp", 60.0, 3.0),
    ("arterial_mean_bp", 80.0, 3.0),
    ("temperature", 37.0, 0.2),
    ("pulse_rate", 80.0, 3.0),
)

#: How far each vital goes in a minute of shock.
SHOCK = {
    "heart_rate": 80.0,
    "pulse_rate": 80.0,
    "spo2": -20.0,
    "respiratory_rate": 20.0,
    "arterial_systolic_bp": -50.0,
    "arterial_diastolic_bp": -25.0,
    "arterial_mean_bp": -33.0,
}


def monitored_bed(seed: int, seconds: int = 900) -> Iterator[dict[str, float]]:
    """One bed's vitals at 1 Hz with artefacts of every kind (spikes, a frozen heart rate,
    an arterial line open to air, temperatures in °F, an SpO2 as a fraction, a drifting
    systolic, an impossible heart rate, missing pulse rates) and a shock creeping in.
    Drawn with ``random()`` alone: the same stream on every Python version."""
    rng = random.Random(seed)
    frozen = None
    for second in range(seconds):
        sample = {
            concept: round(usual + noise * (2 * rng.random() - 1), 1)
            for concept, usual, noise in VITALS
        }
        phase = second % 300
        if rng.random() < 0.02:
            spiked = VITALS[int(rng.random() * len(VITALS))][0]
            sample[spiked] = round(sample[spiked] * (0.5 if rng.random() < 0.5 else 1.6), 1)
        if 100 <= phase < 125:  # the heart rate frozen
            frozen = sample["heart_rate"] if frozen is None else frozen
            sample["heart_rate"] = frozen
        else:
            frozen = None
        if 150 <= phase < 154:
            for concept in ("arterial_systolic_bp", "arterial_diastolic_bp", "arterial_mean_bp"):
                sample[concept] = 0.0
        if phase in (170, 171):
            sample["temperature"] = round(sample["temperature"] * 9 / 5 + 32, 1)
        if phase == 180:
            sample["spo2"] = sample["spo2"] / 100
        if 200 <= phase < 240:
            sample["arterial_systolic_bp"] += (phase - 200) * 1.5
        if 240 <= phase < 300:  # every vital goes its own way, slowly
            for concept, change in SHOCK.items():
                sample[concept] = round(sample[concept] + change * (phase - 240) / 60, 1)
        if phase == 260:
            sample["heart_rate"] = 400.0
        if rng.random() < 0.1:
            del sample["pulse_rate"]
        yield sample


#: What a bed flags on :func:`monitored_bed` (seeds 0-2), as the detectors flagged it
#: before they were made faster: findings per detector and kind, and the SHA-256 of them
#: all (see the test below).
PINNED_COUNTS = {
    "consistency/multivariate": 239,
    "flatline/flatline": 99,
    "flatline/sensor_off": 108,
    "multivariate/multivariate": 154,
    "plausibility/implausible": 24,
    "plausibility/unit_error": 27,
    "robust_spike/spike": 175,
    "robust_spike/step": 84,
}
PINNED_DIGEST = "f47f37e44000e1a5d91f43bb83076f07908a6a0077058af4064a90d23be24bc1"


def test_a_bed_flags_what_it_always_flagged() -> None:
    """The findings of a bed running every detector on monitored streams, pinned before
    the detectors were made faster: same detector, concept, value, kind and detail, score
    to 1e-9. If a detector's behaviour changes on purpose, update the pins."""
    lines = []
    counts = Counter[str]()
    for seed in range(3):
        bed = BedDetectors()
        for second, sample in enumerate(monitored_bed(seed)):
            for f in bed.process(sample):
                lines.append(f"{f.detector} {f.concept} {f.value!r} {f.kind} {f.score:.9f}")
                lines.append(f.detail)
                counts[f"{f.detector}/{f.kind}"] += 1
            if second % 100 == 99:  # as the engine resumes a bed from its snapshot
                bed = pickle.loads(pickle.dumps(bed))
    assert dict(counts) == PINNED_COUNTS
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == PINNED_DIGEST
