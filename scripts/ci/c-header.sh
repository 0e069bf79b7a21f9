#!/usr/bin/env bash
# Writes capi/include/fastretrain.h from capi/src/lib.rs (cbindgen, capi/cbindgen.toml), or with
# --check fails if the committed header differs from what the source gives.
# Installs Debian's cbindgen when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v cbindgen >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq cbindgen >/dev/null
fi
header=capi/include/fastretrain.h
if [ "${1:-}" = "--check" ]; then
  fresh="$(mktemp)"
  trap 'rm -f "$fresh"' EXIT
  cbindgen --quiet --config capi/cbindgen.toml --crate fastretrain-capi --output "$fresh"
  if ! diff -u "$header" "$fresh"; then
    echo "$header is out of date: run scripts/ci/c-header.sh and commit it" >&2
    exit 1
  fi
else
  cbindgen --quiet --config capi/cbindgen.toml --crate fastretrain-capi --output "$header"
fi
