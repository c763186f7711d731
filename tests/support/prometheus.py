"""A private Prometheus (Debian's binary) on a free loopback port, with a temporary config.

It scrapes the given targets every second and evaluates compose/prometheus/alerts.yml
every second (the file's own 30 s interval is rewritten, nothing else). Queries go
through the HTTP API, as Grafana's would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import free_port, wait_for

__all__ = ["PrivatePrometheus"]

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "compose" / "prometheus" / "alerts.yml"


class PrivatePrometheus:
    """``prometheus`` scraping ``jobs`` (job name → ``host:port`` targets) until :meth:`close`."""

    def __init__(self, jobs: Mapping[str, Sequence[str]]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(
                "prometheus is not installed (devstack/up installs Debian's package, "
                "devstack/lib/prometheus.sh)",
                pytrace=False,
            )
        self.directory = Path(tempfile.mkdtemp(prefix="test-prometheus-"))
        self.port = free_port()
        rules = ALERTS.read_text()
        assert rules.count("interval: 30s") == 1
        (self.directory / "alerts.yml").write_text(rules.replace("interval: 30s", "interval: 1s"))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]}
                for job, targets in jobs.items()
            ],
        }
        (self.directory / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log_path = self.directory / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, 30, "Prometheus to be ready", interval=0.2)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """``/api/v1/<path>``'s ``data``; AssertionError unless the status is success."""
        query = urllib.parse.urlencode(params)
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)
