"""One bed in the engine: its state, and what each of its messages does to it.

:class:`Engine` holds what every bed shares and never changes while running (the
settings, the survival model, the detectors' population reference); :class:`BedState`
is one bed's own memory, small and picklable, which Bytewax snapshots for recovery:

* the current stay (id, admission, static covariates from ``icu.patient.v1``);
* duplicate tracking per stream (:class:`SeqTracker`);
* its online detectors: a row (``slot``) of its shard's
  :class:`~bedside.training.detectors.ward.WardDetectors`, which hold every detector's
  memory for all the shard's beds in arrays;
* its rolling window (:class:`~bedside.training.windows.RollingWindow`, the same
  window code as offline) and the values not yet due (``pending``);
* the last seconds of each waveform signal (:mod:`bedside.engine.waveforms`);
* its event-time clock and next scoring minute (see :mod:`bedside.engine.settings`).

A :class:`Shard` holds the states of the beds Bytewax hands over together (see
:mod:`bedside.engine.flow`). A batch of a shard's records goes in waves, the first
record of each bed, then the second...: the vitals of a wave go through the detectors
in one compiled loop, and each bed still sees its own records in order.

Values flagged by a detector are left out of the window (imputed downstream like any
missing value). A record's work is done in three steps, as the dataflow runs them:

1. :meth:`Engine.beds`: all of the above, per shard; it hands on
   :class:`~bedside.engine.intake.Outgoing` records (anomalies, dead letters), a
   :class:`ScoreTask` for each minute due and an :class:`AlertTask` for each
   acknowledgement or closed stay;
2. :meth:`Engine.score`: the minutes of a batch, all shards together, through the
   model in one call;
3. :meth:`Engine.alert`: per shard, the score records and the alert policy
   (:mod:`bedside.engine.alerts`), with each bed's alerting memory.

:meth:`Engine.process` runs the three in process on one shard's batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

import numpy as np

from bedside.engine import metrics
from bedside.engine.alerts import AlertState, acknowledge, close_all, evaluate
from bedside.engine.intake import Accepted, Outgoing, Rejected, dead_letter
from bedside.engine.settings import EngineError, EngineSettings
from bedside.engine.waveforms import SignalBuffer, add_chunk, derive
from bedside.schemas.messages import (
    ALERTS_TOPIC,
    ANOMALIES_TOPIC,
    SCORES_TOPIC,
    VITALS_TOPIC,
    Admit,
    AlertAck,
    Anomaly,
    Death,
    Discharge,
    HorizonRisk,
    Score,
    SurvivalPoint,
    Vitals,
    WaveformChunk,
    encode,
)
from bedside.training.windows import RollingWindow

if TYPE_CHECKING:
    from bedside.training.detectors.base import Finding


def _load_model(directory: Path) -> Any:
    """The survival model of ``directory``; one EngineError naming it if unusable."""
    from bedside.training.survival.model import SurvivalModel

    try:
        return SurvivalModel.load(directory)
    except Exception as error:  # a damaged folder fails in many ways; say which folder
        raise EngineError(
            f"{directory}: not a usable survival model ({type(error).__name__}: {error})"
        ) from None


def seconds(moment: datetime) -> float:
    return moment.timestamp()


def moment(at_s: float) -> datetime:
    return datetime.fromtimestamp(at_s, UTC)


@dataclass
class SeqTracker:
    """The sequence numbers of one stream seen lately, to drop duplicates.

    A number seen before is a duplicate. One far below the highest seen (more than
    ``window`` behind) cannot be judged by memory: if its time is newer than the
    stream's latest, the source restarted its numbering and the tracker starts over;
    otherwise it is an old record replayed, and a duplicate.
    """

    window: int
    high: int = -1
    last_time_s: float = -math.inf
    seen: set[int] = field(default_factory=set)

    def is_duplicate(self, seq: int, time_s: float) -> bool:
        if seq > self.high:  # the usual case (the next number): all seen are below it
            self.seen.add(seq)
            self.high = seq
            if time_s > self.last_time_s:
                self.last_time_s = time_s
            if len(self.seen) > 2 * self.window:
                self.seen = {s for s in self.seen if s >= seq - self.window}
            return False
        if seq in self.seen:
            return True
        if seq < self.high - self.window:
            if time_s <= self.last_time_s:
                return True
            self.high, self.seen = -1, set()
        self.seen.add(seq)
        if seq > self.high:
            self.high = seq
        self.last_time_s = max(self.last_time_s, time_s)
        if len(self.seen) > 2 * self.window:
            self.seen = {s for s in self.seen if s >= self.high - self.window}
        return False


@dataclass
class BedState:
    """One bed's memory (see the module docstring)."""

    bed: str
    stay_id: str | None = None
    admit_s: float | None = None
    #: The stay's admission message arrived (else the stay began with its first value).
    admitted: bool = False
    statics: dict[str, Any] = field(default_factory=dict)
    #: Stays of this bed already closed (discharge, death, or the next stay began).
    closed_stays: list[str] = field(default_factory=list)
    #: Recent (event, stay) patient events, to drop repeated ones.
    patient_events: list[tuple[str, str]] = field(default_factory=list)
    #: Patient events waiting for the bed's values to reach them: (time, when held
    #: by the wall clock, record).
    held: list[tuple[float, float, Accepted]] = field(default_factory=list)
    window: RollingWindow | None = None
    #: Values not yet in the window: (time, {concept: value}) in arrival order.
    pending: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    #: The shard's detectors (shared by its beds; None: detection off) and this bed's
    #: row in them while a stay runs (-1: none).
    detectors: Any = None
    slot: int = -1
    waveforms: dict[str, SignalBuffer] = field(default_factory=dict)
    streams: dict[str, SeqTracker] = field(default_factory=dict)
    clock_s: float | None = None
    next_due_s: float | None = None
    last_scored_s: float | None = None
    last_observed_s: float | None = None
    #: When the record that last moved the clock was produced (for the latency metric).
    trigger_sent_s: float = 0.0


