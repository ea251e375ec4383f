"""``bedside replay {wfdb,events,simulate}``: publish recordings as a live ward feed.

The entry point builds everything once (Kafka settings from ``--bootstrap-servers``
over ``BEDSIDE_KAFKA_*``, the feeds, the timeline, the fault injector) and hands it to
:func:`bedside.replay.player.play`. Ctrl-C or SIGTERM stops the replay cleanly: what
was sent is flushed and the summary is printed (exit status 130); a second Ctrl-C
leaves at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from bedside.replay.faults import FAULTS, FaultInjector, FaultRates
from bedside.replay.kafka import JsonlSink, KafkaSink, Sink
from bedside.replay.player import play
from bedside.replay.timing import parse_duration, parse_speed
from bedside.replay.ward import Feed, ReplayError, ReplayWarning, Timeline, Ward
from bedside.settings import load_kafka_settings

#: Exit status of a replay stopped by Ctrl-C or SIGTERM, as a shell reports SIGINT.
INTERRUPTED = 130


def run(args: argparse.Namespace) -> int:
    """Run ``bedside replay SOURCE ...`` from parsed arguments."""
    timeline = Timeline(
        restamp=not args.keep_times,
        start_offset_s=parse_duration(args.start_offset),
        duration_s=None if args.duration is None else parse_duration(args.duration),
        loop=args.loop,
    )
    speed = parse_speed(args.speed)
    rates = FaultRates(**{name: getattr(args, name) for name in FAULTS})
    with _readable_warnings():
        ward = Ward(build_feeds(args), timeline)
    sink = open_sink(args)
    manifest = open(args.faults_manifest, "w") if args.faults_manifest else None  # noqa: SIM115
    stop = threading.Event()
    try:
        with _stop_on_signals(stop):
            stats = play(
                ward,
                sink,
                FaultInjector(rates, args.seed, manifest),
                speed=speed,
                stop=stop,
                progress_every_s=args.progress,
            )
    finally:
        sink.close()
        if manifest is not None:
            manifest.close()
    print(stats.summary(), file=sys.stderr if args.to and args.to[1] == "-" else sys.stdout)
    if args.stats:
        Path(args.stats).write_text(json.dumps(stats.to_dict(), indent=2) + "\n")
    if stats.interrupted:
        return INTERRUPTED
    return 1 if stats.failed else 0


def build_feeds(args: argparse.Namespace) -> list[Feed]:
    """The feeds of the chosen source (``wfdb``, ``events`` or ``simulate``)."""
    if args.source == "wfdb":
        from bedside.replay.wfdb_source import wfdb_beds

        return [bed.feed() for bed in wfdb_beds(args.paths, beds=args.beds)]
    if args.source == "events":
        from bedside.replay.events_source import events_feed

        return [events_feed(args.path, stays=args.stays)]
    from bedside.replay.events_source import simulated_feed

    return [simulated_feed(args.beds, args.hours, args.seed, args.monitor_hz, args.los_scale)]


def open_sink(args: argparse.Namespace) -> Sink:
    if args.to:
        kind, path = args.to
        if kind != "jsonl":
            raise ReplayError(f"--to takes 'jsonl FILE', got {kind!r}")
        return JsonlSink(path)
    settings = load_kafka_settings(bootstrap_servers=args.bootstrap_servers)
    return KafkaSink(settings, compression=args.compression, connect_timeout_s=args.connect_timeout)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C / SIGTERM: stop cleanly; a second Ctrl-C: the usual KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(number: int, frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(
            "replay: stopping: flushing what was sent (Ctrl-C again to quit at once)",
            file=sys.stderr,
            flush=True,
        )

    previous: dict[signal.Signals, Callable[..., Any] | int | None] = {}
    for kind in (signal.SIGINT, signal.SIGTERM):
        previous[kind] = signal.signal(kind, request_stop)
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)


@contextlib.contextmanager
def _readable_warnings() -> Iterator[None]:
    """Replay warnings (missing segments, unmapped signals) as one plain line each."""
    original = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
        if issubclass(category, ReplayWarning):
            print(f"replay: warning: {message}", file=sys.stderr)
        else:
            original(message, category, *args, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("always", ReplayWarning)
        warnings.showwarning = show
        yield
