#!/usr/bin/env bash
# Kiln's quick start: installs what is missing, builds, starts `kiln serve`
# on the embedded default (SQLite, bundled plugins; examples/quickstart.yaml)
# in the background and shows it answering. The server keeps running;
# the last lines say how to use and stop it.
#   KILN_PORT=9090 scripts/quickstart.sh   to use another port
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
port=${KILN_PORT:-8080}

scripts/install-deps.sh
scripts/build.sh
kiln="$root/build/bin/kiln"
mkdir -p var

# A server left by an earlier quick start is replaced by the fresh build.
if [[ -f var/kiln.pid ]] && kill -0 "$(cat var/kiln.pid)" 2>/dev/null; then
  echo "kiln: stopping the earlier quick-start server (pid $(cat var/kiln.pid))"
  kill "$(cat var/kiln.pid)"
  for _ in $(seq 50); do kill -0 "$(cat var/kiln.pid)" 2>/dev/null || break; sleep 0.1; done
fi

"$kiln" --version
"$kiln" config check examples/quickstart.yaml
nohup "$kiln" serve --config examples/quickstart.yaml --listen "127.0.0.1:$port" \
  >var/kiln.log 2>&1 &
echo $! >var/kiln.pid

for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat var/kiln.pid)" 2>/dev/null; then
    echo "kiln serve exited; its log (var/kiln.log):" >&2
    cat var/kiln.log >&2
    exit 1
  fi
  sleep 0.1
done

echo
echo "\$ curl http://127.0.0.1:$port/healthz"
curl -fsS "http://127.0.0.1:$port/healthz"
echo
echo "\$ curl http://127.0.0.1:$port/version"
curl -fsS "http://127.0.0.1:$port/version"
echo
echo
"$kiln" plugins list
echo
echo "Kiln is running at http://127.0.0.1:$port (pid $(cat var/kiln.pid), log: var/kiln.log)."
echo "Stop it with: kill \$(cat var/kiln.pid)"
