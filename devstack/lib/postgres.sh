# PostgreSQL 15 from Debian packages: own data directory under $STATE, 127.0.0.1 only,
# wal_level=logical, database freshmart. PostgreSQL refuses to run as root, so the
# server runs as the `postgres` user created by the Debian package.

PG_BIN=""
pg_find_bin() {
  PG_BIN=$(dirname "$(dpkg -L postgresql-15 2>/dev/null | grep 'bin/initdb$' | head -1)")
  [ -x "$PG_BIN/pg_ctl" ] || die "PostgreSQL 15 binaries not found (is postgresql-15 installed?)"
}

pg_as() {  # run a PostgreSQL binary as the postgres user when we are root
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_install() {
  apt_install postgresql-15 postgresql-client-15
  pg_find_bin
}

postgres_up() {
  pg_find_bin
  local dir="$STATE/postgres" port
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
  port=$(env_get PGPORT)
  if [ -n "$port" ] && pg_as "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    log "postgres already running on 127.0.0.1:$port (log: $dir/postgres.log)"
  else
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      pg_as "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || die "initdb failed, see $dir/initdb.log"
    fi
    port=$(pick_port "${PGPORT_PREFERRED:-5432}")
    local t0; t0=$(now)
    pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 -o \
      "-p $port -k $dir -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_connections=200 -c fsync=on -c shared_buffers=256MB" \
      start >/dev/null || die "postgres did not start, see $dir/postgres.log"
    wait_until 60 postgres pg_as "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$port" >/dev/null
    log "postgres ready in $(since "$t0")s on 127.0.0.1:$port (log: $dir/postgres.log)"
  fi
  psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='freshmart'" | grep -q 1 \
    || psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE freshmart" >/dev/null
  env_set PGHOST 127.0.0.1
  env_set PGPORT "$port"
  env_set PGUSER postgres
  env_set PGDATABASE freshmart
  env_set DATABASE_URL "postgresql://postgres@127.0.0.1:$port/freshmart"
}

postgres_down() {
  pg_find_bin
  local dir="$STATE/postgres"
  if [ -f "$dir/data/postmaster.pid" ] && pg_as "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null && log "postgres stopped"
  fi
}
