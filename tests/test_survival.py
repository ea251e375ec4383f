"""Survival models: likelihood, features, tiny models that learn, export, the engine's path.

Models are tiny and the cohort is simulated (:func:`bedside.replay.simulator.simulate_cohort`),
so the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bedside.cli import main
from bedside.replay.simulator import simulate_cohort
from bedside.training.survival.data import build_cohort
from bedside.training.survival.features import FEATURES, window_features
from bedside.training.survival.fit import BLENDS, FitOptions, Workspace, fit_model, prepare
from bedside.training.survival.importance import integrated_gradients, permutation_importance
from bedside.training.survival.likelihood import (
    interval_targets,
    negative_log_likelihood,
    survival_curve,
)
from bedside.training.survival.model import SurvivalModel
from bedside.training.survival.nets import SurvivalNet, survival_loss
from bedside.training.survival.tabular import (
    LR_C_GRID,
    LR_DEFAULTS,
    TabularPredictor,
    _export_trees,
    _trees_logit,
    design_matrix,
)
from bedside.training.survival.train import Forecaster
from bedside.training.windows import window

torch.set_num_threads(2)

#: Tiny settings per architecture: enough to learn the simulator's signal in seconds.
TINY: dict[str, dict[str, object]] = {
    "tsfel-lr": {},
    "tsfel-gbm": {"max_iter": 15, "max_leaf_nodes": 7, "max_features": 1.0},
    "lstm": {"hidden": 16, "head": 16, "batch_size": 128, "max_epochs": 8, "patience": 3},
    "cnn": {"channels": 16, "blocks": 2, "head": 16, "max_epochs": 12, "patience": 4},
    "cnn-lstm": {"channels": 16, "hidden": 16, "head": 16, "max_epochs": 12, "patience": 4},
    "lstm-tsfel": {"hidden": 16, "head": 16, "batch_size": 128, "max_epochs": 8, "patience": 3},
}
TINY["deep-ensemble"] = {part: TINY[part] for part in BLENDS["deep-ensemble"]}


# --- the likelihood ---------------------------------------------------------------------


def test_discrete_time_likelihood_counts_censoring_by_hand() -> None:
    grid = (24.0, 48.0, 72.0)
    # died at 30 h; censored at 30 h; died at time 0; followed beyond the grid.
    time_h = np.array([30.0, 30.0, 0.0, 100.0, np.nan])
    event = np.array([1, 0, 1, 0, 0])
    at_risk, died = interval_targets(time_h, event, grid)
    hazards = np.array([[0.1, 0.2, 0.3]] * 5)
    expected = [
        -math.log(0.9) - math.log(0.2),  # survived the first day, died in the second
        -math.log(0.9),  # censored inside the second day: only the first counts
        -math.log(0.1),  # died in the first interval
        -math.log(0.9) - math.log(0.8) - math.log(0.7),  # survived all three
        0.0,  # follow-up unknown: no contribution
    ]
    assert negative_log_likelihood(hazards, at_risk, died) == pytest.approx(expected)
    logits = torch.logit(torch.tensor(hazards, dtype=torch.float64))
    loss = survival_loss(logits, torch.tensor(at_risk * 1.0), torch.tensor(died * 1.0))
    assert float(loss) == pytest.approx(np.mean(expected))


def test_survival_curves_are_monotone_probabilities() -> None:
    hazards = np.random.default_rng(0).uniform(0, 1, size=(200, 7))
    curves = survival_curve(hazards)
    assert ((curves >= 0) & (curves <= 1)).all()
    assert (np.diff(curves, axis=1) <= 0).all()


@pytest.mark.parametrize(
    "module",
    [
        "bedside.training.survival.likelihood",
        "bedside.training.survival.features",
        "bedside.training.survival.inputs",
        "bedside.training.survival.nets",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --- features and exported trees --------------------------------------------------------


def test_features_follow_tsfel_definitions() -> None:
    tsfel = pytest.importorskip("tsfel.feature_extraction.features")
    reference = {
        "mean": tsfel.calc_mean,
        "median": tsfel.calc_median,
        "min": tsfel.calc_min,
        "max": tsfel.calc_max,
        "mean_abs_deviation": tsfel.mean_abs_deviation,
        "rms": tsfel.rms,
        "peak_to_peak": tsfel.pk_pk_distance,
        "mean_diff": tsfel.mean_diff,
        "mean_abs_diff": tsfel.mean_abs_diff,
        "median_abs_diff": tsfel.median_abs_diff,
        "sum_abs_diff": tsfel.sum_abs_diff,
        "std": tsfel.calc_std,
        "interquartile_range": tsfel.interq_range,
        "median_abs_deviation": tsfel.median_abs_deviation,
        "skewness": tsfel.skewness,
        "kurtosis": tsfel.kurtosis,
        "abs_energy": tsfel.abs_energy,
        "ecdf_percentile_80": lambda s: tsfel.ecdf_percentile(s, [0.2, 0.8])[1],
        "slope": tsfel.slope,
        "median_diff": tsfel.median_diff,
        "distance": tsfel.distance,
        "positive_turning": tsfel.positive_turning,
        "negative_turning": tsfel.negative_turning,
        "zero_crossings": tsfel.zero_cross,
    }
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 24, 2))
    x[rng.random(x.shape) < 0.5] = np.nan
    ours = window_features(x).reshape(30, 2, len(FEATURES))
    for stay in range(30):
        for variable in range(2):
            series = x[stay, :, variable]
            series = series[~np.isnan(series)]
            for name, function in reference.items():
                got = ours[stay, variable, FEATURES.index(name)]
                assert got == pytest.approx(function(series), rel=1e-9, abs=1e-12), name


def test_exported_trees_give_scikit_learns_probabilities() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 6))
    y = (x[:, 0] + np.nan_to_num(x[:, 1]) + rng.normal(size=400) > 0.5).astype(int)
    x[rng.random(x.shape) < 0.2] = np.nan
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    exported = _export_trees("m", model, 0.0)
    ours = 1 / (1 + np.exp(-_trees_logit(exported, "m", x)))
    np.testing.assert_allclose(ours, model.predict_proba(x)[:, 1], atol=1e-12)


@pytest.mark.parametrize("arch", ["tsfel-lr", "tsfel-gbm"])
def test_pooled_hazards_learn_each_intervals_rate_and_the_risk_factor(arch: str) -> None:
    """``hazards="pooled"``: one classifier over every (stay, interval at risk) row, the
    interval a feature. Its hazards match each interval's observed death rate and rank
    stays by the risk factor that drives their deaths."""
    rng = np.random.default_rng(5)
    n, k = 3000, 4
    x = rng.normal(size=(n, 3))
    base = np.array([-3.0, -2.0, -2.5, -1.5])  # a baseline hazard per interval
    hazard = 1 / (1 + np.exp(-(base[None, :] + 0.8 * x[:, :1])))
    deaths = rng.random((n, k)) < hazard  # a death in interval j, if alive and followed
    died_in, dies = np.argmax(deaths, axis=1), deaths.any(axis=1)
    censored_at = rng.integers(1, k + 1, n)  # intervals followed to their end
    at_risk = np.zeros((n, k), dtype=bool)
    died = np.zeros((n, k))
    for i in range(n):
        last = died_in[i] if dies[i] and died_in[i] < censored_at[i] else censored_at[i] - 1
        at_risk[i, : last + 1] = True
        died[i, last] = float(dies[i] and died_in[i] == last)
    params = {**(LR_DEFAULTS if arch == "tsfel-lr" else TINY[arch]), "hazards": "pooled"}
    if arch == "tsfel-gbm":
        params |= {"features": "compact", "max_iter": 60, "class_weight": None}
    model = TabularPredictor(arch, params).fit(x, dies.astype(float), at_risk, died, seed=0)
    assert model.targets == ["mortality", "hazard"]
    _, logits = model.logits(x)
    assert logits.shape == (n, k)
    predicted = 1 / (1 + np.exp(-logits))
    for j in range(k):
        observed = died[at_risk[:, j], j].mean()
        assert predicted[at_risk[:, j], j].mean() == pytest.approx(observed, abs=0.015), j
    assert roc_auc_score(died[at_risk[:, 1], 1], logits[at_risk[:, 1], 1]) > 0.65
    separate = TabularPredictor(arch, {**params, "hazards": "separate"})
    separate.fit(x, dies.astype(float), at_risk, died, seed=0)
    assert separate.targets == ["mortality"] + [f"interval_{j}" for j in range(k)]
    assert separate.logits(x)[1].shape == (n, k)
    with pytest.raises(ValueError, match="hazards must be one of"):
        TabularPredictor(arch, {**params, "hazards": "shared"}).fit(
            x, dies.astype(float), at_risk, died, seed=0
        )


# --- tiny models on a simulated cohort ----------------------------------------------------


@pytest.fixture(scope="module")
def simulated() -> dict[str, pl.DataFrame]:
    events, stays, _ = simulate_cohort(stays=360, hours=48, seed=11)
    train_ids = stays["stay_id"].head(240)
    return {
        "events": events,
        "train": stays.filter(pl.col("stay_id").is_in(train_ids.implode())),
        "test": stays.filter(~pl.col("stay_id").is_in(train_ids.implode())),
    }


def assert_loaded_scores_as_trained(
    model: SurvivalModel, folder: Path, simulated: dict[str, pl.DataFrame]
) -> None:
    """The model saved in ``folder`` loads and scores the test stays as the trained one,
    and those scores have learnt mortality."""
    loaded = SurvivalModel.load(folder)
    test = build_cohort(simulated["events"], simulated["test"], model.grid)
    scored = loaded.predict_windows(test.windows, test.stays)
    np.testing.assert_array_equal(
        scored.mortality, model.predict_windows(test.windows, test.stays).mortality
    )
    assert roc_auc_score(test.mortality, scored.mortality) > 0.7


@pytest.fixture(scope="module")
def models(simulated: dict[str, pl.DataFrame]) -> dict[str, SurvivalModel]:
    return {
        arch: fit_model(
            simulated["events"],
            simulated["train"],
            FitOptions(arch=arch, params=dict(params), max_minutes=1.0, seed=3, folds=2),
        )[0]
        for arch, params in TINY.items()
    }


@pytest.mark.parametrize("arch", list(TINY))
def test_tiny_models_learn_mortality(
    arch: str, models: dict[str, SurvivalModel], simulated: dict[str, pl.DataFrame]
) -> None:
    model = models[arch]
    test = build_cohort(simulated["events"], simulated["test"], model.grid)
    scored = model.predict_windows(test.windows, test.stays)
    assert roc_auc_score(test.mortality, scored.mortality) > 0.7
    assert ((scored.survival >= 0) & (scored.survival <= 1)).all()
    assert (np.diff(scored.survival, axis=1) <= 1e-12).all()
    assert 0 < model.threshold < 1


@pytest.mark.parametrize("arch", list(TINY))
def test_saved_model_predicts_the_same(
    arch: str, models: dict[str, SurvivalModel], simulated: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    model = models[arch]
    model.save(tmp_path)
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pickle"))
    loaded = SurvivalModel.load(tmp_path)
    test = build_cohort(simulated["events"], simulated["test"], model.grid)
    before = model.predict_windows(test.windows, test.stays)
    after = loaded.predict_windows(test.windows, test.stays)
    np.testing.assert_array_equal(before.mortality, after.mortality)
    np.testing.assert_array_equal(before.survival, after.survival)
    document = json.loads((tmp_path / "model.json").read_text())
    assert document["training_data"] == {} or "stay_ids_sha256" in document["training_data"]
    assert document["threshold"]["rule"] == "event1"


@pytest.fixture(scope="module")
def folders(
    simulated: dict[str, pl.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The simulated training and test stays as canonical data folders."""
    root = tmp_path_factory.mktemp("canonical")
    out = {}
    for name in ("train", "test"):
        folder = out[name] = root / name
        folder.mkdir()
        ids = simulated[name]["stay_id"].implode()
        simulated["events"].filter(pl.col("stay_id").is_in(ids)).write_parquet(
            folder / "events.parquet"
        )
        simulated[name].write_parquet(folder / "stays.parquet")
    return out


