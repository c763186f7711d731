"""The pipeline into OpenSearch with its security plugin, as the README's least-privilege
roles, over verified TLS.

The node is private (tests/support/secure_opensearch.py: OpenSearch 2.19.4 with the
opensearch-security plugin 2.19.4.0 from Maven Central, HTTPS and transport TLS with a
throwaway CA, basic authentication against internal users), started once for this module
(20-40 s). The roles are read from README "Security" (the ``PUT
_plugins/_security/api/roles/…`` blocks) with the alias's name in place of ``orders``,
so what the README tells an operator to grant is what runs here:

* ``searchsync`` (role ``searchsync_sync``): the producer's documents through two
  consumers into the index; ``verify`` finds no drift.
* ``searchsync_operator`` (``searchsync_sync`` and ``searchsync_operate``): the CLI
  (``verify``, ``wait``, ``resync``), then ``verify`` through the new index.
* a wrong password: the consumer names OpenSearch and OS_PASSWORD, never the password.
* a user whose role lacks the write actions: nothing is acknowledged or dead-lettered,
  the consumer says why; once the role is granted the documents arrive.
* compose/opensearch/searchsync-roles.sh makes the same roles and users.

Redis and the emulator speak plain text here (tests/e2e/test_tls.py runs those over TLS).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import NotFoundError, OpenSearch

from devstack.harness.consumer import ConsumerProcess
from tests.support.opensearch_node import ROOT
from tests.support.pipeline import Pipeline
from tests.support.producer import Stack, start_load
from tests.support.secure_opensearch import SecureOpenSearchNode
from tests.support.services import wait_for
from tests.support.tls import Authority, run_cli

# first test: the node's start (~30-40 s; Maven once when ~/.m2 lacks 2.19.4) and the pipeline
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

README = ROOT / "README.md"
_ROLE_BLOCK = re.compile(r"PUT _plugins/_security/api/roles/(\w+)\n(\s*\{.*?\n\s*\}\n)", re.DOTALL)
PASSWORDS = {
    "searchsync": f"Ss-{secrets.token_hex(8)}",
    "searchsync_operator": f"So-{secrets.token_hex(8)}",
    "searchsync_nowrite": f"Sn-{secrets.token_hex(8)}",
}
# the actions a consumer writes with; the "no write" role is searchsync_sync without them
WRITE_ACTIONS = frozenset(
    {
        "indices:data/write/bulk*",
        "indices:data/write/index",
        "indices:data/write/delete",
        "indices:data/write/delete/byquery",
    }
)


def readme_roles(alias: str) -> dict[str, dict[str, Any]]:
    """README's roles by name, their index patterns moved from ``orders`` to ``alias``."""
    roles = {name: json.loads(body) for name, body in _ROLE_BLOCK.findall(README.read_text())}
    for role in roles.values():
        for grant in role.get("index_permissions", []):
            grant["index_patterns"] = [
                re.sub(r"^orders", alias, pattern) for pattern in grant["index_patterns"]
            ]
    return roles


