"""OMOP CDM database (v5.3 / v5.4: a hospital's health-data warehouse) -> canonical tables.

Reads any SQLAlchemy URL (PostgreSQL in deployment, ``sqlite:///cdm.db`` embedded) with
SQLAlchemy Core and bound parameters only; results are streamed and events written in
batches, so memory stays bounded on a hospital-size warehouse (it holds the ICU stays,
never the measurements).

Stays
    ``visit_detail`` rows whose ``visit_detail_concept_id`` is in ``ICU_VISIT_CONCEPTS``
    (32037 "Intensive Care"; pass ``icu_concepts`` when the ETL codes ICU units with
    other concepts). ``stay_id`` is the visit_detail_id, ``subject_id`` the person_id.
    There is deliberately no fallback to ``visit_occurrence``: a hospital admission is
    not an ICU stay, and taking ward time for ICU time would silently change the cohort.
    A database without ICU visit details is an error that says so.
Covariates
    sex from ``person.gender_concept_id`` (8507 M, 8532 F, anything else null); age at ICU
    admission from ``birth_datetime``, else from year, month and day of birth (a missing
    month counts as 1 July, a missing day as the 15th); height and weight are the first
    height and weight measurements of the stay; ``icu_type`` is null (the CDM has none).
Outcomes
    A person's death is the earliest ``death`` row. ``in_hospital_death`` is 1 when the
    death date lies within the parent ``visit_occurrence`` (start date to end date, the
    end day included; the ICU stay's own dates when it has no parent visit).
    ``death_time`` is death_datetime, else midnight of death_date; ``survival_days`` runs
    from ICU admission to it (null when no death is recorded; 0, not negative, when a
    death known only by its date falls on the admission day).
Events
    ``measurement`` rows with a ``value_as_number`` (qualitative results are not read;
    text stored there, as SQLite allows, is a bad row unless it reads as a number),
    timed by measurement_datetime, else midnight of measurement_date. A row belongs to
    the ICU stay named by its ``visit_detail_id``; a row without one belongs to the
    person's ICU stay whose window contains its time (the latest admitted, should stays
    overlap). Only rows dated within the span of the person's ICU stays are read; rows
    there that fall in no ICU stay (ward time, another visit detail) are counted in a
    warning, not converted. Concepts come from ``measurement_concept_id`` through the
    dictionary's ``omop`` ids, else through its LOINC codes when the database has a
    ``concept`` table (``vocabulary_id = 'LOINC'``). Unmapped ids are counted (and kept
    with ``keep_unmapped``) as ``omop//<concept_id>``.
Times
    A stay, visit or measurement known only by its dates starts at midnight and ends at
    the end of its last day, so a value charted on the discharge day stays in the stay.
    Timestamps stored without a time zone are read in ``timezone`` (UTC by default).
Units
    Values are taken to be in the concept's canonical unit, except for the unit concepts
    listed under ``omop_units`` in the concept dictionary (°F, pounds, inches, percent
    FiO2, SI lab units),
    which are converted. A value in any other unit, or with no unit, is kept as recorded;
    the concept's plausible range and the anomaly detectors flag what that gets wrong.

>>> describe("postgresql+psycopg://eds:secret@db.example/eds", "cdm")
'postgresql+psycopg://eds:***@db.example/eds (schema cdm)'
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bedside.schemas.concepts import load_concepts
from bedside.schemas.tables import TIME
from bedside.training.data.canonical import (
    BadRowPolicy,
    ConversionReport,
    DataError,
    EventsWriter,
    write_report,
    write_stays,
)

SYSTEM = "omop"

#: ``visit_detail_concept_id`` values that make a visit detail an ICU stay: 32037
#: "Intensive Care" (Visit vocabulary, CDM v5.3 and v5.4).
ICU_VISIT_CONCEPTS: Final = (32037,)

#: ``person.gender_concept_id`` -> canonical sex.
SEX: Final = {8507: "M", 8532: "F"}

#: Rows fetched from the database per batch (and per events write).
BATCH_ROWS: Final = 100_000


#: Tables the loader reads, with the columns it cannot do without.
REQUIRED_COLUMNS: Final = {
    "person": ("person_id", "gender_concept_id", "year_of_birth"),
    "visit_occurrence": ("visit_occurrence_id", "visit_start_date", "visit_end_date"),
    "visit_detail": (
        "visit_detail_id",
        "person_id",
        "visit_detail_concept_id",
        "visit_detail_start_date",
        "visit_detail_end_date",
        "visit_occurrence_id",
    ),
    "measurement": ("person_id", "measurement_concept_id", "measurement_date", "value_as_number"),
    "death": ("person_id", "death_date"),
}
CONCEPT_COLUMNS: Final = ("concept_id", "concept_code", "vocabulary_id")

ColumnKind = Literal["int", "float", "date", "time"]
_END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)


def describe(url: str, schema: str | None = None) -> str:
    """The database as messages name it: the URL without its password, and the schema."""
    try:
        text = sa.make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        text = re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", url)
    return text if schema is None else f"{text} (schema {schema})"


def convert(
    url: str,
    out_dir: Path,
    *,
    on_bad_row: BadRowPolicy = "error",
    keep_unmapped: bool = False,
    schema: str | None = None,
    vocabulary_schema: str | None = None,
    icu_concepts: Sequence[int] = ICU_VISIT_CONCEPTS,
    timezone: str = "UTC",
    batch_rows: int = BATCH_ROWS,
) -> ConversionReport:
    """Convert the ICU stays of an OMOP CDM database into ``out_dir``.

    ``schema`` holds the CDM tables, ``vocabulary_schema`` the ``concept`` table (default:
    the same schema).
    """
    if not icu_concepts:
        raise ValueError("icu_concepts must name at least one visit_detail_concept_id")
    started = time.perf_counter()
    where = describe(url, schema)
    report = ConversionReport(source=f"{SYSTEM} {where}", unmapped_kept=keep_unmapped)
    engine = _engine(url, where)
    try:
        with _connect(engine, url, where) as connection:
            cdm = _reflect(connection, schema, vocabulary_schema or schema, where, report)
            reader = _Reader(connection, where, timezone, batch_rows)
            print(f"reading ICU stays from {where}", flush=True)
            stays = _read_stays(reader, cdm, list(icu_concepts), report, on_bad_row)
            codes = _code_table(reader, cdm)
            with EventsWriter(out_dir, report) as writer:
                firsts = _convert_events(
                    reader,
                    cdm,
                    stays,
                    codes,
                    list(icu_concepts),
                    writer,
                    report,
                    keep_unmapped=keep_unmapped,
                    policy=on_bad_row,
                )
    except SQLAlchemyError as error:
        raise DataError(where, None, f"database error: {_reason(error, url)}") from None
    finally:
        engine.dispose()
    write_stays(out_dir, _with_anthropometrics(stays, firsts), report)
    report.seconds = time.perf_counter() - started
    write_report(out_dir, report)
    return report


# --- connection and schema ---------------------------------------------------------------


def _reason(error: BaseException, url: str) -> str:
    """The first line of a driver's message, with the URL's password masked."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines() or [type(original).__name__]
    text = lines[0]
    try:
        password = sa.make_url(url).password
    except ArgumentError:
        password = None
    return text.replace(str(password), "***") if password else text


