# Redis 7 from Debian packages: own directory under $STATE, 127.0.0.1 only,
# AOF on with appendfsync everysec (the durability the design assumes).

redis_install() {
  apt_install redis-server redis-tools
}

redis_up() {
  local dir="$STATE/redis" port
  mkdir -p "$dir"
  port=$(env_get REDIS_PORT)
  if [ -n "$port" ] && pid_alive "$dir/redis.pid" && redis-cli -p "$port" ping >/dev/null 2>&1; then
    log "redis already running on 127.0.0.1:$port (log: $dir/redis.log)"
  else
    port=$(pick_port "${REDIS_PORT_PREFERRED:-6379}")
    local t0; t0=$(now)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync everysec \
      --save "" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      || die "redis did not start, see $dir/redis.log"
    wait_until 30 redis redis-cli -p "$port" ping >/dev/null
    log "redis ready in $(since "$t0")s on 127.0.0.1:$port (log: $dir/redis.log)"
  fi
  env_set REDIS_PORT "$port"
  env_set REDIS_URL "redis://127.0.0.1:$port/0"
}

redis_down() {
  local dir="$STATE/redis" port
  port=$(env_get REDIS_PORT)
  if pid_alive "$dir/redis.pid"; then
    # SHUTDOWN fsyncs the AOF; stop_pidfile then waits for the exit (or kills)
    redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
    stop_pidfile "$dir/redis.pid" redis
    log "redis stopped"
  fi
}
