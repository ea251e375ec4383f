"""PhysioNet/Computing in Cardiology Challenge 2012 -> canonical tables.

One text file per stay (``Time,Parameter,Value``; ``HH:MM`` since ICU admission). The
leading rows at ``00:00`` are descriptors (RecordID, Age, Gender, Height, ICUType,
Weight; -1 = missing) and become the stays table; every other row is a measurement,
mapped to its concept through the concept dictionary. Outcomes come from the
challenge's ``Outcomes-*.txt`` (RecordID, SAPS-I, SOFA, Length_of_stay, Survival,
In-hospital_death; Survival = days from ICU admission to death, -1 if not known).

Values are kept as recorded (no range filtering; the anomaly detectors judge them).
Every stay is anchored at ``TIME_ANCHOR`` since the source has no absolute times.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import polars as pl

from bedside.schemas.concepts import load_concepts
from bedside.schemas.tables import TIME, TIME_ANCHOR
from bedside.training.data.canonical import (
    BadRowPolicy,
    ConversionReport,
    DataError,
    EventsWriter,
    write_report,
    write_stays,
)

SYSTEM = "physionet2012"
DESCRIPTORS = ("RecordID", "Age", "Gender", "Height", "ICUType", "Weight")
ICU_TYPES = {1: "coronary", 2: "cardiac_surgery", 3: "medical", 4: "surgical"}
#: Stay files read and converted together.
CHUNK_FILES = 1000
OUTCOME_COLUMNS = ("RecordID", "SAPS-I", "SOFA", "Length_of_stay", "Survival", "In-hospital_death")
#: Latest time of a measurement, in minutes since admission: the challenge's stays last
#: 48 h, and a time years away is a typo (or would overflow the event times).
MAX_MINUTES = 366 * 24 * 60


def _minutes(text: str) -> int:
    hours, sep, minutes = text.partition(":")
    if not sep or not hours.isdigit() or len(minutes) != 2 or not minutes.isdigit():
        raise ValueError(f"time {text!r} is not HH:MM")
    if int(minutes) >= 60:
        raise ValueError(f"time {text!r} has minutes >= 60")
    if int(hours) * 60 + int(minutes) > MAX_MINUTES:
        raise ValueError(f"time {text!r} is more than a year after admission")
    return int(hours) * 60 + int(minutes)


def _lines(path: Path) -> list[str]:
    """The file's lines as a CSV reader sees them (``str.splitlines`` would also break
    at form feeds and unicode separators inside a value, and miscount the lines)."""
    text = path.read_text("utf-8")
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")] if text else []


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"value {text!r} is not a finite number")
    return value


ROW_SCHEMA = {
    "path": pl.String,
    "line": pl.Int64,
    "minutes": pl.Int64,
    "parameter": pl.String,
    "value": pl.Float64,
}


def read_stay(path: Path, report: ConversionReport, policy: BadRowPolicy = "error") -> pl.DataFrame:
    """Read one stay file line by line, with errors that name the line (the careful path)."""
    try:
        lines = _lines(path)
    except UnicodeDecodeError as error:
        raise DataError(path, None, f"not UTF-8 text ({error.reason})") from None
    _check_header(path, lines[0] if lines else "")
    rows: dict[str, list[object]] = {name: [] for name in ROW_SCHEMA}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        report.rows_read += 1
        fields = line.split(",")
        if len(fields) != 3:
            report.bad_row(DataError(path, number, f"expected 3 fields, got {len(fields)}"), policy)
            continue
        stamp, parameter, raw = (f.strip() for f in fields)
        try:
            minutes = _minutes(stamp)
            value = _number(raw)
            if not parameter:
                raise ValueError("empty parameter name")
        except ValueError as error:
            report.bad_row(DataError(path, number, str(error)), policy)
            continue
        for name, item in zip(
            ROW_SCHEMA, (str(path), number, minutes, parameter, value), strict=True
        ):
            rows[name].append(item)
    return pl.DataFrame(rows, schema=ROW_SCHEMA)


def _check_header(path: Path, header: str) -> None:
    if header.strip() != "Time,Parameter,Value":
        raise DataError(path, 1, f"header must be 'Time,Parameter,Value', got {header[:60]!r}")


def read_stays(files: list[Path], report: ConversionReport, policy: BadRowPolicy) -> pl.DataFrame:
    """Read many stay files: all at once with polars, then line by line for any file with a
    bad row, so that errors name their line and good files stay fast."""
    for path in files:
        with path.open("rb") as handle:
            _check_header(path, handle.readline().decode("utf-8", "replace"))
    try:
        raw = pl.scan_csv(
            files,
            schema={"Time": pl.String, "Parameter": pl.String, "Value": pl.String},
            include_file_paths="path",
        ).collect()
    except pl.exceptions.PolarsError:
        return pl.concat([read_stay(path, report, policy) for path in files])
    clock = pl.col("Time").str.strip_chars().str.extract_groups(r"^(\d+):([0-5]\d)$")
    minutes = clock.struct[0].cast(pl.Int64, strict=False) * 60 + clock.struct[1].cast(pl.Int64)
    rows = raw.select(
        "path",
        line=pl.int_range(2, pl.len() + 2).over("path"),
        minutes=pl.when(minutes <= MAX_MINUTES).then(minutes),
        parameter=pl.col("Parameter").str.strip_chars(),
        value=pl.col("Value").str.strip_chars().cast(pl.Float64, strict=False),
    )
    bad = (
        pl.col("minutes").is_null()
        | pl.col("value").is_null()
        | ~pl.col("value").is_finite()
        | pl.col("parameter").fill_null("").eq("")
    )
    bad_files = set(rows.filter(bad)["path"].unique().to_list())
    good = rows.filter(~pl.col("path").is_in(bad_files))
    report.rows_read += good.height
    careful = [read_stay(Path(p), report, policy) for p in sorted(bad_files)]
    return pl.concat([good, *careful])


def read_outcomes(path: Path) -> pl.DataFrame:
    """Read an ``Outcomes-*.txt`` file, with errors that name the line."""
    records: dict[str, list[float | None]] = {name: [] for name in OUTCOME_COLUMNS}
    lines = _lines(path)
    if not lines or tuple(c.strip() for c in lines[0].split(",")) != OUTCOME_COLUMNS:
        raise DataError(path, 1, f"header must be {','.join(OUTCOME_COLUMNS)}")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != len(OUTCOME_COLUMNS):
            raise DataError(path, number, f"expected {len(OUTCOME_COLUMNS)} fields")
        try:
            values = [_number(f) for f in fields]
        except ValueError as error:
            raise DataError(path, number, str(error)) from None
        if values[5] not in (0.0, 1.0):
            raise DataError(path, number, f"In-hospital_death must be 0 or 1, got {fields[5]}")
        for name, value in zip(OUTCOME_COLUMNS, values, strict=True):
            records[name].append(value)
    frame = pl.DataFrame(records, schema={name: pl.Float64 for name in OUTCOME_COLUMNS})
    duplicated = frame.filter(pl.col("RecordID").is_duplicated())["RecordID"]
    if duplicated.len():
        raise DataError(path, None, f"RecordID {int(duplicated[0])} appears more than once")
    return frame


def convert(
    set_dir: Path,
    out_dir: Path,
    outcomes: Path | None = None,
    *,
    on_bad_row: BadRowPolicy = "error",
    keep_unmapped: bool = False,
) -> ConversionReport:
    """Convert a challenge set directory (and its outcomes file) into ``out_dir``."""
    started = time.perf_counter()
    report = ConversionReport(source=f"{SYSTEM} {set_dir}", unmapped_kept=keep_unmapped)
    files = sorted(set_dir.glob("*.txt"))
    if not files:
        raise DataError(set_dir, None, "no stay files (*.txt) in this directory")
    print(f"reading {len(files)} stay files from {set_dir}", flush=True)
    # Descriptors are the first row of their name at 00:00, interleaved with measurements.
    descriptor = (
        (pl.col("minutes") == 0)
        & pl.col("parameter").is_in(DESCRIPTORS)
        & (pl.int_range(pl.len()).over("path", "parameter") == 0)
    )
    parts = []
    with EventsWriter(out_dir, report) as writer:
        # A thousand stays at a time, so memory does not grow with the size of the set.
        for first in range(0, len(files), CHUNK_FILES):
            chunk = files[first : first + CHUNK_FILES]
            rows = read_stays(chunk, report, on_bad_row).sort("path", "line")
            rows = rows.with_columns(descriptor=descriptor)
            parts.append(_descriptors(chunk, rows.filter("descriptor")))
            writer.write(
                _events(rows.filter(~pl.col("descriptor")), parts[-1], report, keep_unmapped)
            )
            print(f"  {first + len(chunk)}/{len(files)} stays", flush=True)
    stays = pl.concat(parts)
    write_stays(out_dir, _stays(stays, outcomes, report), report)
    report.seconds = time.perf_counter() - started
    write_report(out_dir, report)
    return report


def _descriptors(files: list[Path], rows: pl.DataFrame) -> pl.DataFrame:
    """One row per stay file: path, stay_id and the static covariates (-1 -> null)."""
    wide = rows.with_columns(value=pl.when(pl.col("value") != -1).then(pl.col("value"))).pivot(
        on="parameter", index="path", values="value"
    )
    wide = wide.with_columns(
        pl.lit(None, pl.Float64).alias(d) for d in DESCRIPTORS if d not in wide.columns
    )
    stays = pl.DataFrame({"path": [str(p) for p in files], "stem": [p.stem for p in files]})
    stays = stays.join(wide, on="path", how="left")
    unnamed = stays.filter(pl.col("RecordID").is_null() & ~pl.col("stem").str.contains(r"^\d+$"))
    if unnamed.height:
        raise DataError(
            unnamed["path"][0], None, "no RecordID descriptor and the file name is not one"
        )
    record_id = pl.coalesce(pl.col("RecordID"), pl.col("stem").cast(pl.Float64, strict=False))
    odd = stays.filter((record_id != record_id.floor()) | (record_id.abs() >= 2.0**53))
    if odd.height:
        bad = odd.select(record_id).item(0, 0)
        raise DataError(odd["path"][0], None, f"RecordID {bad:g} is not a whole number below 2^53")
    icu_types = pl.DataFrame(
        {"ICUType": list(map(float, ICU_TYPES)), "icu_type": list(ICU_TYPES.values())}
    )
    return stays.join(icu_types, on="ICUType", how="left").select(
        "path",
        stay_id=record_id.cast(pl.Int64),
        age=pl.col("Age"),
        sex=pl.col("Gender").replace_strict(
            {0.0: "F", 1.0: "M"}, default=None, return_dtype=pl.String
        ),
        height_cm=pl.col("Height"),
        weight_kg=pl.col("Weight"),
        icu_type=pl.col("icu_type"),
    )


def _events(
    rows: pl.DataFrame, stays: pl.DataFrame, report: ConversionReport, keep_unmapped: bool
) -> pl.DataFrame:
    table = load_concepts().source_table(SYSTEM)
    codes = pl.DataFrame({"parameter": list(table), "code": [c for c, _ in table.values()]})
    frame = (
        rows.join(stays.select("path", "stay_id"), on="path", how="left")
        .join(codes, on="parameter", how="left")
        .with_columns(source_code=pl.lit(f"{SYSTEM}//") + pl.col("parameter"))
    )
    unmapped = frame.filter(pl.col("code").is_null())
    report.unmapped.update(dict(unmapped.group_by("source_code").len().iter_rows()))
    if keep_unmapped:
        frame = frame.with_columns(pl.col("code").fill_null(pl.col("source_code")))
    else:
        frame = frame.filter(pl.col("code").is_not_null())
    # PhysioNet units are the canonical ones: no conversion applies to this source.
    return frame.select(
        subject_id=pl.col("stay_id"),
        stay_id=pl.col("stay_id"),
        time=pl.lit(TIME_ANCHOR) + pl.duration(minutes=pl.col("minutes")),
        code=pl.col("code"),
        numeric_value=pl.col("value"),
        source_code=pl.col("source_code"),
    ).sort("stay_id", "time", maintain_order=True)


def _stays(
    stays: pl.DataFrame, outcomes_path: Path | None, report: ConversionReport
) -> pl.DataFrame:
    duplicated = stays.filter(pl.col("stay_id").is_duplicated())
    if duplicated.height:
        raise DataError(
            duplicated["path"][1],
            None,
            f"RecordID {duplicated['stay_id'][0]} is also in {duplicated['path'][0]}",
        )
    if outcomes_path is None:
        report.warn("no outcomes file given: in_hospital_death and survival_days are null")
        outcomes = pl.DataFrame(
            schema={
                "stay_id": pl.Int64,
                "los_days": pl.Float64,
                "survival": pl.Float64,
                "death": pl.Float64,
            }
        )
    else:
        outcomes = read_outcomes(outcomes_path).select(
            stay_id=pl.col("RecordID").cast(pl.Int64),
            los_days=pl.when(pl.col("Length_of_stay") >= 0).then(pl.col("Length_of_stay")),
            survival=pl.col("Survival"),
            death=pl.col("In-hospital_death"),
        )
        without = stays.join(outcomes, on="stay_id", how="anti")["stay_id"]
        if without.len():
            raise DataError(
                outcomes_path,
                None,
                f"{without.len()} stays have no outcome row, e.g. RecordID {without[0]}",
            )
        extra = outcomes.join(stays, on="stay_id", how="anti")["stay_id"]
        if extra.len():
            report.warn(
                f"{outcomes_path}: {extra.len()} outcome rows have no stay file "
                f"(e.g. RecordID {extra[0]}); they are not converted"
            )
    survival = pl.when(pl.col("survival") >= 0).then(pl.col("survival"))
    return stays.join(outcomes, on="stay_id", how="left").select(
        "stay_id",
        subject_id=pl.col("stay_id"),
        source=pl.lit(SYSTEM),
        admit_time=pl.lit(TIME_ANCHOR),
        # The challenge's Length_of_stay runs from ICU admission to the end of the hospital
        # stay; when the patient left the ICU is not given.
        discharge_time=pl.lit(None, TIME),
        hospital_discharge_time=pl.lit(TIME_ANCHOR) + pl.duration(days=pl.col("los_days")),
        age=pl.col("age"),
        sex=pl.col("sex"),
        height_cm=pl.col("height_cm"),
        weight_kg=pl.col("weight_kg"),
        icu_type=pl.col("icu_type"),
        in_hospital_death=pl.col("death").cast(pl.Int8),
        death_time=pl.lit(TIME_ANCHOR) + pl.duration(days=survival),
        survival_days=survival,
        los_days=pl.lit(None, pl.Float64),
        hospital_los_days=pl.col("los_days"),
    )