def _engine(url: str, where: str) -> Engine:
    try:
        parsed = sa.make_url(url)
        database = parsed.database or ""
        if (
            parsed.get_backend_name() == "sqlite"
            and database not in ("", ":memory:")
            and not database.startswith("file:")
            and not Path(database).is_file()
        ):
            # SQLite would create an empty database instead of saying it is not there.
            raise DataError(where, None, f"no SQLite database file {database}")
        return sa.create_engine(url)
    except (ArgumentError, ImportError) as error:
        raise DataError(
            where, None, f"cannot use this database URL: {_reason(error, url)}"
        ) from None


def _connect(engine: Engine, url: str, where: str) -> Connection:
    try:
        return engine.connect()
    except SQLAlchemyError as error:
        raise DataError(where, None, f"cannot connect: {_reason(error, url)}") from None


class _CdmTable:
    """A reflected CDM table whose columns are found whatever their case."""

    def __init__(self, table: sa.Table) -> None:
        self.table = table
        self._columns = {column.name.lower(): column for column in table.columns}

    def has(self, name: str) -> bool:
        return name in self._columns

    def c(self, name: str) -> sa.ColumnElement[Any]:
        return self._columns[name]

    def optional(self, name: str) -> sa.ColumnElement[Any]:
        """The column, or NULL for columns a CDM version or an ETL leaves out."""
        return self._columns[name] if name in self._columns else sa.null()


