#!/usr/bin/env bash
# The fast / sgd / sgd+mp comparison of docs/TRAINING.md: builds with --features train, runs the
# three modes on the same Fashion-MNIST subset (Debian's dataset-fashion-mnist), writes the
# metrics, the plot docs/retrain.svg and the table docs/TRAINING-table.md.
# Environment: N (training images, default 2000), TEST_N (1000), SIZE (input size, 64),
# EPOCHS (8), LR, RA (the demo schedules by default), SEED (1), MODES ("fast sgd sgd+mp"),
# OUT (work folder), BIN (a `--features train` binary to use instead of building one). The table
# and plot are written only when all three modes ran.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-2000}
TEST_N=${TEST_N:-1000}
SIZE=${SIZE:-64}
EPOCHS=${EPOCHS:-8}
LR=${LR:-1e-3x3,1e-4x3,1e-5x2}
RA=${RA:-1,1,.75,.75,.5,.5,.25,.25}
SEED=${SEED:-1}
MODES=${MODES:-"fast sgd sgd+mp"}
OUT=${OUT:-/var/tmp/fastretrain-retrain}
F=/usr/share/datasets/fashion-mnist
[ -e "$F/train-images-idx3-ubyte.gz" ] || { echo "install dataset-fashion-mnist" >&2; exit 2; }
PY=$(scripts/ci/venv.sh)
if [ -n "${BIN:-}" ]; then
  B=$(realpath "$BIN")
else
  cargo build --release --locked --features train >&2
  B="$(realpath "${CARGO_TARGET_DIR:-target}")/release/fastretrain"
fi
mkdir -p "$OUT"
for mode in $MODES; do
  name=${mode/+/-}
  "$B" retrain --data "$F/train-images-idx3-ubyte.gz" --label-names data/fashion-mnist/labels.txt \
    --limit "$N" --test-data "$F/t10k-images-idx3-ubyte.gz" --test-limit "$TEST_N" \
    --size "$SIZE" --epochs "$EPOCHS" --lr "$LR" --ra "$RA" --mode "$mode" --seed "$SEED" \
    --out "$OUT/$name.onnx" >&2
done
[ "$MODES" = "fast sgd sgd+mp" ] || exit 0
"$PY" scripts/bench/retrain_plot.py --out docs/retrain.svg "$OUT/fast.jsonl" "$OUT/sgd.jsonl" \
  "$OUT/sgd-mp.jsonl" > docs/TRAINING-table.md
cat docs/TRAINING-table.md
