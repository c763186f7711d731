"""The index searchsync writes to: its mapping, its settings, and the alias in front of it.

Writers always address the alias OS_INDEX_NAME; the concrete index behind it is
``<alias>_v<N>``, so ``searchsync resync`` (common.resync) builds ``_v<N+1>``
and swaps the alias with no downtime. :func:`ensure_index` is
what a consumer runs at start and what ``searchsync index create`` runs.

The write target. Bulks go to ``/<alias>/_bulk`` with ``require_alias=true``, so
OpenSearch only accepts them when OS_INDEX_NAME is an alias with exactly one index
to write to: the one marked ``is_write_index: true``, or its only index when that
flag is not set. A concrete index named like the alias (the runbook's Force Resync
makes one with ``curl -X PUT /orders``) and an alias over several indexes with none
marked are refused item by item, forever; :func:`write_index` turns both into an
:class:`IndexLayoutError` that names the fix, and :func:`layout_problem` recognises
the per-item answers. New indexes are created with the alias already marked as
their write index, so adding a second index to the alias later keeps writes going
to the first until the alias is swapped on purpose. ``searchsync index adopt``
(common.adopt) repairs a concrete index in place.

Mapping choices: every column of the view is mapped explicitly with the
runbook's types; free text that people also sort or aggregate on (names) gets a
``keyword`` sub-field; ``dynamic: false`` keeps a column added to the view later in
``_source`` without letting OpenSearch guess its type (a guess can reject every
later document). ``sync_version`` (long) is the version every document carries, so
a reconcile can delete by version. ``refresh_interval`` is set explicitly: an
index left at the default stops refreshing while it gets no searches ("search
idle"), and the first search after a quiet spell then waits for a refresh.
``index.gc_deletes`` keeps delete tombstones (with their versions) at least as long
as the streams keep entries, so replaying an old upsert cannot resurrect a
document deleted at a newer version, and a bulk that lands late (held up on the way
after the client gave up: a proxy, a queue) cannot either, as long as it lands
within that time. OpenSearch ignores a tombstone older than gc_deletes when it
looks a version up. An index searchsync did not create (made by hand, or adopted:
a clone keeps its source's settings) has OpenSearch's 60 s, so :func:`ensure_index`
raises a write index's gc_deletes to STREAM_RETENTION_SECONDS when it is lower
(:func:`keep_tombstones`). Measured on 2.19.6: those tombstones live in
the shard's memory only, so they are lost when the index is closed and reopened or
cloned (a node restart reopens shards the same way); an upsert older than such a
delete is then accepted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from opensearchpy import AsyncOpenSearch, AuthorizationException, NotFoundError, RequestError

from .entries import VERSION_FIELD
from .errors import FatalError

__all__ = [
    "VIEW_PROPERTIES",
    "IndexLayoutError",
    "Layout",
    "MappingDiff",
    "ensure_index",
    "generation_of",
    "index_body",
    "inspect_layout",
    "keep_tombstones",
    "layout_of_aliases",
    "layout_problem",
    "live_mapping",
    "mapping_diff",
    "next_generation",
    "render_mapping_diff",
    "replicas_for",
    "resolve_replicas",
    "seconds_of_time_value",
    "versioned_name",
    "write_index",
]

log = logging.getLogger(__name__)

_KEYWORD: Final = {"type": "keyword"}
_DATE: Final = {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
_TEXT: Final = {"type": "text"}
_LONG: Final = {"type": "long"}
# text people also sort and aggregate on
_TEXT_SORTABLE: Final = {
    "type": "text",
    "fields": {"keyword": {"type": "keyword", "ignore_above": 256}},
}

# The 18 columns of orders_search_source_mv (runbook §5), typed as in runbook §4.
VIEW_PROPERTIES: Final[dict[str, dict[str, Any]]] = {
    "order_id": _KEYWORD,
    "order_number": _KEYWORD,
    "order_status": _KEYWORD,
    "store_id": _KEYWORD,
    "customer_id": _KEYWORD,
    "delivery_window_start": _DATE,
    "delivery_window_end": _DATE,
    "order_total_amount": {"type": "float"},
    "customer_name": _TEXT_SORTABLE,
    "customer_email": _KEYWORD,
    "customer_address": _TEXT,
    "store_name": _TEXT_SORTABLE,
    "store_zone": _KEYWORD,
    "store_address": _TEXT,
    "assigned_courier_id": _KEYWORD,
    "delivery_task_status": _KEYWORD,
    "delivery_eta": _DATE,
    "effective_updated_at": _DATE,
    VERSION_FIELD: _LONG,
}


class IndexLayoutError(FatalError):
    """OS_INDEX_NAME cannot be written through; the message says what is wrong and the fix.

    Fatal: retrying cannot help until an operator changes the layout.
    """


def versioned_name(alias: str, generation: int = 1) -> str:
    """The concrete index behind ``alias``: ``<alias>_v<generation>``."""
    return f"{alias}_v{generation}"


def generation_of(alias: str, name: str) -> int | None:
    """N when ``name`` is ``<alias>_v<N>``, else None."""
    match = re.fullmatch(re.escape(alias) + r"_v([0-9]+)", name)
    return int(match.group(1)) if match else None


def next_generation(alias: str, names: Iterable[str]) -> int:
    """1 + the highest N among ``names`` of the form ``<alias>_v<N>`` (1 when there is none)."""
    found = [n for name in names if (n := generation_of(alias, name)) is not None]
    return max(found, default=0) + 1


def index_body(
    *,
    retention_seconds: int,
    replicas: int = 0,
    shards: int = 1,
    refresh_interval: str = "1s",
    properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Settings and mapping for a new index.

    ``retention_seconds`` is STREAM_RETENTION_SECONDS: delete tombstones are kept
    at least that long. ``replicas`` 0 suits a single node; use 1+ on a cluster.
    ``properties``: the view's fields (INDEX_MAPPING, common.views); None: the orders
    view's VIEW_PROPERTIES. ``sync_version`` is always mapped as a long.
    """
    fields = VIEW_PROPERTIES if properties is None else {**properties, VERSION_FIELD: _LONG}
    return {
        "settings": {
            "index": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "refresh_interval": refresh_interval,
                "gc_deletes": f"{retention_seconds}s",
            }
        },
        "mappings": {"dynamic": "false", "properties": fields},
    }


