"""``bedside ward``: the live ward page, served by aiohttp, fed from Kafka or in process.

One self-contained page (HTML, CSS and JavaScript shipped in ``static/``; no CDN, inline
SVG sparklines) shows every bed and the alert list. It keeps itself current through
server-sent events:

``GET /``                the page
``GET /events``          ``text/event-stream``: ``snapshot`` (the whole ward) on connect, then
                         ``bed``, ``alert`` and ``ward`` events with what changed, at most
                         every ``tick_s`` seconds, and a comment line as heartbeat
``GET /api/ward``        the same snapshot as JSON
``POST /api/ack``        ``{"alert_id": ..., "by": ..., "note": ...}`` (JSON): acknowledge an
                         open alert; 202 once the acknowledgement is published (on Kafka,
                         ``icu.alerts.ack.v1``), 4xx with ``{"error": ...}`` when refused

The server binds to 127.0.0.1 unless told otherwise. On a loopback address it answers
only requests addressed to a loopback name (no DNS rebinding), refuses acknowledgements
from another origin and sends a strict Content-Security-Policy.

:class:`WardServer` serves a :class:`~bedside.ward.feed.WardFeed` from a background
thread; see :mod:`bedside.ward.feed` for the in-process API the demo uses. With Kafka,
:func:`follow_kafka` is the loop that feeds it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from importlib import resources
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

from aiohttp import web

from bedside.errors import BedsideError
from bedside.schemas.messages import (
    ALERT_ACKS_TOPIC,
    ALERTS_TOPIC,
    ANOMALIES_TOPIC,
    PATIENT_TOPIC,
    SCORES_TOPIC,
    VITALS_TOPIC,
    MessageError,
    decode,
)
from bedside.ward.feed import AckRefused, WardFeed
from bedside.ward.kafka import TopicReader

log = logging.getLogger(__name__)

#: What the page reads (waveforms are not drawn: the numerics derived from them are).
WARD_TOPICS: Final = (
    VITALS_TOPIC,
    SCORES_TOPIC,
    ANOMALIES_TOPIC,
    ALERTS_TOPIC,
    ALERT_ACKS_TOPIC,
    PATIENT_TOPIC,
)
STATIC: Final = {
    "index.html": "text/html",
    "ward.css": "text/css",
    "ward.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})

FEED = web.AppKey("feed", WardFeed)
CLOSING = web.AppKey("closing", asyncio.Event)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def make_app(
    feed: WardFeed, *, loopback_only: bool = True, tick_s: float = 0.25, heartbeat_s: float = 15.0
) -> web.Application:
    """The page's aiohttp application (see the module docstring for the routes)."""
    files = {
        name: (resources.files("bedside.ward") / "static" / name).read_bytes() for name in STATIC
    }

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if loopback_only and (request.url.host or "").strip("[]") not in LOOPBACK_NAMES:
            return web.json_response({"error": "this page answers on localhost only"}, status=421)
        response = await handler(request)
        if not response.prepared:  # the event stream sent its headers already
            response.headers.update(SECURITY_HEADERS)
        return response

    async def static(request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        if name not in files:
            raise web.HTTPNotFound()
        return web.Response(
            body=files[name],
            content_type=STATIC[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def ward(request: web.Request) -> web.Response:
        return web.json_response(feed.snapshot(), headers={"Cache-Control": "no-store"})

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        response.headers.update(SECURITY_HEADERS)
        await response.prepare(request)
        closing = request.app[CLOSING]
        snapshot = feed.snapshot()
        version = snapshot["ward"]["version"]
        await response.write(_event("snapshot", snapshot))
        quiet_since = time.monotonic()
        with contextlib.suppress(ConnectionError):
            while not closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), tick_s)
                version, beds, alerts, summary = feed.changes_since(version)
                chunks = [_event("bed", bed) for bed in beds]
                chunks += [_event("alert", alert) for alert in alerts]
                if summary is not None:
                    chunks.append(_event("ward", summary))
                if not chunks and time.monotonic() - quiet_since > heartbeat_s:
                    chunks.append(b": still here\n\n")
                if chunks:
                    await response.write(b"".join(chunks))
                    quiet_since = time.monotonic()
        return response

    async def acknowledge(request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            return _error(403, "acknowledgements are accepted from this page only")
        if request.content_type != "application/json":
            return _error(415, "send the acknowledgement as application/json")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "give alert_id, by and note in a JSON object")
        fields = {key: body.get(key, "") for key in ("alert_id", "by", "note")}
        if not all(isinstance(value, str) for value in fields.values()):
            return _error(400, "give alert_id, by and note as strings")
        loop = asyncio.get_running_loop()
        try:
            # The callback may block until Kafka has the record: off the event loop.
            ack = await loop.run_in_executor(
                None, partial(feed.acknowledge, fields["alert_id"], fields["by"], fields["note"])
            )
        except AckRefused as refused:
            return _error(AckRefused.HTTP_STATUS[refused.why], str(refused))
        except BedsideError as error:
            log.warning("acknowledgement of %s failed: %s", fields["alert_id"], error)
            return _error(502, str(error))
        sent = {"status": "sent", "ack": json.loads(ack.model_dump_json())}
        return web.json_response(sent, status=202)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "version": feed.version})

    async def closing_signal(app: web.Application) -> None:
        app[CLOSING].set()

    app = web.Application(middlewares=[guard])
    app[FEED] = feed
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(closing_signal)
    app.router.add_get("/", static)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/events", events)
    app.router.add_get("/api/ward", ward)
    app.router.add_post("/api/ack", acknowledge)
    app.router.add_get("/healthz", health)
    return app


