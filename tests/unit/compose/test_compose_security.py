"""Least privilege in compose/docker-compose.yml (issue 13, points 3-4): searchsync's
services log in as README "Security"'s users, never as the products' admins.

Structural, no Docker engine (none runs here): the OpenSearch roles the compose job
makes are read from compose/opensearch/searchsync-roles.sh and compared with README's
blocks through the e2e test's own reader (tests/e2e/test_opensearch_security.py, which
runs the script against the security plugin); the Redis user compose defines is compared
with README's ACL and with the grants tests/e2e/test_tls.py runs the pipeline as; the
redis service's shell that writes that user into its config is run here with sh.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from searchsync.common.views import CONFIG_VARIABLE, load_deployment
from tests.e2e.test_opensearch_security import readme_roles
from tests.e2e.test_tls import REDIS_GRANTS
from tests.unit.compose.deployment import (
    CLI_SERVICE,
    COMPOSE,
    ROLES_SCRIPT,
    ROLES_SERVICE,
    ROOT,
    SEARCHSYNC_SERVICES,
    compose_file,
    roles_requests,
)

# every service that runs searchsync code and logs in to Redis and OpenSearch
LOGIN_SERVICES = (*SEARCHSYNC_SERVICES, CLI_SERVICE)
REDIS_USER_FILE = COMPOSE / "redis" / "searchsync-user.conf"
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")


def services() -> dict[str, Any]:
    loaded: dict[str, Any] = compose_file()["services"]
    return loaded


def variable(value: str) -> str:
    """The .env variable a value is exactly (``${NAME:?…}``); AssertionError otherwise."""
    match = INTERPOLATION.fullmatch(value)
    assert match is not None, f"not one required variable: {value!r}"
    return match.group(1)


def url_credentials(url: str) -> tuple[str | None, str | None]:
    """A URL's user and password as written (a ``${NAME:?message}`` kept whole: its
    ``?`` and spaces would otherwise end the URL's authority)."""
    found: list[str] = []

    def hold(match: re.Match[str]) -> str:
        found.append(match.group(0))
        return f"interpolated{len(found) - 1}"

    parts = urlsplit(INTERPOLATION.sub(hold, url))

    def restore(text: str | None) -> str | None:
        if text is None:
            return None
        return re.sub(r"interpolated(\d+)", lambda m: found[int(m.group(1))], text)

    return restore(parts.username), restore(parts.password)


def readme_redis_rules() -> list[str]:
    """README's ``ACL SETUSER searchsync on >PASSWORD …`` block, after the password."""
    readme = (ROOT / "README.md").read_text()
    [block] = re.findall(r"```\n\s*(ACL SETUSER searchsync .*?)\n\s*```", readme, re.DOTALL)
    words: list[str] = str(block).split()
    assert words[:5] == ["ACL", "SETUSER", "searchsync", "on", ">PASSWORD"], words[:5]
    return words[5:]


def compose_redis_rules() -> list[str]:
    """The user line of compose/redis/searchsync-user.conf, after the password."""
    [line] = [line for line in REDIS_USER_FILE.read_text().splitlines() if line.startswith("user ")]
    words = line.split()
    assert words[:4] == ["user", "searchsync", "on", ">PASSWORD"], words[:4]
    return words[4:]


def test_the_roles_job_runs_the_script_once_opensearch_is_healthy() -> None:
    everything = services()
    job = everything[ROLES_SERVICE]
    assert job["depends_on"] == {"opensearch": {"condition": "service_healthy"}}
    assert job["restart"] == "no"
    # the node's own image: its bash and curl, nothing more to pull
    assert job["image"] == everything["opensearch"]["image"]
    [mount] = job["volumes"]
    source, target, mode = mount.split(":")
    assert (COMPOSE / source).resolve() == ROLES_SCRIPT and mode == "ro"
    assert job["entrypoint"] == ["bash", target]
    environment = job["environment"]
    required = re.search(r'^: "\$\{OS_URL:\?\}".*$', ROLES_SCRIPT.read_text(), re.MULTILINE)
    assert required is not None
    for name in re.findall(r"\$\{([A-Z_]+):\?\}", required.group(0)):
        assert environment.get(name), f"{ROLES_SERVICE} lacks {name}, which the script requires"
    assert urlsplit(environment["OS_URL"]).hostname == "opensearch"
    assert environment["OS_ADMIN_USER"] == "admin"
    assert variable(environment["OS_ADMIN_PASSWORD"]) == "OPENSEARCH_INITIAL_ADMIN_PASSWORD"
    # the roles cover every index the services write: each view's alias (the views file)
    views = ROOT / "devstack" / "views" / "views.toml"
    aliases = [view.os_index_name for view in load_deployment({CONFIG_VARIABLE: str(views)}).views]
    assert environment["ALIAS"].split() == aliases
    sync = next(r.body for r in roles_requests(environment["ALIAS"]) if r.path.endswith("_sync"))
    patterns = sync["index_permissions"][0]["index_patterns"]
    assert patterns == [f"{a}{s}" for a in aliases for s in ("", "_v*", "_resync")]


@pytest.mark.parametrize("service", LOGIN_SERVICES)
def test_searchsync_starts_only_after_the_roles_job_succeeded(service: str) -> None:
    depends_on = services()[service]["depends_on"]
    assert depends_on[ROLES_SERVICE] == {"condition": "service_completed_successfully"}
    # before the job, its users do not exist: nothing may wait on the node alone instead
    assert "opensearch" not in depends_on


