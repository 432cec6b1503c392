#!/usr/bin/env bash
# Kiln's quick start: installs what is missing, builds, starts `kiln serve`
# on the embedded default (SQLite, bundled plugins; examples/quickstart.yaml)
# in the background, shows it answering, creates a project whose repository
# the local git host makes, submits a build from a template with auto_commit
# and auto_push, follows it until it completes, and shows the new commit as
# `git log` of the repository sees it. The server keeps running; the last
# lines say how to submit more and how to stop it.
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

# Create a project (its repository made by the local git host) and start a
# build from the `feature` template that commits and pushes; the next run
# of this script submits to the same project.
base="http://127.0.0.1:$port"
build_spec='{"prompt": "Add a CONTRIBUTING.md", "template": "feature", "variables": {"feature": "a CONTRIBUTING.md that explains how to run the tests"}, "auto_commit": true, "auto_push": true, "commit_message": "Add CONTRIBUTING.md"}'
if curl -fsS "$base/projects/hello" >/dev/null 2>&1; then
  echo
  echo "\$ curl -X POST $base/projects/hello/builds -H 'Content-Type: application/json' -d '$build_spec'"
  answer=$(curl -fsS -X POST "$base/projects/hello/builds" -H 'Content-Type: application/json' -d "$build_spec")
else
  request="{\"project\": {\"id\": \"hello\"}, \"build\": $build_spec}"
  echo
  echo "\$ curl -X POST $base/project/create-and-build -H 'Content-Type: application/json' -d '$request'"
  answer=$(curl -fsS -X POST "$base/project/create-and-build" -H 'Content-Type: application/json' -d "$request")
fi
echo "$answer"
task=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])' <<<"$answer")
status=pending
for _ in $(seq 600); do
  build=$(curl -fsS "$base/builds/$task")
  new=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' <<<"$build")
  [[ "$new" != "$status" ]] && echo "build $task: $new" && status=$new
  case "$status" in completed|failed|cancelled) break ;; esac
  sleep 0.1
done
echo
echo "\$ curl $base/builds/$task"
python3 -m json.tool <<<"$build"
repo=$(curl -fsS "$base/projects/hello" | python3 -c 'import json,sys; print(json.load(sys.stdin)["repo_url"])')
echo
echo "\$ git --git-dir $repo log --stat -1 main"
git --git-dir "$repo" log --stat -1 main
echo
echo "Kiln is running at $base (pid $(cat var/kiln.pid), log: var/kiln.log)."
echo "Submit another build:"
echo "  curl -X POST $base/projects/hello/builds -H 'Content-Type: application/json' -d '{\"prompt\": \"append CONTRIBUTING.md: Be kind.\", \"auto_commit\": true, \"auto_push\": true}'"
echo "The build's log: curl $base/builds/$task/log"
echo "Stop it with: kill \$(cat var/kiln.pid)"
