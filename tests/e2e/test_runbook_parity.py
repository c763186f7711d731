"""README's runbook table ("The runbook, step by step"), every command run as written.

Services: real PostgreSQL (a private FreshMart schema), a private Materialize emulator,
a private redis-server, the shared OpenSearch node (a private alias). Processes: the
producer and two consumers under a real supervisord (a byte-for-byte copy of
``supervisord.conf`` in a directory of the test's own, so its ``run/`` is private), and
each command of the table through ``bash -c`` from that directory, in table order.

The table is parsed from README.md, so a command edited there is the command run here;
a row this test does not know (or a known row missing from the README) fails it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.pipeline import Pipeline, pipeline_of
from tests.support.producer import REPO, set_status, wait_for

pytestmark = pytest.mark.slow

SECTION = "### The runbook, step by step"
BIN = REPO / ".venv" / "bin"


def table_rows(readme: str) -> list[tuple[str, str]]:
    """(runbook step, command) per row of the section's table, in order."""
    section = readme.split(SECTION, 1)[1].split("\n#", 1)[0]
    rows: list[tuple[str, str]] = []
    for line in section.splitlines():
        # | step | `command` | what it shows |   (a literal | inside a command is \|)
        match = re.match(r"^\| (.+?) \| `(.+?)` \| .* \|$", line)
        if match:
            rows.append((match.group(1), match.group(2).replace("\\|", "|")))
    return rows


class Deployment:
    """One supervisord deployment over a private pipeline; the table's commands run in it."""

    def __init__(self, pipe: Pipeline, home: Path) -> None:
        self.pipe = pipe
        self.home = home
        self.run_dir = home / "run"
        self.run_dir.mkdir()
        shutil.copyfile(REPO / "supervisord.conf", home / "supervisord.conf")
        self.env = {
            **os.environ,
            **pipe.env(BUFFER_LOG_SECONDS="1", LOG_FORMAT="text"),
            # the README's "with the venv on PATH"; no .venv beside the copy
            "PATH": f"{BIN}:{os.environ['PATH']}",
        }

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def log(self, name: str) -> str:
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, text: str, count: int = 1, timeout: float = 60) -> None:
        wait_for(
            lambda: self.log(name).count(text) >= count,
            timeout,
            f"{count}× {text!r} in {name}.log",
        )

    def shutdown(self) -> None:
        self.run("supervisorctl -c supervisord.conf shutdown")
        pid_file = self.run_dir / "supervisord.pid"
        deadline = time.monotonic() + 30
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)


Check = Callable[[Deployment, subprocess.CompletedProcess[str]], None]


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def started(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    d.wait_log("producer", "Starting SUBSCRIBE for view")
    d.pipe.wait_drained()


def grep_shows_start(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    assert "Starting SUBSCRIBE for view: " in r.stdout


def index_counts(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    rows = d.pipe.verify()["view_count"]
    # _count sees what a refresh (every second) has published: run it again until then
    command = r.args[-1]
    wait_for(
        lambda: json.loads(d.run(command).stdout)["count"] == rows,
        10,
        f"`{command}` to count the view's {rows} rows",
        interval=0.5,
    )


def healthy(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    assert r.stdout.strip().lower().startswith("ok"), r.stdout


def status_printed(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    assert "partition" in r.stdout and "buffer" in r.stdout


def verified(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    assert "OK: index matches the view" in r.stdout


def waited(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    hits = d.pipe.search.search(
        index=d.pipe.alias, body={"query": {"term": {"order_status": "runbook_parity"}}}
    )
    assert hits["hits"]["total"]["value"] == 1, "wait returned before the change was searchable"


def metrics_exported(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    assert "opensearch_sync_latency_seconds_bucket" in r.stdout
    assert "opensearch_sync_events_total" in r.stdout


def logs_found(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    assert "Buffer size: " in r.stdout


def letters_listed(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)


def replayed(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    assert "Replays are safe" in r.stdout
    d.pipe.wait_drained()  # every replayed entry delivered and acknowledged again


def resynced(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    aliased = d.pipe.search.indices.get_alias(name=d.pipe.alias)
    assert list(aliased) == [f"{d.pipe.alias}_v2"], aliased


def mapping_equal(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)


def stopped(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    d.wait_log("producer", "Producer stopped")
    for port in (9500, 9501):  # supervisord.conf: consumer-P serves metrics on P
        d.wait_log(f"consumer-{port}", "Orders sync worker stopped")


def restarted(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    d.wait_log("producer", "resuming from checkpoint")
    d.pipe.wait_drained()


def polling(d: Deployment, r: subprocess.CompletedProcess[str]) -> None:
    _ok(r)
    d.wait_log("producer", "(polling, ")
    set_status(d.pipe.stack, "order:FM-1002", "polled")
    wait_for(
        lambda: (
            d.pipe.search.get(index=d.pipe.alias, id="order:FM-1002")["_source"]["order_status"]
            == "polled"
        ),
        60,
        "a change indexed through polling",
    )


# Keyed by the command's first words (stable when its arguments are tuned).
CHECKS: dict[str, Check] = {
    "supervisord -c": started,
    'grep "Starting SUBSCRIBE': grep_shows_start,
    'curl -s "http://$OS_HOST': index_counts,
    "curl -s http://127.0.0.1:9400/healthz": healthy,
    "searchsync status": status_printed,
    "searchsync verify": verified,
    "searchsync wait": waited,
    "curl -s http://127.0.0.1:9500/metrics": metrics_exported,
    "grep -E": logs_found,
    "searchsync dlq list": letters_listed,
    "searchsync replay": replayed,
    "searchsync resync": resynced,
    "searchsync index mapping-diff": mapping_equal,
    "supervisorctl -c supervisord.conf stop": stopped,
    "supervisorctl -c supervisord.conf start": restarted,
    "supervisorctl -c supervisord.conf shutdown": polling,
}


def check_of(command: str) -> Check:
    known = [prefix for prefix in CHECKS if command.startswith(prefix)]
    assert len(known) == 1, f"the test knows no single check for README's `{command}`"
    return CHECKS[known[0]]


def test_the_table_has_a_check_for_every_row_and_a_row_for_every_check() -> None:
    rows = table_rows((REPO / "README.md").read_text())
    assert len(rows) == len(CHECKS), [command for _, command in rows]
    assert {check_of(command) for _, command in rows} == set(CHECKS.values())


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    # not under pytest's tmp_path: supervisord's socket path must fit AF_UNIX's 108 bytes
    home = Path(tempfile.mkdtemp(prefix="searchsync-sv-"))
    with pipeline_of(orders=40) as pipe:
        d = Deployment(pipe, home)
        try:
            yield d
        finally:
            d.shutdown()
            shutil.rmtree(home, ignore_errors=True)


def test_every_command_of_the_runbook_table_works_as_written(deployment: Deployment) -> None:
    d = deployment
    for step, command in table_rows((REPO / "README.md").read_text()):
        if command.startswith("searchsync wait"):
            set_status(d.pipe.stack, "order:FM-1001", "runbook_parity")
        began = time.monotonic()
        result = d.run(command)
        try:
            check_of(command)(d, result)
            print(f"{time.monotonic() - began:6.1f}s  {step}")
        except AssertionError as error:
            raise AssertionError(
                f"runbook step {step!r}: `{command}`\n{error}\n"
                f"--- stdout\n{result.stdout[-2000:]}\n--- stderr\n{result.stderr[-2000:]}\n"
                f"--- producer.log\n{d.log('producer')[-2000:]}"
            ) from error
    d.run("supervisorctl -c supervisord.conf stop all")
    assert d.pipe.verify()["ok"]
