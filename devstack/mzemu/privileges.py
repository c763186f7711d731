"""Roles and privileges: a small part of Materialize's RBAC, enough to run searchsync as a
least-privilege role.

What Materialize does (its docs: "Manage privileges", GRANT PRIVILEGE, CREATE ROLE, and
``src/adapter/src/rbac.rs``): a role logs in with a password when it has LOGIN; reading
a materialized view (SELECT, SUBSCRIBE) needs SELECT on the view, USAGE on its
database and schema, and USAGE on the cluster that computes the read; a superuser needs
nothing; a refusal is SQLSTATE 42501 ``permission denied for <OBJECT TYPE> "<name>"``
(names fully qualified and quoted). ``GRANT SELECT ON [TABLE] name`` names views and
materialized views too.

What this module keeps of it: the emulator's login (MZEMU_USER, MZEMU_PASSWORD) is the
superuser; ``CREATE ROLE name [WITH] [LOGIN | NOLOGIN | PASSWORD 'p' | PASSWORD NULL |
INHERIT]…``, ``DROP ROLE [IF EXISTS] name``, ``GRANT``/``REVOKE`` of SELECT on the kept
view and of USAGE on database ``materialize``, schema ``materialize.public`` (or
``public``) and a cluster, run by the superuser; the checks above for reads that name
the kept view (DECLARE … SUBSCRIBE, SUBSCRIBE, COPY (SUBSCRIBE …), and SELECTs relayed to
PostgreSQL). Not kept: role membership and inheritance, ownership, CREATE privileges,
ALL PRIVILEGES, ALTER DEFAULT PRIVILEGES, other objects (they are PostgreSQL's, relayed
unchecked), ``enable_rbac_checks`` (always on here). Pure: no I/O.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Final

from devstack.mzemu.errors import MzError, quoted
from devstack.mzemu.statements import tokenize

__all__ = [
    "DATABASE",
    "SCHEMA",
    "Grant",
    "Privileges",
    "RoleStatement",
    "parse_role_statement",
    "reads_view",
]

DATABASE: Final = "materialize"
SCHEMA: Final = "public"

_NAME = r'(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUALIFIED = rf"{_NAME}(?:\s*\.\s*{_NAME})*"
_CREATE = re.compile(
    rf"^\s*create\s+role\s+(?P<name>{_NAME})(?P<options>.*?)\s*;?\s*$", re.I | re.S
)
_DROP = re.compile(
    rf"^\s*drop\s+role\s+(?P<if_exists>if\s+exists\s+)?(?P<name>{_NAME})\s*;?\s*$", re.I
)
_GRANT = re.compile(
    rf"^\s*(?P<verb>grant|revoke)\s+(?P<privileges>\w+(?:\s*,\s*\w+)*)\s+on\s+"
    rf"(?:(?P<kind>table|database|schema|cluster)\s+)?(?P<object>{_QUALIFIED})\s+"
    rf"(?:to|from)\s+(?P<roles>{_NAME}(?:\s*,\s*{_NAME})*)\s*;?\s*$",
    re.I,
)
_OPTION = re.compile(
    r"\s*(with\b|nologin\b|login\b|inherit\b|password\s+(null\b|'(?:[^']|'')*'))", re.I
)


def _ident(text: str) -> str:
    text = text.strip()
    return text[1:-1].replace('""', '"') if text.startswith('"') else text.lower()


@dataclass(frozen=True)
class Grant:
    """One privilege on one object for some roles (GRANT, or REVOKE when ``revoke``)."""

    privilege: str  # SELECT or USAGE
    kind: str  # TABLE (views too), DATABASE, SCHEMA, CLUSTER
    name: str  # as qualified as it was written, identifiers normalized
    roles: tuple[str, ...]
    revoke: bool = False


@dataclass(frozen=True)
class RoleStatement:
    """CREATE ROLE, DROP ROLE, or one or more :class:`Grant` of a GRANT/REVOKE."""

    command: str  # "CREATE ROLE", "DROP ROLE", "GRANT", "REVOKE"
    role: str = ""
    login: bool = False
    password: str | None = None
    if_exists: bool = False
    grants: tuple[Grant, ...] = ()


def parse_role_statement(sql: str) -> RoleStatement | None:
    """The role or privilege statement ``sql`` is, None if it is none of them. Raises
    MzError (42601) on options or privileges the emulator does not model."""
    if m := _CREATE.match(sql):
        return _create(_ident(m["name"]), m["options"])
    if m := _DROP.match(sql):
        return RoleStatement("DROP ROLE", _ident(m["name"]), if_exists=bool(m["if_exists"]))
    if m := _GRANT.match(sql):
        verb = m["verb"].upper()
        kind = (m["kind"] or "TABLE").upper()
        name = ".".join(_ident(part) for part in re.findall(_NAME, m["object"]))
        roles = tuple(_ident(role) for role in re.findall(_NAME, m["roles"]))
        grants = []
        for privilege in (p.strip().upper() for p in m["privileges"].split(",")):
            allowed = ("SELECT",) if kind == "TABLE" else ("USAGE",)
            if privilege not in allowed:
                raise MzError("42601", f"the emulator models only {allowed[0]} on {kind}")
            grants.append(Grant(privilege, kind, name, roles, revoke=verb == "REVOKE"))
        return RoleStatement(verb, grants=tuple(grants))
    return None


def _create(role: str, options: str) -> RoleStatement:
    login = False
    password: str | None = None
    rest = options
    while rest.strip():
        m = _OPTION.match(rest)
        if m is None:
            raise MzError(
                "42601", f"CREATE ROLE option not modelled by the emulator: {rest.strip()}"
            )
        word = m.group(1).lower()
        if word.startswith("password"):
            literal = m.group(2)
            password = None if literal.lower() == "null" else literal[1:-1].replace("''", "'")
        elif word in ("login", "nologin"):
            login = word == "login"
        rest = rest[m.end() :]
    return RoleStatement("CREATE ROLE", role, login=login, password=password)


def reads_view(sql: str, view: str) -> bool:
    """Whether ``sql`` names ``view`` (any qualification) as an identifier."""
    try:
        tokens = tokenize(sql)
    except MzError:
        return False
    return any(t.kind in ("ident", "qident") and t.text == view for t in tokens)


@dataclass
class _Role:
    login: bool
    password: str | None


@dataclass
class Privileges:
    """The roles and grants of one emulator (shared by its sessions; thread-safe)."""

    superuser: str
    superuser_password: str
    view: str
    roles: dict[str, _Role] = field(default_factory=dict)
    grants: set[tuple[str, str, str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def authenticate(self, user: str, password: str) -> bool:
        """Whether ``user`` may log in with ``password`` (the superuser, or a role with
        LOGIN and that password)."""
        if user == self.superuser:
            return password == self.superuser_password
        with self._lock:
            role = self.roles.get(user)
        return role is not None and role.login and role.password == password

    def run(self, statement: RoleStatement, user: str) -> str:
        """Apply ``statement`` as ``user``; the command tag. Raises MzError: 42501 for
        anyone but the superuser, 42710/42704 for a role that exists or does not."""
        if user != self.superuser:
            raise MzError(
                "42501",
                f"permission denied to {statement.command.lower()}",
                detail="You must be a superuser in the emulator (it models no CREATEROLE)",
            )
        with self._lock:
            if statement.command == "CREATE ROLE":
                if statement.role in self.roles or statement.role == self.superuser:
                    raise MzError("42710", f"role {quoted(statement.role)} already exists")
                self.roles[statement.role] = _Role(statement.login, statement.password)
            elif statement.command == "DROP ROLE":
                if self.roles.pop(statement.role, None) is None and not statement.if_exists:
                    raise MzError("42704", f"unknown role {quoted(statement.role)}")
                self.grants = {g for g in self.grants if g[3] != statement.role}
            else:
                for grant in statement.grants:
                    self._apply(grant)
        return statement.command

    def _apply(self, grant: Grant) -> None:
        kind, name = self._resolve(grant.kind, grant.name)
        for role in grant.roles:
            if role not in self.roles and role != self.superuser:
                raise MzError("42704", f"unknown role {quoted(role)}")
            entry = (grant.privilege, kind, name, role)
            if grant.revoke:
                self.grants.discard(entry)
            else:
                self.grants.add(entry)

    def _resolve(self, kind: str, name: str) -> tuple[str, str]:
        """The object's kind and full name as the checks see it; 42P01/3F000/3D000 for
        an object the emulator does not serve."""
        parts = name.split(".")
        if kind == "TABLE":
            if parts[-1] != self.view or parts[:-1] not in ([], [SCHEMA], [DATABASE, SCHEMA]):
                raise MzError("42P01", f"unknown catalog item {quoted(name)}")
            return "MATERIALIZED VIEW", f"{DATABASE}.{SCHEMA}.{self.view}"
        if kind == "SCHEMA":
            if parts not in ([SCHEMA], [DATABASE, SCHEMA]):
                raise MzError("3F000", f"unknown schema {quoted(name)}")
            return kind, f"{DATABASE}.{SCHEMA}"
        if kind == "DATABASE" and parts != [DATABASE]:
            raise MzError("3D000", f"unknown database {quoted(name)}")
        return kind, name

    def check_read(self, user: str, cluster: str) -> None:
        """A read of the kept view by ``user`` on ``cluster``: raises MzError 42501
        ``permission denied for <TYPE> "<name>"`` for the first privilege missing
        (database, schema, view, cluster), as Materialize words it."""
        if user == self.superuser:
            return
        needed = (
            ("USAGE", "DATABASE", DATABASE),
            ("USAGE", "SCHEMA", f"{DATABASE}.{SCHEMA}"),
            ("SELECT", "MATERIALIZED VIEW", f"{DATABASE}.{SCHEMA}.{self.view}"),
            ("USAGE", "CLUSTER", cluster),
        )
        with self._lock:
            missing = next((n for n in needed if (*n, user) not in self.grants), None)
        if missing is not None:
            _, kind, name = missing
            raise MzError("42501", f"permission denied for {kind} {quoted(name)}")
