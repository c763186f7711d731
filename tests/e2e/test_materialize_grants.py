"""The producer as a least-privilege Materialize role: README's grants, run as written.

Services: a private emulator (its login is the superuser; devstack/mzemu/privileges.py
models Materialize's roles, SELECT and USAGE checks and their refusals), a private
redis-server, real ``python -m searchsync.producer.main`` processes. The SQL block of
README "Security" (Materialize) is read from the README and run statement by statement
as the superuser; then a producer logs in as that role and writes every row of the view
to the streams, by SUBSCRIBE and by polling. Without SELECT on the view the producer
stops with a line that says Materialize, permission denied, the object and what to
grant, and never the password.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from tests.support.producer import REPO, Stack, stream_changes, view_rows, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PASSWORD = f"grant-{secrets.token_hex(6)}"


def readme_grants() -> list[str]:
    """The statements of README "Security"'s Materialize ```sql block, in order."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("**Least privilege.**") :]
    block = re.search(r"```sql\n(.*?)```", section, re.S)
    assert block is not None, "README: no sql block under Least privilege"
    lines = [line.strip() for line in block.group(1).splitlines()]
    text = " ".join(line for line in lines if line and not line.startswith("--"))
    return [statement.strip() for statement in text.split(";") if statement.strip()]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(orders=6, partitions=2)
    with s.emulator.connect(autocommit=True) as admin:
        for statement in readme_grants():
            admin.execute(statement.replace("'PASSWORD'", f"'{PASSWORD}'"))
    yield s
    s.close()


def _keys_in_streams(stack: Stack) -> set[str]:
    changes, _ = stream_changes(stack.sync_redis(), stack.keys)
    return {change.key.decode() for change in changes}


@pytest.mark.parametrize("subscribe", ["true", "false"])
def test_the_producer_syncs_as_a_role_with_exactly_the_readme_grants(
    stack: Stack, subscribe: str
) -> None:
    statements = readme_grants()
    assert len(statements) == 5 and statements[0].startswith("CREATE ROLE searchsync")
    expected = set(view_rows(stack))
    producer = stack.producer(
        MZ_USER="searchsync", MZ_PASSWORD=PASSWORD, USE_SUBSCRIBE=subscribe, POLL_INTERVAL="0.5"
    )
    try:
        wait_for(lambda: _keys_in_streams(stack) >= expected, 30, "every row in the streams")
    finally:
        log = producer.log()
        producer.kill()
        stack.sync_redis().flushdb()  # the stack's own redis-server: the next case starts afresh
    assert "permission denied" not in log and PASSWORD not in log


def test_without_select_the_producer_says_materialize_and_permission_denied(
    stack: Stack,
) -> None:
    with stack.emulator.connect(autocommit=True) as admin:
        admin.execute(
            "REVOKE SELECT ON TABLE materialize.public.orders_search_source_mv FROM searchsync"
        )
    try:
        producer = stack.producer(MZ_USER="searchsync", MZ_PASSWORD=PASSWORD)
        assert producer.proc is not None
        assert producer.proc.wait(30) == 1  # retrying cannot grant it: exit, the operator acts
        log = producer.log()
    finally:
        with stack.emulator.connect(autocommit=True) as admin:
            admin.execute(
                "GRANT SELECT ON TABLE materialize.public.orders_search_source_mv TO searchsync"
            )
    assert (
        "Producer cannot continue: Materialize: permission denied for MATERIALIZED VIEW "
        '"materialize.public.orders_search_source_mv" (SQLSTATE 42501)' in log
    ), log
    assert "needs SELECT on the view and USAGE on its database, schema and cluster" in log
    assert PASSWORD not in log
