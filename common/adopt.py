"""``searchsync index adopt``: put a concrete index named like the alias behind the alias.

The runbook's Force Resync makes a concrete index named like the alias (``curl -X PUT
/orders``); searchsync writes with ``require_alias=true``, so every upsert is then
refused (common.index). Adopting keeps every document and its external ``_version``:

1. block writes on the concrete index ``<alias>`` (``index.blocks.write``): running
   consumers' writes get ``cluster_block_exception``, which they retry and never
   dead-letter, and nothing can change the index after it is copied;
2. ``_clone`` it to ``<alias>_v<N>`` (N = 1 + the highest existing generation). A
   clone hard-links the segment files instead of re-indexing, so documents,
   ``_version`` and the mapping are kept (measured on the devstack node: 1.3 s for
   a 40,000-document, 10 MB index);
3. wait until the clone is yellow or green, and check it holds as many documents;
4. in ONE ``_aliases`` request delete the concrete index (``remove_index``) and add
   the alias to the clone with ``is_write_index: true``: no reader or writer ever
   sees neither (other aliases of the concrete index move to the clone too);
5. remove the write block ``_clone`` copied to the clone.

Every step can be interrupted; running adopt again finds where it stopped (a clone
of the concrete index is recognised by its ``index.resize.source.uuid``, a finished
swap with the block still on by ``index.resize.source.name``) and finishes the job.

Not kept (measured on 2.19.6): delete tombstones. They live in the shard's memory,
which a clone starts without, so an upsert with a version older than a delete made
before the adopt is accepted again (a close/open of the index does the same, measured;
a node restart reopens shards the same way).

:func:`plan` and :func:`describe` are pure; :func:`gather` and :func:`execute` do I/O.
An alias over several indexes with no write index is repaired with ``--write-index``
(:attr:`Step.MARK_WRITE_INDEX`).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from opensearchpy import AsyncOpenSearch

from .errors import FatalError
from .index import (
    IndexLayoutError,
    Layout,
    inspect_layout,
    next_generation,
    versioned_name,
    write_index,
)

__all__ = [
    "AdoptError",
    "Executed",
    "Plan",
    "State",
    "Step",
    "Verdict",
    "describe",
    "execute",
    "gather",
    "plan",
]

# How long the clone may take to become yellow: recovering a clone only hard-links
# files, so this is ample unless the cluster cannot allocate the shard at all.
WAIT_SECONDS: Final = 600.0
# One cluster-health request waits this long (and the client a little longer).
_HEALTH_POLL_SECONDS: Final = 30
_CLONE_REQUEST_SECONDS: Final = 90.0


class AdoptError(FatalError):
    """Adopt stopped where only an operator can decide; the message says what to do."""


class Step(enum.Enum):
    BLOCK_SOURCE = "block_source"
    CLONE = "clone"
    WAIT = "wait"
    VERIFY = "verify"
    SWAP = "swap"
    UNBLOCK = "unblock"
    MARK_WRITE_INDEX = "mark_write_index"


class Verdict(enum.Enum):
    RUN = "run"  # steps to run (exit 0 when they are done)
    NOTHING = "nothing"  # already an alias with a write index (exit 0)
    REFUSED = "refused"  # nothing to adopt, or it cannot be done safely (exit 1)


@dataclass(frozen=True, slots=True)
class IndexFacts:
    """What adopt needs to know of one index, from its settings."""

    name: str
    uuid: str
    write_blocked: bool
    resize_source_uuid: str | None = None  # set on an index made by _clone (or shrink/split)
    resize_source_name: str | None = None


@dataclass(frozen=True, slots=True)
class State:
    """The layout behind the alias name and the facts of every index that matters to adopt:
    the concrete index, every ``<alias>_v<N>`` and every index behind the alias."""

    layout: Layout
    indexes: Mapping[str, IndexFacts] = field(default_factory=dict)
    source_aliases: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """What adopt will do. ``target`` ends up as the alias's write index; ``outcome`` is
    the word the CLI reports (adopted, write_index_set, already_an_alias,
    nothing_to_adopt, refused)."""

    alias: str
    verdict: Verdict
    outcome: str
    steps: tuple[Step, ...] = ()
    target: str | None = None
    message: str = ""
    carried_aliases: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Executed:
    steps: tuple[Step, ...]
    documents: int | None  # documents in the clone when it was checked


def _truthy(value: Any) -> bool:
    return str(value).lower() == "true"


def facts_from_settings(response: Mapping[str, Any]) -> dict[str, IndexFacts]:
    """Parse ``GET /<indexes>/_settings?flat_settings=true``. Pure."""
    facts: dict[str, IndexFacts] = {}
    for name, entry in response.items():
        settings = entry.get("settings", {})
        facts[name] = IndexFacts(
            name=name,
            uuid=str(settings.get("index.uuid", "")),
            write_blocked=_truthy(settings.get("index.blocks.write", False)),
            resize_source_uuid=settings.get("index.resize.source.uuid"),
            resize_source_name=settings.get("index.resize.source.name"),
        )
    return facts


def plan(state: State, *, write_index_name: str | None = None) -> Plan:
    """What adopt must do from ``state`` on; ``write_index_name`` is ``--write-index``. Pure."""
    layout, alias = state.layout, state.layout.alias
    if layout.missing:
        return Plan(
            alias, Verdict.REFUSED, "nothing_to_adopt",
            message=f"nothing is named {alias}: nothing to adopt. `searchsync index create` "
            f"creates {versioned_name(alias)} behind the alias {alias}.",
        )  # fmt: skip
    if layout.members:
        return _plan_alias(state, write_index_name)
    return _plan_concrete(state, write_index_name)


def _refused(alias: str, message: str) -> Plan:
    return Plan(alias, Verdict.REFUSED, "refused", message=message)


def _plan_concrete(state: State, write_index_name: str | None) -> Plan:
    alias = state.layout.alias
    if write_index_name is not None:
        return _refused(
            alias,
            f"--write-index is for an alias over several indexes, and {alias} is a concrete "
            f"index: run `searchsync index adopt` without it.",
        )
    source = state.indexes.get(alias)
    if source is None:  # deleted between the two reads
        return _refused(alias, f"{alias} changed while it was read: run adopt again.")
    clones = sorted(
        name
        for name, facts in state.indexes.items()
        if name != alias and facts.resize_source_uuid == source.uuid
    )
    if len(clones) > 1:
        return _refused(
            alias,
            f"{alias} has several clones ({', '.join(clones)}): keep the one to adopt, "
            f"delete the others (`curl -X DELETE /NAME`), and run adopt again.",
        )
    carried = state.source_aliases
    tail = (Step.WAIT, Step.VERIFY, Step.SWAP, Step.UNBLOCK)
    if clones:
        (target,) = clones
        if not source.write_blocked:
            # writes may have reached the source after the copy: the clone may miss them
            return _refused(
                alias,
                f"{target} was cloned from {alias}, but {alias} accepts writes again, so "
                f"{target} may miss some: delete it (`curl -X DELETE /{target}`) and run "
                f"adopt again.",
            )
        return Plan(alias, Verdict.RUN, "adopted", tail, target, carried_aliases=carried)
    target = versioned_name(alias, next_generation(alias, state.indexes))
    head = () if source.write_blocked else (Step.BLOCK_SOURCE,)
    steps = (*head, Step.CLONE, *tail)
    return Plan(alias, Verdict.RUN, "adopted", steps, target, carried_aliases=carried)


def _plan_alias(state: State, write_index_name: str | None) -> Plan:
    layout, alias = state.layout, state.layout.alias
    members = layout.members
    if write_index_name is not None:
        if write_index_name not in members:
            return _refused(
                alias,
                f"{write_index_name} is not behind the alias {alias} (it points at "
                f"{', '.join(members)}).",
            )
        marked = [name for name, flag in members.items() if flag]
        if marked and marked[0] != write_index_name:
            # moving writes off a working index is a resync's decision, not a repair
            return _refused(
                alias,
                f"alias {alias} already writes to {marked[0]}: adopt does not move a working "
                f"alias (use POST /_aliases if that is really wanted).",
            )
        if not marked:
            return Plan(
                alias, Verdict.RUN, "write_index_set", (Step.MARK_WRITE_INDEX,), write_index_name
            )
    try:
        target = write_index(layout)
    except IndexLayoutError as error:
        return _refused(alias, str(error))
    facts = state.indexes.get(target)
    if facts is not None and facts.write_blocked and facts.resize_source_name == alias:
        return Plan(
            alias, Verdict.RUN, "adopted", (Step.UNBLOCK,), target,
            message=f"an earlier adopt stopped before removing the write block {target} "
            f"was cloned with: finishing it.",
        )  # fmt: skip
    return Plan(
        alias, Verdict.NOTHING, "already_an_alias", target=target,
        message=f"{alias} is already an alias (writes go to {target}): nothing to adopt.",
    )  # fmt: skip


def describe(the_plan: Plan) -> list[str]:
    """The plan in numbered sentences, for the confirmation prompt. Pure."""
    alias, target = the_plan.alias, the_plan.target
    carried = ", ".join(the_plan.carried_aliases)
    others = f"; its other aliases ({carried}) move to {target} too" if carried else ""
    words = {
        Step.BLOCK_SOURCE: f"block writes on {alias} (index.blocks.write=true): running "
        f"consumers' writes get cluster_block_exception and are retried, never "
        f"dead-lettered, until the block is gone",
        Step.CLONE: f"clone {alias} to {target} (the segments are hard-linked: documents, "
        f"their _version and the mapping are kept)",
        Step.WAIT: f"wait until {target} is yellow or green (at most {WAIT_SECONDS:.0f} s)",
        Step.VERIFY: f"check that {target} holds as many documents as {alias}",
        Step.SWAP: f"in one _aliases request: delete the concrete index {alias} and point "
        f"the alias {alias} at {target} (is_write_index: true){others}",
        Step.UNBLOCK: f"remove the write block {target} was cloned with",
        Step.MARK_WRITE_INDEX: f"mark {target} as the write index of the alias {alias} "
        f"(is_write_index: true)",
    }
    lines = [f"  {n}. {words[step]}" for n, step in enumerate(the_plan.steps, 1)]
    if Step.CLONE in the_plan.steps or Step.SWAP in the_plan.steps:
        lines.append(
            "  Delete tombstones are not cloned: an upsert replayed later with a version older "
            "than a delete made before now would bring that document back (`searchsync "
            "verify` finds such documents)."
        )
    return lines


async def gather(client: AsyncOpenSearch, alias: str) -> State:
    """Read the :class:`State` behind ``alias``: at most 6 requests, each within the
    client's timeout. Raises opensearchpy.TransportError subclasses."""
    layout = await inspect_layout(client, alias)
    names = [alias] if layout.concrete else list(layout.members)
    response = await client.indices.get_settings(
        index=",".join([*names, f"{alias}_v*"]),
        flat_settings=True,
        expand_wildcards="all",
        ignore_unavailable=True,
    )
    source_aliases: dict[str, Mapping[str, Any]] = {}
    if layout.concrete:
        found = await client.indices.get_alias(index=alias)
        source_aliases = dict(found.get(alias, {}).get("aliases", {}))
    return State(layout, facts_from_settings(response), source_aliases)


