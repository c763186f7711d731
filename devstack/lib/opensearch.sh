# OpenSearch 2.19.6 single node for the devstack, from Maven Central jars (no Docker, no tarball).
# Sourced after devstack/lib/common.sh. See devstack/opensearch/{pom.xml,Launcher.java,log4j2.properties}.
#
#   opensearch_install  resolve the node's classpath with Maven (into ~/.m2; skipped when done)
#   opensearch_up       reuse a 2.19.6 node already answering, else start one; wait for yellow
#   opensearch_down     stop the node this devstack started (no-op for a reused one)
#
# Knobs: OS_HEAP (default 1g), OS_START_TIMEOUT (default 180 s).
# Records OS_HOST, OS_PORT, OS_URL in $STATE/env.

OS_VERSION=2.19.6
OS_SRC="$ROOT/devstack/opensearch"
OS_DIR="$STATE/opensearch"
OS_CLASSPATH="$OS_DIR/classpath.txt"
OS_PIDFILE="$OS_DIR/opensearch.pid"
OS_PORTFILE="$OS_DIR/http.port"
OS_LOG="$OS_DIR/opensearch.log"

# _os_java: print a java (17..21, with the jdk.compiler module for the single-file launch)
_os_java_ok() {
  local j=$1 v major
  [ -x "$j" ] || return 1
  v=$("$j" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  major=${v%%.*}
  [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -ge 17 ] && [ "$major" -le 21 ] || return 1
  "$j" --list-modules 2>/dev/null | grep -q '^jdk.compiler@'
}
_os_java() {
  local j
  for j in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java 2>/dev/null)" \
           /usr/lib/jvm/java-17-openjdk-*/bin/java; do
    [ -n "$j" ] && _os_java_ok "$j" && { echo "$j"; return 0; }
  done
  return 1
}

_os_classpath_ok() {
  [ -s "$OS_CLASSPATH" ] && [ "$OS_CLASSPATH" -nt "$OS_SRC/pom.xml" ] || return 1
  local jar
  while IFS= read -r jar; do [ -f "$jar" ] || return 1; done < <(tr ':' '\n' < "$OS_CLASSPATH")
}

opensearch_install() {
  mkdir -p "$OS_DIR"
  _os_java >/dev/null || apt_install openjdk-17-jdk-headless
  _os_java >/dev/null || die "no Java 17..21 JDK found (need the jdk.compiler module)"
  command -v mvn >/dev/null 2>&1 || apt_install maven
  _os_classpath_ok && return 0
  log "resolving OpenSearch $OS_VERSION jars from Maven Central (~15s and ~60 MB into ~/.m2 when it is empty)"
  local start end
  start=$(date +%s)
  if ! mvn -q -B -Dstyle.color=never -f "$OS_SRC/pom.xml" dependency:build-classpath \
        -Dmdep.outputFile="$OS_CLASSPATH.tmp" >"$OS_DIR/mvn.log" 2>&1; then
    tail -n 30 "$OS_DIR/mvn.log" >&2
    die "maven could not resolve devstack/opensearch/pom.xml (full output: $OS_DIR/mvn.log)"
  fi
  mv "$OS_CLASSPATH.tmp" "$OS_CLASSPATH"
  end=$(date +%s)
  log "opensearch classpath resolved in $((end - start))s"
}

# _os_is_ours_version PORT: a node answering on PORT reports version $OS_VERSION
_os_version_at() {
  curl -s -m 3 "http://127.0.0.1:$1/" 2>/dev/null | grep -Eq "\"number\" *: *\"${OS_VERSION//./\\.}\""
}

# _os_ready PORT: health is yellow or green; fails hard (ends wait_until) if our JVM died
_os_ready() {
  local port=$1
  if ! pid_alive "$OS_PIDFILE"; then
    printf '[devstack] opensearch exited during startup; last log lines:\n' >&2
    tail -n 40 "$OS_LOG" >&2
    exit 1
  fi
  curl -s -m 3 "http://127.0.0.1:$port/_cluster/health?wait_for_status=yellow&timeout=2s" 2>/dev/null \
    | grep -Eq '"status" *: *"(yellow|green)"'
}

_os_record() {
  env_set OS_HOST 127.0.0.1
  env_set OS_PORT "$1"
  env_set OS_URL "http://127.0.0.1:$1"
}

