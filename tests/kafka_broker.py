"""Reading back what was published to the test broker (Tansu, started per test).

Consumers assign every partition explicitly: a consumer-group join takes ~23 s on
Tansu. Tansu's ListOffsets answers are not reliable (the latest offset it reports can
be a batch's first offset), so reading stops when the expected count has arrived and
nothing more comes for a moment, or when nothing has come for a while.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition


@dataclass(frozen=True)
class Received:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


def consume(
    servers: str,
    topics: list[str],
    *,
    expected: int | None = None,
    settle_s: float = 1.0,
    timeout_s: float = 30.0,
) -> list[Received]:
    """Every record of ``topics``, in partition order; more than ``expected`` shows up."""
    consumer = KafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        received: list[Received] = []
        deadline = time.monotonic() + timeout_s
        last_news = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            for part, records in batch.items():
                received.extend(
                    Received(part.topic, part.partition, r.offset, r.key.decode(), r.value)
                    for r in records
                )
            if batch:
                last_news = time.monotonic()
            quiet = time.monotonic() - last_news
            if expected is not None and len(received) >= expected and quiet > settle_s:
                break
            if expected is None and received and quiet > settle_s:
                break
        received.sort(key=lambda r: (r.topic, r.partition, r.offset))
        return received
    finally:
        consumer.close()
