"""``bedside data convert SOURCE PATH --out DIR``: dispatch to the source's loader."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from bedside.training.data.canonical import ConversionReport

#: Source name on the command line -> module in this package with ``convert(...)``.
LOADERS = {
    "physionet2012": "physionet2012",
    "mimic-iv": "mimic_iv",
    "meds": "meds",
    "omop": "omop",
}


def run(args: argparse.Namespace) -> int:
    loader = importlib.import_module(f"bedside.training.data.{LOADERS[args.source]}")
    options = {
        "on_bad_row": "skip" if args.skip_bad_rows else "error",
        "keep_unmapped": args.keep_unmapped,
    }
    if args.source == "physionet2012":
        options["outcomes"] = args.outcomes
    if args.source == "omop":
        options["schema"] = args.schema
        options["vocabulary_schema"] = args.vocabulary_schema
        options["timezone"] = args.timezone
        if args.icu_concepts:
            options["icu_concepts"] = tuple(args.icu_concepts)
        source: str | Path = args.path
    else:
        source = args.path
    report: ConversionReport = loader.convert(source, args.out, **options)
    print(report.summary())
    print(
        f"wrote {args.out / 'events.parquet'}, {args.out / 'stays.parquet'} "
        f"and {args.out / 'conversion_report.json'}"
    )
    return 0
