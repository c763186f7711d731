"""A private OpenSearch node with the security plugin, for the tests that need real
authentication and authorization (README "Security").

The node is :class:`~tests.support.opensearch_node.OpenSearchNode` (the devstack's
``Launcher.java``, its own data directory and free ports) on the classpath of
``devstack/opensearch/security/pom.xml``: OpenSearch 2.19.4, because a plugin loads
only into the exact version it was built for and Maven Central serves the security
plugin for 2.19.1.0, 2.19.3.0 and 2.19.4.0, not for the devstack node's 2.19.6. The
plugin's zip is unpacked into ``path.home/plugins/opensearch-security``, where the
node's PluginsService loads it on a class loader of its own, as in the distribution.
The zip bundles jars the classpath already has (Netty, the netty4/mapper-extras/
parent-join modules, Apache HTTP client, commons-codec, asm): those are left out of the
plugin folder, else PluginsService refuses the plugin ("jar hell": the same class
twice); the plugin then sees the classpath's copies through its parent class loader.

TLS on HTTP and transport with certificates of a test :class:`~tests.support.tls.Authority`;
the security index is initialised from ``config/opensearch-security/*.yml`` at the
first start (``plugins.security.allow_default_init_securityindex``) with HTTP basic
authentication against the internal user database and no users at all: the test
creates its users, roles and mappings through the security REST API as the admin
certificate's holder (``plugins.security.authcz.admin_dn``), as an operator would.

    node = SecureOpenSearchNode(Path("/tmp/x"), authority)
    node.start(); node.wait_healthy()
    node.security("PUT", "roles/searchsync_sync", {...})
    node.close(remove=True)
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch

from tests.support.opensearch_node import ROOT, OpenSearchNode
from tests.support.tls import Authority, Issued

__all__ = ["PLUGIN_VERSION", "SecureOpenSearchNode", "secure_classpath"]

POM = ROOT / "devstack" / "opensearch" / "security" / "pom.xml"
STATE = ROOT / ".devstack" / "opensearch-secure"
PLUGIN = "opensearch-security"
PLUGIN_VERSION = "2.19.4.0"
# artifact name of a jar file: what is left after "-<version>.jar"
_ARTIFACT = re.compile(r"^(?P<name>.+?)-\d[^/]*\.jar$")

_ADMIN_CN = "secure-opensearch-admin"
_NODE_CN = "secure-opensearch-node"

# Basic authentication against the internal users, nothing anonymous. The other files
# are empty (their _meta only): no demo users, no "own_index" mapping of every user.
_CONFIG_YML = """\
_meta: {type: "config", config_version: 2}
config:
  dynamic:
    http: {anonymous_auth_enabled: false}
    authc:
      basic_internal_auth_domain:
        http_enabled: true
        transport_enabled: true
        order: 0
        http_authenticator: {type: basic, challenge: true}
        authentication_backend: {type: internal}
"""
_EMPTY_CONFIGS = {
    "internal_users.yml": "internalusers",
    "roles.yml": "roles",
    "roles_mapping.yml": "rolesmapping",
    "action_groups.yml": "actiongroups",
    "tenants.yml": "tenants",
    "nodes_dn.yml": "nodesdn",
}


def _artifact(jar: str) -> str | None:
    match = _ARTIFACT.match(Path(jar).name)
    return match.group("name") if match else None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One resolver at a time (two xdist workers may start a node together)."""
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def secure_classpath() -> tuple[str, Path]:
    """The node's jars (a classpath string) and the plugin's zip, resolved by Maven from
    ``devstack/opensearch/security/pom.xml`` into ``.devstack/opensearch-secure/``
    (once; again when the pom changes). Maven may take a minute when ~/.m2 lacks the
    2.19.4 jars (timeout 600 s); RuntimeError with Maven's output when it fails."""
    cached = STATE / "classpath.txt"
    with _locked():
        entries = cached.read_text().strip().split(":") if cached.is_file() else []
        fresh = (
            bool(entries)
            and cached.stat().st_mtime > POM.stat().st_mtime
            and all(Path(entry).is_file() for entry in entries)
        )
        if not fresh:
            result = subprocess.run(
                ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(POM),
                 "dependency:build-classpath", f"-Dmdep.outputFile={cached}"],
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise RuntimeError(f"maven could not resolve {POM}:\n{result.stdout[-3000:]}")
            entries = cached.read_text().strip().split(":")
    jars = [entry for entry in entries if entry.endswith(".jar")]
    zips = [Path(entry) for entry in entries if entry.endswith(f"{PLUGIN}-{PLUGIN_VERSION}.zip")]
    if len(zips) != 1:
        raise RuntimeError(f"{cached} names no {PLUGIN}-{PLUGIN_VERSION}.zip")
    return ":".join(jars), zips[0]


def unpacked_plugin(classpath: str, plugin_zip: Path) -> Path:
    """The plugin's folder (``.devstack/opensearch-secure/opensearch-security-<version>``),
    unpacked once, without the jars whose artifacts the classpath has (see module doc)."""
    target = STATE / f"{PLUGIN}-{PLUGIN_VERSION}"
    on_classpath = {_artifact(jar) for jar in classpath.split(":")}
    with _locked():
        if (target / "plugin-descriptor.properties").is_file():
            return target
        partial = STATE / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(plugin_zip) as archive:
            for member in archive.namelist():
                if "/" not in member and _artifact(member) in on_classpath:
                    continue
                archive.extract(member, partial)
        partial.rename(target)
    return target


