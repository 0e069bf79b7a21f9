#!/usr/bin/env bash
# The device check for a machine with a real GPU (which has no registry access: nothing is built
# there). Takes a prebuilt x86-64 fastretrain (`cargo build --release --features train-wgpu`
# here; pass its path as BIN) and, in well under 5 minutes:
#   1. runs scripts/wgpu-check.sh on the machine's own Vulkan driver (VULKAN=system): the same
#      short retrain on the flex CPU backend and on the GPU, compared within the same
#      tolerances as on lavapipe, the exported model checked in tract and onnxruntime;
#   2. times one SGD epoch of MobileNetV2 at 224×224 (N images, batch 32) with
#      `retrain --device wgpu` (and `--device cuda` where the binary has it), and the same epoch
#      in PyTorch on the GPU (torchvision's MobileNetV2, same batch, same momentum SGD);
# and prints one JSON line: the comparison, images/s of each, and ours over PyTorch's.
#
#   BIN=path/to/fastretrain scripts/gpu-check.sh
#
# Vulkan loader: if `ldconfig -p` has no libvulkan, .deb files under .gl/ (see the device
# README: libvulkan1 and friends, downloaded here) are unpacked first; NVIDIA's ICD is named
# from the driver's folder when the loader finds none. Environment: N (512), SIZE (224),
# PYTHON (python3: PyTorch, torchvision and onnxruntime), OUT (a temp folder).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:?set BIN to a fastretrain binary built with --features train-wgpu}
BIN=$(realpath "$BIN")
N=${N:-512}
SIZE=${SIZE:-224}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
DATA=data/fashion-mnist

if ! ldconfig -p | grep -q libvulkan.so.1 && ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
NVIDIA_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$NVIDIA_ICD" ]; then
  export VK_DRIVER_FILES=$NVIDIA_ICD
fi

# 1. wgpu on this GPU against the CPU (exit status kept: the JSON line says what failed).
compare=0
VULKAN=system PYTHON="$PYTHON" BIN="$BIN" OUT="$OUT/compare" scripts/wgpu-check.sh \
  > "$OUT/compare.json" 2> "$OUT/compare.err" || compare=$?
[ -s "$OUT/compare.json" ] || echo "{\"error\": $(tail -3 "$OUT/compare.err" | "$PYTHON" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}" > "$OUT/compare.json"

# 2. One SGD epoch at full size: ours on each GPU backend the binary has (the second of two
#    epochs: the first compiles the kernels), then PyTorch (after a warm-up epoch).
for device in wgpu cuda; do
  "$BIN" retrain --device "$device" --mode sgd --epochs 2 --seed 1 --size "$SIZE" --batch 32 \
    --lr 1e-3x2 --lambda 10 --data "$DATA/train-images-idx3-ubyte.gz" --limit "$N" \
    --test-data "$DATA/t10k-images-idx3-ubyte.gz" --test-limit 32 \
    --out "$OUT/speed-$device.onnx" > "$OUT/speed-$device.log" 2>&1 || true
done
"$PYTHON" - "$N" "$SIZE" > "$OUT/pytorch.json" 2> "$OUT/pytorch.err" <<'EOF' || true
import json, sys, time
import torch, torchvision
n, size = int(sys.argv[1]), int(sys.argv[2])
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(1)
model = torchvision.models.mobilenet_v2(num_classes=10).to(dev).train()
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
x = torch.randn(n, 3, size, size, device=dev)
y = torch.randint(0, 10, (n,), device=dev)
def epoch():
    for i in range(0, n, 32):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32]).backward()
        opt.step()
epoch()  # warm-up: cuDNN's kernel choice
if dev == "cuda":
    torch.cuda.synchronize()
t = time.time()
epoch()
if dev == "cuda":
    torch.cuda.synchronize()
seconds = time.time() - t
print(json.dumps({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                  "torch": torch.__version__, "seconds": seconds, "images_per_second": n / seconds}))
EOF

"$PYTHON" - "$OUT" "$N" "$compare" <<'EOF'
import json, os, sys
out, n, compare = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
result = {"comparison": json.load(open(f"{out}/compare.json")), "comparison_exit": compare,
          "images": n, "images_per_second": {}}
for device in ("wgpu", "cuda"):
    metrics = f"{out}/speed-{device}.jsonl"
    if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
        last = [json.loads(l) for l in open(metrics)][-1]
        result["images_per_second"][f"fastretrain_{device}"] = n / last["seconds_sgd"]
        result[f"seconds_sgd_{device}"] = last["seconds_sgd"]
    else:
        log = open(f"{out}/speed-{device}.log").read().strip().splitlines()
        result["images_per_second"][f"fastretrain_{device}"] = None
        result[f"error_{device}"] = log[-1] if log else "no output"
try:
    torch = json.load(open(f"{out}/pytorch.json"))
except ValueError:
    err = open(f"{out}/pytorch.err").read().strip().splitlines()
    torch = {"error": err[-1] if err else "no output", "images_per_second": None}
result["pytorch"] = torch
result["images_per_second"]["pytorch"] = torch["images_per_second"]
ours = result["images_per_second"]["fastretrain_wgpu"]
result["ratio_wgpu_to_pytorch"] = ours / torch["images_per_second"] if ours and torch["images_per_second"] else None
print(json.dumps(result))
sys.exit(compare)
EOF