def replicas_for(setting: str | int, data_nodes: int, live: int | None = None) -> int:
    """``number_of_replicas`` for a new index under OS_INDEX_REPLICAS ``setting``.

    A whole number (``"2"`` or ``2``) is taken as given, even above ``data_nodes - 1``
    (the index stays yellow until enough nodes join: the operator's call). ``"auto"``
    is ``min(1, data_nodes - 1)``: one copy more on a cluster, so losing one data node
    loses no shard, and none on a single node, where a replica could never be assigned
    and the index would stay yellow. ``live``: the replicas of the index a resync
    replaces; under auto an operator's higher count there is kept. Raises ValueError
    for a setting that is neither (load_settings has already refused those).
    """
    if isinstance(setting, int) or setting != "auto":
        count = int(setting)
        if count < 0:
            raise ValueError(f"number_of_replicas below 0: {setting!r}")
        return count
    derived = max(0, min(1, data_nodes - 1))
    return derived if live is None else max(derived, live)


async def resolve_replicas(
    client: AsyncOpenSearch, setting: str | int, live: int | None = None
) -> int:
    """:func:`replicas_for` with the cluster's data nodes, asked of ``_cluster/health``
    only under ``"auto"`` (one request, the client's timeout; raises
    opensearchpy.TransportError subclasses)."""
    if setting != "auto":
        return replicas_for(setting, 1, live)
    health: Any = await client.cluster.health()
    return replicas_for(setting, int(health["number_of_data_nodes"]), live)


