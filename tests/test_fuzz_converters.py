"""Fuzzing the converters: PhysioNet 2012 text, MIMIC-IV CSV, MEDS parquet, OMOP over SQLite.

Each loader gets small sources whose rows are a hypothesis mix of valid and malformed
values (bad numbers and times, non-finite values, missing and extra fields, odd
unicode, unknown codes). Whatever the input, a conversion either succeeds or raises
``DataError`` naming the file (and the line, where the source has lines); with
``on_bad_row="skip"`` it succeeds unless the source as a whole is unusable, and its
report accounts for every row read: converted, unmapped, not converted (with the
reason) or bad. Nothing is silently lost.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import example, given
from hypothesis import strategies as st

from bedside.schemas.concepts import load_concepts
from bedside.training.data import meds, mimic_iv, omop, physionet2012
from bedside.training.data.canonical import ConversionReport, DataError
from tests.test_fuzz_messages import fuzz
from tests.test_mimic_iv import CHART_HEADER, write_tiny_mimic
from tests.test_omop import HEART_RATE, write_cdm

#: Text that breaks parsers: bad numbers, times and separators, odd unicode.
ODD_TEXT = [
    "",
    " ",
    "-1",
    "0",
    "1e400",
    "-1e400",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "1_000",
    "0x1A",
    "12,5",
    "1.2.3",
    "١٢",
    "9" * 30,
    "-" + "9" * 30,
    "abc",
    "\x00",
    "é",
    "\u2028",
    "\x85",
    "\x1c",
    "\x0b",
    "\ufeff",
    "00:60",
    "-1:00",
    "1:2",
    "99999999999999999999:00",
    "2150-13-45 25:61:61",
    "2150-01-01",
    "2150-01-01T10:00:00",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59",
]
#: Characters a field may hold without changing how many lines or fields a row has.
FIELD_CHARS = st.characters(blacklist_characters='\n\r,"', blacklist_categories=["Cs"])
odd = st.sampled_from(ODD_TEXT) | st.text(FIELD_CHARS, max_size=8)


@contextlib.contextmanager
def converting() -> Iterator[None]:
    """Around a conversion: DataError is the only way to fail (it names a file)."""
    try:
        yield
    except DataError as error:
        assert error.path and error.reason
        raise


def total(counter: dict[str, int]) -> int:
    return sum(counter.values())


# --- PhysioNet 2012 --------------------------------------------------------------------

PARAMETERS = [*sorted(load_concepts().source_table("physionet2012"))[:8], "Troponin", "Odd"]
DESCRIPTOR_LINES = "00:00,Age,70\n00:00,Gender,1\n00:00,Height,-1\n00:00,ICUType,3\n"


@st.composite
def physionet_line(draw: st.DrawFn) -> str:
    hours, minutes = draw(st.integers(0, 48)), draw(st.integers(0, 59))
    stamp = f"{hours:02d}:{minutes:02d}"
    parameter = draw(st.sampled_from(PARAMETERS))
    value = repr(draw(st.floats(-1e6, 1e6, allow_nan=False)))
    fields = [stamp, parameter, value]
    if draw(st.booleans()):  # one field spoiled
        fields[draw(st.integers(0, 2))] = draw(odd)
    if draw(st.integers(0, 9)) == 0:  # a field too many or too few
        fields = fields[:2] if draw(st.booleans()) else [*fields, draw(odd)]
    return ",".join(fields)


@st.composite
def physionet_set(draw: st.DrawFn, folder: Path) -> dict[Path, list[str]]:
    """Up to three stay files; their data lines by file."""
    folder.mkdir(parents=True)
    files = {}
    for record in range(1001, 1001 + draw(st.integers(1, 3))):
        lines = draw(st.lists(physionet_line(), max_size=12))
        descriptors = f"00:00,RecordID,{record}\n{DESCRIPTOR_LINES}"
        if draw(st.integers(0, 5)) == 0:
            descriptors = f"00:00,RecordID,{draw(odd)}\n"
        path = folder / f"{record}.txt"
        body = "\n".join(lines)
        path.write_text(f"Time,Parameter,Value\n{descriptors}{body}\n", encoding="utf-8")
        files[path] = path.read_text(encoding="utf-8").split("\n")[1:]
    return files


def descriptor_rows(path: Path) -> int:
    """Rows of a stay file that describe the stay (the first of each at 00:00)."""
    rows = physionet2012.read_stay(path, ConversionReport("oracle"), "skip")
    zero = rows.filter(
        (pl.col("minutes") == 0) & pl.col("parameter").is_in(physionet2012.DESCRIPTORS)
    )
    return zero["parameter"].n_unique()


@fuzz(40)
@given(data=st.data())
def test_physionet_accounts_for_every_row_or_names_the_bad_line(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root = tmp_path_factory.mktemp("physionet")
    files = data.draw(physionet_set(root / "set"))
    try:
        with converting():
            report = physionet2012.convert(root / "set", root / "out", on_bad_row="skip")
    except DataError as error:  # a file no row of which can be used, named
        assert Path(error.path) in files and error.reason
        return
    lines = sum(1 for body in files.values() for line in body if line.strip())
    descriptors = sum(descriptor_rows(path) for path in files)
    assert report.rows_read == lines
    assert lines == report.events + total(report.unmapped) + report.bad_rows + descriptors

    try:
        physionet2012.convert(root / "set", root / "strict", on_bad_row="error")
    except DataError as error:
        assert report.bad_rows or error.line is None
        if error.line is not None:  # the line named is bad on its own, too
            alone = root / "alone" / Path(error.path).name
            alone.parent.mkdir(exist_ok=True)
            text = Path(error.path).read_text(encoding="utf-8").split("\n")[error.line - 1]
            alone.write_text(f"Time,Parameter,Value\n{text}\n", encoding="utf-8")
            checked = ConversionReport("oracle")
            physionet2012.read_stay(alone, checked, "skip")
            assert checked.bad_rows == 1, (error, text)
    else:
        assert report.bad_rows == 0


@pytest.mark.parametrize("text", ODD_TEXT)
def test_physionet_odd_values_in_each_column(tmp_path: Path, text: str) -> None:
    for column in range(3):
        fields = ["01:00", "HR", "80"]
        fields[column] = text
        folder = tmp_path / f"set{column}"
        folder.mkdir()
        (folder / "1001.txt").write_text(
            f"Time,Parameter,Value\n00:00,RecordID,1001\n{','.join(fields)}\n", encoding="utf-8"
        )
        with converting():
            report = physionet2012.convert(folder, tmp_path / f"out{column}", on_bad_row="skip")
        assert report.rows_read == 2
        assert report.events + total(report.unmapped) + report.bad_rows == 1


def test_physionet_non_utf8_and_odd_record_ids_are_data_errors(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "1001.txt").write_bytes(b"Time,Parameter,Value\n00:00,RecordID,1001\n01:00,HR,\xff\n")
    with pytest.raises(DataError, match=r"1001\.txt.*UTF-8"):
        physionet2012.convert(folder, tmp_path / "out", on_bad_row="skip")
    for record_id in ("1e30", "-5", "1.5", "99999999999999999999"):
        (folder / "1001.txt").write_text(
            f"Time,Parameter,Value\n00:00,RecordID,{record_id}\n01:00,HR,80\n", encoding="utf-8"
        )
        with converting(), contextlib.suppress(DataError):
            physionet2012.convert(folder, tmp_path / "out", on_bad_row="skip")


# --- MIMIC-IV CSV --------------------------------------------------------------------

MIMIC_ITEMS = ["220045", "223761", "226531", "220048", "999999"]


@st.composite
def chart_row(draw: st.DrawFn) -> str:
    minutes = draw(st.integers(-600, 4000))
    moment = datetime(2150, 1, 1, 10) + timedelta(minutes=minutes)
    value = repr(draw(st.floats(-1e6, 1e6, allow_nan=False)))
    fields = [
        draw(st.sampled_from(["1", "2", "3"])),  # subject (3 has no stay)
        "11",
        draw(st.sampled_from(["101", "102", "201", "999", ""])),  # stay (999 unknown)
        "7",
        moment.strftime("%Y-%m-%d %H:%M:%S"),
        "",
        draw(st.sampled_from(MIMIC_ITEMS)),
        value,
        draw(st.sampled_from([value, "", value])),  # valuenum: text results have none
        "bpm",
        "0",
    ]
    for _ in range(draw(st.integers(0, 2))):
        fields[draw(st.sampled_from([0, 2, 4, 6, 8]))] = draw(odd)
    if draw(st.integers(0, 9)) == 0:
        fields = fields[:-1] if draw(st.booleans()) else [*fields, "extra"]
    return ",".join(fields)


#: Rows of the tiny release's other event tables (outputevents 2, labevents 3).
OTHER_EVENT_ROWS = 5


@fuzz(30)
@given(rows=st.lists(chart_row(), max_size=25), block_bytes=st.sampled_from([256, 1 << 20]))
@example(rows=["1,11,101,7,2150-01-01 11:00:00,,220045,1e400,1e400,bpm,0"], block_bytes=256)
def test_mimic_accounts_for_every_row_or_names_the_bad_line(
    tmp_path_factory: pytest.TempPathFactory, rows: list[str], block_bytes: int
) -> None:
    root = tmp_path_factory.mktemp("mimic")
    release = write_tiny_mimic(root / "mimic", rows)
    with converting():
        report = mimic_iv.convert(release, root / "out", on_bad_row="skip", block_bytes=block_bytes)
    accounted = (
        report.events + total(report.unmapped) + total(report.not_converted) + report.bad_rows
    )
    assert accounted == len(rows) + OTHER_EVENT_ROWS

    try:
        mimic_iv.convert(release, root / "strict", block_bytes=block_bytes)
    except DataError as error:
        assert report.bad_rows
        assert Path(error.path).name.startswith("chartevents")
        if error.line is not None:  # the line named is bad on its own, too
            text = (CHART_HEADER + "\n".join(rows)).split("\n")[error.line - 1]
            alone = write_tiny_mimic(root / "alone", [text])
            again = mimic_iv.convert(alone, root / "alone-out", on_bad_row="skip")
            assert again.bad_rows == 1, (error, text)
    else:
        assert report.bad_rows == 0


@fuzz(20)
@given(text=st.text(max_size=300))
def test_mimic_arbitrary_chartevents_text_is_converted_or_a_data_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    root = tmp_path_factory.mktemp("mimic-text")
    release = write_tiny_mimic(root / "mimic", [])
    with gzip.open(release / "icu" / "chartevents.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write(CHART_HEADER + text)
    for policy in ("skip", "error"):
        with converting(), contextlib.suppress(DataError):
            mimic_iv.convert(release, root / policy, on_bad_row=policy)  # type: ignore[arg-type]


# --- MEDS parquet -------------------------------------------------------------------

T0 = datetime(2150, 1, 1, 8)
STRUCTURE = [
    (1, T0 - timedelta(days=60 * 365), "MEDS_BIRTH", None),
    (1, T0, "GENDER//F", None),
    (1, T0, "HOSPITAL_ADMISSION//EW EMER.", None),
    (1, T0 + timedelta(hours=1), "ICU_ADMISSION//Medical Intensive Care Unit (MICU)", None),
    (1, T0 + timedelta(hours=49), "ICU_DISCHARGE//Medical Intensive Care Unit (MICU)", None),
    (1, T0 + timedelta(hours=72), "HOSPITAL_DISCHARGE//HOME", None),
    (2, T0, "ICU_ADMISSION//Neuro Stepdown//30000002", None),
    (2, T0 + timedelta(hours=24), "ICU_DISCHARGE//Neuro Stepdown", None),
]
MEDS_CODES = [
    "LAB//220045//bpm",
    "LAB//50912//mg/dL",
    "SUBJECT_FLUID_OUTPUT//226559//ml",
    "LAB//999999//x",
    "MEDICATION//aspirin",
    "ICU_ADMISSION//MICU",
    "GENDER//X",
    "LAB//",
    "LAB//220045",
    "",
    "é",
    None,
]
MEDS_VALUES = [None, 0.0, 80.5, -1.0, 1e308, -1e308, math.nan, math.inf, -math.inf]


@st.composite
def meds_row(draw: st.DrawFn) -> tuple[Any, ...]:
    return (
        draw(st.sampled_from([1, 2, 3, None])),
        draw(
            st.sampled_from([None, T0 - timedelta(days=1)])
            | st.integers(0, 60 * 80).map(lambda m: T0 + timedelta(minutes=m))
        ),
        draw(st.sampled_from(MEDS_CODES) | st.text(max_size=10)),
        draw(st.sampled_from(MEDS_VALUES) | st.floats(-1e3, 1e3)),
    )


def meds_frame(rows: list[tuple[Any, ...]], time_zone: str | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        [*STRUCTURE, *rows],
        schema={
            "subject_id": pl.Int64,
            "time": pl.Datetime("us", time_zone),
            "code": pl.String,
            "numeric_value": pl.Float64,
        },
        orient="row",
    )


def meds_oracle(frame: pl.DataFrame) -> dict[str, int]:
    """What the report must say of a MEDS table, from the rules in ``meds``'s docstring."""
    mapped_items = set(load_concepts().source_table("mimic_iv"))
    structural = re.compile(rf"^(?:{'|'.join(meds.STRUCTURAL)})(?://|$)")
    counts = {"unmapped": 0, "no_value": 0, "complete": 0, "bad": 0}
    for subject, moment, code, value in frame.iter_rows():
        counts["bad"] += (code is None) + (subject is None)
        if code is None:
            continue
        item = re.match(meds.MEASUREMENT, code)
        if item and item.group(1) in mapped_items:
            counts["bad"] += moment is None
            if value is None or not math.isfinite(value):
                counts["no_value"] += 1
            elif subject is not None and moment is not None:
                counts["complete"] += 1
        elif structural.match(code):
            counts["bad"] += moment is None and not code.startswith("GENDER")
        else:
            counts["unmapped"] += 1
    return counts


