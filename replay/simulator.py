"""A seeded synthetic ICU: canonical cohorts for training, a live ward for the engine.

Two ways to use the same simulated patients (:mod:`bedside.replay.physiology`), their
recorded values (:mod:`bedside.replay.charting`) and artefacts
(:mod:`bedside.replay.artefacts`):

* :func:`simulate_cohort` gives the canonical events and stays tables and the artefact
  ground truth, like a loader of real data (``bedside data simulate`` writes them).
* :func:`simulate_ward` yields the messages a monitored ward would publish, in time
  order: ``Admit`` when a patient arrives, ``Vitals`` from the monitor, the nurse chart
  and the lab, ``Discharge`` or ``Death`` when the stay ends, and the next admission to
  the empty bed. It simulates the beds a quarter of an hour at a time, so memory stays
  flat however long it runs.

Everything is drawn from ``numpy`` generators seeded by ``seed`` and the stay's number,
so the same arguments always give the same output, and a stay does not change when
more stays are asked for. Times start at ``SIMULATION_START`` (2030-01-01 UTC).

>>> events, stays, artefacts = simulate_cohort(stays=3, hours=12, seed=1)
>>> stays.height, events.columns[:4]
(3, ['subject_id', 'stay_id', 'time', 'code'])
>>> first = next(simulate_ward(beds=2, hours=1, seed=1))
>>> first.event, first.bed, first.time.isoformat()
('admit', 'bed-01', '2030-01-01T00:00:00+00:00')
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeAlias

import numpy as np
import polars as pl

from bedside.errors import BedsideError
from bedside.replay.artefacts import (
    Artefact,
    apply_artefacts,
    artefacts_frame,
    plan_artefacts,
)
from bedside.replay.charting import (
    CODES,
    SOURCE_NAMES,
    MonitorClock,
    MonitorFeed,
    Observations,
    chart_stay,
)
from bedside.replay.physiology import HOUR_US, MINUTE_US, Patient, draw_patient
from bedside.schemas.messages import Admit, Death, Discharge, Vitals
from bedside.schemas.tables import EVENTS, STAYS, conform
from bedside.training.data.canonical import (
    ConversionReport,
    EventsWriter,
    write_report,
    write_stays,
)

SIMULATION_START: Final = datetime(2030, 1, 1, tzinfo=UTC)
SOURCE: Final = "simulator"
#: Most monitor rate accepted: faster than this is a waveform, not a numeric.
MAX_MONITOR_HZ: Final = 10.0

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Independent random streams: cohort stays, cohort admission times, ward occupants, beds.
_COHORT, _ADMISSIONS, _WARD, _TURNOVER = 0, 1, 2, 3


class SimulationError(BedsideError, ValueError):
    """The simulation was asked for something it cannot do (no stays, negative hours)."""


def _us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise SimulationError("the simulation start must be timezone-aware")
    return (moment - _EPOCH) // timedelta(microseconds=1)


class SimulatedStay:
    """One patient's stay, observed up to ``horizon_h`` hours after admission.

    ``observe`` returns what was recorded in a window, artefacts included; call it
    with windows in time order (the monitor's noise runs on from window to window).
    """

    def __init__(
        self,
        seeds: np.random.SeedSequence,
        stay_id: int,
        admit_us: int,
        horizon_h: float,
        clock: MonitorClock | None,
        los_scale: float = 1.0,
    ) -> None:
        patient_seeds, chart_seeds, artefact_seeds, monitor_seeds = seeds.spawn(4)
        self.patient: Patient = draw_patient(patient_seeds, stay_id, admit_us, horizon_h, los_scale)
        self._charted = chart_stay(self.patient, np.random.default_rng(chart_seeds))
        self._monitor = (
            MonitorFeed(self.patient, clock, np.random.default_rng(monitor_seeds))
            if clock is not None
            else None
        )
        self.artefacts: list[Artefact] = plan_artefacts(
            self.patient, self._charted, clock, np.random.default_rng(artefact_seeds)
        )

    def observe(self, start_us: int, end_us: int) -> Observations:
        """Everything recorded with ``start_us <= time < end_us``, sorted by time."""
        parts = [self._charted.between(start_us, end_us)]
        if self._monitor is not None:
            parts.append(self._monitor.read(start_us, end_us))
        return apply_artefacts(Observations.concat(parts).sorted(), self.artefacts)

    def stay_row(self) -> dict[str, Any]:
        """This stay as a row of the canonical stays table."""
        p = self.patient
        hospital_end_us = p.admit_us + round(p.hospital_end_h * HOUR_US)
        death_h = p.end_h if p.dies else p.hospital_end_h if p.dies_after_icu else None
        return {
            "stay_id": p.stay_id,
            "subject_id": p.stay_id,
            "source": SOURCE,
            "admit_time": p.admit_us,
            "discharge_time": p.end_us,
            "hospital_discharge_time": hospital_end_us,
            "age": p.age,
            "sex": p.sex,
            "height_cm": p.height_cm,
            "weight_kg": p.weight_kg,
            "icu_type": p.icu_type,
            "in_hospital_death": int(death_h is not None),
            "death_time": None if death_h is None else p.admit_us + round(death_h * HOUR_US),
            "survival_days": None if death_h is None else death_h / 24,
            "los_days": p.end_h / 24,
            "hospital_los_days": p.hospital_end_h / 24,
        }


# --- canonical cohort ---------------------------------------------------------------

#: Observation windows of a cohort stay: bounds memory at 1 Hz over long stays.
_COHORT_WINDOW_US: Final = 6 * HOUR_US
_EVENT_CODES: Final = {
    source * len(CODES) + index: code
    for source in range(len(SOURCE_NAMES))
    for index, code in enumerate(CODES)
}
_SOURCE_CODES: Final = {
    key: f"{SOURCE}//monitor/{code}" if key < len(CODES) else f"{SOURCE}//{code}"
    for key, code in _EVENT_CODES.items()
}


def cohort_stays(
    stays: int, hours: float, seed: int, monitor_hz: float = 0.0
) -> Iterator[tuple[SimulatedStay, Observations]]:
    """Each stay of a cohort with everything recorded during it, one stay at a time."""
    _check_arguments(seed, hours, monitor_hz, count=stays, what="stays")
    start_us = _us(SIMULATION_START)
    for index in range(stays):
        # Admissions are spread over a year, so they fall at every hour of the day.
        admission = np.random.default_rng([seed, _ADMISSIONS, index])
        admit_us = start_us + int(admission.integers(365 * 24 * 60)) * MINUTE_US
        clock = MonitorClock.at(admit_us, monitor_hz) if monitor_hz else None
        stay = SimulatedStay(
            np.random.SeedSequence([seed, _COHORT, index]), index + 1, admit_us, hours, clock
        )
        windows = range(admit_us, stay.patient.horizon_us, _COHORT_WINDOW_US)
        yield stay, Observations.concat([stay.observe(w, w + _COHORT_WINDOW_US) for w in windows])


def events_frame(stays: list[tuple[int, Observations]]) -> pl.DataFrame:
    """Canonical events of some stays' observations, sorted by stay, time and code.

    Monitor numerics keep their origin in ``source_code`` (``simulator//monitor/spo2``),
    charted values and labs have ``simulator//spo2``.
    """
    observations = Observations.concat([o for _, o in stays])
    stay_ids = np.repeat([stay_id for stay_id, _ in stays], [len(o) for _, o in stays])
    order = np.lexsort((observations.source, observations.code, observations.time_us, stay_ids))
    observations, stay_ids = observations.where(order), stay_ids[order]
    key = pl.Series(observations.source.astype(np.int64) * len(CODES) + observations.code)
    frame = pl.DataFrame(
        {
            "subject_id": pl.Series(stay_ids, dtype=pl.Int64),
            "stay_id": pl.Series(stay_ids, dtype=pl.Int64),
            "time": pl.Series(observations.time_us, dtype=pl.Int64).cast(EVENTS["time"]),
            "code": key.replace_strict(_EVENT_CODES, return_dtype=pl.String),
            "numeric_value": observations.value,
            "source_code": key.replace_strict(_SOURCE_CODES, return_dtype=pl.String),
        }
    )
    return conform(frame, EVENTS)


def simulate_cohort(
    stays: int, hours: float, seed: int, monitor_hz: float = 0.0
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Simulate ``stays`` ICU stays, each observed for at most ``hours`` hours.

    Returns the canonical events and stays tables and the artefact ground truth
    (``bedside.schemas.tables.ARTEFACTS``). Stays last as long as they last (the
    stays table has the full lengths of stay and the outcomes); events cover the first
    ``hours`` hours of the ICU stay, or less when the patient leaves or dies sooner, as
    in PhysioNet 2012. Nurse charting and labs are always there; ``monitor_hz`` adds
    bedside-monitor numerics at that rate (0 = none).
    """
    rows, observed, artefacts = [], [], []
    for stay, observations in cohort_stays(stays, hours, seed, monitor_hz):
        rows.append(stay.stay_row())
        observed.append((stay.patient.stay_id, observations))
        artefacts.extend(stay.artefacts)
    return events_frame(observed), stays_frame(rows), artefacts_frame(artefacts)


def stays_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    times = ("admit_time", "discharge_time", "hospital_discharge_time", "death_time")
    frame = pl.DataFrame(rows, schema={**STAYS, **dict.fromkeys(times, pl.Int64)})
    return conform(frame.with_columns(pl.col(times).cast(STAYS["admit_time"])), STAYS)


# --- live ward ----------------------------------------------------------------------

WardMessage: TypeAlias = Admit | Vitals | Discharge | Death
# Order of a bed's messages that share a timestamp: arrival, then the values by source
# (monitor, chart, lab), then departure.
_ADMIT, _VITALS, _LEAVE = 0, 1, 9


class _Bed:
    """One bed of the ward: its current stay, the next admission, its message counter."""

    def __init__(
        self,
        index: int,
        seed: int,
        clock: MonitorClock | None,
        start_us: int,
        end_us: int,
        los_scale: float,
    ) -> None:
        self.index = index
        self.name = f"bed-{index + 1:02d}"
        self.seq = 0
        self._seed = seed
        self._clock = clock
        self._end_us = end_us
        self._los_scale = los_scale
        self._turnover = np.random.default_rng([seed, _TURNOVER, index])
        self._occupants = 0
        self._stay: SimulatedStay | None = None
        self._next_admit_us = start_us

    def happenings(
        self, start_us: int, end_us: int, ground_truth: list[Artefact] | None
    ) -> tuple[list[tuple[int, int, Patient]], list[tuple[int, Observations]]]:
        """Arrivals and departures ``(time, _ADMIT or _LEAVE, patient)`` and the values
        recorded ``(stay_id, observations)`` at this bed in ``[start_us, end_us)``."""
        moves: list[tuple[int, int, Patient]] = []
        recorded: list[tuple[int, Observations]] = []
        now = start_us
        while now < end_us:
            if self._stay is None:
                if self._next_admit_us >= end_us:
                    break
                now = self._next_admit_us
                self._stay = self._admit(now)
                moves.append((now, _ADMIT, self._stay.patient))
                if ground_truth is not None:
                    ground_truth.extend(self._stay.artefacts)
            patient = self._stay.patient
            recorded.append((patient.stay_id, self._stay.observe(now, min(end_us, patient.end_us))))
            if patient.end_us >= end_us:
                break
            moves.append((patient.end_us, _LEAVE, patient))
            gap_h = self._turnover.uniform(0.5, 3.0) * self._los_scale
            self._next_admit_us = patient.end_us + round(gap_h * HOUR_US)
            self._stay, now = None, patient.end_us
        return moves, recorded

    def _admit(self, admit_us: int) -> SimulatedStay:
        self._occupants += 1
        stay_id = (self.index + 1) * 100_000 + self._occupants
        seeds = np.random.SeedSequence([self._seed, _WARD, self.index, self._occupants])
        horizon_h = (self._end_us - admit_us) / HOUR_US
        return SimulatedStay(seeds, stay_id, admit_us, horizon_h, self._clock, self._los_scale)


def simulate_ward(
    beds: int,
    hours: float,
    seed: int,
    monitor_hz: float = 1 / 60,
    *,
    start: datetime = SIMULATION_START,
    los_scale: float = 1.0,
    ground_truth: list[Artefact] | None = None,
    chunk_minutes: float = 15.0,
) -> Iterator[WardMessage]:
    """Yield a simulated ward's messages for ``hours`` hours, in time order.

    Every bed is admitted at ``start``; when a stay ends (``Discharge`` or ``Death``)
    the bed stays empty for half an hour to three hours, then the next patient comes.
    ``Vitals`` come from the monitor every ``1 / monitor_hz`` seconds (0 = no monitor),
    from nurse rounds (``source="chart"``) and from the lab; each bed numbers its
    ``Vitals`` with ``seq`` 0, 1, 2, ... Stay ids are ``bed * 100000 + occupant``.
    ``los_scale`` shortens stays and bed turnover (0.1 gives a busy demo ward). The
    artefacts of each admitted stay are appended to ``ground_truth`` when given.
    Beds are simulated ``chunk_minutes`` of ward time at a time.
    """
    _check_arguments(seed, hours, monitor_hz, count=beds, what="beds")
    if los_scale <= 0 or chunk_minutes <= 0:
        raise SimulationError("los_scale and chunk_minutes must be positive")
    start_us = _us(start)
    end_us = start_us + round(hours * HOUR_US)
    clock = MonitorClock.at(start_us, monitor_hz) if monitor_hz else None
    ward = [_Bed(i, seed, clock, start_us, end_us, los_scale) for i in range(beds)]
    chunk_us = max(1, round(chunk_minutes * MINUTE_US))
    for chunk_start in range(start_us, end_us, chunk_us):
        chunk_end = min(chunk_start + chunk_us, end_us)
        yield from _ward_messages(
            ward, [bed.happenings(chunk_start, chunk_end, ground_truth) for bed in ward]
        )


def _ward_messages(
    ward: list[_Bed],
    happenings: list[tuple[list[tuple[int, int, Patient]], list[tuple[int, Observations]]]],
) -> Iterator[WardMessage]:
    """The messages of one chunk of ward time, sorted by time, bed and order.

    Each message is a *group*: one arrival or departure, or the values one bed recorded
    at one time from one source. Groups are sorted with numpy; only the messages
    themselves are made one by one.
    """
    # One entry per bed and stay: the groups' times, beds, orders, index ranges, stays.
    times: list[Any] = []
    beds: list[Any] = []
    orders: list[Any] = []
    firsts: list[Any] = []
    lasts: list[Any] = []
    stays: list[Any] = []
    patients: list[Patient] = []
    observed: list[Observations] = []
    offset = 0
    for bed, (moves, recorded) in zip(ward, happenings, strict=True):
        for time_us, order, patient in moves:
            times.append([time_us])
            beds.append([bed.index])
            orders.append([order])
            firsts.append([len(patients)])  # an arrival or departure: the patient's index
            lasts.append([0])
            stays.append([patient.stay_id])
            patients.append(patient)
        for stay_id, observations in recorded:
            if not len(observations):
                continue
            t, source = observations.time_us, observations.source
            change = np.flatnonzero((np.diff(t) != 0) | (np.diff(source) != 0)) + 1
            starts = np.concatenate([[0], change])
            times.append(t[starts])
            beds.append(np.full(starts.size, bed.index))
            orders.append(_VITALS + source[starts])
            firsts.append(offset + starts)
            lasts.append(offset + np.append(change, len(observations)))
            stays.append(np.full(starts.size, stay_id))
            observed.append(observations)
            offset += len(observations)
    if not times:
        return
    columns = [np.concatenate(c) for c in (times, beds, orders, firsts, lasts, stays)]
    rank = np.lexsort((columns[2], columns[1], columns[0]))  # by time, bed, order
    everything = Observations.concat(observed)
    codes = [CODES[i] for i in everything.code.tolist()]
    values = everything.value.tolist()
    moments: dict[int, datetime] = {}
    for t, b, o, a, z, stay_id in zip(*(c[rank].tolist() for c in columns), strict=True):
        moment = moments.get(t)
        if moment is None:
            moment = moments[t] = _EPOCH + timedelta(microseconds=t)
        bed = ward[b]
        if o == _ADMIT:
            yield _admit_message(bed.name, moment, patients[a])
        elif o == _LEAVE:
            leave = Death if patients[a].dies else Discharge
            yield leave(bed=bed.name, stay_id=str(stay_id), time=moment)
        else:
            bed.seq += 1
            yield Vitals(
                bed=bed.name,
                stay_id=str(stay_id),
                time=moment,
                source=SOURCE_NAMES[o - _VITALS],
                seq=bed.seq - 1,
                values=dict(zip(codes[a:z], values[a:z], strict=True)),
            )


def _admit_message(bed: str, moment: datetime, patient: Patient) -> Admit:
    return Admit(
        bed=bed,
        stay_id=str(patient.stay_id),
        time=moment,
        age=patient.age,
        sex=patient.sex,
        weight_kg=patient.weight_kg,
        height_cm=patient.height_cm,
        icu_type=patient.icu_type,
    )


def _check_arguments(seed: int, hours: float, monitor_hz: float, *, count: int, what: str) -> None:
    if count < 1:
        raise SimulationError(f"at least one of {what} is needed, got {count}")
    if not hours > 0:
        raise SimulationError(f"hours must be positive, got {hours}")
    if not 0 <= monitor_hz <= MAX_MONITOR_HZ:
        raise SimulationError(f"monitor rate must be 0 to {MAX_MONITOR_HZ} Hz, got {monitor_hz}")
    if seed < 0:
        raise SimulationError(f"the seed must be 0 or more, got {seed}")


# --- command line -------------------------------------------------------------------

#: Events buffered before a write, to bound memory when the monitor runs at 1 Hz.
_WRITE_BATCH_ROWS: Final = 1_000_000


def run_cli(args: argparse.Namespace) -> int:
    """``bedside data simulate``: write the canonical tables and artefact ground truth."""
    started = time.perf_counter()
    out = args.out
    report = ConversionReport(
        source=f"{SOURCE} (seed {args.seed}, {args.hours:g} h, monitor {args.monitor_hz:g} Hz)"
    )
    rows, artefacts, buffered = [], [], []
    with EventsWriter(out, report) as writer:
        for stay, observations in cohort_stays(args.stays, args.hours, args.seed, args.monitor_hz):
            rows.append(stay.stay_row())
            artefacts.extend(stay.artefacts)
            buffered.append((stay.patient.stay_id, observations))
            if sum(len(o) for _, o in buffered) >= _WRITE_BATCH_ROWS:
                writer.write(events_frame(buffered))
                buffered = []
        if buffered:
            writer.write(events_frame(buffered))
    write_stays(out, stays_frame(rows), report)
    artefacts_frame(artefacts).write_parquet(out / "artefacts.parquet", compression="zstd")
    report.seconds = time.perf_counter() - started
    write_report(out, report)
    kinds = Counter(a.kind for a in artefacts)
    monitor = f"monitor numerics at {args.monitor_hz:g} Hz, " if args.monitor_hz else "no monitor, "
    print(
        f"simulated {report.stays} stays of up to {args.hours:g} h (seed {args.seed}): "
        f"{report.deaths} in-hospital deaths ({report.deaths / report.stays:.1%}), "
        f"{report.events:,} events ({monitor}nurse charting and labs) and "
        f"{len(artefacts):,} artefact rows ("
        + (", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) or "none")
        + f") in {report.seconds:.1f} s; wrote events.parquet, stays.parquet, "
        f"artefacts.parquet and conversion_report.json to {out}"
    )
    return 0
