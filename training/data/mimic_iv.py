"""MIMIC-IV (the official CSV release) -> canonical tables.

Reads the release's layout, ``ROOT/hosp/*.csv.gz`` and ``ROOT/icu/*.csv.gz`` (plain
``.csv`` files are accepted too):

stays
    ``icu/icustays``: one stay per row: ``stay_id``, ``subject_id``, ``intime`` ->
    ``admit_time``, ``outtime`` -> ``discharge_time``, ``los`` -> ``los_days``,
    ``first_careunit`` -> ``icu_type`` (see :data:`CAREUNITS`).
    ``hosp/patients``: ``gender`` -> ``sex``; ``age = anchor_age + year(intime) -
    anchor_year`` (MIMIC's own definition; ``anchor_age`` is capped at 91).
    ``hosp/admissions``: ``in_hospital_death`` is the ``hospital_expire_flag`` of the
    stay's ``hadm_id``, ``hospital_discharge_time`` its ``dischtime`` and
    ``hospital_los_days`` runs from ``intime`` to it.
    Death: ``death_time`` is the patient's ``admissions.deathtime`` when one admission
    has it, else ``patients.dod`` (a date, read as midnight); ``survival_days`` is
    ``death_time - intime`` in days, null when the patient is not known to have died
    (MIMIC records out-of-hospital deaths up to one year after the last discharge).
    ``weight_kg`` / ``height_cm``: the first charted value of the stay (itemids from
    the concept dictionary, converted from lbs / inches); null without chartevents.

events
    ``icu/chartevents`` (``valuenum``) when present: the demo release lacks it, the
    full database has it. ``icu/outputevents`` (``value``, urine output).
    ``hosp/labevents`` (``valuenum``): labs have no ``stay_id``, so each one goes to the
    ICU stay of the same subject whose ``[intime, outtime]`` contains its
    ``charttime``; labs outside every ICU stay are counted in the report's warnings
    and not converted. Chart and output events keep the ``stay_id`` they were charted
    under, even a few minutes outside the stay's window.
    Itemids map to concepts through the concept dictionary (``mimic_iv`` codes), with
    its unit conversions (°F, lbs, inches, FiO2 in %). Unmapped itemids are counted as
    ``mimic_iv//<itemid>``. Rows of mapped items without a numeric value (free-text
    results) are counted in a warning. Values are kept as recorded (no range
    filtering). Events are written in source order, block by block.

Times: MIMIC-IV times are shifted into the future per patient and carry no time
zone; they are read as UTC, so durations are right and absolute dates mean nothing.

Memory stays bounded however large the tables are: the event tables are read as
streams of blocks (pyarrow's streaming CSV reader over a gzip stream); each block is
filtered to mapped itemids (compared as text, before any other column is parsed),
converted, and written through :class:`EventsWriter`, which gathers them into
Parquet row groups of about 250,000 events. Full MIMIC-IV chartevents (~300 M rows)
never sits in memory.

Malformed rows: a row with the wrong number of fields, an unparseable number or time,
or a missing subject, item or time is a bad row. With ``on_bad_row="error"`` the first
one raises :class:`DataError` naming the file and, where it can be computed, the line
(the record number + 1: a value spanning lines shifts it; for rows with the wrong
number of fields the reader cannot tell, so the error quotes the row instead). With
``"skip"`` bad rows are counted and listed in the report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from bedside.schemas.concepts import load_concepts
from bedside.schemas.tables import TIME
from bedside.training.data.canonical import (
    MAX_LISTED_BAD_ROWS,
    BadRowPolicy,
    ConversionReport,
    DataError,
    EventsWriter,
    write_report,
    write_stays,
)

SYSTEM = "mimic_iv"

#: ``icustays.first_careunit`` -> ``icu_type``. Names starting with "Neuro" (Neuro SICU,
#: Neuro Intermediate, Neuro Stepdown) are ``neuro``; the mixed MICU/SICU and any unit
#: not listed here are ``other``.
CAREUNITS: Final = {
    "Coronary Care Unit (CCU)": "coronary",
    "Cardiac Vascular Intensive Care Unit (CVICU)": "cardiac_surgery",
    "Medical Intensive Care Unit (MICU)": "medical",
    "Surgical Intensive Care Unit (SICU)": "surgical",
    "Trauma SICU (TSICU)": "surgical",
    "Medical/Surgical Intensive Care Unit (MICU/SICU)": "other",
}

#: Bytes of uncompressed CSV per block: ~23,000 chartevents rows. The reader decompresses
#: up to 32 blocks ahead of the conversion, so this bounds most of the memory it needs.
BLOCK_BYTES: Final = 2 << 20
#: Print a progress line every this many rows of an event table.
PROGRESS_ROWS: Final = 10_000_000

TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
#: Concepts the stays table takes from the first value of the stay.
ANTHROPOMETRICS: Final = {"weight": "weight_kg", "height": "height_cm"}

Kind = Literal["int", "float", "time", "date", "text"]


@dataclass(frozen=True)
class EventTable:
    """One MIMIC-IV table of measurements and the columns read from it."""

    module: str
    name: str
    value: str
    has_stay_id: bool

    @property
    def columns(self) -> dict[str, Kind]:
        columns: dict[str, Kind] = {"subject_id": "int"}
        if self.has_stay_id:
            columns["stay_id"] = "int"
        columns |= {"charttime": "time", "itemid": "int", self.value: "float"}
        return columns


EVENT_TABLES: Final = (
    EventTable("icu", "chartevents", "valuenum", has_stay_id=True),
    EventTable("icu", "outputevents", "value", has_stay_id=True),
    EventTable("hosp", "labevents", "valuenum", has_stay_id=False),
)

ICUSTAYS: Final[dict[str, Kind]] = {
    "subject_id": "int",
    "hadm_id": "int",
    "stay_id": "int",
    "first_careunit": "text",
    "intime": "time",
    "outtime": "time",
    "los": "float",
}
PATIENTS: Final[dict[str, Kind]] = {
    "subject_id": "int",
    "gender": "text",
    "anchor_age": "float",
    "anchor_year": "int",
    "dod": "date",
}
ADMISSIONS: Final[dict[str, Kind]] = {
    "subject_id": "int",
    "hadm_id": "int",
    "dischtime": "time",
    "deathtime": "time",
    "hospital_expire_flag": "int",
}


def icu_type(careunit: pl.Expr) -> pl.Expr:
    """Canonical ICU type of a MIMIC-IV care unit name (see :data:`CAREUNITS`).

    >>> units = pl.DataFrame({"unit": ["Trauma SICU (TSICU)", "Neuro Stepdown", "PACU", None]})
    >>> units.select(icu_type(pl.col("unit"))).to_series().to_list()
    ['surgical', 'neuro', 'other', None]
    """
    return (
        pl.when(careunit.str.starts_with("Neuro"))
        .then(pl.lit("neuro"))
        .when(careunit.is_not_null())
        .then(careunit.replace_strict(CAREUNITS, default="other", return_dtype=pl.String))
    )


def find_table(root: Path, module: str, name: str) -> Path | None:
    """``ROOT/module/name.csv.gz``, else ``ROOT/module/name.csv``, else None."""
    for suffix in (".csv.gz", ".csv"):
        path = root / module / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def _require(root: Path, module: str, name: str) -> Path:
    path = find_table(root, module, name)
    if path is None:
        raise DataError(root / module, None, f"no {name}.csv.gz (or {name}.csv) here")
    return path


# --- reading CSV as checked blocks ----------------------------------------------------


def _header(path: Path) -> list[str]:
    with pa.input_stream(str(path), compression="detect") as stream:
        start = stream.read(1 << 16).decode("utf-8", "replace")
    line = start.splitlines()[0] if start else ""
    return [name.strip().strip('"') for name in line.split(",")]


def read_blocks(
    path: Path,
    columns: dict[str, Kind],
    report: ConversionReport,
    policy: BadRowPolicy,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[tuple[int | None, pl.DataFrame]]:
    """Stream a CSV file as blocks of string columns, with each block's first line number.

    The line number is None once a row with the wrong number of fields has been
    skipped, since the reader does not say where that row was.
    """
    header = _header(path)
    missing = [name for name in columns if name not in header]
    if missing:
        raise DataError(path, 1, f"header lacks columns {missing}")
    malformed = 0

    def skip_malformed(row: pacsv.InvalidRow) -> str:
        nonlocal malformed
        malformed += 1
        reason = f"expected {row.expected_columns} fields, got {row.actual_columns}"
        report.bad_row(DataError(path, None, f"{reason}: {row.text[:200]!r}"), "skip")
        return "skip"

    read_options = pacsv.ReadOptions(block_size=block_bytes)
    # Free-text columns (lab comments) may hold quoted newlines.
    parse_options = pacsv.ParseOptions(
        newlines_in_values=True,
        invalid_row_handler=skip_malformed if policy == "skip" else None,
    )
    convert_options = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in columns},
        include_columns=list(columns),
        strings_can_be_null=True,
    )
    records = 0
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            reader = pacsv.open_csv(
                stream,
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
            for batch in reader:
                first_line = records + 2 if malformed == 0 else None
                records += batch.num_rows
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                yield first_line, frame
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(path, None, str(error)) from None


def _parsed(name: str, kind: Kind) -> pl.Expr:
    raw = pl.col(name).str.strip_chars()
    match kind:
        case "int":
            return raw.cast(pl.Int64, strict=False)
        case "float":
            number = raw.cast(pl.Float64, strict=False)
            return pl.when(number.is_finite()).then(number)
        case "time":
            moment = raw.str.strptime(pl.Datetime("us"), TIME_FORMAT, strict=False, cache=False)
            return moment.dt.replace_time_zone("UTC")
        case "date":
            # MIMIC-IV 2.x writes dates; older releases wrote midnight datetimes.
            return pl.coalesce(
                raw.str.strptime(pl.Date, "%Y-%m-%d", strict=False),
                raw.str.strptime(pl.Datetime("us"), TIME_FORMAT, strict=False).dt.date(),
            )
        case "text":
            return pl.col(name)


def parse_block(
    frame: pl.DataFrame,
    columns: dict[str, Kind],
    required: tuple[str, ...],
    path: Path,
    first_line: int | None,
    report: ConversionReport,
    policy: BadRowPolicy,
    keep: tuple[str, ...] = (),
) -> pl.DataFrame:
    """Parse a block of string columns (and keep the ``keep`` ones as they are); rows with
    an unreadable or a missing required value are bad rows, raised or counted. The block
    needs a ``_row`` column, its row index, for the line numbers."""
    parsed = frame.with_columns(
        _parsed(name, kind).alias(f"_{name}") for name, kind in columns.items()
    )
    unreadable = {
        name: pl.col(name).is_not_null() & pl.col(f"_{name}").is_null()
        for name, kind in columns.items()
        if kind != "text"
    }
    empty = {name: pl.col(name).is_null() for name in required}
    parsed = parsed.with_columns(
        _bad=pl.any_horizontal(*unreadable.values(), *empty.values(), pl.lit(False))
    )
    bad = parsed.filter("_bad")
    if bad.height:
        reasons = [
            pl.when(condition).then(
                pl.format(f"{name} {{}} is not a valid {columns[name]}", pl.col(name))
            )
            for name, condition in unreadable.items()
        ] + [
            pl.when(condition).then(pl.lit(f"{name} is empty")) for name, condition in empty.items()
        ]
        report_bad_rows(bad, pl.coalesce(reasons), path, first_line, report, policy)
        parsed = parsed.filter(~pl.col("_bad"))
    return parsed.select("_row", *keep, *(pl.col(f"_{name}").alias(name) for name in columns))


def report_bad_rows(
    bad: pl.DataFrame,
    reason: pl.Expr,
    path: Path,
    first_line: int | None,
    report: ConversionReport,
    policy: BadRowPolicy,
) -> None:
    """Raise the first bad row, or count them all. Only the rows the report can still
    list get a message, so a file full of bad rows is counted quickly."""
    listed = max(1, MAX_LISTED_BAD_ROWS - len(report.bad_row_examples))
    described = bad.head(listed).select("_row", reason=reason)
    for row, text in described.iter_rows():
        line = None if first_line is None else first_line + row
        report.bad_row(DataError(path, line, text), policy)
    report.bad_rows += bad.height - described.height


def read_table(
    path: Path,
    columns: dict[str, Kind],
    required: tuple[str, ...],
    report: ConversionReport,
    policy: BadRowPolicy,
) -> pl.DataFrame:
    """Read a small table whole, with the same checks as the streamed ones."""
    blocks = [
        parse_block(block.with_row_index("_row"), columns, required, path, line, report, policy)
        for line, block in read_blocks(path, columns, report, policy)
    ]
    schema = {name: _parsed(name, kind) for name, kind in columns.items()}
    empty = pl.DataFrame(schema={name: pl.String for name in columns}).select(**schema)
    return pl.concat([empty, *(block.drop("_row") for block in blocks)], how="vertical_relaxed")


# --- stays ----------------------------------------------------------------------------


def read_stays(root: Path, report: ConversionReport, policy: BadRowPolicy) -> pl.DataFrame:
    """The stays table without weight and height (they come from the chart events)."""
    icustays = read_table(
        _require(root, "icu", "icustays"),
        ICUSTAYS,
        ("subject_id", "stay_id", "intime"),
        report,
        policy,
    )
    patients = read_table(
        _require(root, "hosp", "patients"), PATIENTS, ("subject_id",), report, policy
    )
    admissions = read_table(
        _require(root, "hosp", "admissions"), ADMISSIONS, ("subject_id", "hadm_id"), report, policy
    )
    no_outtime = icustays.filter(pl.col("outtime").is_null()).height
    if no_outtime:
        report.warn(f"{no_outtime} ICU stays have no outtime: no lab is assigned to them")
    # The patient's death: the time of an in-hospital death, else the date of death.
    deathtimes = admissions.group_by("subject_id").agg(pl.col("deathtime").max())
    patients = patients.join(deathtimes, on="subject_id", how="left").with_columns(
        death_time=pl.coalesce(
            pl.col("deathtime"),
            pl.col("dod").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        )
    )
    stays = icustays.join(
        patients.unique("subject_id", keep="first"), on="subject_id", how="left"
    ).join(
        admissions.unique("hadm_id", keep="first").select(
            "hadm_id", "dischtime", "hospital_expire_flag"
        ),
        on="hadm_id",
        how="left",
    )
    without_patient = stays.filter(pl.col("anchor_year").is_null() & pl.col("gender").is_null())
    if without_patient.height:
        report.warn(
            f"{without_patient.height} ICU stays have no row in hosp/patients "
            f"(e.g. subject {without_patient['subject_id'][0]}): age and sex are null"
        )
    without_admission = stays.filter(pl.col("hospital_expire_flag").is_null())
    if without_admission.height:
        report.warn(
            f"{without_admission.height} ICU stays have no hospital_expire_flag in "
            f"hosp/admissions (e.g. stay {without_admission['stay_id'][0]}): "
            "in_hospital_death is null"
        )

    def days_since_intime(end: str) -> pl.Expr:
        return (pl.col(end) - pl.col("intime")).dt.total_microseconds() / 86_400e6

    return stays.select(
        "stay_id",
        "subject_id",
        source=pl.lit(SYSTEM),
        admit_time=pl.col("intime"),
        discharge_time=pl.col("outtime"),
        hospital_discharge_time=pl.col("dischtime"),
        age=pl.col("anchor_age") + pl.col("intime").dt.year() - pl.col("anchor_year"),
        sex=pl.col("gender").replace_strict({"F": "F", "M": "M"}, default=None),
        height_cm=pl.lit(None, pl.Float64),
        weight_kg=pl.lit(None, pl.Float64),
        icu_type=icu_type(pl.col("first_careunit")),
        in_hospital_death=pl.col("hospital_expire_flag").cast(pl.Int8),
        death_time=pl.col("death_time"),
        survival_days=days_since_intime("death_time"),
        los_days=pl.coalesce(pl.col("los"), days_since_intime("outtime")),
        hospital_los_days=days_since_intime("dischtime"),
    )


def with_anthropometrics(stays: pl.DataFrame, firsts: list[pl.DataFrame]) -> pl.DataFrame:
    """Fill weight and height with the first value of each stay (``firsts``: candidate
    rows ``stay_id, time, code, numeric_value``, several per stay)."""
    schema = pl.Schema(
        {"stay_id": pl.Int64, "time": TIME, "code": pl.String, "numeric_value": pl.Float64}
    )
    candidates = pl.concat(
        [pl.DataFrame(schema=schema), *firsts],
        how="vertical_relaxed",
    )
    first = (
        candidates.sort("time")
        .group_by("stay_id", "code", maintain_order=True)
        .first()
        .pivot(on="code", index="stay_id", values="numeric_value")
    )
    first = first.select(
        "stay_id",
        *(
            (pl.col(code) if code in first.columns else pl.lit(None, pl.Float64)).alias(
                f"_{column}"
            )
            for code, column in ANTHROPOMETRICS.items()
        ),
    )
    return (
        stays.join(first, on="stay_id", how="left")
        .with_columns(
            weight_kg=pl.coalesce("weight_kg", "_weight_kg"),
            height_cm=pl.coalesce("height_cm", "_height_cm"),
        )
        .drop("_weight_kg", "_height_cm")
    )


def first_anthropometrics(events: pl.DataFrame) -> pl.DataFrame:
    """The earliest weight and height of each stay in a batch of canonical events."""
    return (
        events.filter(pl.col("code").is_in(list(ANTHROPOMETRICS)))
        .sort("time")
        .group_by("stay_id", "code", maintain_order=True)
        .first()
        .select("stay_id", "time", "code", "numeric_value")
    )


def assign_to_stays(events: pl.DataFrame, windows: pl.DataFrame) -> pl.DataFrame:
    """Give each event (``subject_id``, ``time``) the stay of its subject whose
    ``[admit_time, discharge_time]`` contains it; events outside every stay get a null
    ``stay_id``. ``windows``: ``subject_id, stay_id, admit_time, discharge_time``."""
    joined = events.sort("time").join_asof(
        windows.sort("admit_time"),
        left_on="time",
        right_on="admit_time",
        by="subject_id",
        strategy="backward",
        check_sortedness=False,
    )
    inside = pl.col("time") <= pl.col("discharge_time")
    return joined.with_columns(stay_id=pl.when(inside).then(pl.col("stay_id"))).drop(
        "admit_time", "discharge_time"
    )


def warn_overlapping(windows: pl.DataFrame, report: ConversionReport) -> None:
    """Stays of one subject should not overlap: a value in two would go to the later."""
    overlapping = (
        windows.sort("subject_id", "admit_time")
        .with_columns(previous_end=pl.col("discharge_time").shift().over("subject_id"))
        .filter(pl.col("admit_time") < pl.col("previous_end"))
    )
    if overlapping.height:
        report.warn(
            f"{overlapping.height} ICU stays start before the previous stay of the same "
            f"subject ends (e.g. stay {overlapping['stay_id'][0]}); values in the overlap "
            "go to the later stay"
        )


# --- events ---------------------------------------------------------------------------


def concept_lookup() -> pl.DataFrame:
    """Mapped itemids (as text, as read) -> concept and linear conversion."""
    table = load_concepts().source_table(SYSTEM)
    return pl.DataFrame(
        {
            "itemid": list(table),
            "code": [code for code, _ in table.values()],
            "scale": [conversion.scale for _, conversion in table.values()],
            "offset": [conversion.offset for _, conversion in table.values()],
        },
        schema={"itemid": pl.String, "code": pl.String, "scale": pl.Float64, "offset": pl.Float64},
    )


def canonical_value(value: pl.Expr) -> pl.Expr:
    """The value in the concept's canonical unit, rounded as ``Conversion.apply`` does."""
    return (pl.col("scale") * value + pl.col("offset")).round(10)


