"""Fuzzing the Kafka decoders: whatever arrives, only ``MessageError`` comes out.

Three kinds of input for every topic: arbitrary bytes, arbitrary JSON, and
*near-valid* messages (a valid message with one to three fields mutated: deleted,
replaced by a hostile value, or joined by an unknown field). Then the engine's first
step, :func:`bedside.engine.intake.accept`, which must never raise, and its dead
letters, which must always be valid ``icu.deadletter.v1`` messages.

The strategies here are reused by the other ``test_fuzz_*.py``. Examples are few and
derandomized so that CI sees the same inputs every run; ``BEDSIDE_FUZZ_SCALE=50`` runs
fifty times more, random ones (see ``RELIABILITY.md``).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bedside.engine.intake import (
    DEAD_LETTER_PAYLOAD_BYTES,
    INPUT_TOPICS,
    Accepted,
    Incoming,
    Rejected,
    accept,
    dead_letter,
)
from bedside.schemas.messages import (
    ALERT_ACKS_TOPIC,
    ALERTS_TOPIC,
    ANOMALIES_TOPIC,
    DEADLETTER_TOPIC,
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_MESSAGE_BYTES,
    PATIENT_TOPIC,
    SCORES_TOPIC,
    TOPICS,
    VITALS_TOPIC,
    WAVEFORM_TOPIC,
    MessageError,
    decode,
    encode,
)

#: ``BEDSIDE_FUZZ_SCALE=N`` runs N times more examples, random ones (a deep run);
#: unset, every test runs its few examples, the same ones on every run (CI).
SCALE = int(os.environ.get("BEDSIDE_FUZZ_SCALE", "0"))


def fuzz(max_examples: int) -> settings:
    """Settings of a fuzz test: no deadline (first calls warm caches), and see SCALE."""
    return settings(
        max_examples=max_examples * max(SCALE, 1),
        deadline=None,
        derandomize=SCALE == 0,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


NOW = "2026-01-01T00:00:00Z"

#: One valid message per topic (as JSON values): the seeds of the near-valid inputs.
VALID: dict[str, list[dict[str, Any]]] = {
    VITALS_TOPIC: [
        {
            "bed": "icu1-03",
            "stay_id": "s1",
            "time": NOW,
            "source": "monitor",
            "seq": 7,
            "values": {"heart_rate": 82.0, "spo2": 97.0},
        }
    ],
    WAVEFORM_TOPIC: [
        {
            "bed": "icu1-03",
            "stay_id": "s1",
            "signal": "ecg_ii",
            "fs": 125.0,
            "start": NOW,
            "seq": 0,
            "units": "mV",
            "samples": [0.1, None, 0.2, 0.15],
        }
    ],
    PATIENT_TOPIC: [
        {
            "event": "admit",
            "bed": "icu1-03",
            "stay_id": "s1",
            "time": NOW,
            "age": 71.0,
            "sex": "F",
            "weight_kg": 70.0,
            "height_cm": 165.0,
            "icu_type": "medical",
        },
        {"event": "discharge", "bed": "icu1-03", "stay_id": "s1", "time": NOW},
        {"event": "death", "bed": "icu1-03", "stay_id": "s1", "time": NOW},
    ],
    ANOMALIES_TOPIC: [
        {
            "bed": "icu1-03",
            "time": NOW,
            "concept": "heart_rate",
            "value": 310.0,
            "detector": "plausibility",
            "kind": "implausible",
            "score": 1.0,
            "detail": "above 300",
        }
    ],
    SCORES_TOPIC: [
        {
            "bed": "icu1-03",
            "stay_id": "s1",
            "time": NOW,
            "model_id": "tsfel-lr-1234abcd",
            "model_version": "v1",
            "mortality": 0.12,
            "risks": [{"horizon_h": 24.0, "risk": 0.1}],
            "survival": [{"time_h": 0.0, "survival": 1.0}, {"time_h": 24.0, "survival": 0.9}],
            "imputed_fraction": 0.25,
            "staleness_s": 30.0,
        }
    ],
    ALERTS_TOPIC: [
        {
            "alert_id": "icu1-03:s1:risk:20260101T000000Z",
            "bed": "icu1-03",
            "time": NOW,
            "priority": "high",
            "state": "raised",
            "reason": "in-hospital mortality risk 0.72",
            "horizon_h": 24.0,
            "risk": 0.72,
        }
    ],
    ALERT_ACKS_TOPIC: [
        {
            "alert_id": "icu1-03:s1:risk:20260101T000000Z",
            "bed": "icu1-03",
            "time": NOW,
            "by": "nurse.lee",
            "note": "seen",
        }
    ],
    DEADLETTER_TOPIC: [
        {
            "source_topic": VITALS_TOPIC,
            "partition": 0,
            "offset": 12,
            "time": NOW,
            "step": "decode",
            "error": "invalid message",
            "payload_b64": "e30=",
        }
    ],
}


def nested(depth: int, kind: str = "list") -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


#: Values that have broken decoders elsewhere: non-finite and huge numbers, naive and
#: out-of-range datetimes, wrong types, long and odd strings, deep nesting.
HOSTILE_VALUES: list[Any] = [
    None,
    True,
    "",
    "x" * 65,
    "x" * 5000,
    "\x00",
    "é" * 300,
    "\U0001f600",
    -1,
    0,
    2**31,
    2**63,
    2**64 + 1,
    10**300,
    -(10**30),
    1e308,
    -1e308,
    5e-324,
    0.5,
    float("nan"),
    float("inf"),
    float("-inf"),
    "NaN",
    "Infinity",
    "1e400",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "2026-13-45T25:61:61Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "1899-12-31T23:59:59Z",
    "3000-01-01T00:00:00Z",
    1e20,
    -62135596800,
    [],
    {},
    [None] * 5000,
    list(range(4001)),
    nested(300),
    nested(300, "dict"),
    {"heart_rate": 1.0, "not_a_concept": 2.0},
    {f"c{i}": 1.0 for i in range(200)},
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
hostile = st.sampled_from(HOSTILE_VALUES) | json_values


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The places in a JSON value that a mutation can reach (not the root; three levels
    deep and the first three items of a list, so that huge inserted values stay cheap)."""
    if len(prefix) >= 3:
        return []
    found = []
    items = value.items() if isinstance(value, dict) else []
    if isinstance(value, list):
        items = list(enumerate(value[:3]))
    for key, item in items:
        found.append((*prefix, key))
        found.extend(_paths(item, (*prefix, key)))
    return found