def engine_window(model: SurvivalModel, events: pl.DataFrame, stay: dict) -> np.ndarray:
    """The raw window the engine builds for a bed: its events, offsets from admission."""
    mine = events.filter(pl.col("stay_id") == stay["stay_id"])
    offsets = (mine["time"] - stay["admit_time"]).dt.total_microseconds() / 6e7
    return window(
        model.grid, offsets.to_numpy(), mine["code"].to_list(), mine["numeric_value"].to_numpy()
    )


@pytest.mark.parametrize("arch", list(TINY))
def test_bedside_predict_scores_like_the_engines_window(
    arch: str,
    models: dict[str, SurvivalModel],
    simulated: dict[str, pl.DataFrame],
    folders: dict[str, Path],
    tmp_path: Path,
) -> None:
    """Every test stay: ``bedside predict`` (the batch path, from the saved model) and
    ``predict_window`` on the window the engine builds from raw events agree to 1e-5."""
    models[arch].save(tmp_path / "model")
    out = tmp_path / "scores.parquet"
    command = ["predict", "--model", str(tmp_path / "model"), "--data", str(folders["test"])]
    assert main([*command, "--out", str(out)]) == 0
    offline = pl.read_parquet(out)
    engine = SurvivalModel.load(tmp_path / "model")
    stays = simulated["test"].sort("stay_id")
    assert offline["stay_id"].to_list() == stays["stay_id"].to_list()
    for row, stay in enumerate(stays.iter_rows(named=True)):
        one = engine.predict_window(engine_window(engine, simulated["events"], stay), stay)
        assert one["mortality"] == pytest.approx(offline["mortality"][row], abs=1e-5)
        assert (one["mortality"] >= engine.threshold) == offline["alert"][row]
        for h, risk in one["risks"].items():
            assert risk == pytest.approx(offline[f"risk_{h:g}h"][row], abs=1e-5)
        for t, surv in one["survival"]:
            assert surv == pytest.approx(offline[f"surv_{t:g}h"][row], abs=1e-5)
    test = build_cohort(simulated["events"], simulated["test"], engine.grid)
    batch = models[arch].predict_windows(test.windows, test.stays)
    np.testing.assert_allclose(batch.mortality, offline["mortality"].to_numpy(), atol=1e-5)


