"""A budgeted, seeded hyper-parameter search (optuna TPE) on the validation split.

``bedside train survival --search-trials N --max-minutes M`` runs at most ``N``
trials in at most half of ``M`` minutes. Each trial trains the architecture with the
sampled parameters on fold 0's training rows and scores the mortality AUROC on its
validation rows (tabular models fit only their mortality classifier during the
search). The model's members are then trained with the best parameters; a net keeps
its best trial as member 0 (same split, same seed). The sampler is seeded, so the
same data, seed and number of *completed* trials give the same parameters; when the
time budget (not ``N``) ends the search, a faster or slower machine completes a
different number of trials, so give a budget that ``N`` trials fit in when reproducing
a search. The best parameters and every trial's score go to ``model.json``
(``search``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import optuna

    from bedside.training.survival.fit import FitOptions, Fitted, Workspace


def suggest(arch: str, trial: optuna.Trial, deaths_share: float) -> dict[str, Any]:
    """The search space of each architecture (small on purpose: a few dozen trials)."""
    if arch == "tsfel-lr":
        return {
            "features": trial.suggest_categorical("features", ["compact", "all"]),
            "C": trial.suggest_float("C", 1e-3, 1.0, log=True),
            "class_weight": trial.suggest_categorical("class_weight", ["balanced", None]),
        }
    if arch == "tsfel-gbm":
        return {
            "features": trial.suggest_categorical("features", ["compact", "all"]),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "max_iter": trial.suggest_int("max_iter", 100, 500, step=50),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 7, 63),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 10, 100),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-3, 10.0, log=True),
            "max_features": trial.suggest_float("max_features", 0.2, 1.0),
            "class_weight": trial.suggest_categorical("class_weight", ["balanced", None]),
        }
    imbalance = (1 - deaths_share) / max(deaths_share, 1e-6)
    common = {
        "dropout": trial.suggest_float("dropout", 0.1, 0.5),
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
        "pos_weight": trial.suggest_float("pos_weight", 1.0, max(imbalance, 1.0)),
        "head": trial.suggest_categorical("head", [32, 64, 128]),
    }
    if arch == "lstm":
        return common | {"hidden": trial.suggest_categorical("hidden", [32, 64, 128])}
    if arch == "lstm-tsfel":
        return common | {
            "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
            "bins": trial.suggest_categorical("bins", [4, 8, 16]),
        }
    if arch == "cnn":
        return common | {
            "channels": trial.suggest_categorical("channels", [32, 64, 128]),
            "kernel": trial.suggest_categorical("kernel", [3, 5]),
            "blocks": trial.suggest_int("blocks", 2, 5),
        }
    return common | {
        "channels": trial.suggest_categorical("channels", [32, 64]),
        "kernel": trial.suggest_categorical("kernel", [3, 5]),
        "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
    }


@dataclass
class SearchResult:
    best_params: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]]
    seconds: float
    sampler: str
    best_fitted: Fitted | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "objective": "validation AUROC of in-hospital mortality",
            "best_params": self.best_params,
            "best_value": round(self.best_value, 5),
            "completed_trials": len(self.trials),
            "seconds": round(self.seconds, 1),
            "trials": self.trials,
        }


def search(
    arch: str,
    work: Workspace,
    split: tuple[np.ndarray, np.ndarray],
    options: FitOptions,
    seconds: float,
) -> SearchResult:
    """Search ``arch``'s parameters on one (train rows, validation rows) split."""
    import optuna

    from bedside.training.survival.fit import fit_member

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.monotonic()
    train_rows, valid_rows = split
    deaths_share = float(work.cohort.mortality[train_rows].mean())
    tabular = arch.startswith("tsfel")
    best: dict[str, Any] = {"value": -np.inf, "fitted": None}

    def objective(trial: optuna.Trial) -> float:
        params = {**options.params, **suggest(arch, trial, deaths_share)}
        left = max(seconds - (time.monotonic() - started), 30.0)
        fitted = fit_member(
            arch, params, work, train_rows, valid_rows, options.seed, left, mortality_only=tabular
        )
        if not tabular and fitted.valid_auroc > best["value"]:
            best["value"], best["fitted"] = fitted.valid_auroc, fitted
        return fitted.valid_auroc

    sampler = optuna.samplers.TPESampler(seed=options.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=options.search_trials, timeout=seconds)
    trials = [
        {"number": t.number, "value": round(float(t.value), 5), "params": t.params}
        for t in study.trials
        if t.value is not None
    ]
    return SearchResult(
        best_params=dict(study.best_params),
        best_value=float(study.best_value),
        trials=trials,
        seconds=time.monotonic() - started,
        sampler=f"optuna TPESampler(seed={options.seed})",
        best_fitted=best["fitted"],
    )
