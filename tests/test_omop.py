"""OMOP CDM database -> canonical tables, on SQLite and on the real PostgreSQL server.

The same small CDM (five patients, four ICU stays) is written to both; every count the
conversion reports is checked exactly against it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from bedside.cli import main
from bedside.schemas.concepts import load_concepts
from bedside.schemas.tables import EVENTS, STAYS
from bedside.training.data import omop
from bedside.training.data.canonical import DataError

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ICU, WARD = 32037, 9201
MALE, FEMALE = 8507, 8532
HEART_RATE, TEMPERATURE, WEIGHT, HEIGHT = 3027018, 3020891, 3025315, 3036277
FIO2, SODIUM, GLUCOSE, RESP_RATE = 3020716, 3019550, 3004501, 3024171
#: Concept ids that exist only in the fixture's concept table: a LOINC code the dictionary
#: knows (pulse rate, 8889-8) and a SNOMED code that happens to read like a LOINC one.
LOINC_PULSE, SNOMED_LOOKALIKE, UNKNOWN = 2_000_000_001, 2_000_000_002, 9_999_999
FAHRENHEIT, PERCENT, MMOL_L, INCH, POUND = 9289, 8554, 8753, 9327, 8739


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def d(text: str) -> date:
    return date.fromisoformat(text)


def cdm_tables(metadata: sa.MetaData, *, value_column: bool = True) -> dict[str, sa.Table]:
    """The CDM v5.4 columns the loader reads (plus a few it ignores), as in the OHDSI DDL."""
    big, integer = sa.BigInteger, sa.Integer
    col = sa.Column
    measurement_value = [col("value_as_number", sa.Numeric)] if value_column else []
    return {
        "person": sa.Table(
            "person", metadata,
            col("person_id", big, primary_key=True),
            col("gender_concept_id", integer, nullable=False),
            col("year_of_birth", integer, nullable=False),
            col("month_of_birth", integer),
            col("day_of_birth", integer),
            col("birth_datetime", sa.DateTime),
            col("race_concept_id", integer),
        ),
        "visit_occurrence": sa.Table(
            "visit_occurrence", metadata,
            col("visit_occurrence_id", big, primary_key=True),
            col("person_id", big, nullable=False),
            col("visit_concept_id", integer, nullable=False, default=9201),
            col("visit_start_date", sa.Date, nullable=False),
            col("visit_start_datetime", sa.DateTime),
            col("visit_end_date", sa.Date, nullable=False),
            col("visit_end_datetime", sa.DateTime),
        ),
        "visit_detail": sa.Table(
            "visit_detail", metadata,
            col("visit_detail_id", big, primary_key=True),
            col("person_id", big, nullable=False),
            col("visit_detail_concept_id", integer, nullable=False),
            col("visit_detail_start_date", sa.Date, nullable=False),
            col("visit_detail_start_datetime", sa.DateTime),
            col("visit_detail_end_date", sa.Date, nullable=False),
            col("visit_detail_end_datetime", sa.DateTime),
            col("visit_occurrence_id", big, nullable=False),
        ),
        "measurement": sa.Table(
            "measurement", metadata,
            col("measurement_id", big, primary_key=True),
            col("person_id", big, nullable=False),
            col("measurement_concept_id", integer, nullable=False),
            col("measurement_date", sa.Date, nullable=False),
            col("measurement_datetime", sa.DateTime),
            *measurement_value,
            col("unit_concept_id", integer),
            col("visit_detail_id", big),
        ),
        "death": sa.Table(
            "death", metadata,
            col("person_id", big, primary_key=True),
            col("death_date", sa.Date, nullable=False),
            col("death_datetime", sa.DateTime),
        ),
        "concept": sa.Table(
            "concept", metadata,
            col("concept_id", integer, primary_key=True),
            col("concept_name", sa.String(255)),
            col("vocabulary_id", sa.String(20), nullable=False),
            col("concept_code", sa.String(50), nullable=False),
        ),
    }  # fmt: skip


PERSONS = [
    # person_id, gender, year, month, day, birth_datetime
    (1, MALE, 1950, 3, 10, None),
    (2, FEMALE, 1960, None, None, t("1960-06-01T00:00")),
    (3, 0, 1980, None, None, None),
    (4, MALE, 1970, 1, 1, None),  # never in an ICU
    (5, FEMALE, 1990, 12, None, None),
]
VISITS = [
    # visit_occurrence_id, person, start date, start time, end date, end time
    (10, 1, d("2020-01-01"), t("2020-01-01T07:00"), d("2020-01-10"), t("2020-01-10T12:00")),
    (20, 2, d("2020-02-01"), None, d("2020-02-05"), None),
    (30, 3, d("2020-03-01"), None, d("2020-03-04"), None),
    (40, 4, d("2020-04-01"), None, d("2020-04-03"), None),
    (50, 5, d("2020-05-01"), None, d("2020-05-10"), None),
]


def when(text: str) -> tuple[date, datetime | None]:
    """(date, datetime) columns of a CDM row: ISO date and time, or a date alone."""
    return (d(text[:10]), t(text) if "T" in text else None)


def detail(
    detail_id: int, person: int, concept: int, start: str, end: str, visit: int
) -> tuple[object, ...]:
    return (detail_id, person, concept, *when(start), *when(end), visit)


DETAILS = [
    detail(100, 1, ICU, "2020-01-02T08:00", "2020-01-04T20:00", 10),
    detail(101, 1, WARD, "2020-01-04T20:00", "2020-01-10T12:00", 10),
    detail(200, 2, ICU, "2020-02-01T10:00", "2020-02-03T10:00", 20),
    detail(300, 3, ICU, "2020-03-01", "2020-03-02", 30),  # dates only
    detail(400, 4, WARD, "2020-04-01", "2020-04-03", 40),
    detail(500, 5, ICU, "2020-05-02T06:00", "2020-05-05T06:00", 50),
]
DEATHS = [
    (1, d("2020-01-08"), None),  # in hospital, after leaving the ICU, date only
    (2, d("2020-03-15"), t("2020-03-15T10:00")),  # after hospital discharge
    (3, d("2020-03-04"), t("2020-03-04T23:00")),  # on the hospital discharge day
]
MEASUREMENTS = [
    # id, person, concept, date, time, value, unit, visit_detail_id
    (1, 1, HEART_RATE, d("2020-01-02"), t("2020-01-02T09:00"), 80, 8541, 100),
    (2, 1, HEART_RATE, d("2020-01-03"), t("2020-01-03T10:00"), 90, 8541, None),
    (3, 1, TEMPERATURE, d("2020-01-02"), t("2020-01-02T12:00"), 98.6, FAHRENHEIT, None),
    (4, 1, WEIGHT, d("2020-01-02"), t("2020-01-02T09:30"), 70, 9529, 100),
    (5, 1, WEIGHT, d("2020-01-03"), t("2020-01-03T09:30"), 72, 9529, 100),
    (6, 1, UNKNOWN, d("2020-01-02"), t("2020-01-02T13:00"), 1.0, None, 100),
    (7, 1, HEART_RATE, d("2020-01-04"), t("2020-01-04T22:00"), 85, None, None),  # on the ward
    (8, 1, HEART_RATE, d("2020-01-04"), t("2020-01-04T21:00"), 86, None, 101),  # ward detail
    (9, 1, HEART_RATE, d("2020-01-03"), t("2020-01-03T11:00"), None, None, 100),  # no value
    (10, 2, LOINC_PULSE, d("2020-02-01"), t("2020-02-01T11:00"), 75, None, None),
    (11, 2, FIO2, d("2020-02-01"), t("2020-02-01T12:00"), 40, PERCENT, None),
    (12, 2, SODIUM, d("2020-02-02"), t("2020-02-02T08:00"), 140, MMOL_L, None),
    (13, 2, GLUCOSE, d("2020-02-02"), t("2020-02-02T08:00"), 5.5, MMOL_L, None),
    (14, 2, RESP_RATE, d("2020-02-02"), None, 18, None, None),  # date only
    (15, 2, SNOMED_LOOKALIKE, d("2020-02-02"), t("2020-02-02T09:00"), 60, None, None),
    (16, 3, HEART_RATE, d("2020-03-02"), t("2020-03-02T15:00"), 110, None, None),  # last day
    (17, 4, HEART_RATE, d("2020-04-01"), t("2020-04-01T10:00"), 70, None, None),  # no ICU stay
    (18, 5, HEIGHT, d("2020-05-02"), t("2020-05-02T07:00"), 70, INCH, 500),
    (19, 5, WEIGHT, d("2020-05-02"), t("2020-05-02T07:00"), 150, POUND, 500),
]
CONCEPTS = [
    (LOINC_PULSE, "Heart rate.beat-to-beat by Pulse oximetry", "LOINC", "8889-8"),
    (SNOMED_LOOKALIKE, "Not a LOINC concept", "SNOMED", "8867-4"),
]


UNREAD = ("race_concept_id", "visit_concept_id")


def write_cdm(engine: sa.Engine, schema: str | None) -> None:
    tables = cdm_tables(sa.MetaData(schema=schema))
    tables["person"].metadata.create_all(engine)
    rows = {
        "person": PERSONS,
        "visit_occurrence": VISITS,
        "visit_detail": DETAILS,
        "death": DEATHS,
        "measurement": MEASUREMENTS,
        "concept": CONCEPTS,
    }
    with engine.begin() as connection:
        for name, values in rows.items():
            table = tables[name]
            # The fixture leaves out the columns the loader does not read.
            names = [c.name for c in table.columns if c.name not in UNREAD]
            connection.execute(
                table.insert(), [dict(zip(names, row, strict=True)) for row in values]
            )


@pytest.fixture(scope="module")
def sqlite_cdm(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("omop") / "cdm.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    write_cdm(engine, None)
    engine.dispose()
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def postgres_cdm() -> Iterator[tuple[str, str]]:
    engine = sa.create_engine(POSTGRES_URL)
    try:
        engine.connect().close()
    except sa.exc.OperationalError as error:
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {str(error.orig).strip()}")
    schema = f"omop_test_{uuid.uuid4().hex[:12]}"
    with engine.begin() as connection:
        connection.execute(sa.schema.CreateSchema(schema))
    try:
        write_cdm(engine, schema)
        yield POSTGRES_URL, schema
    finally:
        with engine.begin() as connection:
            connection.execute(sa.schema.DropSchema(schema, cascade=True))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def cdm(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """(URL, schema) of the fixture CDM on each backend."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_cdm"), None
    url, schema = request.getfixturevalue("postgres_cdm")
    return url, schema


