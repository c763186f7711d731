"""The emulator's role and privilege statements and checks, without a server (pure)."""

from __future__ import annotations

from typing import NoReturn

import pytest

from devstack.mzemu.errors import MzError
from devstack.mzemu.privileges import Grant, Privileges, parse_role_statement, reads_view

VIEW = "orders_search_source_mv"


def test_create_role_options() -> None:
    role = parse_role_statement("CREATE ROLE searchsync WITH LOGIN PASSWORD 'it''s';")
    assert role is not None and (role.role, role.login, role.password) == (
        "searchsync", True, "it's",
    )  # fmt: skip
    plain = parse_role_statement('create role "Mixed" nologin password null')
    assert plain is not None and (plain.role, plain.login, plain.password) == ("Mixed", False, None)
    with pytest.raises(MzError, match="not modelled"):
        parse_role_statement("CREATE ROLE x SUPERUSER")


def test_grant_and_revoke_forms() -> None:
    grant = parse_role_statement(
        f"GRANT SELECT ON TABLE materialize.public.{VIEW} TO searchsync, other"
    )
    assert grant is not None and grant.grants == (
        Grant("SELECT", "TABLE", f"materialize.public.{VIEW}", ("searchsync", "other")),
    )
    revoke = parse_role_statement("revoke usage on cluster serving from searchsync")
    assert revoke is not None and revoke.grants[0].revoke and revoke.grants[0].kind == "CLUSTER"
    with pytest.raises(MzError, match="only USAGE on CLUSTER"):
        parse_role_statement("GRANT CREATE ON CLUSTER serving TO x")
    assert parse_role_statement("SELECT 1") is None
    assert parse_role_statement("DROP TABLE t") is None


def test_checks_follow_grants_and_revokes() -> None:
    privileges = Privileges("materialize", "admin", VIEW)
    privileges.run(parse_role_statement("CREATE ROLE r LOGIN PASSWORD 'p'") or _no(), "materialize")
    assert privileges.authenticate("r", "p") and not privileges.authenticate("r", "q")
    with pytest.raises(MzError, match='permission denied for DATABASE "materialize"'):
        privileges.check_read("r", "serving")
    for grant in ("USAGE ON DATABASE materialize", "USAGE ON SCHEMA public",
                  f"SELECT ON {VIEW}", "USAGE ON CLUSTER serving"):  # fmt: skip
        privileges.run(parse_role_statement(f"GRANT {grant} TO r") or _no(), "materialize")
    privileges.check_read("r", "serving")
    privileges.check_read("materialize", "anything")  # the superuser needs no grant
    with pytest.raises(MzError, match='CLUSTER "compute"'):
        privileges.check_read("r", "compute")
    privileges.run(parse_role_statement("DROP ROLE r") or _no(), "materialize")
    assert not privileges.authenticate("r", "p") and privileges.grants == set()


def test_reads_view_finds_the_name_as_an_identifier() -> None:
    assert reads_view(f"DECLARE c CURSOR FOR SUBSCRIBE (SELECT * FROM public.{VIEW})", VIEW)
    assert reads_view(f'SELECT * FROM "{VIEW}" LIMIT 1', VIEW)
    assert not reads_view(f"SELECT '{VIEW}'", VIEW)  # a string, not the view
    assert not reads_view("SELECT mz_now()", VIEW)


def _no() -> NoReturn:
    raise AssertionError("not parsed")
