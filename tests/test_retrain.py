"""``bedside retrain`` and the registry: promote only what is not worse; the engine
switches to a promoted model while it runs, keeping every bed's state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bedside.cli import main
from bedside.engine.bed import Engine
from bedside.engine.intake import Accepted
from bedside.engine.settings import EngineError, EngineSettings
from bedside.schemas.messages import SCORES_TOPIC, VITALS_TOPIC, Vitals, decode, encode
from bedside.training.registry import ModelRegistry
from bedside.training.retrain import holdout_split


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("retrain") / "data"
    simulate = ["data", "simulate", "--stays", "250", "--seed", "8", "--out", str(folder)]
    assert main(simulate) == 0
    return folder


def swapped_patients(source: Path, target: Path) -> Path:
    """The same stays and outcomes, but the stays that ``retrain`` trains on swap their
    patients (events, moved to the new stay's admission, and static covariates): a model
    trained on it learns nothing, and is judged on the same held-out stays, untouched."""
    target.mkdir()
    stays = pl.read_parquet(source / "stays.parquet")
    events = pl.read_parquet(source / "events.parquet")
    train, _ = holdout_split(stays, 0.2, 2026)  # retrain's defaults
    ids = train["stay_id"].to_numpy()
    patients = ["age", "sex", "height_cm", "weight_kg", "icu_type"]
    donors = stays.select("stay_id", "admit_time", *patients).rename({"stay_id": "donor"})
    swap = pl.DataFrame({"stay_id": ids, "donor": np.random.default_rng(0).permutation(ids)})
    swap = swap.join(donors, on="donor").join(stays.select("stay_id", "admit_time"), on="stay_id")
    moved = (
        events.rename({"stay_id": "donor"})
        .join(swap, on="donor")
        .with_columns(time=pl.col("time") - pl.col("admit_time") + pl.col("admit_time_right"))
    )
    kept = events.filter(~pl.col("stay_id").is_in(ids.tolist()))
    pl.concat([kept, moved.select(events.columns)]).write_parquet(target / "events.parquet")
    swapped = stays.update(swap.select("stay_id", *patients), on="stay_id")
    swapped.write_parquet(target / "stays.parquet")
    return target


def retrain(registry: Path, data: Path, out: Path, *extra: str) -> dict:
    args = ["retrain", "--registry", str(registry), "--data", str(data), "--json", str(out)]
    assert main([*args, *extra]) == 0
    return json.loads(out.read_text())


def test_the_first_model_is_promoted_and_a_worse_one_is_not(cohort: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    first = retrain(registry, cohort, tmp_path / "1.json")
    assert first["promoted"] and first["current"] is None
    assert first["candidate"]["auroc"] > 0.7
    assert ModelRegistry(registry).current_name() == first["version"]

    noise = swapped_patients(cohort, tmp_path / "noise")
    second = retrain(registry, noise, tmp_path / "2.json")
    assert not second["promoted"] and "worse" in second["reason"]
    # Both were judged on the same held-out stays; the current model did not change.
    assert second["candidate"]["n"] == second["current"]["n"]
    assert ModelRegistry(registry).current_name() == first["version"]
    versions = sorted(p.name for p in (registry / "versions").iterdir())
    assert versions == sorted([first["version"], second["version"]])
    evaluation = json.loads(
        (registry / "versions" / second["version"] / "evaluation.json").read_text()
    )
    assert evaluation["promoted"] is False
    assert [h["promoted"] for h in ModelRegistry(registry).history()] == [first["version"]]


def test_the_engine_serves_the_registry_and_switches_without_losing_state(
    cohort: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    with pytest.raises(EngineError, match="no promoted model"):
        (registry / "versions").mkdir(parents=True)
        Engine(EngineSettings(model_dir=registry, future_limit_s=None))
    first = retrain(registry, cohort, tmp_path / "1.json")
    engine = Engine(EngineSettings(model_dir=registry, future_limit_s=None))
    assert engine.model_version == first["version"] and engine.reload() is None

    shard = engine.new_shard()
    start = datetime(2030, 1, 1, tzinfo=UTC)

    def feed(minutes: range) -> list:
        scores = []
        for minute in minutes:
            message = Vitals(
                bed="b1",
                stay_id="s1",
                time=start + timedelta(minutes=minute),
                source="m",
                seq=minute,
                values={"heart_rate": 80.0 + minute % 7},
            )
            item = Accepted("b1", VITALS_TOPIC, message, 0, minute, 0.0, encode(message))
            scores += [
                decode(SCORES_TOPIC, o.value)
                for o in engine.process(shard, [item])
                if o.topic == SCORES_TOPIC
            ]
        return scores

    before = feed(range(0, 30))
    second = retrain(registry, cohort, tmp_path / "2.json", "--seed", "7", "--auroc-tolerance", "1")
    assert second["promoted"]
    assert "serving model" in (engine.reload() or "")
    after = feed(range(30, 60))
    assert {s.model_version for s in before} == {first["version"]}
    assert {s.model_version for s in after} == {second["version"]}
    # Same bed state throughout: one stay, scores every minute with no gap or restart.
    times = [s.time for s in before + after]
    assert times == [start + timedelta(minutes=m) for m in range(1, len(times) + 1)]
    state = shard.beds["b1"]
    assert state.stay_id == "s1" and state.admit_s == start.timestamp()
