"""WFDB records as bed feeds: numerics become ``Vitals``, waveforms ~1 s ``WaveformChunk``.

Records are read with the ``wfdb`` package, five minutes at a time, so a day-long
125 Hz record never sits in memory whole. Handled:

* single-segment records (``.dat`` or ``.mat`` signal files) and multi-segment records
  (MIMIC-II/III and MIMIC-IV waveform databases): segments are read one by one, and a
  segment whose header or signal file is missing is skipped with one warning while
  the timeline stays right: every segment's place comes from the master header's
  segment lengths, never from what is present;
* numerics records (``...n.hea``, one sample a minute or a second): every signal at
  10 Hz or less is a numeric, mapped through the concept dictionary (``HR`` ->
  ``heart_rate``); all values of one instant make one ``Vitals``;
* waveform signals (faster than 10 Hz), mapped to waveform kinds (``II`` -> ``ecg_ii``),
  cut into chunks of ``round(fs)`` frames from each segment's start (the last chunk of
  a segment is shorter); samples WFDB marks invalid are ``None``, and a chunk with no
  valid sample is not sent;
* signals the dictionary does not know are reported once (one warning per name) and
  left out;
* damaged records: a header wfdb cannot parse, or whose rate, signal count or dates
  cannot be right, is a :class:`ReplayError` naming it; a signal file that cannot be
  read to its last frame (truncated, wrong format or layout) is skipped with a warning,
  like a missing one; invalid and non-finite samples are left out like WFDB's invalid
  ones.

A record and its numerics record (``X`` and ``Xn`` in one folder) are one bed, whose
stay id is ``X``. A folder given on the command line stands for every record under it.
Times are the records' own (MIMIC dates are shifted into the future); a record without
a date starts on ``bedside.schemas.tables.TIME_ANCHOR``'s day.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import math
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from functools import cached_property
from pathlib import Path
from typing import Final

import numpy as np
import wfdb

from bedside.replay.ward import Draft, Feed, ReplayError, ReplayWarning, Timed, to_us
from bedside.schemas.concepts import IDENTITY, Conversion, load_concepts
from bedside.schemas.messages import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_WAVEFORM_HZ,
    MAX_WAVEFORM_SAMPLES,
    Admit,
    Discharge,
    Vitals,
    WaveformChunk,
)
from bedside.schemas.tables import TIME_ANCHOR

#: Signals sampled at this rate or slower are numerics; faster ones are waveforms.
NUMERIC_MAX_HZ: Final = 10.0
#: Per-signal fields of a WFDB header, one entry per signal each.
_SIGNAL_FIELDS: Final = ("file_name", "fmt", "samps_per_frame", "adc_gain", "baseline", "units")
#: ``Vitals.source`` of values read from a bedside monitor's record.
MONITOR_SOURCE: Final = "monitor"
#: Frames read from disk at a time (five minutes of chunks, at least 4096 frames): each
#: read parses the header again, so reads are few; they are kept as integers, 4 bytes a
#: sample, and turned into physical units a minute of chunks at a time.
_READ_CHUNKS: Final = 300
_CONVERT_CHUNKS: Final = 60
_MIN_READ_FRAMES: Final = 4096

_AGE: Final = re.compile(r"<age>:\s*(\d+(?:\.\d+)?)")
_SEX: Final = re.compile(r"<sex>:\s*([MF])\b")


@dataclass(frozen=True)
class Segment:
    """A stretch of a record with data on disk: its name, place in frames and header."""

    name: str
    first_frame: int
    frames: int
    header: wfdb.Record = field(compare=False, repr=False)


@dataclass(frozen=True)
class Channel:
    """A WFDB signal the dictionary maps: to a concept (numeric) or a waveform kind."""

    target: str
    numeric: bool
    conversion: Conversion = IDENTITY


@dataclass(frozen=True)
class WfdbRecord:
    """What the headers say of one record: where each segment with data lies in time."""

    directory: Path
    name: str
    fs: float
    start_us: int
    segments: tuple[Segment, ...]
    signals: tuple[str, ...]
    comments: tuple[str, ...]

    @cached_property
    def period_us(self) -> float | int:
        """Microseconds per frame: an integer when the rate allows (125 Hz, 1/60 Hz)."""
        period = 1e6 / self.fs
        # Headers round rates (0.0166666666667 for 1/60): snap to whole microseconds.
        return round(period) if abs(period - round(period)) <= 1e-9 * period else period

    @cached_property
    def chunk_frames(self) -> int:
        """Frames in a waveform chunk: about a second."""
        return max(1, round(self.fs))

    def frame_us(self, frame: int | float) -> int:
        return self.start_us + round(frame * self.period_us)

    @property
    def data_start_us(self) -> int:
        return self.frame_us(self.segments[0].first_frame)

    @property
    def data_end_us(self) -> int:
        last = self.segments[-1]
        return self.frame_us(last.first_frame + last.frames)

    @property
    def stay(self) -> str:
        """The recording's name: a numerics record ``Xn`` belongs to ``X``."""
        if self.fs <= NUMERIC_MAX_HZ and self.name.endswith("n") and len(self.name) > 1:
            return self.name[:-1]
        return self.name