@fuzz(30)
@given(
    rows=st.lists(meds_row(), max_size=25),
    time_zone=st.sampled_from([None, "UTC", "Europe/Paris"]),
    batch_rows=st.sampled_from([3, 250_000]),
)
def test_meds_accounts_for_every_row(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[Any, ...]],
    time_zone: str | None,
    batch_rows: int,
) -> None:
    root = tmp_path_factory.mktemp("meds")
    frame = meds_frame(rows, time_zone)
    frame.write_parquet(root / "events.parquet")
    with converting():
        report = meds.convert(
            root / "events.parquet", root / "out", on_bad_row="skip", batch_rows=batch_rows
        )
    oracle = meds_oracle(frame)
    outside = report.not_converted.get("outside every ICU stay of the subject", 0)
    assert report.rows_read == frame.height
    assert total(report.unmapped) == oracle["unmapped"]
    assert report.not_converted.get("mapped code without a numeric value", 0) == oracle["no_value"]
    assert report.events + outside == oracle["complete"]
    assert report.bad_rows == oracle["bad"]
    events = pl.read_parquet(root / "out" / "events.parquet")
    assert events["numeric_value"].is_finite().all()


@pytest.mark.parametrize(
    "columns",
    [
        {"subject_id": ["1"], "time": [T0], "code": ["LAB//220045//bpm"], "numeric_value": [1.0]},
        {"subject_id": ["x"], "time": [T0], "code": ["LAB//220045//bpm"], "numeric_value": [1.0]},
        {"subject_id": [1], "time": ["2150-01-01"], "code": ["X"], "numeric_value": [1.0]},
        {"subject_id": [1], "time": [T0], "code": [1], "numeric_value": [1.0]},
        {"subject_id": [1], "time": [T0], "code": ["X"], "numeric_value": ["abc"]},
        {"subject_id": [1], "time": [T0], "code": ["X"], "value": [1.0]},
        {"subject_id": [1], "time": [T0], "code": ["X"]},
        {"subject_id": [1.5], "time": [T0], "code": ["X"], "numeric_value": [1.0]},
        {"subject_id": [2**62], "time": [T0], "code": ["X"], "numeric_value": [1.0]},
    ],
    ids=lambda c: "-".join(f"{k}:{type(v[0]).__name__}" for k, v in c.items()),
)
def test_meds_odd_column_types_are_data_errors_or_converted(
    tmp_path: Path, columns: dict[str, list[Any]]
) -> None:
    pl.DataFrame(columns).write_parquet(tmp_path / "odd.parquet")
    with converting(), contextlib.suppress(DataError):
        meds.convert(tmp_path / "odd.parquet", tmp_path / "out", on_bad_row="skip")


