"""One consumer process for every view of a views file: its metrics and its health.

Each view's worker keeps its own :class:`~.metrics.ConsumerMetrics` on a registry of its
own (the same metric names for every view); :class:`ViewsCollector` serves them as one
set of families on the process's registry, each sample labelled ``view``, so
``/metrics`` stays one valid exposition with one HELP/TYPE line per family.
:func:`worst` is ``/healthz`` over several views: the first unhealthy one, named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from ..common.health import Verdict

__all__ = ["ViewsCollector", "worst"]


class ViewsCollector:
    """Every view's registry as one collector; each sample gets ``view=<name>``."""

    def __init__(self, registries: Mapping[str, CollectorRegistry]) -> None:
        self._registries = dict(registries)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for view, registry in self._registries.items():
            for metric in registry.collect():
                merged = families.get(metric.name)
                if merged is None:
                    merged = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                    families[metric.name] = merged
                merged.samples.extend(
                    sample._replace(labels={**sample.labels, "view": view})
                    for sample in metric.samples
                )
        return list(families.values())


def worst(verdicts: Mapping[str, Callable[[], Verdict]]) -> Verdict:
    """The first view's failing verdict, its reason prefixed with ``view <name>:``; ok when
    every view is."""
    for view, verdict_of in verdicts.items():
        verdict = verdict_of()
        if not verdict.ok:
            return Verdict(False, f"view {view}: {verdict.reason}")
    return Verdict(True, "ok")
