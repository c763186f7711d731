-- PostgreSQL side of Materialize's CDC source: the FreshMart triples table and a
-- publication Materialize replicates from. The schema is the devstack's own.
\i /docker-entrypoint-initdb.d/sql/010_triples.sql
\i /docker-entrypoint-initdb.d/sql/020_triples_indexes.sql
ALTER TABLE triples REPLICA IDENTITY FULL;
CREATE PUBLICATION mz_source FOR TABLE triples;
