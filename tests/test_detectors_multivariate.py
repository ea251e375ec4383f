"""The multivariate detectors (Half-Space Trees, consistency between vitals, Isolation
Forest), the model folder, the command line and the benchmark."""

from __future__ import annotations

import argparse
import json
import pickle
import random
from pathlib import Path

import polars as pl
import pytest
from river import anomaly

from bedside.replay.simulator import simulate_cohort
from bedside.training.detectors import (
    BedDetectors,
    CompactHalfSpaceTrees,
    DetectorError,
    Multivariate,
    flag_events,
)
from bedside.training.detectors.cli import detect, train
from bedside.training.detectors.consistency import Consistency
from bedside.training.detectors.isolation_forest import OfflineIsolationForest
from tests.realdata import shared


def points(count: int, seed: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [{name: rng.betavariate(2, 5) for name in "abcd"} for _ in range(count)]


# --- Half-Space Trees ------------------------------------------------------------------


@pytest.mark.parametrize(("n_trees", "height", "window"), [(5, 3, 20), (10, 6, 50), (3, 8, 100)])
def test_compact_trees_score_as_rivers_own(n_trees: int, height: int, window: int) -> None:
    limits = dict.fromkeys("abcd", (0.0, 1.0))
    ours = CompactHalfSpaceTrees(n_trees, height, window, limits, seed=3)
    river = anomaly.HalfSpaceTrees(n_trees, height, window, limits, seed=3)
    for index, x in enumerate(points(400, seed=1)):
        if index % 5 == 1:
            del x["c"]  # a missing feature goes down the busier branch, in both
        assert ours.score_one(x) == pytest.approx(river.score_one(x), abs=1e-12)
        ours.learn_one(x)
        river.learn_one(x)


def test_compact_trees_share_their_structure_and_pickle_only_masses() -> None:
    one, other = CompactHalfSpaceTrees(seed=1), CompactHalfSpaceTrees(seed=1)
    for x in points(300, seed=2):
        one.learn_one(x)
        other.learn_one(x)
    assert one._trees is other._trees
    data = pickle.dumps(one)
    assert len(data) < 6_000  # 2 x 10 x 127 masses of 2 bytes, and little else
    assert b"thresholds" not in data
    again = pickle.loads(data)
    assert again._trees is one._trees
    assert all(again.score_one(x) == one.score_one(x) for x in points(50, seed=3))


def warm_multivariate(**params: object) -> Multivariate:
    detector = Multivariate(
        limits={"heart_rate": (30.0, 180.0), "spo2": (70.0, 100.0)}, window_size=50, **params
    )
    rng = random.Random(0)
    for _ in range(120):
        detector.learn_one({"heart_rate": rng.gauss(80, 3), "spo2": rng.gauss(97, 1)})
    return detector


def test_multivariate_does_not_learn_what_it_flags() -> None:
    detector = warm_multivariate()
    odd = {"heart_rate": 150.0, "spo2": 97.0}
    assert detector.score_one(odd) >= 1.0
    masses = list(detector._trees._l_mass)
    carried = dict(detector._carried)
    detector.learn_one(odd)
    assert detector._trees._l_mass == masses
    assert detector._carried == carried
    unprotected = warm_multivariate(protect_anomaly_detector=False)
    unprotected.learn_one(odd)
    assert unprotected._trees._l_mass != masses


def test_multivariate_accepts_a_lasting_change_after_its_patience() -> None:
    detector = warm_multivariate(patience=5)
    odd = {"heart_rate": 150.0, "spo2": 97.0}
    masses = list(detector._trees._l_mass)
    for _ in range(5):
        detector.learn_one(odd)
    assert detector._trees._l_mass == masses
    detector.learn_one(odd)
    assert detector._trees._l_mass != masses


def test_a_population_reference_judges_a_new_bed_at_once() -> None:
    trained = warm_multivariate()
    fresh = Multivariate(
        limits={"heart_rate": (30.0, 180.0), "spo2": (70.0, 100.0)}, window_size=50
    )
    assert fresh.score_one({"heart_rate": 150.0, "spo2": 97.0}) == 0.0
    fresh.load_reference(trained.reference_masses())
    assert fresh.score_one({"heart_rate": 150.0, "spo2": 97.0}) >= 1.0


# --- consistency -------------------------------------------------------------------------


def arterial(systolic: float, mean: float, diastolic: float) -> dict[str, float]:
    return {
        "arterial_systolic_bp": systolic,
        "arterial_mean_bp": mean,
        "arterial_diastolic_bp": diastolic,
    }


def test_consistency_catches_a_drifting_pressure_and_blames_it() -> None:
    detector = Consistency()
    rng = random.Random(1)
    for _ in range(60):
        systolic, diastolic = rng.gauss(120, 4), rng.gauss(60, 3)
        detector.learn_one(arterial(systolic, diastolic + (systolic - diastolic) / 3, diastolic))
    blamed = set()
    for step in range(20):  # the mean transducer drifts up by 1 mmHg a minute
        found = detector.process_one(arterial(120.0, 80.0 + step, 60.0))
        blamed |= {(f.concept, f.kind) for f in found}
    assert blamed == {("arterial_mean_bp", "multivariate")}


def test_consistency_does_not_learn_flagged_residuals_until_its_patience() -> None:
    detector = Consistency(patience=3)
    for minute in range(30):
        detector.learn_one({"heart_rate": 80.0 + minute % 3, "pulse_rate": 80.0 + minute % 3})
    before = list(detector._windows["pulse_deficit"])
    for _ in range(3):
        detector.learn_one({"heart_rate": 160.0, "pulse_rate": 80.0})
    assert list(detector._windows["pulse_deficit"]) == before
    detector.learn_one({"heart_rate": 160.0, "pulse_rate": 80.0})
    assert list(detector._windows["pulse_deficit"]) != before


# --- Isolation Forest, model folder and command line ----------------------------------


@pytest.fixture(scope="module")
def canonical(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("canonical")
    events, stays, _ = simulate_cohort(stays=4, hours=12, seed=4, monitor_hz=1 / 60)
    # Charted temperatures in °F by mistake, for the detectors to find.
    events = events.with_columns(
        numeric_value=pl.when((pl.col("code") == "temperature") & (pl.col("stay_id") == 2))
        .then(pl.col("numeric_value") * 1.8 + 32)
        .otherwise(pl.col("numeric_value"))
    )
    events.write_parquet(folder / "events.parquet")
    stays.write_parquet(folder / "stays.parquet")
    return folder


@pytest.fixture(scope="module")
def model(canonical: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    assert train(argparse.Namespace(data=[canonical], seed=7, out=out)) == 0
    return out


def test_the_model_folder_holds_no_pickle(model: Path) -> None:
    assert sorted(p.name for p in model.iterdir()) == [
        "detectors.json",
        "isolation_forest_sample.parquet",
    ]
    saved = json.loads((model / "detectors.json").read_text())
    assert saved["format"] == "bedside.detectors/1"
    assert set(saved) >= {"isolation_forest", "multivariate", "seed", "data"}


def test_a_loaded_forest_is_the_trained_one(model: Path) -> None:
    saved = json.loads((model / "detectors.json").read_text())["isolation_forest"]
    loaded = OfflineIsolationForest.load(model)
    assert loaded.sample is not None
    again = loaded._scores(loaded.sample.head(len(saved["check_scores"])))
    assert again.tolist() == saved["check_scores"]  # bit for bit


def test_a_forest_that_refits_differently_is_refused(model: Path, tmp_path: Path) -> None:
    saved = json.loads((model / "detectors.json").read_text())
    saved["isolation_forest"]["check_scores"][0] += 0.01
    (tmp_path / "detectors.json").write_text(json.dumps(saved))
    (tmp_path / "isolation_forest_sample.parquet").write_bytes(
        (model / "isolation_forest_sample.parquet").read_bytes()
    )
    with pytest.raises(DetectorError, match="retrain"):
        OfflineIsolationForest.load(tmp_path)


def test_beds_start_from_the_trained_reference(model: Path) -> None:
    bed = BedDetectors.from_model(model)
    trees = bed.detectors["multivariate"]
    assert isinstance(trees, Multivariate)
    assert not trees._trees._first_window


def test_detect_writes_flags_and_a_summary(canonical: Path, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert detect(argparse.Namespace(model=model, data=canonical, out=out)) == 0
    flags = pl.read_parquet(out / "flags.parquet")
    assert flags["anomalous"].all()
    assert {"unit_error", "sensor_off"} <= set(flags["anomaly_kind"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flagged"] == flags.height
    assert {"detector", "kind", "concept", "flagged", "values", "per_1000"} == set(summary["by"][0])
    detectors = {row["detector"] for row in summary["by"]}
    assert {"plausibility", "flatline", "robust_spike"} <= detectors


def test_flag_events_with_a_model(canonical: Path, model: Path) -> None:
    events = pl.read_parquet(canonical / "events.parquet")
    flagged = flag_events(events, ("isolation_forest",), model)
    share = flagged["anomalous"].mean()
    assert share is not None and 0 < share < 0.01
    assert set(flagged.filter("anomalous")["anomaly_kind"]) == {"multivariate"}


def test_the_benchmark_reports_every_figure(tmp_path: Path) -> None:
    from bedside.training.detectors.bench import run

    events, _, _ = simulate_cohort(stays=3, hours=24, seed=4)  # charted, as PhysioNet
    events.write_parquet(tmp_path / "events.parquet")
    out = tmp_path / "bench.json"
    assert run(argparse.Namespace(physionet=tmp_path, wfdb=[], stays=1000, seed=1, json=out)) == 0
    figures = json.loads(out.read_text())["datasets"]["physionet2012"]
    assert set(figures["injected"]) == {
        "spike",
        "flatline",
        "drift",
        "dropout",
        "unit_error",
        "sensor_off",
    }
    spikes = figures["injected"]["spike"]["detectors"]["robust_spike"]
    assert {"tp", "fp", "precision", "recall", "f1"} <= set(spikes)
    assert figures["cost"]["state_bytes_max"] <= 50_000
    assert set(figures["untouched"]["detectors"]) == {
        "plausibility",
        "flatline",
        "robust_spike",
        "consistency",
        "multivariate",
        "isolation_forest",
        "any",
    }


def test_real_monitor_zeros_are_sensor_off() -> None:
    from bedside.training.detectors.bench import wfdb_events

    record = shared("mimic3wdb", "p000020", "p000020-2183-04-28-17-47n.hea")
    events = wfdb_events(record, stay_id=1)
    flagged = flag_events(events, ("plausibility", "flatline")).filter("anomalous")
    zeros = flagged.filter(pl.col("code") == "arterial_mean_bp")
    assert zeros.height > 300
    assert set(zeros["anomaly_kind"]) == {"sensor_off"}
