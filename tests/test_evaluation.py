"""Evaluation: metrics against hand-computed values, calibration, survival metrics, the report."""

from __future__ import annotations

import doctest
import importlib
import json
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from bedside.training.evaluation.calibration import (
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    fit_calibration,
    fit_ensemble_calibration,
    load_calibration,
)
from bedside.training.evaluation.metrics import (
    PredictionError,
    _WeightedMetrics,
    binary_metrics,
    calibration_line,
    challenge_h,
    choose_threshold,
    expected_calibration_error,
    hosmer_lemeshow,
    paired_bootstrap,
    survival_at,
    survival_metrics,
)
from bedside.training.evaluation.report import write_report
from tests.realdata import shared

#: The worked example: deaths at risks 0.4, 0.7, 0.8 among eight stays.
Y8 = np.array([0, 0, 0, 1, 0, 0, 1, 1])
RISK8 = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])


def logistic_cohort(n: int, seed: int, *, sharpen: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn from true risks, and the true risks with their logits times ``sharpen``."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-2.0, 1.3, n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return y, 1 / (1 + np.exp(-sharpen * logit))


# ----------------------------------------------------------------- by hand


def test_event1_threshold_and_confusion_matrix_by_hand() -> None:
    # min(Se, PPV) by threshold: 0.8 -> 1/3, 0.7 -> 2/3, 0.6 -> 2/3, 0.5 -> 1/2, 0.4 -> 3/5:
    # 0.7 and 0.6 tie, and the higher one (fewer alerts) is taken.
    assert choose_threshold(Y8, RISK8, "event1") == 0.7
    m = binary_metrics(Y8, RISK8, 0.7, "event1", n_bootstrap=0)
    assert m["confusion_matrix"] == {
        "threshold": 0.7,
        "rule": "event1",
        "tp": 2,
        "fp": 0,
        "tn": 5,
        "fn": 1,
    }
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == 1.0
    assert m["ppv"] == 1.0
    assert m["npv"] == pytest.approx(5 / 6)
    assert m["event1"] == pytest.approx(2 / 3)
    assert m["alerts_per_100_patients"] == 25.0
    assert (m["n"], m["n_events"]) == (8, 3)
    # Alerted when risk >= threshold: 0.5 alerts 0.5, 0.6, 0.7, 0.8.
    low = binary_metrics(Y8, RISK8, 0.5, "fixed:0.5", n_bootstrap=0)["confusion_matrix"]
    assert (low["tp"], low["fp"], low["tn"], low["fn"]) == (2, 2, 3, 1)


def test_event1_threshold_is_the_best_of_all_thresholds() -> None:
    y, risk = logistic_cohort(600, seed=3)
    risk = np.round(risk, 2)  # ties
    best = choose_threshold(y, risk, "event1")

    def event1(t: float) -> float:
        alert = risk >= t
        tp = np.sum(alert & (y == 1))
        return min(tp / y.sum(), tp / alert.sum())

    assert event1(best) == pytest.approx(max(event1(t) for t in np.unique(risk)))


def test_youden_and_fixed_thresholds() -> None:
    # Youden's J = Se + Sp - 1 by threshold: 0.8 -> 1/3, 0.7 -> 2/3, 0.4 -> 1 - 2/5 = 0.6.
    assert choose_threshold(Y8, RISK8, "youden") == 0.7
    assert choose_threshold(Y8, RISK8, "fixed:0.25") == 0.25
    for bad in ("fixed:1.5", "fixed:abc", "f1"):
        with pytest.raises(PredictionError):
            choose_threshold(Y8, RISK8, bad)
    with pytest.raises(PredictionError, match="deaths and survivors"):
        choose_threshold(np.zeros(8, dtype=int), RISK8, "event1")


def test_ece_by_hand() -> None:
    # Bins [0, .1) [.1, .2) ... [.9, 1]: gaps .05, .85, .85, .05 over 4 stays.
    assert expected_calibration_error([0, 1, 1, 0], [0.05, 0.15, 0.95, 0.85]) == pytest.approx(0.45)
    # 0.3 belongs to [0.3, 0.4) with 0.35; 1.0 to the last bin.
    ece = expected_calibration_error([0, 1, 1, 1], [0.3, 0.35, 1.0, 1.0])
    assert ece == pytest.approx((abs(1 - 0.65) + 0) / 4)


def lemeshow_m(y: np.ndarray, risk: np.ndarray) -> float:
    """lemeshow.m v1.4 transcribed line by line (1-based MATLAB indices kept)."""
    data = np.column_stack([y, risk])
    n = len(data[:, 0])
    d = 10
    m = n // d
    data = data[np.argsort(data[:, 1], kind="stable")]  # sortrows(data, 2)
    cm = np.zeros((d, 3))
    centroid = np.zeros(d)
    for i in range(1, d + 1):
        ind2 = i * m
        ind1 = ind2 - m + 1
        obs = data[ind1 - 1 : ind2, 0].sum()
        centroid[i - 1] = data[ind1 - 1 : ind2, 1].mean()
        exp = m * centroid[i - 1]
        cm[i - 1] = [
            obs,
            exp,
            (obs - exp) ** 2 / (m * centroid[i - 1] * (1 - centroid[i - 1]) + 0.001),
        ]
    return float(cm[:, 2].sum() / (centroid[9] - centroid[0]))


def test_challenge_h_by_hand_and_as_lemeshow_m() -> None:
    # 20 stays, M = 2: five deciles at risk 0.1 with 0, 0, 0, 0, 1 deaths, five at 0.9 with
    # 2 deaths each. Terms: 4 x 0.2^2 / 0.181 + 0.8^2 / 0.181 + 5 x 0.2^2 / 0.181, / 0.8.
    y = np.array([0] * 9 + [1] * 11)
    risk = np.array([0.1] * 10 + [0.9] * 10)
    h, reason = challenge_h(y, risk)
    assert reason is None
    assert h == pytest.approx((9 * 0.04 + 0.64) / 0.181 / 0.8)
    y_big, risk_big = logistic_cohort(4003, seed=5)
    assert challenge_h(y_big, risk_big)[0] == pytest.approx(lemeshow_m(y_big, risk_big))
    # N = 4003: M = 400, the three highest-risk stays are left out, whatever their outcome.
    top = np.argsort(risk_big)[-3:]
    flipped = y_big.copy()
    flipped[top] = 1 - flipped[top]
    assert challenge_h(flipped, risk_big)[0] == pytest.approx(challenge_h(y_big, risk_big)[0])


def test_plain_hosmer_lemeshow_is_the_textbook_chi_square() -> None:
    y, risk = logistic_cohort(1000, seed=7)
    h, df, reason = hosmer_lemeshow(y, risk)
    assert reason is None and df == 8
    expected = 0.0
    for group in np.array_split(np.argsort(risk, kind="stable"), 10):
        o1, e1 = y[group].sum(), risk[group].sum()
        o0, e0 = group.size - o1, group.size - e1
        expected += (o1 - e1) ** 2 / e1 + (o0 - e0) ** 2 / e0
    assert h == pytest.approx(expected)


def test_standard_metrics_are_scikit_learns_and_the_bootstrap_forms_agree() -> None:
    y, risk = logistic_cohort(800, seed=11)
    risk = np.round(risk, 3)  # ties, which AUROC and AP must handle as scikit-learn does
    m = binary_metrics(y, risk, 0.3, "fixed:0.3", n_bootstrap=0)
    assert m["auroc"] == roc_auc_score(y, risk)
    assert m["auprc"] == average_precision_score(y, risk)
    assert m["brier"] == brier_score_loss(y, risk)
    reference = LogisticRegression(C=math.inf, tol=1e-12, max_iter=10_000)
    logit = np.log(risk / (1 - risk))[:, None]
    assert m["calibration_slope"] == pytest.approx(reference.fit(logit, y).coef_[0, 0], rel=1e-5)
    # The bootstrap's weighted forms: all weights 1 gives the point estimates...
    weighted = _WeightedMetrics(y, risk, 0.3)
    ones = weighted(np.ones(y.size))
    for name in ("auroc", "auprc", "brier", "ece", "calibration_slope", "calibration_intercept"):
        assert ones[name] == pytest.approx(m[name], rel=1e-9), name
    for name in ("sensitivity", "specificity", "ppv", "npv", "event1", "alerts_per_100_patients"):
        assert ones[name] == pytest.approx(m[name]), name
    # ...and integer weights give scikit-learn's metrics of the resample.
    counts = np.random.default_rng(0).integers(0, 3, y.size).astype(float)
    drawn = weighted(counts)
    order = np.argsort(risk, kind="stable")
    idx = np.repeat(order, counts.astype(int))
    assert drawn["auroc"] == pytest.approx(roc_auc_score(y[idx], risk[idx]), rel=1e-12)
    assert drawn["auprc"] == pytest.approx(average_precision_score(y[idx], risk[idx]), rel=1e-12)
    assert drawn["brier"] == pytest.approx(brier_score_loss(y[idx], risk[idx]), rel=1e-12)
    assert drawn["ece"] == pytest.approx(expected_calibration_error(y[idx], risk[idx]), rel=1e-9)
    slope, intercept, _ = calibration_line(y[idx], risk[idx])
    assert drawn["calibration_slope"] == pytest.approx(slope, rel=1e-8)
    assert drawn["calibration_intercept"] == pytest.approx(intercept, rel=1e-8)


# ------------------------------------------------------------- behaviour


def test_perfect_and_random_predictors() -> None:
    y, _ = logistic_cohort(2000, seed=1)
    perfect = binary_metrics(y, 0.05 + 0.9 * y, 0.5, "fixed:0.5", n_bootstrap=0)
    assert perfect["auroc"] == 1.0 and perfect["auprc"] == 1.0 and perfect["event1"] == 1.0
    assert perfect["calibration_slope"] is None
    assert "separates" in perfect["notes"]["calibration_slope"]
    noise = np.random.default_rng(2).uniform(size=y.size)
    random = binary_metrics(y, noise, choose_threshold(y, noise), "event1", n_bootstrap=0)
    assert abs(random["auroc"] - 0.5) < 0.04
    assert random["auprc"] < y.mean() + 0.05
    assert random["event1"] < 0.35


def test_calibrated_risks_have_slope_one_and_intercept_zero() -> None:
    y, risk = logistic_cohort(20_000, seed=4)
    m = binary_metrics(y, risk, 0.3, "fixed:0.3", n_bootstrap=0)
    assert m["calibration_slope"] == pytest.approx(1.0, abs=0.05)
    assert m["calibration_intercept"] == pytest.approx(0.0, abs=0.05)
    assert m["ece"] < 0.01
    assert m["hl_h_p"] > 0.01
    # Over-confident risks (logits doubled): slope ~1/2, and H says so.
    y, sharp = logistic_cohort(20_000, seed=4, sharpen=2.0)
    bad = binary_metrics(y, sharp, 0.3, "fixed:0.3", n_bootstrap=0)
    assert bad["calibration_slope"] == pytest.approx(0.5, abs=0.05)
    assert bad["hl_h_p"] < 1e-6
    assert bad["hl_h_challenge"] > 10 * m["hl_h_challenge"]


def test_one_class_gives_nulls_with_reasons_not_a_crash() -> None:
    m = binary_metrics(np.zeros(50, dtype=int), np.linspace(0.01, 0.5, 50), 0.3, "event1")
    for name in ("auroc", "auprc", "calibration_slope", "sensitivity", "event1"):
        assert m[name] is None and m["notes"][name]
    assert m["specificity"] == pytest.approx(np.mean(np.linspace(0.01, 0.5, 50) < 0.3))
    assert m["ci"]["auroc"] is None and m["ci"]["specificity"] is not None
    json.dumps(m, allow_nan=False)


def test_bad_predictions_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"risk must be probabilities in \[0, 1\]"):
        binary_metrics([0, 1], [0.2, 1.2], 0.5, "fixed:0.5")
    with pytest.raises(ValueError, match="outside"):
        binary_metrics([0, 1], [0.2, float("nan")], 0.5, "fixed:0.5")
    with pytest.raises(ValueError, match="0 \\(survived\\) and 1"):
        binary_metrics([0, 2], [0.2, 0.3], 0.5, "fixed:0.5")
    with pytest.raises(ValueError, match="stays"):
        binary_metrics([0, 1, 1], [0.2, 0.3], 0.5, "fixed:0.5")


