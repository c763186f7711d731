#!/usr/bin/env bash
# Writes compose/.env (mode 600) with a new random value for every secret that
# compose/docker-compose.yml requires; compose/.env.example lists them. Never changes a
# value in an existing compose/.env (PostgreSQL's and OpenSearch's admin passwords are
# already in the volumes: set at their first start only): it adds the secrets that file
# lacks (those a newer compose file requires) and exits 1 when it lacks none.
#   compose/make-env.sh [FILE]     (default: compose/.env next to this script)
set -euo pipefail
target=${1:-"$(cd "$(dirname "$0")" && pwd)/.env"}
secret() { openssl rand -hex "$1"; }
# OpenSearch refuses a weak password (its admin's at the first start, a user's through
# the security API): upper and lower case, digit and symbol
strong() { echo "Sx-9$(secret 20)"; }
value() {
  case $1 in
    OPENSEARCH_*) strong ;;
    GRAFANA_ADMIN_PASSWORD) secret 16 ;;
    *) secret 24 ;;
  esac
}
names=(
  POSTGRES_PASSWORD
  REDIS_PASSWORD
  REDIS_SEARCHSYNC_PASSWORD
  OPENSEARCH_INITIAL_ADMIN_PASSWORD
  OPENSEARCH_SEARCHSYNC_PASSWORD
  OPENSEARCH_OPERATOR_PASSWORD
  GRAFANA_ADMIN_PASSWORD
)
umask 077
if [ -e "$target" ]; then
  added=()
  for name in "${names[@]}"; do
    if ! grep -q "^$name=" "$target"; then
      # a last line without its newline would swallow the first one added
      if [ ${#added[@]} -eq 0 ] && [ -s "$target" ] && [ -n "$(tail -c1 "$target")" ]; then
        echo >> "$target"
      fi
      echo "$name=$(value "$name")" >> "$target"
      added+=("$name")
    fi
  done
  if [ ${#added[@]} -eq 0 ]; then
    echo "make-env.sh: $target exists with every secret; remove it first to make new passwords" >&2
    exit 1
  fi
  echo "added ${added[*]} to $target (its other values unchanged)"
  exit 0
fi
{
  echo "# written by compose/make-env.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); keep it out of git"
  for name in "${names[@]}"; do echo "$name=$(value "$name")"; done
} > "$target"
echo "wrote $target"