def _reflect(
    connection: Connection,
    schema: str | None,
    vocabulary_schema: str | None,
    where: str,
    report: ConversionReport,
) -> dict[str, _CdmTable]:
    inspector = sa.inspect(connection)
    for name in {schema, vocabulary_schema} - {None}:
        if name not in inspector.get_schema_names():
            raise DataError(where, None, f"schema {name!r} does not exist in this database")

    def names(in_schema: str | None) -> dict[str, str]:
        found = [*inspector.get_table_names(in_schema), *inspector.get_view_names(in_schema)]
        return {name.lower(): name for name in found}

    present = names(schema)
    missing = [name for name in REQUIRED_COLUMNS if name not in present]
    if missing:
        raise DataError(where, None, f"not an OMOP CDM: missing table(s) {', '.join(missing)}")
    metadata = sa.MetaData()
    cdm: dict[str, _CdmTable] = {}
    for name, required in REQUIRED_COLUMNS.items():
        table = _CdmTable(
            sa.Table(present[name], metadata, schema=schema, autoload_with=connection)
        )
        lacking = [column for column in required if not table.has(column)]
        if lacking:
            raise DataError(
                where, None, f"table {name} lacks required column(s) {', '.join(lacking)}"
            )
        cdm[name] = table
    vocabulary = present if vocabulary_schema == schema else names(vocabulary_schema)
    if "concept" not in vocabulary:
        report.warn(
            "no concept table: measurements are mapped by the dictionary's OMOP concept ids "
            "only, not through LOINC codes"
        )
        return cdm
    concept = _CdmTable(
        sa.Table(
            vocabulary["concept"], metadata, schema=vocabulary_schema, autoload_with=connection
        )
    )
    lacking = [column for column in CONCEPT_COLUMNS if not concept.has(column)]
    if lacking:
        report.warn(f"concept table lacks {', '.join(lacking)}: LOINC codes are not used")
    else:
        cdm["concept"] = concept
    return cdm


# --- reading rows ------------------------------------------------------------------------


Columns = Mapping[str, tuple[sa.ColumnElement[Any], ColumnKind]]
Query = sa.Select[Any]


def _select(columns: Columns) -> Query:
    """SELECT the columns, each labelled with its name (the order ``_Reader`` reads them in)."""
    return sa.select(*(column.label(name) for name, (column, _) in columns.items()))


