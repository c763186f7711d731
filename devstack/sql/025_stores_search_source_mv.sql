-- stores_search_source_mv: one row per store, the second view the devstack syncs (issue
-- 11 point 4: several views from one deployment), into its own index alias (`stores`),
-- keyed by store_id, from the same FreshMart triples as orders_search_source_mv.
--
-- Applied before 030 (files run in name order) so that the orders view stays the last
-- file, as the collation migration of 010 expects; it depends on triples alone.
--
-- The counts come from the (predicate, object_value) index: an order names its store
-- in an order_store triple, so counting a store's orders is one index range, and its
-- open orders one lookup of each of those orders' order_status. The Materialize
-- emulator keeps orders_search_source_mv incrementally and re-evaluates any other view
-- a SUBSCRIBE names on every tick where a triple changed (devstack/mzemu/engine.py), so
-- this view is kept small: twenty rows on the seeded devstack.
--
-- Choices:
--  * open_order_count counts orders neither delivered nor cancelled (an order without
--    a status counts as open: it has not finished).
--  * effective_updated_at is the latest updated_at among the store's own triples; a
--    change of an order moves the counts, not this time.
CREATE OR REPLACE VIEW stores_search_source_mv AS
SELECT
    anchor.subject_id                   AS store_id,
    s.store_name,
    s.store_zone,
    s.store_address,
    orders.order_count,
    orders.open_order_count,
    s.updated_at                        AS effective_updated_at
FROM triples AS anchor
CROSS JOIN LATERAL (
    SELECT
        max(t.object_value) FILTER (WHERE t.predicate = 'store_name')    AS store_name,
        max(t.object_value) FILTER (WHERE t.predicate = 'store_zone')    AS store_zone,
        max(t.object_value) FILTER (WHERE t.predicate = 'store_address') AS store_address,
        max(t.updated_at)                                                AS updated_at
    FROM triples AS t
    WHERE t.subject_id = anchor.subject_id
) AS s
CROSS JOIN LATERAL (
    SELECT
        count(*)                                                          AS order_count,
        count(*) FILTER (
            WHERE st.order_status IS NULL
               OR st.order_status NOT IN ('delivered', 'cancelled')
        )                                                                 AS open_order_count
    FROM triples AS ref
    LEFT JOIN LATERAL (
        SELECT max(t.object_value) AS order_status
        FROM triples AS t
        WHERE t.subject_id = ref.subject_id AND t.predicate = 'order_status'
    ) AS st ON true
    WHERE ref.predicate = 'order_store' AND ref.object_value = anchor.subject_id
) AS orders
WHERE anchor.predicate = 'store_name';
