"""Small WFDB records written by the tests themselves, laid out like MIMIC-III's.

``write_patient`` writes one patient's folder: a multi-segment 125 Hz waveform record
``NAME`` (ECG II and ABP, with a gap, a segment whose signal file is missing and a
segment with ECG only) and its 1 Hz numerics record ``NAMEn`` (HR, SpO2 and an
unmapped ``CO2``, some samples invalid).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import wfdb

FS = 125
BASE = datetime(2150, 2, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Layout:
    """Where each segment lies in the waveform record, in frames from its start."""

    segments: tuple[tuple[str, int, int, bool], ...]  # name, first frame, frames, has data

    def start(self, name: str) -> datetime:
        first = next(f for n, f, _, _ in self.segments if n == name)
        return BASE + timedelta(seconds=first / FS)


def write_patient(directory: Path, name: str = "alpha", seconds: int = 30) -> Layout:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    plan = [  # name, frames, signals, keep its data
        (f"{name}_0001", 10 * FS + 37, ("II", "ABP"), True),
        ("~", 2 * FS, (), False),
        (f"{name}_0002", 5 * FS + 62, ("II", "ABP"), True),
        (f"{name}_0003", 4 * FS, ("II", "ABP"), False),
        (f"{name}_0004", 6 * FS + 1, ("II",), True),
    ]
    layout, frame = [], 0
    for segment, frames, signals, keep in plan:
        if segment != "~":
            units = {"II": "mV", "ABP": "mmHg"}
            gains = {"II": 200.0, "ABP": 10.0}
            values = {
                "II": rng.normal(0, 0.4, frames),
                "ABP": 80 + 30 * np.sin(np.arange(frames) / 20),
            }
            signal = np.column_stack([values[s] for s in signals])
            if "ABP" in signals:
                signal[5:9, signals.index("ABP")] = np.nan  # an invalid stretch
            wfdb.wrsamp(
                segment,
                fs=FS,
                units=[units[s] for s in signals],
                sig_name=list(signals),
                p_signal=signal,
                fmt=["16"] * len(signals),
                adc_gain=[gains[s] for s in signals],
                baseline=[0] * len(signals),
                base_time=(BASE + timedelta(seconds=frame / FS)).time(),
                write_dir=str(directory),
            )
            if not keep:
                (directory / f"{segment}.dat").unlink()
        layout.append((segment, frame, frames, keep and segment != "~"))
        frame += frames
    master = [f"{name}/{len(plan) + 1} 2 {FS} {frame} 08:00:00.000 01/02/2150"]
    master.append(f"{name}_layout 0")
    master.extend(f"{segment} {frames}" for segment, frames, _, _ in plan)
    (directory / f"{name}.hea").write_text("\n".join(master) + "\n")
    (directory / f"{name}_layout.hea").write_text(
        f"{name}_layout 2 {FS} 0 08:00:00.000\n"
        "~ 0 200/mV 16 0 0 0 0 II\n~ 0 10/mmHg 16 0 0 0 0 ABP\n"
    )
    numerics = np.column_stack(
        [
            70 + rng.integers(0, 30, seconds) / 10,
            np.where(np.arange(seconds) % 7 == 3, np.nan, 96 + rng.integers(0, 4, seconds)),
            np.full(seconds, 35.0),
        ]
    )
    numerics[4, :2] = np.nan  # an instant with nothing valid: no Vitals
    wfdb.wrsamp(
        f"{name}n",
        fs=1,
        units=["bpm", "%", "mmHg"],
        sig_name=["HR", "SpO2", "CO2"],
        p_signal=numerics,
        fmt=["16", "16", "16"],
        adc_gain=[10.0, 10.0, 10.0],
        baseline=[0, 0, 0],
        base_date=date(2150, 2, 1),
        base_time=time(8, 0),
        write_dir=str(directory),
    )
    return Layout(tuple(layout))