async def execute(
    client: AsyncOpenSearch,
    the_plan: Plan,
    progress: Callable[[str], None],
    *,
    wait_seconds: float = WAIT_SECONDS,
) -> Executed:
    """Run ``the_plan``'s steps in order, telling ``progress`` before each one.

    Each request waits at most the client's timeout, except the clone (90 s) and the
    wait for the clone's health (``wait_seconds`` in all). Raises :class:`AdoptError`
    when the clone does not become yellow in time or holds a different number of
    documents (nothing has been swapped then), and opensearchpy.TransportError
    subclasses. Interrupted anywhere, a new :func:`gather` and :func:`plan` resume.
    """
    alias, target = the_plan.alias, the_plan.target or ""
    documents: int | None = None
    for step in the_plan.steps:
        if step is Step.BLOCK_SOURCE:
            progress(f"blocking writes on {alias}")
            await client.indices.put_settings(index=alias, body={"index.blocks.write": True})
        elif step is Step.CLONE:
            progress(f"cloning {alias} to {target}")
            await client.indices.clone(
                index=alias, target=target, request_timeout=_CLONE_REQUEST_SECONDS
            )
        elif step is Step.WAIT:
            await _wait_usable(client, target, progress, wait_seconds)
        elif step is Step.VERIFY:
            documents = await _same_count(client, alias, target, progress)
        elif step is Step.SWAP:
            progress(f"pointing the alias {alias} at {target} and deleting the index {alias}")
            actions: list[dict[str, Any]] = [
                {"remove_index": {"index": alias}},
                {"add": {"index": target, "alias": alias, "is_write_index": True}},
            ]
            actions += [
                {"add": {**spec, "index": target, "alias": name}}
                for name, spec in the_plan.carried_aliases.items()
            ]
            await client.indices.update_aliases(body={"actions": actions})
        elif step is Step.UNBLOCK:
            progress(f"removing the write block on {target}")
            await client.indices.put_settings(index=target, body={"index.blocks.write": None})
        elif step is Step.MARK_WRITE_INDEX:
            progress(f"marking {target} as the write index of {alias}")
            await client.indices.update_aliases(
                body={"actions": [{"add": {"index": target, "alias": alias,
                                           "is_write_index": True}}]}
            )  # fmt: skip
    return Executed(the_plan.steps, documents)


