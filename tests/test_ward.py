"""The ward page: the ward state built from messages, its HTTP API and event stream, and
``bedside ward`` on a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import bedside.ward.feed
from bedside.schemas.messages import (
    ALERT_ACKS_TOPIC,
    ALERTS_TOPIC,
    ANOMALIES_TOPIC,
    PATIENT_TOPIC,
    SCORES_TOPIC,
    VITALS_TOPIC,
    Admit,
    Alert,
    AlertAck,
    Anomaly,
    Discharge,
    HorizonRisk,
    Score,
    Vitals,
    decode,
    encode,
)
from bedside.ward.audit import AuditStore
from bedside.ward.feed import POINTS, AckRefused, WardFeed, WardState
from bedside.ward.web import WardServer
from tests.kafka_broker import consume

BEDSIDE = str(Path(sys.executable).with_name("bedside"))
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def vitals(bed: str = "icu1-03", seconds: float = 0, stay: str | None = "s7", **values: float):
    return Vitals(
        bed=bed,
        stay_id=stay,
        time=T0 + timedelta(seconds=seconds),
        source="monitor",
        seq=int(seconds),
        values=values or {"heart_rate": 88.0, "spo2": 96.0, "arterial_mean_bp": 71.0},
    )


def score(bed: str = "icu1-03", minutes: float = 0, risk: float = 0.4) -> Score:
    return Score(
        bed=bed,
        stay_id="s7",
        time=T0 + timedelta(minutes=minutes),
        model_id="tsfel-lr",
        model_version="1",
        mortality=risk,
        risks=[HorizonRisk(horizon_h=24, risk=risk / 2), HorizonRisk(horizon_h=72, risk=risk)],
        imputed_fraction=0.25,
        staleness_s=30.0,
    )


def alert(state: str = "raised", bed: str = "icu1-03", alert_id: str = "icu1-03:s7:risk:1"):
    return Alert(
        alert_id=alert_id,
        bed=bed,
        stay_id="s7",
        time=T0 + timedelta(minutes=5),
        priority="high",
        state=state,
        reason="in-hospital mortality risk 0.81 at or above 0.50",
        horizon_h=24.0,
        risk=0.81,
    )


# --- the ward state ------------------------------------------------------------------


def test_docstring_examples() -> None:
    result = doctest.testmod(bedside.ward.feed, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_a_bed_shows_vitals_risk_trends_anomalies_and_data_quality() -> None:
    feed = WardFeed()
    for second in range(0, 600, 60):
        feed.publish(VITALS_TOPIC, vitals(seconds=second, heart_rate=80.0 + second / 60))
    feed.publish(SCORES_TOPIC, score(minutes=1, risk=0.3))
    feed.publish(SCORES_TOPIC, score(minutes=6, risk=0.5))
    feed.publish(
        ANOMALIES_TOPIC,
        Anomaly(
            bed="icu1-03",
            time=T0,
            concept="heart_rate",
            value=250.0,
            detector="robust_spike",
            kind="spike",
            score=1.0,
        ),
    )
    (bed,) = feed.snapshot()["beds"]
    heart = bed["vitals"][0]
    assert (heart["label"], heart["unit"], heart["value"]) == ("HR", "bpm", 89.0)
    assert [p[1] for p in heart["points"]] == [80.0 + i for i in range(10)]
    assert [(r["horizon_h"], r["risk"]) for r in bed["risks"]] == [(24, 0.25), (72, 0.5)]
    assert [p[1] for p in bed["risks"][1]["points"]] == [0.3, 0.5]
    assert bed["mortality"]["risk"] == 0.5
    assert bed["quality"]["imputed_fraction"] == 0.25
    assert bed["quality"]["staleness_s"] == 30.0
    assert bed["quality"]["last_vitals"] == "2026-03-01T08:09:00Z"
    assert bed["anomalies"]["count"] == 1
    assert bed["anomalies"]["recent"][0]["kind"] == "spike"
    assert "s7" not in json.dumps(bed), "the page names beds, not stays"


def test_sparklines_stay_bounded_and_a_new_patient_starts_a_clean_card() -> None:
    state = WardState(vitals_window_s=3600)
    for second in range(0, 4 * 3600, 5):
        state.apply(VITALS_TOPIC, vitals(seconds=second))
    points = state.beds["icu1-03"].view()["vitals"][0]["points"]
    assert len(points) <= POINTS + 1
    assert points[-1][0] - points[0][0] <= 3600
    state.apply(PATIENT_TOPIC, Discharge(bed="icu1-03", stay_id="s7", time=T0))
    assert state.beds["icu1-03"].status == "vacant"
    state.apply(PATIENT_TOPIC, Admit(bed="icu1-03", stay_id="s8", time=T0 + timedelta(hours=5)))
    view = state.beds["icu1-03"].view()
    assert view["status"] == "occupied" and view["vitals"] == []
    assert view["admitted"] == "2026-03-01T13:00:00Z"
    # Data of another stay without an admission also means the bed changed hands.
    state.apply(VITALS_TOPIC, vitals(seconds=6 * 3600, stay="s9"))
    assert len(state.beds["icu1-03"].view()["vitals"][0]["points"]) == 1


def test_alert_life_cycle_and_late_redelivery() -> None:
    state = WardState()
    state.apply(ALERTS_TOPIC, alert("raised"))
    state.apply(
        ALERT_ACKS_TOPIC, AlertAck(alert_id="icu1-03:s7:risk:1", bed="icu1-03", time=T0, by="lee")
    )
    assert state.alerts["icu1-03:s7:risk:1"].view()["acknowledged_by"] == "lee"
    state.apply(ALERTS_TOPIC, alert("acknowledged"))
    state.apply(ALERTS_TOPIC, alert("resolved"))
    assert not state.apply(ALERTS_TOPIC, alert("raised")), "a re-delivered record reopened it"
    assert state.alerts["icu1-03:s7:risk:1"].alert.state == "resolved"
    assert state.ward_view()["open_alerts"]["high"] == 0


def test_changes_since_names_only_what_changed() -> None:
    feed = WardFeed()
    feed.publish(VITALS_TOPIC, vitals(bed="icu1-01"))
    feed.publish(VITALS_TOPIC, vitals(bed="icu1-02"))
    version = feed.version
    assert feed.changes_since(version)[1:] == ([], [], None)
    feed.publish(VITALS_TOPIC, vitals(bed="icu1-02", seconds=60))
    feed.publish(ALERTS_TOPIC, alert(bed="icu1-02"))
    _, beds, alerts, ward = feed.changes_since(version)
    assert [b["bed"] for b in beds] == ["icu1-02"]
    assert [a["alert_id"] for a in alerts] == ["icu1-03:s7:risk:1"]
    assert ward is not None and ward["open_alerts"]["high"] == 1


def test_acknowledge_goes_to_the_callback_and_the_audit(tmp_path: Path) -> None:
    sent: list[AlertAck] = []
    audit = AuditStore(str(tmp_path / "audit.db"))
    feed = WardFeed(acknowledge=sent.append, audit=audit)
    feed.publish(ALERTS_TOPIC, alert("raised"))
    ack = feed.acknowledge("icu1-03:s7:risk:1", by=" nurse.lee ", note="coming")
    assert sent == [ack] and (ack.by, ack.bed, ack.note) == ("nurse.lee", "icu1-03", "coming")
    assert feed.snapshot()["alerts"][0]["acknowledged_by"] == "nurse.lee"
    # The same acknowledgement read back from Kafka is not stored twice.
    feed.publish(ALERT_ACKS_TOPIC, ack)
    assert [(a["acknowledged_by"], a["source"]) for a in audit.acknowledgements()] == [
        ("nurse.lee", "ward page")
    ]
    assert [a["state"] for a in audit.alerts()] == ["raised"]
    with pytest.raises(AckRefused) as refused:
        feed.acknowledge("nope", by="lee")
    assert refused.value.why == "unknown"
    with pytest.raises(AckRefused) as refused:
        feed.acknowledge("icu1-03:s7:risk:1", by="   ")
    assert refused.value.why == "invalid"
    feed.publish(ALERTS_TOPIC, alert("resolved"))
    with pytest.raises(AckRefused) as refused:
        feed.acknowledge("icu1-03:s7:risk:1", by="lee")
    assert refused.value.why == "closed"
    audit.close()


# --- HTTP ------------------------------------------------------------------------------


class EventStream:
    """The page's server-sent events, read as a browser would."""

    def __init__(self, base: str) -> None:
        self._response = urllib.request.urlopen(base + "events", timeout=10)
        assert self._response.headers["Content-Type"].startswith("text/event-stream")

    def next(self, kind: str, match: Any = None, timeout_s: float = 20.0) -> dict[str, Any]:
        """The first event of ``kind`` (whose data passes ``match``) to arrive."""
        deadline = time.monotonic() + timeout_s
        event, data = None, ""
        while time.monotonic() < deadline:
            line = self._response.readline().decode()
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "\n" and event is not None:
                payload = json.loads(data)
                if event == kind and (match is None or match(payload)):
                    return payload
                event, data = None, ""
        raise AssertionError(f"no {kind} event within {timeout_s} s")

    def close(self) -> None:
        self._response.close()


