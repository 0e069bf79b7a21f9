#!/usr/bin/env bash
# One benchmark run, us vs the peers (onnxruntime, scikit-learn), alternating: regenerates
# docs/BENCHMARKS.md, docs/BENCHMARKS.json and docs/benchmarks.svg (scripts/bench/bench.py says what
# is measured). Makes the Python venv if missing (PyPI) and builds the release binary first,
# unless BIN=path/to/fastretrain names one already built (e.g. CI's, or a machine without Rust).
# Options are bench.py's (e.g. --rounds 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
# The venv (PyPI downloads) and the build (CPU) run side by side: on a fresh machine that
# saves the venv's minutes.
PY_FILE=$(mktemp)
scripts/ci/venv.sh > "$PY_FILE" &
VENV_PID=$!
if [ -n "${BIN:-}" ]; then
  B=$(realpath "$BIN")
  "$B" --version >&2
else
  # With the optional onnxruntime engine: its column (tract stays the default engine).
  cargo build --release --locked --features onnxruntime >&2
  B="$(realpath "${CARGO_TARGET_DIR:-target}")/release/fastretrain"
fi
wait "$VENV_PID"
PY=$(cat "$PY_FILE")
rm -f "$PY_FILE"
"$PY" scripts/bench/bench.py --bin "$B" "$@"
