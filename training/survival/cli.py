"""``bedside train survival``, ``bedside evaluate`` and ``bedside predict``.

* ``train survival``: :func:`bedside.training.survival.fit.fit_model` on the folders,
  then the model folder (:mod:`bedside.training.survival.model`) and its validation
  ``metrics.json``.
* ``evaluate --model DIR --data DIR...``: the model on other stays (a held-out set, or
  another source: external validation): ``metrics.json`` (the binary metrics at the
  model's own threshold, the survival metrics under ``"survival"``, the model's
  description, the permutation importance and, for nets, integrated-gradients
  examples) and the clinician ``report.html``.
* ``evaluate --cv K --arch A --data DIR...``: stratified K-fold cross-validation
  (folds seeded by ``--seed``): each fold trains on the rest (with its own validation
  split, calibration and threshold) and scores its stays; the metrics are those of the
  out-of-fold predictions, at the mean of the folds' thresholds.
* ``compare --baseline DIR --candidate DIR --data DIR...``: both models on the same
  stays, and a paired bootstrap of their difference in AUROC, AUPRC, Brier score, ECE,
  event 1 (each at its own threshold), C-index and integrated Brier score
  (:func:`~bedside.training.evaluation.metrics.paired_bootstrap`): what a retraining
  job asks before replacing the model the engine serves.
* ``predict --model DIR --data DIR --out FILE``: every stay's scores through
  :meth:`~bedside.training.survival.model.SurvivalModel.predict_windows`, the engine's
  code path, into a parquet file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import polars as pl

from bedside.errors import BedsideError

#: Cores the torch and scikit-learn models use (the project's machines have two).
THREADS = 2
#: Repeats of each variable's shuffle for permutation importance, and the most stays it
#: is computed on (a seeded random subset beyond that: 41 variables x 3 repeats of a
#: 5-member CNN-LSTM on 1,500 stays took ~7 minutes on two busy cores).
IMPORTANCE_REPEATS = 3
IMPORTANCE_STAYS = 1000


def _set_threads() -> None:
    """Use ``THREADS`` cores, and let waiting OpenMP threads sleep instead of spinning.

    torch and scikit-learn's gradient boosting parallelise with OpenMP, whose idle
    threads spin by default; on a machine shared with other jobs the spinning threads
    steal the cores the working ones need (measured here: an LSTM step 3.4x slower,
    a gradient-boosting fit 4x slower with 2 threads than with 1). Passive waiting
    must be chosen before the OpenMP runtime loads, hence before importing torch.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(min(THREADS, os.cpu_count() or 1))


def train(args: argparse.Namespace) -> int:
    _set_threads()
    from bedside.training.survival.fit import FitOptions, fit_and_save

    options = FitOptions(
        arch=args.arch,
        imputer_dir=args.imputer,
        search_trials=args.search_trials,
        max_minutes=args.max_minutes,
        seed=args.seed,
    )
    model, metrics = fit_and_save(args.data, options, args.out)
    training = model.info["training"]
    print(
        f"{args.arch}: trained on {training['n_train']} stays "
        f"in {training['total_seconds']:.0f} s; "
        f"out-of-fold AUROC {metrics['auroc']:.3f}, event 1 {metrics['event1']:.3f}, "
        f"threshold {model.threshold:.3f}; model in {args.out}"
    )
    return 0


def _scored_frame(model: Any, cohort: Any, scored: Any) -> pl.DataFrame:
    frame = scored.frame(cohort.stay_ids)
    return frame.with_columns(
        risk=pl.col("mortality"), label=pl.Series(cohort.mortality, dtype=pl.Int64)
    )


def _evaluation_metrics(
    model: Any, cohort: Any, scored: Any, bootstrap: int, seed: int
) -> dict[str, Any]:
    from bedside.training.evaluation.metrics import binary_metrics
    from bedside.training.survival.fit import survival_block

    metrics = binary_metrics(
        cohort.mortality,
        scored.mortality,
        model.threshold,
        model.threshold_rule,
        n_bootstrap=bootstrap,
        seed=seed,
    )
    metrics["survival"] = survival_block(model, scored.survival, cohort)
    metrics["c_index"] = metrics["survival"].get("c_index")
    return metrics


