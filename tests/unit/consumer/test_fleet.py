"""One consumer for every view (consumer.fleet, consumer.main): metrics labelled by view,
one exposition, /healthz naming the view that is unhealthy, and one view's fatal error
stopping the others."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from searchsync.common.errors import FatalError
from searchsync.common.health import Verdict
from searchsync.consumer.fleet import ViewsCollector, worst
from searchsync.consumer.main import _run_all
from searchsync.consumer.metrics import ConsumerMetrics


def test_every_views_metrics_in_one_exposition_labelled_by_view() -> None:
    registries = {"orders_mv": CollectorRegistry(), "stores_mv": CollectorRegistry()}
    metrics = {name: ConsumerMetrics(registry, "c1") for name, registry in registries.items()}
    metrics["orders_mv"].events.labels("upsert").inc(3)
    metrics["stores_mv"].events.labels("upsert").inc(5)
    metrics["stores_mv"].latency.observe(0.3, count=2)
    metrics["orders_mv"].owns(1, True)
    process = CollectorRegistry()
    process.register(ViewsCollector(registries))
    text = generate_latest(process).decode()
    # one HELP/TYPE per family: a valid exposition even with the same names in both views
    assert text.count("# TYPE opensearch_sync_events_total counter") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    upserts = {
        s.labels["view"]: s.value
        for s in families["opensearch_sync_events"].samples
        if s.name == "opensearch_sync_events_total" and s.labels["op"] == "upsert"
    }
    assert upserts == {"orders_mv": 3.0, "stores_mv": 5.0}
    counts = {
        s.labels["view"]: s.value
        for s in families["opensearch_sync_latency_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts == {"orders_mv": 0.0, "stores_mv": 2.0}
    owned = [s for s in families["opensearch_sync_partition_owned"].samples if s.value == 1]
    assert [(s.labels["view"], s.labels["partition"]) for s in owned] == [("orders_mv", "1")]


def test_health_is_the_first_unhealthy_view_named() -> None:
    ok = Verdict(True, "ok")
    stalled = Verdict(False, "no progress for 95s while 12 changes in hand")
    assert worst({"a": lambda: ok, "b": lambda: ok}) == ok
    verdict = worst({"a": lambda: ok, "b": lambda: stalled})
    assert verdict == Verdict(False, "view b: no progress for 95s while 12 changes in hand")
    assert verdict.status == 503


async def test_a_fatal_error_of_one_view_stops_the_others_and_is_raised() -> None:
    stopped: list[str] = []

    class Fails:
        async def run(self, stop: asyncio.Event) -> None:
            await asyncio.sleep(0.01)
            raise FatalError("alias orders is a concrete index")

    class Waits:
        async def run(self, stop: asyncio.Event) -> None:
            await stop.wait()  # as Worker.run: ends cleanly once stop is set
            stopped.append("waits")

    outer = asyncio.Event()
    with pytest.raises(FatalError, match="concrete index"):
        await asyncio.wait_for(_run_all([Waits(), Fails()], outer), 5)  # type: ignore[list-item]
    assert stopped == ["waits"]
    assert not outer.is_set()


async def test_the_process_stop_reaches_every_view() -> None:
    ended: list[int] = []

    class Waits:
        def __init__(self, n: int) -> None:
            self.n = n

        async def run(self, stop: asyncio.Event) -> None:
            await stop.wait()
            ended.append(self.n)

    outer = asyncio.Event()
    task = asyncio.create_task(_run_all([Waits(1), Waits(2)], outer))  # type: ignore[list-item]
    await asyncio.sleep(0.01)
    assert not task.done()
    outer.set()
    await asyncio.wait_for(task, 5)
    assert sorted(ended) == [1, 2]
