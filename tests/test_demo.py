"""``bedside demo`` runs a ward through the engine on its own, ends, and writes valid records."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bedside.cli import main
from bedside.replay.tansu import free_port
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


def start_demo(out: Path, model: Path, port: int, options: list[str]) -> subprocess.Popen[str]:
    """``bedside demo OPTIONS --web PORT`` as a process, its output (text) piped."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("bedside")),
            "demo",
            *options,
            "--web",
            str(port),
            "--model",
            str(model),
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_demo_serves_the_ward_page_and_an_acknowledgement_reaches_the_engine(
    tmp_path: Path, engine_model_dir: Path
) -> None:
    port = free_port()
    # 1 ward minute a second: the alert's stay is still open when the acknowledgement
    # arrives, even on a busy machine.
    demo = start_demo(
        tmp_path,
        engine_model_dir,
        port,
        ["--beds", "2", "--hours", "2", "--speed", "60", "--alert-on-risk", "0.01"],
    )
    base = f"http://127.0.0.1:{port}"
    try:
        alert = None
        deadline = time.monotonic() + 60
        while alert is None and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                ward = json.loads(urllib.request.urlopen(f"{base}/api/ward", timeout=2).read())
            except OSError:
                continue
            raised = [a for a in ward["alerts"] if a["state"] in ("raised", "escalated")]
            alert = raised[0] if raised else None
        assert alert is not None, "no alert on the page"
        request = urllib.request.Request(
            f"{base}/api/ack",
            data=json.dumps({"alert_id": alert["alert_id"], "by": "nurse.kim"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert urllib.request.urlopen(request, timeout=5).status == 202
        # The page shows the engine's acknowledged record once the engine has it.
        shown = None
        while shown is None and time.monotonic() < deadline:
            time.sleep(0.5)
            ward = json.loads(urllib.request.urlopen(f"{base}/api/ward", timeout=2).read())
            shown = next(
                (
                    a
                    for a in ward["alerts"]
                    if a["alert_id"] == alert["alert_id"] and a["state"] == "acknowledged"
                ),
                None,
            )
        assert shown is not None and shown["acknowledged_by"] == "nurse.kim", ward["alerts"]
    finally:
        demo.send_signal(signal.SIGINT)
        output = demo.communicate(timeout=60)[0]
    # 130: stopped during the replay (summary printed), 0: after it, while serving the page.
    assert demo.returncode in (0, 130) and "summary" in output, output[-2000:]
    lines = (tmp_path / f"{ALERTS_TOPIC}.jsonl").read_bytes().splitlines()
    assert any(
        a.state == "acknowledged" and a.alert_id == alert["alert_id"]
        for a in (decode(ALERTS_TOPIC, line) for line in lines)
    )
    with sqlite3.connect(tmp_path / "audit.db") as audit:
        rows = audit.execute("select * from acknowledgements").fetchall()
    assert any("nurse.kim" in map(str, row) for row in rows)


def test_ctrl_c_stops_the_demo_while_it_serves_the_page_after_the_replay(
    tmp_path: Path, engine_model_dir: Path
) -> None:
    demo = start_demo(tmp_path, engine_model_dir, free_port(), ["--beds", "1", "--hours", "0.2"])
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if "until Ctrl-C" in line:
                break
        else:
            raise AssertionError("the demo never got to serving the page after its replay")
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=20) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
