"""``bedside retrain``: train on new data, challenge the current model, promote if not worse.

1. **Extract**: canonical folders (``--data``) or an OMOP CDM database over SQL
   (``--omop URL``, converted as ``bedside data convert omop`` does).
2. **Hold out** a stratified share of the stays (``--holdout``, 20 %, seeded); the
   candidate never sees them.
3. **Train** the candidate (``bedside train survival``'s code) on the rest; it is saved
   as a new version of the registry whatever happens next.
4. **Challenge**: the candidate and the current model score the same held-out stays
   through the engine's code path (``predict_windows``); the comparison is saved in
   the version's ``evaluation.json``.
5. **Promote** only if the candidate is not worse: AUROC at least the current one's
   minus ``--auroc-tolerance`` and ECE at most the current one's plus
   ``--ece-tolerance`` (both 0.005: held-out sets are finite, and a tolerance of zero
   would let noise decide). The first model of an empty registry is promoted when its
   held-out AUROC is at least ``--min-auroc`` (0.6). An engine serving the registry
   switches to the promoted model without a restart.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bedside.errors import BedsideError
from bedside.training.registry import ModelRegistry


class RetrainError(BedsideError, RuntimeError):
    """Retraining cannot go on (no data, no outcomes, nothing to compare)."""


def holdout_split(
    stays: pl.DataFrame, share: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training stays, held-out stays), stratified by in-hospital death."""
    from sklearn.model_selection import train_test_split

    known = stays.filter(pl.col("in_hospital_death").is_not_null()).sort("stay_id")
    labels = known["in_hospital_death"].cast(pl.Int8).to_numpy()
    if known.height < 20 or labels.sum() < 2 or (labels == 0).sum() < 2:
        raise RetrainError(
            f"{known.height} stays with a known outcome ({int(labels.sum())} deaths): "
            "too few to train and hold out"
        )
    rows = np.arange(known.height)
    train_rows, test_rows = train_test_split(
        rows, test_size=share, stratify=labels, random_state=seed
    )
    return known[np.sort(train_rows)], known[np.sort(test_rows)]


def held_out_metrics(model: Any, events: pl.DataFrame, stays: pl.DataFrame) -> dict[str, Any]:
    """A model's discrimination and calibration on held-out stays (engine code path)."""
    from bedside.training.evaluation.metrics import binary_metrics
    from bedside.training.survival.data import build_cohort

    cohort = build_cohort(events, stays, model.grid)
    scored = model.predict_windows(cohort.windows, cohort.stays)
    metrics = binary_metrics(
        cohort.mortality, scored.mortality, model.threshold, model.threshold_rule, n_bootstrap=0
    )
    keys = ("n", "n_events", "auroc", "auprc", "brier", "ece", "calibration_slope", "event1")
    return {key: metrics.get(key) for key in keys}


def decide(
    candidate: dict[str, Any],
    current: dict[str, Any] | None,
    *,
    auroc_tolerance: float,
    ece_tolerance: float,
    min_auroc: float,
) -> tuple[bool, str]:
    """Promote or not, and why (see the module docstring)."""
    if current is None:
        ok = candidate["auroc"] is not None and candidate["auroc"] >= min_auroc
        return ok, (
            f"first model: held-out AUROC {candidate['auroc']:.3f} "
            f"{'>=' if ok else '<'} {min_auroc:.3f}"
        )
    reasons = []
    auroc_ok = candidate["auroc"] >= current["auroc"] - auroc_tolerance
    ece_ok = candidate["ece"] <= current["ece"] + ece_tolerance
    reasons.append(
        f"AUROC {candidate['auroc']:.3f} vs {current['auroc']:.3f} "
        f"({'ok' if auroc_ok else 'worse'}, tolerance {auroc_tolerance:g})"
    )
    reasons.append(
        f"ECE {candidate['ece']:.3f} vs {current['ece']:.3f} "
        f"({'ok' if ece_ok else 'worse'}, tolerance {ece_tolerance:g})"
    )
    return auroc_ok and ece_ok, "; ".join(reasons)


def run(args: argparse.Namespace) -> int:
    from bedside.training.survival.cli import _set_threads

    _set_threads()
    from bedside.training.survival.data import fingerprint, read_folders
    from bedside.training.survival.fit import FitOptions, fit_model
    from bedside.training.survival.model import SurvivalModel

    registry = ModelRegistry(args.registry)
    with tempfile.TemporaryDirectory(prefix="bedside-retrain-") as scratch:
        folders = list(args.data or [])
        if args.omop:
            from bedside.training.data.omop import convert

            extracted = Path(scratch) / "omop"
            report = convert(args.omop, extracted, schema=args.schema)
            print(f"retrain: extracted {report.summary()}")
            folders.append(extracted)
        if not folders:
            raise RetrainError("bedside retrain needs --data DIR or --omop URL")
        events, stays = read_folders(folders)
        train_stays, held_out = holdout_split(stays, args.holdout, args.seed)
        print(
            f"retrain: {train_stays.height} stays to train on, {held_out.height} held out "
            f"({int(held_out['in_hospital_death'].sum())} deaths)"
        )
        options = FitOptions(arch=args.arch, max_minutes=args.max_minutes, seed=args.seed)
        candidate, _ = fit_model(events, train_stays, options, fingerprint(folders, train_stays))
        version = registry.new_version(args.arch)
        candidate.save(version)
        candidate_metrics = held_out_metrics(candidate, events, held_out)
        current_dir = registry.current()
        current_metrics = None
        if current_dir is not None:
            current_metrics = held_out_metrics(SurvivalModel.load(current_dir), events, held_out)
    promote, reason = decide(
        candidate_metrics,
        current_metrics,
        auroc_tolerance=args.auroc_tolerance,
        ece_tolerance=args.ece_tolerance,
        min_auroc=args.min_auroc,
    )
    evaluation = {
        "held_out_stays": held_out.height,
        "candidate": candidate_metrics,
        "current": current_metrics,
        "current_version": current_dir.name if current_dir is not None else None,
        "promoted": promote,
        "reason": reason,
    }
    (version / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    if promote:
        registry.promote(version, reason, evaluation)
        print(f"retrain: promoted {version.name}: {reason}")
    else:
        print(
            f"retrain: kept {current_dir.name if current_dir else 'nothing'}; "
            f"{version.name} not promoted: {reason}"
        )
    if args.json:
        args.json.write_text(json.dumps(evaluation | {"version": version.name}, indent=2) + "\n")
    return 0
