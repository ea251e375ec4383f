"""The ``tsfel-lr`` and ``tsfel-gbm`` models: TSFEL features + statics -> scikit-learn.

Each model is a set of binary classifiers on the same feature matrix
(:func:`bedside.training.survival.features.window_features` of the standardised
observed values, then the encoded static covariates), one per target:

* ``mortality``: in-hospital death, on every training stay;
* ``hazard`` (``hazards="pooled"``, the default): the discrete-time hazard ``h_j`` of
  every interval of the survival grid, by one classifier on the person-period rows, one
  per stay and interval it is at risk in
  (:func:`~bedside.training.survival.likelihood.interval_targets`), with the interval as
  a feature; its target is death in that interval, so censored stays count exactly as
  in the nets' likelihood, and every interval learns from all the deaths. In 5-fold
  cross-validation on PhysioNet 2012 set A, pooling lifted tsfel-gbm's C-index from
  0.822 to 0.833 and cut its integrated Brier score from 0.093 to 0.074 (tsfel-lr:
  0.812 to 0.818, 0.080 to 0.079), mortality unchanged; trained on set A and tested on
  set B, tsfel-gbm's C-index went from 0.822 to 0.836 (BENCHMARKS.md);
* or ``interval_j`` for each interval (``hazards="separate"``, models saved before
  pooling): one classifier per interval on the stays at risk in it, few deaths each.
  An interval (or, pooled, a grid) with fewer than ``MIN_EVENTS`` training deaths
  gets a constant hazard (its observed rate) instead of a classifier.

Logistic regression reads the features in a piecewise-linear encoding on ``bins``
training quantiles of each column
(:func:`~bedside.training.survival.features.piecewise_linear`, as ``lstm-tsfel`` does),
so that it can bend each feature's effect (low and high blood pressure both carry
risk); its regularisation ``C`` is chosen among :data:`LR_C_GRID` by the out-of-fold
log loss of the model's own folds (:func:`choose_c`) unless given. In a nested
cross-validation on PhysioNet 2012 set A (5 outer folds, the whole pipeline inside
each), the encoding took the held-out AUROC from 0.842 to 0.854 and the log loss from
0.303 to 0.295, with calibration slopes of 0.97-1.01 either way; on set B (tested once)
it met the slope goal (0.99, before 1.13) but lost AUROC (0.856, before 0.864; see
BENCHMARKS.md).

Class imbalance: ``class_weight="balanced"`` re-weights the rare class; the resulting
shift of the log-odds (``log w_death / w_alive``) is known, and subtracted, so the
output stays a probability before post-hoc calibration.

Saved without pickle, in ``tabular.npz`` (read with ``allow_pickle=False``):

* logistic regression: the quantile edges of every column (``encoding.edges``; models
  saved before the encoding hold the training medians, means and stds that
  standardised the columns instead) and, per classifier, the coefficients and
  intercept;
* gradient boosting: every tree of every classifier as flat arrays (feature, threshold,
  which side missing values go, children, leaf value) and the baseline log-odds,
  evaluated by :func:`_trees_logit`, which is what scikit-learn's ``predict_proba``
  does for numerical features (a test checks they agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bedside.training.survival.features import (
    FEATURE_SETS,
    piecewise_linear,
    quantile_edges,
    window_features,
)
from bedside.training.survival.inputs import CLIP, Inputs

#: Fewest deaths in an interval for it to get its own classifier.
MIN_EVENTS = 5
TABULAR_FILE = "tabular.npz"

LR_DEFAULTS: dict[str, Any] = {
    "features": "compact",
    "bins": 8,
    "C": 0.01,
    "class_weight": None,
    "hazards": "pooled",
}
#: The ``C`` that :func:`choose_c` chooses among (on PhysioNet 2012 set A: 0.01, with an
#: out-of-fold log loss of 0.295 against 0.299 for 0.003 and 0.309 for 0.03).
LR_C_GRID = (0.003, 0.01, 0.03)
GBM_DEFAULTS: dict[str, Any] = {
    "features": "compact",
    "learning_rate": 0.05,
    "max_iter": 200,
    "max_leaf_nodes": 7,
    "min_samples_leaf": 30,
    "l2_regularization": 0.0,
    "max_features": 0.3,
    "class_weight": None,
    "hazards": "pooled",
}


#: Parameters of the model that are not the scikit-learn estimator's. ``hazards``:
#: ``"separate"`` (one classifier per interval of the survival grid) or ``"pooled"``
#: (one classifier of all intervals, :meth:`TabularPredictor._fit_pooled_hazards`).
NOT_ESTIMATOR = frozenset({"features", "hazards"})
HAZARDS = ("separate", "pooled")
#: Value of the one-hot interval columns of a pooled regression: its penalty on their
#: coefficients is that on a feature's divided by the square of this.
INTERVAL_SCALE = 10.0


def design_matrix(inputs: Inputs, feature_set: str = "compact") -> np.ndarray:
    """Features of every variable's observed values, then the static covariates."""
    features = window_features(inputs.observed, FEATURE_SETS[feature_set])
    return np.hstack([features, inputs.statics.astype(np.float64)])