def test_bootstrap_intervals_hold_the_estimate_and_repeat_with_the_seed() -> None:
    y, risk = logistic_cohort(1500, seed=8)
    threshold = choose_threshold(y, risk)
    first = binary_metrics(y, risk, threshold, "event1", n_bootstrap=200, seed=1)
    again = binary_metrics(y, risk, threshold, "event1", n_bootstrap=200, seed=1)
    other = binary_metrics(y, risk, threshold, "event1", n_bootstrap=200, seed=2)
    assert first["ci"] == again["ci"]
    assert first["ci"]["auroc"] != other["ci"]["auroc"]
    for name, (low, high) in first["ci"].items():
        if name != "ece":  # biased upwards under resampling (see binary_metrics)
            assert low <= first[name] <= high, name
        assert low < high, name
    assert first["bootstrap"]["resamples"] == 200
    json.dumps(first, allow_nan=False)


def test_paired_bootstrap_scores_both_models_on_the_same_resamples() -> None:
    """The point differences are scikit-learn's; a model against itself differs by
    exactly 0 on every resample; a clearly better candidate wins nearly every one."""
    from sksurv.metrics import concordance_index_censored, integrated_brier_score

    y, good = logistic_cohort(2000, seed=3)
    rng = np.random.default_rng(4)
    weak = 1 / (1 + np.exp(-(np.log(good / (1 - good)) * 0.3 + rng.normal(0, 1.0, y.size))))
    time_h = np.where(y == 1, rng.uniform(1, 400, y.size), rng.uniform(200, 720, y.size))
    time_h[:40] = np.nan  # follow-up unknown: left out of the survival metrics only
    hours = np.array([24.0, 48.0, 120.0])
    curves = [1 - np.outer(r, hours / hours[-1]) for r in (weak, good)]
    result = paired_bootstrap(
        y,
        weak,
        good,
        (0.3, 0.3),
        n_bootstrap=200,
        seed=1,
        time_h=time_h,
        event=y,
        survival=(curves[0], curves[1]),
        hours=hours,
    )
    m = result["metrics"]
    gain = roc_auc_score(y, good) - roc_auc_score(y, weak)
    assert m["auroc"]["difference"] == pytest.approx(gain)
    assert m["auprc"]["candidate"] == pytest.approx(average_precision_score(y, good))
    assert m["brier"]["baseline"] == pytest.approx(brier_score_loss(y, weak))
    known = np.isfinite(time_h)
    expected = concordance_index_censored(y[known] == 1, time_h[known], good[known])[0]
    assert m["c_index"]["candidate"] == pytest.approx(expected)
    outcome = np.empty(int(known.sum()), dtype=[("event", bool), ("time", float)])
    outcome["event"], outcome["time"] = y[known] == 1, time_h[known]
    ibs = integrated_brier_score(outcome, outcome, curves[0][known], hours)
    assert m["integrated_brier"]["baseline"] == pytest.approx(ibs)
    for name in ("auroc", "auprc", "brier", "c_index", "integrated_brier"):
        low, high = m[name]["ci"]
        assert low < m[name]["difference"] < high, name
        assert m[name]["candidate_better"] > 0.97, name
    assert m["brier"]["higher_is_better"] is False and m["brier"]["difference"] < 0
    json.dumps(result, allow_nan=False)

    same = paired_bootstrap(y, good, good, (0.3, 0.3), n_bootstrap=50, seed=1)
    for name, row in same["metrics"].items():
        assert row["difference"] == 0 and row["ci"] == [0.0, 0.0], name
        assert row["candidate_better"] == 0.0, name
    assert "c_index" not in same["metrics"]  # no follow-up given
    with pytest.raises(PredictionError, match="time_h, event and hours"):
        paired_bootstrap(y, good, good, (0.3, 0.3), n_bootstrap=5, survival=(curves[1], curves[1]))


