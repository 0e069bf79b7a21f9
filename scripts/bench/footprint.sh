#!/usr/bin/env bash
# Measures the edge footprint: stripped size of every `edge` binary built so far (x86-64 here,
# plus any `scripts/ci/cross-build.sh` outputs), peak RSS of `learn` on 1k Fashion-MNIST samples
# (Debian's dataset-fashion-mnist) with one worker and with the default one per core, for the
# shipped MobileNetV2 and a full-size ResNet-18 (scripts/models/make_resnet18.py: another family, 45 MB),
# RSS of `predict` and the time to the first prediction. Writes docs/FOOTPRINT.json;
# docs/FOOTPRINT.md tables it. Needs the project's venv for ResNet-18 (scripts/ci/venv.sh).
# Usage: scripts/bench/footprint.sh [--samples 1000,10000]
set -euo pipefail
cd "$(dirname "$0")/../.."
T="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
cargo build --profile edge --locked >&2
sizes=("x86_64-unknown-linux-gnu=$T/edge/fastretrain")
for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  if [ -f "$T/$t/edge/fastretrain" ]; then sizes+=("$t=$T/$t/edge/fastretrain"); fi
done
# The second model, made once (seeded weights: its shapes are what memory depends on).
R="$T/footprint/resnet18.onnx"
if [ ! -f "$R" ]; then
  mkdir -p "$(dirname "$R")"
  "${FASTRETRAIN_VENV:-.venv}/bin/python" scripts/models/make_resnet18.py "$R"
  "$T/edge/fastretrain" spec --model "$R" --preset imagenet --force >&2
fi
python3 scripts/bench/footprint.py --binary "$T/edge/fastretrain" --sizes "${sizes[@]}" --model2 "$R" "$@"
