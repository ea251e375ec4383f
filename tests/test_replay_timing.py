"""Replay time (speed, re-stamping, offsets, loops) and the events and simulated sources."""

from __future__ import annotations

import doctest
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import bedside.replay.timing
import bedside.settings
from bedside.cli import main
from bedside.replay.kafka import read_jsonl
from bedside.replay.simulator import simulate_ward
from bedside.replay.timing import TimingError, parse_duration, parse_speed
from bedside.schemas.messages import Admit, Death, Discharge, Vitals, WaveformChunk, decode
from tests.wfdb_records import BASE, write_patient

pytestmark = [
    pytest.mark.filterwarnings("ignore::bedside.replay.ward.ReplayWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame"),
]


def replayed(tmp_path: Path, *argv: str) -> list[Any]:
    out = tmp_path / "out.jsonl"
    assert main(["replay", *argv, "--to", "jsonl", str(out), "--progress", "0"]) == 0
    return [decode(topic, value) for topic, _, value in read_jsonl(out)]


def moment(message: Any) -> datetime:
    return message.start if isinstance(message, WaveformChunk) else message.time


@pytest.mark.parametrize("module", [bedside.replay.timing, bedside.settings])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("text", ["", "5x", "h", "-3s", "1h-2m", "inf"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(TimingError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0", "-1", "fast", "nan"])
def test_bad_speeds_are_refused(text: str) -> None:
    with pytest.raises(TimingError):
        parse_speed(text)


def test_real_time_is_paced_by_the_speed(tmp_path: Path) -> None:
    write_patient(tmp_path / "alpha", seconds=20)
    started = time.monotonic()
    messages = replayed(tmp_path, "wfdb", str(tmp_path / "alpha" / "alphan"), "--speed", "10")
    elapsed = time.monotonic() - started
    assert 1.8 <= elapsed < 10  # 19 s of recording at x10
    assert len(messages) > 15


def test_keep_times_keeps_recorded_times_and_restamp_starts_now(tmp_path: Path) -> None:
    write_patient(tmp_path / "alpha", seconds=10)
    record = str(tmp_path / "alpha")
    kept = replayed(tmp_path, "wfdb", record, "--keep-times", "--speed", "max")
    now = datetime.now(UTC)
    stamped = replayed(tmp_path, "wfdb", record, "--speed", "max")
    assert moment(kept[0]) == BASE
    assert abs(moment(stamped[0]) - now) < timedelta(seconds=30)
    shift = moment(stamped[0]) - moment(kept[0])
    assert [moment(m) - shift for m in stamped] == [moment(m) for m in kept]  # spacing kept


def test_start_offset_admits_first_then_plays_from_the_offset(tmp_path: Path) -> None:
    write_patient(tmp_path / "alpha", seconds=30)
    argv = ["wfdb", str(tmp_path / "alpha"), "--keep-times", "--speed", "max"]
    messages = replayed(tmp_path, *argv, "--start-offset", "12s")
    assert isinstance(messages[0], Admit) and messages[0].time == BASE
    assert all(moment(m) >= BASE + timedelta(seconds=11) for m in messages[1:])
    vitals = [m for m in messages if isinstance(m, Vitals)]
    assert vitals[0].time == BASE + timedelta(seconds=12) and vitals[0].seq == 0


def test_loops_run_on_in_time_with_renamed_stays(tmp_path: Path) -> None:
    write_patient(tmp_path / "alpha", seconds=10)
    argv = ["wfdb", str(tmp_path / "alpha" / "alphan"), "--keep-times", "--speed", "max"]
    messages = replayed(tmp_path, *argv, "--loop", "--duration", "25s")
    admits = [m for m in messages if isinstance(m, Admit)]
    assert [a.stay_id for a in admits] == ["alpha", "alpha#2", "alpha#3"]
    vitals = [m for m in messages if isinstance(m, Vitals)]
    assert [v.seq for v in vitals] == list(range(len(vitals)))
    times = [v.time for v in vitals]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[-1] < BASE + timedelta(seconds=25)


def test_replayed_simulation_is_the_simulated_ward(tmp_path: Path) -> None:
    argv = ["simulate", "--beds", "3", "--hours", "2", "--seed", "5", "--speed", "max"]
    messages = replayed(tmp_path, *argv, "--keep-times")
    assert messages == list(simulate_ward(3, 2, 5, 1 / 60))


def test_events_replay_one_bed_per_stay_admitted_together(tmp_path: Path) -> None:
    data = tmp_path / "data"
    argv = ["data", "simulate", "--stays", "4", "--hours", "6", "--monitor-hz", "0.0166667"]
    assert main([*argv, "--out", str(data)]) == 0
    messages = replayed(tmp_path, "events", str(data), "--keep-times", "--speed", "max")
    stays = pl.read_parquet(data / "stays.parquet").sort("admit_time", "stay_id")
    events = pl.read_parquet(data / "events.parquet")
    admits = [m for m in messages if isinstance(m, Admit)]
    assert [a.stay_id for a in admits] == [str(s) for s in stays["stay_id"]]
    assert len({a.time for a in admits}) == 1  # time-aligned
    assert admits[0].time == stays["admit_time"][0]  # the first stay keeps its times
    first = stays.row(0, named=True)
    assert admits[0].age == first["age"] and admits[0].sex == first["sex"]
    leaves = [m for m in messages if isinstance(m, Discharge | Death)]
    assert sorted(m.stay_id for m in leaves) == sorted(a.stay_id for a in admits)
    values: dict[str, int] = defaultdict(int)
    for message in messages:
        if isinstance(message, Vitals):
            values[message.stay_id or ""] += len(message.values)
    counts = events.group_by("stay_id").len()
    assert values == {str(s): n for s, n in counts.iter_rows()}  # every event, once
    shift = admits[0].time - stays["admit_time"][0]
    second = stays.row(1, named=True)
    later = [m for m in messages if isinstance(m, Vitals) and m.stay_id == str(second["stay_id"])]
    own = events.filter(pl.col("stay_id") == second["stay_id"])["time"].min()
    assert later[0].time - admits[0].time == own - second["admit_time"] + shift
    limited = replayed(tmp_path, "events", str(data), "--stays", "2", "--speed", "max")
    assert len([m for m in limited if isinstance(m, Admit)]) == 2