def test_meds_garbage_files_are_data_errors(tmp_path: Path) -> None:
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1" + b"\x00" * 100)
    with pytest.raises(DataError, match=r"garbage\.parquet"):
        meds.convert(tmp_path / "garbage.parquet", tmp_path / "out")
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.parquet"):
        meds.convert(tmp_path / "empty.parquet", tmp_path / "out")


# --- OMOP over SQLite ---------------------------------------------------------------

#: ``value_as_number`` as stored by a careless ETL (SQLite keeps whatever it is given).
OMOP_VALUES: list[Any] = [
    80.0,
    -1.0,
    0.0,
    1e308,
    math.inf,
    -math.inf,
    None,
    "95",
    "12.5",
    "12,5",
    "abc",
    "",
    b"\x00\xff",
]
OMOP_DATES: list[Any] = ["2020-02-02", "2020-02-01", "2021-01-01", "2020-13-45", "", "abc"]
OMOP_TIMES: list[Any] = [None, "2020-02-02 10:00:00", "2020-02-02T10:00:00", "25:61", "abc"]


@pytest.fixture(scope="module")
def cdm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("omop") / "cdm.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    write_cdm(engine, None)
    engine.dispose()
    return path


@st.composite
def measurement_row(draw: st.DrawFn, measurement_id: int) -> tuple[Any, ...]:
    return (
        measurement_id,
        draw(st.sampled_from([2, 2, 2, 1, 99])),  # person 2 is in ICU stay 200
        draw(st.sampled_from([HEART_RATE, HEART_RATE, 9_999_999, -1, 2**62])),
        draw(st.sampled_from(OMOP_DATES)),
        draw(st.sampled_from(OMOP_TIMES)),
        draw(st.sampled_from(OMOP_VALUES) | st.floats(-1e6, 1e6)),
        draw(st.sampled_from([None, 8541, -1])),
        draw(st.sampled_from([None, None, 200, 999])),
    )


