"""``bedside watch``: alerts in a terminal with filters, and acknowledgements, on Tansu."""

from __future__ import annotations

import doctest
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path
from typing import IO

import pytest

import bedside.ward.watch
from bedside.schemas.messages import ALERT_ACKS_TOPIC, ALERTS_TOPIC, AlertAck, decode
from bedside.ward.audit import AuditStore
from bedside.ward.watch import (
    AlertFilter,
    AlertWatcher,
    WatchError,
    acknowledge_line,
    format_alert,
)
from tests.kafka_broker import consume
from tests.test_ward import alert, create_topics, publish

BEDSIDE = str(Path(sys.executable).with_name("bedside"))


def test_docstring_examples() -> None:
    result = doctest.testmod(bedside.ward.watch, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("argv", [["watch"], ["watch", "ack"], ["ward"]])
def test_consumers_have_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from bedside.cli import main

    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    assert "--bootstrap-servers" in capsys.readouterr().out


def test_filters_by_priority_and_bed() -> None:
    high_3 = alert(bed="icu1-03")
    medium_4 = alert(bed="icu1-04").model_copy(update={"priority": "medium"})
    only = AlertFilter.parse("high", None)
    assert only.matches(high_3) and not only.matches(medium_4)
    only = AlertFilter.parse(None, " icu1-04 ,icu1-05")
    assert not only.matches(high_3) and only.matches(medium_4)
    assert AlertFilter.parse("", "").matches(medium_4)
    with pytest.raises(WatchError, match="--priority"):
        AlertFilter.parse("high,urgent", None)


def test_lines_name_bed_and_alert_never_the_stay() -> None:
    line = format_alert(alert(), 2)
    assert "bed icu1-03" in line and "[#2 icu1-03:s7:risk:1]" in line and "HIGH" in line
    assert "s7 " not in line.replace("icu1-03:s7:risk:1", "")
    coloured = format_alert(alert(), colour=True)
    assert "\033[1;31mHIGH" in coloured


def test_keyboard_acknowledges_by_number_or_id() -> None:
    out = StringIO()
    watcher = AlertWatcher(out, AlertFilter.parse("high", None))
    watcher.take(ALERTS_TOPIC, alert(alert_id="a-1"))
    watcher.take(ALERTS_TOPIC, alert(alert_id="a-2", bed="icu1-04"))
    watcher.take(ALERTS_TOPIC, alert(alert_id="a-1", state="escalated"))
    assert [line.split("[")[1] for line in out.getvalue().splitlines()] == [
        "#1 a-1]",
        "#2 a-2]",
        "#1 a-1]",
    ]
    sent: list[AlertAck] = []
    ack = acknowledge_line("2 on my way\n", watcher, "nurse.lee", sent.append)
    assert sent == [ack] and (ack.alert_id, ack.bed, ack.note) == ("a-2", "icu1-04", "on my way")
    acknowledge_line("a-1", watcher, "nurse.lee", sent.append)
    assert sent[-1].alert_id == "a-1" and sent[-1].note == ""
    watcher.take(ALERTS_TOPIC, alert(alert_id="a-2", state="resolved"))
    with pytest.raises(WatchError, match="resolved"):
        acknowledge_line("2", watcher, "nurse.lee", sent.append)
    with pytest.raises(WatchError, match="no alert '9'"):
        acknowledge_line("9", watcher, "nurse.lee", sent.append)


def start_watch(servers: str, log: Path, *extra: str) -> subprocess.Popen[str]:
    """``bedside watch`` once it reads the topics (its stderr goes to ``log``)."""
    process = subprocess.Popen(
        [BEDSIDE, "watch", "--bootstrap-servers", servers, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    wait_for(log, "watching icu.alerts.v1", process)
    return process


def wait_for(log: Path, text: str, process: subprocess.Popen[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no {text!r} from bedside watch: {log.read_text()}")
        time.sleep(0.05)


def read_line(stream: IO[str] | None) -> str:
    assert stream is not None
    return stream.readline()


def test_watch_prints_filtered_alerts_and_audits_all(kafka_broker: str, tmp_path: Path) -> None:
    create_topics(kafka_broker)
    audit = tmp_path / "audit.db"
    watch = start_watch(
        kafka_broker,
        tmp_path / "watch.log",
        "--priority",
        "high",
        "--count",
        "1",
        "--audit-db",
        str(audit),
    )
    medium = alert(alert_id="m-1", bed="icu1-04").model_copy(update={"priority": "medium"})
    publish(kafka_broker, [(ALERTS_TOPIC, medium), (ALERTS_TOPIC, alert())])
    output, _ = watch.communicate(timeout=30)
    assert watch.returncode == 0, (tmp_path / "watch.log").read_text()
    (line,) = output.splitlines()
    assert "HIGH" in line and "bed icu1-03" in line and "icu1-03:s7:risk:1" in line
    with AuditStore(str(audit)) as stored:
        assert sorted(a["alert_id"] for a in stored.alerts()) == ["icu1-03:s7:risk:1", "m-1"]


def test_watch_ack_publishes_an_alert_ack(kafka_broker: str) -> None:
    create_topics(kafka_broker)
    publish(kafka_broker, [(ALERTS_TOPIC, alert())])
    command = [BEDSIDE, "watch", "ack", "icu1-03:s7:risk:1", "--by", "dr.okafor"]
    result = subprocess.run(
        [*command, "--note", "seen", "--bootstrap-servers", kafka_broker],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "bed icu1-03" in result.stdout
    (record,) = consume(kafka_broker, [ALERT_ACKS_TOPIC], expected=1, settle_s=0.3, timeout_s=10)
    ack = decode(ALERT_ACKS_TOPIC, record.value)
    assert (ack.alert_id, ack.bed, ack.by, ack.note) == (
        "icu1-03:s7:risk:1",
        "icu1-03",
        "dr.okafor",
        "seen",
    )
    assert record.key == "icu1-03"


def test_watch_ack_of_an_unknown_alert_is_one_clear_line(kafka_broker: str) -> None:
    create_topics(kafka_broker)
    result = subprocess.run(
        [BEDSIDE, "watch", "ack", "nope", "--by", "lee", "--bootstrap-servers", kafka_broker],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "bedside: error: alert nope not found on icu.alerts.v1; give its bed with --bed"
    )


def test_watch_acknowledges_from_the_keyboard(kafka_broker: str, tmp_path: Path) -> None:
    create_topics(kafka_broker)
    log = tmp_path / "watch.log"
    audit = tmp_path / "audit.db"
    watch = start_watch(kafka_broker, log, "--by", "nurse.lee", "--audit-db", str(audit))
    try:
        publish(kafka_broker, [(ALERTS_TOPIC, alert())])
        assert "[#1 icu1-03:s7:risk:1]" in read_line(watch.stdout)
        assert watch.stdin is not None
        watch.stdin.write("1 on my way\n")
        watch.stdin.flush()
        wait_for(log, "acknowledgement of icu1-03:s7:risk:1 sent as nurse.lee", watch)
    finally:
        watch.terminate()
        watch.wait(timeout=15)
    (record,) = consume(kafka_broker, [ALERT_ACKS_TOPIC], expected=1, settle_s=0.3, timeout_s=10)
    ack = decode(ALERT_ACKS_TOPIC, record.value)
    assert (ack.by, ack.note, ack.bed) == ("nurse.lee", "on my way", "icu1-03")
    with AuditStore(str(audit)) as stored:
        assert [(a["acknowledged_by"], a["source"]) for a in stored.acknowledgements()] == [
            ("nurse.lee", "watch")
        ]
