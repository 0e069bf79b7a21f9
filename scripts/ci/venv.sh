#!/usr/bin/env bash
# Create (or reuse) a venv with the pinned Python packages the scripts need (default .venv in the
# checkout; FASTRETRAIN_VENV=DIR puts it elsewhere, as CI does to reuse it). Prints its python.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${FASTRETRAIN_VENV:-$PWD/.venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import numpy, onnx, onnxruntime, onnxconverter_common, PIL, sklearn, matplotlib, pytest, maturin' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  # No bytecode at install (half its CPU time): Python compiles what it imports, when it does.
  "$VENV/bin/pip" install -q --no-compile -r scripts/ci/requirements.txt >&2
fi
echo "$VENV/bin/python"
