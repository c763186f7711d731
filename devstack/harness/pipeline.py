"""The whole pipeline for end-to-end tests and benches: a Stack, consumers, an index, the CLI.

Services: real PostgreSQL (a private FreshMart schema), a private Materialize
emulator process over it, a private redis-server, the shared OpenSearch node (a
private index alias). Processes: ``producer.main``, ``consumer.main`` and the
``searchsync`` CLI — all real subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from opensearchpy import OpenSearch

from devstack.harness.consumer import ConsumerProcess, service_env
from devstack.harness.producer import REPO, Stack
from devstack.harness.services import wait_for

__all__ = ["CLI", "Pipeline", "is_synced", "pipeline_of"]

CLI = REPO / ".venv" / "bin" / "searchsync"


def is_synced(status: dict[str, Any]) -> bool:
    """A ``searchsync status --json`` whose checkpoint every partition has applied, with
    nothing buffered."""
    frontier = status["checkpoint"]
    applied = [p["applied_ts"] or 0 for p in status["partitions"]]
    return frontier is not None and status["buffer"] == 0 and min(applied) >= frontier


class Pipeline:
    """A Stack (schema, emulator, Redis, producers) plus consumers and an index."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.alias = f"test_e2e_{uuid.uuid4().hex[:10]}"
        services = service_env()
        self.os_env = {"OS_HOST": services["OS_HOST"], "OS_PORT": services["OS_PORT"]}
        self.consumers: dict[str, ConsumerProcess] = {}
        self.search = OpenSearch(
            hosts=[{"host": services["OS_HOST"], "port": int(services["OS_PORT"])}]
        )

    def env(self, **overrides: str) -> dict[str, str]:
        return self.stack.env(
            **self.os_env,
            OS_INDEX_NAME=self.alias,
            LEASE_TTL_SECONDS="2",
            MAX_BATCH_AGE_SECONDS="0.5",
            RETRY_INITIAL_BACKOFF="0.2",
            **overrides,
        )

    def consumer(self, name: str, **overrides: str) -> ConsumerProcess:
        process = ConsumerProcess(self.env(**overrides), name, self.stack.log_dir)
        self.consumers[name] = process
        return process

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), *args],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def verify(self, settle: float = 30) -> dict[str, Any]:
        result = self.cli("verify", "--json", "--settle", str(settle))
        assert result.returncode in (0, 1), result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def wait_status(
        self,
        condition: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        interval: float = 0.2,
    ) -> dict[str, Any]:
        """The first ``searchsync status --json`` that ``condition`` accepts, read every
        ``interval`` s; AssertionError naming ``what`` after ``timeout`` s."""

        def accepted() -> dict[str, Any] | None:
            status = self.status()
            return status if condition(status) else None

        found: dict[str, Any] = wait_for(accepted, timeout, what, interval=interval)
        return found

    def wait_synced(self, timeout: float = 90) -> dict[str, Any]:
        """Until the producer's checkpoint is applied everywhere and nothing is buffered."""

        return self.wait_status(is_synced, timeout, "the pipeline to apply everything", 0.5)

    def wait_drained(self, timeout: float = 60) -> None:
        """Until every entry written so far was delivered and acknowledged (replayed ones
        again): no lag, nothing pending, no buffer, a frontier on every partition.

        (:meth:`wait_synced` also wants the frontier to equal the checkpoint, which with
        the emulator's 25 ms ticks and 100 ms progress entries holds only now and then.)
        """

        def drained(status: dict[str, Any]) -> bool:
            return status["checkpoint"] is not None and all(
                p["lag"] == 0 and p["pending"] == 0 and p["buffer"] == 0 and p["applied_ts"]
                for p in status["partitions"]
            )

        self.wait_status(drained, timeout, "the consumers to acknowledge everything", 0.3)

    def wait_nothing_pending(self, timeout: float = 10) -> dict[str, Any]:
        """The status once no partition has a pending entry. While the producer runs it
        writes a progress entry every 100 ms a partition, pending for the moment a
        consumer holds it, so one reading may catch one; an entry nobody acknowledges
        stays pending and times this out."""
        return self.wait_status(
            lambda status: all(p["pending"] == 0 for p in status["partitions"]),
            timeout,
            "no pending entry",
        )

    def logs(self) -> str:
        parts = [f"--- {p.log_path.name}\n{p.log()[-3000:]}" for p in self.stack.producers]
        parts += [f"--- {c.name}\n{c.log()[-3000:]}" for c in self.consumers.values()]
        return "\n".join(parts)

    def close(self) -> None:
        for process in self.consumers.values():
            process.ensure_dead()
        self.search.indices.delete(index=f"{self.alias}_v*", ignore=[404])
        self.search.close()


@contextlib.contextmanager
def pipeline_of(**stack: Any) -> Iterator[Pipeline]:
    """A :class:`Pipeline` over a new ``Stack(**stack)``, closed (and its index deleted)
    afterwards."""
    built = Stack(**stack)
    pipe = Pipeline(built)
    try:
        yield pipe
    finally:
        pipe.close()
        built.close()
