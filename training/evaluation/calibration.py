"""Post-hoc calibration: make predicted risks match observed mortality.

A model's raw risks can rank stays well and still be too extreme or too timid (deep
models trained with class weights are both). A calibrator maps raw risk to calibrated
risk, fitted **on validation data only** (stays the model was not trained on and that
are not in the test set): fitting it on the test set would report calibration that a
new cohort will not see. That split is the caller's job; nothing here can check it.

An ensemble that averages the log-odds of K members, each validated on the stays it
did not train on, serves something else than it was validated on: the average carries
less of the members' own noise, so it is less spread than one member's out-of-fold
log-odds, and a calibration fitted on those leaves the served risks too timid
(calibration slope above 1 on new data). :func:`fit_ensemble_calibration` fits the
logistic calibration for the average instead (see its docstring).

Calibrators are saved as JSON (``to_dict`` / :func:`load_calibration`), never pickled,
so a model directory can be read without running code from it.

>>> rng = np.random.default_rng(0)
>>> true_risk = rng.uniform(0.02, 0.6, 4000)
>>> died = (rng.uniform(size=4000) < true_risk).astype(int)
>>> overconfident = 1 / (1 + np.exp(-3 * np.log(true_risk / (1 - true_risk))))
>>> calibrator = fit_calibration("temperature", overconfident, died)
>>> round(calibrator.temperature)  # the over-confidence it undoes
3
>>> import json
>>> saved = json.dumps(calibrator.to_dict())
>>> load_calibration(json.loads(saved)).transform([0.5, 0.9]).round(3)
array([0.5  , 0.665])
"""

from __future__ import annotations

from typing import Any, Protocol, Self

import numpy as np
from scipy import optimize
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

from bedside.training.evaluation.metrics import PredictionError, check_predictions

#: Risks are clipped to [EPS, 1 - EPS] before taking their logit.
EPS = 1e-7


class Calibrator(Protocol):
    """What every calibrator offers: fit on validation risks, transform any risks."""

    def fit(self, risk: Any, y: Any) -> Self: ...

    def transform(self, risk: Any) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...


def _risks(risk: Any) -> np.ndarray:
    values = np.asarray(risk, dtype=float)
    check_predictions(np.zeros(values.size, dtype=int), values.ravel())
    return values


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


class NoCalibration:
    """Risks left as the model gives them (``kind="none"``)."""

    def fit(self, risk: Any, y: Any) -> Self:
        check_predictions(y, risk)
        return self

    def transform(self, risk: Any) -> np.ndarray:
        return _risks(risk).copy()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "none"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NoCalibration:
        return cls()


class TemperatureScaling:
    """``calibrated = sigmoid(logit(risk) / T)``, with T fitted by maximum likelihood.

    T > 1 softens risks that are too extreme, T < 1 sharpens timid ones; the ranking of
    stays (AUROC) is unchanged, and a risk of 0.5 stays 0.5, so an overall under- or
    over-prediction of deaths is not corrected (isotonic calibration does both). Fit
    it on validation data only (see the module's docstring).

    >>> TemperatureScaling(temperature=2.0).transform([0.1, 0.5, 0.9]).round(3)
    array([0.25, 0.5 , 0.75])
    """

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise PredictionError("temperature must be > 0")
        self.temperature = float(temperature)

    def fit(self, risk: Any, y: Any) -> Self:
        """Choose T to minimise the log loss of the calibrated risks on ``(risk, y)``."""
        y_arr, risk_arr = check_predictions(y, risk)
        lp = _logit(risk_arr)

        def log_loss(log_t: float) -> float:
            z = lp / np.exp(log_t)
            # -log sigmoid(z) for deaths, -log sigmoid(-z) for survivors, overflow-safe.
            return float(np.mean(np.logaddexp(0.0, np.where(y_arr == 1, -z, z))))

        # log T in [-5, 5]: T from 0.007 to 150, far beyond any useful correction.
        best = optimize.minimize_scalar(log_loss, bounds=(-5.0, 5.0), method="bounded")
        self.temperature = float(np.exp(best.x))
        return self

    def transform(self, risk: Any) -> np.ndarray:
        z = _logit(_risks(risk)) / self.temperature
        return expit(z)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "temperature", "temperature": self.temperature}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemperatureScaling:
        return cls(temperature=float(data["temperature"]))