@pytest.mark.parametrize("service", LOGIN_SERVICES)
def test_no_searchsync_service_logs_in_as_an_admin(service: str) -> None:
    environment = services()[service]["environment"]
    assert environment["OS_USER"] != "admin"
    assert variable(environment["OS_PASSWORD"]) != "OPENSEARCH_INITIAL_ADMIN_PASSWORD"
    user, password = url_credentials(environment["REDIS_URL"])
    assert user == "searchsync"  # not the default user (requirepass)
    assert password is not None
    assert variable(password) == "REDIS_SEARCHSYNC_PASSWORD"


def test_each_service_logs_in_to_opensearch_as_the_user_the_job_makes() -> None:
    """The daemons as ``searchsync`` (searchsync_sync only), the CLI as
    ``searchsync_operator`` (both roles), each with the password the job sets."""
    everything = services()
    job = everything[ROLES_SERVICE]["environment"]
    for name in SEARCHSYNC_SERVICES:
        environment = everything[name]["environment"]
        assert environment["OS_USER"] == "searchsync"
        assert variable(environment["OS_PASSWORD"]) == variable(job["SEARCHSYNC_PASSWORD"])
    cli = everything[CLI_SERVICE]["environment"]
    assert cli["OS_USER"] == "searchsync_operator"
    assert variable(cli["OS_PASSWORD"]) == variable(job["OPERATOR_PASSWORD"])
    assert variable(job["SEARCHSYNC_PASSWORD"]) != variable(job["OPERATOR_PASSWORD"])
    mapped: dict[str, set[str]] = {}
    for request in roles_requests("orders"):
        if request.path.startswith("rolesmapping/"):
            role = request.path.removeprefix("rolesmapping/")
            for user in request.body["users"]:
                mapped.setdefault(user, set()).add(role)
    assert mapped == {
        "searchsync": {"searchsync_sync"},
        "searchsync_operator": {"searchsync_sync", "searchsync_operate"},
    }
    users = [r.path for r in roles_requests("orders") if r.path.startswith("internalusers/")]
    assert users == ["internalusers/searchsync", "internalusers/searchsync_operator"]


@pytest.mark.parametrize("alias", ["orders", "shop_2"])
def test_the_roles_script_makes_the_readme_roles(alias: str) -> None:
    made = {
        r.path.removeprefix("roles/"): r.body
        for r in roles_requests(alias)
        if r.path.startswith("roles/")
    }
    assert made == readme_roles(alias)
    assert set(made) == {"searchsync_sync", "searchsync_operate"}


def test_the_cli_runs_only_on_request_from_the_app_image() -> None:
    everything = services()
    cli = everything[CLI_SERVICE]
    assert cli["profiles"] == ["cli"]  # `up` leaves it alone; `run --rm searchsync-cli …`
    assert cli["entrypoint"] == ["searchsync"]
    assert cli["image"] == everything["search-sync"]["image"]
    assert cli["pull_policy"] == "never"
    assert "ports" not in cli


def test_the_redis_user_is_the_readme_acl() -> None:
    """compose's user, README's block and what tests/e2e/test_tls.py runs the pipeline
    as: the same rules in the same order."""
    assert compose_redis_rules() == readme_redis_rules()
    assert compose_redis_rules() == REDIS_GRANTS.split()


def test_redis_writes_the_user_into_its_config_with_the_password_hashed(
    tmp_path: Path,
) -> None:
    """The redis service's shell, up to starting redis-server, run with sh: the config
    has requirepass for the default user and the searchsync user with README's rules and
    the SHA-256 of its password (a password with a space, quotes, a slash, ``&`` and
    ``$`` in it arrives intact)."""
    redis = services()["redis"]
    [mount] = [v for v in redis["volumes"] if str(v).startswith("./redis/")]
    source, target, mode = mount.split(":")
    assert (COMPOSE / source).resolve() == REDIS_USER_FILE and mode == "ro"
    shell = redis["command"][2].replace("$$", "$")  # compose's escape for a literal $
    written, _, start = shell.partition(" && chown redis /tmp/auth.conf && ")
    assert start.startswith("exec docker-entrypoint.sh redis-server /tmp/auth.conf ")
    assert "aclfile" not in start  # an ACL file would make Redis ignore requirepass
    config = tmp_path / "auth.conf"
    written = written.replace("/tmp/auth.conf", str(config)).replace(target, str(REDIS_USER_FILE))
    password = "s p'a\"c/e&$x"
    environ = {**os.environ, "REDIS_PASSWORD": "default-pw", "REDIS_SEARCHSYNC_PASSWORD": password}
    ran = subprocess.run(
        ["sh", "-c", written], env=environ, capture_output=True, text=True, timeout=30, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert config.stat().st_mode & 0o777 == 0o600
    lines = [line for line in config.read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == "requirepass default-pw"
    words = lines[1].split()
    digest = hashlib.sha256(password.encode()).hexdigest()
    assert words[:4] == ["user", "searchsync", "on", f"#{digest}"]
    assert words[4:] == readme_redis_rules()
    assert len(lines) == 2
    assert password not in config.read_text()


def test_every_secret_in_an_environment_is_one_env_variable() -> None:
    """No literal password in the compose file: every value named like a secret is a
    required .env variable, and so is every password inside a URL."""
    secretive = re.compile(r"(PASSWORD|_AUTH|SECRET|TOKEN)$")
    seen = 0
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if secretive.search(key) and key != "OS_AUTH":
                variable(str(value))
                seen += 1
            if "://" in str(value):
                password = url_credentials(str(value))[1]
                assert password is None or variable(password), (name, key)
    assert seen >= 12  # the checks above ran over the secrets, not over nothing


def test_nothing_is_published_beyond_loopback() -> None:
    for name, service in services().items():
        assert service.get("network_mode") != "host", name  # would bind the host's ports
        for port in service.get("ports", []):
            # host IP, host port, container port: no range, no long form, no bare port
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", str(port)), (name, port)
