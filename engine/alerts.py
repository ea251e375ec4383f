"""The alert policy: from a bed's rolling scores to ``icu.alerts.v1`` records.

One place decides when a score becomes an alarm (see
:class:`~bedside.engine.settings.AlertPolicy` for the rules). An alert keeps its
``alert_id`` through its life (raised, escalated, acknowledged, resolved), and the id
is made from the bed, the stay and the event time it was raised at, so a replayed or
recovered engine publishes the same ids and consumers de-duplicate on them.

>>> from datetime import datetime, timedelta, UTC
>>> from bedside.engine.settings import AlertPolicy
>>> policy, state = AlertPolicy(persistence=(2, 3)), AlertState()
>>> start = datetime(2026, 1, 1, tzinfo=UTC)
>>> for minute, risk in enumerate([0.1, 0.6, 0.7, 0.7, 0.2]):
...     for alert in evaluate(policy, state, "icu1-03", "s1", start + timedelta(minutes=minute),
...                           risk, threshold=0.5, unreliable=None):
...         print(minute, alert.state, alert.priority, alert.alert_id)
2 raised medium icu1-03:s1:risk:20260101T000200Z
4 resolved medium icu1-03:s1:risk:20260101T000200Z
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from bedside.engine.settings import AlertPolicy
from bedside.schemas.messages import Alert, AlertAck, Priority

AlertStatus = Literal["raised", "escalated", "acknowledged", "resolved"]


@dataclass
class OpenAlert:
    alert_id: str
    raised: datetime
    priority: Priority
    acknowledged: bool = False
    escalated: bool = False


@dataclass
class AlertState:
    """One bed's alerting memory (small and picklable: part of the bed's state)."""

    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=60))
    risk_alert: OpenAlert | None = None
    notice: OpenAlert | None = None
    silenced_until: datetime | None = None
    #: Evaluations in a row whose window could not be trusted.
    unreliable_run: int = 0


def _stamp(time: datetime) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ")


def evaluate(
    policy: AlertPolicy,
    state: AlertState,
    bed: str,
    stay_id: str | None,
    time: datetime,
    risk: float,
    *,
    threshold: float,
    unreliable: str | None,
) -> list[Alert]:
    """The alert records one evaluation of a bed causes (usually none).

    ``threshold`` is the model's; ``unreliable`` says why the window cannot be trusted
    (mostly imputed, stale), or is None.
    """
    on = policy.on_risk if policy.on_risk is not None else threshold
    high = policy.high_risk if policy.high_risk is not None else on + (1.0 - on) / 2
    stay = stay_id or "-"
    out: list[Alert] = []

    def record(alert: OpenAlert, status: AlertStatus, reason: str, with_risk: bool = True) -> None:
        out.append(
            Alert(
                alert_id=alert.alert_id,
                bed=bed,
                stay_id=stay_id,
                time=time,
                priority=alert.priority,
                state=status,
                reason=reason[:500],
                risk=round(risk, 6) if with_risk else None,
            )
        )

    state.unreliable_run = state.unreliable_run + 1 if unreliable is not None else 0
    if state.unreliable_run >= policy.persistence[0]:
        if state.notice is None:
            state.notice = OpenAlert(f"{bed}:{stay}:data:{_stamp(time)}", time, "info")
            record(state.notice, "raised", f"score not reliable: {unreliable}", with_risk=False)
    elif state.notice is not None:
        record(state.notice, "resolved", "score reliable again", with_risk=False)
        state.notice = None

    current = state.risk_alert
    if current is not None:
        if risk < on * policy.off_ratio:
            record(current, "resolved", f"risk {risk:.2f} below {on * policy.off_ratio:.2f}")
            state.risk_alert = None
            state.recent.clear()
            state.silenced_until = time + timedelta(seconds=policy.silence_s)
        elif (
            not current.acknowledged
            and not current.escalated
            and (time - current.raised).total_seconds() >= policy.escalate_after_s
        ):
            current.escalated = True
            current.priority = "high"
            record(current, "escalated", f"not acknowledged within {policy.escalate_after_s:g} s")
        return out

    if unreliable is not None:
        return out
    k, n = policy.persistence
    state.recent.append(risk >= on)
    window = list(state.recent)[-n:]
    silenced = state.silenced_until is not None and time < state.silenced_until
    if sum(window) >= k and not silenced:
        priority: Priority = "high" if risk >= high else "medium"
        state.risk_alert = OpenAlert(f"{bed}:{stay}:risk:{_stamp(time)}", time, priority)
        record(
            state.risk_alert,
            "raised",
            f"in-hospital mortality risk {risk:.2f} at or above {on:.2f} "
            f"in {sum(window)} of the last {len(window)} scores",
        )
    return out


def acknowledge(state: AlertState, ack: AlertAck, stay_id: str | None) -> list[Alert]:
    """An acknowledgement of an open alert of the bed: its ``acknowledged`` record."""
    for current in (state.risk_alert, state.notice):
        if current is not None and current.alert_id == ack.alert_id and not current.acknowledged:
            current.acknowledged = True
            reason = f"acknowledged by {ack.by}" + (f": {ack.note}" if ack.note else "")
            return [
                Alert(
                    alert_id=current.alert_id,
                    bed=ack.bed,
                    stay_id=stay_id,
                    time=ack.time,
                    priority=current.priority,
                    state="acknowledged",
                    reason=reason[:500],
                )
            ]
    return []


def close_all(
    state: AlertState, bed: str, stay_id: str | None, time: datetime, reason: str
) -> list[Alert]:
    """Resolve whatever is open (the patient left the bed)."""
    out = []
    for current in (state.risk_alert, state.notice):
        if current is not None:
            out.append(
                Alert(
                    alert_id=current.alert_id,
                    bed=bed,
                    stay_id=stay_id,
                    time=time,
                    priority=current.priority,
                    state="resolved",
                    reason=reason,
                )
            )
    state.risk_alert = state.notice = None
    state.recent.clear()
    state.silenced_until = None
    return out
