"""``bedside bench imputation``: imputation error on hidden test values, per imputer.

The protocol of ``../shared/BASELINES.md`` (see :mod:`bedside.training.imputation.protocol`):

1. Windows of every stay of ``--train`` and ``--test`` on the
   :data:`~bedside.training.windows.PHYSIONET_2012` grid (48 hourly steps from ICU
   admission x the 35 time-varying PhysioNet 2012 variables), raw values as recorded.
   Known raw-data errors (pH 735, temperatures below 0, WBC 12,500) are **kept**, as in
   the baseline; how many hidden test values fall outside the concept dictionary's
   plausible range is reported, with the errors on the plausible ones only beside them.
   (``bedside train imputer`` drops flagged values by default; the benchmark does not,
   so that its figures sit next to the peers'.)
2. Standardised with the training windows' per-variable mean and std (ddof 0).
3. Two test masks, each scored on its own: MCAR (``--mask-rate`` of the observed test
   values, ``numpy.random.default_rng(--seed)``, exactly the baseline's draw) and blocks
   (``--block-rate`` of the stay-variables lose every value of a 1-6 h run).
4. Each imputer of ``--imputers`` is fitted on the training windows and fills the test
   windows with the hidden values removed. Errors on the hidden values: MAE, RMSE and
   MRE standardised, MAE and RMSE in original units pooled and the mean of the
   per-variable MAEs (BASELINES' "original units" column), per variable too; fit
   seconds; inference seconds for all test stays; the latency of one window (what the
   engine asks for each bed), median and 99th percentile of 200 single-window calls.
5. ``--peer pypots``: PyPOTS SAITS with the BASELINES hyper-parameters on the same
   tensors and masks (fitted on the first 80 % of the training stays in stay-id order,
   3,200 of set-a, early stopping on the other 800 with an MCAR mask of the same rate
   and seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bedside.schemas.concepts import load_concepts
from bedside.training.imputation.base import IMPUTERS
from bedside.training.imputation.pipeline import (
    ImputationError,
    build_imputer,
    fit_standardiser,
    read_canonical,
)
from bedside.training.imputation.protocol import block_mask, errors, mcar_mask
from bedside.training.windows import PHYSIONET_2012, Grid, Standardiser, Windows, stay_windows

#: Single-window calls timed per imputer (the median and 99th percentile are reported).
SINGLE_WINDOW_CALLS = 200

#: The BASELINES.md configuration of the peer.
SAITS_SETTINGS: dict[str, Any] = {
    "n_layers": 2,
    "d_model": 256,
    "n_heads": 4,
    "d_k": 64,
    "d_v": 64,
    "d_ffn": 128,
    "dropout": 0.1,
    "batch_size": 32,
    "epochs": 100,
    "patience": 10,
}
#: Share of the training stays SAITS fits on; the rest early-stop it (3,200 / 800 of set-a).
SAITS_FIT_SHARE = 0.8


def _say(message: str) -> None:
    print(message, flush=True)


@dataclass
class Protocol:
    """The tensors and masks every imputer is scored on."""

    grid: Grid
    standardiser: Standardiser
    train: np.ndarray  # standardised training windows
    test_raw: np.ndarray  # raw test windows (the truth, original units)
    test: np.ndarray  # standardised test windows
    masks: dict[str, np.ndarray]  # name -> hidden entries
    plausible: np.ndarray  # test entries inside the concept's plausible range
    untrained: tuple[str, ...] = ()

    def inputs(self, mask: str) -> np.ndarray:
        return np.where(self.masks[mask], np.nan, self.test).astype(np.float32)


def _windows(folder: Path, grid: Grid) -> Windows:
    events, stays = read_canonical(folder)
    return stay_windows(events, stays, grid)


def plausible_entries(values: np.ndarray, grid: Grid) -> np.ndarray:
    """True where a value is observed and inside its concept's plausible range."""
    concepts = load_concepts()
    plausible = np.zeros(values.shape, dtype=bool)
    for v, name in enumerate(grid.concepts):
        column = values[..., v]
        seen = ~np.isnan(column)
        check = np.frompyfunc(concepts[name].is_plausible, 1, 1)
        plausible[..., v][seen] = check(column[seen].astype(np.float64)).astype(bool)
    return plausible


