"""The cluster devstack as the tests of tests/cluster/ drive and read it.

`devstack/up --cluster`, `down --cluster` and `status --cluster` run as subprocesses;
the clusters are read through their own interfaces (CLUSTER NODES and CLUSTER INFO of
redis-py's plain client, OpenSearch's `_cluster/health` and `_cat` APIs over urllib).
Nothing here asserts: the tests do.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

from devstack.harness.pipeline import Pipeline

__all__ = [
    "CLUSTER_DIR",
    "CLUSTER_ENV",
    "CONNECTION_FAILED",
    "OS_PORTS",
    "REDIS_PORTS",
    "ROOT",
    "RedisNode",
    "applied_past",
    "cluster_env",
    "cluster_info",
    "cluster_nodes",
    "connection_failures",
    "devstack",
    "opensearch",
    "parse_cluster_nodes",
    "pid_of",
    "poll",
    "status_or_none",
    "wait_applied_past",
]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = ROOT / ".devstack" / "cluster"
CLUSTER_ENV = CLUSTER_DIR / "env"
# devstack/lib/cluster.sh: three masters then their replicas; the three OpenSearch nodes
REDIS_PORTS = tuple(range(7001, 7007))
OS_PORTS = (9201, 9202, 9203)
# a consumer's bulk that failed on a connection: "OpenSearch bulk operation failed:
# connection error: Cannot connect to host 127.0.0.1:9201 …" (refused: since
# NodesTransport the next node takes it, so none) or "…: [Errno 104] Connection reset
# by peer (…)" (lost in flight: retried by the consumer)
CONNECTION_FAILED = re.compile(
    r"bulk operation failed: connection error: (.+?)(?: ssl:\S+ \[.*\])? \((?:retrying|splitting)"
)

T = TypeVar("T")


def devstack(command: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run devstack/<command> --cluster ARGS; its output is returned, not checked.
    Raises subprocess.TimeoutExpired after ``timeout`` seconds."""
    return subprocess.run(
        [str(ROOT / "devstack" / command), "--cluster", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cluster_env(path: Path = CLUSTER_ENV) -> dict[str, str]:
    """The ``export`` lines of .devstack/cluster/env, as bash's ``source`` reads them
    (no override from os.environ: the single-node devstack's REDIS_URL may be there)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, raw = line.removeprefix("export ").partition("=")
        if sep:
            parts = shlex.split(raw)
            values[name] = parts[0] if parts else ""
    return values


@dataclass(frozen=True)
class RedisNode:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[str, ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        """Marked FAIL by a majority of masters (``fail?`` is one node's suspicion)."""
        return "fail" in self.flags


def parse_cluster_nodes(text: str) -> list[RedisNode]:
    """CLUSTER NODES' reply: ``<id> <ip:port@bus> <flags> <master|-> <ping> <pong>
    <epoch> <link> <slot>...`` a line."""
    nodes = []
    for line in text.strip().splitlines():
        fields = line.split()
        address = fields[1].split("@")[0]
        nodes.append(
            RedisNode(
                node_id=fields[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(fields[8:]),
            )
        )
    return nodes


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)


def cluster_nodes(port: int) -> list[RedisNode]:
    """The cluster as the node on ``port`` sees it. Raises redis.RedisError (2 s timeout)."""
    # two arguments: redis-py's callback for "CLUSTER NODES" would parse the text
    with _client(port) as client:
        reply = client.execute_command("CLUSTER", "NODES")
    assert isinstance(reply, str), type(reply)
    return parse_cluster_nodes(reply)


def cluster_info(port: int) -> dict[str, str]:
    """CLUSTER INFO of the node on ``port``. Raises redis.RedisError (2 s timeout)."""
    with _client(port) as client:
        reply = client.execute_command("CLUSTER", "INFO")
    assert isinstance(reply, str), type(reply)
    return dict(line.split(":", 1) for line in reply.strip().splitlines() if ":" in line)


def opensearch(port: int, path: str, method: str = "GET", body: Any = None) -> Any:
    """One request to the node on ``port``; the decoded JSON answer. Raises
    urllib.error.URLError (10 s timeout) and HTTPError on a 4xx/5xx."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def pid_of(pidfile: Path) -> int:
    return int(pidfile.read_text().split()[0])


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """``check()`` every ``interval`` s until it returns something other than None or
    False; that value. Exceptions of the services count as "not yet". Raises
    TimeoutError after ``timeout`` s (generous: other tests share the 2 cores)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (redis.RedisError, urllib.error.URLError, OSError, ValueError) as error:
            last_error = error
        else:
            if value is not None and value is not False:
                return value
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout}s (last error: {last_error!r})")


def status_or_none(pipe: Pipeline) -> dict[str, Any] | None:
    """`searchsync status --json`, or None while it cannot answer (e.g. a Redis master's
    slots not served yet). Waits at most the CLI's 120 s."""
    result = pipe.cli("status", "--json")
    if result.returncode != 0:
        return None
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def applied_past(pipe: Pipeline, reference: int) -> bool:
    """The producer's checkpoint and every partition's applied frontier past ``reference``
    (a ts taken after a kill: the checkpoint read then, or the kill's own wall-clock ms):
    every change written before it, the kill's aftermath included, is in OpenSearch, and
    the producer has moved on."""
    status = status_or_none(pipe)
    if status is None or status["checkpoint"] is None:
        return False
    applied = [p["applied_ts"] or 0 for p in status["partitions"]]
    return bool(min(status["checkpoint"], *applied) > reference)


def wait_applied_past(pipe: Pipeline, reference: int, since: float, timeout: float = 240) -> float:
    """Seconds from ``since`` (a time.monotonic()) until :func:`applied_past` holds.
    Raises TimeoutError after ``timeout`` s."""
    poll(lambda: applied_past(pipe, reference), timeout=timeout, interval=0.2)
    return round(time.monotonic() - since, 2)


def connection_failures(pipe: Pipeline) -> dict[str, int]:
    """The consumers' bulks that failed on a connection (:data:`CONNECTION_FAILED` in
    their logs so far), counted by reason."""
    failed: dict[str, int] = {}
    for consumer in pipe.consumers.values():
        for reason in CONNECTION_FAILED.findall(consumer.log()):
            failed[reason.strip()] = failed.get(reason.strip(), 0) + 1
    return failed
