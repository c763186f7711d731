-- FreshMart facts, one row per (subject, predicate) value. Schema-agnostic: applied
-- under whatever search_path the caller set (devstack/freshmart/schema.py).
-- Writers update a value by deleting the (subject_id, predicate) row and inserting
-- the new one in the same transaction, so updated_at is the time of the last write.
--
-- The text columns compare bytewise (COLLATE "C"): they hold identifiers and
-- values, not prose to sort for people, and every index probe then compares with
-- memcmp instead of the locale's strcoll (~15 % off the view's keyed lookup).
CREATE TABLE IF NOT EXISTS triples (
    id           bigserial   PRIMARY KEY,
    subject_id   text        COLLATE "C" NOT NULL,
    predicate    text        COLLATE "C" NOT NULL,
    object_value text        COLLATE "C",
    object_type  text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- A triples table created before the collation choice is converted in place (one
-- table rewrite, then never again); the view depending on it is recreated by
-- 030_orders_search_source_mv.sql.
DO $convert$
BEGIN
    IF EXISTS (
        SELECT FROM pg_attribute
        WHERE attrelid = 'triples'::regclass
          AND attname IN ('subject_id', 'predicate', 'object_value')
          AND attcollation <> 'pg_catalog."C"'::regcollation
    ) THEN
        DROP VIEW IF EXISTS orders_search_source_mv;
        ALTER TABLE triples
            ALTER COLUMN subject_id TYPE text COLLATE "C",
            ALTER COLUMN predicate TYPE text COLLATE "C",
            ALTER COLUMN object_value TYPE text COLLATE "C";
    END IF;
END
$convert$;
