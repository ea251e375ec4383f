"""The replay loop: ward messages -> faults -> pacing -> sink, with progress and a clean stop.

:func:`play` publishes each message when its moment comes (``elapsed / speed`` after
the start, or at once with ``speed=None``), prints progress with rates every few
seconds, and stops cleanly when ``stop`` is set (Ctrl-C or SIGTERM in the command
line): what was sent is flushed to the broker, what was still held back (delayed or
reordered by fault injection) is dropped, and the figures say it was interrupted.
"""

from __future__ import annotations

import heapq
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from bedside.replay.faults import FaultInjector, Outgoing
from bedside.replay.kafka import Sink
from bedside.replay.timing import Pacer
from bedside.replay.ward import Ward


@dataclass
class ReplayStats:
    """What a replay published, how fast, and whether it kept to its schedule."""

    target: str
    speed: float | None
    records: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    seconds: float = 0.0
    recorded_s: float = 0.0
    max_lag_s: float = 0.0
    interrupted: bool = False
    faults: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    first_error: str | None = None

    @property
    def total(self) -> int:
        return sum(self.records.values())

    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        topics = ", ".join(f"{topic} {n:,}" for topic, n in sorted(self.records.items()))
        verb = "interrupted after publishing" if self.interrupted else "published"
        line = (
            f"replay: {verb} {self.total:,} records ({topics or 'none'}) to {self.target} in "
            f"{self.seconds:.1f} s: {self.rate():,.0f} records/s, "
            f"{self.bytes / max(self.seconds, 1e-9) / 1e6:.2f} MB/s; "
            f"{_clock(self.recorded_s)} of recorded time"
        )
        if self.speed is not None:
            line += f" at x{self.speed:g}, at most {self.max_lag_s:.3f} s behind schedule"
        if self.faults:
            line += "; faults: " + ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items()))
        if self.failed:
            line += f"; {self.failed:,} records NOT acknowledged (first: {self.first_error})"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "speed": "max" if self.speed is None else self.speed,
            "records": dict(self.records),
            "total": self.total,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.rate(), 1),
            "recorded_s": round(self.recorded_s, 3),
            "max_lag_s": round(self.max_lag_s, 4),
            "interrupted": self.interrupted,
            "faults": dict(self.faults),
            "failed": self.failed,
            "first_error": self.first_error,
        }


class _Stopped(Exception):
    pass


def play(
    ward: Ward,
    sink: Sink,
    injector: FaultInjector,
    *,
    speed: float | None,
    stop: threading.Event,
    progress_every_s: float = 5.0,
    progress_to: IO[str] | None = None,
    limit: int | None = None,
) -> ReplayStats:
    """Publish the ward's messages to ``sink`` (see the module docstring).

    ``limit`` stops after that many ward messages (benchmarks).
    """
    stats = ReplayStats(target=sink.target, speed=speed)
    out = progress_to or sys.stderr
    pacer = Pacer(speed, stop)
    started = time.monotonic()
    next_report = started + progress_every_s if progress_every_s > 0 else float("inf")
    shown = (started, 0, 0)
    waiting: list[tuple[float, int, Outgoing]] = []  # delayed records, by when they are due
    order = 0

    def publish(record: Outgoing) -> None:
        if not pacer.wait(record.elapsed_s):
            raise _Stopped
        sink.send(record.topic, record.key, record.value)
        stats.records[record.topic] += 1
        stats.bytes += len(record.value)

    try:
        for n, (elapsed_s, message) in enumerate(ward.messages(now=datetime.now(UTC))):
            if n == limit:
                break
            if n == 0:  # the schedule starts when the first message is ready
                pacer.restart()
            stats.recorded_s = elapsed_s
            for record in injector.inject(n, elapsed_s, message):
                if not waiting and record.elapsed_s <= elapsed_s:
                    publish(record)
                else:
                    heapq.heappush(waiting, (record.elapsed_s, order, record))
                    order += 1
            while waiting and waiting[0][0] <= elapsed_s:
                publish(heapq.heappop(waiting)[2])
            if stop.is_set():
                raise _Stopped
            if time.monotonic() >= next_report:
                shown = _report(out, stats, pacer, shown)
                next_report = time.monotonic() + progress_every_s
        for record in injector.finish():
            heapq.heappush(waiting, (record.elapsed_s, order, record))
            order += 1
        while waiting:
            publish(heapq.heappop(waiting)[2])
    except _Stopped:
        stats.interrupted = True
    finally:
        sink.flush()
        stats.seconds = time.monotonic() - started
        stats.max_lag_s = pacer.max_lag_s
        stats.faults = Counter(injector.counts)
        stats.failed, stats.first_error = sink.failures()
    return stats


def _report(
    out: IO[str], stats: ReplayStats, pacer: Pacer, shown: tuple[float, int, int]
) -> tuple[float, int, int]:
    """One progress line: totals and the rates since the previous line."""
    now = time.monotonic()
    then, records, size = shown
    interval = max(now - then, 1e-9)
    topics = " · ".join(
        f"{topic.split('.')[1]} {n:,}" for topic, n in sorted(stats.records.items())
    )
    print(
        f"replay: {stats.total:,} records ({topics}) · "
        f"{(stats.total - records) / interval:,.0f} records/s · "
        f"{(stats.bytes - size) / interval / 1e6:.2f} MB/s · "
        f"{_clock(stats.recorded_s)} of recorded time"
        + (f" · {pacer.max_lag_s:.2f} s behind at worst" if pacer.speed is not None else ""),
        file=out,
        flush=True,
    )
    return now, stats.total, stats.bytes


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
