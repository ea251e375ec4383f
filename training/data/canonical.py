"""What every loader shares: bad-input policy, the conversion report, the table writers.

A loader reads one source and writes ``DIR/events.parquet`` and ``DIR/stays.parquet``
(schemas in :mod:`bedside.schemas.tables`) plus ``DIR/conversion_report.json``. Events
are written in batches through :class:`EventsWriter`, so a loader that streams its
source keeps memory bounded however large the source is.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import polars as pl
import pyarrow.parquet as pq

from bedside.errors import BedsideError
from bedside.schemas.tables import EVENTS, STAYS, conform

BadRowPolicy = Literal["error", "skip"]

#: How many bad rows the report lists one by one (all are counted).
MAX_LISTED_BAD_ROWS = 100
#: Events per Parquet row group: large enough to read fast, small enough to stay bounded.
GROUP_ROWS = 250_000


class DataError(BedsideError, ValueError):
    """Bad input in a source file: names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


@dataclass
class ConversionReport:
    """What a conversion read, kept, could not map and rejected; nothing goes uncounted."""

    source: str
    rows_read: int = 0
    events: int = 0
    stays: int = 0
    deaths: int = 0
    unmapped: Counter[str] = field(default_factory=Counter)
    unmapped_kept: bool = False
    #: Rows of mapped codes that were read but not converted, by reason.
    not_converted: Counter[str] = field(default_factory=Counter)
    bad_rows: int = 0
    bad_row_examples: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def bad_row(self, error: DataError, policy: BadRowPolicy) -> None:
        """Raise the error, or count and remember it when the user asked to skip bad rows."""
        if policy == "error":
            raise error
        self.bad_rows += 1
        if len(self.bad_row_examples) < MAX_LISTED_BAD_ROWS:
            self.bad_row_examples.append(str(error))

    def not_convert(self, reason: str, rows: int) -> None:
        """Count rows read but deliberately not converted (no value, outside every stay)."""
        if rows:
            self.not_converted[reason] += rows

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"warning: {message}", file=sys.stderr)

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "events": self.events,
            "stays": self.stays,
            "in_hospital_deaths": self.deaths,
            "unmapped_codes": dict(self.unmapped.most_common()),
            "unmapped_rows": sum(self.unmapped.values()),
            "unmapped_kept": self.unmapped_kept,
            "not_converted": dict(self.not_converted.most_common()),
            "bad_rows": self.bad_rows,
            "bad_row_examples": self.bad_row_examples,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        unmapped_rows = sum(self.unmapped.values())
        lines = [
            f"{self.source}: {self.stays} stays ({self.deaths} in-hospital deaths), "
            f"{self.events} events from {self.rows_read} rows in {self.seconds:.1f} s",
        ]
        if unmapped_rows:
            fate = "kept with their source codes" if self.unmapped_kept else "not converted"
            top = ", ".join(f"{code} ({n})" for code, n in self.unmapped.most_common(8))
            lines.append(
                f"  {unmapped_rows} rows with {len(self.unmapped)} unmapped codes, {fate}: "
                f"{top}{', ...' if len(self.unmapped) > 8 else ''}"
            )
        for reason, rows in self.not_converted.most_common():
            lines.append(f"  {rows} rows not converted: {reason}")
        if self.bad_rows:
            lines.append(f"  {self.bad_rows} bad rows skipped, e.g. {self.bad_row_examples[0]}")
        lines.extend(f"  warning: {w}" for w in self.warnings[:5])
        return "\n".join(lines)


class EventsWriter:
    """Append batches of canonical events to ``DIR/events.parquet``.

    Small batches are gathered and written about ``group_rows`` at a time (one Parquet
    row group each), so a streaming loader can hand over whatever its blocks give.
    """

    def __init__(
        self, out_dir: Path, report: ConversionReport, group_rows: int = GROUP_ROWS
    ) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "events.parquet"
        self._report = report
        self._group_rows = group_rows
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0
        self._schema = pl.DataFrame(schema=EVENTS).to_arrow().schema
        self._writer = pq.ParquetWriter(self.path, self._schema, compression="zstd")

    def write(self, batch: pl.DataFrame) -> None:
        if batch.height == 0:
            return
        self._pending.append(conform(batch, EVENTS))
        self._pending_rows += batch.height
        self._report.events += batch.height
        if self._pending_rows >= self._group_rows:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            table = pl.concat(self._pending).to_arrow().cast(self._schema)
            self._writer.write_table(table)
        self._pending = []
        self._pending_rows = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.flush()
        self._writer.close()
        if kind is not None:
            self.path.unlink(missing_ok=True)


def write_stays(out_dir: Path, stays: pl.DataFrame, report: ConversionReport) -> Path:
    """Write the canonical stays table; fail on duplicate stay ids."""
    stays = conform(stays, STAYS).sort("stay_id")
    duplicated = stays.filter(pl.col("stay_id").is_duplicated())["stay_id"].unique()
    if duplicated.len():
        raise DataError(out_dir, None, f"duplicate stay ids {duplicated.head(5).to_list()}")
    path = out_dir / "stays.parquet"
    out_dir.mkdir(parents=True, exist_ok=True)
    stays.write_parquet(path, compression="zstd")
    report.stays = stays.height
    report.deaths = int(stays["in_hospital_death"].fill_null(0).sum())
    return path


def write_report(out_dir: Path, report: ConversionReport) -> Path:
    path = out_dir / "conversion_report.json"
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path
