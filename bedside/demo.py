"""``bedside demo``: a ward streamed end to end through the engine, on this machine alone.

A simulated ward (or real WFDB records with ``--wfdb``) is replayed as the monitors
would send it; every message is encoded as it would cross Kafka and goes through the
engine's own dataflow in this process (:func:`bedside.engine.flow.run_records`):
decoding and dead letters, online anomaly detection, rolling windows, imputation, the
survival model and the alert policy. A ward view is printed every hour of ward time and
a summary at the end; every record in and out is written as JSON lines to ``--out``.

The survival model is ``--model`` or, by default, a small TSFEL + logistic-regression
model trained on first use on simulated stays (a few seconds) and kept in
``OUT/model``. Every alert record and acknowledgement is kept in the audit database
``OUT/audit.db`` (SQLite). With ``--web``, the live ward page (``bedside ward``'s page,
fed in process) is served at http://127.0.0.1:8050/ during the run, and its Acknowledge
buttons reach the engine; the page stays up after the replay until Ctrl-C.
"""

from __future__ import annotations

import argparse
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from bedside.schemas.messages import (
    ALERT_ACKS_TOPIC,
    ALERTS_TOPIC,
    ANOMALIES_TOPIC,
    DEADLETTER_TOPIC,
    PATIENT_TOPIC,
    SCORES_TOPIC,
    VITALS_TOPIC,
    WAVEFORM_TOPIC,
    Admit,
    AlertAck,
    Death,
    Discharge,
    Vitals,
    decode,
    encode,
)

#: Exit status after Ctrl-C during the replay, as a shell reports SIGINT.
INTERRUPTED = 130

#: The columns of the ward view: (heading, concepts in order of preference).
VIEW = (
    ("HR", ("heart_rate",)),
    ("MAP", ("arterial_mean_bp", "noninvasive_mean_bp")),
    ("SpO2", ("spo2",)),
    ("RR", ("respiratory_rate",)),
)


@dataclass
class BedView:
    """What the ward view shows of one bed."""

    stay_id: str | None = None
    admitted: datetime | None = None
    last: dict[str, float] = field(default_factory=dict)
    mortality: float | None = None
    risk_24h: float | None = None
    imputed: float | None = None
    anomalies: int = 0
    open_alert: str | None = None


@dataclass
class Tally:
    inputs: Counter[str] = field(default_factory=Counter)
    outputs: Counter[str] = field(default_factory=Counter)
    admissions: int = 0
    deaths: int = 0
    alerts_raised: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)


def demo_model(out: Path) -> Path:
    """A small model trained on simulated stays, made once and kept in ``out/model``."""
    from bedside.cli import main

    model = out / "model"
    if (model / "model.json").exists():
        return model
    print("bedside demo: training a small survival model on 400 simulated stays (first run)")
    data = out / "training-data"
    main(["data", "simulate", "--stays", "400", "--seed", "1", "--out", str(data)])
    main(["train", "survival", "--data", str(data), "--arch", "tsfel-lr", "--out", str(model)])
    return model


def _ward_messages(args: argparse.Namespace) -> Iterator[tuple[float, Any]]:
    from bedside.replay.events_source import simulated_feed
    from bedside.replay.ward import Timeline, Ward

    if args.wfdb:
        from bedside.replay.wfdb_source import wfdb_beds

        feeds = [bed.feed() for bed in wfdb_beds(args.wfdb, beds=args.beds)]
    else:
        # A busy ward: stays a tenth of their usual length, so beds turn over in a demo.
        feeds = [simulated_feed(args.beds, args.hours, args.seed, 1 / 60, 0.1)]
    duration = args.hours * 3600.0
    ward = Ward(feeds, Timeline(restamp=True, duration_s=duration))
    yield from ward.messages()


