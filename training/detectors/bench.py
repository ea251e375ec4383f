"""``bedside bench detectors``: how well the detectors find known artefacts in real data,
what they flag in untouched real data, and what they cost per bed.

For each dataset (a canonical PhysioNet 2012 folder, MIMIC WFDB numerics records):

1. *Untouched data*: every detector runs on the real values; the flags are counted
   (per detector, kind and concept) and a few are shown with their neighbours, for a
   clinician to judge. Nobody knows which real values are wrong, so these are neither
   true nor false positives.
2. *Injected artefacts*: for each kind of :mod:`bedside.training.detectors.inject`,
   the data gets artefacts of that kind only; a detector's flags on injected values are
   true positives, its flags on other values that it did not flag in the untouched
   data are false positives (the injection made them: a neighbour of a spike, a gap),
   precision = TP / (TP + FP), recall = TP / injected values, F1. ``any`` is the union
   of the online detectors, what a bed running them all flags. Dropouts remove
   values, so there is nothing to recall: their row gives the false flags they cause.
3. *Cost*: :class:`~bedside.training.detectors.bed.BedDetectors` runs sample by sample;
   µs per value (= per sample per signal) and the pickled size of each bed's state
   once its stay is done.

The rule-based detectors run through the vectorised batch path, which flags exactly
what the online ones flag (tests check it); ``multivariate`` runs online stay by stay.
The trained parts (the offline ``isolation_forest``, the population reference of the
online ``multivariate`` Half-Space Trees) are trained on the untouched data of the same
dataset, as ``bedside train detectors`` would (they are unsupervised).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from bedside.errors import BedsideError
from bedside.schemas.concepts import load_concepts
from bedside.schemas.tables import EVENTS, TIME_ANCHOR, conform
from bedside.training.detectors import batch
from bedside.training.detectors.bed import DETECTORS, BedDetectors, samples
from bedside.training.detectors.cli import train_model
from bedside.training.detectors.inject import ARTEFACT_KINDS, inject
from bedside.training.detectors.isolation_forest import OfflineIsolationForest

#: PhysioNet stays in the benchmark (a seeded sample; all of them if fewer).
ONLINE: Final = tuple(DETECTORS)
EVALUATED: Final = (*ONLINE, "isolation_forest")
EXAMPLES_PER_KIND: Final = 3
NEIGHBOURS: Final = 3


class BenchError(BedsideError):
    """The benchmark was given nothing to run on, or data it cannot read."""


# --- data ----------------------------------------------------------------------------


def physionet_events(folder: Path, stays: int, seed: int) -> pl.DataFrame:
    path = folder / "events.parquet"
    if not path.exists():
        raise BenchError(f"{folder} has no events.parquet: convert PhysioNet 2012 first")
    events = pl.read_parquet(path)
    ids = events["stay_id"].unique().sort()
    if ids.len() > stays:
        ids = ids.sample(stays, seed=seed).sort()
        events = events.filter(pl.col("stay_id").is_in(ids.implode()))
    return events


def wfdb_events(record: Path, stay_id: int) -> pl.DataFrame:
    """A WFDB numerics record (``...n``) as canonical events of one stay.

    Signals the concept dictionary maps are kept, converted to canonical units; NaN
    (no value) is dropped, zeros are kept (what the monitor reported).
    """
    import wfdb

    name = str(record.with_suffix("")) if record.suffix == ".hea" else str(record)
    try:
        data = wfdb.rdrecord(name)
    except (OSError, ValueError) as error:
        raise BenchError(f"cannot read WFDB record {name}: {error}") from error
    concepts = load_concepts()
    start = data.base_datetime
    origin = TIME_ANCHOR if start is None else start.replace(tzinfo=TIME_ANCHOR.tzinfo)
    period_us = round(1e6 / float(data.fs))
    frames = []
    for index, signal in enumerate(data.sig_name):
        mapped = concepts.from_source("wfdb", signal)
        if mapped is None:
            continue
        concept, conversion = mapped
        values = data.p_signal[:, index]
        keep = np.flatnonzero(np.isfinite(values))
        frames.append(
            pl.DataFrame(
                {
                    "subject_id": stay_id,
                    "stay_id": stay_id,
                    "time": [origin + timedelta(microseconds=int(i) * period_us) for i in keep],
                    "code": concept.name,
                    "numeric_value": [conversion.apply(float(v)) for v in values[keep]],
                    "source_code": f"wfdb//{signal}",
                }
            )
        )
    if not frames:
        raise BenchError(f"{name} has no signal the concept dictionary knows")
    return conform(pl.concat(frames), EVENTS).sort("time", "code")


# --- flags -----------------------------------------------------------------------------


def all_flags(
    events: pl.DataFrame, forest: OfflineIsolationForest, model_dir: Path
) -> dict[str, pl.DataFrame]:
    """``(_id, kind)`` of the values each detector flags (``events`` has ``_id``), and
    ``any``: those a bed running every online detector flags."""
    frame = batch.prepare(events)
    flagged = batch.online_flags(frame, batch.ONLINE_ONLY, model_dir)
    flagged |= {name: rule(frame) for name, rule in batch._RULES.items()}
    flagged["isolation_forest"] = forest.flag_rows(frame)
    ids = events["_id"]
    flags = {
        name: flagged[name]
        .select(pl.col(batch.ROW).map_batches(lambda rows: ids.gather(rows)).alias("_id"), "kind")
        .unique("_id", keep="first")
        for name in EVALUATED
    }
    flags["any"] = pl.concat([flags[name] for name in ONLINE]).unique("_id", keep="first")
    return flags


def _neighbours(series: pl.DataFrame, position: int) -> list[list[float]]:
    """Readings around one of a series: [minutes from it, value]."""
    at = series["time"][position]
    around = series.slice(max(0, position - NEIGHBOURS), 2 * NEIGHBOURS + 1)
    return [
        [round((t - at).total_seconds() / 60, 1), v]
        for t, v in around.select("time", "numeric_value").iter_rows()
    ]


def real_flags_report(
    events: pl.DataFrame, flags: dict[str, pl.DataFrame], seed: int
) -> dict[str, Any]:
    """Counts of what each detector flags in untouched data, with examples."""
    total = events.height
    report: dict[str, Any] = {"values": total, "detectors": {}}
    by_series = events.sort("stay_id", "code", "time").with_columns(
        _position=pl.int_range(pl.len()).over("stay_id", "code")
    )
    lookup = by_series.select("_id", "stay_id", "code", "time", "numeric_value", "_position")
    for name, flagged in flags.items():
        rows = flagged.join(lookup, on="_id")
        # Ties in name order: the same figures give the same report.
        kinds = rows.group_by("kind").len().sort(["len", "kind"], descending=[True, False])
        concepts = (
            rows.group_by("kind", "code")
            .len()
            .sort(["len", "kind", "code"], descending=[True, False, False])
            .head(8)
        )
        examples = []
        for (kind,), of_kind in rows.group_by("kind", maintain_order=True):
            picked = of_kind.sample(min(EXAMPLES_PER_KIND, of_kind.height), seed=seed)
            for stay, code, moment, value, position in picked.select(
                "stay_id", "code", "time", "numeric_value", "_position"
            ).iter_rows():
                series = by_series.filter((pl.col("stay_id") == stay) & (pl.col("code") == code))
                examples.append(
                    {
                        "kind": kind,
                        "stay_id": stay,
                        "concept": code,
                        "time": moment.isoformat(),
                        "value": value,
                        "neighbours_min_value": _neighbours(series, position),
                    }
                )
        report["detectors"][name] = {
            "flagged": rows.height,
            "per_1000_values": round(1000 * rows.height / max(total, 1), 2),
            "kinds": dict(kinds.iter_rows()),
            "top_concepts": [list(row) for row in concepts.iter_rows()],
            "examples": examples,
        }
    return report


def _scores(tp: int, fp: int, positives: int) -> dict[str, float | None]:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / positives if positives else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall
        else None
    )
    return {
        "precision": None if precision is None else round(precision, 4),
        "recall": None if recall is None else round(recall, 4),
        "f1": None if f1 is None else round(f1, 4),
    }


def injected_report(
    events: pl.DataFrame,
    clean: dict[str, pl.DataFrame],
    forest: OfflineIsolationForest,
    model_dir: Path,
    seed: int,
) -> dict[str, Any]:
    """Precision, recall and F1 of each detector on each injected artefact kind."""
    report: dict[str, Any] = {}
    for kind in ARTEFACT_KINDS:
        # inject numbers rows as they come, so its _id is the events' _id.
        corrupted, truth = inject(events.drop("_id"), kind, seed)
        positives = corrupted.filter(pl.col("injected").is_not_null()).select("_id")
        flags = all_flags(corrupted.drop("injected"), forest, model_dir)
        rows: dict[str, Any] = {
            "artefacts": truth.height,
            "injected_values": int(truth["readings"].sum()) if truth.height else 0,
            "values": corrupted.height,
            "detectors": {},
        }
        for name, flagged in flags.items():
            hit = flagged.join(positives, on="_id", how="semi")
            new = flagged.join(positives, on="_id", how="anti").join(
                clean[name], on="_id", how="anti"
            )
            tp, fp = hit.height, new.height
            entry: dict[str, Any] = {"tp": tp, "fp": fp}
            if kind != "dropout":
                entry |= _scores(tp, fp, positives.height)
                entry["kinds"] = dict(Counter(hit["kind"].to_list()))
            rows["detectors"][name] = entry
        report[kind] = rows
    return report


# --- cost ------------------------------------------------------------------------------


def online_cost(events: pl.DataFrame, model_dir: Path) -> dict[str, Any]:
    """µs per value of :class:`BedDetectors` and the pickled size of a bed's state."""
    values = 0
    elapsed = 0.0
    cpu = 0.0
    sizes = []
    bed: BedDetectors | None = None
    current = None
    per_detector = Counter[str]()
    for stay, _, sample in samples(events):
        if stay != current:
            if bed is not None:
                sizes.append(len(pickle.dumps(bed)))
                for name, detector in bed.detectors.items():
                    per_detector[name] = max(per_detector[name], len(pickle.dumps(detector)))
            bed, current = BedDetectors.from_model(model_dir), stay
        assert bed is not None
        started, started_cpu = time.perf_counter(), time.process_time()
        bed.process(sample)
        elapsed += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
        values += len(sample)
    if bed is not None:
        sizes.append(len(pickle.dumps(bed)))
        for name, detector in bed.detectors.items():
            per_detector[name] = max(per_detector[name], len(pickle.dumps(detector)))
    return {
        "values": values,
        # CPU time of this process: wall time counts other programs on a busy machine.
        "cpu_us_per_value": round(1e6 * cpu / max(values, 1), 2),
        "wall_us_per_value": round(1e6 * elapsed / max(values, 1), 2),
        "state_bytes_median": int(np.median(sizes)) if sizes else 0,
        "state_bytes_max": max(sizes, default=0),
        "state_bytes_max_by_detector": dict(per_detector),
        "beds": len(sizes),
    }