class SecureOpenSearchNode(OpenSearchNode):
    """A single node with the security plugin: HTTPS (a certificate of ``authority``),
    transport TLS, basic authentication, the admin certificate for the test."""

    def __init__(self, directory: Path, authority: Authority, *, heap: str = "512m") -> None:
        super().__init__(directory, heap=heap)
        self.classpath, self.plugin_zip = secure_classpath()
        self.authority = authority
        self.node_cert: Issued = authority.issue(_NODE_CN)
        self.admin_cert: Issued = authority.issue(_ADMIN_CN)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _prepare_home(self) -> None:
        home = self.directory / "home"
        config = home / "config"
        security = config / PLUGIN
        security.mkdir(parents=True, exist_ok=True)
        plugin = home / "plugins" / PLUGIN
        if not plugin.exists():
            shutil.copytree(unpacked_plugin(self.classpath, self.plugin_zip), plugin)
        for source, name in (
            (self.authority.cert, "root-ca.pem"),
            (self.node_cert.cert, "node.pem"),
            (self.node_cert.key, "node-key.pem"),
        ):
            shutil.copyfile(source, config / name)
        (security / "config.yml").write_text(_CONFIG_YML)
        for name, kind in _EMPTY_CONFIGS.items():
            (security / name).write_text(f'_meta: {{type: "{kind}", config_version: 2}}\n')
        (security / "allowlist.yml").write_text(
            '_meta: {type: "allowlist", config_version: 2}\nconfig: {enabled: false}\n'
        )
        # the plugin warns at start about anything readable by others
        for path in [config, security, *config.glob("*.pem"), *security.glob("*.yml")]:
            path.chmod(0o700 if path.is_dir() else 0o600)

    def start(self) -> None:
        self._prepare_home()
        super().start()

    def command(self) -> list[str]:
        ssl_files = {
            "pemcert_filepath": "node.pem",
            "pemkey_filepath": "node-key.pem",
            "pemtrustedcas_filepath": "root-ca.pem",
        }
        settings = [f"plugins.security.ssl.transport.{k}={v}" for k, v in ssl_files.items()]
        settings += [f"plugins.security.ssl.http.{k}={v}" for k, v in ssl_files.items()]
        return [
            *super().command(),
            *settings,
            # the certificate names 127.0.0.1, not the node's publish host name
            "plugins.security.ssl.transport.enforce_hostname_verification=false",
            "plugins.security.ssl.http.enabled=true",
            "plugins.security.ssl.http.clientauth_mode=OPTIONAL",  # the admin certificate
            "plugins.security.allow_default_init_securityindex=true",
            f"plugins.security.authcz.admin_dn=CN={_ADMIN_CN}",
            f"plugins.security.nodes_dn=CN={_NODE_CN}",
            "plugins.security.audit.type=noop",
            # a user mapped to all_access may use the security REST API (compose's admin)
            "plugins.security.restapi.roles_enabled=all_access",
        ]

    def admin_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.authority.cert))
        context.load_cert_chain(self.admin_cert.cert, self.admin_cert.key)
        return context

    def health(self) -> str | None:
        """The cluster status as the admin, None while the node or its security index
        does not answer (the plugin answers 503 until the index is initialised)."""
        url = f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s"
        try:
            with urllib.request.urlopen(url, timeout=3, context=self.admin_context()) as reply:
                body = reply.read()
        except (urllib.error.URLError, OSError):
            return None
        match = re.search(rb'"status"\s*:\s*"(\w+)"', body)
        return match.group(1).decode() if match else None

    def _security_ready(self) -> bool:
        url = f"{self.url}/_plugins/_security/api/internalusers"
        try:
            with urllib.request.urlopen(url, timeout=3, context=self.admin_context()):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = 180.0) -> float:
        """Seconds until the cluster is yellow or green and the security index is
        initialised (the security REST API answers 500 before). RuntimeError with the
        log's tail if the JVM exits or the deadline passes."""
        started = time.monotonic()
        super().wait_healthy(timeout)
        while time.monotonic() - started < timeout:
            if not self.running():
                raise RuntimeError(f"OpenSearch exited during start-up:\n{self.log_tail()}")
            if self._security_ready():
                return time.monotonic() - started
            time.sleep(0.25)
        raise RuntimeError(f"security index not initialised after {timeout}s:\n{self.log_tail()}")

    def admin(self) -> OpenSearch:
        """A new client with the admin certificate (every right, the security REST API);
        the caller closes it."""
        return OpenSearch(
            hosts=[{"host": self.host, "port": self.port}],
            use_ssl=True,
            verify_certs=True,
            ca_certs=str(self.authority.cert),
            client_cert=str(self.admin_cert.cert),
            client_key=str(self.admin_cert.key),
            timeout=30,
        )

    def security(self, method: str, path: str, body: Any = None) -> Any:
        """``method /_plugins/_security/api/<path>`` as the admin; opensearch-py's
        TransportError on a refusal (30 s timeout)."""
        client = self.admin()
        try:
            return client.transport.perform_request(
                method, f"/_plugins/_security/api/{path}", body=body
            )
        finally:
            client.close()
