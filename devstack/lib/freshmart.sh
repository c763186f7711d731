# The FreshMart data model in the freshmart database: the triples table, its
# indexes and the orders_search_source_mv view (devstack/sql/, applied by
# devstack/freshmart/schema.py). Needs python and postgres up first; data comes
# from devstack/seed, not from here.

freshmart_install() { :; }  # nothing beyond python and postgres

freshmart_up() {
  local t0; t0=$(now)
  # The view's full scan is a long nested loop of cheap index lookups: JIT
  # compilation costs more (~0.8 s) than it saves, so it is off for this database.
  (set +u; source "$ENV_FILE"
   psql -qX -v ON_ERROR_STOP=1 -d "$PGDATABASE" -c "ALTER DATABASE $PGDATABASE SET jit = off" >/dev/null \
     && cd "$ROOT" && .venv/bin/python -m devstack.freshmart.schema --schema public >/dev/null) \
    || die "freshmart schema could not be applied"
  log "freshmart schema ready in $(since "$t0")s (seed data: devstack/seed --orders N)"
}

freshmart_down() { :; }  # the data lives in postgres; devstack/down stops that
