"""``bedside watch``: alerts in a terminal, filtered by priority and bed, and acknowledgements.

``bedside watch`` prints one line per ``icu.alerts.v1`` record that passes the filters::

    2026-01-01 08:02:00Z  HIGH    raised        bed icu1-03  risk 0.72 (24 h)  in-hosp...
        ...mortality risk 0.72 at or above 0.50 ...  [#1 icu1-03:s1:risk:20260101T080200Z]

(one line; ``#1`` is the number to type to acknowledge it).

With ``--by NAME`` it also reads the keyboard: ``1`` (the number shown) or an alert id,
optionally followed by a note, acknowledges that alert as NAME.
``bedside watch ack ALERT_ID --by NAME`` acknowledges one alert and exits. Either way
the acknowledgement is an ``icu.alerts.ack.v1`` record that the engine turns into the
alert's ``acknowledged`` record. With ``--audit-db`` every alert record and
acknowledgement read (whatever the filters) is stored in the audit database.

Lines carry bed and alert ids, never a stay id or other patient data.
"""

from __future__ import annotations

import argparse
import logging
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Final

from bedside.errors import BedsideError
from bedside.schemas.messages import (
    ALERT_ACKS_TOPIC,
    ALERTS_TOPIC,
    Alert,
    AlertAck,
    MessageError,
    decode,
)
from bedside.ward.audit import AuditStore, load_audit_settings

log = logging.getLogger(__name__)

PRIORITIES: Final = ("high", "medium", "low", "info")
COLOURS: Final = {"high": "\033[1;31m", "medium": "\033[33m", "low": "\033[36m", "info": "\033[2m"}
RESET: Final = "\033[0m"


