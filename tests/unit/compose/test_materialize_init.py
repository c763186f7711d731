"""compose/materialize/: the view is devstack's SQL, init.sql is Materialize's syntax as
its docs give it, and SUBSCRIBE runs where the view's history is kept.

No services. The view is generated with the real sed from the devstack's file, as the
mz-init service generates it; init.sql is split the way psql splits it (backslash
commands end at the line's end, SQL at a top-level semicolon or ``\\gexec``) and each
SQL statement is lexed with the emulator's Materialize lexer (devstack.mzemu). The
emulator runs none of these statements (clusters, secrets, connections, sources and
materialized views are Materialize's alone); the view's query, the one part it can
run, runs through it in tests/integration/test_compose_view.py.
"""

from __future__ import annotations

import difflib
import re
import subprocess
from pathlib import Path

from devstack.mzemu.statements import tokenize
from tests.unit.compose.deployment import COMPOSE, ROOT, compose_file

MATERIALIZE = COMPOSE / "materialize"
DEVSTACK_VIEW = ROOT / "devstack" / "sql" / "030_orders_search_source_mv.sql"
STORES_VIEW = ROOT / "devstack" / "sql" / "025_stores_search_source_mv.sql"
HEADER = (
    "CREATE MATERIALIZED VIEW IF NOT EXISTS orders_search_source_mv IN CLUSTER compute "
    "WITH (RETAIN HISTORY FOR '1h') AS"
)


