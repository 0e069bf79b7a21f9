#!/usr/bin/env bash
# The Python package end to end: builds the wheel (maturin, abi3), installs it into a fresh venv
# as a user would (the wheel + numpy from PyPI) and runs python/README.md's example there, then
# installs it into the project venv (scikit-learn, onnxruntime, pytest) and runs python/tests.
# FASTRETRAIN_BIN: the CLI binary the tests compare with (default: the release build).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="$(scripts/ci/venv.sh)"
BIN_DIR="$(dirname "$PY")"
T="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$BIN_DIR/maturin" build --release --locked -m python/Cargo.toml -i "$PY" --out "$OUT" >&2
WHEEL="$(ls "$OUT"/fastretrain-*.whl)"
echo "wheel: $(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1))" >&2

python3 -m venv "$OUT/fresh"
"$OUT/fresh/bin/pip" install -q "$WHEEL"
example="$("$PY" -c 'import sys; print(open("python/README.md").read().split("```python\n")[1].split("```")[0])')"
# The example runs from the repository root and writes fashion.frs / fashion.onnx: in a copy
# of the paths it reads, so the checkout stays clean.
mkdir -p "$OUT/root/models" "$OUT/root/data" "$OUT/root/tests/data"
cp models/mobilenetv2.onnx models/mobilenetv2.json "$OUT/root/models/"
cp -r data/fashion-mnist "$OUT/root/data/"
cp -r tests/data/images "$OUT/root/tests/data/"
(cd "$OUT/root" && "$OUT/fresh/bin/python" -c "$example") | tee "$OUT/example.out" >&2
grep -q "^accuracy " "$OUT/example.out"

"$PY" -m pip install -q --force-reinstall --no-deps "$WHEEL"
FASTRETRAIN_BIN="${FASTRETRAIN_BIN:-$T/release/fastretrain}" "$PY" -m pytest -q python/tests
