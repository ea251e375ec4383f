"""Post-hoc calibration: make predicted risks match observed mortality.

A model's raw risks can rank stays well and still be too extreme or too timid (deep
models trained with class weights are both). A calibrator maps raw risk to calibrated
risk, fitted **on validation data only** (stays the model was not trained on and that
are not in the test set): fitting it on the test set would report calibration that a
new cohort will not see. That split is the caller's job; nothing here can check it.

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


KINDS: dict[str, type[NoCalibration] | type[TemperatureScaling] | type[IsotonicCalibration]] = {
    "none": NoCalibration,
    "temperature": TemperatureScaling,
    "isotonic": IsotonicCalibration,
}


def fit_calibration(kind: str, risk: Any, y: Any) -> Calibrator:
    """A calibrator of that kind (``"none"``, ``"temperature"``, ``"isotonic"``) fitted on
    validation risks and outcomes."""
    if kind not in KINDS:
        raise PredictionError(f"unknown calibration {kind!r}: use one of {sorted(KINDS)}")
    return KINDS[kind]().fit(risk, y)


def load_calibration(data: dict[str, Any]) -> Calibrator:
    """The calibrator that ``to_dict`` saved."""
    kind = data.get("kind")
    if kind not in KINDS:
        raise PredictionError(f"unknown calibration {kind!r}: use one of {sorted(KINDS)}")
    return KINDS[kind].from_dict(data)
