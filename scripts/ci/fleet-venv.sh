#!/usr/bin/env bash
# Prints the Python of the integrations' venv (integrations/requirements.txt + the fastretrain
# wheel built from python/), creating or updating it first. FASTRETRAIN_FLEET_VENV: where
# (default .fleet-venv); FASTRETRAIN_VENV: the project venv whose maturin builds the wheel.
set -euo pipefail
cd "$(dirname "$0")/../.."
V="${FASTRETRAIN_FLEET_VENV:-.fleet-venv}"
T="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
if [ ! -x "$V/bin/python" ]; then
  python3 -m venv "$V"
fi
# Pinned versions: a no-op (no download) once they are installed.
"$V/bin/pip" install -q -r integrations/requirements.txt >&2
# The wheel of this checkout: rebuilt by maturin (a no-op build when nothing changed).
PY="$(scripts/ci/venv.sh)"
mkdir -p "$T/wheels"
rm -f "$T"/wheels/fastretrain-*.whl
"$(dirname "$PY")/maturin" build --release --locked -m python/Cargo.toml -i "$PY" --out "$T/wheels" >&2
"$V/bin/pip" install -q --force-reinstall --no-deps "$T"/wheels/fastretrain-*.whl >&2
echo "$(realpath "$V")/bin/python"
