"""Replaying WFDB records: every value as wfdb reads it, at the right time, exactly once."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import wfdb

from bedside.cli import main
from bedside.replay.kafka import read_jsonl
from bedside.replay.ward import ReplayError, ReplayWarning
from bedside.replay.wfdb_source import find_records, wfdb_beds
from bedside.schemas.concepts import load_concepts
from bedside.schemas.messages import (
    PATIENT_TOPIC,
    VITALS_TOPIC,
    WAVEFORM_TOPIC,
    Admit,
    Discharge,
    Vitals,
    WaveformChunk,
    decode,
)
from tests.kafka_broker import consume
from tests.realdata import shared
from tests.wfdb_records import BASE, FS, write_patient

pytestmark = [
    pytest.mark.filterwarnings("ignore::bedside.replay.ward.ReplayWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame"),
]

WAVEFORM_KIND = {"II": "ecg_ii", "ABP": "abp", "AVF": "ecg_avf", "PAP": "pap", "V": "ecg_v"}


def dry_run(tmp_path: Path, *argv: str) -> list[tuple[str, str, object]]:
    """Replay to a JSON-lines file; the decoded (topic, bed, message) records in order."""
    out = tmp_path / "out.jsonl"
    status = main(["replay", *argv, "--to", "jsonl", str(out), "--progress", "0"])
    assert status == 0
    return [(topic, key, decode(topic, value)) for topic, key, value in read_jsonl(out)]


def expected_vitals(record: Path) -> dict[tuple[datetime, str], float]:
    """(time, concept) -> value of every valid, mapped sample, straight from wfdb."""
    read = wfdb.rdrecord(str(record))
    start = datetime.combine(read.base_date, read.base_time, tzinfo=UTC)
    period = timedelta(seconds=round(1 / read.fs))  # 60 s and 1 s records
    expected = {}
    for column, name in enumerate(read.sig_name):
        mapped = load_concepts().from_source("wfdb", name)
        if mapped is None:
            continue
        for index in np.flatnonzero(~np.isnan(read.p_signal[:, column])):
            expected[start + int(index) * period, mapped[0].name] = read.p_signal[index, column]
    return expected


def received_vitals(messages: list[Vitals]) -> tuple[Counter[tuple[datetime, str]], dict]:
    counts: Counter[tuple[datetime, str]] = Counter()
    values = {}
    for message in messages:
        for concept, value in message.values.items():
            counts[message.time, concept] += 1
            values[message.time, concept] = value
    return counts, values


def chunks_by_signal(messages: list[object]) -> dict[str, list[WaveformChunk]]:
    out: dict[str, list[WaveformChunk]] = {}
    for message in messages:
        if isinstance(message, WaveformChunk):
            out.setdefault(message.signal, []).append(message)
    return out


def assert_segment_replayed(chunks: list[WaveformChunk], segment: Path, start: datetime) -> None:
    """The chunks starting in the segment carry its samples, in order, at their times."""
    read = wfdb.rdrecord(str(segment))
    length = read.sig_len / read.fs
    inside = [c for c in chunks if start <= c.start < start + timedelta(seconds=length)]
    assert inside, f"no chunk of {segment.name}"
    assert inside[0].start == start
    for chunk in inside:  # about a second each, cut from the segment's start
        offset = (chunk.start - start) / timedelta(seconds=1)
        assert offset == round(offset) and chunk.fs == FS
    samples = [s for c in inside for s in c.samples]
    column = read.sig_name.index(next(k for k, v in WAVEFORM_KIND.items() if v == chunks[0].signal))
    wanted = [None if math.isnan(v) else v for v in read.p_signal[:, column]]
    # Chunks with no valid sample are not sent; everything else is sample for sample.
    assert [s for s in samples if s is not None] == [s for s in wanted if s is not None]
    assert len(samples) <= len(wanted)


# --- generated records (no shared data needed) --------------------------------------


def test_multisegment_record_keeps_its_timeline_across_a_gap_and_a_missing_segment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = write_patient(tmp_path / "alpha")
    records = dry_run(tmp_path, "wfdb", str(tmp_path / "alpha"), "--keep-times", "--speed", "max")
    err = capsys.readouterr().err
    assert err.count("segment alpha_0003") == 1 and "alpha_0003.dat is missing" in err
    assert err.count("'CO2'") == 1  # unmapped signal reported once
    messages = [m for _, _, m in records]
    assert isinstance(messages[0], Admit) and isinstance(messages[-1], Discharge)
    assert messages[0].time == BASE and {key for _, key, _ in records} == {"bed-01"}
    chunks = chunks_by_signal(messages)
    assert set(chunks) == {"ecg_ii", "abp"}
    for name, _, _, present in layout.segments:
        if present:
            for kind in ("ecg_ii", "abp") if name != "alpha_0004" else ("ecg_ii",):
                assert_segment_replayed(chunks[kind], tmp_path / "alpha" / name, layout.start(name))
    missing = layout.start("alpha_0003")
    assert not [c for c in chunks["ecg_ii"] if missing <= c.start < missing + timedelta(seconds=4)]
    for kind, found in chunks.items():
        assert [c.seq for c in found] == list(range(len(found))), kind
        assert all(len(c.samples) <= FS for c in found)


def test_numerics_are_exactly_the_values_wfdb_reads(tmp_path: Path) -> None:
    write_patient(tmp_path / "alpha")
    records = dry_run(
        tmp_path, "wfdb", str(tmp_path / "alpha" / "alphan"), "--keep-times", "--speed", "max"
    )
    vitals = [m for topic, _, m in records if topic == VITALS_TOPIC]
    counts, values = received_vitals(vitals)  # type: ignore[arg-type]
    assert set(counts.values()) == {1}
    assert values == expected_vitals(tmp_path / "alpha" / "alphan")
    assert [v.seq for v in vitals] == list(range(len(vitals)))  # type: ignore[attr-defined]


def test_records_of_several_patients_make_a_time_aligned_ward(tmp_path: Path) -> None:
    write_patient(tmp_path / "alpha", "alpha")
    write_patient(tmp_path / "beta", "beta")
    records = dry_run(
        tmp_path, "wfdb", str(tmp_path / "alpha"), str(tmp_path / "beta"), "--speed", "max"
    )
    admits = [m for _, _, m in records if isinstance(m, Admit)]
    assert [(a.bed, a.stay_id) for a in admits] == [("bed-01", "alpha"), ("bed-02", "beta")]
    assert admits[0].time == admits[1].time  # both admitted when the replay starts
    assert abs((admits[0].time - datetime.now(UTC)).total_seconds()) < 60  # re-stamped
    times = [m.start if isinstance(m, WaveformChunk) else m.time for _, _, m in records]
    assert all(isinstance(t, datetime) for t in times)


def test_beds_cycle_recordings_for_load_tests(tmp_path: Path) -> None:
    write_patient(tmp_path / "alpha")
    beds = wfdb_beds([tmp_path / "alpha"], beds=3)
    assert [(b.bed, b.stay_id) for b in beds] == [
        ("bed-01", "alpha"),
        ("bed-02", "alpha.2"),
        ("bed-03", "alpha.3"),
    ]
    assert find_records(tmp_path / "alpha") == [
        tmp_path / "alpha" / "alpha",
        tmp_path / "alpha" / "alphan",
    ]


def test_a_record_without_any_data_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_patient(tmp_path / "alpha")
    for data in (tmp_path / "alpha").glob("alpha_*.dat"):
        data.unlink()
    record = tmp_path / "alpha" / "alpha"
    with pytest.warns(ReplayWarning, match="no segment has data"), pytest.raises(ReplayError):
        wfdb_beds([record])
    assert main(["replay", "wfdb", str(record), "--to", "jsonl", "-"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [
        "bedside: error: nothing to replay: none of the WFDB records has data on disk"
    ]


# --- real MIMIC-III records, through the real broker -------------------------------


def test_every_sample_of_a_real_numerics_record_arrives_once_with_its_wfdb_value(
    kafka_broker: str,
) -> None:
    record = shared("mimic3wdb", "p000020") / "p000020-2183-04-28-17-47n"
    argv = ["replay", "wfdb", str(record), "--bootstrap-servers", kafka_broker]
    assert main([*argv, "--keep-times", "--speed", "max", "--progress", "0"]) == 0
    expected = expected_vitals(record)
    received = consume(kafka_broker, [VITALS_TOPIC, PATIENT_TOPIC], expected=1315 + 2)
    vitals = [decode(VITALS_TOPIC, r.value) for r in received if r.topic == VITALS_TOPIC]
    counts, values = received_vitals(vitals)
    assert len(expected) > 10_000
    assert set(counts.values()) == {1}  # exactly once
    assert values == expected  # every sample, with the value wfdb reads
    assert {r.key for r in received} == {"bed-01"}
    assert sorted(v.seq for v in vitals) == list(range(len(vitals)))
    patient = [decode(PATIENT_TOPIC, r.value) for r in received if r.topic == PATIENT_TOPIC]
    assert [p.event for p in patient] == ["admit", "discharge"]
    assert patient[0].time == datetime(2183, 4, 28, 17, 47, 59, 486000, tzinfo=UTC)


def test_a_real_multisegment_record_with_missing_segments_keeps_correct_timestamps(
    kafka_broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shared("mimic3wdb", "p000020")
    record = folder / "p000020-2183-04-28-17-47"
    argv = ["replay", "wfdb", str(record), "--bootstrap-servers", kafka_broker]
    assert main([*argv, "--keep-times", "--speed", "max", "--progress", "0"]) == 0
    err = capsys.readouterr().err
    assert "3544749_0005" in err and "3544749_0008" in err
    received = consume(kafka_broker, [WAVEFORM_TOPIC], expected=1000)
    chunks = chunks_by_signal([decode(WAVEFORM_TOPIC, r.value) for r in received])
    header = wfdb.rdheader(str(record))
    start = datetime.combine(header.base_date, header.base_time, tzinfo=UTC)
    frame = 0
    for name, length in zip(header.seg_name, header.seg_len, strict=True):
        segment_start = start + timedelta(seconds=frame / header.fs)
        frame += length
        if name == "~" or length == 0:
            continue
        end = segment_start + timedelta(seconds=length / header.fs)
        if not (folder / f"{name}.dat").exists():  # 0005 (15.8 h) and 0008: skipped
            assert not [c for s in chunks.values() for c in s if segment_start <= c.start < end]
            continue
        # The segment's own header (in ms, the clock of that day) agrees within a sample;
        # 0006 starts 15 h 47 min after 0004, across midnight and the missing 0005.
        own = datetime.combine(
            segment_start.date(), wfdb.rdheader(str(folder / name)).base_time, tzinfo=UTC
        )
        assert abs(own - segment_start) <= timedelta(seconds=1 / header.fs)
        signals = wfdb.rdheader(str(folder / name)).sig_name
        for signal in signals:
            kind = WAVEFORM_KIND[signal]
            assert_segment_replayed(chunks[kind], folder / name, segment_start)
