"""Kafka for the ward's consumers: reading topics without a group, publishing acknowledgements.

The ward page and ``bedside watch`` are viewers: each reads every partition of its
topics itself (explicit assignment, no consumer group, no committed offsets), so any
number of them can run side by side and none waits for a group rebalance. Partitions
that exist when the reader starts are read from their end (``start="latest"``, the
default) or from their beginning; partitions of topics created later are read from
their beginning, so the first records of a new topic are not missed. Topics are never
created by a reader.

Acknowledgements are published keyed by bed (the engine keeps a bed's state on one
partition), waiting until the broker has them (``acks="all"``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from bedside.errors import BedsideError
from bedside.schemas.messages import ALERT_ACKS_TOPIC, ALERTS_TOPIC, Alert, AlertAck, encode
from bedside.settings import KafkaSettings

log = logging.getLogger(__name__)

#: How often a reader looks for topics and partitions that have appeared.
DISCOVER_EVERY_S = 2.0


class KafkaUnavailable(BedsideError, ConnectionError):
    """No broker answered, or one refused a record (a single clear line for the CLI)."""


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def _unreachable(settings: KafkaSettings, timeout_s: float, error: Exception) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach a Kafka broker at {','.join(settings.servers())} within {timeout_s:g} s "
        f"({type(error).__name__}); is it running, and are --bootstrap-servers / "
        "BEDSIDE_KAFKA_BOOTSTRAP_SERVERS right?"
    )


class TopicReader:
    """Every partition of ``topics``, assigned explicitly (see the module docstring)."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: list[str],
        *,
        start: Literal["latest", "earliest"] = "latest",
        connect_timeout_s: float = 10.0,
    ) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        self.topics = list(topics)
        self._start = start
        self._assigned: set[Any] = set()
        self._discovered_at = float("-inf")
        try:
            self._consumer = KafkaConsumer(
                **settings.kafka_python_config(),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                allow_auto_create_topics=False,
                bootstrap_timeout_ms=round(connect_timeout_s * 1000),
            )
        except KafkaError as error:
            raise _unreachable(settings, connect_timeout_s, error) from None
        self._discover()

    def _discover(self) -> None:
        from kafka import TopicPartition

        self._discovered_at = time.monotonic()
        found = {
            TopicPartition(topic, partition)
            for topic in self.topics
            for partition in self._consumer.partitions_for_topic(topic)
        }
        new = found - self._assigned
        if not new:
            return
        first = not self._assigned and self._start == "latest"
        self._consumer.assign(sorted(found))
        if first:
            self._consumer.seek_to_end(*new)
        else:
            self._consumer.seek_to_beginning(*new)
        # After the first look, anything new was created after we started: read it all.
        self._start = "earliest"
        self._assigned = found

    def poll(self, timeout_s: float = 0.5) -> list[Record]:
        """Records that arrived, in order within each partition (waits up to ``timeout_s``)."""
        if time.monotonic() - self._discovered_at > DISCOVER_EVERY_S:
            self._discover()
        if not self._assigned:
            time.sleep(timeout_s)
            return []
        batch = self._consumer.poll(timeout_ms=round(timeout_s * 1000))
        return [
            Record(part.topic, part.partition, r.offset, r.key, r.value)
            for part, records in batch.items()
            for r in records
        ]

    def __iter__(self) -> Iterator[Record]:
        while True:
            yield from self.poll()

    def close(self) -> None:
        self._consumer.close()


class AckPublisher:
    """Publishes :class:`AlertAck` to ``icu.alerts.ack.v1``; a call returns once the broker has it.

    A callable, so it is what :class:`~bedside.ward.feed.WardFeed` takes as ``acknowledge``.
    """

    def __init__(self, settings: KafkaSettings, *, connect_timeout_s: float = 10.0) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self._settings = settings
        self._timeout_s = connect_timeout_s
        try:
            self._producer = KafkaProducer(
                **settings.kafka_python_config(),
                acks="all",
                linger_ms=0,
                retries=5,
                bootstrap_timeout_ms=round(connect_timeout_s * 1000),
                max_block_ms=round(connect_timeout_s * 1000),
            )
        except KafkaError as error:
            raise _unreachable(settings, connect_timeout_s, error) from None

    def __call__(self, ack: AlertAck) -> None:
        from kafka.errors import KafkaError

        try:
            future = self._producer.send(ALERT_ACKS_TOPIC, key=ack.bed.encode(), value=encode(ack))
            future.get(timeout=self._timeout_s)
        except KafkaError as error:
            raise KafkaUnavailable(
                f"the acknowledgement of {ack.alert_id} was not published to {ALERT_ACKS_TOPIC} "
                f"({type(error).__name__}: {error})"
            ) from None
        log.info("acknowledgement of %s (bed %s) published", ack.alert_id, ack.bed)

    def close(self) -> None:
        self._producer.close(timeout=self._timeout_s)


def find_alert(
    settings: KafkaSettings,
    alert_id: str,
    *,
    quiet_s: float = 2.0,
    timeout_s: float = 15.0,
    connect_timeout_s: float = 10.0,
) -> Alert | None:
    """The latest record of an alert on ``icu.alerts.v1`` (read from the beginning), or None.

    Alerts are few (a handful per bed and day), so reading the topic is cheap. Stops when
    nothing has arrived for ``quiet_s`` seconds or after ``timeout_s``.
    """
    from bedside.schemas.messages import MessageError, decode

    reader = TopicReader(
        settings, [ALERTS_TOPIC], start="earliest", connect_timeout_s=connect_timeout_s
    )
    found: Alert | None = None
    try:
        deadline = time.monotonic() + timeout_s
        last_news = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_news < quiet_s:
            records = reader.poll(0.2)
            if records:
                last_news = time.monotonic()
            for record in records:
                try:
                    alert = decode(record.topic, record.value)
                except MessageError:
                    continue
                if alert.alert_id == alert_id:
                    found = alert
    finally:
        reader.close()
    return found