def build_protocol(args: argparse.Namespace) -> Protocol:
    grid = PHYSIONET_2012
    train, test = _windows(args.train, grid), _windows(args.test, grid)
    for name, w in (("train", train), ("test", test)):
        observed = int(w.mask.sum())
        _say(
            f"{name}: {w.stay_ids.size:,} stays from {getattr(args, name)}, {observed:,} "
            f"observed values ({1 - observed / w.values.size:.1%} of the tensor missing)"
        )
    standardiser, untrained = fit_standardiser(train)
    if untrained:
        _say(f"warning: no training values for {', '.join(untrained)}")
    masks = {
        "mcar": mcar_mask(test.values, rate=args.mask_rate, seed=args.seed),
        "block": block_mask(test.values, rate=args.block_rate, seed=args.seed),
    }
    return Protocol(
        grid=grid,
        standardiser=standardiser,
        train=standardiser.transform(train.values),
        test_raw=test.values,
        test=standardiser.transform(test.values),
        masks=masks,
        plausible=plausible_entries(test.values, grid),
        untrained=untrained,
    )


@dataclass
class Result:
    """One imputer's (or peer's) figures."""

    name: str
    train_s: float
    single_window_ms: float | None  # median latency of one window
    single_window_p99_ms: float | None = None
    masks: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def score(protocol: Protocol, mask: str, estimate: np.ndarray, seconds: float) -> dict[str, Any]:
    """All figures of one imputer on one mask; ``estimate`` is standardised."""
    hidden = protocol.masks[mask]
    original = protocol.standardiser.inverse(estimate)
    variables = []
    for v, name in enumerate(protocol.grid.concepts):
        std = errors(protocol.test[..., v], estimate[..., v], hidden[..., v])
        raw = errors(protocol.test_raw[..., v], original[..., v], hidden[..., v])
        variables.append(
            {
                "concept": name,
                "n": std.n,
                "std_mae": std.mae,
                "std_rmse": std.rmse,
                "mae": raw.mae,
                "rmse": raw.rmse,
            }
        )
    per_variable_mae = [row["mae"] for row in variables if row["n"]]
    return {
        "infer_s": seconds,
        "std": errors(protocol.test, estimate, hidden).to_dict(),
        "std_plausible": errors(protocol.test, estimate, hidden & protocol.plausible).to_dict(),
        "original": {
            **errors(protocol.test_raw, original, hidden).to_dict(),
            "mean_variable_mae": float(np.mean(per_variable_mae)),
        },
        "variables": variables,
    }


def single_window_latency(
    impute_one: Callable[[np.ndarray], Any], windows: np.ndarray
) -> tuple[float, float]:
    """Median and 99th percentile, in ms, of imputing the first 200 windows one at a time."""
    chosen = windows[: min(SINGLE_WINDOW_CALLS, len(windows))]
    impute_one(chosen[0])  # warm-up: lazy imports, caches
    times = []
    for window in chosen:
        started = time.perf_counter()
        impute_one(window)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times), float(np.percentile(times, 99))


def bench_imputer(kind: str, protocol: Protocol, args: argparse.Namespace) -> Result:
    imputer = build_imputer(kind, seed=args.seed, max_minutes=args.max_minutes)
    _say(f"[{kind}] fitting on {len(protocol.train):,} training windows ...")
    started = time.perf_counter()
    imputer.fit(protocol.train)
    result = Result(kind, train_s=time.perf_counter() - started, single_window_ms=None)
    _say(f"[{kind}] fitted in {result.train_s:.1f} s")
    for mask in protocol.masks:
        inputs = protocol.inputs(mask)
        started = time.perf_counter()
        estimate = imputer.impute(inputs)
        seconds = time.perf_counter() - started
        result.masks[mask] = score(protocol, mask, estimate, seconds)
        _say(
            f"[{kind}] {mask}: std MAE {result.masks[mask]['std']['mae']:.4f} "
            f"({seconds:.2f} s for {len(inputs):,} stays)"
        )
    result.single_window_ms, result.single_window_p99_ms = single_window_latency(
        imputer.impute, protocol.inputs("mcar")
    )
    _say(
        f"[{kind}] one window: {result.single_window_ms:.2f} ms median, "
        f"{result.single_window_p99_ms:.2f} ms 99th percentile"
    )
    return result


