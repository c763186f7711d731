# Shared helpers for devstack/up and devstack/down. Sourced, never executed.
# Every service lib (postgres.sh, redis.sh, opensearch.sh, mzemu.sh) defines
#   <svc>_install   install what is missing (idempotent, quiet when present)
#   <svc>_up        start unless already answering; wait until it answers; record env
#   <svc>_down      stop what devstack started (pid file under $STATE); no-op otherwise
# and records its addresses with env_set so tests and tools can `source .devstack/env`.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE="${DEVSTACK_STATE:-$ROOT/.devstack}"
ENV_FILE="$STATE/env"
mkdir -p "$STATE"

log() { printf '[devstack] %s\n' "$*" >&2; }
die() { printf '[devstack] ERROR: %s\n' "$*" >&2; exit 1; }

# env_set KEY VALUE: replace KEY's line in $ENV_FILE (export form, so `source` works)
env_set() {
  local key=$1 value=$2
  touch "$ENV_FILE"
  grep -v "^export $key=" "$ENV_FILE" > "$ENV_FILE.tmp" || true
  printf 'export %s=%q\n' "$key" "$value" >> "$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# env_get KEY: the value recorded earlier, empty if none
env_get() {
  [ -f "$ENV_FILE" ] || return 0
  (set +u; source "$ENV_FILE"; eval "printf '%s' \"\${$1:-}\"")
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port PREFERRED: PREFERRED if free, else the first free port above 20000
pick_port() {
  local p=$1
  if ! port_in_use "$p"; then echo "$p"; return; fi
  for p in $(seq 20000 20999); do
    port_in_use "$p" || { echo "$p"; return; }
  done
  die "no free port found"
}

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.2s; print the seconds it took
wait_until() {
  local limit=$1 what=$2; shift 2
  local start end
  start=$(date +%s.%N)
  while ! "$@" >/dev/null 2>&1; do
    end=$(date +%s.%N)
    if awk -v s="$start" -v e="$end" -v l="$limit" 'BEGIN{exit !(e-s>l)}'; then
      die "$what did not answer within ${limit}s"
    fi
    sleep 0.2
  done
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN{printf "%.1f", e-s}'
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pidfile PIDFILE NAME: TERM, wait up to 20s, then KILL
stop_pidfile() {
  local pidfile=$1 name=$2 pid i
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
  log "$name stopped"
}

apt_install() {
  local missing=()
  # "install ok installed" only: a removed package keeps a status ("deinstall ok
  # config-files") that dpkg -s still reports with exit 0
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  # APT_NO_RECOMMENDS=1: the packages alone (prometheus.sh)
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    ${APT_NO_RECOMMENDS:+--no-install-recommends} "${missing[@]}" >/dev/null
}

now() { date +%s.%N; }
# since T0: seconds elapsed since T0 (from `now`), one decimal
since() { awk -v s="$1" -v e="$(now)" 'BEGIN{printf "%.1f", e-s}'; }

# The test scripts' services (scripts/test, scripts/chaos, scripts/test-lowest): start
# the devstack services that are not running, source their environment, and stop on
# exit only those this run started (a developer's running devstack is left alone).
DEVSTACK_SERVICES=(postgres redis opensearch mzemu)
_RUN_STARTED=()
_stop_what_this_run_started() {
  local rc=$?
  if [ ${#_RUN_STARTED[@]} -gt 0 ]; then
    log "stopping what this run started: ${_RUN_STARTED[*]}"
    "$ROOT/devstack/down" "${_RUN_STARTED[@]}" || true
  fi
  exit $rc
}
up_for_this_run() {
  local svc t0
  for svc in "${DEVSTACK_SERVICES[@]}"; do
    "$ROOT/devstack/status" "$svc" >/dev/null 2>&1 || _RUN_STARTED+=("$svc")
  done
  trap _stop_what_this_run_started EXIT
  t0=$(now)
  "$ROOT/devstack/up"
  log "devstack up in $(since "$t0")s"
  # shellcheck disable=SC1090
  source "$ENV_FILE"
}
