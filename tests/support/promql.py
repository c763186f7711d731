"""Metric names in PromQL expressions, and the metric names the code exports.

:func:`metric_names` is a small scanner, not a PromQL parser: it drops strings,
label matchers and ranges, then keeps the identifiers that are neither a
function or aggregation (followed by ``(``), nor a keyword, nor a label list
after ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``.
That is all a selector can be, so for the expressions of compose/ (which
``promtool`` also parses) it finds every metric. :func:`exported_metric_names`
builds the producer's and a consumer's metrics on fresh registries and lists
every series name they expose (``_total``, ``_bucket``… included).
"""

from __future__ import annotations

import re
from typing import Final

from prometheus_client import CollectorRegistry

__all__ = ["exported_metric_names", "metric_names"]

_DROP: Final = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|\{[^}]*\}|\[[^\]]*\]')
_TOKEN: Final = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*|[0-9][0-9A-Za-z_.]*|\S")
_LABEL_LISTS: Final = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS: Final = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})

# what each metric type exposes, by the family name prometheus_client gives it
_SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    tokens = _TOKEN.findall(_DROP.sub(" ", expr))
    names: set[str] = set()
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if token.lower() in _LABEL_LISTS:
            if following == "(":
                index = tokens.index(")", index)
        elif token.lower() in _KEYWORDS or following == "(" or following.lower() in _LABEL_LISTS:
            pass  # a keyword, a function, or an aggregation: sum by (le) (…)
        elif token[0].isalpha() or token[0] in "_:":
            names.add(token)
        index += 1
    return names


def exported_metric_names() -> set[str]:
    """Every series name of producer.metrics and consumer.metrics."""
    from searchsync.consumer.metrics import ConsumerMetrics
    from searchsync.producer.metrics import ProducerMetrics

    names: set[str] = set()
    for build in (
        lambda registry: ProducerMetrics(registry, "v"),
        lambda registry: ConsumerMetrics(registry, "c"),
    ):
        registry = CollectorRegistry()
        build(registry)
        for family in registry.collect():
            if family.samples:
                names.update(sample.name for sample in family.samples)
            else:  # labelled, and no label value used yet
                names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names