def require_pypots() -> None:
    """Fail early, naming the extra to install, when PyPOTS is missing."""
    try:
        import pypots.imputation  # noqa: F401
    except ImportError as error:
        raise ImputationError(
            f"--peer pypots needs PyPOTS ({error}); it is an optional benchmark "
            "dependency: pip install 'bedside[bench]'"
        ) from error


def bench_saits(protocol: Protocol, args: argparse.Namespace) -> Result:
    """PyPOTS SAITS (BASELINES.md settings) on the same tensors and masks."""
    require_pypots()
    import torch
    from pypots.imputation import SAITS
    from pypots.utils.random import set_random_seed

    set_random_seed(args.seed)
    n_steps, n_features = protocol.train.shape[1:]
    split = round(SAITS_FIT_SHARE * len(protocol.train))
    fit_part, val_part = protocol.train[:split], protocol.train[split:]
    val_hidden = mcar_mask(val_part, rate=args.mask_rate, seed=args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SAITS(n_steps=n_steps, n_features=n_features, device=device, **SAITS_SETTINGS)
    _say(
        f"[pypots-saits] fitting on {len(fit_part):,} windows, early stopping on "
        f"{len(val_part):,} (device {device}; may take ~15 min on 2 CPU cores) ..."
    )
    started = time.perf_counter()
    model.fit(
        {"X": fit_part},
        {"X": np.where(val_hidden, np.nan, val_part).astype(np.float32), "X_ori": val_part},
    )
    result = Result("pypots-saits", train_s=time.perf_counter() - started, single_window_ms=None)
    result.notes = {"settings": SAITS_SETTINGS, "device": device, "pypots": _version("pypots")}
    _say(f"[pypots-saits] fitted in {result.train_s:.1f} s")

    def predict(windows: np.ndarray) -> np.ndarray:
        batch = windows[None] if windows.ndim == 2 else windows
        filled = np.asarray(model.predict({"X": batch})["imputation"], dtype=np.float32)
        return np.where(np.isnan(batch), filled, batch)

    for mask in protocol.masks:
        inputs = protocol.inputs(mask)
        started = time.perf_counter()
        estimate = predict(inputs)
        seconds = time.perf_counter() - started
        result.masks[mask] = score(protocol, mask, estimate, seconds)
        _say(f"[pypots-saits] {mask}: std MAE {result.masks[mask]['std']['mae']:.4f}")
    result.single_window_ms, result.single_window_p99_ms = single_window_latency(
        predict, protocol.inputs("mcar")
    )
    return result


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:,.{digits}f}"