class WatchError(BedsideError, ValueError):
    """A filter or an acknowledgement the command line cannot use."""


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to show: ``None`` = all priorities / all beds.

    >>> only = AlertFilter.parse("high,medium", "icu1-03")
    >>> sorted(only.priorities or ()), sorted(only.beds or ())
    (['high', 'medium'], ['icu1-03'])
    >>> AlertFilter.parse("urgent", None)
    Traceback (most recent call last):
    ...
    bedside.ward.watch.WatchError: --priority: unknown 'urgent' (use high, medium, low, info)
    """

    priorities: frozenset[str] | None = None
    beds: frozenset[str] | None = None

    @classmethod
    def parse(cls, priorities: str | None, beds: str | None) -> AlertFilter:
        chosen = _split(priorities)
        unknown = sorted(chosen - set(PRIORITIES)) if chosen else []
        if unknown:
            raise WatchError(
                f"--priority: unknown {', '.join(map(repr, unknown))} (use {', '.join(PRIORITIES)})"
            )
        return cls(chosen or None, _split(beds) or None)

    def matches(self, alert: Alert) -> bool:
        return (self.priorities is None or alert.priority in self.priorities) and (
            self.beds is None or alert.bed in self.beds
        )


def _split(text: str | None) -> frozenset[str]:
    return frozenset(part.strip() for part in (text or "").split(",") if part.strip())


def format_alert(alert: Alert, number: int | None = None, *, colour: bool = False) -> str:
    """One terminal line for an alert record (bed and alert id only, no stay id).

    >>> from datetime import datetime, UTC
    >>> alert = Alert(alert_id="a-17", bed="icu1-03", stay_id="s1", priority="high",
    ...               time=datetime(2026, 1, 1, 8, 2, tzinfo=UTC), state="raised",
    ...               reason="rising", horizon_h=24.0, risk=0.72)
    >>> print(format_alert(alert, 1))
    2026-01-01 08:02:00Z  HIGH    raised        bed icu1-03  risk 0.72 (24 h)  rising  [#1 a-17]
    """
    priority = f"{alert.priority.upper():<7}"
    if colour:
        priority = f"{COLOURS[alert.priority]}{priority}{RESET}"
    risk = ""
    if alert.risk is not None:
        risk = f"risk {alert.risk:.2f}"
        risk += f" ({alert.horizon_h:g} h)  " if alert.horizon_h is not None else "  "
    tag = f"#{number} " if number is not None else ""
    return (
        f"{alert.time.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z  {priority} {alert.state:<13} "
        f"bed {alert.bed}  {risk}{alert.reason}  [{tag}{alert.alert_id}]"
    )


class AlertWatcher:
    """Reads alert records, prints those that pass the filter, remembers open ones for acks."""

    def __init__(
        self,
        out: IO[str],
        only: AlertFilter,
        *,
        colour: bool = False,
        audit: AuditStore | None = None,
    ) -> None:
        self._out = out
        self._only = only
        self._colour = colour
        self._audit = audit
        self.shown = 0
        #: Number shown -> alert id, and the latest record of every alert seen.
        self.numbers: dict[int, str] = {}
        self.latest: dict[str, Alert] = {}

    def take(self, topic: str, message: Alert | AlertAck) -> None:
        if self._audit is not None:
            self._audit.record(message, source=topic)
        if not isinstance(message, Alert):
            return
        self.latest[message.alert_id] = message
        if not self._only.matches(message):
            return
        number = None
        if message.state in ("raised", "escalated"):
            number = next(
                (n for n, a in self.numbers.items() if a == message.alert_id),
                len(self.numbers) + 1,
            )
            self.numbers[number] = message.alert_id
        print(format_alert(message, number, colour=self._colour), file=self._out, flush=True)
        self.shown += 1

    def resolve(self, reference: str) -> Alert:
        """The alert a typed number or id refers to."""
        alert_id = self.numbers.get(int(reference)) if reference.isdigit() else reference
        alert = self.latest.get(alert_id or "")
        if alert is None:
            raise WatchError(f"no alert {reference!r} seen here")
        return alert


def _keyboard(lines: queue.Queue[str]) -> None:
    for line in sys.stdin:
        lines.put(line)


def acknowledge_line(
    line: str, watcher: AlertWatcher, by: str, send: Callable[[AlertAck], None]
) -> AlertAck:
    """Acknowledge what a typed line names: ``NUMBER|ALERT_ID [note...]``."""
    reference, _, note = line.strip().partition(" ")
    alert = watcher.resolve(reference)
    if alert.state not in ("raised", "escalated"):
        raise WatchError(f"alert {alert.alert_id} is {alert.state}: nothing to acknowledge")
    ack = make_ack(alert.alert_id, alert.bed, by, note.strip())
    send(ack)
    return ack


def make_ack(alert_id: str, bed: str, by: str, note: str = "") -> AlertAck:
    from pydantic import ValidationError

    try:
        return AlertAck(alert_id=alert_id, bed=bed, time=datetime.now(UTC), by=by, note=note)
    except ValidationError as error:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
        raise WatchError(f"acknowledgement refused: {problems}") from None


def _open_audit(target: str | None) -> AuditStore | None:
    return AuditStore.from_settings(load_audit_settings(target))


def run(args: argparse.Namespace) -> int:
    """``bedside watch``: print alerts until Ctrl-C (or ``--count`` of them)."""
    from bedside.settings import load_kafka_settings
    from bedside.ward.kafka import AckPublisher, TopicReader

    only = AlertFilter.parse(args.priority, args.bed)
    settings = load_kafka_settings(bootstrap_servers=args.bootstrap_servers)
    audit = _open_audit(args.audit_db)
    topics = [ALERTS_TOPIC] + ([ALERT_ACKS_TOPIC] if audit is not None else [])
    reader = TopicReader(
        settings,
        topics,
        start="earliest" if args.from_beginning else "latest",
        connect_timeout_s=args.connect_timeout,
    )
    publisher = AckPublisher(settings, connect_timeout_s=args.connect_timeout) if args.by else None
    colour = sys.stdout.isatty() and not args.no_colour
    watcher = AlertWatcher(sys.stdout, only, colour=colour, audit=audit)
    lines: queue.Queue[str] = queue.Queue()
    wanted = ", ".join(
        part
        for part in (
            f"priority {','.join(sorted(only.priorities))}" if only.priorities else "",
            f"beds {','.join(sorted(only.beds))}" if only.beds else "",
        )
        if part
    )
    print(
        f"watching {ALERTS_TOPIC} on {','.join(settings.servers())}"
        f"{f' ({wanted})' if wanted else ''}; Ctrl-C to stop",
        file=sys.stderr,
    )
    if publisher is not None:
        print(f"type a number or alert id [note] to acknowledge as {args.by}", file=sys.stderr)
        threading.Thread(target=_keyboard, args=(lines,), daemon=True).start()
    try:
        while args.count is None or watcher.shown < args.count:
            for record in reader.poll(0.5):
                try:
                    message = decode(record.topic, record.value)
                except MessageError as error:
                    log.warning(
                        "skipped a record at %s[%d]@%d: %s",
                        record.topic,
                        record.partition,
                        record.offset,
                        error.reason.split(":")[0],
                    )
                    continue
                watcher.take(record.topic, message)
            while publisher is not None and not lines.empty():
                line = lines.get()
                if not line.strip():
                    continue
                try:
                    ack = acknowledge_line(line, watcher, args.by, publisher)
                except (WatchError, BedsideError) as error:
                    print(f"not acknowledged: {error}", file=sys.stderr)
                    continue
                if audit is not None:
                    audit.record(ack, source="watch")
                print(f"acknowledgement of {ack.alert_id} sent as {ack.by}", file=sys.stderr)
    finally:
        reader.close()
        if publisher is not None:
            publisher.close()
    return 0


def ack(args: argparse.Namespace) -> int:
    """``bedside watch ack ALERT_ID --by NAME``: publish one acknowledgement."""
    from bedside.settings import load_kafka_settings
    from bedside.ward.kafka import AckPublisher, find_alert

    settings = load_kafka_settings(bootstrap_servers=args.bootstrap_servers)
    audit = _open_audit(args.audit_db)
    bed = args.bed
    if bed is None:
        # Which bed: the audit knows the alerts it stored; else the alert topic (small).
        stored = audit.alerts(alert_id=args.alert_id) if audit is not None else []
        states = {row["state"] for row in stored}
        if stored:
            bed = stored[0]["bed"]
        else:
            found = find_alert(settings, args.alert_id, connect_timeout_s=args.connect_timeout)
            if found is None:
                raise WatchError(
                    f"alert {args.alert_id} not found on {ALERTS_TOPIC}; give its bed with --bed"
                )
            bed, states = found.bed, {found.state}
        if "resolved" in states:
            raise WatchError(f"alert {args.alert_id} is resolved: nothing to acknowledge")
    acknowledgement = make_ack(args.alert_id, bed, args.by, args.note)
    publisher = AckPublisher(settings, connect_timeout_s=args.connect_timeout)
    try:
        publisher(acknowledgement)
    finally:
        publisher.close()
    if audit is not None:
        audit.record(acknowledgement, source="watch")
    print(
        f"acknowledgement of {acknowledgement.alert_id} (bed {bed}) as {acknowledgement.by} "
        f"published to {ALERT_ACKS_TOPIC}"
    )
    return 0
