"""The engine's Bytewax dataflow: monitoring streams in, anomalies, scores, alerts out.

::

    in ──decode──┬── valid, by shard ──beds──┬── anomalies ─────────────────────────┐
                 │                           └── minutes due ──score──alerts── scores,
                 │                                                     alerts ────┤
                 └── rejected ──dead-letter─────────────────────────────────────────┴──out

* ``decode`` (:func:`decode_batch`, each record through
  :func:`bedside.engine.intake.accept`): schema validation; anything malformed goes to
  ``icu.deadletter.v1`` with the reason. The valid records of each batch read are
  handed on grouped by shard of beds (:class:`ShardBatch`): Bytewax's steps then cost
  per shard and batch, not per record.
* ``beds`` (:class:`ShardLogic`, keyed by shard so each bed's records stay in order on
  one worker): duplicates, clocks, detectors, waveforms, rolling window; each minute
  due becomes a :class:`~bedside.engine.bed.ScoreTask` (the window as it stands).
* ``score`` (stateless, :meth:`Engine.score <bedside.engine.bed.Engine.score>`): the
  minutes due in a batch, all shards together, through imputation and the survival
  model in one call: a model's cost is mostly per call, and beds' minutes fall at
  different moments, so a shard rarely has more than one due in a batch.
* ``alerts`` (:class:`AlertLogic`, keyed by shard): the score records and the alert
  policy, with the acknowledgements and closed stays the beds' step hands on in order.
* ``out``: one record per anomaly, score, alert or dead letter, keyed by bed; each bed's
  records of a topic in order.

The same flow runs on Kafka (:func:`kafka_flow`, ``bedside engine``) and in process
(:func:`run_records`, for the demo and tests): only the source and the sink differ.
The beds' states and alerting memory of each shard touched in an epoch are snapshotted
(pickled by us, read back only from the engine's own recovery store) at its end when
recovery is on.
"""

from __future__ import annotations

import gc
import pickle
import time
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, NamedTuple

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
from bedside.engine.alerts import AlertState
from bedside.engine.bed import SHARD_LAYOUT, AlertTask, Engine, Scored, Shard, Step
from bedside.engine.intake import (
    INPUT_TOPICS,
    Accepted,
    Incoming,
    Outgoing,
    Rejected,
    accept,
    dead_letter,
)
from bedside.engine.settings import BATCH_SIZE, EngineError
from bedside.settings import KafkaSettings

#: Keys of the stateful steps: each bed belongs to one shard, fixed by its name. Bytewax
#: pays a fixed cost per key and batch (a call, a wake-up check, a snapshot entry), so
#: thousands of beds are handed over as a few dozen shards, each holding its beds'
#: states. Bytewax sends a key to a worker by its hash: these 64 names (of "0" to "97")
#: fall evenly on 2, 4 and 8 workers, so each worker holds as many beds (a test checks
#: it; "0" to "63" put 29 and 35 on 2 workers). Changing them invalidates recovery
#: stores.
SHARD_NAMES: Final = (
    *("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14"),
    *("15", "16", "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27"),
    *("28", "29", "30", "31", "32", "33", "34", "35", "36", "37", "39", "40", "41"),
    *("42", "44", "45", "48", "50", "52", "53", "54", "55", "58", "59", "60", "61"),
    *("62", "64", "66", "67", "68", "72", "75", "83", "93", "97"),
)
SHARDS: Final = len(SHARD_NAMES)


@lru_cache(maxsize=1 << 16)
def shard_of(bed: str) -> str:
    """The shard of a bed (stable across processes and restarts)."""
    return SHARD_NAMES[zlib.crc32(bed.encode()) % SHARDS]


class ShardBatch(NamedTuple):
    """The valid records of one shard in a batch read, in the order read."""

    shard: str
    items: list[Accepted]


