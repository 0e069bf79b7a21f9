#!/usr/bin/env bash
# Measures the edge footprint: stripped size of every `edge` binary built so far (x86-64 here,
# plus any `scripts/cross-build.sh` outputs), peak RSS of `learn` at 1k and 10k Fashion-MNIST
# samples (Debian's dataset-fashion-mnist), RSS of `predict` and the time to the first
# prediction. Writes docs/FOOTPRINT.json; docs/FOOTPRINT.md tables it.
# Usage: scripts/footprint.sh [--samples 1000,10000]
set -euo pipefail
cd "$(dirname "$0")/.."
T="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
cargo build --profile edge --locked >&2
sizes=("x86_64-unknown-linux-gnu=$T/edge/fastretrain")
for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  if [ -f "$T/$t/edge/fastretrain" ]; then sizes+=("$t=$T/$t/edge/fastretrain"); fi
done
python3 scripts/footprint.py --binary "$T/edge/fastretrain" --sizes "${sizes[@]}" "$@"