@dataclass
class _Reader:
    """Streams a query as polars batches with typed columns and UTC times."""

    connection: Connection
    where: str
    timezone: str
    batch_rows: int

    def batches(self, statement: Query, columns: Columns, table: str) -> Iterator[pl.DataFrame]:
        result = self.connection.execution_options(
            stream_results=True, yield_per=self.batch_rows
        ).execute(statement)
        for rows in result.partitions():
            yield self.frame(rows, columns, table)

    def collect(self, statement: Query, columns: Columns, table: str) -> pl.DataFrame:
        frames = list(self.batches(statement, columns, table))
        return pl.concat(frames) if frames else self.frame([], columns, table)

    def frame(self, rows: Sequence[Sequence[object]], columns: Columns, table: str) -> pl.DataFrame:
        values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
        return pl.DataFrame(
            [
                self._series(name, kind, list(column), table)
                for (name, (_, kind)), column in zip(columns.items(), values, strict=True)
            ]
        )

    def _series(self, name: str, kind: ColumnKind, values: list[object], table: str) -> pl.Series:
        if kind == "int":
            return pl.Series(name, values, dtype=pl.Int64)
        if kind == "float":
            try:  # floats, ints and Decimals (PostgreSQL's numeric)
                return pl.Series(name, values, dtype=pl.Float64)
            except TypeError:  # text that SQLite keeps in a numeric column: "12,5", "abc"
                return pl.Series(name, [_number(value) for value in values], dtype=pl.Float64)
        raw = pl.Series(name, values, strict=False)
        if raw.dtype in (pl.Null, pl.Date):
            parsed = raw.cast(pl.Datetime("us"))
        elif isinstance(raw.dtype, pl.Datetime):
            parsed = raw
        elif raw.dtype == pl.String:
            # SQLite keeps dates as text; accept ISO dates and times, with 'T' or a space.
            parsed = raw.str.replace("T", " ", literal=True).str.to_datetime(
                time_unit="us", strict=False
            )
        else:
            raise DataError(
                self.where, None, f"table {table}: {name} holds {raw.dtype} values, not dates"
            )
        unreadable = raw.is_not_null() & parsed.is_null()
        if unreadable.any():
            example = raw.filter(unreadable)[0]
            raise DataError(
                self.where, None, f"table {table}: {name} value {example!r} is not a date or time"
            )
        if kind == "date":
            return parsed.dt.date()
        return _to_utc(parsed, self.timezone)


def _number(value: object) -> float | None:
    """A stored value as a number; NaN (a bad row) for text that is not one, which SQL's
    CAST would have read as 0 or as its leading digits ("12,5" -> 12) in SQLite."""
    if value is None or isinstance(value, int | float):
        return value
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _to_utc(times: pl.Series, timezone: str) -> pl.Series:
    dtype = times.dtype
    assert isinstance(dtype, pl.Datetime)
    if dtype.time_zone is None:
        times = times.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return times.dt.convert_time_zone("UTC").dt.cast_time_unit("us")