@pytest.mark.parametrize("arch", ["lstm", "lstm-tsfel", "deep-ensemble"])
def test_integrated_gradients_add_up_to_the_logit_change(
    arch: str, models: dict[str, SurvivalModel], simulated: dict[str, pl.DataFrame]
) -> None:
    model = models[arch]
    test = build_cohort(simulated["events"], simulated["test"], model.grid)
    inputs = model.encoder.encode(test.windows[:3], test.stays[:3])
    attributions, gaps = integrated_gradients(model.predictor, inputs, steps=128)
    assert attributions["sequence"].shape == inputs.sequence().shape
    assert attributions["statics"].shape == inputs.statics.shape
    if arch != "lstm":
        assert attributions["features"].shape[0] == 3
        assert np.abs(attributions["features"]).sum() > 0
    assert np.abs(gaps).max() < 0.05


def test_logistic_regression_chooses_its_regularisation_out_of_fold(
    models: dict[str, SurvivalModel],
) -> None:
    chosen = models["tsfel-lr"].info["training"]["regularisation"]
    assert set(chosen["log_loss"]) == {f"{c:g}" for c in LR_C_GRID}
    assert chosen["C"] == float(min(chosen["log_loss"], key=chosen["log_loss"].__getitem__))
    assert models["tsfel-lr"].predictor.members[0].config()["params"]["C"] == chosen["C"]


