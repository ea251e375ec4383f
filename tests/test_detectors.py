"""One conformance test for every registered online detector (River's checks, pickle,
clone, purity, state size, detection on a labelled stream), and the bed bundle."""

from __future__ import annotations

import pickle
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