@st.composite
def near_valid(draw: st.DrawFn, topic: str | None = None) -> tuple[str, dict[str, Any]]:
    """A valid message of ``topic`` (or of any topic) with one to three mutations."""
    topic = topic or draw(st.sampled_from(sorted(VALID)))
    message = copy.deepcopy(draw(st.sampled_from(VALID[topic])))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(message)
        path = draw(st.sampled_from(paths))
        parent = message
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = copy.deepcopy(draw(hostile))
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = copy.deepcopy(draw(hostile))
    return topic, message


def to_json(value: Any) -> bytes:
    """JSON as a careless producer writes it: NaN and Infinity literals included."""
    return json.dumps(value, allow_nan=True).encode()


def _finite_and_aware(value: Any) -> None:
    """Every float of a decoded message is finite and every datetime a real UTC instant."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _finite_and_aware(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            _finite_and_aware(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _finite_and_aware(item)
    elif isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, datetime):
        assert value.tzinfo is not None
        value.astimezone(UTC)


def check_decode(topic: str, payload: bytes | str) -> Any:
    """Decode; only MessageError may escape, and what decodes is clean and round-trips."""
    try:
        message = decode(topic, payload)
    except MessageError as error:
        assert error.topic == topic and error.reason
        return None
    _finite_and_aware(message)
    if topic in INPUT_TOPICS:
        moment = message.start if topic == WAVEFORM_TOPIC else message.time
        assert EARLIEST_TIME <= moment < LATEST_TIME
    again = encode(message)
    assert len(again) <= MAX_MESSAGE_BYTES
    assert decode(topic, again) == message
    return message


topics = st.sampled_from(sorted(TOPICS))


def test_every_seed_message_is_valid() -> None:
    for topic, messages in VALID.items():
        for message in messages:
            assert check_decode(topic, to_json(message)) is not None


@fuzz(60)
@given(topic=topics, payload=st.binary(max_size=2048))
@example(topic=VITALS_TOPIC, payload=b"\xff\xfe\x00")
@example(topic=VITALS_TOPIC, payload=b"")
def test_arbitrary_bytes_give_only_message_errors(topic: str, payload: bytes) -> None:
    check_decode(topic, payload)


@fuzz(60)
@given(topic=topics, value=json_values)
def test_arbitrary_json_gives_only_message_errors(topic: str, value: Any) -> None:
    check_decode(topic, to_json(value))
    check_decode(topic, json.dumps(value, allow_nan=True))


@fuzz(150)
@given(case=near_valid())
def test_near_valid_messages_give_only_message_errors(case: tuple[str, dict[str, Any]]) -> None:
    topic, message = case
    check_decode(topic, to_json(message))


@pytest.mark.parametrize("topic", sorted(VALID))
@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=lambda v: repr(v)[:24])
def test_each_hostile_value_in_each_field_is_refused_or_clean(topic: str, value: Any) -> None:
    """Exhaustive over the hostile values and the top-level fields of every topic."""
    for seed in VALID[topic]:
        for field in seed:
            check_decode(topic, to_json({**seed, field: value}))


@pytest.mark.parametrize("topic", sorted(TOPICS))
def test_oversized_and_deeply_nested_payloads_are_message_errors(topic: str) -> None:
    seed = VALID.get(topic, VALID[VITALS_TOPIC])[0]
    padded = to_json(seed)[:-1] + b" " * MAX_MESSAGE_BYTES + b"}"
    with pytest.raises(MessageError, match="exceeds"):
        decode(topic, padded)
    # Counted in bytes, not characters: 600,000 two-byte characters are 1.2 MB.
    with pytest.raises(MessageError, match="exceeds"):
        decode(topic, json.dumps({**seed, "note": "é" * 600_000}, ensure_ascii=False))
    for depth in (64, 1000, 100_000):
        with pytest.raises(MessageError):
            decode(topic, "[" * depth + "]" * depth)
        with pytest.raises(MessageError):
            decode(topic, json.dumps({**seed, "extra": nested(min(depth, 500), "dict")}))


def test_an_unknown_topic_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="unknown topic"):
        decode("icu.vitals.v0", to_json(VALID[VITALS_TOPIC][0]))


# --- the engine's intake ----------------------------------------------------------------

#: Topic names as Kafka allows them, the engine's own first.
kafka_topics = st.sampled_from([*INPUT_TOPICS, *sorted(TOPICS)]) | st.from_regex(
    r"[a-zA-Z0-9._-]{1,60}", fullmatch=True
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """What a topic may carry: valid, near-valid, arbitrary JSON or arbitrary bytes."""
    kind = draw(st.sampled_from(["valid", "near", "json", "bytes"]))
    if kind == "valid":
        topic = draw(st.sampled_from(sorted(VALID)))
        return to_json(draw(st.sampled_from(VALID[topic])))
    if kind == "near":
        return to_json(draw(near_valid())[1])
    if kind == "json":
        return to_json(draw(json_values))
    return draw(st.binary(max_size=512))


int64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def incoming(draw: st.DrawFn) -> Incoming:
    return Incoming(
        topic=draw(kafka_topics),
        value=draw(payloads()),
        key=draw(st.none() | st.binary(max_size=16)),
        partition=draw(st.none() | st.integers(-1, 2**31 - 1)),
        offset=draw(st.none() | int64),
        timestamp=draw(st.none() | st.tuples(st.integers(0, 2), int64)),
    )


def check_dead_letter(rejected: Rejected, value: bytes) -> None:
    """The dead letter of a rejected record is a valid message that keeps its evidence."""
    out = dead_letter(rejected)
    assert out.topic == DEADLETTER_TOPIC and out.key == rejected.topic.encode()
    letter = decode(DEADLETTER_TOPIC, out.value)
    assert letter.source_topic == rejected.topic and letter.error
    kept = base64.b64decode(letter.payload_b64)
    assert kept == value[:DEAD_LETTER_PAYLOAD_BYTES]
    if len(value) > DEAD_LETTER_PAYLOAD_BYTES:
        assert "cut to" in letter.error


@fuzz(200)
@given(record=incoming())
def test_intake_never_raises_and_dead_letters_are_valid(record: Incoming) -> None:
    result = accept(record)
    assert isinstance(result, Accepted | Rejected)
    if isinstance(result, Accepted):
        assert record.topic in INPUT_TOPICS
        assert result.bed == result.message.bed and result.payload == record.value
        assert math.isfinite(result.sent_s)
    else:
        assert result.payload == record.value
        check_dead_letter(result, record.value)


@pytest.mark.parametrize(
    "value",
    [
        b"x" * (MAX_MESSAGE_BYTES + 1),
        to_json(VALID[VITALS_TOPIC][0])[:-1] + b" " * MAX_MESSAGE_BYTES + b"}",
        b"",
        None,
    ],
    ids=["oversized-garbage", "oversized-valid", "empty", "none"],
)
def test_intake_dead_letters_oversized_and_empty_records(value: bytes | None) -> None:
    record = Incoming(VITALS_TOPIC, value, None, 0, 5, (0, 1_700_000_000_000))  # type: ignore[arg-type]
    result = accept(record)
    assert isinstance(result, Rejected)
    check_dead_letter(result, value or b"")


def test_a_broken_record_from_the_consumer_is_dead_lettered() -> None:
    """Bytewax hands over a KafkaError (``err`` and ``msg``) for a record it could not read."""
    inner = SimpleNamespace(topic=VITALS_TOPIC, partition=2, offset=9, value=None)
    result = accept(SimpleNamespace(err="Local: Bad message format", msg=inner))
    assert isinstance(result, Rejected) and result.step == "read"
    check_dead_letter(result, b"")
