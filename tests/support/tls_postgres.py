"""A private PostgreSQL that takes TLS only, started by the devstack's own lib.

:class:`TlsPostgres` sources ``devstack/lib/common.sh`` and ``devstack/lib/postgres.sh``
with ``DEVSTACK_STATE`` pointing at its own temporary directory and
``POSTGRES_TLS_CERT``/``POSTGRES_TLS_KEY``/``POSTGRES_TLS_CA`` set, and calls
``postgres_up``: so the test exercises the devstack's opt-in TLS path itself (``ssl=on``,
an hba file of ``hostssl`` lines, ``DATABASE_URL`` with ``sslmode=verify-full``), on its
own data directory and port, beside (never instead of) the devstack PostgreSQL.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support.producer import REPO
from tests.support.tls import Authority

__all__ = ["TlsPostgres"]

LIB = REPO / "devstack" / "lib"


def _recorded(env_file: Path) -> dict[str, str]:
    # the file alone: devstack.env.devstack_env would let the test's own environment
    # (the devstack's PGPORT, DATABASE_URL) override what this server recorded
    values: dict[str, str] = {}
    for line in env_file.read_text().splitlines():
        name, sep, raw = line.removeprefix("export ").partition("=")
        if sep:
            values[name] = shlex.split(raw)[0] if raw else ""
    return values


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TlsPostgres:
    """A TLS-only PostgreSQL 15 under a temporary ``DEVSTACK_STATE``; :meth:`close` stops it
    and removes its directory (data, log, the copies of the certificate and key)."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.state = Path(tempfile.mkdtemp(prefix="test-pg-tls-"))
        self.state.chmod(0o755)  # the server runs as `postgres` when the test is root
        self.port = 0
        self.database_url = ""

    def _lib(self, call: str, env: dict[str, str], timeout: float) -> None:
        script = f"set -euo pipefail; source {LIB}/common.sh; source {LIB}/postgres.sh; {call}"
        result = subprocess.run(
            ["bash", "-c", script],
            env={**os.environ, "DEVSTACK_STATE": str(self.state), **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{call} failed ({result.returncode}): {result.stderr}")

    def start(self) -> None:
        """initdb and start (``postgres_up``); 90 s at most. Raises RuntimeError."""
        server = self.authority.issue("postgres")
        self._lib(
            "postgres_up",
            {
                "PGPORT_PREFERRED": str(_free_port()),
                "POSTGRES_TLS_CERT": str(server.cert),
                "POSTGRES_TLS_KEY": str(server.key),
                "POSTGRES_TLS_CA": str(self.authority.cert),
            },
            timeout=90,
        )
        recorded = _recorded(self.state / "env")
        self.port = int(recorded["PGPORT"])
        self.database_url = recorded["DATABASE_URL"]

    def url(self, query: str) -> str:
        """The server's URL with another query (``sslmode=…&sslrootcert=…``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/freshmart?{query}"

    def close(self) -> None:
        """``postgres_down`` (fast shutdown), then remove the directory."""
        try:
            self._lib("postgres_down", {}, timeout=60)
        finally:
            shutil.rmtree(self.state, ignore_errors=True)
