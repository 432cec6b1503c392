#!/usr/bin/env bash
# Installs every Debian package Kiln's build, tests and quick start need.
# Idempotent: when everything is present it prints nothing and returns at once.
set -euo pipefail

PACKAGES=(
  # toolchain
  g++ cmake ninja-build ccache pkgconf clang-format git
  # libraries
  libpoco-dev libyaml-cpp-dev libpqxx-dev libgit2-dev libsqlite3-dev libssl-dev
  nlohmann-json3-dev libkainjow-mustache-dev libboost1.74-dev
  libgtest-dev libgmock-dev googletest
  # test fixtures and real peers
  json-schema-test-suite postgresql curl python3 lighttpd ca-certificates
)

missing=()
for p in "${PACKAGES[@]}"; do
  # dpkg-query is fast; only packages not fully installed are handed to apt.
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi
echo "kiln: installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
