"""The ward as the page shows it, fed one message at a time: from Kafka or in process.

:class:`WardState` turns ``icu.*.v1`` messages into what a nurse station needs per bed
(vitals sparklines, risk trend per horizon, recent anomalies, data quality) and the
alert list. :class:`WardFeed` wraps it for threads: whoever has messages calls
:meth:`WardFeed.publish`, the web page reads snapshots and changes, and an Acknowledge
pressed on the page goes to the ``acknowledge`` callback.

In-process API (how ``bedside demo`` shows its ward without Kafka)::

    from bedside.ward.audit import AuditStore
    from bedside.ward.feed import WardFeed
    from bedside.ward.web import WardServer

    def acknowledge(ack: AlertAck) -> None:
        # Called on a worker thread when a clinician presses Acknowledge; hand the
        # AlertAck to the engine (as if read from icu.alerts.ack.v1). Raise to refuse:
        # the page shows the error and nothing is recorded.
        engine_input.put(ack)

    feed = WardFeed(acknowledge=acknowledge, audit=AuditStore("bedside-audit.db"))
    with WardServer(feed, port=8050) as server:    # serves from a background thread
        print("ward page at", server.url)            # http://127.0.0.1:8050/
        for topic, message in ward_messages:         # any icu.*.v1 message, any thread
            feed.publish(topic, message)

``publish`` takes the topic and the decoded message (``Vitals``, ``Score``,
``Anomaly``, ``Alert``, ``AlertAck``, ``Admit`` / ``Discharge`` / ``Death``; waveforms
and anything else are ignored). ``acknowledge=None`` makes a read-only page; with an
``audit`` store, every alert record and acknowledgement that passes is stored.

>>> from datetime import datetime, UTC
>>> from bedside.schemas.messages import Alert, Vitals
>>> feed = WardFeed()
>>> t = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
>>> feed.publish("icu.vitals.v1", Vitals(bed="icu1-03", time=t, source="monitor", seq=0,
...                                      values={"heart_rate": 82.0, "spo2": 97.0}))
>>> feed.publish("icu.alerts.v1", Alert(alert_id="a1", bed="icu1-03", time=t,
...                                     priority="high", state="raised", reason="risk 0.8"))
>>> view = feed.snapshot()
>>> [(v["label"], v["value"]) for v in view["beds"][0]["vitals"]]
[('HR', 82.0), ('SpO2', 97.0)]
>>> view["alerts"][0]["state"], view["ward"]["open_alerts"]
('raised', {'high': 1, 'medium': 0, 'low': 0, 'info': 0})
>>> feed.acknowledge("a1", by="nurse.lee")
Traceback (most recent call last):
...
bedside.ward.feed.AckRefused: this ward page is read-only: acknowledgements go nowhere
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import ValidationError

from bedside.errors import BedsideError
from bedside.schemas.concepts import load_concepts
from bedside.schemas.messages import (
    ALERT_ACKS_TOPIC,
    ALERTS_TOPIC,
    ANOMALIES_TOPIC,
    PATIENT_TOPIC,
    SCORES_TOPIC,
    VITALS_TOPIC,
    Admit,
    Alert,
    AlertAck,
    Anomaly,
    Death,
    Discharge,
    Score,
    Vitals,
)
from bedside.ward.audit import AuditStore

#: The vitals a bed card draws, each from the first concept of its list the bed has.
VITAL_PANELS: Final = (
    ("HR", ("heart_rate", "pulse_rate")),
    ("SpO2", ("spo2",)),
    ("MAP", ("arterial_mean_bp", "noninvasive_mean_bp")),
    ("SBP", ("arterial_systolic_bp", "noninvasive_systolic_bp")),
    ("RR", ("respiratory_rate",)),
    ("Temp", ("temperature",)),
    ("Lact", ("lactate",)),
)
_PANEL_CONCEPTS: Final = frozenset(c for _, concepts in VITAL_PANELS for c in concepts)
PRIORITIES: Final = ("high", "medium", "low", "info")
#: Points of a sparkline; older points are merged into buckets of window / POINTS.
POINTS: Final = 120
#: Resolved alerts the page keeps listing (the newest), besides every open one.
KEEP_RESOLVED: Final = 50
#: Recent anomalies listed per bed.
KEEP_ANOMALIES: Final = 8


class AckRefused(BedsideError, ValueError):
    """An acknowledgement that cannot be sent; ``why`` is one of the keys of ``HTTP_STATUS``."""

    HTTP_STATUS: Final = {"invalid": 400, "unknown": 404, "closed": 409, "read-only": 403}

    def __init__(self, why: Literal["invalid", "unknown", "closed", "read-only"], text: str):
        super().__init__(text)
        self.why = why


class Trend:
    """A bounded time series for a sparkline: ``window_s`` seconds, about ``POINTS`` points.

    A value in the same bucket (``window_s / POINTS`` wide) as the last one replaces it,
    a value older than the last bucket is ignored (late data does not redraw the past).

    >>> trend = Trend(window_s=120)
    >>> for t, value in [(0, 1.0), (0.5, 2.0), (1, 3.0), (0.2, 9.0), (200, 4.0)]:
    ...     trend.add(t, value)
    >>> trend.points()
    [[200, 4.0]]
    """

    __slots__ = ("_step", "_values", "_window_s")

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._step = window_s / POINTS
        self._values: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float) -> None:
        if self._values:
            last_t = self._values[-1][0]
            bucket, last_bucket = t // self._step, last_t // self._step
            if bucket < last_bucket:
                return
            if bucket == last_bucket:
                self._values.pop()
        self._values.append((t, value))
        while self._values[0][0] < t - self._window_s:
            self._values.popleft()

    def points(self) -> list[list[float]]:
        return [[round(t, 1) if t % 1 else int(t), _round(v)] for t, v in self._values]


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _iso(time: datetime | None) -> str | None:
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z") if time else None


@dataclass
class BedState:
    """What the page knows of one bed (the current occupant only)."""

    bed: str
    vitals_window_s: float
    risk_window_s: float
    status: Literal["occupied", "vacant"] = "occupied"
    stay_id: str | None = None
    admitted: datetime | None = None
    trends: dict[str, Trend] = field(default_factory=dict)
    latest: dict[str, tuple[datetime, float]] = field(default_factory=dict)
    last_vitals: datetime | None = None
    risks: dict[float, Trend] = field(default_factory=dict)
    latest_risks: dict[float, float] = field(default_factory=dict)
    mortality: Trend | None = None
    latest_mortality: float | None = None
    score: Score | None = None
    anomalies: deque[Anomaly] = field(default_factory=lambda: deque(maxlen=KEEP_ANOMALIES))
    anomaly_count: int = 0
    version: int = 0

    def new_occupant(self, stay_id: str | None, admitted: datetime | None) -> None:
        """A new patient: nothing of the previous one stays on the card."""
        fresh = BedState(self.bed, self.vitals_window_s, self.risk_window_s)
        fresh.stay_id, fresh.admitted, fresh.version = stay_id, admitted, self.version
        self.__dict__.update(fresh.__dict__)

    def follow_stay(self, stay_id: str | None) -> None:
        """A message of another stay than the one shown means the bed changed hands."""
        if stay_id is not None and self.stay_id is not None and stay_id != self.stay_id:
            self.new_occupant(stay_id, None)
        elif stay_id is not None:
            self.stay_id = stay_id
        self.status = "occupied"

    def view(self) -> dict[str, Any]:
        """The bed as JSON for the page; no stay id (the page names beds, not patients)."""
        concepts = load_concepts()
        vitals = []
        for label, choices in VITAL_PANELS:
            concept = next((c for c in choices if c in self.latest), None)
            if concept is None:
                continue
            time, value = self.latest[concept]
            vitals.append(
                {
                    "label": label,
                    "concept": concept,
                    "unit": concepts[concept].unit,
                    "value": _round(value),
                    "time": _iso(time),
                    "points": self.trends[concept].points(),
                }
            )
        risks = [
            {"horizon_h": h, "risk": _round(self.latest_risks[h]), "points": trend.points()}
            for h, trend in sorted(self.risks.items())
        ]
        score = self.score
        return {
            "bed": self.bed,
            "status": self.status,
            "admitted": _iso(self.admitted),
            "vitals": vitals,
            "risks": risks,
            "mortality": None
            if self.mortality is None or self.latest_mortality is None
            else {"risk": _round(self.latest_mortality), "points": self.mortality.points()},
            "quality": {
                "last_vitals": _iso(self.last_vitals),
                "score_time": _iso(score.time) if score else None,
                "imputed_fraction": _round(score.imputed_fraction) if score else None,
                "staleness_s": _round(score.staleness_s) if score else None,
                "model": f"{score.model_id} {score.model_version}" if score else None,
            },
            "anomalies": {
                "count": self.anomaly_count,
                "recent": [
                    {
                        "time": _iso(a.time),
                        "concept": a.concept,
                        "value": None if a.value is None else _round(a.value),
                        "kind": a.kind,
                        "detector": a.detector,
                    }
                    for a in self.anomalies
                ],
            },
        }


@dataclass
class AlertState:
    """An alert's latest record, plus who acknowledged it."""

    alert: Alert
    raised: datetime
    acknowledged_by: str | None = None
    version: int = 0

    @property
    def is_open(self) -> bool:
        return self.alert.state in ("raised", "escalated")

    def view(self) -> dict[str, Any]:
        alert = self.alert
        return {
            "alert_id": alert.alert_id,
            "bed": alert.bed,
            "priority": alert.priority,
            "state": alert.state,
            "reason": alert.reason,
            "time": _iso(alert.time),
            "raised": _iso(self.raised),
            "risk": alert.risk,
            "horizon_h": alert.horizon_h,
            "acknowledged_by": self.acknowledged_by,
        }


