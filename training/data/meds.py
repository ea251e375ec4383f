"""MEDS event tables (Medical Event Data Standard, parquet) -> canonical tables.

Reads one parquet file, or every ``*.parquet`` under a folder (under its ``data/``
subfolder when there is one, as in a MEDS release, so ``metadata/`` is left alone).
Columns: ``subject_id``, ``time``, ``code`` and ``numeric_value`` (standard MEDS) or
``value`` (as in the MIMIC-IV demo MEDS extract); other columns are ignored except an
optional ``stay_id`` / ``icustay_id``. The codes read are those of the MIMIC-IV MEDS
ETL:

stays
    ``ICU_ADMISSION//<care unit>`` and ``ICU_DISCHARGE//<care unit>``: each admission
    is paired with the subject's first ICU discharge at or after it; the care unit of
    the admission gives ``icu_type`` (as in :mod:`.mimic_iv`). ``stay_id``: the value of
    a ``stay_id`` / ``icustay_id`` column when the data has one, else the last part of
    the admission code when it is a number, else ``subject_id * 1000 + n`` for the
    subject's n-th ICU admission in time (deterministic, and apart from MIMIC's own
    30,000,000-39,999,999 stay ids).
    ``HOSPITAL_ADMISSION//...`` / ``HOSPITAL_DISCHARGE//<location>``: paired the same
    way; each ICU stay belongs to the hospital admission it overlaps most, whose
    discharge gives ``hospital_discharge_time``.
    ``MEDS_BIRTH``: ``age`` in completed years at ICU admission (for MIMIC-derived data,
    whose births are 1 January of ``anchor_year - anchor_age``, this is MIMIC's own age).
    ``GENDER//F`` / ``GENDER//M``: ``sex``. ``MEDS_DEATH``: ``death_time`` and
    ``survival_days`` (from ICU admission).
    ``in_hospital_death`` is 1 when the hospital discharge location is ``DIED``, or when
    a ``MEDS_DEATH`` falls between the hospital admission and
    :data:`DEATH_TOLERANCE` after its discharge: MIMIC-IV records some in-hospital
    deaths with the discharge time truncated to midnight of the day of death. A stay in
    no hospital admission is judged on its ICU window instead (with a warning).

events
    ``LAB//<itemid>//<unit>`` (MIMIC chart and lab events alike) and
    ``SUBJECT_FLUID_OUTPUT//<itemid>//<unit>`` (output events): the itemid maps to a
    concept through the concept dictionary (``mimic_iv`` codes, with their unit
    conversions). Each value goes to the ICU stay of its subject whose window contains
    it; values outside every stay are counted in a warning and not converted. Every
    other code (medications, diagnoses, unmapped items) is counted as unmapped, as
    ``meds//<code>``; with ``keep_unmapped`` those with a numeric value are kept so.
    Values stored as float32 (as in MEDS) are read back as the decimal they were
    written from (``98.7``, not ``98.69999694824219``); NaN and infinities are no value
    (pandas-written tables use NaN for a missing one).

Times without a zone are read as UTC (MIMIC's are shifted and have none).

Memory is bounded by the stays and :data:`BATCH_ROWS`, not by the size of the data:
one lazy pass (``scan_parquet``) collects the stay-defining rows, then each file is read
in slices of ``BATCH_ROWS`` rows (a slice of a parquet scan reads only the row groups it
needs), counted, converted and written through :class:`EventsWriter`.

Bad rows: rows without a subject or a code, and measurement, stay, birth and death rows
without a time (a ``GENDER`` row has none, as MEDS static data). With
``on_bad_row="error"`` they raise :class:`DataError` naming the file(s); with ``"skip"``
they are counted. Parquet has no lines, so errors give no line number.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Final

import polars as pl

from bedside.schemas.tables import TIME
from bedside.training.data.canonical import (
    BadRowPolicy,
    ConversionReport,
    DataError,
    EventsWriter,
    write_report,
    write_stays,
)
from bedside.training.data.mimic_iv import (
    assign_to_stays,
    canonical_value,
    concept_lookup,
    first_anthropometrics,
    icu_type,
    warn_overlapping,
    with_anthropometrics,
)

SYSTEM = "meds"

#: How long after the hospital discharge a recorded death still counts as in-hospital.
DEATH_TOLERANCE: Final = timedelta(hours=24)
#: Codes that define stays and static covariates rather than measurements.
STRUCTURAL: Final = (
    "ICU_ADMISSION",
    "ICU_DISCHARGE",
    "HOSPITAL_ADMISSION",
    "HOSPITAL_DISCHARGE",
    "MEDS_BIRTH",
    "MEDS_DEATH",
    "GENDER",
)
#: Codes ``<prefix>//<MIMIC itemid>//<unit>`` whose itemid the concept dictionary maps.
MEASUREMENT: Final = r"^(?:LAB|SUBJECT_FLUID_OUTPUT)//(\d+)(?://|$)"
STAY_ID_COLUMNS: Final = ("stay_id", "icustay_id")
#: Rows read at a time (a slice of one file).
BATCH_ROWS: Final = 250_000
#: Deterministic stay ids are ``subject_id * STAY_ID_SPACING + n``.
STAY_ID_SPACING: Final = 1000

_PREFIX = pl.col("code").str.extract(r"^([^/]*)")
_STRUCTURAL = pl.col("code").str.contains(rf"^(?:{'|'.join(STRUCTURAL)})(?://|$)")


def parquet_files(path: Path) -> list[Path]:
    """The parquet files to read: the file itself, or those under the folder."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(path, None, "no such file or folder")
    folder = path / "data" if (path / "data").is_dir() else path
    files = sorted(folder.rglob("*.parquet"))
    if not files:
        raise DataError(folder, None, "no parquet files (*.parquet) here")
    return files


