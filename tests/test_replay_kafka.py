"""The producer side: settings, an unreachable broker, Ctrl-C, the dry run and the bench."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bedside.cli import main
from bedside.replay.tansu import free_port
from bedside.schemas.messages import PATIENT_TOPIC, VITALS_TOPIC, decode
from bedside.settings import KafkaSettings, SettingsError, load_kafka_settings
from tests.kafka_broker import consume
from tests.wfdb_records import write_patient

pytestmark = [
    pytest.mark.filterwarnings("ignore::bedside.replay.ward.ReplayWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame"),
]


# --- settings -----------------------------------------------------------------------


def test_settings_come_from_the_environment_and_the_command_line_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    monkeypatch.setenv("BEDSIDE_KAFKA_BOOTSTRAP_SERVERS", "kafka-a:9093,kafka-b:9093")
    monkeypatch.setenv("BEDSIDE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BEDSIDE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("BEDSIDE_KAFKA_USERNAME", "replay")
    monkeypatch.setenv("BEDSIDE_KAFKA_PASSWORD", "s3cret")
    monkeypatch.setenv("BEDSIDE_KAFKA_SSL_CA_FILE", str(ca))
    settings = load_kafka_settings(bootstrap_servers=None)
    assert settings.servers() == ["kafka-a:9093", "kafka-b:9093"]
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
    producer = settings.kafka_python_config()
    assert producer["sasl_plain_password"] == "s3cret" and producer["ssl_cafile"] == str(ca)
    assert settings.librdkafka_config()["security.protocol"] == "sasl_ssl"
    assert load_kafka_settings(bootstrap_servers="other:9092").servers() == ["other:9092"]
    with pytest.raises(ValueError):
        settings.client_id = "changed"  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("environment", "complaint"),
    [
        ({"BEDSIDE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs a sasl_mechanism"),
        ({"BEDSIDE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SECURITY_PROTOCOL"),
        ({"BEDSIDE_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"}, "SSL_CA_FILE"),
    ],
)
def test_bad_settings_are_one_clear_line(
    environment: dict[str, str],
    complaint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=complaint):
        load_kafka_settings()
    write_patient(tmp_path / "alpha", seconds=5)
    assert main(["replay", "wfdb", str(tmp_path / "alpha" / "alphan")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert (
        errors[-1].startswith("bedside: error: invalid Kafka settings") and complaint in errors[-1]
    )


def test_settings_never_read_the_environment_unless_built_at_an_entry_point() -> None:
    assert KafkaSettings(bootstrap_servers="k:1").bootstrap_servers == "k:1"


# --- the producer -------------------------------------------------------------------


def test_an_unreachable_broker_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_patient(tmp_path / "alpha", seconds=5)
    nobody = f"127.0.0.1:{free_port()}"
    argv = ["replay", "wfdb", str(tmp_path / "alpha"), "--bootstrap-servers", nobody]
    started = time.monotonic()
    assert main([*argv, "--connect-timeout", "1"]) == 2
    assert time.monotonic() - started < 20
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert errors[0].startswith(f"bedside: error: cannot reach a Kafka broker at {nobody}")


def test_ctrl_c_flushes_what_was_sent_and_exits_cleanly(kafka_broker: str, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    command = [
        sys.executable, "-m", "bedside.cli", "replay", "simulate", "--beds", "4",
        "--hours", "48", "--monitor-hz", "1", "--speed", "120",
        "--bootstrap-servers", kafka_broker, "--progress", "0.2", "--stats", str(stats),
    ]  # fmt: skip
    replay = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
    )
    assert replay.stderr is not None
    for line in replay.stderr:  # wait until it is publishing
        if line.startswith("replay: ") and "records/s" in line:
            break
    time.sleep(0.5)
    replay.send_signal(signal.SIGINT)
    out, err = replay.communicate(timeout=60)
    assert replay.returncode == 130, err
    assert "stopping" in err and "Traceback" not in err
    figures = json.loads(stats.read_text())
    assert figures["interrupted"] and figures["failed"] == 0 and figures["total"] > 0
    assert out.startswith(f"replay: interrupted after publishing {figures['total']:,} records")
    received = consume(kafka_broker, [VITALS_TOPIC, PATIENT_TOPIC], expected=figures["total"])
    assert len(received) == figures["total"]  # everything it counted was acknowledged


def test_dry_run_writes_json_lines_to_stdout_and_the_summary_to_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    write_patient(tmp_path / "alpha", seconds=5)
    argv = ["replay", "wfdb", str(tmp_path / "alpha" / "alphan"), "--to", "jsonl", "-"]
    assert main([*argv, "--speed", "max", "--progress", "0"]) == 0
    out, err = capfd.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["topic"] for line in lines[:2]] == [PATIENT_TOPIC, VITALS_TOPIC]
    decode(VITALS_TOPIC, json.dumps(lines[1]["value"]))
    assert "replay: published 6 records" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "wfdb", "--help"],
        ["replay", "events", "--help"],
        ["replay", "simulate", "--help"],
        ["bench", "replay", "--help"],
    ],
)
def test_replay_commands_have_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert "usage: bedside" in capsys.readouterr().out


def test_bench_replay_runs_and_reports_both_goals(
    kafka_broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = tmp_path / "figures.json"
    argv = ["bench", "replay", "--bootstrap-servers", kafka_broker, "--beds", "3"]
    argv += ["--throughput-beds", "2", "--records", "300", "--window", "1", "--warmup", "2"]
    assert main([*argv, "--work", str(tmp_path), "--json", str(figures)]) == 0
    result = json.loads(figures.read_text())
    assert result["speed_max"]["raw_per_s"] > 0 and result["speed_max"]["replay_per_s"] > 0
    assert 0 <= result["real_time"]["cpu_share"] < 1
    assert "of one core" in capsys.readouterr().out
