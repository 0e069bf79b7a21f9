#!/usr/bin/env bash
# Accuracy and speed of MobileNetV2 at input sizes 224, 160, 128, 96 on the shipped
# Fashion-MNIST subset: regenerates docs/RESOLUTION.md and docs/RESOLUTION.json
# (scripts/bench/resolution.py says how). Makes the Python venv if missing and builds first.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=$(scripts/ci/venv.sh)
cargo build --release --locked >&2
B="$(realpath "${CARGO_TARGET_DIR:-target}")/release/fastretrain"
"$PY" scripts/bench/resolution.py --bin "$B" "$@"
