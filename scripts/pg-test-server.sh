#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: its own data directory, its
# own port, trust authentication on 127.0.0.1 only, no fsync.
#
#   scripts/pg-test-server.sh start DIR PORT   prints the admin URL on stdout
#   scripts/pg-test-server.sh stop DIR         stops it (nothing to do is fine)
#
# Everything lives in DIR: data/ (the cluster), postgres.log, the unix socket
# and initdb.log. PostgreSQL refuses to run as root, so when we are root the
# server runs as the `postgres` OS user and DIR is handed to it.
# PG_BIN overrides where the server binaries are (default: PostgreSQL 15 as
# Debian installs it). Quiet on success; on failure the reason goes to stderr.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

die() {
  echo "pg-test-server: $*" >&2
  exit 1
}

usage() {
  die "usage: $0 start DIR PORT | stop DIR"
}

# Runs a command as the server's OS user.
as_server_user() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

check_binaries() {
  local b
  for b in initdb pg_ctl; do
    [[ -x "$PG_BIN/$b" ]] || die "$PG_BIN/$b not found: install the Debian package \
'postgresql' (PostgreSQL 15; scripts/install-deps.sh does) or set PG_BIN"
  done
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "there is no 'postgres' OS user to run the server as \
(the Debian package 'postgresql' creates it)"
    command -v runuser >/dev/null || die "runuser (util-linux) is needed to run the server \
as the postgres user"
  fi
}

is_running() {
  local data=$1
  [[ -f "$data/postmaster.pid" ]] && as_server_user "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1
}

start() {
  local dir=$1 port=$2
  [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]] || die "PORT must be 1-65535, got '$port'"
  check_binaries
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local data=$dir/data url="postgresql://postgres@127.0.0.1:$port/postgres"
  # The unix socket path must fit in sun_path (107 bytes).
  (( ${#dir} + 20 <= 107 )) || die "DIR is too long for a unix socket path: $dir"

  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$dir"
    as_server_user test -w "$dir" -a -x "$dir" ||
      die "$dir is not accessible to the postgres user (check the permissions of its parents)"
  fi

  if is_running "$data"; then
    echo "$url"
    return 0
  fi

  if [[ ! -f "$data/PG_VERSION" ]]; then
    as_server_user "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C \
      --no-sync >"$dir/initdb.log" 2>&1 ||
      die "initdb failed; see $dir/initdb.log: $(tail -n 5 "$dir/initdb.log")"
    echo "include_if_exists 'kiln_test.conf'" >>"$data/postgresql.conf"
  fi
  # Rewritten at each start so that a reused DIR can move to another port.
  as_server_user tee "$data/kiln_test.conf" >/dev/null <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF

  if ! as_server_user "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start \
      >"$dir/pg_ctl.log" 2>&1; then
    die "the server did not start on port $port; last lines of $dir/postgres.log:
$(tail -n 10 "$dir/postgres.log" 2>/dev/null)"
  fi
  echo "$url"
}

stop() {
  local dir=$1 data=$1/data
  [[ -d "$data" ]] || return 0
  check_binaries
  if is_running "$data"; then
    as_server_user "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      die "could not stop the server in $data; see $dir/postgres.log"
  fi
}

case "${1:-}" in
  start) [[ $# -eq 3 ]] || usage; start "$2" "$3" ;;
  stop) [[ $# -eq 2 ]] || usage; stop "$2" ;;
  *) usage ;;
esac
