"""Scaling consumers the way README's "Scaling consumers" says: edit ``numprocs`` in
``supervisord.conf``, run ``supervisorctl -c supervisord.conf update``.

Services: real PostgreSQL (a private FreshMart schema), a private Materialize emulator,
a private redis-server, the shared OpenSearch node (a private alias). Processes: a real
supervisord and supervisorctl from the venv running the producer and the consumers,
the FreshMart load generator and the ``searchsync`` CLI.

The deployment is a copy of ``supervisord.conf`` in a directory of the test's own (its
``run/`` is private) with the two changes the README names for a second deployment on
one host — the producer's port and ``numprocs_start`` — so it can run beside the
runbook test's deployment; then only ``numprocs`` is edited, 2 → 4 → 1, under load.

LEASE_TTL_SECONDS is 20 here, so a lease a stopped consumer failed to hand back would
still be there when ``update`` returns: the test reads every lease and ``members`` at
that moment and wants them empty, so the new consumers never wait for an expiry. How
long they take to start and spread is printed, not asserted (it is the machine's speed).
"""

from __future__ import annotations

import os
import platform
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.pipeline import Pipeline, pipeline_of
from tests.support.producer import REPO, start_load, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

BIN = REPO / ".venv" / "bin"
LEASE_TTL_SECONDS = 20


def free_range(count: int) -> int:
    """A port P with P … P + count - 1 all free now, below Linux's ephemeral ports
    (32768 up), which any outgoing connection may take meanwhile."""
    for _ in range(100):
        base = random.randrange(20000, 32000)
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free port range")


class Deployment:
    """A copy of supervisord.conf with its own ports, run by a real supervisord."""

    def __init__(self, pipe: Pipeline, home: Path) -> None:
        self.pipe = pipe
        self.home = home
        (home / "run").mkdir()
        self.consumer_base = free_range(8)
        self.producer_port = free_range(1)
        text = (REPO / "supervisord.conf").read_text()
        text = self._edit(text, r'METRICS_PORT="9400"', f'METRICS_PORT="{self.producer_port}"')
        text = self._edit(text, r"^numprocs_start=9500$", f"numprocs_start={self.consumer_base}")
        self.config = home / "supervisord.conf"
        self.config.write_text(text)
        env = pipe.env(LOG_FORMAT="json")  # timestamps, for the timeline of a failure
        env["LEASE_TTL_SECONDS"] = str(LEASE_TTL_SECONDS)
        # the README's "with the venv on PATH"; no .venv beside the copy
        self.env = {**os.environ, **env, "PATH": f"{BIN}:{os.environ['PATH']}"}

    @staticmethod
    def _edit(text: str, pattern: str, replacement: str) -> str:
        edited, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert found == 1, f"supervisord.conf has no single {pattern!r}"
        return edited

    def set_consumers(self, count: int) -> None:
        """What the operator does: change numprocs in the file."""
        self.config.write_text(
            self._edit(self.config.read_text(), r"^numprocs=\d+$", f"numprocs={count}")
        )

    def run(self, *command: str) -> str:
        result = subprocess.run(
            command,
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result}"
        return result.stdout

    def names(self, count: int) -> list[str]:
        """The CONSUMER_NAMEs supervisord.conf gives ``count`` consumers."""
        host = platform.node()
        return [f"{host}-consumer-{self.consumer_base + n}" for n in range(count)]

    def shutdown(self) -> None:
        subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.config), "shutdown"],
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        pid_file = self.home / "run" / "supervisord.pid"
        deadline = time.monotonic() + 30
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
            for path in sorted((self.home / "run").glob("*.log"))
        )


def spread_over(owners: list[str | None], members: list[str], names: list[str]) -> bool:
    """Every partition owned, by exactly ``names``, evenly, and they alone are members."""
    shares = sorted(owners.count(name) for name in names)
    even = len(owners) // len(names)
    return (
        sorted(members) == sorted(names)
        and None not in owners
        and set(owners) == set(names)
        and shares[0] >= even
        and shares[-1] <= even + 1
    )


def ownership(d: Deployment) -> tuple[list[str | None], list[str]]:
    """The lease holder of every partition and the members, read from Redis at once (a
    `searchsync status` takes seconds to start on a busy machine)."""
    redis = d.pipe.stack.sync_redis()
    keys = d.pipe.stack.keys
    holders = [cast(bytes | None, redis.get(keys.lease(n))) for n in range(keys.partitions)]
    members = cast(list[bytes], redis.zrange(keys.members, 0, -1))
    return [h.decode() if h else None for h in holders], [m.decode() for m in members]


