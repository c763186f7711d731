#!/usr/bin/env bash
# Writes compose/.env (mode 600) with a new random value for every secret that
# compose/docker-compose.yml requires; compose/.env.example lists them. Refuses to
# overwrite an existing compose/.env: its passwords are already in the volumes
# (PostgreSQL's and OpenSearch's are set at their first start only).
#   compose/make-env.sh [FILE]     (default: compose/.env next to this script)
set -euo pipefail
target=${1:-"$(cd "$(dirname "$0")" && pwd)/.env"}
if [ -e "$target" ]; then
  echo "make-env.sh: $target exists; remove it first to make new passwords" >&2
  exit 1
fi
secret() { openssl rand -hex "$1"; }
umask 077
{
  echo "# written by compose/make-env.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); keep it out of git"
  echo "POSTGRES_PASSWORD=$(secret 24)"
  echo "REDIS_PASSWORD=$(secret 24)"
  # OpenSearch refuses a weak admin password; upper and lower case, digit and symbol:
  echo "OPENSEARCH_INITIAL_ADMIN_PASSWORD=Sx-9$(secret 20)"
  echo "GRAFANA_ADMIN_PASSWORD=$(secret 16)"
} > "$target"
echo "wrote $target"
