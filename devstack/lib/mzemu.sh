# The Materialize SUBSCRIBE emulator (python -m devstack.mzemu) over the devstack
# PostgreSQL: serves schema ${MZEMU_PG_SCHEMA:-public} (the FreshMart view) on
# 127.0.0.1:6875 as materialize/materialize. Pid file and log under $STATE/mzemu.
# MZEMU_* variables set by the caller (tick, retention, ...) are passed through.

mzemu_install() {
  [ -x "$ROOT/.venv/bin/python" ] || die "mzemu needs the project virtualenv (devstack/up python)"
  "$ROOT/.venv/bin/python" -c 'import devstack.mzemu.server, psycopg' 2>/dev/null \
    || die "the virtualenv cannot import devstack.mzemu (devstack/up python)"
}

# _mzemu_answers PORT: the emulator answers SELECT 1 on PORT
_mzemu_answers() {
  [ "$(PGPASSWORD=materialize PGCONNECT_TIMEOUT=2 psql -h 127.0.0.1 -p "$1" -U materialize \
    -d materialize -tAc 'SELECT 1' 2>/dev/null)" = 1 ]
}

mzemu_up() {
  local dir="$STATE/mzemu" port pidfile logfile
  mkdir -p "$dir"
  pidfile="$dir/mzemu.pid"; logfile="$dir/mzemu.log"
  port=$(env_get MZ_PORT)
  if [ -n "$port" ] && pid_alive "$pidfile" && _mzemu_answers "$port"; then
    log "mzemu already running on 127.0.0.1:$port (log: $logfile)"
  else
    stop_pidfile "$pidfile" mzemu  # a stale or unresponsive one
    port=$(pick_port "${MZ_PORT_PREFERRED:-6875}")
    local t0 dsn; t0=$(now)
    dsn=${MZEMU_PG_DSN:-$(env_get DATABASE_URL)}
    [ -n "$dsn" ] || die "mzemu needs PostgreSQL (devstack/up postgres) or MZEMU_PG_DSN"
    MZEMU_HOST=127.0.0.1 MZEMU_PORT="$port" MZEMU_PG_DSN="$dsn" \
      setsid nohup "$ROOT/.venv/bin/python" -m devstack.mzemu >>"$logfile" 2>&1 </dev/null &
    echo $! > "$pidfile"
    local tries=0
    until _mzemu_answers "$port"; do
      pid_alive "$pidfile" || die "mzemu exited during startup, see $logfile: $(tail -3 "$logfile")"
      tries=$((tries + 1))
      [ "$tries" -le 300 ] || die "mzemu did not answer within 60s, see $logfile"
      sleep 0.2
    done
    log "mzemu ready in $(since "$t0")s on 127.0.0.1:$port (log: $logfile)"
  fi
  env_set MZ_HOST 127.0.0.1
  env_set MZ_PORT "$port"
  env_set MZ_USER materialize
  env_set MZ_PASSWORD materialize
  env_set MZ_DATABASE materialize
  env_set MZ_SSLMODE disable  # the emulator speaks plain text (searchsync defaults to verify-full)
}

mzemu_down() {
  stop_pidfile "$STATE/mzemu/mzemu.pid" mzemu
}
