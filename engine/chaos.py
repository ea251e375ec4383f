"""``bedside bench chaos``: faults during a live replay, then proof that nothing was lost.

While ``bedside replay simulate`` publishes a ward (recorded times kept, so a replay
started again repeats exactly the same records), the bench, with a seeded schedule:

* kills the engine with SIGKILL ``--kills`` times at random points and restarts it
  from its recovery store;
* cuts the broker off for ``--outage`` seconds (every client connects through a TCP
  proxy the bench closes and reopens: the broker's in-memory storage would not survive
  a real restart here, a network cut exercises the same client paths);
* kills the replay mid-stream and starts it again from the beginning (every record it
  had sent comes again: duplicates);
* stalls the engine (SIGSTOP, then SIGCONT ``--stall`` seconds later), as a slow
  consumer falls behind.

Then it lets the last engine catch up and checks the outputs: every stay's scores fall
a minute apart from admission to discharge with no gap (see
:func:`bedside.engine.soak.check_minutes`), nothing was dead-lettered (the input has no
bad records), and no alert was raised twice: each bed's alert episodes (raised to
resolved) do not overlap, so a repeated record can only repeat an id, never add one.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bedside.engine.bench import _metric, _small_model, create_topics
from bedside.engine.soak import check_minutes, read_topic
from bedside.replay.tansu import TansuBroker, free_port
from bedside.schemas.messages import ALERTS_TOPIC, DEADLETTER_TOPIC, decode

BEDSIDE = str(Path(sys.executable).with_name("bedside"))


class Proxy:
    """A TCP forwarder to the broker that can be cut (every connection closed, new ones
    refused) and restored."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self._open = threading.Event()
        self._open.set()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            for end in self._sockets:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                    end.close()
                except OSError:
                    pass
            self._sockets = []

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.cut()
        self._server.close()


def alert_overlaps(servers: str) -> dict[str, Any]:
    """Risk-alert episodes per bed and stay; overlapping ones mean an alert raised twice."""
    episodes: dict[str, dict[str, list[float]]] = defaultdict(dict)
    records = 0
    for value in read_topic(servers, ALERTS_TOPIC):
        alert = decode(ALERTS_TOPIC, value)
        records += 1
        if ":risk:" not in alert.alert_id:
            continue
        stay = f"{alert.bed}/{alert.stay_id}"
        span = episodes[stay].setdefault(alert.alert_id, [float("inf"), float("inf")])
        moment = alert.time.timestamp()
        if alert.state == "raised":
            span[0] = min(span[0], moment)
        elif alert.state == "resolved":
            span[1] = min(span[1], moment)
    overlaps = 0
    distinct = 0
    for spans in episodes.values():
        ordered = sorted(spans.values())
        distinct += len(ordered)
        overlaps += sum(1 for a, b in itertools.pairwise(ordered) if b[0] < a[1])
    return {"alert_records": records, "risk_alerts": distinct, "overlapping": overlaps}


def chaos(
    *,
    beds: int,
    hours: float,
    speed: float,
    kills: int,
    outage_s: float,
    stall_s: float,
    seed: int,
    model: Path | None = None,
    work: Path,
    log: Any = print,
) -> dict[str, Any]:
    """Run the schedule (see the module docstring); the checks and what was done."""
    model = model or _small_model(work)
    proxy_port = free_port()
    broker = TansuBroker.start(advertised_port=proxy_port)
    proxy = Proxy(proxy_port, broker.port)
    servers = f"127.0.0.1:{proxy_port}"
    rng = random.Random(seed)
    done: list[str] = []
    engine: subprocess.Popen[bytes] | None = None
    port = free_port()

    def start_engine() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                BEDSIDE,
                "engine",
                "--model",
                str(model),
                "--bootstrap-servers",
                servers,
                "--no-future-limit",
                "--recovery",
                str(work / "recovery"),
                "--epoch",
                "0.5",
                "--metrics-port",
                str(port),
                "--log-every",
                "3600",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_replay() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                BEDSIDE,
                "replay",
                "simulate",
                "--beds",
                str(beds),
                "--hours",
                str(hours),
                "--monitor-hz",
                str(1 / 60),
                "--los-scale",
                "0.2",
                "--speed",
                str(speed),
                "--keep-times",
                "--seed",
                str(seed),
                "--bootstrap-servers",
                servers,
                "--progress",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    try:
        create_topics(servers, 2)
        engine = start_engine()
        replay = start_replay()
        length = hours * 3600 / speed
        # The faults, at seeded random moments of the replay (the kills spread over it).
        plan = [(rng.uniform(0.05, 0.95) * length, "kill") for _ in range(kills)]
        plan += [
            (rng.uniform(0.2, 0.4) * length, "outage"),
            (rng.uniform(0.45, 0.55) * length, "replay-restart"),
            (rng.uniform(0.6, 0.8) * length, "stall"),
        ]
        started = time.monotonic()
        for at, fault in sorted(plan):
            delay = started + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if fault == "kill":
                engine.kill()
                engine.wait()
                time.sleep(rng.uniform(0.2, 1.5))
                engine = start_engine()
            elif fault == "outage":
                proxy.cut()
                time.sleep(outage_s)
                proxy.restore()
            elif fault == "replay-restart":
                replay.kill()
                replay.wait()
                replay = start_replay()
            else:
                engine.send_signal(signal.SIGSTOP)
                time.sleep(stall_s)
                engine.send_signal(signal.SIGCONT)
            done.append(f"{fault} at {time.monotonic() - started:.1f} s")
            log(f"chaos: {done[-1]}")
        if replay.wait(timeout=3600) != 0:
            raise RuntimeError("the replay failed")
        # Let the last engine catch up: its counters stop moving.
        last, still = -1.0, 0
        while still < 5:
            time.sleep(1.0)
            now = _metric(port, "bedside_engine_messages_total")
            still = still + 1 if now == last and now >= 0 else 0
            last = now
        minutes = check_minutes(servers, lateness_s=5.0)
        alerts = alert_overlaps(servers)
        dead = len(read_topic(servers, DEADLETTER_TOPIC))
    finally:
        if engine is not None and engine.poll() is None:
            engine.send_signal(signal.SIGCONT)
            engine.terminate()
            engine.wait(timeout=30)
        proxy.close()
        broker.stop()
    ok = minutes["ok"] and alerts["overlapping"] == 0 and dead == 0
    return {
        "beds": beds,
        "ward_hours": hours,
        "speed": speed,
        "faults": done,
        "minutes": minutes,
        "alerts": alerts,
        "dead_letters": dead,
        "ok": ok,
    }


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bedside-chaos-") as scratch:
        result = chaos(
            beds=args.beds,
            hours=args.hours,
            speed=args.speed,
            kills=args.kills,
            outage_s=args.outage,
            stall_s=args.stall,
            seed=args.seed,
            model=args.model,
            work=Path(scratch),
        )
    minutes, alerts = result["minutes"], result["alerts"]
    print(
        f"chaos: {len(result['faults'])} faults; {minutes['bed_minutes_scored']:,} bed-minutes "
        f"in {minutes['stays_scored']} stays: gaps {minutes['gaps']}, late starts "
        f"{minutes['late_starts']}, early stops {minutes['early_stops']}, never scored "
        f"{minutes['stays_never_scored']}, repeated records {minutes['repeated_scores']}; "
        f"{alerts['risk_alerts']} risk alerts, {alerts['overlapping']} raised twice; "
        f"dead letters {result['dead_letters']}: {'converged' if result['ok'] else 'FAILED'}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1