# ------------------------------------------------------------- calibration


def test_temperature_and_isotonic_fix_overconfident_risks() -> None:
    y, sharp = logistic_cohort(8000, seed=21, sharpen=2.5)
    valid, test = slice(0, 4000), slice(4000, None)
    before = expected_calibration_error(y[test], sharp[test])
    for kind in ("temperature", "platt", "isotonic"):
        calibrator = fit_calibration(kind, sharp[valid], y[valid])
        calibrated = calibrator.transform(sharp[test])
        assert expected_calibration_error(y[test], calibrated) < before / 2, kind
        saved = json.loads(json.dumps(calibrator.to_dict()))
        assert np.array_equal(load_calibration(saved).transform(sharp[test]), calibrated)
    temperature = fit_calibration("temperature", sharp[valid], y[valid])
    assert isinstance(temperature, TemperatureScaling)
    assert temperature.temperature == pytest.approx(2.5, rel=0.1)
    restored = IsotonicCalibration.from_dict(fit_calibration("isotonic", sharp, y).to_dict())
    assert np.all(np.diff(restored.transform(np.linspace(0, 1, 101))) >= 0)


def test_platt_scaling_recovers_a_shifted_and_sharpened_logit() -> None:
    """A model that is too extreme *and* under-predicts deaths: temperature scaling, whose
    line goes through 0.5, cannot fix both; the logistic recalibration does."""
    y, true_risk = logistic_cohort(20000, seed=5)
    logit = np.log(true_risk / (1 - true_risk))
    shifted = 1 / (1 + np.exp(-(2.0 * logit - 1.0)))
    platt = fit_calibration("platt", shifted, y)
    assert isinstance(platt, PlattScaling)
    assert platt.slope == pytest.approx(0.5, abs=0.03)
    assert platt.intercept == pytest.approx(0.5, abs=0.1)
    slope, intercept, _ = calibration_line(y, platt.transform(shifted))
    assert slope == pytest.approx(1.0, abs=1e-4) and intercept == pytest.approx(0.0, abs=1e-3)
    temperature = fit_calibration("temperature", shifted, y).transform(shifted)
    assert expected_calibration_error(y, platt.transform(shifted)) < expected_calibration_error(
        y, temperature
    )


