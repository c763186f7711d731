"""README's "The buffer through redis-cli": every command run as written, every figure
checked against ``searchsync status --json``.

Services: real PostgreSQL (a private FreshMart schema), a private Materialize emulator,
a private redis-server, the shared OpenSearch node (a private alias), and an HTTP proxy
in front of it that answers 401 when told to. Processes: the producer, consumers, the
``searchsync`` CLI and Debian's ``redis-cli`` (``/usr/bin/redis-cli``) — all real.

The commands are parsed from README.md's code block and run through ``bash -c`` with
``REDIS_URL`` set to the private Redis, which is how the README tells the operator to
point them (the view name is the default one the README spells out). They run twice,
with the producer stopped so nothing moves between ``status`` and ``redis-cli``:
healthy (everything applied, one dead letter), and blocked (OpenSearch refuses writes
with 401, entries of p0 pending with the consumer for over 15 s). A command the
test has no check for, or a check with no command, fails it; so does a field of the
status JSON without a row in the README's table.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from searchsync.common.partition import partition_of
from tests.support.consumer import ConsumerProcess
from tests.support.http_proxy import HttpProxy
from tests.support.pipeline import Pipeline, pipeline_of
from tests.support.producer import REPO, Entries, set_status, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

SECTION = "### The buffer through redis-cli"
PREFIX = "searchsync:{orders_search_source_mv}:"
STREAM = "searchsync:{orders_search_source_mv:p0}"
IDLE_MS = 15_000  # the README's XPENDING … IDLE


def section(readme: str) -> str:
    return readme.split(SECTION, 1)[1].split("\n#", 1)[0]


def commands(readme: str) -> list[str]:
    """The lines of the section's ```bash block, in order."""
    block = section(readme).split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def json_fields_in_table(readme: str) -> set[str]:
    """Every `name` in the table's second column (`--json`)."""
    names: set[str] = set()
    for line in section(readme).splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and len(cells) >= 3:
            names.update(re.findall(r"`([a-z_]+)`", cells[1]))
    return names


@dataclass
class Moment:
    """One frozen state: the status JSON and what each command printed."""

    status: dict[str, Any]
    blocked: bool
    outputs: dict[str, str] = field(default_factory=dict)
    # the clock just before and just after the status call: its "now" lies between
    taken: tuple[float, float] = (0.0, 0.0)

    @property
    def p0(self) -> dict[str, Any]:
        partition: dict[str, Any] = self.status["partitions"][0]
        return partition


def lines(output: str) -> list[str]:
    return output.splitlines()


def pairs(output: str) -> dict[str, str]:
    """A flat ``name value name value …`` reply (XINFO of one group or one consumer)."""
    items = lines(output)
    return dict(zip(items[0::2], items[1::2], strict=True))


def groups(output: str) -> list[dict[str, str]]:
    """XINFO GROUPS / CONSUMERS printed flat: split at each ``name``."""
    items = lines(output)
    starts = [i for i in range(0, len(items), 2) if items[i] == "name"]
    return [
        pairs("\n".join(items[a:b])) for a, b in zip(starts, [*starts[1:], len(items)], strict=True)
    ]


Check = Callable[[Moment, str, Pipeline], None]


def checkpoint(m: Moment, out: str, pipe: Pipeline) -> None:
    assert int(out) == m.status["checkpoint"]


def members(m: Moment, out: str, pipe: Pipeline) -> None:
    beats = {name: float(score) for name, score in pairs(out).items()}
    ttl_ms = 2000  # the pipeline's LEASE_TTL_SECONDS
    now = time.time() * 1000
    assert sorted(n for n, beat in beats.items() if now - beat <= ttl_ms) == m.status["members"]


def dlq(m: Moment, out: str, pipe: Pipeline) -> None:
    assert int(out) == m.status["dlq_length"] == 1


def stream(m: Moment, out: str, pipe: Pipeline) -> None:
    # the reply nests the first and last entries; `length` is its first pair
    items = lines(out)
    assert items[0] == "length"
    assert int(items[1]) == m.p0["length"] > 0


def group(m: Moment, out: str, pipe: Pipeline) -> None:
    (info,) = groups(out)
    assert info["name"] == m.status["group"] == "searchsync"
    assert int(info["pending"]) == m.p0["pending"]
    assert int(info["lag"]) == m.p0["lag"]
    if m.blocked:
        assert m.p0["pending"] > 0


def consumers(m: Moment, out: str, pipe: Pipeline) -> None:
    held = {c["name"]: int(c["pending"]) for c in groups(out)}
    assert sum(held.values()) == m.p0["pending"]
    if m.blocked:
        assert held[m.p0["owner"]] == m.p0["pending"]


def idle_pending(m: Moment, out: str, pipe: Pipeline) -> None:
    items = [line for line in lines(out) if line]  # an empty reply prints one empty line
    assert len(items) % 4 == 0, out
    entries = [items[i : i + 4] for i in range(0, len(items), 4)]
    if not m.blocked:
        assert entries == []
        return
    # everything pending was delivered over 15 s ago, to the owner
    assert len(entries) == min(10, m.p0["pending"]) > 0
    for _, consumer, idle, deliveries in entries:
        assert consumer == m.p0["owner"]
        assert int(idle) >= IDLE_MS
        assert int(deliveries) >= 1