def scan(file: Path) -> pl.LazyFrame:
    """One file's events as ``subject_id, time (UTC), code, numeric_value (Float64)``, and
    ``source_stay_id`` when the file has a stay id column."""
    try:
        frame = pl.scan_parquet(file)
        schema = frame.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as error:
        raise DataError(file, None, f"cannot read as parquet: {error}") from None
    value = next((name for name in ("numeric_value", "value") if name in schema), None)
    missing = [name for name in ("subject_id", "time", "code") if name not in schema]
    if value is None:
        missing.append("numeric_value (or value)")
    if value is None or missing:
        raise DataError(file, None, f"lacks MEDS columns {missing}")
    kind = schema["time"]
    if not isinstance(kind, pl.Datetime):
        raise DataError(file, None, f"time must be a datetime column, not {kind}")
    moment = pl.col("time").cast(pl.Datetime("us", kind.time_zone))
    moment = (
        moment.dt.replace_time_zone("UTC")
        if kind.time_zone is None
        else moment.dt.convert_time_zone("UTC")
    )
    number = pl.col(value)
    if schema[value] == pl.Float32:
        # The shortest decimal that reads back as this float32 is the value recorded.
        number = number.cast(pl.String)
    stay_column = next((name for name in STAY_ID_COLUMNS if name in schema), None)
    source_stay_id = pl.col(stay_column) if stay_column else pl.lit(None)
    number = number.cast(pl.Float64)
    return frame.select(
        pl.col("subject_id").cast(pl.Int64),
        moment.alias("time"),
        pl.col("code").cast(pl.String),
        pl.when(number.is_finite()).then(number).alias("numeric_value"),
        source_stay_id.cast(pl.Int64).alias("source_stay_id"),
    )


# --- stays ----------------------------------------------------------------------------