def run(args: argparse.Namespace) -> int:
    if args.beds < 1 or args.hours <= 0:
        raise SystemExit("bedside demo: --beds must be >= 1 and --hours > 0")
    speed = None if args.speed == "max" else float(args.speed)
    if speed is not None and speed <= 0:
        raise SystemExit("bedside demo: --speed must be 'max' or a positive factor")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model_dir = args.model or demo_model(out)

    import torch
    from bytewax.testing import TestingSource

    from bedside.engine.bed import Engine
    from bedside.engine.flow import run_records
    from bedside.engine.intake import Incoming, Outgoing
    from bedside.engine.settings import EngineSettings
    from bedside.ward.audit import AuditStore
    from bedside.ward.feed import WardFeed

    torch.set_num_threads(1)
    policy = {} if args.alert_on_risk is None else {"on_risk": args.alert_on_risk}
    engine = Engine(EngineSettings(model_dir=model_dir, future_limit_s=None, alerts=policy))
    acks: queue.SimpleQueue[AlertAck] = queue.SimpleQueue()
    feed = WardFeed(acknowledge=acks.put, audit=AuditStore(str(out / "audit.db")))
    server = None
    if args.web is not None:
        from bedside.ward.web import WardServer

        server = WardServer(feed, port=args.web).start()
        print(f"bedside demo: ward page at {server.url}")
    topics = (VITALS_TOPIC, WAVEFORM_TOPIC, PATIENT_TOPIC, SCORES_TOPIC, ANOMALIES_TOPIC)
    files: dict[str, IO[bytes]] = {
        topic: (out / f"{topic}.jsonl").open("wb")
        for topic in (*topics, ALERTS_TOPIC, ALERT_ACKS_TOPIC, DEADLETTER_TOPIC)
    }
    beds: dict[str, BedView] = {}
    tally = Tally()
    clock: dict[str, datetime | None] = {"next_view": None, "now": None}
    where = "WFDB records" if args.wfdb else "simulated beds"
    print(
        f"bedside demo: {args.beds} {where}, {args.hours:g} h of ward time, seed {args.seed}, "
        f"speed {args.speed}, model {engine.model_id}"
    )
    started = time.perf_counter()

    def pending_acks() -> Iterator[Incoming]:
        while not acks.empty():
            ack = acks.get()
            payload = encode(ack)
            files[ALERT_ACKS_TOPIC].write(payload + b"\n")
            tally.inputs[ALERT_ACKS_TOPIC] += 1
            yield Incoming(ALERT_ACKS_TOPIC, payload, ack.bed.encode())

    def records() -> Iterator[Incoming | TestingSource.PAUSE]:
        wall_start = time.perf_counter()
        for elapsed, message in _ward_messages(args):
            yield from pending_acks()
            if speed is not None:
                delay = wall_start + elapsed / speed - time.perf_counter()
                if delay > 0:
                    # Hand what is read so far to the engine and wake when the message
                    # is due (a sleep here would hold a half-filled batch back).
                    yield TestingSource.PAUSE(timedelta(seconds=delay))
                    yield from pending_acks()
            if stop.is_set():
                return
            topic = _topic(message)
            payload = encode(message)
            files[topic].write(payload + b"\n")
            tally.inputs[topic] += 1
            received = decode(topic, payload)
            _see_input(beds, tally, received)
            feed.publish(topic, received)
            moment = getattr(message, "time", None) or getattr(message, "start", None)
            if clock["next_view"] is None:
                clock["next_view"] = moment + timedelta(hours=1)
            elif moment >= clock["next_view"]:
                _print_view(clock["next_view"], beds)
                clock["next_view"] += timedelta(hours=1)
            yield Incoming(topic, payload, message.bed.encode())

    def write(batch: list[Outgoing]) -> None:
        for record in batch:
            files[record.topic].write(record.value + b"\n")
            tally.outputs[record.topic] += 1
            message = decode(record.topic, record.value)
            _see_output(beds, tally, record.topic, message)
            feed.publish(record.topic, message)

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        try:
            run_records(engine, records(), write, batch_size=32)
        finally:
            signal.signal(signal.SIGINT, previous)
        if stop.is_set():
            print("\nbedside demo: stopped by Ctrl-C; what was replayed so far:")
        _print_summary(args, tally, time.perf_counter() - started, out)
        if stop.is_set():
            return INTERRUPTED
        if server is not None:
            # Ctrl-C may reach another thread of the process (the libraries start
            # several), which would not wake a sleeping main thread: wait in short steps.
            done = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: done.set())
            print(f"bedside demo: the ward page stays at {server.url} until Ctrl-C", flush=True)
            try:
                while not done.wait(0.5):
                    pass
            finally:
                signal.signal(signal.SIGINT, previous)
    finally:
        if server is not None:
            server.stop()
        for handle in files.values():
            handle.close()
    return 0


