#!/usr/bin/env bash
# Installs Kiln into a scratch prefix, builds examples/custom-agent against
# that prefix with find_package(KilnPluginApi) exactly as a third party would,
# runs the example's own FakeHost unit test, and checks that the installed
# kiln lists both its bundled plugins and the new one.
set -euo pipefail
build_dir=$1
source_dir=$2
out=$3

rm -rf "$out"
cmake --install "$build_dir" --prefix "$out/prefix" >/dev/null
cmake -S "$source_dir/examples/custom-agent" -B "$out/example" -G Ninja \
  -DCMAKE_PREFIX_PATH="$out/prefix" >/dev/null
cmake --build "$out/example"
(cd "$out/example" && ctest --output-on-failure)

listing=$("$out/prefix/bin/kiln" plugins list --plugin-dir "$out/example")
echo "$listing"
grep -Eq "^code-agent +prompt-writer +1\.0\.0 +1\.0 +$out/example/prompt-writer\.so$" <<<"$listing"
grep -Eq "^notifier +log +0\.1\.0 +1\.0 +$out/prefix/lib/kiln/plugins/notifier-log\.so$" <<<"$listing"
test -f "$out/prefix/share/kiln/templates/feature.md"
test -x "$out/prefix/share/kiln/agents/demo-agent"
test -f "$out/prefix/include/kiln/plugin.h"
test -f "$out/prefix/lib/cmake/KilnPluginApi/KilnPluginApiConfigVersion.cmake"
