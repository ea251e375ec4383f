"""``bedside demo`` runs a ward through the engine on its own, ends, and writes valid records."""

from __future__ import annotations

from pathlib import Path

import pytest

from bedside.cli import main
from bedside.schemas.messages import (
    ALERTS_TOPIC,
    PATIENT_TOPIC,
    SCORES_TOPIC,
    VITALS_TOPIC,
    Admit,
    decode,
)


def test_demo_runs_a_ward_through_the_engine_and_writes_valid_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine_model_dir: Path
) -> None:
    args = ["demo", "--beds", "3", "--hours", "2", "--out", str(tmp_path)]
    assert main([*args, "--model", str(engine_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "summary" in out and "beds 3" in out

    def read(topic: str) -> list:
        lines = (tmp_path / f"{topic}.jsonl").read_bytes().splitlines()
        return [decode(topic, line) for line in lines]

    admits = [m for m in read(PATIENT_TOPIC) if isinstance(m, Admit)]
    assert {m.bed for m in admits} == {"bed-01", "bed-02", "bed-03"}
    assert len(read(VITALS_TOPIC)) > 3 * 2 * 50  # monitor numerics once a minute + charting
    scores = read(SCORES_TOPIC)
    assert {s.bed for s in scores} == {"bed-01", "bed-02", "bed-03"}
    assert len(scores) >= 3 * 60  # a score a minute per occupied bed
    assert f"stays admitted {len(admits)}" in out and f"scores {len(scores)}" in out
    raised = [a for a in read(ALERTS_TOPIC) if a.state == "raised"]
    assert f"alerts raised {len(raised)}" in out


def test_demo_trains_its_own_model_on_first_use(tmp_path: Path) -> None:
    assert main(["demo", "--beds", "1", "--hours", "0.5", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "model" / "model.json").exists()


def test_demo_refuses_an_empty_ward(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--beds"):
        main(["demo", "--beds", "0", "--out", str(tmp_path)])
