"""``bedside demo`` runs on its own, ends, and what it writes is what the schemas accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from bedside.cli import main
from bedside.schemas.messages import PATIENT_TOPIC, VITALS_TOPIC, Admit, decode


def test_demo_runs_a_ward_and_writes_valid_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--beds", "3", "--hours", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "summary" in out and "beds 3" in out
    patients = (tmp_path / f"{PATIENT_TOPIC}.jsonl").read_bytes().splitlines()
    vitals = (tmp_path / f"{VITALS_TOPIC}.jsonl").read_bytes().splitlines()
    admits = [m for m in (decode(PATIENT_TOPIC, p) for p in patients) if isinstance(m, Admit)]
    assert {m.bed for m in admits} == {"bed-01", "bed-02", "bed-03"}
    assert len(vitals) > 3 * 2 * 50  # monitor numerics once a minute plus charting
    assert all(decode(VITALS_TOPIC, line).bed.startswith("bed-") for line in vitals)
    assert f"stays admitted {len(admits)}" in out


def test_demo_refuses_an_empty_ward(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--beds"):
        main(["demo", "--beds", "0", "--out", str(tmp_path)])
