"""Where replayed messages go: a Kafka producer done right, or a JSON-lines dry run.

The producer (kafka-python) waits for every in-sync replica (``acks="all"``, with
idempotence so retries never duplicate), batches records per partition (up to 256 KB,
lingering 20 ms), compresses batches (gzip by default; lz4/zstd/snappy need their
Python packages), retries failed sends with backoff until a delivery timeout, and
keys every record by bed so that a bed's messages stay in order on one partition.
A broker that cannot be reached is one clear error, not a traceback.

The dry run writes one JSON object per line::

    {"topic":"icu.vitals.v1","key":"bed-01","value":{...the message...}}

with ``"value_b64"`` instead of ``"value"`` for payloads that are not valid UTF-8
JSON (injected corruption).
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from pathlib import Path
from typing import IO, Any, Final, Protocol

from bedside.replay.ward import ReplayError
from bedside.schemas.messages import MAX_MESSAGE_BYTES
from bedside.settings import KafkaSettings

COMPRESSIONS: Final = ("gzip", "lz4", "zstd", "snappy", "none")
#: Producer tuning: batches per partition, how long to wait to fill them, retry pacing.
BATCH_BYTES: Final = 256 * 1024
LINGER_MS: Final = 20
RETRY_BACKOFF_MS: Final = 200
DELIVERY_TIMEOUT_MS: Final = 120_000


class Sink(Protocol):
    """What the player publishes to."""

    target: str

    def send(self, topic: str, key: bytes, value: bytes) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def failures(self) -> tuple[int, str | None]:
        """Records the destination refused, and the first reason."""
        ...


def producer_config(
    settings: KafkaSettings, compression: str = "gzip", connect_timeout_s: float = 10.0
) -> dict[str, Any]:
    """kafka-python ``KafkaProducer`` arguments: the settings plus durable, batched sending."""
    return {
        **settings.kafka_python_config(),
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": None if compression == "none" else compression,
        "batch_size": BATCH_BYTES,
        "linger_ms": LINGER_MS,
        "retry_backoff_ms": RETRY_BACKOFF_MS,
        "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
        "max_request_size": 2 * MAX_MESSAGE_BYTES,
        "bootstrap_timeout_ms": round(connect_timeout_s * 1000),
        "max_block_ms": max(round(connect_timeout_s * 1000), 10_000),
    }


class KafkaSink:
    """Publishes through a kafka-python ``KafkaProducer`` (see the module docstring)."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        compression: str = "gzip",
        connect_timeout_s: float = 10.0,
    ) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaConfigurationError, KafkaError

        self.target = ",".join(settings.servers())
        self._lock = threading.Lock()
        self._failed = 0
        self._first_error: str | None = None
        config = producer_config(settings, compression, connect_timeout_s)
        try:
            self._producer = KafkaProducer(**config)
        except (KafkaConfigurationError, AssertionError, ValueError) as error:
            raise ReplayError(f"Kafka producer settings refused: {error}") from None
        except KafkaError as error:
            raise ReplayError(
                f"cannot reach a Kafka broker at {self.target} within {connect_timeout_s:g} s "
                f"({type(error).__name__}); is it running, and are --bootstrap-servers / "
                "BEDSIDE_KAFKA_BOOTSTRAP_SERVERS right?"
            ) from None

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        from kafka.errors import KafkaError

        try:
            future = self._producer.send(topic, key=key, value=value)
        except KafkaError as error:
            raise ReplayError(
                f"Kafka broker at {self.target} stopped taking records for {topic} "
                f"({type(error).__name__}: {error})"
            ) from None
        future.add_errback(self._failed_send)

    def _failed_send(self, error: BaseException) -> None:
        with self._lock:
            self._failed += 1
            if self._first_error is None:
                self._first_error = f"{type(error).__name__}: {error}"

    def flush(self) -> None:
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=DELIVERY_TIMEOUT_MS / 1000)
        except KafkaError as error:
            raise ReplayError(
                f"Kafka broker at {self.target} did not acknowledge everything: {error}"
            ) from None

    def close(self) -> None:
        self._producer.close(timeout=10)

    def failures(self) -> tuple[int, str | None]:
        with self._lock:
            return self._failed, self._first_error


class JsonlSink:
    """Writes records as JSON lines to a file (``-`` = standard output)."""

    def __init__(self, path: Path | str) -> None:
        self.target = "standard output" if str(path) == "-" else str(path)
        self._own = str(path) != "-"
        self._out: IO[bytes] = open(path, "wb") if self._own else sys.stdout.buffer  # noqa: SIM115

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        head = f'{{"topic":{json.dumps(topic)},"key":{json.dumps(key.decode())},'.encode()
        try:
            value.decode()
        except UnicodeDecodeError:  # corrupted on purpose (payloads are JSON otherwise)
            encoded = base64.b64encode(value).decode()
            self._out.write(head + f'"value_b64":"{encoded}"}}\n'.encode())
        else:
            self._out.write(head + b'"value":' + value + b"}\n")

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._out.close()

    def failures(self) -> tuple[int, str | None]:
        return 0, None


def read_jsonl(path: Path) -> list[tuple[str, str, bytes]]:
    """The (topic, key, payload) records of a dry-run file, in order."""
    records = []
    with path.open("rb") as lines:
        for line in lines:
            record = json.loads(line)
            if "value_b64" in record:
                payload = base64.b64decode(record["value_b64"])
            else:  # the payload's own bytes, exactly as published
                payload = line[line.index(b',"value":') + 9 : line.rstrip().rindex(b"}")]
            records.append((record["topic"], record["key"], payload))
    return records
