#!/usr/bin/env bash
# The GPU training path (feature `train-wgpu`) run for real on Mesa's lavapipe (a conformant
# Vulkan 1.3 driver on the CPU), compared with the flex CPU backend: the same short `retrain`
# (same seed, same data order) in each mode on both devices; per-epoch train loss, refit λ and
# test accuracy must agree within the tolerances below; the retrained ONNX of the wgpu run must
# give `predict`'s scores in tract (and in onnxruntime when the project's venv is there); the
# device memory kept after each SGD epoch must not grow from one epoch to the next.
# Prints one JSON line; exits 1 when wgpu and CPU diverge beyond the tolerances.
#
#   scripts/device/wgpu-check.sh                 # builds --features train-wgpu (≈ 20 min cold on 2 cores)
#   BIN=path/to/fastretrain scripts/device/wgpu-check.sh
#
# Only lavapipe's Vulkan driver is offered to wgpu (VK_ICD_FILENAMES), so the adapter is
# llvmpipe whatever else the machine has; VULKAN=system leaves the machine's own driver to wgpu
# (a real GPU: scripts/device/gpu-check.sh) and installs nothing. Environment: MODES (default
# "sgd fast sgd+mp"), LIMIT (64 training images), TEST_LIMIT (32), SIZE (32), EPOCHS (2),
# OUT (a temp folder), PYTHON (one with onnxruntime; default the project's venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VULKAN=${VULKAN:-lavapipe}
if [ "$VULKAN" = lavapipe ]; then
  missing=""
  for p in mesa-vulkan-drivers vulkan-tools; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing >/dev/null
  fi
  ICD=$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json | head -1)
  export VK_ICD_FILENAMES=$ICD
fi
ADAPTER=$(vulkaninfo --summary 2>/dev/null | sed -n 's/^[[:space:]]*deviceName[[:space:]]*= //p' | head -1 || true)
[ -n "$ADAPTER" ] || ADAPTER=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
[ -n "$ADAPTER" ] || ADAPTER=unknown
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --features train-wgpu >&2
  BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/release/fastretrain"
fi
MODES=${MODES:-"sgd fast sgd+mp"}
LIMIT=${LIMIT:-64}
TEST_LIMIT=${TEST_LIMIT:-32}
SIZE=${SIZE:-32}
EPOCHS=${EPOCHS:-2}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
DATA=$ROOT/data/fashion-mnist
for mode in $MODES; do
  for device in cpu wgpu; do
    "$BIN" retrain --device "$device" --mode "$mode" --seed 1 --epochs "$EPOCHS" --size "$SIZE" \
      --data "$DATA/train-images-idx3-ubyte.gz" --limit "$LIMIT" \
      --test-data "$DATA/t10k-images-idx3-ubyte.gz" --test-limit "$TEST_LIMIT" \
      --out "$OUT/$mode-$device.onnx" > "$OUT/$mode-$device.log" 2>&1 \
      || { echo "retrain --device $device --mode $mode failed: $(tail -1 "$OUT/$mode-$device.log")" >&2; exit 2; }
  done
