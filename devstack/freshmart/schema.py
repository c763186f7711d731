"""Apply the FreshMart schema (``devstack/sql/*.sql``) to one PostgreSQL schema.

The SQL files name no schema; :func:`apply_schema` runs them with ``search_path``
set to the target, so a test can build a private copy in ``test_fm_<random>``.
Everything is idempotent (``IF NOT EXISTS`` / ``CREATE OR REPLACE``), and an
advisory lock keeps two concurrent callers from racing on the same catalog rows.

Command line (what ``devstack/lib/freshmart.sh`` runs)::

    python -m devstack.freshmart.schema [--schema public]   # uses PG* / DATABASE_URL
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psycopg
from psycopg import sql

__all__ = [
    "INDEX_FILE",
    "SECONDARY_INDEXES",
    "SQL_DIR",
    "apply_schema",
    "apply_schema_async",
    "create_secondary_indexes",
    "drop_secondary_indexes",
    "schema_files",
]

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
INDEX_FILE = "020_triples_indexes.sql"
# Names as created by INDEX_FILE (a unit test keeps the two in step).
SECONDARY_INDEXES = ("triples_subject_predicate_idx", "triples_predicate_object_idx")
# Arbitrary constant shared by every apply_schema caller.
_SCHEMA_LOCK = 0x46524D5348454D41


def schema_files() -> list[Path]:
    """The DDL files in the order they are applied (by file name)."""
    return sorted(SQL_DIR.glob("*.sql"))


def _scoped_statements(schema: str, files: list[Path]) -> list[sql.SQL | sql.Composed]:
    # set_config(..., true) is SET LOCAL: the caller's search_path comes back at
    # the end of the transaction; restoring it explicitly also covers the case of
    # being called inside the caller's own transaction.
    statements: list[sql.SQL | sql.Composed] = [
        sql.SQL("SELECT pg_advisory_xact_lock({})").format(sql.Literal(_SCHEMA_LOCK)),
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)),
        sql.SQL("SELECT set_config('search_path', {}, true)").format(
            sql.Literal(sql.Identifier(schema).as_string())
        ),
    ]
    statements.extend(sql.SQL(path.read_text()) for path in files)
    return statements


def apply_schema(conn: psycopg.Connection[object], schema: str = "public") -> None:
    """Create or update the triples table, its indexes and the view in ``schema``.

    Runs in one transaction (a savepoint if the caller has one open), leaves the
    connection's search_path as it was. Blocks while another caller applies the
    schema. Raises psycopg.Error on any SQL failure (nothing is left half-applied).
    """
    with conn.transaction():
        old_path = _search_path(conn)
        for statement in _scoped_statements(schema, schema_files()):
            conn.execute(statement)
        conn.execute("SELECT set_config('search_path', %s, true)", (old_path,))


async def apply_schema_async(conn: psycopg.AsyncConnection[object], schema: str = "public") -> None:
    """:func:`apply_schema` for an async connection (same guarantees)."""
    async with conn.transaction():
        cur = await conn.execute("SELECT current_setting('search_path')")
        row = await cur.fetchone()
        old_path = str(row[0]) if row else "public"  # type: ignore[index]
        for statement in _scoped_statements(schema, schema_files()):
            await conn.execute(statement)
        await conn.execute("SELECT set_config('search_path', %s, true)", (old_path,))


def drop_secondary_indexes(conn: psycopg.Connection[object], schema: str) -> None:
    """Drop the indexes of INDEX_FILE (before a bulk load into an empty table).

    Call inside the loading transaction so readers never see the table without
    them: DROP INDEX holds an exclusive lock on ``triples`` until commit.
    """
    for name in SECONDARY_INDEXES:
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(schema, name)))


def create_secondary_indexes(conn: psycopg.Connection[object], schema: str) -> None:
    """Build the indexes of INDEX_FILE in ``schema`` (no-op for those that exist)."""
    with conn.transaction():
        old_path = _search_path(conn)
        conn.execute(
            sql.SQL("SELECT set_config('search_path', {}, true)").format(
                sql.Literal(sql.Identifier(schema).as_string())
            )
        )
        conn.execute(sql.SQL((SQL_DIR / INDEX_FILE).read_text()))
        conn.execute("SELECT set_config('search_path', %s, true)", (old_path,))


def _search_path(conn: psycopg.Connection[object]) -> str:
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    return str(row[0]) if row else "public"  # type: ignore[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", default="public", help="target schema (default: public)")
    parser.add_argument(
        "--dsn", default=os.environ.get("DATABASE_URL", ""), help="default: $DATABASE_URL or PG*"
    )
    args = parser.parse_args(argv)
    try:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            apply_schema(conn, args.schema)
    except psycopg.Error as exc:
        print(f"freshmart schema: {exc}", file=sys.stderr)
        return 1
    print(f"freshmart schema applied to schema {args.schema}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
