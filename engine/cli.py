"""``bedside engine``: the dataflow on Kafka, with recovery, workers and metrics."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path
from typing import Any

from bedside.engine.settings import BATCH_SIZE


def settings_from(args: argparse.Namespace) -> Any:
    """EngineSettings from ``BEDSIDE_ENGINE_*`` with the command line on top."""
    from pydantic import ValidationError

    from bedside.engine.settings import EngineError, EngineSettings

    given: dict[str, Any] = {
        "model_dir": args.model,
        "detectors_dir": args.detectors,
        "score_every_s": args.score_every,
        "lateness_s": args.lateness,
        "beds": frozenset(args.beds.split(",")) if args.beds else None,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if args.alert_on_risk is not None:
        given["alerts"] = {"on_risk": args.alert_on_risk}
    if args.no_detect:
        given["detect"] = False
    if args.no_future_limit:
        given["future_limit_s"] = None
    try:
        return EngineSettings(**given)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:3]
        )
        raise EngineError(f"invalid engine settings: {details}") from None


def run(args: argparse.Namespace) -> int:
    from bytewax._bytewax import cli_main

    from bedside.engine import metrics
    from bedside.engine.bed import Engine
    from bedside.engine.flow import epoch, kafka_flow, recovery_config, settle_memory
    from bedside.engine.settings import EngineError
    from bedside.settings import load_kafka_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = settings_from(args)
    if settings.model_dir is None:
        raise EngineError("bedside engine needs --model MODEL_DIR (bedside train survival)")
    kafka = load_kafka_settings(bootstrap_servers=args.bootstrap_servers)
    import torch

    # One thread per worker: a single window is scored fastest without thread hand-offs.
    torch.set_num_threads(1)
    engine = Engine(settings)
    settle_memory()
    flow = kafka_flow(
        engine,
        kafka,
        from_start=not args.from_end,
        batch_size=args.batch_size,
        recovery=args.recovery is not None,
    )
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(args.log_every):
            metrics.log_totals()

    def reload() -> None:
        while not stop.wait(args.reload_every):
            try:
                news = engine.reload()
            except Exception as error:  # a broken new version must not stop the engine
                news = f"could not load the registry's current model: {error}"
            if news:
                metrics.LOG.warning(news)

    threading.Thread(target=report, daemon=True).start()
    if engine.registry is not None:
        threading.Thread(target=reload, daemon=True).start()
    recovery = None
    if args.recovery:
        recovery = recovery_config(args.recovery, args.recovery_partitions)
    addresses = args.addresses.split(",") if args.addresses else None
    metrics.LOG.info(
        "engine starting: model %s, %d worker(s) per process%s",
        engine.model_id,
        args.workers,
        f", process {args.process_id} of {len(addresses)}" if addresses else "",
    )
    try:
        cli_main(  # type: ignore[no-untyped-call]
            flow,
            workers_per_process=args.workers,
            process_id=args.process_id if addresses else None,
            addresses=addresses,
            epoch_interval=epoch(args.epoch),
            recovery_config=recovery,
        )
    finally:
        stop.set()
        metrics.log_totals()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        help="survival model folder (bedside train survival), or a model registry "
        "(bedside retrain): its current model is served and a newly promoted one is "
        "picked up while running",
    )
    parser.add_argument(
        "--reload-every",
        type=float,
        default=30.0,
        help="seconds between checks of the registry for a promoted model (30)",
    )
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka brokers (overrides BEDSIDE_KAFKA_BOOTSTRAP_SERVERS; TLS/SASL from "
        "BEDSIDE_KAFKA_* variables)",
    )
    parser.add_argument(
        "--detectors", type=Path, help="detector folder (default: the model folder's, if any)"
    )
    parser.add_argument("--no-detect", action="store_true", help="do not run the detectors")
    parser.add_argument("--score-every", type=float, help="seconds between scores (default 60)")
    parser.add_argument(
        "--lateness", type=float, help="seconds a minute waits for late values (default 5)"
    )
    parser.add_argument(
        "--alert-on-risk",
        type=float,
        help="mortality risk that raises an alert (default: the model's threshold)",
    )
    parser.add_argument("--beds", help="comma-separated beds to monitor (default: any)")
    parser.add_argument(
        "--no-future-limit",
        action="store_true",
        help="accept values timed far after the wall clock (accelerated replays)",
    )
    parser.add_argument(
        "--from-end", action="store_true", help="start at the topics' end (default: beginning)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"records per poll of a partition (default {BATCH_SIZE})",
    )
    parser.add_argument(
        "--recovery",
        type=Path,
        help="recovery folder (SQLite); resume from it after a crash",
    )
    parser.add_argument(
        "--recovery-partitions", type=int, default=1, help="recovery partitions (first run)"
    )
    parser.add_argument("--epoch", type=float, default=10.0, help="seconds between snapshots")
    parser.add_argument("-w", "--workers", type=int, default=1, help="workers per process")
    parser.add_argument("-i", "--process-id", type=int, default=0, help="this process's index")
    parser.add_argument(
        "-a", "--addresses", help="host:port of every process, comma-separated (cluster)"
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics here")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="metrics address")
    parser.add_argument("--log-every", type=float, default=30.0, help="seconds between log lines")
