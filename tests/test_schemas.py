"""Kafka messages: strict validation, exact round trips, JSON Schema kept in sync."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bedside.schemas import messages as m
from bedside.schemas.export import render

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
JSONSCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas" / "jsonschema"


def vitals(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "bed": "icu1-03",
        "stay_id": "s-1",
        "time": T0.isoformat(),
        "source": "monitor",
        "seq": 1,
        "values": {"heart_rate": 80.0, "spo2": 97.0},
    }
    body.update(changes)
    return body


EXAMPLES = {
    m.VITALS_TOPIC: m.Vitals.model_validate(vitals()),
    m.WAVEFORM_TOPIC: m.WaveformChunk(
        bed="b1", signal="ecg_ii", fs=125.0, start=T0, seq=0, units="mV", samples=[0.1, None, 0.3]
    ),
    m.PATIENT_TOPIC: m.Admit(bed="b1", stay_id="s1", time=T0, age=71, sex="F", icu_type="medical"),
    m.ANOMALIES_TOPIC: m.Anomaly(
        bed="b1",
        time=T0,
        concept="arterial_mean_bp",
        value=0.0,
        detector="sensor_off",
        kind="sensor_off",
        score=1.0,
    ),
    m.SCORES_TOPIC: m.Score(
        bed="b1",
        time=T0,
        model_id="lstm",
        model_version="3",
        risks=[m.HorizonRisk(horizon_h=24, risk=0.12)],
        survival=[
            m.SurvivalPoint(time_h=0, survival=1.0),
            m.SurvivalPoint(time_h=24, survival=0.88),
        ],
        imputed_fraction=0.25,
        staleness_s=30,
    ),
    m.ALERTS_TOPIC: m.Alert(
        alert_id="b1-s1-risk24-1",
        bed="b1",
        time=T0,
        priority="high",
        state="raised",
        reason="24 h mortality risk 0.41 above 0.30 for 3 of 4 evaluations",
    ),
    m.ALERT_ACKS_TOPIC: m.AlertAck(alert_id="b1-s1-risk24-1", bed="b1", time=T0, by="nurse-7"),
    m.DEADLETTER_TOPIC: m.DeadLetter(
        source_topic=m.VITALS_TOPIC,
        partition=0,
        offset=42,
        time=T0,
        step="decode",
        error="invalid JSON",
        payload_b64="e30=",
    ),
}


@pytest.mark.parametrize("topic", sorted(EXAMPLES))
def test_every_topic_round_trips_exactly(topic: str) -> None:
    message = EXAMPLES[topic]
    assert m.decode(topic, m.encode(message)) == message


def test_every_topic_has_an_example_and_a_version() -> None:
    assert set(EXAMPLES) == set(m.TOPICS)
    assert all(topic.startswith("icu.") and topic.endswith(".v1") for topic in m.TOPICS)


def test_patient_events_are_told_apart_by_their_kind() -> None:
    death = m.decode(
        m.PATIENT_TOPIC,
        b'{"event": "death", "bed": "b1", "stay_id": "s1", "time": "2026-01-01T08:00:00Z"}',
    )
    assert isinstance(death, m.Death)
    with pytest.raises(m.MessageError, match="event"):
        m.decode(
            m.PATIENT_TOPIC,
            b'{"event": "transfer", "bed": "b1", "stay_id": "s1", "time": "2026-01-01T08:00:00Z"}',
        )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"time": "2026-01-01T08:00:00"}, "timezone"),
        ({"values": {"heart_rate": "NaN"}}, "finite"),
        ({"values": {"heart_rate": 1e309}}, "finite"),
        ({"values": {"heart_rat": 80.0}}, "unknown concepts"),
        ({"values": {}}, "at least 1"),
        ({"seq": -1}, "greater than or equal"),
        ({"bed": "bed 1; drop"}, "pattern"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_bad_vitals_are_rejected_with_the_reason(change: dict[str, object], reason: str) -> None:
    payload = json.dumps(vitals(**change)).replace('"NaN"', "NaN")
    with pytest.raises(m.MessageError, match=reason) as caught:
        m.decode(m.VITALS_TOPIC, payload.encode())
    assert caught.value.topic == m.VITALS_TOPIC


def test_other_timezones_are_accepted_and_compare_equal() -> None:
    paris = T0.astimezone(timezone(timedelta(hours=1)))
    message = m.Vitals.model_validate(vitals(time=paris.isoformat()))
    assert message.time == T0


def test_oversized_payloads_are_refused_before_parsing() -> None:
    with pytest.raises(m.MessageError, match="exceeds"):
        m.decode(m.VITALS_TOPIC, b" " * (m.MAX_MESSAGE_BYTES + 1))


def test_messages_are_immutable() -> None:
    message = EXAMPLES[m.VITALS_TOPIC]
    with pytest.raises(ValueError, match="frozen"):
        message.bed = "other"  # type: ignore[misc]


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_fail_with_a_message_error(payload: bytes) -> None:
    for topic in m.TOPICS:
        try:
            m.decode(topic, payload)
        except m.MessageError as error:
            assert error.topic == topic


@given(
    st.dictionaries(
        st.sampled_from(["heart_rate", "spo2", "temperature", "lactate"]),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        min_size=1,
    ),
    st.integers(min_value=0, max_value=2**62),
)
def test_valid_vitals_round_trip(values: dict[str, float], seq: int) -> None:
    message = m.Vitals(bed="b", time=T0, source="x", seq=seq, values=values)
    assert m.decode(m.VITALS_TOPIC, m.encode(message)) == message


@pytest.mark.parametrize("topic", sorted(m.TOPICS))
def test_committed_json_schema_matches_the_models(topic: str) -> None:
    committed = JSONSCHEMA_DIR / f"{topic}.json"
    assert committed.exists(), "run: bedside schemas export schemas/jsonschema"
    assert committed.read_text("utf-8") == render(m.json_schemas()[topic]), (
        f"{committed} is stale; run: bedside schemas export schemas/jsonschema"
    )


def test_json_schema_lists_the_concepts_a_vitals_message_may_carry() -> None:
    schema = m.json_schemas()[m.VITALS_TOPIC]
    names = schema["properties"]["values"]["propertyNames"]["enum"]
    assert "heart_rate" in names and "lactate" in names