async def _wait_usable(
    client: AsyncOpenSearch, target: str, progress: Callable[[str], None], limit: float
) -> None:
    start = time.monotonic()
    while True:
        # request_timeout must be given: without it opensearch-py 3.2 pops `timeout` as
        # the client's own timeout ("30s", refused by urllib3/aiohttp) and never sends it
        health = await client.cluster.health(
            index=target,
            wait_for_status="yellow",
            timeout=f"{_HEALTH_POLL_SECONDS}s",
            request_timeout=_HEALTH_POLL_SECONDS + 10,
        )
        status = health.get("status")
        waited = time.monotonic() - start
        if status in ("yellow", "green") and not health.get("timed_out", False):
            progress(f"{target} is {status}")
            return
        if waited >= limit:
            raise AdoptError(
                f"{target} is still {status} after {waited:.0f} s (GET "
                f"/_cluster/allocation/explain says why): nothing was swapped; run adopt "
                f"again once it is yellow."
            )
        progress(f"waiting for {target} to be yellow: {status} after {waited:.0f} s")
        await asyncio.sleep(1.0)


async def _same_count(
    client: AsyncOpenSearch, alias: str, target: str, progress: Callable[[str], None]
) -> int:
    progress(f"counting the documents of {alias} and {target}")
    counts = []
    for name in (alias, target):
        # a refresh is allowed under the write block, and makes every document count
        await client.indices.refresh(index=name)
        counts.append(int((await client.count(index=name))["count"]))
    if counts[0] != counts[1]:
        raise AdoptError(
            f"{target} holds {counts[1]} documents and {alias} {counts[0]}: nothing was "
            f"swapped. Delete {target} (`curl -X DELETE /{target}`) and run adopt again."
        )
    return counts[1]
