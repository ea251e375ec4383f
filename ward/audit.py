"""The alert audit: every alert record and every acknowledgement, stored once.

An ``icu.alerts.v1`` record (raised, escalated, acknowledged, resolved) is one row of
``alert_records``; an ``icu.alerts.ack.v1`` acknowledgement (who, when, which alert,
which bed, their note) is one row of ``acknowledgements``. Each row also says when
this consumer received it and through what (``source``: the topic, or ``ward page`` /
``watch`` for an acknowledgement sent from there). Kafka delivers at least once, and
the ward page sees its own acknowledgements twice (sent, then read back): a unique key
(``alert_id, state, time`` for alerts, ``alert_id, acknowledged_by, time`` for
acknowledgements) makes storing the same message again a no-op.

The database is any SQLAlchemy URL: a SQLite file by default (a plain path is taken as
one), PostgreSQL in deployment (``postgresql://`` uses psycopg 3). Only SQLAlchemy Core
with bound parameters; the tables are created when missing. Times are stored in UTC and
read back timezone-aware.

>>> from datetime import datetime, UTC
>>> from bedside.schemas.messages import Alert, AlertAck
>>> raised = Alert(alert_id="icu1-03:s1:risk:20260101T000200Z", bed="icu1-03",
...                time=datetime(2026, 1, 1, 0, 2, tzinfo=UTC), priority="medium",
...                state="raised", reason="in-hospital mortality risk 0.72")
>>> ack = AlertAck(alert_id=raised.alert_id, bed="icu1-03", by="nurse.lee",
...                time=datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
>>> with AuditStore("sqlite://") as audit:
...     audit.record(raised), audit.record(raised), audit.record(ack, source="ward page")
...     [(row["state"], row["priority"]) for row in audit.alerts(bed="icu1-03")]
...     [(row["acknowledged_by"], row["source"]) for row in audit.acknowledgements()]
(True, False, True)
[('raised', 'medium')]
[('nurse.lee', 'ward page')]
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from bedside.errors import BedsideError
from bedside.schemas.messages import ALERT_ACKS_TOPIC, ALERTS_TOPIC, Alert, AlertAck


class AuditError(BedsideError, RuntimeError):
    """The audit database cannot be reached or written (its password never shown)."""


class AuditSettings(BaseSettings):
    """Where the audit goes: ``BEDSIDE_AUDIT_DB`` (a URL or a SQLite file path), or nowhere."""

    model_config = SettingsConfigDict(env_prefix="BEDSIDE_AUDIT_", frozen=True, extra="forbid")

    #: A secret: a PostgreSQL URL can carry a password.
    db: SecretStr | None = None


def load_audit_settings(db: str | None = None) -> AuditSettings:
    """``BEDSIDE_AUDIT_DB`` with ``--audit-db`` on top (entry points only)."""
    return AuditSettings(db=SecretStr(db)) if db else AuditSettings()


def database_url(target: str) -> str:
    """A SQLAlchemy URL from ``--audit-db``: URLs as given, a path as a SQLite file.

    >>> database_url("audit/alerts.db")
    'sqlite:///audit/alerts.db'
    >>> database_url("postgresql://audit@db/bedside")
    'postgresql+psycopg://audit@db/bedside'
    """
    if "://" not in target:
        return f"sqlite:///{Path(target)}"
    scheme, _, rest = target.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return target


def shown(url: str) -> str:
    """The URL as messages print it: without its password."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable database URL>"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware time stored in UTC; SQLite, which keeps no zone, reads back UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("audit times must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def audit_tables(schema: str | None = None) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    """The two tables, in ``schema`` (PostgreSQL) or the default one."""
    metadata = sa.MetaData(schema=schema)
    alert_records = sa.Table(
        "alert_records",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(128), nullable=False),
        sa.Column("bed", sa.String(64), nullable=False),
        sa.Column("stay_id", sa.String(64)),
        sa.Column("time", UTCDateTime, nullable=False, comment="when the state began"),
        sa.Column("priority", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("horizon_h", sa.Float),
        sa.Column("risk", sa.Float),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.UniqueConstraint("alert_id", "state", "time", name="uq_alert_records_delivery"),
        sa.Index("ix_alert_records_bed_time", "bed", "time"),
    )
    acknowledgements = sa.Table(
        "acknowledgements",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(128), nullable=False),
        sa.Column("bed", sa.String(64), nullable=False),
        sa.Column("time", UTCDateTime, nullable=False, comment="when it was acknowledged"),
        sa.Column("acknowledged_by", sa.String(64), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.UniqueConstraint(
            "alert_id", "acknowledged_by", "time", name="uq_acknowledgements_delivery"
        ),
    )
    return metadata, alert_records, acknowledgements


class AuditStore:
    """Alert records and acknowledgements in a relational database (see the module docstring).

    Thread-safe: the ward page records from its Kafka reader and from its web handlers.
    """

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = database_url(url)
        self._lock = threading.Lock()
        options: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            # One connection object crosses threads (under our lock); an in-memory
            # database must be one connection, or each would see an empty database.
            options["connect_args"] = {"check_same_thread": False}
            if sa.make_url(self.url).database in (None, "", ":memory:"):
                options["poolclass"] = StaticPool
        try:
            self._engine = sa.create_engine(self.url, **options)
            metadata, self._alerts, self._acks = audit_tables(schema)
            metadata.create_all(self._engine)
        except (SQLAlchemyError, ImportError) as error:
            raise AuditError(
                f"audit database {shown(self.url)}: {_first_line(error, self.url)}"
            ) from None
        self._dialect = self._engine.dialect.name

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> AuditStore | None:
        """The store configured by ``--audit-db`` / ``BEDSIDE_AUDIT_DB``, or None."""
        return cls(settings.db.get_secret_value()) if settings.db is not None else None

    def __repr__(self) -> str:
        return f"AuditStore({shown(self.url)!r})"

    def record(
        self,
        message: Alert | AlertAck,
        *,
        received_at: datetime | None = None,
        source: str | None = None,
    ) -> bool:
        """Store one alert record or acknowledgement; False when it was already stored."""
        return self.record_many([message], received_at=received_at, source=source) == 1

    def record_many(
        self,
        messages: Iterable[Alert | AlertAck],
        *,
        received_at: datetime | None = None,
        source: str | None = None,
    ) -> int:
        """Store messages in one transaction; the number that were new."""
        received = received_at or datetime.now(UTC)
        rows = [self._row(message, received, source) for message in messages]
        stored = 0
        with self._lock:
            try:
                with self._engine.begin() as connection:
                    for table, row in rows:
                        stored += self._insert_once(connection, table, row)
            except SQLAlchemyError as error:
                raise AuditError(
                    f"audit database {shown(self.url)}: {_first_line(error, self.url)}"
                ) from None
        return stored

    def _row(
        self, message: Alert | AlertAck, received: datetime, source: str | None
    ) -> tuple[sa.Table, dict[str, Any]]:
        if isinstance(message, Alert):
            row = message.model_dump(
                include={"alert_id", "bed", "stay_id", "time", "priority", "state", "reason"}
            )
            row.update(horizon_h=message.horizon_h, risk=message.risk)
            return self._alerts, {**row, "received_at": received, "source": source or ALERTS_TOPIC}
        return self._acks, {
            "alert_id": message.alert_id,
            "bed": message.bed,
            "time": message.time,
            "acknowledged_by": message.by,
            "note": message.note,
            "received_at": received,
            "source": source or ALERT_ACKS_TOPIC,
        }

    def _insert_once(self, connection: sa.Connection, table: sa.Table, row: dict[str, Any]) -> int:
        keys = next(
            c.columns.keys() for c in table.constraints if isinstance(c, sa.UniqueConstraint)
        )
        if self._dialect in ("sqlite", "postgresql"):
            insert: Any
            if self._dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            statement = (
                insert(table)
                .values(row)
                .on_conflict_do_nothing(index_elements=keys)
                .returning(table.c.id)
            )
            # A row comes back only when one was inserted (rowcount is not reliable here).
            return len(connection.execute(statement).all())
        # Other databases: a savepoint per row, so a duplicate does not undo the batch.
        try:
            with connection.begin_nested():
                connection.execute(table.insert().values(row))
        except IntegrityError:
            return 0
        return 1

    def alerts(
        self,
        *,
        bed: str | None = None,
        alert_id: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Alert records, oldest first, optionally of one bed, one alert, or since a time."""
        table = self._alerts
        query = sa.select(table).order_by(table.c.time, table.c.id).limit(limit)
        if bed is not None:
            query = query.where(table.c.bed == bed)
        if alert_id is not None:
            query = query.where(table.c.alert_id == alert_id)
        if since is not None:
            query = query.where(table.c.time >= since)
        return self._fetch(query)

    def acknowledgements(
        self, *, alert_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Acknowledgements, oldest first, optionally of one alert."""
        table = self._acks
        query = sa.select(table).order_by(table.c.time, table.c.id).limit(limit)
        if alert_id is not None:
            query = query.where(table.c.alert_id == alert_id)
        return self._fetch(query)

    def _fetch(self, query: sa.Select[Any]) -> list[dict[str, Any]]:
        with self._lock:
            try:
                with self._engine.connect() as connection:
                    return [dict(row._mapping) for row in connection.execute(query)]
            except SQLAlchemyError as error:
                raise AuditError(
                    f"audit database {shown(self.url)}: {_first_line(error, self.url)}"
                ) from None

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _first_line(error: BaseException, url: str) -> str:
    """The driver's own first line (SQLAlchemy's wrapper adds the SQL), password masked."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[0] if lines else ''}"
    try:
        password = sa.make_url(url).password
    except sa.exc.ArgumentError:
        password = None
    return text.replace(str(password), "***") if password else text