class PlattScaling:
    """``calibrated = sigmoid(intercept + slope * logit(risk))``: logistic recalibration.

    Fitted by maximum likelihood, it corrects both an overall under- or over-prediction
    of deaths (intercept) and risks that are too extreme or too timid (slope); like
    temperature scaling it keeps the ranking of stays. Fit it on validation data only
    (see the module's docstring).

    >>> PlattScaling(intercept=-1.0, slope=2.0).transform([0.1, 0.5, 0.9]).round(3)
    array([0.005, 0.269, 0.968])
    """

    def __init__(
        self, intercept: float = 0.0, slope: float = 1.0, ensemble: dict[str, Any] | None = None
    ) -> None:
        if not (np.isfinite(intercept) and np.isfinite(slope)):
            raise PredictionError("the calibration intercept and slope must be finite")
        self.intercept, self.slope = float(intercept), float(slope)
        #: How the fit accounted for averaging members (:func:`fit_ensemble_calibration`).
        self.ensemble = ensemble

    def fit(self, risk: Any, y: Any) -> Self:
        """Choose intercept and slope to minimise the log loss on ``(risk, y)``."""
        y_arr, risk_arr = check_predictions(y, risk)
        self.intercept, self.slope = _logistic_fit(_logit(risk_arr), y_arr)
        self.ensemble = None
        return self

    def transform(self, risk: Any) -> np.ndarray:
        return expit(self.intercept + self.slope * _logit(_risks(risk)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "platt", "intercept": self.intercept, "slope": self.slope}
        return out | ({"ensemble": self.ensemble} if self.ensemble is not None else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlattScaling:
        return cls(float(data["intercept"]), float(data["slope"]), data.get("ensemble"))


def _logistic_fit(lp: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood ``(a, b)`` of ``P(y) = sigmoid(a + b lp)``."""
    sign = np.where(y == 1, -1.0, 1.0)

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        z = beta[0] + beta[1] * lp
        residual = expit(z) - y  # d(log loss)/dz
        value = np.mean(np.logaddexp(0.0, sign * z))
        return float(value), np.array([residual.mean(), np.mean(residual * lp)])

    mean = float(np.clip(y.mean(), EPS, 1 - EPS))
    start = np.array([np.log(mean / (1 - mean)), 0.0])
    best = optimize.minimize(loss, start, jac=True, method="BFGS", options={"gtol": 1e-10})
    return float(best.x[0]), float(best.x[1])


def _intercept_for(offset: np.ndarray, y: np.ndarray) -> float:
    """Maximum-likelihood ``a`` of ``P(y) = sigmoid(a + offset)``: mean risk = death rate."""
    return float(optimize.brentq(lambda a: np.mean(expit(a + offset)) - y.mean(), -50.0, 50.0))


def fit_ensemble_calibration(
    member_logits: Any, held_out_by: Any, y: Any
) -> tuple[PlattScaling, np.ndarray]:
    """Logistic calibration of the mean of ``K`` members' log-odds, from their out-of-fold ones.

    ``member_logits`` (K, n): every member's log-odds of death on the n training stays;
    ``held_out_by`` (n,): the member that did *not* train on each stay. Returns the
    calibration, and the out-of-fold log-odds shrunk to the spread of the mean (what the
    ensemble would serve on these stays had none of its members seen them), on which the
    caller can choose a threshold.

    Why: one member's log-odds on a new stay are the signal plus that member's own noise
    (what its folds and seed taught it); the mean of K members keeps the signal and
    averages the noise, so its variance is smaller, ``V_mean = V - (1 - 1/K) D``, where
    ``V`` is the variance of one member's out-of-fold log-odds and ``D`` the members'
    disagreement (variance between members on a stay, each member's log-odds centred on
    its mean). Noise uncorrelated with the outcome flattens a logistic fit (regression
    dilution), so the slope that calibrates the mean is the out-of-fold slope times
    ``V / V_mean``. ``D`` is measured on the training stays, between the K - 1 members
    that trained on each: members agree more on stays they all saw, so this is a lower
    bound on their disagreement on new stays and the correction errs on the side of
    changing the out-of-fold fit too little. The intercept is then refitted so that the
    mean calibrated risk of the shrunk out-of-fold log-odds is the death rate.

    With fewer than 3 members no two of them trained on a stay in common, ``D`` cannot
    be measured, and the plain out-of-fold fit is returned.

    A simulated ensemble of 5 members, each with its own noise (a ninth of the variance
    of its log-odds):

    >>> rng = np.random.default_rng(0)
    >>> true_logit = rng.normal(-2.0, 1.5, (2, 20000))            # training stays, new stays
    >>> died = rng.uniform(size=true_logit.shape) < expit(true_logit)
    >>> learnable = true_logit + rng.normal(0, 0.8, true_logit.shape)
    >>> members = learnable[:, None] + rng.normal(0, 0.6, (2, 5, 20000))
    >>> held_out_by = np.arange(20000) % 5
    >>> out_of_fold = members[0, held_out_by, np.arange(20000)]
    >>> plain = PlattScaling().fit(expit(out_of_fold), died[0])
    >>> for_the_mean, _ = fit_ensemble_calibration(members[0], held_out_by, died[0])
    >>> def slope_on_new_stays(calibrator):  # calibration slope of the served mean
    ...     calibrated = calibrator.transform(expit(members[1].mean(axis=0)))
    ...     return PlattScaling().fit(calibrated, died[1]).slope
    >>> round(slope_on_new_stays(plain), 2), round(slope_on_new_stays(for_the_mean), 2)
    (1.13, 1.03)

    The correction is first-order (the dilution of a logistic fit is not exactly the
    linear one): with much noisier members (variance ratio 1.3), 80-95 % of the excess
    slope goes in such simulations.
    """
    logits = np.asarray(member_logits, dtype=float)
    held_out = np.asarray(held_out_by, dtype=np.int64)
    k, n = logits.shape
    if held_out.shape != (n,) or held_out.min() < 0 or held_out.max() >= k:
        raise PredictionError("held_out_by must name one of the members for every stay")
    out_of_fold = logits[held_out, np.arange(n)]
    y_arr, _ = check_predictions(y, expit(out_of_fold))
    intercept, slope = _logistic_fit(out_of_fold, y_arr)
    if k < 3:
        plain = PlattScaling(intercept, slope, {"members": k, "note": "no correction below 3"})
        return plain, out_of_fold
    variance = float(np.mean([out_of_fold[held_out == m].var() for m in range(k)]))
    centred = logits - logits.mean(axis=1, keepdims=True)
    seen = np.ones((k, n), dtype=bool)
    seen[held_out, np.arange(n)] = False
    trained_on = centred.T[seen.T].reshape(n, k - 1)
    disagreement = float(trained_on.var(axis=1, ddof=1).mean())
    served_variance = variance - (1 - 1 / k) * disagreement
    ratio = variance / served_variance if served_variance > 0 else 1.0
    centre = out_of_fold.mean()
    as_served = centre + (out_of_fold - centre) / np.sqrt(ratio)
    served_slope = slope * ratio
    details = {
        "members": k,
        "out_of_fold_slope": slope,
        "out_of_fold_intercept": intercept,
        "member_variance": variance,
        "member_disagreement": disagreement,
        "variance_ratio": ratio,
    }
    served_intercept = _intercept_for(served_slope * as_served, y_arr)
    return PlattScaling(served_intercept, served_slope, details), as_served


class IsotonicCalibration:
    """A non-decreasing step-and-ramp map from raw to calibrated risk.

    scikit-learn's ``IsotonicRegression`` fits it; it is stored as its knots and applied
    by linear interpolation between them (what ``IsotonicRegression.predict`` does),
    flat beyond the first and last knot. It corrects any monotone miscalibration but
    needs a few hundred validation stays with enough deaths, ties stays into blocks
    of equal risk (small AUROC losses) and can output a risk of exactly 0 or 1 at the
    extremes. Fit it on validation data only (see the module's docstring).

    >>> iso = IsotonicCalibration().fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    >>> iso.transform([0.1, 0.25, 0.4, 0.9]).round(3)
    array([0. , 0.5, 1. , 1. ])
    """

    def __init__(self, knots_risk: Any = (), knots_calibrated: Any = ()) -> None:
        self.knots_risk = np.asarray(knots_risk, dtype=float)
        self.knots_calibrated = np.asarray(knots_calibrated, dtype=float)
        if self.knots_risk.shape != self.knots_calibrated.shape:
            raise PredictionError("isotonic calibration needs as many calibrated values as knots")

    def fit(self, risk: Any, y: Any) -> Self:
        y_arr, risk_arr = check_predictions(y, risk)
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        fitted.fit(risk_arr, y_arr)
        self.knots_risk = fitted.X_thresholds_.astype(float)
        self.knots_calibrated = fitted.y_thresholds_.astype(float)
        return self

    def transform(self, risk: Any) -> np.ndarray:
        if self.knots_risk.size == 0:
            raise PredictionError("isotonic calibration is not fitted")
        return np.interp(_risks(risk), self.knots_risk, self.knots_calibrated)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "isotonic",
            "knots_risk": self.knots_risk.tolist(),
            "knots_calibrated": self.knots_calibrated.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IsotonicCalibration:
        return cls(data["knots_risk"], data["knots_calibrated"])


KINDS: dict[
    str,
    type[NoCalibration] | type[TemperatureScaling] | type[PlattScaling] | type[IsotonicCalibration],
] = {
    "none": NoCalibration,
    "temperature": TemperatureScaling,
    "platt": PlattScaling,
    "isotonic": IsotonicCalibration,
}


def fit_calibration(kind: str, risk: Any, y: Any) -> Calibrator:
    """A calibrator of that kind (``"none"``, ``"temperature"``, ``"platt"``,
    ``"isotonic"``) fitted on validation risks and outcomes."""
    if kind not in KINDS:
        raise PredictionError(f"unknown calibration {kind!r}: use one of {sorted(KINDS)}")
    return KINDS[kind]().fit(risk, y)


def load_calibration(data: dict[str, Any]) -> Calibrator:
    """The calibrator that ``to_dict`` saved."""
    kind = data.get("kind")
    if kind not in KINDS:
        raise PredictionError(f"unknown calibration {kind!r}: use one of {sorted(KINDS)}")
    return KINDS[kind].from_dict(data)