# --- the benchmark ---------------------------------------------------------------------


def evaluate(events: pl.DataFrame, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """All figures of one dataset. The trained parts (Isolation Forest, the Half-Space
    Trees' population reference) are trained on its untouched data, as ``bedside train
    detectors`` would."""
    events = events.with_row_index("_id")
    with tempfile.TemporaryDirectory() as folder:
        model_dir = Path(folder)
        started = time.perf_counter()
        forest = train_model(events.drop("_id"), seed, model_dir)
        log(f"  trained in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        clean = all_flags(events, forest, model_dir)
        log(f"  untouched data flagged in {time.perf_counter() - started:.0f} s")
        result = {
            "stays": events["stay_id"].n_unique(),
            "values": events.height,
            "untouched": real_flags_report(events, clean, seed),
        }
        started = time.perf_counter()
        result["injected"] = injected_report(events, clean, forest, model_dir, seed)
        log(f"  injected artefacts scored in {time.perf_counter() - started:.0f} s")
        result["cost"] = online_cost(events.drop("_id"), model_dir)
    return result


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_tables(results: dict[str, Any]) -> None:
    for name, dataset in results["datasets"].items():
        print(f"\n== {name}: {dataset['stays']} stays, {dataset['values']:,} values")
        print("\nInjected artefacts (value level; FP = new flags on other values)")
        print(
            f"{'kind':<11}{'detector':<17}{'injected':>9}{'TP':>7}{'FP':>7}"
            f"{'prec':>7}{'recall':>8}{'F1':>6}"
        )
        for kind, rows in dataset["injected"].items():
            for detector, entry in rows["detectors"].items():
                print(
                    f"{kind:<11}{detector:<17}{rows['injected_values']:>9}{entry['tp']:>7}"
                    f"{entry['fp']:>7}{_cell(entry.get('precision')):>7}"
                    f"{_cell(entry.get('recall')):>8}{_cell(entry.get('f1')):>6}"
                )
        print("\nUntouched real data")
        untouched = dataset["untouched"]
        for detector, entry in untouched["detectors"].items():
            kinds = ", ".join(f"{k} {n}" for k, n in entry["kinds"].items())
            print(
                f"  {detector:<17}{entry['flagged']:>7} ({entry['per_1000_values']}/1000)  {kinds}"
            )
        for detector, entry in untouched["detectors"].items():
            if detector == "any":
                continue
            for example in entry["examples"][:6]:
                around = " ".join(
                    f"{'[' if m == 0 else ''}{v:g}{']' if m == 0 else ''}"
                    for m, v in example["neighbours_min_value"]
                )
                print(
                    f"  e.g. {detector}/{example['kind']}: stay {example['stay_id']} "
                    f"{example['concept']} {example['time']}: {around}"
                )
        cost = dataset["cost"]
        print(
            f"\nCost: {cost['cpu_us_per_value']} µs CPU per value (sample × signal; "
            f"{cost['wall_us_per_value']} µs wall), bed state "
            f"{cost['state_bytes_median'] / 1024:.1f} KB median, "
            f"{cost['state_bytes_max'] / 1024:.1f} KB max over {cost['beds']} beds"
        )


def run(args: argparse.Namespace) -> int:
    datasets: dict[str, pl.DataFrame] = {}
    if args.physionet is not None:
        datasets["physionet2012"] = physionet_events(args.physionet, args.stays, args.seed)
    if args.wfdb:
        records = [wfdb_events(record, index + 1) for index, record in enumerate(args.wfdb)]
        datasets["mimic_wfdb"] = pl.concat(records)
    if not datasets:
        raise BenchError("nothing to run on: give --physionet DIR and/or --wfdb RECORD ...")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results: dict[str, Any] = {
        "command": "bedside " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "physionet_stays": args.stays,
        "wfdb_records": [str(record) for record in args.wfdb],
        "datasets": {},
    }
    for name, events in datasets.items():
        log(f"{name}: {events['stay_id'].n_unique()} stays, {events.height:,} values")
        results["datasets"][name] = evaluate(events, args.seed, log)
    print_tables(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0
