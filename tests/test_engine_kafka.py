"""``bedside engine`` on a real Kafka-protocol broker (Tansu): replays in, records out,
SIGKILL and recovery, accounting read from the engine's Prometheus metrics."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bedside.engine.intake import INPUT_TOPICS
from bedside.replay.kafka import KafkaSink
from bedside.replay.simulator import simulate_ward
from bedside.replay.tansu import BrokerError, TansuBroker, free_port
from bedside.replay.ward import topic_of
from bedside.schemas.messages import (
    ALERTS_TOPIC,
    ANOMALIES_TOPIC,
    DEADLETTER_TOPIC,
    SCORES_TOPIC,
    Vitals,
    decode,
    encode,
)
from bedside.settings import KafkaSettings
from tests.kafka_broker import Received, consume
from tests.realdata import shared

OUTPUT_TOPICS = [SCORES_TOPIC, ALERTS_TOPIC, ANOMALIES_TOPIC, DEADLETTER_TOPIC]
BEDSIDE = str(Path(sys.executable).with_name("bedside"))


def create_topics(servers: str, partitions: int = 2) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(t, partitions, 1) for t in [*INPUT_TOPICS, *OUTPUT_TOPICS]])
    finally:
        admin.close()


def publish(servers: str, messages: list) -> None:
    sink = KafkaSink(KafkaSettings(bootstrap_servers=servers))
    for message in messages:
        sink.send(topic_of(message), message.bed.encode(), encode(message))
    sink.flush()
    sink.close()


def start_engine(servers: str, model: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [BEDSIDE, "engine", "--model", str(model), "--bootstrap-servers", servers]
    return subprocess.Popen(
        [*command, "--no-future-limit", "--log-every", "1", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def stop(engine: subprocess.Popen[bytes], how: int = signal.SIGKILL) -> str:
    engine.send_signal(how)
    output, _ = engine.communicate(timeout=30)
    return output.decode(errors="replace")


def settled(servers: str, expected: int, timeout_s: float = 90.0) -> list[Received]:
    """The output records once at least ``expected`` distinct bed-minutes are scored and
    nothing moves. Distinct: a restarted engine may repeat scores, and counting repeats
    would stop the wait before the last minutes are out."""
    deadline = time.monotonic() + timeout_s
    seen = -1
    while True:
        records = consume(servers, OUTPUT_TOPICS, settle_s=0.5, timeout_s=3.0)
        scores = len(scored_minutes(records))
        if (scores >= expected and len(records) == seen) or time.monotonic() > deadline:
            return records
        seen = len(records)
        time.sleep(1.0)


def scored_minutes(records: list[Received]) -> Counter[tuple[str, str, str]]:
    minutes: Counter[tuple[str, str, str]] = Counter()
    for record in records:
        if record.topic == SCORES_TOPIC:
            score = decode(SCORES_TOPIC, record.value)
            minutes[(score.bed, score.stay_id, score.time.isoformat())] += 1
    return minutes


def alert_states(records: list[Received]) -> Counter[tuple[str, str]]:
    return Counter(
        (alert.alert_id, alert.state)
        for alert in (decode(ALERTS_TOPIC, r.value) for r in records if r.topic == ALERTS_TOPIC)
    )


@pytest.fixture
def two_brokers() -> Iterator[tuple[str, str]]:
    try:
        first = TansuBroker.start()
    except BrokerError as error:
        pytest.skip(f"no test broker: {error}")
    with first, TansuBroker.start() as second:
        yield first.bootstrap_servers, second.bootstrap_servers


def vitals_ward() -> list:
    """Twelve beds for six hours, patients coming and going (told by the vitals' stay)."""
    return [
        m
        for m in simulate_ward(12, 6, 21, monitor_hz=1 / 60, los_scale=0.1)
        if isinstance(m, Vitals)
    ]


def test_sigkill_at_random_points_loses_no_bed_minute_and_raises_no_alert_twice(
    two_brokers: tuple[str, str], engine_model_dir: Path, tmp_path: Path
) -> None:
    """The same input on two brokers: one engine runs undisturbed, the other is killed
    with SIGKILL at random points and restarted from its recovery store each time."""
    reference, chaos = two_brokers
    messages = vitals_ward()
    for servers in (reference, chaos):
        create_topics(servers)
        publish(servers, messages)
    options = ["--epoch", "0.2", "--batch-size", "20", "--alert-on-risk", "0.15"]

    undisturbed = start_engine(
        reference, engine_model_dir, "--recovery", str(tmp_path / "a"), *options
    )
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        engine = start_engine(chaos, engine_model_dir, "--recovery", str(tmp_path / "b"), *options)
        time.sleep(rng.uniform(2.5, 6.0))  # start-up takes ~2 s, then it is mid-stream
        stop(engine)
        kills += 1
    engine = start_engine(chaos, engine_model_dir, "--recovery", str(tmp_path / "b"), *options)
    try:
        expected_records = settled(reference, expected=1)
        expected = scored_minutes(expected_records)
        got_records = settled(chaos, expected=len(expected))
    finally:
        stop(undisturbed, signal.SIGTERM)
        log = stop(engine, signal.SIGTERM)
    got = scored_minutes(got_records)
    assert kills == 4 and len(expected) > 1000
    assert set(got) == set(expected), log[-2000:]  # every bed-minute scored, none invented
    assert max(expected.values()) == 1
    # Alerts: replays after a restart may repeat a record, never invent or lose one.
    reference_alerts, chaos_alerts = alert_states(expected_records), alert_states(got_records)
    assert set(chaos_alerts) == set(reference_alerts) and reference_alerts
    raised = [alert_id for alert_id, state in set(chaos_alerts) if state == "raised"]
    assert len(raised) == len(set(raised))


def metric(port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_faulty_replay_through_kafka_is_fully_accounted_for(
    kafka_broker: str, engine_model_dir: Path, tmp_path: Path
) -> None:
    create_topics(kafka_broker)
    manifest = tmp_path / "faults.jsonl"
    replay = subprocess.run(
        [
            BEDSIDE,
            "replay",
            "simulate",
            "--beds",
            "4",
            "--hours",
            "2",
            "--monitor-hz",
            "0.1",
            "--speed",
            "max",
            "--seed",
            "4",
            "--bootstrap-servers",
            kafka_broker,
            "--drop",
            "0.01",
            "--duplicate",
            "0.03",
            "--reorder",
            "0.02",
            "--delay",
            "0.02",
            "--corrupt",
            "0.02",
            "--schema-violation",
            "0.02",
            "--artefact",
            "0.02",
            "--faults-manifest",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    published = int(replay.stdout.split("published ")[1].split(" records")[0].replace(",", ""))
    port = free_port()
    engine = start_engine(kafka_broker, engine_model_dir, "--metrics-port", str(port))
    try:
        deadline = time.monotonic() + 90
        accounted = 0.0
        while time.monotonic() < deadline:
            time.sleep(1.0)
            try:
                accounted = metric(port, "bedside_engine_messages_total")
            except OSError:
                continue
            if accounted >= published:
                break
        time.sleep(1.0)
        outcomes = {
            o: metric(port, "bedside_engine_messages_total", outcome=o)
            for o in ("processed", "deadlettered", "duplicate")
        }
    finally:
        log = stop(engine, signal.SIGTERM)
    assert sum(outcomes.values()) == published, (outcomes, published, log[-1500:])
    faults = Counter(json.loads(line)["fault"] for line in manifest.read_text().splitlines())
    assert outcomes["deadlettered"] >= faults["corrupt"] + faults["schema_violation"] > 0
    assert outcomes["duplicate"] > 0
    records = consume(kafka_broker, OUTPUT_TOPICS, settle_s=1.0, timeout_s=10)
    topics = Counter(r.topic for r in records)
    assert topics[DEADLETTER_TOPIC] == outcomes["deadlettered"]
    assert topics[SCORES_TOPIC] > 100 and topics[ANOMALIES_TOPIC] > 0
    assert "Traceback" not in log
    # The engine's log names no bed, stay or value.
    assert "engine starting" in log and "processed=" in log
    assert "bed-0" not in log and "stay" not in log.replace("stay(s)", "")


def test_a_replayed_real_wfdb_record_is_scored(kafka_broker: str, engine_model_dir: Path) -> None:
    record = shared("mimic3wdb", "p000020")
    create_topics(kafka_broker)
    subprocess.run(
        [
            BEDSIDE,
            "replay",
            "wfdb",
            str(record),
            "--speed",
            "max",
            "--duration",
            "30m",
            "--bootstrap-servers",
            kafka_broker,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    engine = start_engine(kafka_broker, engine_model_dir)
    try:
        records = settled(kafka_broker, expected=20, timeout_s=120)
    finally:
        log = stop(engine, signal.SIGTERM)
    scores = [decode(SCORES_TOPIC, r.value) for r in records if r.topic == SCORES_TOPIC]
    assert len(scores) >= 20, log[-2000:]
    assert all(s.staleness_s < 600 for s in scores[5:])


def test_a_short_chaos_run_converges(engine_model_dir: Path, tmp_path: Path) -> None:
    """The CI version of ``bedside bench chaos``: SIGKILLs, a broker cut, a replay
    restarted from the beginning and a stalled engine, during one live replay."""
    from bedside.engine.chaos import chaos

    try:
        result = chaos(
            beds=6,
            hours=3.0,
            speed=360.0,
            kills=3,
            outage_s=3.0,
            stall_s=3.0,
            seed=11,
            model=engine_model_dir,
            work=tmp_path,
            log=lambda _: None,
        )
    except BrokerError as error:
        pytest.skip(f"no test broker: {error}")
    assert len(result["faults"]) == 6
    minutes = result["minutes"]
    assert minutes["bed_minutes_scored"] > 500 and minutes["ok"], minutes
    assert result["alerts"]["overlapping"] == 0 and result["dead_letters"] == 0