def find_records(path: Path) -> list[Path]:
    """The records at ``path``: a header (``X.hea``), a record path (``X``) or a folder.

    In a folder (searched recursively) the top-level records are kept: the segments
    and layouts that multi-segment records list are not records of their own.
    """
    if path.is_dir():
        headers = sorted(path.rglob("*.hea"))
        if not headers:
            raise ReplayError(f"{path}: no WFDB header (.hea) in this folder")
        listed: set[Path] = set()
        for header in headers:
            first = _first_line(header)
            if "/" in first.split(maxsplit=1)[0]:  # "name/segments ..." is a master header
                record = read_header(header.with_suffix(""))
                listed.update(header.parent / name for name in record.seg_name if name != "~")
        return [h.with_suffix("") for h in headers if h.with_suffix("") not in listed]
    record = path.with_suffix("") if path.suffix == ".hea" else path
    if not record.with_name(record.name + ".hea").is_file():
        raise ReplayError(f"{path}: no such WFDB record (looked for {record.name}.hea)")
    return [record]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _first_line(header: Path) -> str:
    with header.open(encoding="latin-1") as lines:
        for line in lines:
            if line.strip() and not line.startswith("#"):
                return line
    raise ReplayError(f"{header}: empty WFDB header")


def read_header(path: Path) -> wfdb.Record | wfdb.MultiRecord:
    """``path.hea`` as wfdb reads it, checked: a ReplayError if it cannot be right."""
    try:
        header = wfdb.rdheader(str(path))
    except Exception as error:  # wfdb's parser raises whatever a malformed line trips on
        reason = str(error) or type(error).__name__
        raise ReplayError(f"{path}.hea: unreadable WFDB header ({reason})") from error
    # wfdb reads a rate it cannot parse as its default (250 Hz): compare with the text.
    fields = _first_line(path.with_name(path.name + ".hea")).split()
    written = fields[2].split("/")[0].split("(")[0] if len(fields) > 2 else str(header.fs)
    fs = header.fs
    if not isinstance(fs, int | float) or not math.isfinite(fs) or fs <= 0:
        raise ReplayError(f"{path}.hea: sampling frequency {written!r} is not a positive number")
    if _number(written) != float(fs):
        raise ReplayError(f"{path}.hea: sampling frequency {written!r}, which wfdb reads as {fs}")
    if isinstance(header, wfdb.MultiRecord):
        return header
    n_sig = header.n_sig or 0
    for name in ("sig_name", *_SIGNAL_FIELDS):
        if len(getattr(header, name) or []) != n_sig:
            raise ReplayError(
                f"{path}.hea: the record line announces {n_sig} signals, the signal lines "
                f"give {len(getattr(header, name) or [])} ({name})"
            )
    if any(not per_frame or per_frame < 1 for per_frame in header.samps_per_frame or []):
        raise ReplayError(f"{path}.hea: a signal has {header.samps_per_frame} samples per frame")
    return header


