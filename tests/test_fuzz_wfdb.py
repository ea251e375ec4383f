"""Fuzzing the WFDB replay source with damaged headers and signal files.

Small records written here (a 125 Hz waveform record, a 1 Hz numerics record and a
MIMIC-style multi-segment patient from ``tests/wfdb_records.py``) are damaged one to
three times: a header token replaced by a hostile one (counts, rates, gains, units,
formats, dates), lines deleted, duplicated or cut, signal files truncated, padded,
replaced or removed. Replaying them may only end in ``ReplayError`` (one clear line) or
succeed with ``ReplayWarning`` for what was left out, and every message it yields is
valid.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from datetime import date, time
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import given
from hypothesis import strategies as st

from bedside.replay.ward import ReplayError, ReplayWarning, Timeline, Ward, topic_of
from bedside.replay.wfdb_source import wfdb_beds
from bedside.schemas.messages import Vitals, WaveformChunk, decode, encode
from tests.test_fuzz_messages import fuzz
from tests.wfdb_records import write_patient

pytestmark = [
    pytest.mark.filterwarnings("ignore::bedside.replay.ward.ReplayWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame"),
]

#: Most messages read from one damaged recording (a header may claim days of data).
MAX_MESSAGES = 3000

HOSTILE_TOKENS = [
    "",
    "0",
    "-1",
    "-125",
    "1e9",
    "nan",
    "inf",
    "0.0001",
    "20000",
    "999999999999",
    "abc",
    "1/0",
    "125/0(0)",
    "16x0",
    "16x99999",
    "16+99999999",
    "16:5",
    "99",
    "212",
    "310",
    "0(0)/mV",
    "nan(0)/mV",
    "-200(0)/mV",
    "1e-300(0)/mV",
    "200(99999)/mV",
    "200(0)/" + "u" * 40,
    "~",
    "../../x",
    "x" * 300,
    "99/99/2150",
    "25:61:00",
    "01/01/0001",
    "31/12/9999",
    "\x00",
    "é",
]
tokens = st.sampled_from(HOSTILE_TOKENS) | st.text(max_size=8) | st.integers().map(str)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The undamaged recordings: ``wave/``, ``numerics/`` and ``patient/``."""
    root = tmp_path_factory.mktemp("wfdb-originals")
    wave = np.column_stack([np.sin(np.arange(500) / 10), 80 + 10 * np.cos(np.arange(500) / 7)])
    (root / "wave").mkdir()
    wfdb.wrsamp(
        "rec",
        fs=125,
        units=["mV", "mmHg"],
        sig_name=["II", "ABP"],
        p_signal=wave,
        fmt=["16", "16"],
        adc_gain=[200.0, 10.0],
        baseline=[0, 0],
        base_date=date(2150, 2, 1),
        base_time=time(8, 0),
        write_dir=str(root / "wave"),
    )
    numerics = np.column_stack([70 + np.arange(20) % 5, 95 + np.arange(20) % 3]).astype(float)
    (root / "numerics").mkdir()
    wfdb.wrsamp(
        "recn",
        fs=1,
        units=["bpm", "%"],
        sig_name=["HR", "SpO2"],
        p_signal=numerics,
        fmt=["16", "16"],
        adc_gain=[10.0, 10.0],
        baseline=[0, 0],
        base_date=date(2150, 2, 1),
        base_time=time(8, 0),
        write_dir=str(root / "numerics"),
    )
    write_patient(root / "patient", "alpha", seconds=20)
    return root


def replay(path: Path) -> Iterator[object]:
    """The messages of a replay of ``path`` with recorded times, as the CLI would send."""
    beds = wfdb_beds([path])
    ward = Ward([bed.feed() for bed in beds], Timeline(restamp=False))
    for _, message in itertools.islice(ward.messages(), MAX_MESSAGES):
        yield message


