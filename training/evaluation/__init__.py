"""Evaluation: how good a mortality model is, and a report that clinicians can read.

- :mod:`~bedside.training.evaluation.metrics`: the alert threshold
  (:func:`choose_threshold`), discrimination, calibration and alarm metrics with
  bootstrap intervals (:func:`binary_metrics`), and survival-curve metrics
  (:func:`survival_metrics`); everything JSON-able, for ``metrics.json``.
- :mod:`~bedside.training.evaluation.calibration`: post-hoc calibration (temperature
  scaling, logistic, isotonic; :func:`fit_ensemble_calibration` for the mean of an
  ensemble's members), saved as JSON.
- :mod:`~bedside.training.evaluation.report`: ``report.html``, self-contained, in plain
  language (imported on its own: it needs matplotlib).

The threshold and the calibration are fitted on validation stays; the metrics are
computed on test stays that neither saw.
"""

from bedside.training.evaluation.calibration import (
    IsotonicCalibration,
    NoCalibration,
    PlattScaling,
    TemperatureScaling,
    fit_calibration,
    fit_ensemble_calibration,
    load_calibration,
)
from bedside.training.evaluation.metrics import (
    PredictionError,
    binary_metrics,
    choose_threshold,
    survival_metrics,
)

__all__ = [
    "IsotonicCalibration",
    "NoCalibration",
    "PlattScaling",
    "PredictionError",
    "TemperatureScaling",
    "binary_metrics",
    "choose_threshold",
    "fit_calibration",
    "fit_ensemble_calibration",
    "load_calibration",
    "survival_metrics",
]
