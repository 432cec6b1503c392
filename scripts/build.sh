#!/usr/bin/env bash
# Configures (once) and builds Kiln in build/ with Ninja and ccache.
#   scripts/build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${KILN_BUILD_DIR:-build}

if [[ ! -f "$build_dir/build.ninja" || $# -gt 0 ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
fi
# Two cores: one job per core; more would only thrash memory and cache.
cmake --build "$build_dir" -- -j"${KILN_JOBS:-$(nproc)}"