def decode_batch(records: list[Any]) -> list[ShardBatch | Rejected]:
    """Decode a batch of records read (a Bytewax batch step: pure, never raises): one
    :class:`ShardBatch` per shard with valid records, and each rejected record."""
    out: list[ShardBatch | Rejected] = []
    shards: dict[str, list[Accepted]] = {}
    for record in records:
        item = accept(record)
        if type(item) is Accepted:
            shard = shard_of(item.bed)
            batch = shards.get(shard)
            if batch is None:
                shards[shard] = [item]
            else:
                batch.append(item)
        else:
            out.append(item)
    out.extend(ShardBatch(shard, items) for shard, items in shards.items())
    return out


class ShardLogic(StatefulBatchLogic[ShardBatch, Step, bytes]):
    """Bytewax's handle on one shard: hands its records of a batch, each bed's in
    order, to the engine with the shard's state (:class:`~bedside.engine.bed.Shard`)."""

    def __init__(self, engine: Engine, resume: bytes | None, snapshots: bool = True) -> None:
        self.engine = engine
        self.snapshots = snapshots
        self.shard: Shard = engine.new_shard() if resume is None else _resumed(resume)

    def on_batch(self, values: list[ShardBatch]) -> tuple[Iterable[Step], bool]:
        items = values[0].items if len(values) == 1 else [i for b in values for i in b.items]
        return self.engine.beds(self.shard, items), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Step], bool]:
        out: list[Step] = []
        for state in self.shard.beds.values():
            out.extend(self.engine.finish(state))
        self.shard.holding.clear()
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Step], bool]:
        out: list[Step] = []
        now = time.time()
        holding = self.shard.holding
        for bed in list(holding):
            state = self.shard.beds[bed]
            out.extend(self.engine.release_held(state, now))
            if not state.held:
                holding.discard(bed)
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """Wake up when a held patient event is due (its bed may be silent by then)."""
        holding = self.shard.holding
        if not holding:
            return None
        now = time.time()
        beds = self.shard.beds
        due = [self.engine.next_release_s(beds[bed], now) for bed in holding]
        soonest = min((d for d in due if d is not None), default=None)
        return None if soonest is None else datetime.fromtimestamp(soonest, UTC)

    def snapshot(self) -> bytes:
        # Bytewax asks at the end of every epoch, recovery on or not: without a recovery
        # store nothing would read the states back, and pickling them all is not free.
        if not self.snapshots:
            return b""
        return pickle.dumps(self.shard, protocol=pickle.HIGHEST_PROTOCOL)


_EARLIER_STORE: Final = (
    "the recovery folder was written by an earlier version of the engine, whose state "
    "it cannot read: start this version with a new --recovery folder"
)


def _stored(resume: bytes) -> Any:
    """A state the engine pickled into its own recovery store (never a message)."""
    return pickle.loads(resume)


def _resumed(resume: bytes) -> Shard:
    """A shard's state from the engine's own recovery store."""
    shard = _stored(resume)
    if not isinstance(shard, Shard) or vars(shard).get("layout") != SHARD_LAYOUT:
        raise EngineError(_EARLIER_STORE)
    shard.holding = {bed for bed, state in shard.beds.items() if state.held}
    return shard


class AlertLogic(StatefulBatchLogic[Scored | AlertTask, Outgoing, bytes]):
    """Bytewax's handle on one shard's alerts: publishes its scored minutes and runs
    them, the acknowledgements and the closed stays through the alert policy, with the
    alerting memory of the shard's beds."""

    def __init__(self, engine: Engine, resume: bytes | None, snapshots: bool = True) -> None:
        self.engine = engine
        self.snapshots = snapshots
        self.states: dict[str, AlertState] = {}
        if resume is not None:
            states = _stored(resume)
            if not isinstance(states, dict):
                raise EngineError(_EARLIER_STORE)
            self.states = states

    def on_batch(self, values: list[Scored | AlertTask]) -> tuple[Iterable[Outgoing], bool]:
        return self.engine.alert(self.states, values), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        if not self.snapshots:
            return b""
        return pickle.dumps(self.states, protocol=pickle.HIGHEST_PROTOCOL)


