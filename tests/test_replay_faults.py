"""Fault injection: what arrives at the broker is exactly what the manifest says."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bedside.cli import main
from bedside.replay.faults import FAULTS, read_manifest
from bedside.replay.kafka import read_jsonl
from bedside.replay.ward import time_of, topic_of
from bedside.schemas.messages import (
    PATIENT_TOPIC,
    VITALS_TOPIC,
    WAVEFORM_TOPIC,
    MessageError,
    Vitals,
    WaveformChunk,
    decode,
)
from tests.kafka_broker import consume
from tests.wfdb_records import write_patient

pytestmark = [
    pytest.mark.filterwarnings("ignore::bedside.replay.ward.ReplayWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame"),
]

TOPICS = [VITALS_TOPIC, WAVEFORM_TOPIC, PATIENT_TOPIC]
RATES = {"gap": 0.01, "drop": 0.05, "artefact": 0.08, "schema_violation": 0.05}
RATES |= {"corrupt": 0.05, "duplicate": 0.06, "delay": 0.05, "reorder": 0.06}
Identity = tuple[str, str, str | None, int | None, str]


def replay_args(folder: Path, *extra: str) -> list[str]:
    """A ward of three beds from one generated patient, recorded times, as fast as possible."""
    return ["replay", "wfdb", str(folder), "--beds", "3", "--keep-times", "--speed", "max",
            "--progress", "0", "--seed", "11", *extra]  # fmt: skip


def fault_args(manifest: Path) -> list[str]:
    options = [[f"--{name.replace('_', '-')}", str(rate)] for name, rate in RATES.items()]
    return [item for option in options for item in option] + ["--faults-manifest", str(manifest)]


def identity(message: Any) -> Identity:
    signal = message.signal if isinstance(message, WaveformChunk) else None
    seq = message.seq if isinstance(message, Vitals | WaveformChunk) else None
    return topic_of(message), message.bed, signal, seq, getattr(message, "event", "")


def due(message: Any) -> datetime:
    if isinstance(message, WaveformChunk):
        return message.start + timedelta(seconds=len(message.samples) / message.fs)
    return time_of(message)


@pytest.fixture
def ward(tmp_path: Path) -> Path:
    write_patient(tmp_path / "alpha", seconds=40)
    return tmp_path / "alpha"


@pytest.fixture
def baseline(ward: Path, tmp_path: Path) -> list[Any]:
    """The ward's messages without faults, in order: message n of the manifest is [n]."""
    out = tmp_path / "baseline.jsonl"
    assert main([*replay_args(ward), "--to", "jsonl", str(out)]) == 0
    return [decode(topic, value) for topic, _, value in read_jsonl(out)]


def test_injected_faults_match_the_manifest(
    ward: Path, baseline: list[Any], tmp_path: Path, kafka_broker: str
) -> None:
    manifest_path = tmp_path / "faults.jsonl"
    status = main(
        [*replay_args(ward, "--bootstrap-servers", kafka_broker), *fault_args(manifest_path)]
    )
    assert status == 0
    with manifest_path.open() as lines:
        manifest = list(read_manifest(lines))
    by_fault = Counter(entry["fault"] for entry in manifest)
    assert set(by_fault) == set(FAULTS), by_fault  # every kind of fault happened
    faults: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for entry in manifest:
        message = baseline[entry["n"]]  # the manifest names the message it hit
        assert (entry["topic"], entry["bed"], entry["signal"], entry["seq"]) == identity(message)[
            :4
        ]
        assert datetime.fromisoformat(entry["time"]) == time_of(message)
        faults[entry["n"]][entry["fault"]] = entry["detail"]

    withheld = {n for n, hit in faults.items() if "drop" in hit or "gap" in hit}
    unreadable = {n for n, hit in faults.items() if {"corrupt", "schema_violation"} & set(hit)}
    published = sum(
        2 if "duplicate" in faults[n] else 1 for n in range(len(baseline)) if n not in withheld
    )
    received = consume(kafka_broker, TOPICS, expected=published)
    assert len(received) == published
    position = {}
    valid: Counter[Identity] = Counter()
    broken: list[bytes] = []
    for index, record in enumerate(received):
        try:
            message = decode(record.topic, record.value)
        except MessageError:
            broken.append(record.value)
            continue
        key = identity(message)
        valid[key] += 1
        position.setdefault(key, index)
        n = next(i for i, m in enumerate(baseline) if identity(m) == key)
        assert message == expected_content(baseline[n], faults[n].get("artefact"))
    for n, message in enumerate(baseline):
        copies = 2 if "duplicate" in faults[n] else 1
        readable = 0 if n in withheld | unreadable else copies
        assert valid[identity(message)] == readable, (n, faults[n])
    assert_unreadable_payloads(broken, [faults[n] for n in unreadable - withheld])
    assert_gaps_silence_their_bed(baseline, manifest)
    assert_held_back(baseline, faults, position, withheld, unreadable)


def expected_content(message: Any, artefact: dict[str, Any] | None) -> Any:
    if artefact is None:
        return message
    if isinstance(message, Vitals):
        assert message.values[artefact["concept"]] == artefact["original"]
        values = {**message.values, artefact["concept"]: artefact["value"]}
        return message.model_copy(update={"values": values})
    samples = list(message.samples)
    first, last = artefact["start_index"], artefact["end_index"]
    assert samples[first:last] == artefact["original"]
    samples[first:last] = artefact["value"]
    return message.model_copy(update={"samples": samples})