def summary_table(results: list[Result], mask: str) -> str:
    header = (
        "| imputer | std MAE | std RMSE | std MRE | std RMSE, plausible only | MAE | RMSE "
        "| MAE, mean of per-variable | train s | inference s | one window ms, median "
        "| one window ms, p99 |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in results:
        m = r.masks[mask]
        cells = [
            r.name,
            _fmt(m["std"]["mae"], 4),
            _fmt(m["std"]["rmse"], 4),
            _fmt(m["std"]["mre"], 4),
            _fmt(m["std_plausible"]["rmse"], 4),
            _fmt(m["original"]["mae"], 2),
            _fmt(m["original"]["rmse"], 2),
            _fmt(m["original"]["mean_variable_mae"], 2),
            _fmt(r.train_s, 1),
            _fmt(m["infer_s"], 2),
            _fmt(r.single_window_ms, 2),
            _fmt(r.single_window_p99_ms, 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variable_table(results: list[Result], mask: str) -> str:
    """Standardised MAE per variable, one column per imputer (best in bold)."""
    names = [r.name for r in results]
    lines = [
        "| variable | hidden | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 2),
    ]
    for v, row in enumerate(results[0].masks[mask]["variables"]):
        maes = [r.masks[mask]["variables"][v]["std_mae"] for r in results]
        finite = [m for m in maes if np.isfinite(m)]
        best = min(finite) if finite else None
        cells = [f"**{_fmt(m, 3)}**" if m == best else _fmt(m, 3) for m in maes]
        lines.append(f"| {row['concept']} | {row['n']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def implausible_hidden(protocol: Protocol) -> dict[str, Any]:
    """Hidden test values outside the concept dictionary's plausible range, per mask."""
    found = {}
    for mask, hidden in protocol.masks.items():
        bad = hidden & ~protocol.plausible
        by_variable = {
            name: int(bad[..., v].sum())
            for v, name in enumerate(protocol.grid.concepts)
            if bad[..., v].any()
        }
        examples = [
            f"{protocol.grid.concepts[v]} {protocol.test_raw[i, s, v]:g}"
            for i, s, v in zip(*np.nonzero(bad), strict=True)
        ][:10]
        found[mask] = {
            "hidden": int(hidden.sum()),
            "implausible": int(bad.sum()),
            "by_variable": by_variable,
            "examples": examples,
        }
    return found


def _finite(value: Any) -> Any:
    """JSON without NaN: NaN and infinities become null."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.imputers.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in IMPUTERS]
    if unknown or not kinds:
        raise ImputationError(
            f"unknown imputers {unknown}; choose from {', '.join(IMPUTERS)}"
            if unknown
            else "--imputers names no imputer"
        )
    if "pypots" in args.peer:
        require_pypots()
    started = time.perf_counter()
    protocol = build_protocol(args)
    implausible = implausible_hidden(protocol)
    mask_names = {
        "mcar": f"MCAR, {args.mask_rate:.0%} of the observed test values (seed {args.seed})",
        "block": f"blocks of 1-6 h in {args.block_rate:.0%} of the stay-variables "
        f"(seed {args.seed})",
    }
    for mask, found in implausible.items():
        _say(
            f"{mask_names[mask]}: {found['hidden']:,} hidden values, {found['implausible']:,} "
            "of them outside the concept's plausible range (kept as recorded)"
        )
    results, skipped = [], []
    for kind in kinds:
        try:
            results.append(bench_imputer(kind, protocol, args))
        except ImputationError as error:
            _say(f"[{kind}] skipped: {error}")
            skipped.append({"imputer": kind, "reason": str(error)})
    for peer in args.peer:
        if peer == "pypots":
            results.append(bench_saits(protocol, args))
    if not results:
        raise ImputationError("no imputer could run: " + "; ".join(s["reason"] for s in skipped))

    for mask, title in mask_names.items():
        print(f"\n{title}: {implausible[mask]['hidden']:,} hidden values\n")
        print(summary_table(results, mask))
    for mask in protocol.masks:
        print(f"\nstandardised MAE per variable, {mask}\n")
        print(variable_table(results, mask))
    print(
        "\nMAE/RMSE without 'std' are in the variables' own units, pooled over all hidden "
        "values; 'MAE, mean of per-variable' averages the 35 per-variable MAEs (BASELINES.md)."
    )
    if args.json:
        report = {
            "protocol": {
                "train": str(args.train),
                "test": str(args.test),
                "grid": protocol.grid.to_dict(),
                "train_stays": len(protocol.train),
                "test_stays": len(protocol.test),
                "test_observed": int((~np.isnan(protocol.test)).sum()),
                "mask_rate": args.mask_rate,
                "block_rate": args.block_rate,
                "seed": args.seed,
                "masks": mask_names,
                "raw_values": "kept as recorded (no range filtering), as in BASELINES.md",
                "untrained_concepts": list(protocol.untrained),
            },
            "implausible_hidden": implausible,
            "results": [
                {
                    "imputer": r.name,
                    "train_s": r.train_s,
                    "single_window_ms": r.single_window_ms,
                    "single_window_p99_ms": r.single_window_p99_ms,
                    "masks": r.masks,
                    **r.notes,
                }
                for r in results
            ],
            "skipped": skipped,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                **{p: _version(p) for p in ("numpy", "scikit-learn", "torch", "pypots")},
            },
            "seconds": time.perf_counter() - started,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite(report), indent=2) + "\n")
        _say(f"\nwrote {args.json}")
    return 0
