"""The engine's Bytewax dataflow: monitoring streams in, anomalies, scores, alerts out.

::

    in ──decode──┬── valid ──key by shard──beds (stateful)──┐
                 └── rejected ──dead-letter────────────────────┴──out

* ``decode`` (:func:`bedside.engine.intake.accept`): schema validation; anything
  malformed goes to ``icu.deadletter.v1`` with the reason.
* ``beds`` (:class:`ShardLogic`, keyed by shard of beds so each bed's records stay in
  order on one worker): duplicates, clocks, detectors, waveforms, rolling window, imputation and
  survival model, alert policy (:mod:`bedside.engine.bed`).
* ``out``: one record per anomaly, score, alert or dead letter, keyed by bed.

The same flow runs on Kafka (:func:`kafka_flow`, ``bedside engine``) and in process
(:func:`run_records`, for the demo and tests): only the source and the sink differ.
The beds' states of each shard touched in an epoch are snapshotted (pickled by us, read
back only from the engine's own recovery store) at its end when recovery is on.
"""

from __future__ import annotations

import pickle
import time
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    Sink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from bedside.engine import metrics
from bedside.engine.bed import BedState, Engine
from bedside.engine.intake import INPUT_TOPICS, Accepted, Incoming, Outgoing, accept, dead_letter
from bedside.settings import KafkaSettings

#: Keys of the stateful step: each bed belongs to one shard, fixed by its name. Bytewax
#: pays a fixed cost per key and batch (a call, a wake-up check, a snapshot entry), so
#: thousands of beds are handed over as a few dozen shards, each holding its beds'
#: states; shards are spread over the workers. Changing it invalidates recovery stores.
SHARDS: Final = 64


def shard_of(bed: str) -> str:
    """The shard of a bed (stable across processes and restarts)."""
    return str(zlib.crc32(bed.encode()) % SHARDS)


class ShardLogic(StatefulBatchLogic[Accepted, Outgoing, bytes]):
    """Bytewax's handle on one shard: hands each bed's records of a batch, in order, to
    the engine with that bed's state."""

    def __init__(self, engine: Engine, resume: bytes | None) -> None:
        self.engine = engine
        self.beds: dict[str, BedState] = pickle.loads(resume) if resume is not None else {}
        #: Beds holding patient events (they need waking up even if they fall silent).
        self.holding = {bed for bed, state in self.beds.items() if state.held}

    def _state(self, bed: str) -> BedState:
        state = self.beds.get(bed)
        if state is None:
            state = self.beds[bed] = self.engine.new_bed(bed)
        return state

    def on_batch(self, values: list[Accepted]) -> tuple[Iterable[Outgoing], bool]:
        engine, out = self.engine, []
        if len(values) == 1:
            batches: dict[str, list[Accepted]] = {values[0].bed: values}
        else:
            batches = {}
            for item in values:
                batches.setdefault(item.bed, []).append(item)
        for bed, items in batches.items():
            state = self._state(bed)
            out.extend(engine.process(state, items))
            if state.held:
                self.holding.add(bed)
            else:
                self.holding.discard(bed)
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Outgoing], bool]:
        out: list[Outgoing] = []
        for state in self.beds.values():
            out.extend(self.engine.finish(state))
        self.holding.clear()
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Outgoing], bool]:
        out: list[Outgoing] = []
        now = time.time()
        for bed in list(self.holding):
            state = self.beds[bed]
            out.extend(self.engine.release_held(state, now))
            if not state.held:
                self.holding.discard(bed)
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """Wake up when a held patient event is due (its bed may be silent by then)."""
        if not self.holding:
            return None
        now = time.time()
        due = [self.engine.next_release_s(self.beds[bed], now) for bed in self.holding]
        soonest = min((d for d in due if d is not None), default=None)
        return None if soonest is None else datetime.fromtimestamp(soonest, UTC)

    def snapshot(self) -> bytes:
        return pickle.dumps(self.beds, protocol=pickle.HIGHEST_PROTOCOL)


def _shard_of(item: Accepted) -> str:
    return shard_of(item.bed)


def _is_valid(item: Any) -> bool:
    return isinstance(item, Accepted)


def _rejected(item: Any) -> Outgoing:
    metrics.outcome(item.topic, "deadlettered")
    return dead_letter(item)


def _unkey(pair: tuple[str, Outgoing]) -> Outgoing:
    return pair[1]


def build_flow(
    engine: Engine,
    source: Source[Any],
    sink: Sink[Any],
    *,
    keyed_output: bool = False,
) -> Dataflow:
    """The engine's dataflow between a source of records and a sink of
    :class:`~bedside.engine.intake.Outgoing` records, or of ``(bed, Outgoing)`` pairs
    with ``keyed_output`` (a partitioned sink, such as :class:`KafkaOutput`)."""
    flow = Dataflow("bedside-engine")
    records = op.input("in", flow, source)
    decoded = op.map("decode", records, accept)
    valid = op.branch("valid", decoded, _is_valid)
    keyed = op.key_on("by-shard", valid.trues, _shard_of)
    scored = op.stateful_batch("beds", keyed, lambda resume: ShardLogic(engine, resume))
    rejected = op.map("dead-letter", valid.falses, _rejected)
    if keyed_output:
        letters = op.key_on("by-topic", rejected, _topic_of)
        op.output("out", op.merge("outputs", scored, letters), sink)
    else:
        op.output("out", op.merge("outputs", op.map("unkey", scored, _unkey), rejected), sink)
    return flow