done
# The wgpu run's retrained model, run as a model by tract, against predict on its state: in a
# mode whose last step is the MP refit (`fast`, `sgd+mp`), the ONNX head is the state's head
# (in `sgd` the ONNX keeps the SGD head and the state holds an MP refit of its features).
PHOTOS=$(ls "$ROOT"/tests/data/images/*.png)
first=""
for mode in $MODES; do [ "$mode" = sgd ] || { first=$mode; break; }; done
[ -n "$first" ] || { echo "MODES needs fast or sgd+mp for the export check" >&2; exit 2; }
# shellcheck disable=SC2086
"$BIN" predict --json -k 10 --state "$OUT/$first-wgpu.frs" $PHOTOS > "$OUT/state.json"
# shellcheck disable=SC2086
"$BIN" predict --json -k 10 --model "$OUT/$first-wgpu.onnx" $PHOTOS > "$OUT/model.json"
ORT=""
VENV_PY=${PYTHON:-"${FASTRETRAIN_VENV:-$ROOT/.venv}/bin/python"}
if "$VENV_PY" -c 'import onnxruntime' 2>/dev/null; then
  # shellcheck disable=SC2086
  (cd "$ROOT/scripts" && "$VENV_PY" onnxruntime_run.py --spec "$OUT/$first-wgpu.json" \
    --models "$OUT/$first-wgpu.onnx" --images $PHOTOS) > "$OUT/ort.json" && ORT="$OUT/ort.json"
fi
python3 - "$OUT" "$ADAPTER" "$LIMIT" "$TEST_LIMIT" "$ORT" $MODES <<'EOF'
import json, math, sys
out, adapter, limit, test_n, ort = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
modes = sys.argv[6:]
# Tolerances: f32 reductions run in another order on the GPU (matrix products, convolutions,
# batch-norm statistics), so losses differ in the 5th digit after one epoch and the difference
# grows with each SGD step; a refit's GCV λ can move to the next grid point with it.
LOSS_REL, LAMBDA_STEPS, ACCURACY = 0.02, 1, 2  # 2 %, one grid step (10^0.5), two test images
def epochs(path):
    return [json.loads(l) for l in open(path)]
result = {"adapter": adapter, "modes": {}, "tolerance": {"loss_rel": LOSS_REL, "lambda_grid_steps": LAMBDA_STEPS, "accuracy_images": ACCURACY}}
ok, worst_loss = True, 0.0
for mode in modes:
    cpu, gpu = epochs(f"{out}/{mode}-cpu.jsonl"), epochs(f"{out}/{mode}-wgpu.jsonl")
    rows = []
    for c, g in zip(cpu, gpu):
        row = {"epoch": c["epoch"], "loss_cpu": c["train_loss"], "loss_wgpu": g["train_loss"],
               "lambda_cpu": c["lambda"], "lambda_wgpu": g["lambda"],
               "accuracy_cpu": c["test_accuracy"], "accuracy_wgpu": g["test_accuracy"]}
        if c["train_loss"] is not None:
            rel = abs(c["train_loss"] - g["train_loss"]) / abs(c["train_loss"])
            row["loss_rel_diff"] = rel
            worst_loss = max(worst_loss, rel)
            ok &= rel <= LOSS_REL
        if c["lambda"] and g["lambda"]:
            steps = abs(math.log10(c["lambda"] / g["lambda"])) / 0.5
            row["lambda_grid_steps"] = steps
            ok &= steps <= LAMBDA_STEPS + 1e-9
        images = round(abs(c["test_accuracy"] - g["test_accuracy"]) * test_n)
        row["accuracy_images_diff"] = images
        ok &= images <= ACCURACY
        rows.append(row)
    sgd_c = sum(e["seconds_sgd"] for e in cpu[1:]) or float("nan")
    sgd_g = sum(e["seconds_sgd"] for e in gpu[1:]) or float("nan")
    result["modes"][mode] = {"epochs": rows,
                             "images_per_second_cpu": limit * (len(cpu) - 1) / sgd_c,
                             "images_per_second_wgpu": limit * (len(gpu) - 1) / sgd_g}
    # What the device allocator keeps after each epoch's cleanup: level once SGD has run
    # (epoch 0 runs no SGD, so it holds less); growth would be a leak across epochs.
    memory = [e.get("device_memory_bytes") for e in gpu]
    result["modes"][mode]["device_memory_bytes"] = memory
    sgd_memory = [b for b in memory[1:] if b is not None]
    if len(sgd_memory) > 1:
        ok &= max(sgd_memory) <= sgd_memory[0] * 1.05
    last_c, last_g = cpu[-1]["test_accuracy"], gpu[-1]["test_accuracy"]
    result["modes"][mode]["accuracy_cpu"], result["modes"][mode]["accuracy_wgpu"] = last_c, last_g
def scores(path):
    return {p["file"]: {t["label"]: t["score"] for t in p["top"]} for p in json.load(open(path))}
state, model = scores(f"{out}/state.json"), scores(f"{out}/model.json")
export_diff = max(abs(s - model[f][l]) for f in state for l, s in state[f].items())
result["exported_vs_predict_tract"] = export_diff
ok &= export_diff <= 1e-4
if ort:
    o = json.load(open(ort))["models"][0]
    files = list(state)
    diff = max(abs(o["scores"][i][o["labels"].index(l)] - s) for i, f in enumerate(files) for l, s in state[f].items())
    result["exported_vs_predict_onnxruntime"] = diff
    ok &= diff <= 1e-4
result["max_loss_rel_diff"] = worst_loss
result["pass"] = bool(ok)
print(json.dumps(result))
sys.exit(0 if ok else 1)
EOF