def open_record(path: Path) -> WfdbRecord | None:
    """Read a record's headers; None (with a warning) when none of its data is on disk."""
    header = read_header(path)
    directory, name = path.parent, path.name
    if isinstance(header, wfdb.MultiRecord):
        segments, signals = _present_segments(directory, name, header)
    elif missing := _data_missing(directory, header):
        segments, signals = [], []
        message = f"WFDB record {name}: signal file {missing} is missing; record skipped"
        warnings.warn(ReplayWarning(message), stacklevel=2)
    else:
        segments = [Segment(name, 0, header.sig_len, header)] if header.sig_len else []
        signals = list(header.sig_name or [])
        damage = _unreadable(directory, segments[0]) if segments else "no signal length"
        if damage:
            segments, signals = [], []
            message = f"WFDB record {name}: no readable samples ({damage}); record skipped"
            warnings.warn(ReplayWarning(message), stacklevel=2)
    if not segments:
        if isinstance(header, wfdb.MultiRecord):
            warnings.warn(ReplayWarning(f"WFDB record {name}: no segment has data"), stacklevel=2)
        return None
    fastest = header.fs * max(max(s.header.samps_per_frame, default=1) for s in segments)
    if header.fs > NUMERIC_MAX_HZ and fastest > MAX_WAVEFORM_HZ:
        raise ReplayError(
            f"{path}.hea: a signal sampled at {fastest:g} Hz, above the "
            f"{MAX_WAVEFORM_HZ:g} Hz a waveform message carries"
        )
    record = WfdbRecord(
        directory=directory,
        name=name,
        fs=float(header.fs),
        start_us=to_us(_base_datetime(header)),
        segments=tuple(segments),
        signals=tuple(dict.fromkeys(signals)),
        comments=tuple(header.comments or ()),
    )
    if record.data_start_us < to_us(EARLIEST_TIME) or record.data_end_us > to_us(LATEST_TIME):
        raise ReplayError(
            f"{path}.hea: its samples are dated outside the years {EARLIEST_TIME.year}-"
            f"{LATEST_TIME.year - 1} that messages may carry (base date {header.base_date}, "
            f"{header.fs:g} Hz)"
        )
    return record


def _present_segments(
    directory: Path, name: str, header: wfdb.MultiRecord
) -> tuple[list[Segment], list[str]]:
    segments: list[Segment] = []
    signals: list[str] = []
    frame = 0
    for segment_name, length in zip(header.seg_name, header.seg_len, strict=True):
        first, frame = frame, frame + int(length)
        if segment_name == "~" or length == 0:  # a gap, or the layout header
            continue
        reason = None
        if not _is_file(directory / f"{segment_name}.hea"):
            reason = "header is missing"
        else:
            try:
                segment = read_header(directory / segment_name)
            except ReplayError as error:
                segment, reason = None, f"header is unreadable ({error})"
            if isinstance(segment, wfdb.MultiRecord):
                reason = "header is another multi-segment record"
            elif segment is not None and segment.fs != header.fs:
                reason = f"rate ({segment.fs:g} Hz) is not the record's ({header.fs:g} Hz)"
            elif segment is not None and (missing := _data_missing(directory, segment)):
                reason = f"signal file {missing} is missing"
        if reason is None:
            # The master header places the segment; its own header may say it is shorter.
            frames = min(int(length), segment.sig_len or 0)
            placed = Segment(segment_name, first, frames, segment)
            if not frames:
                reason = "header gives no samples"
            elif damage := _unreadable(directory, placed):
                reason = f"signal file is unreadable ({damage})"
        if reason:
            warnings.warn(
                ReplayWarning(
                    f"WFDB record {name}: segment {segment_name} ({length / header.fs:.0f} s) "
                    f"skipped, its {reason}"
                ),
                stacklevel=3,
            )
            continue
        segments.append(placed)
        signals.extend(segment.sig_name or [])
    return segments, signals


def _unreadable(directory: Path, segment: Segment) -> str | None:
    """Why a segment's samples cannot be read and converted to its last frame, if so
    (a truncated signal file, a format or layout its header gets wrong)."""
    try:
        last = segment.frames - 1
        _physical(segment.header, _read_digital(directory, segment, last, segment.frames))
    except Exception as error:  # wfdb's reader fails in whatever way the bytes lead it to
        return str(error) or type(error).__name__
    return None