def _pair(
    admissions: pl.DataFrame, discharges: pl.DataFrame, report: ConversionReport, what: str
) -> pl.DataFrame:
    """Pair admissions (``subject_id, start``) with discharges (``subject_id, end, ...``).

    When a subject has as many discharges as admissions, the n-th goes with the n-th
    (back-to-back stays share a timestamp); otherwise each admission takes the first
    discharge at or after it. A discharge before its admission, or after the next one
    starts, is dropped: that admission's end is null (with a warning).
    """
    admissions = admissions.sort("subject_id", "start").with_columns(
        n=pl.int_range(pl.len()).over("subject_id"),
        next_start=pl.col("start").shift(-1).over("subject_id"),
    )
    discharges = discharges.sort("subject_id", "end").with_columns(
        n=pl.int_range(pl.len()).over("subject_id")
    )
    counts = (
        admissions.group_by("subject_id")
        .len()
        .join(discharges.group_by("subject_id").len(), on="subject_id", how="left")
    )
    even = counts.filter(pl.col("len") == pl.col("len_right")).select("subject_id")
    by_rank = admissions.join(even, on="subject_id", how="semi").join(
        discharges, on=["subject_id", "n"], how="left"
    )
    by_time = (
        admissions.join(even, on="subject_id", how="anti")
        .sort("start")
        .join_asof(
            discharges.drop("n").sort("end"),
            left_on="start",
            right_on="end",
            by="subject_id",
            strategy="forward",
            check_sortedness=False,
        )
    )
    paired = pl.concat([by_rank.drop("n"), by_time.drop("n")]).sort("subject_id", "start")
    wrong = (
        pl.col("end").is_null()
        | (pl.col("end") < pl.col("start"))
        | (pl.col("end") > pl.col("next_start")).fill_null(False)
    )
    unpaired = paired.filter(wrong).height
    if unpaired:
        report.warn(f"{unpaired} {what} admissions have no discharge of their own: end is null")
    ends = [name for name in discharges.columns if name not in ("subject_id", "n")]
    return paired.with_columns(
        pl.when(~wrong).then(pl.col(name)).alias(name) for name in ends
    ).drop("next_start")


def read_stays(events: pl.LazyFrame, report: ConversionReport) -> pl.DataFrame:
    """The stays table (without weight and height) from the structural codes."""
    rows = (
        events.filter(_STRUCTURAL & pl.col("subject_id").is_not_null())
        .with_columns(prefix=_PREFIX, detail=pl.col("code").str.extract(r"^[^/]*//(.*)$"))
        .collect(engine="streaming")
    )

    def kind(prefix: str) -> pl.DataFrame:
        return rows.filter((pl.col("prefix") == prefix) & pl.col("time").is_not_null())

    icu = _pair(
        kind("ICU_ADMISSION").select(
            "subject_id",
            start=pl.col("time"),
            careunit=pl.col("detail"),
            given_id=pl.coalesce(
                pl.col("source_stay_id"),
                pl.col("detail").str.extract(r"(?:^|//)(\d+)$").cast(pl.Int64),
            ),
        ),
        kind("ICU_DISCHARGE").select("subject_id", end=pl.col("time")),
        report,
        "ICU",
    )
    if icu.height == 0:
        raise DataError(report.source, None, "no ICU_ADMISSION events: no ICU stays to convert")
    ordinal = pl.col("start").rank("ordinal").over("subject_id")
    if icu.select(ordinal.max()).item() >= STAY_ID_SPACING:
        raise DataError(report.source, None, f"a subject has {STAY_ID_SPACING}+ ICU stays")
    icu = icu.with_columns(
        stay_id=pl.coalesce("given_id", pl.col("subject_id") * STAY_ID_SPACING + ordinal)
    )
    hospital = _pair(
        kind("HOSPITAL_ADMISSION").select("subject_id", start=pl.col("time")),
        kind("HOSPITAL_DISCHARGE").select(
            "subject_id", end=pl.col("time"), h_died=pl.col("detail") == "DIED"
        ),
        report,
        "hospital",
    ).select("subject_id", h_start="start", h_end="end", h_died="h_died")
    icu = _with_hospital_stay(icu, hospital, report)
    births = kind("MEDS_BIRTH").group_by("subject_id").agg(birth=pl.col("time").min())
    deaths = kind("MEDS_DEATH").group_by("subject_id").agg(death=pl.col("time").min())
    sexes = (
        rows.filter(pl.col("prefix") == "GENDER")
        .group_by("subject_id")
        .agg(sex=pl.col("detail").first())
    )
    stays = (
        icu.join(births, on="subject_id", how="left")
        .join(deaths, on="subject_id", how="left")
        .join(sexes, on="subject_id", how="left")
    )
    return _stay_columns(stays, report)


