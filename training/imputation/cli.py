"""``bedside train imputer`` and ``bedside impute``.

Training builds the windows of every ``--data`` folder (:func:`stay_windows`, first
window of each stay from ICU admission), treats the values the plausibility detector
flags as missing unless ``--keep-flagged``, fits the standardiser and the imputer and
writes a model folder (:class:`ImputationModel`) whose ``model.json`` records where the
training windows came from: the folders, the stay count, the sha256 of the sorted stay
ids as little-endian int64, the seed, the bedside version and the time.

Imputing writes ``OUT/windows.parquet``, one row per stay, step and grid variable::

    stay_id     Int64
    step        Int32      0 .. steps - 1
    step_start  Datetime   admission + step * step length (UTC)
    concept     String     grid variable
    value       Float32    in the concept's unit; observed mean of the step or imputed
    imputed     Boolean    no (kept) value in the step: the model filled it
    flagged     Boolean    a value in the step was flagged and treated as missing

and ``OUT/report.json``. Variables the model never saw in training are not imputed:
only their observed steps are written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bedside import __version__
from bedside.training.imputation.pipeline import (
    GRIDS,
    ImputationError,
    ImputationModel,
    build_imputer,
    concatenate,
    fit_standardiser,
    read_canonical,
)
from bedside.training.windows import Grid, Windows, stay_windows

#: Detectors whose flags turn values into missing ones before imputation.
FLAGGING_DETECTORS = ("plausibility",)


def split_flagged(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The events the detectors accept and those they flag as anomalous."""
    try:
        from bedside.training.detectors import flag_events
    except ImportError as error:
        raise ImputationError(
            "treating flagged values as missing needs the anomaly detectors "
            f"(bedside.training.detectors.flag_events), not available here ({error}); "
            "pass --keep-flagged to use the values as recorded"
        ) from error
    marked = flag_events(events, detectors=FLAGGING_DETECTORS)
    anomalous = pl.col("anomalous")
    return (
        marked.filter(~anomalous).select(events.columns),
        marked.filter(anomalous).select(events.columns),
    )


def read_windows(
    folder: Path, grid: Grid, keep_flagged: bool
) -> tuple[Windows, np.ndarray, pl.DataFrame, int]:
    """Windows of a folder's stays, their flagged cells, the stays, and the flagged count."""
    events, stays = read_canonical(folder)
    events = events.filter(pl.col("code").is_in(grid.concepts))
    if keep_flagged:
        windows = stay_windows(events, stays, grid)
        return windows, np.zeros(windows.values.shape, dtype=bool), stays, 0
    kept, flagged = split_flagged(events)
    windows = stay_windows(kept, stays, grid)
    flagged_cells = ~np.isnan(stay_windows(flagged, stays, grid).values)
    return windows, flagged_cells, stays, flagged.height


def fingerprint(folders: list[Path], stay_ids: np.ndarray) -> dict[str, Any]:
    ids = np.sort(stay_ids).astype("<i8")
    return {
        "folders": [str(f.resolve()) for f in folders],
        "stays": int(ids.size),
        "stay_ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
    }


def _describe(windows: Windows) -> str:
    observed = int(windows.mask.sum())
    return f"{observed:,} values on the grid ({1 - observed / windows.values.size:.1%} missing)"