@dataclass
class _Tally:
    """What one event table produced besides events, for the report's warnings."""

    no_value: int = 0
    outside_stays: int = 0
    unknown_stay: int = 0


def convert_events(
    path: Path,
    table: EventTable,
    stays: pl.DataFrame,
    writer: EventsWriter,
    report: ConversionReport,
    policy: BadRowPolicy,
    keep_unmapped: bool,
    anthropometrics: list[pl.DataFrame],
    block_bytes: int = BLOCK_BYTES,
) -> None:
    lookup = concept_lookup()
    windows = stays.select("subject_id", "stay_id", "admit_time", "discharge_time")
    stay_ids = stays.select("stay_id")
    tally = _Tally()
    started = time.perf_counter()
    rows_at_start = report.rows_read
    next_progress = PROGRESS_ROWS
    print(f"reading {path}", flush=True)
    for first_line, block in read_blocks(path, table.columns, report, policy, block_bytes):
        report.rows_read += block.height
        block = block.with_row_index("_row")
        rows = _mapped_rows(block, lookup, path, first_line, report, policy, keep_unmapped)
        rows = parse_block(
            rows,
            table.columns,
            ("subject_id", "charttime", "itemid"),
            path,
            first_line,
            report,
            policy,
            keep=("code", "scale", "offset"),
        )
        tally.no_value += rows.filter(pl.col(table.value).is_null()).height
        events = rows.filter(pl.col(table.value).is_not_null()).select(
            "subject_id",
            *(["stay_id"] if table.has_stay_id else []),
            time=pl.col("charttime"),
            code=pl.col("code"),
            numeric_value=canonical_value(pl.col(table.value)),
            source_code=pl.lit(f"{SYSTEM}//") + pl.col("itemid").cast(pl.String),
        )
        events = _with_stays(events, table, windows, stay_ids, tally)
        anthropometrics.append(first_anthropometrics(events))
        writer.write(events)
        read = report.rows_read - rows_at_start
        if read >= next_progress:
            seconds = time.perf_counter() - started
            print(
                f"  {read / 1e6:.1f} M rows of {table.name} read, "
                f"{read / seconds / 1e6:.2f} M rows/s",
                flush=True,
            )
            next_progress += PROGRESS_ROWS
    name = f"{table.module}/{table.name}"
    report.not_convert(f"{name}: no numeric {table.value} (text result)", tally.no_value)
    report.not_convert(f"{name}: outside every ICU stay of the subject", tally.outside_stays)
    report.not_convert(f"{name}: stay_id not in icu/icustays", tally.unknown_stay)