def _with_hospital_stay(
    icu: pl.DataFrame, hospital: pl.DataFrame, report: ConversionReport
) -> pl.DataFrame:
    """Each ICU stay with the hospital admission it overlaps most (or nulls)."""
    icu_end = pl.coalesce("end", "start")
    overlap = pl.min_horizontal(icu_end, pl.col("h_end")) - pl.max_horizontal(
        pl.col("start"), pl.col("h_start")
    )
    matched = (
        icu.join(hospital, on="subject_id", how="inner")
        .filter(pl.col("h_end").is_not_null() & (overlap >= timedelta(0)))
        .sort(overlap, descending=True)
        .unique("stay_id", keep="first")
        .select("stay_id", "h_start", "h_end", "h_died")
    )
    icu = icu.join(matched, on="stay_id", how="left")
    alone = icu.filter(pl.col("h_start").is_null()).height
    if alone:
        report.warn(
            f"{alone} ICU stays lie in no hospital admission: in-hospital death is judged "
            "on the ICU stay, and hospital_discharge_time is null"
        )
    return icu


def _stay_columns(stays: pl.DataFrame, report: ConversionReport) -> pl.DataFrame:
    def days(since: str, until: str) -> pl.Expr:
        return (pl.col(until) - pl.col(since)).dt.total_microseconds() / 86_400e6

    birthday_to_come = (pl.col("start").dt.month() < pl.col("birth").dt.month()) | (
        (pl.col("start").dt.month() == pl.col("birth").dt.month())
        & (pl.col("start").dt.day() < pl.col("birth").dt.day())
    )
    window_start = pl.coalesce("h_start", "start")
    window_end = pl.coalesce("h_end", "end") + DEATH_TOLERANCE
    died = pl.col("h_died").fill_null(False) | (
        pl.col("death").is_not_null()
        & (pl.col("death") >= window_start)
        & (pl.col("death") <= window_end).fill_null(False)
    )
    no_birth = stays.filter(pl.col("birth").is_null()).height
    if no_birth:
        report.warn(f"{no_birth} ICU stays have no MEDS_BIRTH for their subject: age is null")
    return stays.select(
        "stay_id",
        "subject_id",
        source=pl.lit(SYSTEM),
        admit_time=pl.col("start"),
        discharge_time=pl.col("end"),
        hospital_discharge_time=pl.col("h_end"),
        age=(
            pl.col("start").dt.year() - pl.col("birth").dt.year() - birthday_to_come.cast(pl.Int32)
        ).cast(pl.Float64),
        sex=pl.col("sex").replace_strict(
            {"F": "F", "M": "M"}, default=None, return_dtype=pl.String
        ),
        height_cm=pl.lit(None, pl.Float64),
        weight_kg=pl.lit(None, pl.Float64),
        icu_type=icu_type(pl.col("careunit")),
        in_hospital_death=died.cast(pl.Int8),
        death_time=pl.col("death").cast(TIME),
        survival_days=days("start", "death"),
        los_days=days("start", "end"),
        hospital_los_days=days("start", "h_end"),
    )


# --- codes and events -----------------------------------------------------------------


