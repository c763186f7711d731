# devstack/sql/030_orders_search_source_mv.sql (and 025_stores_search_source_mv.sql, the
# second view, by the second line) → the compose deployment's views: the
# same query, as a materialized view maintained on the `compute` cluster that keeps an
# hour of history, so a restarted producer resumes with SUBSCRIBE … AS OF checkpoint − 1
# (Materialize's "durable subscriptions"). Only each view's first line changes; the test
# tests/unit/compose/test_materialize_init.py runs this script and checks that.
s/^CREATE OR REPLACE VIEW orders_search_source_mv AS$/CREATE MATERIALIZED VIEW IF NOT EXISTS orders_search_source_mv IN CLUSTER compute WITH (RETAIN HISTORY FOR '1h') AS/
s/^CREATE OR REPLACE VIEW stores_search_source_mv AS$/CREATE MATERIALIZED VIEW IF NOT EXISTS stores_search_source_mv IN CLUSTER compute WITH (RETAIN HISTORY FOR '1h') AS/
