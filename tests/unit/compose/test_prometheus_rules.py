"""compose/prometheus/: the alerting rules, tested with promtool (Debian's prometheus package).

No services: promtool evaluates the rules over the series alerts.test.yml writes.
``devstack/up`` installs promtool (devstack/lib/prometheus.sh); without it this test
fails rather than skips, so CI cannot pass without having run the rule tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support.promql import exported_metric_names, metric_names

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "compose" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, (
        "promtool not found: run devstack/up (devstack/lib/prometheus.sh installs Debian's "
        "prometheus package)"
    )
    return subprocess.run(
        [binary, *args], cwd=RULES, capture_output=True, text=True, timeout=60, check=False
    )


def rule_expressions(text: str) -> list[str]:
    """Every ``expr:`` of a rules file, inline or as an indented block (``expr: |``)."""
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if match is None:
            continue
        indent, rest = len(match.group(1)), match.group(2)
        if rest not in ("|", ">", "|-", ">-"):
            found.append(rest)
            continue
        block = []
        for following in lines[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        found.append(" ".join(block))
    return found


def test_the_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_compose_config_and_its_rules_are_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_every_alert_is_tested_firing() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", (RULES / "alerts.yml").read_text()))
    tests = (RULES / "alerts.test.yml").read_text()
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests))
    assert len(alerts) == 9
    assert alerts == firing


def test_rules_use_only_metrics_the_code_exports() -> None:
    text = (RULES / "alerts.yml").read_text()
    expressions = rule_expressions(text)
    assert len(expressions) == text.count("- alert:"), "an expr the scanner missed"
    used = set().union(*(metric_names(expr) for expr in expressions))
    assert "opensearch_sync_latency_seconds_bucket" in used
    assert used <= exported_metric_names(), used - exported_metric_names()