class SecuredPipeline(Pipeline):
    """A Pipeline whose OpenSearch is the secured node, as the user given."""

    def __init__(self, stack: Stack, node: SecureOpenSearchNode, user: str) -> None:
        super().__init__(stack)
        self.search.close()
        self.search = node.admin()
        self.node = node
        self.role_names: dict[str, str] = {}
        self.os_env = {
            "OS_HOST": node.host,
            "OS_PORT": str(node.port),
            "OS_USE_SSL": "true",
            "OS_CA_CERTS": str(node.authority.cert),
            **self.credentials(user),
        }

    def env(self, **overrides: str) -> dict[str, str]:
        """Pipeline.env, where ``overrides`` may also replace OS_USER and OS_PASSWORD."""
        return self.stack.env(
            **{
                **self.os_env,
                "OS_INDEX_NAME": self.alias,
                "LEASE_TTL_SECONDS": "2",
                "MAX_BATCH_AGE_SECONDS": "0.5",
                "RETRY_INITIAL_BACKOFF": "0.2",
                **overrides,
            }
        )

    def wait_drained(self, timeout: float = 60) -> None:
        """Pipeline.wait_drained, with the processes' logs in the AssertionError."""
        try:
            super().wait_drained(timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.logs()}") from None

    def waited(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """wait_for, with the processes' logs in the AssertionError."""
        try:
            return wait_for(condition, timeout, what, interval=0.3)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.logs()}") from None

    @staticmethod
    def credentials(user: str, password: str | None = None) -> dict[str, str]:
        """OS_USER and OS_PASSWORD for ``user`` (its password unless ``password``)."""
        return {"OS_USER": user, "OS_PASSWORD": PASSWORDS[user] if password is None else password}

    def cli_as(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli({**self.env(), **self.credentials(user)}, *args, timeout=120)

    def count(self) -> int:
        self.search.indices.refresh(index=self.alias)
        return int(self.search.count(index=self.alias)["count"])


@pytest.fixture(scope="module")
def secured() -> Iterator[SecureOpenSearchNode]:
    authority = Authority()
    node = SecureOpenSearchNode(Path(tempfile.mkdtemp(prefix="secure-os-")), authority)
    node.start()
    try:
        node.wait_healthy()
        for user, password in PASSWORDS.items():
            node.security("PUT", f"internalusers/{user}", {"password": password})
        yield node
    finally:
        node.close(remove=True)
        authority.close()


def grant(
    node: SecureOpenSearchNode, roles: dict[str, dict[str, Any]], users: dict[str, list[str]]
) -> None:
    """Create ``roles`` and map each user to the roles listed for it (as the admin)."""
    for name, body in roles.items():
        node.security("PUT", f"roles/{name}", body)
    mapped: dict[str, list[str]] = {}
    for user, names in users.items():
        for name in names:
            mapped.setdefault(name, []).append(user)
    for name, members in mapped.items():
        node.security("PUT", f"rolesmapping/{name}", {"users": members})


@pytest.fixture
def pipeline(secured: SecureOpenSearchNode) -> Iterator[SecuredPipeline]:
    stack = Stack(orders=30)
    pipe = SecuredPipeline(stack, secured, "searchsync")
    roles = readme_roles(pipe.alias)
    # role names unique to this test: roles are cluster-wide, the alias is not
    suffix = pipe.alias
    sync, operate = f"searchsync_sync_{suffix}", f"searchsync_operate_{suffix}"
    nowrite = f"searchsync_nowrite_{suffix}"
    without_writes = json.loads(json.dumps(roles["searchsync_sync"]))
    for index_grant in without_writes["index_permissions"]:
        index_grant["allowed_actions"] = [
            a for a in index_grant["allowed_actions"] if a not in WRITE_ACTIONS
        ]
    grant(
        secured,
        {
            sync: roles["searchsync_sync"],
            operate: roles["searchsync_operate"],
            nowrite: without_writes,
        },
        {
            "searchsync": [sync],
            "searchsync_operator": [sync, operate],
            "searchsync_nowrite": [nowrite],
        },
    )
    pipe.role_names = {"sync": sync, "operate": operate, "nowrite": nowrite}
    try:
        yield pipe
    finally:
        pipe.close()
        stack.close()
        for name in (sync, operate, nowrite):
            secured.security("DELETE", f"rolesmapping/{name}")
            secured.security("DELETE", f"roles/{name}")


def test_pipeline_and_cli_as_the_readme_roles(pipeline: SecuredPipeline) -> None:
    pipe = pipeline
    pipe.stack.producer(**pipe.env())
    pipe.consumer("c1")
    pipe.consumer("c2")
    pipe.wait_drained(timeout=120)
    load = start_load(pipe.stack, rate=20, seconds=3)
    _, err = load.communicate(timeout=60)
    assert load.returncode == 0, err
    pipe.wait_drained(timeout=120)

    verified = pipe.cli_as("searchsync_operator", "verify", "--json", "--settle", "10")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"], (report, pipe.logs())
    assert report["view_count"] == report["index_count"] >= 30

    waited = pipe.cli_as("searchsync_operator", "wait", "--now", "--timeout", "30")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    resynced = pipe.cli_as("searchsync_operator", "resync", "--yes", "--json", "--grace", "0")
    assert resynced.returncode == 0, resynced.stdout + resynced.stderr
    swapped = json.loads(resynced.stdout)
    assert swapped["outcome"] == "swapped", swapped
    pipe.wait_drained(timeout=120)
    # the consumers delete the swapped-out index once its grace (0 here) is over
    pipe.waited(
        lambda: not pipe.search.indices.exists(index=swapped["old_index"]),
        60,
        "a consumer to delete the retired index",
    )
    after = pipe.cli_as("searchsync_operator", "verify", "--json", "--settle", "10")
    assert after.returncode == 0, after.stdout + after.stderr
    assert json.loads(after.stdout)["ok"], (after.stdout, pipe.logs())

    logs = pipe.logs()
    assert not any(password in logs for password in PASSWORDS.values())
    assert "verification" not in logs  # certificates were checked
    for refusal in ("refuses writes", "lacks a permission", "may not read or change"):
        assert refusal not in logs, logs


def test_a_wrong_password_names_opensearch_and_the_setting(pipeline: SecuredPipeline) -> None:
    pipe = pipeline
    wrong = f"Wrong-{secrets.token_hex(8)}"
    consumer = ConsumerProcess(
        pipe.env(**pipe.credentials("searchsync", wrong)), "c-wrong", pipe.stack.log_dir
    )
    pipe.consumers["c-wrong"] = consumer
    expected = f"OpenSearch at 127.0.0.1:{pipe.node.port} refused the login (401)"
    wait_for(lambda: expected in consumer.log(), 30, "the consumer to name OpenSearch")
    log = consumer.log()
    assert "OS_PASSWORD" in log, log
    assert wrong not in log and PASSWORDS["searchsync"] not in log
    cli = run_cli(pipe.env(**pipe.credentials("searchsync", wrong)), "verify", "--json")
    assert cli.returncode == 3, cli.stdout + cli.stderr
    assert expected in cli.stderr and "OS_PASSWORD" in cli.stderr, cli.stderr
    assert wrong not in cli.stdout + cli.stderr


def test_a_role_without_write_rights_blocks_and_loses_nothing(
    pipeline: SecuredPipeline, secured: SecureOpenSearchNode
) -> None:
    pipe = pipeline
    # the index exists (a consumer of the full role made it); then only the other writes
    pipe.stack.producer(**pipe.env())
    first = pipe.consumer("c-full")
    pipe.wait_drained(timeout=120)
    indexed = pipe.count()
    first.ensure_dead()
    del pipe.consumers["c-full"]

    blocked = pipe.consumer("c-nowrite", **pipe.credentials("searchsync_nowrite"))
    load = start_load(pipe.stack, rate=20, seconds=2)
    _, err = load.communicate(timeout=60)
    assert load.returncode == 0, err
    wait_for(
        lambda: "refuses writes" in blocked.log(), 60, "the consumer to say writes are refused"
    )
    log = blocked.log()
    refused = [line for line in log.splitlines() if "OpenSearch refuses writes (auth): 403" in line]
    assert refused, log
    assert "no permissions for [indices:data/write/" in refused[0], refused
    assert "OS_USER" in refused[0] and "nothing is dead-lettered" in refused[0], refused
    assert PASSWORDS["searchsync_nowrite"] not in log
    status = pipe.status()
    assert sum(p["pending"] + p["lag"] for p in status["partitions"]) > 0, status
    dead = pipe.cli_as("searchsync_operator", "dlq", "list", "--json")
    assert dead.returncode == 0, dead.stderr
    letters = json.loads(dead.stdout)
    assert letters["total"] == 0 and letters["letters"] == [], letters
    assert pipe.count() == indexed  # nothing reached the index

    # grant the role: the same consumer picks up and the index catches up with the view
    names = pipe.role_names
    secured.security(
        "PUT",
        f"rolesmapping/{names['sync']}",
        {"users": ["searchsync", "searchsync_operator", "searchsync_nowrite"]},
    )
    pipe.wait_drained(timeout=120)
    report = pipe.cli_as("searchsync_operator", "verify", "--json", "--settle", "10")
    assert report.returncode == 0, report.stdout + report.stderr
    assert json.loads(report.stdout)["ok"], (report.stdout, pipe.logs())


def test_the_compose_roles_script_grants_what_the_readme_gives(
    secured: SecureOpenSearchNode,
) -> None:
    """compose/opensearch/searchsync-roles.sh, as an admin user with a password (as in
    compose), creates the README's two roles and their users for an alias."""
    alias = f"test_e2e_{secrets.token_hex(5)}"
    admin, admin_password = f"admin_{alias}", f"Ad-{secrets.token_hex(8)}"
    secured.security("PUT", f"internalusers/{admin}", {"password": admin_password})
    secured.security("PUT", "rolesmapping/all_access", {"users": [admin]})
    passwords = {
        "searchsync": f"Cs-{secrets.token_hex(8)}",
        # a quote and a backslash: the script escapes them for JSON and curl's config
        "searchsync_operator": f'Co"\\{secrets.token_hex(8)}',
    }
    env = {
        "PATH": os.environ["PATH"],
        "OS_URL": secured.url,
        "OS_CA_CERTS": str(secured.authority.cert),
        "OS_ADMIN_USER": admin,
        "OS_ADMIN_PASSWORD": admin_password,
        "ALIAS": alias,
        "SEARCHSYNC_PASSWORD": passwords["searchsync"],
        "OPERATOR_PASSWORD": passwords["searchsync_operator"],
    }
    try:
        ran = subprocess.run(
            [str(ROOT / "compose" / "opensearch" / "searchsync-roles.sh")],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert not any(p in ran.stdout + ran.stderr for p in [admin_password, *passwords.values()])
        readme = readme_roles(alias)
        for name in ("searchsync_sync", "searchsync_operate"):
            created = secured.security("GET", f"roles/{name}")[name]
            assert created["cluster_permissions"] == readme[name]["cluster_permissions"]
            granted = [
                (grant["index_patterns"], grant["allowed_actions"])
                for grant in created["index_permissions"]
            ]
            assert granted == [
                (grant["index_patterns"], grant["allowed_actions"])
                for grant in readme[name]["index_permissions"]
            ], name
        for user, roles in (
            ("searchsync", ["searchsync_sync"]),
            ("searchsync_operator", ["searchsync_operate", "searchsync_sync"]),
        ):
            client = OpenSearch(
                hosts=[{"host": secured.host, "port": secured.port}],
                use_ssl=True,
                ca_certs=str(secured.authority.cert),
                http_auth=(user, passwords[user]),
            )
            try:
                info = client.transport.perform_request("GET", "/_plugins/_security/authinfo")
            finally:
                client.close()
            assert sorted(info["roles"]) == roles, info
    finally:
        for name in ("searchsync_sync", "searchsync_operate"):
            with contextlib.suppress(NotFoundError):  # the script may have failed before
                secured.security("DELETE", f"rolesmapping/{name}")
            with contextlib.suppress(NotFoundError):
                secured.security("DELETE", f"roles/{name}")
        secured.security("DELETE", "rolesmapping/all_access")
        secured.security("DELETE", f"internalusers/{admin}")
        for user in passwords:  # the other tests' passwords back
            secured.security("PUT", f"internalusers/{user}", {"password": PASSWORDS[user]})
