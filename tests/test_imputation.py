"""Imputers, the model folder, `bedside train imputer` / `bedside impute` and the benchmark."""

from __future__ import annotations

import doctest
import hashlib
import itertools
import json
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bedside.cli import main
from bedside.replay.simulator import simulate_cohort
from bedside.training.imputation import classical
from bedside.training.imputation.base import Imputer, imputer_class, load_imputer
from bedside.training.imputation.classical import (
    IterativeImputer,
    LinearImputer,
    LocfImputer,
    MeanImputer,
    sample_rows,
    step_rows,
)
from bedside.training.imputation.pipeline import ImputationModel
from bedside.training.imputation.protocol import errors, mcar_mask
from bedside.training.windows import PHYSIONET_2012, Standardiser, stay_windows
from tests.realdata import shared

NAN = np.nan
CLASSICAL = ("mean", "locf", "linear", "knn", "iterative")

# --- tiny hand-made windows with exact answers ----------------------------------------

# Training means: variable 0 -> 2, variable 1 -> 10, variable 2 -> 5.
TRAIN = np.array(
    [
        [[1, 10, 4], [3, NAN, NAN], [NAN, NAN, NAN], [NAN, NAN, NAN], [NAN, NAN, NAN]],
        [[NAN, NAN, 6], [NAN, NAN, NAN], [NAN, NAN, NAN], [NAN, NAN, NAN], [NAN, NAN, NAN]],
    ],
    dtype=np.float32,
)
# Variable 0 has gaps before, between and after; 1 is never seen; 2 is seen once.
STAY = np.array(
    [[[NAN, NAN, NAN], [1, NAN, NAN], [NAN, NAN, 7], [3, NAN, NAN], [NAN, NAN, NAN]]],
    dtype=np.float32,
)


def columns(filled: np.ndarray) -> list[list[float]]:
    return filled[0].T.tolist()


def test_mean_fills_the_training_mean() -> None:
    filled = MeanImputer().fit(TRAIN).impute(STAY)
    assert columns(filled) == [[2, 1, 2, 3, 2], [10] * 5, [5, 5, 7, 5, 5]]


def test_locf_carries_backward_before_the_first_observation_by_default() -> None:
    filled = LocfImputer().fit(TRAIN).impute(STAY)
    assert columns(filled) == [[1, 1, 1, 3, 3], [10] * 5, [7] * 5]


def test_locf_can_fill_leading_gaps_with_the_mean() -> None:
    filled = LocfImputer(leading="mean").fit(TRAIN).impute(STAY)
    assert columns(filled) == [[2, 1, 1, 3, 3], [10] * 5, [5, 5, 7, 7, 7]]


def test_locf_refuses_an_unknown_leading_policy() -> None:
    with pytest.raises(ValueError, match="leading"):
        LocfImputer(leading="zero")  # type: ignore[arg-type]


def test_linear_interpolates_inside_and_carries_the_nearest_outside() -> None:
    filled = LinearImputer().fit(TRAIN).impute(STAY)
    assert columns(filled) == [[1, 1, 2, 3, 3], [10] * 5, [7] * 5]


def test_a_variable_never_seen_in_training_gets_the_standardised_mean_zero() -> None:
    train = TRAIN.copy()
    train[..., 1] = NAN
    for imputer in (MeanImputer(), LocfImputer(), LinearImputer()):
        assert columns(imputer.fit(train).impute(STAY))[1] == [0] * 5


def test_one_window_is_imputed_like_a_batch_of_one() -> None:
    for imputer in (MeanImputer(), LocfImputer(), LinearImputer()):
        imputer.fit(TRAIN)
        assert np.array_equal(imputer.impute(STAY[0]), imputer.impute(STAY)[0])