def ensemble_cohort(
    member_noise: float, seed: int, members: int = 5, n: int = 20000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training and new stays; every member's log-odds = what can be learnt + its own noise.

    Returns member log-odds on the training stays (K, n), the member that did not train
    on each, their outcomes, the members' log-odds on new stays and those outcomes.
    """
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-2.0, 1.5, (2, n))
    died = (rng.uniform(size=(2, n)) < 1 / (1 + np.exp(-true_logit))).astype(int)
    learnable = true_logit + rng.normal(0, 0.8, (2, n))
    logits = learnable[:, None] + rng.normal(0, member_noise, (2, members, n))
    return logits[0], np.arange(n) % members, died[0], logits[1], died[1]


def test_ensemble_calibration_fits_the_mean_that_is_served() -> None:
    """Calibrated on one member's out-of-fold log-odds, the members' mean is too timid
    (slope > 1) on new stays; calibrated for the mean, its slope is near 1."""
    train, held_out_by, y, new, y_new = ensemble_cohort(member_noise=0.6, seed=8)
    out_of_fold = train[held_out_by, np.arange(y.size)]
    plain = fit_calibration("platt", 1 / (1 + np.exp(-out_of_fold)), y)
    served, as_served = fit_ensemble_calibration(train, held_out_by, y)
    served_risk = 1 / (1 + np.exp(-new.mean(axis=0)))

    def slope_on_new_stays(calibrator: PlattScaling) -> float:
        slope, _, _ = calibration_line(y_new, calibrator.transform(served_risk))
        assert slope is not None
        return slope

    assert slope_on_new_stays(plain) > 1.08
    assert slope_on_new_stays(served) == pytest.approx(1.0, abs=0.05)
    details = served.ensemble
    assert details is not None and details["members"] == 5
    assert details["member_disagreement"] == pytest.approx(0.6**2, rel=0.05)
    # The returned log-odds keep the out-of-fold ranking at the spread of the mean.
    assert np.array_equal(np.argsort(as_served), np.argsort(out_of_fold))
    assert as_served.var() == pytest.approx(new.mean(axis=0).var(), rel=0.05)
    _, intercept, _ = calibration_line(y, served.transform(1 / (1 + np.exp(-as_served))))
    assert intercept == pytest.approx(0.0, abs=0.02)
    restored = load_calibration(json.loads(json.dumps(served.to_dict())))
    assert np.array_equal(restored.transform(served_risk), served.transform(served_risk))


def test_ensemble_calibration_without_disagreement_or_with_two_members() -> None:
    """Identical members need no correction; with two members none can be measured."""
    train, held_out_by, y, _, _ = ensemble_cohort(member_noise=0.0, seed=9)
    out_of_fold = train[held_out_by, np.arange(y.size)]
    plain = fit_calibration("platt", 1 / (1 + np.exp(-out_of_fold)), y)
    served, _ = fit_ensemble_calibration(train, held_out_by, y)
    assert served.slope == pytest.approx(plain.slope, rel=1e-6)
    pair, pair_held_out, pair_y, _, _ = ensemble_cohort(0.6, seed=9, members=2, n=4000)
    two, as_served = fit_ensemble_calibration(pair, pair_held_out, pair_y)
    assert two.ensemble is not None and two.ensemble["members"] == 2
    assert np.array_equal(as_served, pair[pair_held_out, np.arange(4000)])
    with pytest.raises(ValueError, match="held_out_by"):
        fit_ensemble_calibration(pair, np.full(4000, 2), pair_y)


def test_no_calibration_and_bad_kinds() -> None:
    none = fit_calibration("none", RISK8, Y8)
    assert np.array_equal(none.transform(RISK8), RISK8)
    assert load_calibration(none.to_dict()).to_dict() == {"kind": "none"}
    with pytest.raises(ValueError, match="unknown calibration"):
        fit_calibration("beta", RISK8, Y8)
    with pytest.raises(ValueError, match="unknown calibration"):
        load_calibration({"kind": "pickle"})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TemperatureScaling(2.0).transform([1.5])


# ---------------------------------------------------------------- survival


def exponential_cohort(n: int, seed: int) -> dict[str, np.ndarray]:
    """Exponential survival with a proportional-hazards covariate, uniform censoring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    hazard = np.exp(x) / 300.0  # per hour
    death = rng.exponential(1 / hazard)
    censor = rng.uniform(0, 900, n)
    grid = np.arange(6.0, 721.0, 6.0)
    return {
        "time": np.minimum(death, censor),
        "event": (death <= censor).astype(int),
        "grid": grid,
        "true": np.exp(-hazard[:, None] * grid),
        "noise": np.exp(-(np.exp(rng.normal(size=n)) / 300.0)[:, None] * grid),
    }


def test_survival_metrics_rank_the_true_model_above_noise() -> None:
    c = exponential_cohort(1500, seed=31)
    horizons = [24.0, 72.0, 168.0, 720.0]
    true = survival_metrics(
        c["time"],
        c["event"],
        c["true"],
        c["grid"],
        horizons,
        train_time_h=c["time"],
        train_event=c["event"],
    )
    noise = survival_metrics(c["time"], c["event"], c["noise"], c["grid"], horizons)
    assert true["c_index"] > 0.7 and true["c_index_uno"] > 0.7
    assert abs(noise["c_index"] - 0.5) < 0.05
    assert all(auc > 0.7 for auc in true["td_auc"].values())
    assert all(abs(auc - 0.5) < 0.08 for auc in noise["td_auc"].values())
    assert true["integrated_brier"] < noise["integrated_brier"]
    assert true["integrated_brier_range_h"] == [24.0, 720.0]
    assert (true["ipcw_from"], noise["ipcw_from"]) == ("train", "test")
    assert noise["c_index_uno"] is None and noise["notes"]["c_index_uno"]
    json.dumps(true, allow_nan=False)


def test_survival_between_grid_points_is_linear_from_one_at_hour_zero() -> None:
    survival = np.random.default_rng(0).uniform(size=(5, 4))
    grid = np.array([6.0, 24.0, 72.0, 720.0])
    hours = np.array([0.0, 3.0, 6.0, 24.0, 50.0, 720.0, 800.0])
    expected = np.stack([np.interp(hours, np.r_[0, grid], np.r_[1, row]) for row in survival])
    assert np.allclose(survival_at(survival, grid, hours), expected)


def test_horizons_beyond_follow_up_are_null_with_a_note() -> None:
    c = exponential_cohort(400, seed=32)
    short = np.minimum(c["time"], 100.0)
    m = survival_metrics(
        short, c["event"] * (c["time"] <= 100), c["true"], c["grid"], [24, 72, 720]
    )
    assert m["td_auc"]["720h"] is None and m["brier"]["720h"] is None
    assert "outside follow-up" in m["notes"]["horizon_720h"]
    assert m["td_auc"]["24h"] is not None
    assert m["c_index_horizon_h"] == 72.0
    with pytest.raises(ValueError, match="missing or negative"):
        survival_metrics([1.0, float("nan")], [0, 1], np.ones((2, 1)), [24.0], [24.0])


# ----------------------------------------------------------------- report


@pytest.fixture(scope="module")
def written_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    y, risk = logistic_cohort(600, seed=41)
    c = exponential_cohort(600, seed=41)
    grid = [24.0, 72.0, 168.0, 720.0]
    survival = np.exp(-np.outer(risk / 100, grid))
    stay_id = np.arange(1000, 1600)
    rng = np.random.default_rng(41)
    stays = pl.DataFrame(
        {
            "stay_id": stay_id,
            "age": rng.uniform(18, 95, 600),
            "sex": rng.choice(["F", "M"], 600),
            "icu_type": rng.choice(["medical", "surgical", "coronary"], 600),
            "in_hospital_death": y,
            "los_days": rng.exponential(4, 600),
            "hospital_los_days": rng.exponential(10, 600),
        }
    )
    predictions = pl.DataFrame(
        {
            "stay_id": stay_id,
            "risk": risk,
            "label": y,
            **{f"surv_{h:g}h": survival[:, k] for k, h in enumerate(grid)},
        }
    )
    metrics = binary_metrics(y, risk, choose_threshold(y, risk), "event1", n_bootstrap=100)
    metrics["survival"] = survival_metrics(c["time"], c["event"], c["true"], c["grid"], grid)
    importance = pl.DataFrame(
        {
            "variable": ["heart_rate", "gcs", "lactate"],
            "importance": [0.02, 0.05, 0.03],
            "std": [0.004, 0.01, 0.006],
        }
    )
    path = write_report(
        tmp_path_factory.mktemp("report"),
        metrics=metrics,
        predictions=predictions,
        stays=stays,
        importance=importance,
        model_info={"arch": "tsfel-gbm <test>", "calibration": {"kind": "isotonic"}},
    )
    return path, metrics


def test_report_is_self_contained(written_report: tuple[Path, dict]) -> None:
    path, _ = written_report
    assert path.name == "report.html" and path.exists()
    page = path.read_text(encoding="utf-8")
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    assert links, "expected inline figures"
    assert all(link.startswith(("data:", "#")) for link in links), links
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert page.count("data:image/png;base64,") >= 5  # icon array, ROC/PR, calibration, ...
    assert "tsfel-gbm &lt;test&gt;" in page  # model info is escaped


def test_report_states_the_key_numbers_in_plain_language(
    written_report: tuple[Path, dict],
) -> None:
    path, m = written_report
    page = re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8"))
    cm = m["confusion_matrix"]
    n, deaths = m["n"], cm["tp"] + cm["fn"]
    assert f"{m['auroc']:.3f}" in page
    assert f"{m['alerts_per_100_patients']:.1f} alerts per 100 patients" in page
    assert f"of which {100 * cm['tp'] / n:.1f} are patients who die" in page
    assert f"{100 * cm['fn'] / deaths:.0f} of 100 deaths are missed" in page
    assert f"{100 * cm['threshold']:.1f} %" in page
    assert "event-1 rule" in page
    assert f"{m['hl_h_challenge']:.2f}" in page and f"{m['calibration_slope']:.2f}" in page
    assert f"{m['survival']['c_index']:.3f}" in page
    for term in ("Glossary", "AUROC", "Calibration slope", "PPV", "C-index", "ICU: medical"):
        assert term in page


def test_report_without_survival_importance_or_deaths(tmp_path: Path) -> None:
    predictions = pl.DataFrame({"stay_id": [1, 2, 3], "risk": [0.1, 0.2, 0.3], "label": [0, 0, 0]})
    stays = pl.DataFrame({"stay_id": [1, 2, 3], "age": [50.0, 60.0, 70.0]})
    metrics = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], 0.25, "fixed:0.25", n_bootstrap=10)
    page = write_report(tmp_path, metrics=metrics, predictions=predictions, stays=stays)
    text = page.read_text(encoding="utf-8")
    assert "there were no deaths to miss" in text
    assert "all had the same outcome" in text