#: The layout of :class:`Shard` (2: alerts kept apart from the beds' states).
SHARD_LAYOUT: Final = 2


@dataclass
class Shard:
    """The beds Bytewax hands over together: their states and their detectors (one
    :class:`~bedside.training.detectors.ward.WardDetectors` for all of them, None with
    detection off). Snapshotted whole for recovery."""

    beds: dict[str, BedState] = field(default_factory=dict)
    detectors: Any = None
    #: The beds holding patient events (they need waking up even if they fall silent).
    holding: set[str] = field(default_factory=set)
    #: The beds' alerting memory when the shard runs in process (:meth:`Engine.process`;
    #: in the dataflow the alerts' step keeps it).
    alerts: dict[str, AlertState] = field(default_factory=dict)
    #: The layout of this state (a recovery store of another layout is refused).
    layout: int = field(default_factory=lambda: SHARD_LAYOUT)


class ScoreTask(NamedTuple):
    """A minute of a bed to score: its window and what the alert policy needs."""

    bed: str
    stay_id: str | None
    at_s: float
    window: np.ndarray  # (steps, variables) of the model's grid; NaN: missing
    statics: dict[str, Any]
    imputed: float
    staleness_s: float
    #: When the record that completed the minute was produced (the latency metric).
    sent_s: float


class AlertTask(NamedTuple):
    """For a bed's alerts: an acknowledgement (``ack``), or its stay closed (``reason``)."""

    bed: str
    stay_id: str | None
    time_s: float
    ack: AlertAck | None = None
    reason: str = ""


class Scored(NamedTuple):
    """A scored minute (``prediction`` None: the model failed on it, counted)."""

    task: ScoreTask
    prediction: dict[str, Any] | None
    model_id: str
    model_version: str
    threshold: float


#: What the beds' step hands on: records to publish, and work for the alerts.
Step: TypeAlias = Outgoing | ScoreTask | AlertTask