def _is_file(path: Path) -> bool:
    """Whether a file a header names is there (a name too long for the system is not)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _data_missing(directory: Path, header: wfdb.Record) -> str | None:
    for file_name in dict.fromkeys(header.file_name or []):
        if not _is_file(directory / file_name):
            return str(file_name)
    return None


def _base_datetime(header: wfdb.Record | wfdb.MultiRecord) -> datetime:
    day = header.base_date or TIME_ANCHOR.date()
    moment = header.base_time or time(0)
    return datetime.combine(day, moment, tzinfo=UTC)


# --- beds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WfdbBed:
    """One bed: a patient's records (waveforms and numerics) and what they map to."""

    bed: str
    stay_id: str
    records: tuple[WfdbRecord, ...]
    channels: dict[tuple[str, bool], Channel]
    #: Chunks by which this bed's reads are shifted, so a ward's beds do not all read
    #: at the same moment (each read costs a header parse: a burst of them is late).
    stagger: int = 0

    @property
    def start_us(self) -> int:
        return min(record.data_start_us for record in self.records)

    @property
    def end_us(self) -> int:
        return max(record.data_end_us for record in self.records)

    def feed(self) -> Feed:
        return Feed(start_us=self.start_us, end_us=self.end_us, read=self.read)

    def read(self, since_us: int) -> Iterator[Timed]:
        """The bed's messages due from ``since_us`` on (its ``Admit`` always first)."""
        stay = {"bed": self.bed, "stay_id": self.stay_id}
        admit = Draft(Admit, self.start_us, {**stay, **_demographics(self.records)})
        leave = Draft(Discharge, self.end_us, stay)
        streams = [self._record_messages(record, since_us) for record in self.records]
        recorded = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_due)
        # The first read happens now, before the replay's clock starts: a ward of beds all
        # reading at their first message would start seconds behind.
        first = list(itertools.islice(recorded, 1))
        return itertools.chain([(self.start_us, admit)], first, recorded, [(self.end_us, leave)])

    def _record_messages(self, record: WfdbRecord, since_us: int) -> Iterator[Timed]:
        chunk = record.chunk_frames
        read = max(_READ_CHUNKS * chunk, _MIN_READ_FRAMES // chunk * chunk)
        for segment in record.segments:
            if record.frame_us(segment.first_frame + segment.frames) <= since_us:
                continue
            first = 0
            if since_us > record.frame_us(segment.first_frame):
                # Seek to the chunk holding since_us; the ward drops what is due before it.
                frames = (since_us - record.frame_us(segment.first_frame)) / record.period_us
                first = int(frames) // chunk * chunk
            shift = self.stagger % _READ_CHUNKS * chunk
            start, stop = first, first + (read - shift if shift else read)
            while start < segment.frames:
                stop = min(stop, segment.frames)
                yield from self._read(record, segment, start, stop)
                start, stop = stop, stop + read

    def _read(self, record: WfdbRecord, segment: Segment, start: int, stop: int) -> Iterator[Timed]:
        """Messages of frames ``start:stop`` of a segment, in due order."""
        try:
            digital = _read_digital(record.directory, segment, start, stop)
        except Exception as error:  # checked at opening: the file changed since
            raise ReplayError(
                f"WFDB record {record.name}: segment {segment.name} became unreadable at "
                f"frame {start} ({error})"
            ) from error
        data = segment.header
        step = _CONVERT_CHUNKS * record.chunk_frames
        for first in range(0, stop - start, step):
            last = min(first + step, stop - start)
            physical = _physical(
                data,
                [
                    signal[first * per_frame : last * per_frame]
                    for signal, per_frame in zip(digital, data.samps_per_frame, strict=True)
                ],
            )
            yield from self._block(record, data, physical, segment.first_frame + start + first)

    def _block(
        self, record: WfdbRecord, data: wfdb.Record, physical: list[np.ndarray], frame0: int
    ) -> list[Timed]:
        out: list[Timed] = []
        numerics: list[tuple[np.ndarray, np.ndarray, str, Conversion]] = []
        numeric = record.fs <= NUMERIC_MAX_HZ
        for name, signal, per_frame, units in zip(
            data.sig_name, physical, data.samps_per_frame, data.units, strict=True
        ):
            channel = self.channels.get((name, numeric))
            if channel is None:
                continue
            if channel.numeric:
                offsets = frame0 + np.arange(signal.size) / per_frame
                numerics.append((offsets, signal, channel.target, channel.conversion))
            else:
                out.extend(self._chunks(record, channel.target, signal, per_frame, units, frame0))
        if numerics:
            out.extend(self._vitals(record, numerics))
        out.sort(key=_due)
        return out

    def _chunks(
        self,
        record: WfdbRecord,
        kind: str,
        signal: np.ndarray,
        per_frame: int,
        units: str,
        frame0: int,
    ) -> Iterator[Timed]:
        size = min(record.chunk_frames * per_frame, MAX_WAVEFORM_SAMPLES)
        invalid = ~np.isfinite(signal)
        for offset in range(0, signal.size, size):
            piece_invalid = invalid[offset : offset + size]
            if piece_invalid.all():
                continue
            valid: list[float] = signal[offset : offset + size].tolist()
            samples: list[float | None] = list(valid)
            if piece_invalid.any():
                samples = [value if math.isfinite(value) else None for value in valid]
            first = frame0 + offset // per_frame
            yield (
                record.frame_us(first + len(samples) / per_frame),
                Draft(
                    WaveformChunk,
                    record.frame_us(first),
                    {
                        "bed": self.bed,
                        "stay_id": self.stay_id,
                        "signal": kind,
                        "fs": record.fs * per_frame,
                        "units": units[:16],
                        "samples": samples,
                    },
                ),
            )

    def _vitals(
        self,
        record: WfdbRecord,
        numerics: list[tuple[np.ndarray, np.ndarray, str, Conversion]],
    ) -> Iterator[Timed]:
        """One ``Vitals`` per instant at which at least one numeric is valid."""
        frames, readings, concepts = [], [], []
        for index, (offsets, signal, _, _) in enumerate(numerics):
            valid = np.isfinite(signal)
            frames.append(offsets[valid])
            readings.append(signal[valid])
            concepts.append(np.full(int(valid.sum()), index))
        frame = np.concatenate(frames)
        value = np.concatenate(readings)
        concept = np.concatenate(concepts)
        order = np.lexsort((concept, frame))
        frame, value, concept = frame[order], value[order], concept[order]
        bounds = np.flatnonzero(np.diff(frame)) + 1
        names = [target for _, _, target, _ in numerics]
        conversions = [conversion for _, _, _, conversion in numerics]
        for group_frame, group_value, group_concept in zip(
            np.split(frame, bounds), np.split(value, bounds), np.split(concept, bounds), strict=True
        ):
            if not group_frame.size:
                continue
            moment = record.frame_us(float(group_frame[0]))
            values = {
                names[c]: _converted(conversions[c], v)
                for c, v in zip(group_concept.tolist(), group_value.tolist(), strict=True)
            }
            if not all(map(math.isfinite, values.values())):  # a conversion overflowed
                values = {name: v for name, v in values.items() if math.isfinite(v)}
                if not values:
                    continue
            fields = {"bed": self.bed, "stay_id": self.stay_id, "source": MONITOR_SOURCE}
            yield moment, Draft(Vitals, moment, {**fields, "values": values})


def _read_digital(directory: Path, segment: Segment, start: int, stop: int) -> list[np.ndarray]:
    """Digital samples of frames ``start:stop``, one array per signal (frames expanded).

    ``wfdb.rdrecord`` parses the header again on every call (about 7 ms, most of a read);
    the header read once at the start is given to wfdb's own segment reader instead,
    and ``rdrecord`` is the fallback should that internal function ever change.
    """
    header = segment.header
    try:
        from wfdb.io import _signal

        signals: list[np.ndarray] = _signal._rd_segment(
            file_name=header.file_name,
            dir_name=str(directory),
            pn_dir=None,
            fmt=header.fmt,
            n_sig=header.n_sig,
            sig_len=header.sig_len,
            byte_offset=header.byte_offset,
            samps_per_frame=header.samps_per_frame,
            skew=header.skew,
            init_value=header.init_value,
            sampfrom=start,
            sampto=stop,
            channels=list(range(header.n_sig)),
            ignore_skew=False,
            return_res=32,
        )
        return signals
    except (ImportError, AttributeError, TypeError):
        data = wfdb.rdrecord(
            str(directory / segment.name),
            sampfrom=start,
            sampto=stop,
            physical=False,
            smooth_frames=False,
            return_res=32,
        )
        return list(data.e_d_signal)


def _physical(header: wfdb.Record, digital: list[np.ndarray]) -> list[np.ndarray]:
    """Physical values of digital samples (frames expanded), NaN where invalid."""
    data = copy.copy(header)
    data.e_d_signal = digital
    # wfdb's own conversion, so that values are exactly what rdrecord gives.
    physical: list[np.ndarray] = data.dac(expanded=True, return_res=64)
    return physical


def _converted(conversion: Conversion, value: float) -> float:
    # The identity is not applied: it would round, and values must stay what WFDB reads.
    return value if conversion == IDENTITY else conversion.apply(value)


def _due(item: Timed) -> int:
    return item[0]


def _demographics(records: Sequence[WfdbRecord]) -> dict[str, object]:
    """Age and sex from MIMIC header comments (``<age>: 71 <sex>: F``), when given."""
    found: dict[str, object] = {}
    for comment in (c for record in records for c in record.comments):
        age, sex = _AGE.search(comment), _SEX.search(comment)
        if age and 0 <= float(age.group(1)) <= 130:
            found.setdefault("age", float(age.group(1)))
        if sex:
            found.setdefault("sex", sex.group(1))
    return found


def wfdb_beds(paths: Sequence[Path], beds: int | None = None) -> list[WfdbBed]:
    """The beds of the records at ``paths``; with ``beds``, cycle them to fill that many.

    Records ``X`` and ``Xn`` of one folder share a bed; beds are named ``bed-01``,
    ``bed-02``, ... in the order the paths are given. A copy of a recording filling
    another bed has the stay id ``X.2``, ``X.3``, ...
    """
    groups: dict[tuple[Path, str], list[WfdbRecord]] = {}
    for path in paths:
        for record_path in find_records(path):
            record = open_record(record_path)
            if record is None:
                continue
            group = groups.setdefault((record.directory, record.stay), [])
            if record not in group:
                group.append(record)
    if not groups:
        raise ReplayError("nothing to replay: none of the WFDB records has data on disk")
    channels = _channels([r for records in groups.values() for r in records])
    count = beds or len(groups)
    width = max(2, len(str(count)))
    recordings = list(groups.items())
    out = []
    for index in range(count):
        (_, stay), records = recordings[index % len(recordings)]
        copy = index // len(recordings)
        out.append(
            WfdbBed(
                bed=f"bed-{index + 1:0{width}d}",
                stay_id=stay if copy == 0 else f"{stay}.{copy + 1}",
                records=tuple(records),
                channels=channels,
                stagger=index * _READ_CHUNKS // count,
            )
        )
    return out


def _channels(records: Sequence[WfdbRecord]) -> dict[tuple[str, bool], Channel]:
    """What each WFDB signal maps to, by (name, numeric); unmapped names reported once.

    A name can be both: ``RESP`` is the respiratory rate in a numerics record and the
    impedance curve in a waveform record.
    """
    concepts = load_concepts()
    channels: dict[tuple[str, bool], Channel] = {}
    unmapped: dict[str, list[str]] = defaultdict(list)
    for record in records:
        numeric = record.fs <= NUMERIC_MAX_HZ
        for name in record.signals:
            if (name, numeric) in channels or record.name in unmapped.get(name, ()):
                continue
            channel = None
            if numeric:
                mapped = concepts.from_source("wfdb", name)
                if mapped is not None:
                    channel = Channel(mapped[0].name, True, mapped[1])
            else:
                waveform = concepts.waveform_for_wfdb(name)
                if waveform is not None:
                    channel = Channel(waveform.name, False)
            if channel is None:
                unmapped[name].append(record.name)
            else:
                channels[name, numeric] = channel
    for name, where in unmapped.items():
        warnings.warn(
            ReplayWarning(
                f"WFDB signal {name!r} ({', '.join(where[:3])}{', ...' if len(where) > 3 else ''})"
                " is not in the concept dictionary: not replayed"
            ),
            stacklevel=3,
        )
    return channels
