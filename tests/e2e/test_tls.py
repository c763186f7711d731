"""The whole pipeline over TLS everywhere, with least-privilege Redis credentials.

Services: a private TLS-only PostgreSQL (the devstack's opt-in TLS,
tests.support.tls_postgres) holding the FreshMart schema, read by the emulator and
written by the load generator with sslmode=verify-full; a private redis-server on a
TLS-only port whose service user has exactly the grants README "Security" gives
(:data:`REDIS_GRANTS`); a private emulator that requires pgwire TLS (its own
password); and an HTTPS basic-auth proxy in front of the devstack OpenSearch node
(test_opensearch_security.py runs the real security plugin); one throwaway CA signs
every server certificate and is given to searchsync through MZ_SSLROOTCERT,
REDIS_CA_CERTS and OS_CA_CERTS. Producer, two consumers and the CLI (status, verify,
wait, replay, dlq list, resync) run as processes; Redis' ACL LOG must stay empty (no
command or key was refused), no log holds a password, no verification WARNING is
logged (every certificate is checked), and PostgreSQL saw no plain-text client.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from searchsync.common.keys import Keys
from tests.support.consumer import service_env
from tests.support.mzemu import create_schema, start_emulator
from tests.support.pipeline import Pipeline
from tests.support.producer import Stack, start_load
from tests.support.tls import Authority, BasicAuthProxy, TlsRedis
from tests.support.tls_postgres import TlsPostgres

pytestmark = pytest.mark.timeout(300)

# README "Security": the Redis ACL of the searchsync user (producer, consumers, CLI).
# Derived by running exercise() as a user with +@all on these keys and reading INFO
# commandstats (scripts' commands included), plus the commands of code paths it does
# not take (found in the code: MGET, HMGET, ZREM, XDEL, XCLAIM).
REDIS_GRANTS = (
    "resetkeys ~searchsync:* resetchannels -@all "
    "+hello +client|setname +time +scan +multi +exec "
    "+eval +evalsha +script|load +script|exists "
    "+get +set +del +exists +pexpire +incr +mget "
    "+hget +hset +hsetnx +hdel +hgetall +hincrby +hmget +hkeys "
    "+zadd +zrange +zrangebyscore +zrem +zremrangebyscore +zscore "
    "+xadd +xack +xautoclaim +xclaim +xdel +xgroup|create +xgroup|setid "
    "+xinfo|groups +xinfo|stream +xlen +xpending +xrange +xrevrange +xreadgroup +xtrim"
)
USER = "searchsync"
PASSWORDS = {
    "redis": f"r-{secrets.token_hex(8)}",
    "mz": f"m-{secrets.token_hex(8)}",
    "os": f"o-{secrets.token_hex(8)}",
}


class TlsStack(Stack):
    """Stack's schema and producers, with TLS-only Redis and emulator."""

    def __init__(self, authority: Authority, grants: str, orders: int = 40) -> None:
        # Stack.__init__ would start plain-text services: set up its fields here instead
        self.authority = authority
        self.partitions = 4
        self.keys = Keys(self.VIEW, self.partitions)
        self.log_dir = Path(tempfile.mkdtemp(prefix="tls-test-"))
        self.schema = create_schema(orders=orders)
        self.tls_redis = TlsRedis(authority, {USER: (PASSWORDS["redis"], grants)})
        self.tls_redis.start()
        self.redis = self.tls_redis
        issued = authority.issue("mzemu")
        self.emulator = start_emulator(
            self.schema,
            tick_ms=25,
            retain_ms=600_000,
            env={
                "MZEMU_TLS_CERT": str(issued.cert),
                "MZEMU_TLS_KEY": str(issued.key),
                "MZEMU_PASSWORD": PASSWORDS["mz"],
            },
        )
        self.producers = []

    def env(self, **overrides: str) -> dict[str, str]:
        return super().env(
            **{
                "MZ_SSLMODE": "verify-full",
                "MZ_SSLROOTCERT": str(self.authority.cert),
                "MZ_PASSWORD": PASSWORDS["mz"],
                "REDIS_URL": self.tls_redis.url_for(USER, PASSWORDS["redis"]),
                "REDIS_CA_CERTS": str(self.authority.cert),
                **overrides,
            }
        )

    def client(self, user: str = "default") -> redis.Redis:
        """A client as ``user`` (``default``: the test's admin, every right)."""
        url = self.tls_redis.url
        if user == USER:
            url = self.tls_redis.url_for(USER, PASSWORDS["redis"])
        return redis.Redis.from_url(url, ssl_ca_certs=str(self.authority.cert))


