"""Several views from one deployment: the views file named by SEARCHSYNC_CONFIG.

Without SEARCHSYNC_CONFIG the environment defines one view (VIEW_NAME, KEY_COLUMN,
OS_INDEX_NAME, INDEX_MAPPING, STREAM_PARTITIONS), exactly as before the file existed.
With it, a TOML file lists the views; service settings (Redis, OpenSearch,
Materialize addresses and credentials, logging, metrics) stay in the environment::

    [[views]]
    name = "orders_search_source_mv"   # the Materialize view (VIEW_NAME)
    key_column = "order_id"             # KEY_COLUMN
    index_alias = "orders"              # OS_INDEX_NAME
    partitions = 8                      # STREAM_PARTITIONS (default: the environment's)
    # mapping: omitted = the orders view's built-in mapping

    [[views]]
    name = "stores_search_source_mv"
    key_column = "store_id"
    index_alias = "stores"
    partitions = 2
    mapping = "stores.mapping.json"     # relative to the views file; or an inline table
    max_batch_size = 200                # any setting of PER_VIEW_SETTINGS, lower case

Each view's :class:`~.config.Settings` is the environment with the view's keys laid
over it, checked by :func:`~.config.load_settings` like the environment itself, so a
view's bad value fails with the same words, prefixed by the file, the view and the key.
A view's Redis keys are already its own (``searchsync:{<view>}:…``, common.keys), so
leases, checkpoints and consumer membership are per view.

:func:`parse_views` is pure (a parsed TOML document in, a :class:`Deployment` out);
:func:`load_deployment` reads the file and each mapping file it names; both raise
:class:`ViewsError` (a :class:`~.config.ConfigError`'s message for the environment).
:func:`deployment_or_exit` turns either into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from .config import EXIT_CONFIG, ConfigError, Settings, load_settings

__all__ = [
    "CONFIG_VARIABLE",
    "PER_VIEW_SETTINGS",
    "VIEW_VARIABLE",
    "Deployment",
    "ViewsError",
    "deployment_or_exit",
    "load_deployment",
    "parse_mapping",
    "parse_view_argument",
    "parse_views",
    "view_properties",
]

CONFIG_VARIABLE: Final = "SEARCHSYNC_CONFIG"
# the producer's view when the file lists several (its --view wins)
VIEW_VARIABLE: Final = "SEARCHSYNC_VIEW"

# A [[views]] key -> the variable it sets.
_VIEW_KEYS: Final = {
    "name": "VIEW_NAME",
    "key_column": "KEY_COLUMN",
    "index_alias": "OS_INDEX_NAME",
    "mapping": "INDEX_MAPPING",
    "partitions": "STREAM_PARTITIONS",
}
_REQUIRED: Final = ("name", "key_column", "index_alias")
# Settings a view may set for itself (lower case, as in Settings): what it reads and
# how its changes are batched, bounded, retried and kept. Connections, credentials,
# identities, leases, logging and metrics belong to the process and stay in the
# environment: one consumer serves every view with one Redis and one OpenSearch client.
PER_VIEW_SETTINGS: Final = frozenset(
    {
        "mz_cluster",
        "os_refresh_interval",
        "use_subscribe",
        "discard_snapshot",
        "subscribe_envelope",
        "poll_interval",
        "progress_interval_ms",
        "max_batch_size",
        "max_batch_age_seconds",
        "max_document_bytes",
        "max_entry_bytes",
        "max_bulk_bytes",
        "backpressure_threshold",
        "backpressure_resume",
        "buffer_log_seconds",
        "stream_retention_seconds",
        "dlq_retention_seconds",
        "consumer_group",
        "max_deliveries",
    }
)
# With a views file these come from it: the same variable in the environment as well
# would be silently overridden for one view and not the others, so it is refused.
_FILE_ONLY: Final = ("VIEW_NAME", "KEY_COLUMN", "OS_INDEX_NAME", "INDEX_MAPPING")


class ViewsError(ValueError):
    """The views file (or the environment's one view) cannot be used; the message names
    the file, the view and the key (or the variable)."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """The views one deployment syncs, each with its complete settings.

    ``source``: the views file, or None when the environment defines the one view.
    """

    views: tuple[Settings, ...]
    source: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(view.view_name for view in self.views)

    def view(self, name: str | None) -> Settings:
        """The view ``name``; with None, the only view. Raises ViewsError when ``name`` is
        not listed, or is None while several are."""
        if name is None:
            if len(self.views) == 1:
                return self.views[0]
            raise ViewsError(
                f"{self.source} lists {len(self.views)} views ({', '.join(self.names)}): "
                f"name one with --view (or {VIEW_VARIABLE})"
            )
        for view in self.views:
            if view.view_name == name:
                return view
        where = self.source or "the environment (VIEW_NAME)"
        raise ViewsError(f"no view {name!r} in {where}: it has {', '.join(self.names)}")


def _where(source: str, view: str | int, key: str | None = None) -> str:
    named = f"view {view!r}" if isinstance(view, str) else f"views[{view}]"
    return f"{source}: {named}" + (f", key {key!r}" if key else "")


def _as_variable(value: object) -> str | None:
    """A TOML scalar as an environment variable would spell it; None for tables, arrays
    and dates, which no setting takes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


def parse_mapping(value: object) -> dict[str, Any]:
    """OpenSearch ``properties`` from an INDEX_MAPPING value already parsed (an inline TOML
    table, or a JSON file's object). ``{"properties": {...}}`` (a ``mappings`` object)
    is accepted too. Pure; raises ValueError saying what is wrong."""
    if isinstance(value, Mapping) and isinstance(value.get("properties"), Mapping):
        value = value["properties"]
    if not isinstance(value, Mapping) or not value:
        raise ValueError("expected a non-empty object of field name -> OpenSearch field mapping")
    for field, spec in value.items():
        if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
            raise ValueError(
                f'field {field!r}: expected an object with a "type", e.g. {{"type": "keyword"}}'
            )
    return {str(field): dict(spec) for field, spec in value.items()}


def _view_environ(
    table: Mapping[str, Any], base: Mapping[str, str], source: str, position: int
) -> tuple[str, dict[str, str]]:
    """The environment one [[views]] table stands for; its name and that mapping."""
    name = table.get("name")
    label: str | int = name if isinstance(name, str) and name else position
    for key in _REQUIRED:
        if key not in table:
            raise ViewsError(f"{_where(source, label)}: the key {key!r} is missing")
    environ = dict(base)
    for key, value in table.items():
        if key not in _VIEW_KEYS and key not in PER_VIEW_SETTINGS:
            allowed = ", ".join([*_VIEW_KEYS, *sorted(PER_VIEW_SETTINGS)])
            raise ViewsError(f"{_where(source, label, key)}: unknown key (a view takes {allowed})")
        variable = _VIEW_KEYS.get(key, key.upper())
        if key == "mapping":
            environ[variable] = _mapping_variable(value, source, label)
            continue
        text = _as_variable(value)
        if text is None:
            raise ViewsError(
                f"{_where(source, label, key)}: expected a text, number or boolean, "
                f"not a {type(value).__name__}"
            )
        if not text.strip():  # empty means "unset" to load_settings: here, a slip
            raise ViewsError(f"{_where(source, label, key)}: empty (leave the key out instead)")
        environ[variable] = text
    return str(name), environ


def _mapping_variable(value: object, source: str, view: str | int) -> str:
    """INDEX_MAPPING for ``mapping = …``: inline JSON, or the file's path resolved against
    the views file's directory (read by load_deployment)."""
    if isinstance(value, str) and value:
        if os.path.isabs(value):
            return value
        return os.path.join(os.path.dirname(os.path.abspath(source)), value)
    try:
        return json.dumps(parse_mapping(value), sort_keys=True)
    except ValueError as error:
        raise ViewsError(f"{_where(source, view, 'mapping')}: {error} (or a file's path)") from None


def parse_views(document: Mapping[str, Any], environ: Mapping[str, str], source: str) -> Deployment:
    """The deployment a views file describes (``document``: its parsed TOML), over the
    service settings of ``environ``. Pure.

    Raises ViewsError naming ``source``, the view and the key: a key other than
    ``views`` at the top, no view, a view that is not a table, a required key missing
    (name, key_column, index_alias), an unknown key, a value no setting takes, two
    views of one name or one index alias, VIEW_NAME/KEY_COLUMN/OS_INDEX_NAME/
    INDEX_MAPPING set in the environment as well, or any value load_settings refuses.
    """
    for key in document:
        if key != "views":
            raise ViewsError(f"{source}: unknown key {key!r} (the file holds [[views]] tables)")
    tables = document.get("views")
    if not isinstance(tables, list) or not tables:
        raise ViewsError(f"{source}: no views: expected at least one [[views]] table")
    for variable in _FILE_ONLY:
        if environ.get(variable):
            raise ViewsError(
                f"{variable} is set and {CONFIG_VARIABLE}={source} names a views file: "
                f"each view's value comes from the file, unset {variable}"
            )
    views: list[Settings] = []
    aliases: dict[str, str] = {}
    for position, table in enumerate(tables):
        if not isinstance(table, Mapping):
            raise ViewsError(f"{_where(source, position)}: expected a [[views]] table")
        name, view_environ = _view_environ(table, environ, source, position)
        try:
            settings = load_settings(view_environ)
        except ConfigError as error:
            raise ViewsError(f"{_where(source, name, _key_of(error.variable))}: {error}") from None
        if any(view.view_name == settings.view_name for view in views):
            raise ViewsError(f"{_where(source, name, 'name')}: a second view of that name")
        if settings.os_index_name in aliases:
            raise ViewsError(
                f"{_where(source, name, 'index_alias')}: {settings.os_index_name!r} is "
                f"view {aliases[settings.os_index_name]!r}'s alias already: one alias per view"
            )
        aliases[settings.os_index_name] = settings.view_name
        views.append(settings)
    return Deployment(tuple(views), source)


def _key_of(variable: str) -> str | None:
    """The [[views]] key that sets ``variable``; None for the environment's own."""
    for key, mapped in _VIEW_KEYS.items():
        if mapped == variable:
            return key
    return variable.lower() if variable.lower() in PER_VIEW_SETTINGS else None


def view_properties(settings: Settings) -> dict[str, Any] | None:
    """The index ``properties`` of the view: INDEX_MAPPING inline (a JSON object) or read
    from the file it names; None when it is empty (the orders view's built-in mapping,
    common.index.VIEW_PROPERTIES). Reads at most one file. Raises ConfigError naming
    INDEX_MAPPING when the file cannot be read or the JSON is not a mapping."""
    raw = settings.index_mapping.strip()
    if not raw:
        return None
    if raw.startswith("{"):
        text, what = raw, "an inline JSON object"
    else:
        try:
            with open(raw, encoding="utf-8") as file:
                text = file.read()
        except OSError as error:
            raise ConfigError(
                "INDEX_MAPPING", raw, f"a readable JSON file ({error.strerror})"
            ) from None
        what = "a JSON file"
    try:
        return parse_mapping(json.loads(text))
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise ConfigError("INDEX_MAPPING", raw, f"{what} of index properties: {error}") from None


def load_deployment(environ: Mapping[str, str] | None = None) -> Deployment:
    """The views to sync: the file SEARCHSYNC_CONFIG names, else the environment's one
    view. Reads the views file and each mapping file (no other I/O).

    Raises ViewsError (file unreadable, not TOML, or anything :func:`parse_views`
    refuses; a mapping file that cannot be read or parsed) or ConfigError (the
    environment's own values, without a file).
    """
    env = os.environ if environ is None else environ
    source = env.get(CONFIG_VARIABLE, "")
    if not source:
        settings = load_settings(env)
        view_properties(settings)
        return Deployment((settings,), None)
    try:
        with open(source, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ViewsError(
            f"{CONFIG_VARIABLE}={source}: cannot read the views file ({error.strerror})"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ViewsError(f"{source}: not valid TOML: {error}") from None
    deployment = parse_views(document, env, source)
    for view in deployment.views:
        try:
            view_properties(view)
        except ConfigError as error:
            raise ViewsError(f"{_where(source, view.view_name, 'mapping')}: {error}") from None
    return deployment


def deployment_or_exit(environ: Mapping[str, str] | None = None) -> Deployment:
    """:func:`load_deployment`, or a one-line message on stderr and exit status 2."""
    try:
        return load_deployment(environ)
    except (ViewsError, ConfigError) as error:
        print(f"searchsync: configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def parse_view_argument(prog: str, doc: str, argv: Sequence[str] | None = None) -> str | None:
    """A daemon's command line: ``--view NAME`` (default SEARCHSYNC_VIEW) and ``--help``.

    Returns the view named, or None. ``--help`` prints ``doc`` and exits 0; anything
    else exits 2 with the usage (argparse), before a connection is opened.
    """
    names = ", ".join(
        [*(field.encode_name for field in msgspec.structs.fields(Settings)), CONFIG_VARIABLE]
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc,
        epilog="Configured by environment variables (README: Configuration), and by the "
        f"views file {CONFIG_VARIABLE} names for several views:\n" + textwrap.fill(names, width=78),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--view",
        default=os.environ.get(VIEW_VARIABLE) or None,
        help=f"the view of the views file to sync (default ${VIEW_VARIABLE}); "
        "required when the file lists several",
    )
    name: str | None = parser.parse_args(argv).view
    return name
