#!/usr/bin/env bash
# The mz-init service (compose/docker-compose.yml): sets Materialize up for searchsync,
# once per start of the deployment; every step can run again.
#   1. RETAIN HISTORY is behind enable_logical_compaction_window (private preview in
#      Materialize's docs); only mz_system, on the internal SQL port 6877, may set it.
#   2. The views: devstack's SQL (devstack/sql/030_orders_search_source_mv.sql and
#      025_stores_search_source_mv.sql, mounted at /view) turned into materialized views
#      by view.sed, so both run one query.
#   3. init.sql: clusters, secret, connection, source, the view, its history.
set -euo pipefail
sed -f /init/view.sed /view/030_orders_search_source_mv.sql > /tmp/view.sql
sed -f /init/view.sed /view/025_stores_search_source_mv.sql > /tmp/stores_view.sql
psql -v ON_ERROR_STOP=1 -h mz -p 6877 -U mz_system -d materialize \
  -c "ALTER SYSTEM SET enable_logical_compaction_window = true"
# POSTGRES_PASSWORD and MZ_CLUSTER_SIZE reach init.sql through \getenv (psql 15+, as in
# the postgres:15 image mz-init runs), not arguments others could read
exec psql -v ON_ERROR_STOP=1 -h mz -p 6875 -U materialize -d materialize -f /init/init.sql
