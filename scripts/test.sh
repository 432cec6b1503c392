#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this):
# installs what is missing, builds, checks formatting and layering, and runs
# every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh
scripts/check-format.sh
python3 scripts/check_layers.py .
cd "${KILN_BUILD_DIR:-build}"
ctest --output-on-failure -j"$(nproc)" --timeout 600