def test_standardised_logistic_regression_still_predicts(
    models: dict[str, SurvivalModel], simulated: dict[str, pl.DataFrame]
) -> None:
    """Models saved before the quantile encoding (``bins`` absent) standardise the features."""
    model = models["tsfel-lr"]
    cohort = build_cohort(simulated["events"], simulated["train"], model.grid)
    inputs = model.encoder.encode(cohort.windows, cohort.stays)
    x = design_matrix(inputs)
    old = {k: v for k, v in LR_DEFAULTS.items() if k != "bins"}
    fitted = TabularPredictor("tsfel-lr", old).fit(
        x, cohort.mortality, np.zeros((len(x), 0), bool), np.zeros((len(x), 0)), 3
    )
    assert "scale.means" in fitted.arrays and "encoding.edges" not in fitted.arrays
    assert roc_auc_score(cohort.mortality, fitted.mortality_logit(x)) > 0.7


def test_permutation_importance_ranks_every_variable(
    models: dict[str, SurvivalModel], simulated: dict[str, pl.DataFrame]
) -> None:
    model = models["tsfel-lr"]
    test = build_cohort(simulated["events"], simulated["test"], model.grid)
    inputs = model.encoder.encode(test.windows, test.stays)
    importance = permutation_importance(model, inputs, test.mortality, repeats=2)
    assert set(importance["variable"]) >= set(model.grid.concepts) | {"age", "icu_type"}
    assert importance["importance"].max() > 0