def test_context_leaves_the_step_itself_out() -> None:
    """Step rows: values, then each variable interpolated from the *other* steps."""
    rows = step_rows(STAY, means=np.array([2.0, 10.0, 5.0]))
    values, context = rows[:, :3], rows[:, 3:]
    assert np.array_equal(values, STAY[0], equal_nan=True)
    assert context[:, 0].tolist() == [1, 3, 2, 1, 3]  # at step 1 (value 1) only the 3 is left
    assert context[:, 1].tolist() == [10] * 5
    assert context[:, 2].tolist() == [7, 7, 5, 7, 7]  # its only value is left out at step 2


def test_docstring_examples() -> None:
    result = doctest.testmod(classical)
    assert result.attempted > 0 and result.failed == 0


# --- every classical imputer -------------------------------------------------------


def random_windows(n: int, seed: int) -> np.ndarray:
    """Stays of 4 standardised variables, 70 % missing; variable 3 echoes variable 0.

    Variable 0 jumps from step to step (interpolation guesses it poorly) and is rarely
    missing; variable 3 is variable 0 plus a little noise.
    """
    rng = np.random.default_rng(seed)
    steps = np.arange(12)[None, :, None]
    level = rng.normal(size=(n, 1, 4))
    values = level + 0.3 * np.sin(steps / 3 + rng.uniform(0, 6, size=(n, 1, 4)))
    values[..., 0] += rng.normal(size=(n, 12))
    values[..., 3] = values[..., 0] + rng.normal(scale=0.05, size=(n, 12))
    missing = rng.random(values.shape) < 0.7
    missing[..., 0] = rng.random((n, 12)) < 0.2
    values[missing] = NAN
    return values.astype(np.float32)


def small(kind: str) -> Imputer:
    """A fast configuration of each kind for these tiny data sets."""
    options = {
        "knn": {"neighbours": 5, "reference_rows": 200, "per_variable": 20},
        "iterative": {"fit_rows": 500, "per_variable": 50},
    }
    return imputer_class(kind)(**options.get(kind, {}))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return random_windows(60, seed=1), random_windows(15, seed=2)