class WardState:
    """The ward built from messages (not thread-safe: :class:`WardFeed` guards it).

    Every change bumps ``version``; beds and alerts remember the version of their last
    change, so a page connection sends only what changed since it last looked.
    """

    def __init__(self, *, vitals_window_s: float = 3600.0, risk_window_s: float = 12 * 3600.0):
        self.vitals_window_s = vitals_window_s
        self.risk_window_s = risk_window_s
        self.beds: dict[str, BedState] = {}
        self.alerts: dict[str, AlertState] = {}
        self.version = 0
        self.clock: datetime | None = None
        self.messages = 0
        self.rejected = 0

    def _bed(self, bed: str) -> BedState:
        if bed not in self.beds:
            self.beds[bed] = BedState(bed, self.vitals_window_s, self.risk_window_s)
        return self.beds[bed]

    def _touch(self, thing: BedState | AlertState) -> None:
        self.version += 1
        thing.version = self.version

    def _tick(self, time: datetime) -> None:
        if self.clock is None or time > self.clock:
            self.clock = time

    def apply(self, topic: str, message: Any) -> bool:
        """Take one message into the ward; False when it changes nothing shown."""
        self.messages += 1
        if topic == VITALS_TOPIC and isinstance(message, Vitals):
            self._vitals(message)
        elif topic == SCORES_TOPIC and isinstance(message, Score):
            self._score(message)
        elif topic == ANOMALIES_TOPIC and isinstance(message, Anomaly):
            bed = self._bed(message.bed)
            bed.follow_stay(message.stay_id)
            bed.anomalies.appendleft(message)
            bed.anomaly_count += 1
            self._tick(message.time)
            self._touch(bed)
        elif topic == ALERTS_TOPIC and isinstance(message, Alert):
            return self._alert(message)
        elif topic == ALERT_ACKS_TOPIC and isinstance(message, AlertAck):
            current = self.alerts.get(message.alert_id)
            if current is None or current.alert.state == "resolved":
                return False
            current.acknowledged_by = message.by
            self._touch(current)
        elif topic == PATIENT_TOPIC and isinstance(message, Admit | Discharge | Death):
            bed = self._bed(message.bed)
            if isinstance(message, Admit):
                bed.new_occupant(message.stay_id, message.time)
            else:
                bed.status = "vacant"
            self._tick(message.time)
            self._touch(bed)
        else:
            return False
        return True

    def _vitals(self, message: Vitals) -> None:
        bed = self._bed(message.bed)
        bed.follow_stay(message.stay_id)
        t = message.time.timestamp()
        for concept, value in message.values.items():
            if concept not in _PANEL_CONCEPTS:
                continue
            if concept not in bed.trends:
                bed.trends[concept] = Trend(bed.vitals_window_s)
            bed.trends[concept].add(t, value)
            previous = bed.latest.get(concept)
            if previous is None or message.time >= previous[0]:
                bed.latest[concept] = (message.time, value)
        if bed.last_vitals is None or message.time > bed.last_vitals:
            bed.last_vitals = message.time
        self._tick(message.time)
        self._touch(bed)

    def _score(self, message: Score) -> None:
        bed = self._bed(message.bed)
        bed.follow_stay(message.stay_id)
        if bed.score is not None and message.time < bed.score.time:
            return
        t = message.time.timestamp()
        for risk in message.risks:
            if risk.horizon_h not in bed.risks:
                bed.risks[risk.horizon_h] = Trend(bed.risk_window_s)
            bed.risks[risk.horizon_h].add(t, risk.risk)
            bed.latest_risks[risk.horizon_h] = risk.risk
        if message.mortality is not None:
            if bed.mortality is None:
                bed.mortality = Trend(bed.risk_window_s)
            bed.mortality.add(t, message.mortality)
            bed.latest_mortality = message.mortality
        bed.score = message
        self._tick(message.time)
        self._touch(bed)

    def _alert(self, alert: Alert) -> bool:
        current = self.alerts.get(alert.alert_id)
        if current is not None and current.alert.state == "resolved":
            return False  # a re-delivered record of a closed alert
        if current is None:
            current = self.alerts[alert.alert_id] = AlertState(alert, raised=alert.time)
        current.alert = alert
        self._bed(alert.bed)
        if alert.state == "resolved":
            self._forget_old_resolved()
        self._touch(current)
        return True

    def _forget_old_resolved(self) -> None:
        resolved = [a for a in self.alerts.values() if a.alert.state == "resolved"]
        if len(resolved) > KEEP_RESOLVED:
            resolved.sort(key=lambda a: a.version)
            for old in resolved[: len(resolved) - KEEP_RESOLVED]:
                del self.alerts[old.alert.alert_id]

    def ward_view(self) -> dict[str, Any]:
        open_alerts = dict.fromkeys(PRIORITIES, 0)
        for current in self.alerts.values():
            if current.is_open:
                open_alerts[current.alert.priority] += 1
        return {
            "beds": len(self.beds),
            "occupied": sum(b.status == "occupied" for b in self.beds.values()),
            "open_alerts": open_alerts,
            "clock": _iso(self.clock),
            "messages": self.messages,
            "rejected": self.rejected,
            "version": self.version,
        }