def post_ack(base: str, body: Any, **headers: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        base + "api/ack",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def served() -> Iterator[tuple[WardFeed, str, list[AlertAck]]]:
    sent: list[AlertAck] = []
    feed = WardFeed(acknowledge=sent.append)
    with WardServer(feed, port=0, tick_s=0.05) as server:
        yield feed, server.url, sent


def test_page_is_self_contained_and_locked_down(
    served: tuple[WardFeed, str, list[AlertAck]],
) -> None:
    _, base, _ = served
    with urllib.request.urlopen(base, timeout=5) as response:
        page = response.read().decode()
        csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert '<script src="/static/ward.js">' in page
    for name in ("ward.js", "ward.css"):
        with urllib.request.urlopen(base + "static/" + name, timeout=5) as response:
            text = response.read().decode()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
        assert "innerHTML" not in text, "message text must never be parsed as HTML"
    # A page reached under another host name (DNS rebinding) gets nothing.
    request = urllib.request.Request(base + "api/ward", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 421


def test_event_stream_delivers_beds_and_alerts_and_post_ack_sends_it(
    served: tuple[WardFeed, str, list[AlertAck]],
) -> None:
    feed, base, sent = served
    stream = EventStream(base)
    try:
        assert stream.next("snapshot")["beds"] == []
        feed.publish(VITALS_TOPIC, vitals())
        bed = stream.next("bed")
        assert bed["bed"] == "icu1-03" and bed["vitals"][0]["value"] == 88.0
        feed.publish(ALERTS_TOPIC, alert())
        assert stream.next("alert")["state"] == "raised"

        status, body = post_ack(base, {"alert_id": "icu1-03:s7:risk:1", "by": "nurse.lee"})
        assert status == 202 and body["ack"]["by"] == "nurse.lee"
        assert [(a.alert_id, a.bed, a.by) for a in sent] == [
            ("icu1-03:s7:risk:1", "icu1-03", "nurse.lee")
        ]
        assert stream.next("alert")["acknowledged_by"] == "nurse.lee"
    finally:
        stream.close()


def test_post_ack_refusals(served: tuple[WardFeed, str, list[AlertAck]]) -> None:
    feed, base, sent = served
    feed.publish(ALERTS_TOPIC, alert())
    assert post_ack(base, {"alert_id": "nope", "by": "lee"})[0] == 404
    assert post_ack(base, {"alert_id": "icu1-03:s7:risk:1", "by": ""})[0] == 400
    assert post_ack(base, {"alert_id": 7, "by": "lee"})[0] == 400
    other_site = {"Origin": "http://evil.example"}
    assert post_ack(base, {"alert_id": "icu1-03:s7:risk:1", "by": "lee"}, **other_site)[0] == 403
    request = urllib.request.Request(base + "api/ack", data=b"alert_id=x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 415
    assert sent == []


def test_a_read_only_page_refuses_acknowledgements() -> None:
    feed = WardFeed()
    feed.publish(ALERTS_TOPIC, alert())
    with WardServer(feed, port=0) as server:
        status, body = post_ack(server.url, {"alert_id": "icu1-03:s7:risk:1", "by": "lee"})
    assert status == 403 and "read-only" in body["error"]


# --- bedside ward on Kafka -----------------------------------------------------------


def publish(servers: str, messages: list[tuple[str, Any]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=servers, acks="all")
    for topic, message in messages:
        producer.send(topic, key=message.bed.encode(), value=encode(message))
    producer.flush()
    producer.close()


def create_topics(servers: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    topics = [VITALS_TOPIC, SCORES_TOPIC, ANOMALIES_TOPIC, ALERTS_TOPIC, ALERT_ACKS_TOPIC]
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(topic, 2, 1) for topic in [*topics, PATIENT_TOPIC]])
    finally:
        admin.close()


def start_ward(servers: str, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """``bedside ward`` on a free port: the process and its page's URL."""
    command = [BEDSIDE, "ward", "--bootstrap-servers", servers, "--port", "0", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"ward page at (http://\S+)", log.read_text())
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            raise AssertionError(f"bedside ward exited: {log.read_text()}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"bedside ward did not start: {log.read_text()}")


@pytest.fixture
def ward_on_kafka(kafka_broker: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(bootstrap servers, page URL, audit database) of a running ``bedside ward``."""
    create_topics(kafka_broker)
    audit = tmp_path / "audit.db"
    process, url = start_ward(kafka_broker, tmp_path / "ward.log", "--audit-db", str(audit))
    try:
        yield kafka_broker, url, audit
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_bedside_ward_streams_kafka_and_publishes_acks(
    ward_on_kafka: tuple[str, str, Path],
) -> None:
    servers, base, audit_file = ward_on_kafka
    stream = EventStream(base)
    try:
        stream.next("snapshot")
        publish(servers, [(VITALS_TOPIC, vitals()), (SCORES_TOPIC, score())])
        bed = stream.next("bed", lambda b: b["risks"])
        assert bed["bed"] == "icu1-03" and bed["vitals"][0]["label"] == "HR"
        publish(servers, [(ALERTS_TOPIC, alert())])
        assert stream.next("alert")["alert_id"] == "icu1-03:s7:risk:1"

        status, _ = post_ack(base, {"alert_id": "icu1-03:s7:risk:1", "by": "nurse.lee"})
        assert status == 202
        (record,) = consume(servers, [ALERT_ACKS_TOPIC], expected=1, settle_s=0.3, timeout_s=10)
        ack = decode(ALERT_ACKS_TOPIC, record.value)
        assert (ack.alert_id, ack.bed, ack.by, record.key) == (
            "icu1-03:s7:risk:1",
            "icu1-03",
            "nurse.lee",
            "icu1-03",
        )
        # The engine's answer reaches the page.
        publish(servers, [(ALERTS_TOPIC, alert("acknowledged"))])
        assert stream.next("alert", lambda a: a["state"] == "acknowledged")
    finally:
        stream.close()
    with AuditStore(str(audit_file)) as audit:
        assert [a["state"] for a in audit.alerts()] == ["raised", "acknowledged"]
        assert [a["acknowledged_by"] for a in audit.acknowledgements()] == ["nurse.lee"]


def test_bedside_ward_says_when_kafka_is_unreachable(tmp_path: Path) -> None:
    from bedside.replay.tansu import free_port

    nowhere = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [BEDSIDE, "ward", "--bootstrap-servers", nowhere, "--port", "0", "--connect-timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"BEDSIDE_KAFKA_CLIENT_ID": "test", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("bedside: error: cannot reach")


def test_the_page_files_ship_with_the_package() -> None:
    import tomllib

    from bedside.ward.web import STATIC

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "static/*" in config["package-data"]["bedside.ward"]
    assert sorted(STATIC) == sorted(p.name for p in (root / "ward" / "static").iterdir())