opensearch_up() {
  mkdir -p "$OS_DIR"
  local port tport secs candidates

  # 1. our own JVM is running (maybe still starting): wait for it
  if pid_alive "$OS_PIDFILE" && [ -s "$OS_PORTFILE" ]; then
    port=$(cat "$OS_PORTFILE")
    secs=$(wait_until "${OS_START_TIMEOUT:-180}" opensearch _os_ready "$port") || die "opensearch did not become ready (log: $OS_LOG)"
    _os_record "$port"
    log "opensearch already running (pid $(cat "$OS_PIDFILE")) at http://127.0.0.1:$port"
    return 0
  fi
  rm -f "$OS_PIDFILE"

  # 2. a $OS_VERSION node already answers on the recorded port or on 9200: reuse it
  candidates=$(printf '%s\n' "$(env_get OS_PORT)" 9200 | awk 'NF && !seen[$0]++')
  for port in $candidates; do
    if _os_version_at "$port"; then
      _os_record "$port"
      log "opensearch $OS_VERSION already answering at http://127.0.0.1:$port, reusing it"
      return 0
    fi
  done

  # 3. start one
  _os_classpath_ok || opensearch_install
  local java
  java=$(_os_java) || die "no Java 17..21 JDK found; run opensearch_install"
  port=$(pick_port 9200)
  tport=$(pick_port 9300)
  if [ "$tport" = "$port" ]; then
    for tport in $(seq $((port + 1)) 20999); do port_in_use "$tport" || break; done
  fi
  mkdir -p "$OS_DIR/home" "$OS_DIR/data" "$OS_DIR/logs"
  echo "$port" > "$OS_PORTFILE"
  local heap=${OS_HEAP:-1g}
  log "starting opensearch $OS_VERSION (heap $heap) on http port $port, transport port $tport"
  printf '\n==== %s starting opensearch on %s/%s ====\n' "$(date -Is)" "$port" "$tport" >> "$OS_LOG"
  os_launch "$java" "$heap" "$OS_DIR" "$port" "$tport" "$OS_LOG" "$OS_PIDFILE" \
    cluster.name=searchsync-dev node.name=searchsync-dev-1 discovery.type=single-node
  secs=$(wait_until "${OS_START_TIMEOUT:-180}" opensearch _os_ready "$port") || die "opensearch did not become ready (log: $OS_LOG)"
  _os_version_at "$port" || die "something answers on $port but it is not OpenSearch $OS_VERSION (log: $OS_LOG)"
  _os_record "$port"
  log "opensearch ready in ${secs}s at http://127.0.0.1:$port (log: $OS_LOG)"
}

# os_launch JAVA HEAP DIR HTTP_PORT TRANSPORT_PORT LOG PIDFILE [SETTING=VALUE …]: one node
# in the background (home, data and logs under DIR), its pid in PIDFILE; the single
# node and each node of the cluster devstack (devstack/lib/cluster.sh) start here.
# JVM flags: the stock 2.x jvm.options, minus what only the tarball's bootstrap uses.
# The subshell has no job control, so setsid does not fork and $! is the JVM's pid.
os_launch() {
  local java=$1 heap=$2 dir=$3 port=$4 tport=$5 logfile=$6 pidfile=$7
  shift 7
  ( setsid nohup "$java" \
    -Xms"$heap" -Xmx"$heap" -Xss1m \
    -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow \
    -Dfile.encoding=UTF-8 -Djava.awt.headless=true \
    -Djava.locale.providers=SPI,COMPAT \
    -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true \
    -Dio.netty.recycler.maxCapacityPerThread=0 \
    -Dopensearch.set.netty.runtime.available.processors=false \
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true \
    -Dlog4j2.configurationFile="$OS_SRC/log4j2.properties" \
    -Dsearchsync.os.path.logs="$dir/logs" \
    -cp "$(cat "$OS_CLASSPATH")" "$OS_SRC/Launcher.java" \
    path.home="$dir/home" path.data="$dir/data" \
    http.port="$port" transport.port="$tport" network.host=127.0.0.1 \
    cluster.routing.allocation.disk.threshold_enabled=false "$@" \
    >>"$logfile" 2>&1 </dev/null &
    echo $! > "$pidfile" )
}

opensearch_down() {
  stop_pidfile "$OS_PIDFILE" opensearch
  rm -f "$OS_PORTFILE"
}
