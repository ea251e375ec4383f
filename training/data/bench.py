"""``bedside bench convert``: how fast the loaders convert, and how much memory they need.

Two measurements, each conversion run by ``bedside data convert`` in a child process
whose peak resident memory (Linux ``VmHWM`` of the child's own process image, read as
it exits; see :data:`CHILD`) and wall time are recorded:

1. PhysioNet 2012 (``--physionet DIR`` with ``set-a/``, ``set-b/`` and their outcomes):
   the 2 x 4,000 real stays, one conversion per set.
2. A generated MIMIC-IV layout under ``--work``: small ``icustays``, ``patients``,
   ``admissions``, ``outputevents`` and ``labevents``, and an ``icu/chartevents.csv.gz``
   of ``--chartevents-rows`` rows with MIMIC's columns and a mix of mapped and unmapped
   itemids (text items without ``valuenum`` among them). It is converted at a quarter
   of the size and at the full size: the streaming loader's peak memory should not
   grow with the table.

Generated layouts are kept under ``--work`` and reused by later runs of the same size.
The figures are printed as a table and, with ``--json FILE``, written there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from bedside.errors import BedsideError

#: Chart events generated and compressed at a time.
CHUNK_ROWS: Final = 500_000
#: Chart events per generated ICU stay (a few days of a monitored patient).
ROWS_PER_STAY: Final = 10_000
#: Generated output events and lab events, each, per chart event.
SMALL_TABLE_RATIO: Final = 0.01
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
EPOCH: Final = datetime(2150, 1, 1)


@dataclass(frozen=True)
class Item:
    """A generated chart item: share of the rows, unit, and a normal value or a text."""

    itemid: int
    share: float
    unit: str
    mean: float = 0.0
    sd: float = 0.0
    decimals: int = 0
    text: str | None = None


#: Roughly MIMIC-IV's mix: about half of the rows are items the concept dictionary
#: maps, the rest alarm limits, text assessments and other unmapped items.
CHART_ITEMS: Final = (
    Item(220045, 0.09, "bpm", 85, 15),  # heart rate
    Item(220210, 0.08, "insp/min", 19, 5),  # respiratory rate
    Item(220277, 0.08, "%", 96, 2.5),  # SpO2
    Item(220179, 0.045, "mmHg", 120, 20),  # non-invasive systolic
    Item(220180, 0.045, "mmHg", 65, 12),  # non-invasive diastolic
    Item(220181, 0.045, "mmHg", 80, 13),  # non-invasive mean
    Item(220050, 0.03, "mmHg", 118, 20),  # arterial systolic
    Item(220051, 0.03, "mmHg", 60, 10),  # arterial diastolic
    Item(220052, 0.03, "mmHg", 78, 12),  # arterial mean
    Item(223761, 0.02, "°F", 98.6, 1.2, 1),  # temperature in °F
    Item(220739, 0.012, "", 3.5, 0.7),  # GCS eye
    Item(223900, 0.012, "", 3.8, 1.2),  # GCS verbal
    Item(223901, 0.012, "", 5.5, 0.8),  # GCS motor
    Item(223835, 0.01, "%", 45, 12),  # FiO2 in %
    Item(220621, 0.006, "mg/dL", 135, 35),  # glucose (charted)
    Item(226512, 0.0005, "kg", 80, 18, 1),  # admission weight
    Item(226730, 0.0002, "cm", 170, 10),  # height
    Item(220046, 0.05, "bpm", 120, 5),  # heart rate alarm, high (unmapped)
    Item(220047, 0.05, "bpm", 50, 5),  # heart rate alarm, low
    Item(223769, 0.04, "%", 100, 1),  # SpO2 alarm, high
    Item(223770, 0.04, "%", 90, 2),  # SpO2 alarm, low
    Item(224641, 0.03, "", 1, 0),  # alarms on
    Item(220048, 0.06, "", text="SR (Sinus Rhythm)"),  # heart rhythm
    Item(224650, 0.04, "", text="None"),  # ectopy type
    Item(227969, 0.05, "", text="Bed in low position"),  # safety measures
    Item(223792, 0.03, "", text="Pain 0-10"),  # pain assessment
    Item(228928, 0.0263, "", text="Normal"),  # other text item
)

CAREUNITS: Final = (
    "Medical Intensive Care Unit (MICU)",
    "Surgical Intensive Care Unit (SICU)",
    "Cardiac Vascular Intensive Care Unit (CVICU)",
    "Coronary Care Unit (CCU)",
    "Trauma SICU (TSICU)",
    "Medical/Surgical Intensive Care Unit (MICU/SICU)",
    "Neuro Surgical Intensive Care Unit (Neuro SICU)",
)


# --- the generated MIMIC-IV layout ----------------------------------------------------


def _gzip_csv(frame: pl.DataFrame, path: Path) -> None:
    path.write_bytes(
        gzip.compress(frame.write_csv(datetime_format=TIME_FORMAT).encode(), compresslevel=1)
    )


def generate_stays(n_stays: int, seed: int = 0) -> pl.DataFrame:
    """ICU stays, two per subject (the second 30-60 days after the first)."""
    rng = np.random.default_rng(seed)
    index = np.arange(n_stays)
    first_day = rng.uniform(0, 3650, n_stays // 2 + 1)[index // 2]
    day = first_day + np.where(index % 2 == 1, rng.uniform(30, 60, n_stays), 0.0)
    los = np.round(rng.gamma(2.0, 1.5, n_stays) + 0.5, 6)
    return pl.DataFrame(
        {
            "subject_id": 10_000_000 + index // 2,
            "hadm_id": 20_000_000 + index,
            "stay_id": 30_000_000 + index,
            "first_careunit": [CAREUNITS[i % len(CAREUNITS)] for i in range(n_stays)],
            "intime_s": np.round(day * 86400).astype("int64"),
            "los": los,
        }
    ).select(
        "subject_id",
        "hadm_id",
        "stay_id",
        "first_careunit",
        last_careunit=pl.col("first_careunit"),
        intime=pl.lit(EPOCH) + pl.duration(seconds=pl.col("intime_s")),
        outtime=pl.lit(EPOCH) + pl.duration(seconds=pl.col("intime_s") + pl.col("los") * 86400),
        los="los",
    )


def write_small_tables(root: Path, stays: pl.DataFrame, events: int, seed: int = 0) -> None:
    """icustays, patients, admissions, and output and lab events (``events`` rows each)."""
    rng = np.random.default_rng(seed + 1)
    (root / "icu").mkdir(parents=True, exist_ok=True)
    (root / "hosp").mkdir(parents=True, exist_ok=True)
    _gzip_csv(
        stays.with_columns(pl.col("outtime").dt.truncate("1s")), root / "icu" / "icustays.csv.gz"
    )
    died = pl.Series(rng.random(stays.height) < 0.12)
    admissions = stays.select(
        "subject_id",
        "hadm_id",
        admittime=pl.col("intime") - pl.duration(hours=6),
        dischtime=(pl.col("outtime") + pl.duration(days=3)).dt.truncate("1m"),
    ).with_columns(
        deathtime=pl.when(died).then(pl.col("dischtime")),
        admission_type=pl.lit("EW EMER."),
        admit_provider_id=pl.lit("P00000"),
        admission_location=pl.lit("EMERGENCY ROOM"),
        discharge_location=pl.when(died).then(pl.lit("DIED")).otherwise(pl.lit("HOME")),
        insurance=pl.lit("Other"),
        language=pl.lit("ENGLISH"),
        marital_status=pl.lit("MARRIED"),
        race=pl.lit("WHITE"),
        edregtime=pl.lit(None, pl.Datetime("us")),
        edouttime=pl.lit(None, pl.Datetime("us")),
        hospital_expire_flag=died.cast(pl.Int8),
    )
    _gzip_csv(admissions, root / "hosp" / "admissions.csv.gz")
    patients = (
        admissions.group_by("subject_id", maintain_order=True)
        .agg(death=pl.col("deathtime").max(), first=pl.col("admittime").min())
        .select(
            "subject_id",
            gender=pl.when(pl.col("subject_id") % 2 == 0).then(pl.lit("F")).otherwise(pl.lit("M")),
            anchor_age=pl.col("subject_id") % 70 + 20,
            anchor_year=pl.col("first").dt.year(),
            anchor_year_group=pl.lit("2014 - 2016"),
            dod=pl.col("death").dt.date(),
        )
    )
    _gzip_csv(patients, root / "hosp" / "patients.csv.gz")
    chosen = stays[rng.integers(0, stays.height, events)]
    within = pl.Series(rng.uniform(0, 1, events))
    # Labs are drawn from half a stay before to a few days after: some fall outside it.
    around = pl.Series(rng.uniform(-0.5, 1.5, events))

    def moment(fraction: pl.Series) -> pl.Expr:
        seconds = (fraction * pl.col("los") * 86400).round()
        return pl.col("intime") + pl.duration(seconds=seconds)

    _gzip_csv(
        chosen.select(
            "subject_id",
            "hadm_id",
            "stay_id",
            caregiver_id=pl.lit(12345),
            charttime=moment(within),
            storetime=moment(within),
            itemid=pl.lit(226559),
            value=pl.Series(rng.integers(0, 400, events)),
            valueuom=pl.lit("ml"),
        ),
        root / "icu" / "outputevents.csv.gz",
    )
    _gzip_csv(
        chosen.select(
            labevent_id=pl.int_range(pl.len()),
            subject_id="subject_id",
            hadm_id="hadm_id",
            specimen_id=pl.int_range(pl.len()),
            itemid=pl.Series(rng.choice([50912, 50971, 50983, 51222, 51301, 50813], events)),
            order_provider_id=pl.lit(None, pl.String),
            charttime=moment(around),
            storetime=moment(around),
            value=pl.Series(np.round(rng.uniform(0.5, 10, events), 1)).cast(pl.String),
            valuenum=pl.Series(np.round(rng.uniform(0.5, 10, events), 1)),
            valueuom=pl.lit("mg/dL"),
            ref_range_lower=pl.lit(None, pl.Float64),
            ref_range_upper=pl.lit(None, pl.Float64),
            flag=pl.lit(None, pl.String),
            priority=pl.lit("ROUTINE"),
            comments=pl.lit("a comment, with a comma"),
        ),
        root / "hosp" / "labevents.csv.gz",
    )


def chart_chunk(stays: pl.DataFrame, start: int, rows: int, seed: int = 0) -> pl.DataFrame:
    """Chart events ``start`` to ``start + rows``, ROWS_PER_STAY per stay, in stay order."""
    rng = np.random.default_rng([seed, start])
    shares = np.array([item.share for item in CHART_ITEMS])
    pick = rng.choice(len(CHART_ITEMS), rows, p=shares / shares.sum())
    mean = np.array([item.mean for item in CHART_ITEMS])[pick]
    sd = np.array([item.sd for item in CHART_ITEMS])[pick]
    scale = 10.0 ** np.array([item.decimals for item in CHART_ITEMS])[pick]
    number = np.round(rng.normal(mean, sd) * scale) / scale
    is_text = np.array([item.text is not None for item in CHART_ITEMS])[pick]
    texts = [item.text or "" for item in CHART_ITEMS]
    units = [item.unit for item in CHART_ITEMS]
    stay = np.minimum((start + np.arange(rows)) // ROWS_PER_STAY, stays.height - 1)
    chunk = stays[stay].select("subject_id", "hadm_id", "stay_id", "intime", "los")
    minute = np.floor(rng.uniform(0, 1, rows) * chunk["los"].to_numpy() * 1440).astype("int64")
    as_text = (
        pl.when(pl.col("decimals") == 0)
        .then(pl.col("number").cast(pl.Int64).cast(pl.String))
        .otherwise(pl.col("number").round(1).cast(pl.String))
    )
    return chunk.with_columns(
        pick=pl.Series(pick, dtype=pl.Int64),
        number=pl.Series(number),
        decimals=pl.Series(np.log10(scale).astype("int64")),
        is_text=pl.Series(is_text),
        minute=pl.Series(minute),
        store=pl.Series(rng.integers(1, 90, rows)),
    ).select(
        "subject_id",
        "hadm_id",
        "stay_id",
        caregiver_id=pl.Series(rng.integers(10_000, 99_999, rows)),
        charttime=pl.col("intime").dt.truncate("1m") + pl.duration(minutes=pl.col("minute")),
        storetime=pl.col("intime").dt.truncate("1m")
        + pl.duration(minutes=pl.col("minute") + pl.col("store")),
        itemid=pl.col("pick").replace_strict(
            dict(enumerate(item.itemid for item in CHART_ITEMS)), return_dtype=pl.Int64
        ),
        value=pl.when(pl.col("is_text"))
        .then(pl.col("pick").replace_strict(dict(enumerate(texts)), return_dtype=pl.String))
        .otherwise(as_text),
        valuenum=pl.when(~pl.col("is_text")).then(as_text),
        valueuom=pl.col("pick").replace_strict(dict(enumerate(units)), return_dtype=pl.String),
        warning=pl.lit(0),
    )


def _compressed_chunk(stays: pl.DataFrame, start: int, rows: int, seed: int) -> bytes:
    frame = chart_chunk(stays, start, rows, seed)
    text = frame.write_csv(include_header=start == 0, datetime_format=TIME_FORMAT)
    # Each chunk is its own gzip member; gzip readers read the members as one stream.
    return gzip.compress(text.encode(), compresslevel=1)


def generate_mimic(root: Path, chartevents_rows: int, seed: int = 0, progress: bool = True) -> None:
    """Write a MIMIC-IV layout with ``chartevents_rows`` chart events under ``root``."""
    n_stays = max(4, -(-chartevents_rows // ROWS_PER_STAY))
    stays = generate_stays(n_stays, seed)
    write_small_tables(root, stays, max(10, int(chartevents_rows * SMALL_TABLE_RATIO)), seed)
    path = root / "icu" / "chartevents.csv.gz"
    started = time.perf_counter()
    workers = max(1, min(4, os.cpu_count() or 1))
    pending: deque[Future[bytes]] = deque()
    with ThreadPoolExecutor(workers) as pool, path.open("wb") as out:
        for start in range(0, chartevents_rows, CHUNK_ROWS):
            rows = min(CHUNK_ROWS, chartevents_rows - start)
            pending.append(pool.submit(_compressed_chunk, stays, start, rows, seed))
            while len(pending) > workers:
                out.write(pending.popleft().result())
            done = start + rows
            if progress and done % 5_000_000 < CHUNK_ROWS:
                seconds = time.perf_counter() - started
                print(f"  generated {done / 1e6:.1f} M chart events in {seconds:.0f} s", flush=True)
        while pending:
            out.write(pending.popleft().result())


# --- measuring a conversion -----------------------------------------------------------


@dataclass
class Measurement:
    """One conversion: what it converted, how long it took, its peak memory."""

    name: str
    rows: int
    stays: int
    events: int
    seconds: float
    rows_per_s: float
    peak_rss_mib: float
    input_mib: float


#: Runs the command line in the child, then writes the peak resident memory of the
#: child's own process image (Linux ``VmHWM``, KiB) to the file named first. The rusage
#: of the child will not do: it also counts the pages it shared with this (larger)
#: process between fork and exec.
CHILD: Final = """
import sys
from pathlib import Path
from bedside.cli import main
code = main(sys.argv[2:])
status = Path("/proc/self/status")
if status.exists():
    lines = status.read_text().splitlines()
    Path(sys.argv[1]).write_text(next(l.split()[1] for l in lines if l.startswith("VmHWM:")))