class Engine:
    """What all beds share: settings, model and detectors' reference (read-only)."""

    def __init__(self, settings: EngineSettings, model: Any = None) -> None:
        self.settings = settings
        self.registry: Any = None
        self.version: str | None = None
        self.model: Any = None
        self.reference = None
        model_dir = settings.model_dir
        if model is None and model_dir is not None:
            from bedside.training.registry import ModelRegistry, is_registry

            if is_registry(model_dir):
                self.registry = ModelRegistry(model_dir)
                self.version = self.registry.current_name()
                current = self.registry.current()
                if current is None:
                    raise EngineError(f"{model_dir}: the registry has no promoted model yet")
                model_dir = current
            model = _load_model(model_dir)
        detectors_dir = settings.detectors_dir or settings.model_dir
        if settings.detect and detectors_dir is not None:
            from bedside.training.detectors.bed import population_reference

            self.reference = population_reference(Path(detectors_dir))
        if settings.detect:
            from bedside.training.detectors.ward import WardDetectors

            # Compile the detectors' loop (or load it from numba's cache) now, not when
            # the first records are waiting.
            ward = WardDetectors(self.reference)
            ward.process_one(ward.new_bed(), {"heart_rate": 80.0})
        self.max_catch_up = settings.max_catch_up or 2880
        self.max_late_s = settings.max_late_s or 48 * 3600.0
        #: Latest time of any value this process has read (all its beds): how far the
        #: input has got, which tells a silent bed from a topic read ahead.
        self.ward_clock_s = -math.inf
        self.model_id = self.model_version = ""
        if model is not None:
            self._use(model)

    def _use(self, model: Any) -> None:
        """Serve ``model`` from now on (the per-bed state does not depend on it)."""
        info = model.info
        fingerprint = info.get("training_data", {}).get("stay_ids_sha256", "")[:8]
        self.model_id = f"{model.arch}-{fingerprint}" if fingerprint else model.arch
        self.model_version = self.version or (
            f"{info.get('bedside_version', '?')}+{info.get('created', '?')}"
        )
        self.max_catch_up = self.settings.max_catch_up or int(
            model.grid.minutes * 60 // self.settings.score_every_s
        )
        self.max_late_s = self.settings.max_late_s or model.grid.minutes * 60.0
        self.model = model

    def reload(self) -> str | None:
        """Switch to the registry's current model if it changed; what happened, if anything.

        The beds keep their state: windows, detectors, alerts. A model on another grid
        cannot read the windows kept so far, so it is not taken until a restart.
        """
        if self.registry is None:
            return None
        name = self.registry.current_name()
        if name is None or name == self.version:
            return None
        current = self.registry.current()
        assert current is not None
        model = _load_model(current)
        if self.model is not None and model.grid != self.model.grid:
            return (
                f"model {name} uses another window grid than the one served; "
                "restart the engine to serve it"
            )
        previous, self.version = self.version, name
        self._use(model)
        return f"serving model {name} (was {previous})"

    # --- the per-bed step -------------------------------------------------------------

    def new_shard(self) -> Shard:
        if not self.settings.detect:
            return Shard()
        from bedside.training.detectors.ward import WardDetectors

        return Shard(detectors=WardDetectors(self.reference))

    def process(self, shard: Shard, items: list[Accepted]) -> list[Outgoing]:
        """Everything a batch of a shard's records causes, in process: :meth:`beds`,
        then :meth:`score` and :meth:`alert` on what it hands on (what the dataflow's
        three steps do). Each bed's records on each topic come in order."""
        return self.settle(shard, self.beds(shard, items))

    def settle(self, shard: Shard, steps: list[Step]) -> list[Outgoing]:
        """The records of the beds' steps, their minutes scored and alerts run."""
        out = [step for step in steps if type(step) is Outgoing]
        if len(out) < len(steps):
            tasks = [step for step in steps if type(step) is not Outgoing]
            out.extend(self.alert(shard.alerts, self.score(tasks)))
        return out

    def beds(self, shard: Shard, items: list[Accepted]) -> list[Step]:
        """The beds' step: everything a batch of a shard's records causes, each bed's in
        order, up to the minutes to score and the work for the alerts.

        ``shard.holding`` is kept up to date: the beds of the shard holding patient events.
        """
        out: list[Step] = []
        beds = shard.beds
        waves: list[list[tuple[BedState, Accepted]]] = []
        depth: dict[str, int] = {}
        touched: list[BedState] = []
        now = time.time()
        for item in items:
            bed = item.bed
            k = depth.get(bed, 0)
            depth[bed] = k + 1
            if k == 0:
                state = beds.get(bed)
                if state is None:
                    state = beds[bed] = BedState(bed=bed, detectors=shard.detectors)
                elif state.held:
                    out.extend(self.release_held(state, now))
                touched.append(state)
            else:
                state = beds[bed]
            if k == len(waves):
                waves.append([(state, item)])
            else:
                waves[k].append((state, item))
        limit = self.settings.future_limit_s
        horizon_s = math.inf if limit is None else now + limit
        for wave in waves:
            self._wave(shard, wave, horizon_s, out)
        holding = shard.holding
        for state in touched:
            if state.held:
                holding.add(state.bed)
            elif holding:
                holding.discard(state.bed)
        return out

    def _wave(
        self,
        shard: Shard,
        wave: list[tuple[BedState, Accepted]],
        horizon_s: float,
        out: list[Step],
    ) -> None:
        """At most one record of each bed: the records up to their detectors, the
        detectors on all the wave's vitals at once, then the rest of each record."""
        observing: list[tuple[BedState, Accepted, float, dict[str, float], list[Step]]] = []
        for state, item in wave:
            try:
                done, sample = self._one(state, item, horizon_s)
            except Exception as error:  # a long-running engine must not stop on one record
                out.extend(self._failed(item, error))
                continue
            if sample is None:
                out.extend(done)
                out.extend(self._scores_due(state, final=False))
            else:
                observing.append((state, item, sample[0], sample[1], done))
        if not observing:
            return
        findings = self._detect(shard, observing)
        processed = 0
        lateness = self.settings.lateness_s
        for (state, item, time_s, values, done), found in zip(observing, findings, strict=True):
            try:
                done.extend(self._observe(state, time_s, values, found))
                self._advance(state, time_s, item.sent_s)
            except Exception as error:
                out.extend(done)
                out.extend(self._failed(item, error))
                continue
            processed += 1
            if done:
                out.extend(done)
            due = state.next_due_s
            if due is not None and state.clock_s - lateness >= due:  # a minute is due
                out.extend(self._scores_due(state, final=False))
        metrics.outcome(VITALS_TOPIC, "processed", processed)

    def _failed(self, item: Accepted, error: Exception) -> list[Step]:
        # The log names the failure's type only: its text may quote patient data, which
        # goes to the dead letter (a topic with access control), not to logs.
        metrics.LOG.error("bed step failed on a %s record: %s", item.topic, type(error).__name__)
        return self._reject(item, "bed", f"{type(error).__name__}: {error}")

    def _detect(
        self, shard: Shard, samples: list[tuple[BedState, Accepted, float, dict[str, float], Any]]
    ) -> Sequence[list[Finding] | None]:
        """The detectors' findings on each sample ``(state, item, time, values, ...)`` of
        a wave, in one pass over the beds with detectors (None for the others, and for all
        if the pass fails: each is then judged alone, and one that fails is
        dead-lettered)."""
        ward = shard.detectors
        found: list[list[Finding] | None] = [None] * len(samples)
        if ward is None:
            return found
        rows = [i for i, sample in enumerate(samples) if sample[0].slot >= 0]
        if not rows:
            return found
        findings: list[list[Finding]]
        try:
            if len(rows) == len(samples):
                slots = np.fromiter((s[0].slot for s in samples), np.int64, len(rows))
                findings = ward.process(slots, ward.rows(s[3] for s in samples))
                return findings
            slots = np.fromiter((samples[i][0].slot for i in rows), np.int64, len(rows))
            findings = ward.process(slots, ward.rows(samples[i][3] for i in rows))
        except Exception as error:
            metrics.LOG.error("detectors failed on a wave: %s", type(error).__name__)
            return found
        for i, row_findings in zip(rows, findings, strict=True):
            found[i] = row_findings
        return found

    def _scores_due(self, state: BedState, *, final: bool) -> list[Step]:
        """:meth:`_score_due`, counted and logged instead of raised when scoring fails
        (the record that moved the clock was processed; the minute stays due)."""
        try:
            return self._score_due(state, final=final)
        except Exception as error:
            metrics.SCORE_ERRORS.inc()
            metrics.LOG.error("scoring failed: %s", type(error).__name__)
            return []

    def finish(self, state: BedState) -> list[Step]:
        """The input ended: apply what is held, score every minute the clock has passed."""
        out = self._release(state, math.inf)
        return out + self._scores_due(state, final=True)

    def release_held(self, state: BedState, now_s: float) -> list[Step]:
        """Apply the held patient events the bed's silence no longer explains: the other
        beds' values are ``patient_hold_s`` past their time, or (a ward gone quiet) they
        waited ``patient_hold_wall_s`` of wall clock."""
        if not state.held:
            return []
        margin, wall = self.settings.patient_hold_s, self.settings.patient_hold_wall_s
        due = [h for h in state.held if h[0] + margin <= self.ward_clock_s or h[1] + wall <= now_s]
        if not due:
            return []
        return self._release(state, max(h[0] for h in due))

    def next_release_s(self, state: BedState, now_s: float) -> float | None:
        """When to look at the held patient events again (wall clock), if any is held."""
        if not state.held:
            return None
        return now_s + 5.0

    def _release(self, state: BedState, until_s: float) -> list[Step]:
        """Apply, in time order, the held patient events timed at or before ``until_s``."""
        ready = [h for h in state.held if h[0] <= until_s]
        if not ready:
            return []
        state.held = [h for h in state.held if h[0] > until_s]
        out: list[Step] = []
        for time_s, _, item in sorted(ready, key=lambda h: h[0]):
            try:
                out.extend(self._patient_event(state, item, time_s))
            except Exception as error:  # as in process(): never stop on one record
                metrics.LOG.error("patient event failed: %s", type(error).__name__)
                out.extend(self._reject(item, "bed", f"{type(error).__name__}: {error}"))
                continue
            out.extend(self._scores_due(state, final=False))
        return out

    def _reject(self, item: Accepted, step: str, error: str) -> list[Step]:
        metrics.outcome(item.topic, "deadlettered")
        return [
            dead_letter(
                Rejected(item.topic, item.partition, item.offset, step, error, item.payload)
            )
        ]

    def _one(
        self, state: BedState, item: Accepted, horizon_s: float
    ) -> tuple[list[Step], tuple[float, dict[str, float]] | None]:
        """A record's outputs up to its detectors, and the sample they are to judge (a
        vitals record's time and values: :meth:`_wave` finishes it), or None if it is
        done. A record timed after ``horizon_s`` (the wall clock plus the future limit)
        is rejected."""
        settings = self.settings
        message = item.message
        if settings.beds is not None and item.bed not in settings.beds:
            return self._reject(item, "bed", f"unknown bed {item.bed!r}"), None
        kind = type(message)
        if kind is AlertAck:
            metrics.outcome(item.topic, "processed")
            return [AlertTask(state.bed, state.stay_id, message.time.timestamp(), message)], None
        if kind is WaveformChunk:
            time_s = message.start.timestamp()
            last_s = time_s + len(message.samples) / message.fs
        else:
            time_s = last_s = message.time.timestamp()
        if last_s > horizon_s:
            ahead = last_s - time.time()
            return self._reject(
                item, "clock", f"timed {ahead:.0f} s in the future (clock skew?)"
            ), None
        if kind is Admit or kind is Discharge or kind is Death:
            if settings.patient_hold_s <= 0:
                return self._patient_event(state, item, time_s), None
            # Held until the bed's values reach its time (another topic may be read ahead
            # of the values after a backlog), or patient_hold_s at most.
            state.held.append((time_s, time.time(), item))
            return [], None
        stream = "vitals:" + message.source if kind is Vitals else "waveform:" + message.signal
        tracker = state.streams.get(stream)
        if tracker is None:
            tracker = state.streams[stream] = SeqTracker(settings.dedupe_window)
        if tracker.is_duplicate(message.seq, time_s):
            metrics.outcome(item.topic, "duplicate")
            return [], None
        released = self._release(state, time_s) if state.held else []
        if time_s > self.ward_clock_s:
            self.ward_clock_s = time_s
        if message.stay_id is not None and message.stay_id in state.closed_stays:
            # Its stay has left the bed (read after its discharge, another topic being
            # ahead): valid, but its scores are final. Counted, not dead-lettered.
            metrics.LATE.inc()
            metrics.outcome(item.topic, "processed")
            return released, None
        max_late = self.max_late_s
        if state.clock_s is not None and time_s < state.clock_s - max_late:
            late = f"{state.clock_s - time_s:.0f} s late, older than {max_late:g} s"
            return released + self._reject(item, "clock", late), None
        out: list[Step] = released
        if message.stay_id is not None and message.stay_id != state.stay_id:
            out.extend(self._switch(state, time_s, item, "another stay's data arrived"))
            self._open(state, message.stay_id, time_s)
        elif state.admit_s is None:
            self._open(state, message.stay_id, time_s)
        if kind is Vitals:
            return out, (time_s, message.values)  # read, never changed
        out.extend(self._waveform(state, message, time_s))
        self._advance(state, time_s + len(message.samples) / message.fs, item.sent_s)
        metrics.outcome(item.topic, "processed")
        return out, None

    def _patient_event(self, state: BedState, item: Accepted, time_s: float) -> list[Step]:
        """Admissions, discharges and deaths, applied whatever the bed's clock says.

        They may be read before or after the values of their stay (another topic, read
        at another pace after a backlog): an admission for the stay already running
        brings its covariates; one for a stay that has left, or a discharge of a stay
        the next one already replaced, changes nothing but is a valid record.
        """
        message = item.message
        event = (message.event, message.stay_id)
        if event in state.patient_events:
            metrics.outcome(item.topic, "duplicate")
            return []
        out: list[Step] = []
        if isinstance(message, Admit):
            if message.stay_id != state.stay_id and message.stay_id not in state.closed_stays:
                out.extend(self._switch(state, time_s, item, "a new patient was admitted"))
                self._open(state, message.stay_id, time_s)
            if message.stay_id == state.stay_id:
                state.admitted = True
                state.statics = {
                    "age": message.age,
                    "sex": message.sex,
                    "height_cm": message.height_cm,
                    "weight_kg": message.weight_kg,
                    "icu_type": message.icu_type,
                }
        elif message.stay_id == state.stay_id:
            self._advance(state, time_s, item.sent_s)
            out.extend(self._score_due(state, final=True))
            what = "died" if isinstance(message, Death) else "was discharged"
            out.extend(self._close(state, time_s, f"the patient {what}"))
        elif message.stay_id not in state.closed_stays:
            return self._reject(item, "stay", f"no stay {message.stay_id!r} in this bed")
        state.patient_events = [*state.patient_events[-31:], event]
        metrics.outcome(item.topic, "processed")
        return out

    # --- stays --------------------------------------------------------------------------

    def _open(self, state: BedState, stay_id: str | None, time_s: float) -> None:
        state.stay_id = stay_id
        state.admit_s = time_s
        state.admitted = False
        state.statics = {}
        state.pending = []
        state.waveforms = {}
        state.window = RollingWindow(self.model.grid, time_s) if self.model is not None else None
        if state.detectors is not None:
            if state.slot >= 0:
                state.detectors.release(state.slot)
            state.slot = state.detectors.new_bed()
        # Scores fall every score_every_s from the admission: beds admitted at different
        # times are scored at different moments, so the ward's load is spread out, and the
        # score at 48 h is the window offline tools build for the same stay.
        state.next_due_s = time_s + self.settings.score_every_s
        state.last_scored_s = None
        state.last_observed_s = None
        state.clock_s = time_s if state.clock_s is None else max(state.clock_s, time_s)

    def _switch(self, state: BedState, time_s: float, item: Accepted, reason: str) -> list[Step]:
        """Another stay starts in the bed: the current one is scored up to now and closed."""
        if state.admit_s is None:
            return []
        self._advance(state, time_s, item.sent_s)
        return [*self._score_due(state, final=True), *self._close(state, time_s, reason)]

    def _close(self, state: BedState, time_s: float, reason: str) -> list[Step]:
        if state.admit_s is None:
            return []
        closing = AlertTask(state.bed, state.stay_id, time_s, reason=reason)
        if state.stay_id is not None:
            state.closed_stays = [*state.closed_stays[-31:], state.stay_id]
        if state.slot >= 0:
            state.detectors.release(state.slot)
            state.slot = -1
        state.stay_id = state.admit_s = state.window = None
        state.admitted = False
        state.statics, state.pending, state.waveforms = {}, [], {}
        state.next_due_s = state.last_scored_s = state.last_observed_s = None
        return [closing]

    # --- values -------------------------------------------------------------------------

    def _observe(
        self,
        state: BedState,
        time_s: float,
        values: dict[str, float],
        findings: list[Finding] | None = None,
    ) -> list[Step]:
        """A bed's sample: judged (unless ``findings`` are given), then what is not
        flagged waits for the window."""
        anomalies: list[Anomaly] = []
        if findings is None and state.slot >= 0:
            findings = state.detectors.process_one(state.slot, values)
        if findings:
            flagged = {f.concept for f in findings}
            anomalies = [f.to_anomaly(state.bed, moment(time_s), state.stay_id) for f in findings]
            for finding in findings:
                metrics.ANOMALIES.labels(finding.detector).inc()
            values = {c: v for c, v in values.items() if c not in flagged}
        if values:
            state.last_observed_s = max(state.last_observed_s or time_s, time_s)
        if state.window is not None:
            if state.last_scored_s is not None and time_s < state.last_scored_s:
                # Its minute is scored already: it still counts for the next ones.
                metrics.LATE.inc(len(values))
                state.window.add_values(time_s, values)
            elif values:
                state.pending.append((time_s, values))
        return self._records(ANOMALIES_TOPIC, anomalies)

    def _waveform(self, state: BedState, chunk: WaveformChunk, start_s: float) -> list[Step]:
        window_s = self.settings.waveform_window_s
        buffer = state.waveforms.get(chunk.signal)
        if buffer is None or buffer.fs != chunk.fs:
            buffer = state.waveforms[chunk.signal] = SignalBuffer(chunk.fs)
        add_chunk(buffer, chunk.samples, start_s, window_s)
        derived, outcome = derive(chunk.signal, buffer, window_s)
        if outcome == "waiting":
            return []
        metrics.DERIVED.labels(chunk.signal, outcome).inc()
        if outcome == "flat":
            anomaly = Anomaly(
                bed=state.bed,
                stay_id=state.stay_id,
                time=moment(buffer.end_s),
                concept=chunk.signal,
                value=None,
                detector="waveform_quality",
                kind="flatline",
                score=1.0,
                detail=f"no variation over the last {window_s:g} s of {chunk.signal}",
            )
            metrics.ANOMALIES.labels("waveform_quality").inc()
            return self._records(ANOMALIES_TOPIC, [anomaly])
        if not derived:
            return []
        return self._observe(state, buffer.end_s, derived)

    def _advance(self, state: BedState, time_s: float, sent_s: float) -> None:
        if state.clock_s is None or time_s > state.clock_s:
            state.clock_s = time_s
            state.trigger_sent_s = sent_s

    # --- scores and alerts --------------------------------------------------------------

    def _score_due(self, state: BedState, *, final: bool) -> list[Step]:
        """The minutes of the bed its clock has passed (less the lateness unless
        ``final``), each as a :class:`ScoreTask`."""
        if state.next_due_s is None or state.clock_s is None or self.model is None:
            return []
        every = self.settings.score_every_s
        lateness = 0.0 if final else self.settings.lateness_s
        due = math.floor((state.clock_s - lateness - state.next_due_s) / every) + 1
        if due <= 0:
            return []
        if due > self.max_catch_up:
            metrics.SKIPPED.inc(due - self.max_catch_up)
            state.next_due_s += (due - self.max_catch_up) * every
            due = self.max_catch_up
        out: list[Step] = []
        for _ in range(due):
            out.append(self._task(state, state.next_due_s))
            state.next_due_s += every
        return out

    def _task(self, state: BedState, at_s: float) -> ScoreTask:
        """The minute ending at ``at_s``: its pending values go into the window, which
        is taken as it stands."""
        assert state.window is not None and state.admit_s is not None
        ready = sorted((p for p in state.pending if p[0] < at_s), key=lambda p: p[0])
        state.pending = [p for p in state.pending if p[0] >= at_s]
        state.window.add_samples(ready)
        state.last_scored_s = at_s
        seen = state.last_observed_s if state.last_observed_s is not None else state.admit_s
        return ScoreTask(
            bed=state.bed,
            stay_id=state.stay_id,
            at_s=at_s,
            window=state.window.values(at_s),
            statics=state.statics,  # replaced when the stay changes, never changed in place
            imputed=1.0 - state.window.observed_fraction(at_s),
            staleness_s=max(0.0, at_s - min(seen, at_s)),
            sent_s=state.trigger_sent_s,
        )

    # --- the scoring step: all minutes of a batch in one call of the model ---------------

    def score(self, items: list[ScoreTask | AlertTask]) -> list[Scored | AlertTask]:
        """The scoring step: the minutes of ``items`` scored by the model together (one
        call for all the batch's beds: a model's cost is mostly per call); the alerts'
        work passes through, in order."""
        tasks = [item for item in items if type(item) is ScoreTask]
        found = iter(self._predict(tasks))
        model_id, version = self.model_id, self.model_version
        threshold = self.model.threshold if self.model is not None else 1.0
        return [
            Scored(item, next(found), model_id, version, threshold)
            if isinstance(item, ScoreTask)
            else item
            for item in items
        ]

    def _predict(self, tasks: list[ScoreTask]) -> list[dict[str, Any] | None]:
        """The model's prediction of each task; if the batch fails, each is tried alone,
        and one that fails alone is counted and logged (None)."""
        if not tasks:
            return []
        try:
            scored = self.model.predict_windows(
                np.stack([task.window for task in tasks]), [task.statics for task in tasks]
            )
        except Exception as error:
            if len(tasks) > 1:
                return [p for task in tasks for p in self._predict([task])]
            metrics.SCORE_ERRORS.inc()
            metrics.LOG.error("scoring failed: %s", type(error).__name__)
            return [None]
        survival = scored.survival.tolist()
        risks = {h: r.tolist() for h, r in scored.risks.items()}
        times = self.model.intervals_h
        return [
            {
                "mortality": float(scored.mortality[k]),
                "risks": {h: r[k] for h, r in risks.items()},
                "survival": list(zip(times, survival[k], strict=True)),
            }
            for k in range(len(tasks))
        ]

    # --- the alerts' step ---------------------------------------------------------------

    def alert(
        self, states: dict[str, AlertState], items: list[Scored | AlertTask]
    ) -> list[Outgoing]:
        """The alerts' step: each scored minute published and run through the alert
        policy, acknowledgements and closed stays applied, each bed's in order
        (``states``: the alerting memory of the beds, by bed)."""
        out: list[Outgoing] = []
        for item in items:
            bed = item.task.bed if isinstance(item, Scored) else item.bed
            state = states.get(bed)
            if state is None:
                state = states[bed] = AlertState()
            if isinstance(item, Scored):
                out.extend(self._publish(state, item))
            elif item.ack is not None:
                out.extend(self._records(ALERTS_TOPIC, acknowledge(state, item.ack, item.stay_id)))
            else:
                when = moment(item.time_s)
                closed = close_all(state, bed, item.stay_id, when, item.reason)
                out.extend(self._records(ALERTS_TOPIC, closed))
        return out

    def _publish(self, alerts: AlertState, scored: Scored) -> list[Outgoing]:
        task, prediction = scored.task, scored.prediction
        if prediction is None:
            return []
        when = moment(task.at_s)
        score = Score(
            bed=task.bed,
            stay_id=task.stay_id,
            time=when,
            model_id=scored.model_id,
            model_version=scored.model_version,
            mortality=min(1.0, max(0.0, prediction["mortality"])),
            risks=[
                HorizonRisk(horizon_h=h, risk=min(1.0, max(0.0, r)))
                for h, r in prediction["risks"].items()
            ],
            survival=[
                SurvivalPoint(time_h=t, survival=min(1.0, max(0.0, s)))
                for t, s in prediction["survival"]
            ],
            imputed_fraction=min(1.0, max(0.0, task.imputed)),
            staleness_s=task.staleness_s,
        )
        metrics.SCORES.inc()
        metrics.LATENCY.observe(max(0.0, time.time() - task.sent_s))
        policy = self.settings.alerts
        unreliable = None
        if task.imputed > policy.max_imputed_fraction:
            unreliable = f"{task.imputed:.0%} of the window imputed"
        elif task.staleness_s > policy.max_staleness_s:
            unreliable = f"no new value for {task.staleness_s / 60:.0f} min"
        alerts = evaluate(
            policy,
            alerts,
            task.bed,
            task.stay_id,
            when,
            score.mortality or 0.0,
            threshold=scored.threshold,
            unreliable=unreliable,
        )
        return [
            Outgoing(SCORES_TOPIC, task.bed.encode(), encode(score)),
            *self._records(ALERTS_TOPIC, alerts),
        ]

    def _records(self, topic: str, messages: Iterable[Any]) -> list[Outgoing]:
        out = []
        for message in messages:
            if topic == ALERTS_TOPIC:
                metrics.ALERTS.labels(message.state, message.priority).inc()
            out.append(Outgoing(topic, message.bed.encode(), encode(message)))
        return out