def _mapped_rows(
    block: pl.DataFrame,
    lookup: pl.DataFrame,
    path: Path,
    first_line: int | None,
    report: ConversionReport,
    policy: BadRowPolicy,
    keep_unmapped: bool,
) -> pl.DataFrame:
    """Rows of mapped itemids with their concept; count the others by itemid. Itemids are
    compared as read (text), so the block's other columns are parsed only when kept."""
    counts = block.group_by("itemid").len()
    valid = pl.col("itemid").str.contains(r"^\d+$")
    unmapped = counts.filter(valid).join(lookup, on="itemid", how="anti")
    report.unmapped.update(
        {f"{SYSTEM}//{itemid}": n for itemid, n in unmapped.select("itemid", "len").iter_rows()}
    )
    if keep_unmapped:
        lookup = pl.concat(
            [
                lookup,
                unmapped.select(
                    "itemid",
                    code=pl.lit(f"{SYSTEM}//") + pl.col("itemid"),
                    scale=pl.lit(1.0),
                    offset=pl.lit(0.0),
                ),
            ]
        )
    odd = block.filter(~valid.fill_null(False))
    if odd.height:
        reason = pl.format("itemid {} is not a number", pl.col("itemid").fill_null("(empty)"))
        report_bad_rows(odd, reason, path, first_line, report, policy)
    return block.join(lookup, on="itemid", how="inner")


