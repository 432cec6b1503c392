#!/usr/bin/env bash
# A throwaway smart-HTTP git server for the tests: the real `git http-backend`
# CGI behind lighttpd, on 127.0.0.1 only, HTTP Basic auth on every request.
#
#   tests/support/git-http-server.sh start DIR PORT TOKEN   prints the base URL
#   tests/support/git-http-server.sh stop DIR               stops it (nothing to do is fine)
#
# Bare repositories go in DIR/repos and are served at
# http://127.0.0.1:PORT/git/<name>.git; the only account is user
# `x-access-token` with password TOKEN (what GitHub-style token auth sends).
# Pushes work: git http-backend enables receive-pack when REMOTE_USER is set,
# which mod_auth does for every authenticated request.
# Everything else lives in DIR too: lighttpd.conf, users (the password file,
# mode 600), lighttpd.pid, error.log and the empty document root www/.
# The server runs as the current user (root included: lighttpd only refuses
# to *switch* to uid 0, and it does not switch when server.username is unset).
# Quiet on success; on failure the reason goes to stderr.
set -euo pipefail

LIGHTTPD=${LIGHTTPD:-/usr/sbin/lighttpd}
GIT_HTTP_BACKEND=${GIT_HTTP_BACKEND:-/usr/lib/git-core/git-http-backend}
USER_NAME=x-access-token

die() {
  echo "git-http-server: $*" >&2
  exit 1
}

usage() {
  die "usage: $0 start DIR PORT TOKEN | stop DIR"
}

check_binaries() {
  [[ -x "$LIGHTTPD" ]] || die "$LIGHTTPD not found: install the Debian package 'lighttpd' \
(scripts/install-deps.sh does) or set LIGHTTPD"
  [[ -x "$GIT_HTTP_BACKEND" ]] || die "$GIT_HTTP_BACKEND not found: install the Debian \
package 'git' or set GIT_HTTP_BACKEND"
  command -v curl >/dev/null || die "curl is needed to check that the server answers"
}

# The pid of our lighttpd in DIR, or nothing when it does not run. The command
# line is checked so that a recycled pid is never mistaken for the server.
server_pid() {
  local dir=$1 pid
  [[ -f "$dir/lighttpd.pid" ]] || return 0
  pid=$(<"$dir/lighttpd.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" |
      grep -qF -- "$dir/lighttpd.conf"; then
    echo "$pid"
  fi
}

stop() {
  local dir=$1 pid i
  [[ -d "$dir" ]] || return 0
  dir=$(cd "$dir" && pwd)
  pid=$(server_pid "$dir")
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      [[ -z "$(server_pid "$dir")" ]] && break
      # A zombie (nobody reaps a daemon in some containers) counts as stopped.
      [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && break
      sleep 0.1
    done
    if [[ -n "$(server_pid "$dir")" &&
          "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/lighttpd.pid"
}

start() {
  local dir=$1 port=$2 token=$3
  [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]] ||
    die "PORT must be 1-65535, got '$port'"
  [[ -n "$token" ]] || die "TOKEN must not be empty"
  [[ "$token" != *[:$'\n\r"\\']* ]] || die "TOKEN must not contain ':', quotes, backslashes or newlines"
  check_binaries
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [[ "$dir" != *[\"\\]* ]] || die "DIR must not contain quotes or backslashes: $dir"
  mkdir -p "$dir/repos" "$dir/www"

  # A restart picks up a new port or token.
  stop "$dir"

  (umask 077 && printf '%s:%s\n' "$USER_NAME" "$token" >"$dir/users")
  cat >"$dir/lighttpd.conf" <<EOF
server.modules = ("mod_alias", "mod_setenv", "mod_auth", "mod_authn_file", "mod_cgi")
server.document-root = "$dir/www"
server.bind = "127.0.0.1"
server.port = $port
server.pid-file = "$dir/lighttpd.pid"
server.errorlog = "$dir/error.log"
auth.backend = "plain"
auth.backend.plain.userfile = "$dir/users"
auth.require = ("/" => ("method" => "basic", "realm" => "kiln-test-git",
                        "require" => "valid-user"))
alias.url = ("/git" => "$GIT_HTTP_BACKEND")
\$HTTP["url"] =~ "^/git" {
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "$dir/repos", "GIT_HTTP_EXPORT_ALL" => "1")
}
EOF

  local out
  out=$("$LIGHTTPD" -tt -f "$dir/lighttpd.conf" 2>&1) ||
    die "lighttpd rejected $dir/lighttpd.conf: $out"
  : >"$dir/error.log"
  # lighttpd binds its socket, then daemonizes, then writes the pid file.
  out=$("$LIGHTTPD" -f "$dir/lighttpd.conf" 2>&1) ||
    die "lighttpd did not start on port $port: $out $(tail -n 5 "$dir/error.log" 2>/dev/null)"

  local base="http://127.0.0.1:$port/git" code i
  for ((i = 0; i < 100; i++)); do
    # Without credentials every request must be refused: 401 proves both that
    # the server is up and that auth is enforced.
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/" || true)
    [[ "$code" == 401 ]] && break
    sleep 0.05
  done
  if [[ "$code" != 401 ]]; then
    stop "$dir"
    die "the server on port $port did not answer with 401 Unauthorized (got '$code'); \
last lines of $dir/error.log:
$(tail -n 10 "$dir/error.log" 2>/dev/null)"
  fi
  echo "$base"
}

case "${1:-}" in
  start) [[ $# -eq 4 ]] || usage; start "$2" "$3" "$4" ;;
  stop) [[ $# -eq 2 ]] || usage; stop "$2" ;;
  *) usage ;;
esac