def owner(m: Moment, out: str, pipe: Pipeline) -> None:
    assert out.strip() == m.p0["owner"]


def lease_left(m: Moment, out: str, pipe: Pipeline) -> None:
    assert 0 < int(out) <= 2000


def applied(m: Moment, out: str, pipe: Pipeline) -> None:
    assert int(out) == m.p0["applied_ts"]


def counts(m: Moment, out: str, pipe: Pipeline) -> None:
    counters = {name: int(value) for name, value in pairs(out).items()}
    p0 = m.p0
    written, acked = counters.get("written:p0", 0), counters.get("acked:p0", 0)
    # the README's rule, from this reply and XINFO GROUPS' pending and lag
    expected = 0 if p0["pending"] == 0 and p0["lag"] == 0 else max(written - acked, p0["pending"])
    assert expected == p0["buffer"]
    assert m.status["buffer"] == sum(p["buffer"] for p in m.status["partitions"])
    if m.blocked:
        assert p0["buffer"] > 0


def blocked(m: Moment, out: str, pipe: Pipeline) -> None:
    if not m.blocked:
        assert out.strip() == "" and m.p0["blocked"] is None
        return
    state = json.loads(out)
    assert m.p0["blocked"] == f"{state['kind']}: {state['reason']} (consumer {state['consumer']})"
    assert state["kind"] == "auth" and state["consumer"] == m.p0["owner"]
    # status computes it as its now minus since_ms; its now lies within the call (ms clock)
    before, after = m.taken
    since = state["since_ms"] / 1000
    assert before - since - 0.002 <= m.p0["blocked_seconds"] <= after - since + 0.002


def first_ids(pipe: Pipeline, *, newest: bool) -> list[str]:
    """The ids of p0's 5 oldest (or newest) entries, read with redis-py."""
    client = pipe.stack.sync_redis()
    reply = client.xrevrange(STREAM, count=5) if newest else client.xrange(STREAM, count=5)
    return [entry_id.decode() for entry_id, _ in cast(Entries, reply)]


def oldest(m: Moment, out: str, pipe: Pipeline) -> None:
    ids = first_ids(pipe, newest=False)
    assert ids and lines(out)[0] == ids[0]
    assert [line for line in lines(out) if line in ids] == ids


def newest(m: Moment, out: str, pipe: Pipeline) -> None:
    ids = first_ids(pipe, newest=True)
    assert ids and lines(out)[0] == ids[0]
    assert [line for line in lines(out) if line in ids] == ids


def producer_lease(m: Moment, out: str, pipe: Pipeline) -> None:
    if m.status.get("producer_running"):
        epoch, _, name = out.strip().partition(":")
        assert int(epoch) >= 1 and name
    else:
        assert out.strip() == ""  # the producer stopped cleanly: it released its lease


def high_water(m: Moment, out: str, pipe: Pipeline) -> None:
    mark = int(out)
    assert mark >= max(p["applied_ts"] for p in m.status["partitions"])


def meta(m: Moment, out: str, pipe: Pipeline) -> None:
    layout = pairs(out)
    assert layout["layout"] == "2"
    assert int(layout["partitions"]) == len(m.status["partitions"])
    assert layout["view"] == m.status["view"] == "orders_search_source_mv"
    assert layout["key_column"] == "order_id"


# Keyed by the command's words after the address (stable when the README's prose moves).
CHECKS: dict[str, Check] = {
    "GET searchsync:{orders_search_source_mv}:checkpoint": checkpoint,
    "ZRANGE searchsync:{orders_search_source_mv}:members": members,
    "XLEN searchsync:{orders_search_source_mv}:dlq": dlq,
    "XINFO STREAM": stream,
    "XINFO GROUPS": group,
    "XINFO CONSUMERS": consumers,
    "XPENDING": idle_pending,
    "GET searchsync:{orders_search_source_mv:p0}:lease": owner,
    "PTTL searchsync:{orders_search_source_mv:p0}:lease": lease_left,
    "GET searchsync:{orders_search_source_mv:p0}:applied": applied,
    "HGETALL searchsync:{orders_search_source_mv:p0}:counts": counts,
    "GET searchsync:{orders_search_source_mv:p0}:blocked": blocked,
    "XRANGE": oldest,
    "XREVRANGE": newest,
    "GET searchsync:{orders_search_source_mv}:producer": producer_lease,
    "ZSCORE searchsync:{orders_search_source_mv}:high_water": high_water,
    "HGETALL searchsync:{orders_search_source_mv}:meta": meta,
}
ADDRESS = 'redis-cli -u "$REDIS_URL" '


def check_of(command: str) -> Check:
    assert command.startswith(ADDRESS), f"README's `{command}` does not use {ADDRESS!r}"
    words = command.removeprefix(ADDRESS)
    known = [prefix for prefix in CHECKS if words.startswith(prefix + " ") or words == prefix]
    assert len(known) == 1, f"the test knows no single check for README's `{command}`"
    return CHECKS[known[0]]