def _topic(message: Any) -> str:
    from bedside.replay.ward import topic_of

    return topic_of(message)


def _see_input(beds: dict[str, BedView], tally: Tally, message: Any) -> None:
    view = beds.setdefault(message.bed, BedView())
    if isinstance(message, Vitals):
        view.last.update(message.values)
    elif isinstance(message, Admit):
        tally.admissions += 1
        beds[message.bed] = BedView(stay_id=message.stay_id, admitted=message.time)
    elif isinstance(message, Discharge | Death):
        tally.deaths += isinstance(message, Death)
        view.stay_id = None


def _see_output(beds: dict[str, BedView], tally: Tally, topic: str, message: Any) -> None:
    view = beds.setdefault(message.bed, BedView())
    if topic == SCORES_TOPIC:
        view.mortality = message.mortality
        view.risk_24h = next((r.risk for r in message.risks if r.horizon_h == 24), None)
        view.imputed = message.imputed_fraction
    elif topic == ANOMALIES_TOPIC:
        view.anomalies += 1
        tally.anomalies[message.kind] += 1
    elif topic == ALERTS_TOPIC:
        if message.state == "raised":
            tally.alerts_raised[message.priority] += 1
            view.open_alert = message.priority
        elif message.state == "escalated":
            view.open_alert = message.priority
        elif message.state == "resolved":
            view.open_alert = None


def _cell(value: float | None, form: str = "6.1f") -> str:
    return f"{value:{form}}" if value is not None else f"{'-':>6}"


def _print_view(now: datetime, beds: dict[str, BedView]) -> None:
    print(f"\n{now:%Y-%m-%d %H:%M} UTC")
    heads = " ".join(f"{h:>6}" for h, _ in VIEW)
    print(
        f"  {'bed':<8} {'stay':>9} {'in ICU':>7} {heads} {'death':>6} {'24h':>6} "
        f"{'imput':>6}  anomalies  alert"
    )
    for bed in sorted(beds):
        view = beds[bed]
        if view.stay_id is None:
            print(f"  {bed:<8} {'(empty)':>9}")
            continue
        hours = (now - view.admitted).total_seconds() / 3600 if view.admitted else 0.0
        cells = [
            _cell(next((view.last[n] for n in names if n in view.last), None)) for _, names in VIEW
        ]
        risks = [
            f"{view.mortality:6.0%}" if view.mortality is not None else f"{'-':>6}",
            f"{view.risk_24h:6.0%}" if view.risk_24h is not None else f"{'-':>6}",
            f"{view.imputed:6.0%}" if view.imputed is not None else f"{'-':>6}",
        ]
        print(
            f"  {bed:<8} {view.stay_id:>9} {hours:6.1f}h {' '.join(cells)} {' '.join(risks)} "
            f"{view.anomalies:>10}  {view.open_alert or ''}"
        )


def _print_summary(args: argparse.Namespace, tally: Tally, seconds: float, out: Path) -> None:
    received = sum(tally.inputs.values())
    print("\nsummary")
    print(f"  beds {args.beds}, ward time {args.hours:g} h, wall time {seconds:.1f} s")
    print(f"  stays admitted {tally.admissions}, died {tally.deaths}")
    inputs = ", ".join(f"{t} {n}" for t, n in sorted(tally.inputs.items()))
    print(f"  records in {received} ({inputs}), {received / seconds:,.0f} per second")
    print(
        f"  scores {tally.outputs[SCORES_TOPIC]}, anomalies {tally.outputs[ANOMALIES_TOPIC]} "
        f"({', '.join(f'{k} {n}' for k, n in tally.anomalies.most_common(4))}), "
        f"dead letters {tally.outputs[DEADLETTER_TOPIC]}"
    )
    raised = sum(tally.alerts_raised.values())
    patient_hours = args.beds * args.hours
    by_priority = ", ".join(f"{p} {n}" for p, n in sorted(tally.alerts_raised.items()))
    print(
        f"  alerts raised {raised} ({by_priority or 'none'}), "
        f"{raised / patient_hours:.2f} per patient-hour"
    )
    print(f"  outputs: {out}/<topic>.jsonl, one JSON message per line; audit: {out}/audit.db")
