#!/usr/bin/env bash
# One benchmark run, us vs the peers (onnxruntime, scikit-learn), alternating: regenerates
# docs/BENCHMARKS.md, docs/BENCHMARKS.json and docs/benchmarks.svg (scripts/bench.py says what
# is measured). Makes the Python venv if missing (PyPI) and builds the release binary first.
# Options are bench.py's (e.g. --rounds 5).
set -euo pipefail
cd "$(dirname "$0")/.."
# The venv (PyPI downloads) and the build (CPU) run side by side: on a fresh machine that
# saves the venv's minutes.
PY_FILE=$(mktemp)
scripts/venv.sh > "$PY_FILE" &
VENV_PID=$!
cargo build --release --locked >&2
wait "$VENV_PID"
PY=$(cat "$PY_FILE")
rm -f "$PY_FILE"
B="$(realpath "${CARGO_TARGET_DIR:-target}")/release/fastretrain"
"$PY" scripts/bench.py --bin "$B" "$@"
