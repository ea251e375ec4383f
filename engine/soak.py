"""``bedside bench soak``: a simulated ward for a long accelerated period, through the
real broker and the engine, with the accounting checked record by record.

``bedside replay simulate --beds N --hours H --speed max`` publishes a ward (monitor
numerics once a minute, nurse charting, labs, admissions, discharges and deaths, plus
faults when ``--faults`` is given) to a broker (Tansu, started for the run, unless
``--bootstrap-servers``) while ``bedside engine`` consumes it. The bench samples the
engine's resident memory and counters every two seconds and reports:

* **throughput**: input records per second over the run;
* **latency**: the engine's score-latency histogram (p50, p99 as bucket bounds; at
  ``--speed max`` this includes the backlog, so it is an upper bound);
* **memory over time**: resident memory against ward hours processed, and its growth
  per ward hour over the second half of the run (a leak shows as a positive slope);
* **accounting**: records published (the replay's own count) against records
  processed + dead-lettered + dropped as duplicates (the engine's counters): equal,
  or the run fails;
* **every bed-minute scored**: each stay's scores, read back from ``icu.scores.v1``,
  fall every 60 s from its first to its last with no gap, start within two minutes of
  the admission, and stop no earlier than the discharge minus two minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bedside.engine.bench import (
    _histogram,
    _metric,
    _proc,
    _quantile_bound,
    _small_model,
    create_topics,
    read_records,
)
from bedside.replay.tansu import TansuBroker, free_port
from bedside.schemas.messages import (
    PATIENT_TOPIC,
    SCORES_TOPIC,
    Admit,
    Death,
    Discharge,
    MessageError,
    decode,
)

BEDSIDE = str(Path(sys.executable).with_name("bedside"))


def read_topic(servers: str, topic: str, timeout_s: float = 60.0) -> list[bytes]:
    """Every payload of a topic, read with librdkafka until it is exhausted."""
    return [value for _, value in read_records(servers, topic, timeout_s)]


def check_minutes(servers: str, lateness_s: float) -> dict[str, Any]:
    """Every stay's scores: a minute apart, no gap, from admission to discharge."""
    stays: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for value in read_topic(servers, PATIENT_TOPIC):
        try:
            event = decode(PATIENT_TOPIC, value)
        except MessageError:  # an injected fault: the engine dead-lettered it too
            continue
        key = (event.bed, event.stay_id)
        if isinstance(event, Admit):
            stays[key]["admit"] = event.time.timestamp()
        elif isinstance(event, Discharge | Death):
            stays[key]["end"] = event.time.timestamp()
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for value in read_topic(servers, SCORES_TOPIC, timeout_s=300):
        score = decode(SCORES_TOPIC, value)
        scores[(score.bed, score.stay_id or "-")].append(score.time.timestamp())
    gaps = late_start = early_stop = repeated = 0
    minutes = 0
    for key, times in scores.items():
        ordered = np.unique(times)
        repeated += len(times) - len(ordered)
        minutes += len(ordered)
        gaps += int(np.sum(np.abs(np.diff(ordered) - 60.0) > 1e-3))
        known = stays.get(key, {})
        if "admit" in known and ordered[0] - known["admit"] > 120.0:
            late_start += 1
        if "end" in known and known["end"] - ordered[-1] > 120.0 + lateness_s:
            early_stop += 1
    unscored = [
        key
        for key, known in stays.items()
        if key not in scores
        and "admit" in known
        and known.get("end", np.inf) - known["admit"] > 120.0
    ]
    return {
        "stays_scored": len(scores),
        "bed_minutes_scored": minutes,
        "repeated_scores": repeated,
        "gaps": gaps,
        "late_starts": late_start,
        "early_stops": early_stop,
        "stays_never_scored": len(unscored),
        "ok": gaps == late_start == early_stop == len(unscored) == 0,
    }


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bedside-soak-") as scratch:
        work = Path(scratch)
        model = args.model or _small_model(work)
        broker = None
        servers = args.bootstrap_servers
        if servers is None:
            broker = TansuBroker.start()
            servers = broker.bootstrap_servers
        try:
            create_topics(servers, args.partitions)
            port = free_port()
            engine = subprocess.Popen(
                [
                    BEDSIDE,
                    "engine",
                    "--model",
                    str(model),
                    "--bootstrap-servers",
                    servers,
                    "--no-future-limit",
                    "--metrics-port",
                    str(port),
                    "--recovery",
                    str(work / "recovery"),
                    "--log-every",
                    "3600",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            samples: list[dict[str, float]] = []
            stop = threading.Event()

            def sample() -> None:
                started = time.perf_counter()
                while not stop.wait(2.0):
                    if engine.poll() is not None:
                        return
                    samples.append(
                        {
                            "t": time.perf_counter() - started,
                            "rss_mib": _proc(engine.pid, "VmRSS"),
                            "records": max(0.0, _metric(port, "bedside_engine_messages_total")),
                        }
                    )

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            stats_file = work / "replay.json"
            replay = [
                BEDSIDE,
                "replay",
                "simulate",
                "--beds",
                str(args.beds),
                "--hours",
                str(args.hours),
                "--monitor-hz",
                str(args.monitor_hz),
                "--los-scale",
                str(args.los_scale),
                "--speed",
                "max",
                "--seed",
                str(args.seed),
                "--bootstrap-servers",
                servers,
                "--stats",
                str(stats_file),
                "--progress",
                "0",
            ]
            if args.faults:
                replay += [
                    "--duplicate",
                    "0.01",
                    "--reorder",
                    "0.01",
                    "--delay",
                    "0.01",
                    "--corrupt",
                    "0.002",
                    "--schema-violation",
                    "0.002",
                    "--drop",
                    "0.002",
                ]
            print(f"soak: replaying {args.beds} beds for {args.hours:g} h of ward time ...")
            started = time.perf_counter()
            subprocess.run(replay, check=True, stdout=subprocess.DEVNULL)
            published = json.loads(stats_file.read_text())["total"]
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                if max(0.0, _metric(port, "bedside_engine_messages_total")) >= published:
                    break
                if engine.poll() is not None:
                    raise RuntimeError(engine.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
                time.sleep(1.0)
            elapsed = time.perf_counter() - started
            time.sleep(3.0)
            outcomes = {
                o: _metric(port, f'bedside_engine_messages_total{{outcome="{o}"')
                for o in ("processed", "deadlettered", "duplicate")
            }
            buckets = _histogram(port, "bedside_engine_score_latency_seconds")
            stop.set()
            sampler.join()
            engine.send_signal(signal.SIGTERM)
            engine.wait(timeout=30)
            minutes = check_minutes(servers, lateness_s=5.0)
        finally:
            if broker is not None:
                broker.stop()
    accounted = sum(outcomes.values())
    records = np.array([s["records"] for s in samples])
    rss = np.array([s["rss_mib"] for s in samples])
    ward_hours = records / max(published, 1) * args.hours
    # Samples taken while records still came in: once the input is read, memory moves
    # (final scores, the collector) at a constant ward hour, which is not growth per hour.
    moving = np.r_[True, np.diff(records) > 0] if len(samples) else np.array([], dtype=bool)
    half = moving & (ward_hours >= ward_hours.max() / 2) if len(samples) else moving
    slope = (
        float(np.polyfit(ward_hours[half], rss[half], 1)[0]) if half.sum() >= 3 else float("nan")
    )
    figures = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "beds": args.beds,
        "ward_hours": args.hours,
        "faults": args.faults,
        "published": published,
        "accounted": accounted,
        "outcomes": outcomes,
        "accounting_ok": accounted == published,
        "records_per_s": published / elapsed,
        "seconds": elapsed,
        "latency_p50_s_at_most": _quantile_bound(buckets, 0.5),
        "latency_p99_s_at_most": _quantile_bound(buckets, 0.99),
        "rss_mib_start": float(rss[0]) if len(rss) else None,
        "rss_mib_end": float(rss[-1]) if len(rss) else None,
        "rss_mib_max": float(rss.max()) if len(rss) else None,
        "rss_growth_mib_per_ward_hour_second_half": slope,
        "minutes": minutes,
        "memory_samples": samples,
    }
    print(
        f"soak: {published:,} records in {elapsed:.0f} s ({figures['records_per_s']:,.0f}/s); "
        f"accounted {accounted:,.0f} ({'exact' if figures['accounting_ok'] else 'MISMATCH'}: "
        f"{', '.join(f'{k} {v:,.0f}' for k, v in outcomes.items())})"
    )
    print(
        f"soak: memory {figures['rss_mib_start']:.0f} -> {figures['rss_mib_end']:.0f} MiB "
        f"(max {figures['rss_mib_max']:.0f}), {slope:+.2f} MiB per ward hour over the second half"
    )
    print(
        f"soak: {minutes['bed_minutes_scored']:,} bed-minutes scored in "
        f"{minutes['stays_scored']} stays; gaps {minutes['gaps']}, late starts "
        f"{minutes['late_starts']}, early stops {minutes['early_stops']}, never scored "
        f"{minutes['stays_never_scored']}, repeated {minutes['repeated_scores']}; "
        f"latency p50 <= {figures['latency_p50_s_at_most']} s, "
        f"p99 <= {figures['latency_p99_s_at_most']} s (backlog included)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["accounting_ok"] and minutes["ok"] else 1