def _raw(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Dates and times as the driver returns them (parsed in polars, for SQLite's text)."""
    return sa.type_coerce(column, sa.types.NullType())


def _midnight(day: pl.Expr, timezone: str) -> pl.Expr:
    return (
        day.cast(pl.Datetime("us"))
        .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
    )


def _days(since: pl.Expr, until: pl.Expr) -> pl.Expr:
    return (until - since).dt.total_microseconds() / 86_400e6


# --- stays ---------------------------------------------------------------------------------


def _icu_details(cdm: dict[str, _CdmTable], icu_concepts: list[int]) -> sa.ColumnElement[bool]:
    return cdm["visit_detail"].c("visit_detail_concept_id").in_(icu_concepts)


def _read_stays(
    reader: _Reader,
    cdm: dict[str, _CdmTable],
    icu_concepts: list[int],
    report: ConversionReport,
    policy: BadRowPolicy,
) -> pl.DataFrame:
    detail, visit, person, death = (
        cdm[name] for name in ("visit_detail", "visit_occurrence", "person", "death")
    )
    columns: Columns = {
        "stay_id": (detail.c("visit_detail_id"), "int"),
        "subject_id": (detail.c("person_id"), "int"),
        "start_date": (_raw(detail.c("visit_detail_start_date")), "date"),
        "start_datetime": (_raw(detail.optional("visit_detail_start_datetime")), "time"),
        "end_date": (_raw(detail.c("visit_detail_end_date")), "date"),
        "end_datetime": (_raw(detail.optional("visit_detail_end_datetime")), "time"),
        "visit_start_date": (_raw(visit.c("visit_start_date")), "date"),
        "visit_end_date": (_raw(visit.c("visit_end_date")), "date"),
        "visit_end_datetime": (_raw(visit.optional("visit_end_datetime")), "time"),
        "gender_concept_id": (person.c("gender_concept_id"), "int"),
        "year_of_birth": (person.c("year_of_birth"), "int"),
        "month_of_birth": (person.optional("month_of_birth"), "int"),
        "day_of_birth": (person.optional("day_of_birth"), "int"),
        "birth_datetime": (_raw(person.optional("birth_datetime")), "time"),
    }
    statement = (
        _select(columns)
        .select_from(
            detail.table.outerjoin(
                visit.table, visit.c("visit_occurrence_id") == detail.c("visit_occurrence_id")
            ).outerjoin(person.table, person.c("person_id") == detail.c("person_id"))
        )
        .where(_icu_details(cdm, icu_concepts))
    )
    raw = reader.collect(statement, columns, "visit_detail")
    if raw.height == 0:
        raise DataError(
            reader.where,
            None,
            f"no ICU stays: no visit_detail row has visit_detail_concept_id in {icu_concepts} "
            "(pass icu_concepts if this database codes ICU units otherwise)",
        )
    death_columns: Columns = {
        "subject_id": (death.c("person_id"), "int"),
        "death_date": (_raw(death.c("death_date")), "date"),
        "death_datetime": (_raw(death.optional("death_datetime")), "time"),
    }
    icu_people = sa.select(detail.c("person_id")).where(_icu_details(cdm, icu_concepts))
    deaths = reader.collect(
        _select(death_columns).where(death.c("person_id").in_(icu_people)), death_columns, "death"
    )
    stays = _stay_times(raw, reader.timezone)
    stays = _drop_bad_stays(stays, reader.where, report, policy)
    missing_person = stays.filter(pl.col("year_of_birth").is_null())
    if missing_person.height:
        report.warn(
            f"{missing_person.height} ICU stays have no person row or year of birth "
            f"(e.g. visit_detail_id {missing_person['stay_id'][0]}): age is null"
        )
    return _outcomes(stays, deaths, reader.timezone, report)


def _stay_times(raw: pl.DataFrame, timezone: str) -> pl.DataFrame:
    next_day = pl.duration(days=1)
    birthday = pl.date(
        pl.col("year_of_birth"),
        pl.col("month_of_birth").fill_null(7).clip(1, 12),
        pl.when(pl.col("month_of_birth").is_null())
        .then(1)
        .otherwise(pl.col("day_of_birth").fill_null(15).clip(1, 28)),
    )
    return raw.with_columns(
        admit_time=pl.coalesce("start_datetime", _midnight(pl.col("start_date"), timezone)),
        discharge_time=pl.coalesce(
            "end_datetime", _midnight(pl.col("end_date") + next_day, timezone)
        ),
        hospital_discharge_time=pl.coalesce(
            "visit_end_datetime", _midnight(pl.col("visit_end_date") + next_day, timezone)
        ),
        # The parent visit's days bound an in-hospital death; a stay without one, its own.
        hospital_first_day=pl.when(pl.col("visit_start_date").is_not_null())
        .then(pl.col("visit_start_date"))
        .otherwise(pl.col("start_date")),
        hospital_last_day=pl.when(pl.col("visit_start_date").is_not_null())
        .then(pl.col("visit_end_date"))
        .otherwise(pl.col("end_date")),
        birth_time=pl.coalesce("birth_datetime", _midnight(birthday, timezone)),
    )


def _drop_bad_stays(
    stays: pl.DataFrame, where: str, report: ConversionReport, policy: BadRowPolicy
) -> pl.DataFrame:
    bad = stays.select(
        "stay_id",
        reason=pl.when(pl.col("admit_time").is_null())
        .then(pl.lit("no start date"))
        .when(pl.col("discharge_time") < pl.col("admit_time"))
        .then(pl.lit("ends before it starts")),
    ).filter(pl.col("reason").is_not_null())
    for stay_id, reason in bad.iter_rows():
        report.bad_row(
            DataError(f"{where} visit_detail", None, f"visit_detail_id {stay_id}: {reason}"), policy
        )
    return stays.filter(~pl.col("stay_id").is_in(bad["stay_id"].implode()))


def _outcomes(
    stays: pl.DataFrame, deaths: pl.DataFrame, timezone: str, report: ConversionReport
) -> pl.DataFrame:
    deaths = (
        deaths.with_columns(
            death_time=pl.coalesce("death_datetime", _midnight(pl.col("death_date"), timezone)),
        )
        .with_columns(
            death_day=pl.coalesce(
                "death_date", pl.col("death_time").dt.convert_time_zone(timezone).dt.date()
            )
        )
        .sort("death_time")
        .group_by("subject_id", maintain_order=True)
        .first()
        .select("subject_id", "death_time", "death_day")
    )
    stays = stays.join(deaths, on="subject_id", how="left")
    early = stays.filter(pl.col("death_day") < pl.col("start_date"))
    if early.height:
        report.warn(
            f"{early.height} ICU stays start after their patient's recorded death "
            f"(e.g. visit_detail_id {early['stay_id'][0]}); survival_days is 0 for them"
        )
    died_in_hospital = (
        pl.col("death_day").is_not_null()
        & (pl.col("death_day") >= pl.col("hospital_first_day"))
        & (
            pl.col("hospital_last_day").is_null()
            | (pl.col("death_day") <= pl.col("hospital_last_day"))
        )
    )
    survival = _days(pl.col("admit_time"), pl.col("death_time")).clip(lower_bound=0.0)
    return stays.select(
        "stay_id",
        "subject_id",
        source=pl.lit(SYSTEM),
        admit_time=pl.col("admit_time"),
        discharge_time=pl.col("discharge_time"),
        hospital_discharge_time=pl.col("hospital_discharge_time"),
        age=_days(pl.col("birth_time"), pl.col("admit_time")) / 365.2425,
        sex=pl.col("gender_concept_id").replace_strict(SEX, default=None, return_dtype=pl.String),
        icu_type=pl.lit(None, pl.String),
        in_hospital_death=died_in_hospital.cast(pl.Int8),
        death_time=pl.col("death_time"),
        survival_days=survival,
        los_days=_days(pl.col("admit_time"), pl.col("discharge_time")),
        hospital_los_days=_days(pl.col("admit_time"), pl.col("hospital_discharge_time")),
    ).sort("stay_id")


def _with_anthropometrics(stays: pl.DataFrame, firsts: pl.DataFrame) -> pl.DataFrame:
    """Add each stay's first recorded height and weight."""

    def first(code: str, column: str) -> pl.DataFrame:
        return firsts.filter(pl.col("code") == code).select(
            "stay_id", pl.col("numeric_value").alias(column)
        )

    return stays.join(first("height", "height_cm"), on="stay_id", how="left").join(
        first("weight", "weight_kg"), on="stay_id", how="left"
    )


# --- events --------------------------------------------------------------------------------


def _code_table(reader: _Reader, cdm: dict[str, _CdmTable]) -> pl.DataFrame:
    """OMOP concept id -> canonical code and conversion: dictionary ids, then LOINC."""
    concepts = load_concepts()
    rows = {
        int(concept_id): (name, conversion)
        for concept_id, (name, conversion) in concepts.source_table("omop").items()
    }
    if "concept" in cdm:
        loinc = concepts.source_table("loinc")
        concept = cdm["concept"]
        statement = sa.select(concept.c("concept_id"), concept.c("concept_code")).where(
            concept.c("vocabulary_id") == "LOINC", concept.c("concept_code").in_(sorted(loinc))
        )
        found: Sequence[tuple[Any, Any]] = reader.connection.execute(statement).all()
        for concept_id, code in found:
            rows.setdefault(int(concept_id), loinc[str(code)])
    return pl.DataFrame(
        {
            "concept_id": list(rows),
            "code": [name for name, _ in rows.values()],
            "scale": [conversion.scale for _, conversion in rows.values()],
            "offset": [conversion.offset for _, conversion in rows.values()],
        },
        schema={
            "concept_id": pl.Int64,
            "code": pl.String,
            "scale": pl.Float64,
            "offset": pl.Float64,
        },
    )


_UNIT_CONVERSIONS = load_concepts().omop_unit_conversions()
UNITS: Final = pl.DataFrame(
    {
        "code": [code for code, _ in _UNIT_CONVERSIONS],
        "unit_concept_id": [unit for _, unit in _UNIT_CONVERSIONS],
        "unit_scale": [conversion.scale for conversion in _UNIT_CONVERSIONS.values()],
        "unit_offset": [conversion.offset for conversion in _UNIT_CONVERSIONS.values()],
    },
    schema={
        "code": pl.String,
        "unit_concept_id": pl.Int64,
        "unit_scale": pl.Float64,
        "unit_offset": pl.Float64,
    },
)


def _convert_events(
    reader: _Reader,
    cdm: dict[str, _CdmTable],
    stays: pl.DataFrame,
    codes: pl.DataFrame,
    icu_concepts: list[int],
    writer: EventsWriter,
    report: ConversionReport,
    *,
    keep_unmapped: bool,
    policy: BadRowPolicy,
) -> pl.DataFrame:
    """Stream the measurements of ICU patients into the writer; return first height/weight."""
    measurement, detail = cdm["measurement"], cdm["visit_detail"]
    day = measurement.c("measurement_date")
    # Each ICU patient's span of ICU days narrows the read to the rows that can belong to a
    # stay; a stay without an end date leaves the span open.
    end_day = detail.c("visit_detail_end_date")
    span = (
        sa.select(
            detail.c("person_id").label("person_id"),
            sa.func.min(detail.c("visit_detail_start_date")).label("first_day"),
            sa.func.max(end_day).label("last_day"),
            sa.func.sum(sa.case((end_day.is_(None), 1), else_=0)).label("open_stays"),
        )
        .where(_icu_details(cdm, icu_concepts))
        .group_by(detail.c("person_id"))
        .subquery("icu_span")
    )
    columns: Columns = {
        "measurement_id": (measurement.optional("measurement_id"), "int"),
        "person_id": (measurement.c("person_id"), "int"),
        "visit_detail_id": (measurement.optional("visit_detail_id"), "int"),
        "concept_id": (measurement.c("measurement_concept_id"), "int"),
        "unit_concept_id": (measurement.optional("unit_concept_id"), "int"),
        "measurement_date": (_raw(day), "date"),
        "measurement_datetime": (_raw(measurement.optional("measurement_datetime")), "time"),
        "value": (_raw(measurement.c("value_as_number")), "float"),
    }
    statement = (
        _select(columns)
        .select_from(measurement.table.join(span, span.c.person_id == measurement.c("person_id")))
        .where(
            measurement.c("value_as_number").is_not(None),
            day >= span.c.first_day,
            sa.or_(span.c.open_stays > 0, day <= span.c.last_day),
        )
    )
    windows = stays.select(
        "stay_id",
        person_id=pl.col("subject_id"),
        admit_time=pl.col("admit_time"),
        window_end=pl.col("discharge_time").fill_null(_END_OF_TIME),
    )
    outside = 0
    firsts = pl.DataFrame(
        schema={"stay_id": pl.Int64, "code": pl.String, "time": TIME, "numeric_value": pl.Float64}
    )
    for batch in reader.batches(statement, columns, "measurement"):
        report.rows_read += batch.height
        batch = _drop_bad_measurements(batch, reader, report, policy)
        assigned = _assign_stays(batch, windows)
        outside += batch.height - assigned.height
        events = _map_codes(assigned, codes, report, keep_unmapped)
        writer.write(events)
        firsts = (
            pl.concat(
                [
                    firsts,
                    events.filter(pl.col("code").is_in(["height", "weight"])).select(
                        firsts.columns
                    ),
                ]
            )
            .sort("time")
            .group_by("stay_id", "code", maintain_order=True)
            .first()
        )
        print(f"  {report.rows_read} measurement rows read, {report.events} events", flush=True)
    report.not_convert(
        "measurement of an ICU patient in no ICU stay (ward time, another visit detail)", outside
    )
    return firsts


def _drop_bad_measurements(
    batch: pl.DataFrame, reader: _Reader, report: ConversionReport, policy: BadRowPolicy
) -> pl.DataFrame:
    batch = batch.with_columns(
        time=pl.coalesce(
            "measurement_datetime", _midnight(pl.col("measurement_date"), reader.timezone)
        )
    )
    bad = batch.select(
        "measurement_id",
        reason=pl.when(pl.col("time").is_null())
        .then(pl.lit("no measurement date"))
        .when(~pl.col("value").is_finite())
        .then(pl.lit("value_as_number is not a finite number")),
    ).filter(pl.col("reason").is_not_null())
    for measurement_id, reason in bad.iter_rows():
        report.bad_row(
            DataError(
                f"{reader.where} measurement", None, f"measurement_id {measurement_id}: {reason}"
            ),
            policy,
        )
    if bad.height == 0:
        return batch
    return batch.filter(pl.col("time").is_not_null() & pl.col("value").is_finite())


def _assign_stays(batch: pl.DataFrame, windows: pl.DataFrame) -> pl.DataFrame:
    """Each measurement with its ICU stay: the one it names, else the one its time is in."""
    named = (
        batch.filter(pl.col("visit_detail_id").is_not_null())
        .with_columns(stay_id=pl.col("visit_detail_id"))
        .join(windows.select("stay_id", "person_id"), on=["stay_id", "person_id"], how="semi")
    )
    timed = (
        batch.filter(pl.col("visit_detail_id").is_null())
        .with_row_index("row")
        .join(windows, on="person_id", how="inner")
        .filter((pl.col("time") >= pl.col("admit_time")) & (pl.col("time") <= pl.col("window_end")))
        .sort("row", "admit_time", descending=[False, True])
        .unique("row", keep="first", maintain_order=True)
        .select(named.columns)
    )
    return pl.concat([named, timed])


def _map_codes(
    rows: pl.DataFrame, codes: pl.DataFrame, report: ConversionReport, keep_unmapped: bool
) -> pl.DataFrame:
    rows = rows.join(codes, on="concept_id", how="left").with_columns(
        source_code=pl.lit(f"{SYSTEM}//") + pl.col("concept_id").cast(pl.String)
    )
    unmapped = rows.filter(pl.col("code").is_null())
    report.unmapped.update(Counter(dict(unmapped.group_by("source_code").len().iter_rows())))
    if keep_unmapped:
        rows = rows.with_columns(
            code=pl.col("code").fill_null(pl.col("source_code")),
            scale=pl.col("scale").fill_null(1.0),
            offset=pl.col("offset").fill_null(0.0),
        )
    else:
        rows = rows.filter(pl.col("code").is_not_null())
    rows = rows.join(UNITS, on=["code", "unit_concept_id"], how="left")
    value = (
        pl.when(pl.col("unit_scale").is_not_null())
        .then(pl.col("unit_scale") * pl.col("value") + pl.col("unit_offset"))
        .otherwise(pl.col("scale") * pl.col("value") + pl.col("offset"))
    )
    return rows.select(
        subject_id=pl.col("person_id"),
        stay_id=pl.col("stay_id"),
        time=pl.col("time"),
        code=pl.col("code"),
        numeric_value=value.round(10),
        source_code=pl.col("source_code"),
    ).sort("stay_id", "time", maintain_order=True)