def _scorer(engine: Engine) -> Callable[[list[tuple[str, Any]]], list[tuple[str, Any]]]:
    """The scoring step: every minute due in a batch, all shards together, in one call
    of the model (:meth:`Engine.score`); keyed by shard for the alerts' step."""

    def score(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        done = engine.score([item for _, item in pairs])
        return [(key, item) for (key, _), item in zip(pairs, done, strict=True)]

    return score


def _is_record(pair: tuple[str, Any]) -> bool:
    return type(pair[1]) is Outgoing


def _shard_key(batch: ShardBatch) -> str:
    return batch.shard


def _is_valid(item: Any) -> bool:
    return isinstance(item, ShardBatch)


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
    recovery: bool = False,
) -> Dataflow:
    """The engine's dataflow between a source of records and a sink of
    :class:`~bedside.engine.intake.Outgoing` records, or of ``(bed, Outgoing)`` pairs
    with ``keyed_output`` (a partitioned sink, such as :class:`KafkaOutput`); with
    ``recovery`` (the flow runs with a recovery store) the beds' states are snapshotted."""
    flow = Dataflow("bedside-engine")
    records = op.input("in", flow, source)
    decoded = op.flat_map_batch("decode", records, decode_batch)
    valid = op.branch("valid", decoded, _is_valid)
    keyed = op.key_on("by-shard", valid.trues, _shard_key)
    beds = op.stateful_batch(
        "beds", keyed, lambda resume: ShardLogic(engine, resume, snapshots=recovery)
    )
    # The beds' records go out; the minutes due are scored across shards, then each
    # shard's alerts run in order with its acknowledgements and closed stays.
    split = op.branch("records", beds, _is_record)
    tasks = op.flat_map_batch("score", split.falses, _scorer(engine))
    alerted = op.stateful_batch(
        "alerts", tasks, lambda resume: AlertLogic(engine, resume, snapshots=recovery)
    )
    scored = op.merge("published", split.trues, alerted)
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
    batch_size: int = BATCH_SIZE,
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
    batch_size: int = BATCH_SIZE,
    recovery: bool = False,
) -> Dataflow:
    """The flow reading the input topics from Kafka and publishing to the output topics
    (``recovery``: it runs with a recovery store)."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    from bedside.engine.kafka_source import RecordSource

    config = kafka.librdkafka_config()
    brokers = kafka.servers()
    extra = {k: v for k, v in config.items() if k != "bootstrap.servers"}
    # Fetch what is there within 50 ms (librdkafka waits up to 500 ms by default), and
    # keep at most 16 MB read ahead per partition (64 MB by default).
    consumer = {**extra, "fetch.wait.max.ms": "50", "queued.max.messages.kbytes": "16384"}
    source = RecordSource(
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
    return build_flow(engine, source, KafkaOutput(producer), keyed_output=True, recovery=recovery)


def settle_memory() -> None:
    """Tune the garbage collector for a long-running engine; call once set up.

    What exists by now (the model, the libraries, the settings) lives as long as the
    process: it is kept out of the collector's passes. And the collector looks for
    cycles after 50,000 new objects instead of 700: each record makes a few short-lived
    ones, which reference counting frees, and a pass every few records over the beds'
    states took a fifth of the engine's CPU (`bedside bench engine`, breakdown).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def recovery_config(directory: Path, partitions: int = 1) -> Any:
    """Bytewax recovery in SQLite files under ``directory`` (created on first use)."""
    from bytewax.recovery import RecoveryConfig, init_db_dir

    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("part-*.sqlite3")):
        init_db_dir(directory, partitions)  # type: ignore[no-untyped-call]
    return RecoveryConfig(str(directory))  # type: ignore[no-untyped-call]


def epoch(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)
