# The cluster devstack (devstack/up --cluster, down --cluster, status --cluster): a Redis
# Cluster of 3 masters + 3 replicas and an OpenSearch cluster of 3 nodes, on loopback
# ports of their own, so it runs beside the single-node devstack. Sourced after
# devstack/lib/common.sh and opensearch.sh (the same Maven jars, Java and Launcher).
#
#   cluster_up       start what is not running, create the Redis Cluster once, wait for
#                    cluster_state:ok on every Redis node and for a green OpenSearch
#                    cluster of 3 nodes; record the addresses in $CLUSTER_ENV
#   cluster_down     stop the 9 processes (pid files under $CLUSTER_DIR); data stays
#   cluster_status   one line a process plus the two clusters' states; 0 when all is up
#
# Fixed ports (a cluster records its members' ports: nodes.conf, discovery.seed_hosts),
# so a port held by something else is an error, not a reason to move:
#   Redis      127.0.0.1:7001-7006 (cluster bus +10000), CLUSTER_REDIS_BASE_PORT
#   OpenSearch http 127.0.0.1:9201-9203, transport 9301-9303, CLUSTER_OS_HTTP_BASE_PORT,
#              CLUSTER_OS_TRANSPORT_BASE_PORT
# Knobs: CLUSTER_NODE_TIMEOUT_MS (Redis cluster-node-timeout, default 2000: a dead master
# is failed over in a few seconds), CLUSTER_OS_HEAP (default 512m a node),
# CLUSTER_START_TIMEOUT (default 300 s: three JVMs start at once on a 2-core box).
# PostgreSQL and the Materialize emulator are the single-node devstack's (one of each
# serves both); $CLUSTER_ENV repeats their lines from $ENV_FILE.

CLUSTER_DIR="$STATE/cluster"
CLUSTER_ENV="$CLUSTER_DIR/env"
CLUSTER_REDIS_BASE_PORT=${CLUSTER_REDIS_BASE_PORT:-7001}
CLUSTER_OS_HTTP_BASE_PORT=${CLUSTER_OS_HTTP_BASE_PORT:-9201}
CLUSTER_OS_TRANSPORT_BASE_PORT=${CLUSTER_OS_TRANSPORT_BASE_PORT:-9301}
CLUSTER_OS_NAME=searchsync-cluster
CLUSTER_REDIS_NODES=6
CLUSTER_OS_NODES=3

_cluster_redis_port() { echo $((CLUSTER_REDIS_BASE_PORT + $1 - 1)); }
_cluster_redis_dir() { echo "$CLUSTER_DIR/redis-$1"; }
_cluster_os_http_port() { echo $((CLUSTER_OS_HTTP_BASE_PORT + $1 - 1)); }
_cluster_os_transport_port() { echo $((CLUSTER_OS_TRANSPORT_BASE_PORT + $1 - 1)); }
_cluster_os_dir() { echo "$CLUSTER_DIR/opensearch-$1"; }

# _cluster_redis_info PORT FIELD: one field of CLUSTER INFO on that node
_cluster_redis_info() {
  redis-cli -p "$1" cluster info 2>/dev/null | tr -d '\r' | awk -F: -v f="$2" '$1 == f {print $2}'
}

# _cluster_redis_all_ok: every node answers and reports cluster_state:ok
_cluster_redis_all_ok() {
  local i
  for i in $(seq 1 $CLUSTER_REDIS_NODES); do
    [ "$(_cluster_redis_info "$(_cluster_redis_port "$i")" cluster_state)" = ok ] || return 1
  done
}

