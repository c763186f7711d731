"""devstack/sql + devstack/freshmart/schema.py: static properties of the DDL files."""

from __future__ import annotations

import re

from devstack.freshmart.schema import INDEX_FILE, SECONDARY_INDEXES, SQL_DIR, schema_files

RUNBOOK_COLUMNS = [
    "order_id",
    "order_number",
    "order_status",
    "store_id",
    "customer_id",
    "delivery_window_start",
    "delivery_window_end",
    "order_total_amount",
    "customer_name",
    "customer_email",
    "customer_address",
    "store_name",
    "store_zone",
    "store_address",
    "assigned_courier_id",
    "delivery_task_status",
    "delivery_eta",
    "effective_updated_at",
]


def test_files_apply_table_then_indexes_then_view() -> None:
    names = [p.name for p in schema_files()]
    assert names == sorted(names)
    assert names[0].endswith("_triples.sql") and INDEX_FILE in names
    assert names[-1].endswith("_orders_search_source_mv.sql")


def test_index_names_match_the_index_file() -> None:
    text = (SQL_DIR / INDEX_FILE).read_text()
    assert re.findall(r"CREATE INDEX IF NOT EXISTS (\w+)", text) == list(SECONDARY_INDEXES)


def test_sql_names_no_schema_and_is_idempotent() -> None:
    for path in schema_files():
        text = re.sub(r"--[^\n]*", "", path.read_text())
        assert not re.search(r"\b(public|pg_temp)\s*\.", text), path
        # a DO block is a guarded one-time migration: its body is checked by the
        # integration test that applies the schema twice
        text = re.sub(r"DO (\$\w*\$).*?\1;", "", text, flags=re.S)
        for statement in filter(str.strip, text.split(";")):
            head = " ".join(statement.split()[:6]).upper()
            assert "IF NOT EXISTS" in head or "OR REPLACE" in head, (path, head)


def test_view_selects_the_runbook_columns_in_order() -> None:
    text = (SQL_DIR / "030_orders_search_source_mv.sql").read_text()
    select_list = text.split("CREATE OR REPLACE VIEW orders_search_source_mv AS", 1)[1]
    select_list = select_list.split("\nFROM ", 1)[0]
    aliases = [
        m.group(2) or m.group(1)
        for m in re.finditer(r"^\s+(?:\S.*?\.(\w+)|.*?)(?:\s+AS\s+(\w+))?,?$", select_list, re.M)
    ]
    assert [a for a in aliases if a] == RUNBOOK_COLUMNS