def _event(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


class WardServer:
    """Serves the ward page of ``feed`` from a background thread (``with`` block or start/stop).

    ``port=0`` takes a free port; :attr:`url` says which.
    """

    def __init__(
        self,
        feed: WardFeed,
        *,
        host: str = "127.0.0.1",
        port: int = 8050,
        tick_s: float = 0.25,
    ) -> None:
        self.feed = feed
        self.host = host
        self.port = port
        self._tick_s = tick_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._open())
            except BaseException as error:  # reported to start()'s caller
                failure.append(error)
                loop.close()
                ready.set()
                return
            ready.set()
            loop.run_forever()
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="ward-page", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    async def _open(self) -> None:
        app = make_app(self.feed, loopback_only=_is_loopback(self.host), tick_s=self._tick_s)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def follow_kafka(reader: TopicReader, feed: WardFeed, stop: threading.Event | None = None) -> None:
    """Feed the ward from Kafka until ``stop`` is set (or forever)."""
    while stop is None or not stop.is_set():
        for record in reader.poll(0.5):
            try:
                message = decode(record.topic, record.value)
            except MessageError as error:
                # Where it was, not what it said: a payload may carry patient data.
                log.warning(
                    "skipped a record at %s[%d]@%d: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    error.reason.split(":")[0],
                )
                feed.reject()
                continue
            feed.publish(record.topic, message)


def run(args: argparse.Namespace) -> int:
    """``bedside ward``: the page on ``--host``/``--port``, fed from Kafka."""
    from bedside.settings import load_kafka_settings
    from bedside.ward.audit import AuditStore, load_audit_settings, shown
    from bedside.ward.kafka import AckPublisher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # its connection chatter
    settings = load_kafka_settings(bootstrap_servers=args.bootstrap_servers)
    audit = AuditStore.from_settings(load_audit_settings(args.audit_db))
    reader = TopicReader(
        settings,
        list(WARD_TOPICS),
        start="earliest" if args.from_beginning else "latest",
        connect_timeout_s=args.connect_timeout,
    )
    publisher = AckPublisher(settings, connect_timeout_s=args.connect_timeout)
    feed = WardFeed(
        acknowledge=publisher, audit=audit, source=f"Kafka {','.join(settings.servers())}"
    )
    server = WardServer(feed, host=args.host, port=args.port)
    try:
        server.start()
        print(f"ward page at {server.url}  (Ctrl-C to stop)", file=sys.stderr)
        if audit is not None:
            print(f"alerts and acknowledgements recorded in {shown(audit.url)}", file=sys.stderr)
        follow_kafka(reader, feed)
    finally:
        server.stop()
        reader.close()
        publisher.close()
        if audit is not None:
            audit.close()
    return 0