_cluster_redis_pings() { [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; }

cluster_redis_up() {
  local i port dir t0
  t0=$(now)
  for i in $(seq 1 $CLUSTER_REDIS_NODES); do
    port=$(_cluster_redis_port "$i"); dir=$(_cluster_redis_dir "$i")
    mkdir -p "$dir"
    if pid_alive "$dir/redis.pid" && _cluster_redis_pings "$port"; then
      continue
    fi
    rm -f "$dir/redis.pid"
    port_in_use "$port" && die "port $port is held by a process this devstack did not start (cluster Redis node $i)"
    # nodes.conf (in --dir) keeps the node's id, slots and peers across restarts: a node
    # restarted after a crash or a down rejoins the cluster by itself.
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
      --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout "${CLUSTER_NODE_TIMEOUT_MS:-2000}" \
      --appendonly yes --appendfsync everysec --save "" \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      || die "cluster redis node $i did not start, see $dir/redis.log"
    wait_until 30 "cluster redis node $i" _cluster_redis_pings "$port" >/dev/null
  done
  # A fresh set of nodes knows only itself: make the cluster once (masters 7001-7003 in
  # redis-cli's order, one replica each). Nodes restarted from nodes.conf know each other.
  if [ "$(_cluster_redis_info "$(_cluster_redis_port 1)" cluster_known_nodes)" = 1 ] \
     && [ "$(_cluster_redis_info "$(_cluster_redis_port 1)" cluster_slots_assigned)" = 0 ]; then
    local addresses=()
    for i in $(seq 1 $CLUSTER_REDIS_NODES); do addresses+=("127.0.0.1:$(_cluster_redis_port "$i")"); done
    log "creating the Redis Cluster: ${addresses[*]}"
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes \
      >"$CLUSTER_DIR/redis-create.log" 2>&1 \
      || { tail -n 20 "$CLUSTER_DIR/redis-create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
  wait_until "${CLUSTER_START_TIMEOUT:-300}" "redis cluster_state:ok" _cluster_redis_all_ok >/dev/null
  log "redis cluster ready in $(since "$t0")s on 127.0.0.1:$(_cluster_redis_port 1)-$(_cluster_redis_port $CLUSTER_REDIS_NODES)"
}

cluster_redis_down() {
  local i port dir
  for i in $(seq 1 $CLUSTER_REDIS_NODES); do
    port=$(_cluster_redis_port "$i"); dir=$(_cluster_redis_dir "$i")
    if pid_alive "$dir/redis.pid"; then
      # SHUTDOWN fsyncs the AOF and saves nodes.conf; stop_pidfile then waits (or kills)
      redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
      stop_pidfile "$dir/redis.pid" "cluster redis node $i"
    fi
    rm -f "$dir/redis.pid"
  done
}

# _cluster_os_green PORT: the node on PORT sees a green cluster of $CLUSTER_OS_NODES nodes
_cluster_os_green() {
  local health
  health=$(curl -s -m 5 "http://127.0.0.1:$1/_cluster/health?wait_for_status=green&wait_for_nodes=$CLUSTER_OS_NODES&timeout=2s" 2>/dev/null)
  grep -Eq '"status" *: *"green"' <<<"$health" && grep -Eq "\"number_of_nodes\" *: *$CLUSTER_OS_NODES[,}]" <<<"$health"
}

# _cluster_os_ready: every node's JVM is alive and node 1 sees the whole cluster green;
# a JVM that died ends the wait with its log
_cluster_os_ready() {
  local i dir
  for i in $(seq 1 $CLUSTER_OS_NODES); do
    dir=$(_cluster_os_dir "$i")
    if ! pid_alive "$dir/opensearch.pid"; then
      printf '[devstack] cluster opensearch node %s exited during startup; last log lines:\n' "$i" >&2
      tail -n 40 "$dir/opensearch.log" >&2
      exit 1
    fi
  done
  _cluster_os_green "$(_cluster_os_http_port 1)"
}

cluster_opensearch_up() {
  local i dir port tport java seeds managers heap t0 secs
  t0=$(now)
  _os_classpath_ok || opensearch_install
  java=$(_os_java) || die "no Java 17..21 JDK found; run devstack/up opensearch"
  heap=${CLUSTER_OS_HEAP:-512m}
  seeds=""; managers=""
  for i in $(seq 1 $CLUSTER_OS_NODES); do
    seeds+="${seeds:+,}127.0.0.1:$(_cluster_os_transport_port "$i")"
    managers+="${managers:+,}$CLUSTER_OS_NAME-$i"
  done
  for i in $(seq 1 $CLUSTER_OS_NODES); do
    dir=$(_cluster_os_dir "$i"); port=$(_cluster_os_http_port "$i"); tport=$(_cluster_os_transport_port "$i")
    pid_alive "$dir/opensearch.pid" && continue
    rm -f "$dir/opensearch.pid"
    for p in "$port" "$tport"; do
      port_in_use "$p" && die "port $p is held by a process this devstack did not start (cluster OpenSearch node $i)"
    done
    mkdir -p "$dir/home" "$dir/data" "$dir/logs"
    log "starting cluster opensearch node $i (heap $heap) on http port $port, transport port $tport"
    printf '\n==== %s starting opensearch node %s on %s/%s ====\n' "$(date -Is)" "$i" "$port" "$tport" >> "$dir/opensearch.log"
    # discovery.type=zen replaces the Launcher's single-node default;
    # initial_cluster_manager_nodes only matters the first time (the cluster's state is
    # in path.data afterwards).
    os_launch "$java" "$heap" "$dir" "$port" "$tport" "$dir/opensearch.log" "$dir/opensearch.pid" \
      cluster.name="$CLUSTER_OS_NAME" node.name="$CLUSTER_OS_NAME-$i" \
      discovery.type=zen discovery.seed_hosts="$seeds" \
      cluster.initial_cluster_manager_nodes="$managers"
  done
  secs=$(wait_until "${CLUSTER_START_TIMEOUT:-300}" "opensearch cluster (green, $CLUSTER_OS_NODES nodes)" _cluster_os_ready) \
    || die "the opensearch cluster did not become green (logs: $CLUSTER_DIR/opensearch-*/opensearch.log)"
  _os_version_at "$(_cluster_os_http_port 1)" || die "something answers on $(_cluster_os_http_port 1) but it is not OpenSearch $OS_VERSION"
  log "opensearch cluster green with $CLUSTER_OS_NODES nodes in $(since "$t0")s at http://127.0.0.1:$(_cluster_os_http_port 1)-$(_cluster_os_http_port $CLUSTER_OS_NODES)"
}

cluster_opensearch_down() {
  local i
  for i in $(seq 1 $CLUSTER_OS_NODES); do
    stop_pidfile "$(_cluster_os_dir "$i")/opensearch.pid" "cluster opensearch node $i"
  done
}

# cluster_record_env: $CLUSTER_ENV from scratch, the single-node env's PostgreSQL and
# emulator lines first (those services are shared), then the clusters' addresses
cluster_record_env() {
  local i redis_nodes="" os_hosts=""
  for i in $(seq 1 $CLUSTER_REDIS_NODES); do redis_nodes+="${redis_nodes:+,}127.0.0.1:$(_cluster_redis_port "$i")"; done
  for i in $(seq 1 $CLUSTER_OS_NODES); do os_hosts+="${os_hosts:+,}127.0.0.1:$(_cluster_os_http_port "$i")"; done
  mkdir -p "$CLUSTER_DIR"
  grep -E '^export (PG[A-Z]*|DATABASE_URL|MZ_[A-Z]*)=' "$ENV_FILE" > "$CLUSTER_ENV.tmp" || true
  mv "$CLUSTER_ENV.tmp" "$CLUSTER_ENV"
  ENV_FILE=$CLUSTER_ENV env_set REDIS_URL "redis://127.0.0.1:$(_cluster_redis_port 1)/0"
  ENV_FILE=$CLUSTER_ENV env_set REDIS_CLUSTER_NODES "$redis_nodes"
  ENV_FILE=$CLUSTER_ENV env_set OS_HOST 127.0.0.1
  ENV_FILE=$CLUSTER_ENV env_set OS_PORT "$(_cluster_os_http_port 1)"
  ENV_FILE=$CLUSTER_ENV env_set OS_URL "http://127.0.0.1:$(_cluster_os_http_port 1)"
  ENV_FILE=$CLUSTER_ENV env_set OS_HOSTS "$os_hosts"
}

cluster_up() {
  local t0; t0=$(now)
  cluster_redis_up
  cluster_opensearch_up
  cluster_record_env
  log "cluster devstack up in $(since "$t0")s; environment recorded in $CLUSTER_ENV (source it)"
}

cluster_down() {
  cluster_opensearch_down
  cluster_redis_down
}

cluster_status() {
  local i dir rc=0 state health
  for i in $(seq 1 $CLUSTER_REDIS_NODES); do
    dir=$(_cluster_redis_dir "$i")
    if pid_alive "$dir/redis.pid"; then
      echo "redis-$i: running (pid $(cat "$dir/redis.pid"), 127.0.0.1:$(_cluster_redis_port "$i"), $(redis-cli -p "$(_cluster_redis_port "$i")" role 2>/dev/null | head -1))"
    else
      echo "redis-$i: stopped"; rc=1
    fi
  done
  state=$(_cluster_redis_info "$(_cluster_redis_port 1)" cluster_state)
  echo "redis cluster: ${state:-unreachable}"
  [ "$state" = ok ] || rc=1
  for i in $(seq 1 $CLUSTER_OS_NODES); do
    dir=$(_cluster_os_dir "$i")
    if pid_alive "$dir/opensearch.pid"; then
      echo "opensearch-$i: running (pid $(cat "$dir/opensearch.pid"), http 127.0.0.1:$(_cluster_os_http_port "$i"))"
    else
      echo "opensearch-$i: stopped"; rc=1
    fi
  done
  health=""
  for i in $(seq 1 $CLUSTER_OS_NODES); do
    health=$(curl -s -m 3 "http://127.0.0.1:$(_cluster_os_http_port "$i")/_cluster/health" 2>/dev/null) && [ -n "$health" ] && break
  done
  if [ -n "$health" ]; then
    echo "opensearch cluster: $(grep -Eo '"status" *: *"[a-z]+"' <<<"$health" | grep -Eo '[a-z]+"$' | tr -d '"'), $(grep -Eo '"number_of_nodes" *: *[0-9]+' <<<"$health" | grep -Eo '[0-9]+$') nodes"
    _cluster_os_green "$(_cluster_os_http_port 1)" || rc=1
  else
    echo "opensearch cluster: unreachable"; rc=1
  fi
  return $rc
}