# -------------------------------------------------------------- doctests


@pytest.mark.parametrize("name", ["metrics", "calibration"])
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"bedside.training.evaluation.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- real data


@pytest.mark.slow
def test_logistic_regression_on_physionet_2012_is_in_the_baseline_ballpark(
    tmp_path: Path,
) -> None:
    """BASELINES.md's logistic regression protocol on set A alone (it uses A + B: AUROC
    0.849, event 1 0.511, ECE 0.018, slope 0.79): the metrics should land near it."""
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bedside.schemas.tables import ICU_TYPES
    from bedside.training.data import physionet2012

    root = shared("physionet2012")
    physionet2012.convert(root / "set-a", tmp_path, root / "Outcomes-a.txt")
    stays = pl.read_parquet(tmp_path / "stays.parquet").sort("stay_id")
    value = pl.col("numeric_value")
    summaries = (
        pl.read_parquet(tmp_path / "events.parquet")
        .sort("time")
        .group_by("stay_id", "code")
        .agg(
            first=value.first(),
            last=value.last(),
            min=value.min(),
            max=value.max(),
            mean=value.mean(),
            count=value.len(),
        )
        .pivot(on="code", index="stay_id", values=["first", "last", "min", "max", "mean", "count"])
    )
    table = (
        stays.select(
            "stay_id",
            "age",
            "height_cm",
            "weight_kg",
            female=(pl.col("sex") == "F").cast(pl.Float64),
            **{icu: (pl.col("icu_type") == icu).cast(pl.Float64) for icu in ICU_TYPES},
        )
        .join(summaries, on="stay_id", how="left")
        .with_columns(pl.col("^count_.*$").fill_null(0))
    )
    x = table.drop("stay_id").to_numpy().astype(float)
    y = stays["in_hospital_death"].to_numpy().astype(int)
    # Regularised more than scikit-learn's default: 230 raw features on 3200 stays.
    model = make_pipeline(
        SimpleImputer(strategy="median"),
        StandardScaler(),
        LogisticRegression(C=0.02, solver="newton-cholesky"),
    )
    folds = StratifiedKFold(5, shuffle=True, random_state=2026)
    risk = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    rule = "event1 on these out-of-fold risks (as BASELINES.md)"
    m = binary_metrics(y, risk, choose_threshold(y, risk), rule, n_bootstrap=200)
    assert 0.80 < m["auroc"] < 0.88
    assert 0.42 < m["event1"] < 0.56
    assert m["ece"] < 0.04
    assert 0.7 < m["calibration_slope"] < 1.1
    assert m["hl_h_challenge"] < 150
    predictions = pl.DataFrame({"stay_id": stays["stay_id"], "risk": risk, "label": y})
    page = write_report(tmp_path / "report", metrics=m, predictions=predictions, stays=stays)
    assert "ICU: cardiac surgery" in page.read_text(encoding="utf-8")