def train(args: argparse.Namespace) -> int:
    """``bedside train imputer``: fit a standardiser and an imputer, write MODEL_DIR."""
    started = time.perf_counter()
    grid = GRIDS[args.grid]
    imputer = build_imputer(args.kind, seed=args.seed, max_minutes=args.max_minutes)
    parts, flagged = [], 0
    for folder in args.data:
        windows, _, _, n_flagged = read_windows(folder, grid, args.keep_flagged)
        parts.append(windows)
        flagged += n_flagged
        print(f"read {windows.stay_ids.size:,} stays from {folder}: {_describe(windows)}")
    windows = concatenate(parts)
    if not args.keep_flagged:
        print(f"{flagged:,} values flagged by {', '.join(FLAGGING_DETECTORS)}: treated as missing")
    standardiser, untrained = fit_standardiser(windows)
    if untrained:
        print(f"warning: no training values for {', '.join(untrained)}: they will not be imputed")
    print(f"fitting the {args.kind} imputer on {windows.stay_ids.size:,} windows ...", flush=True)
    fit_started = time.perf_counter()
    imputer.fit(standardiser.transform(windows.values))
    fit_seconds = time.perf_counter() - fit_started
    training = {
        **fingerprint(args.data, windows.stay_ids),
        "flagged_values_dropped": None if args.keep_flagged else flagged,
        "keep_flagged": bool(args.keep_flagged),
        "seed": args.seed,
        "fit_seconds": round(fit_seconds, 3),
        "bedside_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    ImputationModel(grid, standardiser, imputer, untrained, training).save(args.out)
    print(
        f"fitted in {fit_seconds:.1f} s; wrote the {args.kind} imputation model to {args.out} "
        f"({time.perf_counter() - started:.1f} s in all)"
    )
    return 0


def long_frame(
    windows: Windows,
    filled: np.ndarray,
    flagged: np.ndarray,
    stays: pl.DataFrame,
    untrained: tuple[str, ...],
) -> pl.DataFrame:
    """One row per stay, step and variable (see the module docstring)."""
    grid = windows.grid
    observed = windows.mask
    keep = np.ones(filled.shape, dtype=bool)
    for name in untrained:
        v = grid.concepts.index(name)
        keep[..., v] = observed[..., v]
    stay_index, step, variable = np.nonzero(keep)
    frame = pl.DataFrame(
        {
            "stay_id": pl.Series(windows.stay_ids[stay_index], dtype=pl.Int64),
            "step": pl.Series(step, dtype=pl.Int32),
            "concept": pl.Series(np.asarray(grid.concepts)[variable], dtype=pl.String),
            "value": pl.Series(filled[keep], dtype=pl.Float32),
            "imputed": ~observed[keep],
            "flagged": flagged[keep],
        }
    )
    admissions = stays.select("stay_id", "admit_time")
    return frame.join(admissions, on="stay_id", how="left").select(
        "stay_id",
        "step",
        step_start=pl.col("admit_time")
        + pl.duration(microseconds=(pl.col("step") * round(grid.step_minutes * 60e6))),
        concept="concept",
        value="value",
        imputed="imputed",
        flagged="flagged",
    )


def impute(args: argparse.Namespace) -> int:
    """``bedside impute``: fill the windows of a data folder with a trained model."""
    started = time.perf_counter()
    model = ImputationModel.load(args.model)
    windows, flagged, stays, n_flagged = read_windows(args.data, model.grid, args.keep_flagged)
    print(f"read {windows.stay_ids.size:,} stays from {args.data}: {_describe(windows)}")
    impute_started = time.perf_counter()
    filled = model.impute(windows.values)
    impute_seconds = time.perf_counter() - impute_started
    frame = long_frame(windows, filled, flagged, stays, model.untrained)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(args.out / "windows.parquet", compression="zstd")
    report = {
        "model": str(args.model.resolve()),
        "kind": model.imputer.kind,
        "data": str(args.data.resolve()),
        "stays": int(windows.stay_ids.size),
        "rows": frame.height,
        "observed": int(frame["imputed"].not_().sum()),
        "imputed": int(frame["imputed"].sum()),
        "flagged_values": None if args.keep_flagged else n_flagged,
        "flagged_steps": int(frame["flagged"].sum()),
        "not_imputed_untrained": list(model.untrained),
        "impute_seconds": round(impute_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    flagged_note = (
        "flagged values kept"
        if args.keep_flagged
        else f"{n_flagged:,} flagged values treated as missing"
    )
    print(
        f"imputed {report['imputed']:,} of {report['rows']:,} steps x variables with the "
        f"{model.imputer.kind} model in {impute_seconds:.2f} s ({flagged_note}); wrote "
        f"windows.parquet and report.json to {args.out}"
    )
    return 0
