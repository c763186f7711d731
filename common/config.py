"""Typed settings, read once from the environment.

Every variable of the runbook's configuration reference, plus the ones DESIGN.md
adds, is a field of :class:`Settings` (field ``mz_host`` ↔ variable ``MZ_HOST``).
:func:`load_settings` never does I/O beyond reading the mapping it is given and
raises :class:`ConfigError` naming the variable, the value and what was expected;
:func:`settings_or_exit` is what entry points call: it turns that error into a
message on stderr and exit status 2.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "EXIT_CONFIG",
    "SECRET_VARIABLES",
    "ConfigError",
    "Settings",
    "load_settings",
    "settings_or_exit",
]

EXIT_CONFIG = 2

Port = Annotated[int, Meta(ge=1, le=65535)]
PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
Identifier = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)]
NonEmpty = Annotated[str, Meta(min_length=1)]

# Values of these are never echoed in errors or logs.
SECRET_VARIABLES = frozenset({"MZ_PASSWORD", "OS_PASSWORD", "REDIS_URL"})


class Settings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """The whole configuration; see README "Configuration" for each variable."""

    # Materialize connection (runbook §5)
    mz_host: NonEmpty = "mz"
    mz_port: Port = 6875
    mz_user: NonEmpty = "materialize"
    mz_password: str = "materialize"
    mz_database: NonEmpty = "materialize"
    mz_cluster: Identifier = "serving"
    # OpenSearch connection
    os_host: NonEmpty = "opensearch"
    os_port: Port = 9200
    os_index_name: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_\-]*$", max_length=200)] = (
        "orders"
    )
    os_user: str = ""
    os_password: str = ""
    os_use_ssl: bool = False
    os_timeout_seconds: PositiveFloat = 30.0
    # What is synced
    view_name: Identifier = "orders_search_source_mv"
    key_column: Identifier = "order_id"
    # SUBSCRIBE mode. DISCARD_SNAPSHOT defaults to false here (the runbook recommends
    # true): discarding the snapshot loses every change made while the producer was down.
    use_subscribe: bool = True
    discard_snapshot: bool = False
    subscribe_envelope: Literal["diffs", "upsert"] = "diffs"
    poll_interval: PositiveFloat = 5.0
    progress_interval_ms: PositiveInt = 1000
    # Batching
    max_batch_size: PositiveInt = 1000
    max_batch_age_seconds: PositiveFloat = 5.0
    # Backpressure, counted in changes not yet acknowledged by CONSUMER_GROUP
    backpressure_threshold: PositiveInt = 5000
    backpressure_resume: NonNegativeInt = 2500
    buffer_log_seconds: PositiveFloat = 10.0
    # Retry
    retry_initial_backoff: PositiveFloat = 1.0
    retry_max_backoff: PositiveFloat = 30.0
    retry_backoff_multiplier: Annotated[float, Meta(ge=1)] = 2.0
    # Redis Streams
    redis_url: NonEmpty = "redis://127.0.0.1:6379/0"
    stream_partitions: Annotated[int, Meta(ge=1, le=1024)] = 8
    stream_retention_seconds: PositiveInt = 86400
    consumer_group: NonEmpty = "searchsync"
    consumer_name: str = ""  # empty: "<hostname>-<pid>", see consumer_identity()
    lease_ttl_seconds: PositiveFloat = 5.0
    max_deliveries: PositiveInt = 5
    # Operations
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] = 0  # 0: no metrics endpoint
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    def consumer_identity(self) -> str:
        """CONSUMER_NAME, or a name unique to this process when it is empty."""
        return self.consumer_name or f"{socket.gethostname()}-{os.getpid()}"

    def redacted(self) -> dict[str, object]:
        """The settings as a dict for logging, secrets replaced by ``***``."""
        out: dict[str, object] = msgspec.to_builtins(self)
        for name in SECRET_VARIABLES:
            if out.get(name):
                out[name] = "***"
        return out


class ConfigError(ValueError):
    """A variable holds a value its field cannot take."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        shown = "***" if variable in SECRET_VARIABLES else repr(value)
        super().__init__(f"invalid {variable}={shown}: expected {expected}")
        self.variable = variable


_FIELDS = {f.encode_name: f for f in msgspec.structs.fields(Settings)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _expected(error: msgspec.ValidationError) -> str:
    # msgspec says "Expected `int` >= 1, got `str` - at `$.X`"; keep the "what" part.
    text = str(error).split(" - at ")[0]
    text = text.split(", got ")[0]
    return text.removeprefix("Expected ").replace("`", "")


def _convert(variable: str, raw: str) -> object:
    field = _FIELDS[variable]
    if field.type is bool:
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ConfigError(variable, raw, "a boolean (true/false, 1/0, yes/no, on/off)")
    value: object = raw
    if field.type is not str and "Literal" not in repr(field.type):
        value = raw.strip()
    if variable == "LOG_LEVEL":
        value = raw.strip().upper()
    try:
        return msgspec.convert(value, field.type, strict=False)
    except msgspec.ValidationError as error:
        raise ConfigError(variable, raw, _expected(error)) from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default ``os.environ``).

    Unset or empty variables take their defaults. Raises :class:`ConfigError`
    for the first variable whose value is invalid, or whose combination with
    another is (BACKPRESSURE_RESUME must stay below BACKPRESSURE_THRESHOLD,
    RETRY_INITIAL_BACKOFF at most RETRY_MAX_BACKOFF).
    """
    env = os.environ if environ is None else environ
    values = {name: _convert(name, env[name]) for name in _FIELDS if env.get(name, "") != ""}
    settings = msgspec.convert(values, Settings)
    if settings.backpressure_resume >= settings.backpressure_threshold:
        raise ConfigError(
            "BACKPRESSURE_RESUME",
            str(settings.backpressure_resume),
            f"a value below BACKPRESSURE_THRESHOLD ({settings.backpressure_threshold})",
        )
    if settings.retry_initial_backoff > settings.retry_max_backoff:
        raise ConfigError(
            "RETRY_INITIAL_BACKOFF",
            str(settings.retry_initial_backoff),
            f"a value at most RETRY_MAX_BACKOFF ({settings.retry_max_backoff})",
        )
    return settings


def settings_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """:func:`load_settings`, or a one-line message on stderr and exit status 2."""
    try:
        return load_settings(environ)
    except ConfigError as error:
        print(f"searchsync: configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