def run_pipeline(authority: Authority, grants: str) -> tuple[Pipeline, TlsStack, BasicAuthProxy]:
    services = service_env()
    proxy = BasicAuthProxy(
        services["OS_HOST"], int(services["OS_PORT"]), authority, USER, PASSWORDS["os"]
    )
    proxy.start()
    stack = TlsStack(authority, grants)
    pipe = Pipeline(stack)
    pipe.os_env = {
        "OS_HOST": "127.0.0.1",
        "OS_PORT": str(proxy.port),
        "OS_USE_SSL": "true",
        "OS_CA_CERTS": str(authority.cert),
        "OS_USER": USER,
        "OS_PASSWORD": PASSWORDS["os"],
    }
    return pipe, stack, proxy


def exercise(pipe: Pipeline, stack: TlsStack) -> dict[str, Any]:
    """Producer, two consumers, a load, and every CLI command that touches Redis."""
    stack.producer(**pipe.env())
    pipe.consumer("c1")
    pipe.consumer("c2")
    # wait_drained, not wait_synced: with TLS on every hop the applied frontier seldom
    # equals the checkpoint at the instant of a status read (seen on a loaded machine)
    pipe.wait_drained(timeout=120)
    load = start_load(stack, rate=20, seconds=4)
    _, err = load.communicate(timeout=60)
    assert load.returncode == 0, err
    pipe.wait_drained(timeout=120)
    report = pipe.verify(settle=10)
    waited = pipe.cli("wait", "--now", "--timeout", "30")
    assert waited.returncode == 0, waited.stderr
    replayed = pipe.cli("replay", "--since", "0-1", "--yes", "--json")
    assert replayed.returncode == 0, replayed.stderr
    listed = pipe.cli("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    resynced = pipe.cli("resync", "--yes", "--json", "--grace", "0")
    assert resynced.returncode == 0, resynced.stdout + resynced.stderr
    pipe.wait_drained()
    return {"verify": report, "resync": json.loads(resynced.stdout)}


@pytest.fixture
def authority() -> Iterator[Authority]:
    ca = Authority()
    yield ca
    ca.close()


@pytest.fixture
def tls_postgres(authority: Authority, monkeypatch: pytest.MonkeyPatch) -> Iterator[TlsPostgres]:
    """A TLS-only PostgreSQL (the devstack's opt-in TLS) for the test's FreshMart schema:
    DATABASE_URL (the harness' pg_dsn) names it with sslmode=verify-full, so the schema,
    the emulator's source connection and the load generator all reach it over TLS."""
    postgres = TlsPostgres(authority)
    postgres.start()
    monkeypatch.setenv("DATABASE_URL", postgres.database_url)
    try:
        yield postgres
    finally:
        postgres.close()


def test_pipeline_over_tls_everywhere_with_least_privilege(
    authority: Authority, tls_postgres: TlsPostgres
) -> None:
    assert "sslmode=verify-full" in tls_postgres.database_url
    pipe, stack, proxy = run_pipeline(authority, REDIS_GRANTS)
    try:
        outcome = exercise(pipe, stack)
        # every connection the emulator and the load generator made to PostgreSQL: TLS
        with psycopg.connect(tls_postgres.database_url, autocommit=True) as pg:
            plain = pg.execute(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                "WHERE backend_type = 'client backend' AND NOT ssl"
            ).fetchone()
        assert plain == (0,), plain
        assert outcome["verify"]["ok"], (outcome, pipe.logs())
        assert outcome["verify"]["view_count"] == outcome["verify"]["index_count"] >= 40
        after = pipe.verify(settle=10)  # after the resync's swap, through the new index
        assert after["ok"], (after, pipe.logs())
        with stack.client() as admin:
            denied = admin.execute_command("ACL", "LOG")
        assert denied == [], denied
        # and the grants do bite: other keys and other commands are refused
        with stack.client(USER) as service:
            for command in (("GET", "other:key"), ("FLUSHALL",), ("CONFIG", "GET", "*")):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    service.execute_command(*command)
        logs = pipe.logs()
        assert not any(password in logs for password in PASSWORDS.values())
        assert "verification" not in logs
        assert proxy.forwarded > 0 and proxy.refused == 0
    finally:
        pipe.close()
        stack.close()
        proxy.close()
        shutil.rmtree(stack.log_dir, ignore_errors=True)
