"""``bedside bench engine``: throughput, latency, state and memory of the engine on Kafka.

A ward of ``--beds`` beds sends 8 monitor numerics a second each (one ``icu.vitals.v1``
message per bed and second); bed b's stay starts at second b % 60, so its minutes, and
the scores, are spread over the minute as admissions spread them. On one broker (Tansu,
started for the run, unless ``--bootstrap-servers``) the bench measures, in the same
run:

1. **Raw read-and-decode rate**: ``--seconds`` of the ward are published to
   ``icu.vitals.v1`` (``--partitions`` partitions), then read back with a librdkafka
   consumer (the client Bytewax uses) and decoded with the schemas, as fast as one
   process can, three times: the best is the ceiling for any consumer of the topic.
2. **Engine throughput**: ``bedside engine`` (1, then 2 processes: ``--processes``)
   reads the same topic from the start; its Prometheus counters give the rate from its
   first to its last processed record (start-up excluded). Every bed-minute past its
   lateness is scored on the way (from the second minute of a bed's stay: the default
   ``--seconds`` 300 score four of five minutes), so this is the rate the engine
   sustains doing all its work. Reported as records/s and
   as a share of (1). Peak memory (VmHWM) of each process is read from ``/proc``.
3. **Real time**: the ward is published live (each bed's clock starting at a different
   second, as admissions do; a record's time is the moment it is sent) for
   ``--realtime-seconds`` while one engine process, with recovery snapshots every
   ``--epoch`` as deployed (``--no-recovery``: without), keeps up. The latency of a
   score is from the moment its minute could be scored (its time plus the lateness,
   when the record that completes it is sent) to the score record's Kafka timestamp;
   the engine's own histogram (from that record's production to the score's
   computation) gives bucket bounds, and its CPU share is read from ``/proc``.
4. **Per-bed state**: pickled size of a bed's engine state after an hour of data.
5. **Where a record's time goes**: CPU µs a record, in process on the same ward, for
   decoding, the bed's step, the detectors within it, scoring and alerts, and Bytewax's
   steps.

Without ``--model`` a small TSFEL + logistic-regression model is trained on simulated
stays first (seconds).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np

from bedside.engine.settings import BATCH_SIZE
from bedside.replay.tansu import TansuBroker, free_port
from bedside.schemas.messages import VITALS_TOPIC, Vitals, decode, encode

SIGNALS: Final = (
    *("heart_rate", "spo2", "respiratory_rate", "arterial_systolic_bp"),
    *("arterial_diastolic_bp", "arterial_mean_bp", "temperature", "pulse_rate"),
)
BASELINE: Final = np.array([80.0, 97.0, 16.0, 120.0, 60.0, 80.0, 37.0, 80.0])
SPREAD: Final = np.array([3.0, 1.0, 2.0, 5.0, 3.0, 3.0, 0.1, 3.0])
GOAL_SHARE: Final = 0.25
GOAL_P99_S: Final = 1.0


def ward_second(rng: np.random.Generator, beds: int, second: int, start: datetime) -> list[bytes]:
    """One second of the ward: one encoded vitals message per bed."""
    values = np.round(BASELINE + SPREAD * rng.standard_normal((beds, len(SIGNALS))), 1)
    moment = start + timedelta(seconds=second)
    return [
        encode(
            Vitals(
                bed=f"bed-{bed:04d}",
                stay_id=f"stay-{bed:04d}",
                time=moment,
                source="monitor",
                seq=second,
                values=dict(zip(SIGNALS, values[bed].tolist(), strict=True)),
            )
        )
        for bed in range(beds)
    ]


def admitted(payloads: list[bytes], second: int) -> list[bytes]:
    """The records of a ward's second from the beds already admitted: bed b's stay starts
    at second b % 60, so the beds' minutes (and scores) are spread as admissions are."""
    return [p for b, p in enumerate(payloads) if second >= b % 60]


def _producer(servers: str) -> Any:
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": servers,
            "linger.ms": 20,
            "batch.size": 262144,
            "compression.type": "gzip",
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def _send(producer: Any, payloads: list[bytes]) -> None:
    for payload in payloads:
        key = payload[8:17]  # "bed-0000" (bytes 8..16 of the JSON): the bed, as the replay keys
        while True:
            try:
                producer.produce(VITALS_TOPIC, value=payload, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)