def _model_info(model: Any) -> dict[str, Any]:
    info = model.info
    return {
        "arch": model.arch,
        "threshold": {
            "value": model.threshold,
            "rule": model.threshold_rule,
            "chosen_on": info.get("threshold_chosen_on"),
        },
        "calibration": model.calibration.to_dict()
        | {"fitted_on": info.get("calibration_fitted_on")},
        "imputer": info.get("imputer"),
        "concepts": list(model.encoder.grid.concepts),
        "training_data": info.get("training_data"),
        "created": info.get("created"),
        "bedside_version": info.get("bedside_version"),
        "training_seconds": (info.get("training") or {}).get("total_seconds"),
    }


def _coverage(model: Any, cohort: Any) -> dict[str, Any]:
    """Which of the model's variables the evaluation data has at all (external sources)."""
    seen = ~np.isnan(cohort.windows).all(axis=(0, 1))
    concepts = model.encoder.grid.concepts
    return {
        "variables_present": [c for c, s in zip(concepts, seen, strict=True) if s],
        "variables_absent": [c for c, s in zip(concepts, seen, strict=True) if not s],
        "observed_share": float(np.mean(~np.isnan(cohort.windows))),
    }


def evaluate(args: argparse.Namespace) -> int:
    _set_threads()
    from bedside.training.evaluation.report import write_report
    from bedside.training.survival.data import build_cohort, read_folders
    from bedside.training.survival.importance import attribution_examples, permutation_importance
    from bedside.training.survival.model import SurvivalModel

    if args.cv:
        return cross_validate(args)
    if args.model is None:
        raise SystemExit("bedside evaluate: give --model DIR, or --cv K --arch A")
    started = time.monotonic()
    model = SurvivalModel.load(args.model)
    events, stays = read_folders(args.data)
    task = model.info.get("task", {})
    cohort = build_cohort(events, stays, model.grid, task.get("follow_up_days_after_discharge"))
    inputs = model.encoder.encode(cohort.windows, cohort.stays)
    scored = model.scores(*model.raw_logits(inputs))
    metrics = _evaluation_metrics(model, cohort, scored, args.bootstrap, args.seed)
    rows = np.arange(len(cohort))
    if rows.size > IMPORTANCE_STAYS:
        rng = np.random.default_rng(args.seed)
        rows = np.sort(rng.choice(rows, size=IMPORTANCE_STAYS, replace=False))
    importance = permutation_importance(
        model, inputs.take(rows), cohort.mortality[rows], IMPORTANCE_REPEATS, args.seed
    )
    examples = attribution_examples(
        model, inputs, cohort.stay_ids, cohort.mortality, scored.mortality
    )
    info = _model_info(model)
    metrics["model"] = info
    metrics["data"] = {"folders": [str(f) for f in args.data], **_coverage(model, cohort)}
    metrics["permutation_importance"] = {
        "metric": "drop in mortality AUROC when the variable is shuffled between stays",
        "repeats": IMPORTANCE_REPEATS,
        "stays": int(rows.size),
        "variables": importance.to_dicts(),
    }
    if examples:
        metrics["integrated_gradients"] = examples
    metrics["seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    report_info = info | ({"integrated_gradients (log-odds)": examples} if examples else {})
    write_report(
        args.out,
        metrics=metrics,
        predictions=_scored_frame(model, cohort, scored),
        stays=cohort.stays,
        importance=importance,
        model_info=report_info,
    )
    print(
        f"{model.arch} on {len(cohort)} stays ({int(cohort.mortality.sum())} deaths): "
        f"AUROC {_fmt(metrics['auroc'])}, event 1 {_fmt(metrics['event1'])}, "
        f"ECE {_fmt(metrics['ece'])}, C-index {_fmt(metrics['c_index'])}; report in {args.out}"
    )
    return 0


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def cross_validate(args: argparse.Namespace) -> int:
    """Stratified k-fold cross-validation of ``--arch`` on ``--data``; out-of-fold metrics."""
    from sklearn.model_selection import StratifiedKFold

    from bedside.training.evaluation.metrics import binary_metrics, choose_threshold
    from bedside.training.evaluation.report import write_report
    from bedside.training.survival.data import build_cohort, fingerprint, read_folders
    from bedside.training.survival.fit import FitOptions, fit_model, survival_block
    from bedside.training.windows import PHYSIONET_2012

    started = time.monotonic()
    events, stays = read_folders(args.data)
    everyone = build_cohort(events, stays, PHYSIONET_2012)
    folds = StratifiedKFold(n_splits=args.cv, shuffle=True, random_state=args.seed)
    options = FitOptions(arch=args.arch, seed=args.seed)
    n = len(everyone)
    mortality, survival = np.zeros(n), np.zeros((n, len(options.intervals_h)))
    thresholds, per_fold = [], []
    for fold, (train_rows, test_rows) in enumerate(folds.split(np.zeros(n), everyone.mortality)):
        train_stays = everyone.stays[train_rows]
        model, _ = fit_model(events, train_stays, options, fingerprint(args.data, train_stays))
        test = build_cohort(events, everyone.stays[test_rows], model.grid)
        scored = model.predict_windows(test.windows, test.stays)
        mortality[test_rows], survival[test_rows] = scored.mortality, scored.survival
        thresholds.append(model.threshold)
        per_fold.append(
            {
                "fold": fold,
                "n": int(test_rows.size),
                "threshold": model.threshold,
                "seconds": model.info["training"]["total_seconds"],
            }
        )
        print(f"fold {fold + 1}/{args.cv} done ({model.info['training']['total_seconds']:.0f} s)")
    threshold = float(np.mean(thresholds))
    rule = f"mean of the {args.cv} folds' validation thresholds (event1)"
    metrics = binary_metrics(
        everyone.mortality, mortality, threshold, rule, n_bootstrap=args.bootstrap, seed=args.seed
    )
    metrics["event1_best_threshold_out_of_fold"] = binary_metrics(
        everyone.mortality,
        mortality,
        choose_threshold(everyone.mortality, mortality, "event1"),
        "event1 chosen on the out-of-fold predictions themselves (optimistic, as BASELINES.md)",
        n_bootstrap=0,
    )["event1"]
    metrics["survival"] = survival_block(model, survival, everyone, with_training=False)
    metrics["c_index"] = metrics["survival"].get("c_index")
    metrics["cross_validation"] = {
        "folds": args.cv,
        "seed": args.seed,
        "stratified_by": "in-hospital death",
        "arch": args.arch,
        "per_fold": per_fold,
    }
    metrics["seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    frame = pl.DataFrame(
        {"stay_id": everyone.stay_ids, "risk": mortality, "label": everyone.mortality}
    )
    frame = frame.with_columns(
        pl.Series(f"surv_{t:g}h", survival[:, j]) for j, t in enumerate(model.intervals_h)
    )
    write_report(
        args.out,
        metrics=metrics,
        predictions=frame,
        stays=everyone.stays,
        model_info={
            "arch": f"{args.arch} ({args.cv}-fold cross-validation)",
            "cross_validation": metrics["cross_validation"],
        },
    )
    print(
        f"{args.arch}, {args.cv}-fold out-of-fold on {n} stays: AUROC {_fmt(metrics['auroc'])}, "
        f"event 1 {_fmt(metrics['event1'])}, ECE {_fmt(metrics['ece'])}; report in {args.out}"
    )
    return 0


class CompareError(BedsideError, ValueError):
    """Two models that cannot be compared on the given stays."""


def compare(args: argparse.Namespace) -> int:
    """Paired bootstrap of a candidate model against a baseline on the same stays."""
    _set_threads()
    from bedside.training.evaluation.metrics import paired_bootstrap, survival_at
    from bedside.training.survival.data import build_cohort, read_folders
    from bedside.training.survival.model import SurvivalModel

    if args.bootstrap < 1:
        raise CompareError("--bootstrap: at least 1 resample")
    started = time.monotonic()
    models = {"baseline": SurvivalModel.load(args.baseline)}
    models["candidate"] = SurvivalModel.load(args.candidate)
    events, stays = read_folders(args.data)
    cohorts, scored = {}, {}
    for role, model in models.items():
        task = model.info.get("task", {})
        follow_up = task.get("follow_up_days_after_discharge")
        cohorts[role] = build_cohort(events, stays, model.grid, follow_up)
        scored[role] = model.predict_windows(cohorts[role].windows, cohorts[role].stays)
    base, cand = cohorts["baseline"], cohorts["candidate"]
    if not np.array_equal(base.stay_ids, cand.stay_ids) or not np.array_equal(
        base.mortality, cand.mortality
    ):
        raise CompareError("the two models do not see the same stays and outcomes in --data")
    # The hours compared: the baseline's horizons inside follow-up and its grid points
    # between them (as ``evaluate``'s integrated Brier score).
    known = base.time_h[np.isfinite(base.time_h)]
    baseline = models["baseline"]
    horizons = np.array([h for h in baseline.horizons_h if known.size and h < known.max()])
    survival, hours = None, None
    if horizons.size:
        grid = np.asarray(baseline.intervals_h)
        hours = np.union1d(horizons, grid[(grid >= horizons[0]) & (grid <= horizons[-1])])
        survival = tuple(
            survival_at(scored[r].survival, np.asarray(models[r].intervals_h), hours)
            for r in models
        )
    result = paired_bootstrap(
        base.mortality,
        scored["baseline"].mortality,
        scored["candidate"].mortality,
        (models["baseline"].threshold, models["candidate"].threshold),
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        time_h=base.time_h,
        event=base.event,
        survival=survival,
        hours=hours,
    )
    result["models"] = {
        role: {"folder": str(getattr(args, role)), "arch": m.arch, "threshold": m.threshold}
        for role, m in models.items()
    }
    result["data"] = [str(f) for f in args.data]
    result["seconds"] = round(time.monotonic() - started, 1)
    print(
        f"candidate {models['candidate'].arch} against baseline {models['baseline'].arch} "
        f"on {result['n']} stays ({result['n_events']} deaths), "
        f"{args.bootstrap} paired resamples:"
    )
    print(f"  {'metric':<16} {'baseline':>9} {'candidate':>9} {'difference (95 % CI)':>30}  better")
    for name, m in result["metrics"].items():
        ci = "n/a" if m["ci"] is None else f"{m['ci'][0]:+.4f} to {m['ci'][1]:+.4f}"
        better = "n/a" if m["candidate_better"] is None else f"{m['candidate_better']:.0%}"
        print(
            f"  {name:<16} {_fmt4(m['baseline']):>9} {_fmt4(m['candidate']):>9} "
            f"{_fmt4(m['difference'], signed=True):>9} ({ci:>19})  {better:>6}"
        )
    print("  better: share of resamples where the candidate is better")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _fmt4(value: Any, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def predict(args: argparse.Namespace) -> int:
    _set_threads()
    from bedside.training.survival.data import read_folders
    from bedside.training.survival.model import SurvivalModel
    from bedside.training.windows import stay_windows

    model = SurvivalModel.load(args.model)
    events, stays = read_folders([args.data])
    stays = stays.sort("stay_id")
    windows = stay_windows(events, stays, model.grid)
    scored = model.predict_windows(windows.values, stays)
    frame = scored.frame(windows.stay_ids).with_columns(
        alert=pl.col("mortality") >= model.threshold
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(args.out)
    print(f"scored {frame.height} stays ({int(frame['alert'].sum())} alerts) into {args.out}")
    return 0
