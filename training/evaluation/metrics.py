"""How good a mortality risk is: discrimination, calibration, alarms, survival curves.

Every function takes plain arrays and returns a JSON-able dict, so that the same
numbers go to ``metrics.json``, to the clinician report and to BENCHMARKS.md. The
standard metrics come from scikit-learn and scikit-survival; only the PhysioNet 2012
challenge's own scores (event 1 and the normalised Hosmer-Lemeshow H of its
``lemeshow.m``) and the expected calibration error are written here.

A metric that cannot be computed on the data given (AUROC with no deaths, PPV with no
alert) is ``None``, and ``notes[metric]`` says why: an evaluation on a small external
cohort should report what it can, not crash.

A stay is *alerted* when ``risk >= threshold``.

>>> y = np.array([0, 0, 0, 1, 0, 0, 1, 1])
>>> risk = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
>>> choose_threshold(y, risk, "event1")
0.7
>>> m = binary_metrics(y, risk, 0.7, "event1", n_bootstrap=0)
>>> m["confusion_matrix"]
{'threshold': 0.7, 'rule': 'event1', 'tp': 2, 'fp': 0, 'tn': 5, 'fn': 1}
>>> round(m["event1"], 3), m["alerts_per_100_patients"]
(0.667, 25.0)
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import expit
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from bedside.errors import BedsideError

#: Bins of the expected calibration error: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0].
ECE_BINS = 10
#: Risks are clipped to [EPS, 1 - EPS] before taking their logit (a risk of exactly 0 or
#: 1, which isotonic calibration produces, would otherwise have an infinite logit).
EPS = 1e-6


class PredictionError(BedsideError, ValueError):
    """Predictions or labels that cannot be evaluated (wrong shape, risk outside [0, 1])."""


# ----------------------------------------------------------------------------- inputs


def check_predictions(y: Any, risk: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as 0/1 integers and risks as floats in [0, 1], or a clear error.

    >>> check_predictions([0, 1], [0.2, 1.5])
    Traceback (most recent call last):
    ...
    bedside.training.evaluation.metrics.PredictionError: risk must be probabilities in [0, 1]; ...
    """
    y_arr = np.asarray(y)
    risk_arr = np.asarray(risk, dtype=float)
    if y_arr.ndim != 1 or risk_arr.ndim != 1:
        raise PredictionError(f"y and risk must be 1-D; got shapes {y_arr.shape}, {risk_arr.shape}")
    if y_arr.shape != risk_arr.shape:
        raise PredictionError(f"y has {y_arr.size} stays but risk has {risk_arr.size}")
    if y_arr.size == 0:
        raise PredictionError("no stays to evaluate")
    if not np.isin(y_arr, (0, 1)).all():
        raise PredictionError("y must hold 0 (survived) and 1 (died) only")
    bad = ~np.isfinite(risk_arr) | (risk_arr < 0) | (risk_arr > 1)
    if bad.any():
        raise PredictionError(
            f"risk must be probabilities in [0, 1]; {int(bad.sum())} of {risk_arr.size} are "
            f"outside (min {np.nanmin(risk_arr):.3g}, max {np.nanmax(risk_arr):.3g})"
        )
    return y_arr.astype(np.int64), risk_arr


