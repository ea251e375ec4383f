"""Fuzzing the engine's whole in-process flow with a mix of valid and hostile records.

Each example is a short stream for two beds: vitals, waveform chunks, admissions,
discharges, deaths and acknowledgements in and out of order, duplicated, with odd
values and times, mixed with near-valid and arbitrary payloads and records on topics
the engine does not read. The real Bytewax flow must finish, publish only valid
messages, and account for every record exactly once (processed, dead-lettered or
dropped as a duplicate).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bedside.engine import metrics
from bedside.engine.bed import Engine
from bedside.engine.flow import run_records
from bedside.engine.intake import Incoming
from bedside.engine.settings import EngineSettings
from bedside.schemas.concepts import load_concepts
from bedside.schemas.messages import (
    ALERT_ACKS_TOPIC,
    ANOMALIES_TOPIC,
    PATIENT_TOPIC,
    VITALS_TOPIC,
    WAVEFORM_TOPIC,
    decode,
)
from tests.test_fuzz_messages import fuzz, json_values, near_valid, to_json

START = datetime(2030, 1, 1, tzinfo=UTC)
BEDS = ("icu1-01", "icu1-02")
STAYS = ("s1", "s2", "s3")
OUTCOMES = ("processed", "deadlettered", "duplicate")


@pytest.fixture(scope="module")
def engine(engine_model_dir: Path) -> Engine:
    # A day's jump in a bed's clock is caught up 30 minutes at a time (the rest skipped
    # and counted), not 2,880: the same path, a hundred times faster.
    return Engine(EngineSettings(model_dir=engine_model_dir, future_limit_s=None, max_catch_up=30))


def at(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).isoformat()


#: Seconds after START: mostly an hour of ward time, sometimes far before or after.
offsets = st.integers(0, 3600) | st.sampled_from([-86_400 * 365, -7200, 86_400 * 30])
concept_values = st.dictionaries(
    st.sampled_from(sorted(load_concepts())[:40]),
    st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.0, 1e308, -1e308, 5e-324]),
    min_size=1,
    max_size=6,
)


@st.composite
def valid_record(draw: st.DrawFn) -> Incoming:
    bed = draw(st.sampled_from(BEDS))
    stay = draw(st.none() | st.sampled_from(STAYS))
    time = at(draw(offsets))
    kind = draw(st.sampled_from(["vitals", "vitals", "vitals", "waveform", "patient", "ack"]))
    value: dict[str, Any]
    if kind == "vitals":
        topic = VITALS_TOPIC
        value = {
            "bed": bed,
            "stay_id": stay,
            "time": time,
            "source": draw(st.sampled_from(["monitor", "charted"])),
            "seq": draw(st.integers(0, 50) | st.just(2**62)),
            "values": draw(concept_values),
        }
    elif kind == "waveform":
        topic = WAVEFORM_TOPIC
        fs = draw(st.sampled_from([1.0, 62.5, 125.0, 500.0]))
        count = draw(st.integers(1, int(min(fs, 250))))
        sample = st.none() | st.floats(-5, 5) | st.sampled_from([1e30, -1e30])
        value = {
            "bed": bed,
            "stay_id": stay,
            "signal": draw(st.sampled_from(["ecg_ii", "abp", "pleth", "resp", "cvp"])),
            "fs": fs,
            "start": time,
            "seq": draw(st.integers(0, 50)),
            "units": "mV",
            "samples": draw(st.lists(sample, min_size=count, max_size=count)),
        }
    elif kind == "patient":
        topic = PATIENT_TOPIC
        event = draw(st.sampled_from(["admit", "admit", "discharge", "death"]))
        value = {"event": event, "bed": bed, "stay_id": stay or "s1", "time": time}
        if event == "admit":
            value |= {"age": draw(st.none() | st.floats(0, 130)), "sex": "M"}
    else:
        topic = ALERT_ACKS_TOPIC
        value = {
            "alert_id": draw(st.sampled_from(["a1", f"{bed}:s1:risk:x"])),
            "bed": bed,
            "time": time,
            "by": "nurse.lee",
        }
    return Incoming(topic, to_json(value), bed.encode(), 0, None, None)


@st.composite
def hostile_record(draw: st.DrawFn) -> Incoming:
    kind = draw(st.sampled_from(["near", "json", "bytes", "topic"]))
    topic = draw(st.sampled_from([VITALS_TOPIC, WAVEFORM_TOPIC, PATIENT_TOPIC, ALERT_ACKS_TOPIC]))
    if kind == "near":
        topic, message = draw(near_valid(topic))
        return Incoming(topic, to_json(message))
    if kind == "json":
        return Incoming(topic, to_json(draw(json_values)))
    if kind == "bytes":
        return Incoming(topic, draw(st.binary(max_size=200)))
    return Incoming(ANOMALIES_TOPIC, draw(valid_record()).value)


@st.composite
def streams(draw: st.DrawFn) -> list[Incoming]:
    record = st.one_of(valid_record(), valid_record(), valid_record(), hostile_record())
    records = draw(st.lists(record, min_size=8, max_size=40))
    # Replays: some records again, later in the stream (at-least-once delivery).
    for record in draw(st.lists(st.sampled_from(records), max_size=5)) if records else []:
        records.insert(draw(st.integers(0, len(records))), record)
    return records


def outcome_totals() -> dict[str, float]:
    totals = metrics.totals()
    return {name: totals[name] for name in OUTCOMES}


@fuzz(25)
@given(records=streams())
@example(
    records=[
        Incoming(VITALS_TOPIC, to_json(v))
        for v in (
            {"bed": "icu1-01", "time": t, "source": "m", "seq": n, "values": {"heart_rate": 80}}
            for n, t in enumerate(["0001-01-01T00:00:00+14:00", "0001-01-01T01:00:00Z"])
        )
    ]
)
@example(
    records=[
        Incoming(WAVEFORM_TOPIC, to_json(v))
        for v in (
            {
                "bed": "icu1-01",
                "signal": "ecg_ii",
                "fs": fs,
                "start": at(0),
                "seq": n,
                "units": "mV",
                "samples": [0.1] * 4,
            }
            for n, fs in enumerate([1e-300, 0.01, 1.0])
        )
    ]
)
def test_the_flow_finishes_and_accounts_for_every_record(
    engine: Engine, records: list[Incoming]
) -> None:
    before = outcome_totals()
    outputs = run_records(engine, records)
    after = outcome_totals()
    counted = {name: after[name] - before[name] for name in OUTCOMES}
    assert sum(counted.values()) == len(records), counted
    for record in outputs:
        decode(record.topic, record.value)