def test_a_trained_imputation_model_travels_with_the_model(
    simulated: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    """``--imputer DIR``: the imputation model fills raw values and is saved with the model."""
    from bedside.training.imputation.classical import LinearImputer
    from bedside.training.imputation.pipeline import ImputationModel, fit_standardiser
    from bedside.training.windows import PHYSIONET_2012, stay_windows

    windows = stay_windows(simulated["events"], simulated["train"], PHYSIONET_2012)
    standardiser, untrained = fit_standardiser(windows)
    imputer = LinearImputer().fit(standardiser.transform(windows.values))
    ImputationModel(PHYSIONET_2012, standardiser, imputer, untrained).save(tmp_path / "imp")
    options = FitOptions(
        arch="cnn", imputer_dir=tmp_path / "imp", params=dict(TINY["cnn"]), seed=3, folds=3
    )
    model, _ = fit_model(simulated["events"], simulated["train"], options)
    # Three members: the calibration is made for their mean (see fit_ensemble_calibration).
    assert model.calibration.ensemble["variance_ratio"] >= 1.0
    model.save(tmp_path / "model")
    loaded = SurvivalModel.load(tmp_path / "model")
    assert (tmp_path / "model" / "imputation" / "model.json").exists()
    assert (
        json.loads((tmp_path / "model" / "model.json").read_text())["imputer"]["kind"] == "linear"
    )
    test = build_cohort(simulated["events"], simulated["test"], model.grid)
    np.testing.assert_array_equal(
        model.predict_windows(test.windows, test.stays).mortality,
        loaded.predict_windows(test.windows, test.stays).mortality,
    )


def test_a_blend_trains_several_seeds_of_each_part_and_saves_every_net(
    simulated: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    """``seeds``: each part of a ``deep-ensemble`` member is that many nets trained on the
    member's folds with different seeds (the first with the member's own seed); each
    net is saved in its own folder and the loaded model scores as the trained one."""
    params = {**TINY["deep-ensemble"], "seeds": 2}
    options = FitOptions(arch="deep-ensemble", params=params, max_minutes=5.0, seed=3, folds=2)
    model, _ = fit_model(simulated["events"], simulated["train"], options)
    first = model.info["training"]["members"][0]
    assert first["seeds"] == 2
    assert {folder: part["seed"] for folder, part in first["parts"].items()} == {
        "lstm-tsfel-1": 3,
        "lstm-tsfel-2": 1003,
        "cnn-lstm-1": 3,
        "cnn-lstm-2": 1003,
    }
    model.save(tmp_path)
    assert sorted(p.name for p in (tmp_path / "member-1").iterdir()) == [
        "cnn-lstm-1",
        "cnn-lstm-2",
        "lstm-tsfel-1",
        "lstm-tsfel-2",
    ]
    assert_loaded_scores_as_trained(model, tmp_path, simulated)


def test_a_distilled_net_learns_from_a_teacher_that_never_saw_its_stays(
    simulated: dict[str, pl.DataFrame],
) -> None:
    """``distil``: the teacher's risks for a member's training stays are cross-fitted
    inside those stays, so the outcomes of the member's validation stays (the stays that
    stop it early and calibrate the model) never reach its targets."""
    work, _, _ = prepare(simulated["events"], simulated["train"], FitOptions())
    n = len(work.cohort)
    train_rows = np.arange(0, n, 2)
    risk = work.teacher(train_rows, seed=5, max_seconds=60.0)
    assert risk.shape == train_rows.shape
    assert ((risk > 0) & (risk < 1)).all()
    assert roc_auc_score(work.cohort.mortality[train_rows], risk) > 0.7
    assert work.teacher(train_rows, seed=5, max_seconds=60.0) is risk  # shared by a blend
    hazards = work.teacher_hazards(train_rows, seed=5, max_seconds=60.0)
    assert hazards.shape == (train_rows.size, len(work.intervals_h))
    assert ((hazards > 0) & (hazards < 1)).all()
    # Fitting the hazards too leaves the teachers' risks as they were.
    np.testing.assert_array_equal(work.teacher(train_rows, seed=5, max_seconds=60.0), risk)

    flipped = work.cohort.mortality.copy()
    flipped[1::2] = 1 - flipped[1::2]
    other = Workspace(
        work.inputs, dataclasses.replace(work.cohort, mortality=flipped), work.intervals_h
    )
    np.testing.assert_array_equal(other.teacher(train_rows, seed=5, max_seconds=60.0), risk)
    later = np.where(np.arange(n) % 2 == 1, work.cohort.time_h * 2, work.cohort.time_h)
    other = Workspace(work.inputs, dataclasses.replace(work.cohort, time_h=later), work.intervals_h)
    np.testing.assert_array_equal(
        other.teacher_hazards(train_rows, seed=5, max_seconds=60.0), hazards
    )


def test_a_net_distilled_with_any_weight_still_learns(
    simulated: dict[str, pl.DataFrame],
) -> None:
    params = {**TINY["lstm-tsfel"], "distil": 0.5, "distil_hazards": 0.5}
    options = FitOptions(arch="lstm-tsfel", params=params, max_minutes=1.0, seed=3, folds=2)
    model, _ = fit_model(simulated["events"], simulated["train"], options)
    assert model.info["training"]["params"]["distil"] == 0.5
    assert model.info["training"]["members"][0]["teacher"]["hazards_weight"] == 0.5
    test = build_cohort(simulated["events"], simulated["test"], model.grid)
    scored = model.predict_windows(test.windows, test.stays)
    assert roc_auc_score(test.mortality, scored.mortality) > 0.7
    survival = scored.survival
    assert ((survival >= 0) & (survival <= 1)).all() and (np.diff(survival, axis=1) <= 0).all()


@pytest.mark.parametrize("arch", ["lstm", "cnn", "cnn-lstm"])
def test_the_forecast_target_is_hidden_from_the_state_that_forecasts_it(arch: str) -> None:
    """The forecasting task reads the state after step t and the values at step t +
    ``shift``: changing any input from that step on leaves the state unchanged, so
    the task cannot be solved by copying an input (the convolutions are centred)."""
    torch.manual_seed(0)
    params = {"channels": 8, "blocks": 2, "hidden": 8, "head": 8}
    net = SurvivalNet(arch, 3 * 4, 2, 3, **params).eval()
    forecaster = Forecaster(net, variables=4, ahead=1)
    sequence = torch.randn(2, 24, 12)
    t = 10
    later = sequence.clone()
    later[:, t + forecaster.shift :] += torch.randn_like(later[:, t + forecaster.shift :])
    with torch.no_grad():
        states, changed = net.encoder.steps(sequence), net.encoder.steps(later)
        torch.testing.assert_close(states[:, : t + 1], changed[:, : t + 1])
        closer = sequence.clone()
        closer[:, t + forecaster.shift - 1] += 1.0
        assert not torch.allclose(states[:, t], net.encoder.steps(closer)[:, t])


def test_the_forecast_loss_reads_observed_values_only() -> None:
    torch.manual_seed(0)
    net = SurvivalNet("lstm", 3 * 2, 1, 3, hidden=4, head=4)
    forecaster = Forecaster(net, variables=2, ahead=1)
    sequence = torch.randn(3, 6, 6)
    sequence[..., 2:4] = (torch.rand(3, 6, 2) < 0.5).float()
    states = net.encoder.steps(sequence)
    loss = forecaster.loss(states, sequence)
    unobserved = sequence.clone()
    unobserved[..., :2] += 5.0 * (1 - sequence[..., 2:4])
    torch.testing.assert_close(forecaster.loss(states, unobserved), loss)
    predicted = forecaster.linear(states[:, :-1])
    mask = sequence[:, 1:, 2:4]
    expected = ((predicted - sequence[:, 1:, :2]) ** 2 * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("arch", ["lstm-tsfel", "cnn-lstm"])
def test_a_net_pretrained_by_forecasting_learns_and_exports_as_before(
    arch: str, simulated: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    """``pretrain_epochs`` and ``forecast_weight``: the encoder first learns to forecast
    the next observed values (no outcome read), then keeps that task beside the
    supervised one; the forecasting layer is not part of the saved net."""
    params = {**TINY[arch], "pretrain_epochs": 4, "forecast_weight": 0.5}
    options = FitOptions(arch=arch, params=params, max_minutes=1.0, seed=3, folds=2)
    model, _ = fit_model(simulated["events"], simulated["train"], options)
    member = model.info["training"]["members"][0]
    pretraining = member["history"][0]["pretraining"]
    assert pretraining["epochs"] == 4
    assert pretraining["losses"][-1] < pretraining["losses"][0]
    model.save(tmp_path)
    assert_loaded_scores_as_trained(model, tmp_path, simulated)


# --- the commands ---------------------------------------------------------------------


def test_train_evaluate_predict_commands(folders: dict[str, Path], tmp_path: Path) -> None:
    train_dir, test_dir = folders["train"], folders["test"]
    model_dir, report_dir = tmp_path / "model", tmp_path / "report"
    arguments = ["--data", str(train_dir), "--arch", "tsfel-lr", "--search-trials", "2"]
    assert main(["train", "survival", *arguments, "--out", str(model_dir)]) == 0
    document = json.loads((model_dir / "model.json").read_text())
    assert document["search"]["completed_trials"] == 2 and document["search"]["best_params"]
    assert document["training_data"]["n_stays"] == 240
    assert (model_dir / "metrics.json").exists() and (
        model_dir / "member-0" / "tabular.npz"
    ).exists()

    evaluate = ["evaluate", "--model", str(model_dir), "--data", str(test_dir)]
    assert main([*evaluate, "--bootstrap", "20", "--out", str(report_dir)]) == 0
    metrics = json.loads((report_dir / "metrics.json").read_text())
    for key in ("auroc", "auprc", "brier", "ece", "calibration_slope", "hl_h", "event1"):
        assert key in metrics
    assert metrics["c_index"] is not None and metrics["n"] == 120
    assert metrics["permutation_importance"]["variables"]
    assert (report_dir / "report.html").stat().st_size > 10_000

    cv_dir = tmp_path / "cv"
    cross_validate = ["evaluate", "--cv", "2", "--arch", "tsfel-lr", "--data", str(train_dir)]
    assert main([*cross_validate, "--bootstrap", "0", "--out", str(cv_dir)]) == 0
    cv = json.loads((cv_dir / "metrics.json").read_text())
    assert cv["n"] == 240 and len(cv["cross_validation"]["per_fold"]) == 2
    assert (cv_dir / "report.html").exists()

    predictions = tmp_path / "scores.parquet"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_dir),
                "--data",
                str(test_dir),
                "--out",
                str(predictions),
            ]
        )
        == 0
    )
    scores = pl.read_parquet(predictions)
    assert scores.height == 120 and {"mortality", "alert", "risk_720h", "surv_24h"} <= set(
        scores.columns
    )