def years(birth: datetime, admit: datetime) -> float:
    return (admit - birth).total_seconds() / 86400 / 365.2425


def utc(text: str) -> datetime:
    return t(text).replace(tzinfo=UTC)


def schema_args(schema: str | None) -> list[str]:
    return [] if schema is None else ["--schema", schema]


def test_cli_converts_the_cdm(cdm: tuple[str, str | None], tmp_path: Path) -> None:
    url, schema = cdm
    out = tmp_path / "out"
    assert main(["data", "convert", "omop", url, "--out", str(out), *schema_args(schema)]) == 0
    stays = pl.read_parquet(out / "stays.parquet")
    events = pl.read_parquet(out / "events.parquet")
    assert stays.schema == STAYS and events.schema == EVENTS

    assert stays["stay_id"].to_list() == [100, 200, 300, 500]
    assert stays["subject_id"].to_list() == [1, 2, 3, 5]
    assert stays["source"].unique().to_list() == ["omop"]
    assert stays["sex"].to_list() == ["M", "F", None, "F"]
    assert stays["icu_type"].null_count() == 4
    assert stays["admit_time"].to_list() == [
        utc("2020-01-02T08:00"), utc("2020-02-01T10:00"), utc("2020-03-01T00:00"),
        utc("2020-05-02T06:00"),
    ]  # fmt: skip
    # A date-only stay ends with its last day, a date-only visit too.
    assert stays["discharge_time"].to_list() == [
        utc("2020-01-04T20:00"), utc("2020-02-03T10:00"), utc("2020-03-03T00:00"),
        utc("2020-05-05T06:00"),
    ]  # fmt: skip
    assert stays["hospital_discharge_time"].to_list() == [
        utc("2020-01-10T12:00"), utc("2020-02-06T00:00"), utc("2020-03-05T00:00"),
        utc("2020-05-11T00:00"),
    ]  # fmt: skip
    assert stays["los_days"].to_list() == pytest.approx([2.5, 2.0, 2.0, 3.0])
    assert stays["hospital_los_days"].to_list() == pytest.approx(
        [8 + 4 / 24, 4 + 14 / 24, 4.0, 8 + 18 / 24]
    )
    assert stays["age"].to_list() == pytest.approx([
        years(t("1950-03-10T00:00"), t("2020-01-02T08:00")),
        years(t("1960-06-01T00:00"), t("2020-02-01T10:00")),
        years(t("1980-07-01T00:00"), t("2020-03-01T00:00")),  # year only: 1 July
        years(t("1990-12-15T00:00"), t("2020-05-02T06:00")),  # no day: the 15th
    ])  # fmt: skip
    # Patient 1 died in hospital after the ICU, 3 on the hospital discharge day, 2 after it.
    assert stays["in_hospital_death"].to_list() == [1, 0, 1, 0]
    assert stays["death_time"].to_list() == [
        utc("2020-01-08T00:00"), utc("2020-03-15T10:00"), utc("2020-03-04T23:00"), None,
    ]  # fmt: skip
    assert stays["survival_days"].to_list() == pytest.approx([5 + 16 / 24, 43.0, 3 + 23 / 24, None])
    assert stays["weight_kg"].to_list() == pytest.approx([70.0, None, None, 150 * 0.45359237])
    assert stays["height_cm"].to_list() == pytest.approx([None, None, None, 70 * 2.54])

    got = {
        (stay, time.strftime("%m-%d %H:%M"), code): value
        for stay, time, code, value in events.select(
            "stay_id", "time", "code", "numeric_value"
        ).iter_rows()
    }
    assert got == pytest.approx({
        (100, "01-02 09:00", "heart_rate"): 80.0,
        (100, "01-03 10:00", "heart_rate"): 90.0,  # no visit detail: by time
        (100, "01-02 12:00", "temperature"): 37.0,  # °F
        (100, "01-02 09:30", "weight"): 70.0,
        (100, "01-03 09:30", "weight"): 72.0,
        (200, "02-01 11:00", "pulse_rate"): 75.0,  # through the concept table's LOINC code
        (200, "02-01 12:00", "fio2"): 0.4,  # percent
        (200, "02-02 08:00", "sodium"): 140.0,  # mmol/L is canonical
        (200, "02-02 08:00", "glucose"): 5.5 * 18.016,  # mmol/L
        (200, "02-02 00:00", "respiratory_rate"): 18.0,  # date only
        (300, "03-02 15:00", "heart_rate"): 110.0,  # on the last day of a date-only stay
        (500, "05-02 07:00", "height"): 70 * 2.54,
        (500, "05-02 07:00", "weight"): 150 * 0.45359237,
    })  # fmt: skip
    assert events.filter(pl.col("stay_id") == 100)["subject_id"].unique().to_list() == [1]
    assert set(events["source_code"]) >= {"omop//3027018", f"omop//{LOINC_PULSE}"}

    report = json.loads((out / "conversion_report.json").read_text())
    assert report["rows_read"] == 17  # ICU patients' valued rows within their ICU days
    assert report["events"] == 13
    assert report["stays"] == 4
    assert report["in_hospital_deaths"] == 2
    assert report["unmapped_codes"] == {f"omop//{UNKNOWN}": 1, f"omop//{SNOMED_LOOKALIKE}": 1}
    assert report["not_converted"] == {
        "measurement of an ICU patient in no ICU stay (ward time, another visit detail)": 2
    }
    assert report["bad_rows"] == 0


