"""``bedside demo``: a simulated ward streamed end to end, on this machine alone.

Today the demo runs what exists: the simulator publishes a ward's messages, each is
encoded and decoded with the topic's schema exactly as it would cross Kafka, a
plausibility check from the concept dictionary flags impossible values, and a ward
view is printed every simulated hour. The engine (anomaly detection, imputation,
survival scores, alerts) joins this path as it is built.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from bedside.replay.simulator import simulate_ward
from bedside.schemas.concepts import load_concepts
from bedside.schemas.messages import (
    PATIENT_TOPIC,
    VITALS_TOPIC,
    Admit,
    Death,
    Discharge,
    Vitals,
    decode,
    encode,
)

#: The columns of the ward view: (heading, concepts in order of preference).
VIEW = (
    ("HR", ("heart_rate",)),
    ("MAP", ("arterial_mean_bp", "noninvasive_mean_bp")),
    ("SpO2", ("spo2",)),
    ("RR", ("respiratory_rate",)),
    ("Temp", ("temperature",)),
    ("Lact", ("lactate",)),
)


@dataclass
class BedView:
    """What the ward view shows of one bed."""

    stay_id: str | None = None
    admitted: datetime | None = None
    last: dict[str, float] = field(default_factory=dict)
    implausible: int = 0


@dataclass
class WardTally:
    messages: Counter[str] = field(default_factory=Counter)
    admissions: int = 0
    discharges: int = 0
    deaths: int = 0
    values: int = 0
    implausible: Counter[str] = field(default_factory=Counter)


def run(args: argparse.Namespace) -> int:
    if args.beds < 1 or args.hours <= 0:
        raise SystemExit("bedside demo: --beds must be >= 1 and --hours > 0")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    concepts = load_concepts()
    beds: dict[str, BedView] = {}
    tally = WardTally()
    next_view = None
    started = time.perf_counter()
    print(
        f"bedside demo: {args.beds} simulated beds, {args.hours:g} h of ward time, seed {args.seed}"
    )
    files = {topic: (out / f"{topic}.jsonl").open("wb") for topic in (VITALS_TOPIC, PATIENT_TOPIC)}
    try:
        # A busy ward: stays a tenth of their usual length, so beds turn over in a demo.
        stream = simulate_ward(args.beds, args.hours, args.seed, monitor_hz=1 / 60, los_scale=0.1)
        for message in stream:
            topic = VITALS_TOPIC if isinstance(message, Vitals) else PATIENT_TOPIC
            received = _through_the_wire(topic, message, files[topic])
            tally.messages[topic] += 1
            view = beds.setdefault(received.bed, BedView())
            if isinstance(received, Vitals):
                for name, value in received.values.items():
                    tally.values += 1
                    view.last[name] = value
                    if not concepts[name].is_plausible(value):
                        view.implausible += 1
                        tally.implausible[name] += 1
            elif isinstance(received, Admit):
                tally.admissions += 1
                beds[received.bed] = BedView(stay_id=received.stay_id, admitted=received.time)
            else:
                tally.deaths += isinstance(received, Death)
                tally.discharges += isinstance(received, Discharge)
                view.stay_id = None
            if next_view is None:
                next_view = received.time + timedelta(hours=1)
            elif received.time >= next_view:
                _print_view(next_view, beds)
                next_view += timedelta(hours=1)
    finally:
        for handle in files.values():
            handle.close()
    seconds = time.perf_counter() - started
    _print_summary(args, tally, seconds, out)
    return 0


def _through_the_wire(
    topic: str, message: Vitals | Admit | Discharge | Death, sink: IO[bytes]
) -> Vitals | Admit | Discharge | Death:
    """Encode as a producer would, keep the bytes, decode as a consumer would."""
    payload = encode(message)
    sink.write(payload + b"\n")
    received: Vitals | Admit | Discharge | Death = decode(topic, payload)
    return received


def _print_view(now: datetime, beds: dict[str, BedView]) -> None:
    print(f"\n{now:%Y-%m-%d %H:%M} UTC")
    print(
        f"  {'bed':<8} {'stay':>9} {'in ICU':>7} "
        + " ".join(f"{h:>6}" for h, _ in VIEW)
        + "  flags"
    )
    for bed in sorted(beds):
        view = beds[bed]
        if view.stay_id is None:
            print(f"  {bed:<8} {'(empty)':>9}")
            continue
        hours = (now - view.admitted).total_seconds() / 3600 if view.admitted else 0.0
        cells = []
        for _, names in VIEW:
            value = next((view.last[n] for n in names if n in view.last), None)
            cells.append(f"{value:6.1f}" if value is not None else f"{'-':>6}")
        flags = f"  {view.implausible} implausible" if view.implausible else ""
        print(f"  {bed:<8} {view.stay_id:>9} {hours:6.1f}h " + " ".join(cells) + flags)


def _print_summary(args: argparse.Namespace, tally: WardTally, seconds: float, out: Path) -> None:
    total = sum(tally.messages.values())
    print("\nsummary")
    print(f"  beds {args.beds}, ward time {args.hours:g} h, wall time {seconds:.1f} s")
    print(
        f"  stays admitted {tally.admissions}, discharged alive {tally.discharges}, "
        f"died {tally.deaths}"
    )
    per_topic = ", ".join(f"{topic}: {n}" for topic, n in sorted(tally.messages.items()))
    print(
        f"  messages {total} ({per_topic}), "
        f"{total / seconds:,.0f} per second through encode and decode"
    )
    flagged = sum(tally.implausible.values())
    top = ", ".join(f"{name} {n}" for name, n in tally.implausible.most_common(5))
    print(
        f"  values {tally.values}, outside the plausible range {flagged}"
        + (f" ({top})" if top else "")
    )
    patient_hours = args.beds * args.hours
    print(f"  implausible values per patient-hour {flagged / patient_hours:.2f}")
    print(f"  outputs: {out}/{VITALS_TOPIC}.jsonl, {out}/{PATIENT_TOPIC}.jsonl")
    print("  not yet in the demo: anomaly detection, imputation, survival scores, alerts")