@pytest.mark.parametrize("kind", CLASSICAL)
def test_observed_values_are_kept_and_nothing_is_left_missing(
    kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    train, test = data
    filled = small(kind).fit(train).impute(test)
    observed = ~np.isnan(test)
    assert not np.isnan(filled).any()
    assert np.array_equal(filled[observed], test[observed])


@pytest.mark.parametrize("kind", CLASSICAL)
def test_save_and_load_give_identical_imputations(
    kind: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    train, test = data
    imputer = small(kind).fit(train)
    imputer.save(tmp_path / kind)
    assert not list((tmp_path / kind).glob("*.pkl"))
    again = load_imputer(tmp_path / kind)
    assert type(again) is type(imputer) and again.config() == imputer.config()
    assert np.array_equal(again.impute(test), imputer.impute(test))


def test_regression_on_the_other_variables_beats_interpolation(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    """Variable 3 tracks variable 0: the iterative imputer learns it, interpolation cannot."""
    train, test = data
    hidden = mcar_mask(test, rate=0.3, seed=0)
    inputs = np.where(hidden, NAN, test)
    linear = errors(test, LinearImputer().fit(train).impute(inputs), hidden).mae
    learnt = errors(test, small("iterative").fit(train).impute(inputs), hidden).mae
    assert learnt < 0.8 * linear


def test_knn_improves_on_interpolation_from_similar_steps(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    train, test = data
    hidden = mcar_mask(test, rate=0.3, seed=0)
    inputs = np.where(hidden, NAN, test)
    linear = errors(test, LinearImputer().fit(train).impute(inputs), hidden).mae
    knn = errors(test, small("knn").fit(train).impute(inputs), hidden).mae
    assert knn < 0.95 * linear


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_iterative_applies_its_saved_models_as_scikit_learn_does(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer as SklearnIterativeImputer
    from sklearn.linear_model import BayesianRidge

    train, test = data
    ours = IterativeImputer(fit_rows=500, per_variable=50, seed=3).fit(train)
    rows = step_rows(ours._clipped(train), ours.means)
    rows = rows[sample_rows(rows, 500, 50, seed=3)]
    reference = SklearnIterativeImputer(
        estimator=BayesianRidge(),
        max_iter=ours.max_iter,
        imputation_order="ascending",
        skip_complete=True,
        random_state=3,
    ).fit(rows)
    expected = reference.transform(step_rows(ours._clipped(test), ours.means))
    expected = expected[:, : test.shape[-1]].reshape(test.shape)
    missing = np.isnan(test)
    np.testing.assert_allclose(ours.impute(test)[missing], expected[missing], rtol=1e-5, atol=1e-5)


# --- properties on random windows with gaps -------------------------------------------

windows_with_gaps = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(1, 10), st.integers(1, 3)),
    elements=st.one_of(st.just(np.float32(NAN)), st.floats(-5, 5, width=32, allow_subnormal=False)),
)


def _fitted_for(windows: np.ndarray) -> dict[str, Imputer]:
    train = TRAIN[..., : windows.shape[-1]]
    return {
        "mean": MeanImputer().fit(train),
        "locf": LocfImputer().fit(train),
        "locf-mean": LocfImputer(leading="mean").fit(train),
        "linear": LinearImputer().fit(train),
    }


@settings(max_examples=150, deadline=None)
@given(windows_with_gaps)
def test_no_gap_is_left_and_observed_values_are_kept(windows: np.ndarray) -> None:
    observed = ~np.isnan(windows)
    for imputer in _fitted_for(windows).values():
        filled = imputer.impute(windows)
        assert not np.isnan(filled).any()
        assert np.array_equal(filled[observed], windows[observed])


@settings(max_examples=150, deadline=None)
@given(windows_with_gaps)
def test_linear_between_two_observations_lies_between_them(windows: np.ndarray) -> None:
    fitted = _fitted_for(windows)
    filled, locf = fitted["linear"].impute(windows), fitted["locf"].impute(windows)
    for i, v in np.ndindex(windows.shape[0], windows.shape[2]):
        seen = np.flatnonzero(~np.isnan(windows[i, :, v]))
        for before, after in itertools.pairwise(seen):
            low, high = sorted((windows[i, before, v], windows[i, after, v]))
            between = filled[i, before : after + 1, v]
            assert np.all((between >= low - 1e-5) & (between <= high + 1e-5))
            assert np.all(locf[i, before:after, v] == windows[i, before, v])


# --- the model folder and the command line -------------------------------------------


def write_cohort(folder: Path, stays: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    events, stays_frame, _ = simulate_cohort(stays=stays, hours=48, seed=seed)
    folder.mkdir(parents=True)
    events.write_parquet(folder / "events.parquet")
    stays_frame.write_parquet(folder / "stays.parquet")
    return events, stays_frame


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 simulated stays, one heart rate of 1,000 bpm added to the first."""
    folder = tmp_path_factory.mktemp("cohort") / "data"
    events, stays = write_cohort(folder, stays=40, seed=11)
    first = stays.sort("stay_id").row(0, named=True)
    wrong = events.filter(pl.col("stay_id") == first["stay_id"]).head(1)
    wrong = wrong.with_columns(
        time=pl.lit(first["admit_time"]) + pl.duration(minutes=90),  # step 1
        code=pl.lit("heart_rate"),
        numeric_value=pl.lit(1000.0),
    )
    pl.concat([events, wrong]).write_parquet(folder / "events.parquet")
    return folder


def test_train_and_impute_round_trip(cohort: Path, tmp_path: Path) -> None:
    model_dir, out = tmp_path / "model", tmp_path / "out"
    assert (
        main(
            ["train", "imputer", "--data", str(cohort), "--kind", "linear", "--out", str(model_dir)]
        )
        == 0
    )
    description = json.loads((model_dir / "model.json").read_text())
    stays = pl.read_parquet(cohort / "stays.parquet")
    ids = np.sort(stays["stay_id"].to_numpy()).astype("<i8")
    assert description["kind"] == "linear"
    assert description["training"]["stays"] == 40
    assert description["training"]["stay_ids_sha256"] == hashlib.sha256(ids.tobytes()).hexdigest()
    assert description["training"]["flagged_values_dropped"] >= 1
    assert "albumin" in description["untrained_concepts"]  # the simulator draws no albumin

    assert (
        main(["impute", "--model", str(model_dir), "--data", str(cohort), "--out", str(out)]) == 0
    )
    frame = pl.read_parquet(out / "windows.parquet")
    assert frame.columns == [
        "stay_id",
        "step",
        "step_start",
        "concept",
        "value",
        "imputed",
        "flagged",
    ]
    assert frame["value"].null_count() == 0 and frame["value"].is_nan().sum() == 0
    assert frame.filter(pl.col("concept") == "albumin").height == 0  # observed only: none
    trained = len(PHYSIONET_2012.concepts) - len(description["untrained_concepts"])
    assert frame.filter(pl.col("concept") == "heart_rate").height == 40 * 48
    assert frame.height == 40 * 48 * trained

    # The implausible heart rate is flagged, dropped, and its step imputed.
    first = stays["stay_id"].min()
    cell = frame.filter(
        (pl.col("stay_id") == first) & (pl.col("step") == 1) & (pl.col("concept") == "heart_rate")
    ).row(0, named=True)
    assert cell["flagged"] and cell["value"] < 300
    admitted = stays.filter(pl.col("stay_id") == first)["admit_time"][0]
    assert cell["step_start"] == admitted + timedelta(hours=1)

    # Observed values that were not flagged are written unchanged, in their own units.
    events = pl.read_parquet(cohort / "events.parquet")
    raw = stay_windows(events, stays, PHYSIONET_2012)
    kept = frame.filter(~pl.col("imputed") & ~pl.col("flagged"))
    rows = np.searchsorted(raw.stay_ids, kept["stay_id"].to_numpy())
    variables = [PHYSIONET_2012.concepts.index(c) for c in kept["concept"]]
    expected = raw.values[rows, kept["step"].to_numpy(), variables]
    assert np.array_equal(kept["value"].to_numpy(), expected)
    report = json.loads((out / "report.json").read_text())
    assert report["stays"] == 40 and report["imputed"] + report["observed"] == frame.height


def test_keep_flagged_keeps_the_values_as_recorded(cohort: Path, tmp_path: Path) -> None:
    model_dir, out = tmp_path / "model", tmp_path / "out"
    argv = ["--data", str(cohort), "--keep-flagged", "--out"]
    assert main(["train", "imputer", "--kind", "mean", *argv, str(model_dir)]) == 0
    assert main(["impute", "--model", str(model_dir), *argv, str(out)]) == 0
    frame = pl.read_parquet(out / "windows.parquet")
    assert not frame["flagged"].any()
    assert frame["value"].max() > 300  # the 1,000 bpm, averaged with its step


def test_saved_model_fills_raw_windows_in_their_units(cohort: Path, tmp_path: Path) -> None:
    argv = ["train", "imputer", "--data", str(cohort), "--kind", "knn", "--keep-flagged"]
    assert main([*argv, "--out", str(tmp_path / "model")]) == 0
    model = ImputationModel.load(tmp_path / "model")
    events, stays = (pl.read_parquet(cohort / f) for f in ("events.parquet", "stays.parquet"))
    raw = stay_windows(events, stays, model.grid).values[:3]
    filled = model.impute(raw)
    assert not np.isnan(filled).any()
    assert np.array_equal(filled[~np.isnan(raw)], raw[~np.isnan(raw)])
    v = model.grid.concepts.index("heart_rate")
    imputed = filled[..., v][np.isnan(raw[..., v])]
    assert imputed.size and imputed.min() > 30 and imputed.max() < 200
    assert np.array_equal(model.impute(raw[0]), filled[0])


def test_commands_fail_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["impute", "--model", str(tmp_path / "none"), "--data", str(tmp_path), "--out", "x"]
    assert main(argv) == 2
    assert "not an imputation model" in capsys.readouterr().err
    argv = ["train", "imputer", "--data", str(tmp_path), "--kind", "mean", "--out", "x"]
    assert main(argv) == 2
    assert "not a canonical data folder" in capsys.readouterr().err


# --- the benchmark --------------------------------------------------------------------


def test_bench_reports_every_imputer_and_mask(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_folder = tmp_path / "test"
    write_cohort(test_folder, stays=20, seed=12)
    report_path = tmp_path / "bench.json"
    argv = ["bench", "imputation", "--train", str(cohort), "--test", str(test_folder)]
    assert main([*argv, "--imputers", "mean,linear", "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "| linear |" in out and "standardised MAE per variable" in out
    report = json.loads(report_path.read_text())
    observed = report["protocol"]["test_observed"]
    assert report["implausible_hidden"]["mcar"]["hidden"] == round(0.1 * observed)
    assert report["protocol"]["raw_values"].startswith("kept as recorded")
    results = {r["imputer"]: r for r in report["results"]}
    assert set(results) == {"mean", "linear"}
    for result in results.values():
        assert set(result["masks"]) == {"mcar", "block"}
        mcar = result["masks"]["mcar"]
        assert mcar["std"]["n"] == round(0.1 * observed)
        assert len(mcar["variables"]) == len(PHYSIONET_2012.concepts)
        assert result["single_window_ms"] > 0 and mcar["infer_s"] >= 0
        assert result["single_window_p99_ms"] >= result["single_window_ms"]
    assert results["mean"]["masks"]["mcar"]["std"]["mre"] > 0.9
    assert (
        results["linear"]["masks"]["mcar"]["std"]["mae"]
        < results["mean"]["masks"]["mcar"]["std"]["mae"]
    )


def test_bench_refuses_an_unknown_imputer(cohort: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "imputation", "--train", str(cohort), "--test", str(cohort)]
    assert main([*argv, "--imputers", "mean,magic"]) == 2
    assert "unknown imputers ['magic']" in capsys.readouterr().err


def test_bench_names_the_extra_to_install_when_pypots_is_missing(
    cohort: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pypots", None)  # import pypots now fails
    argv = ["bench", "imputation", "--train", str(cohort), "--test", str(cohort)]
    assert main([*argv, "--imputers", "mean", "--peer", "pypots"]) == 2
    assert "pip install 'bedside[bench]'" in capsys.readouterr().err


# --- the baseline on the real data -----------------------------------------------------


@pytest.mark.slow
def test_classical_imputers_reproduce_the_baseline(tmp_path: Path) -> None:
    """BASELINES.md, set-a -> set-b, 10 % MCAR seed 2026: mean, LOCF, linear to 3 decimals."""
    from bedside.training.data import physionet2012

    root = shared("physionet2012")
    windows = {}
    for name in ("a", "b"):
        physionet2012.convert(root / f"set-{name}", tmp_path / name, root / f"Outcomes-{name}.txt")
        events, stays = (
            pl.read_parquet(tmp_path / name / f) for f in ("events.parquet", "stays.parquet")
        )
        windows[name] = stay_windows(events, stays, PHYSIONET_2012)
    standardiser = Standardiser.fit(windows["a"])
    train, truth = (standardiser.transform(windows[n].values) for n in ("a", "b"))
    hidden = mcar_mask(windows["b"].values, rate=0.1, seed=2026)
    assert hidden.sum() == 131_262
    inputs = np.where(hidden, NAN, truth)
    baseline = {"mean": (0.7155, 0.9832, 1.0000), "locf": (0.4324, 2.3744, 0.6044)}
    baseline["linear"] = (0.3661, 1.5454, 0.5117)
    for kind, expected in baseline.items():
        found = errors(truth, imputer_class(kind)().fit(train).impute(inputs), hidden)
        assert (round(found.mae, 4), round(found.rmse, 4), round(found.mre, 4)) == expected, kind
