"""Typed settings, read once from the environment.

Every variable of the runbook's configuration reference, plus the ones searchsync
adds, is a field of :class:`Settings` (field ``mz_host`` ↔ variable ``MZ_HOST``).
Each field's type carries, in its ``Meta(description=…)``, the sentence an
operator reads when the value is wrong ("a port number from 1 to 65535", "one of
json, text"), so every error names the accepted values.
:func:`load_settings` does no I/O beyond reading the mapping it is given and
checking that the certificate files it names are readable, and raises
:class:`ConfigError` naming the variable, the value (never a secret's) and what
was expected; :func:`settings_or_exit` is what entry points call: it turns
that error into a message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import re
import socket
import sys
import textwrap
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

__all__ = [
    "EXIT_CONFIG",
    "PEM_VARIABLES",
    "SECRET_VARIABLES",
    "UNVERIFIED_SSLMODES",
    "ConfigError",
    "Settings",
    "load_settings",
    "parse_command_line",
    "parse_os_hosts",
    "settings_or_exit",
]

EXIT_CONFIG = 2

MiB: Final = 1024 * 1024

Port = Annotated[int, Meta(ge=1, le=65535, description="a port number from 1 to 65535")]
PositiveInt = Annotated[int, Meta(ge=1, description="a whole number of at least 1")]
NonNegativeInt = Annotated[int, Meta(ge=0, description="a whole number of at least 0")]
PositiveFloat = Annotated[float, Meta(gt=0, description="a number above 0 (e.g. 0.5 or 30)")]
Identifier = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=63,
        description="an SQL identifier: letters, digits and _, not starting with a digit, "
        "at most 63 characters",
    ),
]
NonEmpty = Annotated[str, Meta(min_length=1, description="a non-empty text")]
# A host name or address, not a URL: "http://os:9200" in OS_HOST is a common slip.
Host = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9._\-\[\]:]+$",
        description="a host name or IP address (no scheme, no port, no path)",
    ),
]
# OS_HOSTS: every node of an OpenSearch cluster the client may send a request to.
OS_HOSTS_EXPECTED: Final = (
    "host:port pairs separated by commas, e.g. os-1:9200,os-2:9200 (an IPv6 address in "
    "brackets: [fd00::1]:9200; no scheme: OS_USE_SSL says HTTPS)"
)
OpenSearchHosts = Annotated[str, Meta(description=OS_HOSTS_EXPECTED)]
_HOST_NAME: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?$")
# Where METRICS_PORT listens: an IPv4/IPv6 address or a host name, nothing else.
BindHost = Annotated[
    str,
    Meta(
        pattern=r"^([0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*"  # IPv6: two colons or more
        r"|[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?)*)$",
        description="an IP address or host name to listen on, e.g. 127.0.0.1, 0.0.0.0 or :: "
        "(no scheme, no port)",
    ),
]
# An OpenSearch time value for index.refresh_interval: how often a refresh publishes
# new documents to _search (searchable latency = this plus the pipeline's own part).
RefreshInterval = Annotated[
    str,
    Meta(
        pattern=r"^[1-9][0-9]*(ms|s|m)$",
        description="an OpenSearch time value such as 200ms, 1s or 30s",
    ),
]
# A certificate or key file; load_settings checks that it can be read.
PemFile = Annotated[str, Meta(description="the path of a readable PEM file")]
AwsRegion = Annotated[
    str,
    Meta(
        pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$",
        description="an AWS region such as eu-west-1",
    ),
]
Bytes = Annotated[
    int,
    Meta(ge=1024, le=512 * MiB, description="a size in bytes from 1024 to 536870912 (512 MiB)"),
]

# Values of these are never echoed in errors or logs.
SECRET_VARIABLES = frozenset({"MZ_PASSWORD", "OS_PASSWORD", "REDIS_URL"})

# libpq's sslmode values; everything below verify-ca encrypts without checking the peer.
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
UNVERIFIED_SSLMODES: Final = frozenset({"allow", "prefer", "require"})
# The files each variable names, checked at start so a typo exits 2 instead of failing
# at the first connection (or, for a CA, falling back to no verification).
PEM_VARIABLES: Final = (
    "MZ_SSLROOTCERT",
    "OS_CA_CERTS",
    "OS_CLIENT_CERT",
    "OS_CLIENT_KEY",
    "REDIS_CA_CERTS",
)

REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
_REDIS_URL_EXPECTED: Final = (
    "a Redis URL: redis://[user:password@]host[:port][/db], "
    "rediss://… for TLS, or unix:///path/to/socket"
)


class Settings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """The whole configuration; see README "Configuration" for each variable."""

    # Materialize connection (runbook §5)
    mz_host: Host = "mz"
    mz_port: Port = 6875
    mz_user: NonEmpty = "materialize"
    mz_password: str = "materialize"
    mz_database: NonEmpty = "materialize"
    mz_cluster: Identifier = "serving"
    # verify-full by default: Materialize Cloud serves publicly trusted certificates, and
    # libpq's own default (prefer) encrypts without checking the server and falls back to
    # plain text in silence. The devstack's emulator sets disable. README "Security".
    mz_sslmode: SslMode = "verify-full"
    mz_sslrootcert: PemFile = ""  # empty: the system's trusted roots (libpq "system")
    # OpenSearch connection
    os_host: Host = "opensearch"
    os_port: Port = 9200
    # several nodes (comma-separated host:port) instead of OS_HOST/OS_PORT, which it
    # overrides: the client round-robins over them and skips one that stopped answering
    os_hosts: OpenSearchHosts = ""
    os_index_name: Annotated[
        str,
        Meta(
            pattern=r"^[a-z0-9][a-z0-9_\-]*$",
            max_length=200,
            description="a lowercase index name: a-z, 0-9, _ and -, not starting with _ or -, "
            "at most 200 characters",
        ),
    ] = "orders"
    os_user: str = ""
    os_password: str = ""
    os_use_ssl: bool = False
    os_verify_certs: bool = True  # with OS_USE_SSL; false logs a WARNING at every start
    os_ca_certs: PemFile = ""  # empty: the system's trusted roots
    os_client_cert: PemFile = ""
    os_client_key: PemFile = ""
    # sigv4: Amazon OpenSearch Service request signing (botocore credentials chain)
    os_auth: Literal["basic", "sigv4"] = "basic"
    os_aws_region: AwsRegion = ""
    os_aws_service: Literal["es", "aoss"] = "es"
    os_timeout_seconds: PositiveFloat = 30.0
    os_refresh_interval: RefreshInterval = "1s"
    # number_of_replicas of an index searchsync creates (ensure_index, resync's target):
    # auto = min(1, data nodes - 1), so one node's loss on a cluster loses no shard and a
    # single node stays green; or a whole number (common.index.replicas_for)
    os_index_replicas: Annotated[
        str,
        Meta(
            pattern=r"^(auto|[0-9]{1,2})$",
            description="auto (1 on a cluster of several data nodes, 0 on one) or a whole "
            "number of replicas from 0 to 99",
        ),
    ] = "auto"
    # What is synced
    view_name: Identifier = "orders_search_source_mv"
    key_column: Identifier = "order_id"
    # The index's field mapping: a JSON object of OpenSearch ``properties`` inline, or the
    # path of a file holding one; empty: the orders view's (common.index.VIEW_PROPERTIES).
    # Read and checked by common.views (a views file sets it per view).
    index_mapping: str = ""
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
    # Size limits. A document above MAX_DOCUMENT_BYTES is dead-lettered by the producer
    # (OpenSearch refuses requests above http.max_content_length, 100 MB by default);
    # an entry holds at most MAX_ENTRY_BYTES of documents (one larger document goes
    # alone); a _bulk request at most MAX_BULK_BYTES (one larger document goes alone).
    max_document_bytes: Bytes = 10 * MiB
    max_entry_bytes: Bytes = 1 * MiB
    max_bulk_bytes: Bytes = 10 * MiB
    # Backpressure, counted in changes not yet acknowledged by CONSUMER_GROUP
    backpressure_threshold: PositiveInt = 5000
    backpressure_resume: NonNegativeInt = 2500
    buffer_log_seconds: PositiveFloat = 10.0
    # Retry
    retry_initial_backoff: PositiveFloat = 1.0
    retry_max_backoff: PositiveFloat = 30.0
    retry_backoff_multiplier: Annotated[
        float, Meta(ge=1, description="a number of at least 1 (e.g. 2)")
    ] = 2.0
    # Redis Streams
    redis_url: NonEmpty = "redis://127.0.0.1:6379/0"
    redis_ca_certs: PemFile = ""  # rediss:// only; empty: the system's trusted roots
    # Redis Cluster client or a single Redis's; auto: HELLO's mode at start (common.redis_client)
    redis_cluster: Literal["auto", "true", "false"] = "auto"
    # replicas that must hold the producer's entries before the checkpoint passes them
    # (WAIT after each write round trip; 0: none), and how long each WAIT may take
    redis_wait_replicas: Annotated[
        int, Meta(ge=0, le=16, description="a whole number from 0 to 16")
    ] = 0
    redis_wait_timeout_ms: Annotated[
        int, Meta(ge=1, le=5000, description="milliseconds from 1 to 5000")
    ] = 1000
    stream_partitions: Annotated[
        int, Meta(ge=1, le=1024, description="a whole number from 1 to 1024")
    ] = 8
    stream_retention_seconds: PositiveInt = 86400
    dlq_retention_seconds: PositiveInt = 7 * 86400
    consumer_group: NonEmpty = "searchsync"
    consumer_name: str = ""  # empty: "<hostname>-<pid>", see consumer_identity()
    producer_name: str = ""  # empty: "<hostname>-<pid>", see producer_identity()
    lease_ttl_seconds: PositiveFloat = 5.0
    max_deliveries: PositiveInt = 5
    # Operations
    metrics_port: Annotated[
        int, Meta(ge=0, le=65535, description="a port number from 1 to 65535, or 0 for none")
    ] = 0  # 0: no metrics endpoint
    # /metrics and /healthz listen here; loopback unless asked (compose sets 0.0.0.0)
    metrics_host: BindHost = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    def consumer_identity(self) -> str:
        """CONSUMER_NAME, or a name unique to this process when it is empty."""
        return self.consumer_name or f"{socket.gethostname()}-{os.getpid()}"

    def producer_identity(self) -> str:
        """PRODUCER_NAME, or a name unique to this process when it is empty."""
        return self.producer_name or f"{socket.gethostname()}-{os.getpid()}"

    def opensearch_nodes(self) -> tuple[tuple[str, int], ...]:
        """The OpenSearch nodes as (host, port): OS_HOSTS' in order, else OS_HOST:OS_PORT.
        Raises ValueError for an OS_HOSTS that load_settings would have refused."""
        if self.os_hosts:
            return parse_os_hosts(self.os_hosts)
        return ((self.os_host, self.os_port),)

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


def expected_of(variable: str) -> str:
    """What ``variable`` accepts, in words (the ``expected …`` part of its errors)."""
    if variable == "REDIS_URL":
        return _REDIS_URL_EXPECTED
    field_type = _FIELDS[variable].type
    if field_type is bool:
        return "a boolean: true/false, 1/0, yes/no or on/off"
    if typing.get_origin(field_type) is Literal:
        return "one of " + ", ".join(str(value) for value in typing.get_args(field_type))
    if typing.get_origin(field_type) is Annotated:
        for meta in typing.get_args(field_type)[1:]:
            if isinstance(meta, Meta) and meta.description:
                return meta.description
    if field_type is str:
        return "a text"
    raise AssertionError(f"{variable} has no description of its accepted values")


def _convert(variable: str, raw: str) -> object:
    field = _FIELDS[variable]
    if field.type is bool:
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ConfigError(variable, raw, expected_of(variable))
    value: object = raw
    if field.type is not str and "Literal" not in repr(field.type):
        value = raw.strip()
    if variable == "LOG_LEVEL":
        value = raw.strip().upper()
    try:
        return msgspec.convert(value, field.type, strict=False)
    except msgspec.ValidationError:
        raise ConfigError(variable, raw, expected_of(variable)) from None


def _check_redis_url(url: str) -> None:
    """Raises ConfigError (never showing the URL: it may hold a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number in 0-65535
    except ValueError:
        raise ConfigError("REDIS_URL", url, _REDIS_URL_EXPECTED) from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError("REDIS_URL", url, _REDIS_URL_EXPECTED)
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError("REDIS_URL", url, _REDIS_URL_EXPECTED)
        return
    if not parts.hostname or port == 0:
        raise ConfigError("REDIS_URL", url, _REDIS_URL_EXPECTED)
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ConfigError("REDIS_URL", url, _REDIS_URL_EXPECTED)


def parse_os_hosts(raw: str) -> tuple[tuple[str, int], ...]:
    """OS_HOSTS' nodes as (host, port) in the order given, an IPv6 address without its
    brackets. Pure. Raises ValueError saying which item is wrong and why: an empty item,
    a scheme or path, no port or one outside 1-65535, a host that is not a host name or
    IP address (an IPv6 one outside brackets), a node named twice."""
    nodes: list[tuple[str, int]] = []
    for part in raw.split(","):
        item = part.strip()
        if not item:
            raise ValueError("an empty item between commas")
        if "@" in item:  # never echoed: it may hold a password
            raise ValueError(
                "an item holds credentials (user@): they go in OS_USER and OS_PASSWORD"
            )
        if "/" in item:
            raise ValueError(f"{item!r} is a URL, not host:port")
        host, colon, port_text = item.rpartition(":")
        if not colon or not host or item.endswith("]"):
            raise ValueError(f"{item!r} has no :port")
        if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
            raise ValueError(f"the port of {item!r} is not a number from 1 to 65535")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{item!r}: not an IPv6 address in the brackets") from None
        elif ":" in host:
            raise ValueError(f"{item!r}: an IPv6 address goes in brackets, [addr]:port")
        elif not _HOST_NAME.match(host):
            raise ValueError(f"{item!r}: {host!r} is not a host name or IP address")
        node = (host, int(port_text))
        if node in nodes:
            raise ValueError(f"{item!r} is named twice")
        nodes.append(node)
    return tuple(nodes)


def _check_os_hosts(raw: str) -> None:
    """Raises ConfigError (the value shown as *** when it holds credentials)."""
    if raw:
        try:
            parse_os_hosts(raw)
        except ValueError as error:
            shown = "***" if "@" in raw else raw
            raise ConfigError("OS_HOSTS", shown, f"{OS_HOSTS_EXPECTED}: {error}") from None


def _check_bind_host(host: str) -> None:
    """An IPv6 address must parse as one (the pattern only sees its characters)."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError("METRICS_HOST", host, expected_of("METRICS_HOST")) from None


def _check_pairs(settings: Settings) -> None:
    """Values that are fine alone but contradict another variable."""
    if settings.backpressure_resume >= settings.backpressure_threshold:
        raise ConfigError(
            "BACKPRESSURE_RESUME",
            str(settings.backpressure_resume),
            f"a whole number below BACKPRESSURE_THRESHOLD ({settings.backpressure_threshold})",
        )
    if settings.retry_initial_backoff > settings.retry_max_backoff:
        raise ConfigError(
            "RETRY_INITIAL_BACKOFF",
            str(settings.retry_initial_backoff),
            f"a number above 0 and at most RETRY_MAX_BACKOFF ({settings.retry_max_backoff})",
        )
    if settings.os_password and not settings.os_user:
        raise ConfigError(
            "OS_PASSWORD",
            settings.os_password,
            "to be set together with OS_USER (OS_USER is empty, so it would be ignored)",
        )


def _check_files(settings: Settings) -> None:
    """Every PEM file named must be a readable file (the only I/O of load_settings)."""
    for variable in PEM_VARIABLES:
        path = getattr(settings, variable.lower())
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise ConfigError(variable, path, "the path of a readable PEM file (no such file)")


def _check_tls(settings: Settings) -> None:
    """TLS and authentication settings that contradict each other or cannot work."""
    if settings.mz_sslrootcert and settings.mz_sslmode == "disable":
        raise ConfigError(
            "MZ_SSLROOTCERT",
            settings.mz_sslrootcert,
            "to be empty with MZ_SSLMODE=disable (no TLS, so nothing to verify)",
        )
    if settings.mz_sslmode == "verify-ca" and not settings.mz_sslrootcert:
        # libpq accepts its "system" roots only with verify-full
        raise ConfigError(
            "MZ_SSLROOTCERT",
            "",
            "a CA file with MZ_SSLMODE=verify-ca (system roots need verify-full)",
        )
    for variable in ("OS_CA_CERTS", "OS_CLIENT_CERT", "OS_CLIENT_KEY"):
        if getattr(settings, variable.lower()) and not settings.os_use_ssl:
            raise ConfigError(
                variable, getattr(settings, variable.lower()), "to be used with OS_USE_SSL=true"
            )
    if settings.os_ca_certs and not settings.os_verify_certs:
        raise ConfigError(
            "OS_VERIFY_CERTS", "false", "true when OS_CA_CERTS is set (or OS_CA_CERTS empty)"
        )
    if bool(settings.os_client_cert) != bool(settings.os_client_key):
        given, other = ("OS_CLIENT_CERT", "OS_CLIENT_KEY")[:: 1 if settings.os_client_cert else -1]
        raise ConfigError(
            given, getattr(settings, given.lower()), f"to be set together with {other}"
        )
    if settings.redis_ca_certs and urlsplit(settings.redis_url).scheme != "rediss":
        raise ConfigError(
            "REDIS_CA_CERTS", settings.redis_ca_certs, "to be used with a rediss:// REDIS_URL"
        )
    if settings.os_auth == "sigv4":
        _check_sigv4(settings)


def _check_sigv4(settings: Settings) -> None:
    if not settings.os_aws_region:
        raise ConfigError("OS_AWS_REGION", "", "an AWS region such as eu-west-1 with OS_AUTH=sigv4")
    if settings.os_user:
        raise ConfigError("OS_USER", settings.os_user, "to be empty with OS_AUTH=sigv4")
    if not settings.os_use_ssl:
        raise ConfigError("OS_USE_SSL", "false", "true with OS_AUTH=sigv4 (AWS serves HTTPS only)")
    if importlib.util.find_spec("botocore") is None:
        raise ConfigError(
            "OS_AUTH",
            "sigv4",
            "basic, or botocore installed for sigv4: pip install 'searchsync[aws]'",
        )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default ``os.environ``).

    Unset or empty variables take their defaults. Raises :class:`ConfigError`
    for the first variable whose value is invalid, or whose combination with
    another is (BACKPRESSURE_RESUME must stay below BACKPRESSURE_THRESHOLD,
    RETRY_INITIAL_BACKOFF at most RETRY_MAX_BACKOFF, OS_HOSTS host:port pairs (see
    :func:`parse_os_hosts`), OS_PASSWORD only with OS_USER, TLS
    files only with TLS, OS_AUTH=sigv4 with a region, HTTPS and botocore). Checks that
    each PEM file named (PEM_VARIABLES) is readable: no other I/O.
    """
    env = os.environ if environ is None else environ
    values = {name: _convert(name, env[name]) for name in _FIELDS if env.get(name, "") != ""}
    settings = msgspec.convert(values, Settings)
    _check_redis_url(settings.redis_url)
    _check_os_hosts(settings.os_hosts)
    _check_bind_host(settings.metrics_host)
    _check_pairs(settings)
    _check_files(settings)
    _check_tls(settings)
    return settings


def settings_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """:func:`load_settings`, or a one-line message on stderr and exit status 2."""
    try:
        return load_settings(environ)
    except ConfigError as error:
        print(f"searchsync: configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def parse_command_line(prog: str, doc: str, argv: Sequence[str] | None = None) -> None:
    """The daemons' command line: ``--help`` only, since every setting is a variable.

    Prints ``doc`` and the variables read, and exits 0 for ``--help``; any other
    argument exits 2 with the usage (argparse), before a connection is opened.
    """
    names = textwrap.fill(", ".join(_FIELDS), width=78)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc,
        epilog=f"Configured by environment variables only (README: Configuration):\n{names}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
