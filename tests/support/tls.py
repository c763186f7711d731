"""Throwaway certificate authorities and TLS endpoints for tests (nothing committed).

* :class:`Authority`: a CA made by the ``openssl`` CLI in a temporary directory
  (EC P-256, valid one day) that issues server certificates for 127.0.0.1/localhost;
  a second authority is the "wrong CA" a client may be given.
* :class:`TlsRedis`: a private redis-server that speaks only TLS (``--port 0``,
  ``--tls-port``) with ACL users from a file: ``default`` (the test's admin) and
  the service's user with the grants it is given.
* :class:`BasicAuthProxy`: HTTPS with basic authentication in front of the devstack
  OpenSearch node (its security plugin is not part of the Maven-built node: see README
  "Security"), answering 401 like the plugin to a wrong or missing password.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.http_proxy import Action, HttpProxy, RequestHead
from tests.support.producer import REPO
from tests.support.services import PrivateRedis, wait_for

__all__ = ["Authority", "BasicAuthProxy", "TlsRedis", "authorities", "run_cli", "server_context"]

CLI = REPO / ".venv" / "bin" / "searchsync"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class Authority:
    """A one-day CA in its own temporary directory; :meth:`close` removes it."""

    def __init__(self, name: str = "searchsync-test-ca") -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="test-ca-"))
        self.cert = self.directory / "ca.pem"
        self.key = self.directory / "ca.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", "1",
            "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=self.directory,
        )  # fmt: skip

    def issue(self, name: str, sans: str = "IP:127.0.0.1,DNS:localhost") -> Issued:
        """A server (and client) certificate for ``sans``, signed by this CA."""
        key, csr, cert = (self.directory / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        ext = self.directory / f"{name}.ext"
        ext.write_text(
            f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
            cwd=self.directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext),
            cwd=self.directory,
        )  # fmt: skip
        return Issued(cert, key)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def server_context(issued: Issued) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    return context


class TlsRedis(PrivateRedis):
    """A private redis-server on a TLS-only port with ACL users.

    ``users`` maps a user name to ``(password, rules)``, ``rules`` in ACL SETUSER
    syntax (e.g. ``"~searchsync:* +@all"``); ``default`` is the admin the test uses
    (password :attr:`admin_password`, every right).
    """

    admin_password = "admin-Secret-1"

    def __init__(self, authority: Authority, users: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.authority = authority
        self.server = authority.issue("redis")
        self.acl_file = self.directory / "users.acl"
        lines = [f"user default on >{self.admin_password} ~* &* +@all"]
        lines += [
            f"user {name} on >{password} resetchannels {rules}"
            for name, (password, rules) in users.items()
        ]
        self.acl_file.write_text("\n".join(lines) + "\n")

    def url_for(self, user: str, password: str) -> str:
        return f"rediss://{user}:{password}@127.0.0.1:{self.port}/0"

    @property
    def url(self) -> str:
        return self.url_for("default", self.admin_password)

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--port")
        command[at + 1] = "0"  # no plain-text port at all
        return [
            *command,
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.server.cert),
            "--tls-key-file", str(self.server.key),
            "--tls-ca-cert-file", str(self.authority.cert),
            "--tls-auth-clients", "no",
            "--aclfile", str(self.acl_file),
        ]  # fmt: skip

    def _answers(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.authority.cert))
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
            ):
                sock.sendall(f"AUTH default {self.admin_password}\r\nPING\r\n".encode())
                return b"+PONG" in sock.recv(64) or b"+PONG" in sock.recv(64)
        except OSError:
            return False

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(self._answers, 10, "the private TLS redis-server to answer")


class BasicAuthProxy(HttpProxy):
    """HTTPS (a certificate of ``authority``) with basic authentication for one user,
    forwarding to the plain-HTTP node; other credentials get the plugin's 401. With
    ``client_certificates``, clients must present a certificate ``authority`` issued."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        authority: Authority,
        user: str,
        password: str,
        *,
        client_certificates: bool = False,
    ) -> None:
        tls = server_context(authority.issue("opensearch"))
        if client_certificates:  # mutual TLS: a client without a certificate of ours fails
            tls.verify_mode = ssl.CERT_REQUIRED
            tls.load_verify_locations(cafile=str(authority.cert))
        super().__init__(target_host, target_port, tls=tls)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._expected = f"Basic {token}"

    def action(self, request: RequestHead) -> Action:
        for line in request.raw.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization" and value.strip() == self._expected:
                return "forward"
        return "unauthorized"


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``searchsync *args`` with ``env`` over the process environment (text output)."""
    return subprocess.run(
        [str(CLI), *args],
        env={**os.environ, "LOG_FORMAT": "text", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def authorities() -> Iterator[tuple[Authority, Authority]]:
    """The CA the test's servers use, and another one (for the wrong-CA cases)."""
    right, wrong = Authority(), Authority("some-other-ca")
    yield right, wrong
    right.close()
    wrong.close()
