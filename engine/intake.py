"""The engine's first step: every record read becomes a decoded message or a dead letter.

A record is anything with Kafka's ``topic``, ``key``, ``value``, ``partition``,
``offset`` and ``timestamp`` attributes: a Bytewax ``KafkaSourceMessage`` or, in
process, an :class:`Incoming`. Decoding goes through :func:`bedside.schemas.messages.decode`
(size limit, schema, no NaN); what fails, and what arrives on a topic the engine does
not read, becomes a :class:`Rejected` and then an ``icu.deadletter.v1`` record with the
reason and the payload. Nothing is dropped here.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from bedside.schemas.messages import (
    ALERT_ACKS_TOPIC,
    DEADLETTER_TOPIC,
    PATIENT_TOPIC,
    VITALS_TOPIC,
    WAVEFORM_TOPIC,
    DeadLetter,
    MessageError,
    decode,
    encode,
)

#: The topics the engine reads.
INPUT_TOPICS: Final = (VITALS_TOPIC, WAVEFORM_TOPIC, PATIENT_TOPIC, ALERT_ACKS_TOPIC)
#: Most bytes of a rejected payload kept in its dead letter (the rest is cut, and said so).
DEAD_LETTER_PAYLOAD_BYTES: Final = 64 * 1024


class Incoming(NamedTuple):
    """A record as read from a topic (in-process stand-in for a Kafka message)."""

    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    offset: int | None = None
    #: Kafka's (type, milliseconds since the epoch); None = unknown.
    timestamp: tuple[int, int] | None = None


class Accepted(NamedTuple):
    """A decoded message for one bed, with where it came from.

    Pickled (between the processes of a cluster, and in recovery snapshots) as its
    payload, decoded again on loading: five times cheaper than pickling the message.
    """

    bed: str
    topic: str
    message: Any
    partition: int | None
    offset: int | None
    #: When the record was produced (Kafka) or read (in process), seconds since the epoch.
    sent_s: float
    payload: bytes

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _accepted, (
            self.bed,
            self.topic,
            self.partition,
            self.offset,
            self.sent_s,
            self.payload,
        )


def _accepted(
    bed: str, topic: str, partition: int | None, offset: int | None, sent_s: float, payload: bytes
) -> Accepted:
    """An :class:`Accepted` from its pickle (its payload decoded once already)."""
    return Accepted(bed, topic, decode(topic, payload), partition, offset, sent_s, payload)


class Rejected(NamedTuple):
    """A record that is not a valid message, and why."""

    topic: str
    partition: int | None
    offset: int | None
    step: str
    error: str
    payload: bytes


class Outgoing(NamedTuple):
    """A record the engine publishes."""

    topic: str
    key: bytes
    value: bytes


def sent_seconds(record: Any) -> float:
    """When a record was produced according to Kafka, else now."""
    stamp = getattr(record, "timestamp", None)
    if stamp and stamp[0] != 0 and stamp[1] > 0:
        return float(stamp[1]) / 1000.0
    return time.time()


def accept(record: Any) -> Accepted | Rejected:
    """Decode one record of an input topic (pure, never raises)."""
    # Bytewax's KafkaError: the consumer reports a broken record.
    broken = None if type(record) is Incoming else getattr(record, "err", None)
    if broken is not None:
        inner = record.msg
        return Rejected(
            str(inner.topic), inner.partition, inner.offset, "read", str(broken), inner.value or b""
        )
    topic = str(record.topic)
    payload = record.value if isinstance(record.value, bytes) else bytes(record.value or b"")
    if topic not in INPUT_TOPICS:
        return Rejected(
            topic, record.partition, record.offset, "decode", "not an engine topic", payload
        )
    try:
        message = decode(topic, payload)
    except MessageError as error:
        return Rejected(topic, record.partition, record.offset, "decode", error.reason, payload)
    return Accepted(
        message.bed, topic, message, record.partition, record.offset, sent_seconds(record), payload
    )


def dead_letter(rejected: Rejected) -> Outgoing:
    """The ``icu.deadletter.v1`` record of a rejected input."""
    payload = rejected.payload
    error = rejected.error
    if len(payload) > DEAD_LETTER_PAYLOAD_BYTES:
        error += f" (payload of {len(payload)} bytes cut to {DEAD_LETTER_PAYLOAD_BYTES})"
        payload = payload[:DEAD_LETTER_PAYLOAD_BYTES]
    letter = DeadLetter(
        source_topic=rejected.topic,
        partition=rejected.partition,
        offset=rejected.offset,
        time=datetime.now(UTC),
        step=rejected.step,
        error=error[:2000],
        payload_b64=base64.b64encode(payload).decode(),
    )
    return Outgoing(DEADLETTER_TOPIC, rejected.topic.encode(), encode(letter))