def create_topics(servers: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from bedside.engine.intake import INPUT_TOPICS
    from bedside.schemas.messages import (
        ALERTS_TOPIC,
        ANOMALIES_TOPIC,
        DEADLETTER_TOPIC,
        SCORES_TOPIC,
    )

    admin = AdminClient({"bootstrap.servers": servers})
    topics = [*INPUT_TOPICS, SCORES_TOPIC, ALERTS_TOPIC, ANOMALIES_TOPIC, DEADLETTER_TOPIC]
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    for future in futures.values():
        try:
            future.result(timeout=30)
        except Exception as error:  # an existing topic is fine
            if "exist" not in str(error).lower():
                raise


def raw_read_and_decode(servers: str, expected: int, partitions: int) -> float:
    """Records/s of one librdkafka consumer reading and decoding the whole topic."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": "bedside-bench-raw",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    consumer.assign([TopicPartition(VITALS_TOPIC, p, OFFSET_BEGINNING) for p in range(partitions)])
    count, started = 0, None
    deadline = time.monotonic() + 600
    while count < expected and time.monotonic() < deadline:
        for message in consumer.consume(BATCH_SIZE, 0.5):
            if message.error() is not None:
                continue
            if started is None:
                started = time.perf_counter()
            decode(VITALS_TOPIC, message.value())
            count += 1
    consumer.close()
    if started is None or count < expected:
        raise RuntimeError(f"read back {count} of {expected} records")
    return count / (time.perf_counter() - started)


def _metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return -1.0
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _histogram(port: int, name: str) -> list[tuple[float, float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append(
                (float("inf") if bound == "+Inf" else float(bound), float(line.split()[-1]))
            )
    return buckets


def _quantile_bound(buckets: list[tuple[float, float]], q: float) -> float:
    total = buckets[-1][1] if buckets else 0.0
    for bound, cumulative in buckets:
        if total and cumulative >= q * total:
            return bound
    return float("nan")


def _proc(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024  # MiB
    return float("nan")


def _cpu_s(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _engine(servers: str, model: Path, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).with_name("bedside")), "engine", "--model", str(model)]
    return subprocess.Popen(
        [
            *command,
            "--bootstrap-servers",
            servers,
            "--no-future-limit",
            "--metrics-port",
            str(port),
            "--log-every",
            "3600",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def engine_throughput(servers: str, model: Path, expected: int, processes: int) -> dict[str, Any]:
    ports = [free_port() for _ in range(processes)]
    extra: list[str] = []
    if processes > 1:
        addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        engines = [
            _engine(servers, model, ports[i], ["-i", str(i), "-a", addresses])
            for i in range(processes)
        ]
    else:
        engines = [_engine(servers, model, ports[0], extra)]
    first_t = first_n = None
    done_t = None
    deadline = time.monotonic() + 1800
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if any(e.poll() is not None for e in engines):
                error = b"".join(e.stderr.read() for e in engines if e.stderr)
                raise RuntimeError(f"engine exited: {error.decode()[-1500:]}")
            counts = [_metric(p, "bedside_engine_messages_total") for p in ports]
            processed = sum(max(0.0, c) for c in counts)
            if processed > 0 and first_t is None:
                first_t, first_n = time.perf_counter(), processed
            if processed >= expected:
                done_t = time.perf_counter()
                break
        memory = [_proc(e.pid, "VmHWM") for e in engines]
        scores = sum(_metric(p, "bedside_engine_scores_total") for p in ports)
    finally:
        for engine in engines:
            engine.send_signal(signal.SIGTERM)
        for engine in engines:
            try:
                engine.wait(timeout=20)
            except subprocess.TimeoutExpired:
                engine.kill()
    if done_t is None or first_t is None or first_n is None:
        raise RuntimeError("the engine did not process every record in time")
    return {
        "processes": processes,
        "records_per_s": (expected - first_n) / max(done_t - first_t, 1e-9),
        "scores": scores,
        "peak_memory_mib": memory,
    }


def realtime(
    servers: str,
    model: Path,
    beds: int,
    seconds: float,
    seed: int,
    epoch_s: float = 10.0,
    recovery: Path | None = None,
) -> dict[str, Any]:
    port = free_port()
    extra = ["--from-end", "--epoch", str(epoch_s)]
    if recovery is not None:
        extra += ["--recovery", str(recovery)]
    engine = _engine(servers, model, port, extra)
    time.sleep(8.0)  # start-up (imports, model) before the ward goes live
    rng = np.random.default_rng(seed)
    producer = _producer(servers)
    cpu_start = _cpu_s(engine.pid)
    # Second s of the ward is timed start + s and sent at that wall-clock moment, so a
    # record's event time is when it was sent, as a monitor's is.
    start = datetime.now(UTC)
    wall_start = time.perf_counter()
    second = 0
    lag = 0.0  # how far the ward's producer fell behind real time (it must not)
    try:
        while second < seconds:
            due = wall_start + second
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            _send(producer, admitted(ward_second(rng, beds, second, start), second))
            lag = max(lag, time.perf_counter() - (wall_start + second) - 1.0)
            second += 1
        producer.flush(30)
        time.sleep(3.0)
        cpu = (_cpu_s(engine.pid) - cpu_start) / (time.perf_counter() - wall_start)
        buckets = _histogram(port, "bedside_engine_score_latency_seconds")
        scores = _metric(port, "bedside_engine_scores_total")
        memory = _proc(engine.pid, "VmHWM")
        # Read before the engine stops: at shutdown it scores the minutes still waiting
        # for their lateness, which would count as late publications here.
        published = published_latencies(servers, start.timestamp())
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=20)
    return {
        "published_latency_s": {
            "n": len(published),
            "p50": float(np.percentile(published, 50)) if published else None,
            "p99": float(np.percentile(published, 99)) if published else None,
            "max": float(max(published)) if published else None,
        },
        "histogram": buckets,
        "producer_lag_s_max": lag,
        "beds": beds,
        "seconds": seconds,
        "recovery": recovery is not None,
        "scores": scores,
        "latency_p50_s_at_most": _quantile_bound(buckets, 0.5),
        "latency_p99_s_at_most": _quantile_bound(buckets, 0.99),
        "cpu_share_of_one_core": cpu,
        "peak_memory_mib": memory,
    }


def read_records(servers: str, topic: str, timeout_s: float = 60.0) -> list[tuple[float, bytes]]:
    """Every record of a topic as (Kafka timestamp in seconds, payload), read with
    librdkafka until every partition is exhausted."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": "bedside-bench-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = list(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    finished: set[int] = set()
    records = []
    deadline = time.monotonic() + timeout_s
    while len(finished) < len(partitions) and time.monotonic() < deadline:
        for message in consumer.consume(5000, 1.0):
            error = message.error()
            if error is not None:
                if error.code() == -191:  # _PARTITION_EOF
                    finished.add(int(message.partition() or 0))
                continue
            records.append((message.timestamp()[1] / 1000.0, message.value() or b""))
    consumer.close()
    return records


def published_latencies(servers: str, since_s: float, lateness_s: float = 5.0) -> list[float]:
    """Seconds from the moment a score's minute could be scored (its time plus the
    lateness, when the ward's clocks are the wall clock, as in the real-time run) to the
    moment its record was published (its Kafka timestamp), for the scores of minutes
    after ``since_s`` (the topic also holds the throughput runs' scores of the past)."""
    from bedside.schemas.messages import SCORES_TOPIC

    latencies = []
    for published_s, value in read_records(servers, SCORES_TOPIC):
        minute_s = decode(SCORES_TOPIC, value).time.timestamp()
        if minute_s > since_s:
            latencies.append(published_s - minute_s - lateness_s)
    return latencies


def breakdown(model: Path, beds: int, seconds: int, seed: int) -> dict[str, float]:
    """CPU µs a record of each part of the engine, in process (no broker), on ``seconds``
    of the ward: decoding (``accept``), the beds' step (``Engine.process`` on the shard
    batches the flow hands over), the detectors within it (the step with detection on
    minus off), and Bytewax's steps with the rest (the flow minus the other two)."""
    from bedside.engine.bed import Engine
    from bedside.engine.flow import ShardBatch, decode_batch, run_records, settle_memory
    from bedside.engine.intake import Incoming, Outgoing, accept
    from bedside.engine.settings import EngineSettings

    rng = np.random.default_rng(seed)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    records = [
        Incoming(VITALS_TOPIC, payload, payload[8:17], 0, n, (1, 1_900_000_000_000))
        for n, payload in enumerate(
            p
            for second in range(seconds)
            for p in admitted(ward_second(rng, beds, second, start), second)
        )
    ]

    def cpu_us(work: Any) -> float:
        began = time.process_time()
        work()
        return (time.process_time() - began) * 1e6 / len(records)

    def decode_all() -> None:
        for record in records:  # each dropped at once, as the engine passes it on
            accept(record)

    settings = EngineSettings(model_dir=model, future_limit_s=None)
    # The garbage collector as the engine sets it, the ward's records being kept aside
    # from its passes as the engine keeps its model and libraries; what each part
    # allocates is not.
    thresholds = gc.get_threshold()
    settle_memory()
    decode_us = cpu_us(decode_all)
    reads = [  # the shards' parts of each batch read
        [b for b in decode_batch(records[first : first + BATCH_SIZE]) if isinstance(b, ShardBatch)]
        for first in range(0, len(records), BATCH_SIZE)
    ]
    gc.freeze()

    def beds_step(settings: EngineSettings) -> tuple[float, float]:
        """CPU µs a record of the beds' step, and of scoring and alerts (in process)."""
        engine = Engine(settings)
        shards = {b.shard: engine.new_shard() for read in reads for b in read}
        beds = scoring = 0.0
        for read in reads:  # as the flow's three steps take a batch read
            began = time.process_time()
            steps = [(b.shard, engine.beds(shards[b.shard], b.items)) for b in read]
            stepped = time.process_time()
            tasks = [(key, s) for key, done in steps for s in done if type(s) is not Outgoing]
            scored = engine.score([task for _, task in tasks])
            by_shard: dict[str, list[Any]] = {}
            for (key, _), item in zip(tasks, scored, strict=True):
                by_shard.setdefault(key, []).append(item)
            for key, items in by_shard.items():
                engine.alert(shards[key].alerts, items)
            beds += stepped - began
            scoring += time.process_time() - stepped
        return beds * 1e6 / len(records), scoring * 1e6 / len(records)

    bed_us, scoring_us = beds_step(settings)
    detectors_us = bed_us - beds_step(settings.model_copy(update={"detect": False}))[0]
    flow_us = cpu_us(lambda: run_records(Engine(settings), records))
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    return {
        "records": len(records),
        "decode_us": decode_us,
        "bed_step_us": bed_us,
        "detectors_us": detectors_us,
        "scoring_us": scoring_us,
        "bytewax_us": flow_us - decode_us - bed_us - scoring_us,
        "in_process_us": flow_us,
    }


def bed_state_bytes(model: Path, beds: int = 32) -> int:
    """Pickled size of a bed's engine state after an hour at 1 Hz: a shard of ``beds``
    beds (about what one holds in a ward of 2,000), divided by ``beds``."""
    from bedside.engine.bed import Engine
    from bedside.engine.intake import Accepted
    from bedside.engine.settings import EngineSettings

    engine = Engine(EngineSettings(model_dir=model, future_limit_s=None))
    shard = engine.new_shard()
    rng = np.random.default_rng(1)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for second in range(3600):
        items = []
        for payload in ward_second(rng, beds, second, start):
            message = decode(VITALS_TOPIC, payload)
            items.append(Accepted(message.bed, VITALS_TOPIC, message, 0, second, 0.0, payload))
        engine.process(shard, items)
    return len(pickle.dumps(shard, protocol=pickle.HIGHEST_PROTOCOL)) // beds


def _small_model(directory: Path) -> Path:
    from bedside.cli import main

    data, model = directory / "sim", directory / "model"
    main(["data", "simulate", "--stays", "300", "--seed", "1", "--out", str(data)])
    main(["train", "survival", "--data", str(data), "--arch", "tsfel-lr", "--out", str(model)])
    return model


def run(args: argparse.Namespace) -> int:
    processes = [int(p) for p in args.processes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bedside-bench-engine-") as scratch:
        model = args.model or _small_model(Path(scratch))
        broker = None
        servers = args.bootstrap_servers
        if servers is None:
            broker = TansuBroker.start()
            servers = broker.bootstrap_servers
        try:
            create_topics(servers, args.partitions)
            print(f"publishing {args.beds} beds x {args.seconds} s ...")
            producer = _producer(servers)
            rng = np.random.default_rng(args.seed)
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=args.seconds)
            expected = 0
            for second in range(args.seconds):
                payloads = admitted(ward_second(rng, args.beds, second, start), second)
                _send(producer, payloads)
                expected += len(payloads)
            producer.flush(120)
            print(f"published {expected:,} records")
            # The best of three reads: the ceiling, whatever the broker's first read costs.
            raws = [raw_read_and_decode(servers, expected, args.partitions) for _ in range(3)]
            raw = max(raws)
            print(
                f"raw read-and-decode: {raw:,.0f} records/s "
                f"(best of {', '.join(f'{r:,.0f}' for r in raws)})"
            )
            runs = []
            for count in processes:
                result = engine_throughput(servers, model, expected, count)
                result["share_of_raw"] = result["records_per_s"] / raw
                print(
                    f"engine, {count} process(es): {result['records_per_s']:,.0f} records/s "
                    f"({result['share_of_raw']:.1%} of raw; goal {GOAL_SHARE:.0%}), "
                    f"{result['scores']:,.0f} scores, "
                    f"peak memory {', '.join(f'{m:.0f}' for m in result['peak_memory_mib'])} MiB"
                )
                runs.append(result)
            live = None
            if args.realtime_seconds > 0:
                if broker is not None:
                    # A fresh broker: Tansu reports a partition's end before its last
                    # batch, so an engine started "from the end" would read the
                    # throughput runs' last records (Kafka does not).
                    broker.stop()
                    broker = TansuBroker.start()
                    servers = broker.bootstrap_servers
                    create_topics(servers, args.partitions)
                live = realtime(
                    servers,
                    model,
                    args.beds,
                    args.realtime_seconds,
                    args.seed + 1,
                    args.epoch,
                    recovery=None if args.no_recovery else Path(scratch) / "recovery",
                )
                e2e = live["published_latency_s"]
                if e2e["n"]:
                    print(
                        f"real time, published scores: {e2e['n']}, latency from the minute's "
                        f"end plus lateness to publication p50 {e2e['p50']:.2f} s, "
                        f"p99 {e2e['p99']:.2f} s, max {e2e['max']:.2f} s"
                    )
                print(
                    f"real time, {args.beds} beds for {args.realtime_seconds} s: "
                    f"{live['scores']:.0f} scores, "
                    f"latency p50 <= {live['latency_p50_s_at_most']} s, "
                    f"p99 <= {live['latency_p99_s_at_most']} s (goal {GOAL_P99_S} s), "
                    f"CPU {live['cpu_share_of_one_core']:.0%} of a core, "
                    f"peak memory {live['peak_memory_mib']:.0f} MiB"
                )
            state = bed_state_bytes(model)
            print(f"per-bed state after an hour at 1 Hz: {state / 1024:.1f} KB pickled")
            parts = breakdown(model, args.beds, args.seconds, args.seed)
            kafka = (
                f"; on Kafka, 1 process: {1e6 / runs[0]['records_per_s']:.1f} µs" if runs else ""
            )
            print(
                f"CPU a record, in process: decode {parts['decode_us']:.1f} µs, bed step "
                f"{parts['bed_step_us']:.1f} µs (detectors {parts['detectors_us']:.1f} µs), "
                f"scoring and alerts {parts['scoring_us']:.1f} µs, "
                f"Bytewax and the rest {parts['bytewax_us']:.1f} µs{kafka}"
            )
        finally:
            if broker is not None:
                broker.stop()
    figures = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "beds": args.beds,
        "signals": len(SIGNALS),
        "seconds": args.seconds,
        "partitions": args.partitions,
        "raw_read_and_decode_per_s": raw,
        "raw_read_and_decode_runs_per_s": raws,
        "engine": runs,
        "realtime": live,
        "bed_state_bytes": state,
        "cpu_per_record": parts,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0