def omop_copy(cdm_file: Path, folder: Path, rows: list[tuple[Any, ...]]) -> str:
    path = folder / "cdm.db"
    path.write_bytes(cdm_file.read_bytes())
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.executemany(
            "INSERT INTO measurement (measurement_id, person_id, measurement_concept_id, "
            "measurement_date, measurement_datetime, value_as_number, unit_concept_id, "
            "visit_detail_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return f"sqlite:///{path}"


def heart_rates(out: Path) -> list[float]:
    events = pl.read_parquet(out / "events.parquet")
    mine = events.filter((pl.col("stay_id") == 200) & (pl.col("code") == "heart_rate"))
    return mine["numeric_value"].to_list()


def number(value: Any) -> float | None:
    """What a stored value_as_number means, if it is a number at all."""
    if isinstance(value, float | int):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return None


@fuzz(30)
@given(data=st.data())
@example(data=None)
def test_omop_accounts_for_every_row_and_reads_only_numbers(
    cdm_file: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject | None
) -> None:
    folder = tmp_path_factory.mktemp("omop-fuzz")
    if data is None:  # a decimal comma, as a French EDS export writes it
        rows = [(1000, 2, HEART_RATE, "2020-02-02", None, "12,5", None, None)]
    else:
        size = data.draw(st.integers(0, 12))
        rows = [data.draw(measurement_row(1000 + n)) for n in range(size)]
    url = omop_copy(cdm_file, folder, rows)
    try:
        with converting():
            report = omop.convert(url, folder / "out", on_bad_row="skip")
    except DataError as error:
        assert "measurement" in error.reason
        return
    assert report.rows_read == (
        report.events + total(report.unmapped) + total(report.not_converted) + report.bad_rows
    )
    # Heart rates need no conversion; values are rounded to 10 decimals.
    inserted = [n for row in rows if row[2] == HEART_RATE and (n := number(row[5])) is not None]
    for value in heart_rates(folder / "out"):
        assert math.isfinite(value), rows
        assert any(math.isclose(value, n, rel_tol=1e-9, abs_tol=1e-9) for n in inserted), rows


@pytest.mark.parametrize("name", ['main"; DROP TABLE person; --', "x' OR '1'='1", "a]b", "é;"])
def test_omop_hostile_schema_names_are_refused_not_run(
    cdm_file: Path, tmp_path: Path, name: str
) -> None:
    url = omop_copy(cdm_file, tmp_path, [])
    with pytest.raises(DataError, match="does not exist"):
        omop.convert(url, tmp_path / "out", schema=name)
    with contextlib.closing(sqlite3.connect(tmp_path / "cdm.db")) as connection:
        assert connection.execute("SELECT count(*) FROM person").fetchone()[0] == 5
