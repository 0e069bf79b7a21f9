#!/usr/bin/env bash
# Cross-builds the binary and the C library (libfastretrain.a/.so, capi/) for an ARM board and
# prints the binary's path (the libraries lie beside it).
# Usage: scripts/ci/cross-build.sh aarch64|armv7 [PROFILE]
# PROFILE is `edge` by default (what goes on a board: LTO, one codegen unit, panic=abort,
# stripped; ~25 min cold on 2 cores) or `release` (~17 min cold; CI tests this one).
# Installs what it needs by itself: Debian's cross gcc + C library and qemu-user (to run the
# result here), and the Rust standard library for the target. Configuration: targets/<target>.toml.
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
  aarch64) T=aarch64-unknown-linux-gnu; PKGS="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user" ;;
  armv7) T=armv7-unknown-linux-gnueabihf; PKGS="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user" ;;
  *) echo "usage: $0 aarch64|armv7 [edge|release]" >&2; exit 2 ;;
esac
PROFILE="${2:-edge}"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing >/dev/null
fi
rustup target add "$T" >/dev/null 2>&1 || rustup target list --installed | grep -qx "$T"
cargo build --profile "$PROFILE" --locked --target "$T" --config "targets/$T.toml" \
  -p fastretrain -p fastretrain-capi >&2
echo "$(realpath "${CARGO_TARGET_DIR:-target}")/$T/$PROFILE/fastretrain"
