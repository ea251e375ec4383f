"""``bedside bench members``: one member per fold, each net's and each blend's AUROC.

How the nets of :data:`~bedside.training.survival.fit.BLENDS` were chosen, as a command:

1. The stays of ``--data`` are prepared as ``bedside train survival`` prepares them
   (:func:`~bedside.training.survival.fit.prepare`) and cut into ``--folds`` stratified
   folds (``--seed``).
2. Each ``--part NAME=ARCH[,KEY=VALUE...]`` trains one member per fold
   (:func:`~bedside.training.survival.fit.fit_member`, member ``k`` with seed
   ``--seed + k``, as in a model), on the other folds, and gives its log-odds on fold
   ``k``. Parts of one fold share its distillation teacher.
3. Every part, and the mean log-odds of every combination of parts (a blend), is scored
   by the AUROC of those out-of-fold log-odds over all the stays.

Compare nets with nets only: a net stops at the epoch whose AUROC on its validation
fold is best, and is scored on that fold, which a tabular model never sees. Nested
cross-validation (``bedside evaluate --cv``) compares a net with a tabular model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import fields
from typing import Any

import numpy as np

from bedside.errors import BedsideError
from bedside.training.survival import ARCHS

#: The settings a blend (``deep-ensemble``) part may give.
BLEND_KEYS = frozenset({"seeds"})
#: Parts whose combinations are all scored (2 ** parts - 1 of them).
MAX_PARTS = 8


class BenchError(BedsideError, ValueError):
    """A ``--part`` that does not name an architecture and its known settings."""


def parse_part(text: str) -> tuple[str, str, dict[str, Any]]:
    """``NAME=ARCH[,KEY=VALUE...]`` -> (name, architecture, settings); values are JSON
    where they parse as JSON, else text.

    >>> parse_part("cl=cnn-lstm,distil=1,head=128")
    ('cl', 'cnn-lstm', {'distil': 1, 'head': 128})
    """
    from bedside.training.survival.fit import BLENDS
    from bedside.training.survival.nets import NET_KEYS
    from bedside.training.survival.tabular import GBM_DEFAULTS, LR_DEFAULTS
    from bedside.training.survival.train import TrainConfig

    name, equals, rest = text.partition("=")
    arch, *pairs = rest.split(",")
    if not equals or not name.strip() or arch not in ARCHS:
        raise BenchError(
            f"--part {text!r}: expected NAME=ARCH[,KEY=VALUE...], ARCH one of {', '.join(ARCHS)}"
        )
    if arch.startswith("tsfel"):
        known = set(GBM_DEFAULTS if arch == "tsfel-gbm" else LR_DEFAULTS)
    elif arch in BLENDS:
        known = set(BLEND_KEYS)
    else:
        trained = {f.name for f in fields(TrainConfig)} - {"seed", "max_seconds"}
        known = set(NET_KEYS) | trained
    params: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or key not in known:
            raise BenchError(
                f"--part {text!r}: {pair!r} is not KEY=VALUE, KEY one of "
                + ", ".join(sorted(known))
            )
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return name.strip(), arch, params


def blends(oof: dict[str, np.ndarray], y: np.ndarray) -> list[dict[str, Any]]:
    """AUROC of every part and of the mean log-odds of every combination of parts."""
    from sklearn.metrics import roc_auc_score

    out = []
    for size in range(1, len(oof) + 1):
        for combo in itertools.combinations(oof, size):
            mean = np.mean([oof[name] for name in combo], axis=0)
            out.append({"parts": list(combo), "auroc": round(float(roc_auc_score(y, mean)), 4)})
    return out


def run(args: argparse.Namespace) -> int:
    from bedside.training.survival.data import read_folders
    from bedside.training.survival.fit import FitOptions, fit_member, prepare, stratified_folds

    parts = {name: (arch, params) for name, arch, params in map(parse_part, args.part)}
    if len(parts) != len(args.part):
        raise BenchError("two --part share a name")
    if len(parts) > MAX_PARTS:
        raise BenchError(f"at most {MAX_PARTS} parts ({2**MAX_PARTS - 1} blends)")
    if args.folds < 2:
        raise BenchError("--folds: at least 2")
    started = time.monotonic()
    events, stays = read_folders(args.data)
    work, _, _ = prepare(events, stays, FitOptions(seed=args.seed))
    y = work.cohort.mortality
    folds = stratified_folds(y, args.folds, args.seed)
    oof = {name: np.zeros(y.size) for name in parts}
    per_fold: dict[str, list[dict[str, Any]]] = {name: [] for name in parts}
    for k, (train_rows, valid_rows) in enumerate(folds):
        for name, (arch, params) in parts.items():
            fitted = fit_member(
                arch, params, work, train_rows, valid_rows, args.seed + k, 60.0 * args.max_minutes
            )
            oof[name][valid_rows] = fitted.valid_mortality
            seconds = fitted.training["seconds"]
            per_fold[name].append({"auroc": round(fitted.valid_auroc, 4), "seconds": seconds})
            print(
                f"fold {k + 1}/{args.folds} {name} ({arch}): AUROC {fitted.valid_auroc:.4f}, "
                f"{seconds:.0f} s",
                flush=True,
            )
    scored = blends(oof, y)
    width = max(len(" + ".join(row["parts"])) for row in scored)
    print(f"\nout-of-fold AUROC over {y.size} stays, one member per fold ({args.folds} folds):")
    for row in scored:
        print(f"  {' + '.join(row['parts']):<{width}}  {row['auroc']:.4f}")
    if args.json:
        document = {
            "data": [str(d) for d in args.data],
            "folds": args.folds,
            "seed": args.seed,
            "n": int(y.size),
            "n_events": int(y.sum()),
            "parts": {name: {"arch": a, "params": p} for name, (a, p) in parts.items()},
            "per_fold": per_fold,
            "blends": scored,
            "seconds": round(time.monotonic() - started, 1),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0
