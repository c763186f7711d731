-- Materialize objects searchsync subscribes to (run once by the mz-init service).
-- Clusters: `ingest` replicates PostgreSQL, `compute` maintains the view, `serving`
-- holds the index that SUBSCRIBE reads (MZ_CLUSTER=serving, the runbook's default).
CREATE CLUSTER IF NOT EXISTS ingest (SIZE = '25cc');
CREATE CLUSTER IF NOT EXISTS compute (SIZE = '25cc');
CREATE CLUSTER IF NOT EXISTS serving (SIZE = '25cc');

CREATE SECRET IF NOT EXISTS pg_password AS 'postgres';
CREATE CONNECTION IF NOT EXISTS pg_freshmart TO POSTGRES (
    HOST 'postgres', PORT 5432, USER 'postgres', PASSWORD SECRET pg_password, DATABASE 'freshmart'
);
CREATE SOURCE IF NOT EXISTS freshmart IN CLUSTER ingest
    FROM POSTGRES CONNECTION pg_freshmart (PUBLICATION 'mz_source')
    FOR TABLES (public.triples AS triples);

-- The same view as devstack/sql/030_orders_search_source_mv.sql, maintained
-- incrementally. RETAIN HISTORY lets a restarted producer resume with
-- AS OF <checkpoint - 1> instead of falling back to a reconciling snapshot.
SET CLUSTER = compute;
\i /tmp/view.sql
ALTER MATERIALIZED VIEW orders_search_source_mv SET (RETAIN HISTORY FOR '1h');
CREATE INDEX IF NOT EXISTS orders_search_source_mv_idx IN CLUSTER serving
    ON orders_search_source_mv (order_id);
