-- Materialize objects searchsync reads, run by compose/materialize/init.sh (mz-init)
-- with psql after it enabled enable_logical_compaction_window as mz_system.
-- Clusters: `ingest` replicates PostgreSQL, `compute` maintains the materialized view,
-- `serving` runs the producer's SUBSCRIBE (MZ_CLUSTER=serving) and one-off reads.
-- Every statement can run again (mz-init runs at every `docker compose up`).
\getenv pg_password POSTGRES_PASSWORD
\getenv cluster_size MZ_CLUSTER_SIZE

-- Materialize has no CREATE CLUSTER IF NOT EXISTS (its parser would read IF as the
-- cluster's name): each cluster missing from the catalog is created by \gexec.
SELECT 'CREATE CLUSTER ' || wanted.name || ' (SIZE = ''' || :'cluster_size' || ''')'
FROM (VALUES ('ingest'), ('compute'), ('serving')) AS wanted (name)
WHERE wanted.name NOT IN (SELECT name FROM mz_catalog.mz_clusters)
\gexec

CREATE SECRET IF NOT EXISTS pg_password AS :'pg_password';
-- a POSTGRES_PASSWORD changed in compose/.env reaches Materialize at the next start
ALTER SECRET pg_password AS :'pg_password';
CREATE CONNECTION IF NOT EXISTS pg_freshmart TO POSTGRES (
    HOST 'postgres', PORT 5432, USER 'postgres', PASSWORD SECRET pg_password, DATABASE 'freshmart'
);
CREATE SOURCE IF NOT EXISTS freshmart IN CLUSTER ingest
    FROM POSTGRES CONNECTION pg_freshmart (PUBLICATION 'mz_source')
    FOR TABLES (public.triples AS triples);

-- devstack's view as a materialized view on `compute` WITH (RETAIN HISTORY FOR '1h')
-- (written by init.sh from view.sed). Materialize's "durable subscriptions": retain
-- history on the materialized view the SUBSCRIBE reads, not on an index. So a
-- restarted producer's SUBSCRIBE … AS OF <checkpoint - 1> is accepted for an hour
-- after the checkpoint, instead of falling back to a snapshot and a reconcile.
\i /tmp/view.sql
-- a view created before it was given RETAIN HISTORY gets it now
ALTER MATERIALIZED VIEW orders_search_source_mv SET (RETAIN HISTORY FOR '1h');
-- the second view (devstack/sql/025_stores_search_source_mv.sql), the same way
\i /tmp/stores_view.sql
ALTER MATERIALIZED VIEW stores_search_source_mv SET (RETAIN HISTORY FOR '1h');
-- No index on the view in `serving`: a SUBSCRIBE there would read the index, which
-- keeps no history (its AS OF would be refused). Earlier versions of this file made one.
DROP INDEX IF EXISTS orders_search_source_mv_idx;
