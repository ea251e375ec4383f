"""The ``bedside`` console entry point.

Each subcommand names the function that runs it as ``"module:function"``; the module is
imported only when that subcommand runs, so ``bedside --help`` stays fast and never
imports torch or bytewax.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bedside import __version__
from bedside.errors import BedsideError

Handler = Callable[[argparse.Namespace], int]


def _add_bad_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="count and report malformed rows instead of stopping at the first one",
    )
    parser.add_argument(
        "--keep-unmapped",
        action="store_true",
        help="keep values whose source code is not in the concept dictionary, "
        "coded '<system>//<code>' (they are always counted and reported)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bedside",
        description="Streaming bedside monitoring for intensive care units.",
    )
    parser.add_argument("--version", action="version", version=f"bedside {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run a simulated ward end to end, no Kafka or Docker needed"
    )
    demo.add_argument("--beds", type=int, default=8, help="beds in the ward (default 8)")
    demo.add_argument(
        "--hours", type=float, default=6.0, help="hours of ward time to simulate (default 6)"
    )
    demo.add_argument("--seed", type=int, default=2026)
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("bedside-demo"),
        help="output folder (default ./bedside-demo)",
    )
    demo.set_defaults(handler="bedside.demo:run")

    data = commands.add_parser(
        "data", help="convert sources to the canonical tables, simulate stays"
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    convert = data_commands.add_parser(
        "convert",
        help="write DIR/events.parquet and DIR/stays.parquet from a source",
        description="Convert a source into the canonical events and stays tables.",
    )
    sources = convert.add_subparsers(dest="source", required=True, metavar="SOURCE")

    physionet = sources.add_parser(
        "physionet2012", help="PhysioNet/CinC Challenge 2012 set directory (one .txt per stay)"
    )
    physionet.add_argument("path", type=Path, help="set directory, e.g. .../physionet2012/set-a")
    physionet.add_argument("--outcomes", type=Path, help="the set's Outcomes-*.txt file")

    mimic = sources.add_parser("mimic-iv", help="MIMIC-IV root with hosp/ and icu/ CSV folders")
    mimic.add_argument("path", type=Path, help="root folder, e.g. .../mimic-iv-demo-2.2")

    meds = sources.add_parser("meds", help="MEDS-style event parquet file or folder of them")
    meds.add_argument("path", type=Path)

    omop = sources.add_parser("omop", help="OMOP CDM database (an EDS) over SQL")
    omop.add_argument(
        "path",
        metavar="URL",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://host/db or sqlite:///cdm.db",
    )
    omop.add_argument("--schema", help="database schema holding the CDM tables")
    omop.add_argument(
        "--vocabulary-schema", help="schema holding the vocabulary (concept) table, if not --schema"
    )
    omop.add_argument(
        "--icu-concept",
        type=int,
        action="append",
        dest="icu_concepts",
        metavar="CONCEPT_ID",
        help="visit_detail_concept_id of ICU stays (repeatable; default 32037 Intensive Care)",
    )
    omop.add_argument(
        "--timezone", default="UTC", help="zone of timestamps stored without one (default UTC)"
    )

    for source in (physionet, mimic, meds, omop):
        source.add_argument("--out", type=Path, required=True, help="output folder")
        _add_bad_input_options(source)
        source.set_defaults(handler="bedside.training.data.convert:run")

    simulate = data_commands.add_parser(
        "simulate", help="write a seeded synthetic ICU cohort in the canonical format"
    )
    simulate.add_argument("--stays", type=int, default=500, help="number of stays (default 500)")
    simulate.add_argument("--hours", type=float, default=48.0, help="hours per stay (default 48)")
    simulate.add_argument("--seed", type=int, default=2026)
    simulate.add_argument(
        "--monitor-hz",
        type=float,
        default=0.0,
        help="also write bedside-monitor numerics at this rate (e.g. 1); default charted only",
    )
    simulate.add_argument("--out", type=Path, required=True, help="output folder")
    simulate.set_defaults(handler="bedside.replay.simulator:run_cli")

    schemas = commands.add_parser("schemas", help="message schemas for consumers outside Python")
    schemas_commands = schemas.add_subparsers(
        dest="schemas_command", required=True, metavar="ACTION"
    )
    export = schemas_commands.add_parser("export", help="write one JSON Schema file per topic")
    export.add_argument("out", type=Path, help="output folder")
    export.set_defaults(handler="bedside.schemas.export:run")

    bench = commands.add_parser("bench", help="benchmarks (figures go to BENCHMARKS.md)")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    bench_convert = bench_commands.add_parser(
        "convert",
        help="conversion time and peak memory: PhysioNet 2012 and a large generated table",
    )
    bench_convert.add_argument(
        "--physionet", type=Path, help="physionet2012 folder with set-a/, set-b/ and outcomes"
    )
    bench_convert.add_argument(
        "--chartevents-rows",
        type=int,
        default=20_000_000,
        help="rows of the generated MIMIC-IV chartevents table (default 20 M)",
    )
    bench_convert.add_argument("--work", type=Path, default=Path("bench-work"))
    bench_convert.add_argument("--json", type=Path, help="write the figures here")
    bench_convert.set_defaults(handler="bedside.training.data.bench:run")
    return parser


def _resolve(target: str) -> Handler:
    module_name, _, function = target.partition(":")
    handler: Handler = getattr(importlib.import_module(module_name), function)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _resolve(args.handler)
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (BedsideError, OSError) as error:
        # Bad input files, unreachable databases: one clear line, no traceback.
        print(f"bedside: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
