#!/usr/bin/env bash
# Finds or starts the PostgreSQL this project runs against, and prints its URL on stdout.
#
#   infra/pg.sh dev    URL of the development database (created if missing)
#   infra/pg.sh admin  URL of a database tests may CREATE DATABASE from (tests make their own)
#   infra/pg.sh stop   stop the throwaway cluster, if this script started one
#
# Order: $DATABASE_URL if set; else a PostgreSQL answering on 127.0.0.1:5432 (user postgres);
# else a throwaway cluster under .local/pg, made with the system's PostgreSQL binaries.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
mode="${1:-dev}"
dev_db="${DEV_DATABASE:-llm_stream}"
cluster="$root/.local/pg"
port="${LOCAL_PG_PORT:-54329}"

log() { echo "pg.sh: $*" >&2; }

find_bin() {
  local name="$1" dir
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  for dir in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin /opt/homebrew/bin; do
    [ -x "$dir/$name" ] && { echo "$dir/$name"; return 0; }
  done
  return 1
}

answers() { # url -> 0 when a query runs
  local psql; psql="$(find_bin psql)" || return 1
  "$psql" "$1" -Atqc 'select 1' >/dev/null 2>&1
}

with_db() { # url dbname -> same server, other database
  python3 - "$1" "$2" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit((p.scheme, p.netloc, "/" + sys.argv[2], p.query, p.fragment)))
PY
}

ensure_db() { # admin_url dbname
  local psql; psql="$(find_bin psql)"
  if ! "$psql" "$1" -Atqc "select 1 from pg_database where datname = '$2'" | grep -q 1; then
    "$psql" "$1" -qc "create database \"$2\"" >/dev/null
    log "created database $2"
  fi
}

start_cluster() {
  local initdb pg_ctl
  if ! initdb="$(find_bin initdb)" || ! pg_ctl="$(find_bin pg_ctl)"; then
    cat >&2 <<'MSG'
pg.sh: no PostgreSQL found. Either
  - set DATABASE_URL to a PostgreSQL you have, or
  - install PostgreSQL's server binaries and run this again:
      Debian/Ubuntu:  sudo apt-get install -y postgresql
      macOS:          brew install postgresql@16
MSG
    exit 1
  fi
  local run=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home "$cluster" postgres
    run=(runuser -u postgres --)
  fi
  mkdir -p "$cluster"
  [ "$(id -u)" = 0 ] && chown -R postgres "$cluster" && chmod o+x "$root" "$root/.local"
  if [ ! -f "$cluster/data/PG_VERSION" ]; then
    log "initialising a throwaway cluster in $cluster"
    "${run[@]}" "$initdb" -D "$cluster/data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if ! "${run[@]}" "$pg_ctl" -D "$cluster/data" status >/dev/null 2>&1; then
    log "starting it on 127.0.0.1:$port"
    "${run[@]}" "$pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w \
      -o "-p $port -k $cluster -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  fi
}

case "$mode" in
  stop)
    pg_ctl="$(find_bin pg_ctl)" || exit 0
    [ -f "$cluster/data/postmaster.pid" ] || exit 0
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$pg_ctl" -D "$cluster/data" stop -m fast
    else "$pg_ctl" -D "$cluster/data" stop -m fast; fi
    exit 0 ;;
  dev|admin) ;;
  *) log "usage: infra/pg.sh dev|admin|stop"; exit 2 ;;
esac

if [ -n "${DATABASE_URL:-}" ]; then
  echo "$DATABASE_URL"; exit 0
fi

admin="postgres://postgres@127.0.0.1:5432/postgres"
if ! answers "$admin"; then
  admin="postgres://postgres@127.0.0.1:$port/postgres"
  answers "$admin" || start_cluster
  answers "$admin" || { log "PostgreSQL did not answer at $admin; see $cluster/server.log"; exit 1; }
fi
if [ "$mode" = admin ]; then echo "$admin"; exit 0; fi
ensure_db "$admin" "$dev_db"
with_db "$admin" "$dev_db"
