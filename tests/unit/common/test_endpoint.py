"""common/endpoint.py: /metrics and /healthz on one real loopback socket (no other service)."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from searchsync.common.config import load_settings
from searchsync.common.endpoint import Endpoint, heartbeat, serve_endpoint, serve_or_exit
from searchsync.common.health import HealthFacts, Limits, Verdict


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("searchsync_test_things", "things", registry=registry).inc(3)
    return registry


@pytest.fixture
def endpoint(registry: CollectorRegistry) -> Iterator[tuple[Endpoint, list[Verdict]]]:
    verdicts = [Verdict(True, "ok")]
    # port 0 straight to the class: an ephemeral port (serve_endpoint reads 0 as "off")
    server = Endpoint("127.0.0.1", 0, registry, lambda: verdicts[-1])
    try:
        yield server, verdicts
    finally:
        server.close()


def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_and_health_share_the_port(endpoint: tuple[Endpoint, list[Verdict]]) -> None:
    server, verdicts = endpoint
    status, body = get(server.port, "/metrics")
    assert status == 200 and "searchsync_test_things_total 3.0" in body
    assert get(server.port, "/healthz") == (200, "ok\n")
    verdicts.append(Verdict(False, "Redis failing for 12s: Connection refused"))
    assert get(server.port, "/healthz") == (503, "Redis failing for 12s: Connection refused\n")
    assert get(server.port, "/nope")[0] == 404


def test_port_zero_serves_nothing(registry: CollectorRegistry) -> None:
    assert serve_endpoint("127.0.0.1", 0, registry, lambda: Verdict(True, "ok")) is None


def test_it_listens_only_where_told(registry: CollectorRegistry) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve_endpoint("127.0.0.1", port, registry, lambda: Verdict(True, "ok"))
    assert server is not None
    try:
        assert get(port, "/healthz") == (200, "ok\n")
        outside = _non_loopback_address()
        if outside is not None:  # the machine has another address: nothing listens there
            with pytest.raises(urllib.error.URLError):
                get(port, "/healthz", host=outside)
    finally:
        server.close()


def test_an_address_that_cannot_be_bound_exits_2_naming_the_variables(
    registry: CollectorRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = load_settings({"METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1"})
        with pytest.raises(SystemExit) as info:
            serve_or_exit(settings, registry, lambda: Verdict(True, "ok"))
    assert info.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("searchsync: configuration error: cannot listen on METRICS_HOST=")
    assert f"METRICS_PORT={port}" in message and message.count("\n") == 1


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.connect(("10.255.255.255", 1))  # no packet is sent: picks the outgoing address
            address = str(udp.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


async def test_the_heartbeat_ticks_while_the_loop_runs_and_stops_while_it_is_blocked() -> None:
    facts = HealthFacts()
    limits = Limits(unreachable_after=0.2, stalled_after=60)
    beat = asyncio.create_task(heartbeat(facts, every=0.02))
    try:
        await asyncio.sleep(0.3)
        assert facts.verdict(limits).ok
        time.sleep(0.35)  # blocks the event loop, as a stuck call would  # noqa: ASYNC251
        assert facts.verdict(limits).reason.startswith("event loop stalled: no tick for")
        await asyncio.sleep(0.05)
        assert facts.verdict(limits).ok
    finally:
        beat.cancel()