def _logit(risk: np.ndarray) -> np.ndarray:
    p = np.clip(risk, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


# -------------------------------------------------------------------------- threshold


def choose_threshold(y: Any, risk: Any, rule: str = "event1") -> float:
    """The alert threshold that a rule picks on these labels and risks.

    Choose it on training or validation predictions, never on the test set.

    Parameters
    ----------
    y, risk
        Outcomes (1 = died) and predicted risks in [0, 1].
    rule
        ``"event1"``: maximise min(sensitivity, PPV), the PhysioNet 2012 event-1
        score; ``"youden"``: maximise sensitivity + specificity - 1;
        ``"fixed:0.3"``: that threshold, whatever the data.

    Returns
    -------
    float
        One of the given risks (stays with ``risk >= threshold`` are alerted); when
        several thresholds score the same, the highest, which raises fewest alerts.

    >>> choose_threshold([0, 1, 0, 1], [0.1, 0.4, 0.35, 0.8], "youden")
    0.4
    >>> choose_threshold([0, 0], [0.1, 0.2], "fixed:0.25")
    0.25
    """
    y_arr, risk_arr = check_predictions(y, risk)
    if rule.startswith("fixed:"):
        try:
            threshold = float(rule.removeprefix("fixed:"))
        except ValueError:
            raise PredictionError(f"threshold rule {rule!r}: expected fixed:<number>") from None
        if not 0 <= threshold <= 1:
            raise PredictionError(f"threshold rule {rule!r}: the threshold must be in [0, 1]")
        return threshold
    if rule not in ("event1", "youden"):
        raise PredictionError(
            f"unknown threshold rule {rule!r}: use 'event1', 'youden' or 'fixed:<number>'"
        )
    if y_arr.min() == y_arr.max():
        raise PredictionError(
            f"threshold rule {rule!r} needs deaths and survivors; y has only {y_arr[0]}s"
        )
    if rule == "event1":
        # Thresholds ascend; precision[i] and recall[i] are those of risk >= thresholds[i].
        precision, recall, thresholds = precision_recall_curve(y_arr, risk_arr)
        score = np.minimum(precision[:-1], recall[:-1])
        best = np.flatnonzero(score == score.max())[-1]
    else:
        # Thresholds descend; the first is +inf (nobody alerted).
        fpr, tpr, thresholds = roc_curve(y_arr, risk_arr, drop_intermediate=False)
        youden = (tpr - fpr)[1:]
        best = 1 + np.flatnonzero(youden == youden.max())[0]
    return float(thresholds[best])


# ----------------------------------------------------------- challenge-specific scores


def expected_calibration_error(y: Any, risk: Any, bins: int = ECE_BINS) -> float:
    """Mean gap between predicted and observed mortality, over equal-width risk bins.

    ``ECE = sum_b (n_b / n) * |mean(y in b) - mean(risk in b)|`` with bins
    ``[k / bins, (k + 1) / bins)``, the last one closed; empty bins count zero.

    >>> expected_calibration_error([0, 1, 1, 0], [0.05, 0.15, 0.95, 0.85])
    0.45
    """
    y_arr, risk_arr = check_predictions(y, risk)
    which = np.minimum(np.floor(risk_arr * bins).astype(np.int64), bins - 1)
    observed = np.bincount(which, weights=y_arr, minlength=bins)
    predicted = np.bincount(which, weights=risk_arr, minlength=bins)
    return float(np.abs(observed - predicted).sum() / y_arr.size)


def hosmer_lemeshow(y: Any, risk: Any, groups: int = 10) -> tuple[float | None, int, str | None]:
    """The plain Hosmer-Lemeshow H over risk deciles: ``(H, degrees of freedom, reason)``.

    Stays sorted by risk are split into ``groups`` groups of near-equal size (sizes
    differ by at most one; tied risks may straddle two groups) and
    ``H = sum_g (O_g - E_g)^2 / (n_g p_g (1 - p_g))`` with ``O_g`` deaths, ``E_g`` the
    sum of risks and ``p_g`` the mean risk of group g; df = groups - 2. A group whose
    risks are all 0 (or all 1) adds nothing when it agrees with its outcomes; when it
    does not, H is infinite and returned as None with the reason.

    >>> h, df, _ = hosmer_lemeshow([0, 1] * 10, [0.5] * 20)
    >>> h, df
    (0.0, 8)
    """
    y_arr, risk_arr = check_predictions(y, risk)
    df = groups - 2
    if y_arr.size < groups:
        return None, df, f"needs at least {groups} stays"
    order = np.argsort(risk_arr, kind="stable")
    h = 0.0
    for part in np.array_split(order, groups):
        n_g = part.size
        observed = float(y_arr[part].sum())
        expected = float(risk_arr[part].sum())
        variance = expected * (1 - expected / n_g)
        if variance > 0:
            h += (observed - expected) ** 2 / variance
        elif observed != expected:
            return None, df, "a risk group predicted 0 or 1 for every stay and was wrong"
    return h, df, None


def challenge_h(y: Any, risk: Any) -> tuple[float | None, str | None]:
    """The PhysioNet 2012 event-2 score: ``lemeshow.m``'s normalised H, ``(H, reason)``.

    As the challenge's ``lemeshow.m`` (v1.4, I. Silva, 2012) computes it: stays are
    sorted by increasing risk (a stable sort, like MATLAB's ``sortrows``, so tied risks
    keep their input order); decile i is stays ``(i - 1) M + 1 .. i M`` with
    ``M = floor(N / 10)``, so the ``N - 10 M`` highest-risk stays are left out (none
    for the challenge's 4000-stay sets); each decile adds
    ``(O - M c)^2 / (M c (1 - c) + 0.001)`` with ``O`` its deaths and ``c`` its mean
    risk; the sum is divided by ``c_10 - c_1``, the range of the decile mean risks.
    Lower is better (challenge best 17.88). The plain H of :func:`hosmer_lemeshow` is
    a different number.

    >>> h, _ = challenge_h([0] * 9 + [1] * 11, [0.1] * 10 + [0.9] * 10)
    >>> round(h, 4)
    6.9061
    """
    y_arr, risk_arr = check_predictions(y, risk)
    deciles = 10
    m = y_arr.size // deciles
    if m == 0:
        return None, "needs at least 10 stays"
    order = np.argsort(risk_arr, kind="stable")[: m * deciles].reshape(deciles, m)
    observed = y_arr[order].sum(axis=1)
    centroid = risk_arr[order].mean(axis=1)
    terms = (observed - m * centroid) ** 2 / (m * centroid * (1 - centroid) + 0.001)
    spread = centroid[-1] - centroid[0]
    if spread <= 0:
        return None, "every decile has the same mean risk: the normalisation divides by zero"
    return float(terms.sum() / spread), None


# ------------------------------------------------------------------ binary metrics


def calibration_line(
    y: np.ndarray, risk: np.ndarray, weight: np.ndarray | None = None
) -> tuple[float | None, float | None, str | None]:
    """Calibration slope and intercept: ``(slope, intercept, reason for a None)``.

    Slope: ``b`` of the logistic recalibration ``logit P(died) = a + b logit(risk)``;
    below 1, the risks are too extreme (over-fitting), above 1 too timid. Intercept:
    calibration-in-the-large, ``a`` with ``b`` fixed at 1 (``logit(risk)`` as an
    offset): above 0 the model under-predicts deaths on average, below 0 it
    over-predicts. (The ``a`` of the two-parameter fit is the log-odds at a risk of
    0.5 and mixes both errors; Van Calster et al., J Clin Epidemiol 2016.) Both are
    maximum-likelihood fits by Newton's method (scikit-learn's ``LogisticRegression``
    has no offset); ``weight`` counts each stay that many times.

    >>> y, risk = np.array([0, 1, 0, 1, 1]), np.array([0.2, 0.4, 0.6, 0.8, 0.9])
    >>> slope, intercept, _ = calibration_line(y, risk)
    >>> round(slope, 3), round(intercept, 3)
    (1.293, 0.113)
    """
    kept = slice(None) if weight is None else weight > 0
    y, risk = y[kept], risk[kept]
    w = np.ones(y.size) if weight is None else weight[kept]
    died, survived = y == 1, y == 0
    if not died.any() or not survived.any():
        return None, None, "needs deaths and survivors"
    lp = _logit(risk)
    intercept = _fit_logistic(lp, y, w, slope=False)
    if intercept is None:
        return None, None, "the calibration fit did not converge"
    if lp.min() == lp.max():
        return None, intercept[0], "every stay has the same risk: the slope is undefined"
    if risk[survived].max() < risk[died].min():
        return None, intercept[0], "risk separates deaths from survivors perfectly: no finite slope"
    line = _fit_logistic(lp, y, w, slope=True)
    if line is None:
        return None, intercept[0], "the calibration slope fit did not converge"
    return line[1], intercept[0], None


def _fit_logistic(
    lp: np.ndarray, y: np.ndarray, w: np.ndarray, *, slope: bool
) -> tuple[float, float] | None:
    """Maximum likelihood ``(a, b)`` of ``logit P(y) = a + b lp`` (``b = 1`` unless ``slope``).

    Newton's method, halving steps that would lower the likelihood; None when it does
    not converge.
    """
    yf = y.astype(float)
    mean = np.dot(w, yf) / w.sum()
    # Start from the null model (every stay at the mean mortality), or from the risks as given.
    beta = np.array([np.log(mean / (1 - mean)), 0.0]) if slope else np.array([0.0, 1.0])

    def log_likelihood(b: np.ndarray) -> float:
        eta = b[0] + b[1] * lp
        return float(np.dot(w, yf * eta - np.logaddexp(0.0, eta)))

    current = log_likelihood(beta)
    for _ in range(100):
        p = expit(beta[0] + beta[1] * lp)
        h = w * p * (1 - p)
        residual = w * (yf - p)
        if slope:
            hl = np.dot(h, lp)
            hessian = np.array([[h.sum(), hl], [hl, np.dot(h, lp * lp)]])
            try:
                step = np.linalg.solve(hessian, [residual.sum(), np.dot(residual, lp)])
            except np.linalg.LinAlgError:
                return None
        else:
            step = np.array([residual.sum() / h.sum(), 0.0])
        size = 1.0
        while size > 1e-8:
            proposal = beta + size * step
            value = log_likelihood(proposal)
            if value >= current - 1e-12:
                break
            size /= 2
        beta, current = proposal, value
        if np.abs(size * step).max() < 1e-9:
            return float(beta[0]), float(beta[1])
    return None


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def _alarm_metrics(tp: float, fp: float, tn: float, fn: float, n: float) -> dict[str, Any]:
    sensitivity = _ratio(tp, tp + fn)
    ppv = _ratio(tp, tp + fp)
    return {
        "sensitivity": sensitivity,
        "specificity": _ratio(tn, tn + fp),
        "ppv": ppv,
        "npv": _ratio(tn, tn + fn),
        # No alert means no true alert: sensitivity 0 bounds the minimum whatever PPV is.
        "event1": None if sensitivity is None else min(sensitivity, 0.0 if ppv is None else ppv),
        "alerts_per_100_patients": 100.0 * (tp + fp) / n,
    }


#: Why an alarm metric is None.
ALARM_NOTES = {
    "sensitivity": "no deaths",
    "specificity": "no survivors",
    "ppv": "no stay is alerted at this threshold",
    "npv": "every stay is alerted at this threshold",
    "event1": "no deaths: sensitivity is undefined",
}


def binary_metrics(
    y: Any,
    risk: Any,
    threshold: float,
    threshold_rule: str,
    *,
    n_bootstrap: int = 1000,
    seed: int = 2026,
) -> dict[str, Any]:
    """Discrimination, calibration and alarm metrics of an in-hospital mortality risk.

    Parameters
    ----------
    y, risk
        Outcomes (1 = died in hospital) and calibrated predicted risks in [0, 1].
    threshold
        Stays with ``risk >= threshold`` are alerted; chosen beforehand on other data
        (:func:`choose_threshold`).
    threshold_rule
        How the threshold was chosen, as the rule name or in words; reported as is.
    n_bootstrap, seed
        Resamples for the 95 % intervals (0 for none), and their seed.

    Returns
    -------
    dict
        ``n, n_events``; ``auroc``; ``auprc`` (average precision, the step-wise area
        under the precision-recall curve); ``brier``; ``ece`` (10 equal-width bins,
        :func:`expected_calibration_error`); ``calibration_slope`` and
        ``calibration_intercept`` (:func:`calibration_line`); ``hl_h``, ``hl_h_df``,
        ``hl_h_p`` (plain Hosmer-Lemeshow over risk deciles, :func:`hosmer_lemeshow`);
        ``hl_h_challenge`` (``lemeshow.m``'s normalised H, :func:`challenge_h`);
        ``sensitivity, specificity, ppv, npv``, ``event1`` (min of sensitivity and
        PPV), ``alerts_per_100_patients``; ``confusion_matrix`` (threshold, rule, tp,
        fp, tn, fn); ``ci`` (``{metric: [low, high]}``); ``bootstrap`` (how the
        intervals were made); ``notes`` (``{metric: why it is None}``).

    Notes
    -----
    The intervals are the 2.5th and 97.5th percentiles over resamples drawn with
    replacement within deaths and within survivors separately (every resample has as
    many deaths as the data), at the same threshold; resamples where a metric is
    undefined are left out of its interval. The H statistics get no interval (they
    are tests of fit, with a p-value). The ECE of a resample is biased upwards (noise
    adds to every bin's gap), so for a well-calibrated model its interval can lie
    above the point estimate.
    """
    y_arr, risk_arr = check_predictions(y, risk)
    notes: dict[str, str] = {}
    out: dict[str, Any] = {"n": int(y_arr.size), "n_events": int(y_arr.sum())}
    if y_arr.min() != y_arr.max():
        out["auroc"] = float(roc_auc_score(y_arr, risk_arr))
        out["auprc"] = float(average_precision_score(y_arr, risk_arr))
    else:
        out["auroc"] = out["auprc"] = None
        notes["auroc"] = notes["auprc"] = f"needs deaths and survivors; y has only {y_arr[0]}s"
    out["brier"] = float(brier_score_loss(y_arr, risk_arr, labels=[0, 1]))
    out["ece"] = expected_calibration_error(y_arr, risk_arr)
    slope, intercept, reason = calibration_line(y_arr, risk_arr)
    out["calibration_slope"], out["calibration_intercept"] = slope, intercept
    if reason:
        notes["calibration_slope"] = reason
        if intercept is None:
            notes["calibration_intercept"] = reason
    out["hl_h"], out["hl_h_df"], reason = hosmer_lemeshow(y_arr, risk_arr)
    out["hl_h_p"] = (
        None if out["hl_h"] is None else float(stats.chi2.sf(out["hl_h"], out["hl_h_df"]))
    )
    if reason:
        notes["hl_h"] = reason
    out["hl_h_challenge"], reason = challenge_h(y_arr, risk_arr)
    if reason:
        notes["hl_h_challenge"] = reason

    alert = risk_arr >= threshold
    counts = {
        "tp": int(np.sum(alert & (y_arr == 1))),
        "fp": int(np.sum(alert & (y_arr == 0))),
        "tn": int(np.sum(~alert & (y_arr == 0))),
        "fn": int(np.sum(~alert & (y_arr == 1))),
    }
    alarms = _alarm_metrics(**counts, n=y_arr.size)
    out.update(alarms)
    notes.update({name: ALARM_NOTES[name] for name, value in alarms.items() if value is None})
    out["confusion_matrix"] = {"threshold": float(threshold), "rule": threshold_rule, **counts}
    out["ci"] = bootstrap_intervals(y_arr, risk_arr, threshold, n_bootstrap, seed)
    out["bootstrap"] = {
        "resamples": n_bootstrap,
        "seed": seed,
        "method": "stratified by outcome, percentile 95 % intervals, threshold fixed",
    }
    out["notes"] = notes
    return _jsonable(out)


class _WeightedMetrics:
    """The bootstrapped metrics of a resample, given as how often each stay was drawn.

    Every metric is a weighted sum over the stays sorted by risk, O(n) per resample;
    with all weights 1 they equal scikit-learn's (``tests/test_evaluation.py`` checks
    it), and one scikit-learn call per metric and resample would take minutes.
    """

    def __init__(self, y: np.ndarray, risk: np.ndarray, threshold: float) -> None:
        order = np.argsort(risk, kind="stable")
        #: Weights given in the stays' own order are ``weight[order]`` here.
        self.order = order
        self.y = y[order]
        self.risk = risk[order]
        _, self.level = np.unique(self.risk, return_inverse=True)
        self.levels = int(self.level.max()) + 1
        self.ece_bin = np.minimum(np.floor(self.risk * ECE_BINS).astype(np.int64), ECE_BINS - 1)
        self.alert = self.risk >= threshold
        self.squared_error = (self.risk - self.y) ** 2

    def __call__(self, weight: np.ndarray) -> dict[str, float | None]:
        deaths = weight * self.y
        survivors = weight - deaths
        n, n_deaths = weight.sum(), deaths.sum()
        n_survivors = n - n_deaths
        m: dict[str, float | None] = {"auroc": None, "auprc": None}
        if n_deaths and n_survivors:
            deaths_at = np.bincount(self.level, deaths, self.levels)
            survivors_at = np.bincount(self.level, survivors, self.levels)
            # A death outranks the survivors below its risk and half of those tied with it.
            below = np.cumsum(survivors_at) - survivors_at
            m["auroc"] = np.dot(deaths_at, below + 0.5 * survivors_at) / (n_deaths * n_survivors)
            # Average precision: precision at each risk level, weighted by its deaths.
            tp = np.cumsum(deaths_at[::-1])
            alerted = tp + np.cumsum(survivors_at[::-1])
            hit = deaths_at[::-1] > 0
            m["auprc"] = np.dot(deaths_at[::-1][hit], tp[hit] / alerted[hit]) / n_deaths
        m["brier"] = np.dot(weight, self.squared_error) / n
        gap = np.bincount(self.ece_bin, deaths - weight * self.risk, ECE_BINS)
        m["ece"] = np.abs(gap).sum() / n
        m["calibration_slope"], m["calibration_intercept"], _ = calibration_line(
            self.y, self.risk, weight
        )
        tp, fp = np.dot(deaths, self.alert), np.dot(survivors, self.alert)
        m.update(_alarm_metrics(tp, fp, n_survivors - fp, n_deaths - tp, n))
        return m


#: The metrics that get bootstrap intervals.
BOOTSTRAPPED = (
    "auroc",
    "auprc",
    "brier",
    "ece",
    "calibration_slope",
    "calibration_intercept",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "event1",
    "alerts_per_100_patients",
)


def bootstrap_intervals(
    y: np.ndarray, risk: np.ndarray, threshold: float, n_bootstrap: int, seed: int
) -> dict[str, list[float] | None]:
    """Percentile 95 % intervals of :data:`BOOTSTRAPPED` over outcome-stratified resamples.

    Same data and seed, same intervals. See :func:`binary_metrics`.
    """
    if n_bootstrap <= 0:
        return {}
    rng = np.random.default_rng(seed)
    compute = _WeightedMetrics(y, risk, threshold)
    strata = [np.flatnonzero(compute.y == label) for label in (0, 1)]
    values = np.full((n_bootstrap, len(BOOTSTRAPPED)), np.nan)
    weight = np.zeros(y.size)
    for b in range(n_bootstrap):
        for stratum in strata:
            drawn = rng.integers(0, stratum.size, stratum.size)
            weight[stratum] = np.bincount(drawn, minlength=stratum.size)
        replicate = compute(weight)
        values[b] = [np.nan if replicate[k] is None else replicate[k] for k in BOOTSTRAPPED]
    intervals: dict[str, list[float] | None] = {}
    for name, column in zip(BOOTSTRAPPED, values.T, strict=True):
        kept = column[np.isfinite(column)]
        intervals[name] = (
            [float(q) for q in np.percentile(kept, [2.5, 97.5])] if kept.size else None
        )
    return intervals


#: The metrics :func:`paired_bootstrap` compares, and whether higher is better.
PAIRED: dict[str, bool] = {
    "auroc": True,
    "auprc": True,
    "brier": False,
    "ece": False,
    "event1": True,
    "c_index": True,
    "integrated_brier": False,
}
SURVIVAL_PAIRED = ("c_index", "integrated_brier")


def paired_bootstrap(
    y: Any,
    baseline: Any,
    candidate: Any,
    thresholds: tuple[float, float],
    *,
    n_bootstrap: int = 1000,
    seed: int = 2026,
    time_h: Any = None,
    event: Any = None,
    survival: tuple[Any, Any] | None = None,
    hours: Any = None,
) -> dict[str, Any]:
    """Two models' risks for the same stays, compared on the same resamples.

    Each resample draws stays with replacement within deaths and within survivors (as
    :func:`bootstrap_intervals`) and scores *both* models on it, so the difference
    (candidate minus baseline) varies only with the stays drawn, not with two
    independent draws: a paired test. ``event1`` is each model's at its own threshold.

    With ``time_h``, ``event`` (NaN time: follow-up unknown, left out) and ``survival``
    (each model's probabilities of being alive at ``hours``, ``(n, len(hours))``, the
    hours inside follow-up), the same resamples compare the survival curves too:
    Harrell's C-index with the risk ``1 - S`` at the last hour, and the integrated
    Brier score over ``hours`` (censoring weights from the resample itself, the same
    for both models; a resample whose follow-up ends before the last hour is left out
    of that metric).

    Returns ``{"n", "n_events", "bootstrap", "metrics": {name: {"baseline",
    "candidate", "difference", "ci" (95 % percentile interval of the difference),
    "candidate_better" (share of resamples where the candidate is better),
    "higher_is_better"}}}``.
    """
    from sksurv.metrics import concordance_index_censored, integrated_brier_score

    y_arr, base = check_predictions(y, baseline)
    _, cand = check_predictions(y, candidate)
    models = [_WeightedMetrics(y_arr, r, t) for r, t in zip((base, cand), thresholds, strict=True)]
    names = [k for k in PAIRED if k not in SURVIVAL_PAIRED]
    followed: tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray], np.ndarray] | None
    followed = None
    if survival is not None:
        if time_h is None or event is None or hours is None:
            raise PredictionError("survival curves need time_h, event and hours")
        span = np.asarray(hours, dtype=float)
        time = np.asarray(time_h, dtype=float)
        known = np.isfinite(time)
        curves = [np.asarray(c, dtype=float)[known] for c in survival]
        if any(c.shape != (int(known.sum()), span.size) for c in curves):
            raise PredictionError("each survival array must be (stays, len(hours))")
        ev = np.asarray(event)[known].astype(bool)
        if ev.any():
            position = np.cumsum(known) - 1  # a stay's row among the known ones
            followed = (known, position, time[known], curves, ev)
            names += ["c_index"] + (["integrated_brier"] if span.size >= 2 else [])

    def survival_scores(rows: np.ndarray) -> dict[str, list[float]]:
        assert followed is not None
        known, position, time, curves, ev = followed
        at = position[rows[known[rows]]]
        outcome = _structured(ev[at], time[at])
        out = {"c_index": [], "integrated_brier": []}
        for curve in curves:
            risk = 1 - curve[at, -1]
            out["c_index"].append(float(concordance_index_censored(ev[at], time[at], risk)[0]))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    ibs = integrated_brier_score(outcome, outcome, curve[at], span)
            except ValueError:  # the resample's follow-up ends before the last hour
                ibs = np.nan
            out["integrated_brier"].append(float(ibs))
        return out

    def scores(rows: np.ndarray, weight: np.ndarray) -> np.ndarray:
        replicates = [m(weight[m.order]) for m in models]
        followed_scores = survival_scores(rows) if followed is not None else {}
        values = np.full((len(names), 2), np.nan)
        for i, name in enumerate(names):
            if name in SURVIVAL_PAIRED:
                values[i] = followed_scores[name]
            else:
                values[i] = [np.nan if r[name] is None else r[name] for r in replicates]
        return values

    point = scores(np.arange(y_arr.size), np.ones(y_arr.size))
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y_arr == label) for label in (0, 1)]
    differences = np.full((n_bootstrap, len(names)), np.nan)
    for b in range(n_bootstrap):
        rows = np.concatenate([s[rng.integers(0, s.size, s.size)] for s in strata])
        weight = np.bincount(rows, minlength=y_arr.size).astype(float)
        values = scores(rows, weight)
        differences[b] = values[:, 1] - values[:, 0]
    metrics: dict[str, Any] = {}
    for i, name in enumerate(names):
        column = differences[:, i][np.isfinite(differences[:, i])]
        higher = PAIRED[name]
        metrics[name] = {
            "baseline": point[i, 0],
            "candidate": point[i, 1],
            "difference": point[i, 1] - point[i, 0],
            "ci": [float(q) for q in np.percentile(column, [2.5, 97.5])] if column.size else None,
            "candidate_better": (
                float(np.mean(column > 0 if higher else column < 0)) if column.size else None
            ),
            "higher_is_better": higher,
            "resamples": int(column.size),
        }
    return _jsonable(
        {
            "n": int(y_arr.size),
            "n_events": int(y_arr.sum()),
            "bootstrap": {
                "resamples": n_bootstrap,
                "seed": seed,
                "method": "paired: both models on each resample, stratified by outcome; "
                "percentile 95 % intervals of the difference (candidate - baseline)",
            },
            "survival_hours": None if followed is None else [float(h) for h in span],
            "metrics": metrics,
        }
    )


