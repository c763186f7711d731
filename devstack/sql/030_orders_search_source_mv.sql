-- orders_search_source_mv: one row per order (per order and task, should an order
-- have several tasks), the 18 columns of the runbook's "Materialize View Schema".
--
-- A plain view shaped so that a key predicate pushes down: the anchor is the
-- order's order_number triple, and every other entity is a LATERAL aggregate over
-- the (subject_id, predicate) or (predicate, object_value) index. So
--   SELECT * FROM orders_search_source_mv WHERE order_id = ANY($1)
-- touches only the listed orders' triples, and a full scan is a nested loop of
-- index-only lookups.
--
-- Choices:
--  * order_total_amount is 0.00 for an order without lines (an empty basket costs
--    nothing; the search document keeps a number).
--  * effective_updated_at is the latest updated_at among the triples of the order,
--    its customer, its store and its task; order lines are not included.
--  * max(...) FILTER picks a predicate's value; should a writer ever leave two rows
--    for one (subject, predicate), the view shows one of them rather than fail.
CREATE OR REPLACE VIEW orders_search_source_mv AS
SELECT
    anchor.subject_id                                  AS order_id,
    o.order_number,
    o.order_status,
    o.store_id,
    o.customer_id,
    o.delivery_window_start::timestamptz               AS delivery_window_start,
    o.delivery_window_end::timestamptz                 AS delivery_window_end,
    lines.order_total_amount,
    c.customer_name,
    c.customer_email,
    c.customer_address,
    s.store_name,
    s.store_zone,
    s.store_address,
    tk.assigned_courier_id,
    tk.delivery_task_status,
    tk.delivery_eta::timestamptz                       AS delivery_eta,
    GREATEST(o.updated_at, c.updated_at, s.updated_at, tk.updated_at) AS effective_updated_at
FROM triples AS anchor
CROSS JOIN LATERAL (
    SELECT
        max(t.object_value) FILTER (WHERE t.predicate = 'order_number')          AS order_number,
        max(t.object_value) FILTER (WHERE t.predicate = 'order_status')          AS order_status,
        max(t.object_value) FILTER (WHERE t.predicate = 'order_store')           AS store_id,
        max(t.object_value) FILTER (WHERE t.predicate = 'placed_by')             AS customer_id,
        max(t.object_value) FILTER (WHERE t.predicate = 'delivery_window_start') AS delivery_window_start,
        max(t.object_value) FILTER (WHERE t.predicate = 'delivery_window_end')   AS delivery_window_end,
        max(t.updated_at)                                                        AS updated_at
    FROM triples AS t
    WHERE t.subject_id = anchor.subject_id
) AS o
CROSS JOIN LATERAL (
    SELECT
        max(t.object_value) FILTER (WHERE t.predicate = 'customer_name')    AS customer_name,
        max(t.object_value) FILTER (WHERE t.predicate = 'customer_email')   AS customer_email,
        max(t.object_value) FILTER (WHERE t.predicate = 'customer_address') AS customer_address,
        max(t.updated_at)                                                   AS updated_at
    FROM triples AS t
    WHERE t.subject_id = o.customer_id
) AS c
CROSS JOIN LATERAL (
    SELECT
        max(t.object_value) FILTER (WHERE t.predicate = 'store_name')    AS store_name,
        max(t.object_value) FILTER (WHERE t.predicate = 'store_zone')    AS store_zone,
        max(t.object_value) FILTER (WHERE t.predicate = 'store_address') AS store_address,
        max(t.updated_at)                                                AS updated_at
    FROM triples AS t
    WHERE t.subject_id = o.store_id
) AS s
CROSS JOIN LATERAL (
    SELECT COALESCE(sum(l.quantity * l.unit_price), 0)::numeric(10, 2) AS order_total_amount
    FROM triples AS ref
    CROSS JOIN LATERAL (
        SELECT
            (max(t.object_value) FILTER (WHERE t.predicate = 'quantity'))::integer            AS quantity,
            (max(t.object_value) FILTER (WHERE t.predicate = 'order_line_unit_price'))::numeric AS unit_price
        FROM triples AS t
        WHERE t.subject_id = ref.subject_id
    ) AS l
    WHERE ref.predicate = 'line_of_order' AND ref.object_value = anchor.subject_id
) AS lines
LEFT JOIN LATERAL (
    SELECT task.*
    FROM triples AS ref
    CROSS JOIN LATERAL (
        SELECT
            max(t.object_value) FILTER (WHERE t.predicate = 'assigned_to') AS assigned_courier_id,
            max(t.object_value) FILTER (WHERE t.predicate = 'task_status') AS delivery_task_status,
            max(t.object_value) FILTER (WHERE t.predicate = 'eta')         AS delivery_eta,
            max(t.updated_at)                                              AS updated_at
        FROM triples AS t
        WHERE t.subject_id = ref.subject_id
    ) AS task
    WHERE ref.predicate = 'task_of_order' AND ref.object_value = anchor.subject_id
) AS tk ON true
WHERE anchor.predicate = 'order_number';