def scale(d: Deployment, count: int, *, before: int) -> float:
    """Edit numprocs, `supervisorctl update`; seconds until the new consumers own all.

    ``update`` returns once the old consumers have stopped: by then each has handed its
    leases back and left ``members`` (nothing is left to expire), and each exited 0.
    """
    d.set_consumers(count)
    began = time.monotonic()
    d.run(str(BIN / "supervisorctl"), "-c", "supervisord.conf", "update")
    redis = d.pipe.stack.sync_redis()
    keys = d.pipe.stack.keys
    # read at once: the new processes are still importing Python (a start takes ~1 s)
    leases = [redis.get(keys.lease(n)) for n in range(keys.partitions)]
    beats = redis.zrange(keys.members, 0, -1)
    assert (leases, beats) == ([None] * keys.partitions, []), "a lease or member left behind"
    log = (d.home / "run" / "supervisord.log").read_text()
    for port in range(d.consumer_base, d.consumer_base + before):
        assert log.count(f"stopped: consumer-{port} (exit status 0)") >= 1, log[-3000:]
    names = d.names(count)
    wait_for(
        lambda: spread_over(*ownership(d), names),
        120,
        f"{count} consumers ({', '.join(names)}) owning every partition",
        interval=0.1,
    )
    took = time.monotonic() - began
    status = d.pipe.status()  # and as the operator sees it
    assert spread_over([p["owner"] for p in status["partitions"]], status["members"], names)
    expected = [d.consumer_base + n for n in range(count)]

    def listed_running() -> bool:
        # STARTING until startsecs (2 s) passed, though the consumer already works
        listing = d.run(str(BIN / "supervisorctl"), "-c", "supervisord.conf", "status")
        found = re.findall(r"^consumer:consumer-(\d+)\s+RUNNING", listing, flags=re.MULTILINE)
        return sorted(map(int, found)) == expected

    wait_for(listed_running, 30, f"supervisorctl status listing {expected} as RUNNING")
    print(f"{before} -> {count} consumers: all partitions owned {took:.1f}s after `update`")
    return took


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    # not under pytest's tmp_path: supervisord's socket path must fit AF_UNIX's 108 bytes
    home = Path(tempfile.mkdtemp(prefix="searchsync-sv-"))
    with pipeline_of(orders=200, partitions=8, realistic=True) as pipe:
        d = Deployment(pipe, home)
        try:
            yield d
        finally:
            d.shutdown()
            shutil.rmtree(home, ignore_errors=True)


def test_numprocs_and_update_add_and_remove_consumers_under_load(deployment: Deployment) -> None:
    d = deployment
    assert re.search(r"^numprocs=2$", d.config.read_text(), flags=re.MULTILINE)
    d.run(str(BIN / "supervisord"), "-c", "supervisord.conf")
    try:
        wait_for(lambda: spread_over(*ownership(d), d.names(2)), 120, "2 consumers")
        d.pipe.wait_drained(timeout=120)
        load = start_load(d.pipe.stack, rate=40, seconds=30)
        try:
            time.sleep(3)
            scale(d, 4, before=2)
            time.sleep(3)
            scale(d, 1, before=4)
        finally:
            _, err = load.communicate(timeout=120)
        assert load.returncode == 0, err

        # no new entries (progress ones come every 100 ms), then everything acknowledged
        d.run(str(BIN / "supervisorctl"), "-c", "supervisord.conf", "stop", "producer")
        d.pipe.wait_drained(timeout=120)
        # nothing left pending with any consumer, gone or running
        redis = d.pipe.stack.sync_redis()
        for stream in d.pipe.stack.keys.streams():
            consumers: list[dict[str, Any]] = redis.xinfo_consumers(stream, "searchsync")
            assert {c["name"].decode(): c["pending"] for c in consumers if c["pending"]} == {}
        report = d.pipe.verify(settle=20)
        assert report["ok"], report
        assert d.pipe.status()["dlq_length"] == 0
        assert "Could not release leases" not in d.logs()
    except AssertionError as error:
        raise AssertionError(f"{error}\n{d.logs()}") from error