def run(command: str, pipe: Pipeline) -> str:
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        env={**os.environ, "REDIS_URL": pipe.stack.redis.url},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"`{command}`: exit {result.returncode}\n{result.stderr}"
    return result.stdout


def test_every_command_has_a_check_and_every_status_field_a_row() -> None:
    readme = (REPO / "README.md").read_text()
    listed = commands(readme)
    assert {check_of(command) for command in listed} == set(CHECKS.values())
    assert len(listed) == len(CHECKS)
    from searchsync.common.status import PartitionStatus, Status

    fields = set(Status.__struct_fields__) | set(PartitionStatus.__struct_fields__)
    fields -= {"partitions"}  # the list itself
    assert fields <= json_fields_in_table(readme), fields - json_fields_in_table(readme)


def frozen(pipe: Pipeline, *, blocked: bool) -> Moment:
    """The status, unchanged before and after: nothing moves while the commands run."""
    first = pipe.status()
    before = time.time()
    second = pipe.status()
    after = time.time()
    steady = ("checkpoint", "dlq_length", "buffer", "members")
    assert [first[k] for k in steady] == [second[k] for k in steady]
    for a, b in zip(first["partitions"], second["partitions"], strict=True):
        assert {k: a[k] for k in ("length", "lag", "pending", "owner", "applied_ts", "buffer")} == {
            k: b[k] for k in ("length", "lag", "pending", "owner", "applied_ts", "buffer")
        }
    return Moment(second, blocked, taken=(before, after))


def check_all(moment: Moment, pipe: Pipeline) -> None:
    for command in commands((REPO / "README.md").read_text()):
        out = run(command, pipe)
        moment.outputs[command] = out
        try:
            check_of(command)(moment, out, pipe)
        except AssertionError as error:
            raise AssertionError(
                f"`{command}` ({'blocked' if moment.blocked else 'healthy'}):\n{out[-2000:]}\n"
                f"--- status --json\n{json.dumps(moment.status, indent=1)[-3000:]}\n"
                f"--- logs\n{pipe.logs()[-3000:]}"
            ) from error
    after = frozen(pipe, blocked=moment.blocked).status
    assert after["partitions"][0]["pending"] == moment.p0["pending"]


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=60) as pipe:
        yield pipe


def test_every_redis_cli_command_agrees_with_searchsync_status(pipeline: Pipeline) -> None:
    pipe = pipeline
    redis = pipe.stack.sync_redis()
    producer = pipe.stack.producer(**pipe.env())
    healthy = pipe.consumer("c1")
    pipe.wait_drained(timeout=120)
    # a hand-written entry the consumer cannot decode: one dead letter
    redis.xadd(STREAM, {"op": "zz", "ts": "1"})
    wait_for(lambda: pipe.status()["dlq_length"] == 1, 60, "the dead letter")
    out = run(f"{ADDRESS}GET {PREFIX}producer", pipe)  # the README's command, while it runs
    producer_lease(Moment({"producer_running": True}, blocked=False), out, pipe)
    assert producer.terminate() == 0
    pipe.wait_drained(timeout=120)
    check_all(frozen(pipe, blocked=False), pipe)

    # OpenSearch starts refusing writes (a rotated password) under a consumer of its own
    healthy.signal(signal.SIGTERM)
    assert healthy.wait(30) == 0
    proxy = HttpProxy(pipe.os_env["OS_HOST"], int(pipe.os_env["OS_PORT"]))
    proxy.start()
    try:
        env = {**pipe.env(), "OS_HOST": "127.0.0.1", "OS_PORT": str(proxy.port)}
        pipe.consumers["c2"] = ConsumerProcess(env, "c2", pipe.stack.log_dir)
        wait_for(
            lambda: all(p["owner"] == "c2" for p in pipe.status()["partitions"]),
            120,
            "c2 to own every partition",
        )
        proxy.set_unauthorized(True)
        producer = pipe.stack.producer(**pipe.env())
        in_p0 = [
            f"order:FM-{n}"
            for n in range(1001, 1061)
            if partition_of(f"order:FM-{n}".encode(), pipe.stack.partitions) == 0
        ]
        for order in in_p0:
            set_status(pipe.stack, order, "refused")

        def p0_blocked_with_pending() -> bool:
            p0: dict[str, Any] = pipe.status()["partitions"][0]
            return bool(p0["pending"] > 0 and p0["blocked"] is not None)

        wait_for(p0_blocked_with_pending, 120, "p0's changes pending and p0 blocked")
        assert producer.terminate() == 0
        # XPENDING … IDLE 15000 lists entries delivered over 15 s ago
        time.sleep(IDLE_MS / 1000 + 2)
        check_all(frozen(pipe, blocked=True), pipe)

        proxy.set_unauthorized(False)  # the new password is deployed: everything syncs
        pipe.wait_drained(timeout=120)
        assert pipe.status()["partitions"][0]["blocked"] is None
    finally:
        proxy.close()
