-- Secondary indexes of triples, in their own file so the seeder can build them after
-- a bulk COPY into an empty table (faster than maintaining them row by row).
--
-- (subject_id, predicate): every per-entity lookup of the view and the writers'
-- delete of one (subject, predicate). Covering object_value and updated_at lets
-- the view's per-subject pivots run as index-only scans.
CREATE INDEX IF NOT EXISTS triples_subject_predicate_idx
    ON triples (subject_id, predicate) INCLUDE (object_value, updated_at);
-- (predicate, object_value): reverse references (the lines and tasks of an order,
-- the orders of a customer or store); subject_id covered for index-only scans.
CREATE INDEX IF NOT EXISTS triples_predicate_object_idx
    ON triples (predicate, object_value) INCLUDE (subject_id);
