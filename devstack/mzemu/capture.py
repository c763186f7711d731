"""Change capture on the FreshMart triples: which view keys did a transaction touch?

Statement-level AFTER triggers with transition tables map every changed triple to
the ``order_id`` keys of ``orders_search_source_mv`` it can affect, and append them
to ``mzemu_touched`` in the served schema. The mapping follows the subject-id
convention of ``devstack/freshmart/model.py`` (entity kind before the colon):

* ``order:…``      → the order itself (as is any subject with an ``order_number``
  triple: the view's anchor, whatever the subject is called)
* ``orderline:…``  → the order its ``line_of_order`` triple names
* ``task:…``       → the order its ``task_of_order`` triple names
* ``customer:…``   → every order ``placed_by`` that customer
* ``store:…``      → every order whose ``order_store`` is that store
* ``courier:…``    → the orders of the tasks ``assigned_to`` that courier

Reference triples are looked up both in the transition tables (a deleted line's
``line_of_order`` is only there) and in the table (an edited quantity keeps its
line's reference). A bulk statement (more than BULK_THRESHOLD triples) appends
a full-resync marker instead. Each firing also appends one NULL row, a "something changed"
marker that makes re-evaluated ``SUBSCRIBE (SELECT …)`` queries run again; TRUNCATE
appends a full-resync marker. Pure module: SQL text only.
"""

from __future__ import annotations

__all__ = [
    "BULK_THRESHOLD",
    "LOG_TABLE",
    "capture_install_sql",
    "capture_uninstall_sql",
    "quote_ident",
]

LOG_TABLE = "mzemu_touched"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_MAP_KEYS = """
    WITH changed AS ({changed}),
    kinds AS (
        SELECT subject_id, predicate, object_value, split_part(subject_id, ':', 1) AS kind
        FROM changed
    )
    INSERT INTO {log} (order_id)
    SELECT k FROM (
        SELECT c.subject_id AS k FROM kinds c
        WHERE c.kind = 'order' OR c.predicate = 'order_number'
        UNION
        SELECT c.object_value FROM kinds c
        WHERE c.predicate IN ('line_of_order', 'task_of_order')
        UNION
        SELECT t.object_value FROM kinds c
        JOIN {triples} t ON t.subject_id = c.subject_id AND t.predicate = 'line_of_order'
        WHERE c.kind = 'orderline'
        UNION
        SELECT t.object_value FROM kinds c
        JOIN {triples} t ON t.subject_id = c.subject_id AND t.predicate = 'task_of_order'
        WHERE c.kind = 'task'
        UNION
        SELECT t.subject_id FROM kinds c
        JOIN {triples} t ON t.predicate = 'placed_by' AND t.object_value = c.subject_id
        WHERE c.kind = 'customer'
        UNION
        SELECT t.subject_id FROM kinds c
        JOIN {triples} t ON t.predicate = 'order_store' AND t.object_value = c.subject_id
        WHERE c.kind = 'store'
        UNION
        SELECT o.object_value FROM kinds c
        JOIN {triples} a ON a.predicate = 'assigned_to' AND a.object_value = c.subject_id
        JOIN {triples} o ON o.subject_id = a.subject_id AND o.predicate = 'task_of_order'
        WHERE c.kind = 'courier'
    ) AS touched
    WHERE k IS NOT NULL
    UNION ALL
    SELECT NULL;
"""


# A statement changing more triples than this (a bulk load) asks for a full re-read
# of the view instead: mapping millions of triples one by one costs more than that.
BULK_THRESHOLD = 20_000


def _function(schema: str, name: str, changed: str, sample: str) -> str:
    s = quote_ident(schema)
    body = _MAP_KEYS.format(changed=changed, log=f"{s}.{LOG_TABLE}", triples=f"{s}.triples")
    return f"""
CREATE OR REPLACE FUNCTION {s}.{name}() RETURNS trigger LANGUAGE plpgsql AS $mzemu$
BEGIN
    IF EXISTS (SELECT 1 FROM {sample} OFFSET {BULK_THRESHOLD}) THEN
        INSERT INTO {s}.{LOG_TABLE} (order_id, full_resync) VALUES (NULL, true);
        RETURN NULL;
    END IF;
{body}
    RETURN NULL;
END
$mzemu$;
"""


def capture_install_sql(schema: str) -> str:
    """Idempotent DDL installing the log table, trigger functions and triggers.

    Run it in one transaction; it requires ``triples`` to exist in ``schema``.
    """
    s = quote_ident(schema)
    cols = "subject_id, predicate, object_value"
    parts = [
        f"CREATE TABLE IF NOT EXISTS {s}.{LOG_TABLE} ("
        "order_id text, full_resync boolean NOT NULL DEFAULT false)",
        _function(schema, "mzemu_capture_insert", f"SELECT {cols} FROM new_rows", "new_rows"),
        _function(
            schema,
            "mzemu_capture_update",
            f"SELECT {cols} FROM old_rows UNION ALL SELECT {cols} FROM new_rows",
            "new_rows",
        ),
        _function(schema, "mzemu_capture_delete", f"SELECT {cols} FROM old_rows", "old_rows"),
        f"""
CREATE OR REPLACE FUNCTION {s}.mzemu_capture_truncate() RETURNS trigger LANGUAGE plpgsql
AS $mzemu$
BEGIN
    INSERT INTO {s}.{LOG_TABLE} (order_id, full_resync) VALUES (NULL, true);
    RETURN NULL;
END
$mzemu$;
""",
        f"CREATE OR REPLACE TRIGGER mzemu_capture_insert AFTER INSERT ON {s}.triples "
        f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {s}.mzemu_capture_insert()",
        f"CREATE OR REPLACE TRIGGER mzemu_capture_update AFTER UPDATE ON {s}.triples "
        f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {s}.mzemu_capture_update()",
        f"CREATE OR REPLACE TRIGGER mzemu_capture_delete AFTER DELETE ON {s}.triples "
        f"REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {s}.mzemu_capture_delete()",
        f"CREATE OR REPLACE TRIGGER mzemu_capture_truncate AFTER TRUNCATE ON {s}.triples "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.mzemu_capture_truncate()",
    ]
    return ";\n".join(p.strip().rstrip(";") for p in parts) + ";\n"


def capture_uninstall_sql(schema: str) -> str:
    """DDL removing what :func:`capture_install_sql` created (for tests and teardown)."""
    s = quote_ident(schema)
    parts = [
        f"DROP TRIGGER IF EXISTS mzemu_capture_{op} ON {s}.triples"
        for op in ("insert", "update", "delete", "truncate")
    ]
    parts += [
        f"DROP FUNCTION IF EXISTS {s}.mzemu_capture_{op}()"
        for op in ("insert", "update", "delete", "truncate")
    ]
    parts.append(f"DROP TABLE IF EXISTS {s}.{LOG_TABLE}")
    return ";\n".join(parts) + ";\n"
