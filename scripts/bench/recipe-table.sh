#!/usr/bin/env bash
# The feature-recipe table of docs/METHODS.md ("Better features") on the full Fashion-MNIST
# (Debian's dataset-fashion-mnist: 60,000 train / 10,000 test):
#  1. the images mirrored left to right, as IDX files (NumPy);
#  2. `extract --precision f32` of the shipped MobileNetV2's recipe tensors, untransformed, for
#     the training and test images and their mirrors (four stores);
#  3. scripts/bench/recipe_table.py: every ingredient's accuracy from those stores (NumPy ridge + GCV);
#  4. the default configuration end to end with the binary: `learn` (time, peak RSS) and `eval`,
#     with and without `--tta hflip`, and `--augment hflip` when RECIPE_FLIPS=1.
# Usage: [BIN=target/release/fastretrain] [OUT=/var/tmp/recipes] scripts/bench/recipe-table.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release/fastretrain}
OUT=${OUT:-/var/tmp/recipes}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
PY=$("$ROOT/scripts/ci/venv.sh")
mkdir -p "$OUT/mirror"
cd "$OUT"
"$PY" - "$DATA" "$OUT/mirror" <<'EOF'
import gzip, shutil, sys
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
for split in ("train", "t10k"):
    raw = gzip.open(f"{src}/{split}-images-idx3-ubyte.gz").read()
    n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    mirrored = np.frombuffer(raw[16:], np.uint8).reshape(n, h, w)[:, :, ::-1]
    with gzip.open(f"{dst}/{split}-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(raw[:16] + mirrored.tobytes())
    shutil.copy(f"{src}/{split}-labels-idx1-ubyte.gz", f"{dst}/{split}-labels-idx1-ubyte.gz")
EOF
TENSORS=(--feature-tensor features --feature-tensor conv_257 --feature-tensor add_243
         --feature-tensor add_197 --feature-tensor add_151 --transform none)
MODEL=$ROOT/models/mobilenetv2.onnx
for job in "train60k $DATA/train" "test10k $DATA/t10k" "test10k-m mirror/t10k" "train60k-m mirror/train"; do
  set -- $job
  [ -f "$1.frfs" ] || /usr/bin/time -v "$BIN" extract --store "$1.frfs" --model "$MODEL" \
      --data "$2-images-idx3-ubyte.gz" --precision f32 "${TENSORS[@]}" --json > "$1.json" 2> "$1.time"
done
"$PY" "$ROOT/scripts/bench/recipe_table.py" --train train60k.frfs --test test10k.frfs \
  --test-mirror test10k-m.frfs --train-mirror train60k-m.frfs --out "$ROOT/docs/recipes.json"

AUGMENT=()
[ "${RECIPE_FLIPS:-0}" = 1 ] && AUGMENT=(--augment hflip)
rm -f default.frs
/usr/bin/time -v "$BIN" learn --state default.frs --data "$DATA/train-images-idx3-ubyte.gz" \
  "${AUGMENT[@]}" --json > learn.json 2> learn.time
"$BIN" eval --state default.frs --data "$DATA/t10k-images-idx3-ubyte.gz" --json > eval.json
"$BIN" eval --state default.frs --data "$DATA/t10k-images-idx3-ubyte.gz" --tta hflip --json > eval-tta.json
grep -E "Maximum resident|Elapsed" learn.time
"$PY" -c "import json; print('accuracy', json.load(open('eval.json'))['accuracy'], 'tta', json.load(open('eval-tta.json'))['accuracy'])"
