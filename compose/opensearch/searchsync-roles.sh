#!/usr/bin/env bash
# Creates searchsync's least-privilege OpenSearch roles and users through the security
# plugin's REST API, as README "Security" gives them: role searchsync_sync (producer and
# consumers) for the user searchsync, and searchsync_operate (the CLI: verify, wait,
# resync, index) added for the user searchsync_operator. Every request is a PUT: run it
# again to reset the passwords or the grants. Tested against OpenSearch 2.19.4 with its
# security plugin (tests/e2e/test_opensearch_security.py).
#
#   OS_URL=https://127.0.0.1:9200 OS_CA_CERTS=ca.pem \
#   OS_ADMIN_USER=admin OS_ADMIN_PASSWORD=... ALIAS=orders \
#   SEARCHSYNC_PASSWORD=... OPERATOR_PASSWORD=... compose/opensearch/searchsync-roles.sh
#
# OS_CA_CERTS empty: curl's system roots; OS_INSECURE=true skips verification (the
# compose image's demo certificate). Passwords travel in request bodies, never on a
# command line (curl reads them from stdin).
set -euo pipefail
: "${OS_URL:?}" "${OS_ADMIN_USER:?}" "${OS_ADMIN_PASSWORD:?}" "${SEARCHSYNC_PASSWORD:?}" "${OPERATOR_PASSWORD:?}"
# ALIAS: the alias searchsync writes, or several separated by spaces (one per view of a
# views file, README "Several views"): each role gets the same rights on every one
aliases=${ALIAS:-orders}
[ -n "${aliases// /}" ] || { echo "ALIAS: at least one alias" >&2; exit 2; }
for alias in $aliases; do
  case $alias in *[!a-z0-9_-]*) echo "ALIAS: lower-case letters, digits, _ and - only" >&2; exit 2 ;; esac
done
# patterns SUFFIX…: "<alias><suffix>" for every alias and suffix, as JSON strings
patterns() {
  local out="" alias suffix
  for alias in $aliases; do
    for suffix in "$@"; do out+="${out:+, }\"$alias$suffix\""; done
  done
  printf '%s' "$out"
}
every=$(patterns "" "_v*" "_resync")  # the alias, its indexes, a resync's write alias
versions=$(patterns "_v*")
tls=()
if [ "${OS_INSECURE:-false}" = true ]; then tls=(-k); elif [ -n "${OS_CA_CERTS:-}" ]; then tls=(--cacert "$OS_CA_CERTS"); fi

# json_escape VALUE: VALUE inside a JSON (and curl config) string: \ and " escaped
json_escape() { local v=${1//\\/\\\\}; printf '%s' "${v//\"/\\\"}"; }

# put PATH: the JSON body on stdin, admin credentials from a curl config on a pipe
put() {
  local answer
  answer=$(curl -sS --fail-with-body "${tls[@]}" -X PUT -H 'Content-Type: application/json' \
    -K <(printf 'user = "%s:%s"\n' "$(json_escape "$OS_ADMIN_USER")" "$(json_escape "$OS_ADMIN_PASSWORD")") \
    --data-binary @- "$OS_URL/_plugins/_security/api/$1") || { echo "PUT $1: $answer" >&2; exit 1; }
  echo "PUT $1: $answer"
}

put "roles/searchsync_sync" <<JSON
{
  "cluster_permissions": [
    "cluster:monitor/main", "cluster:monitor/health", "indices:data/write/bulk"
  ],
  "index_permissions": [{
    "index_patterns": [$every],
    "allowed_actions": [
      "indices:data/write/bulk*", "indices:data/write/index", "indices:data/write/delete",
      "indices:data/write/delete/byquery", "indices:data/read/search",
      "indices:admin/get", "indices:admin/aliases/get", "indices:admin/create",
      "indices:admin/aliases", "indices:admin/refresh*", "indices:monitor/stats",
      "indices:monitor/settings/get"
    ]
  }, {
    "index_patterns": [$versions],
    "allowed_actions": ["indices:admin/delete"]
  }, {
    "index_patterns": ["*"],
    "allowed_actions": ["indices:admin/aliases/get"]
  }]
}
JSON
put "roles/searchsync_operate" <<JSON
{
  "cluster_permissions": [
    "cluster:monitor/main", "cluster:monitor/state", "cluster:monitor/health",
    "indices:data/read/mget"
  ],
  "index_permissions": [{
    "index_patterns": [$every],
    "allowed_actions": [
      "indices:data/read/mget*", "indices:admin/delete", "indices:admin/settings/update",
      "indices:monitor/settings/get", "indices:admin/mappings/get", "indices:admin/resize"
    ]
  }]
}
JSON
put "internalusers/searchsync" <<<"{\"password\": \"$(json_escape "$SEARCHSYNC_PASSWORD")\"}"
put "internalusers/searchsync_operator" <<<"{\"password\": \"$(json_escape "$OPERATOR_PASSWORD")\"}"
put "rolesmapping/searchsync_sync" <<<'{"users": ["searchsync", "searchsync_operator"]}'
put "rolesmapping/searchsync_operate" <<<'{"users": ["searchsync_operator"]}'