def test_compare_command_pairs_two_models_on_the_same_stays(
    models: dict[str, SurvivalModel],
    simulated: dict[str, pl.DataFrame],
    folders: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``bedside compare``: each model's metrics on the test stays as ``evaluate``
    computes them, and the paired difference with its interval."""
    for arch in ("tsfel-lr", "lstm"):
        models[arch].save(tmp_path / arch)
    out = tmp_path / "comparison.json"
    command = ["compare", "--data", str(folders["test"]), "--bootstrap", "50"]
    baseline, candidate = str(tmp_path / "tsfel-lr"), str(tmp_path / "lstm")
    assert (
        main([*command, "--baseline", baseline, "--candidate", candidate, "--out", str(out)]) == 0
    )
    document = json.loads(out.read_text())
    assert document["n"] == 120 and document["bootstrap"]["resamples"] == 50
    assert document["models"]["candidate"]["arch"] == "lstm"
    test = build_cohort(simulated["events"], simulated["test"], models["lstm"].grid)
    scored = models["lstm"].predict_windows(test.windows, test.stays)
    auroc = document["metrics"]["auroc"]
    assert auroc["candidate"] == pytest.approx(roc_auc_score(test.mortality, scored.mortality))
    assert auroc["ci"][0] <= auroc["difference"] <= auroc["ci"][1]
    assert document["metrics"]["c_index"]["baseline"] is not None
    assert document["survival_hours"][-1] in models["lstm"].horizons_h
    assert document["metrics"]["integrated_brier"]["candidate"] is not None
    printed = capsys.readouterr().out
    assert "candidate lstm against baseline tsfel-lr on 120 stays" in printed
    assert "c_index" in printed

    same = ["--baseline", baseline, "--candidate", baseline, "--out", str(out)]
    assert main([*command, *same]) == 0
    for name, row in json.loads(out.read_text())["metrics"].items():
        assert row["difference"] == 0 and row["candidate_better"] == 0, name
    missing = ["--baseline", baseline, "--candidate", str(tmp_path / "nowhere")]
    assert main([*command, *missing]) == 2
    assert main([*command[:-1], "0", *same]) == 2


def test_bench_members_scores_each_part_and_their_blend(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = ",".join(f"{k}={v}" for k, v in TINY["lstm"].items())
    out = tmp_path / "members.json"
    command = ["bench", "members", "--data", str(folders["train"]), "--folds", "2"]
    parts = ["--part", "lr=tsfel-lr", "--part", f"net=lstm,{tiny},distil=0.5"]
    assert main([*command, *parts, "--seed", "3", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["n"] == 240 and document["folds"] == 2
    assert document["parts"]["net"] == {"arch": "lstm", "params": {**TINY["lstm"], "distil": 0.5}}
    assert [len(document["per_fold"][name]) for name in ("lr", "net")] == [2, 2]
    scored = {" + ".join(row["parts"]): row["auroc"] for row in document["blends"]}
    assert set(scored) == {"lr", "net", "lr + net"}
    assert all(auroc > 0.7 for auroc in scored.values())  # the simulated deaths are learnable
    assert "lr + net" in capsys.readouterr().out

    # A setting the architecture does not have is refused before any training.
    assert main([*command, "--part", "net=lstm,depth=3"]) == 2
    assert "'depth=3' is not KEY=VALUE" in capsys.readouterr().err
    assert main([*command, "--part", "net=transformer"]) == 2
