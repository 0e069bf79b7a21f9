#!/usr/bin/env bash
# Create (or reuse) .venv with the pinned Python packages the scripts need. Prints the python path.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import numpy, onnx, onnxruntime, PIL, sklearn' 2>/dev/null; then
  python3 -m venv .venv >&2
  .venv/bin/pip install -q -r scripts/requirements.txt >&2
fi
echo "$PWD/.venv/bin/python"