def test_keep_unmapped_and_small_batches(cdm: tuple[str, str | None], tmp_path: Path) -> None:
    url, schema = cdm
    report = omop.convert(url, tmp_path, schema=schema, keep_unmapped=True, batch_rows=2)
    events = pl.read_parquet(tmp_path / "events.parquet")
    assert report.rows_read == 17 and report.events == events.height == 15
    kept = events.filter(pl.col("code").str.starts_with("omop//"))
    assert sorted(kept["code"]) == sorted([f"omop//{UNKNOWN}", f"omop//{SNOMED_LOOKALIKE}"])
    assert sorted(kept["numeric_value"]) == [1.0, 60.0]  # as recorded
    # Streaming in batches of two rows still finds each stay's first weight.
    stays = pl.read_parquet(tmp_path / "stays.parquet")
    assert stays["weight_kg"].to_list() == pytest.approx([70.0, None, None, 150 * 0.45359237])


def test_no_icu_stays_is_an_error(sqlite_cdm: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no ICU stays.*\[581379\]"):
        omop.convert(sqlite_cdm, tmp_path, icu_concepts=[581379])
    # The ward visit details are ICU stays when the caller says so.
    report = omop.convert(sqlite_cdm, tmp_path, icu_concepts=[ICU, WARD])
    assert report.stays == 6


def test_bad_stay_stops_or_is_skipped(sqlite_cdm: str, tmp_path: Path) -> None:
    path = tmp_path / "cdm.db"
    path.write_bytes(Path(sqlite_cdm.removeprefix("sqlite:///")).read_bytes())
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    table = cdm_tables(sa.MetaData())["visit_detail"]
    with engine.begin() as connection:
        connection.execute(
            table.insert(),
            dict(
                zip(
                    [c.name for c in table.columns],
                    detail(600, 4, ICU, "2020-04-02T10:00", "2020-04-01T10:00", 40),
                    strict=True,
                )
            ),
        )
    engine.dispose()
    with pytest.raises(DataError, match="visit_detail_id 600: ends before it starts"):
        omop.convert(url, tmp_path / "a")
    report = omop.convert(url, tmp_path / "b", on_bad_row="skip")
    assert (report.bad_rows, report.stays, report.events) == (1, 4, 13)


def test_missing_table_and_column_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    engine = sa.create_engine(f"sqlite:///{empty}")
    cdm_tables(sa.MetaData())["person"].create(engine)
    with pytest.raises(
        DataError, match=r"missing table.*visit_occurrence, visit_detail, measurement, death"
    ):
        omop.convert(f"sqlite:///{empty}", tmp_path / "out")
    engine.dispose()

    no_value = tmp_path / "no_value.db"
    engine = sa.create_engine(f"sqlite:///{no_value}")
    cdm_tables(sa.MetaData(), value_column=False)["person"].metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(
        DataError, match=r"table measurement lacks required column.* value_as_number"
    ):
        omop.convert(f"sqlite:///{no_value}", tmp_path / "out")


def test_missing_sqlite_file_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nowhere.db"
    assert main(["data", "convert", "omop", f"sqlite:///{path}", "--out", str(tmp_path / "o")]) == 2
    assert "no SQLite database file" in capsys.readouterr().err
    assert not path.exists()


def test_unreachable_server_error_hides_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql+psycopg://eds:s3cr3t-pw@127.0.0.1:1/eds"
    assert main(["data", "convert", "omop", url, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "eds:***@127.0.0.1:1/eds" in err
    assert "s3cr3t-pw" not in err


def test_unknown_schema_is_named(postgres_cdm: tuple[str, str], tmp_path: Path) -> None:
    url, _ = postgres_cdm
    with pytest.raises(DataError, match="schema 'no_such_schema' does not exist"):
        omop.convert(url, tmp_path, schema="no_such_schema")


def test_omop_unit_conversions_come_from_the_dictionary() -> None:
    conversions = load_concepts().omop_unit_conversions()
    assert conversions["temperature", FAHRENHEIT].apply(98.6) == pytest.approx(37.0)
    assert conversions["glucose", MMOL_L].apply(5.5) == pytest.approx(99.088)
    assert conversions["weight", POUND].apply(100) == pytest.approx(45.359237)