def generated_view(source: Path = DEVSTACK_VIEW) -> str:
    """What init.sh writes to /tmp/view.sql: ``sed -f view.sed`` of the devstack view."""
    return subprocess.run(
        ["sed", "-f", str(MATERIALIZE / "view.sed"), str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout


def psql_script(text: str) -> list[tuple[str, str]]:
    """``(kind, text)`` in order: ``meta`` for a backslash command (its line), ``sql``
    for a statement ending at a top-level ``;``, ``gexec`` for one ended by ``\\gexec``."""
    items: list[tuple[str, str]] = []
    buffer = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("\\"):
            if stripped == "\\gexec":
                items.append(("gexec", buffer.strip()))
                buffer = ""
            else:
                items.append(("meta", stripped))
            continue
        if stripped.startswith("--") or not stripped:
            continue
        buffer += line + "\n"
        if stripped.endswith(";"):
            items.append(("sql", buffer.strip()))
            buffer = ""
    assert not buffer.strip(), f"unterminated statement: {buffer!r}"
    return items


def init_sql() -> list[tuple[str, str]]:
    return psql_script((MATERIALIZE / "init.sql").read_text())


def test_the_compose_view_is_the_devstack_view_with_one_line_changed() -> None:
    devstack = DEVSTACK_VIEW.read_text().splitlines()
    generated = generated_view().splitlines()
    changed = [
        line
        for line in difflib.unified_diff(devstack, generated, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == ["-CREATE OR REPLACE VIEW orders_search_source_mv AS", f"+{HEADER}"]


def test_the_sed_script_fails_loudly_when_the_devstack_header_changes(tmp_path: Path) -> None:
    """A renamed or reworded devstack view would leave the plain view in the compose
    file; the header check above is what catches it."""
    moved = tmp_path / "view.sql"
    moved.write_text(DEVSTACK_VIEW.read_text().replace("OR REPLACE VIEW", "VIEW"))
    assert HEADER not in generated_view(moved)


def test_init_sh_generates_the_views_from_the_files_compose_mounts() -> None:
    mz_init = compose_file()["services"]["mz-init"]
    mounts = dict(str(v).rsplit(":", 1)[0].split(":", 1) for v in mz_init["volumes"])
    views = {(COMPOSE / s).resolve(): t for s, t in mounts.items() if t.startswith("/view/")}
    assert set(views) == {DEVSTACK_VIEW, STORES_VIEW}
    script = (MATERIALIZE / "init.sh").read_text()
    assert f"sed -f /init/view.sed {views[DEVSTACK_VIEW]} > /tmp/view.sql" in script
    assert f"sed -f /init/view.sed {views[STORES_VIEW]} > /tmp/stores_view.sql" in script
    assert mounts["./materialize"] == "/init"
    assert mz_init["entrypoint"] == ["bash", "/init/init.sh"]
    assert ("meta", "\\i /tmp/view.sql") in init_sql()
    assert ("meta", "\\i /tmp/stores_view.sql") in init_sql()


def test_the_compose_stores_view_is_the_devstack_view_with_one_line_changed() -> None:
    devstack = STORES_VIEW.read_text().splitlines()
    generated = generated_view(STORES_VIEW).splitlines()
    changed = [
        line
        for line in difflib.unified_diff(devstack, generated, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    header = HEADER.replace("orders_search_source_mv", "stores_search_source_mv")
    assert changed == ["-CREATE OR REPLACE VIEW stores_search_source_mv AS", f"+{header}"]
    assert (
        "sql",
        "ALTER MATERIALIZED VIEW stores_search_source_mv SET (RETAIN HISTORY FOR '1h');",
    ) in init_sql()


def test_retain_history_is_enabled_as_mz_system_before_init_sql() -> None:
    script = (MATERIALIZE / "init.sh").read_text()
    enable = script.index("-U mz_system")
    assert "-p 6877" in script[enable - 40 : enable + 40]  # the internal SQL port
    assert "ALTER SYSTEM SET enable_logical_compaction_window = true" in script
    assert enable < script.index("-f /init/init.sql")
    assert "set -euo pipefail" in script  # a failed step stops mz-init, and the services


def test_every_statement_lexes_as_materialize_sql() -> None:
    statements = [text for kind, text in init_sql() if kind in ("sql", "gexec")]
    assert len(statements) == 8
    for statement in statements:
        # psql replaces :'name' with a literal before sending; the lexer sees the result
        sent = re.sub(r":'(\w+)'", r"'\1-value'", statement)
        tokens = tokenize(sent)
        assert tokens, statement
        assert sent.rstrip().endswith(";") == (tokens[-1].text == ";")


def test_clusters_are_created_only_when_the_catalog_lacks_them() -> None:
    for _, text in init_sql():  # statements, not the comments that explain why
        assert not re.search(r"CREATE\s+CLUSTER\s+IF\s+NOT\s+EXISTS", text, re.IGNORECASE)
    [guard] = [text for kind, text in init_sql() if kind == "gexec"]
    assert "mz_catalog.mz_clusters" in guard
    created = set(re.findall(r"\('(\w+)'\)", guard))
    assert created == {"ingest", "compute", "serving"}
    assert compose_file()["x-searchsync-env"]["MZ_CLUSTER"] in created


def test_subscribe_runs_where_the_views_history_is_kept() -> None:
    """Durable subscriptions: history is retained on the materialized view; an index
    keeps none, and a SUBSCRIBE on a cluster holding one reads it (indexes are local to
    their cluster), so no index on the view may exist where the producer subscribes."""
    statements = [text for kind, text in init_sql() if kind == "sql"]
    assert not any(re.match(r"CREATE\s+(DEFAULT\s+)?INDEX", s, re.IGNORECASE) for s in statements)
    assert "DROP INDEX IF EXISTS orders_search_source_mv_idx;" in statements
    assert "ALTER MATERIALIZED VIEW orders_search_source_mv SET (RETAIN HISTORY FOR '1h');" in (
        statements
    )
    cluster = compose_file()["x-searchsync-env"]["MZ_CLUSTER"]
    assert f"IN CLUSTER {cluster} " not in HEADER  # maintained elsewhere, read from storage


def test_secrets_reach_psql_from_the_environment_not_the_file() -> None:
    metas = [text for kind, text in init_sql() if kind == "meta"]
    assert "\\getenv pg_password POSTGRES_PASSWORD" in metas
    statements = " ".join(text for kind, text in init_sql() if kind == "sql")
    assert "CREATE SECRET IF NOT EXISTS pg_password AS :'pg_password';" in statements
    assert "ALTER SECRET pg_password AS :'pg_password';" in statements
    environment = compose_file()["services"]["mz-init"]["environment"]
    assert environment["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_make_env_writes_every_required_secret_once(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    script = str(COMPOSE / "make-env.sh")
    subprocess.run([script, str(target)], check=True, capture_output=True, timeout=30)
    assert target.stat().st_mode & 0o777 == 0o600
    values = dict(
        line.split("=", 1) for line in target.read_text().splitlines() if not line.startswith("#")
    )
    example = (COMPOSE / ".env.example").read_text()
    assert set(values) == set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert len(set(values.values())) == len(values)
    for value in values.values():
        assert len(value) >= 32 and re.fullmatch(r"[A-Za-z0-9-]+", value)  # URL-safe
    for name in ("INITIAL_ADMIN", "SEARCHSYNC", "OPERATOR"):  # OpenSearch's strength rule
        password = values[f"OPENSEARCH_{name}_PASSWORD"]
        assert all(re.search(p, password) for p in ("[A-Z]", "[a-z]", "[0-9]", "[^A-Za-z0-9]"))
    again = subprocess.run(
        [script, str(target)], check=False, capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 1 and "exists" in again.stderr  # never overwrites


def test_make_env_adds_only_the_secrets_an_older_env_lacks(tmp_path: Path) -> None:
    """A compose/.env from before the least-privilege users: its values stay, the new
    users' passwords are added (compose refuses to start without them)."""
    target = tmp_path / ".env"
    old = "# an older one\nPOSTGRES_PASSWORD=pg\nREDIS_PASSWORD=r\nGRAFANA_ADMIN_PASSWORD=g"
    target.write_text(old)  # no newline at the end: the next line must not join it
    target.chmod(0o600)
    ran = subprocess.run(
        [str(COMPOSE / "make-env.sh"), str(target)],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    text = target.read_text()
    assert text.startswith(old + "\n")
    values = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    assert values["POSTGRES_PASSWORD"] == "pg" and values["REDIS_PASSWORD"] == "r"
    example = (COMPOSE / ".env.example").read_text()
    assert set(values) == set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert "REDIS_SEARCHSYNC_PASSWORD" in ran.stdout
    assert not any(value in ran.stdout for value in values.values() if len(value) > 8)