def _prior_shift(y: np.ndarray, class_weight: str | None) -> float:
    """Log-odds added by re-weighting the classes (subtracted after prediction)."""
    if class_weight != "balanced":
        return 0.0
    deaths = max(int(y.sum()), 1)
    return float(np.log((y.size - deaths) / deaths))


@dataclass
class TabularPredictor:
    """One classifier per target (mortality, each interval), on the same features."""

    arch: str  # "tsfel-lr" or "tsfel-gbm"
    params: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)

    # --- fitting --------------------------------------------------------------------

    def fit(
        self,
        x: np.ndarray,
        mortality: np.ndarray,
        at_risk: np.ndarray,
        died: np.ndarray,
        seed: int,
    ) -> TabularPredictor:
        if self.params.get("hazards", "separate") not in HAZARDS:
            raise ValueError(f"hazards must be one of {', '.join(HAZARDS)}")
        self.arrays, self.targets = {}, ["mortality"]
        if self.arch == "tsfel-lr":
            x = self._fit_encoding(x)
        self._fit_target("mortality", x, mortality, seed)
        if self.params.get("hazards", "separate") == "pooled" and at_risk.shape[1]:
            self._fit_pooled_hazards(x, at_risk, died, seed)
            return self
        for j in range(at_risk.shape[1]):
            name = f"interval_{j}"
            self.targets.append(name)
            rows = at_risk[:, j]
            y = died[rows, j].astype(np.int64)
            if y.sum() < MIN_EVENTS or y.sum() == y.size:
                rate = (y.sum() + 0.5) / (y.size + 1.0)
                self.arrays[f"{name}.constant"] = np.array([np.log(rate / (1 - rate))])
            else:
                self._fit_target(name, x[rows], y, seed)
        return self

    def _fit_pooled_hazards(
        self, x: np.ndarray, at_risk: np.ndarray, died: np.ndarray, seed: int
    ) -> None:
        """One classifier of every interval's hazard: a row per stay and interval it is
        at risk in (the person-period form of the likelihood), the interval a feature."""
        stays, intervals = np.nonzero(at_risk)
        y = died[stays, intervals].astype(np.int64)
        self.targets.append("hazard")
        self.arrays["hazard.intervals"] = np.array([at_risk.shape[1]])
        if y.sum() < MIN_EVENTS or y.sum() == y.size:
            rate = (y.sum() + 0.5) / (y.size + 1.0)
            self.arrays["hazard.constant"] = np.array([np.log(rate / (1 - rate))])
            return
        self._fit_target("hazard", self._person_period(x[stays], intervals), y, seed)

    def _person_period(self, x: np.ndarray, intervals: np.ndarray) -> np.ndarray:
        """``x`` with the interval of each row: one-hot for the regression (a baseline
        hazard per interval, the columns scaled by :data:`INTERVAL_SCALE` so that the
        regularisation meant for the features barely shrinks it), its index for the
        trees (one split separates early from late intervals)."""
        k = int(self.arrays["hazard.intervals"][0])
        if self.arch == "tsfel-lr":
            return np.hstack([x, INTERVAL_SCALE * np.eye(k)[intervals]])
        return np.hstack([x, intervals[:, None].astype(np.float64)])

    def _fit_encoding(self, x: np.ndarray) -> np.ndarray:
        """Fit what turns the design matrix into the regression's inputs; return them."""
        if not self.params.get("bins"):
            return self._fit_scaling(x)
        self.arrays["encoding.edges"] = quantile_edges(x, int(self.params["bins"]))
        return self._encode(x)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        if "encoding.edges" in self.arrays:
            return piecewise_linear(x, self.arrays["encoding.edges"])
        return self._scale(x)

    def _fit_scaling(self, x: np.ndarray) -> np.ndarray:
        medians = np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0)
        medians = np.nan_to_num(medians, nan=0.0)
        filled = np.where(np.isfinite(x), x, medians)
        std = filled.std(axis=0)
        self.arrays |= {
            "scale.medians": medians,
            "scale.means": filled.mean(axis=0),
            "scale.stds": np.where(std > 0, std, 1.0),
        }
        return self._scale(x)

    def _scale(self, x: np.ndarray) -> np.ndarray:
        filled = np.where(np.isfinite(x), x, self.arrays["scale.medians"])
        scaled = (filled - self.arrays["scale.means"]) / self.arrays["scale.stds"]
        return np.clip(scaled, -CLIP, CLIP)

    def _fit_target(self, name: str, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        shift = _prior_shift(y, self.params.get("class_weight"))
        if self.arch == "tsfel-lr":
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(
                C=self.params["C"], class_weight=self.params.get("class_weight"), max_iter=2000
            ).fit(x, y)
            self.arrays[f"{name}.coef"] = model.coef_[0].astype(np.float64)
            self.arrays[f"{name}.intercept"] = np.array([model.intercept_[0] - shift])
        else:
            from sklearn.ensemble import HistGradientBoostingClassifier

            # scikit-learn 1.9 cannot bin a feature without any value; such a column
            # (undefined for every stay at risk) is set constant: it is never split on.
            empty = np.isnan(x).all(axis=0)
            if empty.any():
                x = x.copy()
                x[:, empty] = 0.0
            settings = {k: v for k, v in self.params.items() if k not in NOT_ESTIMATOR}
            model = HistGradientBoostingClassifier(
                **settings, early_stopping=False, random_state=seed
            ).fit(x, y)
            self.arrays |= _export_trees(name, model, shift)

    # --- prediction -----------------------------------------------------------------

    def logits(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mortality log-odds (n,) and hazard log-odds (n, K) of a design matrix."""
        if self.arch == "tsfel-lr":
            x = self._encode(x)
        if "hazard" in self.targets:
            k = int(self.arrays["hazard.intervals"][0])
            rows = np.repeat(np.arange(len(x)), k)
            pooled = self._person_period(x[rows], np.tile(np.arange(k), len(x)))
            return self._logit("mortality", x), self._logit("hazard", pooled).reshape(len(x), k)
        columns = [self._logit(name, x) for name in self.targets]
        hazards = np.column_stack(columns[1:]) if len(columns) > 1 else np.zeros((len(x), 0))
        return columns[0], hazards

    def mortality_logit(self, x: np.ndarray) -> np.ndarray:
        """Mortality log-odds only (what permutation importance needs)."""
        return self._logit("mortality", self._encode(x) if self.arch == "tsfel-lr" else x)

    def _logit(self, name: str, x: np.ndarray) -> np.ndarray:
        if f"{name}.constant" in self.arrays:
            return np.full(x.shape[0], self.arrays[f"{name}.constant"][0])
        if self.arch == "tsfel-lr":
            return x @ self.arrays[f"{name}.coef"] + self.arrays[f"{name}.intercept"][0]
        return _trees_logit(self.arrays, name, x)

    # --- saving ---------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {"params": self.params, "targets": self.targets}

    def save(self, directory: Path) -> None:
        with open(directory / TABULAR_FILE, "wb") as handle:
            np.savez(handle, **self.arrays)

    @classmethod
    def load(cls, arch: str, config: Mapping[str, Any], directory: Path) -> TabularPredictor:
        with np.load(directory / TABULAR_FILE, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        return cls(arch, dict(config["params"]), arrays, list(config["targets"]))


def choose_c(
    x: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    params: Mapping[str, Any],
    seed: int,
) -> tuple[float, dict[str, float]]:
    """The ``C`` of :data:`LR_C_GRID` whose logistic regressions of in-hospital death,
    trained on each fold's training rows, have the lowest log loss on its validation
    rows; and every ``C``'s log loss.

    Log loss, not AUROC: it rewards risks of the right spread as well as the right
    order, and the served risks are calibrated from these same out-of-fold predictions.
    """
    no_intervals = np.zeros((y.size, 0), dtype=bool)
    losses: dict[str, float] = {}
    for c in LR_C_GRID:
        total = 0.0
        for train_rows, valid_rows in folds:
            member = TabularPredictor("tsfel-lr", {**params, "C": c})
            member.fit(x[train_rows], y[train_rows], no_intervals[train_rows], no_intervals, seed)
            z = member.mortality_logit(x[valid_rows])
            total += float(np.logaddexp(0.0, np.where(y[valid_rows] == 1, -z, z)).sum())
        losses[f"{c:g}"] = total / y.size
    best = min(losses, key=losses.__getitem__)
    return float(best), losses


def _export_trees(name: str, model: Any, shift: float) -> dict[str, np.ndarray]:
    """Every tree of a fitted binary ``HistGradientBoostingClassifier`` as flat arrays."""
    trees = [predictors[0].nodes for predictors in model._predictors]
    if any(t["is_categorical"].any() for t in trees):
        raise ValueError("categorical splits are not exported")
    offsets = np.cumsum([0] + [t.size for t in trees[:-1]])
    nodes = np.concatenate(trees)
    base = np.repeat(offsets, [t.size for t in trees])
    return {
        f"{name}.feature": nodes["feature_idx"].astype(np.int64),
        f"{name}.threshold": nodes["num_threshold"].astype(np.float64),
        f"{name}.missing_left": nodes["missing_go_to_left"].astype(bool),
        f"{name}.left": nodes["left"].astype(np.int64) + base,
        f"{name}.right": nodes["right"].astype(np.int64) + base,
        f"{name}.leaf": nodes["is_leaf"].astype(bool),
        f"{name}.value": nodes["value"].astype(np.float64),
        f"{name}.roots": offsets.astype(np.int64),
        f"{name}.baseline": np.array([float(np.ravel(model._baseline_prediction)[0]) - shift]),
    }


def _trees_logit(arrays: Mapping[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    """Sum of the leaf values every row reaches, all trees at once, plus the baseline."""
    feature, threshold = arrays[f"{name}.feature"], arrays[f"{name}.threshold"]
    missing_left, leaf = arrays[f"{name}.missing_left"], arrays[f"{name}.leaf"]
    left, right = arrays[f"{name}.left"], arrays[f"{name}.right"]
    node = np.broadcast_to(arrays[f"{name}.roots"], (x.shape[0], arrays[f"{name}.roots"].size))
    node = node.copy()
    rows = np.arange(x.shape[0])[:, None]
    while not leaf[node].all():
        value = x[rows, feature[node]]
        go_left = np.where(np.isnan(value), missing_left[node], value <= threshold[node])
        node = np.where(leaf[node], node, np.where(go_left, left[node], right[node]))
    return arrays[f"{name}.value"][node].sum(axis=1) + arrays[f"{name}.baseline"][0]