# ---------------------------------------------------------------------- survival


def _structured(event: np.ndarray, time: np.ndarray) -> np.ndarray:
    out = np.empty(time.size, dtype=[("event", bool), ("time", float)])
    out["event"] = event.astype(bool)
    out["time"] = time
    return out


def survival_at(survival: np.ndarray, grid_h: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Survival probabilities at ``hours``, linear between grid points, 1 at hour 0.

    Beyond the last grid point the last value is kept.

    >>> survival_at(np.array([[0.9, 0.6]]), np.array([24.0, 72.0]), np.array([12.0, 48.0]))
    array([[0.95, 0.75]])
    """
    knots = np.concatenate([[0.0], grid_h])
    values = np.column_stack([np.ones(survival.shape[0]), survival])
    at = np.clip(hours, 0.0, knots[-1])
    right = np.clip(np.searchsorted(knots, at, side="right"), 1, knots.size - 1)
    left = right - 1
    fraction = (at - knots[left]) / (knots[right] - knots[left])
    return values[:, left] * (1 - fraction) + values[:, right] * fraction


def _check_survival(
    time_h: Any, event: Any, survival: Any, grid_h: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    time = np.asarray(time_h, dtype=float)
    ev = np.asarray(event)
    surv = np.asarray(survival, dtype=float)
    grid = np.asarray(grid_h, dtype=float)
    if time.ndim != 1 or time.shape != ev.shape:
        raise PredictionError("time_h and event must be 1-D and of the same length")
    if not np.isin(ev, (0, 1)).all():
        raise PredictionError("event must hold 0 (censored) and 1 (died) only")
    bad = ~np.isfinite(time) | (time < 0)
    if bad.any():
        raise PredictionError(
            f"time_h must be hours >= 0 from the prediction time; {int(bad.sum())} of "
            f"{time.size} are missing or negative (leave out stays without follow-up)"
        )
    if grid.ndim != 1 or grid.size == 0 or (np.diff(grid) <= 0).any() or grid[0] <= 0:
        raise PredictionError("grid_h must be increasing positive hours")
    if surv.shape != (time.size, grid.size):
        raise PredictionError(
            f"survival must have shape (stays, grid points) = {(time.size, grid.size)}; "
            f"got {surv.shape}"
        )
    if not np.isfinite(surv).all() or (surv < 0).any() or (surv > 1).any():
        raise PredictionError("survival must be probabilities in [0, 1]")
    return time, ev.astype(bool), surv, grid


def _key(hours: float) -> str:
    return f"{hours:g}h"


def survival_metrics(
    time_h: Any,
    event: Any,
    survival: Any,
    grid_h: Any,
    horizons_h: Any,
    *,
    train_time_h: Any = None,
    train_event: Any = None,
) -> dict[str, Any]:
    """Discrimination and accuracy of predicted survival curves under censoring.

    Parameters
    ----------
    time_h, event
        Hours from the prediction time to death (``event`` 1) or to the end of
        follow-up (``event`` 0), as :func:`bedside.training.cohorts.survival_targets`.
    survival
        ``(n, K)`` predicted probabilities of being alive at each hour of ``grid_h``;
        between grid points the curve is taken as linear (:func:`survival_at`).
    horizons_h
        Hours at which to report time-dependent AUC and Brier score.
    train_time_h, train_event
        The training stays' outcomes: the censoring distribution of the inverse
        probability of censoring weights (IPCW) and Uno's C come from them. Without
        them (or when the test follow-up outlasts the training one), from the test set.

    Returns
    -------
    dict
        ``n, n_events``; ``c_index`` (Harrell's, with risk ``1 - S`` at the last
        horizon, ``c_index_horizon_h``) and ``c_index_uno`` (IPCW, truncated at that
        horizon; None without training outcomes); ``td_auc`` and ``brier``
        (``{"24h": ...}``, cumulative/dynamic AUC and IPCW Brier score at each
        horizon); ``td_auc_mean`` (scikit-survival's survival-weighted mean);
        ``integrated_brier`` over ``integrated_brier_range_h``, the span of the
        horizons inside follow-up, integrated on the grid points within it;
        ``ipcw_from`` (``"train"`` or ``"test"``) and ``notes``.

    Notes
    -----
    A horizon is inside follow-up when ``min(time_h) <= h < max(time_h)``
    (scikit-survival's condition); outside it, its metrics are None with a note.
    """
    from sksurv.metrics import (
        brier_score,
        concordance_index_censored,
        concordance_index_ipcw,
        cumulative_dynamic_auc,
        integrated_brier_score,
    )

    time, ev, surv, grid = _check_survival(time_h, event, survival, grid_h)
    horizons = np.asarray(horizons_h, dtype=float).ravel()
    if horizons.size == 0 or (np.diff(horizons) <= 0).any() or horizons[0] <= 0:
        raise PredictionError("horizons_h must be increasing positive hours")
    notes: dict[str, str] = {}
    out: dict[str, Any] = {"n": int(time.size), "n_events": int(ev.sum())}
    test = _structured(ev, time)
    ipcw_from = "test"
    train = test
    if train_time_h is not None and train_event is not None:
        train_t = np.asarray(train_time_h, dtype=float)
        if train_t.shape != np.shape(train_event) or train_t.ndim != 1 or train_t.size == 0:
            raise PredictionError("train_time_h and train_event must be 1-D, of the same length")
        # The censoring distribution must reach every test time (scikit-survival's rule).
        if train_t.max() >= time.max():
            train = _structured(np.asarray(train_event), train_t)
            ipcw_from = "train"
        else:
            notes["ipcw_from"] = (
                "the test follow-up outlasts the training one: censoring weights from the test set"
            )
    out["ipcw_from"] = ipcw_from

    inside = (horizons >= time.min()) & (horizons < time.max())
    for h in horizons[~inside]:
        notes[f"horizon_{_key(h)}"] = (
            f"horizon {h:g} h is outside follow-up [{time.min():g}, {time.max():g}) h"
        )
    last = horizons[inside][-1] if inside.any() else horizons[-1]
    risk_last = 1 - survival_at(surv, grid, np.array([last]))[:, 0]
    out["c_index_horizon_h"] = float(last)
    out["c_index"] = out["c_index_uno"] = None
    if ev.any():
        out["c_index"] = float(concordance_index_censored(ev, time, risk_last)[0])
        if ipcw_from == "train":
            try:
                out["c_index_uno"] = float(concordance_index_ipcw(train, test, risk_last, last)[0])
            except ValueError as error:
                notes["c_index_uno"] = str(error)
        else:
            notes["c_index_uno"] = "needs the training stays' outcomes"
    else:
        notes["c_index"] = notes["c_index_uno"] = "no deaths in follow-up"

    out["td_auc"] = {_key(h): None for h in horizons}
    out["brier"] = {_key(h): None for h in horizons}
    out["td_auc_mean"] = out["integrated_brier"] = out["integrated_brier_range_h"] = None
    valid = horizons[inside]
    if valid.size:
        at = survival_at(surv, grid, valid)
        cases = np.array([(ev & (time <= h)).any() for h in valid])
        controls = np.array([(time > h).any() for h in valid])
        auc_ok = cases & controls
        for h in valid[~auc_ok]:
            notes[f"td_auc_{_key(h)}"] = f"no deaths up to {h:g} h or nobody followed beyond it"
        span = np.union1d(valid, grid[(grid >= valid[0]) & (grid <= valid[-1])])
        with warnings.catch_warnings():
            # scikit-survival divides by zero on degenerate inputs; the checks above and
            # the ValueErrors below report those cases instead.
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                if auc_ok.any():
                    auc, mean_auc = cumulative_dynamic_auc(
                        train, test, 1 - at[:, auc_ok], valid[auc_ok]
                    )
                    out["td_auc"].update(
                        {_key(h): float(a) for h, a in zip(valid[auc_ok], auc, strict=True)}
                    )
                    out["td_auc_mean"] = float(mean_auc)
            except ValueError as error:
                notes["td_auc"] = str(error)
            try:
                _, scores = brier_score(train, test, at, valid)
                out["brier"].update({_key(h): float(s) for h, s in zip(valid, scores, strict=True)})
                if span.size >= 2:
                    out["integrated_brier"] = float(
                        integrated_brier_score(train, test, survival_at(surv, grid, span), span)
                    )
                    out["integrated_brier_range_h"] = [float(span[0]), float(span[-1])]
                else:
                    notes["integrated_brier"] = "needs two or more time points inside follow-up"
            except ValueError as error:
                notes["brier"] = str(error)
    out["notes"] = notes
    return _jsonable(out)


def _jsonable(value: Any) -> Any:
    """Python floats and ints, NaN and infinity as None: what ``json.dumps`` writes strictly."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