def _with_stays(
    events: pl.DataFrame,
    table: EventTable,
    windows: pl.DataFrame,
    stay_ids: pl.DataFrame,
    tally: _Tally,
) -> pl.DataFrame:
    if table.has_stay_id:
        charted = events.filter(pl.col("stay_id").is_not_null())
        known = charted.join(stay_ids, on="stay_id", how="semi")
        tally.unknown_stay += charted.height - known.height
        # Rows without a stay_id are placed like labs.
        loose = assign_to_stays(events.filter(pl.col("stay_id").is_null()).drop("stay_id"), windows)
        events = pl.concat([known, loose.select(known.columns)])
    else:
        events = assign_to_stays(events, windows)
    outside = events.filter(pl.col("stay_id").is_null()).height
    tally.outside_stays += outside
    return events.filter(pl.col("stay_id").is_not_null()) if outside else events


# --- the conversion -------------------------------------------------------------------


def convert(
    root: Path,
    out_dir: Path,
    *,
    on_bad_row: BadRowPolicy = "error",
    keep_unmapped: bool = False,
    block_bytes: int = BLOCK_BYTES,
) -> ConversionReport:
    """Convert a MIMIC-IV release (``root`` holds ``hosp/`` and ``icu/``) into ``out_dir``."""
    started = time.perf_counter()
    root = Path(root)
    out_dir = Path(out_dir)
    report = ConversionReport(source=f"{SYSTEM} {root}", unmapped_kept=keep_unmapped)
    if not root.is_dir():
        raise DataError(root, None, "not a folder (expected a MIMIC-IV root with hosp/ and icu/)")
    stays = read_stays(root, report, on_bad_row)
    warn_overlapping(stays, report)
    print(f"{stays.height} ICU stays in {root}", flush=True)
    anthropometrics: list[pl.DataFrame] = []
    with EventsWriter(out_dir, report) as writer:
        for table in EVENT_TABLES:
            path = find_table(root, table.module, table.name)
            if path is None:
                consequence = (
                    ": no charted vitals, and weight and height are null"
                    if table.name == "chartevents"
                    else ""
                )
                report.warn(f"{table.module}/{table.name}.csv.gz is absent{consequence}")
                continue
            convert_events(
                path,
                table,
                stays,
                writer,
                report,
                on_bad_row,
                keep_unmapped,
                anthropometrics,
                block_bytes,
            )
    write_stays(out_dir, with_anthropometrics(stays, anthropometrics), report)
    report.seconds = time.perf_counter() - started
    write_report(out_dir, report)
    return report