def count_codes(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows per code in a slice of events, and how many lack a subject, a time, a value."""
    return rows.group_by("code").agg(
        rows=pl.len(),
        no_subject=pl.col("subject_id").null_count(),
        no_time=pl.col("time").null_count(),
        no_value=pl.col("numeric_value").null_count(),
    )


def classify(counts: pl.DataFrame) -> pl.DataFrame:
    """Codes with their concept and conversion (null concept: unmapped) and whether they
    are structural (stays, demographics)."""
    lookup = concept_lookup().rename({"code": "concept"})
    return counts.with_columns(
        itemid=pl.col("code").str.extract(MEASUREMENT),
        structural=_STRUCTURAL.fill_null(False),
    ).join(lookup, on="itemid", how="left")


def _check_rows(
    codes: pl.DataFrame, file: Path, report: ConversionReport, policy: BadRowPolicy
) -> None:
    mapped = pl.col("concept").is_not_null()
    # Sex is static (no time, as MEDS has it); admissions, discharges, birth and death
    # without a time cannot place a stay and would be lost unseen.
    dated = pl.col("structural") & ~pl.col("code").str.starts_with("GENDER")
    bad = [
        (codes.filter(pl.col("code").is_null())["rows"].sum(), "rows have no code"),
        (codes["no_subject"].sum(), "rows have no subject_id"),
        (codes.filter(mapped)["no_time"].sum(), "measurement rows have no time"),
        (codes.filter(dated)["no_time"].sum(), "stay, birth or death rows have no time"),
    ]
    for n, reason in bad:
        if n:
            report.bad_row(DataError(file, None, f"{n} {reason}"), policy)
            report.bad_rows += int(n) - 1


def measurements(rows: pl.DataFrame, codes: pl.DataFrame, keep_unmapped: bool) -> pl.DataFrame:
    """The canonical events of a slice: mapped codes (and, if asked, the other codes that
    carry a value), not yet assigned to stays."""
    wanted = codes.filter(
        pl.col("concept").is_not_null()
        | (pl.lit(keep_unmapped) & pl.col("code").is_not_null() & ~pl.col("structural"))
    ).select("code", "concept", "scale", "offset")
    source = pl.lit(f"{SYSTEM}//") + pl.col("code")
    return (
        rows.filter(
            pl.col("subject_id").is_not_null()
            & pl.col("time").is_not_null()
            & pl.col("numeric_value").is_not_null()
        )
        .join(wanted, on="code", how="inner")
        .select(
            "subject_id",
            "time",
            code=pl.coalesce("concept", source),
            numeric_value=pl.coalesce(canonical_value(pl.col("numeric_value")), "numeric_value"),
            source_code=source,
        )
    )


def _report_codes(tallies: list[pl.DataFrame], report: ConversionReport) -> None:
    if not tallies:
        return
    codes = classify(pl.concat(tallies).group_by("code").agg(pl.all().sum()))
    mapped = pl.col("concept").is_not_null()
    report.rows_read += int(codes["rows"].sum())
    unmapped = codes.filter(pl.col("code").is_not_null() & ~pl.col("structural") & ~mapped)
    report.unmapped.update(
        {f"{SYSTEM}//{code}": n for code, n in unmapped.select("code", "rows").iter_rows()}
    )
    no_value = int(codes.filter(mapped)["no_value"].sum())
    report.not_convert("mapped code without a numeric value", no_value)


def convert(
    path: Path,
    out_dir: Path,
    *,
    on_bad_row: BadRowPolicy = "error",
    keep_unmapped: bool = False,
    batch_rows: int = BATCH_ROWS,
) -> ConversionReport:
    """Convert a MEDS parquet file or folder into ``out_dir``."""
    started = time.perf_counter()
    path = Path(path)
    out_dir = Path(out_dir)
    report = ConversionReport(source=f"{SYSTEM} {path}", unmapped_kept=keep_unmapped)
    files = parquet_files(path)
    print(f"reading {len(files)} parquet file(s) under {path}", flush=True)
    scans = {file: scan(file) for file in files}
    try:
        stays = read_stays(pl.concat(scans.values(), how="vertical_relaxed"), report)
    except pl.exceptions.PolarsError as error:
        raise DataError(path, None, f"cannot read: {error}") from None
    warn_overlapping(stays, report)
    print(f"{stays.height} ICU stays", flush=True)
    windows = stays.select("subject_id", "stay_id", "admit_time", "discharge_time")
    tallies: list[pl.DataFrame] = []
    outside = 0
    anthropometrics: list[pl.DataFrame] = []
    with EventsWriter(out_dir, report) as writer:
        for file, events in scans.items():
            n_rows = events.select(pl.len()).collect().item()
            for offset in range(0, n_rows, batch_rows):
                # A slice of a parquet scan reads only the row groups it needs.
                rows = _collect(events.slice(offset, batch_rows), file)
                counts = count_codes(rows)
                codes = classify(counts)
                _check_rows(codes, file, report, on_bad_row)
                tallies.append(counts)
                placed = assign_to_stays(measurements(rows, codes, keep_unmapped), windows)
                inside = placed.filter(pl.col("stay_id").is_not_null())
                outside += placed.height - inside.height
                anthropometrics.append(first_anthropometrics(inside))
                writer.write(inside)
            print(f"  {file.name}: {n_rows:,} rows, {report.events:,} events so far", flush=True)
    _report_codes(tallies, report)
    report.not_convert("outside every ICU stay of the subject", outside)
    write_stays(out_dir, with_anthropometrics(stays, anthropometrics), report)
    report.seconds = time.perf_counter() - started
    write_report(out_dir, report)
    return report


def _collect(frame: pl.LazyFrame, file: Path) -> pl.DataFrame:
    try:
        return frame.collect()
    except pl.exceptions.PolarsError as error:
        raise DataError(file, None, f"cannot read: {error}") from None