# --- the write target: pure --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """What stands behind the name OS_INDEX_NAME.

    ``members``: when it is an alias, each index behind it and its ``is_write_index``
    as set on the alias (None when not set). ``concrete``: a concrete index has that
    name (then ``members`` is empty). Neither: nothing has that name yet.
    ``versions``: the indexes named ``<alias>_v<N>`` (read only for a concrete index,
    to name the index adopt would make).
    """

    alias: str
    concrete: bool = False
    members: Mapping[str, bool | None] = field(default_factory=dict)
    versions: tuple[str, ...] = ()

    @property
    def missing(self) -> bool:
        return not self.concrete and not self.members


def layout_of_aliases(alias: str, response: Mapping[str, Any]) -> Layout:
    """The :class:`Layout` of an alias from ``GET /_alias/<alias>``'s answer.

    The answer reads ``{index: {"aliases": {alias: {"is_write_index": true, ...}}}}``;
    an index without the flag has ``{}`` there.
    """
    members: dict[str, bool | None] = {}
    for index, entry in response.items():
        spec = entry.get("aliases", {}).get(alias)
        if spec is None:
            continue
        flag = spec.get("is_write_index")
        members[index] = bool(flag) if flag is not None else None
    return Layout(alias, members=dict(sorted(members.items())))


def _concrete_message(layout: Layout) -> str:
    alias = layout.alias
    target = versioned_name(alias, next_generation(alias, layout.versions))
    return (
        f"{alias} is a concrete index, not an alias: searchsync writes through the alias "
        f"{alias} with require_alias=true, so OpenSearch refuses every upsert (404 "
        f"index_not_found_exception) and consumers would retry them forever. It was "
        f"probably made by hand (`curl -X PUT /{alias}`, as in the runbook's Force Resync). "
        f"Fix: `searchsync index adopt` turns it into {target} behind the alias {alias} "
        f"without losing documents (nor their versions)."
    )


def _no_write_index_message(layout: Layout) -> str:
    alias, names = layout.alias, list(layout.members)
    newest = max(names, key=lambda name: (generation_of(alias, name) or 0, name))
    disabled = [name for name, flag in layout.members.items() if flag is False]
    why = (
        f"its index {names[0]} is marked is_write_index=false"
        if len(names) == 1
        else f"it points at {len(names)} indexes ({', '.join(names)}) and none is marked "
        f"is_write_index=true"
    )
    note = f" ({', '.join(disabled)} marked false)" if disabled and len(names) > 1 else ""
    return (
        f"alias {alias} has no write index: {why}{note}, so OpenSearch refuses every write "
        f'(400 illegal_argument_exception "no write index is defined for alias [{alias}]"). '
        f"Fix: `searchsync index adopt --write-index {newest}` (or any index behind it) marks "
        f"that one is_write_index=true, as does POST /_aliases "
        f'{{"actions":[{{"add":{{"index":"{newest}","alias":"{alias}",'
        f'"is_write_index":true}}}}]}}.'
    )


def write_index(layout: Layout) -> str:
    """The index writes through ``layout.alias`` land in.

    That is the member marked ``is_write_index: true``, or the only member when the
    flag is not set on it (OpenSearch's own rule). Raises :class:`IndexLayoutError`
    for a concrete index named like the alias, an alias with no write index, and a
    name that does not exist yet.
    """
    if layout.concrete:
        raise IndexLayoutError(_concrete_message(layout))
    if layout.missing:
        raise IndexLayoutError(
            f"nothing is named {layout.alias}: no alias and no index. Fix: "
            f"`searchsync index create` (a consumer also does it at start) creates "
            f"{versioned_name(layout.alias)} behind the alias {layout.alias}."
        )
    marked = [name for name, flag in layout.members.items() if flag]
    if marked:
        return marked[0]  # OpenSearch allows one write index per alias
    if len(layout.members) == 1:
        ((name, flag),) = layout.members.items()
        if flag is None:
            return name
    raise IndexLayoutError(_no_write_index_message(layout))


# Measured on OpenSearch 2.19.6, /<name>/_bulk?require_alias=true (consumer.bulk's
# request); see layout_problem's docstring for the answers verbatim.
_NOT_AN_ALIAS: Final = re.compile(
    r"no such index \[(?P<name>[^\]]+)\] and \[require_alias\] request flag is \[true\] "
    r"and \[(?P=name)\] is not an alias"
)
_NO_WRITE_INDEX: Final = re.compile(r"no write index is defined for alias \[(?P<name>[^\]]+)\]")
_NO_SUCH_INDEX: Final = re.compile(r"no such index \[(?P<name>[^\]]+)\]")


def layout_problem(status: int, error_type: str, reason: str) -> str | None:
    """The operator's message (with the fix) when a ``_bulk`` item failed because of the
    layout behind OS_INDEX_NAME rather than the document, else None. Pure.

    Such an item is not the document's fault: it must not be dead-lettered, and will
    succeed unchanged once the layout is fixed. Answers measured on OpenSearch 2.19.6
    (``POST /<name>/_bulk?require_alias=true``, ``version_type=external_gte``), verbatim:

    - ``<name>`` is a concrete index — ``index`` items::

          404 index_not_found_exception "no such index [<name>] and [require_alias]
          request flag is [true] and [<name>] is not an alias"

      ``delete`` items are not checked against require_alias: they are applied to the
      concrete index (``{"status": 404}`` with result ``not_found``, or 200 ``deleted``).
    - nothing is named ``<name>`` — ``index`` items get exactly the same answer as above;
      ``delete`` items::

          404 index_not_found_exception "no such index [<name>]"

    - ``<name>`` is an alias over several indexes none of which is marked
      ``is_write_index: true`` (or over one marked ``false``) — every item, index and
      delete alike, with or without require_alias::

          400 illegal_argument_exception "no write index is defined for alias [<name>].
          The write index may be explicitly disabled using is_write_index=false or the
          alias points to multiple indices without one being designated as a write index"

    The first two cannot be told apart from the item; :func:`inspect_layout` then
    :func:`write_index` can (their message is exact).
    """
    if status == 404 and error_type == "index_not_found_exception":
        if match := _NOT_AN_ALIAS.fullmatch(reason):
            name = match["name"]
            return (
                f"OpenSearch refuses writes to {name}: it is not an alias (require_alias=true). "
                f"Either a concrete index named {name} exists (made by hand, e.g. the "
                f"runbook's `curl -X PUT /{name}`): `searchsync index adopt` turns it into "
                f"{name}_vN behind the alias without losing documents; or nothing is named "
                f"{name}: `searchsync index create` creates the alias and its index. "
                f"`searchsync index create` says which."
            )
        if match := _NO_SUCH_INDEX.fullmatch(reason):
            name = match["name"]
            # the bulk's target, or (rarely) the index it resolved to, deleted meanwhile
            return (
                f"OpenSearch has no alias or index named {name}. Fix: `searchsync index "
                f"create` creates the alias OS_INDEX_NAME and its first index."
            )
        return None
    no_write_index = _NO_WRITE_INDEX.match(reason)
    if status == 400 and error_type == "illegal_argument_exception" and no_write_index:
        name = no_write_index["name"]
        return (
            f"alias {name} has no write index (it points at several indexes and none is "
            f"marked is_write_index=true, or its index is marked false), so every write "
            f"is refused. Fix: `searchsync index adopt --write-index INDEX` marks one of "
            f"them (`searchsync index create` lists them), or POST /_aliases with "
            f'{{"add":{{"index":INDEX,"alias":"{name}","is_write_index":true}}}}.'
        )
    return None


# --- the write target: I/O ----------------------------------------------------------


async def inspect_layout(client: AsyncOpenSearch, alias: str) -> Layout:
    """What stands behind ``alias`` now: 1 to 5 requests, each within the client's timeout.

    Raises opensearchpy.TransportError subclasses when OpenSearch refuses or cannot be
    reached.
    """
    # HEAD first: the client logs every failed GET as a WARNING, and "no alias yet" is normal
    if await client.indices.exists_alias(name=alias):
        try:
            found = await client.indices.get_alias(name=alias)
        except NotFoundError:  # removed between the two requests
            found = {}
        layout = layout_of_aliases(alias, found)
        if not layout.missing:
            return layout
    # HEAD /<name> is true for an alias too, so it is asked only once there is none
    if not await client.indices.exists(index=alias):
        return Layout(alias)
    # ...but another process may have made the alias since the first question: GET
    # /<name> answers in one read, keyed by concrete index (the name itself if concrete)
    try:
        found = await client.indices.get(index=alias)
    except NotFoundError:  # deleted between the two requests
        return Layout(alias)
    if alias not in found:
        return layout_of_aliases(alias, found)
    rows = await client.cat.indices(
        index=f"{alias}_v*", format="json", h="index", expand_wildcards="all"
    )
    return Layout(alias, concrete=True, versions=tuple(sorted(row["index"] for row in rows)))


async def ensure_index(
    client: AsyncOpenSearch,
    alias: str,
    *,
    retention_seconds: int,
    replicas: str | int = 0,
    refresh_interval: str = "1s",
    properties: Mapping[str, Any] | None = None,
) -> str:
    """Make sure ``alias`` can be written through; create ``<alias>_v1`` behind it if
    nothing has that name (with ``properties`` as :func:`index_body` takes them, and
    ``replicas`` as OS_INDEX_REPLICAS: :func:`resolve_replicas`, one more request
    under ``"auto"``).

    Returns the index writes land in (:func:`write_index`). A new index is created
    with the alias in the same request, marked ``is_write_index: true``; the write
    index of an existing alias keeps delete tombstones at least ``retention_seconds``
    (:func:`keep_tombstones`). Safe to run from several processes at once. Raises
    :class:`IndexLayoutError` when a concrete index has the alias's name or the alias
    has no write index (the message names the fix), and opensearchpy.TransportError
    subclasses when OpenSearch refuses or cannot be reached (each request waits at most
    the client's timeout; at most 15 requests).
    """
    layout = await inspect_layout(client, alias)
    if layout.missing:
        count = await resolve_replicas(client, replicas)
        await _create(client, alias, index_body(
            retention_seconds=retention_seconds, replicas=count,
            refresh_interval=refresh_interval, properties=properties,
        ))  # fmt: skip
        layout = await inspect_layout(client, alias)
    name = write_index(layout)
    await keep_tombstones(client, name, retention_seconds)
    return name


_TIME_UNITS: Final = {
    "nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
}  # fmt: skip
_TIME_VALUE: Final = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([a-z]*)\s*")


def seconds_of_time_value(text: str) -> float | None:
    """Seconds of an OpenSearch time setting (``60s``, ``500ms``, ``1d``; ``-1``: never);
    None when it cannot be read. Pure."""
    match = _TIME_VALUE.fullmatch(text.lower())
    if match is None:
        return None
    number, unit = float(match.group(1)), match.group(2)
    if number < 0:
        return float("inf")  # -1: tombstones never collected
    if unit not in _TIME_UNITS:
        return None
    return number * _TIME_UNITS[unit]


async def keep_tombstones(client: AsyncOpenSearch, index: str, retention_seconds: int) -> bool:
    """Raise ``index.gc_deletes`` of ``index`` to ``retention_seconds`` when it is lower
    (module docstring: a late bulk or a replay must not outlive a delete's tombstone).

    Returns True when it changed the setting. A login without the right to read or
    change index settings (403) is told in a WARNING with the request that fixes it,
    and the caller goes on: writes work, only that protection is missing. One or two
    requests, each within the client's timeout; raises opensearchpy.TransportError
    subclasses other than 403 (OpenSearch unreachable, the index gone).
    """
    wanted = f"{retention_seconds}s"
    try:
        found: Any = await client.indices.get_settings(
            index=index, name="index.gc_deletes", include_defaults=True, flat_settings=True
        )
        entry = found.get(index, {})
        value = entry.get("settings", {}).get("index.gc_deletes") or entry.get("defaults", {}).get(
            "index.gc_deletes", "60s"
        )
        seconds = seconds_of_time_value(str(value))
        if seconds is not None and seconds >= retention_seconds:
            return False
        await client.indices.put_settings(index=index, body={"index": {"gc_deletes": wanted}})
    except AuthorizationException:
        log.warning(
            "Index %s may forget a delete's version before STREAM_RETENTION_SECONDS (%ds) "
            "and this login may not read or change its settings: a bulk landing late, or a "
            "replay, could bring a deleted document back. Fix: PUT /%s/_settings "
            '{"index.gc_deletes": "%s"}',
            index,
            retention_seconds,
            index,
            wanted,
        )
        return False
    log.warning(
        "Index %s kept a delete's version only %s (index.gc_deletes): raised to %s "
        "(STREAM_RETENTION_SECONDS), so a late bulk or a replay cannot bring a deleted "
        "document back",
        index,
        value,
        wanted,
    )
    return True


async def _create(client: AsyncOpenSearch, alias: str, body: dict[str, Any]) -> None:
    name = versioned_name(alias)
    # index and alias in one request: no other process can see the index without it
    marked = {alias: {"is_write_index": True}}
    try:
        await client.indices.create(index=name, body={**body, "aliases": marked})
        log.info("Created index %s behind alias %s (its write index)", name, alias)
        return
    except RequestError as error:
        if error.error == "invalid_alias_name_exception":
            return  # a concrete index named like the alias appeared meanwhile: reported next
        if error.error != "resource_already_exists_exception":
            raise
    # <alias>_v1 exists: made by another process just now, or left without its alias
    try:
        await client.indices.update_aliases(
            body={"actions": [{"add": {"index": name, "alias": alias, "is_write_index": True}}]}
        )
        log.info("Alias %s points at %s (its write index)", alias, name)
    except RequestError as error:
        if error.error != "invalid_alias_name_exception":
            raise


# --- the mapping --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MappingDiff:
    """How a live index's mapping differs from the project's (:func:`index_body`).

    Fields are dotted paths (sub-fields included: ``customer_name.keyword``) with
    their parameters (``type`` first; ``object`` for a field with properties only).
    ``dynamic`` is (project, index) when the top-level ``dynamic`` differs.
    """

    added: Mapping[str, Mapping[str, Any]]  # in the index only
    removed: Mapping[str, Mapping[str, Any]]  # in the project only
    changed: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]]  # (project, index)
    dynamic: tuple[str, str] | None = None

    @property
    def equal(self) -> bool:
        return not (self.added or self.removed or self.changed or self.dynamic)


_MISSING: Final = object()


def _scalar(value: Any) -> Any:
    # OpenSearch echoes parameters as they were sent: true, "true" and 256, "256" are equal
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value


# OpenSearch leaves a parameter out of GET _mapping when it has its default value
# (measured on 2.19.6: the project's date format comes back as {"type": "date"}).
_DEFAULT_PARAMS: Final[dict[str, dict[str, Any]]] = {
    "date": {"format": "strict_date_optional_time||epoch_millis"},
    "date_nanos": {"format": "strict_date_optional_time||epoch_millis"},
}


def _flatten(properties: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    fields: dict[str, dict[str, Any]] = {}
    for name, spec in properties.items():
        path = prefix + name
        params = {k: _scalar(v) for k, v in spec.items() if k not in ("properties", "fields")}
        kind = params.pop("type", "object")
        defaults = _DEFAULT_PARAMS.get(kind, {})
        params = {k: v for k, v in params.items() if defaults.get(k, _MISSING) != v}
        fields[path] = {"type": kind, **dict(sorted(params.items()))}
        fields.update(_flatten(spec.get("properties", {}), path + "."))
        fields.update(_flatten(spec.get("fields", {}), path + "."))
    return fields


def mapping_diff(project: Mapping[str, Any], live: Mapping[str, Any]) -> MappingDiff:
    """Compare two ``mappings`` objects (``{"dynamic": ..., "properties": {...}}``). Pure.

    An absent top-level ``dynamic`` is OpenSearch's default, ``true``.
    """
    ours, theirs = _flatten(project.get("properties", {})), _flatten(live.get("properties", {}))
    dynamic = (
        str(_scalar(project.get("dynamic", True))),
        str(_scalar(live.get("dynamic", True))),
    )
    return MappingDiff(
        added={path: theirs[path] for path in sorted(theirs.keys() - ours.keys())},
        removed={path: ours[path] for path in sorted(ours.keys() - theirs.keys())},
        changed={
            path: (ours[path], theirs[path])
            for path in sorted(ours.keys() & theirs.keys())
            if ours[path] != theirs[path]
        },
        dynamic=dynamic if dynamic[0] != dynamic[1] else None,
    )


async def live_mapping(client: AsyncOpenSearch, alias: str) -> tuple[str, dict[str, Any]]:
    """The write index behind ``alias`` and its ``mappings``.

    Raises :class:`IndexLayoutError` as :func:`write_index` does, and
    opensearchpy.TransportError subclasses (each request within the client's timeout).
    """
    name = write_index(await inspect_layout(client, alias))
    response = await client.indices.get_mapping(index=name)
    mappings: dict[str, Any] = response[name]["mappings"]
    return name, mappings


def _params(spec: Mapping[str, Any]) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "type")
    return f"{spec['type']} ({extra})" if extra else str(spec["type"])


def render_mapping_diff(diff: MappingDiff, alias: str, index: str) -> list[str]:
    """The human form of :func:`mapping_diff`'s answer, one line per difference. Pure."""
    if diff.equal:
        return [f"index {index} (alias {alias}) has the project's mapping"]
    lines = [f"index {index} (alias {alias}) differs from the project's mapping:"]
    if diff.dynamic is not None:
        lines.append(f"  dynamic: project {diff.dynamic[0]}, index {diff.dynamic[1]}")
    lines += [f"  + {path}: {_params(spec)}  (only in the index)" for path, spec in
              diff.added.items()]  # fmt: skip
    lines += [f"  - {path}: {_params(spec)}  (only in the project)" for path, spec in
              diff.removed.items()]  # fmt: skip
    lines += [
        f"  ~ {path}: project {_params(ours)}, index {_params(theirs)}"
        for path, (ours, theirs) in diff.changed.items()
    ]
    return lines
