"""``bedside train detectors`` and ``bedside detect``: the offline side of the detectors.

``train detectors --data DIR [--data DIR] --seed N --out MODEL_DIR`` writes a model
folder without pickle:

* ``detectors.json``: the Isolation Forest's parameters and check scores, and the
  population reference of the online Half-Space Trees (:class:`Multivariate`), so that
  a new bed is judged from its first sample (``BedDetectors.from_model``);
* ``isolation_forest_sample.parquet``: the forest's training sample (it is refitted,
  deterministically, when loaded).

``detect [--model MODEL_DIR] --data DIR --out OUT`` runs every detector on a canonical
folder (the Isolation Forest only with ``--model``) and writes ``OUT/flags.parquet``
(the flagged events, with ``anomaly_detector`` and ``anomaly_kind``) and
``OUT/summary.json`` (flagged values per detector, kind and concept).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import polars as pl

from bedside.schemas.tables import EVENTS
from bedside.training.detectors.base import DetectorError
from bedside.training.detectors.batch import BATCH_DETECTORS, flag_events
from bedside.training.detectors.bed import MODEL_FILE, samples
from bedside.training.detectors.half_space_trees import CompactHalfSpaceTrees
from bedside.training.detectors.isolation_forest import FORMAT, OfflineIsolationForest
from bedside.training.detectors.multivariate import Multivariate

#: Stays whose samples make the Half-Space Trees' population reference.
REFERENCE_STAYS = 300
#: Windows of samples averaged into that reference.
REFERENCE_WINDOWS = 20


def read_events(folder: Path) -> pl.DataFrame:
    path = folder / "events.parquet"
    if not path.exists():
        raise DetectorError(f"{folder} is not a canonical data folder: no events.parquet")
    return pl.read_parquet(path, columns=list(EVENTS))


def population_reference(events: pl.DataFrame, seed: int) -> list[int] | None:
    """Reference masses of :class:`Multivariate`'s trees over many stays' samples.

    The samples of up to ``REFERENCE_STAYS`` stays (as beds see them: usable vitals,
    carried forward) are shuffled and learned ``window_size`` at a time; the reference
    masses of ``REFERENCE_WINDOWS`` windows are averaged. None when there are fewer
    samples than one window.
    """
    rng = random.Random(seed)
    stays = sorted(events["stay_id"].unique().to_list())
    chosen = set(rng.sample(stays, min(REFERENCE_STAYS, len(stays))))
    subset = events.filter(pl.col("stay_id").is_in(chosen))
    vectors = []
    observer: Multivariate | None = None
    current = None
    for stay, _, sample in samples(subset):
        if stay != current or observer is None:
            observer, current = Multivariate(), stay
        vector = observer.observe(sample)
        if vector is not None:
            vectors.append(vector)
    template = Multivariate()
    if len(vectors) < template.window_size:
        return None
    rng.shuffle(vectors)
    params = template.tree_params()
    trees = CompactHalfSpaceTrees(
        n_trees=params["n_trees"],
        height=params["height"],
        window_size=params["window_size"],
        limits=dict.fromkeys(params["limits"], (0.0, 1.0)),
        seed=params["seed"],
    )
    size = template.window_size
    windows = min(REFERENCE_WINDOWS, len(vectors) // size)
    total: list[int] = []
    for window in range(windows):
        for vector in vectors[window * size : (window + 1) * size]:
            trees.learn_one(vector)
        masses = trees.reference_masses()  # this window's, now the reference
        total = masses if not total else [a + b for a, b in zip(total, masses, strict=True)]
    return [round(mass / windows) for mass in total]


def train_model(events: pl.DataFrame, seed: int, out: Path) -> OfflineIsolationForest:
    """Fit the Isolation Forest and the Half-Space Trees' population reference on
    canonical events and write them into the model folder ``out``."""
    forest = OfflineIsolationForest(seed=seed).fit(events)
    forest.save(out)
    model = json.loads((out / MODEL_FILE).read_text())
    model["format"] = FORMAT
    model["seed"] = seed
    reference = population_reference(events, seed)
    if reference is not None:  # else beds judge after their first window
        model["multivariate"] = {
            "params": Multivariate().tree_params(),
            "reference_masses": reference,
        }
    (out / MODEL_FILE).write_text(json.dumps(model, indent=2))
    return forest


def train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    events = pl.concat([read_events(folder) for folder in args.data])
    print(f"training detectors on {events.height:,} events of {events['stay_id'].n_unique()} stays")
    train_model(events, args.seed, args.out)
    model = json.loads((args.out / MODEL_FILE).read_text())
    model["data"] = [str(folder) for folder in args.data]
    (args.out / MODEL_FILE).write_text(json.dumps(model, indent=2))
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


def summary(flagged: pl.DataFrame, events: pl.DataFrame) -> list[dict[str, Any]]:
    """Flagged values per detector, kind and concept, with the share of that concept."""
    values = events.group_by("code").len("values")
    table = (
        flagged.group_by("anomaly_detector", "anomaly_kind", "code")
        .len("flagged")
        .join(values, on="code")
        .with_columns(per_1000=(1000 * pl.col("flagged") / pl.col("values")).round(2))
        .sort("flagged", descending=True)
        .rename({"anomaly_detector": "detector", "anomaly_kind": "kind", "code": "concept"})
    )
    return table.to_dicts()


def detect(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    events = read_events(args.data)
    detectors = [name for name in BATCH_DETECTORS if name != "isolation_forest"]
    if args.model is not None:
        detectors.append("isolation_forest")
    flagged = flag_events(events, detectors, args.model).filter(pl.col("anomalous"))
    args.out.mkdir(parents=True, exist_ok=True)
    flagged.write_parquet(args.out / "flags.parquet")
    rows = summary(flagged, events)
    (args.out / "summary.json").write_text(
        json.dumps({"events": events.height, "flagged": flagged.height, "by": rows}, indent=2)
    )
    print(f"{flagged.height:,} of {events.height:,} values flagged ({', '.join(detectors)})")
    print(f"{'detector':<17}{'kind':<13}{'concept':<30}{'flagged':>9}{'/1000':>8}")
    for row in rows[:20]:
        print(
            f"{row['detector']:<17}{row['kind']:<13}{row['concept']:<30}"
            f"{row['flagged']:>9}{row['per_1000']:>8}"
        )
    print(f"wrote {args.out / 'flags.parquet'} in {time.perf_counter() - started:.0f} s")
    return 0