AckCallback = Callable[[AlertAck], None]


class WardFeed:
    """A :class:`WardState` shared between the feeding thread and the page (thread-safe).

    ``acknowledge`` receives each :class:`AlertAck` a clinician sends from the page (on
    a worker thread; it may block, e.g. until Kafka confirms); ``audit`` stores every
    alert record and acknowledgement; ``source`` says on the page where data comes from.
    """

    def __init__(
        self,
        *,
        acknowledge: AckCallback | None = None,
        audit: AuditStore | None = None,
        source: str = "in process",
        state: WardState | None = None,
    ) -> None:
        self._acknowledge = acknowledge
        self.audit = audit
        self.source = source
        self._state = state or WardState()
        self._lock = threading.Lock()
        #: Bed views by bed, with the version they were drawn at: every page shares them.
        self._views: dict[str, tuple[int, dict[str, Any]]] = {}

    @property
    def read_only(self) -> bool:
        return self._acknowledge is None

    def publish(self, topic: str, message: Any) -> None:
        """Take one decoded ``icu.*.v1`` message into the ward (any thread)."""
        with self._lock:
            self._state.apply(topic, message)
        if self.audit is not None and isinstance(message, Alert | AlertAck):
            self.audit.record(message, source=topic)

    def reject(self) -> None:
        """Count a record that could not be decoded (shown on the page as data quality)."""
        with self._lock:
            self._state.rejected += 1
            self._state.version += 1

    def acknowledge(
        self, alert_id: str, by: str, note: str = "", *, source: str = "ward page"
    ) -> AlertAck:
        """Send an acknowledgement of an open alert through the callback; AckRefused if not."""
        if self._acknowledge is None:
            raise AckRefused(
                "read-only", "this ward page is read-only: acknowledgements go nowhere"
            )
        with self._lock:
            current = self._state.alerts.get(alert_id)
            if current is None:
                raise AckRefused("unknown", f"no alert {alert_id!r} on this ward")
            if not current.is_open:
                raise AckRefused("closed", f"alert {alert_id} is already {current.alert.state}")
            bed = current.alert.bed
        try:
            ack = AlertAck(
                alert_id=alert_id, bed=bed, time=datetime.now(UTC), by=by.strip(), note=note
            )
        except ValidationError as error:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
            raise AckRefused("invalid", f"acknowledgement refused: {problems}") from None
        self._acknowledge(ack)
        if self.audit is not None:
            self.audit.record(ack, source=source)
        with self._lock:
            self._state.apply(ALERT_ACKS_TOPIC, ack)
        return ack

    def snapshot(self) -> dict[str, Any]:
        """The whole ward as the page draws it."""
        with self._lock:
            state = self._state
            return {
                "ward": {**state.ward_view(), "source": self.source, "read_only": self.read_only},
                "beds": [self._view(state.beds[b]) for b in sorted(state.beds)],
                "alerts": [a.view() for a in state.alerts.values()],
            }

    def _view(self, bed: BedState) -> dict[str, Any]:
        cached = self._views.get(bed.bed)
        if cached is None or cached[0] != bed.version:
            cached = self._views[bed.bed] = (bed.version, bed.view())
        return cached[1]

    @property
    def version(self) -> int:
        return self._state.version

    def changes_since(
        self, version: int
    ) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
        """(version now, beds changed, alerts changed, the ward summary if anything changed)."""
        with self._lock:
            state = self._state
            if state.version == version:
                return version, [], [], None
            beds = [self._view(b) for b in state.beds.values() if b.version > version]
            alerts = [a.view() for a in state.alerts.values() if a.version > version]
            ward = {**state.ward_view(), "source": self.source, "read_only": self.read_only}
            return state.version, beds, alerts, ward
