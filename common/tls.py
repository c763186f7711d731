"""TLS settings turned into each client library's arguments, and the warnings they deserve.

Pure: no I/O except :func:`warn_once`, which logs. libpq, opensearch-py and redis-py
each spell "verify the server against these roots" differently; this module is the one
place that translates Settings into those spellings, so the three stay consistent:
verification is on unless the operator turned it off, and turning it off is logged.
"""

from __future__ import annotations

import logging
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from .config import UNVERIFIED_SSLMODES, Settings

__all__ = ["materialize_ssl", "redis_ssl", "unverified_warning", "warn_once"]

log = logging.getLogger(__name__)

# libpq (16+) reads this sslrootcert as "the system's trusted roots"; only with verify-full.
SYSTEM_ROOTS: Final = "system"
_warned: set[str] = set()


def materialize_ssl(settings: Settings) -> tuple[str, str | None]:
    """libpq's ``sslmode`` and ``sslrootcert`` (None: libpq's default) for MZ_SSLMODE
    and MZ_SSLROOTCERT; verify-full without a file trusts the system's roots."""
    if settings.mz_sslrootcert:
        return settings.mz_sslmode, settings.mz_sslrootcert
    if settings.mz_sslmode == "verify-full":
        return settings.mz_sslmode, SYSTEM_ROOTS
    return settings.mz_sslmode, None


def redis_ssl(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS arguments: a CA file for ``rediss://`` with REDIS_CA_CERTS.

    Certificates and host names are checked by redis-py's defaults (``ssl_cert_reqs``
    "required", ``ssl_check_hostname`` true) unless the URL's query says otherwise.
    """
    if urlsplit(settings.redis_url).scheme != "rediss" or not settings.redis_ca_certs:
        return {}
    return {"ssl_ca_certs": settings.redis_ca_certs}


def unverified_warning(settings: Settings, service: str) -> str | None:
    """The WARNING for ``service`` ("Materialize", "OpenSearch", "Redis") when its
    connection is encrypted without checking the server's certificate, else None."""
    if service == "Materialize" and settings.mz_sslmode in UNVERIFIED_SSLMODES:
        return (
            f"Materialize: TLS without certificate verification (MZ_SSLMODE="
            f"{settings.mz_sslmode}): anyone on the path can impersonate the server; "
            "use verify-full"
        )
    if service == "OpenSearch" and settings.os_use_ssl and not settings.os_verify_certs:
        return (
            "OpenSearch: TLS certificate verification is off (OS_VERIFY_CERTS=false): "
            "anyone on the path can impersonate the server"
        )
    if service == "Redis":
        parts = urlsplit(settings.redis_url)
        query = {k.lower(): [v.lower() for v in vs] for k, vs in parse_qs(parts.query).items()}
        if parts.scheme == "rediss" and (
            "none" in query.get("ssl_cert_reqs", [])
            or "false" in query.get("ssl_check_hostname", [])
        ):
            return (
                "Redis: TLS certificate verification is off (ssl_cert_reqs=none or "
                "ssl_check_hostname=false in REDIS_URL)"
            )
    return None


def warn_once(settings: Settings, service: str) -> None:
    """Log :func:`unverified_warning` at WARNING, once per process and service."""
    message = unverified_warning(settings, service)
    if message is not None and service not in _warned:
        _warned.add(service)
        log.warning(message)
