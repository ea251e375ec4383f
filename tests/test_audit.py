"""The alert audit: every alert record and acknowledgement stored once, in SQLite and PostgreSQL."""

from __future__ import annotations

import doctest
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

import bedside.ward.audit
from bedside.schemas.messages import Alert, AlertAck
from bedside.ward.audit import AuditError, AuditStore, database_url, load_audit_settings

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def alert(state: str = "raised", minutes: int = 0, **changes: object) -> Alert:
    fields: dict[str, object] = {
        "alert_id": "icu1-03:s7:risk:20260301T080000Z",
        "bed": "icu1-03",
        "stay_id": "s7",
        "time": T0 + timedelta(minutes=minutes),
        "priority": "high",
        "state": state,
        "reason": "in-hospital mortality risk 0.81 at or above 0.50",
        "horizon_h": 24.0,
        "risk": 0.81,
    }
    return Alert.model_validate({**fields, **changes})


def ack(by: str = "nurse.lee", minutes: int = 3, note: str = "on my way") -> AlertAck:
    return AlertAck(
        alert_id=alert().alert_id,
        bed="icu1-03",
        time=T0 + timedelta(minutes=minutes),
        by=by,
        note=note,
    )


def postgres_schema() -> Iterator[tuple[str, str]]:
    """A fresh schema on the real PostgreSQL server, dropped afterwards."""
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
    except sa.exc.OperationalError as error:
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({type(error.orig).__name__})")
    schema = f"audit_{uuid.uuid4().hex[:12]}"
    with engine.begin() as connection:
        connection.execute(sa.schema.CreateSchema(schema))
    try:
        yield POSTGRES_URL, schema
    finally:
        with engine.begin() as connection:
            connection.execute(sa.schema.DropSchema(schema, cascade=True))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of an empty audit database of each kind."""
    if request.param == "sqlite":
        yield str(tmp_path / "audit.db"), None
    else:
        yield from postgres_schema()


def test_docstring_examples() -> None:
    result = doctest.testmod(bedside.ward.audit, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_alert_state_and_acknowledgement_is_stored_with_who_when_what(
    database: tuple[str, str | None],
) -> None:
    url, schema = database
    received = datetime(2026, 3, 1, 8, 0, 1, tzinfo=UTC)
    with AuditStore(url, schema=schema) as audit:
        assert audit.record(alert("raised"), received_at=received)
        assert audit.record(alert("escalated", minutes=5, priority="high"), received_at=received)
        assert audit.record(ack(), source="ward page", received_at=received)
        assert audit.record(alert("acknowledged", minutes=6, reason="acknowledged by nurse.lee"))
        assert audit.record(alert("resolved", minutes=40, risk=None, horizon_h=None))

        rows = audit.alerts(bed="icu1-03")
        assert [r["state"] for r in rows] == ["raised", "escalated", "acknowledged", "resolved"]
        first = rows[0]
        assert first["alert_id"] == "icu1-03:s7:risk:20260301T080000Z"
        assert (first["priority"], first["risk"], first["horizon_h"]) == ("high", 0.81, 24.0)
        assert first["reason"].startswith("in-hospital mortality risk 0.81")
        assert first["time"] == T0 and first["time"].tzinfo is not None
        assert first["received_at"] == received
        assert first["source"] == "icu.alerts.v1"
        assert rows[-1]["risk"] is None

        (stored,) = audit.acknowledgements(alert_id=alert().alert_id)
        assert stored["acknowledged_by"] == "nurse.lee"
        assert stored["note"] == "on my way"
        assert stored["bed"] == "icu1-03"
        assert stored["time"] == T0 + timedelta(minutes=3)
        assert stored["source"] == "ward page"
        assert audit.alerts(bed="icu9-99") == []
        assert len(audit.alerts(since=T0 + timedelta(minutes=5))) == 3


def test_redelivered_messages_are_stored_once(database: tuple[str, str | None]) -> None:
    url, schema = database
    with AuditStore(url, schema=schema) as audit:
        batch = [alert("raised"), ack(), alert("raised"), alert("resolved", minutes=9), ack()]
        assert audit.record_many(batch) == 3
        # Kafka delivers again after a restart; the page reads back its own ack.
        assert audit.record_many(batch) == 0
        assert not audit.record(ack(), source="icu.alerts.ack.v1")
        # A second acknowledgement (someone else, later) is a new row.
        assert audit.record(ack(by="dr.okafor", minutes=4))
        assert len(audit.alerts()) == 2
        assert [a["acknowledged_by"] for a in audit.acknowledgements()] == [
            "nurse.lee",
            "dr.okafor",
        ]


def test_times_keep_their_instant_whatever_the_zone(database: tuple[str, str | None]) -> None:
    url, schema = database
    paris = timezone(timedelta(hours=1))
    with AuditStore(url, schema=schema) as audit:
        audit.record(alert(time=datetime(2026, 3, 1, 9, 0, tzinfo=paris)))
        (row,) = audit.alerts()
    assert row["time"] == T0
    assert row["time"].utcoffset() == timedelta(0)


def test_text_goes_in_as_bound_parameters(database: tuple[str, str | None]) -> None:
    url, schema = database
    hostile = "x'); DROP TABLE alert_records; --"
    with AuditStore(url, schema=schema) as audit:
        audit.record(alert(reason=hostile))
        audit.record(ack(note=hostile))
        assert audit.alerts()[0]["reason"] == hostile
        assert audit.acknowledgements()[0]["note"] == hostile


def test_a_reopened_store_finds_what_was_recorded(database: tuple[str, str | None]) -> None:
    url, schema = database
    with AuditStore(url, schema=schema) as audit:
        audit.record(alert())
    with AuditStore(url, schema=schema) as again:
        assert again.record(alert()) is False
        assert len(again.alerts()) == 1


def test_threads_record_concurrently(tmp_path: Path) -> None:
    with AuditStore(str(tmp_path / "audit.db")) as audit:
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            try:
                for i in range(20):
                    audit.record(alert(minutes=i, alert_id=f"a-{worker}-{i}"))
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(audit.alerts()) == 80


def test_unreachable_database_is_one_line_without_the_password() -> None:
    with pytest.raises(AuditError) as failure:
        AuditStore("postgresql://audit:s3cr3t-pw@127.0.0.1:1/audit")
    text = str(failure.value)
    assert "s3cr3t-pw" not in text and "\n" not in text
    assert "127.0.0.1:1" in text and "***" in text


def test_where_the_audit_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert database_url("bedside-audit.db") == "sqlite:///bedside-audit.db"
    assert database_url("postgres://a@db/x") == "postgresql+psycopg://a@db/x"
    assert database_url("sqlite:////var/lib/audit.db") == "sqlite:////var/lib/audit.db"
    monkeypatch.delenv("BEDSIDE_AUDIT_DB", raising=False)
    assert AuditStore.from_settings(load_audit_settings()) is None
    monkeypatch.setenv("BEDSIDE_AUDIT_DB", "postgresql://audit:pw@db/bedside")
    settings = load_audit_settings()
    assert settings.db is not None and "pw" not in repr(settings)
    assert load_audit_settings("other.db").db.get_secret_value() == "other.db"  # type: ignore[union-attr]
