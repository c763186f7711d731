"""FreshMart: the demo domain searchsync indexes, kept as triples in PostgreSQL.

Modules: :mod:`.model` (subject ids, predicates), :mod:`.schema` (DDL and the
``orders_search_source_mv`` view, from ``devstack/sql``), :mod:`.seed` (bulk
data), :mod:`.changes` (what a change writes; pure), :mod:`.load` (writing a
stream of realistic single-transaction changes), :mod:`.names` (word lists).
"""