def _topic_of(record: Outgoing) -> str:
    return str(record.topic)


# --- in process ------------------------------------------------------------------------


class _CallbackPartition(StatelessSinkPartition[Outgoing]):
    def __init__(self, write: Callable[[list[Outgoing]], None]) -> None:
        self._write = write

    def write_batch(self, items: list[Outgoing]) -> None:
        self._write(items)


class CallbackSink(DynamicSink[Outgoing]):
    """Hands each batch of output records to a function (the demo's ward view, tests)."""

    def __init__(self, write: Callable[[list[Outgoing]], None]) -> None:
        self._write = write

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CallbackPartition:
        return _CallbackPartition(self._write)


def run_records(
    engine: Engine,
    records: Iterable[Incoming | Any],
    write: Callable[[list[Outgoing]], None] | None = None,
    *,
    batch_size: int = 1000,
) -> list[Outgoing]:
    """Run the flow in this thread over ``records``; the outputs in order.

    ``records`` may hold ``bytewax.testing.TestingSource.PAUSE`` items: the batch read so
    far goes to the engine at once and reading resumes after the pause (a paced replay).

    With ``write``, outputs go to it batch by batch (and the returned list is empty).
    """
    from bytewax.testing import TestingSource, run_main

    collected: list[Outgoing] = []
    sink = CallbackSink(write if write is not None else collected.extend)
    run_main(
        build_flow(  # type: ignore[no-untyped-call]
            engine, TestingSource(records, batch_size=batch_size), sink
        )
    )
    return collected


# --- on Kafka --------------------------------------------------------------------------


class _KafkaOutputPartition(StatefulSinkPartition[Outgoing, None]):
    def __init__(self, producer: Any) -> None:
        self._producer = producer

    def write_batch(self, values: list[Outgoing]) -> None:
        produce, poll = self._producer.produce, self._producer.poll
        for record in values:
            while True:
                try:
                    produce(record.topic, value=record.value, key=record.key)
                    break
                except BufferError:  # librdkafka's queue is full: let it send
                    poll(0.05)
        poll(0)

    def snapshot(self) -> None:
        # The epoch's outputs are delivered before its input offsets are committed, so a
        # crash can repeat outputs but never lose one.
        if self._producer.flush(60) > 0:
            raise RuntimeError("Kafka did not acknowledge the outputs within 60 s")

    def close(self) -> None:
        self._producer.flush(60)


class KafkaOutput(FixedPartitionedSink[Outgoing, None]):
    """Publishes ``(bed, Outgoing)`` pairs without waiting for each batch's delivery.

    Bytewax's own Kafka sink flushes after every batch, and a single-threaded engine
    then waits for the broker's round trip many times a second (seconds of latency at
    2,000 beds). Here records are handed to librdkafka as they come and delivered in
    the background; the sink's snapshot at the end of each epoch waits for delivery, so
    recovery keeps its at-least-once guarantee. One producer serves the process.
    """

    PARTITIONS = 8

    def __init__(self, config: dict[str, str]) -> None:
        self._config = config
        self._producer: Any = None
        self._failed = 0

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._failed += 1
            metrics.LOG.error("a record to %s was not delivered: %s", message.topic(), error)

    def list_parts(self) -> list[str]:
        return [f"out-{i}" for i in range(self.PARTITIONS)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _KafkaOutputPartition:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer({**self._config, "on_delivery": self._delivered})
        return _KafkaOutputPartition(self._producer)


def kafka_flow(
    engine: Engine,
    kafka: KafkaSettings,
    *,
    from_start: bool = True,
    batch_size: int = 1000,
) -> Dataflow:
    """The flow reading the input topics from Kafka and publishing to the output topics."""
    from bytewax.connectors.kafka import KafkaSource
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    config = kafka.librdkafka_config()
    brokers = kafka.servers()
    extra = {k: v for k, v in config.items() if k != "bootstrap.servers"}
    # Fetch what is there within 50 ms (librdkafka waits up to 500 ms by default), and
    # keep at most 16 MB read ahead per partition (64 MB by default).
    consumer = {**extra, "fetch.wait.max.ms": "50", "queued.max.messages.kbytes": "16384"}
    source = KafkaSource(
        brokers,
        list(INPUT_TOPICS),
        tail=True,
        starting_offset=OFFSET_BEGINNING if from_start else OFFSET_END,
        add_config=consumer,
        batch_size=batch_size,
        raise_on_errors=False,
    )
    producer = {
        **config,
        "linger.ms": "10",
        "compression.type": "gzip",
        "enable.idempotence": "true",
    }
    return build_flow(engine, source, KafkaOutput(producer), keyed_output=True)


def recovery_config(directory: Path, partitions: int = 1) -> Any:
    """Bytewax recovery in SQLite files under ``directory`` (created on first use)."""
    from bytewax.recovery import RecoveryConfig, init_db_dir

    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("part-*.sqlite3")):
        init_db_dir(directory, partitions)  # type: ignore[no-untyped-call]
    return RecoveryConfig(str(directory))  # type: ignore[no-untyped-call]


def epoch(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)
