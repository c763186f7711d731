"""compose/grafana/dashboards/searchsync.json: every query parses and uses exported metrics.

No services. The metric names come from the registries producer.metrics and
consumer.metrics build (tests.support.promql), not from a list kept by hand; the
queries' syntax is checked by promtool (as recording rules), Prometheus's own parser.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support.promql import exported_metric_names, metric_names

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "compose" / "grafana" / "dashboards" / "searchsync.json"

# what issue 9 asks the dashboard to show, each as words of a panel title
WANTED = ("latency", "events/s", "errors/s by kind", "error rate", "buffer",
          "lag per partition", "freshness per partition", "consumers", "ownership",
          "dead letters")  # fmt: skip


def queries() -> list[tuple[str, str]]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_panel_query_uses_only_exported_metrics() -> None:
    exported = exported_metric_names()
    found = queries()
    assert len(found) >= 15
    for title, expr in found:
        used = metric_names(expr)
        assert used, f"{title}: no metric found in {expr!r}"
        assert used <= exported, f"{title}: {sorted(used - exported)} not exported ({expr})"


def test_the_scanner_tells_metrics_from_functions_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{kind="x"}[5m]))) '
        "/ on () group_left (partition) max without (instance) (b offset 2m) or vector(0)"
    )
    assert metric_names(expr) == {"a_bucket", "b"}
    assert metric_names("time() - max by (partition) (applied_seconds)") == {"applied_seconds"}
    assert "not_exported_total" not in exported_metric_names()


def test_every_query_parses(tmp_path: Path) -> None:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool not found: run devstack/up (devstack/lib/prometheus.sh)"
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr}
                    for n, (_, expr) in enumerate(queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run(
        [binary, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_has_the_panels_operators_need() -> None:
    titles = " | ".join(title.lower() for title, _ in queries())
    for wanted in WANTED:
        assert wanted in titles, wanted
    assert any("0.99" in expr for _, expr in queries())