sys.exit(code)
"""


def _peak_mib(peak_file: Path, usage: resource.struct_rusage) -> float:
    if peak_file.is_file():
        return int(peak_file.read_text()) / 1024
    # Without /proc: the rusage, an upper bound (Linux counts KiB, macOS bytes).
    return usage.ru_maxrss / 2**20 if sys.platform == "darwin" else usage.ru_maxrss / 1024


def _size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def convert_in_child(
    name: str, source: str, path: Path, out: Path, extra: list[str]
) -> Measurement:
    """Run ``bedside data convert`` in a child process and measure it."""
    argv = ["data", "convert", source, str(path), *extra, "--out", str(out)]
    print(f"\n== {name}: bedside {' '.join(argv)}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    peak_file = out.parent / f"{out.name}.peak-kib"
    peak_file.unlink(missing_ok=True)
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(peak_file), *argv])
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise BedsideError(f"{name}: the conversion failed (exit code {child.returncode})")
    report = json.loads((out / "conversion_report.json").read_text())
    return Measurement(
        name=name,
        rows=report["rows_read"],
        stays=report["stays"],
        events=report["events"],
        seconds=round(seconds, 2),
        rows_per_s=round(report["rows_read"] / seconds),
        peak_rss_mib=round(_peak_mib(peak_file, usage), 1),
        input_mib=round(_size_mib(path), 1),
    )


def _physionet(folder: Path, work: Path) -> list[Measurement]:
    results = []
    for part in ("a", "b"):
        results.append(
            convert_in_child(
                f"physionet2012 set-{part}",
                "physionet2012",
                folder / f"set-{part}",
                work / f"physionet2012-{part}",
                ["--outcomes", str(folder / f"Outcomes-{part}.txt")],
            )
        )
    return results


def _mimic(rows: int, work: Path) -> Measurement:
    root = work / f"mimic-iv-{rows}"
    marker = root / "GENERATED"
    if marker.is_file():
        print(f"\n== reusing {root} ({rows:,} chart events)", flush=True)
    else:
        print(f"\n== generating {root} ({rows:,} chart events)", flush=True)
        started = time.perf_counter()
        generate_mimic(root, rows)
        marker.write_text(f"{rows}\n")
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    return convert_in_child(
        f"mimic-iv generated, {rows:,} chart events", "mimic-iv", root, work / f"out-{rows}", []
    )


def _table(results: list[Measurement]) -> str:
    lines = [
        f"{'conversion':<44} {'input MiB':>9} {'rows':>12} {'stays':>7} {'events':>12} "
        f"{'seconds':>8} {'rows/s':>11} {'peak RSS MiB':>12}"
    ]
    for m in results:
        lines.append(
            f"{m.name:<44} {m.input_mib:>9.1f} {m.rows:>12,} {m.stays:>7,} {m.events:>12,} "
            f"{m.seconds:>8.1f} {m.rows_per_s:>11,} {m.peak_rss_mib:>12.0f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    results: list[Measurement] = []
    if args.physionet is not None:
        results += _physionet(args.physionet, work)
    rows = args.chartevents_rows
    for size in sorted({max(1, rows // 4), rows}):
        results.append(_mimic(size, work))
    print("\n" + _table(results))
    if args.json is not None:
        figures = {
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "polars": pl.__version__,
                "pyarrow": __import__("pyarrow").__version__,
            },
            "conversions": [asdict(m) for m in results],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
