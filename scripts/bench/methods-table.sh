#!/usr/bin/env bash
# Regenerates docs/METHODS.md: extracts Fashion-MNIST features into f32 feature stores
# (resumable: a killed run continues), converts them to f16, then compares the fitting methods,
# f16 vs f32 and scikit-learn on them (scripts/bench/methods_table.py).
# Env: FASHION_DIR (default /usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist),
#      TRAIN_N training images (default all 60000), STORES (default /var/tmp/fastretrain-stores).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=$(scripts/ci/venv.sh)
cargo build --release -q
B=target/release/fastretrain
D=${FASHION_DIR:-/usr/share/datasets/fashion-mnist}
N=${TRAIN_N:-60000}
S=${STORES:-/var/tmp/fastretrain-stores}
NAMES=data/fashion-mnist/labels.txt
mkdir -p "$S"
$B extract --store "$S/train.f32.frf" --data "$D/train-images-idx3-ubyte.gz" \
  --label-names $NAMES --limit "$N" --precision f32
$B extract --store "$S/test.f32.frf" --data "$D/t10k-images-idx3-ubyte.gz" \
  --label-names $NAMES --precision f32
for split in train test; do
  rm -f "$S/$split.f16.frf"
  $B convert --store "$S/$split.f32.frf" --out "$S/$split.f16.frf" --precision f16
done
"$PY" scripts/bench/methods_table.py --bin "$B" --stores "$S" --out docs/METHODS.md \
  --command "TRAIN_N=$N scripts/bench/methods-table.sh"