def check_replay(path: Path) -> list[object]:
    """Replay; only ReplayError may stop it, and what it yields round-trips as messages."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplayWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy on absurd gains
        try:
            messages = list(replay(path))
        except ReplayError as error:
            assert str(error)
            return []
    for message in messages:
        assert decode(topic_of(message), encode(message)) == message  # type: ignore[arg-type]
    return messages


@st.composite
def damage(draw: st.DrawFn, folder: Path) -> list[str]:
    """Damage the recording in ``folder`` in place; what was done (for the report)."""
    done = []
    for _ in range(draw(st.integers(1, 3))):
        headers = sorted(folder.glob("*.hea"))
        signals = sorted(folder.glob("*.dat"))
        target = draw(st.sampled_from(["token", "token", "token", "line", "cut", "signal"]))
        if target == "signal" and signals:
            path = draw(st.sampled_from(signals))
            data = path.read_bytes()
            how = draw(st.sampled_from(["truncate", "pad", "garbage", "delete"]))
            if how == "truncate":
                path.write_bytes(data[: draw(st.integers(0, max(0, len(data) - 1)))])
            elif how == "pad":
                path.write_bytes(data + draw(st.binary(min_size=1, max_size=64)))
            elif how == "garbage":
                path.write_bytes(draw(st.binary(max_size=256)))
            else:
                path.unlink()
            done.append(f"{how} {path.name}")
            continue
        if not headers:
            break
        path = draw(st.sampled_from(headers))
        lines = path.read_text(encoding="latin-1").splitlines()
        if target == "cut" or not lines:
            text = "\n".join(lines)
            path.write_text(text[: draw(st.integers(0, len(text)))], encoding="latin-1")
            done.append(f"cut {path.name}")
            continue
        row = draw(st.integers(0, len(lines) - 1))
        if target == "line":
            how = draw(st.sampled_from(["delete", "duplicate", "blank", "comment"]))
            if how == "delete":
                del lines[row]
            elif how == "duplicate":
                lines.insert(row, lines[row])
            else:
                lines.insert(row, "" if how == "blank" else "# <age>: 200 <sex>: X")
        else:
            fields = lines[row].split(" ")
            column = draw(st.integers(0, len(fields) - 1))
            fields[column] = draw(tokens)
            lines[row] = " ".join(fields)
            how = f"token {column} := {fields[column]!r}"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        done.append(f"{how} in {path.name}:{row + 1}")
    return done


@pytest.mark.parametrize("recording", ["wave", "numerics", "patient"])
def test_the_undamaged_recordings_replay(originals: Path, recording: str) -> None:
    messages = check_replay(originals / recording)
    assert any(isinstance(m, Vitals | WaveformChunk) for m in messages)


@fuzz(40)
@given(recording=st.sampled_from(["wave", "numerics", "patient"]), data=st.data())
def test_damaged_recordings_give_only_replay_errors_or_warnings(
    originals: Path, recording: str, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / recording
        shutil.copytree(originals / recording, folder)
        data.draw(damage(folder), label="damage")
        check_replay(folder)
        for header in sorted(folder.glob("*.hea"))[:2]:  # a record named directly, too
            check_replay(header.with_suffix(""))


def test_a_truncated_segment_is_skipped_with_a_warning_and_the_rest_replays(
    originals: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "patient"
    shutil.copytree(originals / "patient", folder)
    intact = check_replay(folder)
    damaged = folder / "alpha_0002.dat"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.warns(ReplayWarning, match=r"segment alpha_0002 .* skipped, its signal file is"):
        messages = list(replay(folder))
    lost = {m.start for m in intact if isinstance(m, WaveformChunk)} - {
        m.start for m in messages if isinstance(m, WaveformChunk)
    }
    assert lost and len(messages) < len(intact)
    # The other segments keep their place in time.
    first = [m.start for m in messages if isinstance(m, WaveformChunk)][:3]
    assert first == [m.start for m in intact if isinstance(m, WaveformChunk)][:3]


@pytest.mark.parametrize(
    ("record_line", "reason"),
    [
        ("rec 2 0 500", "sampling frequency '0' is not a positive number"),
        ("rec 2 -125 500", "wfdb reads as 250"),
        ("rec 3 125 500", "announces 3 signals, the signal lines give 2"),
        ("rec 2 20000 500", "above the 10000 Hz"),
        ("rec 2 125 500 08:00:00 01/01/0001", "outside the years 1900-2999"),
    ],
)
def test_impossible_headers_are_named(
    originals: Path, tmp_path: Path, record_line: str, reason: str
) -> None:
    folder = tmp_path / "wave"
    shutil.copytree(originals / "wave", folder)
    header = folder / "rec.hea"
    lines = header.read_text().splitlines()
    header.write_text("\n".join([record_line, *lines[1:]]) + "\n")
    with pytest.raises(ReplayError, match=reason):
        list(replay(folder / "rec"))
