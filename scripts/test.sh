#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this):
# installs what is missing, builds, checks formatting and layering, starts a
# throwaway PostgreSQL server (as the postgres user, own port and data
# directory), runs every test with ctest, and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh
scripts/check-format.sh
python3 scripts/check_layers.py .

pg_dir=$(mktemp -d /tmp/kiln-test-pg-XXXXXX)
cleanup() {
  scripts/pg-test-server.sh stop "$pg_dir" || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KILN_TEST_PG_URL=$(scripts/pg-test-server.sh start "$pg_dir" "$pg_port")
export KILN_TEST_PG_URL

cd "${KILN_BUILD_DIR:-build}"
ctest --output-on-failure -j"$(nproc)" --timeout 600
