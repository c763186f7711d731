# PostgreSQL 15 from Debian packages: own data directory under $STATE, 127.0.0.1 only,
# wal_level=logical, database freshmart. PostgreSQL refuses to run as root, so the
# server runs as the `postgres` user created by the Debian package.
#
# Opt-in TLS (issue 13): POSTGRES_TLS_CERT and POSTGRES_TLS_KEY (PEM files, both or
# neither) start the server with ssl=on and an hba file that admits TCP clients over TLS
# only (hostssl; the Unix socket stays `local trust`), as a managed PostgreSQL that
# Materialize's `SSL MODE verify-full` source connection reads. POSTGRES_TLS_CA, the CA
# that issued the certificate, makes the recorded DATABASE_URL `sslmode=verify-full`
# against a copy of it (the emulator's MZEMU_PG_DSN comes from there); without it
# DATABASE_URL says `sslmode=require`. The files are copied under $STATE/postgres/tls,
# owned by the server's user, mode 0600, as PostgreSQL demands of a key. Unset: plain
# text, as before.

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

# _postgres_tls_files DIR: copy the TLS files into DIR/tls and write DIR/pg_hba_tls.conf;
# prints the server options that use them
_postgres_tls_files() {
  local dir=$1 tls="$1/tls" owner=() f
  [ -n "${POSTGRES_TLS_CERT:-}" ] && [ -n "${POSTGRES_TLS_KEY:-}" ] \
    || die "POSTGRES_TLS_CERT and POSTGRES_TLS_KEY: expected both or neither"
  for f in "$POSTGRES_TLS_CERT" "$POSTGRES_TLS_KEY" ${POSTGRES_TLS_CA:+"$POSTGRES_TLS_CA"}; do
    [ -r "$f" ] || die "PostgreSQL TLS file $f is not readable (POSTGRES_TLS_CERT/KEY/CA)"
  done
  [ "$(id -u)" -eq 0 ] && owner=(-o postgres -g postgres)
  install -d -m 0700 "${owner[@]}" "$tls"
  install -m 0600 "${owner[@]}" "$POSTGRES_TLS_CERT" "$tls/server.pem"
  install -m 0600 "${owner[@]}" "$POSTGRES_TLS_KEY" "$tls/server.key"
  # the client's copy of the CA: readable by whoever reads DATABASE_URL
  [ -n "${POSTGRES_TLS_CA:-}" ] && install -m 0644 "$POSTGRES_TLS_CA" "$dir/ca.pem"
  printf '%s\n' "local all all trust" "local replication all trust" \
    "hostssl all all 127.0.0.1/32 trust" "hostssl replication all 127.0.0.1/32 trust" \
    > "$dir/pg_hba_tls.conf"
  printf ' -c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s -c hba_file=%s' \
    "$tls/server.pem" "$tls/server.key" "$dir/pg_hba_tls.conf"
}

postgres_up() {
  pg_find_bin
  local dir="$STATE/postgres" port tls_opts="" url_query=""
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
  port=$(env_get PGPORT)
  if [ -n "${POSTGRES_TLS_CERT:-}${POSTGRES_TLS_KEY:-}" ]; then
    url_query="?sslmode=require"
    [ -n "${POSTGRES_TLS_CA:-}" ] && url_query="?sslmode=verify-full&sslrootcert=$dir/ca.pem"
  fi
  if [ -n "$port" ] && pg_as "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    # a running server keeps the options it started with: say so rather than record a TLS URL
    if [ -n "$url_query" ] && [ "$(pg_as psql -h "$dir" -p "$port" -U postgres -d postgres -tAc 'SHOW ssl')" != on ]; then
      die "postgres is running on 127.0.0.1:$port without TLS: stop it (devstack/down postgres) to start it with POSTGRES_TLS_CERT"
    fi
    log "postgres already running on 127.0.0.1:$port (log: $dir/postgres.log)"
  else
    if [ -n "$url_query" ]; then tls_opts=$(_postgres_tls_files "$dir") || exit 1; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      pg_as "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || die "initdb failed, see $dir/initdb.log"
    fi
    port=$(pick_port "${PGPORT_PREFERRED:-5432}")
    local t0; t0=$(now)
    pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 -o \
      "-p $port -k $dir -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_connections=200 -c fsync=on -c shared_buffers=256MB$tls_opts" \
      start >/dev/null || die "postgres did not start, see $dir/postgres.log"
    wait_until 60 postgres pg_as "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$port" >/dev/null
    log "postgres ready in $(since "$t0")s on 127.0.0.1:$port${tls_opts:+ (TLS only)} (log: $dir/postgres.log)"
  fi
  psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='freshmart'" | grep -q 1 \
    || psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE freshmart" >/dev/null
  env_set PGHOST 127.0.0.1
  env_set PGPORT "$port"
  env_set PGUSER postgres
  env_set PGDATABASE freshmart
  env_set DATABASE_URL "postgresql://postgres@127.0.0.1:$port/freshmart$url_query"
}

postgres_down() {
  pg_find_bin
  local dir="$STATE/postgres"
  if [ -f "$dir/data/postmaster.pid" ] && pg_as "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null && log "postgres stopped"
  fi
}