def assert_unreadable_payloads(broken: list[bytes], hits: list[dict[str, Any]]) -> None:
    """Corrupted payloads are invalid UTF-8 with the manifest's bytes at its positions;
    schema violations are JSON that the topic's schema refuses."""
    corrupt = [h["corrupt"] for h in hits if "corrupt" in h]
    violating = [h for h in hits if "schema_violation" in h]
    copies = {id(h): 2 if "duplicate" in h else 1 for h in hits}
    corrupted = [b for b in broken if not _is_utf8(b)]
    violations = [b for b in broken if _is_utf8(b)]
    assert len(corrupted) == sum(copies[id(h)] for h in hits if "corrupt" in h)
    assert len(violations) == sum(copies[id(h)] for h in violating)
    for payload in corrupted:
        assert any(
            max(c["positions"]) < len(payload)
            and bytes(payload[p] for p in c["positions"]).hex() == c["replacement"]
            for c in corrupt
        )
    for payload in violations:
        body = json.loads(payload)
        assert any(_violates(body, h["schema_violation"]) for h in violating)


def _violates(body: dict[str, Any], violation: dict[str, Any]) -> bool:
    kind, value = violation["kind"], body.get(violation["field"])
    if kind == "missing_field":
        return value is None
    if kind == "unknown_field":
        return value is True
    if kind == "wrong_type":
        return value == "not a time"
    if kind == "naive_time":
        return isinstance(value, str) and value[-1].isdigit() and "+" not in value[10:]
    return value in (-1, 500.0)


def assert_gaps_silence_their_bed(baseline: list[Any], manifest: list[dict[str, Any]]) -> None:
    """Every vitals/waveform message of a gap's bed until the gap's end is withheld."""
    in_gap = {e["n"] for e in manifest if e["fault"] == "gap"}
    starts = {}
    for entry in manifest:
        if entry["fault"] == "gap":
            starts.setdefault(entry["detail"]["gap"], entry)
    assert starts
    for entry in starts.values():
        bed = baseline[entry["n"]].bed
        until = datetime.fromisoformat(entry["detail"]["until"])
        for n in range(entry["n"], len(baseline)):
            message = baseline[n]
            content = isinstance(message, Vitals | WaveformChunk)
            if content and message.bed == bed and time_of(message) < until:
                assert n in in_gap, n


def assert_held_back(
    baseline: list[Any],
    faults: dict[int, dict[str, dict[str, Any]]],
    position: dict[Identity, int],
    withheld: set[int],
    unreadable: set[int],
) -> None:
    """Reordered messages come after the messages of their bed they were held behind;
    delayed ones after those due before they were."""

    def plain(n: int) -> bool:
        return not ({"reorder", "delay"} & set(faults[n])) and n not in withheld | unreadable

    checked = 0
    for n, hit in faults.items():
        if n in withheld | unreadable or not ({"reorder", "delay"} & set(hit)):
            continue
        message = baseline[n]
        same = [  # later messages of the bed on the topic that were not withheld
            m
            for m in range(n + 1, len(baseline))
            if topic_of(baseline[m]) == topic_of(message)
            and baseline[m].bed == message.bed
            and m not in withheld
        ]
        if "delay" in hit:
            late = due(message) + timedelta(seconds=hit["delay"]["seconds"])
            before = [m for m in same if due(baseline[m]) < late]
        else:
            before = same[: hit["reorder"]["behind"]]
        for m in before:
            if plain(m):
                assert position[identity(baseline[m])] < position[identity(message)], (n, m)
                checked += 1
    assert checked > 0


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_the_same_seed_injects_the_same_faults(ward: Path, tmp_path: Path) -> None:
    runs = []
    for run in ("one", "two"):
        out, manifest = tmp_path / f"{run}.jsonl", tmp_path / f"{run}-faults.jsonl"
        argv = [*replay_args(ward), *fault_args(manifest), "--to", "jsonl", str(out)]
        assert main(argv) == 0
        runs.append((out.read_bytes(), manifest.read_bytes()))
    assert runs[0] == runs[1] and runs[0][1]
    other = tmp_path / "other-faults.jsonl"
    argv = [*replay_args(ward), *fault_args(other), "--to", "jsonl", str(tmp_path / "o.jsonl")]
    assert main([*argv, "--seed", "12"]) == 0
    assert other.read_bytes() != runs[0][1]


def test_corrupt_and_violating_payloads_never_decode(ward: Path, tmp_path: Path) -> None:
    out, manifest = tmp_path / "out.jsonl", tmp_path / "faults.jsonl"
    argv = [*replay_args(ward), "--corrupt", "0.3", "--schema-violation", "0.3"]
    assert main([*argv, "--faults-manifest", str(manifest), "--to", "jsonl", str(out)]) == 0
    failures = 0
    for topic, _, payload in read_jsonl(out):
        try:
            decode(topic, payload)
        except MessageError:
            failures += 1
    with manifest.open() as lines:
        assert failures == sum(1 for _ in read_manifest(lines)) > 50


def test_rates_outside_zero_to_one_are_refused(
    ward: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*replay_args(ward), "--drop", "1.5", "--to", "jsonl", "-"]) == 2
    assert "--drop must be 0 to 1" in capsys.readouterr().err
