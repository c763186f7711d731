"""The HTTP endpoint of a producer or consumer: ``/metrics`` and ``/healthz`` on one port.

``GET /metrics`` is prometheus_client's WSGI app over the process's registry;
``GET /healthz`` answers 200 ``ok`` or 503 with the one-line reason of
common.health (the rules are there). Everything else is 404. The server runs
in daemon threads (one per request), never on the event loop: a scrape or a
health check costs the pipeline nothing but the GIL, and a stalled event loop
still gets a 503 instead of a hanging request.

Listens on METRICS_HOST:METRICS_PORT (127.0.0.1 unless told otherwise; compose
sets 0.0.0.0); METRICS_PORT=0 serves nothing.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from .config import EXIT_CONFIG, Settings
from .health import HealthFacts, Verdict

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["HEARTBEAT_SECONDS", "Endpoint", "heartbeat", "serve_endpoint", "serve_or_exit"]

# How often the event loop proves it runs (common.health's "event loop stalled" rule).
HEARTBEAT_SECONDS: Final = 0.5


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client never holds up the process's exit


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds are not log lines."""


def _app(registry: CollectorRegistry, health: Callable[[], Verdict]) -> WSGIApplication:
    metrics = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            verdict = health()
            status = "200 OK" if verdict.ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [verdict.reason.encode() + b"\n"]
        if path in ("/", "/metrics"):
            body: Iterable[bytes] = metrics(environ, start_response)
            return body
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class Endpoint:
    """A running endpoint; :meth:`close` stops it."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: Callable[[], Verdict]
    ) -> None:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        server_class = type("_Bound", (_Server,), {"address_family": family})
        self._server: WSGIServer = make_server(
            str(address[0]), port, _app(registry, health), server_class, handler_class=_Quiet
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-endpoint", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)


def serve_endpoint(
    host: str, port: int, registry: CollectorRegistry, health: Callable[[], Verdict]
) -> Endpoint | None:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` from daemon threads; port 0 serves
    nothing (returns None).

    Raises OSError when the address cannot be bound (port taken, host not local or
    not resolvable).
    """
    return Endpoint(host, port, registry, health) if port else None


def serve_or_exit(
    settings: Settings, registry: CollectorRegistry, health: Callable[[], Verdict]
) -> Endpoint | None:
    """:func:`serve_endpoint` on METRICS_HOST:METRICS_PORT; when that address cannot be
    bound, a one-line message naming both variables on stderr and exit status 2."""
    try:
        return serve_endpoint(settings.metrics_host, settings.metrics_port, registry, health)
    except OSError as error:
        print(
            f"searchsync: configuration error: cannot listen on METRICS_HOST="
            f"{settings.metrics_host!r} METRICS_PORT={settings.metrics_port}: {error}",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG) from None


async def heartbeat(facts: HealthFacts, every: float = HEARTBEAT_SECONDS) -> None:
    """Record a tick every ``every`` seconds until cancelled: while the event loop runs
    its tasks, /healthz sees fresh ticks; when something blocks it, they stop."""
    while True:
        facts.tick()
        await asyncio.sleep(every)
